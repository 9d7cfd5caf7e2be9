//! `cargo xtask reproduce <experiment>`: the papers' claims rerun end to end.
//!
//! Each experiment returns an [`Outcome`]; [`run`] writes it under `<out>/<experiment>/`:
//! `results.json` (every number, with the machine, the date, the git revision, the seeds and a
//! hash of the input data), `report.md` (the tables) and the plots (SVG).
//!
//! - `synthetic`: the tutorial over several seeds, post-hoc indexes against Poeem's variants;
//! - `movielens`: the same comparison on RecBole-layout MovieLens files;
//! - `ablation`: warm start, PQ init, regularizer weight and Givens step size on the tutorial;
//! - `rotation`: rotation learning on fixed embeddings;
//! - `scale`: the tutorial's generator with millions of items, and the cost of each stage;
//! - `all`: each in turn.

mod ablation;
mod check;
pub(crate) mod faiss;
mod meta;
mod movielens;
pub(crate) mod plot;
pub(crate) mod rotation;
mod scale;
mod synthetic;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use poeem::build::BuildConfig;
use poeem::pipeline::{CoarseDiagnostics, TimedIndex, build_post_hoc, markdown_table, train_model};
use poeem::pq::{OpqConfig, Par};
use poeem::search::IndexParts;
use poeem::train::{Dataset, Model, TrainConfig, TrainProgress, TrainReport, Trainer};
use serde_json::{Value, json};

pub(crate) use check::check_quick_run;
use plot::{LineChart, Series};
pub(crate) use scale::{
    MIN_ITEMS as SCALE_MIN_ITEMS, default_interactions as scale_interactions,
    layer_update_items as scale_layer_update_items, training_presets as scale_training_presets,
};

/// Arguments of `cargo xtask reproduce`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Args {
    /// The experiment to run (`all`: each in turn).
    #[arg(value_enum)]
    pub(crate) experiment: Experiment,
    /// Shorter runs (fewer epochs, less data): every experiment together in under 3 minutes.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Seeds S..S+N−1 (S: --first-seed): every randomised experiment runs once per seed and
    /// reports the mean and spread (the rotation experiment uses the first) [default: 3; with
    /// --quick, 3 for synthetic and 1 for the others; 1 for scale].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub(crate) seeds: Option<u64>,
    /// The first seed S: `--first-seed 2 --seeds 1` runs seed 2 alone (a long scale run's
    /// seeds, one session each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) first_seed: u64,
    /// Directory of RecBole-layout MovieLens files (`<name>.inter`, and `<name>.user`,
    /// `<name>.item` when present), such as ml-100k. Without it, `movielens` runs on a
    /// generated stand-in in the same layout and says so.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Output root; each experiment writes to `<out>/<experiment>/` [default: target/reproduce].
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Also build faiss's post-hoc `IVF,PQ` and `OPQ,IVF,PQ` on the same embeddings (needs a
    /// Python that can `import faiss`; skipped with a note otherwise).
    #[arg(long)]
    pub(crate) faiss: bool,
    /// The Python interpreter for `--faiss` (default: $POEEM_PYTHON,
    /// /tmp/faiss-venv/bin/python, python3).
    #[arg(long)]
    pub(crate) python: Option<PathBuf>,
    /// Worker threads for training, building and search (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// `rotation` only: also run on these vectors (`.npy` f32/f64 C order, or `.fvecs`;
    /// columns are standardised first).
    #[arg(long)]
    pub(crate) vectors: Option<PathBuf>,
    /// `movielens` and `scale`: train every model this many epochs instead of the preset's (20
    /// for movielens: long training is where a jointly trained coarse level can drift, see
    /// docs/reproduce.md; 6 for scale, 3 with `--quick`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub(crate) epochs: Option<u64>,
    /// `rotation` only: Givens step size, relative to the data's mean squared norm.
    #[arg(long, default_value_t = DEFAULT_GIVENS_LR)]
    pub(crate) givens_lr: f32,
    /// `scale` only: items (and queries) [default: 2,000,000; 20,000 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(256..))]
    pub(crate) items: Option<u32>,
    /// `scale` only: interactions [default: 25 per item, 50,000,000 for 2,000,000 items].
    #[arg(long)]
    pub(crate) interactions: Option<usize>,
    /// `scale` only: run each of these catalogue sizes (comma-separated), interactions in
    /// proportion, and plot each stage's time and memory against the size.
    #[arg(long, value_delimiter = ',')]
    pub(crate) sweep: Vec<u32>,
    /// `scale` only: continue from the checkpoints a stopped run with the same settings left
    /// in `<out>/scale/checkpoints/` (one per model, size and seed, written after every epoch;
    /// removed when the experiment finishes). Results are as if the run had never stopped;
    /// training times and rates then cover only this run's steps.
    #[arg(long)]
    pub(crate) resume: bool,
    /// `scale` only: the Poeem model's coarse level learns from a separate uniform sample of
    /// this many catalogue rows per step instead of each batch's own items (the default, 0:
    /// this generator draws items uniformly, so a batch's items are such a sample already).
    #[arg(long)]
    pub(crate) catalogue_rows: Option<usize>,
}

