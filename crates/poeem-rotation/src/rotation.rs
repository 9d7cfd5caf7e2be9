use faer::{Accum, Mat, MatMut, MatRef, Par};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::{RotationError, first_non_finite};

/// Largest `max |RᵀR − I|` accepted by [`Rotation::from_row_major`].
const ORTHONORMAL_TOLERANCE: f64 = 1e-3;

/// A d×d orthonormal matrix `R` acting on row vectors: `x ↦ x R`, and back with `y ↦ y Rᵀ`.
///
/// Stored row-major in `f32`. Every constructor checks or guarantees orthonormality, and the only
/// in-place update, [`Rotation::rotate_planes`], is itself a rotation, so the matrix stays
/// orthonormal up to float rounding; [`Rotation::reorthonormalize`] removes the accumulated drift.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    dim: usize,
    matrix: Vec<f32>,
}

/// A rotation by `angle` radians in the plane of coordinates `i` and `j`, acting on the columns of
/// a rotation matrix: `col_i ← cos θ·col_i − sin θ·col_j`, `col_j ← sin θ·col_i + cos θ·col_j`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaneRotation {
    /// First coordinate.
    pub i: usize,
    /// Second coordinate.
    pub j: usize,
    /// Angle in radians.
    pub angle: f32,
}

impl Rotation {
    /// The identity rotation.
    ///
    /// # Panics
    /// When `dim` is 0.
    #[track_caller]
    pub fn identity(dim: usize) -> Self {
        assert!(dim > 0, "a rotation needs a dimension of at least 1");
        let mut matrix = vec![0.0; dim * dim];
        for i in 0..dim {
            matrix[i * dim + i] = 1.0;
        }
        Self { dim, matrix }
    }

    /// A random rotation drawn from the Haar measure (QR of a Gaussian matrix, signs fixed),
    /// determined by `seed`.
    ///
    /// # Panics
    /// When `dim` is 0.
    #[track_caller]
    pub fn random(dim: usize, seed: u64) -> Self {
        assert!(dim > 0, "a rotation needs a dimension of at least 1");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let gaussian = Mat::<f64>::from_fn(dim, dim, |_, _| standard_normal(&mut rng));
        Self::from_f64(orthonormal_factor(gaussian.as_ref()).as_ref())
    }

    /// Wraps a row-major d×d matrix after checking that it is finite and orthonormal
    /// (`max |RᵀR − I| ≤ 1e-3`); the matrix is then re-orthonormalised to full precision.
    ///
    /// # Errors
    /// On a zero dimension, a length other than `dim²`, a non-finite entry, or a matrix that is
    /// not orthonormal.
    pub fn from_row_major(dim: usize, matrix: Vec<f32>) -> Result<Self, RotationError> {
        let mut rotation = Self::from_row_major_exact(dim, matrix)?;
        rotation.reorthonormalize();
        Ok(rotation)
    }

    /// Builds from row-major `dim × dim` values kept bit for bit, after the same checks as
    /// [`Rotation::from_row_major`] but without re-orthonormalising: the way to restore a saved
    /// rotation exactly (a resumed optimiser must continue from the very same matrix).
    ///
    /// # Errors
    /// As [`Rotation::from_row_major`].
    pub fn from_row_major_exact(dim: usize, matrix: Vec<f32>) -> Result<Self, RotationError> {
        if dim == 0 {
            return Err(RotationError::ZeroDimension);
        }
        if matrix.len() != dim * dim {
            return Err(RotationError::DimensionMismatch {
                what: "rotation matrix",
                expected: dim * dim,
                got: matrix.len(),
            });
        }
        if let Some(index) = first_non_finite(&matrix) {
            return Err(RotationError::NonFinite {
                what: "rotation matrix",
                index,
            });
        }
        let rotation = Self { dim, matrix };
        let error = rotation.orthogonality_error();
        if error > ORTHONORMAL_TOLERANCE {
            return Err(RotationError::NotOrthonormal {
                error,
                tolerance: ORTHONORMAL_TOLERANCE,
            });
        }
        Ok(rotation)
    }

    /// Builds from an f64 matrix known to be orthonormal (rounded to f32).
    pub(crate) fn from_f64(m: MatRef<'_, f64>) -> Self {
        let dim = m.nrows();
        debug_assert_eq!(dim, m.ncols());
        let mut matrix = vec![0.0f32; dim * dim];
        for r in 0..dim {
            for c in 0..dim {
                matrix[r * dim + c] = m[(r, c)] as f32;
            }
        }
        Self { dim, matrix }
    }

