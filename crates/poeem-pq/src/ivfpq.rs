//! The IVF-PQ codec: rotation → coarse list → product quantization of the residual.
//!
//! For a vector `x` (zero-padded to a multiple of `n_subspaces` dimensions): `x' = x R`, list
//! `j = argmin ‖x' − v_j‖²`, codes `PQ(x' − v_j)`. The reconstruction is
//! `(v_j + decode(codes)) Rᵀ`, cut back to the original dimension.

use faer::Par;
use poeem_rotation::Rotation;

use crate::data::{check_rows, check_training_rows};
use crate::pq::check_layout;
use crate::{
    CoarseQuantizer, Code, KMeansSettings, PqConfig, PqError, ProductQuantizer, ProgressFn,
};

/// What the product quantizer's codebooks are fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PqTraining {
    /// The residuals `x' − v_j` that encoding quantizes (the usual IVF-PQ practice).
    #[default]
    Residuals,
    /// The rotated vectors themselves, ignoring the coarse level (the Poeem reference's
    /// behaviour; kept as an ablation). Encoding still quantizes residuals.
    RawVectors,
}

/// Settings of an IVF-PQ codec.
#[derive(Debug, Clone, PartialEq)]
pub struct IvfPqConfig {
    /// Coarse lists J (0 disables the coarse level).
    pub n_lists: usize,
    /// PQ subspaces M. Need not divide the dimension: vectors are zero-padded.
    pub n_subspaces: usize,
    /// Bits per subspace code (1 to 16).
    pub n_bits: u32,
    /// What the codebooks are fitted on.
    pub pq_training: PqTraining,
    /// k-means settings of both levels.
    pub kmeans: KMeansSettings,
    /// Seed of every random choice.
    pub seed: u64,
}

impl IvfPqConfig {
    /// `n_lists` lists and `n_subspaces` subspaces of `n_bits` bits, default k-means settings.
    pub fn new(n_lists: usize, n_subspaces: usize, n_bits: u32) -> Self {
        Self {
            n_lists,
            n_subspaces,
            n_bits,
            pq_training: PqTraining::Residuals,
            kmeans: KMeansSettings::default(),
            seed: 0,
        }
    }
}

/// A trained IVF-PQ codec.
#[derive(Debug, Clone, PartialEq)]
pub struct IvfPqCodec {
    dim: usize,
    rotation: Rotation,
    coarse: Option<CoarseQuantizer>,
    pq: ProductQuantizer,
}

/// The padded dimension for `dim` and `n_subspaces`.
pub fn padded_dim(dim: usize, n_subspaces: usize) -> usize {
    dim.div_ceil(n_subspaces.max(1)) * n_subspaces.max(1)
}

impl IvfPqCodec {
    /// Trains with the identity rotation on row-major `n × dim` vectors.
    ///
    /// # Errors
    /// On bad settings, or an empty, ragged or non-finite input, or too few points.
    pub fn train(
        data: &[f32],
        dim: usize,
        config: &IvfPqConfig,
        par: Par,
        progress: ProgressFn<'_>,
    ) -> Result<Self, PqError> {
        let padded = padded_dim(dim, config.n_subspaces);
        Self::train_rotated(
            data,
            dim,
            Rotation::identity(padded.max(1)),
            config,
            None,
            par,
            progress,
        )
    }

    /// Trains both levels on `data` rotated by `rotation` (of the padded dimension), warm-started
    /// from `warm` when given (its centroids are the initial ones).
    pub(crate) fn train_rotated(
        data: &[f32],
        dim: usize,
        rotation: Rotation,
        config: &IvfPqConfig,
        warm: Option<&IvfPqCodec>,
        par: Par,
        progress: ProgressFn<'_>,
    ) -> Result<Self, PqError> {
        let padded = padded_dim(dim, config.n_subspaces);
        check_layout(padded, config.n_subspaces, config.n_bits)?;
        let n = check_training_rows(data, dim, "IVF-PQ training data")?;
        if rotation.dim() != padded {
            return Err(PqError::DimensionMismatch {
                what: "rotation dimension",
                expected: padded,
                got: rotation.dim(),
            });
        }
        let mut rotated = vec![0.0f32; n * padded];
        rotate_padded(data, dim, &rotation, &mut rotated, par);

        let mut settings = config.kmeans.clone();
        let coarse = if config.n_lists == 0 {
            None
        } else {
            if let Some(c) = warm.and_then(|w| w.coarse.as_ref()) {
                settings.init = crate::KMeansInit::Centroids(c.centroids().as_slice().to_vec());
            }
            Some(CoarseQuantizer::train(
                &rotated,
                padded,
                config.n_lists,
                &settings,
                config.seed,
                par,
                progress,
            )?)
        };
        let pq_input = match (&coarse, config.pq_training) {
            (Some(coarse), PqTraining::Residuals) => {
                let mut lists = vec![0u32; n];
                coarse.assign_lists(&rotated, &mut lists, par)?;
                subtract_centroids(&mut rotated, padded, coarse, &lists);
                rotated
            }
            _ => rotated,
        };
        let mut pq_settings = config.kmeans.clone();
        if let Some(w) = warm {
            pq_settings.init = crate::KMeansInit::Centroids(w.pq.codebooks_flat());
        }
        let pq_config = PqConfig {
            n_subspaces: config.n_subspaces,
            n_bits: config.n_bits,
            kmeans: pq_settings,
            seed: config.seed.wrapping_add(1),
        };
        let pq = ProductQuantizer::train(&pq_input, padded, &pq_config, par, progress)?;
        Ok(Self {
            dim,
            rotation,
            coarse,
            pq,
        })
    }

