//! The 4-bit fast-scan layout and re-ranking: SIMD sums against an independent re-implementation
//! of the layout, searches equal across kernels, quantized scores within the documented bound
//! of float ADC, and re-ranked results equal to exact search over the candidates.

mod common;

use poeem_rotation::Rotation;
use poeem_search::refine::{encode_float_refine, encode_pq8_refine};
use poeem_search::{
    CodeLayout, IndexParams, IndexParts, Kernel, Metric, RefineKind, SearchIndex, SearchParams,
    Searcher,
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

fn uniform(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A random fast-scan index whose items are random vectors encoded by nearest codewords of
/// random codebooks (so that scores vary as in a real index), plus those vectors.
fn random_fast_index(
    dim: usize,
    n_subspaces: usize,
    n_lists: usize,
    n_items: usize,
    metric: Metric,
    rotated: bool,
    seed: u64,
) -> (IndexParts, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let padded_dim = dim.div_ceil(n_subspaces) * n_subspaces;
    let params = IndexParams {
        dim,
        padded_dim,
        n_lists,
        n_subspaces,
        n_bits: 4,
        metric,
        n_items: 0,
        code_layout: CodeLayout::FastScan4,
    };
    let rotation = rotated.then(|| Rotation::random(padded_dim, seed ^ 0x5eed).into_vec());
    let centroids = uniform(&mut rng, n_lists * padded_dim);
    let codebooks = uniform(&mut rng, 16 * padded_dim);
    let mut vectors = uniform(&mut rng, n_items * dim);
    if metric == Metric::Cosine {
        for row in vectors.chunks_exact_mut(dim) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    let lists: Vec<u32> = (0..n_items)
        .map(|_| rng.random_range(0..n_lists as u32))
        .collect();
    let codes: Vec<u8> = (0..n_items * n_subspaces)
        .map(|_| rng.random_range(0..16u8))
        .collect();
    let ids: Vec<u64> = (0..n_items as u64)
        .map(|i| (i * 7919 + 13) % 1_000_003 + (1 << 40))
        .collect();
    let parts = IndexParts::from_item_codes(
        params,
        rotation,
        centroids,
        codebooks,
        &lists,
        &codes,
        &ids,
        poeem_search::IndexMetadata::default(),
    )
    .expect("consistent parts");
    (parts, vectors)
}

/// The items' vectors in slot order (zeros in padding slots), from input order.
fn by_slot(parts: &IndexParts, vectors: &[f32], n_items: usize) -> Vec<f32> {
    let dim = parts.params.dim;
    let mut out = vec![0.0f32; parts.ids.len() * dim];
    for (slot, &id) in parts.ids.iter().enumerate() {
        if let Some(item) =
            (0..n_items as u64).find(|&i| (i * 7919 + 13) % 1_000_003 + (1 << 40) == id)
        {
            let item = item as usize;
            out[slot * dim..(slot + 1) * dim]
                .copy_from_slice(&vectors[item * dim..(item + 1) * dim]);
        }
    }
    out
}

/// The fast-scan layout as `docs/index-format.md` states it, re-implemented: the code of
/// subspace `m`, lane `l` of a block.
fn spec_code(block: &[u8], m: usize, l: usize) -> usize {
    let byte = block[(m / 2) * 32 + (m % 2) * 16 + l % 16];
    usize::from(if l < 16 { byte & 0xF } else { byte >> 4 })
}

fn search(
    parts: &IndexParts,
    kernel: Kernel,
    query: &[f32],
    params: &SearchParams,
) -> (Vec<i64>, Vec<f32>) {
    let index = SearchIndex::with_kernel(parts.view().unwrap(), kernel).unwrap();
    let (mut ids, mut scores) = (vec![0i64; params.k], vec![0.0f32; params.k]);
    Searcher::new(&index)
        .search_one(query, params, &mut ids, &mut scores)
        .unwrap();
    (ids, scores)
}

fn metric_strategy() -> impl Strategy<Value = Metric> {
    prop_oneof![
        Just(Metric::InnerProduct),
        Just(Metric::L2),
        Just(Metric::Cosine)
    ]
}

proptest! {
    #![proptest_config(config(64, 0xFA57))]

    /// Every kernel this CPU runs sums fast-scan blocks exactly as the layout says.
    #[test]
    fn fast_scan_sums_equal_the_specification(
        n_subspaces in 1usize..40,
        n_blocks in 0usize..4,
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let groups = n_subspaces.div_ceil(2);
        let q_max = (65535 / n_subspaces).min(255) as u32;
        let mut entries: Vec<u8> = (0..groups * 32).map(|_| rng.random_range(0..=q_max) as u8).collect();
        entries[n_subspaces * 16..].fill(0);
        let codes: Vec<u8> = (0..n_blocks * groups * 32).map(|_| rng.random()).collect();
        let mut want = vec![0u16; n_blocks * 32];
        for (b, block) in codes.chunks_exact(groups * 32).enumerate() {
            for l in 0..32 {
                want[b * 32 + l] = (0..n_subspaces)
                    .map(|m| u32::from(entries[m * 16 + spec_code(block, m, l)]))
                    .sum::<u32>() as u16;
            }
        }
        for kernel in Kernel::ALL {
            let mut got = vec![0u16; n_blocks * 32];
            let result = kernel.sum_blocks_4bit(&entries, n_subspaces, &codes, &mut got);
            if !kernel.is_available() {
                prop_assert!(result.is_err());
                continue;
            }
            result.unwrap();
            prop_assert_eq!(&got, &want, "kernel {}", kernel);
        }
    }

    /// Searches of fast-scan indexes return the same ids and score bits with every kernel,
    /// with and without re-ranking, for list sizes that are not multiples of 32.
    #[test]
    fn fast_scan_searches_agree_across_kernels(
        dim in 1usize..20,
        n_subspaces in 1usize..9,
        n_lists in 1usize..5,
        n_items in 0usize..150,
        metric in metric_strategy(),
        rotated in any::<bool>(),
        k in 1usize..20,
        nprobe in 1usize..5,
        refine in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let n_subspaces = n_subspaces.min(dim);
        let (mut parts, vectors) =
            random_fast_index(dim, n_subspaces, n_lists, n_items, metric, rotated, seed);
        if refine {
            let slots = by_slot(&parts, &vectors, n_items);
            parts.refine = Some(encode_float_refine(RefineKind::F32, dim, &slots));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 7);
        let query = uniform(&mut rng, dim);
        prop_assume!(query.iter().any(|&v| v != 0.0));
        let params = SearchParams::new(k, nprobe).with_rerank_factor(2);
        let want = search(&parts, Kernel::Scalar, &query, &params);
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            let got = search(&parts, kernel, &query, &params);
            prop_assert_eq!(&got.0, &want.0, "kernel {}", kernel);
            let bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&got.1), bits(&want.1), "kernel {}", kernel);
        }
    }

    /// Quantized scores are within `M · δ / 2` of the float ADC score of the decoded item, where
    /// `δ = max_m range_m / q_max` is the step of the query's (and, for L2, the list's) table.
    #[test]
    fn quantized_scores_are_within_the_bound_of_float_adc(
        dim in 1usize..20,
        n_subspaces in 1usize..9,
        n_lists in 1usize..4,
        n_items in 1usize..100,
        metric in metric_strategy(),
        rotated in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let n_subspaces = n_subspaces.min(dim);
        let (parts, _) = random_fast_index(dim, n_subspaces, n_lists, n_items, metric, rotated, seed);
        let p = parts.params;
        let view = parts.view().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 9);
        let query = uniform(&mut rng, dim);
        prop_assume!(query.iter().any(|&v| v != 0.0));
        let params = SearchParams::new(n_items, n_lists).with_rerank_factor(0);
        let (ids, scores) = search(&parts, Kernel::detect(), &query, &params);
        // q' in f64.
        let mut q: Vec<f64> = query.iter().map(|&v| f64::from(v)).collect();
        if metric == Metric::Cosine {
            let norm = q.iter().map(|v| v * v).sum::<f64>().sqrt();
            q.iter_mut().for_each(|v| *v /= norm);
        }
        q.resize(p.padded_dim, 0.0);
        if let Some(r) = &parts.rotation {
            q = (0..p.padded_dim)
                .map(|j| (0..p.padded_dim).map(|i| q[i] * f64::from(r[i * p.padded_dim + j])).sum())
                .collect();
        }
        let sub = p.sub_dim();
        let q_max = (65535 / n_subspaces).min(255) as f64;
        let word = |m: usize, k: usize| &view.codebooks()[(m * 16 + k) * sub..(m * 16 + k + 1) * sub];
        let mut z = vec![0.0f32; p.padded_dim];
        for list in 0..n_lists {
            let centroid = &view.coarse_centroids()[list * p.padded_dim..(list + 1) * p.padded_dim];
            // The table's widest row, in f64.
            let mut range = 0.0f64;
            for m in 0..n_subspaces {
                let entries: Vec<f64> = (0..16)
                    .map(|k| {
                        let c = word(m, k);
                        (0..sub)
                            .map(|i| {
                                let (qi, ci, vi) = (q[m * sub + i], f64::from(c[i]), f64::from(centroid[m * sub + i]));
                                if metric == Metric::L2 { ci * ci + 2.0 * vi * ci - 2.0 * qi * ci } else { -qi * ci }
                            })
                            .sum()
                    })
                    .collect();
                let (lo, hi) = entries.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                range = range.max(hi - lo);
            }
            let bound = n_subspaces as f64 * (range / q_max) / 2.0;
            for (pos, &id) in view.list(list).ids.iter().enumerate() {
                view.reconstruct_rotated(list, pos, &mut z);
                let exact: f64 = match metric {
                    Metric::L2 => q.iter().zip(&z).map(|(a, &b)| (a - f64::from(b)).powi(2)).sum(),
                    _ => q.iter().zip(&z).map(|(a, &b)| a * f64::from(b)).sum(),
                };
                let at = ids.iter().position(|&i| i == id as i64).expect("every item is found");
                let tol = bound * 1.0001 + 1e-4 * (1.0 + exact.abs() + q.iter().map(|v| v * v).sum::<f64>());
                prop_assert!(
                    (f64::from(scores[at]) - exact).abs() <= tol,
                    "item {id}: quantized {} vs ADC {exact}, bound {bound}", scores[at]
                );
            }
        }
    }

    /// With `f32` refinement data and room for every candidate of the probed lists, re-ranked
    /// results are the exact search over those lists' items; with `pq8`, the exact search over
    /// their refined reconstructions.
    #[test]
    fn reranked_results_equal_exact_search_over_the_candidates(
        dim in 1usize..16,
        n_subspaces in 1usize..6,
        n_lists in 1usize..4,
        n_items in 1usize..120,
        metric in metric_strategy(),
        rotated in any::<bool>(),
        k in 1usize..10,
        nprobe in 1usize..4,
        pq8 in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let n_subspaces = n_subspaces.min(dim);
        let (mut parts, vectors) =
            random_fast_index(dim, n_subspaces, n_lists, n_items, metric, rotated, seed);
        let p = parts.params;
        let slots = parts.ids.len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 3);
        parts.refine = Some(if pq8 {
            let books: Vec<f32> = (0..256 * p.padded_dim).map(|_| rng.random_range(-0.2f32..0.2)).collect();
            let codes: Vec<u8> = (0..slots * n_subspaces).map(|_| rng.random()).collect();
            encode_pq8_refine(p.padded_dim, n_subspaces, &books, &codes)
        } else {
            encode_float_refine(RefineKind::F32, dim, &by_slot(&parts, &vectors, n_items))
        });
        let query = uniform(&mut rng, dim);
        prop_assume!(query.iter().any(|&v| v != 0.0));
        let params = SearchParams::new(k, nprobe).with_rerank_factor(n_items);
        let (ids, scores) = search(&parts, Kernel::detect(), &query, &params);
        // The exact scores of every candidate, in f64.
        let view = parts.view().unwrap();
        let index = SearchIndex::new(view);
        let probed = index.probed_lists(&query, nprobe, Default::default()).unwrap();
        let scale = if metric == Metric::Cosine {
            1.0 / query.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt()
        } else {
            1.0
        };
        let refine = view.refine().unwrap();
        let mut exact = Vec::new();
        let mut x = vec![0.0f32; if pq8 { p.padded_dim } else { dim }];
        let mut z = vec![0.0f32; p.padded_dim];
        for &list in &probed {
            let list = list as usize;
            let first = view.list_offsets()[list] as usize;
            for (pos, &id) in view.list(list).ids.iter().enumerate() {
                refine.decode(first + pos, &mut x);
                let (q, v): (Vec<f64>, Vec<f64>) = if pq8 {
                    view.reconstruct_rotated(list, pos, &mut z);
                    let mut q: Vec<f64> = query.iter().map(|&v| f64::from(v) * scale).collect();
                    q.resize(p.padded_dim, 0.0);
                    if let Some(r) = &parts.rotation {
                        q = (0..p.padded_dim)
                            .map(|j| (0..p.padded_dim).map(|i| q[i] * f64::from(r[i * p.padded_dim + j])).sum())
                            .collect();
                    }
                    (q, z.iter().zip(&x).map(|(&a, &b)| f64::from(a) + f64::from(b)).collect())
                } else {
                    (query.iter().map(|&v| f64::from(v) * scale).collect(), x.iter().map(|&v| f64::from(v)).collect())
                };
                let score: f64 = match metric {
                    Metric::L2 => q.iter().zip(&v).map(|(a, b)| (a - b).powi(2)).sum(),
                    _ => q.iter().zip(&v).map(|(a, b)| a * b).sum(),
                };
                exact.push((id, score));
            }
        }
        let higher = metric.higher_is_better();
        exact.sort_by(|a, b| {
            let s = if higher { b.1.total_cmp(&a.1) } else { a.1.total_cmp(&b.1) };
            s.then(a.0.cmp(&b.0))
        });
        let found = k.min(exact.len());
        prop_assert!(ids[found..].iter().all(|&i| i == -1));
        let tol = 1e-4 * (1.0 + exact.iter().map(|e| e.1.abs()).fold(0.0, f64::max));
        for i in 0..found {
            prop_assert!((f64::from(scores[i]) - exact[i].1).abs() <= tol, "rank {i}");
            let separated = (i == 0 || (exact[i - 1].1 - exact[i].1).abs() > 2.0 * tol)
                && exact.get(i + 1).is_none_or(|n| (n.1 - exact[i].1).abs() > 2.0 * tol);
            if separated {
                prop_assert_eq!(ids[i], exact[i].0 as i64, "rank {}", i);
            }
        }
    }
}

