//! Search behaviour: ADC scores against decoded vectors, full probes against brute force, SIMD
//! kernels against the scalar one, batches against single queries, and bad input.

mod common;

use std::collections::HashMap;

use faer::Par;
use poeem_rotation::Rotation;
use poeem_search::{
    Index, IndexParams, IndexParts, Kernel, Metric, Probe, SearchError, SearchIndex, SearchParams,
    Searcher, SharedIndex, TABLE_STRIDE, encode_index,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn config(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The shape of a random test index.
#[derive(Debug, Clone, Copy)]
struct Shape {
    dim: usize,
    n_lists: usize,
    n_subspaces: usize,
    n_bits: u32,
    metric: Metric,
    n_items: usize,
    rotated: bool,
}

fn uniform(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A random index: random centroids, codebooks, codes, list assignments and distinct ids.
fn random_index(shape: Shape, seed: u64) -> IndexParts {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let padded_dim = shape.dim.div_ceil(shape.n_subspaces) * shape.n_subspaces;
    let params = IndexParams {
        dim: shape.dim,
        padded_dim,
        n_lists: shape.n_lists,
        n_subspaces: shape.n_subspaces,
        n_bits: shape.n_bits,
        metric: shape.metric,
        n_items: 0,
        code_layout: Default::default(),
    };
    let rotation = shape
        .rotated
        .then(|| Rotation::random(padded_dim, seed ^ 0x5eed).into_vec());
    let centroids = uniform(&mut rng, shape.n_lists * padded_dim);
    let codebooks = uniform(&mut rng, params.n_codewords() * padded_dim);
    let lists: Vec<u32> = (0..shape.n_items)
        .map(|_| rng.random_range(0..shape.n_lists as u32))
        .collect();
    let codes: Vec<u16> = (0..shape.n_items * shape.n_subspaces)
        .map(|_| rng.random_range(0..params.n_codewords() as u32) as u16)
        .collect();
    // Distinct ids in a scrambled order, so that id order differs from slot order.
    let ids: Vec<u64> = (0..shape.n_items as u64)
        .map(|i| (i * 7919 + 13) % 1_000_003 + (1 << 40))
        .collect();
    IndexParts::from_item_codes(
        params,
        rotation,
        centroids,
        codebooks,
        &lists,
        &codes,
        &ids,
        poeem_search::IndexMetadata::default(),
    )
    .expect("consistent parts")
}

/// The exact scores of every item against `query`, computed in f64 from the decoded vectors in
/// the rotated space: `(id, list, score)`, best first (ties to the smaller id).
struct Exact {
    items: Vec<(u64, usize, f64)>,
    /// A tolerance for comparing float32 ADC scores with these.
    tol: f64,
}

fn rotate_query(parts: &IndexParts, query: &[f32]) -> Vec<f64> {
    let p = parts.params;
    let mut q: Vec<f64> = query.iter().map(|&v| f64::from(v)).collect();
    if p.metric == Metric::Cosine {
        let norm = q.iter().map(|v| v * v).sum::<f64>().sqrt();
        q.iter_mut().for_each(|v| *v /= norm);
    }
    q.resize(p.padded_dim, 0.0);
    match &parts.rotation {
        None => q,
        Some(r) => (0..p.padded_dim)
            .map(|j| {
                (0..p.padded_dim)
                    .map(|i| q[i] * f64::from(r[i * p.padded_dim + j]))
                    .sum()
            })
            .collect(),
    }
}

fn exact_scores(parts: &IndexParts, query: &[f32]) -> Exact {
    let view = parts.view().unwrap();
    let p = parts.params;
    let q = rotate_query(parts, query);
    let q_norm2: f64 = q.iter().map(|v| v * v).sum();
    let mut z = vec![0.0f32; p.padded_dim];
    let mut items = Vec::new();
    let mut max_norm2 = 0.0f64;
    for list in 0..p.n_lists {
        for (pos, &id) in view.list(list).ids.iter().enumerate() {
            view.reconstruct_rotated(list, pos, &mut z);
            let z: Vec<f64> = z.iter().map(|&v| f64::from(v)).collect();
            max_norm2 = max_norm2.max(z.iter().map(|v| v * v).sum());
            let score: f64 = match p.metric {
                Metric::L2 => q.iter().zip(&z).map(|(a, b)| (a - b) * (a - b)).sum(),
                _ => q.iter().zip(&z).map(|(a, b)| a * b).sum(),
            };
            items.push((id, list, score));
        }
    }
    let higher = p.metric.higher_is_better();
    items.sort_by(|a, b| {
        let by_score = if higher {
            b.2.total_cmp(&a.2)
        } else {
            a.2.total_cmp(&b.2)
        };
        by_score.then(a.0.cmp(&b.0))
    });
    let tol = 2e-5 * (1.0 + q_norm2 + max_norm2) * (p.n_subspaces as f64).sqrt();
    Exact { items, tol }
}

/// Asserts that a search result (`found` of `ids` / `scores`) equals the best of `exact`:
/// scores within tolerance, ids equal wherever the exact scores are separated, then padding.
fn assert_matches(
    exact: &[(u64, usize, f64)],
    tol: f64,
    found: usize,
    ids: &[i64],
    scores: &[f32],
    metric: Metric,
) {
    let k = ids.len();
    assert_eq!(found, k.min(exact.len()), "number found");
    for i in 0..found {
        let (id, _, score) = exact[i];
        assert!(
            (f64::from(scores[i]) - score).abs() <= tol,
            "rank {i}: score {} vs exact {score} (tol {tol})",
            scores[i]
        );
        let separated = (i == 0 || (exact[i - 1].2 - score).abs() > 2.0 * tol)
            && exact
                .get(i + 1)
                .is_none_or(|next| (next.2 - score).abs() > 2.0 * tol);
        if separated {
            assert_eq!(ids[i], id as i64, "rank {i}");
        }
    }
    let worst = if metric.higher_is_better() {
        f32::NEG_INFINITY
    } else {
        f32::INFINITY
    };
    for i in found..k {
        assert_eq!((ids[i], scores[i]), (-1, worst), "padding at {i}");
    }
}

fn shape_strategy() -> impl Strategy<Value = Shape> {
    (
        1usize..20,
        1usize..6,
        prop_oneof![Just(1usize), Just(2), Just(3), Just(4)],
        prop_oneof![Just(2u32), Just(5), Just(8), Just(9)],
        prop_oneof![
            Just(Metric::InnerProduct),
            Just(Metric::L2),
            Just(Metric::Cosine)
        ],
        0usize..120,
        any::<bool>(),
    )
        .prop_map(
            |(dim, n_lists, n_subspaces, n_bits, metric, n_items, rotated)| Shape {
                dim,
                n_lists,
                n_subspaces,
                n_bits,
                metric,
                n_items,
                rotated,
            },
        )
}

fn random_query(rng: &mut ChaCha8Rng, dim: usize) -> Vec<f32> {
    loop {
        let q = uniform(rng, dim);
        if q.iter().any(|&v| v != 0.0) {
            return q;
        }
    }
}

proptest! {
    #![proptest_config(config(48, 0x5ea7c4))]

    /// With every list probed and k = n_items, every item comes back with its ADC score, which
    /// equals the exact score of its decoded vector.
    #[test]
    fn adc_score_equals_exact_score_of_decoded_vector(shape in shape_strategy(), seed in any::<u64>()) {
        let parts = random_index(shape, seed);
        let index = SearchIndex::new(parts.view().unwrap());
        let mut searcher = Searcher::new(&index);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 1);
        let query = random_query(&mut rng, shape.dim);
        let exact = exact_scores(&parts, &query);
        let by_id: HashMap<u64, f64> = exact.items.iter().map(|&(id, _, s)| (id, s)).collect();
        let k = shape.n_items.max(1);
        let (mut ids, mut scores) = (vec![0i64; k], vec![0.0f32; k]);
        let params = SearchParams::new(k, shape.n_lists);
        let found = searcher.search_one(&query, &params, &mut ids, &mut scores).unwrap();
        prop_assert_eq!(found, shape.n_items);
        let mut seen = std::collections::HashSet::new();
        for (&id, &score) in ids[..found].iter().zip(&scores) {
            let want = by_id[&(id as u64)];
            prop_assert!((f64::from(score) - want).abs() <= exact.tol, "id {id}: {score} vs {want}");
            prop_assert!(seen.insert(id), "id {} returned twice", id);
        }
    }

    /// With nprobe = n_lists the search equals brute force over the decoded vectors.
    #[test]
    fn full_probe_equals_brute_force(shape in shape_strategy(), k in 1usize..12, seed in any::<u64>()) {
        let parts = random_index(shape, seed);
        let index = SearchIndex::new(parts.view().unwrap());
        let mut searcher = Searcher::new(&index);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 2);
        for _ in 0..3 {
            let query = random_query(&mut rng, shape.dim);
            let exact = exact_scores(&parts, &query);
            let (mut ids, mut scores) = (vec![0i64; k], vec![0.0f32; k]);
            // nprobe above n_lists is clamped.
            let params = SearchParams::new(k, shape.n_lists + 3);
            let found = searcher.search_one(&query, &params, &mut ids, &mut scores).unwrap();
            assert_matches(&exact.items, exact.tol, found, &ids, &scores, shape.metric);
        }
    }

    /// With nprobe = 1, results come from the one list the probe picks, and equal brute force
    /// over that list.
    #[test]
    fn one_probe_scans_the_chosen_list(shape in shape_strategy(), seed in any::<u64>()) {
        let parts = random_index(shape, seed);
        let view = parts.view().unwrap();
        let index = SearchIndex::new(view);
        let mut searcher = Searcher::new(&index);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 3);
        let query = random_query(&mut rng, shape.dim);
        let q = rotate_query(&parts, &query);
        let d = shape.dim.div_ceil(shape.n_subspaces) * shape.n_subspaces;
        let centroid = |j: usize| &view.coarse_centroids()[j * d..(j + 1) * d];
        let l2 = |j: usize| q.iter().zip(centroid(j)).map(|(a, &b)| (a - f64::from(b)).powi(2)).sum::<f64>();
        let ip = |j: usize| q.iter().zip(centroid(j)).map(|(a, &b)| a * f64::from(b)).sum::<f64>();
        for probe in [Probe::Auto, Probe::L2, Probe::InnerProduct] {
            let by_l2 = match probe {
                Probe::Auto => shape.metric != Metric::InnerProduct,
                _ => probe == Probe::L2,
            };
            let key = |j: usize| if by_l2 { l2(j) } else { -ip(j) };
            let mut order: Vec<usize> = (0..shape.n_lists).collect();
            order.sort_by(|&a, &b| key(a).total_cmp(&key(b)).then(a.cmp(&b)));
            // Skip near-ties between the first two lists.
            if order.len() > 1 && (key(order[0]) - key(order[1])).abs() < 1e-4 {
                continue;
            }
            let exact = exact_scores(&parts, &query);
            let in_list: Vec<_> = exact.items.iter().copied().filter(|it| it.1 == order[0]).collect();
            let k = 5;
            let (mut ids, mut scores) = (vec![0i64; k], vec![0.0f32; k]);
            let params = SearchParams::new(k, 1).with_probe(probe);
            let found = searcher.search_one(&query, &params, &mut ids, &mut scores).unwrap();
            assert_matches(&in_list, exact.tol, found, &ids, &scores, shape.metric);
        }
    }

    /// Every kernel this CPU runs scores blocks with the same bits as the scalar kernel, which
    /// adds `bias`, the slot's bias and the table entries in subspace order.
    #[test]
    fn simd_kernels_equal_scalar(
        n_subspaces in 1usize..20,
        n_blocks in 0usize..5,
        bias in -10.0f32..10.0,
        with_slot_bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let table: Vec<f32> = (0..n_subspaces * TABLE_STRIDE).map(|_| rng.random_range(-100.0f32..100.0)).collect();
        let codes: Vec<u8> = (0..n_blocks * n_subspaces * 32).map(|_| rng.random()).collect();
        let slot_bias: Vec<f32> = (0..n_blocks * 32).map(|_| rng.random_range(-50.0f32..50.0)).collect();
        let slot_bias = with_slot_bias.then_some(&slot_bias[..]);
        let score = |kernel: Kernel, out: &mut [f32]| match slot_bias {
            None => kernel.score_blocks(&table, n_subspaces, bias, &codes, out),
            Some(s) => kernel.score_blocks_with_slot_bias(&table, n_subspaces, bias, s, &codes, out),
        };
        let mut want = vec![0.0f32; n_blocks * 32];
        score(Kernel::Scalar, &mut want).unwrap();
        for (b, block) in codes.chunks_exact(n_subspaces * 32).enumerate() {
            for l in 0..32 {
                let start = slot_bias.map_or(bias, |s| bias + s[b * 32 + l]);
                let sum = (0..n_subspaces).fold(start, |acc, m| acc + table[m * TABLE_STRIDE + usize::from(block[m * 32 + l])]);
                prop_assert_eq!(want[b * 32 + l].to_bits(), sum.to_bits());
            }
        }
        for kernel in Kernel::ALL {
            let mut got = vec![0.0f32; n_blocks * 32];
            let result = score(kernel, &mut got);
            if !kernel.is_available() {
                prop_assert!(result.is_err());
                continue;
            }
            result.unwrap();
            let (got, want): (Vec<u32>, Vec<u32>) = (got.iter().map(|v| v.to_bits()).collect(), want.iter().map(|v| v.to_bits()).collect());
            prop_assert_eq!(got, want, "kernel {}", kernel);
        }
    }

    /// Searches with each available kernel return the same ids and score bits.
    #[test]
    fn searches_agree_across_kernels(shape in shape_strategy(), seed in any::<u64>()) {
        let parts = random_index(shape, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 4);
        let query = random_query(&mut rng, shape.dim);
        let params = SearchParams::new(7, 2);
        let mut results = Vec::new();
        for kernel in Kernel::ALL {
            let Ok(index) = SearchIndex::with_kernel(parts.view().unwrap(), kernel) else {
                prop_assert!(!kernel.is_available());
                continue;
            };
            prop_assert_eq!(index.kernel(), kernel);
            let (mut ids, mut scores) = (vec![0i64; 7], vec![0.0f32; 7]);
            Searcher::new(&index).search_one(&query, &params, &mut ids, &mut scores).unwrap();
            results.push((ids, scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>()));
        }
        for r in &results[1..] {
            prop_assert_eq!(r, &results[0]);
        }
    }
}

