//! Prompt-hash cache: the canonical form of a request, its 128-bit key, and a
//! bounded in-memory store (LRU, per-entry TTL).
//!
//! # Canonical form
//!
//! [`canonical_request`] turns the raw JSON body into one byte string per JSON
//! *value*, so two bodies that mean the same thing get the same key:
//!
//! - no insignificant whitespace;
//! - object keys sorted (by their canonical encoding, which for ordinary keys is
//!   code-point order); a key given twice keeps its last value, as JSON parsers do;
//! - strings re-encoded the RFC 8785 (JCS) way: `\"`, `\\`, `\b \f \n \r \t`,
//!   `\u00xx` (lowercase) for the other control characters, everything else as
//!   raw UTF-8 (so `"\u0041"`, `"A"` and `"\/"`, `"/"` are equal);
//! - numbers by their exact decimal value, so `1`, `1.0`, `1e0` and `10e-1` are
//!   equal, while `9007199254740993` and `9007199254740992` stay different (no
//!   rounding through `f64`). `-0` is `0`. See [`canonical_number`] for the format;
//! - at the top level only, the fields in [`IGNORED_FIELDS`] are dropped: they
//!   change how an answer is delivered or billed, not what it says.
//!
//! The output is itself valid JSON. Invalid JSON (including lone surrogate
//! escapes, raw control characters in strings, nesting deeper than
//! [`MAX_DEPTH`]) is an [`Error::CacheBadRequest`]; the caller then bypasses the
//! cache.
//!
//! # Key
//!
//! [`cache_key`] is XXH3-128 over a domain tag, the served model (route name), the
//! wire format and the tenant scope, each prefixed with its length as a
//! little-endian `u64`, then the canonical body. Fields cannot run into each other,
//! so one tenant's key never equals another's for any body.
//!
//! # Store
//!
//! [`Store`] is bounded by entries and by bytes (each entry costs its value's
//! length plus [`ENTRY_OVERHEAD`]); when full it drops the least recently used
//! entry. Every entry has its own expiry time; an expired entry is dropped when it
//! is next looked up (or when it reaches the LRU end). Time is passed in as `now`
//! (seconds on any monotonic clock) so tests drive it with a fake clock.

use std::borrow::Cow;
use std::sync::Arc;

use lru::LruCache;
use wide::u8x16;

use crate::Error;

/// Top-level request fields left out of the canonical form (sorted).
///
/// `stream` / `stream_options`: a cached answer is served to stream and non-stream
/// requests alike. `user`, `metadata`: end-user identifiers and tags for the
/// provider's logs. `store`: whether the provider keeps the completion.
/// `service_tier`: latency/price tier, not content.
pub const IGNORED_FIELDS: &[&str] = &[
    "metadata",
    "service_tier",
    "store",
    "stream",
    "stream_options",
    "user",
];

/// Deepest nesting of arrays and objects accepted in a body.
pub const MAX_DEPTH: usize = 128;

/// Bytes every stored entry is charged on top of its value (key, expiry, list and
/// map bookkeeping), so a flood of tiny entries is bounded by `max_bytes` too.
pub const ENTRY_OVERHEAD: usize = 64;

/// Domain tag hashed first, so a change of key layout changes every key.
const KEY_DOMAIN: &[u8] = b"edgeproxy-cache-v1\0";

/// Numbers whose decimal exponent is beyond this are refused (nothing real needs them).
const MAX_EXPONENT: i128 = 1_000_000_000;

/// A cache key: XXH3-128 of the scoped canonical request, big-endian.
pub type Key = [u8; 16];

/// The canonical form of a JSON request body (see the module documentation).
pub fn canonical_request(body: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(body.len());
    canonicalize_into(body, &mut out)?;
    Ok(out)
}

/// The cache key of a request body, scoped by served model, wire format and tenant.
///
/// Equal to XXH3-128 over the scope prefix followed by [`canonical_request`], but the
/// canonical form is streamed into the hash: long strings are hashed straight from
/// the body, never copied.
pub fn cache_key(body: &[u8], model: &str, wire: &str, tenant: &str) -> Result<Key, Error> {
    Ok(key_of(&parse(body, true)?, model, wire, tenant))
}

