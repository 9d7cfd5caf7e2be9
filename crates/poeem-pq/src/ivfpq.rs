//! The IVF-PQ codec: rotation → coarse list → product quantization of the residual.
//!
//! For a vector `x` (zero-padded to a multiple of `n_subspaces` dimensions): `x' = x R`, list
//! `j = argmin ‖x' − v_j‖²`, codes `PQ(x' − v_j)`. The reconstruction is
//! `(v_j + decode(codes)) Rᵀ`, cut back to the original dimension.

use faer::Par;
use poeem_rotation::Rotation;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{check_rows, check_training_rows, sample_rows};
use crate::pq::check_layout;
use crate::{
    CoarseQuantizer, Code, KMeansSettings, PqConfig, PqError, ProductQuantizer, ProgressFn,
};

/// Mixed into the codec's seed to draw the rows training reads.
const TRAINING_SAMPLE_SEED: u64 = 0x7A41_5A3E;

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
        check_training_rows(data, dim, "IVF-PQ training data")?;
        if rotation.dim() != padded {
            return Err(PqError::DimensionMismatch {
                what: "rotation dimension",
                expected: padded,
                got: rotation.dim(),
            });
        }
        // Neither level's k-means reads more than `max_points_per_centroid` points per centroid,
        // so only that many rows are rotated and kept (the coarse lists' and the codebooks'
        // samples are then drawn from them): memory does not grow with the catalogue.
        let sampled = config
            .kmeans
            .max_points_per_centroid
            .map(|per| per.saturating_mul(config.n_lists.max(1usize << config.n_bits)))
            .and_then(|max| {
                let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ TRAINING_SAMPLE_SEED);
                sample_rows(data, dim, max, &mut rng)
            });
        let skip = Some(&rotation).filter(|r| !r.is_identity());
        let mut rotated = match sampled {
            // The sample is already a copy in the padded, rotated space.
            Some(rows) if skip.is_none() && padded == dim => rows,
            sampled => {
                let data = sampled.as_deref().unwrap_or(data);
                let mut rotated = Vec::with_capacity(data.len() / dim * padded);
                rotate_rows(data, dim, padded, skip, &mut rotated, &mut Vec::new(), par);
                rotated
            }
        };
        let n = rotated.len() / padded;

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
        IvfPqRef::new(dim, Some(&rotation), coarse.as_ref(), &pq)?;
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

    /// The codec's parts, borrowed: the encode and decode the codec runs, for callers that
    /// keep their own buffers (an identity rotation is skipped).
    pub fn view(&self) -> IvfPqRef<'_> {
        IvfPqRef {
            dim: self.dim,
            rotation: Some(&self.rotation).filter(|r| !r.is_identity()),
            coarse: self.coarse.as_ref(),
            pq: &self.pq,
        }
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
        check_rows(data, self.dim, "vectors")?;
        let mut out = Vec::new();
        self.view()
            .rotate_into(data, &mut out, &mut Vec::new(), par);
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
        self.view()
            .encode_rotated(&mut rotated, lists, codes, None, par)
    }

    /// Encodes like [`encode`](Self::encode) and writes each row's squared quantization error
    /// in the rotated, padded space, `‖x' − (v_j + PQ(x' − v_j))‖²`, into `errors` (`n`
    /// values), from the PQ encode's own scores ([`ProductQuantizer::encode_with_errors`]): no
    /// decode is run. It equals `‖x − decode(list, code)‖²` when the rotation is the identity
    /// or there is no padding, and bounds it otherwise (decoding drops the padded coordinates).
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
        self.view()
            .encode_rotated(&mut rotated, lists, codes, Some(errors), par)
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
        self.view().decode_rotated(lists, codes, out)
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
        self.view()
            .decode(lists, codes, out, &mut Vec::new(), &mut Vec::new(), par)
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
        let parts = self.view();
        parts.encode_rotated(&mut residual, &mut lists, &mut codes, None, par)?;
        let mut z = vec![0.0f32; rotated.len()];
        parts.decode_rotated(&lists, &codes, &mut z)?;
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

/// Row-major `n × dim` vectors zero-padded to `padded` values and rotated by `rotation` (none:
/// only padded) into `out`, resized to `n × padded`; `scratch` holds the padded rows when they
/// are both padded and rotated.
fn rotate_rows(
    data: &[f32],
    dim: usize,
    padded: usize,
    rotation: Option<&Rotation>,
    out: &mut Vec<f32>,
    scratch: &mut Vec<f32>,
    par: Par,
) {
    let n = data.len() / dim;
    out.clear();
    match rotation {
        None if padded == dim => out.extend_from_slice(data),
        None => pad_rows(data, dim, padded, out),
        Some(r) => {
            let input = if padded == dim {
                data
            } else {
                pad_rows(data, dim, padded, scratch);
                &scratch[..]
            };
            out.resize(n * padded, 0.0);
            r.apply(input, out, par);
        }
    }
}

