//! IVF-PQ search: probe the nearest lists, score their codes by asymmetric distance computation
//! (ADC: the query stays exact, the items are decoded through lookup tables), keep the best `k`.
//!
//! For a query `q` the search works in the index's rotated, padded space: `q' = [q | 0] R`
//! (cosine first scales `q` to unit norm). An item of list `j` with codes `k_1..k_M` decodes to
//! `v_j + [c¹_{k_1} | … | c^M_{k_M}]`, and its score splits into a per-list bias plus one table
//! entry per subspace, as in faiss:
//!
//! - inner product and cosine: `⟨q', v_j⟩ + Σ_m T[m][k_m]` with `T[m][k] = ⟨q'^(m), c^(m)_k⟩`,
//!   one table per query;
//! - L2: `‖q' − v_j‖² + Σ_m (P_j[m][k_m] − 2 T[m][k_m])` with
//!   `P_j[m][k] = ‖c^(m)_k‖² + 2⟨v_j^(m), c^(m)_k⟩`, precomputed per index (see
//!   [`L2_TERMS_MAX_BYTES`]), so a probed list costs one table addition.
//!
//! Internally every score becomes a key where smaller is better (similarities are negated,
//! which is exact), and the kernels add the table entries in subspace order. Batches rotate their
//! queries, score the coarse centroids and build the tables of up to 64 queries at a time with
//! matrix products, then scan query by query.

use faer::{Accum, MatMut, MatRef, Par};
use pulp::Arch;
use rayon::prelude::*;

use crate::kernels::{Kernel, Scan, TABLE_STRIDE, scalar};
use crate::topk::TopK;
use crate::{IndexView, Metric, SearchError};

/// The largest L2 bias table (`n_lists × M × 2^n_bits` floats) that [`SearchIndex::new`]
/// precomputes: 512 MiB. Above it, L2 search computes each probed list's table from the
/// codebooks (`padded_dim × 2^n_bits` multiply-adds per list) instead.
pub const L2_TERMS_MAX_BYTES: usize = 512 << 20;

/// Columns scored together by the direct dot-product loop.
const LANES: usize = 32;
/// Most queries whose tables a batch builds at once.
const BATCH_ROWS: usize = 64;
/// Memory a batch's lookup tables may take, which caps its rows for wide tables.
const BATCH_TABLE_BYTES: usize = 2 << 20;

/// How the lists to scan are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Probe {
    /// The `nprobe` centroids nearest to the query by L2, whatever the metric. Items are
    /// assigned to the list of their nearest centroid by L2, so this is the natural choice.
    #[default]
    L2,
    /// The `nprobe` centroids of largest inner product with the query (for inner product and
    /// cosine indexes; on an L2 index it ranks lists by `⟨q', v_j⟩` just the same).
    InnerProduct,
}

impl Probe {
    /// The probe's short name (`l2`, `ip`).
    pub fn name(self) -> &'static str {
        match self {
            Probe::L2 => "l2",
            Probe::InnerProduct => "ip",
        }
    }
}

impl std::str::FromStr for Probe {
    type Err = SearchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "l2" => Ok(Probe::L2),
            "ip" | "inner_product" => Ok(Probe::InnerProduct),
            _ => Err(SearchError::InvalidParameter {
                name: "probe",
                value: s.to_owned(),
                reason: "expected l2 or ip",
            }),
        }
    }
}

/// What a search asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SearchParams {
    /// Results per query (at least 1).
    pub k: usize,
    /// Lists scanned per query (at least 1; more than `n_lists` scans them all).
    pub nprobe: usize,
    /// How the lists are chosen.
    pub probe: Probe,
}

impl SearchParams {
    /// `k` results from `nprobe` lists, probed by [`Probe::default`].
    pub fn new(k: usize, nprobe: usize) -> Self {
        Self {
            k,
            nprobe,
            probe: Probe::default(),
        }
    }

    /// The same parameters with another probe.
    pub fn with_probe(self, probe: Probe) -> Self {
        Self { probe, ..self }
    }

    /// Checks that `k` and `nprobe` are at least 1.
    ///
    /// # Errors
    /// [`SearchError::InvalidParameter`] naming the bad field.
    pub fn validate(&self) -> Result<(), SearchError> {
        for (name, value) in [("k", self.k), ("nprobe", self.nprobe)] {
            if value == 0 {
                return Err(SearchError::InvalidParameter {
                    name,
                    value: "0".to_owned(),
                    reason: "must be at least 1",
                });
            }
        }
        Ok(())
    }
}

