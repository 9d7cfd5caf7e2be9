//! `poeem demo`: the synthetic tutorial experiment end to end.

use anyhow::Result;
use clap::Args;
use poeem::pipeline::{TutorialConfig, TutorialEvent, run_tutorial};

use crate::index_commands::Threads;
use crate::progress::StageBar;
use crate::train_commands::TrainBar;

/// Arguments of `poeem demo`.
#[derive(Debug, Args)]
#[command(after_help = "\
The demo generates the synthetic tutorial of the Poeem paper's reference implementation \
(1,000,000 query-item pairs over 10,000 ids), trains the plain two-tower model and the Poeem \
model (the same model with the IVF-PQ indexing layer, J=8 lists, K=256 codewords, D=8 \
subspaces, warm-up 2,048 steps) for 3 epochs (--quick: 1), builds IVF-PQ and OPQ+IVF-PQ \
indexes of the same shape on the plain model's item embeddings after training, exports the \
Poeem model's learned index, and prints precision@100 over all 10,000 queries at nprobe 1 \
(lists probed by L2, as the reference's search) with each index's build or export time and \
each model's training time. Progress goes to stderr, the tables to stdout.")]
pub struct DemoArgs {
    /// A shorter run (one epoch instead of three) that takes well under a minute.
    #[arg(long)]
    quick: bool,
    /// Seed of the data, both models and the post-hoc builds.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    threads: Threads,
}

/// `poeem demo`: runs the tutorial experiment and prints its tables.
pub fn demo(args: &DemoArgs) -> Result<()> {
    let mut config = if args.quick {
        TutorialConfig::quick(args.seed)
    } else {
        TutorialConfig::full(args.seed)
    };
    config.threads = match args.threads.par() {
        poeem::pq::Par::Seq => 1,
        poeem::pq::Par::Rayon(n) => n.get(),
    };
    config.plain.threads = config.threads;
    config.poeem.threads = config.threads;
    let mut training: Option<TrainBar> = None;
    let mut building: Option<StageBar> = None;
    let report = run_tutorial(&config, &mut |event| match event {
        TutorialEvent::Stage(stage) => {
            if let Some(bar) = training.take() {
                bar.finish();
            }
            if let Some(bar) = building.take() {
                bar.finish();
            }
            eprintln!("{stage}");
        }
        TutorialEvent::Training { model, progress } => {
            training
                .get_or_insert_with(|| TrainBar::new(model))
                .update(progress);
        }
        TutorialEvent::Building { progress, .. } => {
            building.get_or_insert_with(StageBar::new).update(progress);
        }
        _ => {}
    });
    if let Some(bar) = training.take() {
        bar.finish();
    }
    if let Some(bar) = building.take() {
        bar.finish();
    }
    out!("{}", report?);
    Ok(())
}
