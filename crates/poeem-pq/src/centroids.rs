//! A set of centroids with fast nearest-centroid search: the kernel under k-means, the coarse
//! quantizer and each product-quantizer subspace.
//!
//! Squared distances are computed as `‖x‖² + ‖c‖² − 2⟨x, c⟩`. For wide vectors the dot products of
//! a block of points come from one GEMM; for narrow ones (PQ subspaces) from a direct loop over a
//! dimension-major copy of the centroids, vectorised across centroids and run for several points
//! at a time. Ties go to the lowest index. [`Centroids::copy_rows`] refreshes the rows an
//! optimiser changed in place. Loops run inside [`pulp::Arch::dispatch`] so that they are
//! compiled for the best instruction set the CPU offers, chosen once at run time, without
//! `unsafe` here.

use faer::{Accum, MatMut, MatRef, Par};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use crate::PqError;
use crate::data::{check_rows, check_table_rows, chunk_rows};

/// Points per GEMM block.
const BLOCK: usize = 256;
/// Widest vectors scored by the direct loop instead of a GEMM.
const DIRECT_MAX_DIM: usize = 16;
/// Lanes of the lane-parallel argmin (a multiple of every vector width in use).
const LANES: usize = 16;
/// Points scored together by [`Centroids::direct_nearest_rows`].
pub(crate) const ROWS: usize = 4;

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

    /// Copies the centroids `rows` from `table`, the full row-major `k × dim` table of new
    /// values (the other rows of `table` are ignored), keeping the squared norms and the
    /// dimension-major copy in step: afterwards the set equals `Centroids::new` of the table
    /// if every changed row is named, bit for bit. The cost is proportional to the rows
    /// copied, so an optimiser that updates a few rows of its table can refresh just those.
    ///
    /// # Errors
    /// [`PqError::DimensionMismatch`] when `table` is not `k × dim` long,
    /// [`PqError::CodeOutOfRange`] for a row of `k` or more, [`PqError::NonFinite`] for a
    /// non-finite value in a named row. On error nothing changes.
    pub fn copy_rows(&mut self, table: &[f32], rows: &[u32]) -> Result<(), PqError> {
        check_table_rows(table, self.dim, self.k, rows, "centroid table")?;
        for &row in rows {
            let row = row as usize;
            self.write_row(row, &table[row * self.dim..(row + 1) * self.dim]);
        }
        Ok(())
    }

    /// Replaces centroid `row` (below `k`) by `value` (`dim` long, finite) in the row-major
    /// table, the dimension-major copy and the norms.
    #[inline]
    pub(crate) fn write_row(&mut self, row: usize, value: &[f32]) {
        let data = &mut self.data[row * self.dim..(row + 1) * self.dim];
        // One loop for both copies (rows are short: a call to memcpy would cost more).
        for (j, (d, &v)) in data.iter_mut().zip(value).enumerate() {
            *d = v;
            self.transposed[j * self.k + row] = v;
        }
        self.norms[row] = squared_norm(value);
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
        self.nearest_rows(points, labels, Some(distances), par);
    }

    /// [`nearest_batch`](Self::nearest_batch) without the distances (the labels are the
    /// same).
    ///
    /// # Panics
    /// When the buffers' lengths disagree.
    #[track_caller]
    pub(crate) fn nearest_labels(&self, points: &[f32], labels: &mut [u32], par: Par) {
        let n = points.len() / self.dim;
        assert_eq!(points.len(), n * self.dim, "points must be whole rows");
        assert_eq!(labels.len(), n, "one label per point");
        if n > 0 {
            self.nearest_rows(points, labels, None, par);
        }
    }

    /// The labels, and the distances when asked for, in chunks of rows whose boundaries do
    /// not depend on the thread count.
    fn nearest_rows(
        &self,
        points: &[f32],
        labels: &mut [u32],
        mut distances: Option<&mut [f32]>,
        par: Par,
    ) {
        let rows = chunk_rows(labels.len(), par, BLOCK);
        let mut chunks = Vec::with_capacity(labels.len().div_ceil(rows));
        for (points, labels) in points.chunks(rows * self.dim).zip(labels.chunks_mut(rows)) {
            let d = distances.take().map(|d| {
                let (head, tail) = d.split_at_mut(labels.len());
                distances = Some(tail);
                head
            });
            chunks.push((points, labels, d));
        }
        let run = |(points, labels, distances)| self.nearest_chunk(points, labels, distances);
        match par {
            Par::Seq => chunks.into_iter().for_each(run),
            Par::Rayon(_) => chunks.into_par_iter().for_each(run),
        }
    }

    fn nearest_chunk(&self, points: &[f32], labels: &mut [u32], distances: Option<&mut [f32]>) {
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
        let mut distances = distances;
        for (points, labels) in points
            .chunks(BLOCK * self.dim)
            .zip(labels.chunks_mut(BLOCK))
        {
            let b = labels.len();
            let distances = distances.take().map(|d| {
                let (head, tail) = d.split_at_mut(b);
                distances = Some(tail);
                head
            });
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

    /// [`direct_nearest`](Self::direct_nearest) for [`ROWS`] points at once, with the same
    /// results: each score is the same chain of fused multiply-adds,
    /// `‖c‖² − 2 x_0 c_0 − 2 x_1 c_1 − …` in dimension order, ties go to the lowest index,
    /// and the minimum score comes back bit for bit (up to the sign of a zero minimum, which
    /// the callers' `‖x‖² + score` cannot tell apart).
    ///
    /// Scoring several points per pass over the dimension-major table reuses each load of
    /// centroid values and keeps `2 × ROWS` independent accumulator chains in flight, which
    /// is what keeps both FMA units busy; the running minimum and its index are tracked per
    /// lane, so no score is stored. `weights` is scratch of `ROWS × dim` values, `scores` of
    /// `k`. A point whose scores are all infinite or NaN goes through `direct_nearest`
    /// itself, and so does every point when `k` is not a multiple of [`LANES`] (where
    /// `direct_nearest` sums differently) or `simd` is pulp's scalar fallback (whose
    /// `mul_add_e` rounds twice; the vector levels fuse).
    #[inline(always)]
    pub(crate) fn direct_nearest_rows<S: Simd>(
        &self,
        simd: S,
        rows: [&[f32]; ROWS],
        weights: &mut [f32],
        scores: &mut [f32],
        out: &mut [(usize, f32); ROWS],
    ) {
        let lanes = S::F32_LANES;
        if S::IS_SCALAR || !self.k.is_multiple_of(LANES) || !self.k.is_multiple_of(2 * lanes) {
            for (o, x) in out.iter_mut().zip(rows) {
                *o = self.direct_nearest(x, scores);
            }
            return;
        }
        let weights = &mut weights[..ROWS * self.dim];
        for (j, w) in weights.chunks_exact_mut(ROWS).enumerate() {
            for (w, x) in w.iter_mut().zip(rows) {
                *w = -2.0 * x[j];
            }
        }
        // Two blocks of `lanes` centroids per pass: 2 × ROWS independent accumulators.
        let blocks = self.k / lanes;
        let (norms, _) = S::as_simd_f32s(&self.norms);
        let (table, _) = S::as_simd_f32s(&self.transposed);
        let iota: [u32; LANES] = std::array::from_fn(|l| l as u32);
        let mut index = S::as_simd_u32s(&iota).0[0];
        let step = simd.splat_u32s(lanes as u32);
        let mut best = [simd.splat_f32s(f32::INFINITY); ROWS];
        let mut best_index = [simd.splat_u32s(0); ROWS];
        for c in (0..blocks).step_by(2) {
            let mut acc = [[norms[c]; ROWS], [norms[c + 1]; ROWS]];
            for (column, w) in table.chunks_exact(blocks).zip(weights.chunks_exact(ROWS)) {
                let (col0, col1) = (column[c], column[c + 1]);
                for r in 0..ROWS {
                    let w = simd.splat_f32s(w[r]);
                    acc[0][r] = simd.mul_add_e_f32s(w, col0, acc[0][r]);
                    acc[1][r] = simd.mul_add_e_f32s(w, col1, acc[1][r]);
                }
            }
            // Lane l sees its centroids in increasing order, so a strict `<` keeps the first.
            for acc in &acc {
                for ((a, b), i) in acc.iter().zip(&mut best).zip(&mut best_index) {
                    let better = simd.less_than_f32s(*a, *b);
                    *b = simd.select_f32s(better, *a, *b);
                    *i = simd.select_u32s(better, index, *i);
                }
                index = simd.add_u32s(index, step);
            }
        }
        // No lane holds NaN (a NaN score never compares below), so the minimum is exact and
        // the answer is the lowest index among the lanes that hold it.
        let none = simd.splat_u32s(u32::MAX);
        for (r, o) in out.iter_mut().enumerate() {
            let min = simd.reduce_min_f32s(best[r]);
            *o = if min < f32::INFINITY {
                let hit = simd.equal_f32s(best[r], simd.splat_f32s(min));
                let candidates = simd.select_u32s(hit, best_index[r], none);
                let candidates: &[u32] =
                    pulp::bytemuck::cast_slice(std::slice::from_ref(&candidates));
                let index = candidates.iter().fold(u32::MAX, |a, &b| a.min(b));
                (index as usize, min)
            } else {
                self.direct_nearest(rows[r], scores)
            };
        }
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
    /// None: labels only.
    distances: Option<&'a mut [f32]>,
    scores: &'a mut [f32],
}

impl WithSimd for DirectNearest<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = self.centroids;
        let mut distances = self.distances;
        let mut weights = vec![0.0f32; ROWS * c.dim];
        let mut out = [(0usize, 0.0f32); ROWS];
        let blocks = self.points.chunks_exact(ROWS * c.dim);
        let tail = blocks.remainder();
        let done = self.labels.len() - tail.len() / c.dim;
        for (b, points) in blocks.enumerate() {
            let rows = std::array::from_fn(|r| &points[r * c.dim..(r + 1) * c.dim]);
            c.direct_nearest_rows(simd, rows, &mut weights, self.scores, &mut out);
            for (r, x) in rows.iter().enumerate() {
                self.labels[b * ROWS + r] = out[r].0 as u32;
                if let Some(d) = distances.as_deref_mut() {
                    d[b * ROWS + r] = (squared_norm(x) + out[r].1).max(0.0);
                }
            }
        }
        for (i, x) in tail.chunks_exact(c.dim).enumerate() {
            let (best, score) = c.direct_nearest(x, self.scores);
            self.labels[done + i] = best as u32;
            if let Some(d) = distances.as_deref_mut() {
                d[done + i] = (squared_norm(x) + score).max(0.0);
            }
        }
    }
}

