//! The training loop: shuffled mini-batches, optional sampled negatives, a learning-rate
//! schedule, progress reports and checkpoints from which training resumes exactly.
//!
//! Determinism: the order of epoch `e` is a permutation drawn from `(seed, e)`, and the extra
//! negatives of step `s` are drawn from `(seed, s)` (two disjoint ChaCha8 streams), so the only
//! state a checkpoint needs besides the parameters, the optimiser states and the layer is the
//! step. A run stopped after any step and resumed from its checkpoint ends with the same bits
//! as an uninterrupted run, whatever the thread count.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use faer::Par;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, MODEL_TAG, TRAINER_TAG};
use crate::data::Dataset;
use crate::layer::{CoarseObjective, IndexingLayer, IndexingLayerConfig, LayerDiagnostics, Phase};
use crate::model::{Model, ModelConfig, ModelOptimizer, StepScratch, StepStats};
use crate::{OptimizerConfig, TrainError};

/// Stream of the negative-sampling generator (the high bit set; shuffling uses the epoch).
const NEGATIVE_STREAM: u64 = 1 << 63;

/// How the learning rate changes over training: the optimiser's rate times
/// [`scale`](Self::scale).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The optimiser's rate throughout.
    Constant,
    /// A linear ramp from `1/warmup_steps` to 1 over the first `warmup_steps` steps, then a
    /// linear decay to `final_scale` at the last step.
    Linear {
        /// Steps of the ramp (0: none).
        warmup_steps: u64,
        /// Scale reached at the end of training, in `[0, 1]`.
        final_scale: f32,
    },
}

impl LrSchedule {
    /// The learning-rate factor of step `step` (0-based) of `total_steps`.
    pub fn scale(&self, step: u64, total_steps: u64) -> f32 {
        match *self {
            Self::Constant => 1.0,
            Self::Linear {
                warmup_steps,
                final_scale,
            } => {
                if step < warmup_steps {
                    return (step + 1) as f32 / warmup_steps as f32;
                }
                let decay_steps = total_steps.saturating_sub(warmup_steps).max(1);
                let progress = ((step - warmup_steps) as f64 / decay_steps as f64).min(1.0);
                (1.0 - progress * f64::from(1.0 - final_scale)) as f32
            }
        }
    }

    fn validate(&self) -> Result<(), TrainError> {
        match *self {
            Self::Constant => Ok(()),
            Self::Linear { final_scale, .. } if (0.0..=1.0).contains(&final_scale) => Ok(()),
            Self::Linear { final_scale, .. } => Err(TrainError::InvalidConfig {
                name: "schedule.final_scale",
                value: final_scale.to_string(),
                reason: "must be in [0, 1]",
            }),
        }
    }
}

/// Settings of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The model.
    pub model: ModelConfig,
    /// The indexing layer on the item tower (`None`: the plain two-tower baseline). It steps
    /// with its own `optimizer` setting, which the presets set equal to [`Self::optimizer`].
    pub index: Option<IndexingLayerConfig>,
    /// Passes over the training pairs.
    pub epochs: usize,
    /// Queries per batch (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// The towers' optimiser.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule (also scales the layer's updates).
    pub schedule: LrSchedule,
    /// Worker threads: 0 uses rayon's global pool, 1 runs sequentially, `n` a pool of `n`
    /// threads owned by the trainer. Results do not depend on it.
    pub threads: usize,
    /// Seed of the shuffling and of the negative sampling.
    pub seed: u64,
    /// Write a checkpoint every this many steps (0: only when a call to `train` ends), when the
    /// trainer has a checkpoint directory.
    pub checkpoint_every_steps: u64,
    /// Report progress every this many steps (0: only when a call to `train` ends).
    pub log_every_steps: u64,
}

impl TrainConfig {
    /// The reference tutorial's baseline: the tutorial model ([`ModelConfig::tutorial`]),
    /// Adagrad (TF1) with learning rate 0.1, batch 128, 3 epochs, no indexing layer.
    pub fn tutorial() -> Self {
        Self {
            model: ModelConfig::tutorial(),
            index: None,
            epochs: 3,
            batch_size: 128,
            optimizer: OptimizerConfig::adagrad(0.1),
            schedule: LrSchedule::Constant,
            threads: 0,
            seed: 0,
            checkpoint_every_steps: 5000,
            log_every_steps: 100,
        }
    }

