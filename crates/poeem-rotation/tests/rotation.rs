//! Integration tests of `poeem-rotation`: the behaviour promised by the method (§3–§4 of
//! `method.md`), checked through the public API only.
//!
//! - Givens steps keep `R` orthonormal (with and without periodic re-orthonormalisation);
//! - a small Givens step never increases the distortion `f(R) = Σ_b ‖x_b R − z_b‖²`, and decreases
//!   it by `η · Σ S_ij²` to first order;
//! - the pair selections are ordered as the theory says (steepest ≥ greedy; greedy ≥ the mean of
//!   random matchings, statistically);
//! - Procrustes matches an independent SVD (nalgebra) and recovers a known rotation;
//! - bad inputs give typed errors, never panics;
//! - everything is deterministic for a seed, and a resumed optimizer continues identically.
//!
//! All randomness is seeded: data come from `ChaCha8Rng` streams whose seeds proptest draws from a
//! fixed `rng_seed`, and nothing is persisted.

use nalgebra::DMatrix;
use poeem_rotation::{
    GivensConfig, GivensOptimizer, PairSelection, Par, PlaneRotation, Rotation, RotationError,
    matching_weight, procrustes, procrustes_from_cross, select_pairs, skew_gradient,
    skew_gradient_from_batch,
};
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestCaseError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A proptest configuration with `cases` cases, a fixed seed and no failure files.
fn config(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    }
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `len` standard normal values.
fn gaussian(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

/// A row-major `dim × dim` skew-symmetric matrix with standard normal entries above the diagonal.
fn random_skew(rng: &mut ChaCha8Rng, dim: usize) -> Vec<f64> {
    let mut s = vec![0.0; dim * dim];
    for i in 0..dim {
        for j in i + 1..dim {
            let v: f64 = rng.sample(StandardNormal);
            s[i * dim + j] = v;
            s[j * dim + i] = -v;
        }
    }
    s
}

fn frobenius(v: &[f32]) -> f64 {
    v.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt()
}

/// `R` in f64, row-major.
fn to_f64(r: &Rotation) -> Vec<f64> {
    r.as_slice().iter().map(|&v| f64::from(v)).collect()
}

/// `Y = X R` in f64 for a row-major `n × dim` batch and a row-major `dim × dim` matrix.
fn times(x: &[f32], r: &[f64], dim: usize) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks_exact(dim).zip(y.chunks_exact_mut(dim)) {
        for (k, &xk) in xr.iter().enumerate() {
            let xk = f64::from(xk);
            for (o, &rk) in yr.iter_mut().zip(&r[k * dim..(k + 1) * dim]) {
                *o += xk * rk;
            }
        }
    }
    y
}

/// The distortion `f(R) = Σ_b ‖x_b R − z_b‖²`, computed in f64.
fn distortion_of(x: &[f32], z: &[f32], r: &[f64], dim: usize) -> f64 {
    times(x, r, dim)
        .iter()
        .zip(z)
        .map(|(&y, &z)| (y - f64::from(z)).powi(2))
        .sum()
}

fn distortion(x: &[f32], z: &[f32], r: &Rotation) -> f64 {
    distortion_of(x, z, &to_f64(r), r.dim())
}

/// Checks that `pairs` are ⌊dim/2⌋ disjoint in-range pairs `(i, j)` with `i < j`, and returns the
/// coordinates they leave out (one for odd `dim`, none for even).
#[track_caller]
fn uncovered(pairs: &[(usize, usize)], dim: usize) -> Vec<usize> {
    assert_eq!(pairs.len(), dim / 2, "a matching has ⌊d/2⌋ pairs");
    let mut seen = vec![false; dim];
    for &(i, j) in pairs {
        assert!(
            i < j && j < dim,
            "pair ({i}, {j}) is invalid for dimension {dim}"
        );
        assert!(!seen[i] && !seen[j], "pair ({i}, {j}) reuses a coordinate");
        seen[i] = true;
        seen[j] = true;
    }
    (0..dim).filter(|&k| !seen[k]).collect()
}

/// The exact maximum of `Σ S_ij²` over matchings of ⌊dim/2⌋ pairs, by dynamic programming over
/// subsets (small `dim` only).
fn brute_force_max_weight(skew: &[f64], dim: usize) -> f64 {
    fn best(
        mask: usize,
        may_skip: bool,
        dim: usize,
        skew: &[f64],
        memo: &mut [Option<f64>],
    ) -> f64 {
        if mask == (1 << dim) - 1 {
            return 0.0;
        }
        let key = mask * 2 + usize::from(may_skip);
        if let Some(v) = memo[key] {
            return v;
        }
        let i = (0..dim)
            .find(|&i| mask & (1 << i) == 0)
            .expect("a free coordinate");
        let mut value = f64::NEG_INFINITY;
        if may_skip {
            value = best(mask | (1 << i), false, dim, skew, memo);
        }
        for j in i + 1..dim {
            if mask & (1 << j) == 0 {
                let w = skew[i * dim + j].powi(2);
                value = value.max(w + best(mask | (1 << i) | (1 << j), may_skip, dim, skew, memo));
            }
        }
        memo[key] = Some(value);
        value
    }
    let mut memo = vec![None; (1 << dim) * 2];
    best(0, dim % 2 == 1, dim, skew, &mut memo)
}

fn selection() -> impl Strategy<Value = PairSelection> {
    proptest::sample::select(PairSelection::ALL.to_vec())
}

// ---------------------------------------------------------------------------------------------
// 1. Orthonormality under many Givens steps
// ---------------------------------------------------------------------------------------------