/// The default of `--givens-lr`.
const DEFAULT_GIVENS_LR: f32 = 8.0;

/// The experiments.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Experiment {
    /// The tutorial over several seeds: brute force, post-hoc IVF-PQ and OPQ+IVF-PQ, Poeem
    /// without rotation, with OPQ at warm start, with Givens (random, greedy, steepest).
    Synthetic,
    /// The same comparison on RecBole-layout MovieLens files, with user and item features.
    Movielens,
    /// Warm start, PQ init, regularizer weight and Givens step size, on the tutorial.
    Ablation,
    /// Rotation learning on fixed embeddings: plain PQ, OPQ, Givens.
    Rotation,
    /// The tutorial's generator with millions of items: plain vs Poeem, post-hoc indexes, the
    /// time and memory of each stage.
    Scale,
    /// Every experiment in turn (`scale` only with `--quick`: in full it takes hours).
    All,
}

impl Experiment {
    /// Every single experiment, in the order `all` runs them.
    const EACH: [Experiment; 5] = [
        Experiment::Synthetic,
        Experiment::Movielens,
        Experiment::Ablation,
        Experiment::Rotation,
        Experiment::Scale,
    ];

    /// The name on the command line and of the output folder.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Experiment::Synthetic => "synthetic",
            Experiment::Movielens => "movielens",
            Experiment::Ablation => "ablation",
            Experiment::Rotation => "rotation",
            Experiment::Scale => "scale",
            Experiment::All => "all",
        }
    }
}

impl Args {
    /// The seeds S..S+N−1 of `experiment`.
    pub(crate) fn seed_list(&self, experiment: Experiment) -> Vec<u64> {
        // A scale run takes an hour: one seed unless asked.
        let default = if (self.quick && experiment != Experiment::Synthetic)
            || experiment == Experiment::Scale
        {
            1
        } else {
            3
        };
        let n = self.seeds.unwrap_or(default);
        (self.first_seed..self.first_seed + n).collect()
    }

    /// The worker threads' parallelism.
    pub(crate) fn par(&self) -> Par {
        match self.threads {
            0 => Par::rayon(std::thread::available_parallelism().map_or(1, usize::from)),
            1 => Par::Seq,
            n => Par::rayon(n),
        }
    }

    /// The thread count handed to training configurations (0: rayon's global pool).
    pub(crate) fn train_threads(&self) -> usize {
        self.threads
    }

    fn out_root(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| crate::target_dir().join("reproduce"))
    }

    /// The command line that reruns `experiment` with these settings.
    fn command(&self, experiment: Experiment) -> String {
        let mut cmd = format!("cargo xtask reproduce {}", experiment.name());
        if self.quick {
            cmd += " --quick";
        }
        if let Some(seeds) = self.seeds {
            cmd += &format!(" --seeds {seeds}");
        }
        if self.first_seed != 1 {
            cmd += &format!(" --first-seed {}", self.first_seed);
        }
        let rotation = experiment == Experiment::Rotation;
        if let Some(data) = &self.data
            && experiment == Experiment::Movielens
        {
            cmd += &format!(" --data {}", data.display());
        }
        if let Some(epochs) = self.epochs
            && matches!(experiment, Experiment::Movielens | Experiment::Scale)
        {
            cmd += &format!(" --epochs {epochs}");
        }
        if experiment == Experiment::Scale {
            if let Some(items) = self.items {
                cmd += &format!(" --items {items}");
            }
            if let Some(interactions) = self.interactions {
                cmd += &format!(" --interactions {interactions}");
            }
            if !self.sweep.is_empty() {
                let sizes: Vec<String> = self.sweep.iter().map(u32::to_string).collect();
                cmd += &format!(" --sweep {}", sizes.join(","));
            }
            if let Some(rows) = self.catalogue_rows {
                cmd += &format!(" --catalogue-rows {rows}");
            }
        }
        if self.faiss
            && matches!(
                experiment,
                Experiment::Synthetic | Experiment::Movielens | Experiment::Scale
            )
        {
            cmd += " --faiss";
        }
        if let Some(vectors) = &self.vectors
            && rotation
        {
            cmd += &format!(" --vectors {}", vectors.display());
        }
        if self.givens_lr != DEFAULT_GIVENS_LR && rotation {
            cmd += &format!(" --givens-lr {}", self.givens_lr);
        }
        if self.threads != 0 {
            cmd += &format!(" --threads {}", self.threads);
        }
        cmd
    }
}

