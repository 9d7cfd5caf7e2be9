//! `reproduce scale`: the tutorial's generator at the paper's scale ([`ScaledTutorial`]: 2,000,000
//! items and queries, 50,000,000 interactions by default). A plain model and a Poeem model (the
//! coarse level of issue 18: list means, here of each batch's items) are trained on it; post-hoc
//! IVF-PQ and OPQ+IVF-PQ (ours, and faiss's with `--faiss`) are built on the plain model's items;
//! precision@100 on sampled queries at several nprobes; the time and peak memory of every stage.
//! `--sweep N1,N2,…` runs several catalogue sizes (interactions in proportion) and plots the cost
//! of each stage against the size. Training checkpoints after every epoch; `--resume`
//! continues a stopped run from them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use poeem::build::BuildConfig;
use poeem::pipeline::{
    CoarseDiagnostics, EvalSet, IdMap, ItemIds, TimedIndex, build_post_hoc, export_timed,
    markdown_table,
};
use poeem::pq::{OpqConfig, Par};
use poeem::search::{IndexParts, Probe, SearchIndex};
use poeem::train::metrics::top_k_inner_product;
use poeem::train::synthetic::ScaledTutorial;
use poeem::train::{
    CoarseObjective, IndexingLayerConfig, LayerUpdateItems, Model, OptimizerConfig, TrainConfig,
};
use serde_json::{Value, json};

use super::faiss::FaissSettings;
use super::meta::DataHash;
use super::plot::{LineChart, Series};
use super::synthetic::faiss_python;
use super::{
    Args, Checkpointed, DataInfo, Experiment, IndexRun, Outcome, Progress, WithIndexes,
    across_runs, coarse_table, mean_pm, over_seeds, seed_series, train_checkpointed,
};

/// Default catalogue size (items and queries).
pub(crate) const DEFAULT_ITEMS: u32 = 2_000_000;
/// Default interactions.
pub(crate) const DEFAULT_INTERACTIONS: usize = 50_000_000;

/// The settings of one size.
#[derive(Debug, Clone)]
struct ScaleConfig {
    rule: ScaledTutorial,
    interactions: usize,
    plain: TrainConfig,
    poeem: TrainConfig,
    build: BuildConfig,
    opq: OpqConfig,
    eval_queries: usize,
    k: usize,
    nprobes: Vec<usize>,
    probe: Probe,
}

/// What the Poeem model's coarse level learns from for `--catalogue-rows`: each batch's items
/// (the preset; `None` or 0), or a separate sample of that many catalogue rows per step.
pub(crate) fn layer_update_items(catalogue_rows: Option<usize>) -> LayerUpdateItems {
    match catalogue_rows {
        None | Some(0) => LayerUpdateItems::Batches,
        Some(rows) => LayerUpdateItems::Catalogue { rows },
    }
}

/// The scale experiment's plain and Poeem training settings for `interactions` pairs.
///
/// The tutorial's model (64-d id embeddings, Adagrad, summed in-batch softmax) at batch 1024,
/// with a learning rate of 0.5 instead of 0.1 and a temperature of 0.1 instead of 1/30: an item
/// is seen 25 times an epoch here against 100 in the tutorial, and at 40,000 items the
/// tutorial's settings reach a brute-force precision@100 of 0.26 in two epochs where these reach
/// 0.85 in three. The layer (J = 1024, K = 256, D = 16; J = 64 with `quick`) warms up for the
/// first epoch, so its k-means runs on embeddings that have taken their shape (a warm start
/// after 200 of 2,900 steps left the Poeem model's brute force 0.02 below the plain model's;
/// after one epoch, 0.004), and its coarse level learns list means from each batch's items:
/// this generator draws a pair's item uniformly, so a batch's items are the uniform catalogue
/// sample that skewed data needs a separate one for (at 125,000 items over three seeds the two
/// gave the same precision; the separate sample cost a fifth of the training rate at 2,000,000).
pub(crate) fn training_presets(
    quick: bool,
    interactions: usize,
    epochs: usize,
    threads: usize,
) -> (TrainConfig, TrainConfig) {
    let (n_lists, n_subspaces, n_bits) = if quick { (64, 16, 8) } else { (1024, 16, 8) };
    let mut plain = TrainConfig::tutorial();
    plain.batch_size = 1024;
    plain.optimizer = OptimizerConfig::adagrad(0.5);
    plain.model.temperature = 0.1;
    plain.epochs = epochs;
    plain.threads = threads;
    plain.log_every_steps = 200;
    let steps_per_epoch = interactions.div_ceil(plain.batch_size) as u64;
    let mut poeem = plain.clone();
    poeem.model.layer_update_items = layer_update_items(None);
    poeem.index = Some(IndexingLayerConfig {
        n_lists,
        n_subspaces,
        n_bits,
        warmup_steps: steps_per_epoch,
        buffer_size: 64 * n_lists,
        coarse_objective: CoarseObjective::ListMeans,
        optimizer: OptimizerConfig::adagrad(0.1),
        ..IndexingLayerConfig::tutorial()
    });
    (plain, poeem)
}