/// Random Givens steps at d = 256: a few fixed random skew matrices, random pair selection, and a
/// random learning rate in [−0.05, 0.05] per step, so that each plane turns by O(0.05) rad in a
/// random direction. Returns the optimizer's rotation and the worst orthogonality error seen at
/// the checkpoints `check(t)` (t = steps taken).
fn random_walk(
    seed: u64,
    steps: u64,
    reorthonormalize_every: u64,
    check: impl Fn(u64) -> bool,
) -> Result<(Rotation, f64), TestCaseError> {
    const DIM: usize = 256;
    const ETA: f32 = 0.05;
    let mut rng = rng(seed);
    let skews: Vec<Vec<f64>> = (0..8).map(|_| random_skew(&mut rng, DIM)).collect();
    let mut optimizer = GivensOptimizer::new(GivensConfig {
        learning_rate: ETA,
        max_angle: 0.2,
        selection: PairSelection::Random,
        reorthonormalize_every,
        seed,
    });
    let mut rotation = Rotation::random(DIM, seed);
    let mut worst = 0.0f64;
    for t in 0..steps {
        optimizer.set_learning_rate(ETA * rng.random_range(-1.0f32..=1.0));
        let skew = &skews[(t % skews.len() as u64) as usize];
        let step = optimizer
            .step_with_skew(&mut rotation, skew, Par::Seq)
            .unwrap();
        prop_assert_eq!(step.n_pairs, DIM / 2);
        prop_assert_eq!(
            step.reorthonormalized,
            reorthonormalize_every > 0 && (t + 1) % reorthonormalize_every == 0
        );
        if check(t + 1) {
            worst = worst.max(rotation.orthogonality_error());
        }
    }
    prop_assert_eq!(optimizer.steps(), steps);
    worst = worst.max(rotation.orthogonality_error());
    Ok((rotation, worst))
}

proptest! {
    #![proptest_config(config(2, 0x0127_0001))]

    /// 100,000 steps at d = 256 in f32 with the default re-orthonormalisation schedule: the error
    /// is measured just before every re-orthonormalisation (the worst point of each period) and
    /// at the end, and stays below 1e-4 (measured: about 4e-6).
    #[test]
    fn orthonormal_after_100k_givens_steps(seed in any::<u64>()) {
        let every = GivensConfig::default().reorthonormalize_every;
        prop_assert!(every > 0, "the default must re-orthonormalise");
        let (_, worst) = random_walk(seed, 100_000, every, |t| t % every == every - 1)?;
        prop_assert!(worst < 1e-4, "orthogonality error {worst:e} after 100k steps");
    }

    /// Without re-orthonormalisation the f32 rounding of each step accumulates; this documents the
    /// drift: after 10,000 steps at d = 256 it is still below 1e-3 (measured: about 1e-5, against
    /// 4e-6 after 1,000 steps; it grows with the number of steps, which is why the optimizer
    /// re-orthonormalises periodically).
    #[test]
    fn drift_without_reorthonormalization_is_small(seed in any::<u64>()) {
        let (_, drift) = random_walk(seed, 10_000, 0, |t| t % 2_500 == 0)?;
        prop_assert!(drift < 1e-3, "drift {drift:e} after 10k steps");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A small step never increases the distortion
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(96, 0x0127_0002))]

    /// With the codes `Z` fixed, `f(R) = ‖X‖² + ‖Z‖² − 2 tr(Rᵀ XᵀZ)`; turning one plane by θ
    /// changes it by `S_ij sin θ + 2 a (1 − cos θ)` with `|a| ≤ 2 ‖X‖_F ‖Z‖_F`. With
    /// `η = 0.1 / (‖X‖_F ‖Z‖_F)` every plane's change is at most `−0.79 η S_ij²`, so each step
    /// must not increase f beyond the f32 rounding of the new columns of `R`, whatever the
    /// selection.
    #[test]
    fn small_givens_step_never_increases_distortion(
        seed in any::<u64>(),
        dim in 2usize..=24,
        n in 1usize..=64,
        selection in selection(),
        steps in 1usize..=5,
    ) {
        let mut rng = rng(seed);
        let x = gaussian(&mut rng, n * dim);
        let z = gaussian(&mut rng, n * dim);
        let (nx, nz) = (frobenius(&x), frobenius(&z));
        let eta = 0.1 / (nx * nz);
        // Bound on |⟨∂f/∂R, δR⟩| for a rounding δR of R (‖δR‖_F ≤ ε √d).
        let slack = 4.0 * f64::from(f32::EPSILON) * (dim as f64).sqrt() * nx * (nx + nz);
        let mut rotation = Rotation::random(dim, seed ^ 1);
        let mut optimizer = GivensOptimizer::new(GivensConfig {
            learning_rate: eta as f32,
            selection,
            reorthonormalize_every: 0,
            seed,
            ..GivensConfig::default()
        });
        let initial = distortion(&x, &z, &rotation);
        let mut before = initial;
        let mut predicted = 0.0;
        for _ in 0..steps {
            let step = optimizer.step_distortion(&mut rotation, &x, &z, Par::Seq)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let after = distortion(&x, &z, &rotation);
            prop_assert!(
                after <= before + slack,
                "{selection}: f went from {before} to {after} (slack {slack:e})"
            );
            predicted += eta * step.matching_weight;
            before = after;
        }
        if predicted > 10.0 * slack * steps as f64 {
            prop_assert!(before < initial, "{selection}: no decrease over {steps} steps");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Pair selection: steepest ≥ greedy ≥ random (in mean)
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(48, 0x0127_0003))]

    /// On random Gaussian skew matrices with d ≥ 16:
    ///
    /// - steepest (maximum weight) ≥ greedy and ≥ every random matching: a theorem;
    /// - greedy ≥ steepest / 2: the ½-approximation theorem of the greedy matching;
    /// - greedy ≥ the MEAN of 64 random matchings: NOT a theorem per instance (see
    ///   `random_matching_can_beat_greedy`, where even the mean of random matchings beats greedy),
    ///   but it holds with overwhelming probability on Gaussian instances of this size, and the
    ///   fixed proptest seed makes this test deterministic. The weaker, statistical statement is
    ///   deliberate.
    #[test]
    fn steepest_beats_greedy_beats_random_on_average(
        seed in any::<u64>(),
        dim in 16usize..=48,
    ) {
        let mut rng = rng(seed);
        let skew = random_skew(&mut rng, dim);
        let greedy_pairs = select_pairs(&skew, dim, PairSelection::Greedy, &mut rng);
        let steepest_pairs = select_pairs(&skew, dim, PairSelection::Steepest, &mut rng);
        uncovered(&greedy_pairs, dim);
        uncovered(&steepest_pairs, dim);
        let greedy = matching_weight(&skew, dim, &greedy_pairs);
        let steepest = matching_weight(&skew, dim, &steepest_pairs);
        // Steepest is exact up to the blossom's tightness tolerance; sums differ by rounding.
        let tolerance = 1e-9 * steepest.max(1.0);
        prop_assert!(steepest >= greedy - tolerance, "steepest {steepest} < greedy {greedy}");
        prop_assert!(2.0 * greedy >= steepest - tolerance, "greedy {greedy} < steepest/2");
        const DRAWS: usize = 64;
        let mut sum = 0.0;
        for _ in 0..DRAWS {
            let pairs = select_pairs(&skew, dim, PairSelection::Random, &mut rng);
            uncovered(&pairs, dim);
            let w = matching_weight(&skew, dim, &pairs);
            prop_assert!(steepest >= w - tolerance, "steepest {steepest} < a random draw {w}");
            sum += w;
        }
        let mean = sum / DRAWS as f64;
        prop_assert!(greedy >= mean, "greedy {greedy} < mean of random {mean}");
    }
}

