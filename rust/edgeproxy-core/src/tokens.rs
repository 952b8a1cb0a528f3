//! Token counting: exact for OpenAI's `cl100k_base` and `o200k_base`, labelled
//! estimates for tokenizers that are not public (Anthropic).
//!
//! The rank data and the pre-tokenizer regex come from GitHub's `bpe-openai`
//! crate: its rank data is compiled into the binary (nothing is downloaded at run
//! time) and its pre-tokenizer is a linear-time `regex-automata` DFA. Pieces over
//! 64 bytes are counted in 64-byte windows whose joins are proven (`merge`), or
//! else by `long`, tiktoken's merge made linear (a sweep over ranks, runs of equal
//! parts merged at once). Untrusted prompts such as 100 KB of one repeated
//! character therefore cannot stall the proxy, while the counts stay equal to
//! tiktoken's token for token. Why this crate and not `tiktoken-rs`:
//! docs/tokens.md and docs/benchmarks.md ("Token counting").
//!
//! Ordinary text takes faster paths (docs/tokens.md, "How a count is computed"):
//! `split` cuts ASCII pieces by hand (the regex cuts the rest), and `merge`
//! counts a piece that is one token with one table lookup, other short pieces
//! with tiktoken's own merge loop, and remembers piece counts within a long text.
//!
//! - [`count`] and [`count_up_to`] count a text;
//! - [`count_chat`] counts a whole Chat Completions request body the way
//!   OpenAI bills it (the OpenAI cookbook formula), in one call;
//! - [`Encoding::Estimate`] labels counts for models without a public tokenizer.

use std::sync::OnceLock;

use bpe_openai::Tokenizer;

use crate::Error;

mod chat;
mod long;
mod merge;
mod split;

use merge::{Memo, Ranks};
use split::Pieces;

/// Texts from this length on remember the counts of their pieces while counting
/// (below it, setting up the memo costs more than it saves).
const MEMO_MIN_LEN: usize = 4096;

pub use chat::{
    count_chat, ChatCount, IMAGE_TOKENS_HIGH, IMAGE_TOKENS_LOW, REPLY_PRIMING_TOKENS,
    TOKENS_PER_MESSAGE, TOKENS_PER_NAME, TOKENS_PER_TOOL_CALL,
};

/// Estimates are the `cl100k_base` count times `ESTIMATE_NUMERATOR / ESTIMATE_DENOMINATOR`,
/// rounded up: a deliberately conservative (high) guess, because the estimate feeds
/// context-window checks where undercounting is the costlier mistake.
pub const ESTIMATE_NUMERATOR: usize = 6;
/// See [`ESTIMATE_NUMERATOR`].
pub const ESTIMATE_DENOMINATOR: usize = 5;

/// A token encoding known to this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `cl100k_base` (gpt-4, gpt-3.5-turbo, text-embedding-3-*): exact.
    Cl100kBase,
    /// `o200k_base` (gpt-4o, gpt-4.1, o1/o3/o4, gpt-5): exact.
    O200kBase,
    /// A labelled estimate for models whose tokenizer is not public (Anthropic):
    /// the `cl100k_base` count scaled by [`ESTIMATE_NUMERATOR`]`/`[`ESTIMATE_DENOMINATOR`].
    Estimate,
}

impl Encoding {
    /// Every encoding, exact ones first.
    pub const ALL: [Encoding; 3] = [
        Encoding::Cl100kBase,
        Encoding::O200kBase,
        Encoding::Estimate,
    ];

    /// Parses an encoding name (`"cl100k_base"`, `"o200k_base"`, `"estimate"`).
    pub fn from_name(name: &str) -> Result<Self, Error> {
        match name {
            "cl100k_base" => Ok(Encoding::Cl100kBase),
            "o200k_base" => Ok(Encoding::O200kBase),
            "estimate" => Ok(Encoding::Estimate),
            _ => Err(Error::UnknownEncoding {
                name: name.to_owned(),
            }),
        }
    }

