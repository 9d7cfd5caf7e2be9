//! `poeem train | export | embed | evaluate`: the model commands.
//!
//! A model directory holds the checkpoint (`checkpoint.poeem`: model, optimiser states, the run's
//! settings and step) and `data.json`, the description of the training data ([`DataSource`]):
//! the synthetic tutorial's size and seed, or the data files (absolute paths) with their columns
//! and split. `--resume` and `evaluate` rebuild the same dataset from it, so the held-out split
//! evaluated is the one the model was trained without; the files must still be in place.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use poeem::io::write_npy;
use poeem::pipeline::{
    CoarseDiagnostics, DATA_FILE, DataSource, EvalSet, IdMap, ItemIds, export_index,
    markdown_table, read_token_indices, write_token_list,
};
use poeem::pq::Par;
use poeem::rotation::PairSelection;
use poeem::search::{Index, Probe, SearchIndex, SearchParams, write_index};
use poeem::train::checkpoint::checkpoint_path;
use poeem::train::data::{FeatureSource, InteractionsSource, SplitConfig};
use poeem::train::layer::{CoarseObjective, LayerDiagnostics, Phase};
use poeem::train::metrics::RankingMetrics;
use poeem::train::{
    DataConfig, LayerUpdateItems, Model, OptimizerConfig, RotationMode, TrainConfig, TrainProgress,
    Trainer,
};
use poeem::train::{Dataset, EntityFeatures};

use crate::index_commands::Threads;
use crate::outputs::{Named, check_outputs, optional};

/// The model presets of `poeem train`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// The reference tutorial: 64-d id embeddings, cosine × 30, in-batch softmax, Adagrad 0.1,
    /// batch 128, 3 epochs; layer J=8, K=256, D=8 after 16,384 warm-up steps.
    Tutorial,
    /// A feature model: every field embedded in 32 dimensions, a 128-wide hidden layer per
    /// tower, 64-d output, Adam 0.001, batch 1024, 20 epochs, log-Q correction; layer J=128,
    /// K=16, D=32 after 1,024 warm-up steps.
    Movielens,
}

/// The indexing layer of `poeem train`, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IndexMode {
    /// No layer: the plain two-tower model (index it post hoc with `poeem embed` + `poeem build`).
    Off,
    /// IVF-PQ layer without rotation.
    Pq,
    /// OPQ rotation fitted at the layer's warm start, then fixed.
    Opq,
    /// Rotation learned during training by Givens steps on random pairs.
    GivensRandom,
    /// Givens steps on greedily matched pairs.
    GivensGreedy,
    /// Givens steps on the steepest (maximum-weight) matching.
    GivensSteepest,
    /// OPQ at warm start, then Givens steps on random pairs.
    OpqGivensRandom,
    /// OPQ at warm start, then Givens steps on greedily matched pairs.
    OpqGivensGreedy,
    /// OPQ at warm start, then Givens steps on the steepest matching.
    OpqGivensSteepest,
}

impl IndexMode {
    /// The layer's rotation mode; `None` for no layer.
    fn rotation(self) -> Option<RotationMode> {
        use PairSelection::{Greedy, Random, Steepest};
        Some(match self {
            Self::Off => return None,
            Self::Pq => RotationMode::None,
            Self::Opq => RotationMode::Opq,
            Self::GivensRandom => RotationMode::Givens(Random),
            Self::GivensGreedy => RotationMode::Givens(Greedy),
            Self::GivensSteepest => RotationMode::Givens(Steepest),
            Self::OpqGivensRandom => RotationMode::OpqThenGivens(Random),
            Self::OpqGivensGreedy => RotationMode::OpqThenGivens(Greedy),
            Self::OpqGivensSteepest => RotationMode::OpqThenGivens(Steepest),
        })
    }
}

/// The settings `--resume` takes from the model directory instead of the command line.
const RUN_SETTINGS: [&str; 33] = [
    "interactions",
    "synthetic",
    "synthetic_pairs",
    "data_seed",
    "user_col",
    "item_col",
    "time_col",
    "user_features",
    "item_features",
    "no_features",
    "test_fraction",
    "preset",
    "index",
    "n_lists",
    "n_subspaces",
    "n_bits",
    "warmup_steps",
    "buffer_size",
    "regularizer_weight",
    "coarse_objective",
    "coarse_items",
    "epochs",
    "batch_size",
    "dim",
    "learning_rate",
    "layer_learning_rate",
    "temperature",
    "embedding_dim",
    "hidden",
    "extra_negatives",
    "seed",
    "checkpoint_every",
    "log_every",
];

/// What the layer's coarse centroids learn from ([`CoarseObjective`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CoarseObjectiveArg {
    /// Each centroid moves toward the items of its list (online k-means of the coarse level).
    ListMeans,
    /// Each centroid descends the whole reconstruction error (the reference implementation).
    Reconstruction,
}