    /// The tutorial's Poeem variant: [`tutorial`](Self::tutorial) with the indexing layer of
    /// [`IndexingLayerConfig::tutorial`] (J = 8, K = 256, D = 8) on the normalised item
    /// embeddings.
    pub fn tutorial_poeem() -> Self {
        Self {
            index: Some(IndexingLayerConfig::tutorial()),
            ..Self::tutorial()
        }
    }

    /// A feature model for MovieLens-like data ([`ModelConfig::movielens`]): Adam with
    /// learning rate 0.001 and a linear warm-up over 500 steps, batch 1024, 20 epochs, the
    /// reference's default indexing layer ([`IndexingLayerConfig::paper`]) stepping with Adam
    /// at learning rate 0.01, its coarse centroids learning their lists' means
    /// ([`CoarseObjective::ListMeans`]) from a uniform catalogue sample
    /// ([`ModelConfig::movielens`]'s `layer_update_items`). The layer's centroids and
    /// codewords learn only from the regularizer and must follow item embeddings that keep
    /// moving after the warm start; at the towers' 0.001 they lag behind (on ml-100k, recall@50
    /// at nprobe 1 through 32 lists fell from 0.223 to 0.193). With the reference's coarse
    /// objective, long training lets the centroids drift off their lists (ml-100k trained 80
    /// epochs: 0.156 at nprobe 1 against 0.227).
    pub fn movielens() -> Self {
        let optimizer = OptimizerConfig::adam(0.001);
        Self {
            model: ModelConfig::movielens(),
            index: Some(IndexingLayerConfig {
                optimizer: OptimizerConfig::adam(0.01),
                coarse_objective: CoarseObjective::ListMeans,
                ..IndexingLayerConfig::paper()
            }),
            epochs: 20,
            batch_size: 1024,
            optimizer,
            schedule: LrSchedule::Linear {
                warmup_steps: 500,
                final_scale: 0.1,
            },
            threads: 0,
            seed: 0,
            checkpoint_every_steps: 2000,
            log_every_steps: 50,
        }
    }

    /// Checks the settings that do not depend on the data.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for zero epochs or batch size, or an invalid model,
    /// optimiser or schedule.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.epochs == 0 {
            return Err(TrainError::InvalidConfig {
                name: "epochs",
                value: "0".into(),
                reason: "must be positive",
            });
        }
        if self.batch_size == 0 {
            return Err(TrainError::InvalidConfig {
                name: "batch_size",
                value: "0".into(),
                reason: "must be positive",
            });
        }
        if self.batch_size > u32::MAX as usize {
            return Err(TrainError::InvalidConfig {
                name: "batch_size",
                value: self.batch_size.to_string(),
                reason: "must fit in 32 bits",
            });
        }
        self.model.validate()?;
        self.optimizer.validate()?;
        self.schedule.validate()
    }
}

/// A progress report, handed to the callback of [`Trainer::train`] every
/// [`TrainConfig::log_every_steps`] steps and when the call ends.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainProgress {
    /// The epoch (0-based) of the last step.
    pub epoch: usize,
    /// Epochs in the run.
    pub epochs: usize,
    /// Steps done.
    pub step: u64,
    /// Steps in the run.
    pub total_steps: u64,
    /// Training pairs per second since the last report.
    pub examples_per_second: f64,
    /// Mean loss per example since the last report.
    pub loss: f64,
    /// Learning rate of the last step.
    pub learning_rate: f32,
    /// Phase of the indexing layer, when there is one.
    pub layer_phase: Option<Phase>,
    /// Mean distortion (RMS of `x − τ(x)`) of the layer's joint steps since the last report.
    pub distortion: Option<f32>,
    /// The layer's diagnostics (code use per level, distortion, orthogonality error) over the
    /// joint rows since the last interval report: the layer's counters restart at every
    /// report made on a multiple of `log_every_steps`, so they do not depend on how the run
    /// was split into calls. `None` without a layer or before its joint phase.
    pub layer: Option<LayerDiagnostics>,
}