/// An index ready to search: an [`IndexView`] plus tables derived from it, and the scan kernel
/// chosen for this CPU.
///
/// Derived memory (see [`SearchIndex::derived_bytes`]): a dimension-major copy of the coarse
/// centroids and of the codebooks, their squared norms, and for L2 indexes the bias table of
/// `n_lists × M × 2^n_bits` floats when it fits in [`L2_TERMS_MAX_BYTES`] (e.g. 16 MiB for
/// 1024 lists, M = 16, 8 bits). Searching takes `&self`: any number of threads may search one
/// index at once, each with its own [`Searcher`].
#[derive(Debug)]
pub struct SearchIndex<'a> {
    view: IndexView<'a>,
    kernel: Kernel,
    arch: Arch,
    /// The rotation, or `None` when the view has none or it is exactly the identity.
    rotation: Option<&'a [f32]>,
    /// `n_lists` rounded up to [`LANES`].
    list_cols: usize,
    /// Coarse centroids, dimension-major: `padded_dim × list_cols` (zero columns past J).
    centroids_t: Vec<f32>,
    /// `‖v_j‖²`.
    centroid_norms: Vec<f32>,
    /// `2^n_bits` rounded up to [`LANES`] (at most the table stride).
    code_cols: usize,
    /// Entries per subspace row of a lookup table: 256 for one-byte codes, `2^n_bits` above.
    stride: usize,
    /// Codebooks, per subspace dimension-major: `M × sub_dim × code_cols`.
    codebooks_t: Vec<f32>,
    /// `‖c^(m)_k‖²`, `M × 2^n_bits` (L2 only).
    codeword_norms: Vec<f32>,
    /// `P_j[m][k]`, `n_lists × M × 2^n_bits` (L2 only, when small enough).
    l2_terms: Vec<f32>,
}

impl<'a> SearchIndex<'a> {
    /// Prepares `view` for search with the fastest kernel this CPU runs ([`Kernel::detect`]).
    /// Builds the derived tables, using the rayon pool for the L2 bias table.
    pub fn new(view: IndexView<'a>) -> Self {
        Self::build(view, Kernel::detect(), L2_TERMS_MAX_BYTES)
    }

    /// Prepares `view` for search with `kernel`.
    ///
    /// # Errors
    /// [`SearchError::InvalidParameter`] when this CPU does not run `kernel`.
    pub fn with_kernel(view: IndexView<'a>, kernel: Kernel) -> Result<Self, SearchError> {
        if !kernel.is_available() {
            return Err(kernel.unavailable());
        }
        Ok(Self::build(view, kernel, L2_TERMS_MAX_BYTES))
    }