/// Greedy is only a ½-approximation: on this instance one random matching, and even the mean over
/// random matchings, beats it. This is why the property above compares greedy with the mean of
/// random matchings on Gaussian instances, not with every draw.
#[test]
fn random_matching_can_beat_greedy() {
    // Weights S_ij²: (0,1) → 9, (2,3) → 0, every other pair → 6.25. Greedy takes (0,1) first and
    // is left with (2,3): 9. Both other perfect matchings weigh 12.5.
    let mut skew = vec![0.0; 16];
    for (i, j, v) in [
        (0, 1, 3.0),
        (2, 3, 0.0),
        (0, 2, 2.5),
        (1, 3, 2.5),
        (0, 3, 2.5),
        (1, 2, 2.5),
    ] {
        skew[i * 4 + j] = v;
        skew[j * 4 + i] = -v;
    }
    let mut rng = rng(4);
    let greedy_pairs = select_pairs(&skew, 4, PairSelection::Greedy, &mut rng);
    assert_eq!(greedy_pairs, vec![(0, 1), (2, 3)]);
    let greedy = matching_weight(&skew, 4, &greedy_pairs);
    assert_eq!(greedy, 9.0);
    assert_eq!(matching_weight(&skew, 4, &[(0, 2), (1, 3)]), 12.5);

    let draws: Vec<f64> = (0..300)
        .map(|_| {
            let pairs = select_pairs(&skew, 4, PairSelection::Random, &mut rng);
            uncovered(&pairs, 4);
            matching_weight(&skew, 4, &pairs)
        })
        .collect();
    assert!(
        draws.iter().any(|&w| w > greedy),
        "some random matching beats greedy"
    );
    let mean = draws.iter().sum::<f64>() / draws.len() as f64;
    // Each of the three matchings is drawn with probability 1/3: the mean is ≈ 11.33.
    assert!(
        mean > greedy,
        "mean of random matchings {mean} ≤ greedy {greedy}"
    );

    // The steepest selection finds one of the two heavier matchings.
    let steepest = select_pairs(&skew, 4, PairSelection::Steepest, &mut rng);
    assert_eq!(matching_weight(&skew, 4, &steepest), 12.5);
}

/// A skew matrix of one of four kinds: Gaussian; small integers in −3..=3 (many ties and zeros);
/// magnitudes spread over many orders (log-normal); mostly zero with a few Gaussian entries.
fn skew_of_kind(rng: &mut ChaCha8Rng, dim: usize, kind: u8) -> Vec<f64> {
    let mut s = random_skew(rng, dim);
    for i in 0..dim {
        for j in i + 1..dim {
            let v = match kind {
                0 => s[i * dim + j],
                1 => f64::from(rng.random_range(-3i32..=3)),
                2 => s[i * dim + j].signum() * (4.0 * rng.sample::<f64, _>(StandardNormal)).exp(),
                _ => {
                    if rng.random_range(0..4) == 0 {
                        s[i * dim + j]
                    } else {
                        0.0
                    }
                }
            };
            s[i * dim + j] = v;
            s[j * dim + i] = -v;
        }
    }
    s
}