impl CoarseObjectiveArg {
    fn objective(self) -> CoarseObjective {
        match self {
            Self::ListMeans => CoarseObjective::ListMeans,
            Self::Reconstruction => CoarseObjective::Reconstruction,
        }
    }
}

/// `--coarse-items`: `batches` or `catalogue:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LayerUpdateItemsArg(LayerUpdateItems);

impl std::str::FromStr for LayerUpdateItemsArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let items = match s.split_once(':') {
            None if s == "batches" => LayerUpdateItems::Batches,
            Some(("catalogue", rows)) => match rows.parse::<usize>() {
                Ok(rows) if rows > 0 => LayerUpdateItems::Catalogue { rows },
                _ => return Err(format!("{rows:?} is not a positive number of items")),
            },
            _ => return Err("expected `batches` or `catalogue:N` (e.g. catalogue:1024)".into()),
        };
        Ok(Self(items))
    }
}

/// Arguments of `poeem train`.
#[derive(Debug, Args)]
#[command(after_help = "\
Data: --interactions F reads a CSV/TSV table with a header (delimiter detected), a RecBole \
atomic file or a Parquet file (recognised by its content; so are feature files); for \
F = DIR/NAME.inter the columns default to user_id, item_id, timestamp and \
DIR/NAME.user and DIR/NAME.item are read as feature files when they exist. Each user's latest \
interaction (by --time-col, else file order) is held out for `poeem evaluate` unless \
--test-fraction is given (--test-fraction 0 trains on everything; score such a model on your \
own held-out file with `poeem evaluate --test F`). --synthetic trains on the built-in synthetic tutorial instead \
(10,000 query and item ids; `poeem evaluate` then judges by the tutorial's relevance rule).

