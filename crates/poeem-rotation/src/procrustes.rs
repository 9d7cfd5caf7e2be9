use faer::{Accum, Mat, MatRef, Par};

use crate::{Rotation, RotationError, check_batch_pair};

/// Orthogonal Procrustes: the rotation `R` minimising `‖X R − Z‖_F` for row-major `n × dim`
/// batches `x` and `z`.
///
/// With `M = Xᵀ Z = U S Vᵀ`, the minimiser over orthonormal matrices is `R = U Vᵀ`. It may be a
/// reflection (det −1): PQ distortion does not care, and Givens steps, which preserve the
/// determinant, then continue in that component. The cross-covariance is accumulated in f32 by a
/// GEMM and factorised in f64.
///
/// # Errors
/// On a zero dimension, ragged or unequal inputs, no rows, non-finite values, or an SVD failure.
pub fn procrustes(x: &[f32], z: &[f32], dim: usize, par: Par) -> Result<Rotation, RotationError> {
    let n = check_batch_pair(x, z, dim)?;
    let xm = MatRef::from_row_major_slice(x, n, dim);
    let zm = MatRef::from_row_major_slice(z, n, dim);
    let mut cross = Mat::<f32>::zeros(dim, dim);
    faer::linalg::matmul::matmul(
        cross.as_mut(),
        Accum::Replace,
        xm.transpose(),
        zm,
        1.0f32,
        par,
    );
    let cross = Mat::<f64>::from_fn(dim, dim, |r, c| f64::from(cross[(r, c)]));
    procrustes_from_cross(cross.as_ref())
}

/// The rotation `U Vᵀ` from the SVD `M = U S Vᵀ` of a d×d cross-covariance `M = Xᵀ Z`.
///
/// # Errors
/// On a non-square, empty or non-finite `M`, or an SVD failure.
pub fn procrustes_from_cross(cross: MatRef<'_, f64>) -> Result<Rotation, RotationError> {
    let dim = cross.nrows();
    if dim == 0 {
        return Err(RotationError::ZeroDimension);
    }
    if cross.ncols() != dim {
        return Err(RotationError::DimensionMismatch {
            what: "cross-covariance columns",
            expected: dim,
            got: cross.ncols(),
        });
    }
    for c in 0..dim {
        for r in 0..dim {
            if !cross[(r, c)].is_finite() {
                return Err(RotationError::NonFinite {
                    what: "cross-covariance",
                    index: r * dim + c,
                });
            }
        }
    }
    let svd = cross.svd().map_err(|_| RotationError::SvdFailed { dim })?;
    let r = svd.U() * svd.V().transpose();
    Ok(Rotation::from_f64(r.as_ref()))
}
