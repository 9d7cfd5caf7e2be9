//! The two-tower retrieval model, with the indexing layer on the item tower.
//!
//! Each tower maps an entity's feature fields to a `dim`-wide vector ([`Tower`]: mean-pooled
//! embedding bags, concatenated, then an optional MLP). A training step scores every query of
//! the batch against every candidate item (the batch's positives, then `extra_negatives`
//! uniformly sampled items) by `cos(q, y) / T` and minimises the in-batch softmax
//! cross-entropy ([`SoftmaxLoss`]). On the item side, before the score:
//!
//! ```text
//! v = item_tower(item)                       the tower output
//! x = v / ‖v‖   (normalize_item_before_layer), else x = v
//! y = τ(x)      (IndexingLayer::forward_train; the identity before its warm start ends)
//! ```
//!
//! The layer sees each distinct item of a batch once, and by default its warm-start buffer is
//! a uniform sample of the catalogue ([`WarmStartItems`]), so that it weighs items rather than
//! interactions. The backward pass through the layer is straight-through (`∂L/∂x = ∂L/∂y`);
//! the layer then updates its own centroids from its regularizer ([`IndexingLayer::update`]). Without a layer
//! `y = x` and the model is the plain two-tower baseline; with one tower reading only the id
//! field and no MLP it is exactly the reference tutorial's model.

mod bag;
pub(crate) mod linalg;
mod mlp;
mod tower;

use faer::Par;
use poeem_pq::IvfPqCodec;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use bag::{EmbeddingTable, SparseGrad};
pub use mlp::{Dense, Mlp, MlpCache, MlpGrads};
pub use tower::{
    Fields, Tower, TowerCache, TowerConfig, TowerGrads, TowerOptimizer, validate_features,
};

use crate::data::{Dataset, EntityFeatures, Vocab};
use crate::f32_bytes;
use crate::layer::{IndexingLayer, IndexingLayerConfig, LayerStep, Phase};
use crate::loss::{
    LossReduction, LossScratch, LossValue, SoftmaxLoss, normalize_rows, normalize_rows_backward,
    smooth_norm,
};
use crate::{OptimizerConfig, TrainError};

/// Mixed into the layer's seed for the catalogue sample of the warm start.
const CATALOGUE_SALT: u64 = 0x3C6E_F372_FE94_F82B;

/// Mixed into the layer's seed for the catalogue samples it learns from in the joint phase.
const UPDATE_SALT: u64 = 0xA54F_F53A_5F1D_36F1;

/// Rows per block when embedding many entities for inference.
const EMBED_BLOCK: usize = 4096;

/// Settings of the two-tower model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Output dimension `d` of both towers.
    pub dim: usize,
    /// The query tower.
    pub query: TowerConfig,
    /// The item tower.
    pub item: TowerConfig,
    /// Softmax temperature `T` (positive): the score is `cos(q, y) / T` (the tutorial: 1/30).
    pub temperature: f32,
    /// L2-normalise the item tower's output before the indexing layer (the Poeem variant of
    /// the tutorial does). Has no effect on the scores without a layer.
    pub normalize_item_before_layer: bool,
    /// Uniformly sampled items added to every batch's candidates as negatives (seeded by the
    /// training seed and the step).
    pub extra_negatives: usize,
    /// Subtract `log Q_c` from each candidate's logit, `Q_c = B·p_c + N/n_items` being the
    /// expected number of times item `c` is among a batch's candidates (`p_c`: its share of
    /// the training pairs, `B` in-batch positives, `N` uniform extra negatives): the sampling
    /// bias correction of Yi et al. (RecSys 2019), extended to the uniform negatives.
    pub log_q_correction: bool,
    /// Sum (the reference) or mean of the per-example losses.
    pub reduction: LossReduction,
    /// Drop from a query's candidates the other copies of its positive item (off in the
    /// reference: duplicates then count as negatives).
    pub mask_duplicates: bool,
    /// Which items fill the indexing layer's warm-start buffer.
    #[serde(default)]
    pub warm_start_items: WarmStartItems,
    /// Which items the indexing layer's centroids and codewords learn from after the warm
    /// start. Settings saved before this existed read as [`LayerUpdateItems::Batches`].
    #[serde(default = "LayerUpdateItems::legacy")]
    pub layer_update_items: LayerUpdateItems,
    /// Seed of the parameter initialisation.
    pub seed: u64,
}

