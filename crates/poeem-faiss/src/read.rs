//! The faiss reader: parses an `IndexIVFPQ` file (optionally inside an `IndexPreTransform`,
//! optionally the base of an `IndexRefineFlat`, whose vectors become `f32` refinement data) into
//! a poeem [`IndexHead`], then hands its lists over one at a time.

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use poeem_search::refine::encode_float_refine;
use poeem_search::{
    IndexHead, IndexMetadata, IndexParams, IndexParts, ListBuffer, MetadataValue, Metric,
    RefineKind, padded_len, write_index_streaming,
};

use crate::codes::{code_size, unpack};
use crate::error::fourcc_name;
use crate::input::Input;
use crate::{FAISS_VERSION_CHECKED, FaissError, Progress};

/// faiss's `MetricType` values this reader knows.
const METRIC_INNER_PRODUCT: i32 = 0;
const METRIC_L2: i32 = 1;

/// Tolerance on `|AᵀA − I|` (largest entry) for a linear transform to count as orthonormal.
pub const ORTHONORMAL_TOLERANCE: f64 = 1e-3;

/// The largest codebook (in bytes) an index without residuals may widen to.
pub const MAX_WIDE_CODEBOOK_BYTES: u64 = 1 << 30;

/// What an imported faiss file held, beside the index itself.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FaissSummary {
    /// The four-character codes of the structures read, outermost first (`IxPT`, `VNrm`,
    /// `LTra`, `IwPQ`, `IxF2`, `ilar`, …).
    pub structure: Vec<String>,
    /// Whether faiss encoded residuals from the coarse centroids.
    pub by_residual: bool,
    /// faiss's bits per code; the poeem index has more when `by_residual` is off (see
    /// `docs/faiss-interop.md`).
    pub faiss_n_bits: u32,
    /// faiss's default number of probed lists, as stored.
    pub nprobe: u64,
    /// For an `IndexRefineFlat` (`IxRF`), its `k_factor`: its refine index (the full vectors)
    /// became the poeem index's `f32` refinement data.
    pub refine_k_factor: Option<f32>,
}

struct LinearTransform {
    d_in: usize,
    d_out: usize,
    /// `d_out × d_in`, row-major: `y = A x`.
    a: Vec<f32>,
}

enum Transform {
    Normalize,
    Linear(LinearTransform),
}

/// The fields of faiss's `write_index_header`.
struct IndexHeader {
    d: usize,
    ntotal: u64,
    metric: i32,
}

fn unsupported(
    what: &'static str,
    code: [u8; 4],
    offset: u64,
    supported: &'static str,
) -> FaissError {
    FaissError::Unsupported {
        what,
        found: fourcc_name(code),
        offset,
        supported,
    }
}

fn read_index_header<R: Read + Seek>(input: &mut Input<R>) -> Result<IndexHeader, FaissError> {
    let d = input.i32("index dimension d")?;
    let d = usize::try_from(d)
        .ok()
        .filter(|&d| d > 0)
        .ok_or_else(|| FaissError::invalid("d", d, "the dimension must be positive"))?;
    let ntotal = input.i64("ntotal")?;
    let ntotal = u64::try_from(ntotal)
        .map_err(|_| FaissError::invalid("ntotal", ntotal, "must not be negative"))?;
    input.skip("index header (unused fields)", 16)?;
    if !input.bool("is_trained")? {
        return Err(FaissError::invalid(
            "is_trained",
            0,
            "the index is not trained",
        ));
    }
    let metric = input.i32("metric_type")?;
    if metric != METRIC_INNER_PRODUCT && metric != METRIC_L2 {
        return Err(FaissError::invalid(
            "metric_type",
            metric,
            "supported: 0 (inner product), 1 (L2)",
        ));
    }
    Ok(IndexHeader { d, ntotal, metric })
}

fn read_dim<R: Read + Seek>(input: &mut Input<R>, what: &'static str) -> Result<usize, FaissError> {
    let d = input.i32(what)?;
    usize::try_from(d)
        .ok()
        .filter(|&d| d > 0)
        .ok_or_else(|| FaissError::invalid(what, d, "must be positive"))
}

