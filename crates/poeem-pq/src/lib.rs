//! Vector quantizers for IVF-PQ indexes.
//!
//! - [`KMeans`]: Lloyd's algorithm, k-means++ or random-sample initialisation, empty clusters
//!   re-seeded, identical results for a seed whatever the thread count;
//! - [`CoarseQuantizer`]: the inverted-file (IVF) level;
//! - [`ProductQuantizer`]: M subspaces of `2^n_bits` codewords, with ADC lookup tables;
//! - [`IvfPqCodec`]: rotation → coarse list → PQ of the residual, for any dimension (zero-padded);
//!   [`IvfPqRef`], its parts borrowed, is the one encode/decode implementation (the indexing
//!   layer of `poeem-train` runs it on its own quantizers and buffers);
//! - [`train_opq`]: the codec with a rotation learned by alternating fits and Procrustes.
//!
//! Vectors are row-major `&[f32]` of `n × dim`; parallelism is an explicit [`Par`].
#![forbid(unsafe_code)]

mod centroids;
mod coarse;
mod data;
mod error;
mod ivfpq;
mod kmeans;
mod opq;
mod pq;
mod progress;

pub use centroids::Centroids;
pub use coarse::CoarseQuantizer;
pub use error::PqError;
pub use faer::Par;
pub use ivfpq::{IvfPqCodec, IvfPqConfig, IvfPqRef, PqTraining, pad_rows, padded_dim};
pub use kmeans::{
    KMeans, KMeansConfig, KMeansInit, KMeansReport, KMeansSettings, mean_squared_norm,
};
pub use opq::{OpqConfig, OpqInit, OpqObjective, OpqReport, train_opq};
pub use pq::{Code, MAX_BITS, PqConfig, ProductQuantizer};
pub use progress::{Progress, ProgressFn, Stage};
