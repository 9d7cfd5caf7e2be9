//! Rust errors → Python exceptions.
//!
//! The exception classes live in `poeem/_errors.py` (Python allows the multiple inheritance they
//! need: `InvalidArgumentError` is both a `PoeemError` and a `ValueError`); they are looked up
//! when an error is raised. File-system errors become the built-in `OSError` subclass that the
//! operating system's error number selects (`FileNotFoundError`, `PermissionError`, ...).

use poeem::build::BuildError;
use poeem::pq::PqError;
use poeem::search::SearchError;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;

/// The Python exception classes of `poeem._errors`.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Bad arrays or arguments (`ValueError` subclass).
    InvalidArgument,
    /// A file that is not a valid index (`ValueError` subclass).
    CorruptIndex,
    /// Anything else poeem refuses (`PoeemError`).
    Other,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::InvalidArgument => "InvalidArgumentError",
            Kind::CorruptIndex => "CorruptIndexError",
            Kind::Other => "PoeemError",
        }
    }
}

/// A Python exception of `kind` with `message`.
pub fn raise(kind: Kind, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| {
        match py
            .import("poeem._errors")
            .and_then(|m| m.getattr(kind.class_name()))
        {
            Ok(class) => match class.call1((message.clone(),)) {
                Ok(instance) => PyErr::from_value(instance),
                Err(e) => e,
            },
            // Only when the package's Python half is missing: still an exception, never a crash.
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

/// An argument error.
pub fn invalid(message: impl Into<String>) -> PyErr {
    raise(Kind::InvalidArgument, message)
}

/// `OSError(errno, strerror, filename)`: Python picks the subclass from the error number.
pub fn os_error(path: &std::path::Path, source: &std::io::Error) -> PyErr {
    let path = path.display().to_string();
    match source.raw_os_error() {
        Some(code) => PyOSError::new_err((code, source.to_string(), path)),
        None => PyOSError::new_err(format!("{path}: {source}")),
    }
}

/// The exception for an index-crate error. `from_file` says whether the error came from reading
/// an index file (structural errors are then corruption) or from the caller's arguments.
pub fn search_error(error: SearchError, from_file: bool) -> PyErr {
    match &error {
        SearchError::Io { path, source } => os_error(path, source),
        SearchError::InvalidParameter { .. }
        | SearchError::DimensionMismatch { .. }
        | SearchError::NonFinite { .. }
        | SearchError::Empty { .. } => invalid(error.to_string()),
        SearchError::BigEndianHost => raise(Kind::Other, error.to_string()),
        SearchError::Overflow { .. } if !from_file => invalid(error.to_string()),
        _ => raise(Kind::CorruptIndex, error.to_string()),
    }
}

/// The exception for a quantizer error (always about the caller's data or settings).
pub fn pq_error(error: PqError) -> PyErr {
    invalid(error.to_string())
}

/// The exception for a build error.
pub fn build_error(error: BuildError) -> PyErr {
    match error {
        BuildError::Search(e) => search_error(e, false),
        BuildError::Pq(e) => pq_error(e),
        other => raise(Kind::Other, other.to_string()),
    }
}
