//! Per-chunk checking of an OpenAI-wire (Chat Completions) SSE stream on its way to the client.
//!
//! [`ChatStreamScanner::feed`] takes one upstream network chunk and, in one pass, parses its SSE
//! events, validates each event's `data` as a JSON object, and reports in one [`ChunkScan`]:
//! the bytes to write to the client (every event re-encoded as `data: ...\n\n`), what the
//! chunk says about the answer (started, finished, tool calls, `n > 1`, usage, model, id, the
//! text appended to choice 0) and the failure, if any.
//!
//! The semantics are those of the proxy's former Python relay (`UpstreamStream._check`):
//!
//! - `[DONE]` sets [`ChunkScan::done`] and is **not** written to `out`, so the caller can put a
//!   usage chunk before it; nothing after `[DONE]` is part of the answer (later events are
//!   dropped, unparsed as JSON, uncounted).
//! - An event whose data is not JSON, or not a JSON object, is a malformed stream
//!   ([`StreamFailure::Malformed`]); an object with an `error` key is an in-band error
//!   ([`StreamFailure::ErrorEvent`] with the event's data). Either ends the scan of the chunk,
//!   and every later feed reports the same failure: garbage is never forwarded.
//! - Field tests follow Python truthiness (`null`, `false`, `0`, `""`, `[]`, `{}` are false) and
//!   a choice's `index` is 0 when missing, `0`, `0.0` or `false`, exactly like the old code.
//! - With [`ScanOptions`] for a continuation (a stream resuming another one), each chunk's `id`
//!   is rewritten, chunks without substance (the role chunk) are dropped, and prior tokens are
//!   added to the usage chunk. Rewritten chunks are serialised compactly with the original key
//!   order (like Python's dicts); values other than `id` and `usage` keep their original text.
//!
//! JSON nested deeper than serde_json's recursion limit (128) is treated as not JSON.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Number, Value};

use crate::sse::{self, Parser};
use crate::Error;

/// The data of the event that ends an OpenAI stream.
pub const DONE: &str = "[DONE]";

/// Message of [`StreamFailure::Malformed`] for an event whose data is not JSON.
pub const NOT_JSON: &str = "upstream sent an event that is not JSON";
/// Message of [`StreamFailure::Malformed`] for JSON data that is not an object.
pub const NOT_OBJECT: &str = "upstream sent an event that is not an object";

/// Delta fields that carry part of the answer (the role alone does not).
const SUBSTANCE: [&str; 5] = [
    "content",
    "tool_calls",
    "function_call",
    "refusal",
    "reasoning_content",
];

/// How a relayed stream is adjusted on its way to the client (all off by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// This stream continues another one the client is already reading: chunks without
    /// substance are dropped and every written chunk is re-serialised (with `continuation_id`).
    pub continuation: bool,
    /// The id of the stream being continued; written into every chunk's `id` when set.
    pub continuation_id: Option<String>,
    /// Prompt and completion tokens of earlier legs, added to a usage chunk's counts
    /// (`total_tokens` is recomputed).
    pub prior_usage: Option<(i64, i64)>,
}

/// Why a stream cannot be relayed further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFailure {
    /// An event that is not a JSON object ([`NOT_JSON`] or [`NOT_OBJECT`]).
    Malformed(&'static str),
    /// The upstream reported an error in-band: the event's data (already OpenAI's format).
    ErrorEvent(String),
}

impl fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamFailure::Malformed(msg) => f.write_str(msg),
            StreamFailure::ErrorEvent(data) => write!(f, "upstream sent an in-band error: {data}"),
        }
    }
}

/// What one chunk of an OpenAI-wire stream held. Flags are about this chunk's events only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkScan {
    /// Bytes to write to the client: the chunk's events (before any `[DONE]` or failure),
    /// each re-encoded as `data: ...\n\n`. Never contains `[DONE]`.
    pub out: Vec<u8>,
    /// The chunk held `[DONE]`.
    pub done: bool,
    /// An event carried something of the answer: non-empty delta content, tool calls, function
    /// call, refusal or reasoning content, a finish reason, a non-empty usage object, or `[DONE]`.
    pub started: bool,
    /// A choice carried a finish reason.
    pub finished: bool,
    /// A delta carried tool calls or a function call.
    pub tool_calls: bool,
    /// A choice had an index other than 0.
    pub multiple_choices: bool,
    /// JSON events checked (including a continuation's dropped role chunk; not `[DONE]`).
    pub events: usize,
    /// The last non-empty usage object, as the upstream sent it (JSON text).
    pub usage: Option<String>,
    /// The first string `model` of the chunk.
    pub model: Option<String>,
    /// The first string `id` of the chunk (the upstream's, before any rewrite).
    pub id: Option<String>,
    /// Text appended to choice 0's content by this chunk.
    pub text: String,
    /// Set when the stream failed in (or before) this chunk; `out` then holds only what came
    /// before the failure and must not be written.
    pub failure: Option<StreamFailure>,
}

