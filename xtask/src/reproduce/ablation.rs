//! `reproduce ablation`: the tutorial's Poeem model with one setting of its indexing layer
//! changed at a time: warm start off (random centroids), PQ codebooks fitted on the raw vectors
//! instead of the residuals, regularizer weight 0.1 and 10 (the default is 1), and Givens
//! rotation (greedy pairs) at three step sizes; precision@100 at nprobe 1, 2, 4 and 8 against
//! the default's, over several seeds.

use anyhow::{Context, Result, bail};
use poeem::pipeline::TutorialConfig;
use poeem::pq::PqTraining;
use poeem::rotation::PairSelection;
use poeem::train::synthetic::TUTORIAL_VOCAB;
use poeem::train::{CentroidInit, IndexingLayerConfig, RotationMode, TrainConfig};
use serde_json::{Value, json};

use super::meta::DataHash;
use super::plot::LineChart;
use super::seed_series;
use super::synthetic::{ModelRun, NPROBES, PrecisionRun, Tutorial};
use super::{Args, DataInfo, Experiment, Outcome, Progress, mean_pm, mean_std, over_seeds};

/// A change to the default (tutorial) indexing layer.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// None: the default itself.
    Nothing,
    /// Warm start off: random centroids and codewords instead of k-means on a buffer.
    RandomCentroids,
    /// PQ codebooks fitted on the raw (rotated) vectors instead of the residuals.
    PqOnRawVectors,
    /// This regularizer weight instead of 1.
    RegularizerWeight(f32),
    /// Givens rotation with greedy pairs, at this step size.
    GreedyGivens(f32),
}

impl Change {
    /// Applies the change to `layer`.
    fn apply(self, layer: &mut IndexingLayerConfig) {
        match self {
            Change::Nothing => {}
            Change::RandomCentroids => layer.centroid_init = CentroidInit::Random,
            Change::PqOnRawVectors => layer.pq_training = PqTraining::RawVectors,
            Change::RegularizerWeight(weight) => layer.regularizer_weight = weight,
            Change::GreedyGivens(learning_rate) => {
                layer.rotation = RotationMode::Givens(PairSelection::Greedy);
                layer.givens.learning_rate = learning_rate;
            }
        }
    }
}

/// The variants, the default first (the others are compared with it).
const VARIANTS: [(&str, Change); 8] = [
    (
        "default (warm start, residual PQ init, weight 1, no rotation)",
        Change::Nothing,
    ),
    ("warm start off (random centroids)", Change::RandomCentroids),
    ("PQ init on raw vectors", Change::PqOnRawVectors),
    ("regularizer weight 0.1", Change::RegularizerWeight(0.1)),
    ("regularizer weight 10", Change::RegularizerWeight(10.0)),
    (
        "Givens (greedy), learning rate 1e-4",
        Change::GreedyGivens(1e-4),
    ),
    (
        "Givens (greedy), learning rate 1e-3",
        Change::GreedyGivens(1e-3),
    ),
    (
        "Givens (greedy), learning rate 1e-2",
        Change::GreedyGivens(1e-2),
    ),
];

/// The training configuration of each of [`VARIANTS`], from the tutorial's Poeem `base`.
fn variant_configs(base: &TrainConfig) -> Result<Vec<TrainConfig>> {
    if base.index.is_none() {
        bail!("the tutorial's Poeem configuration has no indexing layer to ablate");
    }
    Ok(VARIANTS
        .iter()
        .map(|&(_, change)| {
            let mut config = base.clone();
            if let Some(layer) = &mut config.index {
                change.apply(layer);
            }
            config
        })
        .collect())
}

/// The ablated settings of `layer`, named as in its serialized form (the Givens step size is
/// null when the layer takes no Givens steps).
fn layer_settings(layer: &IndexingLayerConfig) -> Result<Value> {
    let all = serde_json::to_value(layer).context("serializing the indexing layer's settings")?;
    Ok(json!({
        "centroid_init": all["centroid_init"],
        "pq_training": all["pq_training"],
        "regularizer_weight": decimal(layer.regularizer_weight),
        "rotation": all["rotation"],
        "givens_learning_rate": layer
            .rotation
            .givens_selection()
            .map(|_| decimal(layer.givens.learning_rate)),
    }))
}

