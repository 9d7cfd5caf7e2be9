//! Poeem: a deep retrieval model trained jointly with its product-quantization embedding index,
//! and the parts it is made of.
//!
//! This facade re-exports the layered crates so that an application depends on one name:
//!
//! - [`fs`] (`poeem-fs`): atomic writes, file identity;
//! - [`rotation`] (`poeem-rotation`): orthonormal rotations, Procrustes, Givens coordinate descent;
//! - [`pq`] (`poeem-pq`): k-means, the coarse quantizer, product quantization, OPQ, the IVF-PQ
//!   codec;
//! - [`search`] (`poeem-search`): the versioned, mmap-backed index file and IVF-PQ search;
//! - [`build`] (`poeem-build`): post-hoc index building, indexes from trained codecs, import of
//!   the reference implementation's index files;
//! - [`faiss`] (`poeem-faiss`): native reading and writing of faiss IVF-PQ index files;
//! - [`train`] (`poeem-train`): the two-tower model with the indexing layer, data loading,
//!   training with exact-resume checkpoints, ranking metrics;
//!
//! plus [`pipeline`], the glue between a trained model and its index (export, evaluation through
//! an index, the synthetic tutorial experiment), [`io`] for vector files (`.npy`, `.fvecs`) and
//! [`synthetic`] for seeded test data.
//!
//! ```
//! use poeem::pq::{IvfPqConfig, OpqConfig, Par, train_opq};
//!
//! let (n, dim) = (4_000, 32);
//! let data = poeem::synthetic::anisotropic_gaussian(n, dim, 30.0, 1);
//! let config = IvfPqConfig::new(16, 8, 6); // 16 lists, 8 subspaces of 6 bits
//! let (codec, report) = train_opq(&data, dim, &config, &OpqConfig::default(), Par::rayon(2), &mut |_| {})?;
//! let (mut lists, mut codes) = (vec![0u32; n], vec![0u8; n * 8]);
//! codec.encode(&data, &mut lists, &mut codes, Par::rayon(2))?;
//! assert!(report.distortion.last() < report.distortion.first());
//! # Ok::<(), poeem::pq::PqError>(())
//! ```
#![forbid(unsafe_code)]

pub use poeem_build as build;
pub use poeem_faiss as faiss;
pub use poeem_fs as fs;
pub use poeem_pq as pq;
pub use poeem_rotation as rotation;
pub use poeem_search as search;
pub use poeem_train as train;

#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod pipeline;
pub mod synthetic;
