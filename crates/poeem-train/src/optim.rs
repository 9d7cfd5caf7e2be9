//! Optimisers: Adagrad with TensorFlow 1 semantics and Adam, with sparse row updates for
//! embedding tables (only the rows a batch touches change, and only their state).
//!
//! The update loops run inside [`pulp::Arch::dispatch`], so they are compiled for the best
//! instruction set the CPU offers and vectorised across elements. Each element still goes
//! through the same operations in the same order (vector square roots and divisions are
//! correctly rounded, like the scalar ones, and nothing is fused), so the results are the
//! same bits whatever the instruction set.

use pulp::{Arch, Simd, WithSimd};
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Which optimiser, with its settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OptimizerConfig {
    /// `a += g²; p −= lr · g / √a`, with the accumulator starting at `initial_accumulator`
    /// (TensorFlow 1's `AdagradOptimizer`: 0.1, no epsilon).
    Adagrad {
        /// Learning rate.
        learning_rate: f32,
        /// Starting value of every accumulator (must be positive).
        initial_accumulator: f32,
    },
    /// Adam with bias correction. Sparse updates are "lazy": a row's moments change only when
    /// the row is in a batch; the bias correction uses the tensor's step count.
    Adam {
        /// Learning rate.
        learning_rate: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Added to √v.
        epsilon: f32,
    },
}

impl OptimizerConfig {
    /// TF1 Adagrad with learning rate `learning_rate` and accumulators starting at 0.1.
    pub fn adagrad(learning_rate: f32) -> Self {
        Self::Adagrad {
            learning_rate,
            initial_accumulator: 0.1,
        }
    }

    /// Adam with the usual β₁ = 0.9, β₂ = 0.999, ε = 1e-8.
    pub fn adam(learning_rate: f32) -> Self {
        Self::Adam {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        }
    }

    /// The learning rate.
    pub fn learning_rate(&self) -> f32 {
        match *self {
            Self::Adagrad { learning_rate, .. } | Self::Adam { learning_rate, .. } => learning_rate,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for a non-positive or non-finite rate, accumulator or
    /// epsilon, or a decay outside `[0, 1)`.
    pub fn validate(&self) -> Result<(), TrainError> {
        let positive = |name: &'static str, v: f32| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(TrainError::InvalidConfig {
                    name,
                    value: v.to_string(),
                    reason: "must be a positive number",
                })
            }
        };
        let decay = |name: &'static str, v: f32| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(TrainError::InvalidConfig {
                    name,
                    value: v.to_string(),
                    reason: "must be in [0, 1)",
                })
            }
        };
        match *self {
            Self::Adagrad {
                learning_rate,
                initial_accumulator,
            } => {
                positive("learning_rate", learning_rate)?;
                positive("initial_accumulator", initial_accumulator)
            }
            Self::Adam {
                learning_rate,
                beta1,
                beta2,
                epsilon,
            } => {
                positive("learning_rate", learning_rate)?;
                decay("beta1", beta1)?;
                decay("beta2", beta2)?;
                positive("epsilon", epsilon)
            }
        }
    }
}

/// The optimiser state of one parameter tensor (its accumulators or moments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerState {
    config: OptimizerConfig,
    /// Adagrad: accumulators. Adam: first moments.
    #[serde(with = "crate::f32_bytes")]
    first: Vec<f32>,
    /// Adam: second moments (empty for Adagrad).
    #[serde(with = "crate::f32_bytes")]
    second: Vec<f32>,
    /// Steps taken on this tensor.
    steps: u64,
}

