//! Python bindings for task classification (`edgeproxy_core::classify`).
//!
//! The typed public API is `edgeproxy.routing.classifier` (models) and `edgeproxy.routing.tasks`
//! (rules); these classes are their engine.

use std::borrow::Cow;

use edgeproxy_core::classify::{self, FeatureConfig, TrainOptions};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::{detach_if_large, to_py_err};

/// The text of a Python string; one holding lone surrogates (not UTF-8, but a JSON body may
/// carry them as `\ud800` escapes) is read with U+FFFD in their place rather than refused.
fn text_of<'a>(text: &'a Bound<'_, PyString>) -> Cow<'a, str> {
    match text.to_str() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(text.to_string_lossy().into_owned()),
    }
}

/// A trained task classifier (immutable; safe to share between threads).
#[pyclass(frozen, module = "edgeproxy._core")]
pub struct TaskModel {
    inner: classify::TaskModel,
    // The labels as Python strings, made once: `predict` returns one without allocating.
    labels: Vec<Py<PyString>>,
}

impl TaskModel {
    fn wrap(py: Python<'_>, inner: classify::TaskModel) -> TaskModel {
        let labels = inner
            .labels()
            .iter()
            .map(|l| PyString::intern(py, l).unbind())
            .collect();
        TaskModel { inner, labels }
    }
}

#[pymethods]
impl TaskModel {
    /// Reads a model file's bytes, checking everything; `TaskError` says what is wrong.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<TaskModel> {
        let inner = detach_if_large(py, data.len(), || classify::TaskModel::from_bytes(data))
            .map_err(to_py_err)?;
        Ok(TaskModel::wrap(py, inner))
    }

    /// The model as a file.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let bytes = py.detach(|| self.inner.to_bytes());
        PyBytes::new(py, &bytes)
    }

    /// The task names, in the order of `probabilities`.
    #[getter]
    fn labels(&self, py: Python<'_>) -> Vec<Py<PyString>> {
        self.labels.iter().map(|l| l.clone_ref(py)).collect()
    }

    /// The model file's XXH3-128 checksum, hex: equal digests, equal models.
    #[getter]
    fn digest(&self) -> String {
        format!("{:032x}", self.inner.digest())
    }

    /// Buckets are `2 ** bits`.
    #[getter]
    fn bits(&self) -> u8 {
        self.inner.config().bits
    }

    /// The character n-gram lengths (shortest, longest); (0, 0) for none.
    #[getter]
    fn char_ngrams(&self) -> (u8, u8) {
        let c = self.inner.config();
        (c.char_min, c.char_max)
    }

    /// The longest word n-gram (0: no word features).
    #[getter]
    fn word_ngrams(&self) -> u8 {
        self.inner.config().word_max
    }

    /// Longer texts are cut to their first and last `max_bytes / 2` bytes.
    #[getter]
    fn max_bytes(&self) -> u32 {
        self.inner.config().max_bytes
    }

    /// The most probable task for `text` and its probability.
    fn predict(&self, py: Python<'_>, text: &Bound<'_, PyString>) -> (Py<PyString>, f32) {
        let text = text_of(text);
        let p = detach_if_large(py, text.len(), || self.inner.predict(&text));
        (self.labels[p.label].clone_ref(py), p.confidence)
    }

    /// The probability of each task (in `labels` order) for `text`.
    fn probabilities(&self, py: Python<'_>, text: &Bound<'_, PyString>) -> Vec<f32> {
        let text = text_of(text);
        detach_if_large(py, text.len(), || self.inner.probabilities(&text))
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "TaskModel(labels={:?}, bits={}, digest='{:032x}')",
            self.inner.labels(),
            c.bits,
            self.inner.digest()
        )
    }
}

/// Trains a task classifier (the GIL is released while it trains).
#[pyfunction]
#[pyo3(signature = (
    texts, labels, tasks, *, bits = 18, char_ngrams = (3, 5), word_ngrams = 2,
    max_bytes = 8192, epochs = 10, seed = 0, learning_rate = 0.5
))]
#[allow(clippy::too_many_arguments)]
pub fn train_task_model(
    py: Python<'_>,
    texts: Vec<String>,
    labels: Vec<usize>,
    tasks: Vec<String>,
    bits: u8,
    char_ngrams: (u8, u8),
    word_ngrams: u8,
    max_bytes: u32,
    epochs: u32,
    seed: u64,
    learning_rate: f32,
) -> PyResult<TaskModel> {
    let options = TrainOptions {
        features: FeatureConfig {
            bits,
            char_min: char_ngrams.0,
            char_max: char_ngrams.1,
            word_max: word_ngrams,
            max_bytes,
        },
        epochs,
        seed,
        learning_rate,
    };
    let model = py
        .detach(|| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            classify::train(&refs, &labels, &tasks, &options)
        })
        .map_err(to_py_err)?;
    Ok(TaskModel::wrap(py, model))
}

/// A task rule's compiled regex or keywords: linear-time matching, whatever the pattern.
#[pyclass(frozen, module = "edgeproxy._core")]
pub struct TextPattern {
    inner: classify::TextPattern,
    source: String,
}

#[pymethods]
impl TextPattern {
    /// A regex (Rust `regex` syntax: no look-around, no backreferences), found anywhere.
    #[staticmethod]
    fn regex(pattern: &str) -> PyResult<TextPattern> {
        Ok(TextPattern {
            inner: classify::TextPattern::regex(pattern).map_err(to_py_err)?,
            source: pattern.to_owned(),
        })
    }

    /// Any of `words`, case-insensitive, as whole words where they begin or end with a word
    /// character (Unicode `\w`).
    #[staticmethod]
    fn keywords(words: Vec<String>) -> PyResult<TextPattern> {
        Ok(TextPattern {
            inner: classify::TextPattern::keywords(&words).map_err(to_py_err)?,
            source: words.join(", "),
        })
    }

    /// Whether the pattern occurs in `text`.
    fn is_match(&self, py: Python<'_>, text: &Bound<'_, PyString>) -> bool {
        let text = text_of(text);
        detach_if_large(py, text.len(), || self.inner.is_match(&text))
    }

    fn __repr__(&self) -> String {
        format!("TextPattern({:?})", self.source)
    }
}
