//! `poeem`: train retrieval models with their index, export, embed and evaluate them; build,
//! search, inspect and verify IVF-PQ index files; run the synthetic tutorial demo.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod faiss_commands;
mod index_commands;
mod progress;
mod train_commands;

/// Poeem: retrieval with a product-quantization index, trained jointly with the model or built
/// from existing embeddings.
#[derive(Debug, Parser)]
#[command(name = "poeem", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a two-tower model, with its IVF-PQ index as a layer (or without, --index off).
    Train(Box<train_commands::TrainArgs>),
    /// Write the index a model learned (encoding only: no k-means, no OPQ).
    Export(train_commands::ExportArgs),
    /// Write query or item embeddings of a model as .npy.
    Embed(train_commands::EmbedArgs),
    /// Recall, precision and NDCG at K on the held-out pairs, brute force and through an index.
    Evaluate(train_commands::EvaluateArgs),
    /// The synthetic tutorial end to end: plain model with post-hoc indexes against Poeem.
    Demo(demo::DemoArgs),
    /// Build an IVF-PQ index from vectors (k-means, optionally OPQ, then encode).
    Build(index_commands::BuildArgs),
    /// Search an index with a batch of queries.
    Search(index_commands::SearchArgs),
    /// Print an index file's header, sizes, parameters and metadata.
    Info(index_commands::IndexArgs),
    /// Check every checksum of an index file; exits non-zero on any corruption.
    Verify(index_commands::IndexArgs),
    /// Convert an index file of the reference (TensorFlow) implementation.
    ImportReference(index_commands::ImportArgs),
    /// Write an index as a faiss IndexIVFPQ file (faiss.read_index loads and searches it).
    ExportFaiss(faiss_commands::ExportFaissArgs),
    /// Convert a faiss IndexIVFPQ file (optionally behind OPQ) into an index.
    ImportFaiss(faiss_commands::ImportFaissArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Train(args) => train_commands::train(args),
        Command::Export(args) => train_commands::export(args),
        Command::Embed(args) => train_commands::embed(args),
        Command::Evaluate(args) => train_commands::evaluate(args),
        Command::Demo(args) => demo::demo(args),
        Command::Build(args) => index_commands::build(args),
        Command::Search(args) => index_commands::search(args),
        Command::Info(args) => index_commands::info(args),
        Command::Verify(args) => index_commands::verify(args),
        Command::ImportReference(args) => index_commands::import(args),
        Command::ExportFaiss(args) => faiss_commands::export(args),
        Command::ImportFaiss(args) => faiss_commands::import(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
