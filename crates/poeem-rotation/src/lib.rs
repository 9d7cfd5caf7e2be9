//! Orthonormal rotations for product-quantization indexes.
//!
//! A [`Rotation`] is a d×d orthonormal matrix `R` acting on row vectors, `x ↦ x R`. It is only
//! ever changed in ways that keep it orthonormal:
//!
//! - [`procrustes`] solves `argmin_R ‖X R − Z‖_F` in closed form with an SVD (the rotation step of
//!   OPQ);
//! - [`GivensOptimizer`] takes block Givens coordinate-descent steps on the rotation group: each
//!   step turns d/2 disjoint coordinate planes at once, chosen at random, greedily, or as the
//!   steepest (maximum-weight) matching.
//!
//! Vectors are row-major `&[f32]` slices of `n × dim` values. Parallelism is passed explicitly as a
//! [`Par`] (`Par::Seq` or `Par::rayon(n)`).
#![forbid(unsafe_code)]

mod blossom;
mod error;
mod givens;
mod matching;
mod procrustes;
mod rotation;

pub use error::RotationError;
pub use faer;
pub use faer::Par;
pub use givens::{
    GivensConfig, GivensOptimizer, GivensStep, skew_gradient, skew_gradient_from_batch,
};
pub use matching::{PairSelection, matching_weight, select_pairs};
pub use procrustes::{procrustes, procrustes_from_cross};
pub use rotation::{PlaneRotation, Rotation};

/// Checks that `data` holds a whole number of `dim`-wide rows and returns that number.
///
/// # Errors
/// [`RotationError::DimensionMismatch`] when it does not, [`RotationError::ZeroDimension`] when
/// `dim` is 0.
pub(crate) fn row_count(
    data: &[f32],
    dim: usize,
    what: &'static str,
) -> Result<usize, RotationError> {
    if dim == 0 {
        return Err(RotationError::ZeroDimension);
    }
    if !data.len().is_multiple_of(dim) {
        return Err(RotationError::RaggedRows {
            what,
            len: data.len(),
            dim,
        });
    }
    Ok(data.len() / dim)
}

/// Checks a pair of row-major batches `x`, `z` of equal shape with at least one row and finite
/// values; returns the number of rows.
pub(crate) fn check_batch_pair(x: &[f32], z: &[f32], dim: usize) -> Result<usize, RotationError> {
    let n = row_count(x, dim, "x")?;
    if z.len() != x.len() {
        return Err(RotationError::DimensionMismatch {
            what: "z",
            expected: x.len(),
            got: z.len(),
        });
    }
    if n == 0 {
        return Err(RotationError::Empty { what: "x" });
    }
    if let Some(index) = first_non_finite(x) {
        return Err(RotationError::NonFinite { what: "x", index });
    }
    if let Some(index) = first_non_finite(z) {
        return Err(RotationError::NonFinite { what: "z", index });
    }
    Ok(n)
}

/// Returns the index of the first non-finite value, if any.
pub(crate) fn first_non_finite(data: &[f32]) -> Option<usize> {
    data.iter().position(|v| !v.is_finite())
}
