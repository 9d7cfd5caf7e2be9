//! A multilayer perceptron: dense layers `y = x W + b` with ReLU between them and a linear
//! output layer.
//!
//! Hidden layers start with He initialisation (normal, standard deviation `√(2 / n_in)`), the
//! output layer with Glorot's (uniform in `±√(6 / (n_in + n_out))`); biases start at zero. The
//! ReLU derivative at zero is taken as zero.

use faer::{MatRef, Par};
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};
use serde::{Deserialize, Serialize};

use super::linalg::{for_row_blocks, gemm, resize};
use crate::f32_bytes;

/// One dense layer: row-major `n_in × n_out` weights and `n_out` biases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    n_in: usize,
    n_out: usize,
    #[serde(with = "f32_bytes")]
    weights: Vec<f32>,
    #[serde(with = "f32_bytes")]
    biases: Vec<f32>,
}

impl Dense {
    /// Input width.
    pub fn n_in(&self) -> usize {
        self.n_in
    }

    /// Output width.
    pub fn n_out(&self) -> usize {
        self.n_out
    }

    /// The weights, row-major `n_in × n_out`.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The weights, for an optimiser step or a test.
    pub fn weights_mut(&mut self) -> &mut [f32] {
        &mut self.weights
    }

    /// The biases.
    pub fn biases(&self) -> &[f32] {
        &self.biases
    }

    /// The biases, for an optimiser step or a test.
    pub fn biases_mut(&mut self) -> &mut [f32] {
        &mut self.biases
    }

    fn weights_ref(&self) -> MatRef<'_, f32> {
        MatRef::from_row_major_slice(&self.weights, self.n_in, self.n_out)
    }
}

/// Dense layers with ReLU between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mlp {
    layers: Vec<Dense>,
}

/// Activations of an [`Mlp`] forward pass, kept for the backward pass.
#[derive(Debug, Clone, Default)]
pub struct MlpCache {
    /// Output of each hidden layer after the ReLU (`n × width`).
    hidden: Vec<Vec<f32>>,
    n: usize,
}

impl MlpCache {
    /// The output of hidden layer `layer` after the ReLU, row-major, from the last forward pass.
    ///
    /// # Panics
    /// When `layer` is not a hidden layer.
    #[track_caller]
    pub fn hidden(&self, layer: usize) -> &[f32] {
        &self.hidden[layer]
    }
}

/// Gradients of an [`Mlp`]'s parameters, with scratch for the backward pass.
#[derive(Debug, Clone)]
pub struct MlpGrads {
    weights: Vec<Vec<f32>>,
    biases: Vec<Vec<f32>>,
    delta: Vec<f32>,
    delta_next: Vec<f32>,
}

impl MlpGrads {
    /// The gradient of layer `layer`'s weights (row-major, like the weights).
    pub fn weights(&self, layer: usize) -> &[f32] {
        &self.weights[layer]
    }

    /// The gradient of layer `layer`'s biases.
    pub fn biases(&self, layer: usize) -> &[f32] {
        &self.biases[layer]
    }
}