impl OptimizerState {
    /// Fresh state for a tensor of `len` values.
    ///
    /// # Errors
    /// When `config` is invalid.
    pub fn new(config: OptimizerConfig, len: usize) -> Result<Self, TrainError> {
        config.validate()?;
        let (first, second) = match config {
            OptimizerConfig::Adagrad {
                initial_accumulator,
                ..
            } => (vec![initial_accumulator; len], Vec::new()),
            OptimizerConfig::Adam { .. } => (vec![0.0; len], vec![0.0; len]),
        };
        Ok(Self {
            config,
            first,
            second,
            steps: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Number of values this state covers.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    /// Whether the tensor is empty.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One step on the whole tensor, scaling the learning rate by `lr_scale` (a schedule).
    ///
    /// # Panics
    /// When `params` or `grads` is not as long as the state.
    #[track_caller]
    pub fn step_dense(&mut self, params: &mut [f32], grads: &[f32], lr_scale: f32) {
        assert_eq!(params.len(), self.len(), "parameter length");
        assert_eq!(grads.len(), self.len(), "gradient length");
        self.steps += 1;
        Arch::new().dispatch(Step {
            rule: self.rule(lr_scale),
            params,
            grads,
            first: &mut self.first,
            second: &mut self.second,
            rows: None,
        });
    }

    /// One step on the rows `rows` of a row-major table of width `dim`: `grads` holds one gradient
    /// row per entry of `rows`. Rows must be distinct; other rows and their state do not change.
    ///
    /// # Panics
    /// When the table is not as long as the state, `dim` does not divide it, `grads` is not
    /// `rows.len() × dim`, or a row is out of range.
    #[track_caller]
    pub fn step_rows(
        &mut self,
        params: &mut [f32],
        dim: usize,
        rows: &[u32],
        grads: &[f32],
        lr_scale: f32,
    ) {
        assert_eq!(params.len(), self.len(), "parameter length");
        assert!(dim > 0 && params.len().is_multiple_of(dim), "row width");
        assert_eq!(grads.len(), rows.len() * dim, "gradient length");
        self.steps += 1;
        Arch::new().dispatch(Step {
            rule: self.rule(lr_scale),
            params,
            grads,
            first: &mut self.first,
            second: &mut self.second,
            rows: Some((rows, dim)),
        });
    }

    fn rule(&self, lr_scale: f32) -> Rule {
        match self.config {
            OptimizerConfig::Adagrad { learning_rate, .. } => Rule::Adagrad {
                lr: learning_rate * lr_scale,
            },
            OptimizerConfig::Adam {
                learning_rate,
                beta1,
                beta2,
                epsilon,
            } => {
                let t = self.steps as i32;
                let correction1 = 1.0 - f64::from(beta1).powi(t);
                let correction2 = 1.0 - f64::from(beta2).powi(t);
                Rule::Adam {
                    lr: (f64::from(learning_rate * lr_scale) * correction2.sqrt() / correction1)
                        as f32,
                    beta1,
                    beta2,
                    epsilon,
                }
            }
        }
    }
}

/// One optimiser update rule with its per-step constants.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Adagrad {
        lr: f32,
    },
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        epsilon: f32,
    },
}

impl Rule {
    /// Updates `params` with `grads` and the state `first` (and `second` for Adam; empty for
    /// Adagrad), all as long as `params`.
    #[inline(always)]
    fn apply(self, params: &mut [f32], grads: &[f32], first: &mut [f32], second: &mut [f32]) {
        match self {
            Rule::Adagrad { lr } => {
                for ((p, &g), a) in params.iter_mut().zip(grads).zip(first) {
                    *a += g * g;
                    *p -= lr * g / a.sqrt();
                }
            }
            Rule::Adam {
                lr,
                beta1,
                beta2,
                epsilon,
            } => {
                let (decay1, decay2) = (1.0 - beta1, 1.0 - beta2);
                for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(first).zip(second) {
                    *m = beta1 * *m + decay1 * g;
                    *v = beta2 * *v + decay2 * g * g;
                    *p -= lr * *m / (v.sqrt() + epsilon);
                }
            }
        }
    }
}

/// One optimiser step on a whole tensor (`rows: None`) or on rows of width `dim`, compiled
/// for the instruction set [`Arch::dispatch`] picks.
struct Step<'a> {
    rule: Rule,
    params: &'a mut [f32],
    grads: &'a [f32],
    first: &'a mut [f32],
    /// Empty for Adagrad.
    second: &'a mut [f32],
    rows: Option<(&'a [u32], usize)>,
}