fn read_transform<R: Read + Seek>(input: &mut Input<R>) -> Result<Transform, FaissError> {
    let at = input.pos();
    let code = input.fourcc("vector transform")?;
    match &code {
        b"LTra" | b"rrot" => {
            let have_bias = input.bool("LinearTransform.have_bias")?;
            let a = input.f32_vec("LinearTransform.A")?;
            let b = input.f32_vec("LinearTransform.b")?;
            let d_in = read_dim(input, "LinearTransform.d_in")?;
            let d_out = read_dim(input, "LinearTransform.d_out")?;
            input.bool("LinearTransform.is_trained")?;
            if d_in.checked_mul(d_out) != Some(a.len()) {
                return Err(FaissError::invalid(
                    "LinearTransform.A",
                    format!("{} values", a.len()),
                    format!("must hold d_out × d_in = {d_out} × {d_in} values"),
                ));
            }
            if have_bias && b.iter().any(|&x| x != 0.0) {
                return Err(FaissError::invalid(
                    "LinearTransform.have_bias",
                    1,
                    "a linear transform with a nonzero bias is not a rotation; poeem supports \
                     orthonormal transforms without bias",
                ));
            }
            Ok(Transform::Linear(LinearTransform { d_in, d_out, a }))
        }
        b"VNrm" => {
            let norm = input.f32("NormalizationTransform.norm")?;
            let d_in = read_dim(input, "NormalizationTransform.d_in")?;
            let d_out = read_dim(input, "NormalizationTransform.d_out")?;
            input.bool("NormalizationTransform.is_trained")?;
            if norm != 2.0 {
                return Err(FaissError::invalid(
                    "NormalizationTransform.norm",
                    norm,
                    "only L2 normalisation (norm 2) is supported",
                ));
            }
            if d_in != d_out {
                return Err(FaissError::invalid(
                    "NormalizationTransform.d_out",
                    d_out,
                    format!("must equal d_in = {d_in}"),
                ));
            }
            Ok(Transform::Normalize)
        }
        _ => Err(unsupported(
            "vector transform",
            code,
            at,
            "LTra (LinearTransform, as OPQ writes it), rrot (RandomRotationMatrix), VNrm \
             (NormalizationTransform)",
        )),
    }
}

/// Everything before the lists of an `IwPQ` index.
struct IvfPq {
    header: IndexHeader,
    nlist: usize,
    nprobe: u64,
    quantizer_metric: i32,
    centroids: Vec<f32>,
    by_residual: bool,
    code_size: usize,
    n_subspaces: usize,
    n_bits: u32,
    codebooks: Vec<f32>,
    sizes: Vec<u64>,
}

const SUPPORTED_INDEX: &str =
    "IwPQ (IndexIVFPQ), optionally inside IxPT (IndexPreTransform) and IxRF (IndexRefineFlat)";

fn read_ivfpq<R: Read + Seek>(
    input: &mut Input<R>,
    structure: &mut Vec<String>,
) -> Result<IvfPq, FaissError> {
    let header = read_index_header(input)?;
    let d = header.d;
    let nlist = input.u64("nlist")?;
    let nlist = usize::try_from(nlist)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| FaissError::invalid("nlist", nlist, "must be at least 1"))?;
    let nprobe = input.u64("nprobe")?;
    // The coarse quantizer.
    let at = input.pos();
    let code = input.fourcc("coarse quantizer")?;
    let quantizer_metric = match &code {
        b"IxFI" => METRIC_INNER_PRODUCT,
        b"IxF2" => METRIC_L2,
        _ => {
            return Err(unsupported(
                "coarse quantizer",
                code,
                at,
                "IxF2 (IndexFlatL2), IxFI (IndexFlatIP)",
            ));
        }
    };
    structure.push(String::from_utf8_lossy(&code).into_owned());
    let q = read_index_header(input)?;
    if q.d != d {
        return Err(FaissError::invalid(
            "coarse quantizer d",
            q.d,
            format!("must equal the IVF dimension {d}"),
        ));
    }
    if q.metric != quantizer_metric {
        return Err(FaissError::invalid(
            "coarse quantizer metric_type",
            q.metric,
            "disagrees with the flat index's four-character code",
        ));
    }
    if q.ntotal != nlist as u64 {
        return Err(FaissError::invalid(
            "coarse quantizer ntotal",
            q.ntotal,
            format!("must equal nlist = {nlist}"),
        ));
    }
    // faiss stores the flat codes' length in units of 4 bytes.
    let words = input.count("coarse centroids", 4)?;
    if Some(words) != nlist.checked_mul(d) {
        return Err(FaissError::invalid(
            "coarse centroids",
            format!("{words} values"),
            format!("must hold nlist × d = {nlist} × {d} values"),
        ));
    }
    let centroids = input.f32s("coarse centroids", words)?;
    // The direct map (id → list position) is not needed: skip it.
    let map_type = input.u8("direct map type")?;
    if map_type > 2 {
        return Err(FaissError::invalid(
            "direct map type",
            map_type,
            "must be 0 (none), 1 (array) or 2 (hash table)",
        ));
    }
    let n = input.count("direct map array", 8)?;
    input.skip("direct map array", n as u64 * 8)?;
    if map_type == 2 {
        let n = input.count("direct map hash table", 16)?;
        input.skip("direct map hash table", n as u64 * 16)?;
    }
    let by_residual = input.bool("by_residual")?;
    let code_size_field = input.u64("code_size")?;
    // The product quantizer.
    let pq_d = input.u64("pq.d")?;
    if pq_d != d as u64 {
        return Err(FaissError::invalid(
            "pq.d",
            pq_d,
            format!("must equal the IVF dimension {d}"),
        ));
    }
    let m = input.u64("pq.M")?;
    let n_subspaces = usize::try_from(m)
        .ok()
        .filter(|&m| m > 0 && d % m == 0)
        .ok_or_else(|| FaissError::invalid("pq.M", m, format!("must divide the dimension {d}")))?;
    let nbits = input.u64("pq.nbits")?;
    let n_bits = u32::try_from(nbits)
        .ok()
        .filter(|b| (1..=16).contains(b))
        .ok_or_else(|| FaissError::invalid("pq.nbits", nbits, "poeem supports 1 to 16 bits"))?;
    let values = input.count("pq.centroids", 4)?;
    if Some(values) != d.checked_mul(1 << n_bits) {
        return Err(FaissError::invalid(
            "pq.centroids",
            format!("{values} values"),
            format!("must hold 2^nbits × d = {} × {d} values", 1u64 << n_bits),
        ));
    }
    let codebooks = input.f32s("pq.centroids", values)?;
    let code_size = code_size(n_subspaces, n_bits);
    if code_size_field != code_size as u64 {
        return Err(FaissError::invalid(
            "code_size",
            code_size_field,
            format!("must be ⌈M · nbits / 8⌉ = {code_size}"),
        ));
    }
    // The inverted lists.
    let at = input.pos();
    let code = input.fourcc("inverted lists")?;
    if &code != b"ilar" {
        return Err(unsupported(
            "inverted lists",
            code,
            at,
            "ilar (ArrayInvertedLists stored in the index file)",
        ));
    }
    structure.push("ilar".to_owned());
    let il_nlist = input.u64("invlists.nlist")?;
    if il_nlist != nlist as u64 {
        return Err(FaissError::invalid(
            "invlists.nlist",
            il_nlist,
            format!("must equal nlist = {nlist}"),
        ));
    }
    let il_code_size = input.u64("invlists.code_size")?;
    if il_code_size != code_size as u64 {
        return Err(FaissError::invalid(
            "invlists.code_size",
            il_code_size,
            format!("must equal code_size = {code_size}"),
        ));
    }
    let at = input.pos();
    let list_type = input.fourcc("inverted-list sizes type")?;
    let mut sizes = vec![0u64; 0];
    match &list_type {
        b"full" => {
            let n = input.count("inverted-list sizes", 8)?;
            if n != nlist {
                return Err(FaissError::invalid(
                    "inverted-list sizes",
                    format!("{n} entries"),
                    format!("must hold nlist = {nlist} entries"),
                ));
            }
            sizes.reserve_exact(n);
            for _ in 0..n {
                sizes.push(input.u64("inverted-list size")?);
            }
        }
        b"sprs" => {
            let n = input.count("inverted-list sizes", 8)?;
            if n % 2 != 0 {
                return Err(FaissError::invalid(
                    "inverted-list sizes",
                    format!("{n} entries"),
                    "a sparse size table holds (list, size) pairs",
                ));
            }
            // nlist centroids of at least 4 bytes each were read, so this is bounded by the file.
            sizes = vec![0u64; nlist];
            for _ in 0..n / 2 {
                let list = input.u64("inverted-list number")?;
                let size = input.u64("inverted-list size")?;
                let slot = usize::try_from(list)
                    .ok()
                    .and_then(|l| sizes.get_mut(l))
                    .ok_or_else(|| {
                        FaissError::invalid(
                            "inverted-list number",
                            list,
                            format!("must be below nlist = {nlist}"),
                        )
                    })?;
                *slot = size;
            }
        }
        _ => {
            return Err(unsupported(
                "inverted-list sizes type",
                list_type,
                at,
                "full, sprs",
            ));
        }
    }
    Ok(IvfPq {
        header,
        nlist,
        nprobe,
        quantizer_metric,
        centroids,
        by_residual,
        code_size,
        n_subspaces,
        n_bits,
        codebooks,
        sizes,
    })
}

