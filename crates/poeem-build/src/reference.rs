//! Index files of the reference implementation (the authors' TensorFlow Poeem): import, and a
//! writer for tests and comparison files.
//!
//! The format is raw little-endian binary with no magic, version or padding:
//!
//! | field | type | count |
//! |---|---|---|
//! | use_residual | i8 | 1 |
//! | n_items, d, J, K, D | i64 | 5 |
//! | codebooks | f32 | D × K × (d/D), subspace-major |
//! | external item ids | i64 | n_items |
//! | item norms | f32 | n_items (`‖τ(x)‖`; 0 marks a deleted item) |
//! | codes | u8 if K ≤ 256, else u16 | n_items × D |
//! | coarse centroids | f32 | J × d |
//! | coarse assignments | u32 | n_items |
//!
//! The file stores no rotation and no metric: the reference's caller passes `q R` as the query
//! and names the metric at search time.

use std::path::Path;

use poeem_search::{IndexMetadata, IndexParams, IndexParts, IndexView, Metric, SearchError};

use crate::BuildError;
use crate::posthoc::{metadata_value, unix_seconds};

/// Bytes of the header: `use_residual` and five `i64`.
const HEADER_LEN: usize = 1 + 5 * 8;

/// Most codewords a reference file can hold (its codes are at most 16 bits wide).
const MAX_CODEWORDS: usize = 1 << 16;

/// The contents of a reference index file, field by field, as stored.
///
/// `n_items` is `ids.len()`; the other per-item fields must have matching lengths.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceFile {
    /// 1 when the codes quantize residuals from the coarse centroids, 0 when they quantize the
    /// vectors themselves.
    pub use_residual: i8,
    /// Dimension d (of the rotated space).
    pub dim: usize,
    /// Coarse lists J (0: no coarse level).
    pub n_lists: usize,
    /// Codewords per subspace K (need not be a power of two).
    pub n_codewords: usize,
    /// Subspaces D, a divisor of d.
    pub n_subspaces: usize,
    /// `D × K × d/D` codewords, subspace-major.
    pub codebooks: Vec<f32>,
    /// External item ids.
    pub ids: Vec<i64>,
    /// Item norms `‖τ(x)‖`; 0 marks a deleted item.
    pub norms: Vec<f32>,
    /// `n_items × D` codes (stored as bytes when K ≤ 256).
    pub codes: Vec<u16>,
    /// `J × d` coarse centroids.
    pub coarse_centroids: Vec<f32>,
    /// The coarse list of each item.
    pub assignments: Vec<u32>,
}

/// An imported reference index.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceImport {
    /// The index.
    pub parts: IndexParts,
    /// Items in the file, deleted ones included.
    pub n_read: usize,
    /// Items dropped because their norm is 0 (the reference's mark of a deleted item).
    pub n_dropped_zero_norm: usize,
}

/// Reads and imports a reference index file; see [`parse_reference`].
///
/// The metadata also records the file's name.
///
/// # Errors
/// [`SearchError::Io`] when the file cannot be read; otherwise as [`parse_reference`].
pub fn import_reference(path: &Path, metric: Metric) -> Result<ReferenceImport, BuildError> {
    let bytes = poeem_fs::read_input(path).map_err(|e| SearchError::io(path, e))?;
    let file = ReferenceFile::from_bytes(&bytes)?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    file.import(metric, name)
}

/// Imports the bytes of a reference index file as an index serving `metric`.
///
/// External ids, codes, coarse assignments (list = assignment) and centroids are kept; items of
/// norm 0 are dropped, and their ids, codes and assignments are not checked, since they are not
/// imported. The rotation is the identity (the file has none), so queries must already be in the
/// rotated space, as the reference expects. K codewords that are not a power of two take
/// `n_bits = ⌈log₂ K⌉` (at least 1) with zero codewords as padding; J = 0 becomes one list at the
/// origin, whose items must have assignment 0. With [`Metric::Cosine`] the items are taken to be
/// unit vectors (the stored norms are not used), as when the model normalises its item embeddings.
///
/// # Errors
/// [`BuildError::BadReferenceFile`] naming the field when a header value is out of range, the
/// file is shorter or longer than its header implies, `use_residual` is not 1, an imported item
/// has a negative id, an assignment not below J, a code not below K or a negative or non-finite
/// norm, or a codeword or centroid is not finite.
pub fn parse_reference(bytes: &[u8], metric: Metric) -> Result<ReferenceImport, BuildError> {
    ReferenceFile::from_bytes(bytes)?.import(metric, None)
}