/// Where the input data of an experiment came from.
pub(crate) struct DataInfo {
    /// What it is, in words.
    pub(crate) description: String,
    /// SHA-256 of the data as the experiment read it.
    pub(crate) sha256: String,
}

/// What an experiment found.
pub(crate) struct Outcome {
    /// The report's title.
    pub(crate) title: String,
    /// The seeds it ran with.
    pub(crate) seeds: Vec<u64>,
    /// Its input data.
    pub(crate) data: DataInfo,
    /// Its settings (shapes, epochs, nprobes, …).
    pub(crate) settings: Value,
    /// Every number it measured.
    pub(crate) results: Value,
    /// The report's body: Markdown tables and notes.
    pub(crate) report: String,
    /// Plots, by file stem.
    pub(crate) plots: Vec<(String, LineChart)>,
}

/// Runs `args.experiment` (or each in turn for `all`) and writes their outputs.
///
/// # Errors
/// An experiment's errors (bad data, a failed write, …).
pub(crate) fn run(args: &Args) -> Result<()> {
    let experiments: Vec<Experiment> = match args.experiment {
        // The full scale run takes about an hour on 2 cores: `all` leaves it to its own command.
        Experiment::All if !args.quick => {
            eprintln!(
                "all: `reproduce scale` is left out (it takes about an hour on 2 cores); run it \
                 on its own, or `reproduce all --quick` for its short form"
            );
            Experiment::EACH
                .into_iter()
                .filter(|&e| e != Experiment::Scale)
                .collect()
        }
        Experiment::All => Experiment::EACH.to_vec(),
        one => vec![one],
    };
    let progress = Progress::new(&experiments);
    let started = Instant::now();
    let mut written = Vec::new();
    for &experiment in &experiments {
        progress.start(experiment);
        let dir = run_one(experiment, args, &progress)?;
        progress.finish_experiment(&format!(
            "{} done: {}",
            experiment.name(),
            dir.join("report.md").display()
        ));
        written.push(dir);
    }
    progress.clear();
    if experiments.len() > 1 {
        println!(
            "all experiments done in {:.0} s:",
            started.elapsed().as_secs_f64()
        );
        for dir in written {
            println!("  {}", dir.join("report.md").display());
        }
    }
    Ok(())
}

/// Runs one experiment, prints its report and writes its outputs; returns its folder.
fn run_one(experiment: Experiment, args: &Args, progress: &Progress) -> Result<PathBuf> {
    let started = Instant::now();
    let outcome = match experiment {
        Experiment::Synthetic => synthetic::run(args, progress)?,
        Experiment::Movielens => movielens::run(args, progress)?,
        Experiment::Ablation => ablation::run(args, progress)?,
        Experiment::Rotation => rotation::run(args, progress)?,
        Experiment::Scale => scale::run(args, progress)?,
        Experiment::All => bail!("`all` is not a single experiment"),
    };
    let dir = args.out_root().join(experiment.name());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let elapsed = started.elapsed().as_secs_f64();
    let workspace = crate::target_dir()
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned);
    let machine = meta::machine();
    let date = meta::utc_now();
    let revision = meta::git_revision(&workspace);
    let command = args.command(experiment);

    let mut plot_files = Vec::new();
    for (stem, chart) in &outcome.plots {
        let file = format!("{stem}.svg");
        plot::write_svg(chart, &dir.join(&file))?;
        plot_files.push((file, chart.title.clone()));
    }
    let results = json!({
        "experiment": experiment.name(),
        "command": command,
        "quick": args.quick,
        "date": date,
        "git_revision": revision,
        "machine": machine,
        "threads": args.threads,
        "seeds": outcome.seeds,
        "data": {
            "description": outcome.data.description,
            "sha256": outcome.data.sha256,
        },
        "elapsed_seconds": elapsed,
        "settings": outcome.settings,
        "results": outcome.results,
        "plots": plot_files.iter().map(|(f, _)| f).collect::<Vec<_>>(),
    });
    let mut report = format!(
        "# {}\n\nRun `{command}` on {date}: {}; git {revision}; seeds {:?}; {:.0} s.\n\nData: {} \
         (SHA-256 `{}`).\n\n",
        outcome.title,
        meta::machine_line(&machine),
        outcome.seeds,
        elapsed,
        outcome.data.description,
        outcome.data.sha256,
    );
    report += &outcome.report;
    for (file, title) in &plot_files {
        report += &format!("\n![{title}]({file})\n");
    }
    write_file(
        &dir.join("results.json"),
        &(serde_json::to_string_pretty(&results)? + "\n"),
    )?;
    write_file(&dir.join("report.md"), &report)?;
    progress.println(&report);
    Ok(dir)
}

