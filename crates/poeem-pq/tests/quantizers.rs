//! Behaviour of the quantizers: k-means, the coarse quantizer, the product quantizer and its lookup
//! tables, the IVF-PQ codec, OPQ, typed errors and progress reporting.
//!
//! Every random choice is seeded (data from `ChaCha8Rng`, proptest with a fixed seed and no
//! failure files), so a run is reproducible and touches neither the network nor the disk.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use poeem_pq::{
    Centroids, CoarseQuantizer, Code, IvfPqCodec, IvfPqConfig, KMeans, KMeansConfig, KMeansInit,
    KMeansSettings, OpqConfig, OpqInit, OpqObjective, Par, PqConfig, PqError, PqTraining,
    ProductQuantizer, Progress, Stage, mean_squared_norm, train_opq,
};
use poeem_rotation::Rotation;
use proptest::collection::vec as pvec;
use proptest::prelude::{ProptestConfig, any, prop_assert, prop_assert_eq, proptest};
use proptest::test_runner::{RngSeed, TestCaseError, TestRunner};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A proptest configuration with `cases` cases, a fixed seed and no failure persistence.
fn prop_config(cases: u32, seed: u64) -> ProptestConfig {
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

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `n × dim` i.i.d. normal values times `scale`.
fn gaussian(n: usize, dim: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n * dim)
        .map(|_| (normal(&mut r) * scale) as f32)
        .collect()
}

/// `n × dim` points around `n_centers` centres drawn with standard deviation `center_scale`, each
/// point at standard deviation `spread` from its centre.
fn clustered(
    n: usize,
    dim: usize,
    n_centers: usize,
    center_scale: f64,
    spread: f64,
    seed: u64,
) -> Vec<f32> {
    let mut r = rng(seed);
    let centers: Vec<f64> = (0..n_centers * dim)
        .map(|_| normal(&mut r) * center_scale)
        .collect();
    let mut data = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = r.random_range(0..n_centers);
        for j in 0..dim {
            data.push((centers[c * dim + j] + normal(&mut r) * spread) as f32);
        }
    }
    data
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

fn sum_sq_norms(data: &[f32]) -> f64 {
    data.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}

/// Exact inertia of `data` against `centroids` (nearest centroid by brute force, in f64).
fn brute_inertia(data: &[f32], centroids: &Centroids) -> f64 {
    let dim = centroids.dim();
    data.chunks_exact(dim)
        .map(|x| {
            (0..centroids.len())
                .map(|k| sq_dist(x, centroids.get(k)))
                .fold(f64::INFINITY, f64::min)
        })
        .sum()
}

/// The bit patterns of a float slice, for bit-identical comparisons.
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn settings(init: KMeansInit, max_iter: usize, per_centroid: Option<usize>) -> KMeansSettings {
    KMeansSettings {
        max_iter,
        tolerance: 1e-4,
        init,
        max_points_per_centroid: per_centroid,
    }
}

fn kmeans(data: &[f32], dim: usize, k: usize, settings: KMeansSettings, seed: u64) -> KMeans {
    let config = KMeansConfig {
        n_clusters: k,
        settings,
        seed,
    };
    KMeans::train(data, dim, &config, Par::Seq).expect("k-means trains")
}

fn pq_train(
    data: &[f32],
    dim: usize,
    n_subspaces: usize,
    n_bits: u32,
    seed: u64,
) -> ProductQuantizer {
    let config = PqConfig {
        n_subspaces,
        n_bits,
        kmeans: settings(KMeansInit::KMeansPlusPlus, 10, Some(256)),
        seed,
    };
    ProductQuantizer::train(data, dim, &config, Par::Seq, &mut |_| {}).expect("PQ trains")
}

fn ivfpq_config(n_lists: usize, n_subspaces: usize, n_bits: u32) -> IvfPqConfig {
    IvfPqConfig {
        kmeans: settings(KMeansInit::KMeansPlusPlus, 15, Some(256)),
        seed: 7,
        ..IvfPqConfig::new(n_lists, n_subspaces, n_bits)
    }
}

fn ivfpq_train(data: &[f32], dim: usize, config: &IvfPqConfig) -> IvfPqCodec {
    IvfPqCodec::train(data, dim, config, Par::Seq, &mut |_| {}).expect("IVF-PQ trains")
}

// ---------------------------------------------------------------------------------------------
// 1. Product quantizer: decode(encode(x)) = x for concatenations of codewords
// ---------------------------------------------------------------------------------------------

const ROUND_TRIP_DIM: usize = 12;
const ROUND_TRIP_M: usize = 4;
const ROUND_TRIP_BITS: [u32; 5] = [1, 2, 4, 8, 10];

/// One trained PQ per entry of [`ROUND_TRIP_BITS`] (dim 12, 4 subspaces of 3 dims).
static ROUND_TRIP_PQS: LazyLock<Vec<ProductQuantizer>> = LazyLock::new(|| {
    let data = gaussian(3000, ROUND_TRIP_DIM, 1.0, 11);
    ROUND_TRIP_BITS
        .iter()
        .map(|&b| pq_train(&data, ROUND_TRIP_DIM, ROUND_TRIP_M, b, 100 + u64::from(b)))
        .collect()
});

/// Builds vectors by concatenating the codewords `picks` (taken modulo K), encodes them with codes
/// of type `C` (sequentially and on two threads), decodes them, and checks that the decoded vectors
/// are bit-identical to the inputs.
fn check_codeword_round_trip<C: Code + PartialEq>(
    pq: &ProductQuantizer,
    picks: &[usize],
) -> Result<(), TestCaseError> {
    let m = pq.n_subspaces();
    let k = pq.n_codewords();
    let n = picks.len() / m;
    let picks = &picks[..n * m];
    let mut x = vec![0.0f32; n * pq.dim()];
    for (row, pick) in x.chunks_exact_mut(pq.dim()).zip(picks.chunks_exact(m)) {
        for (s, (sub, &p)) in row.chunks_exact_mut(pq.sub_dim()).zip(pick).enumerate() {
            sub.copy_from_slice(pq.codebook(s).get(p % k));
        }
    }
    let mut codes = vec![C::default(); n * m];
    pq.encode(&x, &mut codes, Par::Seq).unwrap();
    let mut codes_par = vec![C::default(); n * m];
    pq.encode(&x, &mut codes_par, Par::rayon(2)).unwrap();
    prop_assert_eq!(&codes, &codes_par, "encoding depends on the thread count");
    prop_assert!(codes.iter().all(|c| c.index() < k));

    let mut decoded = vec![f32::NAN; x.len()];
    pq.decode(&codes, &mut decoded).unwrap();
    prop_assert_eq!(bits(&decoded), bits(&x), "n_bits = {}", pq.n_bits());

    let mut one = vec![f32::NAN; pq.dim()];
    pq.decode_one(&codes[..m], &mut one);
    prop_assert_eq!(bits(&one), bits(&x[..pq.dim()]));
    Ok(())
}

proptest! {
    #![proptest_config(prop_config(128, 0x1001))]

    #[test]
    fn pq_decode_of_encode_returns_codewords_exactly(
        which in 0..ROUND_TRIP_BITS.len(),
        picks in pvec(0usize..1024, ROUND_TRIP_M..ROUND_TRIP_M * 80),
    ) {
        let pq = &ROUND_TRIP_PQS[which];
        prop_assert_eq!(pq.n_bits(), ROUND_TRIP_BITS[which]);
        check_codeword_round_trip::<u16>(pq, &picks)?;
        if pq.n_bits() <= 8 {
            check_codeword_round_trip::<u8>(pq, &picks)?;
        }
    }
}