/// [`cache_key`] for a body the caller has already checked to be valid UTF-8 (the
/// proxy computes the key after orjson parsed the same bytes, which validates them):
/// skips the UTF-8 check, a third of the work on a large body.
///
/// The key of a valid UTF-8 body is exactly [`cache_key`]'s. On a body that is not
/// valid UTF-8 the result is still defined (the canonicaliser works on bytes: it
/// never panics, and invalid JSON is still an error), but such a body is not
/// refused: only call this when the bytes are known to be UTF-8.
pub fn cache_key_validated(
    body: &[u8],
    model: &str,
    wire: &str,
    tenant: &str,
) -> Result<Key, Error> {
    Ok(key_of(&parse(body, false)?, model, wire, tenant))
}

fn key_of(root: &Node<'_>, model: &str, wire: &str, tenant: &str) -> Key {
    let mut sink = HashSink::new();
    sink.put(KEY_DOMAIN);
    for field in [model, wire, tenant] {
        sink.put(&(field.len() as u64).to_le_bytes());
        sink.put(field.as_bytes());
    }
    emit(root, &mut sink);
    sink.finish().to_be_bytes()
}

/// Appends the canonical form of `body` to `out`.
pub fn canonicalize_into(body: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let root = parse(body, true)?;
    emit(&root, out);
    Ok(())
}

/// Parses a body into its canonical tree, top-level ignored fields dropped; with
/// `check_utf8` false the caller vouches for the encoding (the parser itself works
/// on bytes and is safe on any input).
fn parse(body: &[u8], check_utf8: bool) -> Result<Node<'_>, Error> {
    // simdutf8 validates at memory speed (std's check is several times slower on
    // text with some non-ASCII); `compat` only to report where it failed.
    if check_utf8 && simdutf8::basic::from_utf8(body).is_err() {
        let at = simdutf8::compat::from_utf8(body).map_or_else(|e| e.valid_up_to(), |_| 0);
        return Err(bad(at, "invalid UTF-8"));
    }
    let mut parser = Parser { s: body, i: 0 };
    parser.skip_ws();
    let mut root = Node::Lit(b"null");
    parser.value(0, &mut root).map_err(Error::from)?;
    parser.skip_ws();
    if parser.i != body.len() {
        return Err(bad(parser.i, "trailing characters after the JSON value"));
    }
    if let Node::Obj(members) = &mut root {
        members.retain(|(k, _)| !IGNORED_FIELDS.iter().any(|f| f.as_bytes() == k.as_ref()));
    }
    Ok(root)
}

/// Where the canonical form goes: a buffer, or straight into the hash.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn put_byte(&mut self, byte: u8);
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    #[inline]
    fn put_byte(&mut self, byte: u8) {
        self.push(byte);
    }
}

/// Pieces at least this long skip [`HashSink`]'s buffer and go to the hash directly.
const HASH_DIRECT: usize = 512;

/// Streams bytes into XXH3-128. Short pieces (punctuation, keys, numbers, short
/// strings) gather in a buffer first, since each streaming write has a fixed cost;
/// a body whose canonical form fits the buffer is hashed in one shot.
struct HashSink {
    buf: Vec<u8>,
    hasher: Option<twox_hash::xxhash3_128::Hasher>,
}

impl HashSink {
    const CAPACITY: usize = 4096;

    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(Self::CAPACITY),
            hasher: None,
        }
    }

    fn flush(&mut self) -> &mut twox_hash::xxhash3_128::Hasher {
        let hasher = self
            .hasher
            .get_or_insert_with(twox_hash::xxhash3_128::Hasher::new);
        hasher.write(&self.buf);
        self.buf.clear();
        hasher
    }

    fn finish(mut self) -> u128 {
        if self.hasher.is_none() {
            return twox_hash::xxhash3_128::Hasher::oneshot(&self.buf);
        }
        self.flush().finish_128()
    }
}

impl Sink for HashSink {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if bytes.len() >= HASH_DIRECT {
            self.flush().write(bytes);
        } else {
            if self.buf.len() + bytes.len() > Self::CAPACITY {
                self.flush();
            }
            self.buf.extend_from_slice(bytes);
        }
    }
    #[inline]
    fn put_byte(&mut self, byte: u8) {
        if self.buf.len() == Self::CAPACITY {
            self.flush();
        }
        self.buf.push(byte);
    }
}

