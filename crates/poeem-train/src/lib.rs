//! The two-tower retrieval model trained jointly with its IVF-PQ index.
#![forbid(unsafe_code)]

mod error;
pub mod layer;
pub mod optim;

pub use error::TrainError;
pub use optim::{OptimizerConfig, OptimizerState};
