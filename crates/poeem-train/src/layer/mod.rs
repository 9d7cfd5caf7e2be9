//! The Poeem indexing layer (method §1–§4): an IVF-PQ codec inside the model, usable by any
//! model.
//!
//! Forward, for a row `x` (zero-padded to [`poeem_pq::padded_dim`]): `x' = x R`, coarse list
//! `j = argmin ‖x' − v_j‖²`, PQ codes of the residual `x' − v_j`, reconstruction
//! `z = v_j + [c^(1)_{k_1} | … | c^(D)_{k_D}]`, output `τ(x) = z Rᵀ` cut back to `dim`. The
//! nearest-centroid searches, encoding and decoding are `poeem-pq`'s, so the output is exactly
//! `codec().decode(codec().encode(x))`.
//!
//! Backward is straight-through: the caller passes `∂L/∂τ(x)` to `x` unchanged. The centroids
//! learn only from the regularizer: the codebooks from `L_reg = w Σ_batch ‖z − x'‖²` (which is
//! `w Σ ‖τ(x) − stopgrad(x)‖²` when the dimension needs no padding, and also counts the padding
//! coordinates otherwise), with `e = z − x'`, `∂L_reg/∂c^(m)_k = 2w Σ_{b: k_{b,m} = k} e_b^(m)`;
//! the coarse centroids, by default ([`CoarseObjective::ListMeans`]), from the coarse level's
//! own error `w Σ_batch ‖x' − v_j‖²`, `∂/∂v_j = 2w Σ_{b: j_b = j} (v_j − x'_b)` (the reference
//! uses `∂L_reg/∂v_j = 2w Σ_{b: j_b = j} e_b`, [`CoarseObjective::Reconstruction`]): online
//! mini-batch k-means on both levels, applied by the layer's own optimiser states.
//!
//! A training run goes through the warm-start phases of [`Phase`]; see
//! [`IndexingLayer::forward_train`].

mod config;
mod diagnostics;
mod quantizers;
mod rotation;
mod serde_foreign;
mod warm_start;

use std::fmt;

use faer::Par;
use poeem_pq::{IvfPqCodec, padded_dim};
use poeem_rotation::Rotation;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use config::{CentroidInit, CoarseObjective, IndexingLayerConfig, RotationMode};
pub use diagnostics::{CodeDistribution, LayerDiagnostics};

use crate::{OptimizerState, TrainError};
use diagnostics::Tally;
use quantizers::Quantizers;
use rotation::LearnedRotation;

/// Where a training run stands (method §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The first `warmup_steps` calls: the layer is the identity and learns nothing.
    WarmUp,
    /// Collecting `buffer_size` rows for the k-means init; still the identity.
    Buffering,
    /// The full layer: quantized output, regularizer, updates.
    Joint,
}

/// What one [`IndexingLayer::forward_train`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerStep {
    /// The phase the call ran in.
    pub phase: Phase,
    /// `L_reg = w Σ_batch ‖z − x'‖²` of the batch (0 before the joint phase).
    pub regularizer_loss: f32,
    /// Mean over the batch of `RMS(x − τ(x))` (0 before the joint phase).
    pub distortion: f32,
    /// Whether this call initialised the centroids (the first joint call).
    pub initialized: bool,
}

/// The dense gradient of `L_reg` for the batch of the last joint `forward_train`, codes held
/// fixed.
#[derive(Debug, Clone, PartialEq)]
pub struct RegularizerGradient {
    /// `∂L_reg/∂v`, row-major `n_lists × padded_dim` (empty without a coarse level).
    pub coarse: Vec<f32>,
    /// `∂L_reg/∂c`, subspace-major `n_subspaces × 2^n_bits × (padded_dim / n_subspaces)`.
    pub codebooks: Vec<f32>,
}

/// The Poeem indexing layer: warm start, quantized forward, regularizer updates, an optional
/// learned rotation, diagnostics, and exact resume.
///
/// The whole training state serialises with serde (the configuration, the step count, the
/// warm-start buffer, centroids, codebooks, rotation, optimiser states, the diagnostics
/// counters, and the codes of a batch waiting for its `update`); a deserialised layer continues
/// bit-identically to the original. Every random choice derives from
/// [`IndexingLayerConfig::seed`], and results do not depend on the thread count of `par`.
#[derive(Clone)]
pub struct IndexingLayer {
    state: State,
    /// The quantizers of `state.params`, kept in step with them (None before init).
    quantizers: Option<Quantizers>,
    work: Work,
}

