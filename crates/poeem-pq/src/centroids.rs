//! A set of centroids with fast nearest-centroid search: the kernel under k-means, the coarse
//! quantizer and each product-quantizer subspace.
//!
//! Squared distances are computed as `‖x‖² + ‖c‖² − 2⟨x, c⟩`. For wide vectors the dot products of
//! a block of points come from one GEMM; for narrow ones (PQ subspaces) from a direct loop over a
//! dimension-major copy of the centroids, vectorised across centroids. Ties go to the lowest
//! index. Loops run inside [`pulp::Arch::dispatch`] so that they are compiled for the best
//! instruction set the CPU offers, chosen once at run time, without `unsafe` here.

use faer::{Accum, MatMut, MatRef, Par};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use crate::PqError;
use crate::data::{check_rows, chunk_rows};

/// Points per GEMM block.
const BLOCK: usize = 256;
/// Widest vectors scored by the direct loop instead of a GEMM.
const DIRECT_MAX_DIM: usize = 16;
/// Lanes of the lane-parallel argmin (a multiple of every vector width in use).
const LANES: usize = 16;

/// `k` centroids of dimension `dim`, with their squared norms and a dimension-major copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Centroids {
    k: usize,
    dim: usize,
    data: Vec<f32>,
    transposed: Vec<f32>,
    norms: Vec<f32>,
}

impl Centroids {
    /// Wraps `k × dim` row-major centroids.
    ///
    /// # Errors
    /// On a zero dimension, a ragged or empty buffer, or a non-finite value.
    pub fn new(dim: usize, data: Vec<f32>) -> Result<Self, PqError> {
        let k = check_rows(&data, dim, "centroids")?;
        if k == 0 {
            return Err(PqError::Empty { what: "centroids" });
        }
        Ok(Self::from_checked(dim, data))
    }