#[test]
fn pq_encode_of_a_batch_equals_encoding_each_row_alone() {
    // A batch is scored several rows at a time; one row alone takes the single-row kernel.
    // The codes must agree exactly (same scores, ties to the lowest index), and be nearest.
    let dim = 16;
    for (n_subspaces, n_bits) in [(2, 8), (4, 4), (8, 3), (1, 5)] {
        let pq = pq_train(&gaussian(1200, dim, 1.0, 5), dim, n_subspaces, n_bits, 3);
        let (m, sub, k) = (pq.n_subspaces(), pq.sub_dim(), pq.n_codewords());
        let mut x = gaussian(203, dim, 1.0, 6);
        // Rows that sit exactly on a codeword, and rows tied between codewords' values.
        for (i, row) in x.chunks_exact_mut(dim).take(40).enumerate() {
            for (s, part) in row.chunks_exact_mut(sub).enumerate() {
                part.copy_from_slice(pq.codebook(s).get((i * 5 + s) % k));
            }
        }
        for v in &mut x[40 * dim..80 * dim] {
            *v = (*v * 2.0).round();
        }
        for n in [1, 3, 4, 5, 8, 67, 203] {
            let x = &x[..n * dim];
            let mut batch = vec![0u16; n * m];
            pq.encode(x, &mut batch, Par::Seq).unwrap();
            let mut parallel = vec![0u16; n * m];
            pq.encode(x, &mut parallel, Par::rayon(2)).unwrap();
            assert_eq!(batch, parallel);
            for (row, codes) in x.chunks_exact(dim).zip(batch.chunks_exact(m)) {
                let mut alone = vec![0u16; m];
                pq.encode(row, &mut alone, Par::Seq).unwrap();
                assert_eq!(codes, &alone[..], "M {m}, K {k}, batch of {n}");
                for (s, (&code, part)) in codes.iter().zip(row.chunks_exact(sub)).enumerate() {
                    let book = pq.codebook(s);
                    let chosen = sq_dist(part, book.get(usize::from(code)));
                    let best = (0..k)
                        .map(|c| sq_dist(part, book.get(c)))
                        .fold(f64::INFINITY, f64::min);
                    assert!(chosen <= best + 1e-4, "code {code}: {chosen} vs {best}");
                }
            }
        }
    }
}

#[test]
fn codewords_and_coarse_centroids_update_in_place_like_a_rebuild() {
    let (dim, m, bits) = (12, 4, 4);
    let pq = pq_train(&gaussian(600, dim, 1.0, 8), dim, m, bits, 9);
    let mut table = pq.codebooks_flat();
    let sub = dim / m;
    let rows = [0u32, 17, 63, 17, 40];
    for (&r, v) in rows
        .iter()
        .zip(gaussian(rows.len(), sub, 2.0, 10).chunks_exact(sub))
    {
        table[r as usize * sub..(r as usize + 1) * sub].copy_from_slice(v);
    }
    let mut updated = pq.clone();
    updated.copy_codewords(&table, &rows).unwrap();
    let rebuilt = ProductQuantizer::from_codebooks(dim, m, bits, &table).unwrap();
    assert_eq!(updated, rebuilt);
    let x = gaussian(50, dim, 1.0, 12);
    let (mut a, mut b) = (vec![0u8; 50 * m], vec![0u8; 50 * m]);
    updated.encode(&x, &mut a, Par::Seq).unwrap();
    rebuilt.encode(&x, &mut b, Par::Seq).unwrap();
    assert_eq!(a, b);

    let before = updated.clone();
    assert!(matches!(
        updated.copy_codewords(&table, &[64]),
        Err(PqError::CodeOutOfRange {
            value: 64,
            max: 63,
            ..
        })
    ));
    assert!(matches!(
        updated.copy_codewords(&table[..table.len() - 1], &[1]),
        Err(PqError::DimensionMismatch { .. })
    ));
    table[2 * sub + 1] = f32::INFINITY;
    assert!(matches!(
        updated.copy_codewords(&table, &[1, 2]),
        Err(PqError::NonFinite { row: 2, col: 1, .. })
    ));
    assert_eq!(updated, before);

    let centroids = gaussian(5, dim, 1.0, 13);
    let mut coarse =
        CoarseQuantizer::from_centroids(Centroids::new(dim, centroids.clone()).unwrap());
    let mut table = centroids;
    table[3 * dim..4 * dim].copy_from_slice(&gaussian(1, dim, 1.0, 14));
    table[dim..2 * dim].copy_from_slice(&gaussian(1, dim, 1.0, 15));
    coarse.copy_centroids(&table, &[3, 1]).unwrap();
    assert_eq!(
        coarse,
        CoarseQuantizer::from_centroids(Centroids::new(dim, table.clone()).unwrap())
    );
    assert!(coarse.copy_centroids(&table, &[5]).is_err());
}

// ---------------------------------------------------------------------------------------------
// 2. k-means inertia never increases
// ---------------------------------------------------------------------------------------------

/// Data made of a few "atoms", most points exact copies of one (duplicates), the rest jittered
/// around one; with more clusters than atoms, clusters go empty and are re-seeded.
fn atoms_data(n: usize, dim: usize, n_atoms: usize, dup_fraction: f64, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let atoms: Vec<f32> = (0..n_atoms * dim)
        .map(|_| (normal(&mut r) * 3.0) as f32)
        .collect();
    let mut data = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let a = r.random_range(0..n_atoms);
        let exact = r.random::<f64>() < dup_fraction;
        for j in 0..dim {
            let jitter = if exact { 0.0 } else { normal(&mut r) * 0.3 };
            data.push(atoms[a * dim + j] + jitter as f32);
        }
    }
    data
}

