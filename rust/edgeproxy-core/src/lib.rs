//! Pure-Rust hot path of edgeproxy.
//!
//! This crate has no Python dependency; `edgeproxy-py` wraps it with PyO3.
//!
//! - [`sse`]: an incremental Server-Sent Events parser and encoder.
//! - [`relay`]: per-chunk checking of an OpenAI-wire stream relayed to the client.
//! - [`cache`]: canonical request form, prompt-hash keys and the bounded cache store.
//! - [`tokens`]: exact OpenAI token counts (cl100k_base, o200k_base) and chat-request counts.
//! - [`translate`]: stream translation between OpenAI Chat Completions and Anthropic Messages SSE.
//! - [`classify`]: the task classifier (hashed n-grams, a linear model) and task rule patterns.
//! - [`Error`]: the one error type of the crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod classify;
mod error;
pub mod relay;
pub mod sse;
pub mod tokens;
pub mod translate;

pub use error::Error;
