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
