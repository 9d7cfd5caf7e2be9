//! `reproduce movielens`: the synthetic experiment's comparison on RecBole-layout MovieLens
//! files, with user and item features, split leave-last-out. The plain model's post-hoc IVF-PQ
//! and OPQ+IVF-PQ indexes against the Poeem variants' exported indexes; recall and NDCG at 10,
//! 50 and 100 against nprobe; the layer's distortion and code use over training.
//!
//! Without `--data`, it runs on a generated stand-in in the same layout (users with genre
//! tastes, items with genres and years, popularity skew) and says so in the report.

use std::path::Path;

use anyhow::{Context, Result, bail};
use poeem::build::BuildConfig;
use poeem::pipeline::{CoarseDiagnostics, EvalSet, IdMap, ItemIds, export_timed, markdown_table};
use poeem::pq::{OpqConfig, Par};
use poeem::search::{IndexParts, Probe, SearchIndex};
use poeem::train::metrics::RankingMetrics;
use poeem::train::{
    CoarseObjective, DataConfig, Dataset, LayerDiagnostics, LayerUpdateItems, Model, RotationMode,
    TrainConfig, TrainProgress,
};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::faiss::FaissSettings;
use super::meta::DataHash;
use super::plot::{LineChart, Series};
use super::post_hoc_rows;
use super::synthetic::{VARIANTS, faiss_python};
use super::{
    Args, DataInfo, IndexRun, Outcome, Progress, WithIndexes, across_runs, coarse_table, mean_pm,
    mean_std, over_seeds, train_with_bar,
};
use super::{flat_series, seed_series};

/// Cut-offs of the metrics.
const KS: [usize; 3] = [10, 50, 100];

/// The cut-off of the main tables and the plot.
const MAIN_K: usize = 50;

/// The nprobes every index is searched at (of J = 32 lists; 32 probes them all).
const NPROBES: [usize; 6] = [1, 2, 4, 8, 16, 32];

/// The index shape: J lists, D subspaces of `N_BITS` bits (K = 256).
const N_LISTS: usize = 32;
const N_SUBSPACES: usize = 8;
const N_BITS: u32 = 8;

/// A Poeem model of the comparison: a rotation mode of the synthetic experiment's
/// [`VARIANTS`] with the preset's coarse level, or the preset without rotation and another
/// coarse level (the ablation of what the coarse centroids learn from).
struct Variant {
    name: &'static str,
    rotation: RotationMode,
    /// The coarse objective and items, when not the preset's.
    coarse: Option<(CoarseObjective, LayerUpdateItems)>,
}

/// The coarse-level ablation: the reference's coarse level (centroids descend the whole
/// reconstruction error of each batch's items) and list means learned from the batches'
/// items, against the preset's list means of a uniform catalogue sample.
const COARSE_VARIANTS: [(&str, CoarseObjective, LayerUpdateItems); 2] = [
    (
        "Poeem, reference coarse level (batch items, reconstruction error)",
        CoarseObjective::Reconstruction,
        LayerUpdateItems::Batches,
    ),
    (
        "Poeem, list means of batch items",
        CoarseObjective::ListMeans,
        LayerUpdateItems::Batches,
    ),
];

/// Every Poeem model trained per seed: the rotation variants, then the coarse-level ablation.
fn variants() -> Vec<Variant> {
    let rotations = VARIANTS.iter().map(|&(name, rotation)| Variant {
        name,
        rotation,
        coarse: None,
    });
    let coarse = COARSE_VARIANTS
        .iter()
        .map(|&(name, objective, items)| Variant {
            name,
            rotation: RotationMode::None,
            coarse: Some((objective, items)),
        });
    rotations.chain(coarse).collect()
}

/// Epochs of a `--quick` run (the preset's 20 otherwise).
const QUICK_EPOCHS: usize = 10;

/// Points of the training curves: the trainer reports every `total steps / CURVE_POINTS` steps.
const CURVE_POINTS: u64 = 40;

