//! `reproduce synthetic`: the tutorial (method.md §6) over several seeds. Brute force, the
//! post-hoc IVF-PQ and OPQ+IVF-PQ indexes built on the plain model, and the Poeem model without
//! rotation, with OPQ at its warm start, and with Givens rotation (random, greedy, steepest
//! pairs); precision@100 at nprobe 1, 2, 4 and 8; index build time against the export's; training
//! time with and without the layer.

use anyhow::{Result, bail};
use poeem::pipeline::{EvalSet, IdMap, ItemIds, TutorialConfig, export_timed};
use poeem::pq::Par;
use poeem::rotation::PairSelection;
use poeem::train::synthetic::{TUTORIAL_VOCAB, tutorial_dataset};
use poeem::train::{Dataset, Model, RotationMode, TrainConfig};
use serde_json::{Value, json};

use super::faiss::{self, FaissSettings};
use super::meta::DataHash;
use super::plot::LineChart;
use super::post_hoc_rows;
use super::{
    Args, DataInfo, Experiment, IndexRun, Outcome, Progress, WithIndexes, across_runs, mean_pm,
    mean_std, over_seeds, train_with_bar,
};
use super::{flat_series, min_max, seed_series};

/// The nprobes every index is searched at.
pub(super) const NPROBES: [usize; 4] = [1, 2, 4, 8];

/// The Poeem variants of the comparison: the tutorial's layer with each rotation mode.
pub(super) const VARIANTS: [(&str, RotationMode); 5] = [
    ("Poeem", RotationMode::None),
    ("Poeem + OPQ at warm start", RotationMode::Opq),
    (
        "Poeem + Givens (random)",
        RotationMode::Givens(PairSelection::Random),
    ),
    (
        "Poeem + Givens (greedy)",
        RotationMode::Givens(PairSelection::Greedy),
    ),
    (
        "Poeem + Givens (steepest)",
        RotationMode::Givens(PairSelection::Steepest),
    ),
];

/// The tutorial data and evaluation of one seed, with the experiment's settings.
pub(super) struct Tutorial {
    pub(super) seed: u64,
    pub(super) config: TutorialConfig,
    pub(super) dataset: Dataset,
    pub(super) eval: EvalSet,
    par: Par,
}

impl Tutorial {
    /// The tutorial of `seed`: [`TutorialConfig::full`], or [`TutorialConfig::quick`] (one epoch)
    /// with `--quick`; one timing run per build with `--quick`, three otherwise.
    pub(super) fn new(args: &Args, seed: u64, hash: &mut DataHash) -> Self {
        let mut config = if args.quick {
            TutorialConfig::quick(seed)
        } else {
            TutorialConfig::full(seed)
        };
        config.threads = args.train_threads();
        config.plain.threads = args.train_threads();
        config.poeem.threads = args.train_threads();
        config.timing_runs = if args.quick { 1 } else { 3 };
        let dataset = tutorial_dataset(config.n_pairs, config.data_seed);
        hash.pairs(&dataset.train);
        Self {
            seed,
            config,
            dataset,
            eval: EvalSet::tutorial(),
            par: args.par(),
        }
    }

    /// Trains a model with `config`, showing its steps.
    pub(super) fn train(
        &self,
        name: &str,
        config: &TrainConfig,
        progress: &Progress,
    ) -> Result<(Model, ModelRun)> {
        let (model, report) = train_with_bar(progress, name, config, &self.dataset, &mut |_| {})?;
        let brute = self
            .eval
            .brute_force_model(&model, &[self.config.k], self.par())?;
        let run = ModelRun {
            name: name.to_owned(),
            training_seconds: report.elapsed.as_secs_f64(),
            examples_per_second: report.examples_per_second,
            brute_force_precision: brute.first().map_or(f64::NAN, |m| m.precision),
        };
        Ok((model, run))
    }

    /// Trains the Poeem model `config`, exports its index and measures it at every nprobe.
    pub(super) fn poeem(
        &self,
        name: &str,
        config: &TrainConfig,
        progress: &Progress,
    ) -> Result<(ModelRun, PrecisionRun)> {
        progress.job(format!("seed {}: training {name}", self.seed));
        let (model, run) = self.train(name, config, progress)?;
        let (index, ids, _) = export_timed(&model, 5 * self.config.timing_runs.max(1), self.par())?;
        let queries = model.embed_queries(self.eval.queries(), self.par())?;
        let index = IndexRun::of(
            name,
            "export",
            &index,
            (self.precision_at(&index.parts, &queries, &ids)?, None),
        );
        progress.job_done();
        Ok((run, index))
    }