    /// Prepares `view` with `kernel` (which this CPU must run), precomputing the L2 bias table
    /// when it takes at most `l2_terms_max_bytes`.
    fn build(view: IndexView<'a>, kernel: Kernel, l2_terms_max_bytes: usize) -> Self {
        let p = *view.params();
        let (d, n_lists, m_count, k, sub) = (
            p.padded_dim,
            p.n_lists,
            p.n_subspaces,
            p.n_codewords(),
            p.sub_dim(),
        );
        let rotation = view.rotation().filter(|r| !is_identity(r, d));
        let centroids = view.coarse_centroids();
        let list_cols = n_lists.next_multiple_of(LANES);
        let mut centroids_t = vec![0.0f32; d * list_cols];
        for (j, row) in centroids.chunks_exact(d).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                centroids_t[i * list_cols + j] = v;
            }
        }
        let centroid_norms = centroids.chunks_exact(d).map(squared_norm).collect();
        let code_cols = k.next_multiple_of(LANES);
        let stride = if p.code_width() == 1 { TABLE_STRIDE } else { k };
        let codebooks = view.codebooks();
        let mut codebooks_t = vec![0.0f32; m_count * sub * code_cols];
        for (m, book) in codebooks.chunks_exact(k * sub).enumerate() {
            let dst = &mut codebooks_t[m * sub * code_cols..(m + 1) * sub * code_cols];
            for (c, word) in book.chunks_exact(sub).enumerate() {
                for (s, &v) in word.iter().enumerate() {
                    dst[s * code_cols + c] = v;
                }
            }
        }
        let (mut codeword_norms, mut l2_terms) = (Vec::new(), Vec::new());
        if p.metric == Metric::L2 {
            codeword_norms = codebooks.chunks_exact(sub).map(squared_norm).collect();
            let fits = n_lists
                .checked_mul(m_count * k)
                .and_then(|n| n.checked_mul(size_of::<f32>()))
                .is_some_and(|bytes| bytes <= l2_terms_max_bytes);
            if fits {
                l2_terms = l2_bias_terms(&view, &codeword_norms);
            }
        }
        Self {
            view,
            kernel,
            arch: Arch::new(),
            rotation,
            list_cols,
            centroids_t,
            centroid_norms,
            code_cols,
            stride,
            codebooks_t,
            codeword_norms,
            l2_terms,
        }
    }

    /// The index searched.
    pub fn view(&self) -> &IndexView<'a> {
        &self.view
    }

    /// The scan kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Whether the L2 bias table is precomputed (always false for inner product and cosine,
    /// which need none).
    pub fn has_l2_terms(&self) -> bool {
        !self.l2_terms.is_empty()
    }

    /// Bytes of the tables derived from the view (the view's own memory not included).
    pub fn derived_bytes(&self) -> usize {
        size_of::<f32>()
            * (self.centroids_t.len()
                + self.centroid_norms.len()
                + self.codebooks_t.len()
                + self.codeword_norms.len()
                + self.l2_terms.len())
    }

    /// Searches a batch of queries: `queries` holds `n` rows of `dim` values, and row `i`'s
    /// results go to `ids[i·k..(i+1)·k]` and `scores[i·k..(i+1)·k]`, as
    /// [`Searcher::search_one`] writes them. Queries are split into `par`'s tasks at multiples
    /// of a fixed chunk, so the results do not depend on `par`; they equal `search_one`'s up to
    /// float rounding (the batch computes its dot products with matrix products).
    ///
    /// # Errors
    /// As [`Searcher::search_one`] for any row (nothing is written then), or
    /// [`SearchError::DimensionMismatch`] when `queries` is not whole rows or the outputs are
    /// not `n · k` long.
    pub fn search_batch(
        &self,
        queries: &[f32],
        params: &SearchParams,
        ids: &mut [i64],
        scores: &mut [f32],
        par: Par,
    ) -> Result<(), SearchError> {
        params.validate()?;
        let dim = self.view.params().dim;
        let n = queries.len() / dim;
        if queries.len() != n * dim {
            return Err(SearchError::DimensionMismatch {
                what: "query values (whole rows of dim)",
                expected: queries.len().next_multiple_of(dim),
                got: queries.len(),
            });
        }
        let k = params.k;
        check_outputs(n * k, ids, scores)?;
        let scales = queries
            .chunks_exact(dim)
            .enumerate()
            .map(|(row, q)| self.query_scale(q, row))
            .collect::<Result<Vec<f32>, _>>()?;
        if n == 0 {
            return Ok(());
        }
        let chunk = self.batch_rows();
        let tasks = match par {
            Par::Seq => 1,
            Par::Rayon(t) => t.get(),
        };
        let rows = n.div_ceil(tasks).next_multiple_of(chunk);
        let run =
            |(((queries, scales), ids), scores): (((&[f32], &[f32]), &mut [i64]), &mut [f32])| {
                let mut batch = Batch::new(self, chunk);
                for (((q, s), i), o) in queries
                    .chunks(chunk * dim)
                    .zip(scales.chunks(chunk))
                    .zip(ids.chunks_mut(chunk * k))
                    .zip(scores.chunks_mut(chunk * k))
                {
                    batch.run(q, s, params, i, o);
                }
            };
        let parts = queries
            .chunks(rows * dim)
            .zip(scales.chunks(rows))
            .zip(ids.chunks_mut(rows * k))
            .zip(scores.chunks_mut(rows * k));
        match par {
            Par::Seq => parts.for_each(run),
            Par::Rayon(_) => parts.collect::<Vec<_>>().into_par_iter().for_each(run),
        }
        Ok(())
    }

    /// Queries per batch chunk: [`BATCH_ROWS`], fewer when the tables are wide.
    fn batch_rows(&self) -> usize {
        let table_bytes = self.table_len() * size_of::<f32>();
        (BATCH_TABLE_BYTES / table_bytes).clamp(1, BATCH_ROWS)
    }

    /// Entries of one query's lookup table, `M × stride`.
    fn table_len(&self) -> usize {
        self.view.params().n_subspaces * self.stride
    }

    /// The factor applied to `q'` in the lookup tables: −1 (similarities become keys) or −2
    /// (the L2 cross term).
    fn table_scale(&self) -> f32 {
        if self.view.params().metric == Metric::L2 {
            -2.0
        } else {
            -1.0
        }
    }

    /// Checks query `row` (`dim` values) and returns the factor it is scaled by: `1/‖q‖` for
    /// cosine, 1 otherwise.
    fn query_scale(&self, query: &[f32], row: usize) -> Result<f32, SearchError> {
        let dim = self.view.params().dim;
        if query.len() != dim {
            return Err(SearchError::DimensionMismatch {
                what: "query values",
                expected: dim,
                got: query.len(),
            });
        }
        if let Some(col) = query.iter().position(|v| !v.is_finite()) {
            return Err(SearchError::NonFinite {
                what: "query",
                row,
                col,
            });
        }
        if self.view.params().metric != Metric::Cosine {
            return Ok(1.0);
        }
        let norm = query
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            return Err(SearchError::InvalidParameter {
                name: "query",
                value: format!("row {row}"),
                reason: "is the zero vector, whose cosine with an item is undefined",
            });
        }
        Ok((1.0 / norm) as f32)
    }

    /// `out = (scale · [q | 0]) R`, `padded_dim` values; `scaled` is `dim` values of scratch.
    fn prepare_one(&self, query: &[f32], scale: f32, scaled: &mut [f32], out: &mut [f32]) {
        let dim = self.view.params().dim;
        for (s, &q) in scaled.iter_mut().zip(query) {
            *s = scale * q;
        }
        match self.rotation {
            None => {
                out[..dim].copy_from_slice(&scaled[..dim]);
                out[dim..].fill(0.0);
            }
            Some(r) => self.arch.dispatch(|| {
                out.fill(0.0);
                for (&a, row) in scaled[..dim].iter().zip(r.chunks_exact(out.len())) {
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o += a * v;
                    }
                }
            }),
        }
    }

    /// The coarse dot products `⟨q', v_j⟩` (`dots` has `list_cols` values) and the lookup table
    /// `table[m·stride + k] = scale · ⟨q'^(m), c^(m)_k⟩` of one prepared query; `scaled` is
    /// `padded_dim` values of scratch.
    fn tables_one(&self, query: &[f32], scaled: &mut [f32], dots: &mut [f32], table: &mut [f32]) {
        let p = self.view.params();
        let sub = p.sub_dim();
        dots_dim_major(self.arch, query, &self.centroids_t, self.list_cols, dots);
        let scale = self.table_scale();
        for (s, &q) in scaled.iter_mut().zip(query) {
            *s = scale * q;
        }
        let book_len = sub * self.code_cols;
        for ((x, book), row) in scaled
            .chunks_exact(sub)
            .zip(self.codebooks_t.chunks_exact(book_len))
            .zip(table.chunks_exact_mut(self.stride))
        {
            dots_dim_major(self.arch, x, book, self.code_cols, row);
        }
    }

    /// Searches one prepared query: `query` is `q'` (`padded_dim`), `dots` its coarse dot
    /// products (at least `n_lists`), `table` its scaled lookup table (`M × stride`).
    #[allow(clippy::too_many_arguments)]
    fn scan_one(
        &self,
        scratch: &mut ScanScratch,
        query: &[f32],
        dots: &[f32],
        table: &[f32],
        params: &SearchParams,
        ids: &mut [i64],
        scores: &mut [f32],
    ) -> usize {
        let p = self.view.params();
        let ScanScratch {
            probes,
            top,
            list_table,
            residual,
        } = scratch;
        let nprobe = params.nprobe.min(p.n_lists);
        probes.reset(nprobe);
        let mut threshold = probes.threshold();
        for (j, (&dot, &norm)) in dots.iter().zip(&self.centroid_norms).enumerate() {
            let key = match params.probe {
                Probe::L2 => norm - 2.0 * dot,
                Probe::InnerProduct => -dot,
            };
            if key <= threshold {
                probes.push(key, j as u64);
                threshold = probes.threshold();
            }
        }
        top.reset(params.k);
        let l2 = p.metric == Metric::L2;
        let query_norm = if l2 { squared_norm(query) } else { 0.0 };
        let (m_count, k) = (p.n_subspaces, p.n_codewords());
        for &(_, j) in probes.sorted() {
            let j = j as usize;
            let list = self.view.list(j);
            if list.is_empty() {
                continue;
            }
            let (bias, table) = if l2 {
                let bias = query_norm + (self.centroid_norms[j] - 2.0 * dots[j]);
                self.l2_list_table(j, query, table, list_table, residual);
                (bias, &list_table[..])
            } else {
                (-dots[j], table)
            };
            let scan = Scan {
                table,
                n_subspaces: m_count,
                bias,
                codes: list.codes,
                ids: list.ids,
            };
            if p.code_width() == 1 {
                self.kernel.scan(&scan, top);
            } else {
                scalar::scan_wide(&scan, self.stride, (k - 1) as u16, top);
            }
        }
        let found = top.len();
        let higher = p.metric.higher_is_better();
        ids.fill(-1);
        scores.fill(if higher {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        });
        for ((&(key, item), id), score) in top.sorted().iter().zip(ids).zip(scores) {
            *id = item as i64;
            *score = if higher { -key } else { key };
        }
        found
    }

    /// List `j`'s L2 table `P_j[m][k] + table[m][k]` into `out` (`M × stride`; entries past
    /// `2^n_bits` are left as they are, zero). Without precomputed terms, `P_j` comes from the
    /// codebooks: `‖c‖² + ⟨2(v_j − q')^(m), c⟩`, and `table` (−2⟨q', c⟩) is not needed.
    fn l2_list_table(
        &self,
        j: usize,
        query: &[f32],
        table: &[f32],
        out: &mut [f32],
        residual: &mut [f32],
    ) {
        let p = self.view.params();
        let (m_count, k, sub) = (p.n_subspaces, p.n_codewords(), p.sub_dim());
        if self.has_l2_terms() {
            let terms = &self.l2_terms[j * m_count * k..(j + 1) * m_count * k];
            self.arch.dispatch(|| {
                for ((o, t), q) in out
                    .chunks_exact_mut(self.stride)
                    .zip(terms.chunks_exact(k))
                    .zip(table.chunks_exact(self.stride))
                {
                    for ((o, &t), &q) in o[..k].iter_mut().zip(t).zip(&q[..k]) {
                        *o = t + q;
                    }
                }
            });
            return;
        }
        let centroid = &self.view.coarse_centroids()[j * p.padded_dim..(j + 1) * p.padded_dim];
        for ((r, &v), &q) in residual.iter_mut().zip(centroid).zip(query) {
            *r = 2.0 * (v - q);
        }
        let book_len = sub * self.code_cols;
        for (((x, book), row), norms) in residual
            .chunks_exact(sub)
            .zip(self.codebooks_t.chunks_exact(book_len))
            .zip(out.chunks_exact_mut(self.stride))
            .zip(self.codeword_norms.chunks_exact(k))
        {
            dots_dim_major(self.arch, x, book, self.code_cols, row);
            for (o, &n) in row.iter_mut().zip(norms) {
                *o += n;
            }
        }
    }
}