/// Writes `file` in the reference format (for tests, fixtures and comparison files).
///
/// Only the lengths are checked, not the values, so that tests can produce files with bad
/// values (a code not below K, a negative id, `use_residual` of 0).
///
/// # Errors
/// [`SearchError::DimensionMismatch`] when a field's length disagrees with the others;
/// [`SearchError::InvalidParameter`] when D is 0 or does not divide d, K exceeds 65,536, or a
/// code does not fit its stored width.
pub fn encode_reference(file: &ReferenceFile) -> Result<Vec<u8>, BuildError> {
    let f = file;
    if f.n_subspaces == 0 || !f.dim.is_multiple_of(f.n_subspaces) {
        return Err(SearchError::InvalidParameter {
            name: "n_subspaces",
            value: f.n_subspaces.to_string(),
            reason: "must be a divisor of dim",
        }
        .into());
    }
    if f.n_codewords > MAX_CODEWORDS {
        return Err(SearchError::InvalidParameter {
            name: "n_codewords",
            value: f.n_codewords.to_string(),
            reason: "the reference format stores at most 65536 codewords (16-bit codes)",
        }
        .into());
    }
    let n = f.ids.len();
    let expect = |what: &'static str, expected: usize, got: usize| {
        if expected == got {
            Ok(())
        } else {
            Err(SearchError::DimensionMismatch {
                what,
                expected,
                got,
            })
        }
    };
    let product = |a: usize, b: usize| {
        a.checked_mul(b).ok_or(SearchError::Overflow {
            what: "reference field length",
        })
    };
    expect(
        "codebooks (D × K × d/D)",
        product(f.n_codewords, f.dim)?,
        f.codebooks.len(),
    )?;
    expect("norms (one per id)", n, f.norms.len())?;
    expect(
        "codes (n_items × D)",
        product(n, f.n_subspaces)?,
        f.codes.len(),
    )?;
    expect(
        "coarse centroids (J × d)",
        product(f.n_lists, f.dim)?,
        f.coarse_centroids.len(),
    )?;
    expect("assignments (one per id)", n, f.assignments.len())?;
    let narrow = f.n_codewords <= 256;
    if narrow && let Some(&code) = f.codes.iter().find(|&&c| c > 255) {
        return Err(SearchError::InvalidParameter {
            name: "codes",
            value: code.to_string(),
            reason: "does not fit the one-byte codes of a file with K ≤ 256",
        }
        .into());
    }

    let width = if narrow { 1 } else { 2 };
    let capacity = [
        4 * f.codebooks.len(),
        16 * n,
        width * f.codes.len(),
        4 * f.coarse_centroids.len(),
    ]
    .into_iter()
    .fold(HEADER_LEN, usize::saturating_add);
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(&f.use_residual.to_le_bytes());
    for (name, value) in [
        ("n_items", n),
        ("dim", f.dim),
        ("n_lists", f.n_lists),
        ("n_codewords", f.n_codewords),
        ("n_subspaces", f.n_subspaces),
    ] {
        let value = i64::try_from(value).map_err(|_| SearchError::InvalidParameter {
            name,
            value: value.to_string(),
            reason: "exceeds i64::MAX",
        })?;
        out.extend_from_slice(&value.to_le_bytes());
    }
    f.codebooks
        .iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    f.ids
        .iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    f.norms
        .iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    for &code in &f.codes {
        out.extend_from_slice(&code.to_le_bytes()[..width]);
    }
    f.coarse_centroids
        .iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    f.assignments
        .iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    Ok(out)
}