/// The rotation poeem stores for an orthonormal `A` (`d_out × d_in`, `d_out ≥ d_in`): the
/// `d_out × d_out` matrix whose first `d_in` rows are the columns of `A` (so that
/// `[x, 0] R = A x`), completed to an orthonormal basis. `None` when `A` is the identity
/// followed by zero rows (plain zero padding, which poeem applies without a rotation).
fn rotation_from(t: &LinearTransform) -> Result<Option<Vec<f32>>, FaissError> {
    let (d_in, d_out) = (t.d_in, t.d_out);
    let a = |row: usize, col: usize| f64::from(t.a[row * d_in + col]);
    let is_padding =
        (0..d_out).all(|r| (0..d_in).all(|c| a(r, c) == if r == c { 1.0 } else { 0.0 }));
    if is_padding {
        return Ok(None);
    }
    // AᵀA must be the identity: the columns of A are orthonormal.
    let mut worst = 0.0f64;
    for i in 0..d_in {
        for j in i..d_in {
            let dot: f64 = (0..d_out).map(|r| a(r, i) * a(r, j)).sum();
            let target = if i == j { 1.0 } else { 0.0 };
            worst = worst.max((dot - target).abs());
        }
    }
    if worst.is_nan() || worst > ORTHONORMAL_TOLERANCE {
        return Err(FaissError::invalid(
            "LinearTransform.A",
            format!("max |AᵀA − I| = {worst:.3e}"),
            format!(
                "the transform is not orthonormal (tolerance {ORTHONORMAL_TOLERANCE:.0e}); poeem \
                 supports rotations such as OPQ's"
            ),
        ));
    }
    // Rows of R: the columns of A, then the standard basis vectors orthogonalised against them.
    let mut rows: Vec<Vec<f64>> = (0..d_in)
        .map(|c| (0..d_out).map(|r| a(r, c)).collect())
        .collect();
    // Column k of `rest` is e_k minus its projection on the rows so far. Each new row is the
    // largest such column, orthogonalised once more against the rows and normalised; then every
    // column loses its component along it. O(d_out² · d_out) in all.
    let mut rest = vec![0.0f64; d_out * d_out]; // row-major: rest[i * d_out + k] = (column k)_i
    for k in 0..d_out {
        rest[k * d_out + k] = 1.0;
    }
    let remove = |rest: &mut [f64], u: &[f64]| {
        // rest -= u (uᵀ rest)
        let mut dots = vec![0.0f64; d_out];
        for (i, &ui) in u.iter().enumerate() {
            for (d, &x) in dots.iter_mut().zip(&rest[i * d_out..(i + 1) * d_out]) {
                *d += ui * x;
            }
        }
        for (i, &ui) in u.iter().enumerate() {
            for (x, &d) in rest[i * d_out..(i + 1) * d_out].iter_mut().zip(&dots) {
                *x -= ui * d;
            }
        }
    };
    for row in &rows {
        remove(&mut rest, row);
    }
    while rows.len() < d_out {
        let norm_of = |k: usize| (0..d_out).map(|i| rest[i * d_out + k].powi(2)).sum::<f64>();
        let norms: Vec<f64> = (0..d_out).map(norm_of).collect();
        let best = (0..d_out)
            .max_by(|&a, &b| norms[a].total_cmp(&norms[b]))
            .unwrap_or(0);
        let mut u: Vec<f64> = (0..d_out).map(|i| rest[i * d_out + best]).collect();
        for row in &rows {
            let dot: f64 = row.iter().zip(&u).map(|(x, y)| x * y).sum();
            u.iter_mut().zip(row).for_each(|(x, r)| *x -= dot * r);
        }
        let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm.is_nan() || norm <= 1e-6 {
            return Err(FaissError::invalid(
                "LinearTransform.A",
                "rank deficient",
                "its columns do not extend to an orthonormal basis",
            ));
        }
        u.iter_mut().for_each(|x| *x /= norm);
        remove(&mut rest, &u);
        rows.push(u);
    }
    Ok(Some(rows.into_iter().flatten().map(|x| x as f32).collect()))
}

