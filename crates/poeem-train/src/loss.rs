//! The retrieval loss: cosine scores divided by a temperature, and softmax cross-entropy over the
//! batch's items (plus any extra sampled negatives), with its hand-written backward pass.
//!
//! For queries `q_b` and candidate items `y_c` (rows `0..B` of the candidates are the batch's
//! positives, row `b` the positive of query `b`; rows `B..C` extra negatives):
//!
//! ```text
//! s_bc = ⟨q̂_b, ŷ_c⟩ / T − log Q_c          (log Q_c: optional sampling correction)
//! ℓ_b  = −log softmax(s_b)_b
//! L    = Σ_b ℓ_b   (LossReduction::Sum, the reference)   or   (1/B) Σ_b ℓ_b   (Mean)
//! ```
//!
//! with `x̂ = x / √(‖x‖² + ε²)` ([`NORM_EPSILON`] = ε): smooth everywhere, equal to the unit
//! vector up to ε for non-zero `x`, and the zero vector (with a finite gradient `g / ε`) at zero.
//!
//! Duplicate positives: when an item is the positive of several queries of a batch, each query
//! sees the other copies as negatives with the same score as its positive, as in the reference
//! (TensorFlow `softmax_cross_entropy_with_logits` against an identity matrix). Setting
//! [`SoftmaxLoss::mask_duplicates`] removes from row `b` every other candidate column carrying
//! the same item id as its positive.

use faer::{MatRef, Par};
use pulp::{Arch, Simd, WithSimd};
use serde::{Deserialize, Serialize};

use crate::model::linalg::{ROW_BLOCK, gemm, resize};

/// The ε of the normalisation `x / √(‖x‖² + ε²)`.
pub const NORM_EPSILON: f32 = 1e-6;

/// How per-example losses are combined into the objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReduction {
    /// The sum over the batch (the reference tutorial; the gradient grows with the batch).
    Sum,
    /// The mean over the batch.
    Mean,
}

/// Settings of the in-batch softmax loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftmaxLoss {
    /// Softmax temperature `T` (positive): scores are cosines divided by it.
    pub temperature: f32,
    /// Sum or mean over the batch.
    pub reduction: LossReduction,
    /// Drop from each row the other columns holding the row's positive item.
    pub mask_duplicates: bool,
}

/// The loss of one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossValue {
    /// `Σ_b ℓ_b`.
    pub sum: f64,
    /// The objective the gradients belong to (`sum`, or `sum / B` for the mean).
    pub objective: f64,
}

/// Scratch of [`SoftmaxLoss::forward_backward`], reused across batches.
#[derive(Debug, Clone, Default)]
pub struct LossScratch {
    logits: Vec<f32>,
    row_loss: Vec<f64>,
}

/// Writes `x̂ = x / √(‖x‖² + ε²)` for each `dim`-wide row of `x` into `out`, and the
/// denominators into `norms`.
///
/// # Panics
/// When the buffers' lengths disagree.
#[track_caller]
pub fn normalize_rows(x: &[f32], dim: usize, out: &mut [f32], norms: &mut [f32]) {
    let n = x.len() / dim;
    assert_eq!(x.len(), n * dim, "whole rows");
    assert_eq!(out.len(), x.len(), "output length");
    assert_eq!(norms.len(), n, "one norm per row");
    for ((row, o), s) in x
        .chunks_exact(dim)
        .zip(out.chunks_exact_mut(dim))
        .zip(norms.iter_mut())
    {
        *s = smooth_norm(row);
        let inv = 1.0 / *s;
        for (o, &v) in o.iter_mut().zip(row) {
            *o = v * inv;
        }
    }
}

/// `√(‖x‖² + ε²)`, the denominator of the normalisation.
pub fn smooth_norm(x: &[f32]) -> f32 {
    (dot(x, x) + NORM_EPSILON * NORM_EPSILON).sqrt()
}

/// `⟨a, b⟩`, summed in eight fixed lanes so that the loop vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, &xv), &yv) in lanes.iter_mut().zip(x).zip(y) {
            *l += xv * yv;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Backward pass of [`normalize_rows`]: from the normalised rows `x̂`, their `norms` and