proptest! {
    #![proptest_config(config(512, 0x0127_0004))]

    /// `PairSelection::Steepest` is the exact maximum-weight matching of ⌊d/2⌋ pairs, checked
    /// against dynamic programming over subsets, for odd and even d, with ties, zeros and weights
    /// spread over many orders of magnitude.
    #[test]
    fn steepest_is_the_maximum_weight_matching(
        seed in any::<u64>(),
        dim in 1usize..=14,
        kind in 0u8..4,
    ) {
        let mut rng = rng(seed);
        let skew = skew_of_kind(&mut rng, dim, kind);
        let pairs = select_pairs(&skew, dim, PairSelection::Steepest, &mut rng);
        uncovered(&pairs, dim);
        let got = matching_weight(&skew, dim, &pairs);
        let best = brute_force_max_weight(&skew, dim);
        let largest = skew.iter().fold(0.0f64, |m, v| m.max(v * v));
        prop_assert!(
            (got - best).abs() <= 1e-9 * best.max(largest),
            "d = {dim}, kind {kind}: steepest weighs {got}, the maximum is {best}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Procrustes against an independent SVD
// ---------------------------------------------------------------------------------------------

/// The Procrustes solution `U Vᵀ` of `M = XᵀZ` in f64 by nalgebra, row-major, with the singular
/// values of M.
fn nalgebra_procrustes(x: &[f32], z: &[f32], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() / dim;
    let xm = DMatrix::<f64>::from_fn(n, dim, |r, c| f64::from(x[r * dim + c]));
    let zm = DMatrix::<f64>::from_fn(n, dim, |r, c| f64::from(z[r * dim + c]));
    let svd = (xm.transpose() * zm).svd(true, true);
    let r = svd.u.as_ref().expect("U") * svd.v_t.as_ref().expect("Vᵀ");
    let row_major = (0..dim * dim).map(|k| r[(k / dim, k % dim)]).collect();
    (row_major, svd.singular_values.iter().copied().collect())
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(config(96, 0x0127_0005))]

    /// On arbitrary data (any d, odd included, and n < d, where the minimiser is not unique) the
    /// objective `‖X R − Z‖²` reached equals nalgebra's optimum; where `M = XᵀZ` is well
    /// conditioned (so that `U Vᵀ` is unique and stable) the matrices agree entrywise.
    #[test]
    fn procrustes_matches_nalgebra(
        seed in any::<u64>(),
        dim in 1usize..=17,
        n in 1usize..=48,
    ) {
        let mut rng = rng(seed);
        let x = gaussian(&mut rng, n * dim);
        let z = gaussian(&mut rng, n * dim);
        let rotation = procrustes(&x, &z, dim, Par::Seq)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(rotation.dim(), dim);
        prop_assert!(rotation.orthogonality_error() < 1e-5);
        let (oracle, sigma) = nalgebra_procrustes(&x, &z, dim);
        let ours = distortion(&x, &z, &rotation);
        let best = distortion_of(&x, &z, &oracle, dim);
        let scale = frobenius(&x).powi(2) + frobenius(&z).powi(2);
        prop_assert!(
            (ours - best).abs() <= 1e-5 * scale,
            "objective {ours} against nalgebra's optimum {best}"
        );
        let sigma_max = sigma.iter().copied().fold(0.0, f64::max);
        let sigma_min = sigma.iter().copied().fold(f64::INFINITY, f64::min);
        if sigma_min >= 1e-2 * sigma_max {
            let diff = max_abs_diff(&to_f64(&rotation), &oracle);
            prop_assert!(diff < 1e-3, "R differs from nalgebra's U Vᵀ by {diff:e}");
        }
    }

    /// `Z = X R_true (+ noise)`: the cross-covariance is well conditioned, the solution unique,
    /// and it must agree with nalgebra entrywise; without noise it is `R_true` itself.
    #[test]
    fn procrustes_recovers_a_known_rotation(
        seed in any::<u64>(),
        dim in 1usize..=33,
        extra_rows in 2usize..=40,
        noise in prop_oneof![Just(0.0f32), 0.01f32..0.5],
    ) {
        let n = 2 * dim + extra_rows;
        let mut rng = rng(seed);
        let truth = Rotation::random(dim, seed);
        let x = gaussian(&mut rng, n * dim);
        let z: Vec<f32> = times(&x, &to_f64(&truth), dim)
            .iter()
            .map(|&v| v as f32 + noise * rng.sample::<f32, _>(StandardNormal))
            .collect();
        let rotation = procrustes(&x, &z, dim, Par::Seq)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (oracle, _) = nalgebra_procrustes(&x, &z, dim);
        let diff = max_abs_diff(&to_f64(&rotation), &oracle);
        prop_assert!(diff < 1e-4, "R differs from nalgebra's U Vᵀ by {diff:e}");
        if noise == 0.0 {
            let diff = max_abs_diff(&to_f64(&rotation), &to_f64(&truth));
            prop_assert!(diff < 1e-4, "R differs from the true rotation by {diff:e}");
        }
    }
}

/// `procrustes_from_cross` on `M = XᵀX R_true` (any symmetric positive definite `XᵀX`) returns
/// `R_true`, and `procrustes` with the parallel GEMM gives the same rotation as the sequential one.
#[test]
fn procrustes_from_cross_recovers_the_polar_factor() {
    let dim = 7;
    let truth = Rotation::random(dim, 11);
    let mut rng = rng(12);
    let x = gaussian(&mut rng, 30 * dim);
    let xtx = DMatrix::<f64>::from_fn(30, dim, |r, c| f64::from(x[r * dim + c]));
    let xtx = xtx.transpose() * &xtx;
    let r = to_f64(&truth);
    let cross = faer::Mat::<f64>::from_fn(dim, dim, |a, b| {
        (0..dim).map(|k| xtx[(a, k)] * r[k * dim + b]).sum()
    });
    let got = procrustes_from_cross(cross.as_ref()).unwrap();
    assert!(max_abs_diff(&to_f64(&got), &r) < 1e-6);

    let z: Vec<f32> = times(&x, &r, dim).iter().map(|&v| v as f32).collect();
    let seq = procrustes(&x, &z, dim, Par::Seq).unwrap();
    let par = procrustes(&x, &z, dim, Par::rayon(2)).unwrap();
    assert!(max_abs_diff(&to_f64(&seq), &to_f64(&par)) < 1e-6);
}

// ---------------------------------------------------------------------------------------------
// 5. Errors, never panics
// ---------------------------------------------------------------------------------------------

#[test]
fn procrustes_rejects_bad_inputs_with_typed_errors() {
    let x = vec![1.0f32, 0.0, 0.0, 1.0, 0.5, 0.5];
    let z = x.clone();
    assert!(procrustes(&x, &z, 2, Par::Seq).is_ok());

    let mut nan = x.clone();
    nan[3] = f32::NAN;
    assert_eq!(
        procrustes(&nan, &z, 2, Par::Seq),
        Err(RotationError::NonFinite {
            what: "x",
            index: 3
        })
    );
    let mut inf = z.clone();
    inf[4] = f32::NEG_INFINITY;
    assert_eq!(
        procrustes(&x, &inf, 2, Par::Seq),
        Err(RotationError::NonFinite {
            what: "z",
            index: 4
        })
    );
    assert_eq!(
        procrustes(&x, &z[..4], 2, Par::Seq),
        Err(RotationError::DimensionMismatch {
            what: "z",
            expected: 6,
            got: 4
        })
    );
    assert!(matches!(
        procrustes(&x[..5], &z[..5], 2, Par::Seq),
        Err(RotationError::RaggedRows {
            what: "x",
            len: 5,
            dim: 2
        })
    ));
    assert_eq!(
        procrustes(&x, &z, 0, Par::Seq),
        Err(RotationError::ZeroDimension)
    );
    assert_eq!(
        procrustes(&[], &[], 3, Par::Seq),
        Err(RotationError::Empty { what: "x" })
    );
    assert_eq!(
        procrustes(&[], &[], 0, Par::Seq),
        Err(RotationError::ZeroDimension)
    );
    // Finite inputs whose cross-covariance overflows f32.
    let huge = vec![f32::MAX; 4];
    assert!(matches!(
        procrustes(&huge, &huge, 2, Par::Seq),
        Err(RotationError::NonFinite {
            what: "cross-covariance",
            ..
        })
    ));

    let empty = faer::Mat::<f64>::zeros(0, 0);
    assert_eq!(
        procrustes_from_cross(empty.as_ref()),
        Err(RotationError::ZeroDimension)
    );
    let wide = faer::Mat::<f64>::zeros(2, 3);
    assert!(matches!(
        procrustes_from_cross(wide.as_ref()),
        Err(RotationError::DimensionMismatch {
            expected: 2,
            got: 3,
            ..
        })
    ));
    let mut nan = faer::Mat::<f64>::identity(3, 3);
    nan[(1, 2)] = f64::NAN;
    assert_eq!(
        procrustes_from_cross(nan.as_ref()),
        Err(RotationError::NonFinite {
            what: "cross-covariance",
            index: 5
        })
    );
}

#[test]
fn gradient_inputs_are_checked() {
    let mut rotation = Rotation::random(3, 1);
    let mut optimizer = GivensOptimizer::new(GivensConfig::default());
    let before = rotation.clone();

    assert!(matches!(
        skew_gradient(&rotation, &[0.0; 8], Par::Seq),
        Err(RotationError::DimensionMismatch {
            what: "gradient",
            expected: 9,
            got: 8
        })
    ));
    let mut g = vec![0.0f32; 9];
    g[7] = f32::INFINITY;
    assert_eq!(
        optimizer.step_with_gradient(&mut rotation, &g, Par::Seq),
        Err(RotationError::NonFinite {
            what: "gradient",
            index: 7
        })
    );
    assert!(matches!(
        skew_gradient_from_batch(&[0.0; 6], &[0.0; 3], 3, Par::Seq),
        Err(RotationError::DimensionMismatch { what: "dy", .. })
    ));
    assert!(matches!(
        skew_gradient_from_batch(&[0.0; 5], &[0.0; 5], 3, Par::Seq),
        Err(RotationError::RaggedRows { what: "y", .. })
    ));
    assert_eq!(
        optimizer.step_with_batch_gradient(&mut rotation, &[0.0; 3], &[f32::NAN; 3], Par::Seq),
        Err(RotationError::NonFinite {
            what: "dy",
            index: 0
        })
    );
    assert_eq!(
        optimizer.step_distortion(&mut rotation, &[], &[], Par::Seq),
        Err(RotationError::Empty { what: "x" })
    );
    assert!(matches!(
        optimizer.step_distortion(&mut rotation, &[0.0; 6], &[0.0; 3], Par::Seq),
        Err(RotationError::DimensionMismatch { what: "z", .. })
    ));
    assert!(matches!(
        optimizer.step_distortion(&mut rotation, &[f32::NAN; 3], &[0.0; 3], Par::Seq),
        Err(RotationError::NonFinite { .. })
    ));
    let mut nan_skew = vec![0.0f64; 9];
    nan_skew[5] = f64::NAN;
    assert!(matches!(
        optimizer.step_with_skew(&mut rotation, &nan_skew, Par::Seq),
        Err(RotationError::NonFinite {
            what: "skew matrix",
            index: 5
        })
    ));
    assert!(matches!(
        optimizer.step_with_skew(&mut rotation, &[0.0; 4], Par::Seq),
        Err(RotationError::DimensionMismatch {
            what: "skew matrix",
            expected: 9,
            got: 4
        })
    ));
    // A failed step changes nothing.
    assert_eq!(rotation, before);
    assert_eq!(optimizer.steps(), 0);
}

/// Mostly ordinary values, with arbitrary bit patterns, NaN, infinity and `f32::MAX` mixed in.
fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -10.0f32..10.0,
        1 => any::<f32>(),
        1 => prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::MAX), Just(0.0)],
    ]
}