impl ReferenceFile {
    /// Reads the fields of a reference file, checking the header's ranges and that the file is
    /// exactly as long as the header implies (no value beyond the header is checked here).
    ///
    /// # Errors
    /// [`BuildError::NotAReferenceFile`] for an empty file, a poeem index file or a first byte
    /// (`use_residual`) other than 0 or 1; [`BuildError::BadReferenceFile`] naming the field: a
    /// negative count, d, K or D of 0, K above 65,536, D not dividing d, a size that overflows,
    /// a file that ends inside a field, or trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BuildError> {
        let not_reference = |reason: String| Err(BuildError::NotAReferenceFile { reason });
        if bytes.starts_with(&poeem_search::format::MAGIC) {
            return not_reference("it is a poeem index file already (open it directly)".into());
        }
        let mut reader = Reader { bytes, at: 0 };
        let Some(&first) = bytes.first() else {
            return not_reference("the file is empty".into());
        };
        let use_residual = i8::from_le_bytes([first]);
        if !matches!(use_residual, 0 | 1) {
            return not_reference(format!(
                "its first byte is {first:#04x}, where a reference file stores its use_residual \
                 flag, 0 or 1"
            ));
        }
        reader.take("use_residual", 1)?;
        let n_items = reader.header_count("n_items", 0)?;
        let dim = reader.header_count("d", 1)?;
        let n_lists = reader.header_count("J", 0)?;
        let n_codewords = reader.header_count("K", 1)?;
        let n_subspaces = reader.header_count("D", 1)?;
        if n_codewords > MAX_CODEWORDS {
            return Err(bad(
                "K",
                format!(
                    "{n_codewords} codewords do not fit 16-bit codes (at most {MAX_CODEWORDS})"
                ),
            ));
        }
        if !dim.is_multiple_of(n_subspaces) {
            return Err(bad("D", format!("{n_subspaces} does not divide d = {dim}")));
        }
        let code_width = if n_codewords <= 256 { 1 } else { 2 };

