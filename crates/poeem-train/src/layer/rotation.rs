//! The layer's rotation, kept reproducible from its serialised values.
//!
//! [`Rotation::from_row_major`] re-orthonormalises what it is given, so a rotation rebuilt from
//! saved values differs from the one that was saved in the last bits. To make a resumed layer
//! bit-identical, the layer keeps its rotation as `from_row_major(source)` at all times, with
//! `source` (the values it was built from) being what is saved: after every Givens step the
//! turned matrix becomes the new `source` and is rebuilt through `from_row_major`. That
//! re-orthonormalisation (a QR in f64, O(d³)) replaces the optimiser's periodic one, costs about
//! as much as a steepest pair selection, and keeps `max |RᵀR − I|` at float rounding.

use faer::Par;
use poeem_rotation::{GivensConfig, GivensOptimizer, PairSelection, Rotation};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::TrainError;

/// Mixed into the Givens seed so that its stream differs from the k-means streams.
const GIVENS_SALT: u64 = 0x6917_E45D_3A0C_B5F1;

/// A rotation rebuilt from `source` by [`Rotation::from_row_major`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LearnedRotation {
    source: Vec<f32>,
    live: Rotation,
}

impl LearnedRotation {
    /// The rotation built from row-major `dim × dim` values.
    ///
    /// # Errors
    /// When the values are not a finite orthonormal matrix of that size.
    pub(crate) fn from_values(dim: usize, values: Vec<f32>) -> Result<Self, TrainError> {
        let live = Rotation::from_row_major(dim, values.clone())?;
        Ok(Self {
            source: values,
            live,
        })
    }

    /// The identity (rebuilt like any other rotation).
    pub(crate) fn identity(dim: usize) -> Result<Self, TrainError> {
        Self::from_values(dim, Rotation::identity(dim).into_vec())
    }

    /// The rotation in use.
    pub(crate) fn rotation(&self) -> &Rotation {
        &self.live
    }

    /// One Givens step on a loss of `Y = X R` with batch `y` and gradient `dy = ∂f/∂Y`
    /// (row-major `n × d`), with step size `learning_rate`; `steps` counts the steps taken, which
    /// fixes the random pair stream. The rotation is then rebuilt from the turned matrix.
    ///
    /// # Errors
    /// On non-finite inputs (the rotation is then unchanged).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn givens_step(
        &mut self,
        givens: &GivensConfig,
        selection: PairSelection,
        seed: u64,
        learning_rate: f32,
        steps: &mut u64,
        y: &[f32],
        dy: &[f32],
        par: Par,
    ) -> Result<(), TrainError> {
        let config = GivensConfig {
            learning_rate,
            max_angle: givens.max_angle,
            selection,
            reorthonormalize_every: 0,
            seed: seed ^ givens.seed.rotate_left(29) ^ GIVENS_SALT,
        };
        let mut turned = self.live.clone();
        let mut optimizer = GivensOptimizer::resume(config, *steps);
        optimizer.step_with_batch_gradient(&mut turned, y, dy, par)?;
        *self = Self::from_values(turned.dim(), turned.into_vec())?;
        *steps = optimizer.steps();
        Ok(())
    }
}

impl Serialize for LearnedRotation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(s)
    }
}

impl<'de> Deserialize<'de> for LearnedRotation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = Vec::<f32>::deserialize(d)?;
        let dim = source.len().isqrt();
        Self::from_values(dim, source).map_err(serde::de::Error::custom)
    }
}
