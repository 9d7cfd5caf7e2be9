//! Building an index from vectors the post-hoc way, as faiss does: train an IVF-PQ codec on the
//! vectors (k-means for the coarse lists and for each subspace's codebook, optionally OPQ for a
//! rotation), encode every vector, and group the codes by list.
//!
//! [`build_index`] serves users who already have embeddings, and is the baseline that Poeem's
//! jointly trained index is compared with. [`index_from_codec`] only encodes, with a codec trained
//! elsewhere (the training crate's export of the learned index).
//!
//! Items are identified by `u64` ids, `0..n` by default. As in faiss, ids need not be unique: a
//! search may then return the same id for two different items. Only [`PADDING_ID`] (`u64::MAX`)
//! is refused, because the layout marks padding slots with it.

use std::borrow::Cow;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use poeem_pq::{
    Code, IvfPqCodec, IvfPqConfig, KMeansInit, KMeansSettings, MAX_BITS, OpqConfig, OpqInit,
    OpqObjective, PqTraining, ProgressFn, mean_squared_norm, train_opq,
};
use poeem_search::Par;
use rayon::prelude::*;
use serde_json::{Value, json};

use poeem_pq::{PqConfig, ProductQuantizer};
use poeem_search::refine::{REFINE_PQ_CODEWORDS, encode_float_refine, encode_pq8_refine};
use poeem_search::{
    CodeLayout, IndexMetadata, IndexParams, IndexParts, MetadataValue, Metric, PADDING_ID,
    RefineKind, SearchError,
};

use crate::BuildError;

/// Rows encoded per batch: bounds the scratch memory of the encoder and of the distortion check.
const ENCODE_CHUNK_ROWS: usize = 1 << 14;

/// Settings of [`build_index`].
#[derive(Debug, Clone, PartialEq)]
pub struct BuildConfig {
    /// Coarse lists J. 0 builds a flat PQ index: one list whose centroid is the origin.
    pub n_lists: usize,
    /// PQ subspaces M (1 to `dim`). Need not divide the dimension: vectors are zero-padded.
    pub n_subspaces: usize,
    /// Bits per PQ code, 1 to 16 (`2^n_bits` codewords per subspace); 8 is the usual choice.
    pub n_bits: u32,
    /// How queries will be compared with the items. With [`Metric::Cosine`] the vectors are
    /// L2-normalised before training and encoding.
    pub metric: Metric,
    /// Learn a rotation by OPQ before the final fit (`None`: the identity).
    pub opq: Option<OpqConfig>,
    /// k-means settings of both levels (a warm start, [`KMeansInit::Centroids`], is refused).
    pub kmeans: KMeansSettings,
    /// Seed of every random choice: the same seed, data and settings give the same index.
    pub seed: u64,
    /// Refinement data stored for re-ranking (`None`: none). See [`poeem_search::refine`].
    pub refine: Option<RefineKind>,
}

impl BuildConfig {
    /// `n_lists` lists and `n_subspaces` subspaces of `n_bits` bits; inner product, no OPQ,
    /// default k-means settings, seed 0.
    pub fn new(n_lists: usize, n_subspaces: usize, n_bits: u32) -> Self {
        Self {
            n_lists,
            n_subspaces,
            n_bits,
            metric: Metric::InnerProduct,
            opq: None,
            kmeans: KMeansSettings::default(),
            seed: 0,
            refine: None,
        }
    }

