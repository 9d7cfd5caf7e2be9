//! The layer's quantizers, kept in step with its parameters, and the quantized forward pass.
//!
//! The coarse centroids and PQ codebooks live in [`Params`] (the serialised, optimised
//! values); the quantizers hold the same values with the norms and layouts `poeem-pq`'s
//! kernels need. After an optimiser step only the rows the batch touched changed, and only
//! those are copied ([`Quantizers::refresh`]), so a step never rebuilds a codec.

use faer::Par;
use poeem_pq::{Centroids, CoarseQuantizer, IvfPqCodec, ProductQuantizer, padded_dim};
use poeem_rotation::Rotation;

use super::config::IndexingLayerConfig;
use super::{Batch, Params, Work, pad_rows};
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

    /// `τ(x)` into `out` with `rotation` (the layer's, `None` without one), keeping `x'`, the
    /// lists, codes and errors `e = z − x'` in `batch`: the same operations, in the same
    /// order per value, as `codec(rotation).decode(codec(rotation).encode(x))`, without a
    /// rotation when it is the identity and writing `z` straight into `out` when nothing is
    /// padded.
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
        let (dim, p) = (self.dim, self.pq.dim());
        let (m, sub) = (self.pq.n_subspaces(), self.pq.sub_dim());
        let n = x.len() / dim;
        let rotation = rotation.filter(|_| !self.identity);

        // x' = x R.
        match rotation {
            None if p == dim => {
                batch.rotated.clear();
                batch.rotated.extend_from_slice(x);
            }
            None => pad_rows(x, dim, p, &mut batch.rotated),
            Some(r) => {
                let input = if p == dim {
                    x
                } else {
                    pad_rows(x, dim, p, &mut work.padded);
                    &work.padded[..]
                };
                batch.rotated.clear();
                batch.rotated.resize(n * p, 0.0);
                r.apply(input, &mut batch.rotated, par);
            }
        }

        // Lists, and the residuals x' − v_j in `batch.error`.
        batch.lists.clear();
        batch.lists.resize(n, 0);
        batch.error.clear();
        match &self.coarse {
            Some(coarse) => {
                coarse.assign_lists(&batch.rotated, &mut batch.lists, par)?;
                for (row, &list) in batch.rotated.chunks_exact(p).zip(&batch.lists) {
                    let v = coarse.centroids().get(list as usize);
                    batch.error.extend(row.iter().zip(v).map(|(&r, &c)| r - c));
                }
            }
            None => batch.error.extend_from_slice(&batch.rotated),
        }
        batch.codes.clear();
        batch.codes.resize(n * m, 0);
        self.pq.encode(&batch.error, &mut batch.codes, par)?;

        // z = v_j + [c_{k_1} | … | c_{k_M}], and e = z − x'.
        let direct = rotation.is_none() && p == dim;
        if !direct {
            work.z.clear();
            work.z.resize(n * p, 0.0);
        }
        let z: &mut [f32] = if direct { &mut *out } else { &mut work.z };
        for (i, ((z, e), codes)) in z
            .chunks_exact_mut(p)
            .zip(batch.error.chunks_exact_mut(p))
            .zip(batch.codes.chunks_exact(m))
            .enumerate()
        {
            for (s, (z, &code)) in z.chunks_exact_mut(sub).zip(codes).enumerate() {
                z.copy_from_slice(self.pq.codebook(s).get(usize::from(code)));
            }
            if let Some(coarse) = &self.coarse {
                let v = coarse.centroids().get(batch.lists[i] as usize);
                for (z, &c) in z.iter_mut().zip(v) {
                    *z += c;
                }
            }
            for ((e, &z), &r) in e
                .iter_mut()
                .zip(&*z)
                .zip(&batch.rotated[i * p..(i + 1) * p])
            {
                *e = z - r;
            }
        }
        if direct {
            return Ok(());
        }

        // τ(x) = z Rᵀ, cut back to dim.
        let back = match rotation {
            None => &work.z[..],
            Some(r) if p == dim => {
                r.apply_transpose(&work.z, out, par);
                return Ok(());
            }
            Some(r) => {
                work.back.clear();
                work.back.resize(n * p, 0.0);
                r.apply_transpose(&work.z, &mut work.back, par);
                &work.back[..]
            }
        };
        for (o, b) in out.chunks_exact_mut(dim).zip(back.chunks_exact(p)) {
            o.copy_from_slice(&b[..dim]);
        }
        Ok(())
    }
}