/// Compares two result rows: scores within `tol`, ids equal where scores are separated.
fn assert_rows_close(a: (&[i64], &[f32]), b: (&[i64], &[f32]), tol: f32) {
    let (a_ids, a_scores) = a;
    let (b_ids, b_scores) = b;
    for i in 0..a_ids.len() {
        let (sa, sb) = (a_scores[i], b_scores[i]);
        if sa.is_infinite() || sb.is_infinite() {
            assert_eq!((a_ids[i], sa), (b_ids[i], sb), "rank {i}");
            continue;
        }
        assert!(
            (sa - sb).abs() <= tol * (1.0 + sa.abs()),
            "rank {i}: {sa} vs {sb}"
        );
        let separated = (i == 0 || (a_scores[i - 1] - sa).abs() > 2.0 * tol * (1.0 + sa.abs()))
            && a_scores.get(i + 1).is_none_or(|&next| {
                next.is_infinite() || (next - sa).abs() > 2.0 * tol * (1.0 + sa.abs())
            });
        if separated {
            assert_eq!(a_ids[i], b_ids[i], "rank {i}");
        }
    }
}

#[test]
fn batch_equals_search_one() {
    for (case, metric) in Metric::ALL.into_iter().enumerate() {
        for (n_bits, rotated) in [(8, true), (4, false), (10, true)] {
            let shape = Shape {
                dim: 13,
                n_lists: 7,
                n_subspaces: 4,
                n_bits,
                metric,
                n_items: 600,
                rotated,
            };
            let parts = random_index(shape, 40 + case as u64);
            let index = SearchIndex::new(parts.view().unwrap());
            let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
            // More queries than one batch chunk, and not a multiple of it.
            let n = 150;
            let queries: Vec<f32> = (0..n)
                .flat_map(|_| random_query(&mut rng, shape.dim))
                .collect();
            let k = 10;
            for nprobe in [2, 7] {
                let params = SearchParams::new(k, nprobe);
                let mut one = (vec![0i64; n * k], vec![0.0f32; n * k]);
                let mut searcher = Searcher::new(&index);
                for ((q, ids), scores) in queries
                    .chunks_exact(shape.dim)
                    .zip(one.0.chunks_exact_mut(k))
                    .zip(one.1.chunks_exact_mut(k))
                {
                    searcher.search_one(q, &params, ids, scores).unwrap();
                }
                let mut batches = Vec::new();
                for par in [Par::Seq, Par::rayon(2), Par::rayon(3)] {
                    let mut batch = (vec![0i64; n * k], vec![0.0f32; n * k]);
                    index
                        .search_batch(&queries, &params, &mut batch.0, &mut batch.1, par)
                        .unwrap();
                    for row in 0..n {
                        let r = row * k..(row + 1) * k;
                        assert_rows_close(
                            (&batch.0[r.clone()], &batch.1[r.clone()]),
                            (&one.0[r.clone()], &one.1[r]),
                            1e-4,
                        );
                    }
                    batches.push(batch);
                }
                // The batch results do not depend on the thread count.
                for b in &batches[1..] {
                    assert_eq!(b.0, batches[0].0);
                    let bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&b.1), bits(&batches[0].1));
                }
            }
        }
    }
}