    pub(crate) fn from_checked(dim: usize, data: Vec<f32>) -> Self {
        let k = data.len() / dim;
        let mut transposed = vec![0.0f32; data.len()];
        for (c, row) in data.chunks_exact(dim).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                transposed[j * k + c] = v;
            }
        }
        let norms = data.chunks_exact(dim).map(squared_norm).collect();
        Self {
            k,
            dim,
            data,
            transposed,
            norms,
        }
    }

    /// Number of centroids.
    pub fn len(&self) -> usize {
        self.k
    }

    /// Always false: a centroid set has at least one centroid.
    pub fn is_empty(&self) -> bool {
        self.k == 0
    }

    /// Dimension of each centroid.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The centroids, row-major `k × dim`.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Centroid `index`.
    pub fn get(&self, index: usize) -> &[f32] {
        &self.data[index * self.dim..(index + 1) * self.dim]
    }

    /// Squared norms `‖c_k‖²`.
    pub fn norms(&self) -> &[f32] {
        &self.norms
    }

    /// Consumes the set and returns the row-major centroids.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// The nearest centroid of each row of `points` (row-major `n × dim`, finite) and its squared
    /// distance. The result does not depend on `par`.
    ///
    /// # Panics
    /// When the buffers' lengths disagree.
    #[track_caller]
    pub fn nearest_batch(
        &self,
        points: &[f32],
        labels: &mut [u32],
        distances: &mut [f32],
        par: Par,
    ) {
        let n = points.len() / self.dim;
        assert_eq!(points.len(), n * self.dim, "points must be whole rows");
        assert_eq!(labels.len(), n, "one label per point");
        assert_eq!(distances.len(), n, "one distance per point");
        if n == 0 {
            return;
        }
        let rows = chunk_rows(n, par, BLOCK);
        let run = |((points, labels), distances): ((&[f32], &mut [u32]), &mut [f32])| {
            self.nearest_chunk(points, labels, distances)
        };
        let points = points.chunks(rows * self.dim);
        let (labels, distances) = (labels.chunks_mut(rows), distances.chunks_mut(rows));
        match par {
            Par::Seq => points.zip(labels).zip(distances).for_each(run),
            Par::Rayon(_) => points
                .zip(labels)
                .zip(distances)
                .collect::<Vec<_>>()
                .into_par_iter()
                .for_each(run),
        }
    }

    fn nearest_chunk(&self, points: &[f32], labels: &mut [u32], distances: &mut [f32]) {
        let arch = Arch::new();
        if self.dim <= DIRECT_MAX_DIM {
            let mut scores = vec![0.0f32; self.k];
            arch.dispatch(DirectNearest {
                centroids: self,
                points,
                labels,
                distances,
                scores: &mut scores,
            });
            return;
        }
        let mut dots = vec![0.0f32; BLOCK.min(labels.len()) * self.k];
        for ((points, labels), distances) in points
            .chunks(BLOCK * self.dim)
            .zip(labels.chunks_mut(BLOCK))
            .zip(distances.chunks_mut(BLOCK))
        {
            let b = labels.len();
            let dots = &mut dots[..b * self.k];
            faer::linalg::matmul::matmul(
                MatMut::from_row_major_slice_mut(dots, b, self.k),
                Accum::Replace,
                MatRef::from_row_major_slice(points, b, self.dim),
                MatRef::from_row_major_slice(&self.data, self.k, self.dim).transpose(),
                1.0f32,
                Par::Seq,
            );
            arch.dispatch(NearestFromDots {
                centroids: self,
                points,
                dots,
                labels,
                distances,
            });
        }
    }

    /// The nearest centroid of `x` and its squared distance.
    ///
    /// # Panics
    /// When `x` is not `dim` long.
    #[track_caller]
    pub fn nearest_one(&self, x: &[f32]) -> (u32, f32) {
        let (mut label, mut distance) = ([0u32], [0.0f32]);
        self.nearest_batch(x, &mut label, &mut distance, Par::Seq);
        (label[0], distance[0])
    }

    /// Squared distances from `x` to every centroid, into `out` (`k` long).
    ///
    /// # Panics
    /// When `x` is not `dim` long or `out` not `k` long.
    #[track_caller]
    pub fn distances_one(&self, x: &[f32], out: &mut [f32]) {
        assert_eq!(
            x.len(),
            self.dim,
            "query must have the centroids' dimension"
        );
        assert_eq!(out.len(), self.k, "one distance per centroid");
        Arch::new().dispatch(DistancesOne {
            centroids: self,
            x,
            out,
        });
    }

    /// `dots[k] = ⟨x, c_k⟩` by the direct loop over the dimension-major copy (x is `dim` long).
    #[inline(always)]
    pub(crate) fn direct_dots(&self, x: &[f32], dots: &mut [f32]) {
        dots.fill(0.0);
        for (&xj, column) in x.iter().zip(self.transposed.chunks_exact(self.k)) {
            for (d, &c) in dots.iter_mut().zip(column) {
                *d += xj * c;
            }
        }
    }

    /// `out[k] = ‖x − c_k‖²`, summed exactly (not by the norm expansion), by the direct loop.
    #[inline(always)]
    pub(crate) fn direct_squared_distances(&self, x: &[f32], out: &mut [f32]) {
        out.fill(0.0);
        for (&xj, column) in x.iter().zip(self.transposed.chunks_exact(self.k)) {
            for (o, &c) in out.iter_mut().zip(column) {
                *o += (xj - c) * (xj - c);
            }
        }
    }

    /// The nearest centroid to `x` (`dim` long) by the direct loop and its score
    /// `‖c‖² − 2⟨x, c⟩`; `scores` is scratch of `k` values. Scores are accumulated in registers
    /// one block of [`LANES`] centroids at a time, tracking the running minimum, so the
    /// dimension-major table is read once.
    #[inline(always)]
    pub(crate) fn direct_nearest(&self, x: &[f32], scores: &mut [f32]) -> (usize, f32) {
        if !self.k.is_multiple_of(LANES) {
            self.direct_scores(x, scores);
            return argmin(scores);
        }
        let mut lanes = [f32::INFINITY; LANES];
        for (c, (out, norms)) in scores
            .chunks_exact_mut(LANES)
            .zip(self.norms.chunks_exact(LANES))
            .enumerate()
        {
            let mut acc = [0.0f32; LANES];
            acc.copy_from_slice(norms);
            for (j, &xj) in x.iter().enumerate() {
                let a = -2.0 * xj;
                let column = &self.transposed[j * self.k + c * LANES..j * self.k + (c + 1) * LANES];
                for l in 0..LANES {
                    acc[l] = a.mul_add(column[l], acc[l]);
                }
            }
            for l in 0..LANES {
                lanes[l] = if acc[l] < lanes[l] { acc[l] } else { lanes[l] };
            }
            out.copy_from_slice(&acc);
        }
        let min = lanes
            .iter()
            .fold(lanes[0], |m, &v| if v < m { v } else { m });
        first_equal(scores, min)
    }

    /// `scores[k] = ‖c_k‖² − 2⟨x, c_k⟩` by the direct loop (x is `dim` long).
    #[inline(always)]
    pub(crate) fn direct_scores(&self, x: &[f32], scores: &mut [f32]) {
        scores.copy_from_slice(&self.norms);
        for (&xj, column) in x.iter().zip(self.transposed.chunks_exact(self.k)) {
            let a = -2.0 * xj;
            for (s, &c) in scores.iter_mut().zip(column) {
                *s += a * c;
            }
        }
    }
}

/// Index and value of the smallest element of `values` (non-empty), lowest index on ties.
///
/// Two passes that both vectorise: the minimum by lane-parallel `min`, then the first block of
/// lanes holding it.
#[inline(always)]
pub(crate) fn argmin(values: &[f32]) -> (usize, f32) {
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut lanes = [f32::INFINITY; LANES];
    for chunk in chunks.clone() {
        for l in 0..LANES {
            lanes[l] = if chunk[l] < lanes[l] {
                chunk[l]
            } else {
                lanes[l]
            };
        }
    }
    let min = lanes
        .iter()
        .chain(tail)
        .fold(values[0], |m, &v| if v < m { v } else { m });
    first_equal(values, min)
}

