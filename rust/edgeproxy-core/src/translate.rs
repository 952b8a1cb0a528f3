//! Stream translation between OpenAI Chat Completions SSE and Anthropic Messages SSE.
//!
//! Both translators are incremental state machines: feed them the upstream's network chunks
//! (any split) and write the bytes they return to the client. They hold an [`sse::Parser`], so
//! one call per network chunk is enough and the output does not depend on how the upstream's
//! bytes were split.
//!
//! - [`OpenAIToAnthropic`]: an OpenAI-wire upstream (`chat.completion.chunk` events, `[DONE]`)
//!   served to an Anthropic-wire client (`message_start`, `content_block_*`, `message_delta`,
//!   `message_stop`).
//! - [`AnthropicToOpenAI`]: the reverse.
//!
//! An in-stream error from the upstream (an OpenAI `{"error": ...}` chunk, an Anthropic
//! `error` event such as `overloaded_error`) is never translated into the client's stream:
//! the translator records it ([`StreamError`]), stops producing output, and reports the
//! stream as incomplete. What the client then sees is the caller's decision (an error event in
//! the client's wire, or a resume). Events that are not valid JSON, or that cannot be
//! represented on the other wire, fail with [`Error::Translation`].
//!
//! docs/anthropic.md has the event mapping table.
//!
//! [`sse::Parser`]: crate::sse::Parser

mod anthropic_to_openai;
mod openai_to_anthropic;
#[cfg(test)]
mod tests;

pub use anthropic_to_openai::AnthropicToOpenAI;
pub use openai_to_anthropic::OpenAIToAnthropic;

use crate::Error;

/// An in-stream error the upstream sent instead of (the rest of) an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// The upstream's error type (`overloaded_error`, `rate_limit_error`, `server_error`, ...):
    /// Anthropic's `error.type`, or OpenAI's `error.type` (its `error.code` when no type).
    pub kind: String,
    /// The upstream's message.
    pub message: String,
}

/// Usage reported by the upstream (or estimated, see each translator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt (input) tokens; for Anthropic this includes cache reads and writes.
    pub input_tokens: u64,
    /// Completion (output) tokens.
    pub output_tokens: u64,
    /// Of the input tokens, how many were read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Of the input tokens, how many were written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`; OpenAI-shaped as `prompt_tokens_details.cache_write_tokens`,
    /// OpenRouter's name for it). Priced apart from plain input, so kept apart.
    pub cache_write_tokens: u64,
}

/// The Anthropic `stop_reason` for an OpenAI `finish_reason`.
///
/// `stop` -> `end_turn` (OpenAI does not say whether a stop sequence matched), `length` ->
/// `max_tokens`, `tool_calls`/`function_call` -> `tool_use`, `content_filter` -> `refusal`;
/// anything else -> `end_turn`.
pub fn stop_reason_for(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// The OpenAI `finish_reason` for an Anthropic `stop_reason`.
///
/// `end_turn`/`stop_sequence`/`pause_turn` -> `stop`, `max_tokens` and
/// `model_context_window_exceeded` -> `length`, `tool_use` -> `tool_calls`, `refusal` ->
/// `content_filter`; anything else -> `stop`.
pub fn finish_reason_for(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Appends `s` as a JSON string literal (quoted, escaped).
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a &str always serialises.
    serde_json::to_writer(&mut *out, s).expect("serialising a string into a Vec");
}

/// Appends a JSON value in compact form.
pub(crate) fn push_json(out: &mut Vec<u8>, v: &serde_json::Value) {
    serde_json::to_writer(&mut *out, v).expect("serialising a JSON value into a Vec");
}

pub(crate) fn bad_event(message: impl Into<String>) -> Error {
    Error::Translation {
        param: "stream".to_owned(),
        message: message.into(),
    }
}

/// Parses one event's data as a JSON object.
pub(crate) fn parse_object(
    data: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    match serde_json::from_str::<serde_json::Value>(data) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad_event(
            "upstream sent an event that is not a JSON object",
        )),
        Err(_) => Err(bad_event("upstream sent an event that is not valid JSON")),
    }
}

pub(crate) fn u64_field(v: Option<&serde_json::Value>) -> Option<u64> {
    v.and_then(serde_json::Value::as_u64)
}
