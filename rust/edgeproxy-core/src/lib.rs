//! Pure-Rust hot path of edgeproxy.
//!
//! This crate has no Python dependency; `edgeproxy-py` wraps it with PyO3.
//!
//! - [`sse`]: an incremental Server-Sent Events parser and encoder.
//! - [`Error`]: the one error type of the crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod sse;

pub use error::Error;