/// Which items' embeddings the indexing layer's warm-start k-means runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmStartItems {
    /// The batches' items, as in the reference: each item weighs as much as its share of the
    /// interactions, so on popularity-skewed data the centroids crowd onto popular items.
    Batches,
    /// A uniform sample of the catalogue (every item when it holds fewer than the buffer's
    /// room), embedded by the current item tower at each buffering step: the centroids cover
    /// the items that are searched, as an index built after training does.
    #[default]
    Catalogue,
}

/// Which items' embeddings the indexing layer's centroids and codewords learn from in the
/// joint phase (the batch's own items always go through the layer for the loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerUpdateItems {
    /// Each batch's distinct items, as in the reference: an item weighs as much as its chance
    /// of being in a batch, so on popularity-skewed data the online k-means splits the
    /// popular region into many small lists with long centroids, which an inner-product probe
    /// prefers, while the rest of the catalogue shares a few large lists.
    Batches,
    /// A uniform sample of `rows` catalogue items per step (drawn from the layer's seed and
    /// step), embedded by the current item tower without gradients: the centroids weigh every
    /// item alike, as a post-hoc index built on the catalogue does. Costs one item-tower
    /// forward pass and one encode of `rows` items per step.
    Catalogue {
        /// Items per step.
        rows: usize,
    },
}

impl LayerUpdateItems {
    /// What a model saved before the setting existed did.
    fn legacy() -> Self {
        Self::Batches
    }
}

impl ModelConfig {
    /// The reference tutorial's model: 64-d id embeddings on both sides, no MLP, cosine × 30,
    /// summed in-batch softmax, item embeddings normalised before the layer.
    pub fn tutorial() -> Self {
        Self {
            dim: 64,
            query: TowerConfig::id_only(),
            item: TowerConfig::id_only(),
            temperature: 1.0 / 30.0,
            normalize_item_before_layer: true,
            extra_negatives: 0,
            log_q_correction: false,
            reduction: LossReduction::Sum,
            mask_duplicates: false,
            warm_start_items: WarmStartItems::Catalogue,
            layer_update_items: LayerUpdateItems::Batches,
            seed: 0,
        }
    }

    /// A feature model for MovieLens-like data: every field embedded in 32 dimensions, one
    /// 128-wide hidden layer per tower, 64-d outputs, temperature 0.05, log-Q correction (the
    /// item popularity is skewed) and duplicates masked, mean loss.
    pub fn movielens() -> Self {
        Self {
            dim: 64,
            query: TowerConfig::all_fields(32, vec![128]),
            item: TowerConfig::all_fields(32, vec![128]),
            temperature: 0.05,
            normalize_item_before_layer: true,
            extra_negatives: 0,
            log_q_correction: true,
            reduction: LossReduction::Mean,
            mask_duplicates: true,
            warm_start_items: WarmStartItems::Catalogue,
            layer_update_items: LayerUpdateItems::Catalogue { rows: 1024 },
            seed: 0,
        }
    }

    /// Checks the settings that do not depend on the data.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for a zero `dim`, a temperature that is not a positive
    /// number, or a catalogue sample of 0 items per step.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.dim == 0 {
            return Err(TrainError::InvalidConfig {
                name: "dim",
                value: "0".into(),
                reason: "must be positive",
            });
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(TrainError::InvalidConfig {
                name: "temperature",
                value: self.temperature.to_string(),
                reason: "must be a positive number",
            });
        }
        if self.layer_update_items == (LayerUpdateItems::Catalogue { rows: 0 }) {
            return Err(TrainError::InvalidConfig {
                name: "layer_update_items",
                value: "catalogue, 0 rows".into(),
                reason: "the layer needs at least one catalogue item per step",
            });
        }
        Ok(())
    }

    fn loss(&self) -> SoftmaxLoss {
        SoftmaxLoss {
            temperature: self.temperature,
            reduction: self.reduction,
            mask_duplicates: self.mask_duplicates,
        }
    }
}

