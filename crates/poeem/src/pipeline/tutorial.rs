//! The synthetic tutorial experiment (`method.md` §6): a plain two-tower model with post-hoc
//! IVF-PQ and OPQ+IVF-PQ indexes against the Poeem model, whose index is exported from training.

use std::fmt;

use super::experiment::{TimedIndex, build_post_hoc, export_timed, train_model};
use super::{EvalSet, IdMap, ItemIds, PipelineError, markdown_table};
use crate::build::BuildConfig;
use crate::pq::{OpqConfig, Par, Progress};
use crate::search::Probe;
use crate::train::synthetic::{TUTORIAL_PAIRS, tutorial_dataset};
use crate::train::{TrainConfig, TrainProgress, TrainReport};

/// Settings of [`run_tutorial`].
#[derive(Debug, Clone, PartialEq)]
pub struct TutorialConfig {
    /// Training pairs generated (the reference: 1,000,000).
    pub n_pairs: usize,
    /// Seed of the pairs.
    pub data_seed: u64,
    /// The plain model, whose embeddings the post-hoc indexes are built on (no indexing layer).
    pub plain: TrainConfig,
    /// The Poeem model (with an indexing layer).
    pub poeem: TrainConfig,
    /// The post-hoc indexes' shape and k-means settings (the same J, K and D as the layer);
    /// its `opq` is ignored: the IVF-PQ index is built without, the OPQ+IVF-PQ one with
    /// [`opq`](Self::opq).
    pub build: BuildConfig,
    /// OPQ settings of the OPQ+IVF-PQ baseline.
    pub opq: OpqConfig,
    /// Cut-off of the precision (the reference: 100).
    pub k: usize,
    /// Lists probed per query in every index (the reference: 1).
    pub nprobe: usize,
    /// How every index chooses the lists to probe.
    pub probe: Probe,
    /// Each index is made this many times (at least once; the results are identical) and its
    /// median time reported.
    pub timing_runs: usize,
    /// Worker threads of training, building and search (0: rayon's global pool).
    pub threads: usize,
}

impl TutorialConfig {
    /// The reference tutorial: 1,000,000 pairs, [`TrainConfig::tutorial`] and
    /// [`TrainConfig::tutorial_poeem`] (64 dimensions, batch 128, 3 epochs; J = 8, K = 256,
    /// D = 8), precision@100 at nprobe 1, with two changes that help the Poeem model only:
    ///
    /// - the layer's warm-up is 2,048 steps instead of the reference's 16,384 (of 23,439), so it
    ///   trains jointly for most of the run rather than its last third;
    /// - every index probes its lists by L2 distance to the query, as the reference's search
    ///   does, rather than by inner product (the post-hoc indexes' centroids all have about the
    ///   same norm, so the two probes agree on them; the layer's do not).
    ///
    /// `seed` seeds the data, both models, their layers and the post-hoc builds.
    pub fn full(seed: u64) -> Self {
        let mut poeem = TrainConfig::tutorial_poeem();
        let layer = poeem.index.as_mut().expect("the Poeem preset has a layer");
        layer.warmup_steps = 2048;
        let build = BuildConfig {
            seed,
            ..BuildConfig::new(layer.n_lists, layer.n_subspaces, layer.n_bits)
        };
        Self {
            n_pairs: TUTORIAL_PAIRS,
            data_seed: seed,
            plain: TrainConfig::tutorial(),
            poeem,
            build,
            opq: OpqConfig::default(),
            k: 100,
            nprobe: 1,
            probe: Probe::L2,
            timing_runs: 3,
            threads: 0,
        }
        .seeded(seed)
    }

    /// A run of about a third of [`full`](Self::full)'s length: one epoch over the 1,000,000
    /// pairs instead of three (a few seconds of training on two cores). Same index shape,
    /// warm-up and evaluation; the models are less trained, so every precision is lower.
    pub fn quick(seed: u64) -> Self {
        let mut config = Self::full(seed);
        config.plain.epochs = 1;
        config.poeem.epochs = 1;
        config
    }

    /// The same settings with every seed (data, models, layer, builds) set to `seed`.
    pub fn seeded(mut self, seed: u64) -> Self {
        self.data_seed = seed;
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

    fn par(&self) -> Par {
        match self.threads {
            1 => Par::Seq,
            n => Par::rayon(n),
        }
    }
}

/// What [`run_tutorial`] reports as it goes.
#[derive(Debug)]
#[non_exhaustive]
pub enum TutorialEvent<'a> {
    /// A stage starts (a short description).
    Stage(&'a str),
    /// Training progress of the model named `model` (`"plain"` or `"Poeem"`).
    Training {
        /// Which model.
        model: &'static str,
        /// Where its training stands.
        progress: &'a TrainProgress,
    },
    /// Progress of a post-hoc build (`index` names it).
    Building {
        /// Which index.
        index: &'static str,
        /// The quantizer training's progress.
        progress: &'a Progress,
    },
}

/// A trained model of the experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelResult {
    /// Its name (`"plain"` or `"Poeem"`).
    pub name: &'static str,
    /// The training run.
    pub training: TrainReport,
    /// Precision@k of exact retrieval with its (unquantized) embeddings.
    pub brute_force_precision: f64,
}

