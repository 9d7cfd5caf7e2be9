//! Building indexes (`build_index`, `index_from_codec`) and importing the reference
//! implementation's index files, checked through `IndexParts` and `IndexView` only.
//!
//! Every random choice is seeded (`ChaCha8Rng`); nothing touches the network, and the disk only
//! inside a temporary directory.

use poeem_build::{
    BuildConfig, BuildError, ReferenceFile, ReferenceImport, build_index, encode_reference,
    import_reference, index_from_codec, parse_reference,
};
use poeem_pq::{IvfPqCodec, KMeansInit, OpqConfig, Par};
use poeem_rotation::Rotation;
use poeem_search::{
    IndexMetadata, IndexParams, IndexParts, IndexView, Metric, PADDING_ID, SearchError,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `n × dim` points around `n_centers` standard-normal centres, at standard deviation `spread`.
fn clustered(n: usize, dim: usize, n_centers: usize, spread: f64, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let centers: Vec<f64> = (0..n_centers * dim).map(|_| normal(&mut r)).collect();
    let mut data = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = r.random_range(0..n_centers);
        for j in 0..dim {
            data.push((centers[c * dim + j] + normal(&mut r) * spread) as f32);
        }
    }
    data
}

/// `n × dim` Gaussian points whose per-dimension deviations fall off geometrically, then turned
/// by a random rotation so that the energy is spread unevenly across correlated coordinates.
fn anisotropic(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let raw: Vec<f32> = (0..n * dim)
        .map(|k| (normal(&mut r) * 0.8f64.powi((k % dim) as i32)) as f32)
        .collect();
    let mut out = vec![0.0f32; raw.len()];
    Rotation::random(dim, seed ^ 0x5EED).apply(&raw, &mut out, Par::Seq);
    out
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x - y) * f64::from(x - y))
        .sum()
}

fn sq_norm(a: &[f32]) -> f64 {
    a.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
}

/// Every item of a view as `(list, position, id)`, list by list.
fn items(view: &IndexView<'_>) -> Vec<(usize, usize, u64)> {
    (0..view.params().n_lists)
        .flat_map(|list| {
            view.list(list)
                .ids
                .iter()
                .enumerate()
                .map(move |(pos, &id)| (list, pos, id))
        })
        .collect()
}

/// The parts with the metadata cleared, to compare everything else.
fn without_metadata(parts: &IndexParts) -> IndexParts {
    IndexParts {
        metadata: IndexMetadata::default(),
        ..parts.clone()
    }
}

/// The parts' metadata as JSON.
fn json_metadata(parts: &IndexParts) -> Value {
    serde_json::to_value(&parts.metadata).unwrap()
}

fn quiet() -> impl FnMut(&poeem_pq::Progress) {
    |_| {}
}

/// The `(name, reason)` of an `InvalidParameter` error, or a panic naming what came instead.
fn invalid_parameter<T: std::fmt::Debug>(result: Result<T, BuildError>) -> &'static str {
    match result {
        Err(BuildError::Search(SearchError::InvalidParameter { name, .. })) => name,
        other => panic!("expected InvalidParameter, got {other:?}"),
    }
}