proptest! {
    #![proptest_config(config(256, 0x0127_0006))]

    /// Any values, finite or not, any lengths and dimensions: `procrustes` returns a typed error
    /// or an orthonormal matrix, and never panics.
    #[test]
    fn procrustes_never_panics(
        dim in 0usize..=6,
        x in proptest::collection::vec(any_f32(), 0..=30),
        z in proptest::collection::vec(any_f32(), 0..=30),
    ) {
        match procrustes(&x, &z, dim, Par::Seq) {
            Ok(rotation) => {
                prop_assert_eq!(rotation.dim(), dim);
                prop_assert!(rotation.orthogonality_error() < 1e-4);
            }
            Err(
                RotationError::ZeroDimension
                | RotationError::DimensionMismatch { .. }
                | RotationError::RaggedRows { .. }
                | RotationError::NonFinite { .. }
                | RotationError::Empty { .. }
                | RotationError::SvdFailed { .. },
            ) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Gradient consistency and the first-order prediction
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(64, 0x0127_0007))]

    /// `skew_gradient(R, G)` with `G = Xᵀ dY` equals `skew_gradient_from_batch(X R, dY)` (both are
    /// `Rᵀ G − Gᵀ R = Yᵀ dY − dYᵀ Y`), and both match an f64 oracle; both are exactly
    /// skew-symmetric.
    #[test]
    fn skew_gradient_is_consistent_with_batch_form(
        seed in any::<u64>(),
        dim in 1usize..=20,
        n in 1usize..=40,
    ) {
        let mut rng = rng(seed);
        let rotation = Rotation::random(dim, seed);
        let x = gaussian(&mut rng, n * dim);
        let dy = gaussian(&mut rng, n * dim);
        let mut y = vec![0.0f32; n * dim];
        rotation.apply(&x, &mut y, Par::Seq);
        // G = Xᵀ dY in f64, rounded to f32 for the API.
        let mut g64 = vec![0.0f64; dim * dim];
        for (xr, dr) in x.chunks_exact(dim).zip(dy.chunks_exact(dim)) {
            for a in 0..dim {
                for b in 0..dim {
                    g64[a * dim + b] += f64::from(xr[a]) * f64::from(dr[b]);
                }
            }
        }
        let g: Vec<f32> = g64.iter().map(|&v| v as f32).collect();
        let from_g = skew_gradient(&rotation, &g, Par::Seq)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let from_batch = skew_gradient_from_batch(&y, &dy, dim, Par::Seq)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Oracle S = Rᵀ G − Gᵀ R in f64.
        let r = to_f64(&rotation);
        let rtg: Vec<f64> = (0..dim * dim)
            .map(|k| (0..dim).map(|m| r[m * dim + k / dim] * g64[m * dim + k % dim]).sum())
            .collect();
        let oracle: Vec<f64> = (0..dim * dim)
            .map(|k| rtg[k] - rtg[(k % dim) * dim + k / dim])
            .collect();
        let scale = 1.0 + oracle.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let tolerance = 1e-5 * scale * (n as f64).sqrt();
        prop_assert!(max_abs_diff(&from_g, &oracle) < tolerance);
        prop_assert!(max_abs_diff(&from_batch, &oracle) < tolerance);
        prop_assert!(max_abs_diff(&from_g, &from_batch) < tolerance);
        for s in [&from_g, &from_batch] {
            for i in 0..dim {
                prop_assert_eq!(s[i * dim + i], 0.0);
                for j in 0..dim {
                    prop_assert_eq!(s[i * dim + j], -s[j * dim + i]);
                }
            }
        }
    }

    /// `S_ij` is the derivative of f along the plane (i, j) turned by `rotate_planes`:
    /// `(f(R G(i,j,h)) − f(R G(i,j,−h))) / 2h ≈ S_ij` (central finite difference).
    #[test]
    fn skew_gradient_is_the_directional_derivative(
        seed in any::<u64>(),
        dim in 2usize..=12,
        n in 1usize..=32,
    ) {
        let mut rng = rng(seed);
        let rotation = Rotation::random(dim, seed);
        let x = gaussian(&mut rng, n * dim);
        let z = gaussian(&mut rng, n * dim);
        let mut y = vec![0.0f32; n * dim];
        rotation.apply(&x, &mut y, Par::Seq);
        let dy: Vec<f32> = y.iter().zip(&z).map(|(a, b)| 2.0 * (a - b)).collect();
        let skew = skew_gradient_from_batch(&y, &dy, dim, Par::Seq)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let i = rng.random_range(0..dim);
        let j = (i + rng.random_range(1..dim)) % dim;
        let h = 1e-2f32;
        let turned = |angle: f32| {
            let mut r = rotation.clone();
            r.rotate_planes(&[PlaneRotation { i, j, angle }], Par::Seq);
            distortion(&x, &z, &r)
        };
        let derivative = (turned(h) - turned(-h)) / (2.0 * f64::from(h));
        let s = skew[i * dim + j];
        let scale = frobenius(&x) * (frobenius(&x) + frobenius(&z));
        prop_assert!(
            (derivative - s).abs() <= 1e-4 * scale,
            "plane ({i}, {j}): finite difference {derivative}, S_ij = {s}"
        );
    }

    /// For a tiny step the actual decrease of f is `η · Σ_{pairs} S_ij²` (the step's reported
    /// matching weight) to within 5 %, for every selection.
    #[test]
    fn first_order_prediction_of_the_decrease(
        seed in any::<u64>(),
        dim in 2usize..=24,
        n in 8usize..=64,
        selection in selection(),
    ) {
        let mut rng = rng(seed);
        let x = gaussian(&mut rng, n * dim);
        let z = gaussian(&mut rng, n * dim);
        let eta = (1e-2 / (frobenius(&x) * frobenius(&z))) as f32;
        let mut rotation = Rotation::random(dim, seed ^ 2);
        let mut optimizer = GivensOptimizer::new(GivensConfig {
            learning_rate: eta,
            selection,
            reorthonormalize_every: 0,
            seed,
            ..GivensConfig::default()
        });
        let before = distortion(&x, &z, &rotation);
        let step = optimizer.step_distortion(&mut rotation, &x, &z, Par::Seq)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let decrease = before - distortion(&x, &z, &rotation);
        let predicted = f64::from(eta) * step.matching_weight;
        prop_assert!(predicted > 0.0);
        let relative = (decrease - predicted).abs() / predicted;
        prop_assert!(
            relative < 0.05,
            "{selection}: decrease {decrease:e}, predicted {predicted:e} ({relative:.3})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Odd dimensions
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(64, 0x0127_0008))]

    /// With odd d every selection pairs (d−1)/2 disjoint planes and leaves exactly one coordinate
    /// out; a Givens step changes every column of R except that coordinate's, which stays
    /// bitwise identical. With even d every column turns.
    #[test]
    fn odd_dimension_leaves_one_column_unchanged(
        seed in any::<u64>(),
        dim in 2usize..=33,
        selection in selection(),
    ) {
        let mut rng = rng(seed);
        let skew = random_skew(&mut rng, dim);
        let pairs = select_pairs(&skew, dim, selection, &mut rng);
        let left_out = uncovered(&pairs, dim);
        prop_assert_eq!(left_out.len(), dim % 2);

        let mut rotation = Rotation::random(dim, seed);
        let before = rotation.clone();
        let mut optimizer = GivensOptimizer::new(GivensConfig {
            learning_rate: 0.05,
            selection,
            reorthonormalize_every: 0,
            seed,
            ..GivensConfig::default()
        });
        let step = optimizer.step_with_skew(&mut rotation, &skew, Par::Seq).unwrap();
        prop_assert_eq!(step.n_pairs, dim / 2);
        prop_assert!(!step.reorthonormalized);
        prop_assert!(step.largest_angle > 0.0 && step.largest_angle <= 0.1);
        let unchanged: Vec<usize> = (0..dim)
            .filter(|&c| (0..dim).all(|r| rotation.as_slice()[r * dim + c] == before.as_slice()[r * dim + c]))
            .collect();
        prop_assert_eq!(unchanged.len(), dim % 2, "unchanged columns {:?}", unchanged);
        if selection != PairSelection::Random {
            // Deterministic selections: the optimizer left out the same coordinate.
            prop_assert_eq!(&unchanged, &left_out);
            prop_assert_eq!(step.matching_weight, matching_weight(&skew, dim, &pairs));
        }
    }
}