/// The two-tower model: its configuration, both sides' vocabularies and feature tables (so it
/// can embed any entity without the data files), both towers and the optional indexing layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    config: ModelConfig,
    queries: Vocab,
    items: Vocab,
    query_features: EntityFeatures,
    item_features: EntityFeatures,
    query_tower: Tower,
    item_tower: Tower,
    layer: Option<IndexingLayer>,
    /// Share of the training pairs of each item (for the log-Q correction; empty when off).
    #[serde(with = "f32_bytes")]
    item_probability: Vec<f32>,
}

/// What one training step's forward pass produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// The batch's loss.
    pub loss: LossValue,
    /// Queries in the batch.
    pub batch_size: usize,
    /// What the indexing layer did, when there is one.
    pub layer: Option<LayerStep>,
}

/// Buffers of a training step (activations, gradients), reused across steps.
#[derive(Debug, Clone)]
pub struct StepScratch {
    query_cache: TowerCache,
    item_cache: TowerCache,
    query_grads: TowerGrads,
    item_grads: TowerGrads,
    loss: LossScratch,
    q_raw: Vec<f32>,
    q_hat: Vec<f32>,
    q_norms: Vec<f32>,
    v_raw: Vec<f32>,
    v_hat: Vec<f32>,
    v_norms: Vec<f32>,
    y: Vec<f32>,
    y_hat: Vec<f32>,
    y_norms: Vec<f32>,
    log_q: Vec<f32>,
    grad_q_hat: Vec<f32>,
    grad_q: Vec<f32>,
    grad_y_hat: Vec<f32>,
    grad_y: Vec<f32>,
    grad_v: Vec<f32>,
    distinct: DistinctRows,
}

/// The distinct items of a batch, so that the indexing layer sees each item once per batch:
/// its regularizer then weighs items, not interactions, and popular items do not crowd the
/// centroids and codewords (nor the warm-start buffer) onto themselves.
#[derive(Debug, Clone, Default)]
struct DistinctRows {
    /// Slot of each item in the current batch (`u32::MAX`: absent); reset after each batch.
    slot_of_item: Vec<u32>,
    /// Slot of each batch row.
    row_slot: Vec<u32>,
    /// Rows of the distinct items, in order of first appearance, and the layer's output.
    x: Vec<f32>,
    y: Vec<f32>,
}

impl DistinctRows {
    /// Gathers the rows of the distinct `items` of `x` (`items.len() × dim`) into `self.x`;
    /// returns false (and gathers nothing) when every item is distinct.
    fn gather(&mut self, items: &[u32], n_items: usize, x: &[f32], dim: usize) -> bool {
        if self.slot_of_item.len() < n_items {
            self.slot_of_item.resize(n_items, u32::MAX);
        }
        self.row_slot.clear();
        self.x.clear();
        let mut n_distinct = 0u32;
        for (&item, row) in items.iter().zip(x.chunks_exact(dim)) {
            let slot = &mut self.slot_of_item[item as usize];
            if *slot == u32::MAX {
                *slot = n_distinct;
                n_distinct += 1;
                self.x.extend_from_slice(row);
            }
            self.row_slot.push(*slot);
        }
        for &item in items {
            self.slot_of_item[item as usize] = u32::MAX;
        }
        n_distinct as usize != items.len()
    }

    /// Copies the layer's output for the distinct rows (`self.y`) back to every batch row.
    fn scatter(&self, dim: usize, out: &mut [f32]) {
        for (&slot, row) in self.row_slot.iter().zip(out.chunks_exact_mut(dim)) {
            let slot = slot as usize;
            row.copy_from_slice(&self.y[slot * dim..(slot + 1) * dim]);
        }
    }
}

impl StepScratch {
    /// The query tower's gradients from the last step.
    pub fn query_grads(&self) -> &TowerGrads {
        &self.query_grads
    }

