use faer::{Accum, Mat, MatRef, Par};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{
    PairSelection, PlaneRotation, Rotation, RotationError, check_batch_pair, first_non_finite,
    matching_weight, row_count, select_pairs,
};

/// Settings of [`GivensOptimizer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GivensConfig {
    /// Step size η: a pair's angle is `θ_ij = −η S_ij` before clipping.
    pub learning_rate: f32,
    /// Largest |θ| in radians a single step may turn a plane by.
    pub max_angle: f32,
    /// How the disjoint pairs of each step are chosen.
    pub selection: PairSelection,
    /// Re-orthonormalise by QR every this many steps (0 = never) to remove float drift.
    pub reorthonormalize_every: u64,
    /// Seed of the random pair selection; the stream of step `t` depends only on `(seed, t)`, so
    /// a resumed optimizer repeats the same choices.
    pub seed: u64,
}

impl Default for GivensConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            max_angle: 0.1,
            selection: PairSelection::Greedy,
            reorthonormalize_every: 1000,
            seed: 0,
        }
    }
}

/// What one Givens step did.
#[derive(Debug, Clone, PartialEq)]
pub struct GivensStep {
    /// Number of planes turned (⌊d/2⌋).
    pub n_pairs: usize,
    /// `Σ S_ij²` over the chosen pairs: the first-order decrease per unit learning rate.
    pub matching_weight: f64,
    /// Largest |θ| applied, after clipping.
    pub largest_angle: f32,
    /// Whether the step ended with a re-orthonormalisation.
    pub reorthonormalized: bool,
}

/// Block Givens coordinate descent on the rotation group (Jiang et al., ICLR 2022).
///
/// For a loss `f(R)` with Euclidean gradient `G`, the Riemannian gradient at `R` is the
/// skew-symmetric `S = Rᵀ G − Gᵀ R`. Each step picks ⌊d/2⌋ disjoint coordinate pairs and turns
/// each plane by `θ_ij = clip(−η S_ij)`, which changes `f` by `−η Σ S_ij² + O(η²)` and keeps `R`
/// exactly orthonormal. A step costs O(d²) given `S` (O(d³) with [`PairSelection::Steepest`]).
#[derive(Debug, Clone)]
pub struct GivensOptimizer {
    config: GivensConfig,
    steps: u64,
}

impl GivensOptimizer {
    /// A new optimizer that has taken no step.
    pub fn new(config: GivensConfig) -> Self {
        Self { config, steps: 0 }
    }

    /// Resumes an optimizer that has taken `steps` steps (its pair choices continue the stream).
    pub fn resume(config: GivensConfig, steps: u64) -> Self {
        Self { config, steps }
    }

    /// The settings.
    pub fn config(&self) -> &GivensConfig {
        &self.config
    }