/// The serialised part of the layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    dim: usize,
    config: IndexingLayerConfig,
    steps: u64,
    /// Buffered rows (`≤ buffer_size × dim`), emptied at init.
    buffer: Vec<f32>,
    params: Option<Params>,
    tally: Tally,
    /// The last joint batch, until `update` consumes it.
    pending: Batch,
    /// Rows the coarse centroids learn from at the next `update` instead of `pending`'s
    /// ([`IndexingLayer::learn_coarse_from`]); empty otherwise.
    #[serde(default)]
    coarse_pending: Batch,
}

/// The learned parameters with their optimiser states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Params {
    /// Coarse centroids, `n_lists × padded_dim`.
    coarse: Vec<f32>,
    /// PQ codebooks, `n_subspaces × 2^n_bits × sub_dim`.
    codebooks: Vec<f32>,
    coarse_optimizer: OptimizerState,
    codebook_optimizer: OptimizerState,
    /// The rotation (None with [`RotationMode::None`]).
    rotation: Option<LearnedRotation>,
    /// Givens steps taken (fixes the pair stream of the next one).
    givens_steps: u64,
}

impl Params {
    /// The rotation, if the layer has one.
    fn rotation(&self) -> Option<&Rotation> {
        self.rotation.as_ref().map(LearnedRotation::rotation)
    }
}

/// A joint batch's codes and errors, kept for `update`; its buffers are reused between steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Batch {
    /// Coarse list per row (0 without a coarse level).
    lists: Vec<u32>,
    /// `n_subspaces` codes per row.
    codes: Vec<u16>,
    /// `x'`, `n × padded_dim`.
    rotated: Vec<f32>,
    /// `e = z − x'`, `n × padded_dim` (the residual while encoding).
    error: Vec<f32>,
}

impl Batch {
    fn rows(&self) -> usize {
        self.lists.len()
    }

    fn clear(&mut self) {
        self.lists.clear();
        self.codes.clear();
        self.rotated.clear();
        self.error.clear();
    }
}

/// Scratch buffers, kept between calls so that a step allocates nothing large.
#[derive(Debug, Clone, Default)]
pub(crate) struct Work {
    padded: Vec<f32>,
    z: Vec<f32>,
    back: Vec<f32>,
    /// The regularizer's sums for the coarse centroids the batch used.
    coarse: RowSums,
    /// The regularizer's sums for the codewords the batch used.
    codewords: RowSums,
    grads: Vec<f32>,
    /// One row `v_j − x'` of the coarse level's error.
    row: Vec<f32>,
}

/// Sums of error rows per row of a parameter table, for the rows a batch used: `rows` in the
/// order the batch first used them, `sums` packed to match (`rows.len() × width`), each sum
/// added up in batch order starting from zero (as a dense table of sums would be).
#[derive(Debug, Clone, Default)]
struct RowSums {
    rows: Vec<u32>,
    sums: Vec<f32>,
    /// Position in `rows` of each table row (`u32::MAX` when unused).
    slot: Vec<u32>,
}

impl RowSums {
    /// Starts the sums of a batch for a table of `n_rows` rows.
    fn reset(&mut self, n_rows: usize) {
        self.rows.clear();
        self.sums.clear();
        self.slot.clear();
        self.slot.resize(n_rows, u32::MAX);
    }

    /// Marks table row `row` as used (first pass over the batch).
    #[inline(always)]
    fn touch(&mut self, row: usize) {
        if self.slot[row] == u32::MAX {
            self.slot[row] = self.rows.len() as u32;
            self.rows.push(row as u32);
        }
    }

    /// Zero sums of `width` values for the rows touched.
    fn start_sums(&mut self, width: usize) {
        self.sums.resize(self.rows.len() * width, 0.0);
    }