/// `(i, min)` for the first `i` with `values[i] == min` (0 when there is none, as with NaN).
#[inline(always)]
fn first_equal(values: &[f32], min: f32) -> (usize, f32) {
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for (c, chunk) in chunks.enumerate() {
        let mut hit = false;
        for &v in chunk {
            hit |= v == min;
        }
        if hit {
            let l = chunk.iter().position(|&v| v == min).unwrap_or(0);
            return (c * LANES + l, min);
        }
    }
    match tail.iter().position(|&v| v == min) {
        Some(l) => (values.len() - tail.len() + l, min),
        None => (0, values[0]),
    }
}

#[inline(always)]
pub(crate) fn squared_norm(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum()
}

struct DirectNearest<'a> {
    centroids: &'a Centroids,
    points: &'a [f32],
    labels: &'a mut [u32],
    distances: &'a mut [f32],
    scores: &'a mut [f32],
}

impl WithSimd for DirectNearest<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let c = self.centroids;
        for ((x, label), distance) in self
            .points
            .chunks_exact(c.dim)
            .zip(self.labels.iter_mut())
            .zip(self.distances.iter_mut())
        {
            let (best, score) = c.direct_nearest(x, self.scores);
            *label = best as u32;
            *distance = (squared_norm(x) + score).max(0.0);
        }
    }
}

struct NearestFromDots<'a> {
    centroids: &'a Centroids,
    points: &'a [f32],
    dots: &'a mut [f32],
    labels: &'a mut [u32],
    distances: &'a mut [f32],
}

impl WithSimd for NearestFromDots<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let c = self.centroids;
        let rows = self
            .points
            .chunks_exact(c.dim)
            .zip(self.dots.chunks_exact_mut(c.k));
        for ((x, scores), (label, distance)) in
            rows.zip(self.labels.iter_mut().zip(self.distances.iter_mut()))
        {
            for (s, &norm) in scores.iter_mut().zip(&c.norms) {
                *s = norm - 2.0 * *s;
            }
            let (best, score) = argmin(scores);
            *label = best as u32;
            *distance = (squared_norm(x) + score).max(0.0);
        }
    }
}

struct DistancesOne<'a> {
    centroids: &'a Centroids,
    x: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for DistancesOne<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let c = self.centroids;
        for (o, row) in self.out.iter_mut().zip(c.data.chunks_exact(c.dim)) {
            *o = row.iter().zip(self.x).map(|(a, b)| (a - b) * (a - b)).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_nearest(c: &Centroids, x: &[f32]) -> (u32, f32) {
        let mut best = (0u32, f32::INFINITY);
        for k in 0..c.len() {
            let d: f32 = c.get(k).iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum();
            if d < best.1 {
                best = (k as u32, d);
            }
        }
        best
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 10_007) as f32
                    / 10_007.0
                    - 0.5
            })
            .collect()
    }

    #[test]
    fn nearest_matches_brute_force_for_narrow_and_wide_vectors() {
        for (dim, k, n) in [(4, 256, 300), (3, 5, 40), (40, 37, 600), (64, 1024, 257)] {
            let c = Centroids::new(dim, pseudo_random(k * dim, 1)).unwrap();
            let points = pseudo_random(n * dim, 7);
            let (mut labels, mut dists) = (vec![0; n], vec![0.0; n]);
            c.nearest_batch(&points, &mut labels, &mut dists, Par::rayon(2));
            for (i, x) in points.chunks_exact(dim).enumerate() {
                let (bl, bd) = brute_nearest(&c, x);
                let chosen: f32 = c
                    .get(labels[i] as usize)
                    .iter()
                    .zip(x)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                assert!(
                    chosen <= bd + 1e-4,
                    "dim {dim}: label {} at {chosen} vs {bl} at {bd}",
                    labels[i]
                );
                assert!((dists[i] - bd).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn argmin_prefers_the_lowest_index_on_ties() {
        let mut v = vec![3.0f32; 40];
        v[33] = 1.0;
        v[17] = 1.0;
        v[38] = 1.0;
        assert_eq!(argmin(&v), (17, 1.0));
        assert_eq!(argmin(&[2.0, 2.0]), (0, 2.0));
        let mut w = vec![5.0f32; 37];
        w[36] = -1.0;
        assert_eq!(argmin(&w), (36, -1.0));
    }

    #[test]
    fn distances_one_are_exact() {
        let c = Centroids::new(3, vec![0.0, 0.0, 0.0, 1.0, 2.0, 2.0]).unwrap();
        let mut out = [0.0; 2];
        c.distances_one(&[1.0, 0.0, 0.0], &mut out);
        assert_eq!(out, [1.0, 8.0]);
    }
}
