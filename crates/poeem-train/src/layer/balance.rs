//! Balanced lists ([`IndexingLayerConfig::list_balance`](super::IndexingLayerConfig)): the
//! rows the coarse centroids learn from are assigned to the list minimising
//! `‖x' − v_j‖² + π_j`, with a price `π_j` per list that rises while the list takes more than
//! its share of rows and falls while it takes fewer (a dual ascent on equal list sizes).
//!
//! A centroid that learns the mean of a priced list moves towards the rows its neighbours give
//! up, so its own (unpriced) Voronoi cell grows: the lists the export writes, each item in its
//! nearest list, come out more even than plain k-means leaves them. The index stays a plain
//! IVF index (prices are a training device; nothing of them is exported), and the forward pass
//! still quantizes through the nearest centroid.

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Rows per GEMM block of [`priced_lists`].
const BLOCK: usize = 256;

/// The priced list of each row of `rotated` (`n × p`) against `centroids` (`n_lists × p`) and
/// `prices` (`n_lists`), ties to the lower list, and each row's squared distance to that
/// list's centroid (price excluded). The result does not depend on `par`.
pub(crate) fn priced_lists(
    rotated: &[f32],
    p: usize,
    centroids: &[f32],
    prices: &[f32],
    lists: &mut Vec<u32>,
    distances: &mut Vec<f32>,
    par: Par,
) {
    let n = rotated.len() / p;
    let n_lists = prices.len();
    lists.clear();
    lists.resize(n, 0);
    distances.clear();
    distances.resize(n, 0.0);
    // ‖v_j‖² + π_j: the part of the priced distance that does not depend on the row.
    let offsets: Vec<f32> = centroids
        .chunks_exact(p)
        .zip(prices)
        .map(|(v, &price)| v.iter().map(|&a| a * a).sum::<f32>() + price)
        .collect();
    let block = |((x, lists), distances): ((&[f32], &mut [u32]), &mut [f32])| {
        let b = lists.len();
        let mut dots = vec![0.0f32; b * n_lists];
        faer::linalg::matmul::matmul(
            MatMut::from_row_major_slice_mut(&mut dots, b, n_lists),
            Accum::Replace,
            MatRef::from_row_major_slice(x, b, p),
            MatRef::from_row_major_slice(centroids, n_lists, p).transpose(),
            1.0f32,
            Par::Seq,
        );
        for (((row, dots), list), distance) in x
            .chunks_exact(p)
            .zip(dots.chunks_exact(n_lists))
            .zip(lists.iter_mut())
            .zip(distances.iter_mut())
        {
            let (mut best, mut best_score) = (0usize, f32::INFINITY);
            for (j, (&dot, &offset)) in dots.iter().zip(&offsets).enumerate() {
                let score = offset - 2.0 * dot;
                if score < best_score {
                    (best, best_score) = (j, score);
                }
            }
            let norm: f32 = row.iter().map(|&a| a * a).sum();
            *list = best as u32;
            *distance = (norm + best_score - prices[best]).max(0.0);
        }
    };
    match par {
        Par::Seq => rotated
            .chunks(BLOCK * p)
            .zip(lists.chunks_mut(BLOCK))
            .zip(distances.chunks_mut(BLOCK))
            .for_each(block),
        Par::Rayon(_) => rotated
            .par_chunks(BLOCK * p)
            .zip(lists.par_chunks_mut(BLOCK))
            .zip(distances.par_chunks_mut(BLOCK))
            .for_each(block),
    }
}

/// One step of the prices after rows were assigned to `lists` at squared distances
/// `distances`: `π_j += step · d̄² · (n_j · J / n − 1)`, with `n_j` the rows list `j` took and
/// `d̄²` their mean squared distance (so the step is on the scale of the distances); then the
/// prices are shifted to a mean of zero (a common shift changes no assignment).
pub(crate) fn update_prices(prices: &mut [f32], lists: &[u32], distances: &[f32], step: f32) {
    let n = lists.len();
    if n == 0 || prices.is_empty() {
        return;
    }
    let n_lists = prices.len();
    let mut counts = vec![0u32; n_lists];
    for &list in lists {
        counts[list as usize] += 1;
    }
    let mean_distance = distances.iter().map(|&d| f64::from(d)).sum::<f64>() / n as f64;
    let scale = f64::from(step) * mean_distance;
    let share = n_lists as f64 / n as f64;
    let mut total = 0.0f64;
    for (price, &count) in prices.iter_mut().zip(&counts) {
        *price += (scale * (f64::from(count) * share - 1.0)) as f32;
        total += f64::from(*price);
    }
    let mean = (total / n_lists as f64) as f32;
    for price in prices.iter_mut() {
        *price -= mean;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priced_lists_are_the_nearest_lists_at_zero_prices_and_follow_the_prices() {
        // Two centroids on a line, rows at 0.1, 0.4, 0.6, 0.9 (p = 1).
        let centroids = [0.0f32, 1.0];
        let rows = [0.1f32, 0.4, 0.6, 0.9];
        let (mut lists, mut distances) = (Vec::new(), Vec::new());
        priced_lists(
            &rows,
            1,
            &centroids,
            &[0.0, 0.0],
            &mut lists,
            &mut distances,
            Par::Seq,
        );
        assert_eq!(lists, [0, 0, 1, 1]);
        for (d, want) in distances.iter().zip([0.01f32, 0.16, 0.16, 0.01]) {
            assert!((d - want).abs() < 1e-6, "{distances:?}");
        }
        // A price of 0.5 on list 0 moves its boundary from 0.5 to 0.25.
        priced_lists(
            &rows,
            1,
            &centroids,
            &[0.5, 0.0],
            &mut lists,
            &mut distances,
            Par::Seq,
        );
        assert_eq!(lists, [0, 1, 1, 1]);
        assert!(
            (distances[1] - 0.36).abs() < 1e-6,
            "price excluded: {distances:?}"
        );
        // The same with threads.
        let mut threaded = Vec::new();
        priced_lists(
            &rows,
            1,
            &centroids,
            &[0.5, 0.0],
            &mut threaded,
            &mut distances,
            Par::rayon(2),
        );
        assert_eq!(threaded, lists);
    }

    #[test]
    fn prices_rise_on_crowded_lists_and_keep_a_zero_mean() {
        let mut prices = vec![0.0f32; 4];
        // List 0 takes 5 of 8 rows (2.5 times its share), list 3 none; mean distance 2.
        update_prices(&mut prices, &[0, 0, 0, 0, 0, 1, 1, 2], &[2.0; 8], 0.1);
        // Raw steps 0.2 · (2.5 − 1, 1 − 1, 0.5 − 1, 0 − 1) = (0.3, 0, −0.1, −0.2), mean 0.
        for (p, want) in prices.iter().zip([0.3f32, 0.0, -0.1, -0.2]) {
            assert!((p - want).abs() < 1e-6, "{prices:?}");
        }
        assert!(prices.iter().sum::<f32>().abs() < 1e-6);
    }
}
