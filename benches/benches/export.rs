//! Criterion benchmark of the training export against the post-hoc build of the same index.
//!
//! `cargo bench -p poeem-benches --bench export`
//!
//! On the tutorial's index shape (10,000 items of dimension 64, normalised, IVF8 with PQ8x8,
//! inner product), on one and two threads:
//!
//! - `export`: `index_from_codec` with a codec the training has learned (here fitted once
//!   beforehand): encode every item, group by list, measure the distortion; no k-means;
//! - `post_hoc_ivf_pq` / `post_hoc_opq_ivf_pq`: `build_index` from the same vectors: k-means of
//!   both levels (and OPQ), then the same encode.
//!
//! The ratio of the two is the build time that training the index jointly saves.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use poeem::build::{BuildConfig, build_index, index_from_codec};
use poeem::pq::{IvfPqCodec, IvfPqConfig, OpqConfig, Par};
use poeem::search::Metric;

const N_ITEMS: usize = 10_000;
const DIM: usize = 64;
const N_LISTS: usize = 8;
const N_SUBSPACES: usize = 8;
const N_BITS: u32 = 8;

/// Normalised clustered vectors, like a trained item tower's output.
fn items() -> Vec<f32> {
    let mut data = poeem::synthetic::clustered_gaussian(N_ITEMS, DIM, 64, 0.5, 7);
    for row in data.chunks_exact_mut(DIM) {
        let norm = row
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    data
}

fn bench_export(c: &mut Criterion) {
    let data = items();
    let codec = IvfPqCodec::train(
        &data,
        DIM,
        &IvfPqConfig::new(N_LISTS, N_SUBSPACES, N_BITS),
        Par::Seq,
        &mut |_| {},
    )
    .expect("the codec trains on valid data");
    let mut group = c.benchmark_group("export_10k_IVF8_PQ8x8");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for threads in [1, 2] {
        let par = if threads == 1 {
            Par::Seq
        } else {
            Par::rayon(threads)
        };
        group.bench_with_input(BenchmarkId::new("export", threads), &par, |b, &par| {
            b.iter(|| {
                black_box(
                    index_from_codec(
                        &codec,
                        &data,
                        None,
                        Metric::InnerProduct,
                        poeem::search::IndexMetadata::default(),
                        par,
                    )
                    .expect("export"),
                )
            });
        });
        for (name, opq) in [
            ("post_hoc_ivf_pq", None),
            ("post_hoc_opq_ivf_pq", Some(OpqConfig::default())),
        ] {
            let config = BuildConfig {
                opq,
                ..BuildConfig::new(N_LISTS, N_SUBSPACES, N_BITS)
            };
            group.bench_with_input(BenchmarkId::new(name, threads), &par, |b, &par| {
                b.iter(|| {
                    black_box(
                        build_index(&data, DIM, None, &config, par, &mut |_| {}).expect("build"),
                    )
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_export);
criterion_main!(benches);