/// The scratch of one query's scan.
#[derive(Debug)]
struct ScanScratch {
    probes: TopK,
    top: TopK,
    /// One list's L2 table, `M × stride` (empty for inner product and cosine).
    list_table: Vec<f32>,
    /// `2(v_j − q')`, `padded_dim` (L2 without precomputed terms).
    residual: Vec<f32>,
}

impl ScanScratch {
    fn new(index: &SearchIndex<'_>) -> Self {
        let p = index.view.params();
        let l2 = p.metric == Metric::L2;
        Self {
            probes: TopK::default(),
            top: TopK::default(),
            list_table: vec![0.0; if l2 { index.table_len() } else { 0 }],
            residual: vec![0.0; if l2 { p.padded_dim } else { 0 }],
        }
    }
}

/// Searches one query at a time, reusing its scratch: after the first queries (whose `k` and
/// `nprobe` size the result heaps), a search allocates nothing.
///
/// One per thread: a `Searcher` borrows its [`SearchIndex`] and any number of them may search
/// it at once.
#[derive(Debug)]
pub struct Searcher<'s, 'a> {
    index: &'s SearchIndex<'a>,
    /// `q` scaled (`dim`), then `scale · q'` (`padded_dim`).
    scaled: Vec<f32>,
    /// `q'`, `padded_dim`.
    query: Vec<f32>,
    /// `⟨q', v_j⟩`, `list_cols`.
    dots: Vec<f32>,
    /// The query's lookup table, `M × stride`.
    table: Vec<f32>,
    scan: ScanScratch,
}

