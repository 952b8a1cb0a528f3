//! Incremental Server-Sent Events parsing and encoding.
//!
//! [`Parser`] follows the WHATWG HTML "event stream interpretation" rules
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>):
//!
//! - lines end in LF, CR or CRLF; a CR ending one fed chunk and an LF starting the
//!   next are one line end;
//! - one UTF-8 BOM at the very start of the stream is skipped;
//! - lines starting with `:` are comments;
//! - `name: value` with at most one space after the colon removed; a line with no
//!   colon is a field name with an empty value;
//! - fields `event`, `data` (lines joined with `\n`), `id` (ignored if it contains
//!   NUL; persists across events), `retry` (ASCII digits only, else ignored);
//!   other fields are ignored;
//! - a blank line dispatches the event, unless its data buffer is empty; the event
//!   type defaults to `"message"`;
//! - an event not terminated by a blank line is never dispatched
//!   ([`Parser::has_pending`] tells when the stream ended mid-event).
//!
//! Bytes are decoded as UTF-8 lossily per complete line, so a multi-byte
//! character split across chunks decodes correctly, and feeding the same bytes in
//! any split yields the same events.

use memchr::{memchr, memchr2};

use crate::Error;

/// Default limit for one line and for the data of one event: 16 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// Buffers that grew beyond this are freed after use instead of being kept for
/// reuse, so one huge event does not pin its memory for the whole stream.
const KEEP_CAPACITY: usize = 64 * 1024;

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Event {
    /// The event type: the last `event` field of the block, `"message"` if none.
    pub event: String,
    /// The `data` field values joined with `\n`.
    pub data: String,
    /// The last event ID at dispatch (persists across events); `""` if none.
    pub id: String,
    /// The reconnection time (ms) from the last valid `retry` field seen since the
    /// previously dispatched event, if any.
    pub retry: Option<u64>,
}

