//! The faiss writer: a poeem index as a faiss `IndexIVFPQ` file (inside an `IndexRefineFlat`
//! when it carries `f32` / `f16` refinement data), streamed list by list.

use std::io::Write;
use std::path::Path;

use poeem_search::{Index, IndexView, Metric, PADDING_ID, RefineKind, SearchParams};

use crate::codes::{code_size, pack};
use crate::{FaissError, Progress};

const METRIC_INNER_PRODUCT: i32 = 0;
const METRIC_L2: i32 = 1;
/// Refined vectors converted per write.
const REFINE_ROWS: usize = 1024;
/// faiss writes this value into two unused header fields.
const HEADER_DUMMY: i64 = 1 << 20;

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportReport {
    /// Bytes of the faiss file.
    pub bytes: u64,
    /// Items written.
    pub n_items: usize,
    /// Lists written (empty ones included).
    pub n_lists: usize,
    /// Whether the IVF-PQ index sits behind an `IndexPreTransform` (rotation, padding or
    /// cosine).
    pub pre_transform: bool,
    /// What became of the index's refinement data; `None` when it has none.
    pub refine: Option<RefineExport>,
}

/// What an export did with an index's refinement data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefineExport {
    /// Written as the flat refine index of an `IndexRefineFlat` (`f16` rows converted to f32
    /// exactly), whose `k_factor` is [`REFINE_K_FACTOR`].
    Written(RefineKind),
    /// Left out, for the reason given.
    LeftOut(RefineKind, &'static str),
}

/// The `k_factor` of an exported `IndexRefineFlat`: poeem's default re-rank factor.
pub const REFINE_K_FACTOR: usize = SearchParams::DEFAULT_RERANK_FACTOR;

/// The slot of each id `0..n_items` when the index's ids are exactly those (faiss's
/// `IndexRefine` finds a candidate's refined vector at the position its id names); `None`
/// otherwise.
fn slots_by_dense_id(view: &IndexView<'_>) -> Option<Vec<u64>> {
    let n = view.params().n_items;
    let mut slots = vec![PADDING_ID; n];
    for (slot, &id) in view.slot_ids().iter().enumerate() {
        if id == PADDING_ID {
            continue;
        }
        let at = slots.get_mut(usize::try_from(id).ok()?)?;
        if *at != PADDING_ID {
            return None;
        }
        *at = slot as u64;
    }
    Some(slots)
}

/// What [`write_faiss`] does with `view`'s refinement data, and for `Written` the slot of
/// each id.
fn plan_refine(view: &IndexView<'_>) -> (Option<RefineExport>, Vec<u64>) {
    let Some(refine) = view.refine() else {
        return (None, Vec::new());
    };
    let kind = refine.kind();
    if kind == RefineKind::Pq8 {
        let why = "pq8 data refine poeem's reconstruction of an item, which no faiss index holds";
        return (Some(RefineExport::LeftOut(kind, why)), Vec::new());
    }
    match slots_by_dense_id(view) {
        Some(slots) => (Some(RefineExport::Written(kind)), slots),
        None => {
            let why = "faiss's IndexRefine looks refined vectors up by id, which needs the ids \
                       0..n-1, and this index has others";
            (Some(RefineExport::LeftOut(kind, why)), Vec::new())
        }
    }
}

/// Counts the bytes written through it.
struct Counted<'a, W> {
    out: &'a mut W,
    bytes: u64,
}

impl<W: Write> Counted<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    fn i32(&mut self, v: i32) -> std::io::Result<()> {
        self.put(&v.to_le_bytes())
    }

    fn i64(&mut self, v: i64) -> std::io::Result<()> {
        self.put(&v.to_le_bytes())
    }

    fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.put(&v.to_le_bytes())
    }

    fn f32s(&mut self, values: &[f32]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(values.len().min(1 << 16) * 4);
        for chunk in values.chunks(1 << 16) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
            self.put(&buf)?;
        }
        Ok(())
    }

    /// A `NormalizationTransform` (`VNrm`, L2 norm) of `d` values.
    fn normalization(&mut self, d: i32) -> std::io::Result<()> {
        self.put(b"VNrm")?;
        self.put(&2.0f32.to_le_bytes())?;
        self.i32(d)?;
        self.i32(d)?;
        self.put(&[1]) // is_trained
    }

    /// faiss's `write_index_header`.
    fn index_header(&mut self, d: i32, ntotal: i64, metric: i32) -> std::io::Result<()> {
        self.i32(d)?;
        self.i64(ntotal)?;
        self.i64(HEADER_DUMMY)?;
        self.i64(HEADER_DUMMY)?;
        self.put(&[1])?; // is_trained
        self.i32(metric)
    }
}

fn dim_i32(what: &'static str, d: usize) -> Result<i32, FaissError> {
    i32::try_from(d).map_err(|_| FaissError::invalid(what, d, "faiss stores dimensions as int32"))
}