MODEL_DIR receives checkpoint.poeem (written atomically every --checkpoint-every steps and at \
the end, so an interrupted run loses at most that many steps) and data.json (the data \
description that --resume and `poeem evaluate` reload).")]
pub struct TrainArgs {
    /// Interactions file (CSV, TSV, RecBole .inter or Parquet).
    #[arg(long, value_name = "F", required_unless_present_any = ["synthetic", "resume"])]
    interactions: Option<PathBuf>,
    /// Train on the built-in synthetic tutorial data instead of a file.
    #[arg(long, conflicts_with = "interactions")]
    synthetic: bool,
    /// Pairs of synthetic data (the reference tutorial: 1,000,000).
    #[arg(long, default_value_t = 1_000_000, requires = "synthetic")]
    synthetic_pairs: usize,
    /// Seed of the synthetic pairs (default: --seed).
    #[arg(long, requires = "synthetic")]
    data_seed: Option<u64>,
    /// Query (user) id column [default: user_id].
    #[arg(long, value_name = "C", requires = "interactions")]
    user_col: Option<String>,
    /// Item id column [default: item_id].
    #[arg(long, value_name = "C", requires = "interactions")]
    item_col: Option<String>,
    /// Timestamp column for the leave-last-out split [default: timestamp for .inter files,
    /// none otherwise].
    #[arg(long, value_name = "C", requires = "interactions")]
    time_col: Option<String>,
    /// Per-user feature file (its id column is --user-col).
    #[arg(long, value_name = "F", requires = "interactions")]
    user_features: Option<PathBuf>,
    /// Per-item feature file (its id column is --item-col).
    #[arg(long, value_name = "F", requires = "interactions")]
    item_features: Option<PathBuf>,
    /// Do not read the .user / .item files next to a .inter file.
    #[arg(long, requires = "interactions")]
    no_features: bool,
    /// Hold out this random share of the interactions instead of each user's last one.
    #[arg(long, value_name = "FRACTION", requires = "interactions")]
    test_fraction: Option<f64>,
    /// Model and training preset [default: tutorial with --synthetic, movielens otherwise].
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// The indexing layer trained with the model [default: pq].
    #[arg(long, value_enum)]
    index: Option<IndexMode>,
    /// Coarse lists J of the layer [default: the preset's].
    #[arg(long)]
    n_lists: Option<usize>,
    /// PQ subspaces D of the layer.
    #[arg(long)]
    n_subspaces: Option<usize>,
    /// Bits per PQ code (K = 2^bits codewords).
    #[arg(long)]
    n_bits: Option<u32>,
    /// Steps during which the layer is the identity, before its k-means warm start.
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// Rows buffered after the warm-up for the layer's k-means init.
    #[arg(long)]
    buffer_size: Option<usize>,
    /// Weight of the layer's regularizer.
    #[arg(long)]
    regularizer_weight: Option<f32>,
    /// What the layer's coarse centroids learn from: their lists' items (list-means, the
    /// default) or the whole reconstruction error (reconstruction, the reference's).
    #[arg(long, value_enum)]
    coarse_objective: Option<CoarseObjectiveArg>,
    /// Which items the layer's coarse centroids learn from after the warm start: `batches`
    /// (each batch's items, so popular items weigh more; the reference's) or `catalogue:N` (N
    /// uniformly sampled catalogue items per step) [default: the preset's: catalogue:1024 for
    /// movielens, batches for the tutorial, whose items are uniform].
    #[arg(long, value_name = "batches|catalogue:N")]
    coarse_items: Option<LayerUpdateItemsArg>,
    /// Passes over the training pairs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Queries per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Output dimension of both towers.
    #[arg(long)]
    dim: Option<usize>,
    /// Learning rate of the towers and the layer.
    #[arg(long)]
    learning_rate: Option<f32>,
    /// Learning rate of the layer's centroids and codewords (default: --learning-rate).
    #[arg(long)]
    layer_learning_rate: Option<f32>,
    /// Softmax temperature (the score is cosine / temperature).
    #[arg(long)]
    temperature: Option<f32>,
    /// Width of each feature field's embedding (models with an MLP).
    #[arg(long)]
    embedding_dim: Option<usize>,
    /// Hidden widths of each tower's MLP, comma-separated (e.g. 256,128).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    hidden: Option<Vec<usize>>,
    /// Uniformly sampled extra negatives per batch.
    #[arg(long)]
    extra_negatives: Option<usize>,
    /// Seed of the initialisation, shuffling, sampling and the layer [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Write a checkpoint every this many steps [default: the preset's, 5,000 or 2,000].
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Update the progress display every this many steps [default: the preset's].
    #[arg(long)]
    log_every: Option<u64>,
    /// Continue the run checkpointed in MODEL_DIR, with its stored data and settings (the
    /// result is the same as that of an uninterrupted run).
    #[arg(long, conflicts_with_all = RUN_SETTINGS)]
    resume: bool,
    #[command(flatten)]
    threads: Threads,
    /// Model directory (created if needed; must not hold a model unless --resume).
    #[arg(long, value_name = "MODEL_DIR")]
    out: PathBuf,
}

impl TrainArgs {
    /// The data these arguments name.
    fn data_source(&self) -> Result<DataSource> {
        if self.synthetic {
            return Ok(DataSource::Tutorial {
                n_pairs: self.synthetic_pairs,
                seed: self.data_seed.or(self.seed).unwrap_or(0),
            });
        }
        let path = self
            .interactions
            .clone()
            .context("give --interactions F or --synthetic")?;
        let recbole = path.extension().is_some_and(|e| e == "inter");
        let user_col = self.user_col.as_deref().unwrap_or("user_id");
        let item_col = self.item_col.as_deref().unwrap_or("item_id");
        let time_col = self
            .time_col
            .clone()
            .or_else(|| recbole.then(|| "timestamp".to_owned()));
        let sibling = |ext: &str| {
            let file = path.with_extension(ext);
            (recbole && !self.no_features && file.is_file()).then_some(file)
        };
        let user_features = self.user_features.clone().or_else(|| sibling("user"));
        let item_features = self.item_features.clone().or_else(|| sibling("item"));
        let mut interactions = InteractionsSource::new(&path, user_col, item_col);
        interactions.time_column = time_col;
        let mut config = DataConfig::new(interactions);
        config.query_features = user_features.map(|f| FeatureSource::new(f, user_col));
        config.item_features = item_features.map(|f| FeatureSource::new(f, item_col));
        if let Some(test_fraction) = self.test_fraction {
            config.split = SplitConfig::Random {
                test_fraction,
                seed: self.seed.unwrap_or(0),
            };
        }
        Ok(DataSource::Files(Box::new(config)).absolute()?)
    }

