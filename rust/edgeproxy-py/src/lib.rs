//! Thin PyO3 shim exposing `edgeproxy-core` as the Python module `edgeproxy._core`.
//!
//! No logic lives here: only argument conversion, GIL handling and the mapping
//! of [`edgeproxy_core::Error`] to Python exceptions ([`to_py_err`]).

use edgeproxy_core::Error;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

mod cache;
mod classify;
mod relay;
mod sse;
mod tokens;
mod translate;

pyo3::create_exception!(
    edgeproxy._core,
    EdgeProxyError,
    PyException,
    "Root of edgeproxy's exception tree."
);
pyo3::create_exception!(
    edgeproxy._core,
    SseError,
    EdgeProxyError,
    "A Server-Sent Events stream could not be parsed (e.g. an event over the size limit)."
);
pyo3::create_exception!(
    edgeproxy._core,
    CacheError,
    EdgeProxyError,
    "A request body could not be canonicalised for the prompt-hash cache (not valid JSON)."
);

pyo3::create_exception!(
    edgeproxy._core,
    TokenizerError,
    EdgeProxyError,
    "Tokens could not be counted: unknown encoding, or a chat body that is not a chat request."
);

pyo3::create_exception!(
    edgeproxy._core,
    TranslationError,
    EdgeProxyError,
    "A request, response or stream cannot be translated between the OpenAI and Anthropic wires; \
     `param` names the field, `message` says why."
);

pyo3::create_exception!(
    edgeproxy._core,
    TaskError,
    EdgeProxyError,
    "A task classifier model cannot be read or trained, or a task rule's pattern cannot be \
     compiled; the message says why."
);

/// Inputs at least this large are worked on with the GIL released: other Python threads (the
/// event loop, when the work runs in a worker thread) keep running meanwhile. Releasing and
/// re-taking the GIL costs about a microsecond; below 16 KiB every kind of work here (SSE
/// scanning, translation, hashing, token counting) takes only a few microseconds, so holding
/// the GIL is cheaper than handing it over. One threshold for every binding.
pub(crate) const DETACH_BYTES: usize = 16 * 1024;

/// Runs `work` with the GIL released when the input (`len` bytes) is large.
pub(crate) fn detach_if_large<T: Send>(
    py: Python<'_>,
    len: usize,
    work: impl FnOnce() -> T + Send,
) -> T {
    if len >= DETACH_BYTES {
        py.detach(work)
    } else {
        work()
    }
}

/// The one place where core errors become Python exceptions.
pub(crate) fn to_py_err(e: Error) -> PyErr {
    match e {
        Error::SseEventTooLarge { .. } => SseError::new_err(e.to_string()),
        Error::CacheBadRequest { .. } => CacheError::new_err(e.to_string()),
        Error::UnknownEncoding { .. } | Error::TokenizerBadRequest { .. } => {
            TokenizerError::new_err(e.to_string())
        }
        Error::Translation { param, message } => {
            let text = format!("{param}: {message}");
            Python::attach(|py| {
                let err = TranslationError::new_err(text);
                let value = err.value(py);
                // Plain attributes on a fresh exception instance: setting them cannot fail.
                let _ = value.setattr("param", param);
                let _ = value.setattr("message", message);
                err
            })
        }
        Error::TaskModel { .. } | Error::TaskTraining { .. } | Error::TaskPattern { .. } => {
            TaskError::new_err(e.to_string())
        }
    }
}

/// Rust hot path of edgeproxy (SSE parsing and encoding, token counting, the prompt-hash cache,
/// stream translation, task classification).
#[pymodule(name = "_core")]
mod core_module {
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::{CacheError, EdgeProxyError, SseError};

    #[pymodule_export]
    use super::sse::{encode_sse, SseEvent, SseParser};

    #[pymodule_export]
    use super::relay::{ChatStreamScanner, ChunkScan};

    #[pymodule_export]
    use super::TokenizerError;

    #[pymodule_export]
    use super::tokens::{
        count_chat_tokens, count_tokens, count_tokens_up_to, preload_encoding, token_table,
        TokenCount,
    };

    #[pymodule_export]
    use super::cache::{cache_key, canonical_request, CacheStore};

    #[pymodule_export]
    use super::translate::{AnthropicToOpenAIStream, OpenAIToAnthropicStream};

    #[pymodule_export]
    use super::TranslationError;

    #[pymodule_export]
    use super::classify::{train_task_model, TaskModel, TextPattern};

    #[pymodule_export]
    use super::TaskError;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
