//! OpenAI Chat Completions SSE in, Anthropic Messages SSE out.

use serde_json::Value;

use super::{parse_object, push_json_str, stop_reason_for, u64_field};
use super::{StreamError, Usage};
use crate::sse::{self, Parser};
use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    /// A tool_use block for the OpenAI tool call with this index.
    Tool(u64),
}

/// Translates an OpenAI `chat.completion.chunk` stream into Anthropic Messages events.
///
/// - the first chunk opens the message (`message_start`, id `msg_...` from `chatcmpl-...`);
/// - `delta.content` (and `delta.refusal`) goes into a `text` block, each tool call (by its
///   `index`) into a `tool_use` block whose streamed `arguments` become `input_json_delta`s;
///   a block is closed when the next one opens or the choice finishes;
/// - `finish_reason` becomes the `stop_reason` of a `message_delta`, sent with the usage once
///   the upstream's usage chunk or `[DONE]` arrives, followed by `message_stop`;
/// - `delta.reasoning_content` (a non-standard field) is dropped.
///
/// Without a usage chunk, `output_tokens` is the number of content deltas (an estimate) and
/// `input_tokens` is 0; ask the upstream for `stream_options.include_usage`.
#[derive(Debug, Clone)]
pub struct OpenAIToAnthropic {
    parser: Parser,
    model_override: Option<String>,
    opened: bool,
    next_block: u64,
    open: Open,
    /// OpenAI indices of tool calls whose block was already closed.
    closed_tools: Vec<u64>,
    finish_reason: Option<String>,
    refusal: bool,
    usage: Option<Usage>,
    deltas: u64,
    stopped: bool,
    started: bool,
    error: Option<StreamError>,
    events: Vec<sse::Event>,
}

impl Default for OpenAIToAnthropic {
    fn default() -> Self {
        Self::new(None, sse::DEFAULT_MAX_EVENT_BYTES)
    }
}

impl OpenAIToAnthropic {
    /// A translator; `model` replaces the upstream's model name in `message_start` when given.
    pub fn new(model: Option<String>, max_event_bytes: usize) -> Self {
        Self {
            parser: Parser::with_limit(max_event_bytes),
            model_override: model,
            opened: false,
            next_block: 0,
            open: Open::None,
            closed_tools: Vec::new(),
            finish_reason: None,
            refusal: false,
            usage: None,
            deltas: 0,
            stopped: false,
            started: false,
            error: None,
            events: Vec::new(),
        }
    }

