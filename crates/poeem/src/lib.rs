//! Poeem: a deep retrieval model trained jointly with its product-quantization embedding index,
//! and the parts it is made of.
//!
//! This facade re-exports the layered crates so that an application depends on one name:
//!
//! - [`rotation`] (`poeem-rotation`): orthonormal rotations, Procrustes, Givens coordinate descent;
//! - [`pq`] (`poeem-pq`): k-means, the coarse quantizer, product quantization, OPQ, the IVF-PQ
//!   codec;
//!
//! plus [`io`] for vector files (`.npy`, `.fvecs`) and [`synthetic`] for seeded test data.
#![forbid(unsafe_code)]

pub use poeem_pq as pq;
pub use poeem_rotation as rotation;

pub mod io;
pub mod synthetic;
