//! One tower of the two-tower model: per-field mean-pooled embedding bags, concatenated, then an
//! optional MLP to the output dimension.

use std::collections::BTreeMap;

use faer::Par;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::bag::{EmbeddingTable, SparseGrad};
use super::linalg::resize;
use super::mlp::{Mlp, MlpCache, MlpGrads};
use crate::data::EntityFeatures;
use crate::{OptimizerConfig, OptimizerState, TrainError};

/// Which feature fields a tower reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fields {
    /// Every field of the entity table, in table order.
    All,
    /// Only field 0, the entity's own id.
    IdOnly,
    /// The named fields, in this order.
    Named(Vec<String>),
}

/// Settings of one tower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TowerConfig {
    /// The fields the tower reads.
    pub fields: Fields,
    /// Width of each field's embedding; `None` uses the model's `dim`.
    pub embedding_dim: Option<usize>,
    /// Per-field widths (by field name) that override `embedding_dim`.
    #[serde(default)]
    pub field_dims: BTreeMap<String, usize>,
    /// Hidden widths of the MLP on the concatenated embeddings (`Some(vec![])` is one linear
    /// layer to `dim`). `None`: no MLP, the concatenation is the output and must be `dim` wide.
    pub mlp: Option<Vec<usize>>,
}

impl TowerConfig {
    /// The tutorial's tower: the id's embedding of width `dim` is the output.
    pub fn id_only() -> Self {
        Self {
            fields: Fields::IdOnly,
            embedding_dim: None,
            field_dims: BTreeMap::new(),
            mlp: None,
        }
    }

    /// Every field embedded in `embedding_dim` dimensions, then an MLP with `hidden` widths.
    pub fn all_fields(embedding_dim: usize, hidden: Vec<usize>) -> Self {
        Self {
            fields: Fields::All,
            embedding_dim: Some(embedding_dim),
            field_dims: BTreeMap::new(),
            mlp: Some(hidden),
        }
    }
}

/// A tower's parameters: one embedding table per field it reads and the optional MLP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tower {
    /// Indices of the fields read, into [`EntityFeatures::fields`].
    fields: Vec<usize>,
    tables: Vec<EmbeddingTable>,
    /// First column of each field's bag in the concatenation.
    columns: Vec<usize>,
    concat_dim: usize,
    mlp: Option<Mlp>,
    dim: usize,
}

/// Activations of a [`Tower`] forward pass, kept for the backward pass, and backward scratch.
#[derive(Debug, Clone, Default)]
pub struct TowerCache {
    concat: Vec<f32>,
    mlp: MlpCache,
    grad_concat: Vec<f32>,
}

impl TowerCache {
    /// The MLP's activations from the last forward pass.
    pub fn mlp(&self) -> &MlpCache {
        &self.mlp
    }
}

/// Gradients of a [`Tower`]'s parameters: sparse rows per table, dense for the MLP.
#[derive(Debug, Clone)]
pub struct TowerGrads {
    tables: Vec<SparseGrad>,
    mlp: Option<MlpGrads>,
}

impl TowerGrads {
    /// The gradient of table `i` (the tower's `i`-th field).
    pub fn table(&self, i: usize) -> &SparseGrad {
        &self.tables[i]
    }

    /// The MLP's gradients, when the tower has an MLP.
    pub fn mlp(&self) -> Option<&MlpGrads> {
        self.mlp.as_ref()
    }
}

