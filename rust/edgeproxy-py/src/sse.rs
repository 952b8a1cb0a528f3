//! Python bindings for the SSE parser and encoder (`edgeproxy_core::sse`).

use edgeproxy_core::sse;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::{detach_if_large, to_py_err};

/// One dispatched Server-Sent Event.
#[pyclass(frozen, eq, hash, get_all, module = "edgeproxy._core")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SseEvent {
    event: String,
    data: String,
    id: String,
    retry: Option<u64>,
}

impl From<sse::Event> for SseEvent {
    fn from(e: sse::Event) -> Self {
        Self {
            event: e.event,
            data: e.data,
            id: e.id,
            retry: e.retry,
        }
    }
}

#[pymethods]
impl SseEvent {
    #[new]
    #[pyo3(
        signature = (data, event = "message".to_owned(), id = String::new(), retry = None),
        text_signature = "(data, event='message', id='', retry=None)"
    )]
    fn new(data: String, event: String, id: String, retry: Option<u64>) -> Self {
        Self {
            event,
            data,
            id,
            retry,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let r =
            |s: &str| -> PyResult<String> { Ok(s.into_pyobject(py)?.repr()?.to_str()?.to_owned()) };
        let retry = match self.retry {
            Some(ms) => ms.to_string(),
            None => "None".to_owned(),
        };
        Ok(format!(
            "SseEvent(event={}, data={}, id={}, retry={})",
            r(&self.event)?,
            r(&self.data)?,
            r(&self.id)?,
            retry
        ))
    }
}

/// Incremental Server-Sent Events parser (WHATWG rules); feed it network chunks.
#[pyclass(module = "edgeproxy._core")]
pub struct SseParser {
    inner: sse::Parser,
}

#[pymethods]
impl SseParser {
    #[new]
    #[pyo3(
        signature = (max_event_bytes = sse::DEFAULT_MAX_EVENT_BYTES),
        text_signature = "(max_event_bytes=16777216)"
    )]
    fn new(max_event_bytes: usize) -> Self {
        Self {
            inner: sse::Parser::with_limit(max_event_bytes),
        }
    }

    /// Parses one chunk and returns the events it completed.
    fn feed(&mut self, py: Python<'_>, chunk: &[u8]) -> PyResult<Vec<SseEvent>> {
        let inner = &mut self.inner;
        let events = detach_if_large(py, chunk.len(), || inner.feed(chunk)).map_err(to_py_err)?;
        Ok(events.into_iter().map(SseEvent::from).collect())
    }

    /// True when the stream so far ended mid-event.
    #[getter]
    fn pending(&self) -> bool {
        self.inner.has_pending()
    }

    /// The last event ID string (what a client sends as `Last-Event-ID`).
    #[getter]
    fn last_event_id(&self) -> &str {
        self.inner.last_event_id()
    }

    /// The reconnection time (ms) set by the last valid `retry` field, if any.
    #[getter]
    fn retry(&self) -> Option<u64> {
        self.inner.retry()
    }

    #[getter]
    fn max_event_bytes(&self) -> usize {
        self.inner.max_event_bytes()
    }

    fn __repr__(&self) -> String {
        format!(
            "SseParser(max_event_bytes={}, pending={})",
            self.inner.max_event_bytes(),
            if self.inner.has_pending() {
                "True"
            } else {
                "False"
            }
        )
    }
}

/// Serialises one event: `event: X` when given, one `data: ` line per line of
/// `data`, then a blank line.
#[pyfunction]
#[pyo3(signature = (data, event = None))]
pub fn encode_sse<'py>(py: Python<'py>, data: &str, event: Option<&str>) -> Bound<'py, PyBytes> {
    let mut out = Vec::with_capacity(data.len() + event.map_or(0, str::len) + 16);
    sse::encode(event, data, &mut out);
    PyBytes::new(py, &out)
}
