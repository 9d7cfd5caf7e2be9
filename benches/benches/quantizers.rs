//! Criterion benchmarks of the quantizer and rotation kernels (one thread).
//!
//! `cargo bench -p poeem-benches --bench quantizers`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use poeem::pq::{
    KMeans, KMeansConfig, KMeansInit, KMeansSettings, Par, PqConfig, ProductQuantizer,
};
use poeem::rotation::{GivensConfig, GivensOptimizer, PairSelection, Rotation, procrustes};
use poeem::synthetic::{anisotropic_gaussian, clustered_gaussian};

fn kmeans(c: &mut Criterion) {
    let (n, dim, k) = (20_000, 64, 256);
    let data = clustered_gaussian(n, dim, 4 * k, 0.3, 1);
    let config = KMeansConfig {
        n_clusters: k,
        settings: KMeansSettings {
            max_iter: 5,
            tolerance: 0.0,
            init: KMeansInit::RandomSample,
            max_points_per_centroid: None,
        },
        seed: 1,
    };
    let mut group = c.benchmark_group("kmeans");
    group.sample_size(10);
    group.throughput(Throughput::Elements((n * k * 5) as u64));
    group.bench_function("20000x64_k256_5iters", |b| {
        b.iter(|| KMeans::train(black_box(&data), dim, &config, Par::Seq).unwrap())
    });
    group.finish();
}

fn pq_encode(c: &mut Criterion) {
    let (n, dim) = (20_000, 64);
    let data = clustered_gaussian(n, dim, 1024, 0.3, 2);
    let mut group = c.benchmark_group("pq_encode");
    group.throughput(Throughput::Elements(n as u64));
    for (m, bits) in [(16, 8), (8, 8), (16, 4)] {
        let pq =
            ProductQuantizer::train(&data, dim, &PqConfig::new(m, bits), Par::Seq, &mut |_| {})
                .unwrap();
        let mut codes = vec![0u8; n * m];
        group.bench_function(BenchmarkId::new("64d", format!("PQ{m}x{bits}")), |b| {
            b.iter(|| pq.encode(black_box(&data), &mut codes, Par::Seq).unwrap())
        });
    }
    group.finish();
}

fn rotation_updates(c: &mut Criterion) {
    let mut group = c.benchmark_group("rotation_update");
    for dim in [64, 256] {
        let n = 1024;
        let x = anisotropic_gaussian(n, dim, 10.0, 3);
        let z: Vec<f32> = x.iter().map(|v| (v * 4.0).round() / 4.0).collect();
        group.bench_function(BenchmarkId::new("svd_procrustes", dim), |b| {
            b.iter(|| procrustes(black_box(&x), &z, dim, Par::Seq).unwrap())
        });
        for selection in PairSelection::ALL {
            let mut rotation = Rotation::identity(dim);
            let mut opt = GivensOptimizer::new(GivensConfig {
                learning_rate: 1e-4,
                selection,
                ..GivensConfig::default()
            });
            group.bench_function(BenchmarkId::new(format!("givens_{selection}"), dim), |b| {
                b.iter(|| {
                    opt.step_distortion(&mut rotation, black_box(&x), &z, Par::Seq)
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, kmeans, pq_encode, rotation_updates);
criterion_main!(benches);
