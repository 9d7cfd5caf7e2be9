//! Optimisers: Adagrad with TensorFlow 1 semantics and Adam, with sparse row updates for
//! embedding tables (only the rows a batch touches change, and only their state).

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
    first: Vec<f32>,
    /// Adam: second moments (empty for Adagrad).
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
        let rule = self.rule(lr_scale);
        let second = if self.second.is_empty() {
            None
        } else {
            Some(&mut self.second[..])
        };
        rule.apply(params, grads, &mut self.first, second);
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
        let rule = self.rule(lr_scale);
        let has_second = !self.second.is_empty();
        for (&row, g) in rows.iter().zip(grads.chunks_exact(dim)) {
            let span = row as usize * dim..(row as usize + 1) * dim;
            let second = if has_second {
                Some(&mut self.second[span.clone()])
            } else {
                None
            };
            rule.apply(&mut params[span.clone()], g, &mut self.first[span], second);
        }
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
    fn apply(
        self,
        params: &mut [f32],
        grads: &[f32],
        first: &mut [f32],
        second: Option<&mut [f32]>,
    ) {
        match (self, second) {
            (Rule::Adagrad { lr }, _) => {
                for ((p, &g), a) in params.iter_mut().zip(grads).zip(first) {
                    *a += g * g;
                    *p -= lr * g / a.sqrt();
                }
            }
            (
                Rule::Adam {
                    lr,
                    beta1,
                    beta2,
                    epsilon,
                },
                Some(second),
            ) => {
                for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(first).zip(second) {
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    *p -= lr * *m / (v.sqrt() + epsilon);
                }
            }
            (Rule::Adam { .. }, None) => unreachable!("Adam state always has second moments"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
