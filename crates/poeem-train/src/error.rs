use std::path::PathBuf;

use thiserror::Error;

/// Errors from loading data, training, or checkpointing.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("{name} = {value}: {reason}")]
    InvalidConfig {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A buffer's length does not match what the call needs.
    #[error("{what}: expected {expected}, got {got}")]
    DimensionMismatch {
        /// Which argument.
        what: &'static str,
        /// The length the call needs.
        expected: usize,
        /// The length it was given.
        got: usize,
    },
    /// An input holds NaN or an infinity.
    #[error("{what}: row {row}, column {col} is not finite")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Its row.
        row: usize,
        /// Its column.
        col: usize,
    },
    /// Training a quantizer or rotation failed.
    #[error(transparent)]
    Pq(#[from] poeem_pq::PqError),
    /// A rotation step failed.
    #[error(transparent)]
    Rotation(#[from] poeem_rotation::RotationError),
    // <more variants: add below this line, one edit at a time>
}

impl TrainError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
