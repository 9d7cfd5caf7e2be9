//! The product quantizer: `n_subspaces` contiguous blocks of `dim / n_subspaces` dimensions, each
//! quantized to one of `2^n_bits` codewords.

use faer::Par;
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use crate::centroids::{Centroids, ROWS};
use crate::data::{check_rows, check_table_rows, check_training_rows, chunk_rows};
use crate::{KMeans, KMeansConfig, KMeansSettings, PqError, ProgressFn, Stage};

/// Largest supported bits per code.
pub const MAX_BITS: u32 = 16;

/// An integer type that holds one subspace code.
pub trait Code: Copy + Default + Send + Sync + std::fmt::Debug + 'static {
    /// Bits the type holds.
    const BITS: u32;
    /// The code for codeword `index` (which fits by construction).
    fn from_index(index: usize) -> Self;
    /// The codeword index.
    fn index(self) -> usize;
}

impl Code for u8 {
    const BITS: u32 = 8;
    #[inline(always)]
    fn from_index(index: usize) -> Self {
        index as u8
    }
    #[inline(always)]
    fn index(self) -> usize {
        usize::from(self)
    }
}

impl Code for u16 {
    const BITS: u32 = 16;
    #[inline(always)]
    fn from_index(index: usize) -> Self {
        index as u16
    }
    #[inline(always)]
    fn index(self) -> usize {
        usize::from(self)
    }
}

/// Settings of a product quantizer.
#[derive(Debug, Clone, PartialEq)]
pub struct PqConfig {
    /// Number of subspaces M; must divide the dimension.
    pub n_subspaces: usize,
    /// Bits per subspace code, 1 to 16 (`2^n_bits` codewords per subspace).
    pub n_bits: u32,
    /// k-means settings of each subspace.
    pub kmeans: KMeansSettings,
    /// Seed; subspace m uses `seed + m`.
    pub seed: u64,
}

impl PqConfig {
    /// `n_subspaces` subspaces of `n_bits` bits with default k-means settings.
    pub fn new(n_subspaces: usize, n_bits: u32) -> Self {
        Self {
            n_subspaces,
            n_bits,
            kmeans: KMeansSettings::default(),
            seed: 0,
        }
    }
}

/// A trained product quantizer.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductQuantizer {
    dim: usize,
    n_bits: u32,
    sub_dim: usize,
    codebooks: Vec<Centroids>,
}

/// Checks `n_bits` and the split of `dim` into `n_subspaces`; returns the sub-dimension.
pub(crate) fn check_layout(dim: usize, n_subspaces: usize, n_bits: u32) -> Result<usize, PqError> {
    if dim == 0 {
        return Err(PqError::ZeroDimension);
    }
    if !(1..=MAX_BITS).contains(&n_bits) {
        return Err(PqError::InvalidSetting {
            setting: "n_bits",
            value: n_bits.to_string(),
            expected: "1 to 16",
        });
    }
    if n_subspaces == 0 || !dim.is_multiple_of(n_subspaces) {
        return Err(PqError::InvalidSetting {
            setting: "n_subspaces",
            value: n_subspaces.to_string(),
            expected: "a divisor of the dimension (the IVF-PQ codec pads other dimensions)",
        });
    }
    Ok(dim / n_subspaces)
}

impl ProductQuantizer {
    /// Trains one k-means per subspace on row-major `n × dim` vectors.
    ///
    /// # Errors
    /// On bad settings (see [`PqConfig`]), an empty, ragged or non-finite input, or fewer points
    /// than `2^n_bits`.
    pub fn train(
        data: &[f32],
        dim: usize,
        config: &PqConfig,
        par: Par,
        progress: ProgressFn<'_>,
    ) -> Result<Self, PqError> {
        let sub_dim = check_layout(dim, config.n_subspaces, config.n_bits)?;
        let n = check_training_rows(data, dim, "product quantizer training data")?;
        let k = 1usize << config.n_bits;
        if n < k {
            return Err(PqError::TooFewPoints {
                what: "product quantizer",
                n_points: n,
                n_centroids: k,
            });
        }
        let m_count = config.n_subspaces;
        let mut codebooks = Vec::with_capacity(m_count);
        let mut sub = vec![0.0f32; n * sub_dim];
        for m in 0..m_count {
            for (dst, row) in sub.chunks_exact_mut(sub_dim).zip(data.chunks_exact(dim)) {
                dst.copy_from_slice(&row[m * sub_dim..(m + 1) * sub_dim]);
            }
            let mut settings = config.kmeans.clone();
            if let crate::KMeansInit::Centroids(all) = &config.kmeans.init {
                // A warm start gives all subspaces' codebooks, subspace-major.
                let per = k * sub_dim;
                if all.len() != m_count * per {
                    return Err(PqError::DimensionMismatch {
                        what: "initial codebooks",
                        expected: m_count * per,
                        got: all.len(),
                    });
                }
                settings.init = crate::KMeansInit::Centroids(all[m * per..(m + 1) * per].to_vec());
            }
            let kconfig = KMeansConfig {
                n_clusters: k,
                settings,
                seed: config.seed.wrapping_add(m as u64),
            };
            let stage = Stage::Subspace {
                index: m,
                count: m_count,
            };
            codebooks.push(
                KMeans::train_with_progress(&sub, sub_dim, &kconfig, par, stage, progress)?
                    .centroids,
            );
        }
        Ok(Self {
            dim,
            n_bits: config.n_bits,
            sub_dim,
            codebooks,
        })
    }