    /// Translates one network chunk; returns the Anthropic SSE bytes to write (maybe empty).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        if self.error.is_some() || self.stopped {
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
                if self.error.is_some() || self.stopped {
                    break;
                }
            }
        }
        events.clear();
        self.events = events;
        outcome.map(|()| out)
    }

    /// Ends the stream: the bytes still to write and whether the answer was complete.
    ///
    /// Complete means `[DONE]` arrived, or a `finish_reason` did (the closing `message_delta`
    /// and `message_stop` are returned then). An upstream error, or a stream that ended before
    /// its finish, is incomplete: nothing is returned and the caller must not present the
    /// answer as finished.
    pub fn finish(&mut self) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        if self.error.is_some() {
            return (out, false);
        }
        if !self.stopped && self.finish_reason.is_some() {
            self.stop(&mut out);
        }
        (out, self.stopped)
    }

    /// True once the message is complete (`message_stop` produced).
    pub fn is_complete(&self) -> bool {
        self.stopped && self.error.is_none()
    }

    /// True once part of the answer (text or a tool call) has been produced.
    pub fn has_started(&self) -> bool {
        self.started
    }

    /// The upstream's in-stream error, if it sent one.
    pub fn error(&self) -> Option<&StreamError> {
        self.error.as_ref()
    }

    /// The Anthropic stop reason, once the upstream finished.
    pub fn stop_reason(&self) -> Option<&'static str> {
        self.finish_reason.as_deref().map(|r| self.map_reason(r))
    }

    /// The upstream's usage, when it sent a usage chunk.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn map_reason(&self, finish_reason: &str) -> &'static str {
        if self.refusal && finish_reason == "stop" {
            "refusal"
        } else {
            stop_reason_for(finish_reason)
        }
    }

    fn on_event(&mut self, data: &str, out: &mut Vec<u8>) -> Result<(), Error> {
        if data == "[DONE]" {
            self.open_message(None, None, out);
            self.stop(out);
            return Ok(());
        }
        let chunk = parse_object(data)?;
        if let Some(err) = chunk.get("error") {
            self.error = Some(openai_error(err));
            return Ok(());
        }
        self.open_message(
            chunk.get("id").and_then(Value::as_str),
            chunk.get("model").and_then(Value::as_str),
            out,
        );
        if let Some(Value::Object(u)) = chunk.get("usage") {
            let input = u64_field(u.get("prompt_tokens")).unwrap_or(0);
            let details = u.get("prompt_tokens_details");
            let detail = |name: &str| details.and_then(|d| u64_field(d.get(name))).unwrap_or(0);
            self.usage = Some(Usage {
                input_tokens: input,
                output_tokens: u64_field(u.get("completion_tokens")).unwrap_or(0),
                cached_tokens: detail("cached_tokens"),
                cache_write_tokens: detail("cache_write_tokens"),
            });
        }
        let Some(Value::Array(choices)) = chunk.get("choices") else {
            return Ok(());
        };
        for choice in choices {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            if index != 0 {
                return Err(Error::Translation {
                    param: "n".to_owned(),
                    message: "the upstream streamed more than one choice; an Anthropic message \
                              has exactly one"
                        .to_owned(),
                });
            }
            if let Some(Value::Object(delta)) = choice.get("delta") {
                self.on_delta(delta, out)?;
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.close_block(out);
                self.finish_reason = Some(reason.to_owned());
            }
        }
        Ok(())
    }

    fn on_delta(
        &mut self,
        delta: &serde_json::Map<String, Value>,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        for key in ["content", "refusal"] {
            if let Some(text) = delta.get(key).and_then(Value::as_str) {
                if !text.is_empty() {
                    if key == "refusal" {
                        self.refusal = true;
                    }
                    self.text(text, out);
                }
            }
        }
        if let Some(Value::Array(calls)) = delta.get("tool_calls") {
            for call in calls {
                self.tool_call(call, out)?;
            }
        }
        if delta.get("function_call").is_some_and(|v| !v.is_null()) {
            return Err(Error::Translation {
                param: "function_call".to_owned(),
                message: "the deprecated function_call stream is not translated; use tools"
                    .to_owned(),
            });
        }
        Ok(())
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        if self.open != Open::Text {
            self.close_block(out);
            self.open = Open::Text;
            self.block_start(out, br#"{"type":"text","text":""}"#);
        }
        self.started = true;
        self.deltas += 1;
        let index = self.next_block - 1;
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        out.extend_from_slice(index.to_string().as_bytes());
        out.extend_from_slice(br#","delta":{"type":"text_delta","text":"#);
        push_json_str(out, text);
        out.extend_from_slice(b"}}\n\n");
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<u8>) -> Result<(), Error> {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function");
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if self.open != Open::Tool(index) {
            if self.closed_tools.contains(&index) {
                return Err(Error::Translation {
                    param: "tool_calls".to_owned(),
                    message: format!(
                        "the upstream interleaved the arguments of tool call {index} with \
                         another tool call; Anthropic content blocks cannot be reopened"
                    ),
                });
            }
            self.close_block(out);
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| format!("toolu_{index}"), str::to_owned);
            let name = function
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            self.open = Open::Tool(index);
            let mut block = Vec::with_capacity(64 + id.len() + name.len());
            block.extend_from_slice(br#"{"type":"tool_use","id":"#);
            push_json_str(&mut block, &id);
            block.extend_from_slice(br#","name":"#);
            push_json_str(&mut block, name);
            block.extend_from_slice(br#","input":{}}"#);
            self.block_start(out, &block);
        }
        self.started = true;
        if !arguments.is_empty() {
            self.deltas += 1;
            let block = self.next_block - 1;
            out.extend_from_slice(
                b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
            );
            out.extend_from_slice(block.to_string().as_bytes());
            out.extend_from_slice(br#","delta":{"type":"input_json_delta","partial_json":"#);
            push_json_str(out, arguments);
            out.extend_from_slice(b"}}\n\n");
        }
        Ok(())
    }

    fn block_start(&mut self, out: &mut Vec<u8>, block: &[u8]) {
        out.extend_from_slice(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
        );
        out.extend_from_slice(self.next_block.to_string().as_bytes());
        out.extend_from_slice(br#","content_block":"#);
        out.extend_from_slice(block);
        out.extend_from_slice(b"}\n\n");
        self.next_block += 1;
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        match self.open {
            Open::None => return,
            Open::Tool(i) => self.closed_tools.push(i),
            Open::Text => {}
        }
        self.open = Open::None;
        let index = self.next_block - 1;
        out.extend_from_slice(
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":",
        );
        out.extend_from_slice(index.to_string().as_bytes());
        out.extend_from_slice(b"}\n\n");
    }

    fn open_message(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<u8>) {
        if self.opened {
            return;
        }
        self.opened = true;
        let id = match id {
            Some(id) => match id.strip_prefix("chatcmpl-") {
                Some(rest) => format!("msg_{rest}"),
                None => id.to_owned(),
            },
            None => "msg_edgeproxy".to_owned(),
        };
        let model = self
            .model_override
            .clone()
            .unwrap_or_else(|| model.unwrap_or("").to_owned());
        out.extend_from_slice(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":",
        );
        push_json_str(out, &id);
        out.extend_from_slice(br#","type":"message","role":"assistant","model":"#);
        push_json_str(out, &model);
        out.extend_from_slice(
            br#","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}"#,
        );
        out.extend_from_slice(b"\n\n");
    }

    fn stop(&mut self, out: &mut Vec<u8>) {
        if self.stopped {
            return;
        }
        self.close_block(out);
        let reason = self.map_reason(self.finish_reason.as_deref().unwrap_or("stop"));
        let usage = self.usage.unwrap_or(Usage {
            input_tokens: 0,
            output_tokens: self.deltas,
            cached_tokens: 0,
            cache_write_tokens: 0,
        });
        // Anthropic's input_tokens excludes cache reads and writes (OpenAI's prompt_tokens
        // includes both); an upstream claiming more cached than prompt tokens is clamped.
        let cached = usage.cached_tokens.min(usage.input_tokens);
        let written = usage.cache_write_tokens.min(usage.input_tokens - cached);
        out.extend_from_slice(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"");
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(br#"","stop_sequence":null},"usage":{"input_tokens":"#);
        out.extend_from_slice(
            (usage.input_tokens - cached - written)
                .to_string()
                .as_bytes(),
        );
        if written > 0 {
            out.extend_from_slice(br#","cache_creation_input_tokens":"#);
            out.extend_from_slice(written.to_string().as_bytes());
        }
        out.extend_from_slice(br#","cache_read_input_tokens":"#);
        out.extend_from_slice(cached.to_string().as_bytes());
        out.extend_from_slice(br#","output_tokens":"#);
        out.extend_from_slice(usage.output_tokens.to_string().as_bytes());
        out.extend_from_slice(b"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        self.stopped = true;
    }
}

fn openai_error(err: &Value) -> StreamError {
    let field = |name: &str| {
        err.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    StreamError {
        kind: field("type")
            .or_else(|| field("code"))
            .unwrap_or("api_error")
            .to_owned(),
        message: field("message").map_or_else(|| err.to_string(), str::to_owned),
    }
}