fn subtract_centroids(rows: &mut [f32], dim: usize, coarse: &CoarseQuantizer, lists: &[u32]) {
    for (row, &list) in rows.chunks_exact_mut(dim).zip(lists) {
        for (v, &c) in row.iter_mut().zip(coarse.centroids().get(list as usize)) {
            *v -= c;
        }
    }
}

/// Zero-pads row-major `n × dim` rows to `n × padded` into `out` (resized).
pub fn pad_rows(data: &[f32], dim: usize, padded: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(data.len() / dim * padded, 0.0);
    for (dst, row) in out.chunks_exact_mut(padded).zip(data.chunks_exact(dim)) {
        dst[..dim].copy_from_slice(row);
    }
}

/// An IVF-PQ codec's parts, borrowed: the one implementation of its encode and decode.
///
/// [`IvfPqCodec`] runs through it ([`IvfPqCodec::view`]), and so does the indexing layer of
/// `poeem-train`, which keeps its quantizers in step with its parameters and its buffers from
/// batch to batch: both give the same lists, codes and reconstructions, bit for bit. The steps
/// are those of the codec: `x' = pad(x) R`, list `j = argmin ‖x' − v_j‖²`, codes
/// `PQ(x' − v_j)`; decoding `z = v_j + decode(codes)`, then `z Rᵀ` cut to `dim`. A rotation of
/// `None` is the identity, skipped.
#[derive(Debug, Clone, Copy)]
pub struct IvfPqRef<'a> {
    dim: usize,
    rotation: Option<&'a Rotation>,
    coarse: Option<&'a CoarseQuantizer>,
    pq: &'a ProductQuantizer,
}