    /// The training settings: the preset with the given options applied.
    fn train_config(&self) -> Result<TrainConfig> {
        let preset = self.preset.unwrap_or(if self.synthetic {
            Preset::Tutorial
        } else {
            Preset::Movielens
        });
        let mut config = match preset {
            Preset::Tutorial => TrainConfig::tutorial_poeem(),
            Preset::Movielens => TrainConfig::movielens(),
        };
        let rotation = self.index.unwrap_or(IndexMode::Pq).rotation();
        match rotation {
            None => config.index = None,
            Some(rotation) => {
                let layer = config.index.as_mut().expect("both presets have a layer");
                layer.rotation = rotation;
                set(&mut layer.n_lists, self.n_lists);
                set(&mut layer.n_subspaces, self.n_subspaces);
                set(&mut layer.n_bits, self.n_bits);
                set(&mut layer.warmup_steps, self.warmup_steps);
                set(&mut layer.buffer_size, self.buffer_size);
                set(&mut layer.regularizer_weight, self.regularizer_weight);
                set(
                    &mut layer.coarse_objective,
                    self.coarse_objective.map(CoarseObjectiveArg::objective),
                );
                if let Some(LayerUpdateItemsArg(items)) = self.coarse_items {
                    config.model.layer_update_items = items;
                }
            }
        }
        let layer_only = [
            ("--n-lists", self.n_lists.is_some()),
            ("--n-subspaces", self.n_subspaces.is_some()),
            ("--n-bits", self.n_bits.is_some()),
            ("--warmup-steps", self.warmup_steps.is_some()),
            ("--buffer-size", self.buffer_size.is_some()),
            ("--regularizer-weight", self.regularizer_weight.is_some()),
            ("--coarse-objective", self.coarse_objective.is_some()),
            ("--coarse-items", self.coarse_items.is_some()),
            ("--layer-learning-rate", self.layer_learning_rate.is_some()),
        ];
        if rotation.is_none()
            && let Some((flag, _)) = layer_only.iter().find(|(_, given)| *given)
        {
            bail!("{flag} sets the indexing layer, which --index off leaves out");
        }
        set(&mut config.epochs, self.epochs);
        set(&mut config.batch_size, self.batch_size);
        set(&mut config.model.dim, self.dim);
        set(&mut config.model.temperature, self.temperature);
        set(&mut config.model.extra_negatives, self.extra_negatives);
        set(&mut config.checkpoint_every_steps, self.checkpoint_every);
        set(&mut config.log_every_steps, self.log_every);
        for tower in [&mut config.model.query, &mut config.model.item] {
            if self.embedding_dim.is_some() {
                tower.embedding_dim = self.embedding_dim;
            }
            if let Some(hidden) = &self.hidden {
                tower.mlp = Some(hidden.clone());
            }
        }
        if let Some(lr) = self.learning_rate {
            config.optimizer = with_learning_rate(config.optimizer, lr)?;
            if let Some(layer) = &mut config.index {
                layer.optimizer = with_learning_rate(layer.optimizer, lr)?;
            }
        }
        if let (Some(lr), Some(layer)) = (self.layer_learning_rate, &mut config.index) {
            layer.optimizer = with_learning_rate(layer.optimizer, lr)?;
        }
        let seed = self.seed.unwrap_or(0);
        config.seed = seed;
        config.model.seed = seed;
        if let Some(layer) = &mut config.index {
            layer.seed = seed;
        }
        config.threads = thread_count(self.threads.par());
        config.validate()?;
        Ok(config)
    }
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

/// How evenly the layer's codes were used over the last interval: lists and codewords used,
/// and the KL divergence of their histograms to uniform (0: even; dead or crowded centroids
/// raise it).
fn code_use(diagnostics: Option<&LayerDiagnostics>) -> String {
    let Some(d) = diagnostics else {
        return String::new();
    };
    let lists = d.coarse.map_or_else(String::new, |c| {
        format!(
            ", lists used {}/{} (KL {:.3})",
            c.used, c.codewords, c.kl_to_uniform
        )
    });
    let codewords = d.pq.first().map_or(0, |c| c.codewords);
    format!(
        "{lists}, codewords used {:.1}/{codewords} (KL mean {:.3}, max {:.3})",
        d.pq_used_mean, d.pq_kl_mean, d.pq_kl_max
    )
}

/// `config` with learning rate `lr`.
fn with_learning_rate(config: OptimizerConfig, lr: f32) -> Result<OptimizerConfig> {
    Ok(match config {
        OptimizerConfig::Adagrad {
            initial_accumulator,
            ..
        } => OptimizerConfig::Adagrad {
            learning_rate: lr,
            initial_accumulator,
        },
        OptimizerConfig::Adam {
            beta1,
            beta2,
            epsilon,
            ..
        } => OptimizerConfig::Adam {
            learning_rate: lr,
            beta1,
            beta2,
            epsilon,
        },
        other => bail!("cannot set the learning rate of {other:?}"),
    })
}

/// The trainer's thread setting for `par`.
fn thread_count(par: Par) -> usize {
    match par {
        Par::Seq => 1,
        Par::Rayon(n) => n.get(),
    }
}

/// A progress bar over the steps of a training run, on stderr. When stderr is not a terminal
/// the bar is hidden and a line is printed at the end of each epoch instead.
pub(crate) struct TrainBar {
    bar: ProgressBar,
    name: String,
    epoch: Option<usize>,
}

impl TrainBar {
    /// A bar for the run named `name` (shown before the bar).
    pub(crate) fn new(name: &str) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:25}] {pos}/{len} steps {msg} ({elapsed}, eta {eta})",
            )
            .expect("valid progress template")
            .progress_chars("=> "),
        );
        bar.set_prefix(name.to_owned());
        Self {
            bar,
            name: name.to_owned(),
            epoch: None,
        }
    }

    /// Shows one progress report.
    pub(crate) fn update(&mut self, p: &TrainProgress) {
        self.bar.set_length(p.total_steps);
        self.bar.set_position(p.step);
        let layer = match (p.layer_phase, p.distortion) {
            (None, _) => String::new(),
            (Some(Phase::Joint), Some(d)) => {
                format!(
                    ", layer joint, distortion {d:.4}{}",
                    code_use(p.layer.as_ref())
                )
            }
            (Some(phase), _) => format!(", layer {}", phase_name(phase)),
        };
        let msg = format!(
            "epoch {}/{}, loss {:.4}, {:.0} examples/s{layer}",
            p.epoch + 1,
            p.epochs,
            p.loss,
            p.examples_per_second
        );
        if self.bar.is_hidden() && self.epoch.is_some_and(|e| e != p.epoch) {
            eprintln!("{}: step {}/{}: {msg}", self.name, p.step, p.total_steps);
        }
        self.epoch = Some(p.epoch);
        self.bar.set_message(msg);
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::WarmUp => "warm-up",
        Phase::Buffering => "buffering",
        Phase::Joint => "joint",
    }
}