/// What a call to [`Trainer::train`] or [`Trainer::train_steps`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Steps taken by this call.
    pub steps_run: u64,
    /// Steps done in the whole run.
    pub step: u64,
    /// Steps in the run.
    pub total_steps: u64,
    /// Mean loss per example over this call's steps.
    pub mean_loss: f64,
    /// Mean loss per example of each epoch completed so far (whole run).
    pub epoch_losses: Vec<f64>,
    /// Training pairs per second over this call.
    pub examples_per_second: f64,
    /// Wall-clock time of this call.
    pub elapsed: Duration,
    /// Where the last checkpoint was written, if any.
    pub checkpoint: Option<PathBuf>,
}

impl TrainReport {
    /// Whether the run has done all its steps.
    pub fn finished(&self) -> bool {
        self.step >= self.total_steps
    }
}

/// Identifies a dataset's training pairs, to refuse resuming on other data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct DatasetFingerprint {
    n_queries: u64,
    n_items: u64,
    n_train: u64,
    crc: u32,
}

impl DatasetFingerprint {
    fn of(dataset: &Dataset) -> Self {
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = Vec::with_capacity(8 * 4096);
        for chunk in dataset.train.chunks(4096) {
            buf.clear();
            for &(q, i) in chunk {
                buf.extend_from_slice(&q.to_le_bytes());
                buf.extend_from_slice(&i.to_le_bytes());
            }
            hasher.update(&buf);
        }
        Self {
            n_queries: dataset.n_queries() as u64,
            n_items: dataset.n_items() as u64,
            n_train: dataset.train.len() as u64,
            crc: hasher.finalize(),
        }
    }
}

/// Everything of a run except the model, as stored in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TrainerState {
    config: TrainConfig,
    dataset: DatasetFingerprint,
    step: u64,
    optimizer: ModelOptimizer,
    /// Loss summed over the current epoch's examples, and their number.
    epoch_loss_sum: f64,
    epoch_examples: u64,
    epoch_losses: Vec<f64>,
}

/// Trains a [`Model`] on a [`Dataset`]'s training pairs.
#[derive(Debug)]
pub struct Trainer {
    model: Model,
    state: TrainerState,
    train: Vec<(u32, u32)>,
    checkpoint_dir: Option<PathBuf>,
    pool: Option<rayon::ThreadPool>,
    scratch: StepScratch,
    /// The current epoch's order, and which epoch it is for.
    order: Vec<u32>,
    order_epoch: Option<usize>,
    batch_queries: Vec<u32>,
    batch_items: Vec<u32>,
}

impl Trainer {
    /// A trainer for a fresh model on `dataset`.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for settings that are invalid or do not fit the data (no
    /// training pairs, unknown fields, …), [`TrainError::OutOfRange`] for a training pair out
    /// of the vocabularies.
    pub fn new(config: TrainConfig, dataset: &Dataset) -> Result<Self, TrainError> {
        config.validate()?;
        check_pairs(dataset)?;
        let model = Model::new(config.model.clone(), config.index.clone(), dataset)?;
        let optimizer = ModelOptimizer::new(&model, config.optimizer)?;
        let state = TrainerState {
            config,
            dataset: DatasetFingerprint::of(dataset),
            step: 0,
            optimizer,
            epoch_loss_sum: 0.0,
            epoch_examples: 0,
            epoch_losses: Vec::new(),
        };
        Self::assemble(model, state, dataset, None)
    }