/// `grad_out = ∂L/∂x̂`, writes `∂L/∂x = (g − x̂ ⟨x̂, g⟩) / s` into `grad_in`.
///
/// # Panics
/// When the buffers' lengths disagree.
#[track_caller]
pub fn normalize_rows_backward(
    normalized: &[f32],
    norms: &[f32],
    grad_out: &[f32],
    dim: usize,
    grad_in: &mut [f32],
) {
    let n = norms.len();
    assert_eq!(normalized.len(), n * dim, "normalised rows");
    assert_eq!(grad_out.len(), n * dim, "gradient rows");
    assert_eq!(grad_in.len(), n * dim, "input gradient rows");
    for (((x, g), gi), &s) in normalized
        .chunks_exact(dim)
        .zip(grad_out.chunks_exact(dim))
        .zip(grad_in.chunks_exact_mut(dim))
        .zip(norms)
    {
        let xg = dot(x, g);
        let inv = 1.0 / s;
        for ((gi, &xv), &gv) in gi.iter_mut().zip(x).zip(g) {
            *gi = (gv - xv * xg) * inv;
        }
    }
}

impl SoftmaxLoss {
    /// Loss and gradients for one batch.
    ///
    /// `queries` holds `B` normalised query rows and `items` `C ≥ B` normalised candidate rows
    /// (row `b < B` is query `b`'s positive), both `dim` wide. `item_ids` names each candidate
    /// (for [`mask_duplicates`](Self::mask_duplicates)); `log_q`, when given, is subtracted from
    /// each candidate's logits. Writes `∂L/∂queries` and `∂L/∂items`.
    ///
    /// # Panics
    /// When the shapes disagree or `C < B`.
    #[allow(clippy::too_many_arguments)]
    #[track_caller]
    pub fn forward_backward(
        &self,
        queries: &[f32],
        items: &[f32],
        dim: usize,
        item_ids: &[u32],
        log_q: Option<&[f32]>,
        scratch: &mut LossScratch,
        grad_queries: &mut [f32],
        grad_items: &mut [f32],
        par: Par,
    ) -> LossValue {
        let b = queries.len() / dim;
        let c = items.len() / dim;
        assert_eq!(queries.len(), b * dim, "query rows");
        assert_eq!(items.len(), c * dim, "item rows");
        assert!(c >= b, "every query needs its positive among the items");
        assert_eq!(item_ids.len(), c, "one id per item");
        assert_eq!(grad_queries.len(), queries.len(), "query gradient rows");
        assert_eq!(grad_items.len(), items.len(), "item gradient rows");
        if let Some(log_q) = log_q {
            assert_eq!(log_q.len(), c, "one correction per item");
        }
        if b == 0 {
            grad_items.fill(0.0);
            return LossValue {
                sum: 0.0,
                objective: 0.0,
            };
        }
        let q_ref = MatRef::from_row_major_slice(queries, b, dim);
        let y_ref = MatRef::from_row_major_slice(items, c, dim);
        resize(&mut scratch.logits, b * c);
        scratch.row_loss.resize(b, 0.0);
        gemm(&mut scratch.logits, q_ref, y_ref.transpose(), false, par);

        let inv_t = 1.0 / self.temperature;
        let scale = match self.reduction {
            LossReduction::Sum => 1.0,
            LossReduction::Mean => 1.0 / b as f32,
        };
        // Each row: logits, softmax, ℓ_b, then ∂L/∂cos = (p − onehot) · scale / T in place.
        let row_loss = &mut scratch.row_loss;
        let logits = &mut scratch.logits;
        let softmax = RowSoftmax {
            item_ids,
            log_q,
            inv_t,
            scale,
            mask: self.mask_duplicates,
        };
        let rows = |first: usize, block: &mut [f32], losses: &mut [f64]| {
            Arch::new().dispatch(RowsTask {
                softmax: &softmax,
                first,
                block,
                losses,
            });
        };
        let par = if b * c < 1 << 15 { Par::Seq } else { par };
        match par {
            Par::Seq => logits
                .chunks_mut(ROW_BLOCK * c)
                .zip(row_loss.chunks_mut(ROW_BLOCK))
                .enumerate()
                .for_each(|(i, (l, r))| rows(i * ROW_BLOCK, l, r)),
            Par::Rayon(_) => {
                use rayon::prelude::*;
                logits
                    .par_chunks_mut(ROW_BLOCK * c)
                    .zip(row_loss.par_chunks_mut(ROW_BLOCK))
                    .enumerate()
                    .for_each(|(i, (l, r))| rows(i * ROW_BLOCK, l, r));
            }
        }
        let sum: f64 = row_loss.iter().sum();

        // ∂L/∂queries = G · items, ∂L/∂items = Gᵀ · queries (G: the B × C gradient).
        let g_ref = MatRef::from_row_major_slice(&scratch.logits, b, c);
        gemm(grad_queries, g_ref, y_ref, false, par);
        gemm(grad_items, g_ref.transpose(), q_ref, false, par);
        LossValue {
            sum,
            objective: sum * f64::from(scale),
        }
    }
}