/// `poeem train`: trains (or resumes) a model into the model directory.
pub fn train(args: &TrainArgs) -> Result<()> {
    let dir = &args.out;
    let (mut trainer, source) = if args.resume {
        if !checkpoint_path(dir).exists() {
            bail!(
                "{} holds no checkpoint to resume (train without --resume to start a run)",
                dir.display()
            );
        }
        let source = DataSource::read(dir)?;
        check_outputs(
            &data_inputs(&source),
            &[Named::new("the checkpoint", checkpoint_path(dir))],
        )?;
        let dataset = source.load().context("reloading the training data")?;
        let mut trainer = Trainer::resume(dir, &dataset)
            .with_context(|| format!("resuming the run in {}", dir.display()))?;
        trainer.set_threads(thread_count(args.threads.par()))?;
        eprintln!(
            "resuming {} at step {} of {}",
            dir.display(),
            trainer.step(),
            trainer.total_steps()
        );
        (trainer, source)
    } else {
        if checkpoint_path(dir).exists() {
            bail!(
                "{} already holds a model; pass --resume to continue its run, or choose \
                 another directory",
                dir.display()
            );
        }
        let source = args.data_source()?;
        let outputs = model_files(dir).into_iter().map(Named::in_created_dir);
        check_outputs(&data_inputs(&source), &outputs.collect::<Vec<_>>())?;
        let config = args.train_config()?;
        let dataset = source.load().context("loading the training data")?;
        let trainer = Trainer::new(config, &dataset)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        source.save(dir)?;
        for line in data_summary(&source, &dataset) {
            eprintln!("{line}");
        }
        eprintln!("{} steps", trainer.total_steps());
        (trainer, source)
    };
    trainer.set_checkpoint_dir(dir)?;
    let every = trainer.config().checkpoint_every_steps;
    eprintln!(
        "checkpointing into {} every {every} steps; after an interruption, rerun with \
         --resume --out {} to continue",
        dir.display(),
        dir.display()
    );
    let mut bar = TrainBar::new("training");
    let report = trainer.train(&mut |p| bar.update(p));
    bar.finish();
    let report = report?;
    let layer = match trainer.model().layer() {
        None => "no indexing layer".to_owned(),
        Some(layer) if layer.is_initialized() => format!(
            "indexing layer trained jointly (phase {})",
            phase_name(layer.phase())
        ),
        Some(layer) => format!(
            "indexing layer still in its {} phase: nothing to export yet",
            phase_name(layer.phase())
        ),
    };
    outln!(
        "trained {} steps ({} this call) in {:.1} s, {:.0} examples/s; epoch losses {}; {layer}",
        report.step,
        report.steps_run,
        report.elapsed.as_secs_f64(),
        report.examples_per_second,
        report
            .epoch_losses
            .iter()
            .map(|l| format!("{l:.4}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    outln!(
        "model in {} ({})",
        dir.display(),
        match source {
            DataSource::Tutorial { .. } => "synthetic tutorial data",
            DataSource::Files(_) => "data files",
        }
    );
    Ok(())
}

/// What `poeem train` says about its data: the split, the feature files (or why there are
/// none), and the counts.
fn data_summary(source: &DataSource, dataset: &Dataset) -> Vec<String> {
    let mut lines = Vec::new();
    match source {
        DataSource::Tutorial { n_pairs, seed } => lines.push(format!(
            "data: the synthetic tutorial ({n_pairs} pairs, seed {seed}); no held-out pairs \
             (`poeem evaluate` judges by the tutorial's rule)"
        )),
        DataSource::Files(config) => {
            let split = match config.split {
                SplitConfig::LeaveLastOut => format!(
                    "each user's latest interaction held out (by {}; users with one \
                     interaction keep it for training)",
                    config
                        .interactions
                        .time_column
                        .as_deref()
                        .map_or("file order, no time column".to_owned(), |c| format!(
                            "column {c}"
                        ))
                ),
                SplitConfig::Random {
                    test_fraction: 0.0, ..
                } => "nothing held out (--test-fraction 0): evaluate with `poeem evaluate \
                      --test F`"
                    .to_owned(),
                SplitConfig::Random {
                    test_fraction,
                    seed,
                } => format!("a random {test_fraction} of the pairs held out (seed {seed})"),
                SplitConfig::None => "nothing held out".to_owned(),
            };
            lines.push(format!(
                "split: {split}: {} training and {} held-out pairs",
                dataset.train.len(),
                dataset.test.len()
            ));
            let fields = |f: &EntityFeatures| {
                f.fields[1..]
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut loaded = Vec::new();
            for (what, file, side) in [
                ("user", &config.query_features, &dataset.query_features),
                ("item", &config.item_features, &dataset.item_features),
            ] {
                if let Some(file) = file {
                    loaded.push(format!(
                        "{what} features from {} ({} fields: {})",
                        file.path.display(),
                        side.fields.len() - 1,
                        fields(side)
                    ));
                }
            }
            if loaded.is_empty() {
                lines.push(
                    "features: none loaded, ids only (pass --user-features F / \
                     --item-features F; a RecBole DIR/NAME.inter also picks up DIR/NAME.user \
                     and DIR/NAME.item when they exist)"
                        .to_owned(),
                );
            } else {
                lines.push(format!("features: {}", loaded.join("; ")));
            }
        }
    }
    lines.push(format!(
        "{} users, {} items; {} user and {} item feature fields besides the ids",
        dataset.n_queries(),
        dataset.n_items(),
        dataset.query_features.fields.len() - 1,
        dataset.item_features.fields.len() - 1
    ));
    lines
}

/// Arguments of `poeem export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Model directory written by `poeem train` (with the indexing layer).
    #[arg(long, value_name = "MODEL_DIR")]
    model: PathBuf,
    #[command(flatten)]
    threads: Threads,
    /// Index file to write (atomically). Item ids are the data's ids when they are all
    /// integers; otherwise dense indices, with the data's ids stored in the index (search,
    /// evaluate and recommend print them) and also listed in OUT with its extension replaced
    /// by .items.txt (idx.poeem → idx.items.txt; line i: the id of index i).
    #[arg(long)]
    out: PathBuf,
}

/// `poeem export`: writes the index the model learned (encoding only, no k-means or OPQ).
pub fn export(args: &ExportArgs) -> Result<()> {
    check_outputs(
        &model_files(&args.model),
        &[
            Named::new("--out", &args.out),
            Named::new("the item id list", items_list(&args.out)),
        ],
    )?;
    let model = load_model(&args.model)?;
    let (parts, report) = export_index(&model, args.threads.par())?;
    write_index(&args.out, &parts)?;
    let ids = match report.item_ids {
        ItemIds::Tokens => "ids: the data's item ids".to_owned(),
        ItemIds::Dense | ItemIds::Keys => {
            let list = items_list(&args.out);
            write_token_list(&list, model.items().tokens())?;
            format!(
                "ids: dense item indices with the data's ids stored in the index (they are \
                 not all integers; also listed in {}, line i: the id of index i)",
                list.display()
            )
        }
    };
    if !report.normalized_items {
        eprintln!(
            "warning: the model does not normalise item embeddings before the layer, so the \
             index's inner products rank items by ⟨q, τ(v)⟩ rather than the model's cosine"
        );
    }
    outln!(
        "exported {} items to {} in {:.3} s (encoding with the learned codec {:.3} s, embedding \
         {:.3} s; no k-means, no OPQ); relative distortion {:.4}; {ids}",
        report.n_items,
        args.out.display(),
        report.total_seconds(),
        report.encode_seconds,
        report.embed_seconds,
        report.relative_distortion
    );
    Ok(())
}

/// Which tower `poeem embed` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Side {
    /// The query (user) tower: L2-normalised embeddings.
    Query,
    /// The item tower: the embeddings before the indexing layer (normalised as the model
    /// defines), the input of `poeem build` for a post-hoc index.
    Item,
}

/// Arguments of `poeem embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Model directory written by `poeem train`.
    #[arg(long, value_name = "MODEL_DIR")]
    model: PathBuf,
    /// Which tower.
    #[arg(long, value_enum)]
    side: Side,
    /// Ids to embed, one per line, in the output's row order (default: every id, in the
    /// model's id order).
    #[arg(long, value_name = "F")]
    ids: Option<PathBuf>,
    #[command(flatten)]
    threads: Threads,
    /// Embeddings to write: a float32 .npy, one row per id. The ids of the rows are listed in
    /// OUT with the extension .ids.txt, one per line.
    #[arg(long)]
    out: PathBuf,
}