#[test]
fn kmeans_inertia_never_increases() {
    let strategy = (
        1usize..=6,    // dim
        1usize..=8,    // atoms
        8usize..=160,  // points
        1usize..=16,   // clusters
        0.0f64..=1.0,  // fraction of exact duplicates
        any::<bool>(), // k-means++ or random sample
        0usize..4,     // sub-sampling: none, or 1..3 points per centroid
        any::<u64>(),  // data and k-means seed
    );
    let reseeding_cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(prop_config(512, 0x2002));
    runner
        .run(
            &strategy,
            |(dim, n_atoms, n, k, dup, plus_plus, per, seed)| {
                let data = atoms_data(n, dim, n_atoms, dup, seed);
                let k = k.min(n);
                let init = if plus_plus {
                    KMeansInit::KMeansPlusPlus
                } else {
                    KMeansInit::RandomSample
                };
                let per = (per > 0).then_some(per);
                let config = KMeansConfig {
                    n_clusters: k,
                    settings: KMeansSettings {
                        max_iter: 20,
                        tolerance: 0.0,
                        init,
                        max_points_per_centroid: per,
                    },
                    seed,
                };
                let km = KMeans::train(&data, dim, &config, Par::Seq).unwrap();
                let inertia = &km.report.inertia;
                prop_assert_eq!(inertia.len(), 20);
                // The distances come from ‖x‖² + ‖c‖² − 2⟨x, c⟩ in f32, whose rounding is relative
                // to the norms, not to the (possibly zero) inertia: allow 1e-5 relative plus a
                // noise floor of 1e-7 of the data's total squared norm.
                let floor = 1e-7 * sum_sq_norms(&data);
                for (i, w) in inertia.windows(2).enumerate() {
                    prop_assert!(
                        w[1] <= w[0] * (1.0 + 1e-5) + floor,
                        "iteration {}: inertia rose from {} to {} ({:?})",
                        i + 1,
                        w[0],
                        w[1],
                        inertia
                    );
                }
                if km.report.reseeded > 0 {
                    reseeding_cases.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(
        reseeding_cases.load(Ordering::Relaxed) > 10,
        "the generated data should make clusters go empty"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. and 4. Determinism: thread count, seeds
// ---------------------------------------------------------------------------------------------

fn assert_same_for_any_thread_count(data: &[f32], dim: usize, k: usize, per: Option<usize>) {
    for init in [KMeansInit::RandomSample, KMeansInit::KMeansPlusPlus] {
        let config = KMeansConfig {
            n_clusters: k,
            settings: settings(init.clone(), 8, per),
            seed: 5,
        };
        let seq = KMeans::train(data, dim, &config, Par::Seq).unwrap();
        if let Some(per) = per {
            assert_eq!(seq.report.n_train, k * per, "sub-sampling should be on");
        } else {
            assert_eq!(seq.report.n_train, data.len() / dim);
        }
        for par in [Par::rayon(2), Par::rayon(3)] {
            let other = KMeans::train(data, dim, &config, par).unwrap();
            assert_eq!(
                bits(other.centroids.as_slice()),
                bits(seq.centroids.as_slice()),
                "{init:?}, {par:?}: centroids differ from the sequential run"
            );
            assert_eq!(other.report, seq.report, "{init:?}, {par:?}");
        }
    }
}

#[test]
fn kmeans_is_bit_identical_for_any_thread_count_gemm_path() {
    let data = clustered(5000, 24, 80, 2.0, 0.7, 31);
    assert_same_for_any_thread_count(&data, 24, 50, None);
    assert_same_for_any_thread_count(&data, 24, 50, Some(40));
}

#[test]
fn kmeans_is_bit_identical_for_any_thread_count_direct_path() {
    let data = clustered(3000, 4, 100, 2.0, 0.4, 32);
    assert_same_for_any_thread_count(&data, 4, 64, None);
    assert_same_for_any_thread_count(&data, 4, 64, Some(20));
}

#[test]
fn kmeans_same_seed_same_result_different_seed_different_centroids() {
    let data = clustered(2000, 6, 30, 2.0, 0.5, 41);
    for init in [KMeansInit::RandomSample, KMeansInit::KMeansPlusPlus] {
        for per in [None, Some(20)] {
            let s = settings(init.clone(), 10, per);
            let a = kmeans(&data, 6, 20, s.clone(), 1);
            let b = kmeans(&data, 6, 20, s.clone(), 1);
            let c = kmeans(&data, 6, 20, s, 2);
            assert_eq!(bits(a.centroids.as_slice()), bits(b.centroids.as_slice()));
            assert_eq!(a.report, b.report);
            assert_ne!(
                bits(a.centroids.as_slice()),
                bits(c.centroids.as_slice()),
                "{init:?}, {per:?}: seeds 1 and 2 gave the same centroids"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Empty clusters are re-seeded
// ---------------------------------------------------------------------------------------------

/// `k` distinct values in `dim` dimensions; value 0 is repeated `big` times, each other `small`
/// times, in a shuffled order.
fn few_distinct_values(k: usize, dim: usize, big: usize, small: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let values: Vec<f32> = (0..k * dim)
        .map(|_| (normal(&mut r) * 4.0) as f32)
        .collect();
    let mut rows: Vec<usize> = std::iter::repeat_n(0, big)
        .chain((1..k).flat_map(|v| std::iter::repeat_n(v, small)))
        .collect();
    // Fisher–Yates with the seeded generator.
    for i in (1..rows.len()).rev() {
        rows.swap(i, r.random_range(0..=i));
    }
    rows.iter()
        .flat_map(|&v| values[v * dim..(v + 1) * dim].to_vec())
        .collect()
}

fn assert_all_distinct(centroids: &Centroids) {
    for a in 0..centroids.len() {
        for b in a + 1..centroids.len() {
            assert_ne!(
                bits(centroids.get(a)),
                bits(centroids.get(b)),
                "centroids {a} and {b} coincide"
            );
        }
    }
}

#[test]
fn empty_clusters_are_reseeded_from_duplicate_random_init() {
    let (k, dim) = (10, 3);
    // 90% of the points are one value, so a random sample of 10 points holds duplicates.
    let data = few_distinct_values(k, dim, 900, 12, 51);
    let scale = sum_sq_norms(&data);
    let km = kmeans(
        &data,
        dim,
        k,
        settings(KMeansInit::RandomSample, 30, None),
        3,
    );
    assert!(km.report.reseeded > 0, "{:?}", km.report);
    assert_all_distinct(&km.centroids);
    let first = km.report.inertia[0];
    let last = *km.report.inertia.last().unwrap();
    assert!(first > 0.0);
    assert!(last <= first, "{:?}", km.report.inertia);
    // There are exactly k distinct values: with every centroid in use, the optimum is 0, which
    // no set of fewer distinct centroids reaches.
    let exact = brute_inertia(&data, &km.centroids);
    assert!(exact <= 1e-9 * scale, "final inertia {exact}");
}

#[test]
fn empty_clusters_are_reseeded_from_identical_warm_start() {
    let (k, dim) = (8, 5);
    let data = few_distinct_values(k, dim, 300, 25, 52);
    let scale = sum_sq_norms(&data);
    // All k initial centroids equal the first point: k − 1 clusters are empty at once.
    let init = KMeansInit::Centroids(data[..dim].repeat(k));
    let km = kmeans(&data, dim, k, settings(init, 30, None), 0);
    assert!(km.report.reseeded >= k - 1, "{:?}", km.report);
    assert_all_distinct(&km.centroids);
    let initial = km.report.inertia[0];
    let last = *km.report.inertia.last().unwrap();
    assert!(last < initial, "{:?}", km.report.inertia);
    let exact = brute_inertia(&data, &km.centroids);
    assert!(exact <= 1e-9 * scale, "final inertia {exact}");
}

/// Several clusters emptied in one update must be re-seeded with distinct points, even when the
/// farthest points are exact copies of one value; otherwise the codebook keeps dead duplicates.
#[test]
fn kmeans_reseeding_gives_distinct_centroids_when_data_allows() {
    // One update, 9 empty clusters, 10 distinct values: the 9 re-seeded centroids could be 9
    // distinct points, not 9 copies of the single farthest value.
    let (k, dim) = (10, 3);
    let data = few_distinct_values(k, dim, 900, 12, 51);
    let init = KMeansInit::Centroids(data[..dim].repeat(k));
    let one = kmeans(&data, dim, k, settings(init, 1, None), 0);
    assert_eq!(one.report.reseeded, k - 1);
    assert_all_distinct(&one.centroids);

    // Default settings (random-sample init, 25 iterations): 40 distinct values, 40 clusters;
    // every value must end up a centroid, for an inertia of 0.
    let (k, dim) = (40, 4);
    let data = few_distinct_values(k, dim, 2000, 20, 53);
    let km = KMeans::train(&data, dim, &KMeansConfig::new(k), Par::Seq).unwrap();
    assert_all_distinct(&km.centroids);
    let exact = brute_inertia(&data, &km.centroids);
    assert!(exact <= 1e-9 * sum_sq_norms(&data), "final inertia {exact}");
}

// ---------------------------------------------------------------------------------------------
// 6. ADC lookup tables
// ---------------------------------------------------------------------------------------------

/// PQs for the table tests: trained (dim 16, 4 × 4 dims, 6 bits) and random codebooks (dim 6,
/// 6 × 1 dim, 3 bits; dim 10, 2 × 5 dims, 8 bits).
static TABLE_PQS: LazyLock<Vec<ProductQuantizer>> = LazyLock::new(|| {
    let trained = pq_train(&clustered(1500, 16, 20, 1.5, 0.6, 61), 16, 4, 6, 3);
    let narrow = ProductQuantizer::from_codebooks(6, 6, 3, &gaussian(6 * 8, 1, 2.0, 62)).unwrap();
    let wide =
        ProductQuantizer::from_codebooks(10, 2, 8, &gaussian(2 * 256 * 5, 1, 1.0, 63)).unwrap();
    vec![trained, narrow, wide]
});

proptest! {
    #![proptest_config(prop_config(256, 0x6006))]

    #[test]
    fn lookup_tables_sum_to_exact_scores_of_the_decoded_vector(
        which in 0usize..3,
        query in pvec(-4.0f32..4.0, 16),
        picks in pvec(0usize..256, 6),
    ) {
        let pq = &TABLE_PQS[which];
        let (m, k, dim) = (pq.n_subspaces(), pq.n_codewords(), pq.dim());
        let q = &query[..dim];
        let codes: Vec<u16> = picks[..m].iter().map(|&p| (p % k) as u16).collect();
        let mut x = vec![0.0f32; dim];
        pq.decode_one(&codes, &mut x);

        let mut ip_table = vec![f32::NAN; m * k];
        let mut l2_table = vec![f32::NAN; m * k];
        pq.inner_product_table_one(q, &mut ip_table);
        pq.l2_table_one(q, &mut l2_table);
        let lookup = |table: &[f32]| -> f64 {
            codes
                .iter()
                .enumerate()
                .map(|(s, &c)| f64::from(table[s * k + usize::from(c)]))
                .sum()
        };
        let (ip, l2) = (lookup(&ip_table), lookup(&l2_table));
        let (exact_ip, exact_l2) = (dot(q, &x), sq_dist(q, &x));
        // Relative to the size of the terms (an inner product can be near zero).
        let qn = dot(q, q);
        let xn = dot(&x, &x);
        let ip_scale = (qn * xn).sqrt().max(1e-6);
        let l2_scale = (qn + xn).max(1e-6);
        prop_assert!(
            (ip - exact_ip).abs() <= 1e-4 * ip_scale,
            "inner product: table {} vs exact {}", ip, exact_ip
        );
        prop_assert!(
            (l2 - exact_l2).abs() <= 1e-4 * l2_scale,
            "squared L2: table {} vs exact {}", l2, exact_l2
        );
        // Each entry is itself the exact per-subspace score.
        let sd = pq.sub_dim();
        for s in 0..m {
            for c in 0..k {
                let word = pq.codebook(s).get(c);
                let qs = &q[s * sd..(s + 1) * sd];
                let e_ip = dot(qs, word);
                let e_l2 = sq_dist(qs, word);
                let scale = dot(qs, qs) + dot(word, word) + 1e-6;
                prop_assert!((f64::from(ip_table[s * k + c]) - e_ip).abs() <= 1e-4 * scale);
                prop_assert!((f64::from(l2_table[s * k + c]) - e_l2).abs() <= 1e-4 * scale);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Coarse quantizer
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(prop_config(96, 0x7007))]

    /// `assign` picks a nearest centroid (up to float rounding of the norm expansion) and reports
    /// its distance; `nearest_lists` returns the `nprobe` nearest in order, ties to the lower list.
    #[test]
    fn coarse_assign_and_nearest_lists_match_brute_force(
        dim in 1usize..40,
        k in 1usize..40,
        n in 1usize..300,
        nprobe in 0usize..50,
        seed in any::<u64>(),
    ) {
        let centroids = gaussian(k, dim, 1.0, seed);
        let coarse = CoarseQuantizer::from_centroids(Centroids::new(dim, centroids).unwrap());
        prop_assert_eq!(coarse.n_lists(), k);
        let data = gaussian(n, dim, 1.2, seed ^ 0xABCD);
        let (mut lists, mut dists) = (vec![u32::MAX; n], vec![f32::NAN; n]);
        coarse.assign(&data, &mut lists, &mut dists, Par::rayon(2)).unwrap();
        let (mut lists_seq, mut dists_seq) = (vec![0; n], vec![0.0; n]);
        coarse.assign(&data, &mut lists_seq, &mut dists_seq, Par::Seq).unwrap();
        prop_assert_eq!(&lists, &lists_seq);
        prop_assert_eq!(bits(&dists), bits(&dists_seq));

        let c = coarse.centroids();
        for (i, x) in data.chunks_exact(dim).enumerate() {
            let exact: Vec<f64> = (0..k).map(|j| sq_dist(x, c.get(j))).collect();
            let best = exact.iter().copied().fold(f64::INFINITY, f64::min);
            // The norm expansion rounds relative to the norms involved.
            let max_norm = c.norms().iter().map(|&v| f64::from(v)).fold(0.0, f64::max);
            let tol = 1e-5 * (dot(x, x) + max_norm) + 1e-9;
            let chosen = lists[i] as usize;
            prop_assert!(chosen < k);
            prop_assert!(
                exact[chosen] <= best + tol,
                "row {}: {} vs {}", i, exact[chosen], best
            );
            prop_assert!((f64::from(dists[i]) - exact[chosen]).abs() <= tol);
        }

        let query = &data[..dim];
        let mut scratch = vec![f32::NAN; k];
        let mut out = vec![u32::MAX; nprobe];
        let written = coarse.nearest_lists(query, &mut scratch, &mut out);
        prop_assert_eq!(written, nprobe.min(k));
        prop_assert!(out[written..].iter().all(|&l| l == u32::MAX), "wrote past the count");
        // The scratch holds the distances the order was taken from; check them, then the order.
        for (j, &d) in scratch.iter().enumerate() {
            let e = sq_dist(query, c.get(j));
            prop_assert!((f64::from(d) - e).abs() <= 1e-5 * (e + 1.0));
        }
        let mut expected: Vec<u32> = (0..k as u32).collect();
        expected.sort_by(|&a, &b| {
            scratch[a as usize].total_cmp(&scratch[b as usize]).then(a.cmp(&b))
        });
        prop_assert_eq!(&out[..written], &expected[..written]);
    }
}

#[test]
fn coarse_lists_without_distances_are_the_lists_of_assign() {
    // The GEMM path (dim > 16) and the direct path, with blocks and a tail of rows.
    for (dim, n_lists, n) in [(24, 7, 517), (8, 32, 203), (3, 5, 6)] {
        let coarse = CoarseQuantizer::from_centroids(
            Centroids::new(dim, gaussian(n_lists, dim, 1.0, 31)).unwrap(),
        );
        let mut data = gaussian(n, dim, 1.0, 32);
        data[..dim].copy_from_slice(coarse.centroids().get(2));
        let (mut lists, mut distances) = (vec![0u32; n], vec![0.0f32; n]);
        coarse
            .assign(&data, &mut lists, &mut distances, Par::Seq)
            .unwrap();
        for par in [Par::Seq, Par::rayon(2), Par::rayon(3)] {
            let mut only = vec![u32::MAX; n];
            coarse.assign_lists(&data, &mut only, par).unwrap();
            assert_eq!(only, lists, "dim {dim}");
        }
        assert_eq!(lists[0], 2);
        let mut short = vec![0u32; n - 1];
        assert!(matches!(
            coarse.assign_lists(&data, &mut short, Par::Seq),
            Err(PqError::DimensionMismatch { .. })
        ));
    }
}

#[test]
fn coarse_ties_go_to_the_lower_list() {
    // Integer coordinates: every distance is exact, so the ties are exact.
    // Lists 1 and 3 coincide, as do 0 and 4; 2 sits elsewhere.
    let centroids = vec![
        0.0, 0.0, // 0
        4.0, 0.0, // 1
        0.0, 4.0, // 2
        4.0, 0.0, // 3 (= 1)
        0.0, 0.0, // 4 (= 0)
    ];
    let coarse = CoarseQuantizer::from_centroids(Centroids::new(2, centroids).unwrap());
    // (2, 0) is equidistant from lists 0/4 and 1/3; (1, 1) is nearest 0/4.
    let points = [2.0, 0.0, 1.0, 1.0, 4.0, 0.0, 0.0, 3.0];
    let (mut lists, mut dists) = (vec![9; 4], vec![0.0; 4]);
    coarse
        .assign(&points, &mut lists, &mut dists, Par::Seq)
        .unwrap();
    assert_eq!(lists, [0, 0, 1, 2]);
    assert_eq!(dists, [4.0, 2.0, 0.0, 1.0]);

    let mut scratch = vec![0.0; 5];
    let mut out = vec![99u32; 8];
    let written = coarse.nearest_lists(&[2.0, 0.0], &mut scratch, &mut out);
    assert_eq!(written, 5, "nprobe above n_lists clamps");
    // Distances: 4, 4, 20, 4, 4.
    assert_eq!(&out[..5], &[0, 1, 3, 4, 2]);
    assert_eq!(&out[5..], &[99, 99, 99], "nothing written past the clamp");

    let mut two = vec![99u32; 2];
    assert_eq!(coarse.nearest_lists(&[2.0, 0.0], &mut scratch, &mut two), 2);
    assert_eq!(two, [0, 1]);
    let mut none: [u32; 0] = [];
    assert_eq!(
        coarse.nearest_lists(&[2.0, 0.0], &mut scratch, &mut none),
        0
    );
}

// ---------------------------------------------------------------------------------------------
// 8. IVF-PQ codec
// ---------------------------------------------------------------------------------------------

/// Encodes, decodes and returns (lists, codes, reconstructions, mean squared error).
fn round_trip(codec: &IvfPqCodec, data: &[f32]) -> (Vec<u32>, Vec<u16>, Vec<f32>, f64) {
    let n = data.len() / codec.dim();
    let m = codec.pq().n_subspaces();
    let mut lists = vec![u32::MAX; n];
    let mut codes = vec![0u16; n * m];
    codec
        .encode(data, &mut lists, &mut codes, Par::rayon(2))
        .unwrap();
    let mut out = vec![f32::NAN; n * codec.dim()];
    codec.decode(&lists, &codes, &mut out, Par::Seq).unwrap();
    let mse = sq_dist(data, &out) / n as f64;
    (lists, codes, out, mse)
}

#[test]
fn ivfpq_pads_a_dimension_not_divisible_by_the_subspaces() {
    let (dim, n) = (10, 2000);
    let data = clustered(n, dim, 8, 3.0, 0.25, 81);
    let config = ivfpq_config(8, 4, 6);
    let codec = ivfpq_train(&data, dim, &config);
    assert_eq!(codec.dim(), 10);
    assert_eq!(codec.padded_dim(), 12);
    assert_eq!(codec.pq().dim(), 12);
    assert_eq!(codec.pq().sub_dim(), 3);
    assert_eq!(codec.rotation().dim(), 12);
    assert_eq!(codec.n_lists(), 8);

    let (lists, codes, out, mse) = round_trip(&codec, &data);
    assert_eq!(lists.len(), n);
    assert_eq!(codes.len(), n * 4);
    assert_eq!(out.len(), n * dim);
    assert!(lists.iter().all(|&l| l < 8));
    assert!(codes.iter().all(|&c| c < 64));
    let relative = mse / mean_squared_norm(&data, dim);
    assert!(relative < 0.01, "relative reconstruction error {relative}");
    let distortion = codec.distortion(&data, Par::Seq).unwrap();
    assert!(
        (distortion - mse).abs() <= 1e-4 * mse.max(1e-12),
        "distortion {distortion} vs decoded error {mse}"
    );

    // Padded coordinates carry nothing: rotate() pads with zeros (identity rotation here).
    let rotated = codec.rotate(&data[..2 * dim], Par::Seq).unwrap();
    assert_eq!(rotated.len(), 2 * 12);
    assert_eq!(&rotated[10..12], &[0.0, 0.0]);
    assert_eq!(&rotated[..10], &data[..10]);

    // u8 codes give the same encoding.
    let mut lists8 = vec![0u32; n];
    let mut codes8 = vec![0u8; n * 4];
    codec
        .encode(&data, &mut lists8, &mut codes8, Par::Seq)
        .unwrap();
    assert_eq!(lists8, lists);
    assert!(codes8.iter().zip(&codes).all(|(&a, &b)| u16::from(a) == b));
}

#[test]
fn ivfpq_without_a_coarse_level() {
    let (dim, n) = (8, 1500);
    let data = clustered(n, dim, 10, 2.0, 0.3, 82);
    let codec = ivfpq_train(&data, dim, &ivfpq_config(0, 4, 5));
    assert!(codec.coarse().is_none());
    assert_eq!(codec.n_lists(), 1);
    let (lists, _codes, _out, mse) = round_trip(&codec, &data);
    assert!(lists.iter().all(|&l| l == 0));
    assert!(mse / mean_squared_norm(&data, dim) < 0.05, "mse {mse}");
    // The only list is 0.
    let mut out = vec![0.0; dim];
    assert_eq!(
        codec.decode(&[1], &[0u16; 4], &mut out, Par::Seq),
        Err(PqError::CodeOutOfRange {
            what: "list",
            value: 1,
            max: 0
        })
    );
}

#[test]
fn ivfpq_distortion_decreases_with_more_bits() {
    let (dim, n) = (16, 3000);
    let data = clustered(n, dim, 12, 1.5, 0.8, 83);
    let distortions: Vec<f64> = [2, 4, 6, 8]
        .iter()
        .map(|&b| {
            let codec = ivfpq_train(&data, dim, &ivfpq_config(4, 4, b));
            codec.distortion(&data, Par::Seq).unwrap()
        })
        .collect();
    for w in distortions.windows(2) {
        assert!(
            w[1] < 0.9 * w[0],
            "distortions by bits 2, 4, 6, 8: {distortions:?}"
        );
    }
}

#[test]
fn ivfpq_residual_training_beats_raw_vector_training() {
    // Far-apart clusters: the coarse level takes the structure out, the residuals are small.
    let (dim, n, lists) = (16, 3000, 16);
    let data = clustered(n, dim, lists, 10.0, 0.5, 84);
    let mut config = ivfpq_config(lists, 4, 4);
    let residual = ivfpq_train(&data, dim, &config)
        .distortion(&data, Par::Seq)
        .unwrap();
    config.pq_training = PqTraining::RawVectors;
    let raw = ivfpq_train(&data, dim, &config)
        .distortion(&data, Par::Seq)
        .unwrap();
    assert!(
        residual < 0.5 * raw,
        "residual-trained {residual} vs raw-trained {raw}"
    );
}

#[test]
fn ivfpq_decode_rejects_out_of_range_lists_and_codes() {
    let (dim, n) = (8, 600);
    let data = clustered(n, dim, 6, 2.0, 0.3, 85);
    let codec = ivfpq_train(&data, dim, &ivfpq_config(5, 2, 6));
    let mut out = vec![0.0f32; 2 * dim];
    assert_eq!(
        codec.decode(&[0, 5], &[0u8; 4], &mut out, Par::Seq),
        Err(PqError::CodeOutOfRange {
            what: "list",
            value: 5,
            max: 4
        })
    );
    assert_eq!(
        codec.decode(&[0, 4], &[0u8, 1, 2, 64], &mut out, Par::Seq),
        Err(PqError::CodeOutOfRange {
            what: "PQ code",
            value: 64,
            max: 63
        })
    );
    let mut rotated = vec![0.0f32; 2 * dim];
    assert!(matches!(
        codec.decode_rotated(&[0, 0], &[0u16, 1, 200, 0], &mut rotated),
        Err(PqError::CodeOutOfRange {
            value: 200,
            max: 63,
            ..
        })
    ));
    // In range works.
    codec
        .decode(&[0, 4], &[0u8, 1, 2, 63], &mut out, Par::Seq)
        .unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
}

// ---------------------------------------------------------------------------------------------
// 9. OPQ
// ---------------------------------------------------------------------------------------------

/// `n × dim` Gaussian vectors whose coordinate `j` has standard deviation `scale · decay^j`,
/// then mixed by the random rotation of `mix_seed`, so the principal axes spread over every
/// PQ block.
fn decaying_mixed(
    n: usize,
    dim: usize,
    decay: f64,
    scale: f64,
    seed: u64,
    mix_seed: u64,
) -> Vec<f32> {
    let mut r = rng(seed);
    let mut raw = Vec::with_capacity(n * dim);
    for _ in 0..n {
        for j in 0..dim {
            raw.push((normal(&mut r) * decay.powi(j as i32) * scale) as f32);
        }
    }
    let mut data = vec![0.0f32; raw.len()];
    Rotation::random(dim, mix_seed).apply(&raw, &mut data, Par::Seq);
    data
}

#[test]
fn opq_beats_plain_ivfpq_on_rotated_anisotropic_data() {
    let (dim, n) = (16, 4000);
    let data = decaying_mixed(n, dim, 0.8, 3.0, 91, 92);

    let config = IvfPqConfig {
        seed: 3,
        ..ivfpq_config(4, 4, 4)
    };
    let plain = ivfpq_train(&data, dim, &config)
        .distortion(&data, Par::Seq)
        .unwrap();
    let opq = OpqConfig {
        n_rounds: 10,
        iterations_per_round: 4,
        max_train_points: None,
        ..OpqConfig::default()
    };
    let mut rounds = 0;
    let (codec, report) = train_opq(&data, dim, &config, &opq, Par::Seq, &mut |p| {
        if p.stage == Stage::OpqRound {
            rounds += 1;
        }
    })
    .unwrap();
    assert_eq!(rounds, 10);
    assert_eq!(
        report.distortion.len(),
        11,
        "one entry per round plus the final fit"
    );
    let last = *report.distortion.last().unwrap();
    assert_eq!(
        last,
        codec.distortion(&data, Par::Seq).unwrap(),
        "the report's last entry is the returned codec's distortion"
    );
    assert!(
        last < 0.8 * plain,
        "OPQ distortion {last} vs plain IVF-PQ {plain} ({:?})",
        report.distortion
    );
    assert!(last < report.distortion[0]);
    let error = codec.rotation().orthogonality_error();
    assert!(error < 1e-5, "rotation drifted from orthonormal: {error}");
    assert!(!codec.rotation().is_identity());

    // The codec's rotation is used consistently: decode inverts it.
    let (_, _, out, mse) = round_trip(&codec, &data);
    assert_eq!(out.len(), data.len());
    assert!(
        (mse - last).abs() <= 1e-3 * last,
        "decoded error {mse} vs {last}"
    );
}

#[test]
fn opq_with_padding_and_thread_count_independence() {
    // dim 10 with 4 subspaces: OPQ rotates the zero-padded 12-dimensional space.
    let (dim, n) = (10, 3000);
    let data = decaying_mixed(n, dim, 0.8, 3.0, 93, 94);
    let config = ivfpq_config(4, 4, 4);
    let opq = OpqConfig {
        n_rounds: 6,
        iterations_per_round: 3,
        max_train_points: None,
        ..OpqConfig::default()
    };
    let (codec, report) = train_opq(&data, dim, &config, &opq, Par::Seq, &mut |_| {}).unwrap();
    assert_eq!(codec.padded_dim(), 12);
    assert_eq!(codec.rotation().dim(), 12);
    assert!(codec.rotation().orthogonality_error() < 1e-5);
    let last = *report.distortion.last().unwrap();
    assert_eq!(last, codec.distortion(&data, Par::Seq).unwrap());
    // The distortion, measured in the rotated padded space, bounds the error of the decoded
    // vectors, which drop the padded coordinates (a rotation away from the identity puts some
    // reconstruction there), and is close to it.
    let (_, _, _, mse) = round_trip(&codec, &data);
    assert!(
        mse <= last * (1.0 + 1e-5) && mse >= 0.98 * last,
        "decoded {mse} vs {last}"
    );

    // Training does not depend on the thread count.
    let (codec2, report2) =
        train_opq(&data, dim, &config, &opq, Par::rayon(2), &mut |_| {}).unwrap();
    assert_eq!(codec2, codec);
    assert_eq!(report2, report);
    let a = IvfPqCodec::train(&data, dim, &config, Par::Seq, &mut |_| {}).unwrap();
    let b = IvfPqCodec::train(&data, dim, &config, Par::rayon(3), &mut |_| {}).unwrap();
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------------------------
// 10. Typed errors
// ---------------------------------------------------------------------------------------------

fn kmeans_err(data: &[f32], dim: usize, k: usize) -> PqError {
    KMeans::train(data, dim, &KMeansConfig::new(k), Par::Seq).unwrap_err()
}

#[test]
fn errors_are_typed_never_panics() {
    let good = gaussian(40, 3, 1.0, 101);

    // Non-finite values, with the position of the first one.
    let mut nan = good.clone();
    nan[3 * 3 + 2] = f32::NAN;
    nan[5 * 3] = f32::INFINITY;
    assert!(matches!(
        kmeans_err(&nan, 3, 4),
        PqError::NonFinite { row: 3, col: 2, .. }
    ));
    let mut inf = good.clone();
    inf[7 * 3 + 1] = f32::NEG_INFINITY;
    assert!(matches!(
        kmeans_err(&inf, 3, 4),
        PqError::NonFinite { row: 7, col: 1, .. }
    ));
    let pq_nan = ProductQuantizer::train(&nan, 3, &PqConfig::new(3, 2), Par::Seq, &mut |_| {});
    assert!(matches!(
        pq_nan,
        Err(PqError::NonFinite { row: 3, col: 2, .. })
    ));
    let ivf_nan = IvfPqCodec::train(&nan, 3, &IvfPqConfig::new(2, 2, 2), Par::Seq, &mut |_| {});
    assert!(matches!(
        ivf_nan,
        Err(PqError::NonFinite { row: 3, col: 2, .. })
    ));
    let coarse_nan = CoarseQuantizer::train(
        &nan,
        3,
        2,
        &KMeansSettings::default(),
        0,
        Par::Seq,
        &mut |_| {},
    );
    assert!(matches!(
        coarse_nan,
        Err(PqError::NonFinite { row: 3, col: 2, .. })
    ));

    // Fewer points than centroids.
    assert_eq!(
        kmeans_err(&good[..5 * 3], 3, 6),
        PqError::TooFewPoints {
            what: "k-means",
            n_points: 5,
            n_centroids: 6
        }
    );
    let few_pq = ProductQuantizer::train(
        &good[..10 * 3],
        3,
        &PqConfig::new(1, 4),
        Par::Seq,
        &mut |_| {},
    );
    assert!(matches!(
        few_pq,
        Err(PqError::TooFewPoints {
            n_points: 10,
            n_centroids: 16,
            ..
        })
    ));
    let few_ivf = IvfPqCodec::train(
        &good[..10 * 3],
        3,
        &IvfPqConfig::new(20, 1, 2),
        Par::Seq,
        &mut |_| {},
    );
    assert!(matches!(
        few_ivf,
        Err(PqError::TooFewPoints {
            n_points: 10,
            n_centroids: 20,
            ..
        })
    ));

    // Zero dimension.
    assert_eq!(kmeans_err(&[], 0, 1), PqError::ZeroDimension);
    assert_eq!(kmeans_err(&good, 0, 1), PqError::ZeroDimension);
    assert_eq!(
        ProductQuantizer::train(&[], 0, &PqConfig::new(1, 2), Par::Seq, &mut |_| {}).unwrap_err(),
        PqError::ZeroDimension
    );
    assert_eq!(
        IvfPqCodec::train(&[], 0, &IvfPqConfig::new(0, 2, 2), Par::Seq, &mut |_| {}).unwrap_err(),
        PqError::ZeroDimension
    );
    assert_eq!(
        Centroids::new(0, vec![]).unwrap_err(),
        PqError::ZeroDimension
    );

    // Bits per code out of 1..=16, for both trainers and from_codebooks.
    for bits in [0, 17] {
        for err in [
            ProductQuantizer::train(&good, 3, &PqConfig::new(3, bits), Par::Seq, &mut |_| {})
                .unwrap_err(),
            IvfPqCodec::train(
                &good,
                3,
                &IvfPqConfig::new(2, 3, bits),
                Par::Seq,
                &mut |_| {},
            )
            .unwrap_err(),
            ProductQuantizer::from_codebooks(3, 3, bits, &[]).unwrap_err(),
        ] {
            assert!(
                matches!(
                    err,
                    PqError::InvalidSetting {
                        setting: "n_bits",
                        ..
                    }
                ),
                "n_bits {bits}: {err:?}"
            );
        }
    }
    // Subspaces that do not divide the dimension (PQ) or are zero.
    assert!(matches!(
        ProductQuantizer::train(&good, 3, &PqConfig::new(2, 2), Par::Seq, &mut |_| {}),
        Err(PqError::InvalidSetting {
            setting: "n_subspaces",
            ..
        })
    ));
    assert!(matches!(
        IvfPqCodec::train(&good, 3, &IvfPqConfig::new(2, 0, 2), Par::Seq, &mut |_| {}),
        Err(PqError::InvalidSetting {
            setting: "n_subspaces",
            ..
        })
    ));

    // 9-bit codes do not fit in u8 (encode and decode); they do in u16.
    let wide = gaussian(600, 2, 1.0, 102);
    let pq9 = pq_train(&wide, 2, 1, 9, 1);
    let mut codes8 = vec![0u8; 600];
    assert_eq!(
        pq9.encode(&wide, &mut codes8, Par::Seq),
        Err(PqError::CodeWidth {
            n_bits: 9,
            code_bits: 8
        })
    );
    let mut out = vec![0.0; 2];
    assert_eq!(
        pq9.decode(&[0u8], &mut out),
        Err(PqError::CodeWidth {
            n_bits: 9,
            code_bits: 8
        })
    );
    let mut codes16 = vec![0u16; 600];
    pq9.encode(&wide, &mut codes16, Par::Seq).unwrap();
    assert!(codes16.iter().all(|&c| c < 512));
    let codec9 = ivfpq_train(&wide, 2, &ivfpq_config(2, 1, 9));
    let mut lists = vec![0u32; 600];
    assert!(matches!(
        codec9.encode(&wide, &mut lists, &mut codes8, Par::Seq),
        Err(PqError::CodeWidth {
            n_bits: 9,
            code_bits: 8
        })
    ));

    // Ragged rows.
    assert_eq!(
        kmeans_err(&good[..10], 3, 1),
        PqError::RaggedRows {
            what: "k-means training data",
            len: 10,
            dim: 3
        }
    );
    assert!(matches!(
        pq9.encode(&wide[..3], &mut codes16[..1], Par::Seq),
        Err(PqError::RaggedRows { len: 3, dim: 2, .. })
    ));

    // Empty data.
    assert!(matches!(kmeans_err(&[], 3, 1), PqError::Empty { .. }));
    assert!(matches!(
        ProductQuantizer::train(&[], 3, &PqConfig::new(1, 1), Par::Seq, &mut |_| {}),
        Err(PqError::Empty { .. })
    ));
    assert!(matches!(
        IvfPqCodec::train(&[], 3, &IvfPqConfig::new(1, 1, 1), Par::Seq, &mut |_| {}),
        Err(PqError::Empty { .. })
    ));
    assert!(matches!(
        Centroids::new(3, vec![]),
        Err(PqError::Empty { .. })
    ));

    // k = 0.
    assert!(matches!(
        kmeans_err(&good, 3, 0),
        PqError::InvalidSetting {
            setting: "n_clusters",
            ..
        }
    ));

    // Warm-start centroids of the wrong shape or non-finite.
    let bad_init = KMeansConfig {
        settings: settings(KMeansInit::Centroids(vec![0.0; 5]), 5, None),
        ..KMeansConfig::new(2)
    };
    assert!(matches!(
        KMeans::train(&good, 3, &bad_init, Par::Seq),
        Err(PqError::DimensionMismatch {
            expected: 6,
            got: 5,
            ..
        })
    ));
    let nan_init = KMeansConfig {
        settings: settings(
            KMeansInit::Centroids(vec![0.0, 0.0, 0.0, 0.0, f32::NAN, 0.0]),
            5,
            None,
        ),
        ..KMeansConfig::new(2)
    };
    assert!(matches!(
        KMeans::train(&good, 3, &nan_init, Par::Seq),
        Err(PqError::NonFinite { row: 1, col: 1, .. })
    ));

    // Output buffers of the wrong length.
    assert!(matches!(
        pq9.encode(&wide, &mut codes16[..599], Par::Seq),
        Err(PqError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        pq9.decode(&[0u16, 1], &mut out),
        Err(PqError::DimensionMismatch { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// 11. Progress
// ---------------------------------------------------------------------------------------------

/// Splits events into runs of one stage and checks that each run counts 1, 2, 3, … with the
/// stage's total. Returns (stage, number of events) per run.
fn stage_runs(events: &[Progress]) -> Vec<(Stage, usize)> {
    let mut runs: Vec<(Stage, usize)> = Vec::new();
    for e in events {
        match runs.last_mut() {
            Some((stage, count)) if *stage == e.stage && e.step == *count + 1 => *count += 1,
            _ => {
                assert_eq!(e.step, 1, "a stage's first event should be step 1: {e:?}");
                runs.push((e.stage, 1));
            }
        }
        assert!(e.step <= e.total, "{e:?}");
        assert!(e.objective.is_finite() && e.objective >= 0.0, "{e:?}");
    }
    runs
}

#[test]
fn progress_is_reported_once_per_kmeans_iteration() {
    let data = clustered(1000, 5, 8, 2.0, 0.5, 111);
    let config = KMeansConfig {
        n_clusters: 8,
        settings: settings(KMeansInit::KMeansPlusPlus, 30, None),
        seed: 1,
    };
    let mut events = Vec::new();
    let km = KMeans::train_with_progress(&data, 5, &config, Par::Seq, Stage::KMeans, &mut |p| {
        events.push(*p)
    })
    .unwrap();
    assert_eq!(events.len(), km.report.inertia.len());
    for (i, (e, &inertia)) in events.iter().zip(&km.report.inertia).enumerate() {
        assert_eq!(e.stage, Stage::KMeans);
        assert_eq!(e.step, i + 1);
        assert_eq!(e.total, 30);
        assert_eq!(e.objective, inertia);
    }
    // KMeans::train reports nothing but trains the same.
    let quiet = KMeans::train(&data, 5, &config, Par::Seq).unwrap();
    assert_eq!(quiet.report, km.report);
}

#[test]
fn ivfpq_progress_goes_coarse_then_each_subspace() {
    let (dim, n) = (12, 800);
    let data = clustered(n, dim, 6, 2.0, 0.5, 112);
    let iterations = 5;
    let mut config = IvfPqConfig::new(6, 3, 4);
    config.kmeans = KMeansSettings {
        max_iter: iterations,
        tolerance: 0.0, // every stage runs all its iterations
        init: KMeansInit::KMeansPlusPlus,
        max_points_per_centroid: None,
    };
    let mut events = Vec::new();
    IvfPqCodec::train(&data, dim, &config, Par::Seq, &mut |p| events.push(*p)).unwrap();
    let expected: Vec<(Stage, usize)> = std::iter::once((Stage::Coarse, iterations))
        .chain((0..3).map(|index| (Stage::Subspace { index, count: 3 }, iterations)))
        .collect();
    assert_eq!(stage_runs(&events), expected);
    assert!(events.iter().all(|e| e.total == iterations));

    // Without a coarse level, only the subspaces report.
    config.n_lists = 0;
    let mut events = Vec::new();
    IvfPqCodec::train(&data, dim, &config, Par::Seq, &mut |p| events.push(*p)).unwrap();
    assert_eq!(stage_runs(&events), expected[1..]);

    // With the default tolerance a stage may stop early, but still counts 1, 2, 3, ….
    config.n_lists = 6;
    config.kmeans.tolerance = 1e-2;
    config.kmeans.max_iter = 50;
    let mut events = Vec::new();
    IvfPqCodec::train(&data, dim, &config, Par::Seq, &mut |p| events.push(*p)).unwrap();
    let runs = stage_runs(&events);
    let stages: Vec<Stage> = runs.iter().map(|r| r.0).collect();
    assert_eq!(stages, expected.iter().map(|r| r.0).collect::<Vec<_>>());
    assert!(runs.iter().all(|&(_, count)| (1..=50).contains(&count)));

    // OPQ reports its rounds, then the final fit's stages.
    let opq = OpqConfig {
        n_rounds: 2,
        iterations_per_round: 2,
        max_train_points: None,
        ..OpqConfig::default()
    };
    config.kmeans.tolerance = 0.0;
    config.kmeans.max_iter = iterations;
    let mut events = Vec::new();
    train_opq(&data, dim, &config, &opq, Par::Seq, &mut |p| {
        events.push(*p)
    })
    .unwrap();
    let mut with_rounds = vec![(Stage::OpqRound, 2)];
    with_rounds.extend(expected);
    assert_eq!(stage_runs(&events), with_rounds);
}

#[test]
fn encode_with_errors_reports_each_rows_squared_error() {
    // The errors come from the encode's scores, not a decode: they must match the decoded
    // reconstructions' errors (to f32 rounding), with the same codes as `encode`, for every
    // block/tail split of the multi-row kernel, threads, a rotation and padding.
    let dim = 14;
    let data = gaussian(1500, dim, 1.0, 21);
    let config = ivfpq_config(8, 4, 5);
    let mut codecs = vec![ivfpq_train(&data, dim, &config)];
    let opq = OpqConfig {
        n_rounds: 2,
        ..OpqConfig::default()
    };
    codecs.push(
        train_opq(&data, dim, &config, &opq, Par::Seq, &mut |_| {})
            .unwrap()
            .0,
    );
    for codec in &codecs {
        let m = codec.pq().n_subspaces();
        for n in [1, 5, 67, 300] {
            let x = &data[..n * dim];
            let (lists, codes, decoded, _) = round_trip(codec, x);
            for par in [Par::Seq, Par::rayon(2)] {
                let mut got_lists = vec![0u32; n];
                let mut got_codes = vec![0u16; n * m];
                let mut errors = vec![f32::NAN; n];
                codec
                    .encode_with_errors(x, &mut got_lists, &mut got_codes, &mut errors, par)
                    .unwrap();
                assert_eq!((&got_lists, &got_codes), (&lists, &codes));
                // The error is the one in the rotated, padded space: ‖x' − (v_j + PQ(r))‖².
                let p = codec.padded_dim();
                let rotated = codec.rotate(x, Par::Seq).unwrap();
                let mut residuals = vec![0.0f32; n * p];
                codec.pq().decode(&codes, &mut residuals).unwrap();
                let centroids = codec.coarse().unwrap().centroids().as_slice();
                for (i, &e) in errors.iter().enumerate() {
                    let j = lists[i] as usize;
                    let exact: f64 = (0..p)
                        .map(|c| {
                            let z = centroids[j * p + c] + residuals[i * p + c];
                            f64::from(rotated[i * p + c] - z).powi(2)
                        })
                        .sum();
                    assert!(
                        (f64::from(e) - exact).abs() <= 1e-4 * (1.0 + exact),
                        "row {i}: {e} vs {exact}"
                    );
                    // It bounds the error of the decoded vector, which drops the padded
                    // coordinates, and equals it when the rotation is the identity.
                    let decoded =
                        sq_dist(&x[i * dim..(i + 1) * dim], &decoded[i * dim..(i + 1) * dim]);
                    assert!(decoded <= exact * (1.0 + 1e-4) + 1e-6, "row {i}");
                    if codec.rotation().is_identity() {
                        assert!((decoded - exact).abs() <= 1e-4 * (1.0 + exact), "row {i}");
                    }
                }
            }
        }
    }
    let mut errors = vec![0.0f32; 2];
    let err = codecs[0]
        .encode_with_errors(
            &data[..dim],
            &mut [0],
            &mut [0u16; 4],
            &mut errors,
            Par::Seq,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            PqError::DimensionMismatch {
                what: "encode errors",
                ..
            }
        ),
        "{err}"
    );
}

/// OPQ's starting rotation: from the identity, a subspace that starts on zero padding stays
/// on it (the alternation is local), so 9 coordinates padded to 12 use 3 of the 4 subspaces;
/// from a random rotation all 4 carry data and the distortion is lower, under either objective.
#[test]
fn opq_from_a_random_rotation_uses_every_subspace_of_padded_data() {
    let (dim, n) = (9, 3000);
    let data = decaying_mixed(n, dim, 0.85, 1.0, 95, 96);
    let config = ivfpq_config(4, 4, 4);
    for objective in [OpqObjective::Vectors, OpqObjective::IvfResiduals] {
        let distortion = |init| {
            let opq = OpqConfig {
                n_rounds: 8,
                max_train_points: None,
                init,
                objective,
                ..OpqConfig::default()
            };
            let (codec, report) =
                train_opq(&data, dim, &config, &opq, Par::Seq, &mut |_| {}).unwrap();
            assert_eq!(codec.padded_dim(), 12);
            *report.distortion.last().unwrap()
        };
        let (identity, random) = (distortion(OpqInit::Identity), distortion(OpqInit::Random));
        assert!(
            random < 0.9 * identity,
            "{objective:?}: from a random rotation {random}, from the identity {identity}"
        );
    }
}
