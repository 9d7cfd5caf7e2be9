//! Embedding tables and mean-pooled embedding bags, with sparse gradients.
//!
//! An entity's bag for a field is the mean of the table rows of its tokens in that field
//! (`Field::tokens[offsets[e]..offsets[e + 1]]`); an entity with no token gets the zero vector.
//! The backward pass adds `g / n_tokens` to the gradient row of every token of the bag, so a token
//! that appears in several bags of a batch (or twice in one bag) collects all its contributions
//! in one row.

use faer::Par;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use super::linalg::for_row_blocks;
use crate::TrainError;
use crate::data::Field;
use crate::f32_bytes;

/// A row-major `n_rows × dim` embedding table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingTable {
    n_rows: usize,
    dim: usize,
    #[serde(with = "f32_bytes")]
    data: Vec<f32>,
}

impl EmbeddingTable {
    /// A table initialised like TensorFlow's `embedding_column`: a normal distribution with
    /// standard deviation `1/√dim`, truncated at two standard deviations (values beyond are
    /// drawn again), so rows start with a norm near one.
    pub fn new(n_rows: usize, dim: usize, rng: &mut impl Rng) -> Self {
        let std = 1.0 / (dim.max(1) as f32).sqrt();
        let normal = Normal::new(0.0f32, std).expect("a positive standard deviation");
        let data = (0..n_rows * dim)
            .map(|_| {
                loop {
                    let v = normal.sample(rng);
                    if v.abs() <= 2.0 * std {
                        break v;
                    }
                }
            })
            .collect();
        Self { n_rows, dim, data }
    }

    /// Wraps `n_rows × dim` row-major values.
    ///
    /// # Errors
    /// [`TrainError::DimensionMismatch`] when `data` is not `n_rows × dim` long, and
    /// [`TrainError::NonFinite`] on a NaN or an infinity.
    pub fn from_vec(n_rows: usize, dim: usize, data: Vec<f32>) -> Result<Self, TrainError> {
        if data.len() != n_rows * dim {
            return Err(TrainError::DimensionMismatch {
                what: "embedding table",
                expected: n_rows * dim,
                got: data.len(),
            });
        }
        if let Some(k) = data.iter().position(|v| !v.is_finite()) {
            return Err(TrainError::NonFinite {
                what: "embedding table",
                row: k / dim,
                col: k % dim,
            });
        }
        Ok(Self { n_rows, dim, data })
    }

    /// Number of rows (tokens).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Width of a row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The values, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The values, row-major, for an optimiser step or a test.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Row `row`.
    ///
    /// # Panics
    /// When `row` is out of range.
    #[track_caller]
    pub fn row(&self, row: usize) -> &[f32] {
        &self.data[row * self.dim..(row + 1) * self.dim]
    }

    /// Writes the mean-pooled bag of `field` for each entity of `entities` into columns
    /// `col..col + dim` of the rows of `out`, a row-major buffer with rows `stride` wide.
    ///
    /// # Panics
    /// When `out` does not hold `entities.len()` rows of `stride`, the columns do not fit, or an
    /// entity or token is out of range (the features are validated when a tower is built).
    #[track_caller]
    pub fn forward_bags(
        &self,
        field: &Field,
        entities: &[u32],
        out: &mut [f32],
        stride: usize,
        col: usize,
        par: Par,
    ) {
        assert_eq!(out.len(), entities.len() * stride, "output rows");
        assert!(col + self.dim <= stride, "bag columns must fit the row");
        for_row_blocks(out, stride, par, |first, block| {
            for (row, &entity) in block.chunks_exact_mut(stride).zip(&entities[first..]) {
                let bag = &mut row[col..col + self.dim];
                let tokens = bag_tokens(field, entity);
                if let [t] = tokens {
                    bag.copy_from_slice(self.row(*t as usize));
                    continue;
                }
                bag.fill(0.0);
                if tokens.is_empty() {
                    continue;
                }
                for &t in tokens {
                    for (b, &v) in bag.iter_mut().zip(self.row(t as usize)) {
                        *b += v;
                    }
                }
                let scale = 1.0 / tokens.len() as f32;
                bag.iter_mut().for_each(|b| *b *= scale);
            }
        });
    }

    /// Adds the gradient of the bags written by [`forward_bags`](Self::forward_bags) to
    /// `sparse`: row `t` collects `grad[b][col..col + dim] / n_tokens(b)` for every token `t` of
    /// every bag `b`, in batch order.
    ///
    /// # Panics
    /// As [`forward_bags`](Self::forward_bags), or when `sparse` does not match the table.
    #[track_caller]
    pub fn backward_bags(
        &self,
        field: &Field,
        entities: &[u32],
        grad: &[f32],
        stride: usize,
        col: usize,
        sparse: &mut SparseGrad,
    ) {
        assert_eq!(grad.len(), entities.len() * stride, "gradient rows");
        assert!(col + self.dim <= stride, "bag columns must fit the row");
        assert_eq!(
            (sparse.n_rows(), sparse.dim()),
            (self.n_rows, self.dim),
            "sparse gradient shape"
        );
        for (row, &entity) in grad.chunks_exact(stride).zip(entities) {
            let tokens = bag_tokens(field, entity);
            if tokens.is_empty() {
                continue;
            }
            let scale = 1.0 / tokens.len() as f32;
            let g = &row[col..col + self.dim];
            for &t in tokens {
                for (acc, &v) in sparse.row_mut(t).iter_mut().zip(g) {
                    *acc += v * scale;
                }
            }
        }
    }
}

/// The tokens of `entity` in `field`.
fn bag_tokens(field: &Field, entity: u32) -> &[u32] {
    let e = entity as usize;
    &field.tokens[field.offsets[e] as usize..field.offsets[e + 1] as usize]
}

/// The gradient of one embedding table restricted to the rows a batch touched: distinct rows in
/// first-touched order, each with its accumulated gradient (what
/// [`OptimizerState::step_rows`](crate::OptimizerState::step_rows) takes).
#[derive(Debug, Clone)]
pub struct SparseGrad {
    dim: usize,
    rows: Vec<u32>,
    values: Vec<f32>,
    /// Position of each table row in `rows`, or `u32::MAX` when untouched.
    slot: Vec<u32>,
}

impl SparseGrad {
    /// An empty gradient for an `n_rows × dim` table.
    pub fn new(n_rows: usize, dim: usize) -> Self {
        Self {
            dim,
            rows: Vec::new(),
            values: Vec::new(),
            slot: vec![u32::MAX; n_rows],
        }
    }

    /// Rows of the table.
    pub fn n_rows(&self) -> usize {
        self.slot.len()
    }

    /// Width of a row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The touched rows, distinct, in first-touched order.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// The gradient rows, one per entry of [`rows`](Self::rows).
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Forgets every row (in time proportional to the rows touched).
    pub fn clear(&mut self) {
        for &r in &self.rows {
            self.slot[r as usize] = u32::MAX;
        }
        self.rows.clear();
        self.values.clear();
    }

    /// The gradient row of table row `row`, added (zeroed) on first use.
    ///
    /// # Panics
    /// When `row` is out of range.
    #[track_caller]
    pub fn row_mut(&mut self, row: u32) -> &mut [f32] {
        let slot = &mut self.slot[row as usize];
        if *slot == u32::MAX {
            *slot = self.rows.len() as u32;
            self.rows.push(row);
            self.values.resize(self.values.len() + self.dim, 0.0);
        }
        let s = *slot as usize;
        &mut self.values[s * self.dim..(s + 1) * self.dim]
    }
}
