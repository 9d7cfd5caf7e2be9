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
    /// A checkpoint is missing, truncated, corrupt (checksum mismatch), or of a format version
    /// this build cannot read.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Training was resumed on a dataset other than the one the checkpoint was trained on.
    #[error("the dataset does not match the checkpoint: {reason}")]
    DatasetMismatch {
        /// What differs.
        reason: String,
    },
    /// The loss became NaN or infinite (that step's parameter update was not applied).
    #[error("training diverged at step {step}: the loss is {loss}")]
    Diverged {
        /// The step (0-based) whose loss is not finite.
        step: u64,
        /// The loss.
        loss: f64,
    },
    /// A data file cannot be parsed at a line (a ragged row, an unterminated quote, bad UTF-8,
    /// an empty id, a repeated id).
    #[error("{}:{line}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The 1-based line where the offending record starts.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A cell of a data file holds a value its column cannot take (a timestamp or a numeric
    /// feature that is not a finite number).
    #[error("{}:{line}: column {column}: {value:?} {reason}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the record.
        line: usize,
        /// The column's name.
        column: String,
        /// The offending cell.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A data file has no column of the name the configuration asks for.
    #[error("{}: no column {column:?} (available: {})", path.display(), available.join(", "))]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The requested name.
        column: String,
        /// The file's column names.
        available: Vec<String>,
    },
    /// A data file holds no data rows.
    #[error("{}: {reason}", path.display())]
    EmptyData {
        /// The file.
        path: PathBuf,
        /// "the file is empty" or "the file has a header but no rows".
        reason: &'static str,
    },
    /// An index given by the caller is out of range.
    #[error("{what}: index {index} is out of range (must be below {bound})")]
    OutOfRange {
        /// Which input.
        what: &'static str,
        /// The index.
        index: u64,
        /// The exclusive upper bound.
        bound: u64,
    },
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