impl WithSimd for Step<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self {
            rule,
            params,
            grads,
            first,
            second,
            rows,
        } = self;
        let Some((rows, dim)) = rows else {
            rule.apply(params, grads, first, second);
            return;
        };
        let has_second = !second.is_empty();
        for (&row, g) in rows.iter().zip(grads.chunks_exact(dim)) {
            let span = row as usize * dim..(row as usize + 1) * dim;
            let second = if has_second {
                &mut second[span.clone()]
            } else {
                &mut []
            };
            rule.apply(&mut params[span.clone()], g, &mut first[span], second);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_encode_as_f32_bytes_and_read_the_older_float_arrays() {
        let mut state = OptimizerState::new(OptimizerConfig::adam(0.01), 3).unwrap();
        state.step_dense(&mut [1.0, 2.0, 3.0], &[0.5, -0.25, 1e-7], 1.0);
        let mut bytes = Vec::new();
        ciborium::into_writer(&state, &mut bytes).unwrap();
        // Each array is a byte string (0x4c: 12 bytes) of little-endian f32.
        for values in [&state.first, &state.second] {
            let mut string = vec![0x4c];
            string.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            assert!(bytes.windows(13).any(|w| w == string), "{bytes:x?}");
        }
        let back: OptimizerState = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, state);

        // Checkpoints written before the states were byte strings hold arrays of floats.
        #[derive(Serialize)]
        struct Older<'a> {
            config: OptimizerConfig,
            first: &'a [f32],
            second: &'a [f32],
            steps: u64,
        }
        let older = Older {
            config: state.config,
            first: &state.first,
            second: &state.second,
            steps: state.steps,
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&older, &mut bytes).unwrap();
        let back: OptimizerState = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn adagrad_follows_tf1_semantics() {
        let mut state = OptimizerState::new(OptimizerConfig::adagrad(0.5), 2).unwrap();
        let mut p = [1.0f32, -1.0];
        state.step_dense(&mut p, &[0.3, 0.0], 1.0);
        let acc = 0.1f32 + 0.09;
        assert!((p[0] - (1.0 - 0.5 * 0.3 / acc.sqrt())).abs() < 1e-6);
        assert_eq!(p[1], -1.0);
    }

    #[test]
    fn sparse_rows_leave_other_rows_and_state_alone() {
        let mut dense = OptimizerState::new(OptimizerConfig::adam(0.01), 6).unwrap();
        let mut sparse = dense.clone();
        let mut p_dense = [0.5f32; 6];
        let mut p_sparse = p_dense;
        dense.step_dense(&mut p_dense, &[0.0, 0.0, 1.0, -2.0, 0.0, 0.0], 1.0);
        sparse.step_rows(&mut p_sparse, 2, &[1], &[1.0, -2.0], 1.0);
        assert_eq!(p_dense, p_sparse);
        assert_eq!(dense, sparse);
    }

    /// The update rules written out element by element, outside any SIMD dispatch: the
    /// specification the vectorised loops must match bit for bit.
    fn reference_step(
        config: OptimizerConfig,
        step: i32,
        lr_scale: f32,
        p: &mut f32,
        g: f32,
        first: &mut f32,
        second: &mut f32,
    ) {
        match config {
            OptimizerConfig::Adagrad { learning_rate, .. } => {
                let lr = learning_rate * lr_scale;
                *first += g * g;
                *p -= lr * g / first.sqrt();
            }
            OptimizerConfig::Adam {
                learning_rate,
                beta1,
                beta2,
                epsilon,
            } => {
                let c1 = 1.0 - f64::from(beta1).powi(step);
                let c2 = 1.0 - f64::from(beta2).powi(step);
                let lr = (f64::from(learning_rate * lr_scale) * c2.sqrt() / c1) as f32;
                *first = beta1 * *first + (1.0 - beta1) * g;
                *second = beta2 * *second + (1.0 - beta2) * g * g;
                *p -= lr * *first / (second.sqrt() + epsilon);
            }
        }
    }

    /// Deterministic values over many magnitudes, with zeros of both signs.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed)
                    .wrapping_mul(2_654_435_761)
                    .rotate_left(13);
                match h % 23 {
                    0 => 0.0,
                    1 => -0.0,
                    r => {
                        let unit = (h >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                        unit * 10f32.powi(r as i32 % 9 - 5)
                    }
                }
            })
            .collect()
    }

    #[test]
    fn vectorised_steps_equal_the_scalar_rules_bit_for_bit() {
        let configs = [
            OptimizerConfig::adagrad(0.1),
            OptimizerConfig::Adagrad {
                learning_rate: 0.37,
                initial_accumulator: 1e-3,
            },
            OptimizerConfig::adam(0.01),
        ];
        for config in configs {
            for (len, width) in [
                (1, 1),
                (7, 7),
                (8, 8),
                (64, 8),
                (67, 67),
                (195, 13),
                (512, 64),
            ] {
                let mut dense = OptimizerState::new(config, len).unwrap();
                let mut sparse = dense.clone();
                let (mut p_dense, mut p_sparse) = (values(len, 1), values(len, 1));
                let (mut p_ref, mut first, mut second) =
                    (p_dense.clone(), dense.first.clone(), vec![0.0f32; len]);
                let mut sparse_ref = (p_ref.clone(), first.clone(), second.clone());
                for step in 1..=4 {
                    let scale = 1.0 / step as f32;
                    let grads = values(len, 17 * step as u32);
                    dense.step_dense(&mut p_dense, &grads, scale);
                    for i in 0..len {
                        reference_step(
                            config,
                            step,
                            scale,
                            &mut p_ref[i],
                            grads[i],
                            &mut first[i],
                            &mut second[i],
                        );
                    }
                    assert_eq!(
                        p_dense.map_bits(),
                        p_ref.map_bits(),
                        "{config:?} dense, {len}"
                    );
                    assert_eq!(dense.first.map_bits(), first.map_bits());

                    // Every other row, in descending order.
                    let rows: Vec<u32> = (0..(len / width) as u32).rev().step_by(2).collect();
                    let packed: Vec<f32> = rows
                        .iter()
                        .flat_map(|&r| &grads[r as usize * width..(r as usize + 1) * width])
                        .copied()
                        .collect();
                    sparse.step_rows(&mut p_sparse, width, &rows, &packed, scale);
                    let (p, f, s) = &mut sparse_ref;
                    for &r in &rows {
                        for i in r as usize * width..(r as usize + 1) * width {
                            reference_step(
                                config, step, scale, &mut p[i], grads[i], &mut f[i], &mut s[i],
                            );
                        }
                    }
                    assert_eq!(p_sparse.map_bits(), p.map_bits(), "{config:?} rows, {len}");
                    assert_eq!(sparse.first.map_bits(), f.map_bits());
                    if !sparse.second.is_empty() {
                        assert_eq!(sparse.second.map_bits(), s.map_bits());
                        assert_eq!(dense.second.map_bits(), second.map_bits());
                    }
                }
            }
        }
    }

    trait MapBits {
        fn map_bits(&self) -> Vec<u32>;
    }

    impl MapBits for Vec<f32> {
        fn map_bits(&self) -> Vec<u32> {
            self.iter().map(|v| v.to_bits()).collect()
        }
    }

    #[test]
    fn bad_settings_are_rejected() {
        assert!(OptimizerState::new(OptimizerConfig::adagrad(f32::NAN), 1).is_err());
        assert!(OptimizerState::new(OptimizerConfig::adagrad(-1.0), 1).is_err());
        let mut adam = OptimizerConfig::adam(0.1);
        if let OptimizerConfig::Adam { beta1, .. } = &mut adam {
            *beta1 = 1.0;
        }
        assert!(adam.validate().is_err());
    }
}
