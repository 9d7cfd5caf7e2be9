/// Which part of a training run a [`Progress`] event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// A stand-alone k-means run.
    KMeans,
    /// k-means of the coarse (IVF) quantizer.
    Coarse,
    /// k-means of one product-quantizer subspace.
    Subspace {
        /// The subspace, `0..n_subspaces`.
        index: usize,
        /// The number of subspaces.
        count: usize,
    },
    /// One OPQ round (codebook fit + Procrustes).
    OpqRound,
}

/// A progress event from a long training run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Where the run is.
    pub stage: Stage,
    /// Steps done in this stage (1-based).
    pub step: usize,
    /// Most steps this stage will take.
    pub total: usize,
    /// The objective after this step (k-means inertia, or mean squared distortion for OPQ).
    pub objective: f64,
}

/// A callback receiving [`Progress`] events; `&mut |_| {}` ignores them.
pub type ProgressFn<'a> = &'a mut dyn FnMut(&Progress);