fn bad(offset: usize, reason: &'static str) -> Error {
    Error::CacheBadRequest { offset, reason }
}

/// The parser's own error: small, so results move cheaply through the recursion.
struct Bad {
    offset: usize,
    reason: &'static str,
}

impl Bad {
    #[cold]
    fn at(offset: usize, reason: &'static str) -> Self {
        Self { offset, reason }
    }
}

impl From<Bad> for Error {
    fn from(b: Bad) -> Self {
        bad(b.offset, b.reason)
    }
}

/// A parsed JSON value whose scalars are already in canonical encoding; strings
/// that were canonical in the input borrow it.
enum Node<'a> {
    Lit(&'static [u8]),
    Num(Cow<'a, [u8]>),
    /// Canonical string content, without the quotes.
    Str(Cow<'a, [u8]>),
    Arr(Vec<Node<'a>>),
    /// Sorted by key, keys unique.
    Obj(Vec<(Cow<'a, [u8]>, Node<'a>)>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<Node<'a>, Bad> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(Node::Lit(word))
        } else {
            Err(Bad::at(self.i, "invalid literal"))
        }
    }

    /// Parses one value into `slot`; whitespace before it is already skipped.
    ///
    /// Nodes are written in place, not returned: a returned node went through
    /// memory and was copied on into its parent's vector with wider loads than the
    /// stores that wrote it, which stalls on store forwarding (about a tenth of a
    /// 100 KB chat body's key).
    fn value(&mut self, depth: usize, slot: &mut Node<'a>) -> Result<(), Bad> {
        *slot = match self.peek() {
            Some(b'{') => return self.object(depth + 1, slot),
            Some(b'[') => return self.array(depth + 1, slot),
            Some(b'"') => Node::Str(self.string()?),
            Some(b'n') => self.literal(b"null")?,
            Some(b't') => self.literal(b"true")?,
            Some(b'f') => self.literal(b"false")?,
            Some(b'-' | b'0'..=b'9') => Node::Num(self.number()?),
            Some(_) => return Err(Bad::at(self.i, "expected a JSON value")),
            None => return Err(Bad::at(self.i, "unexpected end of input")),
        };
        Ok(())
    }

    fn array(&mut self, depth: usize, slot: &mut Node<'a>) -> Result<(), Bad> {
        if depth > MAX_DEPTH {
            return Err(Bad::at(self.i, "nested too deeply"));
        }
        self.i += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() != Some(b']') {
            loop {
                self.skip_ws();
                items.push(Node::Lit(b"null"));
                let last = items.len() - 1;
                self.value(depth, &mut items[last])?;
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b']') => break,
                    _ => return Err(Bad::at(self.i, "expected ',' or ']'")),
                }
            }
        }
        self.i += 1;
        *slot = Node::Arr(items);
        Ok(())
    }

    fn object(&mut self, depth: usize, slot: &mut Node<'a>) -> Result<(), Bad> {
        if depth > MAX_DEPTH {
            return Err(Bad::at(self.i, "nested too deeply"));
        }
        self.i += 1;
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            *slot = Node::Obj(members);
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(Bad::at(self.i, "expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(Bad::at(self.i, "expected ':'"));
            }
            self.i += 1;
            self.skip_ws();
            members.push((key, Node::Lit(b"null")));
            let last = members.len() - 1;
            self.value(depth, &mut members[last].1)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(Bad::at(self.i, "expected ',' or '}'")),
            }
        }
        if members.len() > 1 {
            // Last occurrence wins: reverse, stable sort, keep the first of each run.
            members.reverse();
            members.sort_by(|a, b| a.0.cmp(&b.0));
            members.dedup_by(|later, earlier| later.0 == earlier.0);
        }
        *slot = Node::Obj(members);
        Ok(())
    }

    /// Parses a string at `"`; returns its canonical content (borrowed when the
    /// input already was canonical).
    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'a, [u8]>, Bad> {
        let open = self.i;
        // Keys and short values (`"role"`, `"user"`) need no scan.
        if let Some(len) = self.s.get(open + 1..open + 17).and_then(short_plain) {
            self.i = open + len + 2;
            return Ok(Cow::Borrowed(&self.s[open + 1..open + 1 + len]));
        }
        // The scan returns a flag, not the content: a `Cow` returned through memory
        // and copied into the node stalled on store forwarding (~1 µs per 100
        // strings).
        let canonical = self.scan_string()?;
        let raw = &self.s[open + 1..self.i - 1];
        if canonical {
            Ok(Cow::Borrowed(raw))
        } else {
            recode(raw).map(Cow::Owned).map_err(|r| Bad::at(open, r))
        }
    }

    /// Scans a string at `"` and moves past it; true when its content is
    /// canonical as written.
    ///
    /// 64 bytes at a time: bit masks of quotes and backslashes, a test for control
    /// bytes, and which bytes are escaped (the odd-backslash-run carry trick of
    /// simdjson), so `\"` and `\\` cost no work of their own. A block's escapes by
    /// a letter are looked at one by one, unless there is just one and it is short
    /// (`\n`, `\t`, ...): then one test. Canonical escapes are kept as written, so a
    /// string whose escapes are all canonical (`\n`, `\"`, `\u001f`) is borrowed;
    /// only one with `\/` or another `\u` escape is re-encoded.
    fn scan_string(&mut self) -> Result<bool, Bad> {
        let s = self.s;
        let open = self.i;
        let start = open + 1;
        let mut canonical = true;
        let mut base = start;
        // 1 when the first byte of the block at `base` is escaped.
        let mut carry = 0u64;
        let end = loop {
            if base >= s.len() {
                return Err(Bad::at(open, "unterminated string"));
            }
            let m = block_masks(s, base);
            let (escaped, next_carry) = if m.backslash | carry == 0 {
                (0, 0)
            } else {
                escaped_bytes(m.backslash, carry)
            };
            let closing = m.quote & !escaped;
            // Bits of the bytes before the closing quote (all of them if none).
            let inside = if closing == 0 {
                u64::MAX
            } else {
                (closing & closing.wrapping_neg()) - 1
            };
            if m.maybe_control {
                let control = control_mask(s, base) & inside;
                if control != 0 {
                    let at = base + control.trailing_zeros() as usize;
                    return Err(Bad::at(at, "control character in a string"));
                }
            }
            let letters = escaped & !(m.quote | m.backslash) & inside;
            if letters != 0 && !one_short_escape(s, base, letters) {
                canonical &= escape_letters(s, open, base, letters)?;
            }
            if closing != 0 {
                break base + closing.trailing_zeros() as usize;
            }
            carry = next_carry;
            base += 64;
            // After a plain block (no quote or backslash, so nothing escaped into the
            // next; a control byte in it was an error above), more plain text is likely:
            // plain blocks need nothing but the test, so skip them in a tight loop. (Not
            // tried after a block with escapes: in escape-dense text the test would mostly
            // fail.)
            if m.quote | m.backslash == 0 {
                while let Some(block) = s.get(base..base + 64) {
                    if !is_plain(block) {
                        break;
                    }
                    base += 64;
                }
            }
        };
        self.i = end + 1;
        Ok(canonical)
    }

    fn number(&mut self) -> Result<Cow<'a, [u8]>, Bad> {
        let s = self.s;
        let start = self.i;
        let mut i = start;
        let neg = s[i] == b'-';
        if neg {
            i += 1;
        }
        let int_start = i;
        match s.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = s.get(i) {
                    i += 1;
                }
            }
            _ => return Err(Bad::at(i, "invalid number")),
        }
        let int = &s[int_start..i];
        let mut frac: &[u8] = &[];
        if s.get(i) == Some(&b'.') {
            let f = i + 1;
            i = f;
            while let Some(b'0'..=b'9') = s.get(i) {
                i += 1;
            }
            if i == f {
                return Err(Bad::at(i, "invalid number: no digit after '.'"));
            }
            frac = &s[f..i];
        }
        let mut exp: i128 = 0;
        let mut has_exp = false;
        if let Some(b'e' | b'E') = s.get(i) {
            has_exp = true;
            i += 1;
            let exp_neg = match s.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let e = i;
            while let Some(&d @ b'0'..=b'9') = s.get(i) {
                exp = exp * 10 + i128::from(d - b'0');
                if exp > MAX_EXPONENT {
                    return Err(Bad::at(start, "number exponent out of range"));
                }
                i += 1;
            }
            if i == e {
                return Err(Bad::at(i, "invalid number: no digit in the exponent"));
            }
            if exp_neg {
                exp = -exp;
            }
        }
        self.i = i;
        // Plain integers (the common case) are already canonical, except -0.
        if frac.is_empty() && !has_exp && int.len() <= 21 && !(neg && int == b"0") {
            return Ok(Cow::Borrowed(&s[start..i]));
        }
        canonical_number(neg, int, frac, exp)
            .map(Cow::Owned)
            .ok_or_else(|| Bad::at(start, "number exponent out of range"))
    }
}

