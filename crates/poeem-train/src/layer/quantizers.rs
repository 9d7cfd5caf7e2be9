//! The layer's quantizers, kept in step with its parameters, and the quantized forward pass.
//!
//! The coarse centroids and PQ codebooks live in [`Params`] (the serialised, optimised
//! values); the quantizers hold the same values with the norms and layouts `poeem-pq`'s
//! kernels need. After an optimiser step only the rows the batch touched changed, and only
//! those are copied ([`Quantizers::refresh`]), so a step never rebuilds a codec.

use faer::Par;
use poeem_pq::{Centroids, CoarseQuantizer, IvfPqCodec, IvfPqRef, ProductQuantizer, padded_dim};
use poeem_rotation::Rotation;

use super::config::IndexingLayerConfig;
use super::{Batch, Params, Work};
use crate::TrainError;

/// The coarse and product quantizers of the layer's current parameters.
#[derive(Debug, Clone)]
pub(crate) struct Quantizers {
    /// Dimension of the layer's input.
    dim: usize,
    coarse: Option<CoarseQuantizer>,
    pq: ProductQuantizer,
    /// Whether the layer's rotation is the identity (or absent): then it is skipped, as
    /// `IvfPqCodec::encode` and `decode` skip it.
    identity: bool,
}

impl Quantizers {
    /// The quantizers of `params`.
    ///
    /// # Errors
    /// When a centroid or codeword is not finite.
    pub(crate) fn new(
        dim: usize,
        config: &IndexingLayerConfig,
        params: &Params,
    ) -> Result<Self, TrainError> {
        let p = padded_dim(dim, config.n_subspaces);
        let coarse = if config.n_lists > 0 {
            let centroids = Centroids::new(p, params.coarse.clone())?;
            Some(CoarseQuantizer::from_centroids(centroids))
        } else {
            None
        };
        let pq = ProductQuantizer::from_codebooks(
            p,
            config.n_subspaces,
            config.n_bits,
            &params.codebooks,
        )?;
        Ok(Self {
            dim,
            coarse,
            pq,
            identity: params
                .rotation
                .as_ref()
                .is_none_or(|r| r.rotation().is_identity()),
        })
    }

    /// Copies the coarse centroids `lists` and the codewords `codewords` (rows of the
    /// subspace-major table) from `params` after an optimiser step changed them.
    ///
    /// # Errors
    /// When an updated value is not finite.
    pub(crate) fn refresh(
        &mut self,
        params: &Params,
        lists: &[u32],
        codewords: &[u32],
    ) -> Result<(), TrainError> {
        if let Some(coarse) = &mut self.coarse {
            coarse.copy_centroids(&params.coarse, lists)?;
        }
        self.pq.copy_codewords(&params.codebooks, codewords)?;
        Ok(())
    }

    /// Whether the forward pass skips the rotation (there is none, or it is the identity).
    pub(crate) fn skips_rotation(&self) -> bool {
        self.identity
    }

    /// Notes that the rotation changed (a Givens step).
    pub(crate) fn rotation_changed(&mut self, rotation: &Rotation) {
        self.identity = rotation.is_identity();
    }

    /// The codec: `rotation` (the identity when `None`), the coarse level and the PQ.
    pub(crate) fn codec(&self, rotation: Option<&Rotation>) -> IvfPqCodec {
        let rotation = rotation.map_or_else(|| Rotation::identity(self.pq.dim()), Clone::clone);
        IvfPqCodec::from_parts(self.dim, rotation, self.coarse.clone(), self.pq.clone())
            .expect("the layer's quantizers and rotation have the padded dimension")
    }