/// Writes `text` to `path` atomically.
pub(crate) fn write_file(path: &Path, text: &str) -> Result<()> {
    poeem_fs::write_atomically(path, |out| {
        use std::io::Write;
        out.write_all(text.as_bytes())
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// The progress display: one bar over the experiments of `all`, one over the current
/// experiment's jobs (models trained, indexes built), and one over the current training's steps.
pub(crate) struct Progress {
    multi: MultiProgress,
    experiments: Option<ProgressBar>,
    jobs: ProgressBar,
}

impl Progress {
    fn new(experiments: &[Experiment]) -> Self {
        let multi = MultiProgress::new();
        let experiments = (experiments.len() > 1).then(|| {
            multi.add(
                ProgressBar::new(experiments.len() as u64)
                    .with_style(style("experiments {pos}/{len} [{bar:20}] {elapsed} {msg}")),
            )
        });
        let jobs = multi.add(ProgressBar::new(0).with_style(style(
            "{prefix:>10} {pos}/{len} jobs [{bar:30}] ({eta}) {msg}",
        )));
        Self {
            multi,
            experiments,
            jobs,
        }
    }

    fn start(&self, experiment: Experiment) {
        if let Some(bar) = &self.experiments {
            bar.set_message(experiment.name());
        }
        self.jobs.set_prefix(experiment.name());
        self.jobs.set_position(0);
        self.jobs.set_length(0);
        self.jobs.reset_eta();
    }

    fn finish_experiment(&self, line: &str) {
        if let Some(bar) = &self.experiments {
            bar.inc(1);
        }
        self.println(line);
    }

    fn clear(&self) {
        if let Some(bar) = &self.experiments {
            bar.finish_and_clear();
        }
        self.jobs.finish_and_clear();
    }

    /// Sets how many jobs the current experiment has.
    pub(crate) fn jobs(&self, total: usize) {
        self.jobs.set_length(total as u64);
    }

    /// A job starts: `what` describes it (shown beside the bar, and logged when stderr is not
    /// a terminal).
    pub(crate) fn job(&self, what: impl Into<Cow<'static, str>>) {
        let what = what.into();
        if self.multi.is_hidden() {
            eprintln!("[{}] {what}", self.jobs.prefix());
        }
        self.jobs.set_message(what);
    }

    /// The current job is done.
    pub(crate) fn job_done(&self) {
        self.jobs.inc(1);
    }

    /// A bar over a training run's steps, updated by the returned callback.
    pub(crate) fn training(&self, name: &str, batch_size: usize) -> TrainingBar {
        let bar = self.multi.add(ProgressBar::new(0).with_style(style(
            "{prefix:>10} [{bar:30}] {pos}/{len} steps ({eta}) {msg}",
        )));
        bar.set_prefix(name.to_owned());
        TrainingBar {
            bar,
            logged_tenths: self.multi.is_hidden().then_some(0),
            batch_size,
            first_report: None,
        }
    }

    /// Prints a line above the bars.
    pub(crate) fn println(&self, line: &str) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }
}

/// What is measured through an index: per nprobe, and optionally its coarse level.
pub(crate) type Measured<M> = (Vec<M>, Option<CoarseDiagnostics>);

/// An index of a comparison, measured at each nprobe of the experiment.
pub(crate) struct IndexRun<M> {
    pub(crate) name: String,
    /// `"build"` (post hoc) or `"export"` (Poeem).
    pub(crate) made_by: &'static str,
    /// Median seconds to make it from the item embeddings.
    pub(crate) seconds: f64,
    pub(crate) relative_distortion: f64,
    /// What was measured through it, per nprobe.
    pub(crate) by_nprobe: Vec<M>,
    /// How its coarse level serves the queries (for the indexes whose lists we can read).
    pub(crate) coarse: Option<CoarseDiagnostics>,
}

impl<M> IndexRun<M> {
    /// The row of `index`, named `name` and made by `made_by`, with `by_nprobe` measured
    /// through it.
    pub(crate) fn of(
        name: &str,
        made_by: &'static str,
        index: &TimedIndex,
        (by_nprobe, coarse): Measured<M>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            made_by,
            seconds: index.median_seconds(),
            relative_distortion: index.relative_distortion,
            by_nprobe,
            coarse,
        }
    }
}

/// A run of one seed (and size) that holds its indexes by name.
pub(crate) trait WithIndexes {
    type Measure;

    fn indexes(&self) -> &[IndexRun<Self::Measure>];

    fn index(&self, name: &str) -> Option<&IndexRun<Self::Measure>> {
        self.indexes().iter().find(|i| i.name == name)
    }
}

impl<T: WithIndexes> WithIndexes for &T {
    type Measure = T::Measure;

    fn indexes(&self) -> &[IndexRun<Self::Measure>] {
        (**self).indexes()
    }
}

/// `value` of the index `name` in each of `runs` that has it.
pub(crate) fn across_runs<R: WithIndexes>(
    runs: &[R],
    name: &str,
    value: impl Fn(&IndexRun<R::Measure>) -> f64,
) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| r.index(name).map(&value))
        .collect()
}

