//! Python bindings for the prompt-hash cache (`edgeproxy_core::cache`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use edgeproxy_core::cache;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::{detach_if_large, to_py_err};

/// The 128-bit cache key (16 bytes) of a request body, scoped by the served model
/// (route name), the wire format and the tenant.
///
/// `utf8_checked=True` when the caller has already decoded the same bytes as JSON
/// (orjson validates UTF-8): the key is the same, without checking the encoding again.
#[pyfunction]
#[pyo3(signature = (body, model, wire, tenant, *, utf8_checked = false))]
pub fn cache_key<'py>(
    py: Python<'py>,
    body: &[u8],
    model: &str,
    wire: &str,
    tenant: &str,
    utf8_checked: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let key_of = if utf8_checked {
        cache::cache_key_validated
    } else {
        cache::cache_key
    };
    let key =
        detach_if_large(py, body.len(), || key_of(body, model, wire, tenant)).map_err(to_py_err)?;
    Ok(PyBytes::new(py, &key))
}

/// The canonical form of a request body (what `cache_key` hashes).
#[pyfunction]
pub fn canonical_request<'py>(py: Python<'py>, body: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let out =
        detach_if_large(py, body.len(), || cache::canonical_request(body)).map_err(to_py_err)?;
    Ok(PyBytes::new(py, &out))
}

fn to_key(key: &[u8]) -> PyResult<cache::Key> {
    key.try_into().map_err(|_| {
        PyValueError::new_err(format!(
            "a cache key is 16 bytes (from cache_key), got {}",
            key.len()
        ))
    })
}

/// Bounded in-memory cache store: LRU by entries and bytes, a TTL per entry.
///
/// Thread-safe: one mutex around the store, never held while calling into Python.
#[pyclass(frozen, module = "edgeproxy._core")]
pub struct CacheStore {
    inner: Mutex<cache::Store>,
}

impl CacheStore {
    fn lock(&self) -> MutexGuard<'_, cache::Store> {
        // A panic while holding the lock cannot leave the store half-updated in a
        // way that matters more than losing the cache: keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl CacheStore {
    #[new]
    fn new(max_bytes: usize, max_entries: usize) -> Self {
        Self {
            inner: Mutex::new(cache::Store::new(max_bytes, max_entries)),
        }
    }

    /// The live value for `key` (marking it most recently used), or None.
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        now: f64,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let key = to_key(key)?;
        let value = self.lock().get(&key, now);
        Ok(value.map(|v| PyBytes::new(py, &v)))
    }

    /// Stores `value` for `ttl` seconds from `now`; False when it can never fit.
    fn put(&self, key: &[u8], value: &[u8], ttl: f64, now: f64) -> PyResult<bool> {
        let key = to_key(key)?;
        let value: std::sync::Arc<[u8]> = value.into();
        Ok(self.lock().put(key, value, ttl, now))
    }

    /// Drops the entry for `key`; True when there was one.
    fn remove(&self, key: &[u8]) -> PyResult<bool> {
        let key = to_key(key)?;
        Ok(self.lock().remove(&key))
    }

    /// Drops every entry (the counters are kept).
    fn clear(&self) {
        self.lock().clear();
    }

    /// Counters and sizes.
    fn stats(&self) -> HashMap<&'static str, u64> {
        let store = self.lock();
        let s = store.stats();
        HashMap::from([
            ("hits", s.hits),
            ("misses", s.misses),
            ("stores", s.stores),
            ("rejected", s.rejected),
            ("evictions", s.evictions),
            ("expirations", s.expirations),
            ("entries", store.len() as u64),
            ("bytes_used", store.bytes_used() as u64),
            ("max_bytes", store.max_bytes() as u64),
            ("max_entries", store.max_entries() as u64),
        ])
    }

    fn __len__(&self) -> usize {
        self.lock().len()
    }

    /// Bytes charged for the entries held (values plus a fixed overhead each).
    #[getter]
    fn bytes_used(&self) -> usize {
        self.lock().bytes_used()
    }

    #[getter]
    fn max_bytes(&self) -> usize {
        self.lock().max_bytes()
    }

    #[getter]
    fn max_entries(&self) -> usize {
        self.lock().max_entries()
    }

    fn __repr__(&self) -> String {
        let s = self.lock();
        format!(
            "CacheStore(max_bytes={}, max_entries={}, entries={}, bytes_used={})",
            s.max_bytes(),
            s.max_entries(),
            s.len(),
            s.bytes_used()
        )
    }
}