pub(super) fn run(args: &Args, progress: &Progress) -> Result<Outcome> {
    let (dir, name, description) = match &args.data {
        Some(dir) => {
            let name = recbole_name(dir)?;
            let description = format!("RecBole-layout MovieLens files {}/{name}.*", dir.display());
            (dir.clone(), name, description)
        }
        None => {
            let dir = args.out_root().join("movielens").join("generated-data");
            let spec = if args.quick {
                StandIn::QUICK
            } else {
                StandIn::FULL
            };
            spec.write(&dir)?;
            let description = format!(
                "no --data given, so a generated stand-in in the MovieLens layout ({} users, {} \
                 items, genre tastes; {}): its numbers say nothing about MovieLens; pass \
                 `--data ../shared/data/ml-100k` or another RecBole-layout MovieLens",
                spec.users,
                spec.items,
                dir.display()
            );
            (dir, STAND_IN_NAME.to_owned(), description)
        }
    };
    let data_config = DataConfig::recbole(&dir, &name);
    let mut hash = DataHash::default();
    for path in [
        Some(data_config.interactions.path.clone()),
        data_config.query_features.as_ref().map(|f| f.path.clone()),
        data_config.item_features.as_ref().map(|f| f.path.clone()),
    ]
    .into_iter()
    .flatten()
    {
        hash.file(&path)?;
    }
    progress.job(format!("loading {}", dir.display()));
    let dataset = Dataset::load(&data_config)
        .with_context(|| format!("loading the MovieLens files in {}", dir.display()))?;
    let eval = EvalSet::held_out(&dataset)?;

    let seeds = args.seed_list(super::Experiment::Movielens);
    let python = faiss_python(args, progress);
    progress.jobs(seeds.len() * (3 + variants().len() + usize::from(python.is_some())));
    let experiment = Comparison {
        dataset: &dataset,
        eval: &eval,
        par: args.par(),
        quick: args.quick,
        epochs: args.epochs,
        threads: args.train_threads(),
    };
    let mut runs = Vec::new();
    for &seed in &seeds {
        runs.push(experiment.run_seed(seed, python.as_deref(), progress)?);
    }
    let plain_config = experiment.train_config(0, false);
    let poeem_config = experiment.train_config(0, true);
    Ok(outcome(
        &seeds,
        &runs,
        &dataset,
        DataInfo {
            description,
            sha256: hash.hex(),
        },
        &plain_config,
        &poeem_config,
        args.faiss,
    ))
}

/// The stem of the one `<name>.inter` file in `dir`.
fn recbole_name(dir: &Path) -> Result<String> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("--data {}: cannot read the directory", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "inter"))
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "--data {}: no RecBole interactions file (`<name>.inter`) in the directory",
            dir.display()
        ),
        many => bail!(
            "--data {}: several interaction files ({}); give a directory with one",
            dir.display(),
            many.join(", ")
        ),
    }
}

/// The data and settings shared by every seed.
struct Comparison<'a> {
    dataset: &'a Dataset,
    eval: &'a EvalSet,
    par: Par,
    quick: bool,
    /// Epochs of every model, when not the preset's (`--epochs`).
    epochs: Option<u64>,
    threads: usize,
}

/// One index's metrics: per nprobe, per cut-off of [`KS`].
type MetricsRun = IndexRun<Vec<RankingMetrics>>;

/// A model's training and exact-retrieval metrics.
struct ModelRun {
    name: String,
    training_seconds: f64,
    brute_force: Vec<RankingMetrics>,
    /// The layer's diagnostics at each interval report: (step, diagnostics).
    curve: Vec<(u64, LayerDiagnostics)>,
}

struct SeedRun {
    seed: u64,
    plain: ModelRun,
    poeem: Vec<ModelRun>,
    indexes: Vec<MetricsRun>,
    /// The version of faiss that built the faiss rows, if any.
    faiss_version: Option<String>,
}

impl WithIndexes for SeedRun {
    type Measure = Vec<RankingMetrics>;

    fn indexes(&self) -> &[MetricsRun] {
        &self.indexes
    }
}