/// Records `d`, the input dimension of an index nested in `outer` (`None` at the outermost),
/// which must equal it.
fn nest_dim(outer: &mut Option<usize>, what: &'static str, d: usize) -> Result<(), FaissError> {
    if outer.is_some_and(|o| o != d) {
        return Err(FaissError::invalid(
            what,
            d,
            "must equal the dimension of the index around it",
        ));
    }
    *outer = Some(d);
    Ok(())
}

/// Reads what follows the `list_bytes` of inverted lists, which must be exactly the refine
/// index of an `IndexRefineFlat` whose header is `outer` around an IVF-PQ index of input
/// dimension `dim` and metric `metric` holding `n_items`: a flat index (`IxF2` / `IxFI`) of
/// `ntotal × dim` floats, then the `k_factor`. Returns the vectors, row `i` for id `i`
/// (normalised for `cosine`, unless a row's norm is within 1e-6 of 1 already), and the
/// `k_factor`; leaves `input` where it was, at the first list.
fn read_refine_index<R: Read + Seek>(
    input: &mut Input<R>,
    list_bytes: u64,
    outer: &IndexHeader,
    (dim, n_items, metric, cosine): (usize, u64, i32, bool),
) -> Result<(Vec<f32>, f32), FaissError> {
    let lists_at = input.pos();
    let mismatch = |what: &'static str, got: u64, expected: u64| {
        (got != expected).then(|| FaissError::invalid(what, got, format!("must be {expected}")))
    };
    if let Some(e) = mismatch("IndexRefineFlat d", outer.d as u64, dim as u64)
        .or_else(|| mismatch("IndexRefineFlat ntotal", outer.ntotal, n_items))
        .or_else(|| {
            mismatch(
                "IndexRefineFlat metric_type",
                outer.metric as u64,
                metric as u64,
            )
        })
    {
        return Err(e);
    }
    input.skip("inverted lists", list_bytes)?;
    let at = input.pos();
    let code = input.fourcc("refine index")?;
    if &code != b"IxF2" && &code != b"IxFI" {
        return Err(unsupported(
            "refine index",
            code,
            at,
            "IxF2 or IxFI (IndexFlat: an IndexRefineFlat)",
        ));
    }
    let flat = read_index_header(input)?;
    let values = input.u64("refine index values")?;
    if let Some(e) = mismatch("refine index d", flat.d as u64, dim as u64)
        .or_else(|| mismatch("refine index ntotal", flat.ntotal, outer.ntotal))
        .or_else(|| {
            mismatch(
                "refine index values",
                values,
                outer.ntotal.saturating_mul(dim as u64),
            )
        })
    {
        return Err(e);
    }
    // The length was checked against the file's, so the rows fit in memory.
    let mut rows = input.f32s("refine index vectors", values as usize)?;
    let k_factor = input.f32("IndexRefine k_factor")?;
    if input.remaining() > 0 {
        return Err(FaissError::TrailingBytes {
            offset: input.pos(),
            count: input.remaining(),
        });
    }
    if cosine {
        for row in rows.chunks_exact_mut(dim) {
            let norm = row
                .iter()
                .map(|&v| f64::from(v).powi(2))
                .sum::<f64>()
                .sqrt();
            if norm > 0.0 && (norm - 1.0).abs() > 1e-6 {
                row.iter_mut()
                    .for_each(|v| *v = (f64::from(*v) / norm) as f32);
            }
        }
    }
    input.seek_to(lists_at)?;
    Ok((rows, k_factor))
}