impl Tower {
    /// A freshly initialised tower reading `features`, with outputs `dim` wide. `side` names the
    /// tower in errors ("query tower", "item tower").
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for an unknown or repeated field, a zero width, or (without
    /// an MLP) embeddings whose widths do not add up to `dim`; errors of
    /// [`validate_features`] for a malformed feature table.
    pub fn new(
        config: &TowerConfig,
        features: &EntityFeatures,
        dim: usize,
        side: &'static str,
        rng: &mut impl Rng,
    ) -> Result<Self, TrainError> {
        validate_features(features)?;
        let invalid = |value: String, reason: &'static str| TrainError::InvalidConfig {
            name: side,
            value,
            reason,
        };
        if dim == 0 {
            return Err(invalid(
                "dim = 0".into(),
                "the output dimension must be positive",
            ));
        }
        let fields: Vec<usize> = match &config.fields {
            Fields::All => (0..features.fields.len()).collect(),
            Fields::IdOnly => vec![0],
            Fields::Named(names) => names
                .iter()
                .map(|name| {
                    features
                        .fields
                        .iter()
                        .position(|f| &f.name == name)
                        .ok_or_else(|| {
                            let available: Vec<&str> =
                                features.fields.iter().map(|f| f.name.as_str()).collect();
                            invalid(
                                format!("field {name:?} (available: {})", available.join(", ")),
                                "no such field",
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        if fields.is_empty() || fields.iter().any(|&f| f >= features.fields.len()) {
            return Err(invalid(
                format!("{:?}", config.fields),
                "the tower must read at least one existing field",
            ));
        }
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].contains(f) {
                return Err(invalid(
                    format!("field {:?}", features.fields[*f].name),
                    "a field is listed twice",
                ));
            }
        }
        for name in config.field_dims.keys() {
            if !fields.iter().any(|&f| &features.fields[f].name == name) {
                return Err(invalid(
                    format!("field_dims[{name:?}]"),
                    "names a field the tower does not read",
                ));
            }
        }
        let default_dim = config.embedding_dim.unwrap_or(dim);
        let mut columns = Vec::with_capacity(fields.len());
        let mut tables = Vec::with_capacity(fields.len());
        let mut concat_dim = 0;
        for &f in &fields {
            let field = &features.fields[f];
            let width = config
                .field_dims
                .get(&field.name)
                .copied()
                .unwrap_or(default_dim);
            if width == 0 {
                return Err(invalid(
                    format!("embedding width of field {:?} = 0", field.name),
                    "embedding widths must be positive",
                ));
            }
            columns.push(concat_dim);
            concat_dim += width;
            tables.push(EmbeddingTable::new(field.n_tokens, width, rng));
        }
        let mlp = match &config.mlp {
            None if concat_dim != dim => {
                return Err(invalid(
                    format!("embedding widths add up to {concat_dim}, dim = {dim}"),
                    "without an MLP the concatenated embeddings are the output and must be dim wide",
                ));
            }
            None => None,
            Some(hidden) => {
                if hidden.contains(&0) {
                    return Err(invalid(
                        format!("mlp = {hidden:?}"),
                        "hidden widths must be positive",
                    ));
                }
                Some(Mlp::new(concat_dim, hidden, dim, rng))
            }
        };
        Ok(Self {
            fields,
            tables,
            columns,
            concat_dim,
            mlp,
            dim,
        })
    }

    /// Output width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Indices of the fields the tower reads, into [`EntityFeatures::fields`].
    pub fn fields(&self) -> &[usize] {
        &self.fields
    }

    /// The embedding tables, one per field read.
    pub fn tables(&self) -> &[EmbeddingTable] {
        &self.tables
    }

    /// The embedding tables, for an optimiser step or a test.
    pub fn tables_mut(&mut self) -> &mut [EmbeddingTable] {
        &mut self.tables
    }

    /// The MLP, if any.
    pub fn mlp(&self) -> Option<&Mlp> {
        self.mlp.as_ref()
    }

    /// The MLP, if any, for an optimiser step or a test.
    pub fn mlp_mut(&mut self) -> Option<&mut Mlp> {
        self.mlp.as_mut()
    }

    /// Zeroed gradients shaped like the parameters.
    pub fn new_grads(&self) -> TowerGrads {
        TowerGrads {
            tables: self
                .tables
                .iter()
                .map(|t| SparseGrad::new(t.n_rows(), t.dim()))
                .collect(),
            mlp: self.mlp.as_ref().map(Mlp::new_grads),
        }
    }

    /// Checks that `features` is the table this tower was built on (same fields, token counts
    /// and entity count).
    pub(crate) fn check_features(&self, features: &EntityFeatures) -> Result<(), TrainError> {
        for (&f, table) in self.fields.iter().zip(&self.tables) {
            let n_tokens = features.fields.get(f).map_or(0, |field| field.n_tokens);
            if n_tokens != table.n_rows() {
                return Err(TrainError::DimensionMismatch {
                    what: "tokens of a tower field",
                    expected: table.n_rows(),
                    got: n_tokens,
                });
            }
        }
        Ok(())
    }

    /// Forward pass for `entities`, writing `entities.len() × dim` outputs into `out`.
    ///
    /// # Panics
    /// When `out` has the wrong length, or an entity is out of range.
    #[track_caller]
    pub fn forward(
        &self,
        features: &EntityFeatures,
        entities: &[u32],
        cache: &mut TowerCache,
        out: &mut [f32],
        par: Par,
    ) {
        let n = entities.len();
        assert_eq!(out.len(), n * self.dim, "output rows");
        let bags = match self.mlp {
            Some(_) => {
                resize(&mut cache.concat, n * self.concat_dim);
                &mut cache.concat[..]
            }
            None => &mut *out,
        };
        for ((&f, table), &col) in self.fields.iter().zip(&self.tables).zip(&self.columns) {
            table.forward_bags(
                &features.fields[f],
                entities,
                bags,
                self.concat_dim,
                col,
                par,
            );
        }
        if let Some(mlp) = &self.mlp {
            mlp.forward(&cache.concat, &mut cache.mlp, out, par);
        }
    }

    /// Backward pass for the last [`forward`](Self::forward) on `entities`: replaces the
    /// contents of `grads` with the gradients of the parameters given `grad_out = ∂L/∂out`.
    ///
    /// # Panics
    /// When the buffers do not match the forward pass.
    #[track_caller]
    pub fn backward(
        &self,
        features: &EntityFeatures,
        entities: &[u32],
        cache: &mut TowerCache,
        grad_out: &[f32],
        grads: &mut TowerGrads,
        par: Par,
    ) {
        let n = entities.len();
        assert_eq!(grad_out.len(), n * self.dim, "gradient rows");
        let grad_bags = match (&self.mlp, &mut grads.mlp) {
            (Some(mlp), Some(mlp_grads)) => {
                resize(&mut cache.grad_concat, n * self.concat_dim);
                mlp.backward(
                    &cache.concat,
                    &cache.mlp,
                    grad_out,
                    mlp_grads,
                    &mut cache.grad_concat,
                    par,
                );
                &cache.grad_concat[..]
            }
            (None, None) => grad_out,
            _ => panic!("gradients do not match the tower"),
        };
        for (((&f, table), &col), sparse) in self
            .fields
            .iter()
            .zip(&self.tables)
            .zip(&self.columns)
            .zip(&mut grads.tables)
        {
            sparse.clear();
            table.backward_bags(
                &features.fields[f],
                entities,
                grad_bags,
                self.concat_dim,
                col,
                sparse,
            );
        }
    }
}

/// Optimiser states for every parameter tensor of a [`Tower`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TowerOptimizer {
    tables: Vec<OptimizerState>,
    /// Per MLP layer: weights, biases.
    mlp: Vec<(OptimizerState, OptimizerState)>,
}

impl TowerOptimizer {
    /// Fresh states for `tower`'s tensors.
    ///
    /// # Errors
    /// When `config` is invalid.
    pub fn new(tower: &Tower, config: OptimizerConfig) -> Result<Self, TrainError> {
        let tables = tower
            .tables
            .iter()
            .map(|t| OptimizerState::new(config, t.as_slice().len()))
            .collect::<Result<_, _>>()?;
        let mlp = tower
            .mlp
            .iter()
            .flat_map(|m| m.layers())
            .map(|l| {
                Ok((
                    OptimizerState::new(config, l.weights().len())?,
                    OptimizerState::new(config, l.biases().len())?,
                ))
            })
            .collect::<Result<_, TrainError>>()?;
        Ok(Self { tables, mlp })
    }

    /// One optimiser step on `tower` with `grads`: sparse rows for the tables (only the rows the
    /// batch touched change), dense for the MLP.
    ///
    /// # Panics
    /// When the states, tower and gradients do not belong together.
    #[track_caller]
    pub fn step(&mut self, tower: &mut Tower, grads: &TowerGrads, lr_scale: f32) {
        assert_eq!(self.tables.len(), tower.tables.len(), "one state per table");
        for ((state, table), grad) in self
            .tables
            .iter_mut()
            .zip(&mut tower.tables)
            .zip(&grads.tables)
        {
            let dim = table.dim();
            state.step_rows(
                table.as_mut_slice(),
                dim,
                grad.rows(),
                grad.values(),
                lr_scale,
            );
        }
        if let (Some(mlp), Some(mlp_grads)) = (&mut tower.mlp, &grads.mlp) {
            assert_eq!(self.mlp.len(), mlp.layers().len(), "one state per layer");
            for (l, ((w_state, b_state), layer)) in
                self.mlp.iter_mut().zip(mlp.layers_mut()).enumerate()
            {
                w_state.step_dense(layer.weights_mut(), mlp_grads.weights(l), lr_scale);
                b_state.step_dense(layer.biases_mut(), mlp_grads.biases(l), lr_scale);
            }
        }
    }
}

/// Checks the shape of a feature table: each field has `n_entities + 1` non-decreasing offsets
/// starting at 0 and ending at the token count, and every token is below the field's
/// `n_tokens`.
///
/// # Errors
/// [`TrainError::InvalidConfig`] naming the field and the problem, or
/// [`TrainError::OutOfRange`] for a token out of range.
pub fn validate_features(features: &EntityFeatures) -> Result<(), TrainError> {
    if features.fields.is_empty() {
        return Err(TrainError::InvalidConfig {
            name: "features",
            value: "no fields".into(),
            reason: "an entity table needs at least its id field",
        });
    }
    for field in &features.fields {
        let bad = |reason: &'static str| TrainError::InvalidConfig {
            name: "features",
            value: format!("field {:?}", field.name),
            reason,
        };
        if field.offsets.len() != features.n_entities + 1 {
            return Err(bad("offsets must have one entry per entity plus one"));
        }
        if field.offsets[0] != 0
            || field.offsets.windows(2).any(|w| w[0] > w[1])
            || field.offsets[features.n_entities] as usize != field.tokens.len()
        {
            return Err(bad(
                "offsets must start at 0, never decrease and end at the token count",
            ));
        }
        if let Some(&t) = field.tokens.iter().find(|&&t| t as usize >= field.n_tokens) {
            return Err(TrainError::OutOfRange {
                what: "feature token",
                index: u64::from(t),
                bound: field.n_tokens as u64,
            });
        }
    }
    Ok(())
}
