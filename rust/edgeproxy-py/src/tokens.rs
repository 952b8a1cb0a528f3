//! Python bindings for token counting (`edgeproxy_core::tokens`).
//!
//! The typed public API is `edgeproxy.tokens`; these functions are its engine.

use edgeproxy_core::tokens::{self, Encoding};
use pyo3::prelude::*;

use crate::{detach_if_large, to_py_err};

fn encoding(name: &str) -> PyResult<Encoding> {
    Encoding::from_name(name).map_err(to_py_err)
}

/// The token count of a chat request.
#[pyclass(frozen, eq, hash, get_all, module = "edgeproxy._core")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenCount {
    tokens: usize,
    exact: bool,
    encoding: String,
}

#[pymethods]
impl TokenCount {
    #[new]
    #[pyo3(signature = (tokens, exact, encoding))]
    fn new(tokens: usize, exact: bool, encoding: String) -> Self {
        Self {
            tokens,
            exact,
            encoding,
        }
    }

    fn __repr__(&self) -> String {
        let exact = if self.exact { "True" } else { "False" };
        format!(
            "TokenCount(tokens={}, exact={exact}, encoding='{}')",
            self.tokens, self.encoding
        )
    }
}

/// Number of tokens in `text` (tiktoken's `encode_ordinary`).
#[pyfunction]
#[pyo3(signature = (text, encoding = "cl100k_base"))]
pub fn count_tokens(py: Python<'_>, text: &str, encoding: &str) -> PyResult<usize> {
    let encoding = self::encoding(encoding)?;
    Ok(detach_if_large(py, text.len(), || {
        tokens::count(text, encoding)
    }))
}

/// `min(count_tokens(text, encoding), limit + 1)`, stopping early past the limit.
#[pyfunction]
#[pyo3(signature = (text, limit, encoding = "cl100k_base"))]
pub fn count_tokens_up_to(
    py: Python<'_>,
    text: &str,
    limit: usize,
    encoding: &str,
) -> PyResult<usize> {
    let encoding = self::encoding(encoding)?;
    Ok(detach_if_large(py, text.len(), || {
        tokens::count_up_to(text, encoding, limit)
    }))
}

/// Prompt tokens of a chat request body (JSON bytes), in one call.
#[pyfunction]
#[pyo3(signature = (body, encoding))]
pub fn count_chat_tokens(py: Python<'_>, body: &[u8], encoding: &str) -> PyResult<TokenCount> {
    let encoding = self::encoding(encoding)?;
    let count = detach_if_large(py, body.len(), || tokens::count_chat(body, encoding))
        .map_err(to_py_err)?;
    Ok(TokenCount {
        tokens: count.tokens,
        exact: count.exact,
        encoding: count.encoding.name().to_owned(),
    })
}

/// Loads an encoding's compiled-in rank data now (GIL released).
#[pyfunction]
pub fn preload_encoding(py: Python<'_>, encoding: &str) -> PyResult<()> {
    let encoding = self::encoding(encoding)?;
    py.detach(|| tokens::preload(encoding));
    Ok(())
}

/// The compiled-in token byte strings of an encoding, in rank order.
#[pyfunction]
pub fn token_table(encoding: &str) -> PyResult<Vec<&'static [u8]>> {
    Ok(tokens::token_table(self::encoding(encoding)?))
}
