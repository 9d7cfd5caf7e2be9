//! Seeded synthetic vectors for tests, benchmarks and experiments.

use poeem_rotation::Rotation;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n × dim` row-major Gaussian vectors with per-direction standard deviations decaying
/// geometrically from 1 to `1/decay` (decay ≥ 1), then turned by a random rotation, so that the
/// variance is concentrated in a few directions that straddle PQ's contiguous blocks. This is
/// the kind of data where a learned rotation pays.
pub fn anisotropic_gaussian(n: usize, dim: usize, decay: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scales: Vec<f32> = (0..dim)
        .map(|j| decay.max(1.0).powf(-(j as f32) / (dim.max(2) - 1) as f32))
        .collect();
    let raw: Vec<f32> = (0..n * dim)
        .map(|k| scales[k % dim] * standard_normal(&mut rng))
        .collect();
    let rotation = Rotation::random(dim.max(1), seed ^ 0xA11CE);
    let mut out = vec![0.0f32; raw.len()];
    rotation.apply(&raw, &mut out, poeem_rotation::Par::Seq);
    out
}

/// `n × dim` row-major vectors drawn around `n_clusters` Gaussian centres (unit spread between
/// centres, `spread` within a cluster): data with coarse structure, like real embeddings.
pub fn clustered_gaussian(
    n: usize,
    dim: usize,
    n_clusters: usize,
    spread: f32,
    seed: u64,
) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<f32> = (0..n_clusters.max(1) * dim)
        .map(|_| standard_normal(&mut rng))
        .collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = rng.random_range(0..n_clusters.max(1));
        for j in 0..dim {
            out.push(centres[c * dim + j] + spread * standard_normal(&mut rng));
        }
    }
    out
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}
