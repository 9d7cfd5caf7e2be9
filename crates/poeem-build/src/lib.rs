//! Making index files: post-hoc building and import.
//!
//! - [`posthoc`]: post-hoc index building, k-means and optional OPQ then encoding
//!   ([`build_index`]), and encoding with an already trained codec ([`index_from_codec`], the
//!   export of a jointly trained index);
//! - [`reference`](mod@reference): import of the index files of the reference (TensorFlow)
//!   Poeem implementation ([`import_reference`]) and a writer of that format
//!   ([`encode_reference`]).
//!
//! The results are [`IndexParts`](poeem_search::IndexParts), written and searched by
//! `poeem-search`, which links none of this crate's training code.
#![forbid(unsafe_code)]

mod error;
pub mod posthoc;
pub mod reference;

pub use error::BuildError;
pub use posthoc::{BuildConfig, BuildOptions, BuildReport, build_index, index_from_codec};
pub use reference::{
    ReferenceFile, ReferenceImport, encode_reference, import_reference, parse_reference,
};
