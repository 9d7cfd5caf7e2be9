//! Optimized product quantization (Ge et al. 2013, non-parametric): alternate fitting the codec
//! on `X R` and solving Procrustes for the `R` that best maps `X` onto the reconstructions.

use faer::Par;
use poeem_rotation::{Rotation, procrustes};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{check_training_rows, sample_rows};
use crate::ivfpq::{padded_dim, squared_error};
use crate::{
    IvfPqCodec, IvfPqConfig, KMeansInit, KMeansSettings, PqConfig, PqError, ProductQuantizer,
    Progress, ProgressFn, Stage,
};

/// Settings of OPQ training.
#[derive(Debug, Clone, PartialEq)]
pub struct OpqConfig {
    /// Alternation rounds (codebook fit + Procrustes); 50 by default, as faiss's `OPQMatrix`
    /// (on 22,641 bio rows, `cargo xtask bench-faiss search --opq` as in the README, 10 rounds
    /// left recall@10 1.3 and 2.2 points below 50 at nprobe 8 and 32).
    pub n_rounds: usize,
    /// Lloyd iterations of each warm-started refit inside a round.
    pub iterations_per_round: usize,
    /// Train on a seeded sample of at most this many vectors (`None`: all).
    pub max_train_points: Option<usize>,
    /// The rotation the first round starts from.
    pub init: OpqInit,
    /// What the rounds fit the rotation to.
    pub objective: OpqObjective,
}

impl OpqConfig {
    /// The default of [`OpqConfig::n_rounds`].
    pub const DEFAULT_ROUNDS: usize = 50;
}

impl Default for OpqConfig {
    fn default() -> Self {
        Self {
            n_rounds: Self::DEFAULT_ROUNDS,
            iterations_per_round: 4,
            max_train_points: Some(65_536),
            init: OpqInit::Random,
            objective: OpqObjective::Vectors,
        }
    }
}

/// What OPQ's alternation fits the rotation to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpqObjective {
    /// A product quantizer of the rotated vectors themselves, with no coarse level (faiss's
    /// `OPQMatrix`): each round is one PQ fit and a Procrustes step, and the IVF-PQ codec is
    /// fitted once, on the final rotation.
    #[default]
    Vectors,
    /// The whole IVF-PQ codec (coarse lists, then PQ of the residuals): each round refits both
    /// levels. The coarse level absorbs the largest directions of variance, so the residuals
    /// pull the rotation less and the alternation moves more slowly.
    IvfResiduals,
}

/// The rotation OPQ training starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpqInit {
    /// A random rotation (Haar measure, seeded by the codec's seed), as faiss's `OPQMatrix`
    /// starts: every input coordinate, zero padding included, is spread over every subspace,
    /// so no subspace starts empty or with a single dominant direction.
    #[default]
    Random,
    /// The identity: each subspace starts as a block of the input's coordinates. The
    /// alternation is a local method, so a subspace that starts on zero padding stays on it
    /// (bio padded 74 → 96 with M = 12: recall@10 0.472 against 0.511 from a random rotation,
    /// 10 whole-codec rounds, nprobe 8).
    Identity,
}

/// What OPQ training did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpqReport {
    /// Mean squared distortion of the training vectors with the quantizer fitted in each round
    /// (a PQ of the vectors or the IVF-PQ codec, as the objective says), before that round's
    /// Procrustes step; the last entry is the returned codec's.
    pub distortion: Vec<f64>,
}

/// Trains an IVF-PQ codec with a learned rotation.
///
/// Starts from `opq.init`'s rotation, then for each round: fit `opq.objective`'s quantizer on
/// `X R` (warm-started from the previous round's codebooks), reconstruct `Z`, set
/// `R = argmin ‖X R − Z‖` (Procrustes). A final full fit of the IVF-PQ codec on the last
/// rotation gives the returned codec.
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

    let round_kmeans = KMeansSettings {
        max_iter: opq.iterations_per_round.max(1),
        tolerance: 0.0,
        ..config.kmeans.clone()
    };
    let mut report = OpqReport::default();
    let mut rotation = match opq.init {
        OpqInit::Random => Rotation::random(padded, config.seed ^ 0x0A11_0C47),
        OpqInit::Identity => Rotation::identity(padded),
    };
    let mut codec: Option<IvfPqCodec> = None;
    let mut pq: Option<ProductQuantizer> = None;
    let mut rotated = vec![0.0f32; n_train * padded];
    for round in 0..opq.n_rounds {
        let z = match opq.objective {
            OpqObjective::Vectors => {
                rotation.apply(&padded_train, &mut rotated, par);
                let pq_config = PqConfig {
                    n_subspaces: config.n_subspaces,
                    n_bits: config.n_bits,
                    kmeans: match &pq {
                        None => config.kmeans.clone(),
                        Some(previous) => KMeansSettings {
                            init: KMeansInit::Centroids(previous.codebooks_flat()),
                            ..round_kmeans.clone()
                        },
                    },
                    seed: config.seed,
                };
                let fitted =
                    ProductQuantizer::train(&rotated, padded, &pq_config, par, &mut |_| {})?;
                let mut z = vec![0.0f32; rotated.len()];
                if config.n_bits <= 8 {
                    let mut codes = vec![0u8; n_train * config.n_subspaces];
                    fitted.encode(&rotated, &mut codes, par)?;
                    fitted.decode(&codes, &mut z)?;
                } else {
                    let mut codes = vec![0u16; n_train * config.n_subspaces];
                    fitted.encode(&rotated, &mut codes, par)?;
                    fitted.decode(&codes, &mut z)?;
                }
                pq = Some(fitted);
                z
            }
            OpqObjective::IvfResiduals => {
                let round_config = IvfPqConfig {
                    kmeans: round_kmeans.clone(),
                    ..config.clone()
                };
                let fitted = IvfPqCodec::train_rotated(
                    train,
                    dim,
                    rotation.clone(),
                    if codec.is_some() {
                        &round_config
                    } else {
                        config
                    },
                    codec.as_ref(),
                    par,
                    &mut |_| {},
                )?;
                rotated = fitted.rotate(train, par)?;
                let (z, _) = fitted.reconstruct_rotated(&rotated, par)?;
                codec = Some(fitted);
                z
            }
        };
        let distortion = squared_error(&rotated, &z) / n_train as f64;
        report.distortion.push(distortion);
        progress(&Progress {
            stage: Stage::OpqRound,
            step: round + 1,
            total: opq.n_rounds,
            objective: distortion,
        });
        rotation = procrustes(&padded_train, &z, padded, par)?;
    }
    let final_codec =
        IvfPqCodec::train_rotated(train, dim, rotation, config, codec.as_ref(), par, progress)?;
    report.distortion.push(final_codec.distortion(train, par)?);
    Ok((final_codec, report))
}