/// Bit masks of one 64-byte block (bit `k` for byte `k`).
struct Masks {
    quote: u64,
    backslash: u64,
    /// Some byte of the block is below 0x20 (maybe past the string's end, where
    /// whitespace between tokens is legal): [`control_mask`] says which.
    maybe_control: bool,
}

/// The masks of the 64 bytes from `base`; bytes past the end of `s` count as
/// plain.
#[inline]
fn block_masks(s: &[u8], base: usize) -> Masks {
    with_block(s, base, masks_of)
}

/// `f` of the 64 bytes from `base`, padded with spaces (plain) past the end of `s`.
#[inline(always)]
fn with_block<T>(s: &[u8], base: usize, f: impl Fn(&[u8]) -> T) -> T {
    match s.get(base..base + 64) {
        Some(block) => f(block),
        None => f(&padded(s, base)),
    }
}

/// The length of a string whose closing quote is among the 16 bytes of `head` (the
/// bytes after the opening quote), with no backslash or control byte before it:
/// nothing escaped, so that quote closes it and the content is canonical.
#[inline(always)]
fn short_plain(head: &[u8]) -> Option<usize> {
    let v = u8x16::new(head.try_into().unwrap_or_default());
    let quote = v.cmp_eq(u8x16::splat(b'"')).move_mask() as u32;
    let backslash = v.cmp_eq(u8x16::splat(b'\\'));
    let other = (backslash | v.min(u8x16::splat(0x1f)).cmp_eq(v)).move_mask() as u32;
    let len = quote.trailing_zeros();
    (len < 16 && other & ((1 << len) - 1) == 0).then_some(len as usize)
}

