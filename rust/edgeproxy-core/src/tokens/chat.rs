//! Counting a whole chat request body in one call (docs/tokens.md).
//!
//! Messages follow the OpenAI cookbook formula ("How to count tokens with
//! tiktoken", `num_tokens_from_messages`): every message costs
//! [`TOKENS_PER_MESSAGE`], every string value of a message (role, content,
//! name, tool_call_id, ...) costs its tokens, a `name` costs
//! [`TOKENS_PER_NAME`] more, and the reply is primed with
//! [`REPLY_PRIMING_TOKENS`]. A count that uses only this formula on string
//! values is `exact`.
//!
//! Everything else is an approximation, and a count that includes one has
//! `exact == false`:
//! - tool definitions (`tools`, legacy `functions`, Anthropic `input_schema`):
//!   the cookbook's `num_tokens_for_tools` (itself an estimate by OpenAI), with
//!   the gpt-4o constants for `o200k_base` and the gpt-4 ones for `cl100k_base`;
//! - `tool_calls` / `function_call` in assistant messages:
//!   [`TOKENS_PER_TOOL_CALL`] + name + arguments for each call;
//! - content arrays: the sum of their parts; images cost [`IMAGE_TOKENS_LOW`]
//!   (`detail: "low"`) or [`IMAGE_TOKENS_HIGH`] (a 1024×1024 image at high
//!   detail; the real cost depends on the image size, which is not known here);
//!   audio, file and document parts are not counted;
//! - any other non-string message value: the tokens of its compact JSON;
//! - an Anthropic top-level `system`: one more message;
//! - the `estimate` encoding: always.

use serde_json::{Map, Value};

use super::Encoding;
use crate::Error;

/// Tokens every message costs on top of its values (`<|start|>{role}<|message|>...<|end|>`).
pub const TOKENS_PER_MESSAGE: usize = 3;
/// Extra tokens a message's `name` costs.
pub const TOKENS_PER_NAME: usize = 1;
/// Tokens that prime every reply (`<|start|>assistant<|message|>`).
pub const REPLY_PRIMING_TOKENS: usize = 3;
/// Approximate overhead of one tool call in an assistant message (on top of
/// the tokens of its function name and arguments).
pub const TOKENS_PER_TOOL_CALL: usize = 3;
/// An image part with `detail: "low"` (OpenAI's fixed price for low detail).
pub const IMAGE_TOKENS_LOW: usize = 85;
/// Any other image part: a 1024×1024 image at high detail (85 + 4 tiles × 170).
pub const IMAGE_TOKENS_HIGH: usize = 765;

/// The constants of the cookbook's `num_tokens_for_tools`.
struct ToolCosts {
    func_init: i64,
    prop_init: i64,
    prop_key: i64,
    enum_init: i64,
    enum_item: i64,
    func_end: i64,
}

/// gpt-4o / gpt-4o-mini (used for `o200k_base`).
const TOOL_COSTS_O200K: ToolCosts = ToolCosts {
    func_init: 7,
    prop_init: 3,
    prop_key: 3,
    enum_init: -3,
    enum_item: 3,
    func_end: 12,
};

/// gpt-4 / gpt-3.5-turbo (used for `cl100k_base` and estimates).
const TOOL_COSTS_CL100K: ToolCosts = ToolCosts {
    func_init: 10,
    prop_init: 3,
    prop_key: 3,
    enum_init: -3,
    enum_item: 3,
    func_end: 12,
};

/// The token count of a chat request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChatCount {
    /// The number of prompt tokens.
    pub tokens: usize,
    /// True when the count used only the cookbook message formula on string
    /// values with an exact encoding; false when it includes an approximation.
    pub exact: bool,
    /// The encoding that counted.
    pub encoding: Encoding,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::TokenizerBadRequest {
        reason: reason.into(),
    }
}

/// Counts the prompt tokens of a Chat Completions request body (JSON bytes).
///
/// Also accepts an Anthropic Messages body (top-level `system`, content blocks,
/// tools with `input_schema`), which is only ever approximate. Fails with
/// [`Error::TokenizerBadRequest`] when the body is not valid JSON, not an
/// object, has no `messages` array, or a message is not an object.
pub fn count_chat(body: &[u8], encoding: Encoding) -> Result<ChatCount, Error> {
    let request: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let request = request
        .as_object()
        .ok_or_else(|| bad("the body is not a JSON object"))?;
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("the body has no \"messages\" array"))?;

    let mut counter = Counter {
        encoding,
        tokens: 0,
        exact: encoding.is_exact(),
    };
    if let Some(system) = request.get("system").filter(|v| !v.is_null()) {
        // Anthropic Messages: the system prompt is a top-level field.
        counter.exact = false;
        counter.tokens += TOKENS_PER_MESSAGE;
        counter.content(system);
    }
    for (i, message) in messages.iter().enumerate() {
        let message = message
            .as_object()
            .ok_or_else(|| bad(format!("messages[{i}] is not an object")))?;
        counter.message(message);
    }
    counter.tokens += REPLY_PRIMING_TOKENS;

    let tools = ["tools", "functions"]
        .iter()
        .filter_map(|key| request.get(*key).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_object);
    counter.tools(tools);

    Ok(ChatCount {
        tokens: encoding.finish(counter.tokens),
        exact: counter.exact,
        encoding,
    })
}

struct Counter {
    encoding: Encoding,
    tokens: usize,
    exact: bool,
}

impl Counter {
    /// The raw (unscaled) count of one string.
    fn raw(&self, text: &str) -> usize {
        self.encoding.tokenizer().count(text)
    }

    fn text(&mut self, text: &str) {
        self.tokens += self.raw(text);
    }