#[test]
fn k_above_the_item_count_pads_with_minus_one() {
    for metric in Metric::ALL {
        let shape = Shape {
            dim: 6,
            n_lists: 3,
            n_subspaces: 2,
            n_bits: 8,
            metric,
            n_items: 5,
            rotated: true,
        };
        let parts = random_index(shape, 7);
        let index = SearchIndex::new(parts.view().unwrap());
        let query = [0.3, -0.2, 0.5, 0.1, 0.0, -0.7];
        let k = 9;
        let (mut ids, mut scores) = (vec![0i64; k], vec![0.0f32; k]);
        let found = Searcher::new(&index)
            .search_one(&query, &SearchParams::new(k, 3), &mut ids, &mut scores)
            .unwrap();
        assert_eq!(found, 5);
        let worst = if metric.higher_is_better() {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        };
        assert!(ids[..5].iter().all(|&id| id >= 1 << 40));
        assert_eq!(&ids[5..], &[-1; 4]);
        assert!(scores[5..].iter().all(|&s| s == worst));
        // The same from a batch of two.
        let queries = [query, query].concat();
        let (mut bids, mut bscores) = (vec![0i64; 2 * k], vec![0.0f32; 2 * k]);
        index
            .search_batch(
                &queries,
                &SearchParams::new(k, 3),
                &mut bids,
                &mut bscores,
                Par::Seq,
            )
            .unwrap();
        assert_eq!(&bids[k + 5..], &[-1; 4]);
        assert_eq!(&bids[..5], &ids[..5]);
    }
}

