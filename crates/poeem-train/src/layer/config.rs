//! Settings of the indexing layer, with the tutorial and reference presets.

use poeem_pq::{KMeansInit, KMeansSettings, MAX_BITS, OpqConfig, PqTraining};
use poeem_rotation::{GivensConfig, PairSelection};
use serde::{Deserialize, Serialize};

use super::serde_foreign;
use crate::{OptimizerConfig, TrainError};

/// How the layer's rotation `R` is chosen and learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationMode {
    /// No rotation (`R = I`); the reference's default.
    None,
    /// Non-parametric OPQ on the warm-start buffer at init (method §3), then `R` stays fixed.
    Opq,
    /// `R` starts at the identity and takes one Givens coordinate-descent step on the batch's
    /// distortion after every joint step (method §4).
    Givens(#[serde(with = "serde_foreign::pair_selection")] PairSelection),
    /// OPQ at init, then Givens steps during training.
    OpqThenGivens(#[serde(with = "serde_foreign::pair_selection")] PairSelection),
}

impl RotationMode {
    /// Whether the warm-start init runs OPQ.
    pub fn uses_opq(self) -> bool {
        matches!(self, Self::Opq | Self::OpqThenGivens(_))
    }

    /// The pair selection of the Givens steps taken during training, if any.
    pub fn givens_selection(self) -> Option<PairSelection> {
        match self {
            Self::Givens(s) | Self::OpqThenGivens(s) => Some(s),
            Self::None | Self::Opq => None,
        }
    }

    /// Whether the layer holds a rotation at all.
    pub fn has_rotation(self) -> bool {
        self != Self::None
    }
}

/// How the centroids and codebooks get their first values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CentroidInit {
    /// Warm start (method §2): buffer `buffer_size` rows after the warm-up, then fit both levels
    /// by k-means on them.
    KMeans,
    /// Warm start off (the reference's ablation): no buffer; the first call after the warm-up
    /// draws the centroids at random on the scale of its batch and runs as a joint call. With
    /// `μ` and `σ` the batch's per-coordinate mean and standard deviation (zero-padded), each
    /// coarse centroid is `μ + σ ⊙ g` and each codeword `σ ⊙ g` on its subspace's coordinates
    /// (`μ + σ ⊙ g` without a coarse level), `g` standard normal from the layer's seed: random
    /// like an untrained variable, but on the data's scale. A rotation starts at the identity.
    Random,
}

/// What the coarse centroids learn from (the PQ codebooks always learn from the whole
/// reconstruction error `z − x'` of their items' residuals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoarseObjective {
    /// Each centroid descends `w Σ_{b: j_b = j} ‖x'_b − v_j‖²`, with gradient
    /// `2w Σ_{b: j_b = j} (v_j − x'_b)`: online k-means of the coarse level, whose fixed point
    /// is the mean of the list's items, as a post-hoc IVF build places it. A probe ranks lists
    /// by their centroids, so a centroid must stay where its list's items are.
    #[default]
    ListMeans,
    /// The reference's: each centroid descends the whole reconstruction error
    /// `w Σ_{b: j_b = j} ‖z_b − x'_b‖²`, with gradient `2w Σ_{b: j_b = j} (z_b − x'_b)`. That
    /// error is the PQ's error on the residuals, which the shared codebooks absorb whatever
    /// the centroid's offset from its items, so the centroids drift away from their lists as
    /// the item embeddings move (an ablation).
    Reconstruction,
}

impl CoarseObjective {
    /// What a saved layer from before the setting existed did.
    fn legacy() -> Self {
        Self::Reconstruction
    }
}

/// Settings of an [`IndexingLayer`](super::IndexingLayer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexingLayerConfig {
    /// Coarse lists J (0 disables the coarse level).
    pub n_lists: usize,
    /// PQ subspaces D. Need not divide the dimension: vectors are zero-padded to
    /// [`poeem_pq::padded_dim`].
    pub n_subspaces: usize,
    /// Bits per PQ code, 1 to 16 (`K = 2^n_bits` codewords per subspace).
    pub n_bits: u32,
    /// Calls of `forward_train` during which the layer is the identity and learns nothing (the
    /// calls numbered `1..=warmup_steps`).
    pub warmup_steps: u64,
    /// Rows buffered after the warm-up for the k-means init (at least `max(n_lists, 2^n_bits)`
    /// with [`CentroidInit::KMeans`]; unused with [`CentroidInit::Random`]).
    pub buffer_size: usize,
    /// Warm start by k-means, or random centroids (ablation).
    pub centroid_init: CentroidInit,
    /// What the PQ codebooks are fitted on at init: the residuals (default) or the rotated
    /// vectors themselves (the reference's behaviour, an ablation).
    #[serde(with = "serde_foreign::pq_training")]
    pub pq_training: PqTraining,
    /// k-means settings of both levels at init. `KMeansInit::Centroids` is refused.
    #[serde(with = "serde_foreign::kmeans_settings")]
    pub kmeans: KMeansSettings,
    /// Weight w of the regularizer `w Σ_batch ‖τ(x) − stopgrad(x)‖²` (the reference: 1 against
    /// a summed loss). Must be finite and non-negative.
    pub regularizer_weight: f32,
    /// What the coarse centroids learn from: their lists' items, or the whole reconstruction
    /// error (the reference's, and the tutorial's). Settings saved before this existed read as
    /// the reference's.
    #[serde(default = "CoarseObjective::legacy")]
    pub coarse_objective: CoarseObjective,
    /// The optimiser of the centroids and codebooks: the model's own (Adagrad TF1 in the
    /// tutorial).
    pub optimizer: OptimizerConfig,
    /// Rotation: none, OPQ at init, Givens steps during training, or both.
    pub rotation: RotationMode,
    /// OPQ settings (used by [`RotationMode::Opq`] and [`RotationMode::OpqThenGivens`]).
    #[serde(with = "serde_foreign::opq_config")]
    pub opq: OpqConfig,
    /// Givens settings: step size η (multiplied by the learning-rate scale of each update), angle
    /// clip. Its `selection` is ignored (the rotation mode names it), its `seed` is combined
    /// with [`IndexingLayerConfig::seed`]; `reorthonormalize_every` sets how often a QR removes
    /// float drift.
    #[serde(with = "serde_foreign::givens_config")]
    pub givens: GivensConfig,
    /// Seed of every random choice (k-means, OPQ sampling, random init, Givens pairs).
    pub seed: u64,
}

