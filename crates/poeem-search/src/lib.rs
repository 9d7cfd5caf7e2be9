//! IVF-PQ index files and search.
//!
//! - [`layout`]: the in-memory shape of an index ([`IndexParams`], [`IndexView`], [`IndexParts`]);
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
mod topk;

pub use error::SearchError;
pub use layout::{
    BLOCK, IndexParams, IndexParts, IndexView, ListView, Metric, PADDING_ID, padded_len,
};
// <format/index re-exports>
// <search re-exports>
// <build/reference re-exports>