/// The field of a `BadReferenceFile` error, or a panic naming what came instead.
fn bad_field<T: std::fmt::Debug>(result: Result<T, BuildError>) -> &'static str {
    match result {
        Err(BuildError::BadReferenceFile { field, .. }) => field,
        other => panic!("expected BadReferenceFile, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// build_index
// ---------------------------------------------------------------------------------------------

#[test]
fn build_reconstructs_every_item_once_with_its_id_and_the_codecs_list() {
    let (n, dim) = (3000, 16);
    let data = clustered(n, dim, 16, 0.1, 1);
    let ids: Vec<u64> = (0..n as u64).map(|i| 1000 + 3 * i).collect();
    let mut config = BuildConfig::new(16, 8, 6);
    config.metric = Metric::L2;
    config.seed = 7;
    let mut events = 0usize;
    let (parts, report) = build_index(&data, dim, Some(&ids), &config, Par::Seq, &mut |_| {
        events += 1
    })
    .unwrap();
    assert!(events > 0, "training progress is passed through");
    let view = parts.view().unwrap();
    let p = *view.params();
    assert_eq!(
        p,
        IndexParams {
            dim,
            padded_dim: dim,
            n_lists: 16,
            n_subspaces: 8,
            n_bits: 6,
            metric: Metric::L2,
            n_items: n,
            code_layout: Default::default(),
        }
    );
    assert_eq!(view.rotation(), None);
    assert_eq!(report.n_train, n);
    assert!(report.opq_distortion.is_empty());

    // Every id exactly once.
    let all = items(&view);
    let mut found: Vec<u64> = all.iter().map(|&(_, _, id)| id).collect();
    found.sort_unstable();
    assert_eq!(found, ids);

    // The same lists and codes as the codec trained with the same settings.
    let codec =
        IvfPqCodec::train(&data, dim, &config.codec_config(), Par::Seq, &mut quiet()).unwrap();
    let mut lists = vec![0u32; n];
    let mut codes = vec![0u8; n * 8];
    codec
        .encode(&data, &mut lists, &mut codes, Par::Seq)
        .unwrap();

    let (mut error, mut coarse_error, mut energy) = (0.0, 0.0, 0.0);
    let mut x_hat = vec![0.0f32; dim];
    for &(list, pos, id) in &all {
        let row = ((id - 1000) / 3) as usize;
        assert_eq!(lists[row] as usize, list, "row {row}");
        for m in 0..8 {
            assert_eq!(view.code(list, pos, m), u32::from(codes[row * 8 + m]));
        }
        let x = &data[row * dim..(row + 1) * dim];
        view.reconstruct(list, pos, &mut x_hat);
        error += sq_dist(x, &x_hat);
        coarse_error += sq_dist(x, &view.coarse_centroids()[list * dim..(list + 1) * dim]);
        energy += sq_norm(x);
    }
    // The codes must remove most of what the coarse level leaves: a broken encoder (wrong
    // codewords, codes ignored) does not.
    assert!(
        error / energy < 0.004,
        "relative distortion {}",
        error / energy
    );
    assert!(
        error < 0.25 * coarse_error,
        "PQ error {error} vs coarse-only {coarse_error}"
    );
    let mean = error / n as f64;
    assert!(
        (report.distortion - mean).abs() <= 1e-3 * mean,
        "report {} vs measured {mean}",
        report.distortion
    );
    assert!(
        (report.relative_distortion - error / energy).abs() <= 1e-3 * report.relative_distortion
    );

    let meta = &json_metadata(&parts);
    assert_eq!(meta["builder"], "poeem-search build_index");
    assert_eq!(meta["params"]["n_items"], n);
    assert_eq!(meta["training"]["seed"], 7);
    assert_eq!(meta["training"]["n_train"], n);
    assert_eq!(meta["training"]["opq"], Value::Null);
    assert_eq!(meta["rotation"], "identity");
    assert!(meta["timings"]["total_seconds"].as_f64().unwrap() >= 0.0);
    assert!(meta["created"].as_u64().unwrap() > 1_600_000_000);

    // The thread count changes nothing.
    let (threaded, _) =
        build_index(&data, dim, Some(&ids), &config, Par::rayon(2), &mut quiet()).unwrap();
    assert_eq!(without_metadata(&threaded), without_metadata(&parts));
    let mut fixed = threaded.metadata.clone();
    let mut original = parts.metadata.clone();
    for meta in [&mut fixed, &mut original] {
        meta.extra.remove("timings");
        meta.created = None;
    }
    assert_eq!(fixed, original, "metadata is deterministic but for time");
}

#[test]
fn opq_build_has_lower_distortion_on_anisotropic_data() {
    let (n, dim) = (2000, 16);
    let data = anisotropic(n, dim, 2);
    let mut config = BuildConfig::new(4, 4, 4);
    config.metric = Metric::L2;
    let (_, plain) = build_index(&data, dim, None, &config, Par::Seq, &mut quiet()).unwrap();
    config.opq = Some(OpqConfig {
        n_rounds: 6,
        iterations_per_round: 4,
        max_train_points: None,
        ..OpqConfig::default()
    });
    let (parts, opq) = build_index(&data, dim, None, &config, Par::Seq, &mut quiet()).unwrap();
    assert!(
        opq.distortion < 0.9 * plain.distortion,
        "OPQ {} vs plain {}",
        opq.distortion,
        plain.distortion
    );
    assert_eq!(opq.opq_distortion.len(), 7);

    // The exported rotation reconstructs the items as the codec did (x̂ = x̂' Rᵀ).
    let view = parts.view().unwrap();
    assert!(view.rotation().is_some());
    let mut x_hat = vec![0.0f32; dim];
    let error: f64 = items(&view)
        .iter()
        .map(|&(list, pos, id)| {
            view.reconstruct(list, pos, &mut x_hat);
            sq_dist(&data[id as usize * dim..(id as usize + 1) * dim], &x_hat)
        })
        .sum();
    let mean = error / n as f64;
    assert!(
        (mean - opq.distortion).abs() <= 1e-3 * opq.distortion,
        "measured {mean} vs report {}",
        opq.distortion
    );
    assert_eq!(parts.metadata.rotation.as_deref(), Some("learned"));
    assert_eq!(json_metadata(&parts)["training"]["opq"]["n_rounds"], 6);
}

#[test]
fn cosine_build_normalises_items_and_matches_the_codec_path() {
    let (n, dim) = (1500, 12);
    let mut data = clustered(n, dim, 8, 0.05, 3);
    let mut r = rng(33);
    for row in data.chunks_exact_mut(dim) {
        let scale = r.random_range(0.5f32..5.0);
        row.iter_mut().for_each(|v| *v *= scale);
    }
    let mut config = BuildConfig::new(8, 6, 6);
    config.metric = Metric::Cosine;
    let (parts, _) = build_index(&data, dim, None, &config, Par::Seq, &mut quiet()).unwrap();
    let view = parts.view().unwrap();
    assert_eq!(view.params().metric, Metric::Cosine);
    let mut x_hat = vec![0.0f32; dim];
    let (mut error, mut raw_error) = (0.0, 0.0);
    for (list, pos, id) in items(&view) {
        let x = &data[id as usize * dim..(id as usize + 1) * dim];
        let norm = sq_norm(x).sqrt() as f32;
        let unit: Vec<f32> = x.iter().map(|v| v / norm).collect();
        view.reconstruct(list, pos, &mut x_hat);
        error += sq_dist(&unit, &x_hat);
        raw_error += sq_dist(x, &x_hat);
        assert!((sq_norm(&x_hat).sqrt() - 1.0).abs() < 0.1);
    }
    assert!(error / (n as f64) < 0.01, "mean error {}", error / n as f64);
    assert!(
        raw_error > 100.0 * error,
        "items are not stored unnormalised"
    );

    // The codec path normalises the same way.
    let unit: Vec<f32> = data
        .chunks_exact(dim)
        .flat_map(|x| {
            let norm = sq_norm(x).sqrt();
            x.iter().map(move |&v| (f64::from(v) / norm) as f32)
        })
        .collect();
    let codec =
        IvfPqCodec::train(&unit, dim, &config.codec_config(), Par::Seq, &mut quiet()).unwrap();
    let from_codec = index_from_codec(
        &codec,
        &data,
        None,
        Metric::Cosine,
        IndexMetadata::default(),
        Par::Seq,
    )
    .unwrap();
    assert_eq!(without_metadata(&from_codec), without_metadata(&parts));

    // A zero vector cannot be normalised: the error names its row.
    data[5 * dim..6 * dim].fill(0.0);
    match build_index(&data, dim, None, &config, Par::Seq, &mut quiet()) {
        Err(BuildError::Search(SearchError::InvalidParameter { name, value, .. })) => {
            assert_eq!((name, value.as_str()), ("vectors", "row 5"));
        }
        other => panic!("expected an error naming row 5, got {other:?}"),
    }
    // Inner product and L2 take the zero vector as it is.
    config.metric = Metric::InnerProduct;
    build_index(&data, dim, None, &config, Par::Seq, &mut quiet()).unwrap();
}

#[test]
fn index_from_codec_equals_build_index_and_is_deterministic() {
    // One-byte codes, and two-byte codes (9 bits), with padding (dim 10, 4 subspaces).
    for (n_bits, n, dim, width) in [(5, 800, 10, 1), (9, 1200, 10, 2)] {
        let data = clustered(n, dim, 6, 0.2, 4 + u64::from(n_bits));
        let ids: Vec<u64> = (0..n as u64).rev().collect();
        let mut config = BuildConfig::new(6, 4, n_bits);
        config.metric = Metric::L2;
        config.seed = 11;
        let (built, _) =
            build_index(&data, dim, Some(&ids), &config, Par::Seq, &mut quiet()).unwrap();
        assert_eq!(built.params.padded_dim, 12);
        assert_eq!(built.params.code_width(), width);

        let codec =
            IvfPqCodec::train(&data, dim, &config.codec_config(), Par::Seq, &mut quiet()).unwrap();
        let extra: IndexMetadata = serde_json::from_value(
            json!({ "builder": "test export", "params": "ignored", "epoch": 3 }),
        )
        .unwrap();
        let first = index_from_codec(
            &codec,
            &data,
            Some(&ids),
            Metric::L2,
            extra.clone(),
            Par::Seq,
        )
        .unwrap();
        let second =
            index_from_codec(&codec, &data, Some(&ids), Metric::L2, extra, Par::rayon(2)).unwrap();
        assert_eq!(without_metadata(&first), without_metadata(&built));
        assert_eq!(without_metadata(&second), without_metadata(&first));
        let (first_meta, built_meta) = (json_metadata(&first), json_metadata(&built));
        assert_eq!(first_meta["builder"], "test export");
        assert_eq!(first_meta["epoch"], 3);
        assert_eq!(
            first_meta["params"]["n_items"], n,
            "params stay the index's own"
        );
        assert_eq!(first_meta["distortion"], built_meta["distortion"]);
        assert!(
            first.metadata.get("training").is_none(),
            "no training happened"
        );

        // Padded dimensions reconstruct the original ones.
        let view = first.view().unwrap();
        let mut x_hat = vec![0.0f32; dim];
        let (mut error, mut energy) = (0.0, 0.0);
        for (list, pos, id) in items(&view) {
            let row = n - 1 - id as usize;
            view.reconstruct(list, pos, &mut x_hat);
            error += sq_dist(&data[row * dim..(row + 1) * dim], &x_hat);
            energy += sq_norm(&data[row * dim..(row + 1) * dim]);
        }
        assert!(
            error / energy < 0.02,
            "relative distortion {}",
            error / energy
        );
    }
}

#[test]
fn a_codec_without_coarse_level_gives_one_list_at_the_origin() {
    let (n, dim) = (600, 8);
    let data = clustered(n, dim, 4, 0.3, 5);
    let config = BuildConfig::new(0, 4, 4);
    let (parts, _) = build_index(&data, dim, None, &config, Par::Seq, &mut quiet()).unwrap();
    assert_eq!(parts.params.n_lists, 1);
    assert_eq!(parts.coarse_centroids, vec![0.0; dim]);
    assert_eq!(parts.list_sizes, vec![n as u64]);
    assert_eq!(parts.metadata.coarse_level, Some(false));

    let codec =
        IvfPqCodec::train(&data, dim, &config.codec_config(), Par::Seq, &mut quiet()).unwrap();
    assert!(codec.coarse().is_none());
    let from_codec = index_from_codec(
        &codec,
        &data,
        None,
        Metric::InnerProduct,
        IndexMetadata::default(),
        Par::Seq,
    )
    .unwrap();
    assert_eq!(without_metadata(&from_codec), without_metadata(&parts));
}

#[test]
fn build_rejects_bad_input() {
    let dim = 4;
    let data = clustered(40, dim, 2, 0.5, 6);
    let config = BuildConfig::new(2, 2, 2);
    let build = |data: &[f32], dim: usize, ids: Option<&[u64]>, config: &BuildConfig| {
        build_index(data, dim, ids, config, Par::Seq, &mut quiet())
    };
    build(&data, dim, None, &config).unwrap();

    assert!(matches!(
        build(&[], dim, None, &config),
        Err(BuildError::Search(SearchError::Empty { what: "vectors" }))
    ));
    assert_eq!(
        invalid_parameter(build(&data[..10], dim, None, &config)),
        "vectors"
    );
    assert_eq!(invalid_parameter(build(&data, 0, None, &config)), "dim");
    let mut nan = data.clone();
    nan[3 * dim + 2] = f32::NAN;
    assert!(matches!(
        build(&nan, dim, None, &config),
        Err(BuildError::Search(SearchError::NonFinite {
            what: "vectors",
            row: 3,
            col: 2
        }))
    ));
    nan[3 * dim + 2] = f32::INFINITY;
    assert!(matches!(
        build(&nan, dim, None, &config),
        Err(BuildError::Search(SearchError::NonFinite {
            row: 3,
            col: 2,
            ..
        }))
    ));

    let with = |change: &dyn Fn(&mut BuildConfig)| {
        let mut c = config.clone();
        change(&mut c);
        c
    };
    let cases: [(BuildConfig, &str); 8] = [
        (with(&|c| c.n_lists = 41), "n_lists"),
        (with(&|c| c.n_bits = 0), "n_bits"),
        (with(&|c| c.n_bits = 17), "n_bits"),
        (with(&|c| c.n_bits = 6), "n_bits"), // 64 codewords, 40 vectors
        (with(&|c| c.n_subspaces = 0), "n_subspaces"),
        (with(&|c| c.n_subspaces = 5), "n_subspaces"),
        (
            with(&|c| c.kmeans.init = KMeansInit::Centroids(vec![0.0; 8])),
            "kmeans.init",
        ),
        (with(&|c| c.kmeans.tolerance = f64::NAN), "kmeans.tolerance"),
    ];
    for (bad, name) in cases {
        assert_eq!(invalid_parameter(build(&data, dim, None, &bad)), name);
    }
    // OPQ trains on a sample: the sample must hold the lists.
    let sampled = with(&|c| {
        c.opq = Some(OpqConfig {
            max_train_points: Some(1),
            ..OpqConfig::default()
        })
    });
    assert_eq!(
        invalid_parameter(build(&data, dim, None, &sampled)),
        "n_lists"
    );

    let short: Vec<u64> = (0..39).collect();
    assert!(matches!(
        build(&data, dim, Some(&short), &config),
        Err(BuildError::Search(SearchError::DimensionMismatch {
            expected: 40,
            got: 39,
            ..
        }))
    ));
    let mut padding: Vec<u64> = (0..40).collect();
    padding[7] = PADDING_ID;
    assert_eq!(
        invalid_parameter(build(&data, dim, Some(&padding), &config)),
        "ids"
    );
    // Duplicate ids are allowed, as in faiss.
    let duplicates = vec![9u64; 40];
    let (parts, _) = build(&data, dim, Some(&duplicates), &config).unwrap();
    assert_eq!(parts.params.n_items, 40);
}

#[test]
fn index_from_codec_rejects_bad_input() {
    let dim = 4;
    let data = clustered(40, dim, 2, 0.5, 7);
    let codec = IvfPqCodec::train(
        &data,
        dim,
        &BuildConfig::new(2, 2, 2).codec_config(),
        Par::Seq,
        &mut quiet(),
    )
    .unwrap();
    let run = |data: &[f32], ids: Option<&[u64]>| {
        index_from_codec(
            &codec,
            data,
            ids,
            Metric::L2,
            IndexMetadata::default(),
            Par::Seq,
        )
    };
    run(&data, None).unwrap();
    assert!(matches!(
        run(&[], None),
        Err(BuildError::Search(SearchError::Empty { .. }))
    ));
    assert_eq!(invalid_parameter(run(&data[..6], None)), "vectors");
    let mut nan = data.clone();
    nan[9] = f32::NAN;
    assert!(matches!(
        run(&nan, None),
        Err(BuildError::Search(SearchError::NonFinite {
            row: 2,
            col: 1,
            ..
        }))
    ));
    let ids: Vec<u64> = (0..41).collect();
    assert!(matches!(
        run(&data, Some(&ids)),
        Err(BuildError::Search(SearchError::DimensionMismatch { .. }))
    ));
}

// ---------------------------------------------------------------------------------------------
// Reference files
// ---------------------------------------------------------------------------------------------

/// Random parts: `n` items with distinct random ids in random lists, random codes, centroids and
/// codebooks, no rotation.
fn random_parts(
    seed: u64,
    n: usize,
    dim: usize,
    n_lists: usize,
    n_subspaces: usize,
    n_bits: u32,
) -> IndexParts {
    let mut r = rng(seed);
    let params = IndexParams {
        dim,
        padded_dim: dim,
        n_lists,
        n_subspaces,
        n_bits,
        metric: Metric::InnerProduct,
        n_items: n,
        code_layout: Default::default(),
    };
    let k = 1u32 << n_bits;
    let lists: Vec<u32> = (0..n).map(|_| r.random_range(0..n_lists as u32)).collect();
    let codes: Vec<u16> = (0..n * n_subspaces)
        .map(|_| r.random_range(0..k) as u16)
        .collect();
    let mut ids: Vec<u64> = (0..n as u64).map(|i| i * 1_000_003 + 17).collect();
    ids.shuffle(&mut r);
    let mut floats = |len: usize| -> Vec<f32> { (0..len).map(|_| normal(&mut r) as f32).collect() };
    let centroids = floats(n_lists * dim);
    let codebooks = floats(k as usize * dim);
    IndexParts::from_item_codes(
        params,
        None,
        centroids,
        codebooks,
        &lists,
        &codes,
        &ids,
        IndexMetadata::default(),
    )
    .unwrap()
}

/// A small hand-made reference file: d = 6, D = 3, K = 5 (not a power of two), `n_lists` lists.
fn small_reference(n_lists: usize) -> ReferenceFile {
    let mut r = rng(8);
    let n = 7;
    ReferenceFile {
        use_residual: 1,
        dim: 6,
        n_lists,
        n_codewords: 5,
        n_subspaces: 3,
        codebooks: (0..3 * 5 * 2).map(|_| normal(&mut r) as f32).collect(),
        ids: (0..n as i64).map(|i| 100 + i).collect(),
        norms: vec![1.5; n],
        codes: (0..n * 3).map(|_| r.random_range(0..5u16)).collect(),
        coarse_centroids: (0..n_lists * 6).map(|_| normal(&mut r) as f32).collect(),
        assignments: (0..n).map(|i| (i % n_lists.max(1)) as u32).collect(),
    }
}

#[test]
fn reference_round_trip_preserves_the_index() {
    // One-byte codes (K = 32) and two-byte codes (K = 1024).
    for (seed, n_bits) in [(10, 5), (11, 10)] {
        let parts = random_parts(seed, 300, 8, 5, 4, n_bits);
        let file = ReferenceFile::from_view(&parts.view().unwrap()).unwrap();
        assert_eq!(file.n_codewords, 1 << n_bits);
        let bytes = encode_reference(&file).unwrap();
        let code_bytes = if n_bits <= 8 { 1 } else { 2 };
        assert_eq!(
            bytes.len(),
            41 + 4 * (1 << n_bits) * 8 + 300 * (8 + 4 + 4 * code_bytes + 4) + 4 * 5 * 8
        );
        assert_eq!(ReferenceFile::from_bytes(&bytes).unwrap(), file);

        let imported = parse_reference(&bytes, Metric::InnerProduct).unwrap();
        assert_eq!((imported.n_read, imported.n_dropped_zero_norm), (300, 0));
        assert_eq!(without_metadata(&imported.parts), parts);
        let meta = &json_metadata(&imported.parts);
        assert_eq!(meta["builder"], "poeem-search import_reference");
        assert_eq!(meta["reference"]["n_items"], 300);
        assert_eq!(meta["reference"]["source_file"], Value::Null);
    }
}

#[test]
fn reference_import_drops_zero_norm_items_without_checking_them() {
    for (seed, n_bits) in [(12, 6), (13, 9)] {
        let parts = random_parts(seed, 200, 8, 4, 2, n_bits);
        let mut file = ReferenceFile::from_view(&parts.view().unwrap()).unwrap();
        let k = file.n_codewords;
        // Every fifth item is deleted; deleted items may hold any id, code or assignment.
        for i in (0..200).step_by(5) {
            file.norms[i] = 0.0;
            file.ids[i] = -1;
            file.assignments[i] = 999;
            file.codes[i * 2] = if k < 256 { 255 } else { k as u16 };
        }
        let imported = parse_reference(&encode_reference(&file).unwrap(), Metric::L2).unwrap();
        assert_eq!((imported.n_read, imported.n_dropped_zero_norm), (200, 40));

        let kept: Vec<usize> = (0..200).filter(|i| i % 5 != 0).collect();
        let expected = IndexParts::from_item_codes(
            IndexParams {
                metric: Metric::L2,
                ..parts.params
            },
            None,
            parts.coarse_centroids.clone(),
            parts.codebooks.clone(),
            &kept
                .iter()
                .map(|&i| file.assignments[i])
                .collect::<Vec<_>>(),
            &kept
                .iter()
                .flat_map(|&i| file.codes[i * 2..i * 2 + 2].to_vec())
                .collect::<Vec<_>>(),
            &kept.iter().map(|&i| file.ids[i] as u64).collect::<Vec<_>>(),
            IndexMetadata::default(),
        )
        .unwrap();
        assert_eq!(without_metadata(&imported.parts), expected);
        assert_eq!(
            json_metadata(&imported.parts)["reference"]["n_dropped_zero_norm"],
            40
        );
    }
}

#[test]
fn reference_codewords_are_padded_and_no_coarse_level_is_one_list_at_the_origin() {
    let file = small_reference(0);
    let imported =
        parse_reference(&encode_reference(&file).unwrap(), Metric::InnerProduct).unwrap();
    let parts = &imported.parts;
    assert_eq!(parts.params.n_bits, 3, "K = 5 takes 3 bits");
    assert_eq!(parts.params.n_lists, 1);
    assert_eq!(parts.coarse_centroids, vec![0.0; 6]);
    for m in 0..3 {
        let book = &parts.codebooks[m * 8 * 2..(m + 1) * 8 * 2];
        assert_eq!(&book[..10], &file.codebooks[m * 10..(m + 1) * 10]);
        assert!(
            book[10..].iter().all(|&v| v == 0.0),
            "padding codewords are zero"
        );
    }
    // Reconstructions are exactly the concatenated codewords.
    let view = parts.view().unwrap();
    let mut z = vec![0.0f32; 6];
    for (list, pos, id) in items(&view) {
        let i = (id - 100) as usize;
        view.reconstruct(list, pos, &mut z);
        for m in 0..3 {
            let k = file.codes[i * 3 + m] as usize;
            assert_eq!(
                &z[m * 2..m * 2 + 2],
                &file.codebooks[(m * 5 + k) * 2..][..2]
            );
        }
    }

    // With J = 0, 0 is the only list.
    let mut bad = file.clone();
    bad.assignments[2] = 1;
    assert_eq!(
        bad_field(parse_reference(
            &encode_reference(&bad).unwrap(),
            Metric::L2
        )),
        "coarse assignments"
    );
}

#[test]
fn every_truncation_of_a_reference_file_is_an_error() {
    let small = encode_reference(&small_reference(2)).unwrap();
    let wide = encode_reference(
        &ReferenceFile::from_view(&random_parts(14, 5, 4, 2, 2, 9).view().unwrap()).unwrap(),
    )
    .unwrap();
    for bytes in [small, wide] {
        parse_reference(&bytes, Metric::L2).unwrap();
        assert!(matches!(
            parse_reference(&[], Metric::L2),
            Err(BuildError::NotAReferenceFile { .. })
        ));
        for len in 1..bytes.len() {
            bad_field(parse_reference(&bytes[..len], Metric::L2));
        }
    }
}

#[test]
fn reference_errors_name_the_field() {
    let file = small_reference(3);
    let bytes = encode_reference(&file).unwrap();
    let parse = |bytes: &[u8]| parse_reference(bytes, Metric::InnerProduct);
    let edited = |change: &dyn Fn(&mut ReferenceFile)| {
        let mut f = file.clone();
        change(&mut f);
        parse(&encode_reference(&f).unwrap())
    };
    let patched = |at: usize, value: i64| {
        let mut b = bytes.clone();
        b[at..at + 8].copy_from_slice(&value.to_le_bytes());
        parse(&b)
    };

    match edited(&|f| f.use_residual = 0) {
        Err(BuildError::BadReferenceFile { field, reason }) => {
            assert_eq!(field, "use_residual");
            assert!(reason.contains("residual"), "{reason}");
        }
        other => panic!("expected an error for use_residual = 0, got {other:?}"),
    }
    // A file that is plainly no reference file says so, whatever its first byte.
    let not_reference = |result: Result<ReferenceImport, BuildError>| match result {
        Err(e @ BuildError::NotAReferenceFile { .. }) => e.to_string(),
        other => panic!("expected NotAReferenceFile, got {other:?}"),
    };
    let message = not_reference(edited(&|f| f.use_residual = 2));
    assert!(
        message.starts_with("not an index file of the reference implementation")
            && message.contains("first byte is 0x02"),
        "{message}"
    );
    assert!(not_reference(parse(b"")).contains("empty"));
    assert!(not_reference(parse(b"POEEMIDX and the rest")).contains("poeem index file already"));
    assert!(not_reference(parse(b"\x93NUMPY")).contains("first byte is 0x93"));
    assert_eq!(
        bad_field(edited(&|f| f.assignments[4] = 3)),
        "coarse assignments"
    );
    assert_eq!(bad_field(edited(&|f| f.codes[7] = 5)), "codes");
    assert_eq!(bad_field(edited(&|f| f.ids[1] = -5)), "item ids");
    assert_eq!(bad_field(edited(&|f| f.norms[6] = f32::NAN)), "item norms");
    assert_eq!(bad_field(edited(&|f| f.norms[6] = -1.0)), "item norms");
    assert_eq!(
        bad_field(edited(&|f| f.codebooks[13] = f32::NAN)),
        "codebooks"
    );
    assert_eq!(
        bad_field(edited(&|f| f.coarse_centroids[4] = f32::INFINITY)),
        "coarse centroids"
    );

    // Header fields: n_items at byte 1, then d, J, K, D.
    assert_eq!(bad_field(patched(1, -1)), "n_items");
    assert_eq!(bad_field(patched(9, 0)), "d");
    assert_eq!(bad_field(patched(17, -3)), "J");
    assert_eq!(bad_field(patched(25, 0)), "K");
    assert_eq!(bad_field(patched(25, 70_000)), "K");
    assert_eq!(bad_field(patched(33, 4)), "D", "4 does not divide 6");
    assert_eq!(bad_field(patched(33, 0)), "D");
    // Absurd sizes are refused before anything is read or allocated.
    bad_field(patched(1, i64::MAX));
    bad_field(patched(9, i64::MAX));
    bad_field(patched(17, i64::MAX / 2));

    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(bad_field(parse(&trailing)), "end of file");

    // The writer checks lengths.
    let mut short = file.clone();
    short.norms.pop();
    assert!(matches!(
        encode_reference(&short),
        Err(BuildError::Search(SearchError::DimensionMismatch { .. }))
    ));
}

#[test]
fn import_reference_reads_a_file_and_records_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.idx");
    std::fs::write(&path, encode_reference(&small_reference(2)).unwrap()).unwrap();
    let imported = import_reference(&path, Metric::Cosine).unwrap();
    assert_eq!(imported.parts.params.metric, Metric::Cosine);
    assert_eq!(imported.parts.params.n_items, 7);
    assert_eq!(
        json_metadata(&imported.parts)["reference"]["source_file"],
        "items.idx"
    );
    assert!(matches!(
        import_reference(&dir.path().join("missing.idx"), Metric::L2),
        Err(BuildError::Search(SearchError::Io { .. }))
    ));
}

/// `n_bits = 4` builds the fast-scan layout; each kind of refinement data is stored, opens,
/// verifies, and re-ranking with `f32` data returns the exact best of the candidates: the true
/// nearest neighbour of an indexed vector is itself.
#[test]
fn four_bit_builds_use_the_fast_scan_layout_and_store_refinement_data() {
    use poeem_search::{
        CodeLayout, Index, RefineKind, SearchIndex, SearchParams, Searcher, encode_index,
    };
    let (n, dim) = (600, 10);
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let data: Vec<f32> = (0..n * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    for (refine, metric) in [
        (RefineKind::F32, Metric::L2),
        (RefineKind::F16, Metric::L2),
        (RefineKind::Pq8, Metric::Cosine),
    ] {
        let mut config = BuildConfig::new(8, 5, 4);
        config.metric = metric;
        config.refine = Some(refine);
        config.kmeans.max_iter = 5;
        let (parts, _) =
            build_index(&data, dim, None, &config, Par::Seq, &mut |_| {}).expect("builds");
        assert_eq!(parts.params.code_layout, CodeLayout::FastScan4);
        let index = Index::from_bytes(&encode_index(&parts).unwrap()).unwrap();
        assert_eq!(index.info().format_version, 2);
        index.verify().unwrap();
        assert_eq!(index.view().refine().unwrap().kind(), refine);
        let search = SearchIndex::new(index.view());
        let mut searcher = Searcher::new(&search);
        let params = SearchParams::new(1, 8).with_rerank_factor(50);
        let (mut ids, mut scores) = ([0i64; 1], [0f32; 1]);
        let mut hits = 0;
        for i in 0..50 {
            searcher
                .search_one(
                    &data[i * dim..(i + 1) * dim],
                    &params,
                    &mut ids,
                    &mut scores,
                )
                .unwrap();
            hits += usize::from(ids[0] == i as i64);
        }
        if refine == RefineKind::F32 {
            assert_eq!(hits, 50, "exact re-ranking finds each vector itself");
        } else {
            assert!(hits >= 40, "{refine}: {hits} of 50");
        }
    }
}
