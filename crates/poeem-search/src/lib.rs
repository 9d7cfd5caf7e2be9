//! IVF-PQ index files and search.
//!
//! - [`layout`]: the in-memory shape of an index ([`IndexParams`], [`IndexView`], [`IndexParts`]);
//! - search: [`SearchIndex`] (a view plus derived tables and the scan [`Kernel`] for this CPU),
//!   [`Searcher`] (one query at a time, reusable scratch), [`SearchIndex::search_batch`];
//! - [`build`]: post-hoc index building, k-means and optional OPQ then encoding
//!   ([`build_index`]), and encoding with an already trained codec ([`index_from_codec`]);
//! - [`reference`](mod@reference): import of the index files of the reference (TensorFlow)
//!   Poeem implementation ([`import_reference`]) and a writer of that format
//!   ([`encode_reference`]);
//! - [`format`](mod@format): the versioned, checksummed file format ([`encode_index`], [`write_index`]) and
//!   [`Index`], a file opened for search (memory-mapped by [`Index::open`], on the heap by
//!   [`Index::read`] and [`Index::from_bytes`]), specified in `docs/index-format.md`;
//! - [`stream`]: the same files written list by list ([`write_index_streaming`]), for converters
//!   whose input does not fit in memory;
#![deny(unsafe_code)]

pub mod build;
mod error;
pub mod format;
mod index;
mod kernels;
pub mod layout;
pub mod reference;
mod searcher;
mod storage;
pub mod stream;
mod topk;

pub use build::{BuildConfig, BuildReport, build_index, index_from_codec};
pub use error::SearchError;
pub use format::{encode_index, write_index};
pub use index::{Index, IndexInfo, SectionInfo};
pub use kernels::{Kernel, TABLE_STRIDE};
pub use layout::{
    BLOCK, IndexParams, IndexParts, IndexView, ListView, Metric, PADDING_ID, padded_len,
};
pub use reference::{
    ReferenceFile, ReferenceImport, encode_reference, import_reference, parse_reference,
};
pub use searcher::{Probe, SearchIndex, SearchParams, Searcher};
pub use stream::{IndexHead, ListBuffer, write_index_streaming};
