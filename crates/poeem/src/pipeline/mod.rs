//! The glue between a trained model ([`train`](crate::train)) and its index
//! ([`search`](crate::search)), which depend on neither each other: storing where a model's data
//! came from, exporting the learned index, evaluating retrieval brute force and through an index,
//! and the synthetic tutorial experiment.
//!
//! - [`DataSource`]: the data a model was trained on, stored beside its checkpoint
//!   ([`DataSource::save`], [`DataSource::read`]) so that resuming and evaluating need no data
//!   arguments;
//! - [`export_index`]: the item tower's embeddings encoded with the codec the indexing layer
//!   learned: an index file's parts without any k-means or OPQ;
//! - [`EvalSet`]: the queries and relevance judgements of an evaluation (a dataset's held-out
//!   pairs, a test file's, or the tutorial's rule), scored brute force or through a
//!   [`SearchIndex`];
//! - [`recommend_to_file`]: each user's top-k items through an index, the user's seen items
//!   ([`seen_ids`]) filtered inside the search, written as TSV or Parquet;
//! - [`train_model`], [`build_post_hoc`], [`export_timed`], [`EvalSet::through_index_at`]: the
//!   timed steps of an index comparison (the tutorial's and the reproduction runs');
//! - [`run_tutorial`]: the tutorial experiment of `method.md` §6 (plain and Poeem models, post-hoc
//!   IVF-PQ and OPQ+IVF-PQ indexes, the exported Poeem index) as one call returning a
//!   [`TutorialReport`].
//!
//! [`SearchIndex`]: crate::search::SearchIndex

mod coarse;
mod data;
mod evaluate;
mod experiment;
mod export;
mod ids;
mod recommend;
mod tutorial;

use std::path::PathBuf;

use thiserror::Error;

pub use coarse::{CoarseDiagnostics, ProbeConcentration, ProbeCoverage};
pub use data::{DATA_FILE, DataSource};
pub use evaluate::{EvalSet, index_rankings};
pub use experiment::{TimedIndex, build_post_hoc, export_timed, median, train_model};
pub use export::{ExportReport, MODEL_METADATA_KEY, export_index, exported_item_ids};
pub use ids::{IdMap, ItemIds, read_token_indices, write_token_list};
pub use recommend::{
    RecFormat, RecommendReport, RecommendRequest, recommend_to_file, seen_ids, tsv_cell,
};
pub use tutorial::{
    IndexResult, ModelResult, TutorialConfig, TutorialEvent, TutorialReport, run_tutorial,
};

/// Errors of the pipeline: those of the training and search crates, file errors, and models or
/// indexes that do not fit together.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// Loading data, training, or reading a checkpoint failed.
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// Writing, reading or searching an index failed.
    #[error(transparent)]
    Search(#[from] crate::search::SearchError),
    /// Building an index failed.
    #[error(transparent)]
    Build(#[from] crate::build::BuildError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A pipeline file (such as the model directory's data description) is not valid.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model has no indexing layer, or its layer has not left the warm-up, so there is no
    /// learned codec to export.
    #[error("{reason}")]
    NoCodec {
        /// Why, and what to do instead.
        reason: String,
    },
    /// Two inputs that must belong together do not (a model and its data, a model and an index).
    #[error("{reason}")]
    Mismatch {
        /// What differs.
        reason: String,
    },
    /// An entity id that the model does not know.
    #[error("unknown {side} id {token:?}{}", location.as_deref().map(|l| format!(" ({l})")).unwrap_or_default())]
    UnknownId {
        /// `"query"` or `"item"`.
        side: &'static str,
        /// The id as given.
        token: String,
        /// Where it was read, if from a file.
        location: Option<String>,
    },
}

impl PipelineError {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// A Markdown table: the header row, a rule, then `rows`, each column padded to its widest
/// cell. Rows shorter than the header leave the last columns empty.
pub fn markdown_table(header: &[impl AsRef<str>], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.as_ref().chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        out.push('|');
        for (i, &w) in width.iter().enumerate() {
            let cell = cells.next().unwrap_or("");
            let pad = w - cell.chars().count().min(w);
            out.push(' ');
            out.push_str(cell);
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(if i + 1 == width.len() { " |\n" } else { " |" });
        }
    };
    line(&mut header.iter().map(AsRef::as_ref));
    let rule: Vec<String> = width.iter().map(|&w| "-".repeat(w)).collect();
    line(&mut rule.iter().map(String::as_str));
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markdown_tables_pad_columns() {
        let table = super::markdown_table(
            &["a", "bbb"],
            &[vec!["long cell".into(), "1".into()], vec!["x".into()]],
        );
        assert_eq!(
            table,
            "| a         | bbb |\n| --------- | --- |\n| long cell | 1   |\n| x         |     |\n"
        );
    }
}
