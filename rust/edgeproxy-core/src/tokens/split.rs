//! A faster pre-tokenizer for ASCII text, equal to `bpe-openai`'s regex split.
//!
//! `bpe-openai` splits text with one anchored `regex-automata` search per piece;
//! on ordinary text the per-search set-up costs more than the bytes it reads.
//! Here each piece whose bytes, and the one byte after it that decides where
//! it ends, are ASCII is cut by a hand-written matcher of the same patterns
//! (below, with the regex alternatives they mirror). Wherever a decision would
//! depend on a non-ASCII character (is `é` a letter? is U+00A0 a space?) the
//! matcher gives up and that one piece comes from the regex, anchored at the
//! same position: the regex's next piece depends only on the text from there,
//! so the sequence of pieces is the regex's. Property tests compare the two.
//!
//! The patterns (`bpe-openai` 0.3, tiktoken's `\s+(?!\S)` written as `\s+\s`
//! minus its last character), tried in this order, the first that matches wins:
//!
//! ```text
//! cl100k: (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,3}
//!         | ?[^\s\p{L}\p{N}]+[\r\n]* | \s*[\r\n]+ | \s+$ | \s+\s (minus one) | \s+
//! o200k:  [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//!         | [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//!         | \p{N}{1,3} | ?[^\s\p{L}\p{N}]+[\r\n/]* | \s*[\r\n]+ | \s+$ | \s+\s (minus one) | \s+
//! ```
//!
//! In ASCII, `\p{L}` is `[A-Za-z]` (upper case `[A-Z]`, lower case `[a-z]`), `\p{N}`
//! is `[0-9]` and `\s` is `[\t\n\x0B\x0C\r ]`.

use bpe_openai::Tokenizer;

/// The class of a byte for the patterns above.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Upper,
    Lower,
    Digit,
    /// `\r` or `\n`.
    Newline,
    /// Any other ASCII white space: `\t`, `\x0B`, `\x0C`, ` `.
    Space,
    /// Any other ASCII byte (punctuation, symbols, control characters).
    Other,
    /// A byte of a non-ASCII character: its class is not known here.
    NonAscii,
    /// Past the end of the text.
    End,
}

#[inline]
fn class(bytes: &[u8], i: usize) -> Class {
    match bytes.get(i) {
        None => Class::End,
        Some(b'A'..=b'Z') => Class::Upper,
        Some(b'a'..=b'z') => Class::Lower,
        Some(b'0'..=b'9') => Class::Digit,
        Some(b'\r' | b'\n') => Class::Newline,
        Some(b'\t' | 0x0B | 0x0C | b' ') => Class::Space,
        Some(0x80..) => Class::NonAscii,
        Some(_) => Class::Other,
    }
}

fn is_letter(c: Class) -> bool {
    matches!(c, Class::Upper | Class::Lower)
}

fn is_space(c: Class) -> bool {
    matches!(c, Class::Space | Class::Newline)
}

/// The end of the run of bytes of class `want` from `i`, or `None` if the run stops
/// at a non-ASCII character (which might belong to the class).
#[inline]
fn run(bytes: &[u8], mut i: usize, want: impl Fn(Class) -> bool) -> Option<usize> {
    loop {
        match class(bytes, i) {
            c if want(c) => i += 1,
            Class::NonAscii => return None,
            _ => return Some(i),
        }
    }
}

