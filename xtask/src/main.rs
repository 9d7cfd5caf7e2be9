//! `cargo xtask`: reproduction runs and side-by-side benchmarks.
//!
//! - `cargo xtask reproduce <synthetic|movielens|ablation|rotation|all> [--quick] [--seeds N]
//!   [--data DIR] [--out DIR] [--faiss]`: the papers' experiments, each writing `results.json`,
//!   `report.md` and plots under `target/reproduce/<experiment>/` (see `docs/reproduce.md`).
//! - `cargo xtask check-reproduction DIR`: checks the structure of what `reproduce all --quick
//!   --out DIR` wrote (CI runs the two as a step of their own).
//! - `cargo xtask bench-faiss quantizers`: k-means and PQ encoding, poeem against faiss.
//! - `cargo xtask bench-faiss search --vectors FILE`: IVF-PQ recall and queries per second,
//!   poeem against faiss, on real vectors.
//! - `cargo xtask bench-train`: training throughput with and without the indexing layer.
//! - `cargo xtask fuzz-smoke --target <npy|fvecs|reference> --runs N`: the fuzz targets' checks
//!   on deterministic random mutations of valid files, without cargo-fuzz.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench_faiss;
mod bench_faiss_search;
mod bench_train;
mod fuzz_smoke;
mod reproduce;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "poeem project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rerun an experiment of the papers: tables, numbers and plots under
    /// target/reproduce/<experiment>/.
    Reproduce(reproduce::Args),
    /// Check the structure of what `reproduce all --quick --out DIR` wrote: every experiment's
    /// results.json, report.md and plots (fails naming the file and field).
    CheckReproduction {
        /// The --out directory of the run.
        dir: PathBuf,
    },
    /// Benchmark poeem against faiss side by side (needs Python with faiss; skipped otherwise).
    BenchFaiss {
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// Training throughput (examples/s) on the synthetic tutorial, with and without the
    /// indexing layer, at several batch sizes and thread counts.
    BenchTrain(bench_train::BenchTrainArgs),
    /// A deterministic random-mutation loop over a fuzz target's check, for machines without
    /// cargo-fuzz (see fuzz/README.md).
    FuzzSmoke(fuzz_smoke::FuzzSmokeArgs),
}

#[derive(Subcommand)]
enum BenchTarget {
    /// k-means (n × d → k centroids) and 8-bit PQ encoding, one thread, poeem vs faiss.
    Quantizers(bench_faiss::QuantizerArgs),
    /// IVF-PQ search (recall@k and QPS for each nprobe; one query per call, batched on one and
    /// two threads) and build time, poeem vs faiss, on held-out rows of a vector file.
    Search(bench_faiss_search::SearchArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Reproduce(args) => reproduce::run(&args),
        Command::CheckReproduction { dir } => {
            reproduce::check_quick_run(&dir)?;
            println!("{}: every experiment's outputs are complete", dir.display());
            Ok(())
        }
        Command::BenchFaiss {
            target: BenchTarget::Quantizers(args),
        } => bench_faiss::quantizers(&args),
        Command::BenchFaiss {
            target: BenchTarget::Search(args),
        } => bench_faiss_search::search(&args),
        Command::BenchTrain(args) => bench_train::run(&args),
        Command::FuzzSmoke(args) => fuzz_smoke::run(&args),
    }
}

/// The workspace's `target/` directory, for experiment outputs.
pub(crate) fn target_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| PathBuf::from("target"), |root| root.join("target"))
}