/// `poeem embed`: writes one side's embeddings as `.npy`, with the list of their ids.
pub fn embed(args: &EmbedArgs) -> Result<()> {
    let list = args.out.with_extension("ids.txt");
    let inputs = model_files(&args.model)
        .into_iter()
        .chain(optional("--ids", args.ids.as_deref()));
    check_outputs(
        &inputs.collect::<Vec<_>>(),
        &[
            Named::new("--out", &args.out),
            Named::new("the id list", &list),
        ],
    )?;
    let model = load_model(&args.model)?;
    let (vocab, name) = match args.side {
        Side::Query => (model.queries(), "query"),
        Side::Item => (model.items(), "item"),
    };
    let indices = match &args.ids {
        Some(path) => read_token_indices(path, vocab, name)?,
        None => (0..vocab.len() as u32).collect(),
    };
    let par = args.threads.par();
    let vectors = match args.side {
        Side::Query => model.embed_queries(&indices, par)?,
        Side::Item => model.embed_items(&indices, par)?,
    };
    let tokens: Vec<String> = indices.iter().map(|&i| vocab.token(i).to_owned()).collect();
    write_npy(&args.out, &vectors, model.dim())?;
    write_token_list(&list, &tokens)?;
    outln!(
        "wrote {} {name} embeddings of dimension {} to {} (ids in {})",
        indices.len(),
        model.dim(),
        args.out.display(),
        list.display()
    );
    Ok(())
}