/// The bytes of `s` from `base` on, padded to 64 with spaces (plain).
#[cold]
fn padded(s: &[u8], base: usize) -> [u8; 64] {
    let rest = s.get(base..).unwrap_or_default();
    let mut block = [b' '; 64];
    block[..rest.len()].copy_from_slice(rest);
    block
}

/// 16 bytes per compare (SSE2 / NEON through `wide`, scalar elsewhere).
#[inline(always)]
fn masks_of(block: &[u8]) -> Masks {
    let v = lanes(block);
    let quote = u8x16::splat(b'"');
    let backslash = u8x16::splat(b'\\');
    let below_space = u8x16::splat(0x1f);
    // Control bytes are rare and always an error inside a string: one test on the
    // block's least byte, the exact mask only when it fails.
    let least = v[0].min(v[1]).min(v[2].min(v[3]));
    Masks {
        quote: bits(v.map(|v| v.cmp_eq(quote))),
        backslash: bits(v.map(|v| v.cmp_eq(backslash))),
        maybe_control: least.min(below_space).cmp_eq(least).any(),
    }
}

/// Which of the 64 bytes from `base` are below 0x20.
#[cold]
fn control_mask(s: &[u8], base: usize) -> u64 {
    let below_space = u8x16::splat(0x1f);
    with_block(s, base, |block| {
        bits(lanes(block).map(|v| v.min(below_space).cmp_eq(v)))
    })
}

#[inline(always)]
fn lanes(block: &[u8]) -> [u8x16; 4] {
    let lane = |k: usize| u8x16::new(block[16 * k..16 * k + 16].try_into().unwrap_or_default());
    [lane(0), lane(1), lane(2), lane(3)]
}

/// One bit per byte of four compare results (all-ones or zero bytes).
#[inline(always)]
fn bits(x: [u8x16; 4]) -> u64 {
    x.iter().enumerate().fold(0u64, |m, (k, x)| {
        m | u64::from(x.move_mask() as u16) << (16 * k)
    })
}