impl<'s, 'a> Searcher<'s, 'a> {
    /// A searcher of `index` with scratch sized for it.
    pub fn new(index: &'s SearchIndex<'a>) -> Self {
        let p = index.view.params();
        Self {
            index,
            scaled: vec![0.0; p.padded_dim],
            query: vec![0.0; p.padded_dim],
            dots: vec![0.0; index.list_cols],
            table: vec![0.0; index.table_len()],
            scan: ScanScratch::new(index),
        }
    }

    /// The index searched.
    pub fn index(&self) -> &'s SearchIndex<'a> {
        self.index
    }

    /// The `params.k` best items for `query` (`dim` values) among the `params.nprobe` lists
    /// chosen by `params.probe`. Writes ids and scores best first: similarities (higher is
    /// better, descending) for inner product and cosine, squared distances (ascending) for L2.
    /// Equal scores go to the smaller id. Returns the number found; the remaining slots get
    /// id −1 and the worst score (−∞ for similarities, +∞ for distances). Items whose score is
    /// NaN (possible only when the index holds non-finite floats) are never returned.
    ///
    /// # Errors
    /// [`SearchError::InvalidParameter`] when `k` or `nprobe` is 0, or a cosine query is the
    /// zero vector; [`SearchError::DimensionMismatch`] when `query` is not `dim` long or the
    /// outputs not `k` long; [`SearchError::NonFinite`] when the query holds NaN or ±∞.
    pub fn search_one(
        &mut self,
        query: &[f32],
        params: &SearchParams,
        ids: &mut [i64],
        scores: &mut [f32],
    ) -> Result<usize, SearchError> {
        params.validate()?;
        check_outputs(params.k, ids, scores)?;
        let index = self.index;
        let scale = index.query_scale(query, 0)?;
        index.prepare_one(query, scale, &mut self.scaled, &mut self.query);
        index.tables_one(
            &self.query,
            &mut self.scaled,
            &mut self.dots,
            &mut self.table,
        );
        Ok(index.scan_one(
            &mut self.scan,
            &self.query,
            &self.dots,
            &self.table,
            params,
            ids,
            scores,
        ))
    }
}