impl ScaleConfig {
    /// `items` items and `interactions` interactions, trained as [`training_presets`] says;
    /// with `quick`, a smaller index shape. Full training is 6 epochs (3 with `quick`):
    /// learning comes late and suddenly, later the larger the catalogue (125,000 items: 0.61
    /// after 3 epochs, 0.986 after 5, 0.999 after 7), and an undertrained model hides the
    /// index behind the model (post-hoc lists then score above brute force).
    fn new(args: &Args, items: u32, interactions: usize) -> Self {
        let quick = args.quick;
        let epochs = args
            .epochs
            .map_or(if quick { 3 } else { 6 }, |e| e as usize);
        let (mut plain, mut poeem) =
            training_presets(quick, interactions, epochs, args.train_threads());
        poeem.model.layer_update_items = layer_update_items(args.catalogue_rows);
        // A checkpoint per epoch: at 2,000,000 items one takes seconds against minutes of
        // training, and a stopped run loses at most an epoch with `--resume`.
        for train in [&mut plain, &mut poeem] {
            train.checkpoint_every_steps = interactions.div_ceil(train.batch_size) as u64;
        }
        let layer = poeem.index.as_ref().expect("the Poeem preset has a layer");
        let (n_lists, n_subspaces, n_bits) = (layer.n_lists, layer.n_subspaces, layer.n_bits);
        Self {
            rule: ScaledTutorial::new(items),
            interactions,
            plain,
            poeem,
            build: BuildConfig::new(n_lists, n_subspaces, n_bits),
            opq: OpqConfig::default(),
            eval_queries: if quick { 2_000 } else { 10_000 },
            k: 100,
            nprobes: if quick {
                vec![1, 4, 16]
            } else {
                vec![1, 4, 16, 64]
            },
            probe: Probe::L2,
        }
    }

    fn seeded(mut self, seed: u64) -> Self {
        for train in [&mut self.plain, &mut self.poeem] {
            train.seed = seed;
            train.model.seed = seed;
            if let Some(layer) = &mut train.index {
                layer.seed = seed;
            }
        }
        self.build.seed = seed;
        self
    }

    fn json(&self) -> Value {
        let layer = self.poeem.index.as_ref();
        json!({
            "items": self.rule.items,
            "queries": self.rule.queries,
            "base": self.rule.base,
            "interactions": self.interactions,
            "epochs": self.plain.epochs,
            "batch_size": self.plain.batch_size,
            "dim": self.plain.model.dim,
            "n_lists": self.build.n_lists,
            "n_subspaces": self.build.n_subspaces,
            "n_bits": self.build.n_bits,
            "warmup_steps": layer.map(|l| l.warmup_steps),
            "buffer_size": layer.map(|l| l.buffer_size),
            "coarse_objective": layer.map(|l| format!("{:?}", l.coarse_objective)),
            "layer_update_items": format!("{:?}", self.poeem.model.layer_update_items),
            "eval_queries": self.eval_queries,
            "k": self.k,
            "nprobes": self.nprobes,
            "probe": self.probe.to_string(),
        })
    }
}

/// The time and peak resident memory of one stage.
#[derive(Debug, Clone)]
struct Stage {
    name: String,
    seconds: f64,
    /// The process's peak resident set during the stage (bytes), where the system tells it.
    peak_bytes: Option<u64>,
}

/// Times stages and measures their peak memory.
#[derive(Default)]
struct Stages(Vec<Stage>);