/// Bad lengths given to the public fast-scan sum are errors, not panics.
#[test]
fn sum_blocks_4bit_rejects_bad_lengths() {
    let entries = vec![0u8; 64];
    let codes = vec![0u8; 64];
    let mut out = vec![0u16; 32];
    let k = Kernel::Scalar;
    assert!(k.sum_blocks_4bit(&entries, 3, &codes, &mut out).is_ok());
    assert!(k.sum_blocks_4bit(&entries, 0, &codes, &mut out).is_err());
    assert!(
        k.sum_blocks_4bit(&entries[..32], 3, &codes, &mut out)
            .is_err()
    );
    assert!(
        k.sum_blocks_4bit(&entries, 3, &codes[..63], &mut out)
            .is_err()
    );
    assert!(
        k.sum_blocks_4bit(&entries, 3, &codes, &mut out[..31])
            .is_err()
    );
}

/// Re-ranked searches leave out excluded ids before choosing their `k · R` candidates: with
/// room for every candidate, the results are the unexcluded search's with the excluded ids
/// removed (the scan offers slots, so the ids are excluded by their slots), in one batch and
/// across tasks.
#[test]
fn reranked_searches_leave_out_excluded_ids() {
    use faer::Par;
    for (case, metric) in [Metric::InnerProduct, Metric::L2, Metric::Cosine]
        .into_iter()
        .enumerate()
    {
        let (dim, n_items, n_lists) = (10, 200, 3);
        let (mut parts, vectors) = random_fast_index(
            dim,
            5,
            n_lists,
            n_items,
            metric,
            case == 1,
            40 + case as u64,
        );
        parts.refine = Some(encode_float_refine(
            RefineKind::F32,
            dim,
            &by_slot(&parts, &vectors, n_items),
        ));
        let index = SearchIndex::new(parts.view().unwrap());
        let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
        let n = 70;
        let queries: Vec<f32> = (0..n).flat_map(|_| uniform(&mut rng, dim)).collect();
        let (k, nprobe) = (8, 2);
        let all = SearchParams::new(n_items, nprobe).with_rerank_factor(n_items);
        let mut every = (vec![0i64; n * n_items], vec![0.0f32; n * n_items]);
        index
            .search_batch(&queries, &all, &mut every.0, &mut every.1, Par::Seq)
            .unwrap();
        // Query r excludes its own best r mod 12 items, one unknown id and one repeat.
        let excluded: Vec<Vec<u64>> = (0..n)
            .map(|r| {
                let mut x: Vec<u64> = every.0[r * n_items..r * n_items + r % 12]
                    .iter()
                    .map(|&id| id as u64)
                    .collect();
                x.push(u64::MAX - 1);
                x.extend(x.first().copied());
                x
            })
            .collect();
        let params = SearchParams::new(k, nprobe).with_rerank_factor(n_items);
        let label = format!("{metric:?}");
        common::assert_excluding_matches(&index, &queries, &excluded, &params, &every.0, &label);
    }
}