    /// The dimension d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The matrix, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.matrix
    }

    /// Consumes the rotation and returns its row-major matrix.
    pub fn into_vec(self) -> Vec<f32> {
        self.matrix
    }

    /// The matrix as a faer view.
    pub fn as_mat(&self) -> MatRef<'_, f32> {
        MatRef::from_row_major_slice(&self.matrix, self.dim, self.dim)
    }

    /// The matrix in f64 (for factorizations).
    pub(crate) fn to_f64(&self) -> Mat<f64> {
        Mat::from_fn(self.dim, self.dim, |r, c| {
            f64::from(self.matrix[r * self.dim + c])
        })
    }

    /// Whether this is exactly the identity.
    pub fn is_identity(&self) -> bool {
        let d = self.dim;
        self.matrix
            .iter()
            .enumerate()
            .all(|(k, &v)| v == if k / d == k % d { 1.0 } else { 0.0 })
    }

    /// `out = x R` for one vector.
    ///
    /// # Panics
    /// When `x` or `out` is not `dim` long.
    #[track_caller]
    pub fn apply_one(&self, x: &[f32], out: &mut [f32]) {
        let d = self.dim;
        assert_eq!(
            x.len(),
            d,
            "input length must equal the rotation's dimension"
        );
        assert_eq!(
            out.len(),
            d,
            "output length must equal the rotation's dimension"
        );
        out.fill(0.0);
        for (&xr, row) in x.iter().zip(self.matrix.chunks_exact(d)) {
            for (o, &r) in out.iter_mut().zip(row) {
                *o += xr * r;
            }
        }
    }

    /// `out = y Rᵀ` for one vector (the inverse of [`Rotation::apply_one`]).
    ///
    /// # Panics
    /// When `y` or `out` is not `dim` long.
    #[track_caller]
    pub fn apply_transpose_one(&self, y: &[f32], out: &mut [f32]) {
        let d = self.dim;
        assert_eq!(
            y.len(),
            d,
            "input length must equal the rotation's dimension"
        );
        assert_eq!(
            out.len(),
            d,
            "output length must equal the rotation's dimension"
        );
        for (o, row) in out.iter_mut().zip(self.matrix.chunks_exact(d)) {
            *o = row.iter().zip(y).map(|(&r, &v)| r * v).sum();
        }
    }

    /// `out = X R` for a row-major batch of `n × dim` values.
    ///
    /// # Panics
    /// When `xs` is not a whole number of rows or `out` differs in length.
    #[track_caller]
    pub fn apply(&self, xs: &[f32], out: &mut [f32], par: Par) {
        self.batch_product(xs, out, self.as_mat(), par);
    }

    /// `out = Y Rᵀ` for a row-major batch of `n × dim` values.
    ///
    /// # Panics
    /// When `ys` is not a whole number of rows or `out` differs in length.
    #[track_caller]
    pub fn apply_transpose(&self, ys: &[f32], out: &mut [f32], par: Par) {
        self.batch_product(ys, out, self.as_mat().transpose(), par);
    }

    #[track_caller]
    fn batch_product(&self, xs: &[f32], out: &mut [f32], rhs: MatRef<'_, f32>, par: Par) {
        let d = self.dim;
        assert_eq!(
            xs.len() % d,
            0,
            "batch length must be a multiple of the dimension"
        );
        assert_eq!(xs.len(), out.len(), "output length must equal input length");
        let n = xs.len() / d;
        if n == 0 {
            return;
        }
        let lhs = MatRef::from_row_major_slice(xs, n, d);
        let dst = MatMut::from_row_major_slice_mut(out, n, d);
        faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, par);
    }

    /// `max |RᵀR − I|` over all entries, computed in f64.
    pub fn orthogonality_error(&self) -> f64 {
        let r = self.to_f64();
        let gram = r.transpose() * &r;
        let mut worst = 0.0f64;
        for i in 0..self.dim {
            for j in 0..self.dim {
                let target = if i == j { 1.0 } else { 0.0 };
                worst = worst.max((gram[(i, j)] - target).abs());
            }
        }
        worst
    }

    /// Replaces `R` by the orthonormal factor of its QR decomposition (computed in f64, column
    /// signs chosen so that diag of the triangular factor is positive), removing float drift.
    /// For an `R` that is already orthonormal up to rounding, the result differs from it by
    /// about that rounding.
    pub fn reorthonormalize(&mut self) {
        let q = orthonormal_factor(self.to_f64().as_ref());
        *self = Self::from_f64(q.as_ref());
    }

    /// Applies plane rotations to the columns of `R` (`R ← R G₁ G₂ …`). Planes must be disjoint
    /// for the result not to depend on their order; each is exactly orthonormal, so `R` stays a
    /// rotation.
    ///
    /// # Panics
    /// When a plane names a coordinate out of range or the same coordinate twice.
    #[track_caller]
    pub fn rotate_planes(&mut self, planes: &[PlaneRotation], par: Par) {
        let d = self.dim;
        let trig: Vec<(usize, usize, f32, f32)> = planes
            .iter()
            .map(|p| {
                assert!(
                    p.i < d && p.j < d && p.i != p.j,
                    "plane ({}, {}) is invalid for dimension {d}",
                    p.i,
                    p.j
                );
                let (sin, cos) = p.angle.sin_cos();
                (p.i, p.j, cos, sin)
            })
            .collect();
        let rotate_row = |row: &mut [f32]| {
            for &(i, j, cos, sin) in &trig {
                let (a, b) = (row[i], row[j]);
                row[i] = cos * a - sin * b;
                row[j] = sin * a + cos * b;
            }
        };
        match par {
            Par::Seq => self.matrix.chunks_exact_mut(d).for_each(rotate_row),
            Par::Rayon(_) => self
                .matrix
                .par_chunks_exact_mut(d)
                .with_min_len(16)
                .for_each(rotate_row),
        }
    }
}