impl Stages {
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        reset_peak_memory();
        let start = Instant::now();
        let out = f()?;
        self.0.push(Stage {
            name: name.to_owned(),
            seconds: start.elapsed().as_secs_f64(),
            peak_bytes: peak_memory(),
        });
        Ok(out)
    }

    fn peak(&self) -> Option<u64> {
        self.0.iter().filter_map(|s| s.peak_bytes).max()
    }
}

/// Resets the kernel's peak resident set counter of this process (Linux; a no-op elsewhere).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident set of this process since the last reset, in bytes (Linux).
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn gib(bytes: Option<u64>) -> String {
    bytes.map_or("-".to_owned(), |b| {
        format!("{:.2}", b as f64 / (1u64 << 30) as f64)
    })
}

/// A model of a run.
struct ModelRun {
    name: &'static str,
    /// This process's training time and rate (from `resumed_from_step` on).
    training_seconds: f64,
    examples_per_second: f64,
    /// The step training resumed at with `--resume` (0: trained from the start).
    resumed_from_step: u64,
    brute_force_precision: f64,
}

impl ModelRun {
    fn new(name: &'static str, trained: &Checkpointed, brute_force_precision: f64) -> Self {
        Self {
            name,
            training_seconds: trained.report.elapsed.as_secs_f64(),
            examples_per_second: trained.report.examples_per_second,
            resumed_from_step: trained.resumed_from_step,
            brute_force_precision,
        }
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "training_seconds": self.training_seconds,
            "examples_per_second": self.examples_per_second,
            "resumed_from_step": self.resumed_from_step,
            "brute_force_precision": self.brute_force_precision,
        })
    }
}

/// An index of a run: precision@k at each nprobe.
type PrecisionRun = IndexRun<f64>;

/// One seed at one size.
struct SizeRun {
    seed: u64,
    config: ScaleConfig,
    plain: ModelRun,
    poeem: ModelRun,
    indexes: Vec<PrecisionRun>,
    stages: Stages,
    faiss_version: Option<String>,
}

impl WithIndexes for SizeRun {
    type Measure = f64;

    fn indexes(&self) -> &[PrecisionRun] {
        &self.indexes
    }
}

impl SizeRun {
    /// Whether the Poeem index is ahead of every post-hoc index at nprobe index `p`.
    fn poeem_ahead(&self, p: usize) -> bool {
        let Some(poeem) = self.index(POEEM) else {
            return false;
        };
        self.indexes
            .iter()
            .filter(|i| i.made_by == "build")
            .all(|i| poeem.by_nprobe[p] > i.by_nprobe[p])
    }
}

const POEEM: &str = "Poeem (exported)";
const REFIT: &str = "post-hoc IVF-PQ on the Poeem model";

/// The evaluation of one size: sampled queries judged by the rule.
struct Evaluation<'a> {
    config: &'a ScaleConfig,
    eval: EvalSet,
    par: Par,
}

impl Evaluation<'_> {
    /// Precision@k of exact retrieval, and the exact rankings (k items per query) that the
    /// coarse-level diagnostics of the model's indexes reuse.
    fn brute_force(&self, queries: &[f32], items: &[f32], dim: usize) -> Result<(f64, Vec<u32>)> {
        let k = self.config.k.min(items.len() / dim);
        let exact = top_k_inner_product(queries, items, dim, k, self.par);
        let m = self.eval.score(&exact, k, &[self.config.k])?;
        Ok((m.first().map_or(f64::NAN, |m| m.precision), exact))
    }

    /// Precision@k through `parts` at each nprobe, and its coarse-level diagnostics against
    /// the model's `exact` rankings.
    fn through(
        &self,
        parts: &IndexParts,
        queries: &[f32],
        items: &[f32],
        ids: &IdMap,
        exact: &[u32],
    ) -> Result<super::Measured<f64>> {
        let c = self.config;
        let metrics = self.eval.through_index_at(
            parts,
            queries,
            ids,
            &[c.k],
            &c.nprobes,
            c.probe,
            self.par,
        )?;
        let index = SearchIndex::new(parts.view()?);
        let width = exact.len() / (queries.len() / parts.params.dim).max(1);
        let coarse = CoarseDiagnostics::measure_against(
            &index, queries, items, ids, exact, width, &c.nprobes, c.probe,
        )?;
        Ok((
            metrics
                .iter()
                .map(|m| m.first().map_or(f64::NAN, |m| m.precision))
                .collect(),
            Some(coarse),
        ))
    }

    fn precision_of_ranking(&self, ranking: &[u32]) -> Result<f64> {
        let m = self.eval.score(ranking, self.config.k, &[self.config.k])?;
        Ok(m.first().map_or(f64::NAN, |m| m.precision))
    }
}