/// Where `(?i:'s|'t|'re|'ve|'m|'ll|'d)` matching at `i` ends: `Ok(None)` when it does
/// not match, `Err(())` when that depends on a non-ASCII character (`'ſ` is `'s`).
#[inline]
fn contraction(bytes: &[u8], i: usize) -> Result<Option<usize>, ()> {
    if bytes.get(i) != Some(&b'\'') {
        return Ok(None);
    }
    let at = |k: usize| bytes.get(i + k).map(u8::to_ascii_lowercase);
    if bytes.get(i + 1).is_some_and(|b| !b.is_ascii()) {
        return Err(());
    }
    match at(1) {
        Some(b's' | b't' | b'm' | b'd') => Ok(Some(i + 2)),
        Some(first @ (b'r' | b'v' | b'l')) => {
            let second = if first == b'l' { b'l' } else { b'e' };
            match bytes.get(i + 2) {
                Some(b) if !b.is_ascii() => Err(()),
                Some(b) if b.to_ascii_lowercase() == second => Ok(Some(i + 3)),
                _ => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// The end of the piece starting at `p` (`p < bytes.len()`), or `None` when it depends
/// on a non-ASCII character.
fn ascii_piece(bytes: &[u8], p: usize, o200k: bool) -> Option<usize> {
    let c = class(bytes, p);
    if c == Class::NonAscii {
        return None;
    }
    // cl100k: (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if !o200k {
        if let Some(end) = contraction(bytes, p).ok()? {
            return Some(end);
        }
    }
    // The letter alternatives: an optional [^\r\n\p{L}\p{N}], then letters.
    let first_letter = match c {
        Class::Upper | Class::Lower => Some(p),
        Class::Other | Class::Space => match class(bytes, p + 1) {
            Class::NonAscii => return None,
            n if is_letter(n) => Some(p + 1),
            _ => None,
        },
        _ => None,
    };
    if let Some(q) = first_letter {
        if !o200k {
            // [^\r\n\p{L}\p{N}]?\p{L}+
            return run(bytes, q, is_letter);
        }
        // [^\r\n\p{L}\p{N}]? then upper case* lower case+ (first alternative) or
        // upper case+ lower case* (second); as upper and lower case are disjoint in
        // ASCII, both are "the upper-case run, then the lower-case run", and one of
        // them is not empty. Then an optional contraction.
        let upper = run(bytes, q, |k| k == Class::Upper)?;
        let end = run(bytes, upper, |k| k == Class::Lower)?;
        return match contraction(bytes, end).ok()? {
            Some(after) => Some(after),
            None => Some(end),
        };
    }
    match c {
        // \p{N}{1,3}
        Class::Digit => {
            let mut end = p + 1;
            while end < p + 3 {
                match class(bytes, end) {
                    Class::Digit => end += 1,
                    Class::NonAscii => return None,
                    _ => break,
                }
            }
            Some(end)
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (o200k: `[\r\n/]*`). `c` is not followed by a letter.
        Class::Other => punctuation(bytes, p, o200k),
        Class::Space if bytes[p] == b' ' && class(bytes, p + 1) == Class::Other => {
            punctuation(bytes, p + 1, o200k)
        }
        Class::Space | Class::Newline => {
            if bytes[p] == b' ' && class(bytes, p + 1) == Class::NonAscii {
                return None;
            }
            let end = run(bytes, p, is_space)?;
            // \s*[\r\n]+: up to the last newline of the white-space run.
            if let Some(last) = bytes[p..end]
                .iter()
                .rposition(|&b| b == b'\r' || b == b'\n')
            {
                return Some(p + last + 1);
            }
            if end == bytes.len() {
                Some(end) // \s+$
            } else if end - p >= 2 {
                Some(end - 1) // \s+\s, minus the look-ahead character
            } else {
                Some(end) // \s+
            }
        }
        _ => None,
    }
}

/// `[^\s\p{L}\p{N}]+[\r\n]*` (o200k: `[\r\n/]*`) from `q`, where `bytes[q]` is `Other`.
fn punctuation(bytes: &[u8], q: usize, o200k: bool) -> Option<usize> {
    let mut end = run(bytes, q, |k| k == Class::Other)?;
    while let Some(b'\r' | b'\n') = bytes.get(end) {
        end += 1;
    }
    if o200k {
        while let Some(b'\r' | b'\n' | b'/') = bytes.get(end) {
            end += 1;
        }
    }
    Some(end)
}

/// The pieces of `text`, exactly as `tokenizer.split(text)` returns them.
pub(super) struct Pieces<'a> {
    text: &'a str,
    pos: usize,
    o200k: bool,
    tokenizer: &'static Tokenizer,
}

impl<'a> Pieces<'a> {
    /// `o200k` selects the `o200k_base` patterns; `tokenizer` is the one whose
    /// regex split this reproduces (and falls back on).
    pub(super) fn new(text: &'a str, o200k: bool, tokenizer: &'static Tokenizer) -> Self {
        Pieces {
            text,
            pos: 0,
            o200k,
            tokenizer,
        }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if start >= self.text.len() {
            return None;
        }
        let end = match ascii_piece(self.text.as_bytes(), start, self.o200k) {
            Some(end) => end,
            None => {
                let rest = &self.text[start..];
                start
                    + self
                        .tokenizer
                        .split(rest)
                        .next()
                        .map_or(rest.len(), str::len)
            }
        };
        self.pos = end;
        Some(&self.text[start..end])
    }
}
