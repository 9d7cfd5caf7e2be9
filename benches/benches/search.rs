//! Criterion benchmarks of the index file and the IVF-PQ search.
//!
//! `cargo bench -p poeem-benches --bench search`
//!
//! The indexes are synthetic (random centroids, codebooks, list assignments and codes, seeded):
//! no k-means runs, and the timings depend on the sizes only, not on the code values.
//!
//! - `index_open`: a 1,000,000-item index (IVF1024, PQ16x8, dim 64) in a temporary file, opened
//!   by `Index::open` (mmap, header and section table only) against `Index::read` (all bytes);
//! - `scan_100k_PQ16x8`: per scan kernel available on this CPU, in codes per second: the kernel
//!   alone (`Kernel::score_blocks` over 100,000 codes) and one query searched through a
//!   100,000-item index with a single list (lookup table, scan and top-k filter);
//! - `scan_100k_PQ16x4fs`: the same for 4-bit codes in the fast-scan layout
//!   (`Kernel::sum_blocks_4bit`: byte shuffles, 16-bit sums; and one query through the search,
//!   with the table quantization and the integer top-k threshold);
//! - `search`: on the 1M index, `search_one` latency at nprobe 8 and `search_batch` over 1,000
//!   queries (one and two threads);
//! - `first_query`: on the same (L2) index, preparing it for search and answering one query at
//!   nprobe 8, as a one-query `poeem search` does: the item terms of the probed lists only
//!   (`lazy_terms`, what search does) against every item's terms first (`all_terms`, what
//!   preparing an L2 index cost before the terms became lazy; `precompute_terms` on 2 threads).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use poeem::pq::Par;
use poeem::search::format::write_index;
use poeem::search::{
    CodeLayout, Index, IndexParams, IndexParts, Kernel, Metric, SearchIndex, SearchParams,
    Searcher, TABLE_STRIDE,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIM: usize = 64;
const M: usize = 16;
const K: usize = 10;

/// A seeded random index: Gaussian centroids and codebooks, uniform lists and codes.
fn synthetic_index(n_items: usize, n_lists: usize, seed: u64) -> IndexParts {
    synthetic_index_bits(n_items, n_lists, 8, seed)
}

/// As [`synthetic_index`], with `n_bits` codes (4: the fast-scan layout).
fn synthetic_index_bits(n_items: usize, n_lists: usize, n_bits: u32, seed: u64) -> IndexParts {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = IndexParams {
        dim: DIM,
        padded_dim: DIM,
        n_lists,
        n_subspaces: M,
        n_bits,
        metric: Metric::L2,
        n_items: 0,
        code_layout: CodeLayout::for_bits(n_bits),
    };
    let centroids = poeem::synthetic::anisotropic_gaussian(n_lists, DIM, 1.0, seed + 1);
    let codebooks: Vec<f32> =
        poeem::synthetic::anisotropic_gaussian(1 << n_bits, DIM, 1.0, seed + 2)
            .into_iter()
            .map(|v| 0.3 * v)
            .collect();
    let lists: Vec<u32> = (0..n_items)
        .map(|_| rng.random_range(0..n_lists as u32))
        .collect();
    let mut codes = vec![0u8; n_items * M];
    rng.fill_bytes(&mut codes);
    let mask = ((1u32 << n_bits) - 1) as u8;
    codes.iter_mut().for_each(|c| *c &= mask);
    let ids: Vec<u64> = (0..n_items as u64).collect();
    IndexParts::from_item_codes(params, None, centroids, codebooks, &lists, &codes, &ids, {
        let mut metadata = poeem::search::IndexMetadata::new();
        metadata.extra.insert(
            "source".to_owned(),
            "benches/search.rs synthetic index".into(),
        );
        metadata
    })
    .expect("a consistent synthetic index")
}

/// Standard Gaussian queries (`n × DIM`).
fn queries(n: usize, seed: u64) -> Vec<f32> {
    poeem::synthetic::anisotropic_gaussian(n, DIM, 1.0, seed)
}

fn index_open(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bench.poeem");
    write_index(&path, &synthetic_index(1_000_000, 1024, 1)).expect("writing the index");
    let mut group = c.benchmark_group("index_open");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("1M_IVF1024_PQ16x8_dim64/open_mmap", |b| {
        b.iter(|| Index::open(black_box(&path)).expect("opening the index"))
    });
    group.bench_function("1M_IVF1024_PQ16x8_dim64/read_heap", |b| {
        b.iter(|| Index::read(black_box(&path)).expect("reading the index"))
    });
    group.finish();
}

fn scan(c: &mut Criterion) {
    let n_items = 100_000;
    let parts = synthetic_index(n_items, 1, 2);
    let view = parts.view().expect("a valid view");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let table: Vec<f32> = (0..M * TABLE_STRIDE).map(|_| rng.random::<f32>()).collect();
    let codes = view.list(0).codes;
    let mut out = vec![0f32; codes.len() / M];
    let query = queries(1, 3);
    let params = SearchParams::new(K, 1);
    let (mut ids, mut scores) = ([0i64; K], [0f32; K]);
    let mut group = c.benchmark_group("scan_100k_PQ16x8");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(n_items as u64));
    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
        // The kernel alone: table lookups and sums, no top-k filter.
        group.bench_function(BenchmarkId::new("score_blocks", kernel.name()), |b| {
            b.iter(|| {
                kernel
                    .score_blocks(black_box(&table), M, 0.0, codes, &mut out)
                    .expect("scoring")
            })
        });
        // One query through the search, one list of 100k items: table, scan, top-k filter.
        let index = SearchIndex::with_kernel(view, kernel).expect("an available kernel");
        let mut searcher = Searcher::new(&index);
        group.bench_function(BenchmarkId::new("search_one_k10", kernel.name()), |b| {
            b.iter(|| {
                searcher
                    .search_one(black_box(&query), &params, &mut ids, &mut scores)
                    .expect("searching")
            })
        });
    }
    group.finish();
}