/// A report table of the coarse-level diagnostics of the indexes named `names` (means over
/// the seeds' `IndexRun`s in `runs`; indexes without diagnostics are left out): the share of
/// the queries' exact top-k inside the probed lists at each nprobe, the share of queries whose
/// best item is in the first probed list, the probed list size over the mean list size, the
/// most-probed list's queries and size, the centroid norms and their offset from their lists'
/// means.
pub(crate) fn coarse_table<M>(names: &[String], runs: &[&[IndexRun<M>]]) -> Option<String> {
    let mut rows = Vec::new();
    let mut nprobes = Vec::new();
    let mut k = 0;
    for name in names {
        let found: Vec<&CoarseDiagnostics> = runs
            .iter()
            .filter_map(|r| r.iter().find(|i| &i.name == name)?.coarse.as_ref())
            .collect();
        let Some(first) = found.first() else {
            continue;
        };
        nprobes = first.coverage.iter().map(|c| c.nprobe).collect();
        k = first.k;
        let mean = |f: &dyn Fn(&CoarseDiagnostics) -> f64| {
            found.iter().map(|d| f(d)).sum::<f64>() / found.len() as f64
        };
        let mut row = vec![name.clone()];
        for p in 0..nprobes.len() {
            row.push(format!("{:.3}", mean(&|d| d.coverage[p].top_k_share)));
        }
        row.push(format!("{:.3}", mean(&|d| d.coverage[0].best_item_share)));
        row.push(format!(
            "{:.2}",
            mean(&|d| d.concentration.probed_size_ratio())
        ));
        row.push(format!(
            "{:.3}",
            mean(&|d| d.concentration.short_first_lists(d.k))
        ));
        let (_, queries, size) = first.concentration.most_probed();
        row.push(format!("{queries} / {size}"));
        row.push(format!(
            "{:.3} [{:.3}, {:.3}]",
            mean(&|d| d.centroid_norms[1]),
            mean(&|d| d.centroid_norms[0]),
            mean(&|d| d.centroid_norms[2])
        ));
        row.push(format!(
            "{:.4} / {:.4}",
            mean(&|d| d.centroid_offset),
            mean(&|d| d.item_to_centroid)
        ));
        rows.push(row);
    }
    if rows.is_empty() {
        return None;
    }
    let mut header = vec!["index".to_owned()];
    header.extend(
        nprobes
            .iter()
            .map(|p| format!("top-{k} inside, nprobe {p}")),
    );
    header.extend([
        "best item in 1st list".to_owned(),
        "probed / mean list size".to_owned(),
        format!("1st list under {k} items"),
        "most-probed list: queries / items (first seed)".to_owned(),
        "centroid norm median [min, max]".to_owned(),
        "centroid offset / item-to-centroid (RMS)".to_owned(),
    ]);
    Some(markdown_table(&header, &rows))
}

