//! poeem → faiss bytes → poeem without faiss: identical indexes and search results for every
//! metric, rotation, padding and code width; faiss's residual-free indexes converted exactly;
//! every truncation and single-byte change of a small file is an error or a valid index;
//! specific refusals; the streaming file paths.
//!
//! Every random choice comes from a seeded `ChaCha8Rng`. The checks against faiss itself are the
//! pytest suite in `tests/python`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use poeem_faiss::{FaissError, encode_faiss, export_faiss, import_faiss, parse_faiss};
use poeem_search::refine::encode_float_refine;
use poeem_search::{
    CodeLayout, Index, IndexParams, IndexParts, Metric, PADDING_ID, RefineKind, SearchIndex,
    SearchParams, Searcher, encode_index, write_index,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

struct Shape {
    dim: usize,
    n_subspaces: usize,
    n_lists: usize,
    n_bits: u32,
    metric: Metric,
    rotation: bool,
    n_items: usize,
    layout: CodeLayout,
}

/// A random orthonormal `n × n` matrix (Gram–Schmidt in f64).
fn orthonormal(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut rows: Vec<Vec<f64>> = Vec::new();
    while rows.len() < n {
        let mut v: Vec<f64> = (0..n).map(|_| rng.random::<f64>() - 0.5).collect();
        for _ in 0..2 {
            for r in &rows {
                let dot: f64 = r.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(r).for_each(|(x, r)| *x -= dot * r);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-3 {
            rows.push(v.into_iter().map(|x| x / norm).collect());
        }
    }
    rows.into_iter().flatten().map(|x| x as f32).collect()
}

/// A random index; list 1 (when there is one) stays empty; ids below 2^63.
fn random_parts(seed: u64, s: &Shape) -> IndexParts {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let padded_dim = s.dim.div_ceil(s.n_subspaces) * s.n_subspaces;
    let params = IndexParams {
        dim: s.dim,
        padded_dim,
        n_lists: s.n_lists,
        n_subspaces: s.n_subspaces,
        n_bits: s.n_bits,
        metric: s.metric,
        n_items: s.n_items,
        code_layout: s.layout,
    };
    let rotation = s.rotation.then(|| orthonormal(&mut rng, padded_dim));
    let mut floats =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect() };
    let centroids = floats(s.n_lists * padded_dim);
    let codebooks = floats((1 << s.n_bits) * padded_dim);
    let lists: Vec<u32> = (0..s.n_items)
        .map(|_| match rng.random_range(0..s.n_lists as u32) {
            1 => 0,
            l => l,
        })
        .collect();
    let codes: Vec<u32> = (0..s.n_items * s.n_subspaces)
        .map(|_| rng.random_range(0..1u32 << s.n_bits))
        .collect();
    let ids: Vec<u64> = (0..s.n_items).map(|_| rng.random::<u64>() >> 1).collect();
    IndexParts::from_item_codes(
        params,
        rotation,
        centroids,
        codebooks,
        &lists,
        &codes,
        &ids,
        serde_json::from_value(json!({"seed": seed})).unwrap(),
    )
    .unwrap()
}

/// Search results of `parts` for `queries` at `nprobe`: (ids, scores), k = 10.
fn search(parts: &IndexParts, queries: &[f32], nprobe: usize) -> (Vec<i64>, Vec<f32>) {
    let index = SearchIndex::new(parts.view().unwrap());
    let mut searcher = Searcher::new(&index);
    let k = 10;
    let params = SearchParams::new(k, nprobe);
    let dim = parts.params.dim;
    let n = queries.len() / dim;
    let (mut ids, mut scores) = (vec![0i64; n * k], vec![0f32; n * k]);
    for q in 0..n {
        searcher
            .search_one(
                &queries[q * dim..(q + 1) * dim],
                &params,
                &mut ids[q * k..(q + 1) * k],
                &mut scores[q * k..(q + 1) * k],
            )
            .unwrap();
    }
    (ids, scores)
}

fn assert_same_index(a: &IndexParts, b: &IndexParts, what: &str) {
    assert_eq!(a.params, b.params, "{what}");
    assert_eq!(a.coarse_centroids, b.coarse_centroids, "{what}");
    assert_eq!(a.codebooks, b.codebooks, "{what}");
    assert_eq!(a.list_offsets, b.list_offsets, "{what}");
    assert_eq!(a.list_sizes, b.list_sizes, "{what}");
    assert_eq!(a.ids, b.ids, "{what}");
    assert_eq!(a.codes, b.codes, "{what}");
    // The rotation's first `dim` rows act on queries; the rest is a completion of the basis.
    let p = &a.params;
    match (&a.rotation, &b.rotation) {
        (None, None) => {}
        (Some(ra), Some(rb)) => assert_eq!(
            ra[..p.dim * p.padded_dim],
            rb[..p.dim * p.padded_dim],
            "{what}"
        ),
        _ => panic!("{what}: rotation present on one side only"),
    }
}

#[test]
fn poeem_to_faiss_to_poeem_is_identical_for_every_shape() {
    let metrics = [Metric::InnerProduct, Metric::L2, Metric::Cosine];
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    for n_bits in 1..=16u32 {
        for (case, &(dim, m, rotation)) in
            [(8, 4, false), (10, 4, true), (7, 7, false), (9, 2, true)]
                .iter()
                .enumerate()
        {
            // 4-bit codes in the fast-scan layout, as poeem builds and imports them.
            let layout = if n_bits == 4 {
                CodeLayout::FastScan4
            } else {
                CodeLayout::Transposed
            };
            let shape = Shape {
                dim,
                n_subspaces: m,
                n_lists: 3 + case,
                n_bits,
                metric: metrics[(n_bits as usize + case) % 3],
                rotation,
                n_items: 70 + 13 * case,
                layout,
            };
            let what = format!(
                "n_bits {n_bits}, dim {dim}, M {m}, rotation {rotation}, {}",
                shape.metric
            );
            let parts = random_parts(u64::from(n_bits) * 10 + case as u64, &shape);
            let bytes = encode_faiss(&parts.view().unwrap()).unwrap();
            if layout == CodeLayout::FastScan4 {
                // A 4-bit index in the one-byte layout (as version 1 files hold them) exports
                // the same file, and comes back in the fast-scan layout.
                let bytewise = Shape {
                    layout: CodeLayout::Transposed,
                    ..shape
                };
                let twin = random_parts(u64::from(n_bits) * 10 + case as u64, &bytewise);
                assert_eq!(
                    encode_faiss(&twin.view().unwrap()).unwrap(),
                    bytes,
                    "{what}"
                );
            }
            let (back, summary) = parse_faiss(&bytes).unwrap();
            assert!(summary.by_residual);
            assert_eq!(summary.faiss_n_bits, n_bits);
            assert_same_index(&parts, &back, &what);
            if !rotation && dim % m == 0 {
                assert_eq!(back.rotation, None, "{what}");
            }
            // The faiss file of the converted index is the same file.
            assert_eq!(
                encode_faiss(&back.view().unwrap()).unwrap(),
                bytes,
                "{what}"
            );
            let queries: Vec<f32> = (0..5 * dim).map(|_| rng.random::<f32>() - 0.5).collect();
            for nprobe in [1, 2, shape.n_lists] {
                assert_eq!(
                    search(&parts, &queries, nprobe),
                    search(&back, &queries, nprobe),
                    "{what}"
                );
            }
        }
    }
}

/// The offset of the `by_residual` byte of a faiss file without an `IndexPreTransform`.
fn by_residual_offset(n_lists: usize, d: usize) -> usize {
    let header = 4 + 8 + 8 + 8 + 1 + 4;
    4 + header + 8 + 8 + 4 + header + 8 + 4 * n_lists * d + 1 + 8
}

#[test]
fn an_index_without_residuals_converts_exactly_with_widened_codes() {
    for (n_lists, n_bits, metric) in [
        (5, 4, Metric::L2),
        (16, 8, Metric::InnerProduct),
        (1, 6, Metric::L2),
    ] {
        let shape = Shape {
            dim: 8,
            n_subspaces: 4,
            n_lists,
            n_bits,
            metric,
            rotation: false,
            n_items: 90,
            layout: CodeLayout::Transposed,
        };
        let parts = random_parts(u64::from(n_bits) + n_lists as u64, &shape);
        let mut bytes = encode_faiss(&parts.view().unwrap()).unwrap();
        let at = by_residual_offset(n_lists, 8);
        assert_eq!(bytes[at], 1);
        bytes[at] = 0;
        let (wide, summary) = parse_faiss(&bytes).unwrap();
        assert!(!summary.by_residual);
        let extra = usize::BITS - (n_lists - 1).leading_zeros();
        assert_eq!(wide.params.n_bits, n_bits + extra);
        // poeem's reconstruction (centroid + widened codeword) is faiss's: the codeword alone.
        let (view, orig) = (wide.view().unwrap(), parts.view().unwrap());
        let sub = 2;
        let mut rec = vec![0f32; 8];
        for j in 0..n_lists {
            for pos in 0..orig.list(j).len() {
                view.reconstruct_rotated(j, pos, &mut rec);
                for m in 0..4 {
                    let k = orig.code(j, pos, m) as usize;
                    let word = &parts.codebooks[(m * (1 << n_bits) + k) * sub..][..sub];
                    for (r, w) in rec[m * sub..(m + 1) * sub].iter().zip(word) {
                        assert!(
                            (r - w).abs() <= 1e-6 * (1.0 + w.abs()),
                            "list {j} item {pos}: {r} vs {w}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn too_many_lists_without_residuals_are_refused() {
    let shape = Shape {
        dim: 4,
        n_subspaces: 2,
        n_lists: 300,
        n_bits: 12,
        metric: Metric::L2,
        rotation: false,
        n_items: 40,
        layout: CodeLayout::Transposed,
    };
    let parts = random_parts(3, &shape);
    let mut bytes = encode_faiss(&parts.view().unwrap()).unwrap();
    bytes[by_residual_offset(300, 4)] = 0;
    let err = parse_faiss(&bytes).unwrap_err();
    assert!(err.to_string().contains("12 + 9 bits"), "{err}");
}

fn small_file() -> Vec<u8> {
    let shape = Shape {
        dim: 5,
        n_subspaces: 3,
        n_lists: 3,
        n_bits: 3,
        metric: Metric::Cosine,
        rotation: true,
        n_items: 23,
        layout: CodeLayout::Transposed,
    };
    encode_faiss(&random_parts(77, &shape).view().unwrap()).unwrap()
}

/// `parts` with ids `0..n` in slot order and `f32` refinement data (random rows, of unit
/// norm for cosine, as poeem builds them): what exports as an `IndexRefineFlat`.
fn refined(mut parts: IndexParts, seed: u64) -> IndexParts {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dim = parts.params.dim;
    let cosine = parts.params.metric == Metric::Cosine;
    let mut next = 0u64;
    let mut rows = Vec::with_capacity(parts.ids.len() * dim);
    for id in &mut parts.ids {
        if *id == PADDING_ID {
            rows.extend(std::iter::repeat_n(0.0, dim));
            continue;
        }
        *id = next;
        next += 1;
        let row: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() + 0.1).collect();
        let norm = row
            .iter()
            .map(|&v| f64::from(v).powi(2))
            .sum::<f64>()
            .sqrt();
        rows.extend(row.iter().map(|&v| match cosine {
            true => (f64::from(v) / norm) as f32,
            false => v,
        }));
    }
    parts.refine = Some(encode_float_refine(RefineKind::F32, dim, &rows));
    parts
}

/// [`small_file`]'s index with refinement data, exported as an `IndexRefineFlat` inside the
/// normalisation of a cosine index.
fn small_refined_file() -> Vec<u8> {
    let parts = parse_faiss(&small_file()).unwrap().0;
    let bytes = encode_faiss(&refined(parts, 78).view().unwrap()).unwrap();
    assert_eq!(&bytes[..4], b"IxPT");
    bytes
}

/// Refinement data go out as an `IndexRefineFlat` and come back as the same `f32` data, for
/// every metric, with and without a rotation.
#[test]
fn refinement_data_round_trip_through_an_index_refine_flat() {
    for (case, metric) in [Metric::L2, Metric::InnerProduct, Metric::Cosine]
        .into_iter()
        .enumerate()
    {
        for rotation in [false, true] {
            let shape = Shape {
                dim: 6 + case,
                n_subspaces: 3,
                n_lists: 4,
                n_bits: 4,
                metric,
                rotation,
                n_items: 60,
                layout: CodeLayout::FastScan4,
            };
            let parts = refined(random_parts(case as u64, &shape), 9);
            let bytes = encode_faiss(&parts.view().unwrap()).unwrap();
            let outer: &[u8; 4] = if metric == Metric::Cosine {
                b"IxPT"
            } else {
                b"IxRF"
            };
            assert_eq!(&bytes[..4], outer, "{metric}");
            let (back, summary) = parse_faiss(&bytes).unwrap();
            let what = format!("{metric}, rotation {rotation}");
            assert_eq!(summary.refine_k_factor, Some(8.0), "{what}");
            assert_same_index(&parts, &back, &what);
            assert_eq!(back.refine, parts.refine, "{what}");
            // The faiss file of the converted index is the same file.
            assert_eq!(
                encode_faiss(&back.view().unwrap()).unwrap(),
                bytes,
                "{what}"
            );
        }
    }
}

/// Parses `bytes`; a parse that succeeds must give a searchable index.
fn parse_and_use(bytes: &[u8]) -> bool {
    match parse_faiss(bytes) {
        Ok((parts, _)) => {
            let queries = vec![0.5f32; parts.params.dim];
            let index = SearchIndex::new(parts.view().unwrap());
            let mut searcher = Searcher::new(&index);
            let (mut ids, mut scores) = ([0i64; 4], [0f32; 4]);
            let _ = searcher.search_one(
                &queries,
                &SearchParams::new(4, parts.params.n_lists),
                &mut ids,
                &mut scores,
            );
            let _ = encode_index(&parts);
            true
        }
        Err(_) => false,
    }
}

#[test]
fn every_truncation_is_an_error() {
    for bytes in [small_file(), small_refined_file()] {
        assert!(parse_and_use(&bytes));
        for len in 0..bytes.len() {
            let result = parse_faiss(&bytes[..len]);
            assert!(result.is_err(), "truncation to {len} bytes parsed");
        }
    }
}

#[test]
fn every_byte_change_is_an_error_or_a_valid_index() {
    for bytes in [small_file(), small_refined_file()] {
        let mut changed = bytes.clone();
        let mut accepted = 0;
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                changed[at] = bytes[at] ^ flip;
                let ok = catch_unwind(AssertUnwindSafe(|| parse_and_use(&changed)))
                    .unwrap_or_else(|_| panic!("panic on byte {at} ^ {flip:#04x}"));
                accepted += usize::from(ok);
            }
            changed[at] = bytes[at];
        }
        // Floats and ids take any value: many changes still give a valid index.
        assert!(accepted > 0);
    }
}

#[test]
fn refusals_name_what_was_found() {
    let bytes = small_file();
    let mut other = bytes.clone();
    other[..4].copy_from_slice(b"IwFl");
    let err = parse_faiss(&other).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FaissError::Unsupported { .. }), "{text}");
    assert!(
        text.contains("\"IwFl\"") && text.contains("supported: IwPQ"),
        "{text}"
    );

    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 3]);
    assert!(matches!(
        parse_faiss(&longer),
        Err(FaissError::TrailingBytes { count: 3, .. })
    ));

    // The last 8 bytes are the last list's last id: make it negative.
    let mut negative = bytes.clone();
    let n = negative.len();
    negative[n - 8..].copy_from_slice(&(-1i64).to_le_bytes());
    let text = parse_faiss(&negative).unwrap_err().to_string();
    assert!(text.contains("id = -1"), "{text}");

    // The transform's `have_bias` bool set to 2.
    let mut bad_bool = bytes.clone();
    let at = bytes.windows(4).position(|w| w == b"LTra").unwrap() + 4;
    bad_bool[at] = 2;
    let text = parse_faiss(&bad_bool).unwrap_err().to_string();
    assert!(text.contains("have_bias = 2"), "{text}");
}

#[test]
fn the_file_paths_stream_and_publish_atomically() {
    let shape = Shape {
        dim: 12,
        n_subspaces: 4,
        n_lists: 9,
        n_bits: 8,
        metric: Metric::L2,
        rotation: true,
        n_items: 500,
        layout: CodeLayout::Transposed,
    };
    let parts = random_parts(5, &shape);
    let dir = tempfile::tempdir().unwrap();
    let (index, faiss, back) = (
        dir.path().join("a.poeem"),
        dir.path().join("a.faiss"),
        dir.path().join("b.poeem"),
    );
    write_index(&index, &parts).unwrap();
    let mut calls = 0;
    let report = export_faiss(&index, &faiss, &mut |p| {
        calls += 1;
        assert_eq!(p.lists_done, calls);
    })
    .unwrap();
    assert_eq!(calls, 9);
    let bytes = std::fs::read(&faiss).unwrap();
    assert_eq!(report.bytes, bytes.len() as u64);
    assert_eq!(bytes, encode_faiss(&parts.view().unwrap()).unwrap());
    let summary = import_faiss(&faiss, &back, &mut |_| {}).unwrap();
    assert_eq!(summary.structure, ["IxPT", "LTra", "IwPQ", "IxF2", "ilar"]);
    let imported = Index::open(&back).unwrap();
    imported.verify().unwrap();
    let (in_memory, _) = parse_faiss(&bytes).unwrap();
    assert_eq!(
        std::fs::read(&back).unwrap(),
        encode_index(&in_memory).unwrap()
    );
    assert_same_index(&parts, &imported.to_parts(), "file round trip");

    // An id faiss cannot hold: an error, and no file left behind.
    let mut big = parts.clone();
    big.ids[0] = 1 << 63;
    write_index(&index, &big).unwrap();
    let out = dir.path().join("big.faiss");
    let err = export_faiss(&index, &out, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("signed"), "{err}");
    assert!(!out.exists());
    // A missing input names its path.
    let err = import_faiss(&dir.path().join("missing.faiss"), &back, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("missing.faiss"), "{err}");
}