/// True when `letters` (the escaped letters of the block at `base`) is one of
/// `b f n r t`: a short escape, canonical as written. Chat text has about one `\n`
/// per line, so this covers most blocks in a few instructions; anything else,
/// a byte past the input's end included, goes to [`escape_letters`].
#[inline(always)]
fn one_short_escape(s: &[u8], base: usize, letters: u64) -> bool {
    // `b f n r t` as bits of the distance from `b`.
    const SHORT: u32 =
        1 | 1 << (b'f' - b'b') | 1 << (b'n' - b'b') | 1 << (b'r' - b'b') | 1 << (b't' - b'b');
    let at = base + letters.trailing_zeros() as usize;
    let d = s
        .get(at)
        .map_or(u32::MAX, |&c| u32::from(c.wrapping_sub(b'b')));
    letters & (letters - 1) == 0 && d < 32 && SHORT >> d & 1 == 1
}

/// Checks the escaped letters of the block at `base` one by one (`open` is where
/// the string starts); false when one of them is not canonical (`\/`, `\u` other
/// than a control character in lowercase hex).
#[inline(never)]
fn escape_letters(s: &[u8], open: usize, base: usize, mut letters: u64) -> Result<bool, Bad> {
    let mut canonical = true;
    while letters != 0 {
        let at = base + letters.trailing_zeros() as usize;
        letters &= letters - 1;
        // A backslash as the input's last byte escapes the padding.
        let Some(&c) = s.get(at) else {
            return Err(Bad::at(open, "unterminated string"));
        };
        match c {
            b'b' | b'f' | b'n' | b'r' | b't' => {}
            b'/' => canonical = false,
            b'u' => {
                let hex = s
                    .get(at + 1..at + 5)
                    .ok_or_else(|| Bad::at(at - 1, "truncated \\u escape"))?;
                let v = hex4(hex).ok_or_else(|| Bad::at(at - 1, "invalid \\u escape"))?;
                // Canonical only for control characters without a short form,
                // written with lowercase hex digits.
                if !(v < 0x20
                    && !matches!(v, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)
                    && !hex.iter().any(u8::is_ascii_uppercase))
                {
                    canonical = false;
                }
            }
            _ => return Err(Bad::at(at - 1, "invalid escape")),
        }
    }
    Ok(canonical)
}

/// True when none of the 64 bytes of `block` is a quote, a backslash or a control
/// byte: one of `v ^ '"'`, `v ^ '\\'`, `v - 0x1f` (saturating) is zero exactly
/// for those, so the block is plain when the minimum of them all has no zero.
#[inline(always)]
fn is_plain(block: &[u8]) -> bool {
    let quote = u8x16::splat(b'"');
    let backslash = u8x16::splat(b'\\');
    let below_space = u8x16::splat(0x1f);
    let special = |v: u8x16| {
        (v ^ quote)
            .min(v ^ backslash)
            .min(v.saturating_sub(below_space))
    };
    let [a, b, c, d] = lanes(block).map(special);
    let least = a.min(b).min(c.min(d));
    !least.cmp_eq(u8x16::ZERO).any()
}

/// Which bytes of a block are escaped (follow an odd run of backslashes), given
/// its backslash mask and whether its first byte is escaped (`carry`, 0 or 1);
/// also the carry into the next block. simdjson's branch-free method: subtracting
/// the backslash runs from the odd bit positions tells odd runs from even ones.
#[inline(always)]
fn escaped_bytes(backslash: u64, carry: u64) -> (u64, u64) {
    // No backslash escaped by another (lone ones, as in `\n` and `\"`, the usual
    // case): each escapes the byte after it. Half the work of the general method.
    let after = backslash << 1 | carry;
    if backslash & after == 0 {
        return (after, backslash >> 63);
    }
    const ODD: u64 = 0xAAAA_AAAA_AAAA_AAAA;
    let potential = backslash & !carry;
    let code = (((potential << 1) | ODD).wrapping_sub(potential)) ^ ODD;
    let escaped = code ^ (backslash | carry);
    (escaped, (code & backslash) >> 63)
}

fn hex4(h: &[u8]) -> Option<u32> {
    h.iter().try_fold(0u32, |acc, &c| {
        let d = (c as char).to_digit(16)?;
        Some(acc * 16 + d)
    })
}