#[test]
fn an_empty_index_returns_only_padding() {
    let shape = Shape {
        dim: 4,
        n_lists: 2,
        n_subspaces: 2,
        n_bits: 8,
        metric: Metric::L2,
        n_items: 0,
        rotated: false,
    };
    let parts = random_index(shape, 1);
    let index = SearchIndex::new(parts.view().unwrap());
    let (mut ids, mut scores) = (vec![0i64; 3], vec![0.0f32; 3]);
    let found = Searcher::new(&index)
        .search_one(
            &[1.0, 2.0, 3.0, 4.0],
            &SearchParams::new(3, 2),
            &mut ids,
            &mut scores,
        )
        .unwrap();
    assert_eq!(found, 0);
    assert_eq!(ids, [-1; 3]);
    assert_eq!(scores, [f32::INFINITY; 3]);
}

#[test]
fn bad_queries_and_parameters_are_errors() {
    let shape = Shape {
        dim: 5,
        n_lists: 3,
        n_subspaces: 2,
        n_bits: 8,
        metric: Metric::Cosine,
        n_items: 40,
        rotated: true,
    };
    let parts = random_index(shape, 3);
    let index = SearchIndex::new(parts.view().unwrap());
    let mut searcher = Searcher::new(&index);
    let good = [0.1f32, 0.2, 0.3, 0.4, 0.5];
    let params = SearchParams::new(4, 2);
    let (mut ids, mut scores) = (vec![0i64; 4], vec![0.0f32; 4]);
    let mut one = |q: &[f32], p: &SearchParams, ids: &mut [i64], scores: &mut [f32]| {
        searcher.search_one(q, p, ids, scores)
    };
    assert!(one(&good, &params, &mut ids, &mut scores).is_ok());
    assert!(matches!(
        one(&good[..4], &params, &mut ids, &mut scores),
        Err(SearchError::DimensionMismatch {
            expected: 5,
            got: 4,
            ..
        })
    ));
    let mut nan = good;
    nan[2] = f32::NAN;
    assert!(matches!(
        one(&nan, &params, &mut ids, &mut scores),
        Err(SearchError::NonFinite { row: 0, col: 2, .. })
    ));
    let mut inf = good;
    inf[4] = f32::NEG_INFINITY;
    assert!(matches!(
        one(&inf, &params, &mut ids, &mut scores),
        Err(SearchError::NonFinite { col: 4, .. })
    ));
    assert!(matches!(
        one(&[0.0; 5], &params, &mut ids, &mut scores),
        Err(SearchError::InvalidParameter { name: "query", .. })
    ));
    for bad in [SearchParams::new(0, 2), SearchParams::new(4, 0)] {
        assert!(matches!(
            one(&good, &bad, &mut ids, &mut scores),
            Err(SearchError::InvalidParameter { .. })
        ));
    }
    assert!(matches!(
        one(&good, &params, &mut ids[..3], &mut scores),
        Err(SearchError::DimensionMismatch {
            what: "result ids",
            ..
        })
    ));

    // Batches check every row before searching any.
    let mut queries = [good, good, good].concat();
    let (mut bids, mut bscores) = (vec![7i64; 12], vec![0.0f32; 12]);
    assert!(matches!(
        index.search_batch(&queries[..14], &params, &mut bids, &mut bscores, Par::Seq),
        Err(SearchError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        index.search_batch(
            &queries,
            &params,
            &mut bids[..8],
            &mut bscores[..8],
            Par::Seq
        ),
        Err(SearchError::DimensionMismatch { .. })
    ));
    queries[11] = f32::NAN;
    assert!(matches!(
        index.search_batch(&queries, &params, &mut bids, &mut bscores, Par::rayon(2)),
        Err(SearchError::NonFinite { row: 2, col: 1, .. })
    ));
    assert_eq!(bids, [7; 12], "nothing written on error");
    assert!(matches!(
        index.search_batch(
            &queries,
            &SearchParams::new(0, 1),
            &mut bids,
            &mut bscores,
            Par::Seq
        ),
        Err(SearchError::InvalidParameter { name: "k", .. })
    ));
    // An empty batch is fine.
    index
        .search_batch(&[], &params, &mut [], &mut [], Par::Seq)
        .unwrap();
}

#[test]
fn score_blocks_rejects_bad_lengths() {
    let table = vec![0.0f32; 2 * TABLE_STRIDE];
    let codes = vec![0u8; 2 * 32];
    let mut out = vec![0.0f32; 32];
    let kernel = Kernel::detect();
    assert!(
        kernel
            .score_blocks(&table, 2, 0.0, &codes, &mut out)
            .is_ok()
    );
    assert!(
        kernel
            .score_blocks(&table[1..], 2, 0.0, &codes, &mut out)
            .is_err()
    );
    assert!(
        kernel
            .score_blocks(&table, 2, 0.0, &codes[1..], &mut out)
            .is_err()
    );
    assert!(
        kernel
            .score_blocks(&table, 2, 0.0, &codes, &mut out[1..])
            .is_err()
    );
    assert!(
        kernel
            .score_blocks_with_slot_bias(&table, 2, 0.0, &[0.0; 31], &codes, &mut out)
            .is_err()
    );
    assert!(kernel.score_blocks(&table, 0, 0.0, &[], &mut []).is_err());
}

#[test]
fn kernel_names_round_trip() {
    for kernel in Kernel::ALL {
        assert_eq!(kernel.name().parse::<Kernel>().unwrap(), kernel);
    }
    assert!("sse9".parse::<Kernel>().is_err());
    assert!(Kernel::detect().is_available());
    assert_eq!("ip".parse::<Probe>().unwrap(), Probe::InnerProduct);
    assert_eq!(Probe::default(), Probe::Auto);
    for probe in [Probe::Auto, Probe::L2, Probe::InnerProduct] {
        assert_eq!(probe.name().parse::<Probe>().unwrap(), probe);
    }
    assert_eq!(
        Probe::Auto.resolve(Metric::InnerProduct),
        Probe::InnerProduct
    );
    assert_eq!(Probe::Auto.resolve(Metric::Cosine), Probe::L2);
    assert_eq!(Probe::InnerProduct.resolve(Metric::L2), Probe::InnerProduct);
}

#[test]
fn corrupt_codes_and_floats_never_panic() {
    // Codes at or above 2^n_bits (a corrupt file) index zero table entries.
    let shape = Shape {
        dim: 8,
        n_lists: 2,
        n_subspaces: 4,
        n_bits: 3,
        metric: Metric::InnerProduct,
        n_items: 70,
        rotated: false,
    };
    let mut parts = random_index(shape, 11);
    parts.codes.iter_mut().step_by(3).for_each(|c| *c = 0xff);
    let query = [0.5f32; 8];
    let params = SearchParams::new(10, 2);
    let (mut ids, mut scores) = (vec![0i64; 10], vec![0.0f32; 10]);
    {
        let index = SearchIndex::new(parts.view().unwrap());
        let found = Searcher::new(&index)
            .search_one(&query, &params, &mut ids, &mut scores)
            .unwrap();
        assert_eq!(found, 10);
    }
    // Non-finite codebook values: items scored NaN are never returned, and nothing panics.
    for metric in Metric::ALL {
        let mut parts = random_index(Shape { metric, ..shape }, 12);
        parts.codebooks[0] = f32::NAN;
        parts.codebooks[9] = f32::INFINITY;
        parts.coarse_centroids[1] = f32::NAN;
        let index = SearchIndex::new(parts.view().unwrap());
        let found = Searcher::new(&index)
            .search_one(&query, &params, &mut ids, &mut scores)
            .unwrap();
        assert!(scores[..found].iter().all(|s| !s.is_nan()));
        let mut bids = vec![0i64; 20];
        let mut bscores = vec![0.0f32; 20];
        index
            .search_batch(
                &[query, query].concat(),
                &params,
                &mut bids,
                &mut bscores,
                Par::Seq,
            )
            .unwrap();
        assert!(bscores.iter().all(|s| !s.is_nan()));
    }
}

#[test]
fn search_index_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SearchIndex<'static>>();
    let shape = Shape {
        dim: 10,
        n_lists: 4,
        n_subspaces: 5,
        n_bits: 8,
        metric: Metric::L2,
        n_items: 300,
        rotated: true,
    };
    let parts = random_index(shape, 5);
    let index = SearchIndex::new(parts.view().unwrap());
    let query: Vec<f32> = (0..10).map(|i| i as f32 * 0.1).collect();
    let params = SearchParams::new(5, 2);
    let run = || {
        let (mut ids, mut scores) = (vec![0i64; 5], vec![0.0f32; 5]);
        Searcher::new(&index)
            .search_one(&query, &params, &mut ids, &mut scores)
            .unwrap();
        ids
    };
    let here = run();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(run)).collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), here);
        }
    });
}