/// Checks an OpenAI-wire SSE stream chunk by chunk (see the module documentation).
#[derive(Debug, Clone)]
pub struct ChatStreamScanner {
    parser: Parser,
    options: ScanOptions,
    done: bool,
    failed: Option<StreamFailure>,
    events: Vec<sse::Event>,
}

impl Default for ChatStreamScanner {
    fn default() -> Self {
        Self::new(ScanOptions::default())
    }
}

impl ChatStreamScanner {
    /// A scanner with the SSE parser's default event size limit.
    pub fn new(options: ScanOptions) -> Self {
        Self::with_limit(options, sse::DEFAULT_MAX_EVENT_BYTES)
    }

    /// A scanner whose SSE parser fails on a line or event over `max_event_bytes`.
    pub fn with_limit(options: ScanOptions, max_event_bytes: usize) -> Self {
        Self {
            parser: Parser::with_limit(max_event_bytes),
            options,
            done: false,
            failed: None,
            events: Vec::new(),
        }
    }

    /// The options given at construction.
    pub fn options(&self) -> &ScanOptions {
        &self.options
    }

    /// `[DONE]` was seen: nothing more is part of the answer.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The stream ended mid-event so far (see [`Parser::has_pending`]).
    pub fn has_pending(&self) -> bool {
        self.parser.has_pending()
    }

    /// The SSE parser's event size limit.
    pub fn max_event_bytes(&self) -> usize {
        self.parser.max_event_bytes()
    }

    /// Scans one network chunk.
    ///
    /// Errs only when the SSE framing itself fails ([`Error::SseEventTooLarge`]); then no event
    /// of the chunk is reported. A stream-level failure is reported in [`ChunkScan::failure`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<ChunkScan, Error> {
        let mut scan = ChunkScan::default();
        if let Some(failure) = &self.failed {
            scan.failure = Some(failure.clone());
            return Ok(scan);
        }
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let parsed = self.parser.feed_into(chunk, &mut events);
        if parsed.is_ok() {
            for event in &events {
                if self.done {
                    break;
                }
                if let Err(failure) = self.event(&event.data, &mut scan) {
                    self.failed = Some(failure.clone());
                    scan.failure = Some(failure);
                    break;
                }
            }
        }
        events.clear();
        self.events = events;
        parsed.map(|()| scan)
    }

    fn event(&mut self, data: &str, scan: &mut ChunkScan) -> Result<(), StreamFailure> {
        if data == DONE {
            self.done = true;
            scan.done = true;
            scan.started = true;
            return Ok(());
        }
        let Ok(TopLevel(fields)) = serde_json::from_str::<TopLevel<'_>>(data) else {
            return Err(StreamFailure::Malformed(NOT_JSON));
        };
        let Some(fields) = fields else {
            return Err(StreamFailure::Malformed(NOT_OBJECT));
        };
        if fields.iter().any(|(k, _)| k == "error") {
            return Err(StreamFailure::ErrorEvent(data.to_owned()));
        }
        // Duplicate keys: the last one wins, as in a parsed dict.
        let get = |name: &str| {
            fields
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| *v)
        };
        let mut substance = false;
        if let Some(raw) = get("choices") {
            if let Value::Array(choices) = parse_value(raw)? {
                for choice in &choices {
                    substance |= scan_choice(choice, scan);
                }
            }
        }
        let usage_raw = get("usage");
        let usage = usage_raw.map(parse_value).transpose()?;
        let usage_truthy = usage.as_ref().is_some_and(truthy);
        let mut new_usage = None;
        if let (Some(raw), Some(Value::Object(map))) = (usage_raw, &usage) {
            if !map.is_empty() {
                scan.started = true;
                scan.usage = Some(raw.get().to_owned());
                if let Some(prior) = self.options.prior_usage {
                    new_usage = Some(add_usage(raw, prior)?);
                }
            }
        }
        if scan.model.is_none() {
            scan.model = get("model").and_then(raw_string);
        }
        if scan.id.is_none() {
            scan.id = get("id").and_then(raw_string);
        }
        scan.events += 1;
        if !self.options.continuation && new_usage.is_none() {
            sse::encode(None, data, &mut scan.out);
            return Ok(());
        }
        let mut new_id = None;
        if self.options.continuation {
            if !(substance || usage_truthy) {
                return Ok(()); // the continuation's role chunk: the client already has one
            }
            new_id = self.options.continuation_id.as_deref().map(json_string);
        }
        let mut replace = Vec::with_capacity(2);
        if let Some(id) = new_id {
            replace.push(("id", id));
        }
        if let Some(usage) = new_usage {
            replace.push(("usage", usage));
        }
        scan.out.extend_from_slice(b"data: ");
        write_object(&fields, replace, &mut scan.out);
        scan.out.extend_from_slice(b"\n\n");
        Ok(())
    }
}