/// poeem's post-hoc IVF-PQ and OPQ+IVF-PQ (with `opq`) of `build` on `items` (`dim` wide),
/// each built `runs` times and measured by `measure` (per nprobe, and optionally its coarse
/// level); `seed` names the jobs.
///
/// # Errors
/// The builds' failures, and `measure`'s.
#[allow(clippy::too_many_arguments)]
pub(crate) fn post_hoc_rows<M>(
    progress: &Progress,
    seed: u64,
    items: &[f32],
    dim: usize,
    build: &BuildConfig,
    opq: &OpqConfig,
    runs: usize,
    par: Par,
    measure: &dyn Fn(&IndexParts) -> Result<Measured<M>>,
) -> Result<Vec<IndexRun<M>>> {
    [
        ("post-hoc IVF-PQ", None),
        ("post-hoc OPQ+IVF-PQ", Some(opq.clone())),
    ]
    .into_iter()
    .map(|(name, opq)| {
        progress.job(format!("seed {seed}: building {name}"));
        let build = BuildConfig {
            opq,
            ..build.clone()
        };
        let index = build_post_hoc(items, dim, &build, runs, par, &mut |_| {})?;
        let row = IndexRun::of(name, "build", &index, measure(&index.parts)?);
        progress.job_done();
        Ok(row)
    })
    .collect()
}

/// faiss's post-hoc `IVF,PQ` and `OPQ,IVF,PQ` of `settings` on `items`, searched with
/// `queries`, each nprobe's rankings measured by `score`; with faiss's version.
///
/// # Errors
/// faiss's failures, and `score`'s.
pub(crate) fn faiss_rows<M>(
    python: &Path,
    items: &[f32],
    queries: &[f32],
    dim: usize,
    settings: &faiss::FaissSettings,
    score: &dyn Fn(&[u32]) -> Result<M>,
) -> Result<(Vec<IndexRun<M>>, String)> {
    let results = faiss::post_hoc(
        python,
        items,
        queries,
        dim,
        &[faiss::FaissIndex::IvfPq, faiss::FaissIndex::OpqIvfPq],
        settings,
    )?;
    let version = results
        .first()
        .map_or_else(String::new, |r| r.faiss_version.clone());
    let rows = results
        .into_iter()
        .map(|r| {
            Ok(IndexRun {
                name: r.index.name().to_owned(),
                made_by: "build",
                seconds: r.build_seconds,
                relative_distortion: r.relative_distortion,
                by_nprobe: r
                    .rankings
                    .iter()
                    .map(|ranking| score(ranking))
                    .collect::<Result<_>>()?,
                coarse: None,
            })
        })
        .collect::<Result<_>>()?;
    Ok((rows, version))
}

/// Trains a model from scratch on `dataset` with a progress bar named `name`; `on_report` sees
/// every trainer report too.
pub(crate) fn train_with_bar(
    progress: &Progress,
    name: &str,
    config: &TrainConfig,
    dataset: &Dataset,
    on_report: &mut dyn FnMut(&TrainProgress),
) -> Result<(Model, TrainReport)> {
    let mut bar = progress.training(name, config.batch_size);
    Ok(train_model(config, dataset, &mut |p| {
        bar.update(p);
        on_report(p);
    })?)
}

/// A model trained by [`train_checkpointed`].
pub(crate) struct Checkpointed {
    pub(crate) model: Model,
    /// This process's part of the run (time and rate cover only its steps).
    pub(crate) report: TrainReport,
    /// The step the run resumed at (0: trained from the start).
    pub(crate) resumed_from_step: u64,
}

/// Trains `config` on `dataset` with a progress bar named `name`, checkpointing into `dir`
/// every `config.checkpoint_every_steps` steps and at the end. With `resume` and a checkpoint
/// in `dir`, the run continues from it (bit for bit as if never stopped); the checkpoint must
/// be of the same settings and data. Otherwise a checkpoint left there is replaced.
pub(crate) fn train_checkpointed(
    progress: &Progress,
    name: &str,
    config: &TrainConfig,
    dataset: &Dataset,
    dir: &Path,
    resume: bool,
) -> Result<Checkpointed> {
    let resuming = resume && poeem::train::checkpoint::checkpoint_path(dir).exists();
    let mut trainer = if resuming {
        let mut trainer = Trainer::resume(dir, dataset)
            .with_context(|| format!("resuming the {name} model from {}", dir.display()))?;
        // Threads and reporting may change between runs; nothing else may.
        let found = TrainConfig {
            threads: config.threads,
            log_every_steps: config.log_every_steps,
            checkpoint_every_steps: config.checkpoint_every_steps,
            ..trainer.config().clone()
        };
        if found != *config {
            bail!(
                "the {name} model's checkpoint in {} was trained with other settings than this \
                 run's; rerun without --resume to start over, or with the settings it was \
                 started with",
                dir.display()
            );
        }
        trainer.set_threads(config.threads)?;
        progress.println(&format!(
            "[{name}] resuming at step {} of {} from {}",
            trainer.step(),
            trainer.total_steps(),
            dir.display()
        ));
        trainer
    } else {
        let mut trainer = Trainer::new(config.clone(), dataset)?;
        trainer.set_checkpoint_dir(dir)?;
        trainer
    };
    let resumed_from_step = trainer.step();
    let mut bar = progress.training(name, config.batch_size);
    let report = trainer.train(&mut |p| bar.update(p))?;
    Ok(Checkpointed {
        model: trainer.into_model(),
        report,
        resumed_from_step,
    })
}