    /// Builds from codebooks stored subspace-major (`n_subspaces × 2^n_bits × dim/n_subspaces`).
    ///
    /// # Errors
    /// On bad settings, a buffer of the wrong length, or a non-finite value.
    pub fn from_codebooks(
        dim: usize,
        n_subspaces: usize,
        n_bits: u32,
        codebooks: &[f32],
    ) -> Result<Self, PqError> {
        let sub_dim = check_layout(dim, n_subspaces, n_bits)?;
        let per = (1usize << n_bits) * sub_dim;
        if codebooks.len() != n_subspaces * per {
            return Err(PqError::DimensionMismatch {
                what: "codebooks",
                expected: n_subspaces * per,
                got: codebooks.len(),
            });
        }
        let codebooks = codebooks
            .chunks_exact(per)
            .map(|c| Centroids::new(sub_dim, c.to_vec()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            dim,
            n_bits,
            sub_dim,
            codebooks,
        })
    }

    /// Dimension of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of subspaces M.
    pub fn n_subspaces(&self) -> usize {
        self.codebooks.len()
    }

    /// Bits per subspace code.
    pub fn n_bits(&self) -> u32 {
        self.n_bits
    }

    /// Codewords per subspace, `2^n_bits`.
    pub fn n_codewords(&self) -> usize {
        1 << self.n_bits
    }

    /// Dimensions per subspace.
    pub fn sub_dim(&self) -> usize {
        self.sub_dim
    }

    /// The codebook of subspace `m`.
    pub fn codebook(&self, m: usize) -> &Centroids {
        &self.codebooks[m]
    }

    /// All codebooks, subspace-major (`M × K × sub_dim`).
    pub fn codebooks_flat(&self) -> Vec<f32> {
        self.codebooks
            .iter()
            .flat_map(|c| c.as_slice())
            .copied()
            .collect()
    }

    /// Copies the codewords `rows` from `codebooks`, the full subspace-major table of new
    /// values (`M × K × sub_dim`, as [`codebooks_flat`](Self::codebooks_flat) and
    /// [`from_codebooks`](Self::from_codebooks) lay it out; row `m·K + k` is codeword `k` of
    /// subspace `m`), in place. Afterwards the quantizer equals `from_codebooks` of the table
    /// if every changed row is named, bit for bit, at a cost proportional to the rows copied
    /// (see [`Centroids::copy_rows`]).
    ///
    /// # Errors
    /// [`PqError::DimensionMismatch`] when `codebooks` is not `M × K × sub_dim` long,
    /// [`PqError::CodeOutOfRange`] for a row of `M·K` or more, [`PqError::NonFinite`] for a
    /// non-finite value in a named row. On error nothing changes.
    pub fn copy_codewords(&mut self, codebooks: &[f32], rows: &[u32]) -> Result<(), PqError> {
        let (k, sub) = (self.n_codewords(), self.sub_dim);
        let n_rows = self.n_subspaces() * k;
        check_table_rows(codebooks, sub, n_rows, rows, "codebooks")?;
        for &row in rows {
            let row = row as usize;
            self.codebooks[row / k].write_row(row % k, &codebooks[row * sub..(row + 1) * sub]);
        }
        Ok(())
    }

    fn check_code_width<C: Code>(&self) -> Result<(), PqError> {
        if self.n_bits > C::BITS {
            return Err(PqError::CodeWidth {
                n_bits: self.n_bits,
                code_bits: C::BITS,
            });
        }
        Ok(())
    }