/// An index of the experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexResult {
    /// Its name.
    pub name: &'static str,
    /// Precision@k through the index at the experiment's nprobe.
    pub precision: f64,
    /// Seconds to make the index from the item embeddings (median of
    /// [`TutorialConfig::timing_runs`]): the whole post-hoc build (k-means, OPQ, encoding), or
    /// the export's encoding with the learned codec. Embedding the items, which both need, is
    /// not included.
    pub index_seconds: f64,
    /// Mean squared quantization error of the items over their mean squared norm.
    pub relative_distortion: f64,
}

/// The results of [`run_tutorial`]. Its [`Display`](fmt::Display) form is the experiment's
/// Markdown tables.
#[derive(Debug, Clone, PartialEq)]
pub struct TutorialReport {
    /// The settings.
    pub config: TutorialConfig,
    /// The plain model.
    pub plain: ModelResult,
    /// The Poeem model.
    pub poeem: ModelResult,
    /// IVF-PQ built post hoc on the plain model's items.
    pub ivf_pq: IndexResult,
    /// OPQ + IVF-PQ built post hoc on the plain model's items.
    pub opq_ivf_pq: IndexResult,
    /// The Poeem model's exported index.
    pub poeem_index: IndexResult,
    /// Seconds to embed the Poeem model's items for the export.
    pub export_embed_seconds: f64,
}

impl TutorialReport {
    /// How many times faster the Poeem export was than the post-hoc build `baseline`.
    pub fn export_speedup(&self, baseline: &IndexResult) -> f64 {
        baseline.index_seconds / self.poeem_index.index_seconds.max(1e-9)
    }
}

/// Runs the tutorial experiment: generates the pairs, trains the plain and the Poeem model,
/// builds IVF-PQ and OPQ+IVF-PQ on the plain model's item embeddings, exports the Poeem
/// model's index, and measures precision@k over all 10,000 queries brute force and through
/// each index at `nprobe`, each model's queries embedded by its own query tower.
///
/// # Errors
/// Training, building and search errors (for settings that do not fit, such as a warm-up longer
/// than the run).
pub fn run_tutorial(
    config: &TutorialConfig,
    progress: &mut dyn FnMut(TutorialEvent<'_>),
) -> Result<TutorialReport, PipelineError> {
    let par = config.par();
    let eval = EvalSet::tutorial();
    let ks = [config.k];

    progress(TutorialEvent::Stage("generating the tutorial pairs"));
    let dataset = tutorial_dataset(config.n_pairs, config.data_seed);

    progress(TutorialEvent::Stage("training the plain model"));
    let (plain_model, plain_training) = train_model(&config.plain, &dataset, &mut |p| {
        progress(TutorialEvent::Training {
            model: "plain",
            progress: p,
        })
    })?;
    progress(TutorialEvent::Stage(
        "evaluating the plain model (brute force)",
    ));
    let plain_queries = plain_model.embed_queries(eval.queries(), par)?;
    let all: Vec<u32> = (0..plain_model.n_items() as u32).collect();
    let plain_items = plain_model.embed_items(&all, par)?;
    let dim = plain_model.dim();
    let plain = ModelResult {
        name: "plain",
        training: plain_training,
        brute_force_precision: precision(&eval.brute_force(
            &plain_queries,
            &plain_items,
            dim,
            &ks,
            par,
        )?),
    };

    let ids = IdMap::new(ItemIds::Dense, plain_model.items());
    let mut post_hoc = |name: &'static str, opq: Option<OpqConfig>| {
        progress(TutorialEvent::Stage(&format!("building the {name} index")));
        let build = BuildConfig {
            opq,
            ..config.build.clone()
        };
        let index = build_post_hoc(
            &plain_items,
            dim,
            &build,
            config.timing_runs,
            par,
            &mut |p| {
                progress(TutorialEvent::Building {
                    index: name,
                    progress: p,
                })
            },
        )?;
        Ok::<_, PipelineError>(IndexResult {
            name,
            precision: index_precision(&eval, &index, &plain_queries, &ids, config, par)?,
            index_seconds: index.median_seconds(),
            relative_distortion: index.relative_distortion,
        })
    };
    let ivf_pq = post_hoc("post-hoc IVF-PQ", None)?;
    let opq_ivf_pq = post_hoc("post-hoc OPQ+IVF-PQ", Some(config.opq.clone()))?;

    progress(TutorialEvent::Stage("training the Poeem model"));
    let (poeem_model, poeem_training) = train_model(&config.poeem, &dataset, &mut |p| {
        progress(TutorialEvent::Training {
            model: "Poeem",
            progress: p,
        })
    })?;
    progress(TutorialEvent::Stage("exporting the Poeem index"));
    let (exported, poeem_ids, export_embed_seconds) =
        export_timed(&poeem_model, export_timing_runs(config), par)?;
    let poeem_queries = poeem_model.embed_queries(eval.queries(), par)?;
    let poeem = ModelResult {
        name: "Poeem",
        training: poeem_training,
        brute_force_precision: precision(&eval.brute_force_model(&poeem_model, &ks, par)?),
    };
    let poeem_index = IndexResult {
        name: "Poeem (exported)",
        precision: index_precision(&eval, &exported, &poeem_queries, &poeem_ids, config, par)?,
        index_seconds: exported.median_seconds(),
        relative_distortion: exported.relative_distortion,
    };
    Ok(TutorialReport {
        config: config.clone(),
        plain,
        poeem,
        ivf_pq,
        opq_ivf_pq,
        poeem_index,
        export_embed_seconds,
    })
}

