//! IVF-PQ index files and search.
//!
//! - [`layout`]: the in-memory shape of an index ([`IndexParams`], [`IndexView`], [`IndexParts`]);
//! - search: [`SearchIndex`] (a view plus derived tables and the scan [`Kernel`] for this CPU),
//!   [`Searcher`] (one query at a time, reusable scratch), [`SearchIndex::search_batch`];
//!   [`SharedIndex`], the owned form (an `Arc<Index>` plus the derived tables, `Send + Sync`,
//!   no lifetime) that many threads search at once;
//! - [`format`](mod@format): the versioned, checksummed file format ([`encode_index`], [`write_index`]) and
//!   [`Index`], a file opened for search (memory-mapped by [`Index::open`], on the heap by
//!   [`Index::read`] and [`Index::from_bytes`]), specified in `docs/index-format.md`;
//! - [`ItemKeys`]: the items' original ids (any strings), an optional section of the file;
//! - [`metadata`]: the metadata section's provenance record, typed ([`IndexMetadata`],
//!   [`MetadataValue`]);
//! - [`stream`]: the same files written list by list ([`write_index_streaming`]), for converters
//!   whose input does not fit in memory;
//! - [`refine`]: the optional refinement data that re-ranking reads;
#![deny(unsafe_code)]

mod error;
pub mod format;
mod index;
mod kernels;
mod keys;
pub mod layout;
pub mod metadata;
pub mod refine;
mod searcher;
mod storage;
pub mod stream;
mod topk;

pub use error::SearchError;
/// How many threads a batch search runs on (faer's type, re-exported so that callers need not
/// depend on faer).
pub use faer::Par;
pub use format::{encode_index, write_index};
pub use index::{Index, IndexInfo, SectionInfo};
pub use kernels::{Kernel, TABLE_STRIDE};
pub use keys::{ItemKeys, ItemKeysView};
pub use layout::{
    BLOCK, CodeLayout, IndexParams, IndexParts, IndexView, ListView, Metric, PADDING_ID, padded_len,
};
pub use metadata::{IndexMetadata, MetadataValue};
pub use refine::{RefineKind, RefineView};
pub use searcher::{Probe, SearchIndex, SearchParams, Searcher, SharedIndex};
pub use stream::{IndexHead, ListBuffer, write_index_streaming};