    /// Assembles a codec from its parts.
    ///
    /// # Errors
    /// When the parts' dimensions disagree with `dim` padded to the PQ's subspaces.
    pub fn from_parts(
        dim: usize,
        rotation: Rotation,
        coarse: Option<CoarseQuantizer>,
        pq: ProductQuantizer,
    ) -> Result<Self, PqError> {
        let padded = padded_dim(dim, pq.n_subspaces());
        if pq.dim() != padded {
            return Err(PqError::DimensionMismatch {
                what: "product quantizer dimension",
                expected: padded,
                got: pq.dim(),
            });
        }
        if rotation.dim() != padded {
            return Err(PqError::DimensionMismatch {
                what: "rotation dimension",
                expected: padded,
                got: rotation.dim(),
            });
        }
        if let Some(c) = &coarse
            && c.dim() != padded
        {
            return Err(PqError::DimensionMismatch {
                what: "coarse quantizer dimension",
                expected: padded,
                got: c.dim(),
            });
        }
        Ok(Self {
            dim,
            rotation,
            coarse,
            pq,
        })
    }

    /// Dimension of the input vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Dimension after zero padding (a multiple of `n_subspaces`).
    pub fn padded_dim(&self) -> usize {
        self.pq.dim()
    }

    /// The rotation (of the padded dimension).
    pub fn rotation(&self) -> &Rotation {
        &self.rotation
    }

    /// The coarse quantizer, if the codec has a coarse level.
    pub fn coarse(&self) -> Option<&CoarseQuantizer> {
        self.coarse.as_ref()
    }

    /// The product quantizer (of the padded dimension).
    pub fn pq(&self) -> &ProductQuantizer {
        &self.pq
    }

    /// Number of lists (1 when there is no coarse level).
    pub fn n_lists(&self) -> usize {
        self.coarse.as_ref().map_or(1, CoarseQuantizer::n_lists)
    }

    /// Pads and rotates row-major `n × dim` vectors into `n × padded_dim`.
    ///
    /// # Errors
    /// On a ragged or non-finite input.
    pub fn rotate(&self, data: &[f32], par: Par) -> Result<Vec<f32>, PqError> {
        let n = check_rows(data, self.dim, "vectors")?;
        let mut out = vec![0.0f32; n * self.padded_dim()];
        rotate_padded(data, self.dim, &self.rotation, &mut out, par);
        Ok(out)
    }

    /// Encodes row-major `n × dim` vectors: `lists[i]` and `codes[i·M..(i+1)·M]`.
    ///
    /// # Errors
    /// On a ragged or non-finite input, outputs of the wrong length, or codes too narrow.
    pub fn encode<C: Code>(
        &self,
        data: &[f32],
        lists: &mut [u32],
        codes: &mut [C],
        par: Par,
    ) -> Result<(), PqError> {
        let mut rotated = self.rotate(data, par)?;
        self.encode_rotated(&mut rotated, lists, codes, par)
    }

    /// Encodes like [`encode`](Self::encode) and writes each row's squared quantization error
    /// `‖x − decode(list, code)‖²` into `errors` (`n` values), from the PQ encode's own scores
    /// ([`ProductQuantizer::encode_with_errors`]): no decode is run.
    ///
    /// # Errors
    /// As [`encode`](Self::encode), and `errors` of the wrong length.
    pub fn encode_with_errors<C: Code>(
        &self,
        data: &[f32],
        lists: &mut [u32],
        codes: &mut [C],
        errors: &mut [f32],
        par: Par,
    ) -> Result<(), PqError> {
        let mut rotated = self.rotate(data, par)?;
        self.assign_residuals(&mut rotated, lists, par)?;
        self.pq.encode_with_errors(&rotated, codes, errors, par)
    }

    /// Encodes already padded and rotated vectors, overwriting them with their residuals.
    pub(crate) fn encode_rotated<C: Code>(
        &self,
        rotated: &mut [f32],
        lists: &mut [u32],
        codes: &mut [C],
        par: Par,
    ) -> Result<(), PqError> {
        self.assign_residuals(rotated, lists, par)?;
        self.pq.encode(rotated, codes, par)
    }

    /// Assigns padded, rotated vectors to their lists and replaces them by their residuals.
    fn assign_residuals(
        &self,
        rotated: &mut [f32],
        lists: &mut [u32],
        par: Par,
    ) -> Result<(), PqError> {
        let padded = self.padded_dim();
        let n = rotated.len() / padded;
        if lists.len() != n {
            return Err(PqError::DimensionMismatch {
                what: "lists",
                expected: n,
                got: lists.len(),
            });
        }
        match &self.coarse {
            Some(coarse) => {
                coarse.assign_lists(rotated, lists, par)?;
                subtract_centroids(rotated, padded, coarse, lists);
            }
            None => lists.fill(0),
        }
        Ok(())
    }