/// Each query's `(ids, scores)` from one `Searcher` over `index`, in order.
fn search_each(
    index: &SearchIndex<'_>,
    queries: &[Vec<f32>],
    params: &SearchParams,
) -> Vec<(Vec<i64>, Vec<f32>)> {
    let mut searcher = Searcher::new(index);
    queries
        .iter()
        .map(|q| {
            let (mut ids, mut scores) = (vec![0i64; params.k], vec![0.0f32; params.k]);
            searcher
                .search_one(q, params, &mut ids, &mut scores)
                .unwrap();
            (ids, scores)
        })
        .collect()
}

#[test]
fn a_shared_index_searched_by_many_threads_gives_the_sequential_results() {
    fn assert_owned_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_owned_send_sync::<SharedIndex>();
    for (metric, rotated) in [(Metric::L2, true), (Metric::InnerProduct, false)] {
        let shape = Shape {
            dim: 12,
            n_lists: 8,
            n_subspaces: 4,
            n_bits: 8,
            metric,
            n_items: 2_000,
            rotated,
        };
        let mut parts = random_index(shape, 11);
        parts.metadata = poeem_search::IndexMetadata::default();
        let index = Index::from_bytes(&encode_index(&parts).unwrap()).unwrap();
        let shared = SharedIndex::new(index);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let queries: Vec<Vec<f32>> = (0..64).map(|_| random_query(&mut rng, 12)).collect();
        let params = SearchParams::new(10, 3);
        // The answers of a sequential loop, through the borrowed form of a separately prepared
        // index.
        let borrowed = SearchIndex::new(parts.view().unwrap());
        let expected = search_each(&borrowed, &queries, &params);
        // Four threads, each with a clone of the one value, searching every query in its own
        // order, and a batch search on the rayon pool at the same time.
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let shared = shared.clone();
                    let (queries, expected) = (&queries, &expected);
                    s.spawn(move || {
                        let search_index = shared.search_index();
                        let mut searcher = Searcher::new(&search_index);
                        for i in (0..queries.len()).map(|i| (i * 7 + t * 13) % queries.len()) {
                            let (mut ids, mut scores) = (vec![0i64; 10], vec![0.0f32; 10]);
                            searcher
                                .search_one(&queries[i], &params, &mut ids, &mut scores)
                                .unwrap();
                            assert_eq!((ids, scores), expected[i], "thread {t}, query {i}");
                        }
                    })
                })
                .collect();
            let flat: Vec<f32> = queries.concat();
            let (mut ids, mut scores) = (vec![0i64; 640], vec![0.0f32; 640]);
            shared
                .search_batch(&flat, &params, &mut ids, &mut scores, Par::rayon(2))
                .unwrap();
            for (i, (want_ids, want_scores)) in expected.iter().enumerate() {
                assert_rows_close(
                    (&ids[i * 10..(i + 1) * 10], &scores[i * 10..(i + 1) * 10]),
                    (want_ids, want_scores),
                    1e-4,
                );
            }
            for w in workers {
                w.join().unwrap();
            }
        });
        assert_eq!(shared.kernel(), borrowed.kernel());
    }
}

