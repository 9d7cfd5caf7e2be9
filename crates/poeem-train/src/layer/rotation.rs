//! The layer's rotation, saved and restored bit for bit.
//!
//! The rotation is only ever turned by Givens steps, with the optimiser's periodic QR
//! re-orthonormalisation at fixed step counts; a checkpoint stores its values and
//! [`Rotation::from_row_major_exact`] restores the very same matrix, so a resumed layer continues
//! exactly as an uninterrupted one.

use faer::Par;
use poeem_rotation::{GivensConfig, GivensOptimizer, PairSelection, Rotation};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::TrainError;

/// Mixed into the Givens seed so that its stream differs from the k-means streams.
const GIVENS_SALT: u64 = 0x6917_E45D_3A0C_B5F1;

/// The learned rotation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LearnedRotation {
    live: Rotation,
}

impl LearnedRotation {
    /// The rotation with row-major `dim × dim` values, kept bit for bit.
    ///
    /// # Errors
    /// When the values are not a finite orthonormal matrix of that size.
    pub(crate) fn from_values(dim: usize, values: Vec<f32>) -> Result<Self, TrainError> {
        Ok(Self {
            live: Rotation::from_row_major_exact(dim, values)?,
        })
    }

    /// The identity.
    pub(crate) fn identity(dim: usize) -> Result<Self, TrainError> {
        Ok(Self {
            live: Rotation::identity(dim),
        })
    }

    /// The rotation in use.
    pub(crate) fn rotation(&self) -> &Rotation {
        &self.live
    }

    /// One Givens step on a loss of `Y = X R` with batch `y` and gradient `dy = ∂f/∂Y`
    /// (row-major `n × d`); `steps` counts the steps taken, which fixes the random pair stream
    /// and the steps that re-orthonormalise.
    ///
    /// # Errors
    /// On non-finite inputs (the rotation is then unchanged).
    pub(crate) fn givens_step(
        &mut self,
        config: GivensConfig,
        steps: &mut u64,
        y: &[f32],
        dy: &[f32],
        par: Par,
    ) -> Result<(), TrainError> {
        let mut turned = self.live.clone();
        let mut optimizer = GivensOptimizer::resume(config, *steps);
        optimizer.step_with_batch_gradient(&mut turned, y, dy, par)?;
        self.live = turned;
        *steps = optimizer.steps();
        Ok(())
    }
}

/// The settings of the layer's Givens steps: `givens`'s step size times `lr_scale` and its
/// angle clip and re-orthonormalisation period, the rotation mode's pair `selection`, and a seed
/// mixing the layer's `seed` with `givens.seed`.
pub(crate) fn givens_settings(
    givens: &GivensConfig,
    selection: PairSelection,
    seed: u64,
    lr_scale: f32,
) -> GivensConfig {
    GivensConfig {
        learning_rate: givens.learning_rate * lr_scale,
        max_angle: givens.max_angle,
        selection,
        reorthonormalize_every: givens.reorthonormalize_every,
        seed: seed ^ givens.seed.rotate_left(29) ^ GIVENS_SALT,
    }
}

impl Serialize for LearnedRotation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.live.as_slice().serialize(s)
    }
}

impl<'de> Deserialize<'de> for LearnedRotation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let values = Vec::<f32>::deserialize(d)?;
        let dim = values.len().isqrt();
        Self::from_values(dim, values).map_err(serde::de::Error::custom)
    }
}