    /// Resumes the run checkpointed in `dir` on `dataset` (which must be the dataset it was
    /// started on), checkpointing into `dir` from then on.
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] when `dir` holds no readable checkpoint,
    /// [`TrainError::DatasetMismatch`] when `dataset` is not the run's.
    pub fn resume(dir: impl AsRef<Path>, dataset: &Dataset) -> Result<Self, TrainError> {
        let dir = dir.as_ref();
        let (model, state): (Model, TrainerState) = checkpoint::read_checkpoint(dir)?;
        let found = DatasetFingerprint::of(dataset);
        if found != state.dataset {
            let e = state.dataset;
            return Err(TrainError::DatasetMismatch {
                reason: format!(
                    "the checkpoint was trained on {} queries, {} items, {} training pairs \
                     (checksum {:08x}); this dataset has {}, {}, {} (checksum {:08x})",
                    e.n_queries,
                    e.n_items,
                    e.n_train,
                    e.crc,
                    found.n_queries,
                    found.n_items,
                    found.n_train,
                    found.crc
                ),
            });
        }
        state.config.validate()?;
        Self::assemble(model, state, dataset, Some(dir.to_path_buf()))
    }

    fn assemble(
        model: Model,
        state: TrainerState,
        dataset: &Dataset,
        checkpoint_dir: Option<PathBuf>,
    ) -> Result<Self, TrainError> {
        let pool = thread_pool(state.config.threads)?;
        Ok(Self {
            scratch: model.new_scratch(),
            model,
            state,
            train: dataset.train.clone(),
            checkpoint_dir,
            pool,
            order: Vec::new(),
            order_epoch: None,
            batch_queries: Vec::new(),
            batch_items: Vec::new(),
        })
    }

    /// Checkpoint into `dir` (created if needed) from now on.
    ///
    /// # Errors
    /// [`TrainError::Io`] when the directory cannot be created.
    pub fn set_checkpoint_dir(&mut self, dir: impl AsRef<Path>) -> Result<(), TrainError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        self.checkpoint_dir = Some(dir.to_path_buf());
        Ok(())
    }

    /// The checkpoint directory, if any.
    pub fn checkpoint_dir(&self) -> Option<&Path> {
        self.checkpoint_dir.as_deref()
    }

    /// Changes the number of worker threads (see [`TrainConfig::threads`]); the results do not
    /// change.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] when the thread pool cannot be built.
    pub fn set_threads(&mut self, threads: usize) -> Result<(), TrainError> {
        self.pool = thread_pool(threads)?;
        self.state.config.threads = threads;
        Ok(())
    }

    /// The run's settings.
    pub fn config(&self) -> &TrainConfig {
        &self.state.config
    }

    /// The model being trained.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The trained model.
    pub fn into_model(self) -> Model {
        self.model
    }

    /// Steps done.
    pub fn step(&self) -> u64 {
        self.state.step
    }

    /// Steps per epoch: the training pairs divided by the batch size, rounded up.
    pub fn steps_per_epoch(&self) -> u64 {
        self.train.len().div_ceil(self.state.config.batch_size) as u64
    }

    /// Steps in the whole run.
    pub fn total_steps(&self) -> u64 {
        self.steps_per_epoch() * self.state.config.epochs as u64
    }

    /// Trains to the end of the run, reporting progress to `progress`.
    ///
    /// # Errors
    /// [`TrainError::Diverged`] when the loss stops being finite, the layer's errors, and I/O
    /// errors from writing checkpoints.
    pub fn train(
        &mut self,
        progress: &mut dyn FnMut(&TrainProgress),
    ) -> Result<TrainReport, TrainError> {
        self.train_steps(u64::MAX, progress)
    }

    /// Trains at most `n` more steps (stopping at the end of the run), then writes a
    /// checkpoint when the trainer has a directory.
    ///
    /// # Errors
    /// As [`train`](Self::train).
    pub fn train_steps(
        &mut self,
        n: u64,
        progress: &mut dyn FnMut(&TrainProgress),
    ) -> Result<TrainReport, TrainError> {
        self.run(n, progress)
    }

    /// Writes a checkpoint into the checkpoint directory now.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] when the trainer has no checkpoint directory, I/O errors.
    pub fn save(&self) -> Result<PathBuf, TrainError> {
        let dir = self
            .checkpoint_dir
            .as_deref()
            .ok_or(TrainError::InvalidConfig {
                name: "checkpoint_dir",
                value: "none".into(),
                reason: "set a checkpoint directory before saving",
            })?;
        checkpoint::write_sections(
            dir,
            &[
                (MODEL_TAG, &|out| checkpoint::encode_into(&self.model, out)),
                (TRAINER_TAG, &|out| {
                    checkpoint::encode_into(&self.state, out)
                }),
            ],
        )
    }

    fn par(&self) -> Par {
        match self.state.config.threads {
            1 => Par::Seq,
            n => Par::rayon(n),
        }
    }

    fn run(
        &mut self,
        n: u64,
        progress: &mut dyn FnMut(&TrainProgress),
    ) -> Result<TrainReport, TrainError> {
        let total = self.total_steps();
        let target = self.state.step.saturating_add(n).min(total);
        let cfg = self.state.config.clone();
        let start = Instant::now();
        let first_step = self.state.step;
        let (mut call_loss, mut call_examples) = (0.0f64, 0u64);
        let mut window = Window::new();
        let mut checkpoint = None;
        let mut last_saved = None;
        let mut last_lr = 0.0f32;
        while self.state.step < target {
            let (stats, lr) = self.train_one(total)?;
            last_lr = lr;
            call_loss += stats.loss.sum;
            call_examples += stats.batch_size as u64;
            window.add(&stats);
            let step = self.state.step;
            if cfg.log_every_steps > 0 && step.is_multiple_of(cfg.log_every_steps) {
                progress(&window.report(self, total, last_lr));
                self.model.reset_layer_diagnostics();
                window = Window::new();
            }
            if cfg.checkpoint_every_steps > 0
                && step.is_multiple_of(cfg.checkpoint_every_steps)
                && self.checkpoint_dir.is_some()
            {
                checkpoint = Some(self.save()?);
                last_saved = Some(step);
            }
        }
        if window.steps > 0 {
            progress(&window.report(self, total, last_lr));
        }
        if self.checkpoint_dir.is_some() && last_saved != Some(self.state.step) {
            checkpoint = Some(self.save()?);
        }
        let elapsed = start.elapsed();
        Ok(TrainReport {
            steps_run: self.state.step - first_step,
            step: self.state.step,
            total_steps: total,
            mean_loss: if call_examples > 0 {
                call_loss / call_examples as f64
            } else {
                0.0
            },
            epoch_losses: self.state.epoch_losses.clone(),
            examples_per_second: call_examples as f64 / elapsed.as_secs_f64().max(1e-9),
            elapsed,
            checkpoint,
        })
    }

    /// One training step; returns its statistics and learning rate.
    fn train_one(&mut self, total: u64) -> Result<(StepStats, f32), TrainError> {
        let cfg = &self.state.config;
        let step = self.state.step;
        let per_epoch = self.steps_per_epoch();
        let epoch = (step / per_epoch) as usize;
        let position = (step % per_epoch) as usize;
        if self.order_epoch != Some(epoch) {
            self.order.clear();
            self.order.extend(0..self.train.len() as u32);
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            rng.set_stream(epoch as u64);
            self.order.shuffle(&mut rng);
            self.order_epoch = Some(epoch);
        }
        let batch = &self.order
            [position * cfg.batch_size..((position + 1) * cfg.batch_size).min(self.order.len())];
        self.batch_queries.clear();
        self.batch_items.clear();
        for &k in batch {
            let (q, i) = self.train[k as usize];
            self.batch_queries.push(q);
            self.batch_items.push(i);
        }
        let n_negatives = cfg.model.extra_negatives;
        if n_negatives > 0 {
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            rng.set_stream(NEGATIVE_STREAM | step);
            let n_items = self.model.n_items() as u32;
            self.batch_items
                .extend((0..n_negatives).map(|_| rng.random_range(0..n_items)));
        }
        let lr_scale = cfg.schedule.scale(step, total);
        let learning_rate = cfg.optimizer.learning_rate() * lr_scale;
        let stats = match self.pool.take() {
            Some(pool) => {
                let result = pool.install(|| self.compute_and_apply(step, lr_scale));
                self.pool = Some(pool);
                result
            }
            None => self.compute_and_apply(step, lr_scale),
        }?;
        let state = &mut self.state;
        state.step += 1;
        state.epoch_loss_sum += stats.loss.sum;
        state.epoch_examples += stats.batch_size as u64;
        if state.step.is_multiple_of(per_epoch) {
            state
                .epoch_losses
                .push(state.epoch_loss_sum / state.epoch_examples.max(1) as f64);
            state.epoch_loss_sum = 0.0;
            state.epoch_examples = 0;
        }
        Ok((stats, learning_rate))
    }
}

