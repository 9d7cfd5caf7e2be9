use thiserror::Error;

/// Errors from training or using a quantizer.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum PqError {
    /// The dimension is zero.
    #[error("the dimension must be at least 1")]
    ZeroDimension,
    /// A training set has no rows.
    #[error("{what} is empty")]
    Empty {
        /// Which input.
        what: &'static str,
    },
    /// A row-major buffer's length is not a multiple of its row width.
    #[error("{what}: {len} values do not form rows of {dim}")]
    RaggedRows {
        /// Which input.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The row width.
        dim: usize,
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
        /// Row of the first offending value.
        row: usize,
        /// Column of the first offending value.
        col: usize,
    },
    /// Fewer training points than centroids.
    #[error("{what}: {n_points} training points cannot train {n_centroids} centroids")]
    TooFewPoints {
        /// Which quantizer.
        what: &'static str,
        /// Points given.
        n_points: usize,
        /// Centroids asked for.
        n_centroids: usize,
    },
    /// A setting is out of its range.
    #[error("{setting} = {value} is out of range: {expected}")]
    InvalidSetting {
        /// The setting's name.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// Codes of `n_bits` do not fit the requested integer type.
    #[error("{n_bits}-bit codes do not fit in {code_bits}-bit integers")]
    CodeWidth {
        /// Bits per code.
        n_bits: u32,
        /// Bits of the integer type.
        code_bits: u32,
    },
    /// A code or list number is out of range for this quantizer.
    #[error("{what} {value} is out of range (at most {max})")]
    CodeOutOfRange {
        /// Which kind of code.
        what: &'static str,
        /// The value found.
        value: usize,
        /// The largest valid value.
        max: usize,
    },
    /// The rotation step failed.
    #[error(transparent)]
    Rotation(#[from] poeem_rotation::RotationError),
}