/// The 4-bit fast-scan kernel beside the 8-bit one: the same 100,000 items, M = 16.
fn scan4(c: &mut Criterion) {
    let n_items = 100_000;
    let parts = synthetic_index_bits(n_items, 1, 4, 2);
    let view = parts.view().expect("a valid view");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let entries: Vec<u8> = (0..M * 16).map(|_| rng.random::<u8>()).collect();
    let codes = view.list(0).codes;
    let mut out = vec![0u16; codes.len() * 2 / M];
    let query = queries(1, 3);
    let params = SearchParams::new(K, 1);
    let (mut ids, mut scores) = ([0i64; K], [0f32; K]);
    let mut group = c.benchmark_group("scan_100k_PQ16x4fs");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(n_items as u64));
    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
        // The kernel alone: shuffles and 16-bit sums, no top-k filter.
        group.bench_function(BenchmarkId::new("sum_blocks_4bit", kernel.name()), |b| {
            b.iter(|| {
                kernel
                    .sum_blocks_4bit(black_box(&entries), M, codes, &mut out)
                    .expect("summing")
            })
        });
        // One query: table, quantization, scan with the integer threshold, top-k.
        let index = SearchIndex::with_kernel(view, kernel).expect("an available kernel");
        let mut searcher = Searcher::new(&index);
        group.bench_function(BenchmarkId::new("search_one_k10", kernel.name()), |b| {
            b.iter(|| {
                searcher
                    .search_one(black_box(&query), &params, &mut ids, &mut scores)
                    .expect("searching")
            })
        });
    }
    group.finish();
}

fn search(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bench.poeem");
    write_index(&path, &synthetic_index(1_000_000, 1024, 4)).expect("writing the index");
    let index = Index::open(&path).expect("opening the index");
    let search_index = SearchIndex::new(index.view());
    let n_queries = 1000;
    let queries = queries(n_queries, 5);
    let params = SearchParams::new(K, 8);

    let mut group = c.benchmark_group("search_1M_IVF1024_PQ16x8_nprobe8");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    let mut searcher = Searcher::new(&search_index);
    let (mut ids, mut scores) = ([0i64; K], [0f32; K]);
    let mut next = queries.chunks_exact(DIM).cycle();
    group.throughput(Throughput::Elements(1));
    group.bench_function("search_one", |b| {
        b.iter(|| {
            let query = next.next().expect("a query");
            searcher
                .search_one(black_box(query), &params, &mut ids, &mut scores)
                .expect("searching")
        })
    });
    let (mut ids, mut scores) = (vec![0i64; n_queries * K], vec![0f32; n_queries * K]);
    group.sample_size(10);
    group.throughput(Throughput::Elements(n_queries as u64));
    for (name, par) in [("1_thread", Par::Seq), ("2_threads", Par::rayon(2))] {
        group.bench_function(BenchmarkId::new("search_batch_1000", name), |b| {
            b.iter(|| {
                search_index
                    .search_batch(black_box(&queries), &params, &mut ids, &mut scores, par)
                    .expect("searching")
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("first_query_1M_IVF1024_PQ16x8_nprobe8");
    group.sample_size(10);
    let query = &queries[..DIM];
    let (mut ids, mut scores) = ([0i64; K], [0f32; K]);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a thread pool");
    for (name, all_terms) in [("lazy_terms", false), ("all_terms", true)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let prepared = SearchIndex::new(index.view());
                if all_terms {
                    pool.install(|| prepared.precompute_terms());
                }
                Searcher::new(&prepared)
                    .search_one(black_box(query), &params, &mut ids, &mut scores)
                    .expect("searching")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, index_open, scan, scan4, search);
criterion_main!(benches);