/// The bar of one training run; cleared when dropped. Where the bars are hidden (stderr is
/// not a terminal), each tenth of the run is logged as a line instead, with the rate since the
/// first report (a report's own rate covers only its last few steps, and the report that
/// crosses a tenth often holds an epoch's reshuffle).
pub(crate) struct TrainingBar {
    bar: ProgressBar,
    /// Tenths of the run logged so far, when logging lines.
    logged_tenths: Option<u64>,
    batch_size: usize,
    /// When the first report came, and its step.
    first_report: Option<(Instant, u64)>,
}

impl TrainingBar {
    /// Shows a trainer's report.
    pub(crate) fn update(&mut self, p: &TrainProgress) {
        self.bar.set_length(p.total_steps);
        self.bar.set_position(p.step);
        self.bar.set_message(format!("loss {:.3}", p.loss));
        let (since, first_step) = *self.first_report.get_or_insert((Instant::now(), p.step));
        if let Some(logged) = &mut self.logged_tenths {
            let tenths = p.step * 10 / p.total_steps.max(1);
            if tenths > *logged {
                *logged = tenths;
                let rate = if p.step > first_step {
                    let examples = (p.step - first_step) as f64 * self.batch_size as f64;
                    examples / since.elapsed().as_secs_f64().max(1e-9)
                } else {
                    p.examples_per_second
                };
                eprintln!(
                    "[{}] {}/{} steps, loss {:.3}, {rate:.0} examples/s",
                    self.bar.prefix(),
                    p.step,
                    p.total_steps,
                    p.loss,
                );
            }
        }
    }
}

impl Drop for TrainingBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// The mean and the population standard deviation of `values` (NaN for none).
pub(crate) fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The smallest and largest of `values`.
pub(crate) fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// A line through the mean over seeds at each of `xs`, with the min..max bars: `per_x[i]`
/// holds the seeds' values at `xs[i]`.
pub(crate) fn seed_series(name: &str, xs: &[usize], per_x: &[Vec<f64>]) -> Series {
    Series {
        name: name.to_owned(),
        points: xs
            .iter()
            .zip(per_x)
            .map(|(&x, values)| (x as f64, mean_std(values).0))
            .collect(),
        spread: Some(per_x.iter().map(|values| min_max(values)).collect()),
    }
}

/// A flat line at the mean of `values` over `xs` (a reference such as brute force).
pub(crate) fn flat_series(name: &str, xs: &[usize], values: &[f64]) -> Series {
    let mean = mean_std(values).0;
    Series {
        name: name.to_owned(),
        points: xs.iter().map(|&x| (x as f64, mean)).collect(),
        spread: None,
    }
}

/// `mean ± std` of `values` with `digits` decimals (the value alone for one value).
pub(crate) fn mean_pm(values: &[f64], digits: usize) -> String {
    let (mean, std) = mean_std(values);
    if values.len() == 1 {
        format!("{mean:.digits$}")
    } else {
        format!("{mean:.digits$} ± {std:.digits$}")
    }
}

/// The report's note on the faiss rows: what they are (faiss `version` built them), or why they
/// are missing when `--faiss` asked for them.
pub(crate) fn faiss_note(asked: bool, version: Option<&str>) -> String {
    match version {
        Some(version) => format!(
            "\nThe faiss rows are faiss {version}'s own `IVF,PQ` and `OPQ,IVF,PQ` of the same \
             shape, built on the plain model's embeddings with the inner-product metric (their \
             lists are probed by inner product too) and scored by the same code; their time is \
             faiss's train + add on as many threads.\n"
        ),
        None if asked => {
            "\nThe faiss rows are missing: no Python that can import faiss was found.\n".to_owned()
        }
        None => String::new(),
    }
}