/// Updates `scan` from one element of `choices`; true when it carried substance.
fn scan_choice(choice: &Value, scan: &mut ChunkScan) -> bool {
    let Value::Object(choice) = choice else {
        return false;
    };
    let mut substance = false;
    let first = choice.get("index").is_none_or(eq_zero);
    if !first {
        scan.multiple_choices = true;
    }
    if choice.get("finish_reason").is_some_and(truthy) {
        scan.finished = true;
        scan.started = true;
        substance = true;
    }
    if let Some(Value::Object(delta)) = choice.get("delta") {
        if SUBSTANCE.iter().any(|k| delta.get(*k).is_some_and(truthy)) {
            scan.started = true;
            substance = true;
        }
        if delta.get("tool_calls").is_some_and(truthy)
            || delta.get("function_call").is_some_and(truthy)
        {
            scan.tool_calls = true;
        }
        if let Some(Value::String(content)) = delta.get("content") {
            if first {
                scan.text.push_str(content);
            }
        }
    }
    substance
}

fn parse_value(raw: &RawValue) -> Result<Value, StreamFailure> {
    serde_json::from_str(raw.get()).map_err(|_| StreamFailure::Malformed(NOT_JSON))
}

/// The string a raw JSON value holds, if it is a string.
fn raw_string(raw: &RawValue) -> Option<String> {
    if raw.get().starts_with('"') {
        serde_json::from_str(raw.get()).ok()
    } else {
        None
    }
}

fn json_string(s: &str) -> Vec<u8> {
    // Serialising a &str cannot fail.
    serde_json::to_vec(s).unwrap_or_default()
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => !number_is_zero(n),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn number_is_zero(n: &Number) -> bool {
    n.as_f64() == Some(0.0)
}

/// Python's `value == 0` for a JSON value (`false == 0` and `0.0 == 0` hold).
fn eq_zero(v: &Value) -> bool {
    match v {
        Value::Number(n) => number_is_zero(n),
        Value::Bool(b) => !b,
        _ => false,
    }
}

/// Python's `value if isinstance(value, int) else 0` for a JSON value (a bool is an int).
fn int_value(raw: &RawValue) -> i128 {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Number(n)) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .unwrap_or(0),
        Ok(Value::Bool(b)) => i128::from(b),
        _ => 0,
    }
}

/// A usage object (raw JSON) plus prior prompt and completion tokens, `total_tokens`
/// recomputed; compact JSON in the original key order.
fn add_usage(raw: &RawValue, prior: (i64, i64)) -> Result<Vec<u8>, StreamFailure> {
    let Ok(TopLevel(Some(fields))) = serde_json::from_str::<TopLevel<'_>>(raw.get()) else {
        return Err(StreamFailure::Malformed(NOT_JSON));
    };
    let last = |name: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map_or(0, |(_, v)| int_value(v))
    };
    let prompt = last("prompt_tokens") + i128::from(prior.0);
    let completion = last("completion_tokens") + i128::from(prior.1);
    let mut out = Vec::with_capacity(raw.get().len() + 16);
    write_object(
        &fields,
        vec![
            ("prompt_tokens", prompt.to_string().into_bytes()),
            ("completion_tokens", completion.to_string().into_bytes()),
            (
                "total_tokens",
                (prompt + completion).to_string().into_bytes(),
            ),
        ],
        &mut out,
    );
    Ok(out)
}

/// Writes an object as compact JSON the way a Python dict built from it would serialise:
/// each key once, at its first position, with its last value; `replace` sets keys (in place
/// when present, else appended in order).
fn write_object(
    fields: &[(Cow<'_, str>, &RawValue)],
    replace: Vec<(&str, Vec<u8>)>,
    out: &mut Vec<u8>,
) {
    let mut order: Vec<(&str, Option<&RawValue>)> = Vec::with_capacity(fields.len() + 2);
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(fields.len() + 2);
    for (key, value) in fields {
        match index.get(key.as_ref()) {
            Some(&i) => order[i].1 = Some(*value),
            None => {
                index.insert(key.as_ref(), order.len());
                order.push((key.as_ref(), Some(*value)));
            }
        }
    }
    let mut replaced: Vec<Option<Vec<u8>>> = vec![None; order.len()];
    for (key, value) in replace {
        match index.get(key) {
            Some(&i) => replaced[i] = Some(value),
            None => {
                index.insert(key, order.len());
                order.push((key, None));
                replaced.push(Some(value));
            }
        }
    }
    out.push(b'{');
    for (i, ((key, value), new)) in order.iter().zip(replaced).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&json_string(key));
        out.push(b':');
        match (new, value) {
            (Some(new), _) => out.extend_from_slice(&new),
            (None, Some(raw)) => push_minified(raw.get(), out),
            (None, None) => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
}

/// Copies valid JSON text without its insignificant whitespace.
fn push_minified(json: &str, out: &mut Vec<u8>) {
    let (mut in_string, mut escaped) = (false, false);
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(b);
            in_string = b == b'"';
        }
    }
}

/// A JSON document's top level: its members in order (values unparsed) when it is an object,
/// `None` when it is any other JSON value. Deserialising it validates the whole document.
struct TopLevel<'de>(Option<Vec<(Cow<'de, str>, &'de RawValue)>>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TopVisitor)
    }
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = TopLevel<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(Key(key)) = map.next_key()? {
            fields.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(TopLevel(Some(fields)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(TopLevel(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(TopLevel(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(TopLevel(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(TopLevel(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(TopLevel(None))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(TopLevel(None))
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