    /// Precision@k through `parts` at each of [`NPROBES`].
    fn precision_at(
        &self,
        parts: &poeem::search::IndexParts,
        queries: &[f32],
        ids: &IdMap,
    ) -> Result<Vec<f64>> {
        let metrics = self.eval.through_index_at(
            parts,
            queries,
            ids,
            &[self.config.k],
            &NPROBES,
            self.config.probe,
            self.par(),
        )?;
        Ok(metrics
            .iter()
            .map(|m| m.first().map_or(f64::NAN, |m| m.precision))
            .collect())
    }

    /// Precision@k of a ranking (`k` item indices per query).
    fn precision_of_ranking(&self, ranking: &[u32]) -> Result<f64> {
        let metrics = self.eval.score(ranking, self.config.k, &[self.config.k])?;
        Ok(metrics.first().map_or(f64::NAN, |m| m.precision))
    }

    pub(super) fn par(&self) -> Par {
        self.par
    }
}

/// A trained model of a run.
pub(super) struct ModelRun {
    pub(super) name: String,
    pub(super) training_seconds: f64,
    pub(super) examples_per_second: f64,
    /// Precision@k of exact retrieval with its unquantized embeddings.
    pub(super) brute_force_precision: f64,
}

impl ModelRun {
    pub(super) fn json(&self) -> Value {
        json!({
            "name": self.name,
            "training_seconds": self.training_seconds,
            "examples_per_second": self.examples_per_second,
            "brute_force_precision": self.brute_force_precision,
        })
    }
}

/// An index of a run: precision@k at each nprobe of [`NPROBES`].
pub(super) type PrecisionRun = IndexRun<f64>;

impl PrecisionRun {
    pub(super) fn json(&self) -> Value {
        json!({
            "name": self.name,
            "made_by": self.made_by,
            "seconds": self.seconds,
            "relative_distortion": self.relative_distortion,
            "precision": self.by_nprobe,
        })
    }
}

/// One seed's runs.
struct SeedRun {
    seed: u64,
    plain: ModelRun,
    poeem_models: Vec<ModelRun>,
    /// Post-hoc indexes first (poeem's, then faiss's), then the Poeem variants' exports.
    indexes: Vec<PrecisionRun>,
    /// The version of faiss that built the faiss rows, if any.
    faiss_version: Option<String>,
}

impl WithIndexes for SeedRun {
    type Measure = f64;

    fn indexes(&self) -> &[PrecisionRun] {
        &self.indexes
    }
}

impl SeedRun {
    /// Whether brute force > Poeem > every post-hoc index at nprobe 1, for the Poeem variant
    /// `poeem`.
    fn ordering_holds(&self, poeem: &str) -> bool {
        let Some(poeem) = self.index(poeem) else {
            return false;
        };
        let best_post_hoc = self
            .indexes
            .iter()
            .filter(|i| i.made_by == "build")
            .map(|i| i.by_nprobe[0])
            .fold(f64::NEG_INFINITY, f64::max);
        self.plain.brute_force_precision > poeem.by_nprobe[0] && poeem.by_nprobe[0] > best_post_hoc
    }
}

pub(super) fn run(args: &Args, progress: &Progress) -> Result<Outcome> {
    let seeds = args.seed_list(Experiment::Synthetic);
    let python = faiss_python(args, progress);
    let jobs_per_seed = 3 + VARIANTS.len() + usize::from(python.is_some());
    progress.jobs(seeds.len() * jobs_per_seed);
    let mut hash = DataHash::default();
    let mut runs = Vec::new();
    let mut config = None;
    for &seed in &seeds {
        let tutorial = Tutorial::new(args, seed, &mut hash);
        runs.push(run_seed(&tutorial, python.as_deref(), progress)?);
        config = Some(tutorial.config);
    }
    let Some(config) = config else {
        bail!("no seeds to run");
    };
    Ok(outcome(args, &config, &seeds, runs, hash))
}

