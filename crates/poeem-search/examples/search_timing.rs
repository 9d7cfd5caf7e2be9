//! Throwaway measurements (deleted after use).
use faer::Par;
use poeem_search::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        })
        .collect()
}

fn load_bio() -> (Vec<f32>, usize) {
    let bytes = std::fs::read("/work/shared/data/bio/bio_train.npy").unwrap();
    let dim = 74;
    let data: Vec<f32> = bytes[128..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let n = data.len() / dim;
    let mut out = data.clone();
    for j in 0..dim {
        let mean = (0..n).map(|i| data[i * dim + j] as f64).sum::<f64>() / n as f64;
        let var = (0..n).map(|i| (data[i * dim + j] as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let sd = var.sqrt().max(1e-12);
        for i in 0..n {
            out[i * dim + j] = ((data[i * dim + j] as f64 - mean) / sd) as f32;
        }
    }
    (out, dim)
}

fn exact(data: &[f32], dim: usize, queries: &[f32], k: usize, metric: Metric) -> Vec<Vec<u64>> {
    let n = data.len() / dim;
    let norm = |x: &[f32]| x.iter().map(|v| v * v).sum::<f32>().sqrt();
    queries
        .chunks_exact(dim)
        .map(|q| {
            let mut s: Vec<(f32, u64)> = data
                .chunks_exact(dim)
                .enumerate()
                .map(|(i, x)| {
                    let dot: f32 = q.iter().zip(x).map(|(a, b)| a * b).sum();
                    let key = match metric {
                        Metric::L2 => q.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum(),
                        Metric::InnerProduct => -dot,
                        Metric::Cosine => -dot / norm(x).max(1e-30),
                    };
                    (key, i as u64)
                })
                .collect();
            let _ = n;
            s.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0));
            s.truncate(k);
            s.into_iter().map(|p| p.1).collect()
        })
        .collect()
}

fn recall(ids: &[i64], gt: &[Vec<u64>], k: usize) -> f64 {
    let mut hit = 0;
    for (row, g) in ids.chunks_exact(k).zip(gt) {
        hit += row.iter().filter(|&&i| i >= 0 && g.contains(&(i as u64))).count();
    }
    hit as f64 / (gt.len() * k) as f64
}

fn best_of<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}