    /// Encodes row-major `n × dim` vectors into `n × M` codes.
    ///
    /// # Errors
    /// On a ragged or non-finite input, codes too narrow for `n_bits`, or `codes` of the wrong
    /// length.
    pub fn encode<C: Code>(&self, data: &[f32], codes: &mut [C], par: Par) -> Result<(), PqError> {
        self.encode_rows(data, codes, None, par)
    }

    /// Encodes like [`encode`](Self::encode) and writes each row's squared quantization error
    /// `‖x − decode(code)‖²` into `errors` (`n` values), from the encode's own scores: the sum
    /// over subspaces of `‖x_s‖² + min_c (‖c‖² − 2⟨x_s, c⟩)`, clamped at zero (so a row far from
    /// the origin with a tiny error has the rounding error of `‖x_s‖²`). No decode is run.
    ///
    /// # Errors
    /// As [`encode`](Self::encode), and `errors` of the wrong length.
    pub fn encode_with_errors<C: Code>(
        &self,
        data: &[f32],
        codes: &mut [C],
        errors: &mut [f32],
        par: Par,
    ) -> Result<(), PqError> {
        self.encode_rows(data, codes, Some(errors), par)
    }

    fn encode_rows<C: Code>(
        &self,
        data: &[f32],
        codes: &mut [C],
        errors: Option<&mut [f32]>,
        par: Par,
    ) -> Result<(), PqError> {
        self.check_code_width::<C>()?;
        let n = check_rows(data, self.dim, "vectors to encode")?;
        let m = self.n_subspaces();
        if codes.len() != n * m {
            return Err(PqError::DimensionMismatch {
                what: "codes",
                expected: n * m,
                got: codes.len(),
            });
        }
        if let Some(errors) = &errors
            && errors.len() != n
        {
            return Err(PqError::DimensionMismatch {
                what: "encode errors",
                expected: n,
                got: errors.len(),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let rows = chunk_rows(n, par, 64);
        let run = |((data, codes), errors): (RowChunk<'_, C>, Option<&mut [f32]>)| {
            let mut scores = vec![0.0f32; self.n_codewords()];
            Arch::new().dispatch(EncodeChunk {
                pq: self,
                data,
                codes,
                errors,
                scores: &mut scores,
            });
        };
        let chunks = data.chunks(rows * self.dim).zip(codes.chunks_mut(rows * m));
        // Each chunk's errors, or None for every chunk when they are not asked for.
        let error_chunks = errors
            .into_iter()
            .flat_map(|errors| errors.chunks_mut(rows))
            .map(Some)
            .chain(std::iter::repeat_with(|| None));
        let chunks = chunks.zip(error_chunks);
        match par {
            Par::Seq => chunks.for_each(run),
            Par::Rayon(_) => chunks.collect::<Vec<_>>().into_par_iter().for_each(run),
        }
        Ok(())
    }

    /// Decodes `n × M` codes into row-major `n × dim` vectors.
    ///
    /// # Errors
    /// On buffers of mismatched lengths, codes too narrow for `n_bits`, or a code out of range.
    pub fn decode<C: Code>(&self, codes: &[C], out: &mut [f32]) -> Result<(), PqError> {
        self.check_code_width::<C>()?;
        let m = self.n_subspaces();
        if !codes.len().is_multiple_of(m) || out.len() != codes.len() / m * self.dim {
            return Err(PqError::DimensionMismatch {
                what: "decode output",
                expected: codes.len() / m * self.dim,
                got: out.len(),
            });
        }
        if let Some(&bad) = codes.iter().find(|c| c.index() >= self.n_codewords()) {
            return Err(PqError::CodeOutOfRange {
                what: "PQ code",
                value: bad.index(),
                max: self.n_codewords() - 1,
            });
        }
        for (code, x) in codes.chunks_exact(m).zip(out.chunks_exact_mut(self.dim)) {
            self.decode_one(code, x);
        }
        Ok(())
    }

    /// Decodes one vector's M codes (each below `2^n_bits`).
    ///
    /// # Panics
    /// When the lengths are wrong or a code is out of range.
    #[track_caller]
    pub fn decode_one<C: Code>(&self, codes: &[C], out: &mut [f32]) {
        assert_eq!(codes.len(), self.n_subspaces(), "one code per subspace");
        for ((book, &code), x) in self
            .codebooks
            .iter()
            .zip(codes)
            .zip(out.chunks_exact_mut(self.sub_dim))
        {
            x.copy_from_slice(book.get(code.index()));
        }
    }

    /// Inner-product lookup table of a query: `table[m·K + k] = ⟨q^(m), c^(m)_k⟩`.
    ///
    /// # Panics
    /// When `query` is not `dim` long or `table` not `M·K` long.
    #[track_caller]
    pub fn inner_product_table_one(&self, query: &[f32], table: &mut [f32]) {
        self.table_one(query, table, TableKind::InnerProduct);
    }

    /// Squared-L2 lookup table of a query: `table[m·K + k] = ‖q^(m) − c^(m)_k‖²`.
    ///
    /// # Panics
    /// When `query` is not `dim` long or `table` not `M·K` long.
    #[track_caller]
    pub fn l2_table_one(&self, query: &[f32], table: &mut [f32]) {
        self.table_one(query, table, TableKind::L2);
    }

    #[track_caller]
    fn table_one(&self, query: &[f32], table: &mut [f32], kind: TableKind) {
        assert_eq!(
            query.len(),
            self.dim,
            "query must have the quantizer's dimension"
        );
        assert_eq!(
            table.len(),
            self.n_subspaces() * self.n_codewords(),
            "table must be M × K"
        );
        Arch::new().dispatch(TableOne {
            pq: self,
            query,
            table,
            kind,
        });
    }
}

#[derive(Clone, Copy)]
enum TableKind {
    InnerProduct,
    L2,
}

struct TableOne<'a> {
    pq: &'a ProductQuantizer,
    query: &'a [f32],
    table: &'a mut [f32],
    kind: TableKind,
}

impl WithSimd for TableOne<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let k = self.pq.n_codewords();
        for ((book, q), row) in self
            .pq
            .codebooks
            .iter()
            .zip(self.query.chunks_exact(self.pq.sub_dim))
            .zip(self.table.chunks_exact_mut(k))
        {
            match self.kind {
                TableKind::InnerProduct => book.direct_dots(q, row),
                TableKind::L2 => book.direct_squared_distances(q, row),
            }
        }
    }
}

