//! The probe term of the coarse level ([`IndexingLayerConfig::probe_weight`](super::IndexingLayerConfig)):
//! a query should probe first the list that holds its positive item. For a query `q` (as the
//! search probes it, rotated and padded like the items) and the list `t` of its positive item,
//! the lists are scored as a probe ranks them, `−‖q − v_j‖² / T`, and the centroids descend the
//! cross-entropy `−log softmax_j(−‖q − v_j‖² / T)_t`, whose gradient is
//! `∂/∂v_j = 2 (p_j − [j = t]) (q − v_j) / T`: the positive's list moves towards the query, the
//! lists the query would probe instead move away. Only the centroids learn from it (the towers
//! do not), and only the [`TOP`] lists the query would probe first and the target take a
//! step, so the update stays sparse.

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Lists per query that take a step besides the target: those it would probe first.
pub(crate) const TOP: usize = 16;
/// Scores this far below a query's best are taken as probability 0 (`e^−16 ≈ 1e−7`).
const SKIP: f32 = 16.0;
/// Queries per GEMM block.
const BLOCK: usize = 256;

/// The queries of the last joint batch (rotated, padded) and the list of each one's positive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Probes {
    pub(crate) rotated: Vec<f32>,
    pub(crate) targets: Vec<u32>,
}

impl Probes {
    pub(crate) fn rows(&self) -> usize {
        self.targets.len()
    }

    pub(crate) fn clear(&mut self) {
        self.rotated.clear();
        self.targets.clear();
    }
}

/// One query's step on one centroid: `coef · (q − v_list)` joins the list's gradient sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProbeTerm {
    pub(crate) query: u32,
    pub(crate) list: u32,
    pub(crate) coef: f32,
}

/// The terms of `probes` against `centroids` (`n_lists × p`) at temperature `temperature`,
/// each coefficient `scale · (p_j − [j = t])`, in query order and list order within a query
/// (the result does not depend on `par`).
pub(crate) fn probe_terms(
    probes: &Probes,
    p: usize,
    centroids: &[f32],
    temperature: f32,
    scale: f32,
    terms: &mut Vec<ProbeTerm>,
    par: Par,
) {
    terms.clear();
    let n_lists = centroids.len() / p;
    if n_lists == 0 || probes.rows() == 0 {
        return;
    }
    let norms: Vec<f32> = centroids
        .chunks_exact(p)
        .map(|v| v.iter().map(|&a| a * a).sum())
        .collect();
    let block = |(index, (q, targets)): (usize, (&[f32], &[u32]))| {
        let b = targets.len();
        let mut scores = vec![0.0f32; b * n_lists];
        faer::linalg::matmul::matmul(
            MatMut::from_row_major_slice_mut(&mut scores, b, n_lists),
            Accum::Replace,
            MatRef::from_row_major_slice(q, b, p),
            MatRef::from_row_major_slice(centroids, n_lists, p).transpose(),
            1.0f32,
            Par::Seq,
        );
        let mut out = Vec::new();
        let mut order = Vec::with_capacity(n_lists);
        for (row, (scores, &target)) in scores.chunks_exact_mut(n_lists).zip(targets).enumerate() {
            // −‖q − v_j‖² / T up to the query's own ‖q‖², which the softmax ignores.
            let mut max = f32::NEG_INFINITY;
            for (s, &norm) in scores.iter_mut().zip(&norms) {
                *s = (2.0 * *s - norm) / temperature;
                max = max.max(*s);
            }
            // Scores more than SKIP below the best weigh under e^−SKIP each: not exponentiated.
            let mut total = 0.0f32;
            for s in scores.iter_mut() {
                let d = *s - max;
                *s = if d < -SKIP { 0.0 } else { d.exp() };
                total += *s;
            }
            // The TOP lists the query would probe first, and its target.
            order.clear();
            order.extend(0..n_lists as u32);
            let top = TOP.min(n_lists);
            let by_weight = |a: &u32, b: &u32| {
                scores[*b as usize]
                    .total_cmp(&scores[*a as usize])
                    .then(a.cmp(b))
            };
            if top < n_lists {
                order.select_nth_unstable_by(top - 1, by_weight);
            }
            order.truncate(top);
            order.sort_unstable();
            if order.binary_search(&target).is_err() {
                order.push(target);
                order.sort_unstable();
            }
            let query = (index * BLOCK + row) as u32;
            for &list in &order {
                let probability = scores[list as usize] / total;
                let is_target = list == target;
                out.push(ProbeTerm {
                    query,
                    list,
                    coef: scale * (probability - f32::from(u8::from(is_target))),
                });
            }
        }
        out
    };
    let blocks: Vec<Vec<ProbeTerm>> = match par {
        Par::Seq => probes
            .rotated
            .chunks(BLOCK * p)
            .zip(probes.targets.chunks(BLOCK))
            .enumerate()
            .map(block)
            .collect(),
        Par::Rayon(_) => probes
            .rotated
            .par_chunks(BLOCK * p)
            .zip(probes.targets.par_chunks(BLOCK))
            .enumerate()
            .map(block)
            .collect(),
    };
    terms.extend(blocks.into_iter().flatten());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_the_cross_entropy_gradient_over_the_probe_scores() {
        // Two lists at 0 and 1 on a line; a query at 0.2 whose positive is in list 1.
        let probes = Probes {
            rotated: vec![0.2],
            targets: vec![1],
        };
        let mut terms = Vec::new();
        probe_terms(&probes, 1, &[0.0, 1.0], 0.5, 1.0, &mut terms, Par::Seq);
        // Scores −0.04/0.5 and −0.64/0.5: p = (0.7685, 0.2315).
        let p0 = 1.0 / (1.0 + (-1.2f32).exp());
        assert_eq!(terms.len(), 2);
        assert_eq!((terms[0].query, terms[0].list), (0, 0));
        assert!((terms[0].coef - p0).abs() < 1e-6, "{terms:?}");
        assert!((terms[1].coef - (1.0 - p0 - 1.0)).abs() < 1e-6, "{terms:?}");
        // The same with threads and more queries than a block.
        let many = Probes {
            rotated: (0..600).map(|i| i as f32 / 600.0).collect(),
            targets: (0..600).map(|i| u32::from(i % 3 == 0)).collect(),
        };
        let mut threaded = Vec::new();
        probe_terms(&many, 1, &[0.0, 1.0], 0.5, 2.0, &mut terms, Par::Seq);
        probe_terms(
            &many,
            1,
            &[0.0, 1.0],
            0.5,
            2.0,
            &mut threaded,
            Par::rayon(2),
        );
        assert_eq!(terms, threaded);
        assert_eq!(terms.len(), 1200);
        assert_eq!(terms[1198].query, 599);
    }
}