/// The Q factor of `m = Q R` with the signs of Q's columns flipped so that diag(R) ≥ 0.
fn orthonormal_factor(m: MatRef<'_, f64>) -> Mat<f64> {
    let qr = m.qr();
    let mut q = qr.compute_Q();
    let r = qr.R();
    for c in 0..q.ncols() {
        if r[(c, c)] < 0.0 {
            for row in 0..q.nrows() {
                q[(row, c)] = -q[(row, c)];
            }
        }
    }
    q
}

/// A standard normal draw (Box–Muller), so that seeded streams do not depend on a distribution
/// crate's sampling algorithm.
pub(crate) fn standard_normal(rng: &mut impl rand::Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_rotation_is_orthonormal_and_seeded() {
        let a = Rotation::random(33, 7);
        assert!(a.orthogonality_error() < 1e-6);
        assert_eq!(a, Rotation::random(33, 7));
        assert_ne!(a, Rotation::random(33, 8));
    }

    #[test]
    fn apply_and_transpose_are_inverse() {
        let r = Rotation::random(17, 1);
        let x: Vec<f32> = (0..17).map(|i| (i as f32 * 0.37).sin()).collect();
        let (mut y, mut back) = (vec![0.0; 17], vec![0.0; 17]);
        r.apply_one(&x, &mut y);
        r.apply_transpose_one(&y, &mut back);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() < 1e-5);
        }
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((norm(&x) - norm(&y)).abs() < 1e-4);
    }

    #[test]
    fn batch_matches_single() {
        let r = Rotation::random(9, 3);
        let xs: Vec<f32> = (0..9 * 5).map(|i| (i as f32).cos()).collect();
        let mut batch = vec![0.0; xs.len()];
        r.apply(&xs, &mut batch, Par::rayon(2));
        let mut batch_t = vec![0.0; xs.len()];
        r.apply_transpose(&xs, &mut batch_t, Par::Seq);
        for (k, x) in xs.chunks_exact(9).enumerate() {
            let (mut one, mut one_t) = (vec![0.0; 9], vec![0.0; 9]);
            r.apply_one(x, &mut one);
            r.apply_transpose_one(x, &mut one_t);
            for c in 0..9 {
                assert!((one[c] - batch[k * 9 + c]).abs() < 1e-5);
                assert!((one_t[c] - batch_t[k * 9 + c]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn from_row_major_rejects_bad_matrices() {
        assert_eq!(
            Rotation::from_row_major(0, vec![]),
            Err(RotationError::ZeroDimension)
        );
        assert!(matches!(
            Rotation::from_row_major(2, vec![1.0; 3]),
            Err(RotationError::DimensionMismatch {
                expected: 4,
                got: 3,
                ..
            })
        ));
        assert!(matches!(
            Rotation::from_row_major(2, vec![1.0, 0.0, f32::NAN, 1.0]),
            Err(RotationError::NonFinite { index: 2, .. })
        ));
        assert!(matches!(
            Rotation::from_row_major(2, vec![1.0, 1.0, 0.0, 1.0]),
            Err(RotationError::NotOrthonormal { .. })
        ));
        let ok = Rotation::from_row_major(2, vec![0.0, 1.0, -1.0, 0.0]).unwrap();
        assert!(ok.orthogonality_error() < 1e-7);
    }

    #[test]
    fn reorthonormalize_removes_drift_and_keeps_the_rotation() {
        let mut r = Rotation::random(20, 5);
        let original = r.clone();
        for v in r.matrix.iter_mut() {
            *v *= 1.0 + 1e-4;
        }
        assert!(r.orthogonality_error() > 1e-4);
        r.reorthonormalize();
        assert!(r.orthogonality_error() < 1e-6);
        let diff = r
            .matrix
            .iter()
            .zip(&original.matrix)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            diff < 1e-4,
            "re-orthonormalisation moved the matrix by {diff}"
        );
    }

    #[test]
    fn plane_rotation_turns_columns() {
        let mut r = Rotation::identity(3);
        r.rotate_planes(
            &[PlaneRotation {
                i: 0,
                j: 2,
                angle: std::f32::consts::FRAC_PI_2,
            }],
            Par::Seq,
        );
        // col_0 ← −col_2 = (0,0,−1); col_2 ← col_0 = (1,0,0).
        let expected = [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0];
        for (a, b) in r.as_slice().iter().zip(expected) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