    /// The item tower's gradients from the last step.
    pub fn item_grads(&self) -> &TowerGrads {
        &self.item_grads
    }
}

/// Optimiser states of every parameter of a [`Model`]'s towers (the layer keeps its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelOptimizer {
    query: TowerOptimizer,
    item: TowerOptimizer,
}

impl ModelOptimizer {
    /// Fresh states for `model`'s towers.
    ///
    /// # Errors
    /// When `config` is invalid.
    pub fn new(model: &Model, config: OptimizerConfig) -> Result<Self, TrainError> {
        Ok(Self {
            query: TowerOptimizer::new(&model.query_tower, config)?,
            item: TowerOptimizer::new(&model.item_tower, config)?,
        })
    }
}

impl Model {
    /// A freshly initialised model for `dataset` (seeded by `config.seed`), with an indexing
    /// layer on the item tower when `index` is given.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for settings that do not fit the data (see
    /// [`ModelConfig::validate`], [`Tower::new`], the layer's own checks), or a malformed
    /// dataset.
    pub fn new(
        config: ModelConfig,
        index: Option<IndexingLayerConfig>,
        dataset: &Dataset,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        check_side("queries", &dataset.queries, &dataset.query_features)?;
        check_side("items", &dataset.items, &dataset.item_features)?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let query_tower = Tower::new(
            &config.query,
            &dataset.query_features,
            config.dim,
            "query tower",
            &mut rng,
        )?;
        let item_tower = Tower::new(
            &config.item,
            &dataset.item_features,
            config.dim,
            "item tower",
            &mut rng,
        )?;
        let layer = index
            .map(|index| IndexingLayer::new(config.dim, index))
            .transpose()?;
        let item_probability = if config.log_q_correction {
            item_probability(&dataset.item_counts, dataset.items.len())?
        } else {
            Vec::new()
        };
        Ok(Self {
            config,
            queries: dataset.queries.clone(),
            items: dataset.items.clone(),
            query_features: dataset.query_features.clone(),
            item_features: dataset.item_features.clone(),
            query_tower,
            item_tower,
            layer,
            item_probability,
        })
    }

    /// Checks the consistency of a deserialised model (its parts come from a file).
    pub(crate) fn validate(&self) -> Result<(), TrainError> {
        self.config.validate()?;
        check_side("queries", &self.queries, &self.query_features)?;
        check_side("items", &self.items, &self.item_features)?;
        validate_features(&self.query_features)?;
        validate_features(&self.item_features)?;
        for (tower, features) in [
            (&self.query_tower, &self.query_features),
            (&self.item_tower, &self.item_features),
        ] {
            if tower.dim() != self.config.dim {
                return Err(TrainError::DimensionMismatch {
                    what: "tower output",
                    expected: self.config.dim,
                    got: tower.dim(),
                });
            }
            tower.check_features(features)?;
        }
        if let Some(layer) = &self.layer
            && layer.dim() != self.config.dim
        {
            return Err(TrainError::DimensionMismatch {
                what: "indexing layer",
                expected: self.config.dim,
                got: layer.dim(),
            });
        }
        let expected = if self.config.log_q_correction {
            self.items.len()
        } else {
            0
        };
        if self.item_probability.len() != expected {
            return Err(TrainError::DimensionMismatch {
                what: "item probabilities",
                expected,
                got: self.item_probability.len(),
            });
        }
        Ok(())
    }

    /// The settings.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Output dimension of both towers.
    pub fn dim(&self) -> usize {
        self.config.dim
    }

    /// Query ids.
    pub fn queries(&self) -> &Vocab {
        &self.queries
    }

    /// Item ids.
    pub fn items(&self) -> &Vocab {
        &self.items
    }

    /// Number of queries.
    pub fn n_queries(&self) -> usize {
        self.queries.len()
    }

    /// Number of items.
    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// The query side's feature table.
    pub fn query_features(&self) -> &EntityFeatures {
        &self.query_features
    }

    /// The item side's feature table.
    pub fn item_features(&self) -> &EntityFeatures {
        &self.item_features
    }