impl Mlp {
    /// An MLP from `n_in` through the `hidden` widths to `n_out`, initialised from `rng`.
    ///
    /// # Panics
    /// When a width is zero (the tower configuration is validated before).
    #[track_caller]
    pub fn new(n_in: usize, hidden: &[usize], n_out: usize, rng: &mut impl Rng) -> Self {
        let widths: Vec<usize> = std::iter::once(n_in)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(n_out))
            .collect();
        assert!(widths.iter().all(|&w| w > 0), "MLP widths must be positive");
        let n_layers = widths.len() - 1;
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(l, w)| {
                let (n_in, n_out) = (w[0], w[1]);
                let weights = if l + 1 < n_layers {
                    let normal = Normal::new(0.0f32, (2.0 / n_in as f32).sqrt())
                        .expect("a positive standard deviation");
                    (0..n_in * n_out).map(|_| normal.sample(rng)).collect()
                } else {
                    let limit = (6.0 / (n_in + n_out) as f32).sqrt();
                    let uniform = Uniform::new_inclusive(-limit, limit).expect("a finite range");
                    (0..n_in * n_out).map(|_| uniform.sample(rng)).collect()
                };
                Dense {
                    n_in,
                    n_out,
                    weights,
                    biases: vec![0.0; n_out],
                }
            })
            .collect();
        Self { layers }
    }

    /// Input width.
    pub fn n_in(&self) -> usize {
        self.layers[0].n_in
    }

    /// Output width.
    pub fn n_out(&self) -> usize {
        self.layers[self.layers.len() - 1].n_out
    }

    /// The layers, input first.
    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }

    /// The layers, for an optimiser step or a test.
    pub fn layers_mut(&mut self) -> &mut [Dense] {
        &mut self.layers
    }

    /// Zeroed gradients shaped like the parameters.
    pub fn new_grads(&self) -> MlpGrads {
        MlpGrads {
            weights: self
                .layers
                .iter()
                .map(|l| vec![0.0; l.weights.len()])
                .collect(),
            biases: self.layers.iter().map(|l| vec![0.0; l.n_out]).collect(),
            delta: Vec::new(),
            delta_next: Vec::new(),
        }
    }

    /// Forward pass on `n` rows of `input` (row-major `n × n_in`), writing `n × n_out` into
    /// `out` and the hidden activations into `cache`.
    ///
    /// # Panics
    /// When the buffers do not have those shapes.
    #[track_caller]
    pub fn forward(&self, input: &[f32], cache: &mut MlpCache, out: &mut [f32], par: Par) {
        let n = input.len() / self.n_in();
        assert_eq!(input.len(), n * self.n_in(), "input rows");
        assert_eq!(out.len(), n * self.n_out(), "output rows");
        let n_hidden = self.layers.len() - 1;
        cache.hidden.resize_with(n_hidden, Vec::new);
        cache.n = n;
        for (l, layer) in self.layers.iter().enumerate() {
            let (done, rest) = cache.hidden.split_at_mut(l);
            let x = if l == 0 { input } else { &done[l - 1][..] };
            let y = if l < n_hidden {
                let buf = &mut rest[0];
                resize(buf, n * layer.n_out);
                &mut buf[..]
            } else {
                &mut *out
            };
            gemm(
                y,
                MatRef::from_row_major_slice(x, n, layer.n_in),
                layer.weights_ref(),
                false,
                par,
            );
            let relu = l < n_hidden;
            for_row_blocks(y, layer.n_out, par, |_, block| {
                for row in block.chunks_exact_mut(layer.n_out) {
                    for (v, &b) in row.iter_mut().zip(&layer.biases) {
                        *v += b;
                        if relu && *v < 0.0 {
                            *v = 0.0;
                        }
                    }
                }
            });
        }
    }

    /// Backward pass for the last [`forward`](Self::forward) on `input`: from `grad_out`
    /// (`n × n_out`) writes the parameter gradients into `grads` and `∂L/∂input` into
    /// `grad_input` (`n × n_in`).
    ///
    /// # Panics
    /// When the buffers do not match the forward pass.
    #[track_caller]
    pub fn backward(
        &self,
        input: &[f32],
        cache: &MlpCache,
        grad_out: &[f32],
        grads: &mut MlpGrads,
        grad_input: &mut [f32],
        par: Par,
    ) {
        let n = cache.n;
        assert_eq!(input.len(), n * self.n_in(), "input rows");
        assert_eq!(grad_out.len(), n * self.n_out(), "gradient rows");
        assert_eq!(grad_input.len(), n * self.n_in(), "input gradient rows");
        let MlpGrads {
            weights: grad_weights,
            biases: grad_biases,
            delta,
            delta_next,
        } = grads;
        delta.clear();
        delta.extend_from_slice(grad_out);
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let x = if l == 0 {
                input
            } else {
                &cache.hidden[l - 1][..]
            };
            let x_ref = MatRef::from_row_major_slice(x, n, layer.n_in);
            let d_ref = MatRef::from_row_major_slice(delta, n, layer.n_out);
            // ∂L/∂W = xᵀ δ, ∂L/∂b = Σ_rows δ (rows summed in order).
            gemm(&mut grad_weights[l], x_ref.transpose(), d_ref, false, par);
            let db = &mut grad_biases[l];
            db.fill(0.0);
            for row in delta.chunks_exact(layer.n_out) {
                for (g, &d) in db.iter_mut().zip(row) {
                    *g += d;
                }
            }
            // ∂L/∂x = δ Wᵀ, then through the ReLU of the layer below.
            let target = if l == 0 {
                &mut *grad_input
            } else {
                resize(delta_next, n * layer.n_in);
                &mut delta_next[..]
            };
            gemm(target, d_ref, layer.weights_ref().transpose(), false, par);
            if l > 0 {
                for (g, &a) in delta_next.iter_mut().zip(x) {
                    if a <= 0.0 {
                        *g = 0.0;
                    }
                }
                std::mem::swap(delta, delta_next);
            }
        }
    }
}
