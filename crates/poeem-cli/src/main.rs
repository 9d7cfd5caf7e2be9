//! `poeem`: train retrieval models with their index, export, embed, evaluate and recommend
//! with them; build,
//! search, inspect and verify IVF-PQ index files; run the synthetic tutorial demo.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` for the commands' results: returns an error instead of panicking when stdout
/// cannot be written (a closed pipe ends the command quietly, see [`main`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::stdout_error)?
    }};
}

/// `print!` counterpart of [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*).map_err($crate::stdout_error)?
    }};
}

mod demo;
mod faiss_commands;
mod index_commands;
mod outputs;
mod progress;
mod recommend_command;
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
    /// Recall, precision and NDCG at K on the held-out pairs (or a test file), brute force and
    /// through an index.
    Evaluate(train_commands::EvaluateArgs),
    /// Top-k items per user through an index, seen items optionally left out, as TSV or Parquet.
    Recommend(recommend_command::RecommendArgs),
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
    /// Write an index as a faiss IndexIVFPQ file (faiss.read_index loads and searches it), inside an IndexRefineFlat when the index has f32 or f16 refinement data.
    ExportFaiss(faiss_commands::ExportFaissArgs),
    /// Convert a faiss IndexIVFPQ file (optionally behind OPQ, optionally inside an IndexRefineFlat, whose vectors become refinement data) into an index.
    ImportFaiss(faiss_commands::ImportFaissArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Train(args) => train_commands::train(args),
        Command::Export(args) => train_commands::export(args),
        Command::Embed(args) => train_commands::embed(args),
        Command::Evaluate(args) => train_commands::evaluate(args),
        Command::Recommend(args) => recommend_command::recommend(args),
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
        // The reader went away (`poeem info ... | head -1`): stop quietly with the status of a
        // process ended by SIGPIPE, as Unix tools do.
        Err(error) if error.chain().any(|cause| cause.is::<StdoutClosed>()) => {
            ExitCode::from(128 + 13)
        }
        Err(error) => {
            eprintln!("error: {}", message(&error));
            ExitCode::FAILURE
        }
    }
}

/// Standard output was closed by its reader.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// The error for a failed write to stdout: [`StdoutClosed`] for a closed pipe.
fn stdout_error(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(error).context("writing to standard output")
    }
}

/// `error` and its causes joined by ": ", each said once: a cause whose text already ends the
/// message (an error that prints its source, such as "path: No such file") is not repeated.
fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}
