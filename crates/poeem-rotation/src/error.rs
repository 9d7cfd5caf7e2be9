use thiserror::Error;

/// Errors from building or updating a rotation.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum RotationError {
    /// The dimension is zero.
    #[error("the dimension must be at least 1")]
    ZeroDimension,
    /// A buffer's length does not match the dimension it is used with.
    #[error("{what}: expected {expected} values, got {got}")]
    DimensionMismatch {
        /// Which argument.
        what: &'static str,
        /// The length the call needs.
        expected: usize,
        /// The length it was given.
        got: usize,
    },
    /// A row-major buffer's length is not a multiple of its row width.
    #[error("{what}: {len} values do not form rows of {dim}")]
    RaggedRows {
        /// Which argument.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The row width.
        dim: usize,
    },
    /// An input holds NaN or an infinity.
    #[error("{what}: value {index} is not finite")]
    NonFinite {
        /// Which argument.
        what: &'static str,
        /// Flat index of the first offending value.
        index: usize,
    },
    /// An input has no rows.
    #[error("{what} is empty")]
    Empty {
        /// Which argument.
        what: &'static str,
    },
    /// A matrix given as a rotation is not orthonormal.
    #[error("matrix is not orthonormal: max |RᵀR − I| = {error:.3e} exceeds {tolerance:.1e}")]
    NotOrthonormal {
        /// The measured orthogonality error.
        error: f64,
        /// The tolerance it was held to.
        tolerance: f64,
    },
    /// The SVD did not converge.
    #[error("the SVD of the {dim}×{dim} cross-covariance did not converge")]
    SvdFailed {
        /// Dimension of the matrix.
        dim: usize,
    },
}