    /// Checks the settings that do not depend on the data.
    ///
    /// # Errors
    /// [`SearchError::InvalidParameter`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.n_subspaces == 0 {
            return Err(invalid("n_subspaces", 0, "must be at least 1"));
        }
        if !(1..=MAX_BITS).contains(&self.n_bits) {
            return Err(invalid("n_bits", self.n_bits, "must be between 1 and 16"));
        }
        let tolerance = self.kmeans.tolerance;
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(invalid(
                "kmeans.tolerance",
                tolerance,
                "must be a finite number of at least 0",
            ));
        }
        if matches!(self.kmeans.init, KMeansInit::Centroids(_)) {
            return Err(invalid(
                "kmeans.init",
                "centroids",
                "build_index trains both levels from scratch and takes no initial centroids",
            ));
        }
        if let Some(opq) = &self.opq
            && opq.max_train_points == Some(0)
        {
            return Err(invalid("opq.max_train_points", 0, "must be at least 1"));
        }
        Ok(())
    }

    /// The codec settings this build trains with (codebooks fitted on residuals).
    pub fn codec_config(&self) -> IvfPqConfig {
        IvfPqConfig {
            n_lists: self.n_lists,
            n_subspaces: self.n_subspaces,
            n_bits: self.n_bits,
            pq_training: PqTraining::Residuals,
            kmeans: self.kmeans.clone(),
            seed: self.seed,
        }
    }

    /// Number of vectors the codec is trained on, out of `n`: OPQ trains on a sample of at most
    /// `max_train_points`; k-means itself may sample further (`max_points_per_centroid`).
    pub fn n_train(&self, n: usize) -> usize {
        match &self.opq {
            Some(OpqConfig {
                max_train_points: Some(max),
                ..
            }) => n.min(*max),
            _ => n,
        }
    }
}

/// The settings a user picks for a post-hoc build, as `poeem build` and the Python package's
/// `build_index` take them, with their defaults; [`BuildOptions::config`] is the one mapping
/// from these options to a [`BuildConfig`], so both front ends build the same index from the
/// same options.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    /// Coarse lists J.
    pub n_lists: usize,
    /// PQ subspaces M.
    pub n_subspaces: usize,
    /// Bits per PQ code ([`BuildOptions::DEFAULT_N_BITS`] by default).
    pub n_bits: u32,
    /// The similarity the index serves (inner product by default).
    pub metric: Metric,
    /// `Some(rounds)` learns an OPQ rotation in that many rounds; `None` builds without one.
    pub opq_rounds: Option<usize>,
    /// Lloyd iterations of each k-means ([`BuildOptions::DEFAULT_KMEANS_ITERATIONS`]).
    pub kmeans_iterations: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Refinement data stored for re-ranking (none by default).
    pub refine: Option<RefineKind>,
}

impl BuildOptions {
    /// Default bits per code.
    pub const DEFAULT_N_BITS: u32 = 8;
    /// Default OPQ rounds when OPQ is asked for.
    pub const DEFAULT_OPQ_ROUNDS: usize = OpqConfig::DEFAULT_ROUNDS;
    /// Default Lloyd iterations of each k-means.
    pub const DEFAULT_KMEANS_ITERATIONS: usize = 20;

    /// `n_lists` lists and `n_subspaces` subspaces, every other option at its default.
    pub fn new(n_lists: usize, n_subspaces: usize) -> Self {
        Self {
            n_lists,
            n_subspaces,
            n_bits: Self::DEFAULT_N_BITS,
            metric: Metric::InnerProduct,
            opq_rounds: None,
            kmeans_iterations: Self::DEFAULT_KMEANS_ITERATIONS,
            seed: 0,
            refine: None,
        }
    }

    /// The build configuration these options stand for (everything not named here at
    /// [`BuildConfig::new`]'s and [`OpqConfig::default`]'s defaults).
    pub fn config(&self) -> BuildConfig {
        let mut config = BuildConfig::new(self.n_lists, self.n_subspaces, self.n_bits);
        config.metric = self.metric;
        config.seed = self.seed;
        config.refine = self.refine;
        config.kmeans.max_iter = self.kmeans_iterations;
        config.opq = self.opq_rounds.map(|n_rounds| OpqConfig {
            n_rounds,
            ..OpqConfig::default()
        });
        config
    }
}