/// The scratch of one batch task: a chunk of queries' prepared rows, dot products and tables.
struct Batch<'s, 'a> {
    index: &'s SearchIndex<'a>,
    /// Scaled queries, `rows × dim`.
    scaled: Vec<f32>,
    /// `q'`, `rows × padded_dim`.
    rotated: Vec<f32>,
    /// `⟨q', v_j⟩`, `rows × n_lists`.
    dots: Vec<f32>,
    /// Lookup tables, `rows × M × stride`.
    tables: Vec<f32>,
    scan: ScanScratch,
}

impl<'s, 'a> Batch<'s, 'a> {
    fn new(index: &'s SearchIndex<'a>, rows: usize) -> Self {
        let p = index.view.params();
        Self {
            index,
            scaled: vec![0.0; rows * p.dim],
            rotated: vec![0.0; rows * p.padded_dim],
            dots: vec![0.0; rows * p.n_lists],
            tables: vec![0.0; rows * index.table_len()],
            scan: ScanScratch::new(index),
        }
    }

    /// Searches `scales.len()` checked queries (at most the chunk's rows).
    fn run(
        &mut self,
        queries: &[f32],
        scales: &[f32],
        params: &SearchParams,
        ids: &mut [i64],
        scores: &mut [f32],
    ) {
        let index = self.index;
        let p = index.view.params();
        let (b, dim, d, n_lists) = (scales.len(), p.dim, p.padded_dim, p.n_lists);
        let (m_count, k, sub) = (p.n_subspaces, p.n_codewords(), p.sub_dim());
        let (stride, table_len) = (index.stride, index.table_len());
        let rotated = &mut self.rotated[..b * d];
        match index.rotation {
            None => {
                for ((out, q), &s) in rotated
                    .chunks_exact_mut(d)
                    .zip(queries.chunks_exact(dim))
                    .zip(scales)
                {
                    for (o, &v) in out.iter_mut().zip(q) {
                        *o = s * v;
                    }
                }
            }
            Some(r) => {
                let scaled = &mut self.scaled[..b * dim];
                for ((out, q), &s) in scaled
                    .chunks_exact_mut(dim)
                    .zip(queries.chunks_exact(dim))
                    .zip(scales)
                {
                    for (o, &v) in out.iter_mut().zip(q) {
                        *o = s * v;
                    }
                }
                faer::linalg::matmul::matmul(
                    MatMut::from_row_major_slice_mut(rotated, b, d),
                    Accum::Replace,
                    MatRef::from_row_major_slice(scaled, b, dim),
                    MatRef::from_row_major_slice(&r[..dim * d], dim, d),
                    1.0f32,
                    Par::Seq,
                );
            }
        }
        let rotated = &self.rotated[..b * d];
        let dots = &mut self.dots[..b * n_lists];
        faer::linalg::matmul::matmul(
            MatMut::from_row_major_slice_mut(dots, b, n_lists),
            Accum::Replace,
            MatRef::from_row_major_slice(rotated, b, d),
            MatRef::from_row_major_slice(index.view.coarse_centroids(), n_lists, d).transpose(),
            1.0f32,
            Par::Seq,
        );
        let codebooks = index.view.codebooks();
        let tables = &mut self.tables[..b * table_len];
        for m in 0..m_count {
            faer::linalg::matmul::matmul(
                row_major_with_stride_mut(&mut tables[m * stride..], b, k, table_len),
                Accum::Replace,
                MatRef::from_row_major_slice_with_stride(&rotated[m * sub..], b, sub, d),
                MatRef::from_row_major_slice(&codebooks[m * k * sub..(m + 1) * k * sub], k, sub)
                    .transpose(),
                index.table_scale(),
                Par::Seq,
            );
        }
        let k_out = params.k;
        for (((query, dots), table), (ids, scores)) in rotated
            .chunks_exact(d)
            .zip(self.dots.chunks_exact(n_lists))
            .zip(self.tables.chunks_exact(table_len))
            .zip(
                ids.chunks_exact_mut(k_out)
                    .zip(scores.chunks_exact_mut(k_out)),
            )
        {
            index.scan_one(&mut self.scan, query, dots, table, params, ids, scores);
        }
    }
}