    /// The query tower.
    pub fn query_tower(&self) -> &Tower {
        &self.query_tower
    }

    /// The item tower.
    pub fn item_tower(&self) -> &Tower {
        &self.item_tower
    }

    /// The query tower, for tests and custom updates.
    pub fn query_tower_mut(&mut self) -> &mut Tower {
        &mut self.query_tower
    }

    /// The item tower, for tests and custom updates.
    pub fn item_tower_mut(&mut self) -> &mut Tower {
        &mut self.item_tower
    }

    /// The indexing layer, when the model has one.
    pub fn layer(&self) -> Option<&IndexingLayer> {
        self.layer.as_ref()
    }

    /// Starts a new logging interval of the indexing layer's diagnostics (nothing without a
    /// layer).
    pub fn reset_layer_diagnostics(&mut self) {
        if let Some(layer) = &mut self.layer {
            layer.reset_diagnostics();
        }
    }

    /// The codec the indexing layer has learned (rotation, coarse centroids, PQ codebooks), to
    /// encode [`embed_items`](Self::embed_items) for export; `None` without a layer or before
    /// its warm start has initialised it.
    pub fn item_codec(&self) -> Option<IvfPqCodec> {
        self.layer.as_ref().and_then(IndexingLayer::codec)
    }

    /// Query embeddings of `indices`, row-major `indices.len() × dim`, L2-normalised (so that
    /// inner products with [`embed_items`](Self::embed_items) are the model's cosines).
    ///
    /// # Errors
    /// [`TrainError::OutOfRange`] for an index of `n_queries` or more.
    pub fn embed_queries(&self, indices: &[u32], par: Par) -> Result<Vec<f32>, TrainError> {
        let mut out = self.embed(
            "query",
            &self.query_tower,
            &self.query_features,
            indices,
            par,
        )?;
        normalize_in_place(&mut out, self.config.dim);
        Ok(out)
    }

    /// Item embeddings of `indices`, row-major `indices.len() × dim`.
    ///
    /// Without a layer they are L2-normalised, so that inner products with
    /// [`embed_queries`](Self::embed_queries) rank items exactly as the model's score does.
    /// With a layer they are the layer's input, the *pre-quantization* embeddings that
    /// [`item_codec`](Self::item_codec) encodes: normalised when
    /// [`ModelConfig::normalize_item_before_layer`] is set, the raw tower output otherwise.
    ///
    /// # Errors
    /// [`TrainError::OutOfRange`] for an index of `n_items` or more.
    pub fn embed_items(&self, indices: &[u32], par: Par) -> Result<Vec<f32>, TrainError> {
        let mut out = self.embed("item", &self.item_tower, &self.item_features, indices, par)?;
        if self.layer.is_none() || self.config.normalize_item_before_layer {
            normalize_in_place(&mut out, self.config.dim);
        }
        Ok(out)
    }

    fn embed(
        &self,
        what: &'static str,
        tower: &Tower,
        features: &EntityFeatures,
        indices: &[u32],
        par: Par,
    ) -> Result<Vec<f32>, TrainError> {
        if let Some(&bad) = indices.iter().find(|&&i| i as usize >= features.n_entities) {
            return Err(TrainError::OutOfRange {
                what,
                index: u64::from(bad),
                bound: features.n_entities as u64,
            });
        }
        let dim = self.config.dim;
        let mut out = vec![0.0f32; indices.len() * dim];
        let mut cache = TowerCache::default();
        for (chunk, dst) in indices
            .chunks(EMBED_BLOCK)
            .zip(out.chunks_mut(EMBED_BLOCK * dim))
        {
            tower.forward(features, chunk, &mut cache, dst, par);
        }
        Ok(out)
    }