    /// Changes the step size, e.g. to follow a learning-rate schedule.
    pub fn set_learning_rate(&mut self, learning_rate: f32) {
        self.config.learning_rate = learning_rate;
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One step from the Euclidean gradient `G = ∂f/∂R` (row-major d×d). Forming `S` costs
    /// O(d³); prefer [`GivensOptimizer::step_with_batch_gradient`] when `G = Xᵀ ∂f/∂Y`.
    ///
    /// # Errors
    /// On a gradient of the wrong size or with non-finite values.
    pub fn step_with_gradient(
        &mut self,
        rotation: &mut Rotation,
        gradient: &[f32],
        par: Par,
    ) -> Result<GivensStep, RotationError> {
        let skew = skew_gradient(rotation, gradient, par)?;
        self.step_with_skew(rotation, &skew, par)
    }

    /// One step for a loss of `Y = X R` given the batch `y` and `dy = ∂f/∂Y` (row-major
    /// `n × d`): `S = Yᵀ dY − dYᵀ Y`, O(n d²).
    ///
    /// # Errors
    /// On mismatched or non-finite inputs.
    pub fn step_with_batch_gradient(
        &mut self,
        rotation: &mut Rotation,
        y: &[f32],
        dy: &[f32],
        par: Par,
    ) -> Result<GivensStep, RotationError> {
        let skew = skew_gradient_from_batch(y, dy, rotation.dim(), par)?;
        self.step_with_skew(rotation, &skew, par)
    }

    /// One step on the distortion `f(R) = Σ_b ‖x_b R − z_b‖²` with the reconstructions `z` held
    /// fixed: `S = 2 (Zᵀ Y − Yᵀ Z)`, `Y = X R`.
    ///
    /// # Errors
    /// On mismatched or non-finite inputs, or an empty batch.
    pub fn step_distortion(
        &mut self,
        rotation: &mut Rotation,
        x: &[f32],
        z: &[f32],
        par: Par,
    ) -> Result<GivensStep, RotationError> {
        let d = rotation.dim();
        check_batch_pair(x, z, d)?;
        let mut y = vec![0.0f32; x.len()];
        rotation.apply(x, &mut y, par);
        let dy: Vec<f32> = y.iter().zip(z).map(|(a, b)| 2.0 * (a - b)).collect();
        self.step_with_batch_gradient(rotation, &y, &dy, par)
    }

    /// One step from a precomputed row-major skew-symmetric `S` (d×d, f64).
    ///
    /// # Errors
    /// When `skew` is not d×d or holds a non-finite value; the rotation is then unchanged.
    pub fn step_with_skew(
        &mut self,
        rotation: &mut Rotation,
        skew: &[f64],
        par: Par,
    ) -> Result<GivensStep, RotationError> {
        let d = rotation.dim();
        if skew.len() != d * d {
            return Err(RotationError::DimensionMismatch {
                what: "skew matrix",
                expected: d * d,
                got: skew.len(),
            });
        }
        if let Some(index) = skew.iter().position(|v| !v.is_finite()) {
            return Err(RotationError::NonFinite {
                what: "skew matrix",
                index,
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.config.seed ^ self.steps.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let pairs = select_pairs(skew, d, self.config.selection, &mut rng);
        let max_angle = self.config.max_angle.abs();
        let planes: Vec<PlaneRotation> = pairs
            .iter()
            .map(|&(i, j)| {
                let angle = (-f64::from(self.config.learning_rate) * skew[i * d + j]) as f32;
                PlaneRotation {
                    i,
                    j,
                    angle: angle.clamp(-max_angle, max_angle),
                }
            })
            .collect();
        rotation.rotate_planes(&planes, par);
        self.steps += 1;
        let every = self.config.reorthonormalize_every;
        let reorthonormalized = every > 0 && self.steps.is_multiple_of(every);
        if reorthonormalized {
            rotation.reorthonormalize();
        }
        Ok(GivensStep {
            n_pairs: planes.len(),
            matching_weight: matching_weight(skew, d, &pairs),
            largest_angle: planes.iter().map(|p| p.angle.abs()).fold(0.0, f32::max),
            reorthonormalized,
        })
    }
}

/// The Riemannian gradient `S = Rᵀ G − Gᵀ R` (row-major d×d, f64) of a Euclidean gradient `G`.
///
/// # Errors
/// On a gradient of the wrong size or with non-finite values.
pub fn skew_gradient(
    rotation: &Rotation,
    gradient: &[f32],
    par: Par,
) -> Result<Vec<f64>, RotationError> {
    let d = rotation.dim();
    if gradient.len() != d * d {
        return Err(RotationError::DimensionMismatch {
            what: "gradient",
            expected: d * d,
            got: gradient.len(),
        });
    }
    if let Some(index) = first_non_finite(gradient) {
        return Err(RotationError::NonFinite {
            what: "gradient",
            index,
        });
    }
    let g = MatRef::from_row_major_slice(gradient, d, d);
    let mut rtg = Mat::<f32>::zeros(d, d);
    faer::linalg::matmul::matmul(
        rtg.as_mut(),
        Accum::Replace,
        rotation.as_mat().transpose(),
        g,
        1.0f32,
        par,
    );
    Ok(antisymmetrize(rtg.as_ref()))
}

/// `S = Yᵀ dY − dYᵀ Y` (row-major d×d, f64) for row-major `n × dim` batches: the Riemannian
/// gradient of a loss of `Y = X R` whose gradient with respect to `Y` is `dY`.
///
/// # Errors
/// On ragged, unequal or non-finite inputs.
pub fn skew_gradient_from_batch(
    y: &[f32],
    dy: &[f32],
    dim: usize,
    par: Par,
) -> Result<Vec<f64>, RotationError> {
    let n = row_count(y, dim, "y")?;
    if dy.len() != y.len() {
        return Err(RotationError::DimensionMismatch {
            what: "dy",
            expected: y.len(),
            got: dy.len(),
        });
    }
    if let Some(index) = first_non_finite(y) {
        return Err(RotationError::NonFinite { what: "y", index });
    }
    if let Some(index) = first_non_finite(dy) {
        return Err(RotationError::NonFinite { what: "dy", index });
    }
    let mut ytdy = Mat::<f32>::zeros(dim, dim);
    if n > 0 {
        let ym = MatRef::from_row_major_slice(y, n, dim);
        let dym = MatRef::from_row_major_slice(dy, n, dim);
        faer::linalg::matmul::matmul(
            ytdy.as_mut(),
            Accum::Replace,
            ym.transpose(),
            dym,
            1.0f32,
            par,
        );
    }
    Ok(antisymmetrize(ytdy.as_ref()))
}

/// `A − Aᵀ`, row-major, in f64.
fn antisymmetrize(a: MatRef<'_, f32>) -> Vec<f64> {
    let d = a.nrows();
    let mut s = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            s[i * d + j] = f64::from(a[(i, j)]) - f64::from(a[(j, i)]);
        }
    }
    s
}