/// Rows of vectors and their codes.
type RowChunk<'a, C> = (&'a [f32], &'a mut [C]);

struct EncodeChunk<'a, C> {
    pq: &'a ProductQuantizer,
    data: &'a [f32],
    codes: &'a mut [C],
    /// Each row's squared error, when asked for.
    errors: Option<&'a mut [f32]>,
    scores: &'a mut [f32],
}

/// `‖x‖² + score`, the squared distance from `x` to the codeword a `‖c‖² − 2⟨x, c⟩` score
/// belongs to, clamped at zero against cancellation.
#[inline(always)]
fn squared_error(x: &[f32], score: f32) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() + score).max(0.0)
}

impl<C: Code> WithSimd for EncodeChunk<'_, C> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let pq = self.pq;
        let (m, dim, sub) = (pq.n_subspaces(), pq.dim, pq.sub_dim);
        let mut weights = vec![0.0f32; ROWS * sub];
        let mut out = [(0usize, 0.0f32); ROWS];
        let mut errors = self.errors;
        if let Some(errors) = errors.as_deref_mut() {
            errors.fill(0.0);
        }
        // Subspace by subspace, so that one codebook stays in cache for the whole chunk.
        for (s, book) in pq.codebooks.iter().enumerate() {
            let span = s * sub..(s + 1) * sub;
            let blocks = self.data.chunks_exact(ROWS * dim);
            let tail = blocks.remainder();
            for (block, (x, codes)) in blocks
                .zip(self.codes.chunks_exact_mut(ROWS * m))
                .enumerate()
            {
                let rows = std::array::from_fn(|r| &x[r * dim + span.start..r * dim + span.end]);
                book.direct_nearest_rows(simd, rows, &mut weights, self.scores, &mut out);
                for (r, &(index, _)) in out.iter().enumerate() {
                    codes[r * m + s] = C::from_index(index);
                }
                if let Some(errors) = errors.as_deref_mut() {
                    for (r, &(_, score)) in out.iter().enumerate() {
                        errors[block * ROWS + r] += squared_error(rows[r], score);
                    }
                }
            }
            let done = self.data.len() - tail.len();
            for (i, (x, codes)) in tail
                .chunks_exact(dim)
                .zip(self.codes[done / dim * m..].chunks_exact_mut(m))
                .enumerate()
            {
                let part = &x[span.clone()];
                let (index, score) = book.direct_nearest(part, self.scores);
                codes[s] = C::from_index(index);
                if let Some(errors) = errors.as_deref_mut() {
                    errors[done / dim + i] += squared_error(part, score);
                }
            }
        }
    }
}