/// What [`build_index`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    /// Vectors the codec was trained on (see [`BuildConfig::n_train`]).
    pub n_train: usize,
    /// Seconds spent training the codec (coarse k-means and PQ, or the whole OPQ alternation).
    pub train_seconds: f64,
    /// Seconds spent encoding the vectors and grouping them by list.
    pub encode_seconds: f64,
    /// Seconds of the whole build.
    pub total_seconds: f64,
    /// Mean squared reconstruction error `mean ‖x − x̂‖²` of the indexed vectors (normalised ones
    /// for [`Metric::Cosine`]), measured in the rotated, zero-padded space.
    pub distortion: f64,
    /// `distortion` divided by the vectors' mean squared norm (0 when every vector is zero).
    pub relative_distortion: f64,
    /// With OPQ, the training sample's mean squared distortion after each round, the last entry
    /// being the final codec's (see [`poeem_pq::OpqReport`]); empty without OPQ.
    pub opq_distortion: Vec<f64>,
}

/// Trains an IVF-PQ codec on row-major `n × dim` vectors and indexes them.
///
/// `ids[i]` is the id of row i (default `0..n`). The codec is trained by
/// [`IvfPqCodec::train`] with codebooks fitted on the residuals, or by [`train_opq`] when
/// `config.opq` is set; `progress` receives the training events. Every vector is then encoded
/// (one-byte codes up to 8 bits, two-byte codes above) and grouped by its coarse list.
///
/// The parts' metadata records the builder, the crate version, the shape, the training settings,
/// the distortion, the stage timings and the creation time (Unix seconds); everything but the
/// last two is the same for the same inputs.
///
/// # Errors
/// - [`SearchError::InvalidParameter`] for bad settings (see [`BuildConfig::validate`]), `dim` of
///   0, a length that is not a whole number of rows, `n_subspaces > dim`, more lists or codewords
///   than training vectors, an id equal to [`PADDING_ID`], or (cosine) a zero vector;
/// - [`SearchError::Empty`] when there are no vectors;
/// - [`SearchError::NonFinite`] naming the row and column of a NaN or infinity;
/// - [`SearchError::DimensionMismatch`] when `ids` is not `n` long;
/// - [`BuildError::Pq`] when training fails.
pub fn build_index(
    vectors: &[f32],
    dim: usize,
    ids: Option<&[u64]>,
    config: &BuildConfig,
    par: Par,
    progress: ProgressFn<'_>,
) -> Result<(IndexParts, BuildReport), BuildError> {
    let start = Instant::now();
    config.validate()?;
    let n = check_vectors(vectors, dim)?;
    if config.n_subspaces > dim {
        return Err(invalid(
            "n_subspaces",
            config.n_subspaces,
            "must not exceed the dimension",
        ));
    }
    let n_train = config.n_train(n);
    if config.n_lists > n_train {
        return Err(invalid(
            "n_lists",
            config.n_lists,
            "is larger than the number of training vectors",
        ));
    }
    if 1usize << config.n_bits > n_train {
        return Err(invalid(
            "n_bits",
            config.n_bits,
            "asks for more codewords (2^n_bits) than there are training vectors",
        ));
    }
    let ids = item_ids(ids, n)?;
    let data = prepare(vectors, dim, config.metric)?;

    let codec_config = config.codec_config();
    let train_start = Instant::now();
    let (codec, opq_distortion) = match &config.opq {
        None => (
            IvfPqCodec::train(&data, dim, &codec_config, par, progress)?,
            Vec::new(),
        ),
        Some(opq) => {
            let (codec, report) = train_opq(&data, dim, &codec_config, opq, par, progress)?;
            (codec, report.distortion)
        }
    };
    let train_seconds = train_start.elapsed().as_secs_f64();

    let keep_codes = config.refine == Some(RefineKind::Pq8);
    let mut encoded = encode_items(&codec, &data, &ids, config.metric, keep_codes, par)?;
    if let Some(kind) = config.refine {
        add_refine(&mut encoded, &codec, &data, kind, config, par)?;
    }
    let total_seconds = start.elapsed().as_secs_f64();

    let mut metadata = codec_metadata("poeem-search build_index", &codec, &encoded);
    metadata.extra.insert(
        "training".into(),
        metadata_value(json!({
            "n_lists": config.n_lists,
            "pq_training": "residuals",
            "opq": config.opq.as_ref().map(opq_json),
            "kmeans": kmeans_json(&config.kmeans),
            "seed": config.seed,
            "n_train": n_train,
            "refine": config.refine.map(RefineKind::name),
        })),
    );
    metadata
        .extra
        .insert("opq_distortion".into(), opq_distortion.clone().into());
    metadata.extra.insert(
        "timings".into(),
        metadata_value(json!({
            "train_seconds": train_seconds,
            "encode_seconds": encoded.seconds,
            "total_seconds": total_seconds,
        })),
    );
    metadata.created = Some(unix_seconds());
    encoded.parts.metadata = metadata;

    let report = BuildReport {
        n_train,
        train_seconds,
        encode_seconds: encoded.seconds,
        total_seconds,
        distortion: encoded.distortion,
        relative_distortion: encoded.relative_distortion,
        opq_distortion,
    };
    Ok((encoded.parts, report))
}

