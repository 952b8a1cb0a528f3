//! Anthropic Messages SSE in, OpenAI Chat Completions SSE out.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::{
    bad_event, finish_reason_for, parse_object, push_json, push_json_str, u64_field, StreamError,
    Usage,
};
use crate::sse::{self, Parser};
use crate::Error;

/// Translates an Anthropic Messages event stream into OpenAI `chat.completion.chunk` events.
///
/// - `message_start` -> the opening chunk (`delta: {"role": "assistant", "content": ""}`), id
///   `chatcmpl-...` from `msg_...`;
/// - `text_delta` -> `delta.content`; a `tool_use` block -> a `delta.tool_calls` entry (index
///   = the tool call's position among the message's tool calls, with `id`, `type`, `name` on
///   its first delta) whose `input_json_delta`s become `function.arguments` pieces;
/// - `message_delta` -> the finish chunk (`finish_reason` from `stop_reason`);
/// - `message_stop` -> the usage chunk (when `include_usage`) and `data: [DONE]`;
/// - `ping`, `content_block_stop`, thinking blocks and their deltas (`thinking_delta`,
///   `signature_delta`), `citations_delta` and unknown event types produce nothing;
/// - an `error` event is recorded as the stream's error and ends the output: no `[DONE]`.
#[derive(Debug, Clone)]
pub struct AnthropicToOpenAI {
    parser: Parser,
    include_usage: bool,
    created: u64,
    model_override: Option<String>,
    id: String,
    model: String,
    opened: bool,
    /// Content block index -> OpenAI tool call index, for tool_use blocks.
    tool_blocks: Vec<(u64, u64)>,
    tools: u64,
    stop_reason: Option<String>,
    finished: bool,
    usage: Usage,
    usage_seen: bool,
    complete: bool,
    started: bool,
    error: Option<StreamError>,
    events: Vec<sse::Event>,
}

impl Default for AnthropicToOpenAI {
    fn default() -> Self {
        Self::new(false, None, None, sse::DEFAULT_MAX_EVENT_BYTES)
    }
}

impl AnthropicToOpenAI {
    /// A translator. `include_usage`: the client asked for `stream_options.include_usage`
    /// (every chunk then carries `"usage": null` and a usage chunk precedes `[DONE]`).
    /// `created`: the chunks' `created` (Unix seconds; now when None). `model` replaces the
    /// upstream's model name when given.
    pub fn new(
        include_usage: bool,
        created: Option<u64>,
        model: Option<String>,
        max_event_bytes: usize,
    ) -> Self {
        let created = created.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        Self {
            parser: Parser::with_limit(max_event_bytes),
            include_usage,
            created,
            model_override: model,
            id: String::new(),
            model: String::new(),
            opened: false,
            tool_blocks: Vec::new(),
            tools: 0,
            stop_reason: None,
            finished: false,
            usage: Usage::default(),
            usage_seen: false,
            complete: false,
            started: false,
            error: None,
            events: Vec::new(),
        }
    }