    /// The encoding's name, as accepted by [`Encoding::from_name`].
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::O200kBase => "o200k_base",
            Encoding::Estimate => "estimate",
        }
    }

    /// True for the encodings whose counts equal tiktoken's.
    pub fn is_exact(self) -> bool {
        !matches!(self, Encoding::Estimate)
    }

    /// The tokenizer that does the counting (estimates count with `cl100k_base`).
    fn tokenizer(self) -> &'static Tokenizer {
        match self {
            Encoding::Cl100kBase | Encoding::Estimate => bpe_openai::cl100k_base(),
            Encoding::O200kBase => bpe_openai::o200k_base(),
        }
    }

    /// The byte string → rank table for the fast per-piece count (built once).
    fn ranks(self) -> &'static Ranks {
        static CL100K: OnceLock<Ranks> = OnceLock::new();
        static O200K: OnceLock<Ranks> = OnceLock::new();
        let cell = match self {
            Encoding::Cl100kBase | Encoding::Estimate => &CL100K,
            Encoding::O200kBase => &O200K,
        };
        cell.get_or_init(|| Ranks::new(&self.tokenizer().bpe))
    }

    /// The pre-tokens of `text` (tiktoken's split, by `split::Pieces`).
    fn pieces(self, text: &str) -> Pieces<'_> {
        Pieces::new(text, self == Encoding::O200kBase, self.tokenizer())
    }

    /// Scales a raw `cl100k_base` count into this encoding's count (only estimates change).
    fn finish(self, raw: usize) -> usize {
        match self {
            Encoding::Estimate => raw
                .saturating_mul(ESTIMATE_NUMERATOR)
                .div_ceil(ESTIMATE_DENOMINATOR),
            _ => raw,
        }
    }
}

/// Loads the encoding's rank data and builds its merge tables now instead of on first
/// use (deserialising the compiled-in tables and building the short- and long-piece
/// merge tables takes up to ~0.2 s once per process; a request must not pay it).
pub fn preload(encoding: Encoding) {
    encoding.ranks();
}

/// The number of tokens tiktoken's `encode_ordinary` returns for `text`
/// (special-token text such as `<|endoftext|>` is counted as ordinary text).
pub fn count(text: &str, encoding: Encoding) -> usize {
    let ranks = encoding.ranks();
    let pieces = encoding.pieces(text);
    let raw = if text.len() < MEMO_MIN_LEN {
        pieces.map(|piece| ranks.count(piece.as_bytes())).sum()
    } else {
        let mut memo = Memo::new(text.len());
        pieces
            .map(|piece| ranks.count_memo(piece.as_bytes(), &mut memo))
            .sum()
    };
    encoding.finish(raw)
}

/// Counts the tokens of `text` but stops as soon as the count exceeds `limit`.
///
/// Returns the exact count when it is at most `limit`, and `limit + 1` (saturating)
/// when it is larger: `count_up_to(t, e, l) == min(count(t, e), l + 1)`. The work done
/// is O(`limit`), whatever the length of the text.
pub fn count_up_to(text: &str, encoding: Encoding, limit: usize) -> usize {
    let over = limit.saturating_add(1);
    // No token is longer than `MAX_TOKEN` bytes (the long-piece tables check it at
    // load), so a text needs at least `len / MAX_TOKEN` tokens: a text far over the
    // limit is answered without reading it, and otherwise it is at most
    // `limit * MAX_TOKEN` bytes long.
    if text.len().div_ceil(long::MAX_TOKEN) > limit {
        return over;
    }
    let ranks = encoding.ranks();
    let mut total = 0usize;
    for piece in encoding.pieces(text) {
        let piece = piece.as_bytes();
        // `total <= limit` holds here: it only grows by counts within the remaining budget.
        if piece.len() <= merge::MERGE_MAX {
            // At most MERGE_MAX tokens: counted in full, then checked.
            total += ranks.count(piece);
            if total > limit {
                return over;
            }
        } else {
            match ranks.count_long_till_limit(piece, limit - total) {
                Some(n) => total += n,
                None => return over,
            }
        }
    }
    encoding.finish(total).min(over)
}

/// The count of one pre-token the way a piece over 64 bytes is counted (windows, else
/// the long-piece merge of `long.rs`), whatever its length: for
/// `examples/tokens_profile`, which times it against `bpe`'s encoder.
#[doc(hidden)]
pub fn count_long_piece(piece: &str, encoding: Encoding) -> usize {
    encoding.ranks().count_long(piece.as_bytes())
}

/// The token byte strings of `encoding` in rank order (token id `i` is element `i`).
///
/// This is the compiled-in rank data, exposed so tests can check it against
/// tiktoken's published files (and build a tiktoken reference from it). An
/// estimate counts with `cl100k_base`, so its table is `cl100k_base`'s.
pub fn token_table(encoding: Encoding) -> Vec<&'static [u8]> {
    let bpe = &encoding.tokenizer().bpe;
    (0..bpe.num_tokens())
        .map(|id| bpe.token_bytes(id as u32))
        .collect()
}

#[cfg(test)]
mod tests;
