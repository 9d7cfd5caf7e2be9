//! Native reading and writing of faiss IVF-PQ index files, without faiss.
//!
//! - [`export_faiss`] / [`write_faiss`]: a poeem index as a faiss `IndexIVFPQ` file that faiss's
//!   own `read_index` loads and searches with the same results (residuals, a flat coarse
//!   quantizer of the index's metric, int64 ids, codes packed as faiss packs 1–16-bit codes; a
//!   rotation and zero padding as an `IndexPreTransform` with one linear transform, cosine as a
//!   normalisation in front of inner product);
//! - [`import_faiss`] / [`FaissReader`]: a faiss `IndexIVFPQ` file (residuals on or off, inner
//!   product or L2, optionally behind an orthonormal, non-reducing linear transform such as
//!   OPQ's, and a normalisation) as a poeem index; anything else is refused with an error that
//!   names the four-character code found and what is supported.
//!
//! Both directions stream: the poeem side is memory-mapped or written list by list
//! ([`poeem_search::write_index_streaming`]), the faiss side is read through a `Read + Seek`
//! or written through a buffered writer, so memory stays about one list plus the small parts
//! (centroids, codebooks, rotation, list sizes). The reader is a parser of untrusted input: it
//! checks every length against the bytes left in the file before allocating, and any
//! truncation or byte change gives an error or a valid index, never a panic.
//!
//! The format subset, field by field, and how poeem's concepts map onto faiss's are in
//! `docs/faiss-interop.md`; the files were checked against faiss 1.15.1
//! ([`FAISS_VERSION_CHECKED`]).
#![forbid(unsafe_code)]

pub mod codes;
mod error;
mod input;
mod read;
mod write;

pub use error::FaissError;
pub use read::{
    FaissReader, FaissSummary, MAX_WIDE_CODEBOOK_BYTES, ORTHONORMAL_TOLERANCE, import_faiss,
    parse_faiss,
};
pub use write::{
    ExportReport, REFINE_K_FACTOR, RefineExport, encode_faiss, export_faiss, write_faiss,
};

/// The faiss release whose files this crate was checked against.
pub const FAISS_VERSION_CHECKED: &str = "1.15.1";

/// Progress of a conversion, reported after each list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Lists converted so far.
    pub lists_done: usize,
    /// Lists in the index.
    pub n_lists: usize,
    /// Items converted so far.
    pub items_done: usize,
    /// Items in the index.
    pub n_items: usize,
}