/// An incremental SSE parser: feed it network chunks as they arrive.
#[derive(Debug, Clone)]
pub struct Parser {
    max_event_bytes: usize,
    /// `Some(n)` while still at stream start and the first `n` bytes seen so far
    /// are a prefix of the BOM; `None` once decided.
    bom_matched: Option<usize>,
    /// The partial line carried over from earlier chunks.
    line: Vec<u8>,
    /// The last chunk ended with CR: an LF opening the next chunk is skipped.
    after_cr: bool,
    /// Data buffer (raw bytes, each value followed by `\n`).
    data: Vec<u8>,
    /// Event type buffer (raw bytes).
    event_type: Vec<u8>,
    /// Last event ID buffer (set by `id` fields).
    id_buffer: String,
    /// Last event ID string (copied from the buffer at every blank line).
    last_event_id: String,
    /// `retry` value waiting for the next dispatched event.
    pending_retry: Option<u64>,
    /// Current reconnection time set by the stream.
    retry: Option<u64>,
    /// Set once the parser has failed; every later feed returns it.
    failed: Option<Error>,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser with the default limit ([`DEFAULT_MAX_EVENT_BYTES`]).
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser that fails with [`Error::SseEventTooLarge`] when one line, or the
    /// data of one event, exceeds `max_event_bytes` bytes.
    pub fn with_limit(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            bom_matched: Some(0),
            line: Vec::new(),
            after_cr: false,
            data: Vec::new(),
            event_type: Vec::new(),
            id_buffer: String::new(),
            last_event_id: String::new(),
            pending_retry: None,
            retry: None,
            failed: None,
        }
    }

    /// The limit given at construction.
    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// Parses one chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, Error> {
        let mut out = Vec::new();
        self.feed_into(chunk, &mut out)?;
        Ok(out)
    }

    /// Parses one chunk, pushing the events it completed onto `out`.
    ///
    /// On error, `out` may hold events completed before the offending line; the
    /// parser then drops its buffers and fails every later call with the same
    /// error.
    pub fn feed_into(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let res = self.feed_inner(chunk, out);
        if let Err(e) = &res {
            self.fail(e.clone());
        }
        res
    }

    /// True when the stream so far ended mid-event: a partial line is held, or a
    /// data, event type or ID field was read and no blank line followed yet (or the
    /// parser has failed). Such an event is never dispatched.
    pub fn has_pending(&self) -> bool {
        self.failed.is_some()
            || self.bom_matched.is_some_and(|n| n > 0)
            || !self.line.is_empty()
            || !self.data.is_empty()
            || !self.event_type.is_empty()
            || self.id_buffer != self.last_event_id
    }

    /// The last event ID string: the value of the last valid `id` field as of the
    /// last blank line (what a client would send as `Last-Event-ID`).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time (ms) set by the last valid `retry` field, if any.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    fn fail(&mut self, e: Error) {
        self.failed = Some(e);
        self.line = Vec::new();
        self.data = Vec::new();
        self.event_type = Vec::new();
    }

    fn too_large(&self) -> Error {
        Error::SseEventTooLarge {
            limit: self.max_event_bytes,
        }
    }

    fn check_line_len(&self, len: usize) -> Result<(), Error> {
        if len > self.max_event_bytes {
            Err(self.too_large())
        } else {
            Ok(())
        }
    }

    fn feed_inner(&mut self, mut chunk: &[u8], out: &mut Vec<Event>) -> Result<(), Error> {
        if let Some(matched) = self.bom_matched {
            let mut n = matched;
            let mut i = 0;
            while n < BOM.len() && i < chunk.len() && chunk[i] == BOM[n] {
                n += 1;
                i += 1;
            }
            if n == BOM.len() {
                self.bom_matched = None;
                chunk = &chunk[i..];
            } else if i == chunk.len() {
                // Everything so far is a BOM prefix: wait for more bytes.
                self.bom_matched = Some(n);
                return Ok(());
            } else {
                // Not a BOM: the bytes held back are ordinary input.
                self.bom_matched = None;
                self.process(&BOM[..n], out)?;
                chunk = &chunk[i..];
            }
        }
        self.process(chunk, out)
    }

    fn process(&mut self, mut rest: &[u8], out: &mut Vec<Event>) -> Result<(), Error> {
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(i) = memchr2(b'\n', b'\r', rest) {
            if self.line.is_empty() {
                self.check_line_len(i)?;
                self.process_line(&rest[..i], out)?;
            } else {
                self.check_line_len(self.line.len() + i)?;
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&rest[..i]);
                let res = self.process_line(&line, out);
                if line.capacity() <= KEEP_CAPACITY {
                    line.clear();
                    self.line = line;
                }
                res?;
            }
            let terminator = rest[i];
            rest = &rest[i + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        if !rest.is_empty() {
            self.check_line_len(self.line.len() + rest.len())?;
            self.line.extend_from_slice(rest);
        }
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), Error> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        let (name, value) = match memchr(b':', line) {
            Some(0) => return Ok(()), // comment
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"event" => {
                self.event_type.clear();
                self.event_type.extend_from_slice(value);
            }
            b"data" => {
                // Length of the event data once this value is appended.
                if self.data.len() + value.len() > self.max_event_bytes {
                    return Err(self.too_large());
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            // An id containing NUL is ignored.
            b"id" if memchr(0, value).is_none() => {
                self.id_buffer.clear();
                self.id_buffer.push_str(&String::from_utf8_lossy(value));
            }
            // retry: ASCII digits only (at least one), else ignored.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let ms = value.iter().fold(0u64, |acc, d| {
                    acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                self.retry = Some(ms);
                self.pending_retry = Some(ms);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        self.data.pop(); // the trailing '\n'
        let data = String::from_utf8_lossy(&self.data).into_owned();
        let event = if self.event_type.is_empty() {
            String::from("message")
        } else {
            String::from_utf8_lossy(&self.event_type).into_owned()
        };
        if self.data.capacity() > KEEP_CAPACITY {
            self.data = Vec::new();
        } else {
            self.data.clear();
        }
        self.event_type.clear();
        out.push(Event {
            event,
            data,
            id: self.last_event_id.clone(),
            retry: self.pending_retry.take(),
        });
    }
}

/// Serialises one event onto `out`: `event: NAME\n` when `event` is given, one
/// `data: ` line per line of `data` (split on `\n`, `\r\n` and `\r`), then a blank
/// line.
///
/// CR and LF cannot be represented in an event name; they are dropped from it, so
/// a name can never inject other fields.
pub fn encode(event: Option<&str>, data: &str, out: &mut Vec<u8>) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        for part in name.split(['\r', '\n']) {
            out.extend_from_slice(part.as_bytes());
        }
        out.push(b'\n');
    }
    let mut rest = data.as_bytes();
    loop {
        out.extend_from_slice(b"data: ");
        match memchr2(b'\n', b'\r', rest) {
            Some(i) => {
                out.extend_from_slice(&rest[..i]);
                out.push(b'\n');
                let terminator = rest[i];
                rest = &rest[i + 1..];
                if terminator == b'\r' && rest.first() == Some(&b'\n') {
                    rest = &rest[1..];
                }
            }
            None => {
                out.extend_from_slice(rest);
                out.push(b'\n');
                break;
            }
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(event: &str, data: &str, id: &str, retry: Option<u64>) -> Event {
        Event {
            event: event.into(),
            data: data.into(),
            id: id.into(),
            retry,
        }
    }

    fn msg(data: &str) -> Event {
        ev("message", data, "", None)
    }

    fn parse(bytes: &[u8]) -> Vec<Event> {
        Parser::new().feed(bytes).unwrap()
    }

    fn parse_chunks(chunks: &[&[u8]]) -> (Vec<Event>, Parser) {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed_into(c, &mut out).unwrap();
        }
        (out, p)
    }

    #[test]
    fn simple_event() {
        assert_eq!(parse(b"data: hello\n\n"), vec![msg("hello")]);
    }

    #[test]
    fn all_line_endings() {
        assert_eq!(
            parse(b"data: a\r\ndata: b\rdata: c\n\r\n"),
            vec![msg("a\nb\nc")]
        );
        assert_eq!(parse(b"data: a\r\r"), vec![msg("a")]);
        assert_eq!(parse(b"data: a\n\r"), vec![msg("a")]);
        // CR LF CR LF is two line ends, not three.
        assert_eq!(
            parse(b"data: a\r\n\r\ndata: b\r\n\r\n"),
            vec![msg("a"), msg("b")]
        );
    }

    #[test]
    fn crlf_split_across_feeds_is_one_line_end() {
        // If the LF after a CR were taken as a second line end, "data: b" would be
        // dispatched on its own after a blank line. It must not be.
        let (evs, p) = parse_chunks(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(evs, vec![msg("a\nb")]);
        assert!(!p.has_pending());
    }

    #[test]
    fn cr_dispatches_without_waiting_for_next_chunk() {
        let mut p = Parser::new();
        assert_eq!(p.feed(b"data: a\r\r").unwrap(), vec![msg("a")]);
        assert_eq!(p.feed(b"\ndata: b\n\n").unwrap(), vec![msg("b")]);
    }

    #[test]
    fn bom_skipped_once_at_start_only() {
        assert_eq!(parse(b"\xEF\xBB\xBFdata: x\n\n"), vec![msg("x")]);
        // A second BOM is part of the field name, so the field is unknown.
        assert_eq!(parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"), vec![]);
        // A BOM later in the stream is not stripped either.
        assert_eq!(parse(b"data: a\n\n\xEF\xBB\xBFdata: x\n\n"), vec![msg("a")]);
        // BOM split across feeds.
        let (evs, _) = parse_chunks(&[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"]);
        assert_eq!(evs, vec![msg("x")]);
    }

    #[test]
    fn partial_bom_is_ordinary_input() {
        // "\xEF\xBB" then not "\xBF": the bytes are kept (lossily decoded).
        let (evs, _) = parse_chunks(&[b"\xEF\xBB", b": comment\ndata: x\n\n"]);
        assert_eq!(evs, vec![msg("x")]);
        let (evs, _) = parse_chunks(&[b"\xEF", b"\n", b"data: y\n\n"]);
        assert_eq!(evs, vec![msg("y")]);
        let mut p = Parser::new();
        assert!(p.feed(b"\xEF\xBB").unwrap().is_empty());
        assert!(p.has_pending());
    }

    #[test]
    fn comments_ignored() {
        assert_eq!(
            parse(b": keep-alive\n\n:\ndata: x\n: inside\n\n"),
            vec![msg("x")]
        );
    }

    #[test]
    fn space_after_colon() {
        assert_eq!(parse(b"data:x\n\n"), vec![msg("x")]);
        assert_eq!(parse(b"data:  x\n\n"), vec![msg(" x")]);
        assert_eq!(parse(b"data: x: y\n\n"), vec![msg("x: y")]);
        assert_eq!(parse(b"data:\tx\n\n"), vec![msg("\tx")]);
    }

    #[test]
    fn line_without_colon_is_field_with_empty_value() {
        assert_eq!(parse(b"data\n\n"), vec![msg("")]);
        assert_eq!(parse(b"data\ndata\n\n"), vec![msg("\n")]);
        assert_eq!(
            parse(b"event: x\nevent\ndata: a\n\n"),
            vec![msg("a")],
            "bare `event` resets the type to the default"
        );
    }

    #[test]
    fn multi_line_data_joined_with_lf() {
        assert_eq!(
            parse(b"data: one\ndata: two\ndata:\ndata: three\n\n"),
            vec![msg("one\ntwo\n\nthree")]
        );
    }

    #[test]
    fn empty_data_buffer_not_dispatched_and_resets_type() {
        assert_eq!(parse(b"event: foo\n\ndata: x\n\n"), vec![msg("x")]);
        assert_eq!(parse(b"\n\n\n"), vec![]);
        // "data:" (empty value) does dispatch, with empty data.
        assert_eq!(parse(b"data:\n\n"), vec![msg("")]);
    }

    #[test]
    fn event_type() {
        assert_eq!(
            parse(b"event: delta\ndata: x\n\ndata: y\n\n"),
            vec![ev("delta", "x", "", None), msg("y")]
        );
        assert_eq!(
            parse(b"event: a\nevent: b\ndata: x\n\n"),
            vec![ev("b", "x", "", None)]
        );
    }

    #[test]
    fn id_persists_and_nul_ignored() {
        let mut p = Parser::new();
        let evs = p
            .feed(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\0x\ndata: c\n\nid\ndata: d\n\n")
            .unwrap();
        assert_eq!(
            evs,
            vec![
                ev("message", "a", "1", None),
                ev("message", "b", "1", None),
                ev("message", "c", "1", None),
                ev("message", "d", "", None),
            ]
        );
        assert_eq!(p.last_event_id(), "");
    }

    #[test]
    fn id_applies_at_blank_line_even_without_data() {
        let mut p = Parser::new();
        assert!(p.feed(b"id: 7\n").unwrap().is_empty());
        assert_eq!(p.last_event_id(), "");
        assert!(p.has_pending());
        assert!(p.feed(b"\n").unwrap().is_empty());
        assert_eq!(p.last_event_id(), "7");
        assert!(!p.has_pending());
        assert_eq!(
            p.feed(b"data: x\n\n").unwrap(),
            vec![ev("message", "x", "7", None)]
        );
    }

    #[test]
    fn retry_digits_only() {
        let mut p = Parser::new();
        let evs = p
            .feed(b"retry: 1000\ndata: a\n\nretry: 10a\ndata: b\n\nretry:\ndata: c\n\nretry: -1\nretry:  5\nretry: 5 \ndata: d\n\n")
            .unwrap();
        assert_eq!(
            evs,
            vec![
                ev("message", "a", "", Some(1000)),
                msg("b"),
                msg("c"),
                msg("d"),
            ]
        );
        assert_eq!(p.retry(), Some(1000));
        // A retry-only block is not lost: it rides on the next dispatched event.
        let evs = p.feed(b"retry: 3\n\ndata: e\n\ndata: f\n\n").unwrap();
        assert_eq!(evs, vec![ev("message", "e", "", Some(3)), msg("f")]);
        assert_eq!(p.retry(), Some(3));
        // Overflow saturates.
        let evs = p
            .feed(b"retry: 99999999999999999999999\ndata: g\n\n")
            .unwrap();
        assert_eq!(evs[0].retry, Some(u64::MAX));
    }

    #[test]
    fn unknown_fields_ignored() {
        assert_eq!(
            parse(b"foo: bar\nDATA: no\nData: no\ndata : no\ndata: yes\n\n"),
            vec![msg("yes")]
        );
    }

    #[test]
    fn unterminated_event_is_never_dispatched() {
        let mut p = Parser::new();
        assert_eq!(p.feed(b"data: a\n\ndata: b\n").unwrap(), vec![msg("a")]);
        assert!(p.has_pending());
        let mut p = Parser::new();
        assert!(p.feed(b"data: partial li").unwrap().is_empty());
        assert!(p.has_pending());
        let mut p = Parser::new();
        assert!(p.feed(b"event: x\n").unwrap().is_empty());
        assert!(p.has_pending());
        let mut p = Parser::new();
        p.feed(b"data: a\n\n: comment\n").unwrap();
        assert!(!p.has_pending());
        let mut p = Parser::new();
        p.feed(b"data: a\r").unwrap();
        assert!(p.has_pending());
        p.feed(b"\r").unwrap();
        assert!(!p.has_pending());
    }

    #[test]
    fn utf8_split_across_feeds_and_lossy() {
        let s = "data: h\u{e9}llo \u{1F600}\n\n".as_bytes();
        for cut in 0..=s.len() {
            let (evs, _) = parse_chunks(&[&s[..cut], &s[cut..]]);
            assert_eq!(evs, vec![msg("h\u{e9}llo \u{1F600}")], "cut at {cut}");
        }
        assert_eq!(
            parse(b"data: a\xFFb\xC3\n\n"),
            vec![msg("a\u{FFFD}b\u{FFFD}")]
        );
        assert_eq!(parse(b"event: \xFF\ndata: x\n\n")[0].event, "\u{FFFD}");
    }

    #[test]
    fn too_large_line_or_event() {
        let mut p = Parser::with_limit(16);
        assert_eq!(
            p.feed(b"data: 0123456789\n\n").unwrap(),
            vec![msg("0123456789")]
        );
        // A partial line beyond the limit.
        let mut p = Parser::with_limit(16);
        assert_eq!(
            p.feed(b"data: 0123456789abcdef"),
            Err(Error::SseEventTooLarge { limit: 16 })
        );
        assert!(p.has_pending());
        // ... and the parser stays failed.
        assert_eq!(p.feed(b"\n\n"), Err(Error::SseEventTooLarge { limit: 16 }));
        // A partial line that grows across feeds.
        let mut p = Parser::with_limit(16);
        for _ in 0..16 {
            p.feed(b":").unwrap();
        }
        assert!(p.feed(b":").is_err());
        // Lines that each fit but whose event data does not.
        let mut p = Parser::with_limit(16);
        let err = p
            .feed(b"data: 0123456789\ndata: 0123456789\n\n")
            .unwrap_err();
        assert_eq!(err, Error::SseEventTooLarge { limit: 16 });
        // Many small events are fine.
        let mut p = Parser::with_limit(16);
        let many = b"data: 0123456789\n\n".repeat(1000);
        assert_eq!(p.feed(&many).unwrap().len(), 1000);
    }

    #[test]
    fn byte_at_a_time() {
        let stream: &[u8] = b"\xEF\xBB\xBF: hi\r\nevent: delta\r\nid: 42\r\ndata: {\"x\": \"\xC3\xA9\"}\r\n\r\ndata: [DONE]\r\r\ndata: cut";
        let whole = parse(stream);
        assert_eq!(
            whole,
            vec![
                ev("delta", "{\"x\": \"\u{e9}\"}", "42", None),
                ev("message", "[DONE]", "42", None),
            ]
        );
        let mut p = Parser::new();
        let mut out = Vec::new();
        for b in stream {
            p.feed_into(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out, whole);
        assert!(p.has_pending());
        assert_eq!(p.last_event_id(), "42");
    }

    #[test]
    fn empty_feeds_are_harmless() {
        let (evs, p) = parse_chunks(&[b"", b"data: a\r", b"", b"\n", b"", b"\n"]);
        assert_eq!(evs, vec![msg("a")]);
        assert!(!p.has_pending());
    }

    #[test]
    fn encode_examples() {
        let mut out = Vec::new();
        encode(Some("delta"), "a\nb\r\nc\rd", &mut out);
        assert_eq!(out, b"event: delta\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
        out.clear();
        encode(None, "", &mut out);
        assert_eq!(out, b"data: \n\n");
        out.clear();
        encode(Some("a\r\nb"), "x", &mut out);
        assert_eq!(out, b"event: ab\ndata: x\n\n");
        assert_eq!(parse(&out), vec![ev("ab", "x", "", None)]);
    }

    // ---- properties -------------------------------------------------------

    /// One line of a generated stream (without its line end).
    fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            Just(b"data".to_vec()),
            Just(b"data".to_vec()),
            Just(b"event".to_vec()),
            Just(b"id".to_vec()),
            Just(b"retry".to_vec()),
            Just(b"dat".to_vec()),
            Just(b"".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..4),
        ];
        let value = prop_oneof![
            proptest::collection::vec(
                prop_oneof![
                    Just(b' '),
                    Just(b':'),
                    Just(0u8),
                    Just(0xC3u8),
                    Just(0xA9u8),
                    Just(0xEFu8),
                    b'0'..=b'9',
                    b'a'..=b'z',
                ],
                0..8
            ),
            "[ -~\u{e9}\u{1F600}]{0,8}".prop_map(String::into_bytes),
        ];
        let sep = prop_oneof![
            Just(b":".to_vec()),
            Just(b": ".to_vec()),
            Just(b":  ".to_vec()),
            Just(b"".to_vec())
        ];
        prop_oneof![
            4 => (name, sep, value).prop_map(|(mut n, s, v)| {
                n.retain(|b| *b != b'\n' && *b != b'\r');
                n.extend(s);
                n.extend(v.into_iter().filter(|b| *b != b'\n' && *b != b'\r'));
                n
            }),
            2 => Just(Vec::new()),
            1 => "[ -~]{0,6}".prop_map(|s| format!(":{s}").into_bytes()),
        ]
    }

    fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
        let eol = prop_oneof![Just(&b"\n"[..]), Just(&b"\r"[..]), Just(&b"\r\n"[..])];
        let structured = (
            any::<bool>(),
            proptest::collection::vec((line_strategy(), eol), 0..24),
            proptest::collection::vec(any::<u8>(), 0..4),
        )
            .prop_map(|(bom, lines, tail)| {
                let mut s = Vec::new();
                if bom {
                    s.extend_from_slice(BOM);
                }
                for (l, e) in lines {
                    s.extend(l);
                    s.extend_from_slice(e);
                }
                s.extend(tail);
                s
            });
        prop_oneof![
            4 => structured,
            1 => proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    fn observe(p: &Parser) -> (bool, String, Option<u64>) {
        (p.has_pending(), p.last_event_id().to_owned(), p.retry())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_split_gives_same_events(
            stream in stream_strategy(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut whole = Parser::new();
            let expected = whole.feed(&stream).unwrap();

            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut p = Parser::new();
            let mut got = Vec::new();
            let mut start = 0;
            for end in points.into_iter().chain([stream.len()]) {
                p.feed_into(&stream[start..end], &mut got).unwrap();
                start = end;
            }
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(observe(&p), observe(&whole));

            let mut bytewise = Parser::new();
            let mut got = Vec::new();
            for b in &stream {
                bytewise.feed_into(std::slice::from_ref(b), &mut got).unwrap();
            }
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(observe(&bytewise), observe(&whole));
        }

        #[test]
        fn encode_parse_round_trip(
            event in proptest::option::of("[^\r\n]{0,12}"),
            data in "(?s).{0,40}",
            prefix_events in 0usize..3,
        ) {
            let mut bytes = Vec::new();
            for _ in 0..prefix_events {
                encode(Some("warmup"), "x", &mut bytes);
            }
            encode(event.as_deref(), &data, &mut bytes);
            let evs = parse(&bytes);
            prop_assert_eq!(evs.len(), prefix_events + 1);
            let last = evs.last().unwrap();
            let want_event = match event.as_deref() {
                None | Some("") => "message",
                Some(e) => e,
            };
            let want_data = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(&last.event, want_event);
            prop_assert_eq!(&last.data, &want_data);
            prop_assert_eq!(&last.id, "");
            prop_assert_eq!(last.retry, None);
        }

        #[test]
        fn truncated_encoded_event_is_not_dispatched(
            data in "(?s).{0,40}",
            cut_from_end in 1usize..4,
        ) {
            let mut bytes = Vec::new();
            encode(None, &data, &mut bytes);
            let cut = bytes.len().saturating_sub(cut_from_end);
            let mut p = Parser::new();
            let evs = p.feed(&bytes[..cut]).unwrap();
            prop_assert!(evs.is_empty());
            prop_assert!(p.has_pending());
        }
    }
}