/// How `poeem evaluate` reads the ids an index returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IndexIds {
    /// Through the index's item keys when it carries them (`poeem export`, `poeem build --ids
    /// F.ids.txt`); else as recorded by `poeem export`; else dense item indices (such as
    /// `poeem build` over `poeem embed --side item` output without --ids).
    Auto,
    /// The data's item ids (integers).
    Tokens,
    /// Dense item indices (row i of `poeem embed --side item` without --ids).
    Dense,
}

/// Arguments of `poeem evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Model directory written by `poeem train`.
    #[arg(long, value_name = "MODEL_DIR")]
    model: PathBuf,
    /// Also evaluate retrieval through this index (queries embedded by the model's query tower).
    #[arg(long)]
    index: Option<PathBuf>,
    /// Lists probed per query in the index, comma-separated.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_value = "1", requires = "index")]
    nprobe: Vec<usize>,
    /// How the index chooses the lists to probe: auto (by its metric: inner product for an
    /// exported index), l2 (nearest centroids, as the reference's search) or ip.
    #[arg(long, default_value = "auto", requires = "index")]
    probe: Probe,
    /// Which ids the index returns.
    #[arg(long, value_enum, default_value = "auto", requires = "index")]
    index_ids: IndexIds,
    /// Score on the pairs of this file instead of the held-out split: the interactions' layout
    /// (the same user and item columns; CSV, TSV, RecBole or Parquet), every user and item
    /// known to the model. Each user's training items are left out of the rankings, as for
    /// the built-in split. For a model trained on all its data (--test-fraction 0).
    #[arg(long, value_name = "F")]
    test: Option<PathBuf>,
    /// Cut-offs K of recall@K, precision@K and NDCG@K, comma-separated.
    #[arg(short = 'k', long = "k", value_delimiter = ',', num_args = 1.., required = true)]
    k: Vec<usize>,
    #[command(flatten)]
    threads: Threads,
}

