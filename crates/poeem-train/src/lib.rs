//! The two-tower retrieval model trained jointly with its IVF-PQ index.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod data;
mod error;
mod f32_bytes;
pub mod layer;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod synthetic;
pub mod trainer;

pub use data::{DataConfig, Dataset, EntityFeatures, Field, Vocab};
pub use error::TrainError;
pub use layer::{
    CentroidInit, CoarseObjective, IndexingLayer, IndexingLayerConfig, LayerDiagnostics, LayerStep,
    Phase, RotationMode,
};
pub use loss::LossReduction;
pub use model::{Fields, LayerUpdateItems, Model, ModelConfig, TowerConfig, WarmStartItems};
pub use optim::{OptimizerConfig, OptimizerState};
pub use trainer::{LrSchedule, TrainConfig, TrainProgress, TrainReport, Trainer};