/// Writes the index `view` as a faiss file to `out`, list by list, calling `progress` after
/// each list. Returns what was written.
///
/// The file is an `IndexIVFPQ` (`IwPQ`, residuals on, a flat coarse quantizer: `IxFI` for inner
/// product, `IxF2` for L2 and cosine), preceded, when the index has a rotation, zero padding
/// or the cosine metric, by an `IndexPreTransform` (`IxPT`) holding a normalisation (`VNrm`,
/// cosine) and one linear transform (`LTra`) from `dim` to `padded_dim`. `f32` / `f16`
/// refinement data of an index whose ids are `0..n-1` make it the base of an
/// `IndexRefineFlat` (`IxRF`, [`REFINE_K_FACTOR`]), inside one more `VNrm` for cosine; that
/// takes 8 bytes per item while writing (the slot of each id). See `docs/faiss-interop.md`.
///
/// # Errors
/// [`FaissError::Invalid`] for an id above `i64::MAX` (faiss ids are signed) or a dimension
/// above `i32::MAX`; [`FaissError::Io`] when writing fails.
pub fn write_faiss<W: Write>(
    view: &IndexView<'_>,
    out: &mut W,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExportReport, FaissError> {
    let p = *view.params();
    let io = |e| FaissError::io("(faiss output)", e);
    let mut w = Counted { out, bytes: 0 };
    let dim = dim_i32("dim", p.dim)?;
    let padded = dim_i32("padded_dim", p.padded_dim)?;
    let n_items = i64::try_from(p.n_items)
        .map_err(|_| FaissError::invalid("n_items", p.n_items, "too many items"))?;
    let (metric, quantizer) = match p.metric {
        Metric::InnerProduct => (METRIC_INNER_PRODUCT, b"IxFI"),
        Metric::L2 => (METRIC_L2, b"IxF2"),
        Metric::Cosine => (METRIC_INNER_PRODUCT, b"IxF2"),
    };
    let normalize = p.metric == Metric::Cosine;
    let linear = view.rotation().is_some() || p.dim != p.padded_dim;
    let pre_transform = normalize || linear;
    let (refine, slots_by_id) = plan_refine(view);
    let write_refine = matches!(refine, Some(RefineExport::Written(_)));
    if write_refine {
        // IndexRefineFlat(base, flat), inside a normalisation for cosine, so that the flat
        // index scores normalised queries as the base does.
        if normalize {
            w.put(b"IxPT").map_err(io)?;
            w.index_header(dim, n_items, metric).map_err(io)?;
            w.i32(1).map_err(io)?;
            w.normalization(dim).map_err(io)?;
        }
        w.put(b"IxRF").map_err(io)?;
        w.index_header(dim, n_items, metric).map_err(io)?;
    }
    if pre_transform {
        w.put(b"IxPT").map_err(io)?;
        w.index_header(dim, n_items, metric).map_err(io)?;
        w.i32(i32::from(normalize) + i32::from(linear))
            .map_err(io)?;
        if normalize {
            w.normalization(dim).map_err(io)?;
        }
        if linear {
            // A is padded_dim × dim with A[j][i] = R[i][j]: A x = [x, 0] R.
            w.put(b"LTra").map_err(io)?;
            w.put(&[0]).map_err(io)?; // have_bias
            w.u64((p.padded_dim * p.dim) as u64).map_err(io)?;
            let mut row = vec![0.0f32; p.dim];
            for j in 0..p.padded_dim {
                for (i, a) in row.iter_mut().enumerate() {
                    *a = match view.rotation() {
                        Some(r) => r[i * p.padded_dim + j],
                        None => f32::from(u8::from(i == j)),
                    };
                }
                w.f32s(&row).map_err(io)?;
            }
            w.u64(0).map_err(io)?; // b: empty
            w.i32(dim).map_err(io)?;
            w.i32(padded).map_err(io)?;
            w.put(&[1]).map_err(io)?;
        }
    }
    w.put(b"IwPQ").map_err(io)?;
    w.index_header(padded, n_items, metric).map_err(io)?;
    w.u64(p.n_lists as u64).map_err(io)?;
    w.u64(1).map_err(io)?; // nprobe
    w.put(quantizer).map_err(io)?;
    let quantizer_metric = if quantizer == b"IxFI" {
        METRIC_INNER_PRODUCT
    } else {
        METRIC_L2
    };
    w.index_header(padded, p.n_lists as i64, quantizer_metric)
        .map_err(io)?;
    // Flat codes: the length in units of 4 bytes, i.e. the number of floats.
    w.u64((p.n_lists * p.padded_dim) as u64).map_err(io)?;
    w.f32s(view.coarse_centroids()).map_err(io)?;
    w.put(&[0]).map_err(io)?; // direct map: none
    w.u64(0).map_err(io)?; // direct map array: empty
    w.put(&[1]).map_err(io)?; // by_residual
    let size = code_size(p.n_subspaces, p.n_bits);
    w.u64(size as u64).map_err(io)?;
    w.u64(p.padded_dim as u64).map_err(io)?;
    w.u64(p.n_subspaces as u64).map_err(io)?;
    w.u64(u64::from(p.n_bits)).map_err(io)?;
    w.u64(view.codebooks().len() as u64).map_err(io)?;
    w.f32s(view.codebooks()).map_err(io)?;
    // ArrayInvertedLists, with faiss's own choice of a full or a sparse size table.
    w.put(b"ilar").map_err(io)?;
    w.u64(p.n_lists as u64).map_err(io)?;
    w.u64(size as u64).map_err(io)?;
    let sizes = view.list_sizes();
    let non_empty = sizes.iter().filter(|&&s| s > 0).count();
    if non_empty > p.n_lists / 2 {
        w.put(b"full").map_err(io)?;
        w.u64(p.n_lists as u64).map_err(io)?;
        for &s in sizes {
            w.u64(s).map_err(io)?;
        }
    } else {
        w.put(b"sprs").map_err(io)?;
        w.u64(2 * non_empty as u64).map_err(io)?;
        for (j, &s) in sizes.iter().enumerate().filter(|(_, s)| **s > 0) {
            w.u64(j as u64).map_err(io)?;
            w.u64(s).map_err(io)?;
        }
    }
    let m_count = p.n_subspaces;
    let mut item = vec![0u32; m_count];
    let mut packed: Vec<u8> = Vec::new();
    let mut id_bytes: Vec<u8> = Vec::new();
    let mut items_done = 0;
    for j in 0..p.n_lists {
        let list = view.list(j);
        packed.clear();
        packed.resize(list.len() * size, 0);
        for (pos, dst) in packed
            .chunks_exact_mut(size.max(1))
            .enumerate()
            .take(list.len())
        {
            for (m, code) in item.iter_mut().enumerate() {
                *code = list.code(&p, pos, m);
            }
            pack(&item, p.n_bits, dst);
        }
        w.put(&packed).map_err(io)?;
        id_bytes.clear();
        for (pos, &id) in list.ids.iter().enumerate() {
            let id = i64::try_from(id).map_err(|_| {
                FaissError::invalid(
                    "id",
                    id,
                    format!("list {j}, item {pos}: faiss ids are signed 64-bit, at most i64::MAX"),
                )
            })?;
            id_bytes.extend_from_slice(&id.to_le_bytes());
        }
        w.put(&id_bytes).map_err(io)?;
        items_done += list.len();
        progress(Progress {
            lists_done: j + 1,
            n_lists: p.n_lists,
            items_done,
            n_items: p.n_items,
        });
    }
    if let (true, Some(data)) = (write_refine, view.refine()) {
        // The flat refine index: one row per id, in id order, then the k_factor.
        let flat = if metric == METRIC_INNER_PRODUCT {
            b"IxFI"
        } else {
            b"IxF2"
        };
        w.put(flat).map_err(io)?;
        w.index_header(dim, n_items, metric).map_err(io)?;
        w.u64((p.n_items * p.dim) as u64).map_err(io)?;
        let mut rows = vec![0.0f32; REFINE_ROWS * p.dim];
        for slots in slots_by_id.chunks(REFINE_ROWS) {
            for (&slot, row) in slots.iter().zip(rows.chunks_exact_mut(p.dim)) {
                data.decode(slot as usize, row);
            }
            w.f32s(&rows[..slots.len() * p.dim]).map_err(io)?;
        }
        w.put(&(REFINE_K_FACTOR as f32).to_le_bytes()).map_err(io)?;
    }
    Ok(ExportReport {
        bytes: w.bytes,
        n_items: p.n_items,
        n_lists: p.n_lists,
        pre_transform,
        refine,
    })
}

/// Encodes the index `view` as the bytes of a faiss file (see [`write_faiss`]).
///
/// # Errors
/// As [`write_faiss`].
pub fn encode_faiss(view: &IndexView<'_>) -> Result<Vec<u8>, FaissError> {
    let mut out = Vec::new();
    write_faiss(view, &mut out, &mut |_| {})?;
    Ok(out)
}

/// Exports the poeem index file `index` (memory-mapped, read list by list) as the faiss file
/// `out`, written atomically through a buffered writer.
///
/// # Errors
/// As [`write_faiss`], and when the index cannot be opened or the file cannot be written.
pub fn export_faiss(
    index: &Path,
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExportReport, FaissError> {
    let index = Index::open(index)?;
    let view = index.view();
    let mut failure = None;
    let mut report = None;
    let written = poeem_fs::write_atomically(out, |w| match write_faiss(&view, w, progress) {
        Ok(r) => {
            report = Some(r);
            Ok(())
        }
        Err(FaissError::Io { source, .. }) => Err(source),
        Err(e) => {
            failure = Some(e);
            Err(std::io::Error::other("the export failed"))
        }
    });
    match (written, failure) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(FaissError::io(e.path, e.source)),
        (Ok(()), None) => report.ok_or_else(|| {
            FaissError::io(out, std::io::Error::other("the export produced no report"))
        }),
    }
}