/// Lanes of the lane-parallel loops below (a multiple of every vector width in use), so that
/// they vectorise and their reductions run in a fixed order on every CPU.
const LANES: usize = 16;

/// The per-row part of the in-batch softmax: logits from cosines, softmax, loss and the
/// gradient with respect to the cosines.
struct RowSoftmax<'a> {
    item_ids: &'a [u32],
    log_q: Option<&'a [f32]>,
    inv_t: f32,
    scale: f32,
    mask: bool,
}

impl RowSoftmax<'_> {
    /// Turns row `r`'s cosines into `∂L/∂cos` in place and returns `ℓ_r`.
    #[inline(always)]
    fn row(&self, r: usize, row: &mut [f32]) -> f64 {
        let inv_t = self.inv_t;
        match self.log_q {
            Some(log_q) => {
                for (v, &l) in row.iter_mut().zip(log_q) {
                    *v = *v * inv_t - l;
                }
            }
            None => row.iter_mut().for_each(|v| *v *= inv_t),
        }
        if self.mask {
            let positive = self.item_ids[r];
            for (j, (v, &id)) in row.iter_mut().zip(self.item_ids).enumerate() {
                if id == positive && j != r {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        let target = row[r];
        let max = lane_max(row);
        let total = exp_shifted_sum(row, max);
        let g = self.scale * inv_t / total;
        row.iter_mut().for_each(|v| *v *= g);
        row[r] -= self.scale * inv_t;
        f64::from(total.ln() + max - target)
    }
}

struct RowsTask<'a> {
    softmax: &'a RowSoftmax<'a>,
    first: usize,
    block: &'a mut [f32],
    losses: &'a mut [f64],
}

impl WithSimd for RowsTask<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let c = self.block.len() / self.losses.len().max(1);
        for (k, (row, loss)) in self
            .block
            .chunks_exact_mut(c)
            .zip(self.losses.iter_mut())
            .enumerate()
        {
            *loss = self.softmax.row(self.first + k, row);
        }
    }
}

/// The largest value of `row` (NaN-free input; −∞ for an all −∞ row).
#[inline(always)]
fn lane_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for m in lanes {
        max = max.max(m);
    }
    max
}

/// Replaces each `v` of `row` by `exp(v − max)` and returns their sum (summed in fixed lanes).
#[inline(always)]
fn exp_shifted_sum(row: &mut [f32], max: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, v) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *v = exp_nonpositive(*v - max);
            *s += *v;
        }
    }
    let mut total = 0.0f32;
    for v in chunks.into_remainder() {
        *v = exp_nonpositive(*v - max);
        total += *v;
    }
    lanes.iter().sum::<f32>() + total
}

/// `exp(x)` for `x ≤ 0` (or NaN-free −∞), within about 2 ulp, in branch-free arithmetic that
/// vectorises: `x = k ln 2 + r` with `|r| ≤ ln 2 / 2` (Cody–Waite), `exp(r)` by its degree-6
/// Taylor polynomial, `2^k` built in the exponent bits. Below −87 (where `2^k` would leave the
/// normal range) the result is 0.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with 9 significant bits so that k · LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.max(-87.0);
    let k = (xc * LOG2_E + ROUND) - ROUND;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let two_k = f32::from_bits(((k as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { p * two_k }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomial_exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let exact = f64::from(x).exp();
            let got = f64::from(exp_nonpositive(x));
            worst = worst.max((got - exact).abs() / exact);
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn lane_loops_match_plain_loops() {
        let row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 61) as f32 * 0.1 - 3.0)
            .collect();
        let max = lane_max(&row);
        assert_eq!(max, row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)));
        let mut shifted = row.clone();
        let total = exp_shifted_sum(&mut shifted, max);
        let exact: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
        assert!((f64::from(total) - exact).abs() < 1e-5 * exact);
    }
}