/// Excluding ids per query returns the best other items: what a search for every item returns
/// once the excluded ones are removed, cut to `k`, for any thread count (more queries than a
/// batch chunk, so that the exclusions follow their rows across chunks and tasks).
#[test]
fn excluded_ids_are_filtered_inside_the_top_k() {
    for (case, metric) in Metric::ALL.into_iter().enumerate() {
        let shape = Shape {
            dim: 9,
            n_lists: 5,
            n_subspaces: 3,
            n_bits: 6,
            metric,
            n_items: 300,
            rotated: case == 1,
        };
        let parts = random_index(shape, 70 + case as u64);
        let index = SearchIndex::new(parts.view().unwrap());
        let all_ids: Vec<u64> = parts
            .ids
            .iter()
            .copied()
            .filter(|&id| id != poeem_search::PADDING_ID)
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
        let n = 140;
        let queries: Vec<f32> = (0..n)
            .flat_map(|_| random_query(&mut rng, shape.dim))
            .collect();
        // Query r excludes r mod 40 random items (some repeated, some unknown ids).
        let excluded: Vec<Vec<u64>> = (0..n)
            .map(|r| {
                let mut x: Vec<u64> = (0..r % 40)
                    .map(|_| all_ids[rng.random_range(0..all_ids.len())])
                    .collect();
                x.push(7);
                x
            })
            .collect();
        let slices: Vec<&[u64]> = excluded.iter().map(Vec::as_slice).collect();
        let (k, n_all) = (10, shape.n_items);
        for nprobe in [1, 5] {
            let wide = SearchParams::new(n_all, nprobe);
            let mut every = (vec![0i64; n * n_all], vec![0.0f32; n * n_all]);
            index
                .search_batch(&queries, &wide, &mut every.0, &mut every.1, Par::Seq)
                .unwrap();
            let params = SearchParams::new(k, nprobe);
            let label = format!("{metric:?}, nprobe {nprobe}");
            common::assert_excluding_matches(
                &index, &queries, &excluded, &params, &every.0, &label,
            );
        }
        // One list of exclusions per query, or none.
        let mut out = (vec![0i64; n * k], vec![0.0f32; n * k]);
        let err = index
            .search_batch_excluding(
                &queries,
                &slices[1..],
                &SearchParams::new(k, 1),
                &mut out.0,
                &mut out.1,
                Par::Seq,
            )
            .unwrap_err();
        assert!(
            matches!(err, SearchError::DimensionMismatch { .. }),
            "{err}"
        );
    }
}