/// How the tables summarise `n` seeds, for the reports' prose.
pub(crate) fn over_seeds(n: usize) -> String {
    if n == 1 {
        "one seed (no spread)".to_owned()
    } else {
        format!("mean ± standard deviation over {n} seeds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_and_seed_defaults() {
        assert_eq!(mean_pm(&[0.5], 2), "0.50");
        assert_eq!(mean_pm(&[1.0, 3.0], 1), "2.0 ± 1.0");
        assert!(mean_std(&[]).0.is_nan());
        let mut args = Args {
            experiment: Experiment::All,
            quick: true,
            seeds: None,
            first_seed: 1,
            data: None,
            out: None,
            faiss: false,
            python: None,
            threads: 0,
            vectors: None,
            epochs: None,
            givens_lr: DEFAULT_GIVENS_LR,
            items: None,
            interactions: None,
            sweep: Vec::new(),
            resume: false,
            catalogue_rows: None,
        };
        assert_eq!(args.seed_list(Experiment::Synthetic), [1, 2, 3]);
        assert_eq!(args.seed_list(Experiment::Ablation), [1]);
        args.quick = false;
        assert_eq!(args.seed_list(Experiment::Ablation), [1, 2, 3]);
        args.seeds = Some(2);
        assert_eq!(args.seed_list(Experiment::Rotation), [1, 2]);
        args.data = Some(PathBuf::from("ml"));
        args.faiss = true;
        assert_eq!(
            args.command(Experiment::Movielens),
            "cargo xtask reproduce movielens --seeds 2 --data ml --faiss"
        );
        assert_eq!(
            args.command(Experiment::Ablation),
            "cargo xtask reproduce ablation --seeds 2"
        );
        args.seeds = None;
        assert_eq!(args.seed_list(Experiment::Scale), [1]);
        args.first_seed = 2;
        assert_eq!(args.seed_list(Experiment::Scale), [2]);
        assert_eq!(args.seed_list(Experiment::Synthetic), [2, 3, 4]);
        assert_eq!(
            args.command(Experiment::Ablation),
            "cargo xtask reproduce ablation --first-seed 2"
        );
        args.first_seed = 1;
        args.items = Some(250_000);
        args.sweep = vec![250_000, 500_000];
        args.epochs = Some(1);
        args.catalogue_rows = Some(0);
        assert_eq!(
            args.command(Experiment::Scale),
            "cargo xtask reproduce scale --epochs 1 --items 250000 --sweep 250000,500000 \
             --catalogue-rows 0 --faiss"
        );
    }

    #[test]
    fn a_stopped_training_run_resumes_bit_for_bit() {
        let rule = poeem::train::synthetic::ScaledTutorial::new(256);
        let dataset = rule.dataset(3_000, 5);
        let (mut config, _) = scale::training_presets(true, 3_000, 2, 1);
        config.batch_size = 128;
        config.checkpoint_every_steps = 5;
        let progress = Progress::new(&[Experiment::Scale]);
        let root = tempfile::tempdir().unwrap();
        let train = |dir: &str, config: &TrainConfig, resume: bool| {
            train_checkpointed(
                &progress,
                "t",
                config,
                &dataset,
                &root.path().join(dir),
                resume,
            )
        };
        let items = |model: &Model| {
            let all: Vec<u32> = (0..model.n_items() as u32).collect();
            model.embed_items(&all, Par::Seq).unwrap()
        };
        let whole = train("whole", &config, false).unwrap();
        assert_eq!(whole.resumed_from_step, 0);
        assert_eq!(whole.report.step, 48);

        // A run stopped after 17 steps, then resumed.
        let mut stopped = Trainer::new(config.clone(), &dataset).unwrap();
        stopped
            .set_checkpoint_dir(root.path().join("stopped"))
            .unwrap();
        stopped.train_steps(17, &mut |_| {}).unwrap();
        drop(stopped);
        let resumed = train("stopped", &config, true).unwrap();
        assert_eq!(resumed.resumed_from_step, 17);
        assert_eq!(resumed.report.steps_run, 31);
        assert_eq!(items(&resumed.model), items(&whole.model));

        // Other settings are refused; without --resume the run starts over.
        let mut other = config.clone();
        other.seed += 1;
        let err = train("stopped", &other, true).err().unwrap();
        assert!(format!("{err:#}").contains("other settings"), "{err:#}");
        let mut threads = config.clone();
        threads.threads = 2;
        assert_eq!(
            train("stopped", &threads, true).unwrap().resumed_from_step,
            48
        );
        let fresh = train("stopped", &config, false).unwrap();
        assert_eq!(fresh.resumed_from_step, 0);
        assert_eq!(items(&fresh.model), items(&whole.model));
    }
}
