//! Python bindings for the OpenAI-wire stream scanner (`edgeproxy_core::relay`).

use edgeproxy_core::relay::{self, ScanOptions, StreamFailure};
use edgeproxy_core::sse;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::{detach_if_large, to_py_err};

/// What one upstream chunk held: the bytes to write, what it says about the answer, the failure.
#[pyclass(frozen, get_all, module = "edgeproxy._core")]
pub struct ChunkScan {
    out: Py<PyBytes>,
    done: bool,
    started: bool,
    finished: bool,
    tool_calls: bool,
    multiple_choices: bool,
    events: usize,
    usage: Option<String>,
    model: Option<String>,
    id: Option<String>,
    text: String,
    malformed: Option<&'static str>,
    error_event: Option<String>,
}

#[pymethods]
impl ChunkScan {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "ChunkScan(out=<{} bytes>, events={}, done={}, started={}, failure={})",
            self.out.bind(py).as_bytes().len(),
            self.events,
            py_bool(self.done),
            py_bool(self.started),
            if self.malformed.is_some() {
                "'malformed'"
            } else if self.error_event.is_some() {
                "'error_event'"
            } else {
                "None"
            },
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

/// Checks an OpenAI-wire (Chat Completions) SSE stream, one network chunk per call.
#[pyclass(module = "edgeproxy._core")]
pub struct ChatStreamScanner {
    inner: relay::ChatStreamScanner,
}

#[pymethods]
impl ChatStreamScanner {
    #[new]
    #[pyo3(
        signature = (*, continuation = false, continuation_id = None, prior_usage = None, max_event_bytes = sse::DEFAULT_MAX_EVENT_BYTES),
        text_signature = "(*, continuation=False, continuation_id=None, prior_usage=None, max_event_bytes=16777216)"
    )]
    fn new(
        continuation: bool,
        continuation_id: Option<String>,
        prior_usage: Option<(i64, i64)>,
        max_event_bytes: usize,
    ) -> Self {
        let options = ScanOptions {
            continuation,
            continuation_id,
            prior_usage,
        };
        Self {
            inner: relay::ChatStreamScanner::with_limit(options, max_event_bytes),
        }
    }

    /// Scans one chunk (GIL released for chunks >= 64 KiB); raises `SseError` on bad framing.
    fn feed(&mut self, py: Python<'_>, chunk: &[u8]) -> PyResult<ChunkScan> {
        let inner = &mut self.inner;
        let scan = detach_if_large(py, chunk.len(), || inner.feed(chunk)).map_err(to_py_err)?;
        let (malformed, error_event) = match scan.failure {
            None => (None, None),
            Some(StreamFailure::Malformed(msg)) => (Some(msg), None),
            Some(StreamFailure::ErrorEvent(data)) => (None, Some(data)),
        };
        Ok(ChunkScan {
            out: PyBytes::new(py, &scan.out).unbind(),
            done: scan.done,
            started: scan.started,
            finished: scan.finished,
            tool_calls: scan.tool_calls,
            multiple_choices: scan.multiple_choices,
            events: scan.events,
            usage: scan.usage,
            model: scan.model,
            id: scan.id,
            text: scan.text,
            malformed,
            error_event,
        })
    }

    /// `[DONE]` was seen: nothing more is part of the answer.
    #[getter]
    fn done(&self) -> bool {
        self.inner.done()
    }

    /// True when the stream so far ended mid-event.
    #[getter]
    fn pending(&self) -> bool {
        self.inner.has_pending()
    }

    #[getter]
    fn max_event_bytes(&self) -> usize {
        self.inner.max_event_bytes()
    }

    fn __repr__(&self) -> String {
        let o = self.inner.options();
        format!(
            "ChatStreamScanner(continuation={}, done={}, pending={})",
            py_bool(o.continuation),
            py_bool(self.inner.done()),
            py_bool(self.inner.has_pending())
        )
    }
}