        // Every section's length, overflow-checked, and the file's exact length before any read.
        let sections: [(&'static str, Option<usize>, usize); 6] = [
            ("codebooks", n_codewords.checked_mul(dim), 4),
            ("item ids", Some(n_items), 8),
            ("item norms", Some(n_items), 4),
            ("codes", n_items.checked_mul(n_subspaces), code_width),
            ("coarse centroids", n_lists.checked_mul(dim), 4),
            ("coarse assignments", Some(n_items), 4),
        ];
        let mut lens = [0usize; 6];
        let mut end = HEADER_LEN;
        for (len, &(field, count, width)) in lens.iter_mut().zip(&sections) {
            let overflow = || bad(field, "its size overflows (absurd header values)".into());
            *len = count
                .and_then(|c| c.checked_mul(width))
                .ok_or_else(overflow)?;
            end = end.checked_add(*len).ok_or_else(overflow)?;
            if end > bytes.len() {
                return Err(bad(
                    field,
                    format!(
                        "the file ends inside this field: the header implies at least {end} \
                         bytes up to its end, the file has {}",
                        bytes.len()
                    ),
                ));
            }
        }
        if end != bytes.len() {
            return Err(bad(
                "end of file",
                format!(
                    "{} trailing bytes after the coarse assignments (the header implies {end} \
                     bytes)",
                    bytes.len() - end
                ),
            ));
        }

        let f32s = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let mut section = |i: usize| reader.take(sections[i].0, lens[i]);
        let codebooks = f32s(section(0)?);
        let ids = section(1)?
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let norms = f32s(section(2)?);
        let code_bytes = section(3)?;
        let codes = if code_width == 1 {
            code_bytes.iter().map(|&c| u16::from(c)).collect()
        } else {
            code_bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect()
        };
        let coarse_centroids = f32s(section(4)?);
        let assignments = section(5)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Self {
            use_residual,
            dim,
            n_lists,
            n_codewords,
            n_subspaces,
            codebooks,
            ids,
            norms,
            codes,
            coarse_centroids,
            assignments,
        })
    }

    /// The contents of a reference file holding `view`'s index, to compare this crate's search
    /// with the reference's on the same index.
    ///
    /// The file's d is the padded dimension; it stores no rotation, so queries given to the
    /// reference must be zero-padded and rotated (`q R`) first. Norms are those of the
    /// reconstructions, as the reference writes them; an item whose reconstruction is exactly
    /// zero would therefore read as deleted. Items are written list by list.
    ///
    /// # Errors
    /// [`SearchError::InvalidParameter`] when an id exceeds `i64::MAX`, the largest the format
    /// stores.
    pub fn from_view(view: &IndexView<'_>) -> Result<Self, BuildError> {
        let p = view.params();
        let mut ids = Vec::with_capacity(p.n_items);
        let mut norms = Vec::with_capacity(p.n_items);
        let mut codes = Vec::with_capacity(p.n_items * p.n_subspaces);
        let mut assignments = Vec::with_capacity(p.n_items);
        let mut z = vec![0.0f32; p.padded_dim];
        for list in 0..p.n_lists {
            for (pos, &id) in view.list(list).ids.iter().enumerate() {
                ids.push(
                    i64::try_from(id).map_err(|_| SearchError::InvalidParameter {
                        name: "ids",
                        value: id.to_string(),
                        reason: "exceeds i64::MAX, the largest id the reference format stores",
                    })?,
                );
                // Codes are at most 16 bits wide, so the conversion is exact.
                codes.extend((0..p.n_subspaces).map(|m| view.code(list, pos, m) as u16));
                view.reconstruct_rotated(list, pos, &mut z);
                let norm = z.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
                norms.push(norm.sqrt() as f32);
                assignments.push(list as u32);
            }
        }
        Ok(Self {
            use_residual: 1,
            dim: p.padded_dim,
            n_lists: p.n_lists,
            n_codewords: p.n_codewords(),
            n_subspaces: p.n_subspaces,
            codebooks: view.codebooks().to_vec(),
            ids,
            norms,
            codes,
            coarse_centroids: view.coarse_centroids().to_vec(),
            assignments,
        })
    }

    /// Checks the values and builds the index (see [`parse_reference`]); `source` is the file
    /// name recorded in the metadata.
    fn import(
        &self,
        metric: Metric,
        source: Option<String>,
    ) -> Result<ReferenceImport, BuildError> {
        if self.use_residual != 1 {
            return Err(bad(
                "use_residual",
                "0: the codes quantize the vectors themselves rather than their residuals from \
                 the coarse centroids, while an index here reconstructs an item as its list's \
                 centroid plus codewords; export the index with use_residual = 1, or build one \
                 from the item embeddings (`poeem build`)"
                    .into(),
            ));
        }
        let (dim, k, m_count) = (self.dim, self.n_codewords, self.n_subspaces);
        let sub = dim / m_count;
        if let Some(at) = self.codebooks.iter().position(|v| !v.is_finite()) {
            return Err(bad(
                "codebooks",
                format!(
                    "subspace {}, codeword {}, component {} is not finite",
                    at / (k * sub),
                    at / sub % k,
                    at % sub
                ),
            ));
        }
        if let Some(at) = self.coarse_centroids.iter().position(|v| !v.is_finite()) {
            return Err(bad(
                "coarse centroids",
                format!("list {}, component {} is not finite", at / dim, at % dim),
            ));
        }
        let n_lists = self.n_lists.max(1);
        let mut lists = Vec::new();
        let mut codes = Vec::new();
        let mut ids = Vec::new();
        let (mut norm_min, mut norm_max) = (f32::INFINITY, 0.0f32);
        for (i, &norm) in self.norms.iter().enumerate() {
            if !(norm.is_finite() && norm >= 0.0) {
                return Err(bad(
                    "item norms",
                    format!("item {i}: {norm} is not a finite, non-negative norm"),
                ));
            }
            if norm == 0.0 {
                continue;
            }
            (norm_min, norm_max) = (norm_min.min(norm), norm_max.max(norm));
            let id = self.ids[i];
            ids.push(
                u64::try_from(id)
                    .map_err(|_| bad("item ids", format!("item {i}: id {id} is negative")))?,
            );
            let list = self.assignments[i];
            if list as usize >= n_lists {
                return Err(bad(
                    "coarse assignments",
                    format!(
                        "item {i}: list {list} is not below J = {} (0 is the only list when J = 0)",
                        self.n_lists
                    ),
                ));
            }
            lists.push(list);
            let item_codes = &self.codes[i * m_count..(i + 1) * m_count];
            if let Some(m) = item_codes.iter().position(|&c| usize::from(c) >= k) {
                return Err(bad(
                    "codes",
                    format!(
                        "item {i}, subspace {m}: code {} is not below K = {k}",
                        item_codes[m]
                    ),
                ));
            }
            codes.extend_from_slice(item_codes);
        }

        let n_bits = k.next_power_of_two().trailing_zeros().max(1);
        let padded_k = 1usize << n_bits;
        let mut codebooks = vec![0.0f32; m_count * padded_k * sub];
        for (dst, src) in codebooks
            .chunks_exact_mut(padded_k * sub)
            .zip(self.codebooks.chunks_exact(k * sub))
        {
            dst[..k * sub].copy_from_slice(src);
        }
        let coarse_centroids = if self.n_lists == 0 {
            vec![0.0; dim]
        } else {
            self.coarse_centroids.clone()
        };
        let params = IndexParams {
            dim,
            padded_dim: dim,
            n_lists,
            n_subspaces: m_count,
            n_bits,
            metric,
            n_items: ids.len(),
            code_layout: poeem_search::CodeLayout::Transposed,
        };
        let n_read = self.ids.len();
        let n_dropped_zero_norm = n_read - ids.len();
        let mut metadata = IndexMetadata::new();
        metadata.builder = Some("poeem-search import_reference".to_owned());
        metadata.crate_version = Some(env!("CARGO_PKG_VERSION").to_owned());
        metadata.rotation = Some("identity".to_owned());
        metadata.created = Some(unix_seconds());
        metadata
            .extra
            .insert("params".into(), metadata_value(serde_json::json!(params)));
        metadata.extra.insert(
            "reference".into(),
            metadata_value(serde_json::json!({
                "source_file": source,
                "use_residual": self.use_residual,
                "n_items": n_read,
                "n_dropped_zero_norm": n_dropped_zero_norm,
                "n_lists": self.n_lists,
                "n_codewords": k,
                "n_subspaces": m_count,
                "item_norm_min": (!ids.is_empty()).then_some(norm_min),
                "item_norm_max": (!ids.is_empty()).then_some(norm_max),
            })),
        );
        let parts = IndexParts::from_item_codes(
            params,
            None,
            coarse_centroids,
            codebooks,
            &lists,
            &codes,
            &ids,
            metadata,
        )?;
        Ok(ReferenceImport {
            parts,
            n_read,
            n_dropped_zero_norm,
        })
    }
}

/// A cursor over the file's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// The next `len` bytes, or an error naming `field` when the file ends first.
    fn take(&mut self, field: &'static str, len: usize) -> Result<&'a [u8], BuildError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(bad(
                field,
                format!(
                    "the file ends inside this field ({} bytes from offset {}, the file has {})",
                    len,
                    self.at,
                    self.bytes.len()
                ),
            ));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// The next header `i64`, which must be at least `min` and fit a `usize`.
    fn header_count(&mut self, field: &'static str, min: i64) -> Result<usize, BuildError> {
        let b = self.take(field, 8)?;
        let value = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        if value < min {
            return Err(bad(field, format!("{value} is below the minimum, {min}")));
        }
        usize::try_from(value).map_err(|_| bad(field, format!("{value} is too large")))
    }
}

fn bad(field: &'static str, reason: String) -> BuildError {
    BuildError::BadReferenceFile { field, reason }
}