struct NearestFromDots<'a> {
    centroids: &'a Centroids,
    points: &'a [f32],
    dots: &'a mut [f32],
    labels: &'a mut [u32],
    /// None: labels only.
    distances: Option<&'a mut [f32]>,
}

impl WithSimd for NearestFromDots<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let c = self.centroids;
        let mut distances = self.distances;
        let rows = self
            .points
            .chunks_exact(c.dim)
            .zip(self.dots.chunks_exact_mut(c.k));
        for (i, ((x, scores), label)) in rows.zip(self.labels.iter_mut()).enumerate() {
            for (s, &norm) in scores.iter_mut().zip(&c.norms) {
                *s = norm - 2.0 * *s;
            }
            let (best, score) = argmin(scores);
            *label = best as u32;
            if let Some(d) = distances.as_deref_mut() {
                d[i] = (squared_norm(x) + score).max(0.0);
            }
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

    /// `direct_nearest_rows` under the best instruction set and under the scalar fallback,
    /// against one `direct_nearest` per row.
    fn check_rows_kernel(c: &Centroids, points: &[f32]) {
        struct Run<'a> {
            c: &'a Centroids,
            rows: [&'a [f32]; ROWS],
        }
        impl WithSimd for Run<'_> {
            type Output = [(usize, f32); ROWS];
            #[inline(always)]
            fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
                let mut weights = vec![0.0; ROWS * self.c.dim];
                let mut scores = vec![0.0; self.c.k];
                let mut out = [(0, 0.0); ROWS];
                self.c
                    .direct_nearest_rows(simd, self.rows, &mut weights, &mut scores, &mut out);
                out
            }
        }
        let mut scores = vec![0.0; c.len()];
        for block in points.chunks_exact(ROWS * c.dim()) {
            let rows = std::array::from_fn(|r| &block[r * c.dim()..(r + 1) * c.dim()]);
            let run = || Run { c, rows };
            for got in [
                Arch::new().dispatch(run()),
                run().with_simd(pulp::Scalar::new()),
            ] {
                for (x, &(index, score)) in rows.iter().zip(&got) {
                    let (want, want_score) = c.direct_nearest(x, &mut scores);
                    assert_eq!(index, want, "k {} dim {}", c.len(), c.dim());
                    assert_eq!(score.to_bits(), want_score.to_bits());
                }
            }
        }
    }

    #[test]
    fn the_multi_row_kernel_matches_the_single_row_kernel_bit_for_bit() {
        for (dim, k) in [
            (8, 256),
            (1, 16),
            (3, 32),
            (16, 64),
            (5, 48),
            (4, 8),
            (2, 24),
        ] {
            let c = Centroids::new(dim, pseudo_random(k * dim, 3)).unwrap();
            check_rows_kernel(&c, &pseudo_random(40 * ROWS * dim, 11));
            // Points on centroids, and coarse values that make exact ties likely.
            let on: Vec<f32> = (0..ROWS * 6)
                .flat_map(|i| c.get(i * 7 % k).to_vec())
                .collect();
            check_rows_kernel(&c, &on);
            let coarse: Vec<f32> = pseudo_random(k * dim, 5)
                .iter()
                .map(|v| (v * 4.0).round())
                .collect();
            let c = Centroids::new(dim, coarse).unwrap();
            let points: Vec<f32> = pseudo_random(30 * ROWS * dim, 9)
                .iter()
                .map(|v| (v * 4.0).round())
                .collect();
            check_rows_kernel(&c, &points);
        }
        // Scores that overflow to infinity go through the single-row kernel.
        let mut data = pseudo_random(32 * 2, 4);
        data[6] = 3e38;
        let c = Centroids::new(2, data).unwrap();
        let points = [1e38, -2e38, 0.0, 0.0, -1e38, 1e38, 3e38, 3e38];
        check_rows_kernel(&c, &points);
    }

    #[test]
    fn narrow_nearest_batch_handles_blocks_and_a_tail() {
        let c = Centroids::new(8, pseudo_random(256 * 8, 2)).unwrap();
        for n in [1, 3, 4, 5, 9, 258] {
            let points = pseudo_random(n * 8, 17);
            let (mut labels, mut dists) = (vec![0; n], vec![0.0; n]);
            c.nearest_batch(&points, &mut labels, &mut dists, Par::Seq);
            let mut scores = vec![0.0; 256];
            for (i, x) in points.chunks_exact(8).enumerate() {
                let (want, score) = c.direct_nearest(x, &mut scores);
                assert_eq!(labels[i] as usize, want);
                assert_eq!(
                    dists[i].to_bits(),
                    (squared_norm(x) + score).max(0.0).to_bits()
                );
            }
        }
    }

    #[test]
    fn copy_rows_equals_a_rebuild_and_refuses_bad_input() {
        let (dim, k) = (3, 20);
        let data = pseudo_random(k * dim, 8);
        let mut c = Centroids::new(dim, data.clone()).unwrap();
        let mut table = data;
        let rows = [4u32, 0, 19, 4];
        for (&r, v) in rows
            .iter()
            .zip(pseudo_random(rows.len() * dim, 21).chunks_exact(dim))
        {
            table[r as usize * dim..(r as usize + 1) * dim].copy_from_slice(v);
        }
        // Rows not named are not read: a NaN there is no error.
        table[dim] = f32::NAN;
        c.copy_rows(&table, &rows).unwrap();
        table[dim..2 * dim].copy_from_slice(c.get(1));
        assert_eq!(c, Centroids::new(dim, table.clone()).unwrap());

        let before = c.clone();
        assert!(matches!(
            c.copy_rows(&table[1..], &[1]),
            Err(PqError::DimensionMismatch { .. })
        ));
        assert!(matches!(
            c.copy_rows(&table, &[1, 20]),
            Err(PqError::CodeOutOfRange {
                value: 20,
                max: 19,
                ..
            })
        ));
        table[2 * dim + 1] = f32::INFINITY;
        assert!(matches!(
            c.copy_rows(&table, &[0, 2]),
            Err(PqError::NonFinite { row: 2, col: 1, .. })
        ));
        assert_eq!(c, before);
        c.copy_rows(&table, &[]).unwrap();
        assert_eq!(c, before);
    }

    #[test]
    fn distances_one_are_exact() {
        let c = Centroids::new(3, vec![0.0, 0.0, 0.0, 1.0, 2.0, 2.0]).unwrap();
        let mut out = [0.0; 2];
        c.distances_one(&[1.0, 0.0, 0.0], &mut out);
        assert_eq!(out, [1.0, 8.0]);
    }
}