    /// Adds `e` to the sum of the touched row `row` (second pass, in batch order).
    #[inline(always)]
    fn add(&mut self, row: usize, e: &[f32]) {
        let width = e.len();
        let slot = self.slot[row] as usize;
        let sum = &mut self.sums[slot * width..(slot + 1) * width];
        // In fours, which vectorises for the usual short codeword rows.
        let mut quads = sum.chunks_exact_mut(4);
        for (g, v) in (&mut quads).zip(e.chunks_exact(4)) {
            // Read before writing, so that the four adds become one vector add.
            let v: [f32; 4] = v.try_into().expect("chunks of 4");
            let g: &mut [f32; 4] = g.try_into().expect("chunks of 4");
            for i in 0..4 {
                g[i] += v[i];
            }
        }
        let done = width / 4 * 4;
        for (g, &v) in quads.into_remainder().iter_mut().zip(&e[done..]) {
            *g += v;
        }
    }

    /// Multiplies every sum by `scale`.
    fn scale(&mut self, scale: f32) {
        for g in &mut self.sums {
            *g *= scale;
        }
    }

    /// The sums as a dense `n_rows × width` table (zero for unused rows).
    fn dense(&self, n_rows: usize, width: usize) -> Vec<f32> {
        let mut table = vec![0.0f32; n_rows * width];
        for (&r, sum) in self.rows.iter().zip(self.sums.chunks_exact(width)) {
            let r = r as usize;
            table[r * width..(r + 1) * width].copy_from_slice(sum);
        }
        table
    }
}