/// `poeem evaluate`: ranking metrics on the held-out pairs (or the tutorial's rule), brute
/// force and through an index.
pub fn evaluate(args: &EvaluateArgs) -> Result<()> {
    let source = DataSource::read(&args.model)?;
    let inputs = model_files(&args.model)
        .into_iter()
        .chain(data_inputs(&source))
        .chain(optional("--index", args.index.as_deref()))
        .chain(optional("--test", args.test.as_deref()));
    check_outputs(&inputs.collect::<Vec<_>>(), &[])?;
    let model = load_model(&args.model)?;
    let eval = EvalSet::for_model(&source, &model, args.test.as_deref())?;
    let par = args.threads.par();
    let ks = &args.k;
    let what = match (&source, &args.test) {
        (DataSource::Tutorial { .. }, _) => "the synthetic tutorial's relevance rule".to_owned(),
        (DataSource::Files(_), None) => "held-out pairs, training items excluded".to_owned(),
        (DataSource::Files(_), Some(test)) => {
            format!("the pairs of {}, training items excluded", test.display())
        }
    };
    eprintln!("evaluating {} queries ({what})", eval.queries().len());
    let start = Instant::now();
    let brute = eval.brute_force_model(&model, ks, par)?;
    let mut rows = vec![row("brute force", &brute, start.elapsed().as_secs_f64())];
    let mut coarse = None;
    if let Some(path) = &args.index {
        let index = Index::open(path)?;
        let kind = match args.index_ids {
            IndexIds::Auto => None,
            IndexIds::Tokens => Some(ItemIds::Tokens),
            IndexIds::Dense => Some(ItemIds::Dense),
        };
        let ids = IdMap::for_index(&index, model.items(), kind)?;
        check_index(&index, &model, ids.kind(), path)?;
        let searchable = SearchIndex::new(index.view());
        let queries = model.embed_queries(eval.queries(), par)?;
        for &nprobe in &args.nprobe {
            let params = SearchParams::new(1, nprobe).with_probe(args.probe);
            let start = Instant::now();
            let metrics = eval
                .through_index(&searchable, &queries, &ids, ks, params, par)
                .with_context(|| format!("searching {}", path.display()))?;
            let name = format!(
                "index, nprobe {nprobe} ({} probe)",
                args.probe.resolve(index.params().metric)
            );
            rows.push(row(&name, &metrics, start.elapsed().as_secs_f64()));
        }
        let all: Vec<u32> = (0..model.n_items() as u32).collect();
        let items = model.embed_items(&all, par)?;
        let k = ks.iter().copied().max().unwrap_or(1);
        coarse = Some(CoarseDiagnostics::measure(
            &searchable,
            &queries,
            &items,
            &ids,
            k,
            &args.nprobe,
            args.probe,
            par,
        )?);
    }
    let mut header = vec!["retrieval".to_owned()];
    for k in ks {
        header.extend([
            format!("recall@{k}"),
            format!("precision@{k}"),
            format!("NDCG@{k}"),
        ]);
    }
    header.push("seconds".to_owned());
    out!("{}", markdown_table(&header, &rows));
    if let Some(coarse) = coarse {
        outln!(
            "\ncoarse level: the lists each query probes against its exact top-{} by this \
             model's embeddings",
            coarse.k
        );
        for line in coarse.summary_lines() {
            outln!("{line}");
        }
    }
    Ok(())
}

/// A table row: the name, the metrics at each cut-off, the time.
fn row(name: &str, metrics: &[RankingMetrics], seconds: f64) -> Vec<String> {
    let mut cells = vec![name.to_owned()];
    for m in metrics {
        cells.extend([m.recall, m.precision, m.ndcg].map(|v| format!("{v:.4}")));
    }
    cells.push(format!("{seconds:.2}"));
    cells
}

/// Checks that `index` can serve `model`'s queries and that its ids can be read as `kind`.
pub(crate) fn check_index(index: &Index, model: &Model, kind: ItemIds, path: &Path) -> Result<()> {
    let p = index.params();
    if p.dim != model.dim() {
        bail!(
            "{}: the index has dimension {}, the model {}",
            path.display(),
            p.dim,
            model.dim()
        );
    }
    if kind == ItemIds::Dense && p.n_items != model.n_items() {
        bail!(
            "{}: the index holds {} items, the model {}: its ids cannot be dense item indices \
             (build it from all of `poeem embed --side item`, or pass --index-ids tokens if its \
             ids are the data's item ids)",
            path.display(),
            p.n_items,
            model.n_items()
        );
    }
    Ok(())
}

/// The files of a model directory: its checkpoint and data description.
pub(crate) fn model_files(dir: &Path) -> Vec<Named> {
    vec![
        Named::new("the model's checkpoint", checkpoint_path(dir)),
        Named::new("the model's data description", dir.join(DATA_FILE)),
    ]
}

/// The data files `source` reads.
pub(crate) fn data_inputs(source: &DataSource) -> Vec<Named> {
    source
        .files()
        .into_iter()
        .map(|(what, path)| Named::new(format!("the {what} file"), path))
        .collect()
}

/// Where `poeem export --out OUT` lists the item ids when they are not all integers.
fn items_list(out: &Path) -> PathBuf {
    out.with_extension("items.txt")
}

/// Loads the model of a model directory.
pub(crate) fn load_model(dir: &Path) -> Result<Model> {
    Model::load(dir).with_context(|| format!("loading the model in {}", dir.display()))
}