/// A faiss IVF-PQ file opened for conversion: its small parts as a poeem [`IndexHead`], and
/// its lists, read one at a time in order by [`FaissReader::read_list`].
pub struct FaissReader<R> {
    input: Input<R>,
    head: IndexHead,
    summary: FaissSummary,
    faiss_sizes: Vec<u64>,
    code_size: usize,
    faiss_n_bits: u32,
    next_list: usize,
    packed: Vec<u8>,
    item_codes: Vec<u32>,
    /// An `IndexRefineFlat`'s vectors, row `i` for id `i` (`n_items × dim`); empty otherwise.
    refine_rows: Vec<f32>,
}

impl<R> std::fmt::Debug for FaissReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaissReader")
            .field("params", &self.head.params)
            .field("summary", &self.summary)
            .field("next_list", &self.next_list)
            .finish()
    }
}

impl<R: Read + Seek> FaissReader<R> {
    /// Parses everything before the lists of the faiss file `reader` (named `name` in errors)
    /// and checks that the lists' bytes are exactly what the file holds after them.
    ///
    /// # Errors
    /// [`FaissError::Unsupported`] naming the four-character code found for any other index,
    /// quantizer, transform or inverted-list type; [`FaissError::Invalid`] for impossible or
    /// unrepresentable fields (a non-orthonormal or dimension-reducing transform, mismatched
    /// metrics, …); [`FaissError::Truncated`] / [`FaissError::TrailingBytes`] when the file's
    /// length disagrees with its contents.
    pub fn new(reader: R, name: impl Into<PathBuf>) -> Result<Self, FaissError> {
        let mut input = Input::new(reader, name.into())?;
        let mut structure = Vec::new();
        let mut transforms = Vec::new();
        let mut outer_dim = None;
        // An IndexRefineFlat around the IVF-PQ index (its refine index follows the lists), and
        // whether an IndexPreTransform holding one normalisation wraps it, as poeem's cosine
        // export writes.
        let mut refine: Option<IndexHeader> = None;
        let mut refine_normalized = false;
        let (mut at, mut code) = (input.pos(), input.fourcc("index type")?);
        let ivf = loop {
            match &code {
                b"IxPT" => {
                    structure.push("IxPT".to_owned());
                    let header = read_index_header(&mut input)?;
                    let nt = input.i32("IndexPreTransform chain length")?;
                    if !(1..=2).contains(&nt) {
                        return Err(FaissError::invalid(
                            "IndexPreTransform chain length",
                            nt,
                            "poeem supports one linear transform and one normalisation",
                        ));
                    }
                    let mut chain = Vec::new();
                    for _ in 0..nt {
                        let t = read_transform(&mut input)?;
                        structure.push(match t {
                            Transform::Normalize => "VNrm".to_owned(),
                            Transform::Linear(_) => "LTra".to_owned(),
                        });
                        chain.push(t);
                    }
                    let inner_at = input.pos();
                    let inner = input.fourcc("index type")?;
                    if &inner == b"IxRF" && refine.is_none() && !refine_normalized {
                        if !matches!(chain[..], [Transform::Normalize]) {
                            return Err(FaissError::invalid(
                                "IndexPreTransform around IxRF",
                                nt,
                                "poeem reads one normalisation there (its cosine export)",
                            ));
                        }
                        refine_normalized = true;
                        outer_dim = Some(header.d);
                        (at, code) = (inner_at, inner);
                        continue;
                    }
                    if &inner != b"IwPQ" {
                        return Err(unsupported(
                            "index inside IxPT",
                            inner,
                            inner_at,
                            "IwPQ (IndexIVFPQ)",
                        ));
                    }
                    nest_dim(&mut outer_dim, "IndexPreTransform d", header.d)?;
                    transforms.extend(chain);
                    structure.push("IwPQ".to_owned());
                    break read_ivfpq(&mut input, &mut structure)?;
                }
                b"IxRF" if refine.is_none() => {
                    structure.push("IxRF".to_owned());
                    let header = read_index_header(&mut input)?;
                    nest_dim(&mut outer_dim, "IndexRefineFlat d", header.d)?;
                    refine = Some(header);
                    (at, code) = (input.pos(), input.fourcc("index type")?);
                }
                b"IwPQ" => {
                    structure.push("IwPQ".to_owned());
                    break read_ivfpq(&mut input, &mut structure)?;
                }
                b"IwPf" => {
                    return Err(unsupported(
                        "index",
                        code,
                        at,
                        "IwPQ (IndexIVFPQ), optionally inside IxPT; IVF-PQ fast-scan (IwPf) is \
                         not read (its codes are in faiss's own block layout): import the \
                         IndexIVFPQ it was made from, whose 4-bit codes come in as poeem's \
                         fast-scan layout",
                    ));
                }
                _ => return Err(unsupported("index", code, at, SUPPORTED_INDEX)),
            }
        };
        // A normalisation around the IxRF normalises the queries of the whole index.
        if refine_normalized && !transforms.iter().any(|t| matches!(t, Transform::Normalize)) {
            transforms.insert(0, Transform::Normalize);
        }
        Self::from_parts(input, structure, outer_dim, transforms, ivf, refine)
    }