    /// With [`WarmStartItems::Catalogue`] and a layer in its buffering phase, the layer inputs
    /// of a uniform sample of the catalogue (seeded by the layer's seed and step) that fills
    /// the rest of its buffer, or the whole catalogue when that is smaller.
    fn catalogue_buffer_rows(&self, par: Par) -> Result<Option<Vec<f32>>, TrainError> {
        let Some(layer) = &self.layer else {
            return Ok(None);
        };
        if self.config.warm_start_items != WarmStartItems::Catalogue
            || layer.phase() != Phase::Buffering
        {
            return Ok(None);
        }
        let room = layer.config().buffer_size - layer.buffered_rows();
        let sample = catalogue_sample(
            self.n_items(),
            room,
            layer.config().seed ^ CATALOGUE_SALT,
            layer.steps(),
        );
        self.embed_items(&sample, par).map(Some)
    }

    /// With [`LayerUpdateItems::Catalogue`] and a layer in its joint phase, the layer inputs
    /// of a uniform sample of the catalogue (seeded by the layer's seed and step) for it to
    /// learn from, or of the whole catalogue when that is smaller.
    fn catalogue_update_rows(&self, par: Par) -> Result<Option<Vec<f32>>, TrainError> {
        let (Some(layer), LayerUpdateItems::Catalogue { rows }) =
            (&self.layer, self.config.layer_update_items)
        else {
            return Ok(None);
        };
        if !layer.is_initialized() {
            return Ok(None);
        }
        let sample = catalogue_sample(
            self.n_items(),
            rows,
            layer.config().seed ^ UPDATE_SALT,
            layer.steps(),
        );
        self.embed_items(&sample, par).map(Some)
    }

    /// Buffers for [`compute_gradients`](Self::compute_gradients).
    pub fn new_scratch(&self) -> StepScratch {
        StepScratch {
            query_cache: TowerCache::default(),
            item_cache: TowerCache::default(),
            query_grads: self.query_tower.new_grads(),
            item_grads: self.item_tower.new_grads(),
            loss: LossScratch::default(),
            q_raw: Vec::new(),
            q_hat: Vec::new(),
            q_norms: Vec::new(),
            v_raw: Vec::new(),
            v_hat: Vec::new(),
            v_norms: Vec::new(),
            y: Vec::new(),
            y_hat: Vec::new(),
            y_norms: Vec::new(),
            log_q: Vec::new(),
            grad_q_hat: Vec::new(),
            grad_q: Vec::new(),
            grad_y_hat: Vec::new(),
            grad_y: Vec::new(),
            grad_v: Vec::new(),
            distinct: DistinctRows::default(),
        }
    }