/// The smallest catalogue the experiment runs.
pub(crate) const MIN_ITEMS: u32 = 256;

/// Interactions for `items` items at the default's rate (50,000,000 over 2,000,000: 25 per item).
pub(crate) fn default_interactions(items: u32) -> usize {
    (DEFAULT_INTERACTIONS as f64 / f64::from(DEFAULT_ITEMS) * f64::from(items)).round() as usize
}

/// The sizes to run: `--sweep`, else `--items` (default 2,000,000; 20,000 with `--quick`).
fn sizes(args: &Args) -> Vec<(u32, usize)> {
    let default_items = if args.quick { 20_000 } else { DEFAULT_ITEMS };
    let items = args.items.unwrap_or(default_items);
    let list = if args.sweep.is_empty() {
        vec![items]
    } else {
        args.sweep.clone()
    };
    list.into_iter()
        .map(|n| {
            let interactions = args.interactions.map_or_else(
                || default_interactions(n),
                |m| (m as f64 / f64::from(items) * f64::from(n)).round() as usize,
            );
            (n, interactions)
        })
        .collect()
}

pub(super) fn run(args: &Args, progress: &Progress) -> Result<Outcome> {
    let seeds = args.seed_list(Experiment::Scale);
    let sizes = sizes(args);
    if sizes.iter().any(|&(n, m)| n < MIN_ITEMS || m == 0) {
        bail!("every size needs at least {MIN_ITEMS} items and one interaction");
    }
    let python = faiss_python(args, progress);
    progress.jobs(sizes.len() * seeds.len() * (5 + usize::from(python.is_some())));
    let mut hash = DataHash::default();
    let mut runs = Vec::new();
    for &(items, interactions) in &sizes {
        for &seed in &seeds {
            let config = ScaleConfig::new(args, items, interactions).seeded(seed);
            runs.push(run_size(
                args,
                config,
                seed,
                python.as_deref(),
                &mut hash,
                progress,
            )?);
        }
    }
    // Every size and seed is done: the checkpoints (4 GiB per seed at 2,000,000 items) go.
    let checkpoints = checkpoint_root(args);
    if checkpoints.exists() {
        std::fs::remove_dir_all(&checkpoints)
            .with_context(|| format!("removing {}", checkpoints.display()))?;
    }
    Ok(outcome(args, &seeds, &sizes, runs, hash))
}

/// Where the runs' training checkpoints go, for `--resume`.
fn checkpoint_root(args: &Args) -> PathBuf {
    args.out_root()
        .join(Experiment::Scale.name())
        .join("checkpoints")
}