impl Comparison<'_> {
    /// The movielens preset for `seed`, with the layer J = 32, K = 256, D = 8 (`poeem`) or
    /// without it; `--quick` trains [`QUICK_EPOCHS`]. The warm-up is the preset's 1,024 steps,
    /// or half the run when that is shorter; reports come [`CURVE_POINTS`] times a run.
    fn train_config(&self, seed: u64, poeem: bool) -> TrainConfig {
        let mut config = TrainConfig::movielens();
        if self.quick {
            config.epochs = QUICK_EPOCHS;
        }
        if let Some(epochs) = self.epochs {
            config.epochs = epochs as usize;
        }
        config.seed = seed;
        config.model.seed = seed;
        config.threads = self.threads;
        let steps_per_epoch = self.dataset.train.len().div_ceil(config.batch_size) as u64;
        let total_steps = steps_per_epoch * config.epochs as u64;
        config.log_every_steps = (total_steps / CURVE_POINTS).max(1);
        config.index = if poeem {
            config.index.take().map(|mut layer| {
                layer.n_lists = N_LISTS;
                layer.n_subspaces = N_SUBSPACES;
                layer.n_bits = N_BITS;
                layer.warmup_steps = layer.warmup_steps.min(total_steps / 2);
                layer.seed = seed;
                layer
            })
        } else {
            None
        };
        config
    }

    fn run_seed(&self, seed: u64, python: Option<&Path>, progress: &Progress) -> Result<SeedRun> {
        progress.job(format!("seed {seed}: training the plain model"));
        let (plain_model, plain) =
            self.train("plain", &self.train_config(seed, false), progress)?;
        progress.job_done();
        let queries = plain_model.embed_queries(self.eval.queries(), self.par)?;
        let all: Vec<u32> = (0..plain_model.n_items() as u32).collect();
        let items = plain_model.embed_items(&all, self.par)?;
        let dim = plain_model.dim();
        let ids = IdMap::new(ItemIds::Dense, plain_model.items());
        let build = BuildConfig {
            seed,
            ..BuildConfig::new(N_LISTS, N_SUBSPACES, N_BITS)
        };
        let mut indexes = post_hoc_rows(
            progress,
            seed,
            &items,
            dim,
            &build,
            &OpqConfig::default(),
            3,
            self.par,
            &|parts| self.through(parts, &queries, &items, &ids),
        )?;
        let mut faiss_version = None;
        if let Some(python) = python {
            progress.job(format!("seed {seed}: faiss post-hoc indexes"));
            let (rows, version) = self.faiss_rows(python, seed, &items, &queries, dim)?;
            indexes.extend(rows);
            faiss_version = Some(version);
            progress.job_done();
        }
        drop(plain_model);
        let mut poeem = Vec::new();
        for variant in variants() {
            let name = variant.name;
            progress.job(format!("seed {seed}: training {name}"));
            let mut config = self.train_config(seed, true);
            if let Some(layer) = &mut config.index {
                layer.rotation = variant.rotation;
                if let Some((objective, items)) = variant.coarse {
                    layer.coarse_objective = objective;
                    config.model.layer_update_items = items;
                }
            }
            let (model, run) = self.train(name, &config, progress)?;
            let (index, ids, _) = export_timed(&model, 15, self.par)?;
            let queries = model.embed_queries(self.eval.queries(), self.par)?;
            let items = model.embed_items(&all, self.par)?;
            indexes.push(IndexRun::of(
                name,
                "export",
                &index,
                self.through(&index.parts, &queries, &items, &ids)?,
            ));
            poeem.push(run);
            progress.job_done();
        }
        Ok(SeedRun {
            seed,
            plain,
            poeem,
            indexes,
            faiss_version,
        })
    }

    /// Trains a model, keeping the layer's diagnostics at each report.
    fn train(
        &self,
        name: &str,
        config: &TrainConfig,
        progress: &Progress,
    ) -> Result<(Model, ModelRun)> {
        let mut curve = Vec::new();
        let (model, report) = train_with_bar(
            progress,
            name,
            config,
            self.dataset,
            &mut |p: &TrainProgress| {
                if let Some(layer) = &p.layer {
                    curve.push((p.step, layer.clone()));
                }
            },
        )?;
        let brute_force = self.eval.brute_force_model(&model, &KS, self.par)?;
        let run = ModelRun {
            name: name.to_owned(),
            training_seconds: report.elapsed.as_secs_f64(),
            brute_force,
            curve,
        };
        Ok((model, run))
    }

    /// The metrics through `parts` at each nprobe, and its coarse-level diagnostics against
    /// the exact top-[`MAIN_K`] of `queries` over `items` (the model's).
    fn through(
        &self,
        parts: &IndexParts,
        queries: &[f32],
        items: &[f32],
        ids: &IdMap,
    ) -> Result<super::Measured<Vec<RankingMetrics>>> {
        let metrics = self.eval.through_index_at(
            parts,
            queries,
            ids,
            &KS,
            &NPROBES,
            Probe::default(),
            self.par,
        )?;
        let index = SearchIndex::new(parts.view()?);
        let coarse = CoarseDiagnostics::measure(
            &index,
            queries,
            items,
            ids,
            MAIN_K,
            &NPROBES,
            Probe::default(),
            self.par,
        )?;
        Ok((metrics, Some(coarse)))
    }

    /// faiss's `IVF,PQ` and `OPQ,IVF,PQ` of the same shape on the plain model's embeddings
    /// (inner product), scored by the same code; with faiss's version.
    fn faiss_rows(
        &self,
        python: &Path,
        seed: u64,
        items: &[f32],
        queries: &[f32],
        dim: usize,
    ) -> Result<(Vec<MetricsRun>, String)> {
        let width = KS[KS.len() - 1] + self.eval.extra_results();
        let settings = FaissSettings {
            n_lists: N_LISTS,
            n_subspaces: N_SUBSPACES,
            n_bits: N_BITS,
            inner_product: true,
            k: width,
            nprobes: NPROBES.to_vec(),
            seed,
            threads: self.par.degree(),
        };
        super::faiss_rows(python, items, queries, dim, &settings, &|ranking| {
            Ok(self.eval.score(ranking, width, &KS)?)
        })
    }
}

