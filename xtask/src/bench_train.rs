//! `cargo xtask bench-train`: training throughput of the tutorial model with and without the
//! indexing layer.
//!
//! Each measurement trains the tutorial model ([`TrainConfig::tutorial`], 64-d id embeddings)
//! on the synthetic tutorial pairs. With the layer ([`TrainConfig::tutorial_poeem`], J = 8,
//! K = 256, D = 8, no rotation), its warm-up is cut to 8 steps and the run is first taken past the
//! k-means init, untimed, so that every timed step is a joint step (quantize, regularizer and
//! centroid updates included). The timed runs then continue the same training.
//!
//! With `--scale-items N` it trains `reproduce scale`'s two models instead, on that experiment's
//! generated data at N items (J = 1024, D = 16, the coarse level learning list means from each
//! batch's items), which is where the scale issue's training-rate target is set.

use anyhow::{Result, bail};
use poeem::pipeline::{markdown_table as markdown, median};
use poeem::train::synthetic::{ScaledTutorial, tutorial_dataset};
use poeem::train::{Dataset, LayerUpdateItems, TowerConfig, TrainConfig, Trainer};

use crate::reproduce::{
    SCALE_MIN_ITEMS, scale_interactions, scale_layer_update_items, scale_training_presets,
};

/// Arguments of `bench-train`.
#[derive(clap::Args)]
pub(crate) struct BenchTrainArgs {
    /// Synthetic tutorial pairs to train on.
    #[arg(long, default_value_t = 200_000)]
    pairs: usize,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128,1024")]
    batch_sizes: Vec<usize>,
    /// Thread counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Training examples per timed run (rounded up to whole batches).
    #[arg(long, default_value_t = 300_000)]
    examples: usize,
    /// Timed runs per configuration; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Hidden widths of an MLP on both towers, comma-separated, over 32-d id embeddings (the
    /// movielens preset's tower shape); none: the tutorial's 64-d id embeddings.
    #[arg(long, value_delimiter = ',')]
    hidden: Vec<usize>,
    /// Train the scale experiment's models instead (`reproduce scale`: this many items and
    /// queries, 25 interactions per item, Adagrad 0.5, and a layer with J = 1024, K = 256,
    /// D = 16 whose coarse level learns list means from each batch's items); `--pairs` and
    /// `--hidden` do not apply.
    #[arg(long)]
    scale_items: Option<u32>,
    /// With `--scale-items`: the coarse level learns from a separate sample of this many
    /// catalogue rows per step instead of each batch's own items (the preset, 0).
    #[arg(long, requires = "scale_items")]
    catalogue_rows: Option<usize>,
}

/// Median examples per second of `repeats` timed runs of `steps` steps each, after `warm_steps`
/// untimed ones.
fn throughput(
    config: TrainConfig,
    dataset: &Dataset,
    warm_steps: u64,
    steps: u64,
    repeats: usize,
) -> Result<f64> {
    let mut trainer = Trainer::new(config, dataset)?;
    trainer.train_steps(warm_steps, &mut |_| {})?;
    if let Some(layer) = trainer.model().layer()
        && !layer.is_initialized()
    {
        bail!("the indexing layer is not initialised after {warm_steps} warm steps");
    }
    let mut rates = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let report = trainer.train_steps(steps, &mut |_| {})?;
        if report.steps_run != steps {
            bail!("the run ended early; raise --pairs");
        }
        rates.push(report.examples_per_second);
    }
    Ok(median(&rates))
}

pub(crate) fn run(args: &BenchTrainArgs) -> Result<()> {
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let setup = match args.scale_items {
        Some(items) => Setup::scale(items, args.catalogue_rows)?,
        None => Setup::tutorial(args),
    };
    println!(
        "{}. Examples/s, median of {} runs of {} examples each.\n",
        setup.title, args.repeats, args.examples
    );
    let mut rows = Vec::new();
    for &batch in &args.batch_sizes {
        for &threads in &args.threads {
            let steps = args.examples.div_ceil(batch) as u64;
            let base = TrainConfig {
                batch_size: batch,
                epochs: 10_000,
                threads,
                log_every_steps: 0,
                checkpoint_every_steps: 0,
                ..setup.plain.clone()
            };
            let plain = throughput(base.clone(), &setup.dataset, 8, steps, args.repeats)?;
            let mut layered = TrainConfig {
                index: setup.layered.index.clone(),
                model: setup.layered.model.clone(),
                ..base
            };
            let layer = layered
                .index
                .as_mut()
                .expect("the layered setup has a layer");
            layer.warmup_steps = 8;
            let warm = 8 + layer.buffer_size.div_ceil(batch) as u64 + 8;
            let with_layer = throughput(layered, &setup.dataset, warm, steps, args.repeats)?;
            rows.push(vec![
                batch.to_string(),
                threads.to_string(),
                format!("{plain:.0}"),
                format!("{with_layer:.0}"),
                format!("{:+.1}%", (plain / with_layer - 1.0) * 100.0),
            ]);
            eprintln!("batch {batch}, {threads} thread(s): done");
        }
    }
    print!(
        "{}",
        markdown(
            &[
                "batch",
                "threads",
                "plain examples/s",
                "with layer examples/s",
                "layer time overhead",
            ],
            &rows,
        )
    );
    Ok(())
}

/// What one `bench-train` run trains: the data, and the plain and layered settings (batch size,
/// threads, epochs and logging are the bench's own).
struct Setup {
    title: String,
    dataset: Dataset,
    plain: TrainConfig,
    layered: TrainConfig,
}

impl Setup {
    fn tutorial(args: &BenchTrainArgs) -> Self {
        let mut model = TrainConfig::tutorial().model;
        let towers = if args.hidden.is_empty() {
            "64-d id embeddings".to_owned()
        } else {
            model.query = TowerConfig::all_fields(32, args.hidden.clone());
            model.item = model.query.clone();
            format!("32-d id embeddings → MLP {:?} → 64-d", args.hidden)
        };
        let plain = TrainConfig {
            model,
            ..TrainConfig::tutorial()
        };
        let layered = TrainConfig {
            index: TrainConfig::tutorial_poeem().index,
            ..plain.clone()
        };
        Self {
            title: format!(
                "Training throughput on the synthetic tutorial ({} pairs, towers: {towers}, \
                 in-batch softmax, Adagrad); layer J=8, K=256, D=8, joint phase",
                args.pairs
            ),
            dataset: tutorial_dataset(args.pairs, 0),
            plain,
            layered,
        }
    }

    fn scale(items: u32, catalogue_rows: Option<usize>) -> Result<Self> {
        if items < SCALE_MIN_ITEMS {
            bail!("--scale-items needs at least {SCALE_MIN_ITEMS} items");
        }
        let interactions = scale_interactions(items);
        let (plain, mut layered) = scale_training_presets(false, interactions, 1, 0);
        layered.model.layer_update_items = scale_layer_update_items(catalogue_rows);
        let learns_from = match layered.model.layer_update_items {
            LayerUpdateItems::Catalogue { rows } => format!("a {rows}-row catalogue sample"),
            LayerUpdateItems::Batches => "each batch's items".to_owned(),
        };
        Ok(Self {
            title: format!(
                "Training throughput of `reproduce scale`'s models ({items} items and queries, \
                 {interactions} interactions, 64-d id embeddings, Adagrad 0.5); layer J=1024, \
                 K=256, D=16, coarse level from {learns_from}, joint phase"
            ),
            dataset: ScaledTutorial::new(items).dataset(interactions, 0),
            plain,
            layered,
        })
    }
}