/// Precision@k through `index` at the experiment's nprobe.
fn index_precision(
    eval: &EvalSet,
    index: &TimedIndex,
    queries: &[f32],
    ids: &IdMap,
    config: &TutorialConfig,
    par: Par,
) -> Result<f64, PipelineError> {
    let metrics = eval.through_index_at(
        &index.parts,
        queries,
        ids,
        &[config.k],
        &[config.nprobe],
        config.probe,
        par,
    )?;
    Ok(metrics.first().map_or(f64::NAN, |m| precision(m)))
}

/// Runs of the export whose median is reported: it takes milliseconds, so a few runs more than
/// the builds keep one slow run from setting its time.
fn export_timing_runs(config: &TutorialConfig) -> usize {
    config.timing_runs.max(1) * 5
}

fn precision(metrics: &[crate::train::metrics::RankingMetrics]) -> f64 {
    metrics.first().map_or(f64::NAN, |m| m.precision)
}

impl fmt::Display for TutorialReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let b = &c.build;
        writeln!(
            f,
            "Synthetic tutorial: {} pairs (seed {}), {} query and item ids; index J = {} lists, \
             K = {} codewords ({} bits), D = {} subspaces; nprobe {} ({} probe); Poeem warm-up \
             {} steps.\n",
            c.n_pairs,
            c.data_seed,
            crate::train::synthetic::TUTORIAL_VOCAB,
            b.n_lists,
            1u64 << b.n_bits,
            b.n_bits,
            b.n_subspaces,
            c.nprobe,
            c.probe,
            c.poeem.index.as_ref().map_or(0, |l| l.warmup_steps),
        )?;
        let k = c.k;
        let mut rows = vec![
            vec![
                "brute force (plain model)".to_owned(),
                format!("{:.4}", self.plain.brute_force_precision),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
            ],
            vec![
                "brute force (Poeem model, unquantized)".to_owned(),
                format!("{:.4}", self.poeem.brute_force_precision),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
            ],
        ];
        for (index, how) in [
            (&self.ivf_pq, "build"),
            (&self.opq_ivf_pq, "build"),
            (&self.poeem_index, "export"),
        ] {
            rows.push(vec![
                index.name.to_owned(),
                format!("{:.4}", index.precision),
                format!("{:.4}", index.relative_distortion),
                format!("{:.3} ({how})", index.index_seconds),
                if how == "export" {
                    "1".to_owned()
                } else {
                    format!("{:.0}x", self.export_speedup(index))
                },
            ]);
        }
        let header = [
            "method".to_owned(),
            format!("precision@{k}"),
            "relative distortion".to_owned(),
            "index time (s)".to_owned(),
            "time / Poeem export".to_owned(),
        ];
        f.write_str(&markdown_table(&header, &rows))?;
        writeln!(
            f,
            "\nIndex times (medians of {} runs, {} for the export, which takes milliseconds) start \
             from the item embeddings (embedding the Poeem model's items for the export took \
             {:.3} s more).\n",
            c.timing_runs.max(1),
            export_timing_runs(c),
            self.export_embed_seconds
        )?;
        let rows: Vec<Vec<String>> = [&self.plain, &self.poeem]
            .iter()
            .map(|m| {
                vec![
                    m.name.to_owned(),
                    format!("{:.1}", m.training.elapsed.as_secs_f64()),
                    format!("{:.0}", m.training.examples_per_second),
                    m.training.step.to_string(),
                    m.training
                        .epoch_losses
                        .last()
                        .map_or("-".to_owned(), |l| format!("{l:.4}")),
                ]
            })
            .collect();
        let header = [
            "model",
            "training time (s)",
            "examples/s",
            "steps",
            "last epoch loss",
        ]
        .map(str::to_owned);
        f.write_str(&markdown_table(&header, &rows))
    }
}
