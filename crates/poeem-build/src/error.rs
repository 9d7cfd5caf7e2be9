use thiserror::Error;

/// Errors from building or importing an index.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Bad vectors, ids or settings, or a file that cannot be read (the index crate's error,
    /// naming what is wrong).
    #[error(transparent)]
    Search(#[from] poeem_search::SearchError),
    /// Training a quantizer failed.
    #[error(transparent)]
    Pq(#[from] poeem_pq::PqError),
    /// A file given as a reference-implementation index file is plainly something else.
    #[error("not an index file of the reference implementation: {reason}")]
    NotAReferenceFile {
        /// What gives it away.
        reason: String,
    },
    /// A reference-implementation index file is truncated or inconsistent.
    #[error("reference index, {field}: {reason}")]
    BadReferenceFile {
        /// The field being read.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}