/// Checks that the outputs hold `len` values each.
fn check_outputs(len: usize, ids: &[i64], scores: &[f32]) -> Result<(), SearchError> {
    for (what, got) in [("result ids", ids.len()), ("result scores", scores.len())] {
        if got != len {
            return Err(SearchError::DimensionMismatch {
                what,
                expected: len,
                got,
            });
        }
    }
    Ok(())
}

/// `out[c] = Σ_i x[i] · mt[i · n_cols + c]` for `c < n_cols` (a multiple of [`LANES`]), summed
/// in order of `i`, [`LANES`] columns at a time in registers.
fn dots_dim_major(arch: Arch, x: &[f32], mt: &[f32], n_cols: usize, out: &mut [f32]) {
    arch.dispatch(|| {
        for (c, out) in out[..n_cols].chunks_exact_mut(LANES).enumerate() {
            let mut acc = [0.0f32; LANES];
            for (i, &xi) in x.iter().enumerate() {
                let col = &mt[i * n_cols + c * LANES..][..LANES];
                for (a, &v) in acc.iter_mut().zip(col) {
                    *a += xi * v;
                }
            }
            out.copy_from_slice(&acc);
        }
    })
}

/// The L2 bias table `P_j[m][k] = ‖c^(m)_k‖² + 2⟨v_j^(m), c^(m)_k⟩`, `n_lists × M × K`, by one
/// matrix product per subspace.
fn l2_bias_terms(view: &IndexView<'_>, codeword_norms: &[f32]) -> Vec<f32> {
    let p = view.params();
    let (d, n_lists, m_count, k, sub) = (
        p.padded_dim,
        p.n_lists,
        p.n_subspaces,
        p.n_codewords(),
        p.sub_dim(),
    );
    let row = m_count * k;
    let mut terms = vec![0.0f32; n_lists * row];
    let codebooks = view.codebooks();
    for m in 0..m_count {
        faer::linalg::matmul::matmul(
            row_major_with_stride_mut(&mut terms[m * k..], n_lists, k, row),
            Accum::Replace,
            MatRef::from_row_major_slice_with_stride(
                &view.coarse_centroids()[m * sub..],
                n_lists,
                sub,
                d,
            ),
            MatRef::from_row_major_slice(&codebooks[m * k * sub..(m + 1) * k * sub], k, sub)
                .transpose(),
            2.0f32,
            Par::rayon(0),
        );
    }
    terms.par_chunks_mut(row).for_each(|list| {
        for (t, &n) in list.iter_mut().zip(codeword_norms) {
            *t += n;
        }
    });
    terms
}