    fn from_parts(
        mut input: Input<R>,
        structure: Vec<String>,
        outer_dim: Option<usize>,
        transforms: Vec<Transform>,
        ivf: IvfPq,
        refine: Option<IndexHeader>,
    ) -> Result<Self, FaissError> {
        let d = ivf.header.d;
        // The chain: at most one normalisation and one linear transform, dimensions chained.
        let mut normalize = false;
        let mut linear = None;
        let mut dim = outer_dim.unwrap_or(d);
        for t in &transforms {
            match t {
                Transform::Normalize if normalize => {
                    return Err(FaissError::invalid(
                        "IndexPreTransform chain",
                        "VNrm twice",
                        "one normalisation at most",
                    ));
                }
                Transform::Normalize => normalize = true,
                Transform::Linear(_) if linear.is_some() => {
                    return Err(FaissError::invalid(
                        "IndexPreTransform chain",
                        "two linear transforms",
                        "poeem supports one linear transform",
                    ));
                }
                Transform::Linear(l) => {
                    if l.d_in != dim {
                        return Err(FaissError::invalid(
                            "LinearTransform.d_in",
                            l.d_in,
                            format!("must equal the input dimension {dim}"),
                        ));
                    }
                    if l.d_out < l.d_in {
                        return Err(FaissError::invalid(
                            "LinearTransform.d_out",
                            l.d_out,
                            format!(
                                "reduces the dimension from {}; poeem supports rotations that \
                                 keep or zero-pad it",
                                l.d_in
                            ),
                        ));
                    }
                    // Bounds the poeem rotation (d_out²) by a multiple of A's size in the file.
                    if l.d_out > 64 * l.d_in + 1024 {
                        return Err(FaissError::invalid(
                            "LinearTransform.d_out",
                            l.d_out,
                            format!("pads dimension {} too far to be a rotation", l.d_in),
                        ));
                    }
                    dim = l.d_out;
                    linear = Some(l);
                }
            }
        }
        if dim != d {
            return Err(FaissError::invalid(
                "IndexIVFPQ d",
                d,
                format!("must equal the transforms' output dimension {dim}"),
            ));
        }
        let input_dim = linear.map_or(d, |l| l.d_in);
        if outer_dim.is_some_and(|o| o != input_dim) {
            return Err(FaissError::invalid(
                "IndexPreTransform d",
                outer_dim.unwrap_or(0),
                format!("must equal the first transform's input dimension {input_dim}"),
            ));
        }
        let m = ivf.n_subspaces;
        let padded_dim = input_dim.div_ceil(m) * m;
        if padded_dim != d {
            return Err(FaissError::invalid(
                "LinearTransform.d_out",
                d,
                format!(
                    "poeem pads dimension {input_dim} only to the next multiple of M = {m}, \
                     {padded_dim}"
                ),
            ));
        }
        let metric = match (normalize, ivf.header.metric, ivf.quantizer_metric) {
            (false, METRIC_INNER_PRODUCT, METRIC_INNER_PRODUCT) => Metric::InnerProduct,
            (false, METRIC_L2, METRIC_L2) => Metric::L2,
            (true, METRIC_INNER_PRODUCT, METRIC_L2) => Metric::Cosine,
            (true, METRIC_INNER_PRODUCT, _) => {
                return Err(FaissError::invalid(
                    "coarse quantizer",
                    "IxFI",
                    "a normalised inner-product index maps to poeem's cosine metric, which probes \
                     lists by L2: its coarse quantizer must be IxF2",
                ));
            }
            (true, _, _) => {
                return Err(FaissError::invalid(
                    "metric_type",
                    ivf.header.metric,
                    "a normalisation transform is supported in front of an inner-product index \
                     only (poeem's cosine metric)",
                ));
            }
            (false, metric, quantizer) => {
                return Err(FaissError::invalid(
                    "coarse quantizer metric_type",
                    quantizer,
                    format!(
                        "differs from the index's metric_type {metric}; poeem probes lists by \
                         the index's own metric"
                    ),
                ));
            }
        };
        let rotation = linear.map(rotation_from).transpose()?.flatten();
        let item_total = ivf
            .sizes
            .iter()
            .try_fold(0u64, |acc, &s| acc.checked_add(s));
        if item_total != Some(ivf.header.ntotal) {
            return Err(FaissError::invalid(
                "ntotal",
                ivf.header.ntotal,
                "differs from the sum of the inverted-list sizes",
            ));
        }
        let n_items = usize::try_from(ivf.header.ntotal).map_err(|_| {
            FaissError::invalid("ntotal", ivf.header.ntotal, "does not fit in memory")
        })?;
        // The lists' bytes must be exactly what is left of the file.
        let list_bytes = ivf.header.ntotal.saturating_mul(ivf.code_size as u64 + 8);
        if list_bytes > input.remaining() {
            return Err(FaissError::Truncated {
                what: "inverted lists",
                offset: input.pos(),
                needed: list_bytes,
                available: input.remaining(),
            });
        }
        let mut refine_rows = Vec::new();
        let mut refine_k_factor = None;
        match &refine {
            Some(outer) => {
                let cosine = metric == Metric::Cosine;
                let base = (input_dim, ivf.header.ntotal, ivf.header.metric, cosine);
                let (rows, k_factor) = read_refine_index(&mut input, list_bytes, outer, base)?;
                (refine_rows, refine_k_factor) = (rows, Some(k_factor));
            }
            None if list_bytes < input.remaining() => {
                return Err(FaissError::TrailingBytes {
                    offset: input.pos() + list_bytes,
                    count: input.remaining() - list_bytes,
                });
            }
            None => {}
        }
        // by_residual off: widen the codes by the list number (see docs/faiss-interop.md).
        let (n_bits, codebooks) = if ivf.by_residual {
            (ivf.n_bits, ivf.codebooks)
        } else {
            let extra = usize::BITS - (ivf.nlist - 1).leading_zeros();
            let n_bits = ivf.n_bits + extra;
            if n_bits > 16 {
                return Err(FaissError::invalid(
                    "by_residual",
                    0,
                    format!(
                        "an index without residuals converts exactly with codes widened to \
                         nbits + ⌈log2 nlist⌉ = {} + {extra} bits, above poeem's 16",
                        ivf.n_bits
                    ),
                ));
            }
            let bytes = (d as u64) << n_bits << 2;
            if bytes > MAX_WIDE_CODEBOOK_BYTES {
                return Err(FaissError::invalid(
                    "by_residual",
                    0,
                    format!(
                        "widening the codes of an index without residuals needs {bytes} bytes of \
                         codebooks, above the limit of {MAX_WIDE_CODEBOOK_BYTES}"
                    ),
                ));
            }
            (n_bits, widen_codebooks(&ivf, d, n_bits))
        };
        let params = IndexParams {
            dim: input_dim,
            padded_dim: d,
            n_lists: ivf.nlist,
            n_subspaces: m,
            n_bits,
            metric,
            n_items,
            // 4-bit codes take poeem's fast-scan layout, as `poeem build --n-bits 4` does.
            code_layout: if n_bits == 4 {
                poeem_search::CodeLayout::FastScan4
            } else {
                poeem_search::CodeLayout::Transposed
            },
        };
        let summary = FaissSummary {
            structure,
            by_residual: ivf.by_residual,
            faiss_n_bits: ivf.n_bits,
            nprobe: ivf.nprobe,
            refine_k_factor,
        };
        let mut metadata = IndexMetadata::new();
        for (key, value) in [
            ("source", MetadataValue::from("faiss")),
            ("faiss_version_checked", FAISS_VERSION_CHECKED.into()),
            ("faiss_structure", summary.structure.clone().into()),
            ("by_residual", ivf.by_residual.into()),
            ("faiss_n_bits", ivf.n_bits.into()),
            ("faiss_nprobe", ivf.nprobe.into()),
        ] {
            metadata.extra.insert(key.to_owned(), value);
        }
        if let Some(k) = refine_k_factor.filter(|k| k.is_finite()) {
            metadata
                .extra
                .insert("faiss_k_factor".to_owned(), f64::from(k).into());
        }
        let head = IndexHead {
            params,
            rotation,
            coarse_centroids: ivf.centroids,
            codebooks,
            list_sizes: ivf.sizes.clone(),
            metadata,
            refine: refine_k_factor.map(|_| RefineKind::F32),
        };
        Ok(Self {
            input,
            head,
            summary,
            faiss_sizes: ivf.sizes,
            code_size: ivf.code_size,
            faiss_n_bits: ivf.n_bits,
            next_list: 0,
            packed: Vec::new(),
            item_codes: Vec::new(),
            refine_rows,
        })
    }