/// Indexes row-major `n × codec.dim()` vectors with an already trained codec: encoding only, no
/// k-means.
///
/// `ids` and `metric` behave as in [`build_index`] (cosine normalises the vectors before encoding).
/// The metadata is generated as by [`build_index`] (builder `"poeem-search index_from_codec"`,
/// crate version, shape, rotation, distortion, encode time, creation time), then the entries of
/// `metadata` (typed members and extra entries; [`IndexMetadata::default`] for none) are added,
/// replacing generated entries of the same name, except `params`, which always describes the
/// index.
///
/// # Errors
/// As [`build_index`] for the vectors and ids.
pub fn index_from_codec(
    codec: &IvfPqCodec,
    vectors: &[f32],
    ids: Option<&[u64]>,
    metric: Metric,
    metadata: IndexMetadata,
    par: Par,
) -> Result<IndexParts, BuildError> {
    let n = check_vectors(vectors, codec.dim())?;
    let ids = item_ids(ids, n)?;
    let data = prepare(vectors, codec.dim(), metric)?;
    let mut encoded = encode_items(codec, &data, &ids, metric, false, par)?;
    let mut meta = codec_metadata("poeem-search index_from_codec", codec, &encoded);
    meta.extra.insert(
        "timings".into(),
        metadata_value(json!({ "encode_seconds": encoded.seconds })),
    );
    meta.created = Some(unix_seconds());
    for (key, value) in metadata.to_map() {
        if key != "params" {
            // The value comes from a typed member or an extra entry, so it has its key's type.
            meta.insert(key, value)?;
        }
    }
    encoded.parts.metadata = meta;
    Ok(encoded.parts)
}

/// The encoded index with the measurements of the encoding.
struct Encoded {
    parts: IndexParts,
    /// Each item's list, in input order.
    lists: Vec<u32>,
    /// Each item's codes (`M` per item), kept only when asked for (`pq8` refinement).
    codes: Vec<u16>,
    distortion: f64,
    relative_distortion: f64,
    seconds: f64,
}

