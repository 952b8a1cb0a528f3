//! The single error type of `edgeproxy-core`.
//!
//! Every fallible operation in this crate returns [`Error`]. The Python shim maps
//! each variant to one exception class in exactly one place, so new variants
//! (token counting, cache, ...) are added here and mapped there. The enum is
//! deliberately not `#[non_exhaustive]`: adding a variant breaks the shim's
//! exhaustive `match` until the variant is mapped to an exception.

use std::fmt;

/// Errors raised by the edgeproxy hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// An SSE line, or the data of one SSE event, grew beyond the parser's
    /// `max_event_bytes` limit. The parser refuses to buffer more; it stays
    /// failed and returns this error again on every later `feed`.
    SseEventTooLarge {
        /// The limit in bytes that was exceeded.
        limit: usize,
    },
    /// A request body could not be put in canonical form for the prompt-hash
    /// cache (not valid JSON, nested too deeply, absurd number). The caller
    /// bypasses the cache for this request.
    CacheBadRequest {
        /// Byte offset in the body where the problem was found.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A token-counting call named an encoding this build does not know
    /// (see `tokens::Encoding::from_name`).
    UnknownEncoding {
        /// The name that was asked for.
        name: String,
    },
    /// A chat request body given to `tokens::count_chat` is not valid JSON
    /// or not a Chat Completions / Messages request (no `messages` array, ...).
    TokenizerBadRequest {
        /// What was wrong.
        reason: String,
    },
    /// A request, response or stream could not be translated between the OpenAI and Anthropic
    /// wires: a field one side lacks, or an upstream event that is not what its wire promises.
    Translation {
        /// The field (or `stream` for a bad upstream event) that could not be translated.
        param: String,
        /// Why.
        message: String,
    },
    /// A task classifier model file cannot be used: not a model, another format version,
    /// truncated or corrupt (`classify::TaskModel::from_bytes`).
    TaskModel {
        /// What is wrong with it.
        reason: String,
    },
    /// A task classifier could not be trained: no examples, a bad task name, bad options.
    TaskTraining {
        /// Why.
        reason: String,
    },
    /// A task rule's regex or keywords cannot be compiled (`classify::TextPattern`).
    TaskPattern {
        /// Why, in one line.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::SseEventTooLarge { limit } => {
                write!(
                    f,
                    "SSE line or event larger than the limit of {limit} bytes"
                )
            }
            Error::CacheBadRequest { offset, reason } => {
                write!(
                    f,
                    "cannot canonicalise the request body at byte {offset}: {reason}"
                )
            }
            Error::UnknownEncoding { name } => {
                write!(
                    f,
                    "unknown token encoding {name:?} (known: cl100k_base, o200k_base, estimate)"
                )
            }
            Error::TokenizerBadRequest { reason } => {
                write!(f, "cannot count the tokens of the chat request: {reason}")
            }
            Error::Translation { param, message } => write!(f, "{param}: {message}"),
            Error::TaskModel { reason } => write!(f, "not a usable task model: {reason}"),
            Error::TaskTraining { reason } => write!(f, "cannot train a task model: {reason}"),
            Error::TaskPattern { reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_mentions_limit() {
        let e = Error::SseEventTooLarge { limit: 42 };
        assert_eq!(
            e.to_string(),
            "SSE line or event larger than the limit of 42 bytes"
        );
        let _: &dyn std::error::Error = &e;
    }
}