/// A row-major `nrows × ncols` view of `slice` whose rows start `row_stride` values apart.
///
/// faer 0.24's `MatMut::from_row_major_slice_with_stride_mut` builds a column-major view (row
/// stride 1) after checking row-major bounds, so products written through it land outside the
/// slice; this builds the transpose of the column-major view instead, as `MatRef`'s
/// counterpart does.
#[track_caller]
fn row_major_with_stride_mut(
    slice: &mut [f32],
    nrows: usize,
    ncols: usize,
    row_stride: usize,
) -> MatMut<'_, f32> {
    MatMut::from_column_major_slice_with_stride_mut(slice, ncols, nrows, row_stride).transpose_mut()
}

/// Whether the row-major `d × d` matrix `r` is exactly the identity.
fn is_identity(r: &[f32], d: usize) -> bool {
    r.iter()
        .enumerate()
        .all(|(i, &v)| v == if i / d == i % d { 1.0 } else { 0.0 })
}

#[inline(always)]
fn squared_norm(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum()
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::{IndexParams, IndexParts};

    /// L2 search computing each list's table from the codebooks returns what the precomputed
    /// bias table gives, up to rounding.
    #[test]
    fn l2_tables_from_codebooks_match_precomputed_terms() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for n_bits in [3, 8, 9] {
            let params = IndexParams {
                dim: 10,
                padded_dim: 12,
                n_lists: 5,
                n_subspaces: 3,
                n_bits,
                metric: Metric::L2,
                n_items: 0,
            };
            let mut uniform =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
            let (centroids, codebooks) = (uniform(5 * 12), uniform(params.n_codewords() * 12));
            let n = 300;
            let lists: Vec<u32> = (0..n).map(|i| (i * 7 % 5) as u32).collect();
            let codes: Vec<u16> = (0..n * 3)
                .map(|i| ((i * 31 + 7) % params.n_codewords()) as u16)
                .collect();
            let ids: Vec<u64> = (0..n as u64).collect();
            let rotation = Some(poeem_rotation::Rotation::random(12, 4).into_vec());
            let parts = IndexParts::from_item_codes(
                params,
                rotation,
                centroids,
                codebooks,
                &lists,
                &codes,
                &ids,
                serde_json::Value::Null,
            )
            .unwrap();
            let view = parts.view().unwrap();
            let with_terms = SearchIndex::build(view, Kernel::detect(), usize::MAX);
            let without = SearchIndex::build(view, Kernel::detect(), 0);
            assert!(with_terms.has_l2_terms() && !without.has_l2_terms());
            let query = uniform(10);
            let params = SearchParams::new(20, 3);
            let mut results = Vec::new();
            for index in [&with_terms, &without] {
                let (mut ids, mut scores) = (vec![0i64; 20], vec![0.0f32; 20]);
                Searcher::new(index)
                    .search_one(&query, &params, &mut ids, &mut scores)
                    .unwrap();
                results.push((ids, scores));
            }
            let ((a_ids, a), (b_ids, b)) = (&results[0], &results[1]);
            for i in 0..20 {
                assert!(
                    (a[i] - b[i]).abs() <= 1e-4 * (1.0 + a[i].abs()),
                    "{a:?} vs {b:?}"
                );
                let separated = |s: &[f32]| {
                    (i == 0 || s[i] - s[i - 1] > 1e-3) && (i == 19 || s[i + 1] - s[i] > 1e-3)
                };
                if separated(a) {
                    assert_eq!(a_ids[i], b_ids[i]);
                }
            }
        }
    }
}