impl IndexingLayerConfig {
    /// The reference's synthetic tutorial (method §6): J = 8, K = 256, D = 8, 16,384 warm-up
    /// steps, a buffer of 8,192 rows, weight 1, Adagrad (TF1) with learning rate 0.1, no
    /// rotation.
    pub fn tutorial() -> Self {
        Self {
            n_lists: 8,
            n_subspaces: 8,
            n_bits: 8,
            warmup_steps: 16_384,
            ..Self::paper()
        }
    }

    /// The reference implementation's defaults: J = 128, K = 16, D = 32, 1,024 warm-up steps, a
    /// buffer of 8,192 rows, weight 1, the coarse centroids stepped on the whole
    /// reconstruction error ([`CoarseObjective::Reconstruction`]), no rotation; Adagrad (TF1)
    /// with learning rate 0.1.
    pub fn paper() -> Self {
        Self {
            n_lists: 128,
            n_subspaces: 32,
            n_bits: 4,
            warmup_steps: 1024,
            buffer_size: 8192,
            centroid_init: CentroidInit::KMeans,
            pq_training: PqTraining::Residuals,
            kmeans: KMeansSettings::default(),
            regularizer_weight: 1.0,
            coarse_objective: CoarseObjective::Reconstruction,
            optimizer: OptimizerConfig::adagrad(0.1),
            rotation: RotationMode::None,
            opq: OpqConfig::default(),
            givens: GivensConfig::default(),
            seed: 0,
        }
    }

    /// Codewords per subspace, `2^n_bits`.
    pub fn n_codewords(&self) -> usize {
        1usize << self.n_bits.min(MAX_BITS)
    }

    /// Checks the settings for vectors of `dim` values.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] naming the first bad setting.
    pub fn validate(&self, dim: usize) -> Result<(), TrainError> {
        let bad = |name: &'static str, value: String, reason: &'static str| {
            Err(TrainError::InvalidConfig {
                name,
                value,
                reason,
            })
        };
        if dim == 0 {
            return bad("dim", "0".into(), "must be at least 1");
        }
        if self.n_subspaces == 0 {
            return bad("n_subspaces", "0".into(), "must be at least 1");
        }
        if !(1..=MAX_BITS).contains(&self.n_bits) {
            return bad("n_bits", self.n_bits.to_string(), "must be 1 to 16");
        }
        let needed = self.n_lists.max(self.n_codewords());
        if self.centroid_init == CentroidInit::KMeans && self.buffer_size < needed {
            return bad(
                "buffer_size",
                self.buffer_size.to_string(),
                "must be at least max(n_lists, 2^n_bits): k-means needs a row per centroid",
            );
        }
        if !(self.regularizer_weight.is_finite() && self.regularizer_weight >= 0.0) {
            return bad(
                "regularizer_weight",
                self.regularizer_weight.to_string(),
                "must be a finite non-negative number",
            );
        }
        if let KMeansInit::Centroids(_) = self.kmeans.init {
            return bad(
                "kmeans.init",
                "centroids".into(),
                "the layer fits two levels; use random_sample or k_means_plus_plus",
            );
        }
        if self.rotation.uses_opq() {
            if self.centroid_init == CentroidInit::Random {
                return bad(
                    "rotation",
                    "opq".into(),
                    "OPQ runs on the warm-start buffer, which random init does not collect",
                );
            }
            if self.opq.max_train_points == Some(0) {
                return bad("opq.max_train_points", "0".into(), "must be at least 1");
            }
        }
        if self.rotation.givens_selection().is_some() {
            let g = &self.givens;
            if !(g.learning_rate.is_finite() && g.learning_rate >= 0.0) {
                return bad(
                    "givens.learning_rate",
                    g.learning_rate.to_string(),
                    "must be a finite non-negative number",
                );
            }
            if !(g.max_angle.is_finite() && g.max_angle > 0.0) {
                return bad(
                    "givens.max_angle",
                    g.max_angle.to_string(),
                    "must be a positive number",
                );
            }
        }
        self.optimizer.validate().map_err(|error| match error {
            TrainError::InvalidConfig {
                name,
                value,
                reason,
            } => TrainError::InvalidConfig {
                name: layer_optimizer_setting(name),
                value,
                reason,
            },
            other => other,
        })
    }
}

/// The name of an optimiser setting of the layer, told apart from the towers' setting.
fn layer_optimizer_setting(name: &'static str) -> &'static str {
    match name {
        "learning_rate" => "layer optimizer learning_rate",
        "initial_accumulator" => "layer optimizer initial_accumulator",
        "beta1" => "layer optimizer beta1",
        "beta2" => "layer optimizer beta2",
        "epsilon" => "layer optimizer epsilon",
        other => other,
    }
}
