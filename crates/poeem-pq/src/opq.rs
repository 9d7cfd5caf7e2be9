//! Optimized product quantization (Ge et al. 2013, non-parametric): alternate fitting the codec
//! on `X R` and solving Procrustes for the `R` that best maps `X` onto the reconstructions.

use faer::Par;
use poeem_rotation::{Rotation, procrustes};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{check_training_rows, sample_rows};
use crate::ivfpq::{padded_dim, squared_error};
use crate::{IvfPqCodec, IvfPqConfig, KMeansSettings, PqError, Progress, ProgressFn, Stage};

/// Settings of OPQ training.
#[derive(Debug, Clone, PartialEq)]
pub struct OpqConfig {
    /// Alternation rounds (codebook fit + Procrustes). 10–20 are usually enough.
    pub n_rounds: usize,
    /// Lloyd iterations of each warm-started refit inside a round.
    pub iterations_per_round: usize,
    /// Train on a seeded sample of at most this many vectors (`None`: all).
    pub max_train_points: Option<usize>,
}

impl Default for OpqConfig {
    fn default() -> Self {
        Self {
            n_rounds: 10,
            iterations_per_round: 4,
            max_train_points: Some(65_536),
        }
    }
}

/// What OPQ training did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpqReport {
    /// Mean squared distortion of the training vectors with the codec fitted in each round,
    /// before that round's Procrustes step; the last entry is the returned codec's.
    pub distortion: Vec<f64>,
}

/// Trains an IVF-PQ codec with a learned rotation.
///
/// Starts from the identity, then for each round: fit the codec on `X R` (warm-started from the
/// previous round's centroids), reconstruct `Z`, set `R = argmin ‖X R − Z‖`. A final full fit on
/// the last rotation gives the returned codec.
///
/// # Errors
/// As [`IvfPqCodec::train`], or when the rotation step fails.
pub fn train_opq(
    data: &[f32],
    dim: usize,
    config: &IvfPqConfig,
    opq: &OpqConfig,
    par: Par,
    progress: ProgressFn<'_>,
) -> Result<(IvfPqCodec, OpqReport), PqError> {
    check_training_rows(data, dim, "OPQ training data")?;
    let padded = padded_dim(dim, config.n_subspaces);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x005E_ED00_F00A);
    let sampled = opq
        .max_train_points
        .and_then(|max| sample_rows(data, dim, max, &mut rng));
    let train = sampled.as_deref().unwrap_or(data);
    let n_train = train.len() / dim;
    let mut padded_train = vec![0.0f32; n_train * padded];
    for (dst, row) in padded_train
        .chunks_exact_mut(padded)
        .zip(train.chunks_exact(dim))
    {
        dst[..dim].copy_from_slice(row);
    }

    let round_config = IvfPqConfig {
        kmeans: KMeansSettings {
            max_iter: opq.iterations_per_round.max(1),
            tolerance: 0.0,
            ..config.kmeans.clone()
        },
        ..config.clone()
    };
    let mut report = OpqReport::default();
    let mut rotation = Rotation::identity(padded);
    let mut codec: Option<IvfPqCodec> = None;
    for round in 0..opq.n_rounds {
        let round_settings = if codec.is_some() {
            &round_config
        } else {
            config
        };
        let fitted = IvfPqCodec::train_rotated(
            train,
            dim,
            rotation.clone(),
            round_settings,
            codec.as_ref(),
            par,
            &mut |_| {},
        )?;
        let rotated = fitted.rotate(train, par)?;
        let (z, _) = fitted.reconstruct_rotated(&rotated, par)?;
        let distortion = squared_error(&rotated, &z) / n_train as f64;
        report.distortion.push(distortion);
        progress(&Progress {
            stage: Stage::OpqRound,
            step: round + 1,
            total: opq.n_rounds,
            objective: distortion,
        });
        rotation = procrustes(&padded_train, &z, padded, par)?;
        codec = Some(fitted);
    }
    let final_codec =
        IvfPqCodec::train_rotated(train, dim, rotation, config, codec.as_ref(), par, progress)?;
    report.distortion.push(final_codec.distortion(train, par)?);
    Ok((final_codec, report))
}