/// `value` as the f64 of its shortest decimal form (0.1f32 as 0.1, not 0.10000000149).
fn decimal(value: f32) -> f64 {
    value.to_string().parse().unwrap_or(f64::from(value))
}

/// One variant trained on one seed.
struct Measured {
    seed: u64,
    model: ModelRun,
    index: PrecisionRun,
}

/// Trains every variant on every seed and reports them against the default.
///
/// # Errors
/// A failed training run, export or evaluation.
pub(super) fn run(args: &Args, progress: &Progress) -> Result<Outcome> {
    let seeds = args.seed_list(Experiment::Ablation);
    progress.jobs(seeds.len() * VARIANTS.len());
    let mut hash = DataHash::default();
    let mut by_variant: Vec<Vec<Measured>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    let mut config = None;
    for &seed in &seeds {
        let tutorial = Tutorial::new(args, seed, &mut hash);
        let configs = variant_configs(&tutorial.config.poeem)?;
        for ((runs, (name, _)), train) in by_variant.iter_mut().zip(VARIANTS).zip(&configs) {
            let (model, index) = tutorial.poeem(name, train, progress)?;
            runs.push(Measured { seed, model, index });
        }
        config = Some(tutorial.config);
    }
    let Some(config) = config else {
        bail!("the ablation needs at least one seed");
    };
    outcome(&config, &seeds, &by_variant, hash)
}