impl Trainer {
    /// The forward and backward pass of the current batch and the parameter update.
    fn compute_and_apply(&mut self, step: u64, lr_scale: f32) -> Result<StepStats, TrainError> {
        let par = self.par();
        let stats = self.model.compute_gradients(
            &self.batch_queries,
            &self.batch_items,
            &mut self.scratch,
            par,
        )?;
        if !stats.loss.sum.is_finite() {
            return Err(TrainError::Diverged {
                step,
                loss: stats.loss.sum,
            });
        }
        self.model
            .apply_gradients(&self.scratch, &mut self.state.optimizer, lr_scale, par)?;
        Ok(stats)
    }
}

/// Statistics accumulated between two progress reports.
struct Window {
    start: Instant,
    steps: u64,
    loss: f64,
    examples: u64,
    distortion: f64,
    joint_steps: u64,
    phase: Option<Phase>,
}

impl Window {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            steps: 0,
            loss: 0.0,
            examples: 0,
            distortion: 0.0,
            joint_steps: 0,
            phase: None,
        }
    }

    fn add(&mut self, stats: &StepStats) {
        self.steps += 1;
        self.loss += stats.loss.sum;
        self.examples += stats.batch_size as u64;
        if let Some(layer) = &stats.layer {
            if matches!(layer.phase, Phase::Joint) {
                self.distortion += f64::from(layer.distortion);
                self.joint_steps += 1;
            }
            self.phase = Some(layer.phase);
        }
    }

    fn report(&self, trainer: &Trainer, total: u64, learning_rate: f32) -> TrainProgress {
        let step = trainer.state.step;
        TrainProgress {
            epoch: ((step.saturating_sub(1)) / trainer.steps_per_epoch()) as usize,
            epochs: trainer.state.config.epochs,
            step,
            total_steps: total,
            examples_per_second: self.examples as f64
                / self.start.elapsed().as_secs_f64().max(1e-9),
            loss: self.loss / self.examples.max(1) as f64,
            learning_rate,
            layer_phase: self.phase,
            distortion: (self.joint_steps > 0)
                .then(|| (self.distortion / self.joint_steps as f64) as f32),
            layer: trainer
                .model
                .layer()
                .map(IndexingLayer::diagnostics)
                .filter(|d| d.rows > 0),
        }
    }
}

/// Refuses a dataset without training pairs or with a pair out of range.
fn check_pairs(dataset: &Dataset) -> Result<(), TrainError> {
    if dataset.train.is_empty() {
        return Err(TrainError::InvalidConfig {
            name: "dataset",
            value: "0 training pairs".into(),
            reason: "nothing to train on",
        });
    }
    if dataset.train.len() > u32::MAX as usize {
        return Err(TrainError::InvalidConfig {
            name: "dataset",
            value: format!("{} training pairs", dataset.train.len()),
            reason: "at most 2^32 − 1 training pairs are supported",
        });
    }
    crate::data::check_pairs(
        &dataset.train,
        dataset.n_queries(),
        dataset.n_items(),
        ["training query", "training item"],
    )?;
    Ok(())
}

/// The trainer's own pool for `threads > 1`; `None` uses the global pool (or runs
/// sequentially).
fn thread_pool(threads: usize) -> Result<Option<rayon::ThreadPool>, TrainError> {
    if threads <= 1 {
        return Ok(None);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map(Some)
        .map_err(|e| TrainError::InvalidConfig {
            name: "threads",
            value: format!("{threads} ({e})"),
            reason: "cannot start the thread pool",
        })
}
