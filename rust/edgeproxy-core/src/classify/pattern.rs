//! The text patterns of task rules: a regex, or a list of keywords.
//!
//! Compiled once, when the policy loads, with `regex-automata`'s meta engine: finite automata
//! (a lazy DFA, falling back to a PikeVM), never backtracking, so matching takes time linear in
//! the text for every pattern; there is no catastrophic pattern to guard against. The price is
//! the syntax of Rust's `regex` crate: no look-around and no backreferences (refused at load,
//! with the reason). Compiled automata are bounded too (`MAX_NFA_BYTES`), so `a{1000}{1000}`
//! is refused rather than built.

use regex_automata::meta::{self, Regex};
use regex_automata::util::syntax;

use crate::Error;

/// The longest pattern source accepted (bytes): a policy's pattern is a few dozen.
pub const MAX_PATTERN_BYTES: usize = 4096;
const MAX_NFA_BYTES: usize = 1 << 20;
const NEST_LIMIT: u32 = 64;

/// A compiled regex or keyword list (thread-safe; clone is cheap).
#[derive(Debug, Clone)]
pub struct TextPattern {
    regex: Regex,
}

fn refuse(reason: String) -> Error {
    Error::TaskPattern { reason }
}

impl TextPattern {
    /// A regex in the syntax of Rust's `regex` crate, found anywhere in the text (add `^`/`$`
    /// to anchor it; `(?i)` for case-insensitive).
    pub fn regex(pattern: &str) -> Result<TextPattern, Error> {
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(refuse(format!(
                "the pattern is longer than {MAX_PATTERN_BYTES} bytes"
            )));
        }
        Self::build(pattern)
    }

    /// Any of `words`, case-insensitive; a keyword that starts (ends) with a word character
    /// (Unicode `\w`: letters, marks, decimal digits, `_`) must start (end) a word in the text:
    /// `spec` matches "the spec." but not "special".
    pub fn keywords<S: AsRef<str>>(words: &[S]) -> Result<TextPattern, Error> {
        if words.is_empty() {
            return Err(refuse("no keywords".to_owned()));
        }
        let mut alternatives = Vec::with_capacity(words.len());
        for word in words {
            let word = word.as_ref();
            if word.trim().is_empty() {
                return Err(refuse("a keyword is empty".to_owned()));
            }
            // `\b` needs a word character (Unicode `\w`, the regex's own notion) on its side.
            let starts = word
                .chars()
                .next()
                .is_some_and(regex_syntax::is_word_character);
            let ends = word
                .chars()
                .last()
                .is_some_and(regex_syntax::is_word_character);
            alternatives.push(format!(
                "{}{}{}",
                if starts { r"\b" } else { "" },
                regex_syntax::escape(word),
                if ends { r"\b" } else { "" }
            ));
        }
        let pattern = format!("(?i:{})", alternatives.join("|"));
        if pattern.len() > 8 * MAX_PATTERN_BYTES {
            return Err(refuse(format!(
                "the keywords are longer than {} bytes together",
                8 * MAX_PATTERN_BYTES
            )));
        }
        Self::build(&pattern)
    }

    fn build(pattern: &str) -> Result<TextPattern, Error> {
        let regex = Regex::builder()
            .syntax(syntax::Config::new().nest_limit(NEST_LIMIT))
            .configure(meta::Config::new().nfa_size_limit(Some(MAX_NFA_BYTES)))
            .build(pattern)
            .map_err(|e| refuse(describe(&e)))?;
        Ok(TextPattern { regex })
    }

    /// Whether the pattern occurs in `text` (linear time in `text`).
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// One line saying why a pattern was refused (regex-syntax's own message spans several lines,
/// quoting the pattern with a caret under the problem).
fn describe(error: &meta::BuildError) -> String {
    if let Some(limit) = error.size_limit() {
        return format!(
            "the pattern compiles to more than {} KiB: simplify it",
            limit / 1024
        );
    }
    match error.syntax_error() {
        Some(regex_syntax::Error::Parse(e)) => format!(
            "not a valid pattern: {} (at byte {})",
            e.kind(),
            e.span().start.offset
        ),
        Some(regex_syntax::Error::Translate(e)) => format!(
            "not a valid pattern: {} (at byte {})",
            e.kind(),
            e.span().start.offset
        ),
        _ => format!("not a valid pattern: {error}"),
    }
}
