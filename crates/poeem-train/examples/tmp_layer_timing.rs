//! Throwaway timing of the indexing layer (deleted after measuring).
use std::time::Instant;

use faer::Par;
use poeem_rotation::PairSelection;
use poeem_train::{IndexingLayer, IndexingLayerConfig, RotationMode};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn main() {
    let dim = 64;
    let n = 1024;
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let batches: Vec<Vec<f32>> = (0..16)
        .map(|_| {
            let mut v: Vec<f32> = (0..n * dim).map(|_| StandardNormal.sample(&mut r)).collect();
            for row in v.chunks_exact_mut(dim) {
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                row.iter_mut().for_each(|x| *x /= norm);
            }
            v
        })
        .collect();
    for (name, rotation) in [
        ("none", RotationMode::None),
        ("givens-greedy", RotationMode::Givens(PairSelection::Greedy)),
        ("givens-random", RotationMode::Givens(PairSelection::Random)),
        ("givens-steepest", RotationMode::Givens(PairSelection::Steepest)),
    ] {
        for (pname, par) in [("seq", Par::Seq), ("rayon2", Par::rayon(2))] {
            let config = IndexingLayerConfig {
                warmup_steps: 0,
                rotation,
                ..IndexingLayerConfig::tutorial()
            };
            let mut layer = IndexingLayer::new(dim, config).unwrap();
            let mut out = vec![0.0; n * dim];
            let t = Instant::now();
            for b in 0..9 {
                layer.forward_train(&batches[b % 16], &mut out, par).unwrap();
            }
            let init = t.elapsed();
            let (mut fwd, mut upd) = (Vec::new(), Vec::new());
            for step in 0..200 {
                let x = &batches[step % 16];
                let t = Instant::now();
                layer.forward_train(x, &mut out, par).unwrap();
                let t1 = t.elapsed();
                layer.update(1.0, par).unwrap();
                fwd.push(t1.as_secs_f64() * 1e3);
                upd.push((t.elapsed() - t1).as_secs_f64() * 1e3);
            }
            let med = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (f, u) = (med(&mut fwd), med(&mut upd));
            println!(
                "{name:16} {pname:6} init(incl 8 buffering calls) {:>7.1} ms  forward {f:.3} ms  update {u:.3} ms  total {:.3} ms/batch = {:.0} rows/s",
                init.as_secs_f64() * 1e3,
                f + u,
                n as f64 / ((f + u) / 1e3)
            );
        }
    }
}