fn run_size(
    args: &Args,
    config: ScaleConfig,
    seed: u64,
    python: Option<&std::path::Path>,
    hash: &mut DataHash,
    progress: &Progress,
) -> Result<SizeRun> {
    let par = args.par();
    let rule = config.rule;
    let n = rule.items;
    let mut stages = Stages::default();
    progress.job(format!(
        "{n} items, seed {seed}: generating {} interactions",
        config.interactions
    ));
    let dataset = stages.run("generate the interactions", || {
        Ok(rule.dataset(config.interactions, seed))
    })?;
    hash.pairs(&dataset.train);
    let eval = stages.run("relevance counts, sampled queries", || {
        Ok(EvalSet::scaled_tutorial(rule, config.eval_queries, seed))
    })?;
    let evaluation = Evaluation {
        config: &config,
        eval,
        par,
    };
    progress.job_done();

    progress.job(format!("{n} items, seed {seed}: training the plain model"));
    let checkpoints = checkpoint_root(args).join(format!("{n}-items-seed-{seed}"));
    let plain_trained = stages.run("train the plain model", || {
        train_checkpointed(
            progress,
            "plain",
            &config.plain,
            &dataset,
            &checkpoints.join("plain"),
            args.resume,
        )
    })?;
    let plain_model = &plain_trained.model;
    let (queries, items) = stages.run("embed (plain model)", || embed(plain_model, &evaluation))?;
    let dim = plain_model.dim();
    let (plain_brute, plain_exact) = stages.run("brute force (plain model)", || {
        evaluation.brute_force(&queries, &items, dim)
    })?;
    let plain = ModelRun::new("plain", &plain_trained, plain_brute);
    let ids = IdMap::new(ItemIds::Dense, plain_model.items());
    drop(plain_trained);
    progress.job_done();

    let mut indexes = Vec::new();
    for (name, opq) in [
        ("post-hoc IVF-PQ", None),
        ("post-hoc OPQ+IVF-PQ", Some(config.opq.clone())),
    ] {
        progress.job(format!("{n} items, seed {seed}: building {name}"));
        let build = BuildConfig {
            opq,
            ..config.build.clone()
        };
        let index: TimedIndex = stages.run(&format!("build {name}"), || {
            Ok(build_post_hoc(&items, dim, &build, 1, par, &mut |_| {})?)
        })?;
        let measured = stages.run(&format!("search {name}"), || {
            evaluation.through(&index.parts, &queries, &items, &ids, &plain_exact)
        })?;
        indexes.push(IndexRun::of(name, "build", &index, measured));
        progress.job_done();
    }
    let mut faiss_version = None;
    if let Some(python) = python {
        progress.job(format!("{n} items, seed {seed}: faiss post-hoc indexes"));
        let settings = FaissSettings {
            n_lists: config.build.n_lists,
            n_subspaces: config.build.n_subspaces,
            n_bits: config.build.n_bits,
            inner_product: true,
            k: config.k,
            nprobes: config.nprobes.clone(),
            seed,
            threads: par.degree(),
        };
        let (rows, version) = stages.run("faiss post-hoc indexes (a child process)", || {
            super::faiss_rows(python, &items, &queries, dim, &settings, &|ranking| {
                evaluation.precision_of_ranking(ranking)
            })
        })?;
        indexes.extend(rows);
        faiss_version = Some(version);
        progress.job_done();
    }
    drop((queries, items));

    progress.job(format!("{n} items, seed {seed}: training the Poeem model"));
    let poeem_trained = stages.run("train the Poeem model", || {
        train_checkpointed(
            progress,
            "Poeem",
            &config.poeem,
            &dataset,
            &checkpoints.join("poeem"),
            args.resume,
        )
    })?;
    let poeem_model = &poeem_trained.model;
    drop(dataset);
    progress.job_done();
    progress.job(format!("{n} items, seed {seed}: exporting the Poeem index"));
    let (exported, poeem_ids, _) = stages.run("export the Poeem index", || {
        Ok(export_timed(poeem_model, 1, par)?)
    })?;
    let (queries, items) = stages.run("embed (Poeem model)", || embed(poeem_model, &evaluation))?;
    let dim = poeem_model.dim();
    let (poeem_brute, poeem_exact) = stages.run("brute force (Poeem model)", || {
        evaluation.brute_force(&queries, &items, dim)
    })?;
    let measured = stages.run("search the Poeem index", || {
        evaluation.through(&exported.parts, &queries, &items, &poeem_ids, &poeem_exact)
    })?;
    indexes.push(IndexRun::of(POEEM, "export", &exported, measured));
    // The learned codec against a fresh fit on the same embeddings: this row tells a weaker
    // model apart from a codec that lags behind its model.
    let refit: TimedIndex = stages.run("build post-hoc IVF-PQ (Poeem model)", || {
        Ok(build_post_hoc(
            &items,
            dim,
            &config.build,
            1,
            par,
            &mut |_| {},
        )?)
    })?;
    let measured = stages.run("search post-hoc IVF-PQ (Poeem model)", || {
        evaluation.through(&refit.parts, &queries, &items, &poeem_ids, &poeem_exact)
    })?;
    indexes.push(IndexRun::of(
        REFIT,
        "build on the Poeem model",
        &refit,
        measured,
    ));
    progress.job_done();
    Ok(SizeRun {
        seed,
        config,
        plain,
        poeem: ModelRun::new("Poeem", &poeem_trained, poeem_brute),
        indexes,
        stages,
        faiss_version,
    })
}