/// Decodes the escapes of a raw (valid) string body and re-encodes it canonically.
fn recode(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let Some(off) = memchr::memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            break;
        };
        out.extend_from_slice(&raw[i..i + off]);
        i += off;
        let c = match raw[i + 1] {
            b'u' => {
                let hi = hex4(&raw[i + 2..i + 6]).ok_or("invalid \\u escape")?;
                i += 6;
                if (0xD800..0xDC00).contains(&hi) {
                    if raw.get(i..i + 2) != Some(b"\\u") {
                        return Err("lone surrogate escape");
                    }
                    let lo = raw
                        .get(i + 2..i + 6)
                        .and_then(hex4)
                        .ok_or("invalid \\u escape")?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err("lone surrogate escape");
                    }
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                        .ok_or("invalid surrogate pair")?
                } else {
                    char::from_u32(hi).ok_or("lone surrogate escape")?
                }
            }
            e => {
                i += 2;
                match e {
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    other => other as char, // '"', '\\', '/'
                }
            }
        };
        push_char(c, &mut out);
    }
    Ok(out)
}

fn push_char(c: char, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\u{8}' => out.extend_from_slice(b"\\b"),
        '\u{c}' => out.extend_from_slice(b"\\f"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        c if (c as u32) < 0x20 => {
            let v = c as usize;
            out.extend_from_slice(b"\\u00");
            out.push(HEX[v >> 4]);
            out.push(HEX[v & 0xf]);
        }
        c => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// The canonical spelling of the decimal number `-? int.frac × 10^exp`.
///
/// With `d` the significant digits (no leading or trailing zeros) and `e` the
/// exponent so that the value is `d × 10^e`:
/// - `e >= 0` and at most 21 digits in all: an integer (`100`, `-7`);
/// - `e < 0` with the point inside or at most 6 zeros after it: a decimal
///   (`1.5`, `0.007`);
/// - otherwise `de±e` (`1e30`, `15e-11`).
///
/// Zero is `0`. Returns `None` when the exponent is out of range.
pub fn canonical_number(neg: bool, int: &[u8], frac: &[u8], exp: i128) -> Option<Vec<u8>> {
    let digits = || int.iter().chain(frac.iter()).copied();
    let total = int.len() + frac.len();
    let Some(first) = digits().position(|d| d != b'0') else {
        return Some(b"0".to_vec());
    };
    let trailing = digits().rev().position(|d| d != b'0').unwrap_or(0);
    let sig: Vec<u8> = digits()
        .skip(first)
        .take(total - first - trailing)
        .collect();
    let e = exp - frac.len() as i128 + trailing as i128;
    if e.abs() > 2 * MAX_EXPONENT {
        return None;
    }
    let n = sig.len() as i128;
    let mut out = Vec::with_capacity(sig.len() + 24);
    if neg {
        out.push(b'-');
    }
    if e >= 0 && n + e <= 21 {
        out.extend_from_slice(&sig);
        out.resize(out.len() + e as usize, b'0');
    } else if e < 0 && -e < n {
        let point = (n + e) as usize;
        out.extend_from_slice(&sig[..point]);
        out.push(b'.');
        out.extend_from_slice(&sig[point..]);
    } else if e < 0 && -e - n < 6 {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + (-e - n) as usize, b'0');
        out.extend_from_slice(&sig);
    } else {
        out.extend_from_slice(&sig);
        out.push(b'e');
        out.extend_from_slice(e.to_string().as_bytes());
    }
    Some(out)
}

fn emit(node: &Node<'_>, out: &mut impl Sink) {
    match node {
        Node::Lit(s) => out.put(s),
        Node::Num(n) => out.put(n),
        Node::Str(s) => {
            out.put_byte(b'"');
            out.put(s);
            out.put_byte(b'"');
        }
        Node::Arr(items) => {
            out.put_byte(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.put_byte(b',');
                }
                emit(item, out);
            }
            out.put_byte(b']');
        }
        Node::Obj(members) => {
            out.put_byte(b'{');
            for (n, (key, value)) in members.iter().enumerate() {
                if n > 0 {
                    out.put_byte(b',');
                }
                out.put_byte(b'"');
                out.put(key);
                out.put(b"\":");
                emit(value, out);
            }
            out.put_byte(b'}');
        }
    }
}