    /// The poeem index's small parts.
    pub fn head(&self) -> &IndexHead {
        &self.head
    }

    /// What the faiss file held.
    pub fn summary(&self) -> &FaissSummary {
        &self.summary
    }

    /// Reads the next list (lists come in order `0..n_lists`) into `out`: its ids and its
    /// codes, `M` per item, widened when faiss did not encode residuals.
    ///
    /// # Errors
    /// When every list was read already, the file cannot be read, or an id is negative
    /// (faiss's −1 marks a missing result; poeem ids are unsigned).
    pub fn read_list(&mut self, out: &mut ListBuffer) -> Result<usize, FaissError> {
        let list = self.next_list;
        let &size = self
            .faiss_sizes
            .get(list)
            .ok_or_else(|| FaissError::invalid("list", list, "every list was read already"))?;
        self.next_list += 1;
        out.clear();
        // The sizes were checked against the file's length, so these fit in memory.
        let n = size as usize;
        let m = self.head.params.n_subspaces;
        self.packed.resize(n * self.code_size, 0);
        self.input.fill("inverted-list codes", &mut self.packed)?;
        self.item_codes.resize(m, 0);
        let shift = if self.summary.by_residual {
            None
        } else {
            Some((list as u32) << self.faiss_n_bits)
        };
        for item in self.packed.chunks_exact(self.code_size.max(1)).take(n) {
            unpack(item, self.faiss_n_bits, &mut self.item_codes);
            match shift {
                None => out.codes.extend_from_slice(&self.item_codes),
                Some(s) => out.codes.extend(self.item_codes.iter().map(|&c| c | s)),
            }
        }
        out.ids.reserve(n);
        for pos in 0..n {
            let id = self.input.i64("inverted-list id")?;
            let id = u64::try_from(id).map_err(|_| {
                FaissError::invalid(
                    "id",
                    id,
                    format!("list {list}, item {pos}: poeem ids are non-negative"),
                )
            })?;
            out.ids.push(id);
        }
        if self.head.refine.is_some() {
            let dim = self.head.params.dim;
            for (pos, &id) in out.ids.iter().enumerate() {
                let row = usize::try_from(id)
                    .ok()
                    .and_then(|i| self.refine_rows.get(i * dim..(i + 1) * dim))
                    .ok_or_else(|| {
                        FaissError::invalid(
                            "id",
                            id,
                            format!(
                                "list {list}, item {pos}: an IndexRefineFlat finds an item's \
                                 vector at the row its id names, and it has no such row"
                            ),
                        )
                    })?;
                out.refine.extend_from_slice(row);
            }
        }
        Ok(list)
    }
}