/// A metric of a [`RankingMetrics`].
#[derive(Clone, Copy)]
enum Measure {
    Recall,
    Ndcg,
}

impl Measure {
    fn of(self, m: &RankingMetrics) -> f64 {
        match self {
            Measure::Recall => m.recall,
            Measure::Ndcg => m.ndcg,
        }
    }
}

/// The values over seeds of `measure` at cut-off index `k` and nprobe index `p` of the index
/// `name`.
fn across_seeds(runs: &[SeedRun], name: &str, p: usize, k: usize, measure: Measure) -> Vec<f64> {
    across_runs(runs, name, |i| measure.of(&i.by_nprobe[p][k]))
}

#[allow(clippy::too_many_arguments)]
fn outcome(
    seeds: &[u64],
    runs: &[SeedRun],
    dataset: &Dataset,
    data: DataInfo,
    plain_config: &TrainConfig,
    poeem_config: &TrainConfig,
    faiss_asked: bool,
) -> Outcome {
    let faiss_version = runs.iter().find_map(|r| r.faiss_version.clone());
    let index_names: Vec<String> = runs[0].indexes.iter().map(|i| i.name.clone()).collect();
    let main_k = KS.iter().position(|&k| k == MAIN_K).unwrap_or(0);
    let model_brute = |f: &dyn Fn(&SeedRun) -> &ModelRun, k: usize, measure: Measure| {
        runs.iter()
            .map(|r| measure.of(&f(r).brute_force[k]))
            .collect::<Vec<f64>>()
    };

    // recall@50 and NDCG@50 against nprobe.
    let against_nprobe = |measure: Measure| {
        let mut header = vec!["method".to_owned()];
        header.extend(NPROBES.iter().map(|p| format!("nprobe {p}")));
        let brute = model_brute(&|r| &r.plain, main_k, measure);
        let mut rows = vec![{
            let mut row = vec!["brute force (plain model)".to_owned()];
            row.extend(NPROBES.iter().map(|_| mean_pm(&brute, 4)));
            row
        }];
        for name in &index_names {
            let mut row = vec![name.clone()];
            row.extend(
                (0..NPROBES.len())
                    .map(|p| mean_pm(&across_seeds(runs, name, p, main_k, measure), 4)),
            );
            rows.push(row);
        }
        markdown_table(&header, &rows)
    };

    // Every cut-off at nprobe 1 and 8.
    let mut header = vec!["method".to_owned()];
    for p in [1, 8] {
        for k in KS {
            header.push(format!("R@{k} np{p}"));
        }
        for k in KS {
            header.push(format!("N@{k} np{p}"));
        }
    }
    let mut rows = Vec::new();
    for name in &index_names {
        let mut row = vec![name.clone()];
        for p in [1usize, 8] {
            let p = NPROBES.iter().position(|&n| n == p).unwrap_or(0);
            for measure in [Measure::Recall, Measure::Ndcg] {
                for k in 0..KS.len() {
                    row.push(format!(
                        "{:.4}",
                        mean_std(&across_seeds(runs, name, p, k, measure)).0
                    ));
                }
            }
        }
        rows.push(row);
    }
    let cutoff_table = markdown_table(&header, &rows);

    // Brute force of each model, and training.
    let mut rows = vec![{
        let mut row = vec!["plain".to_owned()];
        for k in 0..KS.len() {
            row.push(mean_pm(&model_brute(&|r| &r.plain, k, Measure::Recall), 4));
        }
        row.push(mean_pm(
            &runs
                .iter()
                .map(|r| r.plain.training_seconds)
                .collect::<Vec<_>>(),
            1,
        ));
        row
    }];
    for v in 0..runs[0].poeem.len() {
        let mut row = vec![runs[0].poeem[v].name.clone()];
        for k in 0..KS.len() {
            row.push(mean_pm(
                &model_brute(&|r| &r.poeem[v], k, Measure::Recall),
                4,
            ));
        }
        row.push(mean_pm(
            &runs
                .iter()
                .map(|r| r.poeem[v].training_seconds)
                .collect::<Vec<_>>(),
            1,
        ));
        rows.push(row);
    }
    let model_table = markdown_table(
        &[
            "model",
            "brute-force recall@10",
            "recall@50",
            "recall@100",
            "training seconds",
        ],
        &rows,
    );

    // Index time.
    let rows: Vec<Vec<String>> = index_names
        .iter()
        .map(|name| {
            let seconds: Vec<f64> = across_runs(runs, name, |i| i.seconds);
            let distortion: Vec<f64> = across_runs(runs, name, |i| i.relative_distortion);
            vec![
                name.clone(),
                runs[0].index(name).map_or("", |i| i.made_by).to_owned(),
                format!("{:.4}", mean_std(&seconds).0),
                format!("{:.4}", mean_std(&distortion).0),
            ]
        })
        .collect();
    let time_table = markdown_table(
        &["index", "made by", "seconds", "relative distortion"],
        &rows,
    );

    // Beats post-hoc at each nprobe, per seed.
    let best_post_hoc = |r: &SeedRun, p: usize| {
        r.indexes
            .iter()
            .filter(|i| i.made_by == "build")
            .map(|i| i.by_nprobe[p][main_k].recall)
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let wins: String = variants()
        .iter()
        .map(|&Variant { name, .. }| {
            let cells: Vec<String> = NPROBES
                .iter()
                .enumerate()
                .map(|(p, nprobe)| {
                    let won = runs
                        .iter()
                        .filter(|r| {
                            r.index(name).is_some_and(|i| {
                                i.by_nprobe[p][main_k].recall > best_post_hoc(r, p)
                            })
                        })
                        .count();
                    format!("nprobe {nprobe}: {won}/{}", runs.len())
                })
                .collect();
            format!(
                "- {name} beats every post-hoc index at recall@{MAIN_K} on {}\n",
                cells.join(", ")
            )
        })
        .collect();

    let layer = poeem_config.index.as_ref();
    let mut report = format!(
        "{} users, {} items, {} training and {} held-out pairs (leave-last-out; training items \
         excluded from the results). Models: the movielens preset ({} epochs, batch {}, Adam \
         {}; the layer at Adam {}); index J = {N_LISTS} lists, K = {} codewords, D = \
         {N_SUBSPACES} subspaces; Poeem warm-up {} steps; {}.\n\n## Recall@{MAIN_K} against nprobe\n\n{}\n## NDCG@{MAIN_K} against \
         nprobe\n\n{}\n{wins}\n## Every cut-off at nprobe 1 and 8 (means; R: recall, N: \
         NDCG)\n\n{cutoff_table}\n## Models (brute force on the unquantized embeddings)\n\n\
         {model_table}\n## Index time and distortion\n\n{time_table}",
        dataset.n_queries(),
        dataset.n_items(),
        dataset.train.len(),
        dataset.test.len(),
        plain_config.epochs,
        plain_config.batch_size,
        plain_config.optimizer.learning_rate(),
        layer.map_or(0.0, |l| l.optimizer.learning_rate()),
        1u64 << N_BITS,
        layer.map_or(0, |l| l.warmup_steps),
        over_seeds(seeds.len()),
        against_nprobe(Measure::Recall),
        against_nprobe(Measure::Ndcg),
    );
    let index_runs: Vec<&[MetricsRun]> = runs.iter().map(|r| &r.indexes[..]).collect();
    if let Some(table) = coarse_table(&index_names, &index_runs) {
        report += &format!(
            "\n## The coarse level\n\nFor each index, against its model's exact top-{MAIN_K} \
             (inner product over all items): the share inside the lists a query probes, the \
             share of queries whose best item is in the first list probed, how large the lists \
             queries probe first are against the mean list size (below 1: queries crowd onto \
             small lists), and where the centroids sit (a k-means centroid is its list's mean: \
             offset 0). The last two Poeem rows are the coarse-level ablation: the reference's \
             coarse level, and list means learned from the batches' items instead of a uniform \
             catalogue sample.\n\n{table}"
        );
    }
    report += &super::faiss_note(faiss_asked, faiss_version.as_deref());

    let plots = plots(runs, &index_names, main_k);
    let results = json!({
        "ks": KS,
        "nprobes": NPROBES,
        "n_users": dataset.n_queries(),
        "n_items": dataset.n_items(),
        "n_train": dataset.train.len(),
        "n_test": dataset.test.len(),
        "seeds": runs.iter().map(|r| json!({
            "seed": r.seed,
            "models": std::iter::once(&r.plain).chain(&r.poeem).map(|m| json!({
                "name": m.name,
                "training_seconds": m.training_seconds,
                "brute_force": metrics_json(&m.brute_force),
                "layer_curve": m.curve.iter().map(|(step, d)| curve_point(*step, d)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "indexes": r.indexes.iter().map(|i| json!({
                "name": i.name,
                "made_by": i.made_by,
                "seconds": i.seconds,
                "relative_distortion": i.relative_distortion,
                "by_nprobe": i.by_nprobe.iter().map(|m| metrics_json(m)).collect::<Vec<_>>(),
                "coarse": i.coarse,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    Outcome {
        title: "MovieLens: joint training against post-hoc indexes".to_owned(),
        seeds: seeds.to_vec(),
        data,
        settings: json!({
            "plain": plain_config,
            "poeem": poeem_config,
            "faiss_version": faiss_version,
        }),
        results,
        report,
        plots,
    }
}

fn metrics_json(metrics: &[RankingMetrics]) -> Value {
    Value::Array(
        metrics
            .iter()
            .map(
                |m| json!({"k": m.k, "recall": m.recall, "ndcg": m.ndcg, "precision": m.precision}),
            )
            .collect(),
    )
}

fn curve_point(step: u64, d: &LayerDiagnostics) -> Value {
    json!({
        "step": step,
        "mean_distortion": d.mean_distortion,
        "lists_used": d.coarse.as_ref().map(|c| c.used),
        "lists_kl": d.coarse.as_ref().map(|c| c.kl_to_uniform),
        "codewords_used_mean": d.pq_used_mean,
        "codewords_kl_mean": d.pq_kl_mean,
        "codewords_kl_max": d.pq_kl_max,
        "orthogonality_error": d.orthogonality_error,
    })
}

/// Recall@50 against nprobe; the layer's distortion and code use over training (first seed).
fn plots(runs: &[SeedRun], index_names: &[String], main_k: usize) -> Vec<(String, LineChart)> {
    let brute: Vec<f64> = runs
        .iter()
        .map(|r| Measure::Recall.of(&r.plain.brute_force[main_k]))
        .collect();
    let mut series = vec![flat_series("brute force (plain model)", &NPROBES, &brute)];
    for name in index_names {
        let per_nprobe: Vec<Vec<f64>> = (0..NPROBES.len())
            .map(|p| across_seeds(runs, name, p, main_k, Measure::Recall))
            .collect();
        series.push(seed_series(name, &NPROBES, &per_nprobe));
    }
    let recall = LineChart {
        title: format!("MovieLens: recall@{MAIN_K} against nprobe"),
        x_label: format!("nprobe (of {N_LISTS} lists)"),
        y_label: format!("recall@{MAIN_K} (mean over seeds, bars: min..max)"),
        log2_x: true,
        series,
    };
    let first = &runs[0];
    let curve = |f: &dyn Fn(&LayerDiagnostics) -> f64| -> Vec<Series> {
        first
            .poeem
            .iter()
            .map(|m| Series {
                name: m.name.clone(),
                points: m.curve.iter().map(|(s, d)| (*s as f64, f(d))).collect(),
                spread: None,
            })
            .collect()
    };
    let distortion = LineChart {
        title: format!(
            "MovieLens: the layer's distortion over training (seed {})",
            first.seed
        ),
        x_label: "training step".to_owned(),
        y_label: "mean RMS(x − τ(x)) per logging interval".to_owned(),
        log2_x: false,
        series: curve(&|d| d.mean_distortion),
    };
    let mut usage_series = curve(&|d| d.pq_kl_mean);
    for s in &mut usage_series {
        s.name += ": codewords";
    }
    let mut lists = curve(&|d| d.coarse.as_ref().map_or(f64::NAN, |c| c.kl_to_uniform));
    for s in &mut lists {
        s.name += ": lists";
    }
    usage_series.extend(lists.into_iter().take(1));
    let usage = LineChart {
        title: format!(
            "MovieLens: code use over training (seed {}; 0 = uniform)",
            first.seed
        ),
        x_label: "training step".to_owned(),
        y_label: "KL divergence of code use to uniform".to_owned(),
        log2_x: false,
        series: usage_series,
    };
    vec![
        ("recall_vs_nprobe".to_owned(), recall),
        ("layer_distortion".to_owned(), distortion),
        ("code_use".to_owned(), usage),
    ]
}

/// The stand-in's file stem.
const STAND_IN_NAME: &str = "standin";

/// A generated MovieLens-like data set: users with two favourite genres (one tied to their
/// occupation), items with one or two genres and a release year, Zipf-like popularity; each
/// user rates 20 to 80 items, a favourite-genre item [`FAVOURITE_WEIGHT`] times as likely as
/// another.
struct StandIn {
    users: usize,
    items: usize,
    seed: u64,
}

const GENRES: [&str; 12] = [
    "Action",
    "Adventure",
    "Animation",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Horror",
    "Romance",
    "SciFi",
    "Thriller",
];
/// How much likelier a user rates an item of a favourite genre.
const FAVOURITE_WEIGHT: f64 = 20.0;

const OCCUPATIONS: [&str; 8] = [
    "artist", "doctor", "educator", "engineer", "lawyer", "student", "writer", "other",
];

impl StandIn {
    const QUICK: StandIn = StandIn {
        users: 500,
        items: 800,
        seed: 7,
    };
    const FULL: StandIn = StandIn {
        users: 1000,
        items: 1600,
        seed: 7,
    };

    /// Writes `standin.inter`, `standin.user` and `standin.item` into `dir`.
    fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut item_file = String::from(
            "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n",
        );
        let mut item_genres = Vec::with_capacity(self.items);
        for i in 0..self.items {
            let n = rng.random_range(1..=2);
            let genres: Vec<usize> = rand::seq::index::sample(&mut rng, GENRES.len(), n).into_vec();
            let names: Vec<&str> = genres.iter().map(|&g| GENRES[g]).collect();
            item_file += &format!(
                "{}\tMovie {i}\t{}\t{}\n",
                i + 1,
                rng.random_range(1950..2000),
                names.join(" ")
            );
            item_genres.push(genres);
        }
        let popularity: Vec<f64> = (0..self.items)
            .map(|i| 1.0 / (1.0 + i as f64).powf(0.5))
            .collect();
        let mut user_file =
            String::from("user_id:token\tage:token\tgender:token\toccupation:token\n");
        let mut inter_file =
            String::from("user_id:token\titem_id:token\trating:float\ttimestamp:float\n");
        let mut time = 880_000_000u64;
        for u in 0..self.users {
            let occupation = rng.random_range(0..OCCUPATIONS.len());
            let favourites = [occupation % GENRES.len(), rng.random_range(0..GENRES.len())];
            user_file += &format!(
                "{}\t{}\t{}\t{}\n",
                u + 1,
                rng.random_range(18..70),
                ["F", "M"].choose(&mut rng).copied().unwrap_or("F"),
                OCCUPATIONS[occupation]
            );
            let weights: Vec<f64> = (0..self.items)
                .map(|i| {
                    let liked = item_genres[i].iter().any(|g| favourites.contains(g));
                    popularity[i] * if liked { FAVOURITE_WEIGHT } else { 1.0 }
                })
                .collect();
            let count = rng.random_range(20..=80).min(self.items);
            let chosen =
                rand::seq::index::sample_weighted(&mut rng, self.items, |i| weights[i], count)
                    .context("sampling the stand-in's ratings")?;
            for i in chosen {
                time += rng.random_range(1..1000);
                inter_file += &format!(
                    "{}\t{}\t{}\t{time}\n",
                    u + 1,
                    i + 1,
                    rng.random_range(1..=5)
                );
            }
        }
        for (ext, text) in [
            ("inter", inter_file),
            ("user", user_file),
            ("item", item_file),
        ] {
            super::write_file(&dir.join(format!("{STAND_IN_NAME}.{ext}")), &text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stand_in_loads_with_features_and_a_held_out_pair_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let spec = StandIn {
            users: 50,
            items: 120,
            seed: 3,
        };
        spec.write(dir.path()).unwrap();
        assert!(dir.path().join("standin.inter").is_file());
        assert_eq!(recbole_name(dir.path()).unwrap(), STAND_IN_NAME);
        let dataset = Dataset::load(&DataConfig::recbole(dir.path(), STAND_IN_NAME)).unwrap();
        assert_eq!(dataset.n_queries(), 50);
        assert!(dataset.n_items() > 100);
        assert_eq!(dataset.test.len(), 50);
        assert!(dataset.query_features.fields.len() > 1);
        assert!(dataset.item_features.fields.len() > 1);
        // The same seed writes the same files.
        let again = tempfile::tempdir().unwrap();
        spec.write(again.path()).unwrap();
        for ext in ["inter", "user", "item"] {
            let name = format!("{STAND_IN_NAME}.{ext}");
            assert_eq!(
                std::fs::read(dir.path().join(&name)).unwrap(),
                std::fs::read(again.path().join(&name)).unwrap()
            );
        }
    }

    #[test]
    fn data_directories_need_exactly_one_interactions_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = recbole_name(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no RecBole interactions file"), "{err}");
        std::fs::write(dir.path().join("a.inter"), "").unwrap();
        std::fs::write(dir.path().join("b.inter"), "").unwrap();
        let err = recbole_name(dir.path()).unwrap_err().to_string();
        assert!(err.contains("a, b"), "{err}");
        let err = recbole_name(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