/// Counters of a [`Store`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing, or an expired entry.
    pub misses: u64,
    /// Entries stored (including replacements).
    pub stores: u64,
    /// `put` calls refused (value larger than the store, zero capacity, bad TTL).
    pub rejected: u64,
    /// Live entries dropped to make room (least recently used first).
    pub evictions: u64,
    /// Entries dropped because their TTL had passed.
    pub expirations: u64,
}

struct Entry {
    value: Arc<[u8]>,
    expires: f64,
}

impl Entry {
    fn cost(&self) -> usize {
        self.value.len() + ENTRY_OVERHEAD
    }
}

/// A bounded in-memory cache: LRU by entries and bytes, each entry with a TTL.
pub struct Store {
    max_bytes: usize,
    max_entries: usize,
    bytes: usize,
    lru: LruCache<Key, Entry>,
    stats: Stats,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("max_bytes", &self.max_bytes)
            .field("max_entries", &self.max_entries)
            .field("bytes", &self.bytes)
            .field("entries", &self.lru.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Store {
    /// An empty store holding at most `max_entries` entries and `max_bytes` bytes
    /// (values plus [`ENTRY_OVERHEAD`] each).
    pub fn new(max_bytes: usize, max_entries: usize) -> Self {
        Self {
            max_bytes,
            max_entries,
            bytes: 0,
            lru: LruCache::unbounded(),
            stats: Stats::default(),
        }
    }

    /// The live value for `key`, marking it most recently used; an expired entry
    /// is dropped and counts as a miss.
    pub fn get(&mut self, key: &Key, now: f64) -> Option<Arc<[u8]>> {
        let Some(entry) = self.lru.get(key) else {
            self.stats.misses += 1;
            return None;
        };
        // `now < expires` is false for NaN too: a broken clock never serves stale data.
        if now < entry.expires {
            self.stats.hits += 1;
            return Some(Arc::clone(&entry.value));
        }
        if let Some(old) = self.lru.pop(key) {
            self.bytes -= old.cost();
        }
        self.stats.expirations += 1;
        self.stats.misses += 1;
        None
    }

    /// Stores `value` under `key` for `ttl` seconds from `now`, replacing any
    /// previous entry and evicting least recently used entries to make room.
    ///
    /// Returns false (and stores nothing) when the entry can never fit, or when
    /// `ttl` is not a positive number or `now` is not finite. Either way the
    /// previous entry under `key` is gone: a new answer was offered, so the old one
    /// is no longer the freshest.
    pub fn put(&mut self, key: Key, value: impl Into<Arc<[u8]>>, ttl: f64, now: f64) -> bool {
        let entry = Entry {
            value: value.into(),
            expires: now + ttl,
        };
        let cost = entry.cost();
        // Any previous value under this key is stale once a new one is offered.
        if let Some(old) = self.lru.pop(&key) {
            self.bytes -= old.cost();
        }
        let ttl_ok = ttl > 0.0; // false for NaN
        if !ttl_ok || !now.is_finite() || self.max_entries == 0 || cost > self.max_bytes {
            self.stats.rejected += 1;
            return false;
        }
        while self.lru.len() >= self.max_entries || self.bytes + cost > self.max_bytes {
            let Some((_, old)) = self.lru.pop_lru() else {
                break;
            };
            self.bytes -= old.cost();
            if now >= old.expires {
                self.stats.expirations += 1;
            } else {
                self.stats.evictions += 1;
            }
        }
        self.bytes += cost;
        self.lru.push(key, entry);
        self.stats.stores += 1;
        true
    }

    /// Drops the entry for `key`; true when there was one.
    pub fn remove(&mut self, key: &Key) -> bool {
        match self.lru.pop(key) {
            Some(old) => {
                self.bytes -= old.cost();
                true
            }
            None => false,
        }
    }

    /// Drops every entry (the counters are kept).
    pub fn clear(&mut self) {
        self.lru.clear();
        self.bytes = 0;
    }

    /// Number of entries held (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.lru.len()
    }

    /// True when the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    /// Bytes charged for the entries held.
    pub fn bytes_used(&self) -> usize {
        self.bytes
    }

    /// The byte bound given at construction.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The entry bound given at construction.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