    /// Reconstructions in the rotated, padded space: `v_j + decode(codes)`.
    ///
    /// # Errors
    /// On buffers of mismatched lengths, or a list or code out of range.
    pub fn decode_rotated<C: Code>(
        &self,
        lists: &[u32],
        codes: &[C],
        out: &mut [f32],
    ) -> Result<(), PqError> {
        let padded = self.padded_dim();
        let n = lists.len();
        if out.len() != n * padded {
            return Err(PqError::DimensionMismatch {
                what: "decode output",
                expected: n * padded,
                got: out.len(),
            });
        }
        if codes.len() != n * self.pq.n_subspaces() {
            return Err(PqError::DimensionMismatch {
                what: "codes",
                expected: n * self.pq.n_subspaces(),
                got: codes.len(),
            });
        }
        if let Some(&bad) = lists.iter().find(|&&l| l as usize >= self.n_lists()) {
            return Err(PqError::CodeOutOfRange {
                what: "list",
                value: bad as usize,
                max: self.n_lists() - 1,
            });
        }
        self.pq.decode(codes, out)?;
        if let Some(coarse) = &self.coarse {
            for (z, &list) in out.chunks_exact_mut(padded).zip(lists) {
                for (v, &c) in z.iter_mut().zip(coarse.centroids().get(list as usize)) {
                    *v += c;
                }
            }
        }
        Ok(())
    }

    /// Reconstructions in the original space, `n × dim`.
    ///
    /// # Errors
    /// As [`IvfPqCodec::decode_rotated`].
    pub fn decode<C: Code>(
        &self,
        lists: &[u32],
        codes: &[C],
        out: &mut [f32],
        par: Par,
    ) -> Result<(), PqError> {
        let padded = self.padded_dim();
        let mut rotated = vec![0.0f32; lists.len() * padded];
        self.decode_rotated(lists, codes, &mut rotated)?;
        if out.len() != lists.len() * self.dim {
            return Err(PqError::DimensionMismatch {
                what: "decode output",
                expected: lists.len() * self.dim,
                got: out.len(),
            });
        }
        let mut back = vec![0.0f32; rotated.len()];
        self.rotation.apply_transpose(&rotated, &mut back, par);
        for (o, b) in out
            .chunks_exact_mut(self.dim)
            .zip(back.chunks_exact(padded))
        {
            o.copy_from_slice(&b[..self.dim]);
        }
        Ok(())
    }

    /// Mean squared reconstruction error `mean ‖x − x̂‖²` over row-major `n × dim` vectors
    /// (computed in the rotated space, where it is the same).
    ///
    /// # Errors
    /// On an empty, ragged or non-finite input.
    pub fn distortion(&self, data: &[f32], par: Par) -> Result<f64, PqError> {
        let n = check_training_rows(data, self.dim, "vectors")?;
        let rotated = self.rotate(data, par)?;
        let (z, _) = self.reconstruct_rotated(&rotated, par)?;
        Ok(squared_error(&rotated, &z) / n as f64)
    }

    /// Encodes and decodes already rotated vectors; returns the reconstructions and the lists.
    pub(crate) fn reconstruct_rotated(
        &self,
        rotated: &[f32],
        par: Par,
    ) -> Result<(Vec<f32>, Vec<u32>), PqError> {
        let n = rotated.len() / self.padded_dim();
        let mut residual = rotated.to_vec();
        let mut lists = vec![0u32; n];
        let mut codes = vec![0u16; n * self.pq.n_subspaces()];
        self.encode_rotated(&mut residual, &mut lists, &mut codes, par)?;
        let mut z = vec![0.0f32; rotated.len()];
        self.decode_rotated(&lists, &codes, &mut z)?;
        Ok((z, lists))
    }
}

/// `Σ ‖a − b‖²` in f64.
pub(crate) fn squared_error(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x - y) * f64::from(x - y))
        .sum()
}

/// Zero-pads `n × dim` rows to the rotation's dimension and rotates them into `out`.
fn rotate_padded(data: &[f32], dim: usize, rotation: &Rotation, out: &mut [f32], par: Par) {
    let padded = rotation.dim();
    if rotation.is_identity() && padded == dim {
        out.copy_from_slice(data);
        return;
    }
    let mut buffer = vec![0.0f32; out.len()];
    for (dst, row) in buffer.chunks_exact_mut(padded).zip(data.chunks_exact(dim)) {
        dst[..dim].copy_from_slice(row);
    }
    if rotation.is_identity() {
        out.copy_from_slice(&buffer);
    } else {
        rotation.apply(&buffer, out, par);
    }
}

fn subtract_centroids(rows: &mut [f32], dim: usize, coarse: &CoarseQuantizer, lists: &[u32]) {
    for (row, &list) in rows.chunks_exact_mut(dim).zip(lists) {
        for (v, &c) in row.iter_mut().zip(coarse.centroids().get(list as usize)) {
            *v -= c;
        }
    }
}
