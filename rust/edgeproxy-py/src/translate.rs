//! Python bindings for the stream translators (`edgeproxy_core::translate`).

use edgeproxy_core::sse::DEFAULT_MAX_EVENT_BYTES;
use edgeproxy_core::translate::{self, StreamError, Usage};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::{detach_if_large, to_py_err};

fn error_tuple(e: Option<&StreamError>) -> Option<(String, String)> {
    e.map(|e| (e.kind.clone(), e.message.clone()))
}

fn usage_tuple(u: Option<Usage>) -> Option<(u64, u64, u64, u64)> {
    u.map(|u| {
        (
            u.input_tokens,
            u.output_tokens,
            u.cached_tokens,
            u.cache_write_tokens,
        )
    })
}

/// Translates an OpenAI Chat Completions SSE stream into Anthropic Messages SSE events.
#[pyclass(module = "edgeproxy._core")]
pub struct OpenAIToAnthropicStream {
    inner: translate::OpenAIToAnthropic,
}

#[pymethods]
impl OpenAIToAnthropicStream {
    #[new]
    #[pyo3(
        signature = (model = None, max_event_bytes = DEFAULT_MAX_EVENT_BYTES),
        text_signature = "(model=None, max_event_bytes=16777216)"
    )]
    fn new(model: Option<String>, max_event_bytes: usize) -> Self {
        Self {
            inner: translate::OpenAIToAnthropic::new(model, max_event_bytes),
        }
    }

    /// Translates one network chunk; returns the bytes to write to the client.
    fn feed<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let inner = &mut self.inner;
        let out = detach_if_large(py, chunk.len(), || inner.feed(chunk)).map_err(to_py_err)?;
        Ok(PyBytes::new(py, &out))
    }

    /// Ends the stream: (bytes still to write, whether the answer was complete).
    fn finish<'py>(&mut self, py: Python<'py>) -> (Bound<'py, PyBytes>, bool) {
        let (out, complete) = self.inner.finish();
        (PyBytes::new(py, &out), complete)
    }

    #[getter]
    fn complete(&self) -> bool {
        self.inner.is_complete()
    }

    #[getter]
    fn started(&self) -> bool {
        self.inner.has_started()
    }

    #[getter]
    fn error(&self) -> Option<(String, String)> {
        error_tuple(self.inner.error())
    }

    #[getter]
    fn stop_reason(&self) -> Option<&'static str> {
        self.inner.stop_reason()
    }

    #[getter]
    fn usage(&self) -> Option<(u64, u64, u64, u64)> {
        usage_tuple(self.inner.usage())
    }

    fn __repr__(&self) -> String {
        format!(
            "OpenAIToAnthropicStream(started={}, complete={})",
            py_bool(self.inner.has_started()),
            py_bool(self.inner.is_complete())
        )
    }
}

/// Translates an Anthropic Messages SSE stream into OpenAI Chat Completions SSE chunks.
#[pyclass(module = "edgeproxy._core")]
pub struct AnthropicToOpenAIStream {
    inner: translate::AnthropicToOpenAI,
}

#[pymethods]
impl AnthropicToOpenAIStream {
    #[new]
    #[pyo3(
        signature = (include_usage = false, created = None, model = None, max_event_bytes = DEFAULT_MAX_EVENT_BYTES),
        text_signature = "(include_usage=False, created=None, model=None, max_event_bytes=16777216)"
    )]
    fn new(
        include_usage: bool,
        created: Option<u64>,
        model: Option<String>,
        max_event_bytes: usize,
    ) -> Self {
        Self {
            inner: translate::AnthropicToOpenAI::new(
                include_usage,
                created,
                model,
                max_event_bytes,
            ),
        }
    }

    /// Translates one network chunk; returns the bytes to write to the client.
    fn feed<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let inner = &mut self.inner;
        let out = detach_if_large(py, chunk.len(), || inner.feed(chunk)).map_err(to_py_err)?;
        Ok(PyBytes::new(py, &out))
    }

    /// Ends the stream: (bytes still to write, whether the answer was complete).
    fn finish<'py>(&mut self, py: Python<'py>) -> (Bound<'py, PyBytes>, bool) {
        let (out, complete) = self.inner.finish();
        (PyBytes::new(py, &out), complete)
    }

    #[getter]
    fn complete(&self) -> bool {
        self.inner.is_complete()
    }

    #[getter]
    fn started(&self) -> bool {
        self.inner.has_started()
    }

    #[getter]
    fn error(&self) -> Option<(String, String)> {
        error_tuple(self.inner.error())
    }

    #[getter]
    fn finish_reason(&self) -> Option<&'static str> {
        self.inner.finish_reason()
    }

    #[getter]
    fn usage(&self) -> Option<(u64, u64, u64, u64)> {
        usage_tuple(self.inner.usage())
    }

    fn __repr__(&self) -> String {
        format!(
            "AnthropicToOpenAIStream(started={}, complete={})",
            py_bool(self.inner.has_started()),
            py_bool(self.inner.is_complete())
        )
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}