/// The evaluated queries' and every item's embeddings.
fn embed(model: &Model, evaluation: &Evaluation<'_>) -> Result<(Vec<f32>, Vec<f32>)> {
    let queries = model.embed_queries(evaluation.eval.queries(), evaluation.par)?;
    let all: Vec<u32> = (0..model.n_items() as u32).collect();
    let items = model.embed_items(&all, evaluation.par)?;
    Ok((queries, items))
}

fn outcome(
    args: &Args,
    seeds: &[u64],
    sizes: &[(u32, usize)],
    runs: Vec<SizeRun>,
    hash: DataHash,
) -> Outcome {
    let largest = sizes.iter().map(|&(n, _)| n).max().unwrap_or(0);
    let main: Vec<&SizeRun> = runs
        .iter()
        .filter(|r| r.config.rule.items == largest)
        .collect();
    let config = &main[0].config;
    let nprobes = &config.nprobes;
    let k = config.k;
    let index_names: Vec<String> = main[0].indexes.iter().map(|i| i.name.clone()).collect();
    let mut report = String::new();

    // Precision against nprobe at the largest size.
    let mut header = vec!["method".to_owned()];
    header.extend(nprobes.iter().map(|p| format!("nprobe {p}")));
    let mut rows = Vec::new();
    for (name, pick) in [
        (
            "brute force (plain model)",
            (|r: &SizeRun| r.plain.brute_force_precision) as fn(&SizeRun) -> f64,
        ),
        ("brute force (Poeem model, unquantized)", |r: &SizeRun| {
            r.poeem.brute_force_precision
        }),
    ] {
        let values: Vec<f64> = main.iter().map(|r| pick(r)).collect();
        let mut row = vec![name.to_owned()];
        row.extend(nprobes.iter().map(|_| mean_pm(&values, 4)));
        rows.push(row);
    }
    let across =
        |name: &str, p: usize| -> Vec<f64> { across_runs(&main, name, |i| i.by_nprobe[p]) };
    for name in &index_names {
        let mut row = vec![name.clone()];
        row.extend((0..nprobes.len()).map(|p| mean_pm(&across(name, p), 4)));
        rows.push(row);
    }
    let layer = config.poeem.index.as_ref();
    report += &format!(
        "{} items and {} queries (base {}), {} interactions; two-tower model of {}-d id \
         embeddings, batch {}, {} epoch(s); index J = {} lists, K = {} codewords, D = {} \
         subspaces; Poeem warm-up {} steps, coarse level {:?} from {:?}; precision@{k} over {} \
         sampled queries, lists probed by {}; {}.\n\n",
        config.rule.items,
        config.rule.queries,
        config.rule.base,
        config.interactions,
        config.plain.model.dim,
        config.plain.batch_size,
        config.plain.epochs,
        config.build.n_lists,
        1u64 << config.build.n_bits,
        config.build.n_subspaces,
        layer.map_or(0, |l| l.warmup_steps),
        layer.map(|l| l.coarse_objective),
        config.poeem.model.layer_update_items,
        config.eval_queries,
        config.probe,
        over_seeds(main.len()),
    );
    report += &markdown_table(&header, &rows);
    let ahead: Vec<String> = (0..nprobes.len())
        .map(|p| {
            format!(
                "nprobe {}: {} of {}",
                nprobes[p],
                main.iter().filter(|r| r.poeem_ahead(p)).count(),
                main.len()
            )
        })
        .collect();
    report += &format!(
        "\nSeeds on which the Poeem index is ahead of every post-hoc index: {}.\n",
        ahead.join("; ")
    );
    report += &super::faiss_note(
        args.faiss,
        main.iter().find_map(|r| r.faiss_version.as_deref()),
    );

    // Index time, training.
    let rows: Vec<Vec<String>> = index_names
        .iter()
        .map(|name| {
            let seconds: Vec<f64> = across_runs(&main, name, |i| i.seconds);
            let export: Vec<f64> = across_runs(&main, POEEM, |i| i.seconds);
            let ratio = super::mean_std(&seconds).0 / super::mean_std(&export).0.max(1e-9);
            let made_by = main[0].index(name).map_or("", |i| i.made_by);
            vec![
                name.clone(),
                format!("{} ({made_by})", mean_pm(&seconds, 2)),
                format!("{ratio:.0}x"),
            ]
        })
        .collect();
    report += "\n";
    report += &markdown_table(
        &["index", "index time (s)", "time / Poeem export"].map(str::to_owned),
        &rows,
    );
    report += "\nThe export's time is its encoding with the learned codec (the items' embeddings \
               are computed once for it, as for the post-hoc builds).\n\n";
    let rows: Vec<Vec<String>> = [false, true]
        .iter()
        .map(|&poeem| {
            let models: Vec<&ModelRun> = main
                .iter()
                .map(|r| if poeem { &r.poeem } else { &r.plain })
                .collect();
            let seconds: Vec<f64> = models.iter().map(|m| m.training_seconds).collect();
            let rate: Vec<f64> = models.iter().map(|m| m.examples_per_second).collect();
            vec![
                models[0].name.to_owned(),
                mean_pm(&seconds, 0),
                mean_pm(&rate, 0),
            ]
        })
        .collect();
    report += &markdown_table(
        &["model", "training time (s)", "examples/s"].map(str::to_owned),
        &rows,
    );
    for run in &runs {
        for model in [&run.plain, &run.poeem] {
            if model.resumed_from_step > 0 {
                report += &format!(
                    "\nThe {} model ({} items, seed {}) resumed from its checkpoint at step {}: \
                     its time, rate and stage figures cover the steps after it.\n",
                    model.name, run.config.rule.items, run.seed, model.resumed_from_step
                );
            }
        }
    }

    // Stages of the largest size (first seed).
    let stages = &main[0].stages;
    let rows: Vec<Vec<String>> = stages
        .0
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                format!("{:.1}", s.seconds),
                gib(s.peak_bytes),
            ]
        })
        .collect();
    report += &format!(
        "\n## Time and peak memory per stage ({} items, seed {})\n\nPeak memory is the \
         process's peak resident set during the stage (what earlier stages still hold \
         included); the whole run peaked at {} GiB. The faiss stage runs in a child process, \
         whose memory is not counted.\n\n",
        config.rule.items,
        main[0].seed,
        gib(runs.iter().filter_map(|r| r.stages.peak()).max())
    );
    report += &markdown_table(
        &["stage", "seconds", "peak memory (GiB)"].map(str::to_owned),
        &rows,
    );

    if let Some(table) = coarse_table(
        &index_names,
        &main
            .iter()
            .map(|r| r.indexes.as_slice())
            .collect::<Vec<_>>(),
    ) {
        report += &format!(
            "\n## The coarse level\n\nFor each index, against its model's exact top-{k}: the \
             share inside the probed lists, and how the probes spread over the lists.\n\n"
        );
        report += &table;
    }

    let mut plots = Vec::new();
    let mut series: Vec<Series> = index_names
        .iter()
        .map(|name| {
            seed_series(
                name,
                nprobes,
                &(0..nprobes.len())
                    .map(|p| across(name, p))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    series.push(super::flat_series(
        "brute force (plain model)",
        nprobes,
        &main
            .iter()
            .map(|r| r.plain.brute_force_precision)
            .collect::<Vec<_>>(),
    ));
    plots.push((
        "precision_vs_nprobe".to_owned(),
        LineChart {
            title: format!(
                "Scale ({} items): precision@{k} against nprobe",
                config.rule.items
            ),
            x_label: "nprobe (lists probed)".to_owned(),
            y_label: format!("precision@{k}"),
            log2_x: true,
            series,
        },
    ));

    // The sweep: cost of each stage against the size.
    let distinct: Vec<u32> = {
        let mut d: Vec<u32> = sizes.iter().map(|&(n, _)| n).collect();
        d.dedup();
        d
    };
    if distinct.len() > 1 {
        let first_seed: Vec<&SizeRun> = distinct
            .iter()
            .filter_map(|&n| runs.iter().find(|r| r.config.rule.items == n))
            .collect();
        let stage_names: Vec<String> = first_seed[0]
            .stages
            .0
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let mut header = vec!["stage".to_owned()];
        header.extend(
            first_seed
                .iter()
                .map(|r| format!("{} items: s / GiB", r.config.rule.items)),
        );
        header.push("time growth, last size over first / size ratio".to_owned());
        let size_ratio = f64::from(*distinct.last().unwrap_or(&1)) / f64::from(distinct[0]);
        let mut rows = Vec::new();
        let mut time_series = Vec::new();
        let mut memory_points = Vec::new();
        for name in &stage_names {
            let found: Vec<Option<&Stage>> = first_seed
                .iter()
                .map(|r| r.stages.0.iter().find(|s| &s.name == name))
                .collect();
            let mut row = vec![name.clone()];
            row.extend(found.iter().map(|s| {
                s.map_or("-".to_owned(), |s| {
                    format!("{:.1} / {}", s.seconds, gib(s.peak_bytes))
                })
            }));
            let (first, last) = (found[0], found[found.len() - 1]);
            row.push(match (first, last) {
                (Some(a), Some(b)) if a.seconds > 0.0 => {
                    format!("{:.2}", b.seconds / a.seconds / size_ratio)
                }
                _ => "-".to_owned(),
            });
            rows.push(row);
            time_series.push(Series {
                name: name.clone(),
                points: first_seed
                    .iter()
                    .zip(&found)
                    .filter_map(|(r, s)| Some((f64::from(r.config.rule.items), (*s)?.seconds)))
                    .collect(),
                spread: None,
            });
        }
        for r in &first_seed {
            if let Some(peak) = r.stages.peak() {
                memory_points.push((
                    f64::from(r.config.rule.items),
                    peak as f64 / (1u64 << 30) as f64,
                ));
            }
        }
        report += &format!(
            "\n## Cost against the size (interactions in proportion; first seed)\n\nThe last \
             column is how much faster than linearly a stage's time grew from {} to {} items \
             (1: linear).\n\n",
            distinct[0],
            distinct[distinct.len() - 1]
        );
        report += &markdown_table(&header, &rows);
        plots.push((
            "time_vs_size".to_owned(),
            LineChart {
                title: "Scale: time of each stage against the catalogue size".to_owned(),
                x_label: "items (and queries)".to_owned(),
                y_label: "seconds".to_owned(),
                log2_x: true,
                series: time_series,
            },
        ));
        plots.push((
            "memory_vs_size".to_owned(),
            LineChart {
                title: "Scale: peak memory of the run against the catalogue size".to_owned(),
                x_label: "items (and queries)".to_owned(),
                y_label: "peak resident memory (GiB)".to_owned(),
                log2_x: true,
                series: vec![Series {
                    name: "whole run".to_owned(),
                    points: memory_points,
                    spread: None,
                }],
            },
        ));
    }

    let results = json!({
        "k": k,
        "nprobes": nprobes,
        "runs": runs.iter().map(|r| json!({
            "seed": r.seed,
            "settings": r.config.json(),
            "models": [r.plain.json(), r.poeem.json()],
            "indexes": r.indexes.iter().map(|i| json!({
                "name": i.name,
                "made_by": i.made_by,
                "seconds": i.seconds,
                "relative_distortion": i.relative_distortion,
                "precision": i.by_nprobe,
                "coarse": i.coarse.as_ref().map(|c| c.coverage.iter().map(|p| json!({
                    "nprobe": p.nprobe,
                    "top_k_share": p.top_k_share,
                    "best_item_share": p.best_item_share,
                })).collect::<Vec<_>>()),
            })).collect::<Vec<_>>(),
            "stages": r.stages.0.iter().map(|s| json!({
                "name": s.name,
                "seconds": s.seconds,
                "peak_bytes": s.peak_bytes,
            })).collect::<Vec<_>>(),
            "peak_bytes": r.stages.peak(),
            "poeem_ahead": (0..r.config.nprobes.len()).map(|p| r.poeem_ahead(p)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    Outcome {
        title: "The paper's scale on one machine: the tutorial's generator with millions of items"
            .to_owned(),
        seeds: seeds.to_vec(),
        data: DataInfo {
            description: format!(
                "generated: the tutorial's rule in base {} ({} items, {} interactions per seed \
                 at the largest size)",
                config.rule.base, config.rule.items, config.interactions
            ),
            sha256: hash.hex(),
        },
        settings: config.json(),
        results,
        report,
        plots,
    }
}