    /// Forward and backward pass of one training batch: `queries[b]` with its positive
    /// `items[b]`, and `items[queries.len()..]` as extra negatives. Leaves the towers'
    /// gradients in `scratch` for [`apply_gradients`](Self::apply_gradients). With a layer
    /// this advances its training state ([`IndexingLayer::forward_train`]); without one the
    /// model does not change.
    ///
    /// # Errors
    /// [`TrainError::OutOfRange`] for an index out of range, [`TrainError::DimensionMismatch`]
    /// when there are fewer items than queries, and the layer's errors.
    ///
    /// # Panics
    /// When `scratch` was made for another model.
    #[track_caller]
    pub fn compute_gradients(
        &mut self,
        queries: &[u32],
        items: &[u32],
        scratch: &mut StepScratch,
        par: Par,
    ) -> Result<StepStats, TrainError> {
        let (b, c, dim) = (queries.len(), items.len(), self.config.dim);
        if c < b {
            return Err(TrainError::DimensionMismatch {
                what: "batch items (one positive per query, then negatives)",
                expected: b,
                got: c,
            });
        }
        for (what, indices, bound) in [
            ("query", queries, self.n_queries()),
            ("item", items, self.n_items()),
        ] {
            if let Some(&bad) = indices.iter().find(|&&i| i as usize >= bound) {
                return Err(TrainError::OutOfRange {
                    what,
                    index: u64::from(bad),
                    bound: bound as u64,
                });
            }
        }
        let s = scratch;
        for (buf, len) in [
            (&mut s.q_raw, b * dim),
            (&mut s.q_hat, b * dim),
            (&mut s.grad_q_hat, b * dim),
            (&mut s.grad_q, b * dim),
            (&mut s.v_raw, c * dim),
            (&mut s.y_hat, c * dim),
            (&mut s.grad_y_hat, c * dim),
            (&mut s.grad_y, c * dim),
            (&mut s.q_norms, b),
            (&mut s.y_norms, c),
        ] {
            linalg::resize(buf, len);
        }

        // Queries: tower, then normalisation.
        self.query_tower.forward(
            &self.query_features,
            queries,
            &mut s.query_cache,
            &mut s.q_raw,
            par,
        );
        normalize_rows(&s.q_raw, dim, &mut s.q_hat, &mut s.q_norms);

        // Items: tower, optional normalisation, layer, normalisation for the cosine.
        self.item_tower.forward(
            &self.item_features,
            items,
            &mut s.item_cache,
            &mut s.v_raw,
            par,
        );
        let normalize_before = self.config.normalize_item_before_layer;
        if normalize_before {
            linalg::resize(&mut s.v_hat, c * dim);
            linalg::resize(&mut s.v_norms, c);
            normalize_rows(&s.v_raw, dim, &mut s.v_hat, &mut s.v_norms);
        }
        let x: &[f32] = if normalize_before { &s.v_hat } else { &s.v_raw };
        // The layer sees each distinct item of the batch once (see `DistinctRows`); the output
        // of a repeated item is the same for each of its rows.
        let n_items = self.item_features.n_entities;
        let catalogue_rows = self.catalogue_buffer_rows(par)?;
        let layer_step = match &mut self.layer {
            Some(layer) => {
                linalg::resize(&mut s.y, c * dim);
                let d = &mut s.distinct;
                if let Some(rows) = catalogue_rows {
                    // Buffering: the layer is the identity; its buffer gets the sample instead.
                    let mut identity = vec![0.0f32; rows.len()];
                    let step = layer.forward_train(&rows, &mut identity, par)?;
                    s.y.copy_from_slice(x);
                    Some(step)
                } else if d.gather(items, n_items, x, dim) {
                    linalg::resize(&mut d.y, d.x.len());
                    let step = layer.forward_train(&d.x, &mut d.y, par)?;
                    d.scatter(dim, &mut s.y);
                    Some(step)
                } else {
                    Some(layer.forward_train(x, &mut s.y, par)?)
                }
            }
            None => None,
        };
        if let Some(rows) = self.catalogue_update_rows(par)?
            && let Some(layer) = &mut self.layer
        {
            layer.learn_coarse_from(&rows, par)?;
        }
        let y: &[f32] = if self.layer.is_some() { &s.y } else { x };
        normalize_rows(y, dim, &mut s.y_hat, &mut s.y_norms);

        let log_q = if self.item_probability.is_empty() {
            None
        } else {
            let uniform = (c - b) as f32 / self.n_items() as f32;
            s.log_q.clear();
            s.log_q.extend(items.iter().map(|&i| {
                (b as f32 * self.item_probability[i as usize] + uniform)
                    .max(f32::MIN_POSITIVE)
                    .ln()
            }));
            Some(&s.log_q[..])
        };
        let loss = self.config.loss().forward_backward(
            &s.q_hat,
            &s.y_hat,
            dim,
            items,
            log_q,
            &mut s.loss,
            &mut s.grad_q_hat,
            &mut s.grad_y_hat,
            par,
        );

        // Backward: the two sides touch disjoint tables and buffers, so they run side by side.
        // Queries through their normalisation and tower; items through the cosine's
        // normalisation, straight through the layer (∂L/∂x = ∂L/∂y), the optional
        // normalisation before it, the tower.
        let (query_tower, item_tower) = (&self.query_tower, &self.item_tower);
        let (query_features, item_features) = (&self.query_features, &self.item_features);
        let query_side = || {
            normalize_rows_backward(&s.q_hat, &s.q_norms, &s.grad_q_hat, dim, &mut s.grad_q);
            query_tower.backward(
                query_features,
                queries,
                &mut s.query_cache,
                &s.grad_q,
                &mut s.query_grads,
                par,
            );
        };
        let item_side = || {
            normalize_rows_backward(&s.y_hat, &s.y_norms, &s.grad_y_hat, dim, &mut s.grad_y);
            let grad_v = if normalize_before {
                linalg::resize(&mut s.grad_v, c * dim);
                normalize_rows_backward(&s.v_hat, &s.v_norms, &s.grad_y, dim, &mut s.grad_v);
                &s.grad_v
            } else {
                &s.grad_y
            };
            item_tower.backward(
                item_features,
                items,
                &mut s.item_cache,
                grad_v,
                &mut s.item_grads,
                par,
            );
        };
        linalg::join(par, query_side, item_side);
        Ok(StepStats {
            loss,
            batch_size: b,
            layer: layer_step,
        })
    }