    /// `τ(x)` into `out` with `rotation`, keeping nothing: the codec's encode and decode
    /// ([`IvfPqRef`]), for inference.
    ///
    /// # Errors
    /// When a residual is not finite (the centroids overflowed).
    pub(crate) fn quantize(
        &self,
        rotation: Option<&Rotation>,
        x: &[f32],
        out: &mut [f32],
        par: Par,
    ) -> Result<(), TrainError> {
        let rotation = rotation.filter(|_| !self.identity);
        let codec = IvfPqRef::new(self.dim, rotation, self.coarse.as_ref(), &self.pq)
            .expect("the layer's quantizers and rotation have the padded dimension");
        let n = x.len() / self.dim;
        let (mut rotated, mut scratch) = (Vec::new(), Vec::new());
        codec.rotate_into(x, &mut rotated, &mut scratch, par);
        let mut lists = vec![0u32; n];
        let mut codes = vec![0u16; n * self.pq.n_subspaces()];
        codec.encode_rotated(&mut rotated, &mut lists, &mut codes, None, par)?;
        codec.decode(&lists, &codes, out, &mut rotated, &mut scratch, par)?;
        Ok(())
    }

    /// `x'` and its lists into `batch`, nothing else (no codes or errors): what the coarse
    /// level's list means need of a catalogue sample.
    ///
    /// # Errors
    /// When a rotated row is not finite.
    pub(crate) fn assign_lists(
        &self,
        rotation: Option<&Rotation>,
        x: &[f32],
        batch: &mut Batch,
        work: &mut Work,
        par: Par,
    ) -> Result<(), TrainError> {
        let rotation = rotation.filter(|_| !self.identity);
        let codec = IvfPqRef::new(self.dim, rotation, self.coarse.as_ref(), &self.pq)
            .expect("the layer's quantizers and rotation have the padded dimension");
        codec.rotate_into(x, &mut batch.rotated, &mut work.padded, par);
        batch.lists.clear();
        batch.lists.resize(x.len() / self.dim, 0);
        batch.error.clear();
        batch.codes.clear();
        if let Some(coarse) = &self.coarse {
            coarse.assign_lists(&batch.rotated, &mut batch.lists, par)?;
        }
        Ok(())
    }

    /// `τ(x)` into `out` with `rotation` (the layer's, `None` without one), keeping `x'`, the
    /// lists, codes and errors `e = z − x'` in `batch`: the codec's own encode and decode
    /// ([`IvfPqRef`], what `codec(rotation)` runs), so `τ(x)` is bit for bit
    /// `codec(rotation).decode(codec(rotation).encode(x))`, on the layer's buffers.
    ///
    /// # Errors
    /// When a residual is not finite (the centroids overflowed).
    pub(crate) fn encode_decode(
        &self,
        rotation: Option<&Rotation>,
        x: &[f32],
        batch: &mut Batch,
        work: &mut Work,
        out: &mut [f32],
        par: Par,
    ) -> Result<(), TrainError> {
        let rotation = rotation.filter(|_| !self.identity);
        let codec = IvfPqRef::new(self.dim, rotation, self.coarse.as_ref(), &self.pq)
            .expect("the layer's quantizers and rotation have the padded dimension");
        let (dim, p) = (self.dim, self.pq.dim());
        let n = x.len() / dim;

        // x', then the lists and codes of the residuals x' − v_j (computed in `batch.error`).
        codec.rotate_into(x, &mut batch.rotated, &mut work.padded, par);
        batch.error.clear();
        batch.error.extend_from_slice(&batch.rotated);
        batch.lists.clear();
        batch.lists.resize(n, 0);
        batch.codes.clear();
        batch.codes.resize(n * self.pq.n_subspaces(), 0);
        codec.encode_rotated(
            &mut batch.error,
            &mut batch.lists,
            &mut batch.codes,
            None,
            par,
        )?;

        // z = v_j + [c_{k_1} | … | c_{k_M}] (straight into `out` when nothing is rotated or
        // padded), e = z − x', and τ(x) = z Rᵀ cut back to dim.
        let direct = rotation.is_none() && p == dim;
        if !direct {
            work.z.clear();
            work.z.resize(n * p, 0.0);
        }
        let z: &mut [f32] = if direct { &mut *out } else { &mut work.z };
        codec.decode_rotated(&batch.lists, &batch.codes, z)?;
        for ((e, &z), &r) in batch.error.iter_mut().zip(&*z).zip(&batch.rotated) {
            *e = z - r;
        }
        if !direct {
            codec.unrotate_into(&work.z, out, &mut work.back, par);
        }
        Ok(())
    }
}