    /// A non-string value counted as its compact JSON (an approximation).
    fn json(&mut self, value: &Value) {
        self.exact = false;
        match value {
            Value::String(s) => self.text(s),
            other => self.text(&other.to_string()),
        }
    }

    fn message(&mut self, message: &Map<String, Value>) {
        self.tokens += TOKENS_PER_MESSAGE;
        for (key, value) in message {
            match (key.as_str(), value) {
                (_, Value::Null) => {}
                (key, Value::String(s)) => {
                    self.text(s);
                    if key == "name" {
                        self.tokens += TOKENS_PER_NAME;
                    }
                }
                ("content", content) => self.content(content),
                ("tool_calls", Value::Array(calls)) => {
                    self.exact = false;
                    for call in calls {
                        self.tokens += TOKENS_PER_TOOL_CALL;
                        if let Some(function) = call.get("function") {
                            self.function_call(function);
                        }
                    }
                }
                ("function_call", function) => {
                    self.exact = false;
                    self.tokens += TOKENS_PER_TOOL_CALL;
                    self.function_call(function);
                }
                (_, other) => self.json(other),
            }
        }
    }

    /// A function call's name and arguments (approximate: the caller marks it so).
    fn function_call(&mut self, function: &Value) {
        if let Some(name) = function.get("name").and_then(Value::as_str) {
            self.text(name);
        }
        match function.get("arguments") {
            Some(Value::String(arguments)) => self.text(arguments),
            Some(Value::Null) | None => {}
            Some(other) => self.json(other),
        }
    }

    /// A message's content (or an Anthropic `system`): a string, or an array of parts.
    fn content(&mut self, content: &Value) {
        match content {
            Value::Null => {}
            Value::String(s) => self.text(s),
            Value::Array(parts) => {
                self.exact = false;
                for part in parts {
                    self.part(part);
                }
            }
            other => self.json(other),
        }
    }

    /// One part of a content array (OpenAI and Anthropic part types).
    fn part(&mut self, part: &Value) {
        let Some(part) = part.as_object() else {
            if let Value::String(s) = part {
                self.text(s);
            }
            return;
        };
        let field = |name: &str| part.get(name).and_then(Value::as_str);
        match field("type") {
            Some("text" | "input_text" | "output_text") => {
                if let Some(text) = field("text") {
                    self.text(text);
                }
            }
            Some("refusal") => {
                if let Some(text) = field("refusal") {
                    self.text(text);
                }
            }
            Some("thinking") => {
                if let Some(text) = field("thinking") {
                    self.text(text);
                }
            }
            Some("image_url" | "image" | "input_image") => {
                let low = part
                    .get("image_url")
                    .and_then(|i| i.get("detail"))
                    .or_else(|| part.get("detail"))
                    .and_then(Value::as_str)
                    == Some("low");
                self.tokens += if low {
                    IMAGE_TOKENS_LOW
                } else {
                    IMAGE_TOKENS_HIGH
                };
            }
            Some("tool_use") => {
                self.tokens += TOKENS_PER_TOOL_CALL;
                if let Some(name) = field("name") {
                    self.text(name);
                }
                if let Some(input) = part.get("input") {
                    self.json(input);
                }
            }
            Some("tool_result") => {
                if let Some(content) = part.get("content") {
                    self.content(content);
                }
            }
            // Audio, files, documents and unknown parts: not counted (documented).
            _ => {}
        }
    }

    /// Tool definitions, by the cookbook's `num_tokens_for_tools`.
    fn tools<'a>(&mut self, tools: impl Iterator<Item = &'a Map<String, Value>>) {
        let costs = match self.encoding {
            Encoding::O200kBase => &TOOL_COSTS_O200K,
            Encoding::Cl100kBase | Encoding::Estimate => &TOOL_COSTS_CL100K,
        };
        let mut total: i64 = 0;
        let mut any = false;
        for tool in tools {
            any = true;
            // {"type": "function", "function": {...}}, or the function itself
            // (legacy `functions`, Anthropic tools).
            let function = tool
                .get("function")
                .and_then(Value::as_object)
                .unwrap_or(tool);
            total += costs.func_init;
            let name = str_field(function, "name");
            let description = str_field(function, "description");
            total += self.raw_i64(&format!("{name}:{}", strip_period(description)));
            let properties = function
                .get("parameters")
                .or_else(|| function.get("input_schema"))
                .and_then(|p| p.get("properties"))
                .and_then(Value::as_object);
            let Some(properties) = properties.filter(|p| !p.is_empty()) else {
                continue;
            };
            total += costs.prop_init;
            for (key, property) in properties {
                total += costs.prop_key;
                let p_type = match property.get("type") {
                    Some(Value::String(t)) => t.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                let p_desc = property
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if let Some(items) = property.get("enum").and_then(Value::as_array) {
                    total += costs.enum_init;
                    for item in items {
                        total += costs.enum_item;
                        total += match item {
                            Value::String(s) => self.raw_i64(s),
                            other => self.raw_i64(&other.to_string()),
                        };
                    }
                }
                total += self.raw_i64(&format!("{key}:{p_type}:{}", strip_period(p_desc)));
            }
        }
        if any {
            total += costs.func_end;
            self.exact = false;
            self.tokens += usize::try_from(total).unwrap_or(0);
        }
    }

    fn raw_i64(&self, text: &str) -> i64 {
        i64::try_from(self.raw(text)).unwrap_or(i64::MAX)
    }
}

fn str_field<'a>(object: &'a Map<String, Value>, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The cookbook drops one trailing period from descriptions.
fn strip_period(text: &str) -> &str {
    text.strip_suffix('.').unwrap_or(text)
}