/// The faiss Python when `--faiss` asks for it and one is found (a note otherwise).
pub(super) fn faiss_python(args: &Args, progress: &Progress) -> Option<std::path::PathBuf> {
    if !args.faiss {
        return None;
    }
    let found = faiss::available(args.python.as_deref());
    if found.is_none() {
        progress.println(
            "--faiss: no Python that can `import faiss, numpy` was found; the faiss rows are left out",
        );
    }
    found
}

fn run_seed(
    tutorial: &Tutorial,
    python: Option<&std::path::Path>,
    progress: &Progress,
) -> Result<SeedRun> {
    let seed = tutorial.seed;
    let config = &tutorial.config;
    let par = tutorial.par();
    progress.job(format!("seed {seed}: training the plain model"));
    let (plain_model, plain) = tutorial.train("plain", &config.plain, progress)?;
    progress.job_done();
    let queries = plain_model.embed_queries(tutorial.eval.queries(), par)?;
    let all: Vec<u32> = (0..plain_model.n_items() as u32).collect();
    let items = plain_model.embed_items(&all, par)?;
    let dim = plain_model.dim();
    let ids = IdMap::new(ItemIds::Dense, plain_model.items());
    let mut indexes = post_hoc_rows(
        progress,
        seed,
        &items,
        dim,
        &config.build,
        &config.opq,
        config.timing_runs,
        par,
        &|parts| Ok((tutorial.precision_at(parts, &queries, &ids)?, None)),
    )?;
    let mut faiss_version = None;
    if let Some(python) = python {
        progress.job(format!("seed {seed}: faiss post-hoc indexes"));
        let (rows, version) = faiss_rows(tutorial, python, &items, &queries, dim)?;
        indexes.extend(rows);
        faiss_version = Some(version);
        progress.job_done();
    }
    drop(plain_model);
    let mut poeem_models = Vec::new();
    for (name, rotation) in VARIANTS {
        let mut train = config.poeem.clone();
        if let Some(layer) = &mut train.index {
            layer.rotation = rotation;
        }
        let (model, index) = tutorial.poeem(name, &train, progress)?;
        poeem_models.push(model);
        indexes.push(index);
    }
    Ok(SeedRun {
        seed,
        plain,
        poeem_models,
        indexes,
        faiss_version,
    })
}

/// faiss's `IVF,PQ` and `OPQ,IVF,PQ` of the tutorial's shape on the plain model's embeddings
/// (inner product, as the reference's notebook), scored by the tutorial's rule; with faiss's
/// version.
fn faiss_rows(
    tutorial: &Tutorial,
    python: &std::path::Path,
    items: &[f32],
    queries: &[f32],
    dim: usize,
) -> Result<(Vec<PrecisionRun>, String)> {
    let build = &tutorial.config.build;
    let settings = FaissSettings {
        n_lists: build.n_lists,
        n_subspaces: build.n_subspaces,
        n_bits: build.n_bits,
        inner_product: true,
        k: tutorial.config.k,
        nprobes: NPROBES.to_vec(),
        seed: tutorial.seed,
        threads: tutorial.par.degree(),
    };
    super::faiss_rows(python, items, queries, dim, &settings, &|ranking| {
        tutorial.precision_of_ranking(ranking)
    })
}

/// Precision values of the index `name` over the runs at nprobe index `p`.
fn across_seeds(runs: &[SeedRun], name: &str, p: usize) -> Vec<f64> {
    across_runs(runs, name, |i| i.by_nprobe[p])
}