    /// Applies the gradients of the last [`compute_gradients`](Self::compute_gradients) with
    /// `optimizer` and the learning-rate scale `lr_scale`, and lets the indexing layer update
    /// its centroids and codebooks ([`IndexingLayer::update`]).
    ///
    /// # Errors
    /// The layer's errors.
    ///
    /// # Panics
    /// When `optimizer` or `scratch` was made for another model.
    #[track_caller]
    pub fn apply_gradients(
        &mut self,
        scratch: &StepScratch,
        optimizer: &mut ModelOptimizer,
        lr_scale: f32,
        par: Par,
    ) -> Result<(), TrainError> {
        // The towers' tables and the layer's parameters are disjoint: their steps run side by
        // side.
        let (query_tower, item_tower) = (&mut self.query_tower, &mut self.item_tower);
        let towers = || {
            linalg::join(
                par,
                || {
                    optimizer
                        .query
                        .step(query_tower, &scratch.query_grads, lr_scale)
                },
                || {
                    optimizer
                        .item
                        .step(item_tower, &scratch.item_grads, lr_scale)
                },
            );
        };
        let layer = || match &mut self.layer {
            Some(layer) => layer.update(lr_scale, par),
            None => Ok(()),
        };
        let ((), updated) = linalg::join(par, towers, layer);
        updated?;
        Ok(())
    }
}

/// `rows` distinct item indices drawn uniformly from `0..n_items` by the stream `stream` of
/// `seed`, in increasing order; every item when there are no more than `rows`.
fn catalogue_sample(n_items: usize, rows: usize, seed: u64, stream: u64) -> Vec<u32> {
    if n_items <= rows {
        return (0..n_items as u32).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let mut picked: Vec<u32> = rand::seq::index::sample(&mut rng, n_items, rows)
        .into_iter()
        .map(|i| i as u32)
        .collect();
    picked.sort_unstable();
    picked
}

/// Normalises each `dim`-wide row of `data` in place, like [`normalize_rows`].
fn normalize_in_place(data: &mut [f32], dim: usize) {
    for row in data.chunks_exact_mut(dim) {
        let inv = 1.0 / smooth_norm(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Checks that a side's vocabulary and feature table describe the same entities.
fn check_side(
    what: &'static str,
    vocab: &Vocab,
    features: &EntityFeatures,
) -> Result<(), TrainError> {
    if vocab.len() != features.n_entities {
        return Err(TrainError::DimensionMismatch {
            what,
            expected: vocab.len(),
            got: features.n_entities,
        });
    }
    if vocab.is_empty() {
        return Err(TrainError::InvalidConfig {
            name: what,
            value: "0 entities".into(),
            reason: "a model needs at least one query and one item",
        });
    }
    Ok(())
}

/// Each item's share of the training pairs.
fn item_probability(counts: &[u64], n_items: usize) -> Result<Vec<f32>, TrainError> {
    if counts.len() != n_items {
        return Err(TrainError::DimensionMismatch {
            what: "item counts",
            expected: n_items,
            got: counts.len(),
        });
    }
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return Err(TrainError::InvalidConfig {
            name: "log_q_correction",
            value: "true".into(),
            reason: "needs training pairs to estimate item frequencies",
        });
    }
    Ok(counts
        .iter()
        .map(|&n| (n as f64 / total as f64) as f32)
        .collect())
}