#[test]
fn dimension_one_has_no_pairs() {
    let skew = vec![0.0];
    for selection in PairSelection::ALL {
        assert!(select_pairs(&skew, 1, selection, &mut rng(0)).is_empty());
        let mut rotation = Rotation::identity(1);
        let step = GivensOptimizer::new(GivensConfig {
            selection,
            ..GivensConfig::default()
        })
        .step_with_skew(&mut rotation, &skew, Par::Seq)
        .unwrap();
        assert_eq!(step.n_pairs, 0);
        assert_eq!(step.matching_weight, 0.0);
        assert!(rotation.is_identity());
    }
}

/// Angles are clipped to `max_angle` whatever the learning rate, in both directions.
#[test]
fn angles_are_clipped() {
    let dim = 10;
    let skew = random_skew(&mut rng(5), dim);
    for learning_rate in [1e3f32, -1e3] {
        let mut rotation = Rotation::random(dim, 5);
        let step = GivensOptimizer::new(GivensConfig {
            learning_rate,
            max_angle: 0.07,
            reorthonormalize_every: 0,
            ..GivensConfig::default()
        })
        .step_with_skew(&mut rotation, &skew, Par::Seq)
        .unwrap();
        assert_eq!(step.largest_angle, 0.07);
        assert!(rotation.orthogonality_error() < 1e-6);
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Determinism and resumption
// ---------------------------------------------------------------------------------------------

/// Runs `steps` distortion steps on fixed data with `optimizer`, starting from `rotation`.
fn run_steps(
    optimizer: &mut GivensOptimizer,
    rotation: &mut Rotation,
    data: &[(Vec<f32>, Vec<f32>)],
    range: std::ops::Range<usize>,
    par: Par,
) {
    for t in range {
        let (x, z) = &data[t % data.len()];
        optimizer.step_distortion(rotation, x, z, par).unwrap();
    }
}

fn batches(seed: u64, dim: usize, n: usize, count: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut rng = rng(seed);
    (0..count)
        .map(|_| (gaussian(&mut rng, n * dim), gaussian(&mut rng, n * dim)))
        .collect()
}

#[test]
fn same_seed_gives_the_same_rotation() {
    let (dim, steps) = (13, 40);
    let data = batches(21, dim, 24, 5);
    for selection in PairSelection::ALL {
        let config = GivensConfig {
            learning_rate: 1e-3,
            selection,
            reorthonormalize_every: 16,
            seed: 99,
            ..GivensConfig::default()
        };
        let run = |config: GivensConfig, par: Par| {
            let mut rotation = Rotation::random(dim, 3);
            let mut optimizer = GivensOptimizer::new(config);
            run_steps(&mut optimizer, &mut rotation, &data, 0..steps, par);
            rotation
        };
        let first = run(config, Par::Seq);
        assert_eq!(first, run(config, Par::Seq), "{selection}");
        assert_eq!(
            first,
            run(config, Par::rayon(2)),
            "{selection}: thread count"
        );
        assert!(first.orthogonality_error() < 1e-5);
        if selection == PairSelection::Random {
            let other = GivensConfig {
                seed: 100,
                ..config
            };
            assert_ne!(first, run(other, Par::Seq), "the seed must matter");
        }
    }
}

#[test]
fn resumed_optimizer_continues_identically() {
    let (dim, steps, stop) = (12, 50, 23);
    let data = batches(31, dim, 16, 7);
    for selection in PairSelection::ALL {
        let config = GivensConfig {
            learning_rate: 2e-3,
            selection,
            reorthonormalize_every: 10,
            seed: 7,
            ..GivensConfig::default()
        };
        let mut straight = Rotation::random(dim, 8);
        let mut optimizer = GivensOptimizer::new(config);
        run_steps(&mut optimizer, &mut straight, &data, 0..steps, Par::Seq);
        assert_eq!(optimizer.steps(), steps as u64);

        let mut stopped = Rotation::random(dim, 8);
        // The first optimizer is thrown away after `stop` steps: a checkpoint keeps only R and the
        // step count.
        let mut first_half = GivensOptimizer::new(config);
        run_steps(&mut first_half, &mut stopped, &data, 0..stop, Par::Seq);
        assert_eq!(first_half.steps(), stop as u64);
        let mut restarted = stopped.clone();
        let mut resumed = GivensOptimizer::resume(config, stop as u64);
        assert_eq!(resumed.steps(), stop as u64);
        run_steps(&mut resumed, &mut stopped, &data, stop..steps, Par::Seq);
        assert_eq!(resumed.steps(), steps as u64);
        assert_eq!(stopped, straight, "{selection}: resumed run diverged");

        if selection == PairSelection::Random {
            // Restarting the step count instead replays the first steps' pair choices.
            let mut fresh = GivensOptimizer::new(config);
            run_steps(&mut fresh, &mut restarted, &data, stop..steps, Par::Seq);
            assert_ne!(restarted, straight);
        }
    }
}

/// Results do not depend on the thread count, also at sizes where the GEMMs may run in parallel.
#[test]
fn thread_count_does_not_change_the_result() {
    let (dim, n) = (96, 2048);
    let data = batches(41, dim, n, 2);
    for selection in PairSelection::ALL {
        let config = GivensConfig {
            learning_rate: 1e-5,
            selection,
            reorthonormalize_every: 3,
            seed: 5,
            ..GivensConfig::default()
        };
        let run = |par: Par| {
            let mut rotation = Rotation::random(dim, 6);
            let mut optimizer = GivensOptimizer::new(config);
            run_steps(&mut optimizer, &mut rotation, &data, 0..4, par);
            rotation
        };
        assert_eq!(run(Par::Seq), run(Par::rayon(2)), "{selection}");
    }
    let (x, z) = &data[0];
    assert_eq!(
        procrustes(x, z, dim, Par::Seq).unwrap(),
        procrustes(x, z, dim, Par::rayon(2)).unwrap()
    );
}

#[test]
fn exact_construction_keeps_the_bits_and_plain_construction_cleans_them() {
    let mut rotation = Rotation::random(24, 5);
    let mut optimizer = GivensOptimizer::new(GivensConfig {
        reorthonormalize_every: 0,
        ..GivensConfig::default()
    });
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for _ in 0..200 {
        let s: Vec<f64> = (0..24 * 24).map(|_| rng.random_range(-1.0..1.0)).collect();
        let skew: Vec<f64> = (0..24 * 24)
            .map(|k| s[k] - s[(k % 24) * 24 + k / 24])
            .collect();
        optimizer
            .step_with_skew(&mut rotation, &skew, Par::Seq)
            .unwrap();
    }
    let values = rotation.as_slice().to_vec();
    let exact = Rotation::from_row_major_exact(24, values.clone()).unwrap();
    assert_eq!(exact.as_slice(), &values[..], "bits kept");
    let cleaned = Rotation::from_row_major(24, values.clone()).unwrap();
    assert_ne!(cleaned.as_slice(), &values[..], "drift removed by QR");
    assert!(cleaned.orthogonality_error() <= exact.orthogonality_error());
    let mut bad = values;
    bad[0] += 0.1;
    assert!(Rotation::from_row_major_exact(24, bad).is_err());
}