/// Encodes checked, prepared vectors with `codec` and groups them by list (metadata left empty).
fn encode_items(
    codec: &IvfPqCodec,
    data: &[f32],
    ids: &[u64],
    metric: Metric,
    keep_codes: bool,
    par: Par,
) -> Result<Encoded, BuildError> {
    let start = Instant::now();
    let (parts, lists, codes, squared_error) = if codec.pq().n_bits() <= 8 {
        encode_parts::<u8>(codec, data, ids, metric, keep_codes, par)?
    } else {
        encode_parts::<u16>(codec, data, ids, metric, keep_codes, par)?
    };
    let distortion = squared_error / ids.len() as f64;
    let scale = mean_squared_norm(data, codec.dim());
    Ok(Encoded {
        parts,
        lists,
        codes,
        distortion,
        relative_distortion: if scale > 0.0 { distortion / scale } else { 0.0 },
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Rows of vectors with their lists, codes and squared errors to write.
type RowChunk<'a, C> = (&'a [f32], (&'a mut [u32], (&'a mut [C], &'a mut [f32])));

/// Encodes into `C` codes and assembles the parts; returns them with `Σ ‖x R − x̂'‖²` as the
/// encode reports it, summed in row order (so the same for any thread count). Rows go in
/// chunks, in parallel under `par`, each through the whole encode (rotation, list, residual,
/// PQ) on one thread: this keeps the rotated copies small and leaves no serial step between
/// the parallel ones.
fn encode_parts<C: Code + Into<u32>>(
    codec: &IvfPqCodec,
    data: &[f32],
    ids: &[u64],
    metric: Metric,
    keep_codes: bool,
    par: Par,
) -> Result<(IndexParts, Vec<u32>, Vec<u16>, f64), BuildError> {
    let (dim, padded, m_count) = (codec.dim(), codec.padded_dim(), codec.pq().n_subspaces());
    let n = ids.len();
    let mut lists = vec![0u32; n];
    let mut codes = vec![C::default(); n * m_count];
    let mut errors = vec![0.0f32; n];
    let threads = match par {
        Par::Seq => 1,
        Par::Rayon(t) => t.get(),
    };
    let rows = n.div_ceil(threads).clamp(1, ENCODE_CHUNK_ROWS);
    let mut chunks = data.chunks(rows * dim).zip(
        lists.chunks_mut(rows).zip(
            codes
                .chunks_mut(rows * m_count)
                .zip(errors.chunks_mut(rows)),
        ),
    );
    let encode_chunk = |chunk: RowChunk<'_, C>| {
        let (data, (lists, (codes, errors))) = chunk;
        codec.encode_with_errors(data, lists, codes, errors, Par::Seq)
    };
    match par {
        Par::Seq => chunks.try_for_each(encode_chunk)?,
        Par::Rayon(_) => chunks
            .collect::<Vec<_>>()
            .into_par_iter()
            .try_for_each(encode_chunk)?,
    }
    let squared_error = errors.iter().map(|&e| f64::from(e)).sum();

    let pq = codec.pq();
    let params = IndexParams {
        dim,
        padded_dim: padded,
        n_lists: codec.n_lists(),
        n_subspaces: m_count,
        n_bits: pq.n_bits(),
        metric,
        n_items: n,
        code_layout: CodeLayout::for_bits(pq.n_bits()),
    };
    let rotation = (!codec.rotation().is_identity()).then(|| codec.rotation().as_slice().to_vec());
    let coarse_centroids = codec.coarse().map_or_else(
        || vec![0.0; padded],
        |coarse| coarse.centroids().as_slice().to_vec(),
    );
    let parts = IndexParts::from_item_codes(
        params,
        rotation,
        coarse_centroids,
        pq.codebooks_flat(),
        &lists,
        &codes,
        ids,
        IndexMetadata::default(),
    )?;
    let wide = if keep_codes {
        codes.iter().map(|&c| c.into() as u16).collect()
    } else {
        Vec::new()
    };
    Ok((parts, lists, wide, squared_error))
}

/// Adds refinement data of `kind` to an encoded index: the prepared vectors (`f32`, `f16`) or
/// an 8-bit PQ of their residuals with `M` subspaces (`pq8`, trained on at most 65,536 rows,
/// seeded by `config.seed`), in slot order.
fn add_refine(
    encoded: &mut Encoded,
    codec: &IvfPqCodec,
    data: &[f32],
    kind: RefineKind,
    config: &BuildConfig,
    par: Par,
) -> Result<(), BuildError> {
    let parts = &mut encoded.parts;
    let p = parts.params;
    let (dim, padded) = (p.dim, p.padded_dim);
    let n = encoded.lists.len();
    // Slot of each item: items keep their input order inside a list.
    let mut filled = vec![0u64; p.n_lists];
    let slots: Vec<usize> = encoded
        .lists
        .iter()
        .map(|&j| {
            let slot = parts.list_offsets[j as usize] + filled[j as usize];
            filled[j as usize] += 1;
            slot as usize
        })
        .collect();
    let n_slots = parts.ids.len();
    let bytes = match kind {
        RefineKind::F32 | RefineKind::F16 => {
            let mut by_slot = vec![0.0f32; n_slots * dim];
            for (row, &slot) in data.chunks_exact(dim).zip(&slots) {
                by_slot[slot * dim..(slot + 1) * dim].copy_from_slice(row);
            }
            encode_float_refine(kind, dim, &by_slot)
        }
        RefineKind::Pq8 => {
            let m_count = p.n_subspaces;
            let residuals = |rows: std::ops::Range<usize>| -> Result<Vec<f32>, BuildError> {
                let mut rotated = codec.rotate(&data[rows.start * dim..rows.end * dim], par)?;
                let mut decoded = vec![0.0f32; rows.len() * padded];
                let m = codec.pq().n_subspaces();
                codec.decode_rotated(
                    &encoded.lists[rows.clone()],
                    &encoded.codes[rows.start * m..rows.end * m],
                    &mut decoded,
                )?;
                for (r, d) in rotated.iter_mut().zip(&decoded) {
                    *r -= d;
                }
                Ok(rotated)
            };
            let n_train = n.min(REFINE_PQ_CODEWORDS * 256);
            if n_train < REFINE_PQ_CODEWORDS {
                return Err(invalid(
                    "refine",
                    "pq8",
                    "needs at least 256 vectors to train its codebooks",
                ));
            }
            let train = residuals(0..n_train)?;
            let mut pq_config = PqConfig::new(m_count, 8);
            pq_config.kmeans = config.kmeans.clone();
            pq_config.seed = config.seed.wrapping_add(0x005E_F14E);
            let pq = ProductQuantizer::train(&train, padded, &pq_config, par, &mut |_| {})?;
            let mut by_slot = vec![0u8; n_slots * m_count];
            let mut codes = vec![0u8; ENCODE_CHUNK_ROWS * m_count];
            for start in (0..n).step_by(ENCODE_CHUNK_ROWS) {
                let end = (start + ENCODE_CHUNK_ROWS).min(n);
                let chunk = residuals(start..end)?;
                let codes = &mut codes[..(end - start) * m_count];
                pq.encode(&chunk, codes, par)?;
                for (item, &slot) in codes.chunks_exact(m_count).zip(&slots[start..end]) {
                    by_slot[slot * m_count..(slot + 1) * m_count].copy_from_slice(item);
                }
            }
            encode_pq8_refine(padded, m_count, &pq.codebooks_flat(), &by_slot)
        }
    };
    parts.refine = Some(bytes);
    Ok(())
}

/// Checks row-major vectors of width `dim`; returns the number of rows.
fn check_vectors(vectors: &[f32], dim: usize) -> Result<usize, BuildError> {
    if dim == 0 {
        return Err(invalid("dim", 0, "must be at least 1"));
    }
    if !vectors.len().is_multiple_of(dim) {
        return Err(invalid(
            "vectors",
            format!("{} values", vectors.len()),
            "do not form whole rows of dim values",
        ));
    }
    if vectors.is_empty() {
        return Err(SearchError::Empty { what: "vectors" }.into());
    }
    // A branch-free pass that vectorises; the position only when something is wrong.
    if !vectors.iter().fold(true, |ok, v| ok & v.is_finite())
        && let Some(k) = vectors.iter().position(|v| !v.is_finite())
    {
        return Err(SearchError::NonFinite {
            what: "vectors",
            row: k / dim,
            col: k % dim,
        }
        .into());
    }
    Ok(vectors.len() / dim)
}

/// The ids of `n` items: the given ones after checking them, or `0..n`.
fn item_ids(ids: Option<&[u64]>, n: usize) -> Result<Cow<'_, [u64]>, BuildError> {
    let Some(ids) = ids else {
        return Ok(Cow::Owned((0..n as u64).collect()));
    };
    if ids.len() != n {
        return Err(SearchError::DimensionMismatch {
            what: "ids (one per vector)",
            expected: n,
            got: ids.len(),
        }
        .into());
    }
    if let Some(row) = ids.iter().position(|&id| id == PADDING_ID) {
        return Err(invalid(
            "ids",
            format!("row {row}: {PADDING_ID}"),
            "u64::MAX is reserved for padding slots",
        ));
    }
    Ok(Cow::Borrowed(ids))
}

/// The vectors as the codec sees them: L2-normalised for cosine, as given otherwise.
fn prepare(vectors: &[f32], dim: usize, metric: Metric) -> Result<Cow<'_, [f32]>, BuildError> {
    if metric != Metric::Cosine {
        return Ok(Cow::Borrowed(vectors));
    }
    let mut out = vectors.to_vec();
    for (row, x) in out.chunks_exact_mut(dim).enumerate() {
        let norm = x
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            return Err(invalid(
                "vectors",
                format!("row {row}"),
                "is zero and cannot be normalised for the cosine metric",
            ));
        }
        for v in x {
            *v = (f64::from(*v) / norm) as f32;
        }
    }
    Ok(Cow::Owned(out))
}