fn outcome(
    args: &Args,
    config: &TutorialConfig,
    seeds: &[u64],
    runs: Vec<SeedRun>,
    hash: DataHash,
) -> Outcome {
    let faiss_version = runs.iter().find_map(|r| r.faiss_version.clone());
    let k = config.k;
    let index_names: Vec<String> = runs[0].indexes.iter().map(|i| i.name.clone()).collect();
    let poeem_names: Vec<&str> = VARIANTS.iter().map(|(n, _)| *n).collect();

    // Precision against nprobe.
    let mut header = vec!["method".to_owned(), "made by".to_owned()];
    header.extend(NPROBES.iter().map(|p| format!("nprobe {p}")));
    let brute = |f: &dyn Fn(&SeedRun) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    let plain_brute = brute(&|r| r.plain.brute_force_precision);
    let mut rows = vec![{
        let mut row = vec!["brute force (plain model)".to_owned(), "-".to_owned()];
        row.extend(NPROBES.iter().map(|_| mean_pm(&plain_brute, 4)));
        row
    }];
    for name in &index_names {
        let made_by = runs[0].index(name).map_or("", |i| i.made_by);
        let mut row = vec![name.clone(), made_by.to_owned()];
        row.extend((0..NPROBES.len()).map(|p| mean_pm(&across_seeds(&runs, name, p), 4)));
        rows.push(row);
    }
    let precision_table = poeem::pipeline::markdown_table(&header, &rows);

    // Every seed at nprobe 1, and the ordering.
    let mut header = vec!["method".to_owned()];
    header.extend(seeds.iter().map(|s| format!("seed {s}")));
    header.push("min".to_owned());
    let mut rows = vec![{
        let mut row = vec!["brute force (plain model)".to_owned()];
        row.extend(plain_brute.iter().map(|v| format!("{v:.4}")));
        row.push(format!(
            "{:.4}",
            plain_brute.iter().copied().fold(f64::INFINITY, f64::min)
        ));
        row
    }];
    for name in &index_names {
        let values = across_seeds(&runs, name, 0);
        let mut row = vec![name.clone()];
        row.extend(values.iter().map(|v| format!("{v:.4}")));
        row.push(format!(
            "{:.4}",
            values.iter().copied().fold(f64::INFINITY, f64::min)
        ));
        rows.push(row);
    }
    let seed_table = poeem::pipeline::markdown_table(&header, &rows);
    let ordering: Vec<(String, Vec<bool>)> = poeem_names
        .iter()
        .map(|&n| {
            (
                n.to_owned(),
                runs.iter().map(|r| r.ordering_holds(n)).collect(),
            )
        })
        .collect();
    let ordering_lines: String = ordering
        .iter()
        .map(|(name, holds)| {
            format!(
                "- {name}: brute force > {name} > every post-hoc index on {} of {} seeds\n",
                holds.iter().filter(|&&h| h).count(),
                holds.len()
            )
        })
        .collect();

    // Index time.
    let post_hoc: Vec<&String> = index_names
        .iter()
        .filter(|n| runs[0].index(n).is_some_and(|i| i.made_by == "build"))
        .collect();
    let export_seconds: Vec<f64> = across_runs(&runs, "Poeem", |i| i.seconds);
    let (export_mean, _) = mean_std(&export_seconds);
    let mut rows: Vec<Vec<String>> = post_hoc
        .iter()
        .map(|name| {
            let seconds: Vec<f64> = across_runs(&runs, name, |i| i.seconds);
            let ratios: Vec<f64> = runs
                .iter()
                .filter_map(|r| Some(r.index(name)?.seconds / r.index("Poeem")?.seconds))
                .collect();
            vec![
                (*name).clone(),
                "build".to_owned(),
                mean_pm(&seconds, 4),
                format!("{:.0}×", mean_std(&ratios).0),
            ]
        })
        .collect();
    rows.push(vec![
        "Poeem".to_owned(),
        "export".to_owned(),
        mean_pm(&export_seconds, 4),
        "1×".to_owned(),
    ]);
    let time_table = poeem::pipeline::markdown_table(
        &[
            "index",
            "made by",
            "seconds (mean ± std over seeds)",
            "time / Poeem export",
        ],
        &rows,
    );

    // Training time with and without the layer.
    let plain_seconds = brute(&|r| r.plain.training_seconds);
    let mut rows = vec![vec![
        "plain (no layer)".to_owned(),
        mean_pm(&plain_seconds, 2),
        format!(
            "{:.0}",
            mean_std(&brute(&|r| r.plain.examples_per_second)).0
        ),
        "-".to_owned(),
        mean_pm(&plain_brute, 4),
    ]];
    for (v, name) in poeem_names.iter().enumerate() {
        let seconds = brute(&|r| r.poeem_models[v].training_seconds);
        let overhead: Vec<f64> = runs
            .iter()
            .map(|r| 100.0 * (r.poeem_models[v].training_seconds / r.plain.training_seconds - 1.0))
            .collect();
        rows.push(vec![
            (*name).to_owned(),
            mean_pm(&seconds, 2),
            format!(
                "{:.0}",
                mean_std(&brute(&|r| r.poeem_models[v].examples_per_second)).0
            ),
            format!("{:+.0}%", mean_std(&overhead).0),
            mean_pm(&brute(&|r| r.poeem_models[v].brute_force_precision), 4),
        ]);
    }
    let training_table = poeem::pipeline::markdown_table(
        &[
            "model",
            "training seconds",
            "examples/s",
            "time vs plain",
            &format!("brute force precision@{k} (unquantized)"),
        ],
        &rows,
    );

    let b = &config.build;
    let mut report = format!(
        "{} pairs per seed over {TUTORIAL_VOCAB} query and item ids; {} epoch(s), batch {}; \
         index J = {} lists, K = {} codewords, D = {} subspaces; lists probed by {}; Poeem \
         warm-up {} steps. Precision@{k} over all {TUTORIAL_VOCAB} queries, {}.\n\n\
         ## Precision@{k} against nprobe\n\n{precision_table}\n\
         ## Every seed at nprobe 1\n\n{seed_table}\n{ordering_lines}\n\
         ## Index time\n\nSeconds from the item embeddings to a searchable index: the whole \
         post-hoc build (k-means, OPQ, encoding; median of {} runs per seed) against Poeem's \
         export (encoding with the learned codec; median of {} runs).\n\n{time_table}\n\
         ## Training\n\n{training_table}",
        config.n_pairs,
        config.plain.epochs,
        config.plain.batch_size,
        b.n_lists,
        1u64 << b.n_bits,
        b.n_subspaces,
        config.probe,
        config.poeem.index.as_ref().map_or(0, |l| l.warmup_steps),
        over_seeds(seeds.len()),
        config.timing_runs,
        5 * config.timing_runs,
    );
    report += &super::faiss_note(args.faiss, faiss_version.as_deref());

    // The plot: precision against nprobe, mean over seeds with the min..max range.
    let mut series = vec![flat_series(
        "brute force (plain model)",
        &NPROBES,
        &plain_brute,
    )];
    for name in &index_names {
        let per_nprobe: Vec<Vec<f64>> = (0..NPROBES.len())
            .map(|p| across_seeds(&runs, name, p))
            .collect();
        series.push(seed_series(name, &NPROBES, &per_nprobe));
    }
    let chart = LineChart {
        title: format!("Synthetic tutorial: precision@{k} against nprobe"),
        x_label: "nprobe (lists probed)".to_owned(),
        y_label: format!("precision@{k} (mean over seeds, bars: min..max)"),
        log2_x: true,
        series,
    };

    let results = json!({
        "nprobes": NPROBES,
        "k": k,
        "seeds": runs.iter().map(|r| json!({
            "seed": r.seed,
            "plain": r.plain.json(),
            "poeem_models": r.poeem_models.iter().map(ModelRun::json).collect::<Vec<_>>(),
            "indexes": r.indexes.iter().map(PrecisionRun::json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "summary": index_names.iter().map(|name| {
            let per_nprobe: Vec<Value> = (0..NPROBES.len()).map(|p| {
                let values = across_seeds(&runs, name, p);
                let (mean, std) = mean_std(&values);
                let (min, max) = min_max(&values);
                json!({"mean": mean, "std": std, "min": min, "max": max})
            }).collect();
            json!({"name": name, "precision": per_nprobe})
        }).collect::<Vec<_>>(),
        "brute_force_precision": {"mean": mean_std(&plain_brute).0, "std": mean_std(&plain_brute).1},
        "export_seconds_mean": export_mean,
        "ordering_at_nprobe_1": ordering.iter().map(|(name, holds)| json!({
            "poeem": name, "holds": holds, "all_seeds": holds.iter().all(|&h| h),
        })).collect::<Vec<_>>(),
    });
    Outcome {
        title: "Synthetic tutorial: joint training against post-hoc indexes".to_owned(),
        seeds: seeds.to_vec(),
        data: DataInfo {
            description: format!(
                "the synthetic tutorial pairs (method.md §6), {} per seed, generated from seeds {:?}",
                config.n_pairs, seeds
            ),
            sha256: hash.hex(),
        },
        settings: json!({
            "n_pairs": config.n_pairs,
            "epochs": config.plain.epochs,
            "batch_size": config.plain.batch_size,
            "n_lists": b.n_lists,
            "n_subspaces": b.n_subspaces,
            "n_bits": b.n_bits,
            "warmup_steps": config.poeem.index.as_ref().map(|l| l.warmup_steps),
            "probe": config.probe.to_string(),
            "timing_runs": config.timing_runs,
            "faiss_version": faiss_version,
        }),
        results,
        report,
        plots: vec![("precision_vs_nprobe".to_owned(), chart)],
    }
}