/// Re-ranked candidates whose refined scores tie are ordered by id, as everywhere: a third of
/// the items share the query's own vector (score 0 under L2, the best), the others another
/// vector; the results are the smallest ids among the first third, one query at a time and
/// in a batch, with room for every candidate and with only some of them re-ranked.
#[test]
fn reranked_ties_go_to_the_smaller_ids() {
    use faer::Par;
    let (dim, n_items, n_lists, k) = (8, 200, 3, 5);
    let (mut parts, _) = random_fast_index(dim, 4, n_lists, n_items, Metric::L2, false, 77);
    let near = [0.5f32; 8];
    let far = [-0.5f32; 8];
    // Items (in input order) 0, 3, 6, … get `near`.
    let vectors: Vec<f32> = (0..n_items)
        .flat_map(|i| if i % 3 == 0 { near } else { far })
        .collect();
    parts.refine = Some(encode_float_refine(
        RefineKind::F32,
        dim,
        &by_slot(&parts, &vectors, n_items),
    ));
    let mut near_ids: Vec<i64> = (0..n_items as u64)
        .filter(|i| i % 3 == 0)
        .map(|i| ((i * 7919 + 13) % 1_000_003 + (1 << 40)) as i64)
        .collect();
    near_ids.sort_unstable();
    let index = SearchIndex::new(parts.view().unwrap());
    let params = SearchParams::new(k, n_lists).with_rerank_factor(n_items);
    let (ids, scores) = search(&parts, Kernel::detect(), &near, &params);
    assert_eq!(ids, near_ids[..k], "one query");
    assert!(scores.iter().all(|&s| s == 0.0), "{scores:?}");
    let queries: Vec<f32> = (0..3).flat_map(|_| near).collect();
    let (mut batch_ids, mut batch_scores) = (vec![0i64; 3 * k], vec![0.0f32; 3 * k]);
    index
        .search_batch(
            &queries,
            &params,
            &mut batch_ids,
            &mut batch_scores,
            Par::Seq,
        )
        .unwrap();
    for row in batch_ids.chunks_exact(k) {
        assert_eq!(row, &near_ids[..k], "batch");
    }
    // With fewer candidates re-ranked, equal scores are still ordered by id.
    let few = SearchParams::new(k, n_lists).with_rerank_factor(2);
    let (ids, scores) = search(&parts, Kernel::detect(), &near, &few);
    for (s, i) in scores.windows(2).zip(ids.windows(2)) {
        assert!(
            s[0] < s[1] || (s[0] == s[1] && i[0] < i[1]),
            "{scores:?} {ids:?}"
        );
    }
}
