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
    let eps2 = NORM_EPSILON * NORM_EPSILON;
    for ((row, o), s) in x
        .chunks_exact(dim)
        .zip(out.chunks_exact_mut(dim))
        .zip(norms.iter_mut())
    {
        let sq: f32 = row.iter().map(|v| v * v).sum();
        *s = (sq + eps2).sqrt();
        let inv = 1.0 / *s;
        for (o, &v) in o.iter_mut().zip(row) {
            *o = v * inv;
        }
    }
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
        let dot: f32 = x.iter().zip(g).map(|(a, b)| a * b).sum();
        let inv = 1.0 / s;
        for ((gi, &xv), &gv) in gi.iter_mut().zip(x).zip(g) {
            *gi = (gv - xv * dot) * inv;
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
        let mask = self.mask_duplicates;
        let rows = |first: usize, block: &mut [f32], losses: &mut [f64]| {
            for (k, (row, loss)) in block.chunks_exact_mut(c).zip(losses).enumerate() {
                let r = first + k;
                let positive = item_ids[r];
                let mut max = f32::NEG_INFINITY;
                for (j, v) in row.iter_mut().enumerate() {
                    *v = if mask && j != r && item_ids[j] == positive {
                        f32::NEG_INFINITY
                    } else {
                        *v * inv_t - log_q.map_or(0.0, |l| l[j])
                    };
                    max = max.max(*v);
                }
                let target = row[r];
                let mut total = 0.0f32;
                for v in row.iter_mut() {
                    *v = (*v - max).exp();
                    total += *v;
                }
                *loss = f64::from(total.ln() + max - target);
                let g = scale * inv_t / total;
                for v in row.iter_mut() {
                    *v *= g;
                }
                row[r] -= scale * inv_t;
            }
        };
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
