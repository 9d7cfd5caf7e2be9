//! The one-off initialisation of the centroids, codebooks and rotation (method §2, §3).

use faer::Par;
use poeem_pq::{IvfPqCodec, IvfPqConfig, pad_rows, padded_dim, train_opq};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::config::{CentroidInit, IndexingLayerConfig};
use super::rotation::LearnedRotation;
use super::{Params, Work};
use crate::{OptimizerState, TrainError};

/// Mixed into the seed of the random init so that its stream differs from the others.
const RANDOM_INIT_SALT: u64 = 0x2B7E_1516_28AE_D2A6;

/// Fresh parameters from given centroids, codebooks and rotation, with fresh optimiser states.
fn params(
    config: &IndexingLayerConfig,
    coarse: Vec<f32>,
    codebooks: Vec<f32>,
    rotation: Option<LearnedRotation>,
) -> Result<Params, TrainError> {
    Ok(Params {
        coarse_optimizer: OptimizerState::new(config.optimizer, coarse.len())?,
        codebook_optimizer: OptimizerState::new(config.optimizer, codebooks.len())?,
        coarse,
        codebooks,
        rotation,
        givens_steps: 0,
    })
}

/// The warm start: k-means of both levels on the buffered rows (`n × dim`), after OPQ when the
/// rotation mode asks for it. The codebooks are fitted on residuals or raw rotated vectors as
/// `config.pq_training` says.
///
/// # Errors
/// When k-means or OPQ fails (too few distinct rows, for instance).
pub(crate) fn kmeans_init(
    buffer: &[f32],
    dim: usize,
    config: &IndexingLayerConfig,
    par: Par,
) -> Result<Params, TrainError> {
    let ivf = IvfPqConfig {
        n_lists: config.n_lists,
        n_subspaces: config.n_subspaces,
        n_bits: config.n_bits,
        pq_training: config.pq_training,
        kmeans: config.kmeans.clone(),
        seed: config.seed,
    };
    let padded = padded_dim(dim, config.n_subspaces);
    let (codec, rotation) = if config.rotation.uses_opq() {
        let (codec, _) = train_opq(buffer, dim, &ivf, &config.opq, par, &mut |_| {})?;
        let values = codec.rotation().as_slice().to_vec();
        let rotation = LearnedRotation::from_values(padded, values)?;
        (codec, Some(rotation))
    } else {
        let codec = IvfPqCodec::train(buffer, dim, &ivf, par, &mut |_| {})?;
        let rotation = if config.rotation.has_rotation() {
            Some(LearnedRotation::identity(padded)?)
        } else {
            None
        };
        (codec, rotation)
    };
    let coarse = codec
        .coarse()
        .map(|c| c.centroids().as_slice().to_vec())
        .unwrap_or_default();
    params(config, coarse, codec.pq().codebooks_flat(), rotation)
}

/// The random init ([`CentroidInit::Random`], warm start off) from the first joint batch `x`
/// (`n × dim`), as that variant's documentation describes.
///
/// # Errors
/// Only when the settings are invalid.
pub(crate) fn random_init(
    x: &[f32],
    dim: usize,
    config: &IndexingLayerConfig,
    work: &mut Work,
) -> Result<Params, TrainError> {
    debug_assert_eq!(config.centroid_init, CentroidInit::Random);
    let p = padded_dim(dim, config.n_subspaces);
    let n = x.len() / dim;
    pad_rows(x, dim, p, &mut work.padded);
    let mut mean = vec![0.0f64; p];
    let mut square = vec![0.0f64; p];
    for row in work.padded.chunks_exact(p) {
        for ((m, s), &v) in mean.iter_mut().zip(&mut square).zip(row) {
            *m += f64::from(v);
            *s += f64::from(v) * f64::from(v);
        }
    }
    let std: Vec<f64> = mean
        .iter_mut()
        .zip(&square)
        .map(|(m, &s)| {
            *m /= n as f64;
            (s / n as f64 - *m * *m).max(0.0).sqrt()
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ RANDOM_INIT_SALT);
    let mut draw = |c: usize, centred: bool| {
        let g: f64 = StandardNormal.sample(&mut rng);
        let base = if centred { 0.0 } else { mean[c] };
        (base + std[c] * g) as f32
    };
    let coarse: Vec<f32> = (0..config.n_lists * p)
        .map(|i| draw(i % p, false))
        .collect();
    let sub = p / config.n_subspaces;
    let k = config.n_codewords();
    let mut codebooks = Vec::with_capacity(config.n_subspaces * k * sub);
    for s in 0..config.n_subspaces {
        for _ in 0..k {
            for t in 0..sub {
                codebooks.push(draw(s * sub + t, config.n_lists > 0));
            }
        }
    }
    let rotation = if config.rotation.has_rotation() {
        Some(LearnedRotation::identity(p)?)
    } else {
        None
    };
    params(config, coarse, codebooks, rotation)
}
