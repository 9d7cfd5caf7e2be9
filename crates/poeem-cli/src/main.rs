//! `poeem`: build, search, inspect and verify IVF-PQ index files.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod index_commands;
mod progress;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Build(args) => index_commands::build(args),
        Command::Search(args) => index_commands::search(args),
        Command::Info(args) => index_commands::info(args),
        Command::Verify(args) => index_commands::verify(args),
        Command::ImportReference(args) => index_commands::import(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