/// The metadata entries shared by both builders.
fn codec_metadata(builder: &str, codec: &IvfPqCodec, encoded: &Encoded) -> IndexMetadata {
    let mut meta = IndexMetadata::new();
    meta.builder = Some(builder.to_owned());
    meta.crate_version = Some(env!("CARGO_PKG_VERSION").to_owned());
    meta.extra
        .insert("params".into(), metadata_value(json!(encoded.parts.params)));
    meta.rotation = Some(
        if codec.rotation().is_identity() {
            "identity"
        } else {
            "learned"
        }
        .to_owned(),
    );
    meta.coarse_level = Some(codec.coarse().is_some());
    meta.distortion = Some(encoded.distortion);
    meta.relative_distortion = Some(encoded.relative_distortion);
    meta
}

/// A JSON value as a metadata value (every JSON value is one, numbers keeping their form).
pub(crate) fn metadata_value(value: Value) -> MetadataValue {
    serde_json::from_value(value).unwrap_or_default()
}

fn opq_json(opq: &OpqConfig) -> Value {
    json!({
        "n_rounds": opq.n_rounds,
        "iterations_per_round": opq.iterations_per_round,
        "max_train_points": opq.max_train_points,
        "init": match opq.init {
            OpqInit::Random => "random",
            OpqInit::Identity => "identity",
        },
        "objective": match opq.objective {
            OpqObjective::Vectors => "vectors",
            OpqObjective::IvfResiduals => "ivf_residuals",
        },
    })
}

fn kmeans_json(settings: &KMeansSettings) -> Value {
    let init = match settings.init {
        KMeansInit::RandomSample => "random_sample",
        KMeansInit::KMeansPlusPlus => "kmeans++",
        KMeansInit::Centroids(_) => "centroids",
        _ => "other",
    };
    json!({
        "max_iter": settings.max_iter,
        "tolerance": settings.tolerance,
        "init": init,
        "max_points_per_centroid": settings.max_points_per_centroid,
    })
}

/// Seconds since the Unix epoch (0 if the clock is set before it).
pub(crate) fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn invalid(name: &'static str, value: impl ToString, reason: &'static str) -> BuildError {
    SearchError::InvalidParameter {
        name,
        value: value.to_string(),
        reason,
    }
    .into()
}