    /// Translates one network chunk; returns the OpenAI SSE bytes to write (maybe empty).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        if self.error.is_some() || self.complete {
            return Ok(out);
        }
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let mut outcome = self.parser.feed_into(chunk, &mut events);
        if outcome.is_ok() {
            for event in &events {
                if let Err(e) = self.on_event(&event.data, &mut out) {
                    outcome = Err(e);
                    break;
                }
                if self.error.is_some() || self.complete {
                    break;
                }
            }
        }
        events.clear();
        self.events = events;
        outcome.map(|()| out)
    }

    /// Ends the stream: the bytes still to write (always empty: `message_stop` already wrote
    /// everything) and whether the answer was complete (`message_stop` arrived, no error).
    pub fn finish(&mut self) -> (Vec<u8>, bool) {
        (Vec::new(), self.is_complete())
    }

    /// True once `message_stop` arrived (and no error event before it).
    pub fn is_complete(&self) -> bool {
        self.complete && self.error.is_none()
    }

    /// True once part of the answer (text or a tool call) has been produced.
    pub fn has_started(&self) -> bool {
        self.started
    }

    /// The upstream's in-stream error (e.g. `overloaded_error`), if it sent one.
    pub fn error(&self) -> Option<&StreamError> {
        self.error.as_ref()
    }

    /// The OpenAI finish reason, once the upstream sent its `stop_reason`.
    pub fn finish_reason(&self) -> Option<&'static str> {
        self.stop_reason.as_deref().map(finish_reason_for)
    }

    /// The usage the upstream reported (`message_start` and `message_delta`), if any.
    pub fn usage(&self) -> Option<Usage> {
        self.usage_seen.then_some(self.usage)
    }

    fn on_event(&mut self, data: &str, out: &mut Vec<u8>) -> Result<(), Error> {
        let event = parse_object(data)?;
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message_start" => {
                let message = event.get("message").and_then(Value::as_object);
                let field = |name: &str| {
                    message
                        .and_then(|m| m.get(name))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                };
                let id = field("id");
                self.id = match id.strip_prefix("msg_") {
                    Some(rest) => format!("chatcmpl-{rest}"),
                    None if id.is_empty() => "chatcmpl-edgeproxy".to_owned(),
                    None => id.to_owned(),
                };
                self.model = self
                    .model_override
                    .clone()
                    .unwrap_or_else(|| field("model").to_owned());
                if let Some(Value::Object(u)) = message.and_then(|m| m.get("usage")) {
                    self.read_usage(u);
                }
                self.opened = true;
                self.chunk(out, br#"{"role":"assistant","content":""}"#, None);
            }
            "content_block_start" => {
                self.require_open(kind)?;
                let index = u64_field(event.get("index")).unwrap_or(0);
                let Some(block) = event.get("content_block").and_then(Value::as_object) else {
                    return Err(bad_event("content_block_start without a content_block"));
                };
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(text) = block.get("text").and_then(Value::as_str) {
                            self.text(text, out);
                        }
                    }
                    Some("tool_use") => self.tool_start(index, block, out),
                    _ => {} // thinking, redacted_thinking, server tools: not on the OpenAI wire
                }
            }
            "content_block_delta" => {
                self.require_open(kind)?;
                let index = u64_field(event.get("index")).unwrap_or(0);
                let Some(delta) = event.get("delta").and_then(Value::as_object) else {
                    return Err(bad_event("content_block_delta without a delta"));
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        self.text(text, out);
                    }
                    Some("input_json_delta") => {
                        let partial = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        self.arguments(index, partial, out)?;
                    }
                    _ => {} // thinking_delta, signature_delta, citations_delta
                }
            }
            "message_delta" => {
                self.require_open(kind)?;
                if let Some(Value::Object(u)) = event.get("usage") {
                    self.read_usage(u);
                }
                let reason = event
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                if let Some(reason) = reason {
                    self.stop_reason = Some(reason.to_owned());
                    self.finish_chunk(out, finish_reason_for(reason));
                }
            }
            "message_stop" => {
                self.require_open(kind)?;
                self.finish_chunk(out, "stop");
                if self.include_usage {
                    self.usage_chunk(out);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.complete = true;
            }
            "error" => {
                let err = event.get("error");
                let field = |name: &str| {
                    err.and_then(|e| e.get(name))
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                };
                self.error = Some(StreamError {
                    kind: field("type").unwrap_or("api_error").to_owned(),
                    message: field("message").unwrap_or("").to_owned(),
                });
            }
            _ => {} // ping, content_block_stop, and event types added later
        }
        Ok(())
    }

    fn require_open(&self, kind: &str) -> Result<(), Error> {
        if self.opened {
            Ok(())
        } else {
            Err(bad_event(format!(
                "upstream sent {kind} before message_start"
            )))
        }
    }

    fn read_usage(&mut self, u: &Map<String, Value>) {
        let read = |name: &str| u64_field(u.get(name));
        let (input, cache_write, cache_read) = (
            read("input_tokens"),
            read("cache_creation_input_tokens"),
            read("cache_read_input_tokens"),
        );
        if input.is_some() || cache_write.is_some() || cache_read.is_some() {
            self.usage.input_tokens =
                input.unwrap_or(0) + cache_write.unwrap_or(0) + cache_read.unwrap_or(0);
            self.usage.cached_tokens = cache_read.unwrap_or(0);
            self.usage.cache_write_tokens = cache_write.unwrap_or(0);
            self.usage_seen = true;
        }
        if let Some(output) = read("output_tokens") {
            self.usage.output_tokens = output;
            self.usage_seen = true;
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        self.started = true;
        let mut delta = Vec::with_capacity(text.len() + 16);
        delta.extend_from_slice(br#"{"content":"#);
        push_json_str(&mut delta, text);
        delta.push(b'}');
        self.chunk(out, &delta, None);
    }

    fn tool_start(&mut self, block: u64, content: &Map<String, Value>, out: &mut Vec<u8>) {
        let call = self.tools;
        self.tools += 1;
        self.tool_blocks.push((block, call));
        self.started = true;
        let id = content.get("id").and_then(Value::as_str).unwrap_or("");
        let name = content.get("name").and_then(Value::as_str).unwrap_or("");
        let mut delta = Vec::with_capacity(96 + id.len() + name.len());
        delta.extend_from_slice(br#"{"tool_calls":[{"index":"#);
        delta.extend_from_slice(call.to_string().as_bytes());
        delta.extend_from_slice(br#","id":"#);
        push_json_str(&mut delta, id);
        delta.extend_from_slice(br#","type":"function","function":{"name":"#);
        push_json_str(&mut delta, name);
        delta.extend_from_slice(br#","arguments":"#);
        match content.get("input") {
            Some(input @ Value::Object(map)) if !map.is_empty() => {
                let mut json = Vec::new();
                push_json(&mut json, input);
                push_json_str(&mut delta, &String::from_utf8_lossy(&json));
            }
            _ => delta.extend_from_slice(b"\"\""),
        }
        delta.extend_from_slice(b"}}]}");
        self.chunk(out, &delta, None);
    }

    fn arguments(&mut self, block: u64, partial: &str, out: &mut Vec<u8>) -> Result<(), Error> {
        let Some(&(_, call)) = self.tool_blocks.iter().rev().find(|(b, _)| *b == block) else {
            return Err(bad_event(format!(
                "input_json_delta for content block {block}, which is not a tool_use block"
            )));
        };
        if partial.is_empty() {
            return Ok(());
        }
        let mut delta = Vec::with_capacity(partial.len() + 64);
        delta.extend_from_slice(br#"{"tool_calls":[{"index":"#);
        delta.extend_from_slice(call.to_string().as_bytes());
        delta.extend_from_slice(br#","function":{"arguments":"#);
        push_json_str(&mut delta, partial);
        delta.extend_from_slice(b"}}]}");
        self.chunk(out, &delta, None);
        Ok(())
    }

    fn finish_chunk(&mut self, out: &mut Vec<u8>, reason: &str) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.chunk(out, b"{}", Some(reason));
    }

    fn head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: {\"id\":");
        push_json_str(out, &self.id);
        out.extend_from_slice(br#","object":"chat.completion.chunk","created":"#);
        out.extend_from_slice(self.created.to_string().as_bytes());
        out.extend_from_slice(br#","model":"#);
        push_json_str(out, &self.model);
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: &[u8], finish_reason: Option<&str>) {
        self.head(out);
        out.extend_from_slice(br#","choices":[{"index":0,"delta":"#);
        out.extend_from_slice(delta);
        out.extend_from_slice(br#","logprobs":null,"finish_reason":"#);
        match finish_reason {
            Some(r) => push_json_str(out, r),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]");
        if self.include_usage {
            out.extend_from_slice(br#","usage":null"#);
        }
        out.extend_from_slice(b"}\n\n");
    }

    fn usage_chunk(&self, out: &mut Vec<u8>) {
        let u = self.usage;
        self.head(out);
        out.extend_from_slice(br#","choices":[],"usage":{"prompt_tokens":"#);
        out.extend_from_slice(u.input_tokens.to_string().as_bytes());
        out.extend_from_slice(br#","completion_tokens":"#);
        out.extend_from_slice(u.output_tokens.to_string().as_bytes());
        out.extend_from_slice(br#","total_tokens":"#);
        out.extend_from_slice((u.input_tokens + u.output_tokens).to_string().as_bytes());
        out.extend_from_slice(br#","prompt_tokens_details":{"cached_tokens":"#);
        out.extend_from_slice(u.cached_tokens.to_string().as_bytes());
        if u.cache_write_tokens > 0 {
            out.extend_from_slice(br#","cache_write_tokens":"#);
            out.extend_from_slice(u.cache_write_tokens.to_string().as_bytes());
        }
        out.extend_from_slice(b"}}}\n\n");
    }
}
