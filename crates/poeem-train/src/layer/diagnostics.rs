//! What the layer logs (method §1): distortion, and per level how evenly the codes are used.

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// How one level's codes spread over its codewords, from a cumulative histogram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CodeDistribution {
    /// Codewords of the level (`K`, or the number of lists).
    pub codewords: usize,
    /// Codewords used at least once.
    pub used: usize,
    /// `KL(p ‖ uniform) = Σ_k p_k ln(K p_k)`: 0 for uniform use, `ln K` when one code takes
    /// everything.
    pub kl_to_uniform: f64,
    /// Total-variation distance `½ Σ_k |p_k − 1/K|`: 0 for uniform use, `1 − 1/K` at worst.
    pub tv_to_uniform: f64,
}

impl CodeDistribution {
    /// The distribution of the histogram `counts` (one count per codeword). An empty histogram
    /// (no rows yet) gives zeros.
    pub fn from_counts(counts: &[u64]) -> Self {
        let total: u64 = counts.iter().sum();
        if total == 0 || counts.is_empty() {
            return Self {
                codewords: counts.len(),
                used: 0,
                kl_to_uniform: 0.0,
                tv_to_uniform: 0.0,
            };
        }
        let k = counts.len() as f64;
        let total = total as f64;
        let (mut kl, mut tv) = (0.0f64, 0.0f64);
        for &c in counts {
            let p = c as f64 / total;
            if c > 0 {
                kl += p * (p * k).ln();
            }
            tv += (p - 1.0 / k).abs();
        }
        Self {
            codewords: counts.len(),
            used: counts.iter().filter(|&&c| c > 0).count(),
            kl_to_uniform: kl.max(0.0),
            tv_to_uniform: tv / 2.0,
        }
    }
}

/// The layer's diagnostics over the joint-phase rows since the last reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDiagnostics {
    /// Joint-phase rows seen since the reset (rows before the joint phase are not quantized and
    /// not counted).
    pub rows: u64,
    /// Mean over those rows of `RMS(x − τ(x)) = √(‖x − τ(x)‖² / dim)` (the reference's
    /// "distortion"); 0 without rows.
    pub mean_distortion: f64,
    /// The coarse level's code use; `None` without a coarse level.
    pub coarse: Option<CodeDistribution>,
    /// Each PQ subspace's code use.
    pub pq: Vec<CodeDistribution>,
    /// Mean over subspaces of the codewords used.
    pub pq_used_mean: f64,
    /// Mean over subspaces of the KL divergence to uniform.
    pub pq_kl_mean: f64,
    /// Largest KL divergence to uniform of a subspace (the most crowded one).
    pub pq_kl_max: f64,
    /// Mean over subspaces of the total-variation distance to uniform.
    pub pq_tv_mean: f64,
    /// `max |RᵀR − I|` of the rotation now (0 without a rotation).
    pub orthogonality_error: f64,
}

/// Cumulative counters behind [`LayerDiagnostics`] (part of the layer's serialised state).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Tally {
    rows: u64,
    distortion_sum: f64,
    /// Count per coarse list (empty without a coarse level).
    coarse: Vec<u64>,
    /// Count per PQ code, subspace-major (`M × K`).
    pq: Vec<u64>,
}

impl Tally {
    /// Empty counters for `n_lists` lists and `n_subspaces × n_codewords` codes.
    pub(crate) fn new(n_lists: usize, n_subspaces: usize, n_codewords: usize) -> Self {
        Self {
            rows: 0,
            distortion_sum: 0.0,
            coarse: vec![0; n_lists],
            pq: vec![0; n_subspaces * n_codewords],
        }
    }

    /// Checks that saved counters have the shape of `expected`.
    pub(crate) fn check_shape(&self, expected: &Tally) -> Result<(), TrainError> {
        for (what, got, want) in [
            (
                "saved coarse code counts",
                self.coarse.len(),
                expected.coarse.len(),
            ),
            ("saved PQ code counts", self.pq.len(), expected.pq.len()),
        ] {
            if got != want {
                return Err(TrainError::DimensionMismatch {
                    what,
                    expected: want,
                    got,
                });
            }
        }
        Ok(())
    }

    /// Zeroes the counters, keeping their shapes.
    pub(crate) fn reset(&mut self) {
        self.rows = 0;
        self.distortion_sum = 0.0;
        self.coarse.fill(0);
        self.pq.fill(0);
    }

    /// Counts a batch's lists and codes (`n_subspaces` per row) and adds the sum of its rows'
    /// distortions.
    ///
    /// # Panics
    /// When a list or code is out of range of the counters.
    pub(crate) fn record(
        &mut self,
        lists: &[u32],
        codes: &[u16],
        n_subspaces: usize,
        distortion_sum: f64,
    ) {
        self.rows += lists.len() as u64;
        self.distortion_sum += distortion_sum;
        if !self.coarse.is_empty() {
            for &l in lists {
                self.coarse[l as usize] += 1;
            }
        }
        let k = self.pq.len() / n_subspaces;
        for row in codes.chunks_exact(n_subspaces) {
            for (s, &c) in row.iter().enumerate() {
                self.pq[s * k + usize::from(c)] += 1;
            }
        }
    }

    /// The summary, for `n_subspaces` subspaces and a rotation whose error is `orthogonality`.
    pub(crate) fn summarize(&self, n_subspaces: usize, orthogonality: f64) -> LayerDiagnostics {
        let k = self.pq.len() / n_subspaces.max(1);
        let pq: Vec<CodeDistribution> = if k == 0 {
            Vec::new()
        } else {
            self.pq
                .chunks_exact(k)
                .map(CodeDistribution::from_counts)
                .collect()
        };
        let mean = |f: fn(&CodeDistribution) -> f64| {
            if pq.is_empty() {
                0.0
            } else {
                pq.iter().map(f).sum::<f64>() / pq.len() as f64
            }
        };
        LayerDiagnostics {
            rows: self.rows,
            mean_distortion: if self.rows == 0 {
                0.0
            } else {
                self.distortion_sum / self.rows as f64
            },
            coarse: (!self.coarse.is_empty()).then(|| CodeDistribution::from_counts(&self.coarse)),
            pq_used_mean: mean(|d| d.used as f64),
            pq_kl_mean: mean(|d| d.kl_to_uniform),
            pq_kl_max: pq.iter().map(|d| d.kl_to_uniform).fold(0.0, f64::max),
            pq_tv_mean: mean(|d| d.tv_to_uniform),
            pq,
            orthogonality_error: orthogonality,
        }
    }
}