/// Codebooks for an index without residuals: codeword `(j << nbits) | k` of subspace `m` is
/// faiss's codeword `k` minus list `j`'s centroid on that subspace, so that poeem's
/// reconstruction `centroid_j + codeword` is faiss's codeword `k`.
fn widen_codebooks(ivf: &IvfPq, d: usize, n_bits: u32) -> Vec<f32> {
    let (m_count, ksub) = (ivf.n_subspaces, 1usize << ivf.n_bits);
    let sub = d / m_count;
    let wide = 1usize << n_bits;
    let mut out = vec![0.0f32; wide * d];
    for m in 0..m_count {
        for code in 0..wide {
            let (j, k) = (code >> ivf.n_bits, code & (ksub - 1));
            let word = &ivf.codebooks[(m * ksub + k) * sub..][..sub];
            let dst = &mut out[(m * wide + code) * sub..][..sub];
            match ivf.centroids.get(j * d..(j + 1) * d) {
                Some(c) => {
                    for ((o, &w), &c) in dst.iter_mut().zip(word).zip(&c[m * sub..]) {
                        *o = w - c;
                    }
                }
                None => dst.copy_from_slice(word),
            }
        }
    }
    out
}

/// Converts the faiss file `input` into the poeem index file `out`, list by list (memory:
/// one list plus the small parts, and an `IndexRefineFlat`'s vectors), calling `progress` after
/// each list.
///
/// # Errors
/// As [`FaissReader::new`] and [`FaissReader::read_list`], and when writing fails.
pub fn import_faiss(
    input: &Path,
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<FaissSummary, FaissError> {
    let file = File::open(input).map_err(|e| FaissError::io(input, e))?;
    let mut reader = FaissReader::new(BufReader::with_capacity(1 << 20, file), input)?;
    let head = reader.head().clone();
    let n_lists = head.params.n_lists;
    let n_items = head.params.n_items;
    let mut items_done = 0usize;
    write_index_streaming(out, &head, |j, buf| {
        reader.read_list(buf)?;
        items_done += buf.ids.len();
        progress(Progress {
            lists_done: j + 1,
            n_lists,
            items_done,
            n_items,
        });
        Ok::<(), FaissError>(())
    })?;
    Ok(reader.summary().clone())
}

/// Parses a whole faiss file held in memory into poeem index parts (for tests, fuzzing and
/// small files).
///
/// # Errors
/// As [`FaissReader::new`] and [`FaissReader::read_list`].
pub fn parse_faiss(bytes: &[u8]) -> Result<(IndexParts, FaissSummary), FaissError> {
    let mut reader = FaissReader::new(Cursor::new(bytes), "(in-memory faiss file)")?;
    let head = reader.head().clone();
    let p = head.params;
    let mut lists = Vec::new();
    let mut codes = Vec::new();
    let mut ids = Vec::new();
    // Refinement vectors in slot order: each list's, then zeros for its padding slots.
    let mut refine = Vec::new();
    let mut buf = ListBuffer::default();
    for j in 0..p.n_lists {
        reader.read_list(&mut buf)?;
        lists.extend(std::iter::repeat_n(j as u32, buf.ids.len()));
        codes.extend_from_slice(&buf.codes);
        ids.extend_from_slice(&buf.ids);
        if head.refine.is_some() {
            refine.extend_from_slice(&buf.refine);
            let padding = padded_len(buf.ids.len()) - buf.ids.len();
            refine.resize(refine.len() + padding * p.dim, 0.0);
        }
    }
    let mut parts = IndexParts::from_item_codes(
        p,
        head.rotation,
        head.coarse_centroids,
        head.codebooks,
        &lists,
        &codes,
        &ids,
        head.metadata,
    )?;
    if let Some(kind) = head.refine {
        parts.refine = Some(encode_float_refine(kind, p.dim, &refine));
    }
    Ok((parts, reader.summary().clone()))
}