/// An L2 index computes its items' terms list by list as searches probe the lists: preparing
/// it touches no item, a search adds the terms of the lists it scanned and no others, and
/// `precompute_terms` (a server's warm-up) adds the rest without changing any result.
#[test]
fn l2_item_terms_are_computed_for_the_probed_lists_only() {
    let shape = Shape {
        dim: 12,
        n_lists: 8,
        n_subspaces: 4,
        n_bits: 8,
        metric: Metric::L2,
        n_items: 2_000,
        rotated: false,
    };
    let parts = random_index(shape, 21);
    let view = parts.view().unwrap();
    let slots_of = |j: usize| (view.list_offsets()[j + 1] - view.list_offsets()[j]) as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let queries: Vec<Vec<f32>> = (0..16).map(|_| random_query(&mut rng, 12)).collect();
    let params = SearchParams::new(10, 2);
    let search_all = |index: &SearchIndex<'_>| search_each(index, &queries, &params);

    let lazy = SearchIndex::new(view);
    let prepared = lazy.derived_bytes();
    let probed = lazy.probed_lists(&queries[0], 2, params.probe).unwrap();
    let (mut ids, mut scores) = (vec![0i64; 10], vec![0.0f32; 10]);
    Searcher::new(&lazy)
        .search_one(&queries[0], &params, &mut ids, &mut scores)
        .unwrap();
    let probed_slots: usize = probed.iter().map(|&j| slots_of(j as usize)).sum();
    assert!(probed_slots > 0 && probed_slots < view.slot_ids().len());
    assert_eq!(lazy.derived_bytes(), prepared + 4 * probed_slots);
    let from_lazy = search_all(&lazy);

    let warmed = SearchIndex::new(view);
    warmed.precompute_terms();
    assert_eq!(warmed.derived_bytes(), prepared + 4 * view.slot_ids().len());
    assert_eq!(search_all(&warmed), from_lazy);

    // Other metrics have no item terms to compute.
    let ip = random_index(
        Shape {
            metric: Metric::InnerProduct,
            ..shape
        },
        21,
    );
    let ip = SearchIndex::new(ip.view().unwrap());
    let before = ip.derived_bytes();
    ip.precompute_terms();
    assert_eq!(ip.derived_bytes(), before);
}
