//! The two IVF-PQ encode paths side by side, on the same data and the same learned codec
//! (100,000 × 64, J = 64 lists, D = 16 subspaces, K = 256 codewords, one thread):
//!
//! - `layer_quantize`: the indexing layer's forward pass, [`IndexingLayer::quantize`]
//!   (rotate, assign lists, PQ-encode the residuals, decode, rotate back);
//! - `codec_encode_decode`: the same through the codec the layer exports,
//!   [`IvfPqCodec::encode`] then [`IvfPqCodec::decode`];
//! - `codec_encode`: [`IvfPqCodec::encode`] alone, the export's path.
//!
//! Each in two settings: `identity` (no rotation) and `rotated` (a Givens-learned rotation).
//!
//! `cargo bench -p poeem-benches --bench encode`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use poeem::pq::{IvfPqCodec, KMeansSettings, Par};
use poeem::rotation::PairSelection;
use poeem::synthetic::clustered_gaussian;
use poeem::train::{CentroidInit, IndexingLayer, IndexingLayerConfig, RotationMode};

const N: usize = 100_000;
const DIM: usize = 64;

/// A layer past its warm start (random init on the first rows, then `steps` joint updates) and
/// its codec.
fn learned_layer(
    data: &[f32],
    rotation: RotationMode,
    steps: usize,
) -> (IndexingLayer, IvfPqCodec) {
    let config = IndexingLayerConfig {
        n_lists: 64,
        n_subspaces: 16,
        n_bits: 8,
        warmup_steps: 0,
        centroid_init: CentroidInit::Random,
        kmeans: KMeansSettings::default(),
        rotation,
        seed: 3,
        ..IndexingLayerConfig::paper()
    };
    let mut layer = IndexingLayer::new(DIM, config).expect("valid layer settings");
    let batch = 1024;
    let mut out = vec![0.0f32; batch * DIM];
    for step in 0..=steps {
        let rows = &data[(step * batch) % (N - batch) * DIM..][..batch * DIM];
        layer
            .forward_train(rows, &mut out, Par::Seq)
            .expect("finite batch");
        layer.update(1.0, Par::Seq).expect("finite update");
    }
    let codec = layer.codec().expect("initialised layer");
    (layer, codec)
}

fn encode_paths(c: &mut Criterion) {
    let data = clustered_gaussian(N, DIM, 512, 0.3, 11);
    let mut group = c.benchmark_group("encode_paths");
    group.sample_size(10);
    group.throughput(Throughput::Elements(N as u64));
    for (name, rotation, steps) in [
        ("identity", RotationMode::None, 0),
        ("rotated", RotationMode::Givens(PairSelection::Random), 8),
    ] {
        let (layer, codec) = learned_layer(&data, rotation, steps);
        assert_eq!(
            codec.rotation().is_identity(),
            name == "identity",
            "the {name} setting has the rotation it names"
        );
        let m = codec.pq().n_subspaces();
        let mut out = vec![0.0f32; N * DIM];
        let mut lists = vec![0u32; N];
        let mut codes = vec![0u8; N * m];
        group.bench_function(BenchmarkId::new("layer_quantize", name), |b| {
            b.iter(|| {
                layer
                    .quantize(black_box(&data), &mut out, Par::Seq)
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("codec_encode_decode", name), |b| {
            b.iter(|| {
                codec
                    .encode(black_box(&data), &mut lists, &mut codes, Par::Seq)
                    .unwrap();
                codec.decode(&lists, &codes, &mut out, Par::Seq).unwrap();
            })
        });
        group.bench_function(BenchmarkId::new("codec_encode", name), |b| {
            b.iter(|| {
                codec
                    .encode(black_box(&data), &mut lists, &mut codes, Par::Seq)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode_paths);
criterion_main!(benches);