impl<'a> IvfPqRef<'a> {
    /// The parts of a codec for `dim`-dimensional vectors; `rotation` `None` for the identity
    /// (the caller decides: an identity matrix given here is applied like any other).
    ///
    /// # Errors
    /// When the parts' dimensions disagree with `dim` padded to the PQ's subspaces.
    pub fn new(
        dim: usize,
        rotation: Option<&'a Rotation>,
        coarse: Option<&'a CoarseQuantizer>,
        pq: &'a ProductQuantizer,
    ) -> Result<Self, PqError> {
        let padded = padded_dim(dim, pq.n_subspaces());
        let check = |what: &'static str, got: usize| {
            if got == padded {
                Ok(())
            } else {
                Err(PqError::DimensionMismatch {
                    what,
                    expected: padded,
                    got,
                })
            }
        };
        check("product quantizer dimension", pq.dim())?;
        if let Some(r) = rotation {
            check("rotation dimension", r.dim())?;
        }
        if let Some(c) = coarse {
            check("coarse quantizer dimension", c.dim())?;
        }
        let parts = Self {
            dim,
            rotation,
            coarse,
            pq,
        };
        Ok(parts)
    }

    /// Dimension after zero padding: the PQ's.
    fn padded(&self) -> usize {
        self.pq.dim()
    }

    /// The rotation, `None` for the identity.
    pub fn rotation(&self) -> Option<&'a Rotation> {
        self.rotation
    }

    /// `x' = pad(x) R` for row-major `n × dim` vectors into `out`, resized to
    /// `n × padded_dim`; `scratch` holds the padded rows when they are also rotated. Values are
    /// not checked.
    ///
    /// # Panics
    /// When `data` is not a whole number of rows.
    #[track_caller]
    pub fn rotate_into(&self, data: &[f32], out: &mut Vec<f32>, scratch: &mut Vec<f32>, par: Par) {
        assert!(
            data.len().is_multiple_of(self.dim),
            "whole rows of dim values"
        );
        rotate_rows(
            data,
            self.dim,
            self.padded(),
            self.rotation,
            out,
            scratch,
            par,
        );
    }

    /// Encodes rotated, padded vectors (`n × padded_dim`, as [`rotate_into`](Self::rotate_into)
    /// gives them): `lists[i]`, and `codes[i·M..(i+1)·M]` of the residual `x' − v_j`, which
    /// replaces the row in `rotated`. With `errors`, each row's squared quantization error from
    /// the PQ encode's own scores ([`ProductQuantizer::encode_with_errors`]).
    ///
    /// # Errors
    /// On a ragged or non-finite input, outputs of the wrong length, or codes too narrow.
    pub fn encode_rotated<C: Code>(
        &self,
        rotated: &mut [f32],
        lists: &mut [u32],
        codes: &mut [C],
        errors: Option<&mut [f32]>,
        par: Par,
    ) -> Result<(), PqError> {
        let padded = self.padded();
        let n = rotated.len() / padded;
        if lists.len() != n {
            return Err(PqError::DimensionMismatch {
                what: "lists",
                expected: n,
                got: lists.len(),
            });
        }
        match self.coarse {
            Some(coarse) => {
                coarse.assign_lists(rotated, lists, par)?;
                subtract_centroids(rotated, padded, coarse, lists);
            }
            None => lists.fill(0),
        }
        match errors {
            Some(errors) => self.pq.encode_with_errors(rotated, codes, errors, par),
            None => self.pq.encode(rotated, codes, par),
        }
    }

    /// Reconstructions in the rotated, padded space, `z = v_j + [c_{k_1} | … | c_{k_M}]`, into
    /// `out` (`n × padded_dim`).
    ///
    /// # Errors
    /// On buffers of mismatched lengths, or a list or code out of range.
    pub fn decode_rotated<C: Code>(
        &self,
        lists: &[u32],
        codes: &[C],
        out: &mut [f32],
    ) -> Result<(), PqError> {
        let padded = self.padded();
        let (n, m) = (lists.len(), self.pq.n_subspaces());
        if out.len() != n * padded {
            return Err(PqError::DimensionMismatch {
                what: "decode output",
                expected: n * padded,
                got: out.len(),
            });
        }
        if codes.len() != n * m {
            return Err(PqError::DimensionMismatch {
                what: "codes",
                expected: n * m,
                got: codes.len(),
            });
        }
        let n_lists = self.coarse.map_or(1, CoarseQuantizer::n_lists);
        if let Some(&bad) = lists.iter().find(|&&l| l as usize >= n_lists) {
            return Err(PqError::CodeOutOfRange {
                what: "list",
                value: bad as usize,
                max: n_lists - 1,
            });
        }
        let n_codewords = self.pq.n_codewords();
        if let Some(&bad) = codes.iter().find(|c| c.index() >= n_codewords) {
            return Err(PqError::CodeOutOfRange {
                what: "PQ code",
                value: bad.index(),
                max: n_codewords - 1,
            });
        }
        for ((z, code), &list) in out
            .chunks_exact_mut(padded)
            .zip(codes.chunks_exact(m))
            .zip(lists)
        {
            self.pq.decode_one(code, z);
            if let Some(coarse) = self.coarse {
                for (v, &c) in z.iter_mut().zip(coarse.centroids().get(list as usize)) {
                    *v += c;
                }
            }
        }
        Ok(())
    }

    /// `z Rᵀ` cut back to `dim` values per row: rotated, padded rows (`n × padded_dim`) into
    /// `out` (`n × dim`); `scratch` holds the rotated-back rows when they are also cut.
    ///
    /// # Panics
    /// When the lengths disagree.
    #[track_caller]
    pub fn unrotate_into(&self, z: &[f32], out: &mut [f32], scratch: &mut Vec<f32>, par: Par) {
        let (dim, padded) = (self.dim, self.padded());
        assert_eq!(z.len() / padded * dim, out.len(), "one output row per row");
        let back = match self.rotation {
            None => z,
            Some(r) if padded == dim => {
                r.apply_transpose(z, out, par);
                return;
            }
            Some(r) => {
                scratch.clear();
                scratch.resize(z.len(), 0.0);
                r.apply_transpose(z, scratch, par);
                &scratch[..]
            }
        };
        for (o, b) in out.chunks_exact_mut(dim).zip(back.chunks_exact(padded)) {
            o.copy_from_slice(&b[..dim]);
        }
    }

    /// Reconstructions in the original space (`n × dim`), `decode_rotated` then
    /// `unrotate_into`, written straight into `out` when there is neither rotation nor padding;
    /// `z` and `scratch` are the buffers between the steps.
    ///
    /// # Errors
    /// As [`decode_rotated`](Self::decode_rotated), and `out` of the wrong length.
    pub fn decode<C: Code>(
        &self,
        lists: &[u32],
        codes: &[C],
        out: &mut [f32],
        z: &mut Vec<f32>,
        scratch: &mut Vec<f32>,
        par: Par,
    ) -> Result<(), PqError> {
        let n = lists.len();
        if out.len() != n * self.dim {
            return Err(PqError::DimensionMismatch {
                what: "decode output",
                expected: n * self.dim,
                got: out.len(),
            });
        }
        if self.rotation.is_none() && self.padded() == self.dim {
            return self.decode_rotated(lists, codes, out);
        }
        z.clear();
        z.resize(n * self.padded(), 0.0);
        self.decode_rotated(lists, codes, z)?;
        self.unrotate_into(z, out, scratch, par);
        Ok(())
    }
}