/// Tables, summary, plot and JSON of the runs (`by_variant[v][s]`: variant `v` on seed `s`).
fn outcome(
    config: &TutorialConfig,
    seeds: &[u64],
    by_variant: &[Vec<Measured>],
    hash: DataHash,
) -> Result<Outcome> {
    let k = config.k;
    let Some(default) = by_variant.first() else {
        bail!("the ablation has no runs");
    };
    let last = NPROBES.len() - 1;
    let precision = |runs: &[Measured], p: usize| -> Vec<f64> {
        runs.iter().map(|r| r.index.by_nprobe[p]).collect()
    };
    // Per seed: the variant's precision at nprobe 1 minus the default's.
    let deltas = |runs: &[Measured]| -> Vec<f64> {
        runs.iter()
            .zip(default)
            .map(|(r, d)| r.index.by_nprobe[0] - d.index.by_nprobe[0])
            .collect()
    };

    let rows: Vec<Vec<String>> = VARIANTS
        .iter()
        .zip(by_variant)
        .enumerate()
        .map(|(v, ((name, _), runs))| {
            let of = |f: &dyn Fn(&Measured) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
            vec![
                (*name).to_owned(),
                mean_pm(&precision(runs, 0), 4),
                mean_pm(&precision(runs, last), 4),
                if v == 0 {
                    "-".to_owned()
                } else {
                    format!("{:+.4}", mean_std(&deltas(runs)).0)
                },
                mean_pm(&of(&|r| r.model.brute_force_precision), 4),
                format!("{:.4}", mean_std(&of(&|r| r.index.relative_distortion)).0),
                format!("{:.1}", mean_std(&of(&|r| r.model.training_seconds)).0),
            ]
        })
        .collect();
    let table = poeem::pipeline::markdown_table(
        &[
            "variant".to_owned(),
            format!("precision@{k}, nprobe {}", NPROBES[0]),
            format!("precision@{k}, nprobe {}", NPROBES[last]),
            format!("Δ nprobe {} vs default", NPROBES[0]),
            "brute force (unquantized)".to_owned(),
            "relative distortion".to_owned(),
            "training s".to_owned(),
        ],
        &rows,
    );

    let comparisons: String = VARIANTS
        .iter()
        .zip(by_variant)
        .skip(1)
        .map(|((name, _), runs)| {
            let deltas = deltas(runs);
            let better = deltas.iter().filter(|&&d| d > 0.0).count();
            let worse = deltas.iter().filter(|&&d| d < 0.0).count();
            let tied = deltas.len() - better - worse;
            let tied = if tied > 0 {
                format!(", tied on {tied}")
            } else {
                String::new()
            };
            format!(
                "- {name}: better than the default on {better} of {n} seeds, worse on {worse}{tied}.\n",
                n = deltas.len()
            )
        })
        .collect();

    let layer = config.poeem.index.as_ref();
    let report = format!(
        "{} pairs per seed over {TUTORIAL_VOCAB} query and item ids; {} epoch(s), batch {}; \
         index J = {} lists, K = {} codewords, D = {} subspaces; lists probed by {}; warm-up {} \
         steps. Each variant changes one setting of the tutorial's Poeem layer (the default: \
         k-means warm start, PQ codebooks fitted on the residuals, regularizer weight 1, no \
         rotation). Precision@{k} of the exported index over all {TUTORIAL_VOCAB} queries, \
         {}; Δ is the mean over seeds of the variant's \
         precision minus the default's on the same seed.\n\n## Precision@{k} by variant\n\n\
         {table}\n## Against the default at nprobe {}\n\n{comparisons}",
        config.n_pairs,
        config.poeem.epochs,
        config.poeem.batch_size,
        layer.map_or(0, |l| l.n_lists),
        layer.map_or(0, IndexingLayerConfig::n_codewords),
        layer.map_or(0, |l| l.n_subspaces),
        config.probe,
        layer.map_or(0, |l| l.warmup_steps),
        over_seeds(seeds.len()),
        NPROBES[0],
    );

    let series = VARIANTS
        .iter()
        .zip(by_variant)
        .map(|((name, _), runs)| {
            let per_nprobe: Vec<Vec<f64>> =
                (0..NPROBES.len()).map(|p| precision(runs, p)).collect();
            seed_series(name, &NPROBES, &per_nprobe)
        })
        .collect();
    let chart = LineChart {
        title: format!("Ablation: precision@{k} against nprobe"),
        x_label: "nprobe (lists probed)".to_owned(),
        y_label: format!("precision@{k} (mean over seeds, bars: min..max)"),
        log2_x: true,
        series,
    };

    let base_configs = variant_configs(&config.poeem)?;
    let variants = VARIANTS
        .iter()
        .zip(by_variant)
        .zip(&base_configs)
        .map(|(((name, _), runs), train)| {
            let settings = match &train.index {
                Some(layer) => layer_settings(layer)?,
                None => Value::Null,
            };
            let (precision_mean, precision_std): (Vec<f64>, Vec<f64>) = (0..NPROBES.len())
                .map(|p| mean_std(&precision(runs, p)))
                .unzip();
            Ok(json!({
                "name": name,
                "settings": settings,
                "seeds": runs.iter().map(|r| json!({
                    "seed": r.seed,
                    "model": r.model.json(),
                    "index": r.index.json(),
                })).collect::<Vec<_>>(),
                "precision_mean": precision_mean,
                "precision_std": precision_std,
                "delta_vs_default_nprobe1": mean_std(&deltas(runs)).0,
            }))
        })
        .collect::<Result<Vec<Value>>>()?;

    Ok(Outcome {
        title: "Ablation on the synthetic tutorial".to_owned(),
        seeds: seeds.to_vec(),
        data: DataInfo {
            description: format!(
                "the synthetic tutorial pairs (method.md §6), {} per seed, generated from seeds \
                 {seeds:?} (the same as `reproduce synthetic`'s)",
                config.n_pairs
            ),
            sha256: hash.hex(),
        },
        settings: json!({
            "n_pairs": config.n_pairs,
            "epochs": config.poeem.epochs,
            "batch_size": config.poeem.batch_size,
            "n_lists": layer.map(|l| l.n_lists),
            "n_codewords": layer.map(IndexingLayerConfig::n_codewords),
            "n_subspaces": layer.map(|l| l.n_subspaces),
            "warmup_steps": layer.map(|l| l.warmup_steps),
            "probe": config.probe.to_string(),
            "timing_runs": config.timing_runs,
        }),
        results: json!({
            "nprobes": NPROBES,
            "k": k,
            "variants": variants,
        }),
        report,
        plots: vec![("precision_vs_nprobe".to_owned(), chart)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serialized layer settings that differ between `a` and `b`.
    fn differing(a: &IndexingLayerConfig, b: &IndexingLayerConfig) -> Vec<String> {
        let (a, b) = (
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap(),
        );
        let (Value::Object(a), Value::Object(b)) = (a, b) else {
            panic!("a layer config serializes to an object");
        };
        a.iter()
            .filter(|(key, value)| b.get(*key) != Some(*value))
            .map(|(key, _)| key.clone())
            .collect()
    }

    #[test]
    fn each_variant_changes_only_the_setting_it_names() {
        let base = TutorialConfig::quick(7).poeem;
        let configs = variant_configs(&base).unwrap();
        assert_eq!(configs.len(), VARIANTS.len());
        let default = base.index.as_ref().unwrap();
        assert_eq!(configs[0], base, "the first variant is the default");
        assert_eq!(default.centroid_init, CentroidInit::KMeans);
        assert_eq!(default.pq_training, PqTraining::Residuals);
        assert_eq!(default.regularizer_weight, 1.0);
        assert_eq!(default.rotation, RotationMode::None);
        for ((name, change), config) in VARIANTS.iter().zip(&configs) {
            let layer = config.index.as_ref().unwrap();
            layer.validate(config.model.dim).unwrap();
            let mut rest = config.clone();
            rest.index = base.index.clone();
            assert_eq!(rest, base, "{name}: only the layer changes");
            let expected: &[&str] = match change {
                Change::Nothing => &[],
                Change::RandomCentroids => &["centroid_init"],
                Change::PqOnRawVectors => &["pq_training"],
                Change::RegularizerWeight(_) => &["regularizer_weight"],
                // The default step size is 1e-3: that variant only turns the rotation on.
                Change::GreedyGivens(lr) if *lr == default.givens.learning_rate => &["rotation"],
                Change::GreedyGivens(_) => &["givens", "rotation"],
            };
            assert_eq!(differing(layer, default), expected, "{name}");
        }
        let settings = layer_settings(configs[3].index.as_ref().unwrap()).unwrap();
        assert_eq!(settings["regularizer_weight"], json!(0.1));
        assert_eq!(settings["givens_learning_rate"], Value::Null);
        let settings = layer_settings(configs[5].index.as_ref().unwrap()).unwrap();
        assert_eq!(settings["givens_learning_rate"], json!(0.0001));
    }

    #[test]
    fn a_config_without_a_layer_is_refused() {
        let plain = TutorialConfig::quick(7).plain;
        assert!(variant_configs(&plain).is_err());
    }

    #[test]
    fn the_summary_counts_seeds_better_and_worse_than_the_default() {
        let config = TutorialConfig::quick(1);
        let measured = |seed: u64, p1: f64| Measured {
            seed,
            model: ModelRun {
                name: "m".to_owned(),
                training_seconds: 1.0,
                examples_per_second: 1.0,
                brute_force_precision: 0.5,
            },
            index: PrecisionRun {
                name: "m".to_owned(),
                made_by: "export",
                seconds: 0.1,
                relative_distortion: 0.2,
                by_nprobe: vec![p1, 0.3, 0.35, 0.4],
                coarse: None,
            },
        };
        // The default at 0.2 on both seeds; variant v at 0.2 + (v - 2) / 100 on seed 1 and
        // 0.2 on seed 2.
        let by_variant: Vec<Vec<Measured>> = (0..VARIANTS.len())
            .map(|v| {
                let p1 = if v == 0 {
                    0.2
                } else {
                    0.2 + (v as f64 - 2.0) / 100.0
                };
                vec![measured(1, p1), measured(2, 0.2)]
            })
            .collect();
        let outcome = outcome(&config, &[1, 2], &by_variant, DataHash::default()).unwrap();
        assert!(outcome.report.contains(
            "- warm start off (random centroids): better than the default on 0 of 2 seeds, \
             worse on 1, tied on 1."
        ));
        assert!(outcome.report.contains(
            "- PQ init on raw vectors: better than the default on 0 of 2 seeds, worse on 0, \
             tied on 2."
        ));
        assert!(outcome.report.contains(
            "- regularizer weight 0.1: better than the default on 1 of 2 seeds, worse on 0, \
             tied on 1."
        ));
        let variants = outcome.results["variants"].as_array().unwrap();
        assert_eq!(variants.len(), VARIANTS.len());
        let delta = variants[7]["delta_vs_default_nprobe1"].as_f64().unwrap();
        assert!((delta - 0.025).abs() < 1e-12);
        assert_eq!(variants[7]["seeds"].as_array().unwrap().len(), 2);
        assert_eq!(outcome.plots[0].1.series.len(), VARIANTS.len());
    }
}