impl IndexingLayer {
    /// A layer for vectors of `dim` values, at step 0 of the warm-up.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for a bad setting (see [`IndexingLayerConfig::validate`]).
    pub fn new(dim: usize, config: IndexingLayerConfig) -> Result<Self, TrainError> {
        config.validate(dim)?;
        let tally = Tally::new(config.n_lists, config.n_subspaces, config.n_codewords());
        Ok(Self {
            state: State {
                dim,
                config,
                steps: 0,
                buffer: Vec::new(),
                params: None,
                tally,
                pending: Batch::default(),
                coarse_pending: Batch::default(),
            },
            quantizers: None,
            work: Work::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &IndexingLayerConfig {
        &self.state.config
    }

    /// Dimension of the input vectors.
    pub fn dim(&self) -> usize {
        self.state.dim
    }

    /// Dimension after zero padding to a multiple of `n_subspaces` (the rotation's dimension).
    pub fn padded_dim(&self) -> usize {
        padded_dim(self.state.dim, self.state.config.n_subspaces)
    }

    /// The phase the next [`IndexingLayer::forward_train`] call runs in.
    pub fn phase(&self) -> Phase {
        let s = &self.state;
        if s.steps < s.config.warmup_steps {
            Phase::WarmUp
        } else if s.params.is_some()
            || s.config.centroid_init == CentroidInit::Random
            || s.buffer.len() >= s.config.buffer_size * s.dim
        {
            Phase::Joint
        } else {
            Phase::Buffering
        }
    }

    /// Number of `forward_train` calls so far.
    pub fn steps(&self) -> u64 {
        self.state.steps
    }

    /// Rows in the warm-start buffer.
    pub fn buffered_rows(&self) -> usize {
        self.state.buffer.len() / self.state.dim
    }

    /// Whether the centroids have been initialised.
    pub fn is_initialized(&self) -> bool {
        self.state.params.is_some()
    }

    /// The rotation `R` (of the padded dimension), if the layer has one and is initialised.
    pub fn rotation(&self) -> Option<&Rotation> {
        self.state
            .params
            .as_ref()
            .and_then(|p| p.rotation.as_ref())
            .map(LearnedRotation::rotation)
    }

    /// Training forward on a batch `x` (`n × dim`, row-major, n ≥ 1). Writes the layer output
    /// into `out` (as long as `x`): `τ(x)` in the joint phase, `x` itself before. Advances the
    /// warm-start state machine:
    ///
    /// - calls `1..=warmup_steps`: warm-up, identity;
    /// - then, with [`CentroidInit::KMeans`], buffering: identity, and the batch's rows are
    ///   appended to the buffer until it holds `buffer_size` rows (the rows past that are
    ///   dropped, as in the reference);
    /// - the first call after that (or, with [`CentroidInit::Random`], the first call after the
    ///   warm-up) initialises the centroids, codebooks and rotation (k-means and OPQ on the
    ///   buffer, which is then freed, or the random init on this batch), then runs as a joint
    ///   call (`initialized` is set in its [`LayerStep`]);
    /// - joint: the quantized output; the batch's codes and errors are kept for
    ///   [`IndexingLayer::update`] and counted in the diagnostics.
    ///
    /// # Errors
    /// [`TrainError::DimensionMismatch`] for an empty or ragged `x` or an `out` of another
    /// length, [`TrainError::NonFinite`] for NaN or infinite input (naming its row and column),
    /// or the init's error. A failed call changes nothing.
    pub fn forward_train(
        &mut self,
        x: &[f32],
        out: &mut [f32],
        par: Par,
    ) -> Result<LayerStep, TrainError> {
        let n = self.check_batch(x, out.len())?;
        let phase = self.phase();
        let identity = LayerStep {
            phase,
            regularizer_loss: 0.0,
            distortion: 0.0,
            initialized: false,
        };
        match phase {
            Phase::WarmUp => {
                out.copy_from_slice(x);
                self.state.pending.clear();
                self.state.coarse_pending.clear();
                self.state.steps += 1;
                Ok(identity)
            }
            Phase::Buffering => {
                let s = &mut self.state;
                let room = s.config.buffer_size - s.buffer.len() / s.dim;
                s.buffer.extend_from_slice(&x[..n.min(room) * s.dim]);
                out.copy_from_slice(x);
                s.pending.clear();
                s.coarse_pending.clear();
                s.steps += 1;
                Ok(identity)
            }
            Phase::Joint => {
                let initialized = self.state.params.is_none();
                if initialized {
                    self.initialize(x, par)?;
                }
                let (regularizer_loss, distortion) = self.joint_forward(x, out, par)?;
                self.state.steps += 1;
                Ok(LayerStep {
                    phase,
                    regularizer_loss,
                    distortion,
                    initialized,
                })
            }
        }
    }

    /// The one-off init at the first joint call; on error nothing changes.
    fn initialize(&mut self, x: &[f32], par: Par) -> Result<(), TrainError> {
        let s = &self.state;
        let params = match s.config.centroid_init {
            CentroidInit::KMeans => warm_start::kmeans_init(&s.buffer, s.dim, &s.config, par)?,
            CentroidInit::Random => warm_start::random_init(x, s.dim, &s.config, &mut self.work)?,
        };
        let quantizers = Quantizers::new(s.dim, &s.config, &params)?;
        self.quantizers = Some(quantizers);
        self.state.params = Some(params);
        self.state.buffer = Vec::new();
        Ok(())
    }

    /// Quantizes a joint batch, keeps its codes and errors, and counts it in the diagnostics;
    /// returns the regularizer and the mean distortion.
    fn joint_forward(
        &mut self,
        x: &[f32],
        out: &mut [f32],
        par: Par,
    ) -> Result<(f32, f32), TrainError> {
        let quantizers = self
            .quantizers
            .as_ref()
            .expect("initialised layers have quantizers");
        let s = &mut self.state;
        let rotation = s.params.as_ref().and_then(Params::rotation);
        quantizers.encode_decode(rotation, x, &mut s.pending, &mut self.work, out, par)?;
        s.coarse_pending.clear();
        let n = s.pending.rows();
        let p = padded_dim(s.dim, s.config.n_subspaces);
        // With the identity and no padding, x − τ(x) = −e, and both sums are the same.
        let same = p == s.dim && quantizers.skips_rotation();
        let (mut squared, mut distortion_sum) = (0.0f64, 0.0f64);
        for ((e, a), b) in s
            .pending
            .error
            .chunks_exact(p)
            .zip(x.chunks_exact(s.dim))
            .zip(out.chunks_exact(s.dim))
        {
            let e2 = sum_of_squares(e);
            let d2 = if same { e2 } else { squared_distance(a, b) };
            squared += e2;
            distortion_sum += (d2 / s.dim as f64).sqrt();
        }
        s.tally.record(
            &s.pending.lists,
            &s.pending.codes,
            s.config.n_subspaces,
            distortion_sum,
        );
        let loss = f64::from(s.config.regularizer_weight) * squared;
        Ok((loss as f32, (distortion_sum / n as f64) as f32))
    }

    /// Checks a batch and its output buffer; returns the number of rows.
    fn check_batch(&self, x: &[f32], out_len: usize) -> Result<usize, TrainError> {
        let dim = self.state.dim;
        if x.is_empty() || !x.len().is_multiple_of(dim) {
            return Err(TrainError::DimensionMismatch {
                what: "x (whole rows of dim values, at least one)",
                expected: x.len().next_multiple_of(dim).max(dim),
                got: x.len(),
            });
        }
        if out_len != x.len() {
            return Err(TrainError::DimensionMismatch {
                what: "out",
                expected: x.len(),
                got: out_len,
            });
        }
        // A branch-free pass that vectorises; the position only when something is wrong.
        if !x.iter().fold(true, |ok, v| ok & v.is_finite())
            && let Some(i) = x.iter().position(|v| !v.is_finite())
        {
            return Err(TrainError::NonFinite {
                what: "x",
                row: i / dim,
                col: i % dim,
            });
        }
        Ok(x.len() / dim)
    }

    /// After a joint [`IndexingLayer::forward_train`]: one optimiser step on the coarse
    /// centroids and one on the codebooks with the regularizer's gradient (only the rows the
    /// batch used, [`OptimizerState::step_rows`], so the states behave like the model's sparse
    /// embedding rows), the learning rate scaled by `lr_scale`; then, when the rotation mode
    /// has Givens steps, one Givens step on the batch's `L_reg` as a function of `R` with the
    /// codes held fixed (step size `givens.learning_rate × lr_scale`).
    ///
    /// The backward pass to `x` is straight-through (`∂L/∂x = ∂L/∂τ(x)`): the caller passes its
    /// gradient through unchanged; the regularizer adds nothing to `∂L/∂x`. A no-op before the
    /// joint phase, and when the last joint batch was already consumed.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for a negative or non-finite `lr_scale`; an error when the
    /// updated parameters are no longer finite.
    pub fn update(&mut self, lr_scale: f32, par: Par) -> Result<(), TrainError> {
        if !(lr_scale.is_finite() && lr_scale >= 0.0) {
            return Err(TrainError::InvalidConfig {
                name: "lr_scale",
                value: lr_scale.to_string(),
                reason: "must be a finite non-negative number",
            });
        }
        let s = &mut self.state;
        let Some(params) = s.params.as_mut() else {
            return Ok(());
        };
        if s.pending.rows() == 0 {
            return Ok(());
        }
        let w = &mut self.work;
        let p = padded_dim(s.dim, s.config.n_subspaces);
        let sub = p / s.config.n_subspaces;
        accumulate_gradient(
            &s.pending,
            coarse_rows(&s.pending, &s.coarse_pending),
            &s.config,
            p,
            &params.coarse,
            w,
        );
        let weight = 2.0 * s.config.regularizer_weight;
        if s.config.n_lists > 0 {
            w.coarse.scale(weight);
            params.coarse_optimizer.step_rows(
                &mut params.coarse,
                p,
                &w.coarse.rows,
                &w.coarse.sums,
                lr_scale,
            );
        }
        w.codewords.scale(weight);
        params.codebook_optimizer.step_rows(
            &mut params.codebooks,
            sub,
            &w.codewords.rows,
            &w.codewords.sums,
            lr_scale,
        );

        let quantizers = self
            .quantizers
            .as_mut()
            .expect("initialised layers have quantizers");
        if let (Some(selection), Some(learned)) = (
            s.config.rotation.givens_selection(),
            params.rotation.as_mut(),
        ) {
            // f(R) = w Σ ‖x R − z‖², so ∂f/∂Y = 2w (Y − Z) = −2w e.
            w.grads.clear();
            w.grads.extend(s.pending.error.iter().map(|&e| -weight * e));
            let settings =
                rotation::givens_settings(&s.config.givens, selection, s.config.seed, lr_scale);
            learned.givens_step(
                settings,
                &mut params.givens_steps,
                &s.pending.rotated,
                &w.grads,
                par,
            )?;
            quantizers.rotation_changed(learned.rotation());
        }
        s.pending.clear();
        s.coarse_pending.clear();
        quantizers.refresh(params, &w.coarse.rows, &w.codewords.rows)
    }

    /// The dense gradient of `L_reg` with respect to the centroids and codebooks for the batch
    /// of the last joint `forward_train` (codes held fixed), or `None` when there is no such
    /// batch waiting for `update`. This is the gradient `update` applies.
    pub fn regularizer_gradient(&self) -> Option<RegularizerGradient> {
        let s = &self.state;
        let params = s.params.as_ref()?;
        if s.pending.rows() == 0 {
            return None;
        }
        let mut work = Work::default();
        let p = self.padded_dim();
        accumulate_gradient(
            &s.pending,
            coarse_rows(&s.pending, &s.coarse_pending),
            &s.config,
            p,
            &params.coarse,
            &mut work,
        );
        let weight = 2.0 * s.config.regularizer_weight;
        work.coarse.scale(weight);
        work.codewords.scale(weight);
        let m = s.config.n_subspaces;
        Some(RegularizerGradient {
            coarse: work.coarse.dense(s.config.n_lists, p),
            codebooks: work.codewords.dense(m * s.config.n_codewords(), p / m),
        })
    }

    /// The codes of the batch waiting for `update`: its coarse lists and its `n_subspaces` PQ
    /// codes per row.
    pub fn pending_codes(&self) -> Option<(&[u32], &[u16])> {
        let b = &self.state.pending;
        (b.rows() > 0).then_some((&b.lists[..], &b.codes[..]))
    }

    /// After a joint [`IndexingLayer::forward_train`], makes the next
    /// [`IndexingLayer::update`] step the coarse centroids on the rows `x` (`n × dim`)
    /// instead of that batch's (the codebooks and the rotation still learn from the batch):
    /// `x` is assigned to lists with the current parameters. A model calls this with a
    /// uniform sample of its catalogue so that the lists weigh items as a post-hoc index
    /// does, not by how often they appear in batches. A no-op before the joint phase or when
    /// the batch was already consumed.
    ///
    /// # Errors
    /// As the input checks of [`IndexingLayer::forward_train`] (`x` empty, ragged or not
    /// finite). A failed call changes nothing.
    pub fn learn_coarse_from(&mut self, x: &[f32], par: Par) -> Result<(), TrainError> {
        self.check_batch(x, x.len())?;
        let (Some(quantizers), Some(params)) = (&self.quantizers, &self.state.params) else {
            return Ok(());
        };
        if self.state.pending.rows() == 0 {
            return Ok(());
        }
        let mut rows = Batch::default();
        if self.state.config.coarse_objective == CoarseObjective::ListMeans {
            // List means read only x' and the lists: no PQ encode of the sample.
            quantizers.assign_lists(params.rotation(), x, &mut rows, &mut self.work, par)?;
        } else {
            let mut out = vec![0.0f32; x.len()];
            quantizers.encode_decode(
                params.rotation(),
                x,
                &mut rows,
                &mut self.work,
                &mut out,
                par,
            )?;
        }
        self.state.coarse_pending = rows;
        Ok(())
    }

    /// Inference: `τ(x)` (or `x` before init) into `out`; no state changes. Equal to the output
    /// `forward_train` would give with the current parameters.
    ///
    /// # Errors
    /// As the input checks of [`IndexingLayer::forward_train`].
    pub fn quantize(&self, x: &[f32], out: &mut [f32], par: Par) -> Result<(), TrainError> {
        self.check_batch(x, out.len())?;
        match &self.quantizers {
            None => {
                out.copy_from_slice(x);
                Ok(())
            }
            Some(quantizers) => quantizers.quantize(
                self.state.params.as_ref().and_then(Params::rotation),
                x,
                out,
                par,
            ),
        }
    }

    /// Diagnostics over the joint rows since the last [`IndexingLayer::reset_diagnostics`].
    pub fn diagnostics(&self) -> LayerDiagnostics {
        let orthogonality = self.rotation().map_or(0.0, Rotation::orthogonality_error);
        self.state
            .tally
            .summarize(self.state.config.n_subspaces, orthogonality)
    }

    /// Starts a new logging interval.
    pub fn reset_diagnostics(&mut self) {
        self.state.tally.reset();
    }

    /// The learned codec (rotation, coarse centroids, PQ codebooks) for export: `None` before
    /// init. Its `decode(encode(x))` is exactly the layer's `τ(x)`.
    pub fn codec(&self) -> Option<IvfPqCodec> {
        let params = self.state.params.as_ref()?;
        let quantizers = self.quantizers.as_ref()?;
        Some(quantizers.codec(params.rotation()))
    }

    /// Rebuilds a layer from its serialised state after checking that the parts agree.
    fn from_state(state: State) -> Result<Self, TrainError> {
        state.config.validate(state.dim)?;
        let c = &state.config;
        let p = padded_dim(state.dim, c.n_subspaces);
        let k = c.n_codewords();
        let mismatch = |what: &'static str, expected: usize, got: usize| {
            if expected == got {
                Ok(())
            } else {
                Err(TrainError::DimensionMismatch {
                    what,
                    expected,
                    got,
                })
            }
        };
        if !state.buffer.len().is_multiple_of(state.dim)
            || state.buffer.len() > c.buffer_size * state.dim
        {
            return Err(TrainError::DimensionMismatch {
                what: "saved buffer",
                expected: c.buffer_size * state.dim,
                got: state.buffer.len(),
            });
        }
        let mut quantizers = None;
        if let Some(params) = &state.params {
            mismatch("saved coarse centroids", c.n_lists * p, params.coarse.len())?;
            mismatch(
                "saved codebooks",
                c.n_subspaces * k * (p / c.n_subspaces),
                params.codebooks.len(),
            )?;
            mismatch(
                "saved coarse optimiser state",
                params.coarse.len(),
                params.coarse_optimizer.len(),
            )?;
            mismatch(
                "saved codebook optimiser state",
                params.codebooks.len(),
                params.codebook_optimizer.len(),
            )?;
            let rotation_dim = params.rotation.as_ref().map_or(0, |r| r.rotation().dim());
            let expected = if c.rotation.has_rotation() { p } else { 0 };
            mismatch("saved rotation dimension", expected, rotation_dim)?;
            quantizers = Some(Quantizers::new(state.dim, c, params)?);
        }
        for (b, what) in [
            (&state.pending, "saved pending batch"),
            (&state.coarse_pending, "saved pending coarse rows"),
        ] {
            let n = b.rows();
            if n > 0 && state.params.is_none() {
                return Err(TrainError::DimensionMismatch {
                    what,
                    expected: 0,
                    got: n,
                });
            }
            mismatch(what, n * c.n_subspaces, b.codes.len())?;
            mismatch(what, n * p, b.rotated.len())?;
            mismatch(what, n * p, b.error.len())?;
            if b.lists.iter().any(|&l| l as usize >= c.n_lists.max(1))
                || b.codes.iter().any(|&code| usize::from(code) >= k)
            {
                return Err(TrainError::InvalidConfig {
                    name: what,
                    value: "out of range".into(),
                    reason: "every list and code must be below n_lists and 2^n_bits",
                });
            }
        }
        let fresh = Tally::new(c.n_lists, c.n_subspaces, k);
        state.tally.check_shape(&fresh)?;
        Ok(Self {
            state,
            quantizers,
            work: Work::default(),
        })
    }
}

/// The rows the coarse centroids learn from at the next update: `coarse_pending` when
/// [`IndexingLayer::learn_coarse_from`] gave some, else the batch `pending`.
fn coarse_rows<'a>(pending: &'a Batch, coarse_pending: &'a Batch) -> &'a Batch {
    if coarse_pending.rows() > 0 {
        coarse_pending
    } else {
        pending
    }
}

/// Sums the errors of `batch` per codeword used and of `coarse_rows` per coarse centroid used
/// (in row order, so the result does not depend on threads) into `work.codewords` and
/// `work.coarse`: `e_b = z_b − x'_b` for the codewords, and for the coarse centroids
/// `v_j − x'_b` or `e_b` as [`IndexingLayerConfig::coarse_objective`] says (`centroids` are
/// the current `v`). The gradient is `2w` times these sums.
fn accumulate_gradient(
    batch: &Batch,
    coarse_rows: &Batch,
    config: &IndexingLayerConfig,
    p: usize,
    centroids: &[f32],
    work: &mut Work,
) {
    let m = config.n_subspaces;
    let k = config.n_codewords();
    let sub = p / m;
    let (coarse, codewords, row) = (&mut work.coarse, &mut work.codewords, &mut work.row);
    coarse.reset(config.n_lists);
    if config.n_lists > 0 {
        let list_means = config.coarse_objective == CoarseObjective::ListMeans;
        for &list in &coarse_rows.lists {
            coarse.touch(list as usize);
        }
        coarse.start_sums(p);
        if list_means {
            // The rows' x' and lists only: a catalogue sample has no codes or errors.
            for (x, &list) in coarse_rows.rotated.chunks_exact(p).zip(&coarse_rows.lists) {
                let list = list as usize;
                let v = &centroids[list * p..(list + 1) * p];
                row.clear();
                row.extend(v.iter().zip(x).map(|(&v, &x)| v - x));
                coarse.add(list, row);
            }
        } else {
            for (e, &list) in coarse_rows.error.chunks_exact(p).zip(&coarse_rows.lists) {
                coarse.add(list as usize, e);
            }
        }
    }
    codewords.reset(m * k);
    for codes in batch.codes.chunks_exact(m) {
        for (s, &code) in codes.iter().enumerate() {
            codewords.touch(s * k + usize::from(code));
        }
    }
    codewords.start_sums(sub);
    for (e, codes) in batch.error.chunks_exact(p).zip(batch.codes.chunks_exact(m)) {
        for (s, (&code, e)) in codes.iter().zip(e.chunks_exact(sub)).enumerate() {
            codewords.add(s * k + usize::from(code), e);
        }
    }
}

/// `Σ e_i²` in f64, in [`PARTIAL_SUMS`] interleaved partial sums added in a fixed order
/// (deterministic, and it vectorises).
fn sum_of_squares(e: &[f32]) -> f64 {
    let mut acc = [0.0f64; PARTIAL_SUMS];
    let chunks = e.chunks_exact(PARTIAL_SUMS);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f64::from(v) * f64::from(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a += f64::from(v) * f64::from(v);
    }
    acc.iter().sum()
}

/// `Σ (a_i − b_i)²` in f64, summed like [`sum_of_squares`] (so it equals
/// `sum_of_squares(b − a)` exactly).
fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; PARTIAL_SUMS];
    let chunks = a
        .chunks_exact(PARTIAL_SUMS)
        .zip(b.chunks_exact(PARTIAL_SUMS));
    let tail = a.len() / PARTIAL_SUMS * PARTIAL_SUMS;
    for (a, b) in chunks {
        for ((acc, &u), &v) in acc.iter_mut().zip(a).zip(b) {
            *acc += f64::from(u - v) * f64::from(u - v);
        }
    }
    for ((acc, &u), &v) in acc.iter_mut().zip(&a[tail..]).zip(&b[tail..]) {
        *acc += f64::from(u - v) * f64::from(u - v);
    }
    acc.iter().sum()
}

/// Partial sums of [`sum_of_squares`].
const PARTIAL_SUMS: usize = 4;

impl fmt::Debug for IndexingLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexingLayer")
            .field("dim", &self.state.dim)
            .field("phase", &self.phase())
            .field("steps", &self.state.steps)
            .field("buffered_rows", &self.buffered_rows())
            .field("initialized", &self.is_initialized())
            .field("config", &self.state.config)
            .finish_non_exhaustive()
    }
}

impl Serialize for IndexingLayer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.state.serialize(s)
    }
}

impl<'de> Deserialize<'de> for IndexingLayer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let state = State::deserialize(d)?;
        Self::from_state(state).map_err(serde::de::Error::custom)
    }
}