fn random_parts(n: usize, dim: usize, n_lists: usize, m: usize, metric: Metric) -> IndexParts {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let params = IndexParams { dim, padded_dim: dim, n_lists, n_subspaces: m, n_bits: 8, metric, n_items: 0 };
    let centroids = gaussian(n_lists * dim, 4);
    let codebooks: Vec<f32> = gaussian(256 * dim, 5).iter().map(|v| v * 0.3).collect();
    let lists: Vec<u32> = (0..n).map(|_| rng.random_range(0..n_lists as u32)).collect();
    let codes: Vec<u8> = (0..n * m).map(|_| rng.random()).collect();
    let ids: Vec<u64> = (0..n as u64).collect();
    let rot = poeem_rotation::Rotation::random(dim, 9).into_vec();
    IndexParts::from_item_codes(params, Some(rot), centroids, codebooks, &lists, &codes, &ids, serde_json::Value::Null).unwrap()
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let mut noop = |_: &poeem_pq::Progress| {};
    if mode == "prof" {
        let a: Vec<String> = std::env::args().collect();
        let metric: Metric = a[2].parse().unwrap();
        let kernel: Kernel = a[3].parse().unwrap();
        let nprobe: usize = a[4].parse().unwrap();
        let how = a[5].as_str();
        let reps: usize = a[6].parse().unwrap();
        let (n, dim, nq, k) = (100_000, 64, 2000, 10);
        let parts = random_parts(n, dim, 1024, 16, metric);
        let queries = gaussian(nq * dim, 2);
        let index = SearchIndex::with_kernel(parts.view().unwrap(), kernel).unwrap();
        let params = SearchParams::new(k, nprobe);
        let mut ids = vec![0i64; nq * k];
        let mut scores = vec![0f32; nq * k];
        let mut searcher = Searcher::new(&index);
        for _ in 0..reps {
            match how {
                "one" => {
                    for ((q, i), s) in queries.chunks_exact(dim).zip(ids.chunks_exact_mut(k)).zip(scores.chunks_exact_mut(k)) {
                        searcher.search_one(q, &params, i, s).unwrap();
                    }
                }
                _ => index.search_batch(&queries, &params, &mut ids, &mut scores, Par::Seq).unwrap(),
            }
        }
        println!("{}", ids.iter().sum::<i64>());
        return;
    }
    if mode == "timing" {
        let (n, dim, nq, k) = (100_000, 64, 2000, 10);
        let data = gaussian(n * dim, 1);
        let queries = gaussian(nq * dim, 2);
        for metric in [Metric::L2, Metric::InnerProduct] {
            let mut cfg = BuildConfig::new(1024, 16, 8);
            cfg.metric = metric;
            let t = Instant::now();
            let (parts, _) = build_index(&data, dim, None, &cfg, Par::rayon(2), &mut noop).unwrap();
            eprintln!("built {metric} in {:.1}s", t.elapsed().as_secs_f64());
            let gt = exact(&data, dim, &queries, k, metric);
            for kernel in [Kernel::Scalar, Kernel::Avx2] {
                let t = Instant::now();
                let index = SearchIndex::with_kernel(parts.view().unwrap(), kernel).unwrap();
                let prep = t.elapsed().as_secs_f64();
                let mut ids = vec![0i64; nq * k];
                let mut scores = vec![0f32; nq * k];
                for nprobe in [8, 64] {
                    let params = SearchParams::new(k, nprobe);
                    let mut searcher = Searcher::new(&index);
                    let one = best_of(3, || {
                        for ((q, i), s) in queries.chunks_exact(dim).zip(ids.chunks_exact_mut(k)).zip(scores.chunks_exact_mut(k)) {
                            searcher.search_one(q, &params, i, s).unwrap();
                        }
                    });
                    let r1 = recall(&ids, &gt, k);
                    let seq = best_of(3, || index.search_batch(&queries, &params, &mut ids, &mut scores, Par::Seq).unwrap());
                    let r2 = recall(&ids, &gt, k);
                    let par2 = best_of(3, || index.search_batch(&queries, &params, &mut ids, &mut scores, Par::rayon(2)).unwrap());
                    let scanned = f64::NAN;
                    println!(
                        "{metric:3} {:6} prep {:5.1}ms nprobe {nprobe:4}: one {:7.1} us/q ({:6.0} QPS) | batch seq {:6.0} QPS | batch 2thr {:6.0} QPS | recall one {r1:.3} batch {r2:.3} | full-scan codes/s one {:.0}M batch {:.0}M",
                        kernel.name(), prep * 1e3,
                        one / nq as f64 * 1e6, nq as f64 / one, nq as f64 / seq, nq as f64 / par2,
                        scanned * nq as f64 / one / 1e6, scanned * nq as f64 / seq / 1e6,
                    );
                }
            }
        }
    } else if mode == "recall" {
        let (data, dim) = if std::env::args().nth(2).as_deref() == Some("bio") { load_bio() } else { (gaussian(100_000 * 64, 5), 64) };
        let n = data.len() / dim;
        let nq = 500;
        // Queries: held-out rows (the last nq rows), not indexed.
        let (base, queries) = data.split_at((n - nq) * dim);
        let k = 10;
        for metric in [Metric::InnerProduct, Metric::Cosine] {
            for n_lists in [256, 1024] {
                let mut cfg = BuildConfig::new(n_lists, 16, 8);
                cfg.metric = metric;
                let (parts, _) = build_index(base, dim, None, &cfg, Par::rayon(2), &mut noop).unwrap();
                let index = SearchIndex::new(parts.view().unwrap());
                let gt = exact(base, dim, queries, k, metric);
                let mut ids = vec![0i64; nq * k];
                let mut scores = vec![0f32; nq * k];
                let full = {
                    index.search_batch(queries, &SearchParams::new(k, n_lists), &mut ids, &mut scores, Par::rayon(2)).unwrap();
                    recall(&ids, &gt, k)
                };
                let mut line = format!("{metric:6} J={n_lists:4} full-probe recall {full:.3} |");
                for nprobe in [1, 2, 4, 8, 16, 32] {
                    let mut r = vec![];
                    for probe in [Probe::L2, Probe::InnerProduct] {
                        let params = SearchParams::new(k, nprobe).with_probe(probe);
                        index.search_batch(queries, &params, &mut ids, &mut scores, Par::rayon(2)).unwrap();
                        r.push(recall(&ids, &gt, k));
                    }
                    line += &format!(" np{nprobe}: l2 {:.3} ip {:.3} |", r[0], r[1]);
                }
                println!("{line}");
            }
        }
    }
}
