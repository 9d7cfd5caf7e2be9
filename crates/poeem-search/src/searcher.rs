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
//! - L2: `‖q' − v_j‖² + e_s − 2 Σ_m T[m][k_m]`, where the item's residual
//!   `r = [c¹_{k_1} | … | c^M_{k_M}]` gives the per-item term `e_s = ‖r‖² + 2⟨v_j, r⟩`,
//!   computed once per list, the first time a search probes it (in f64, one float per slot),
//!   so opening an index and its first query cost no pass over every item.
//!
//! faiss's IVF-PQ instead precomputes `P_j[m][k] = ‖c^(m)_k‖² + 2⟨v_j^(m), c^(m)_k⟩`
//! (`n_lists × M × 2^n_bits` floats) and adds `P_j` to the query's table for every probed list;
//! the per-item sum `e_s = Σ_m P_j[m][k_m]` makes an L2 scan cost what an inner-product scan
//! costs, and takes less memory whenever there are fewer items than `n_lists × M × 2^n_bits`.
//!
//! Internally every score becomes a key where smaller is better (similarities are negated,
//! which is exact), and the kernels add the table entries in subspace order. Batches rotate their
//! queries, score the coarse centroids and build the tables of up to 64 queries at a time with
//! matrix products, then scan query by query.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use faer::{Accum, MatMut, MatRef, Par};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use crate::kernels::fastscan::CODEWORDS as FS_CODEWORDS;
use crate::kernels::{Kernel, QuantizedTable, Scan, Scan4, TABLE_STRIDE, prefetch, scalar};
use crate::refine::RefineKind;
use crate::topk::TopK;
use crate::{CodeLayout, Index, IndexView, Metric, SearchError};

/// Columns scored together by the direct dot-product loop (eight AVX2 accumulators).
const LANES: usize = 64;
/// Most queries whose tables a batch builds at once.
const BATCH_ROWS: usize = 64;
/// Memory a batch's lookup tables may take, which caps its rows for wide tables.
const BATCH_TABLE_BYTES: usize = 2 << 20;
/// Most queries a fast-scan batch scans together, list by list.
const GROUP_ROWS: usize = 1024;
/// Memory the dot products and tables of a fast-scan batch's group may take.
const GROUP_BYTES: usize = 8 << 20;
/// Average bytes of a list's ids and codes above which a fast-scan batch scans list by list.
const GROUP_LIST_BYTES: usize = 2 * PREFETCH_BYTES;
/// Bytes of a probed list's ids and of its codes fetched ahead of its scan: whole lists of a
/// few hundred items; the start of larger ones, whose sequential codes the CPU fetches itself.
const PREFETCH_BYTES: usize = 4096;
/// Queries of a fast-scan batch whose candidates are being fetched while one is finished.
const STAGE_AHEAD: usize = 2;
/// Partial sums of a re-ranking score.
const REFINE_LANES: usize = 8;

/// How the lists to scan are chosen.
///
/// Items are always assigned to the list of their nearest centroid by L2, but for inner
/// product the lists holding the best items are those whose centroids have large inner products
/// with the query, not those near it. Measured recall@10 (500 held-out queries, IVF-PQ with
/// M = 16, 8 bits, nprobe 8 of 1024 lists): on the standardised bio vectors (145k × 74, norms
/// vary), inner product probing 0.730, L2 probing 0.028; with cosine, 0.435 and 0.439. On
/// isotropic Gaussian data (100k × 64, all norms alike) L2 probing wins for inner product (0.150
/// against 0.046), so both stay available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Probe {
    /// By the index's metric: [`Probe::InnerProduct`] for inner product, [`Probe::L2`] for L2
    /// and cosine.
    #[default]
    Auto,
    /// The `nprobe` centroids nearest to the query by L2.
    L2,
    /// The `nprobe` centroids of largest inner product `⟨q', v_j⟩` with the query.
    InnerProduct,
}

impl Probe {
    /// The probe's short name (`auto`, `l2`, `ip`).
    pub fn name(self) -> &'static str {
        match self {
            Probe::Auto => "auto",
            Probe::L2 => "l2",
            Probe::InnerProduct => "ip",
        }
    }

    /// The probe [`Probe::Auto`] stands for on an index of `metric`; other probes stay as
    /// they are.
    pub fn resolve(self, metric: Metric) -> Probe {
        match (self, metric) {
            (Probe::Auto, Metric::InnerProduct) => Probe::InnerProduct,
            (Probe::Auto, Metric::L2 | Metric::Cosine) => Probe::L2,
            (probe, _) => probe,
        }
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Probe {
    type Err = SearchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Probe::Auto),
            "l2" => Ok(Probe::L2),
            "ip" | "inner_product" => Ok(Probe::InnerProduct),
            _ => Err(SearchError::InvalidParameter {
                name: "probe",
                value: s.to_owned(),
                reason: "expected auto, l2 or ip",
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
    /// Re-ranking: on an index with refinement data, the best `k · rerank_factor` candidates
    /// of the scan are re-scored with it and the best `k` of them returned; 0 turns re-ranking
    /// off. Ignored by indexes without refinement data.
    pub rerank_factor: usize,
}

impl SearchParams {
    /// Candidates per result re-scored by default on indexes with refinement data: the
    /// smallest power of two with which a re-ranked 4-bit index reaches the 8-bit index's
    /// recall@10 at equal nprobe on both of the README's benchmark sets (with 4, 2,000,000
    /// clustered vectors with lists of about 2,000 items fall 11 points short).
    pub const DEFAULT_RERANK_FACTOR: usize = 8;

    /// `k` results from `nprobe` lists, probed by [`Probe::default`], re-ranking
    /// [`SearchParams::DEFAULT_RERANK_FACTOR`] candidates per result when the index can.
    pub fn new(k: usize, nprobe: usize) -> Self {
        Self {
            k,
            nprobe,
            probe: Probe::default(),
            rerank_factor: Self::DEFAULT_RERANK_FACTOR,
        }
    }

    /// The same parameters with another re-ranking factor (0: off).
    pub fn with_rerank_factor(self, rerank_factor: usize) -> Self {
        Self {
            rerank_factor,
            ..self
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
/// Derived memory (see [`SearchIndex::derived_bytes`]): copies of the rotation, the coarse
/// centroids and the codebooks laid out for single-query dot products, the centroids' squared
/// norms, and for L2 indexes one float per slot of each list searched so far (the item term
/// `e_s`: 4 bytes per item beside its `M` code bytes). Searching takes `&self`: any number of
/// threads may search one index at once, each with its own [`Searcher`]. [`SharedIndex`] is the
/// owned form, with no lifetime.
#[derive(Debug)]
pub struct SearchIndex<'a> {
    view: IndexView<'a>,
    /// The derived tables: this value's own, or a [`SharedIndex`]'s.
    tables: Cow<'a, Tables>,
}

/// What a [`SearchIndex`] derives from its view, owning no part of it.
#[derive(Debug, Clone)]
struct Tables {
    kernel: Kernel,
    arch: Arch,
    /// Whether queries are rotated: the view has a rotation that is not exactly the identity.
    rotated: bool,
    /// `R` (`padded_dim × padded_dim`) for [`ColumnBlocks::dots`], when there is a rotation.
    rotation_blocks: Option<ColumnBlocks>,
    /// The coarse centroids as columns: `padded_dim × n_lists`.
    centroid_blocks: ColumnBlocks,
    /// `‖v_j‖²`.
    centroid_norms: Vec<f32>,
    /// Entries per subspace row of a lookup table: 256 for one-byte codes, `2^n_bits` above.
    stride: usize,
    /// Each subspace's codewords as columns: `sub_dim × 2^n_bits`.
    codebook_blocks: Vec<ColumnBlocks>,
    /// Per list, `e_s = ‖r_s‖² + 2⟨v_j, r_s⟩` of its slots (0 for padding), computed when a
    /// search first probes the list; L2 with transposed codes only (empty otherwise).
    slot_terms: Vec<OnceLock<Box<[f32]>>>,
    /// Whether the codes use the 4-bit fast-scan layout.
    fast_scan: bool,
    /// Fast-scan L2 only: `P_j[m][k] = ‖c^(m)_k‖² + 2⟨v_j^(m), c^(m)_k⟩`, `n_lists × M × 16`,
    /// added to the query's table for each probed list (the item terms of a 16-entry table).
    list_terms: Vec<f32>,
    /// `(id, slot)` of every slot, sorted: built by the first search that excludes ids, which
    /// the scan, offering slots, excludes by slot.
    slots_by_id: OnceLock<Box<[(u64, u64)]>>,
}

impl Tables {
    /// Derives the tables of `view` for `kernel`, which this CPU must run.
    fn new(view: &IndexView<'_>, kernel: Kernel) -> Self {
        let p = *view.params();
        let (d, n_lists, k, sub) = (p.padded_dim, p.n_lists, p.n_codewords(), p.sub_dim());
        let rotation = view.rotation().filter(|r| !is_identity(r, d));
        let rotation_blocks = rotation.map(|r| ColumnBlocks::new(d, d, |i, c| r[i * d + c]));
        let centroids = view.coarse_centroids();
        let centroid_blocks = ColumnBlocks::new(d, n_lists, |i, j| centroids[j * d + i]);
        let centroid_norms = centroids.chunks_exact(d).map(squared_norm).collect();
        let stride = if p.code_layout == CodeLayout::FastScan4 {
            FS_CODEWORDS
        } else if p.code_width() == 1 {
            TABLE_STRIDE
        } else {
            k
        };
        let codebook_blocks = view
            .codebooks()
            .chunks_exact(k * sub)
            .map(|book| ColumnBlocks::new(sub, k, |s, c| book[c * sub + s]))
            .collect();
        let fast_scan = p.code_layout == CodeLayout::FastScan4;
        let slot_terms = if p.metric == Metric::L2 && !fast_scan {
            (0..n_lists).map(|_| OnceLock::new()).collect()
        } else {
            Vec::new()
        };
        let list_terms = if p.metric == Metric::L2 && fast_scan {
            l2_list_terms(view)
        } else {
            Vec::new()
        };
        Self {
            kernel,
            arch: Arch::new(),
            rotated: rotation.is_some(),
            rotation_blocks,
            centroid_blocks,
            centroid_norms,
            stride,
            codebook_blocks,
            slot_terms,
            fast_scan,
            list_terms,
            slots_by_id: OnceLock::new(),
        }
    }
}

/// An index file ready to search, as one owned value: the [`Index`] behind an [`Arc`] and the
/// tables [`SearchIndex`] derives, computed once.
///
/// It has no lifetime, is `Send + Sync` and cheap to clone (two reference counts), so a server
/// or a language binding can keep it in a struct and search it from any number of threads at
/// once; each search borrows a [`SearchIndex`] from it ([`SharedIndex::search_index`], which
/// re-derives nothing).
#[derive(Debug, Clone)]
pub struct SharedIndex {
    index: Arc<Index>,
    tables: Arc<Tables>,
}

impl SharedIndex {
    /// Prepares `index` for search with the fastest kernel this CPU runs, as
    /// [`SearchIndex::new`] does.
    pub fn new(index: impl Into<Arc<Index>>) -> Self {
        let index = index.into();
        let tables = Tables::new(&index.view(), Kernel::detect());
        Self {
            index,
            tables: Arc::new(tables),
        }
    }

    /// Prepares `index` for search with `kernel`.
    ///
    /// # Errors
    /// [`SearchError::InvalidParameter`] when this CPU does not run `kernel`.
    pub fn with_kernel(index: impl Into<Arc<Index>>, kernel: Kernel) -> Result<Self, SearchError> {
        let index = index.into();
        let tables = SearchIndex::with_kernel(index.view(), kernel)?
            .tables
            .into_owned();
        Ok(Self {
            index,
            tables: Arc::new(tables),
        })
    }

    /// The index file searched.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The borrowed form, sharing this value's tables: for a [`Searcher`], or any
    /// [`SearchIndex`] method.
    pub fn search_index(&self) -> SearchIndex<'_> {
        SearchIndex {
            view: self.index.view(),
            tables: Cow::Borrowed(&self.tables),
        }
    }

    /// [`SearchIndex::search_batch`] on this index.
    ///
    /// # Errors
    /// As [`SearchIndex::search_batch`].
    pub fn search_batch(
        &self,
        queries: &[f32],
        params: &SearchParams,
        ids: &mut [i64],
        scores: &mut [f32],
        par: Par,
    ) -> Result<(), SearchError> {
        self.search_index()
            .search_batch(queries, params, ids, scores, par)
    }

    /// The scan kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.tables.kernel
    }

    /// [`SearchIndex::precompute_terms`]: the terms are kept in this value's shared tables.
    pub fn precompute_terms(&self) {
        self.search_index().precompute_terms();
    }
}

impl<'a> SearchIndex<'a> {
    /// Prepares `view` for search with the fastest kernel this CPU runs ([`Kernel::detect`]).
    /// This touches no item: an L2 index computes its items' terms `e_s` list by list as
    /// searches first probe the lists ([`SearchIndex::precompute_terms`] does all of them at
    /// once).
    pub fn new(view: IndexView<'a>) -> Self {
        Self::build(view, Kernel::detect())
    }

    /// Prepares `view` for search with `kernel`.
    ///
    /// # Errors
    /// [`SearchError::InvalidParameter`] when this CPU does not run `kernel`.
    pub fn with_kernel(view: IndexView<'a>, kernel: Kernel) -> Result<Self, SearchError> {
        if !kernel.is_available() {
            return Err(kernel.unavailable());
        }
        Ok(Self::build(view, kernel))
    }

    /// Prepares `view` with `kernel`, which this CPU must run.
    fn build(view: IndexView<'a>, kernel: Kernel) -> Self {
        let tables = Tables::new(&view, kernel);
        Self {
            view,
            tables: Cow::Owned(tables),
        }
    }

    /// The rotation queries go through, or `None` when the view has none or it is exactly the
    /// identity.
    fn rotation(&self) -> Option<&'a [f32]> {
        self.view.rotation().filter(|_| self.tables.rotated)
    }

    /// The index searched.
    pub fn view(&self) -> &IndexView<'a> {
        &self.view
    }

    /// The scan kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.tables.kernel
    }

    /// Bytes of the tables derived from the view (the view's own memory not included).
    pub fn derived_bytes(&self) -> usize {
        let blocks = self
            .tables
            .rotation_blocks
            .iter()
            .chain([&self.tables.centroid_blocks]);
        let blocks = blocks.chain(&self.tables.codebook_blocks);
        size_of::<f32>()
            * (blocks.map(|b| b.data.len()).sum::<usize>()
                + self.tables.centroid_norms.len()
                + self
                    .tables
                    .slot_terms
                    .iter()
                    .filter_map(OnceLock::get)
                    .map(|terms| terms.len())
                    .sum::<usize>()
                + self.tables.list_terms.len())
            + self
                .tables
                .slots_by_id
                .get()
                .map_or(0, |pairs| size_of_val(&**pairs))
    }

    /// Appends to `slots` the slots holding the items `ids` (ids the index lacks add nothing).
    fn slots_of(&self, ids: &[u64], slots: &mut Vec<u64>) {
        let pairs = self.tables.slots_by_id.get_or_init(|| {
            let slot_ids = self.view.slot_ids();
            let mut pairs: Vec<(u64, u64)> =
                (0u64..).zip(slot_ids).map(|(s, &id)| (id, s)).collect();
            pairs.par_sort_unstable();
            pairs.into_boxed_slice()
        });
        for &id in ids {
            let from = pairs.partition_point(|&(i, _)| i < id);
            slots.extend(
                pairs[from..]
                    .iter()
                    .take_while(|&&(i, _)| i == id)
                    .map(|&(_, s)| s),
            );
        }
    }

    /// Computes now, on the rayon pool, the per-item terms an L2 index otherwise computes list
    /// by list during its first searches (`n_items × padded_dim` multiply-adds in all): for a
    /// server that wants its first queries as fast as the later ones. Does nothing for other
    /// indexes, or for lists already done.
    pub fn precompute_terms(&self) {
        (0..self.tables.slot_terms.len())
            .into_par_iter()
            .for_each(|j| {
                self.list_slot_terms(j);
            });
    }

    /// The L2 item terms of list `j`'s slots, computed on first use.
    fn list_slot_terms(&self, j: usize) -> &[f32] {
        self.tables.slot_terms[j].get_or_init(|| l2_slot_terms(&self.view, j))
    }

    /// Searches a batch of queries: `queries` holds `n` rows of `dim` values, and row `i`'s
    /// results go to `ids[i·k..(i+1)·k]` and `scores[i·k..(i+1)·k]`, as
    /// [`Searcher::search_one`] writes them. Chunks of up to 64 queries are rotated, scored
    /// against the coarse centroids and given their lookup tables by matrix products, then
    /// scanned one query at a time, or (a fast-scan index with long lists) in groups of up to
    /// 1,024 queries, list by list, so that each probed list is read from memory once for the
    /// group. Queries are split into `par`'s tasks at multiples of the chunk, so the results do
    /// not depend on `par`; they equal `search_one`'s up to float rounding (the dot products are
    /// summed in another order).
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
        self.search_batch_excluding(queries, &[], params, ids, scores, par)
    }

    /// [`search_batch`](Self::search_batch) with items left out per query: row `i` never
    /// returns the ids in `excluded[i]` (any order) and returns its `k` best other items
    /// (fewer only when its probed lists hold fewer). The filter sits in the top-k selection,
    /// so leaving out a user's history costs a binary search per candidate that would
    /// otherwise enter the results, not a larger `k`. `excluded` holds one slice per query, or
    /// none at all (nothing excluded).
    ///
    /// # Errors
    /// As [`search_batch`](Self::search_batch), and [`SearchError::DimensionMismatch`] when
    /// `excluded` is neither empty nor one slice per query.
    pub fn search_batch_excluding(
        &self,
        queries: &[f32],
        excluded: &[&[u64]],
        params: &SearchParams,
        ids: &mut [i64],
        scores: &mut [f32],
        par: Par,
    ) -> Result<(), SearchError> {
        self.search_batch_in_groups(queries, excluded, params, ids, scores, par, None)
    }

    /// [`search_batch_excluding`](Self::search_batch_excluding), scanning `group` queries
    /// together (a multiple of the chunk) instead of [`SearchIndex::group_rows`]'s choice.
    #[allow(clippy::too_many_arguments)]
    fn search_batch_in_groups(
        &self,
        queries: &[f32],
        excluded: &[&[u64]],
        params: &SearchParams,
        ids: &mut [i64],
        scores: &mut [f32],
        par: Par,
        group: Option<usize>,
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
        if !excluded.is_empty() && excluded.len() != n {
            return Err(SearchError::DimensionMismatch {
                what: "excluded id lists (one per query)",
                expected: n,
                got: excluded.len(),
            });
        }
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
        let group = group.unwrap_or_else(|| self.group_rows(chunk));
        let run = |part: BatchPart<'_>| {
            // Scratch for at most one group, no more rows than this part has (a one-query
            // call should not allocate and zero 64 queries' lookup tables).
            let mut batch = Batch::new(self, group.min(part.scales.len()));
            for (c, (((q, s), i), o)) in part
                .queries
                .chunks(group * dim)
                .zip(part.scales.chunks(group))
                .zip(part.ids.chunks_mut(group * k))
                .zip(part.scores.chunks_mut(group * k))
                .enumerate()
            {
                let x = part.excluded.get(c * group..).unwrap_or(&[]);
                batch.run(q, s, &x[..x.len().min(group)], params, chunk, i, o);
            }
        };
        let parts = queries
            .chunks(rows * dim)
            .zip(scales.chunks(rows))
            .zip(ids.chunks_mut(rows * k))
            .zip(scores.chunks_mut(rows * k))
            .enumerate()
            .map(|(t, (((queries, scales), ids), scores))| BatchPart {
                queries,
                scales,
                excluded: excluded
                    .get(t * rows..)
                    .map_or(&[][..], |x| &x[..x.len().min(rows)]),
                ids,
                scores,
            });
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

    /// Queries a batch scans together, a multiple of `chunk`. For a fast-scan index whose lists
    /// average more than [`GROUP_LIST_BYTES`] of ids and codes, as many as fit [`GROUP_BYTES`]
    /// (dot products and tables), up to [`GROUP_ROWS`], so that a list probed by several of
    /// them is read from memory once for all. Otherwise `chunk`, scanned query by query: short
    /// lists come into cache ahead of their scan anyway (and an 8-bit query's table, larger
    /// than such a list, stays in cache over its lists).
    fn group_rows(&self, chunk: usize) -> usize {
        let p = self.view.params();
        let list_bytes = self.view.slot_ids().len() / p.n_lists.max(1)
            * (size_of::<u64>() + p.n_subspaces.div_ceil(2));
        if !self.tables.fast_scan || list_bytes <= GROUP_LIST_BYTES {
            return chunk;
        }
        let row_bytes = (self.table_len() + p.n_lists) * size_of::<f32>();
        let rows = (GROUP_BYTES / row_bytes).min(GROUP_ROWS);
        (rows / chunk).max(1) * chunk
    }

    /// Entries of one query's lookup table, `M × stride`.
    fn table_len(&self) -> usize {
        self.view.params().n_subspaces * self.tables.stride
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
        match &self.tables.rotation_blocks {
            None => {
                out[..dim].copy_from_slice(&scaled[..dim]);
                out[dim..].fill(0.0);
            }
            Some(r) => r.dots(self.tables.arch, &scaled[..dim], out),
        }
    }

    /// The coarse dot products `⟨q', v_j⟩` (`dots` has `n_lists` values) and the lookup table
    /// `table[m·stride + k] = scale · ⟨q'^(m), c^(m)_k⟩` of one prepared query; `scaled` is
    /// `padded_dim` values of scratch.
    fn tables_one(&self, query: &[f32], scaled: &mut [f32], dots: &mut [f32], table: &mut [f32]) {
        let p = self.view.params();
        let sub = p.sub_dim();
        self.tables
            .centroid_blocks
            .dots(self.tables.arch, query, dots);
        let scale = self.table_scale();
        for (s, &q) in scaled.iter_mut().zip(query) {
            *s = scale * q;
        }
        for ((x, book), row) in scaled
            .chunks_exact(sub)
            .zip(&self.tables.codebook_blocks)
            .zip(table.chunks_exact_mut(self.tables.stride))
        {
            book.dots(self.tables.arch, x, row);
        }
    }

    /// Keeps in `probes` the `nprobe` lists `probe` chooses from a query's coarse dot products
    /// `dots` (`probes.sorted()` gives them best first); `keys` is scratch.
    ///
    /// The keys are computed in one pass. The keys then split into `nprobe` runs, and the
    /// largest of the runs' minima is a first threshold: `nprobe` keys do not exceed it, so
    /// the lists chosen are those a full selection chooses. Then the keys are compared with
    /// the threshold 16 at a time, and only the lanes that pass (a few times `nprobe`) are
    /// offered.
    fn select_lists(
        &self,
        dots: &[f32],
        nprobe: usize,
        probe: Probe,
        probes: &mut TopK,
        keys: &mut Vec<f32>,
    ) {
        const CHUNK: usize = 16;
        let p = self.view.params();
        probes.reset(nprobe.min(p.n_lists));
        let norms = &self.tables.centroid_norms;
        keys.clear();
        if probe.resolve(p.metric) == Probe::L2 {
            keys.extend(dots.iter().zip(norms).map(|(&dot, &norm)| norm - 2.0 * dot));
        } else {
            keys.extend(dots[..norms.len()].iter().map(|&dot| -dot));
        }
        let mut threshold = probes.threshold();
        if let Some(bound) = largest_run_minimum(keys, nprobe) {
            threshold = threshold.min(bound);
        }
        for (c, chunk) in keys.chunks(CHUNK).enumerate() {
            let mut mask = chunk.iter().enumerate().fold(0u32, |mask, (i, &key)| {
                mask | (u32::from(key <= threshold) << i)
            });
            // Lanes that passed the threshold the chunk started with; it falls as they enter.
            while mask != 0 {
                let i = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if chunk[i] <= threshold {
                    probes.push(chunk[i], (c * CHUNK + i) as u64);
                    threshold = threshold.min(probes.threshold());
                }
            }
        }
    }

    /// The lists a search of `query` with `nprobe` and `probe` scans, in the order it scans
    /// them (best first): for diagnostics of the coarse level.
    ///
    /// # Errors
    /// As [`Searcher::search_one`]'s query checks, and [`SearchError::InvalidParameter`] for an
    /// `nprobe` of 0.
    pub fn probed_lists(
        &self,
        query: &[f32],
        nprobe: usize,
        probe: Probe,
    ) -> Result<Vec<u32>, SearchError> {
        SearchParams::new(1, nprobe).validate()?;
        let p = self.view.params();
        let scale = self.query_scale(query, 0)?;
        let (mut scaled, mut rotated) = (vec![0.0; p.dim], vec![0.0; p.padded_dim]);
        self.prepare_one(query, scale, &mut scaled, &mut rotated);
        let mut dots = vec![0.0; p.n_lists];
        self.tables
            .centroid_blocks
            .dots(self.tables.arch, &rotated, &mut dots);
        let mut probes = TopK::default();
        self.select_lists(&dots, nprobe, probe, &mut probes, &mut Vec::new());
        Ok(probes.sorted().iter().map(|&(_, j)| j as u32).collect())
    }

    /// Searches one prepared query: `raw` is the query as given (`dim`) and `scale` its factor,
    /// `query` is `q'` (`padded_dim`), `dots` its coarse dot products (at least `n_lists`),
    /// `table` its scaled lookup table (`M × stride`). `excluded` lists ids never returned.
    #[allow(clippy::too_many_arguments)]
    fn scan_one(
        &self,
        scratch: &mut ScanScratch,
        raw: (&[f32], f32),
        query: &[f32],
        dots: &[f32],
        table: &[f32],
        params: &SearchParams,
        excluded: &[u64],
        out: Output<'_>,
    ) -> usize {
        let ScanScratch {
            list_keys,
            probes,
            query: state,
            finish,
        } = scratch;
        self.select_lists(dots, params.nprobe, params.probe, probes, list_keys);
        self.begin_query(state, query, table, params, excluded);
        let probed = probes.sorted();
        if let Some(&(_, first)) = probed.first() {
            self.fetch_list(first as usize, 0, PREFETCH_BYTES);
        }
        for (i, &(_, j)) in probed.iter().enumerate() {
            // Each list is fetched while the list before it is scanned.
            if let Some(&(_, next)) = probed.get(i + 1) {
                self.fetch_list(next as usize, 0, PREFETCH_BYTES);
            }
            let j = j as usize;
            self.scan_list(state, j, dots[j], table);
        }
        self.stage_query(state, params);
        self.finish_query(state, finish, raw, query, params, out)
    }

    /// Whether a search with `params` re-ranks its candidates.
    fn reranks(&self, params: &SearchParams) -> bool {
        self.view.refine().is_some() && params.rerank_factor > 0
    }

    /// Readies `state` for a query whose lists are about to be scanned: its candidates (`k`,
    /// or `k·R` to re-rank), excluded ids, `‖q'‖²` (L2) and, for a fast-scan index scored by
    /// inner product, the query's one quantized table.
    fn begin_query(
        &self,
        state: &mut QueryScan,
        query: &[f32],
        table: &[f32],
        params: &SearchParams,
        excluded: &[u64],
    ) {
        let candidates = if self.reranks(params) {
            params.k.saturating_mul(params.rerank_factor)
        } else {
            params.k
        };
        state.top.reset(candidates);
        if !excluded.is_empty() {
            state.excluded_slots.clear();
            self.slots_of(excluded, &mut state.excluded_slots);
            state.top.exclude(&state.excluded_slots);
        }
        let l2 = self.view.params().metric == Metric::L2;
        state.query_norm = if l2 { squared_norm(query) } else { 0.0 };
        if self.tables.fast_scan && !l2 {
            self.tables
                .kernel
                .quantize4(table, None, &mut state.quantized);
        }
    }

    /// Asks the CPU for the first `bytes` of list `j`'s codes, and for its (fast-scan L2)
    /// table terms, ahead of its scan.
    fn fetch_list(&self, j: usize, from: usize, bytes: usize) {
        let list = self.view.list(j);
        prefetch(list.codes.get(from..).unwrap_or(&[]), bytes);
        if from == 0 && !self.tables.list_terms.is_empty() {
            let len = self.table_len();
            let terms = &self.tables.list_terms[j * len..(j + 1) * len];
            prefetch(bytemuck::cast_slice(terms), PREFETCH_BYTES);
        }
    }

    /// Scans list `j` for the query of `state`, whose coarse dot product with the list's
    /// centroid is `dot` and whose lookup table is `table`, offering its items' slots to
    /// `state.top`.
    fn scan_list(&self, state: &mut QueryScan, j: usize, dot: f32, table: &[f32]) {
        let p = self.view.params();
        let list = self.view.list(j);
        if list.is_empty() {
            return;
        }
        let first_slot = self.view.list_offsets()[j];
        let l2 = p.metric == Metric::L2;
        let bias = if l2 {
            state.query_norm + (self.tables.centroid_norms[j] - 2.0 * dot)
        } else {
            -dot
        };
        let QueryScan { top, quantized, .. } = state;
        if self.tables.fast_scan {
            if l2 {
                let len = table.len();
                let terms = &self.tables.list_terms[j * len..(j + 1) * len];
                self.tables.kernel.quantize4(table, Some(terms), quantized);
            }
            let scan = Scan4 {
                table: quantized,
                n_subspaces: p.n_subspaces,
                bias,
                codes: list.codes,
                n_items: list.len(),
                first_slot,
            };
            self.tables.kernel.scan4(&scan, top);
            return;
        }
        let slot_bias = if l2 { self.list_slot_terms(j) } else { &[][..] };
        let scan = Scan {
            table,
            n_subspaces: p.n_subspaces,
            bias,
            slot_bias,
            codes: list.codes,
            n_items: list.len(),
            first_slot,
        };
        if p.code_width() == 1 {
            self.tables.kernel.scan(&scan, top);
        } else {
            scalar::scan_wide(&scan, self.tables.stride, (p.n_codewords() - 1) as u16, top);
        }
    }

    /// Ends the scan of the query of `state`: fixes its candidates and asks the CPU for what
    /// [`SearchIndex::finish_query`] will read of them, slots scattered over the ids (and the
    /// refinement data), all at once so that their cache misses overlap. A batch stages a
    /// query a few queries ahead of finishing it, so that the misses overlap other work too.
    fn stage_query(&self, state: &mut QueryScan, params: &SearchParams) {
        let rerank = self.reranks(params);
        // Re-ranked candidates are re-scored in any order: no need to sort them.
        state.top.finish(!rerank);
        let candidates = state.top.kept();
        match self.view.refine() {
            Some(refine) if rerank => {
                for &(_, slot) in candidates {
                    prefetch(refine.slot_bytes(slot as usize), usize::MAX);
                }
            }
            _ => {
                let slot_ids = self.view.slot_ids();
                for &(_, slot) in candidates {
                    prefetch(bytemuck::bytes_of(&slot_ids[slot as usize]), 8);
                }
            }
        }
    }

    /// Writes the results of the query of `state`, [staged](SearchIndex::stage_query) once its
    /// lists are scanned: its candidates' ids, re-scored first with the refinement data when
    /// `params` asks to re-rank; returns the number found.
    fn finish_query(
        &self,
        state: &mut QueryScan,
        scratch: &mut FinishScratch,
        (raw, scale): (&[f32], f32),
        query: &[f32],
        params: &SearchParams,
        out: Output<'_>,
    ) -> usize {
        let Output { ids, scores } = out;
        let FinishScratch {
            ranked,
            rescored,
            scaled_raw,
            refined,
            reconstructed,
        } = scratch;
        let candidates = state.top.kept();
        let slot_ids = self.view.slot_ids();
        ranked.reset(params.k);
        if self.reranks(params) {
            scaled_raw.clear();
            scaled_raw.extend(raw.iter().map(|&v| scale * v));
            rescored.clear();
            for &(_, slot) in candidates {
                let key =
                    self.refined_key(slot as usize, scaled_raw, query, refined, reconstructed);
                if !key.is_nan() {
                    rescored.push((key, slot));
                }
            }
            // Only candidates at or below the k-th best new key can be results (ties are
            // decided by id): only their ids, scattered reads, are looked up.
            let cut = match rescored.len().checked_sub(params.k) {
                Some(1..) => {
                    let by_key = |a: &(f32, u64), b: &(f32, u64)| a.0.total_cmp(&b.0);
                    rescored.select_nth_unstable_by(params.k - 1, by_key).1.0
                }
                _ => f32::INFINITY,
            };
            let contenders = || {
                rescored
                    .iter()
                    .filter(|&&(key, _)| key.total_cmp(&cut).is_le())
            };
            for &(_, slot) in contenders() {
                prefetch(bytemuck::bytes_of(&slot_ids[slot as usize]), 8);
            }
            for &(key, slot) in contenders() {
                ranked.push(key, slot_ids[slot as usize]);
            }
        } else {
            for &(key, slot) in candidates {
                ranked.push(key, slot_ids[slot as usize]);
            }
        }
        let best = ranked.sorted();
        let found = best.len();
        let higher = self.view.params().metric.higher_is_better();
        ids.fill(-1);
        scores.fill(if higher {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        });
        for ((&(key, item), id), score) in best.iter().zip(ids).zip(scores) {
            *id = item as i64;
            *score = if higher { -key } else { key };
        }
        found
    }

    /// The key (smaller is better) of slot `slot` scored with the refinement data: exactly,
    /// against `scaled_raw` (`scale · raw`) in the original space, for `f32` / `f16`; against
    /// `q'` in the rotated space for `pq8`, whose vector is the item's reconstruction plus the
    /// decoded residual. Sums in f32, by [`refined_sum`].
    fn refined_key(
        &self,
        slot: usize,
        scaled_raw: &[f32],
        query: &[f32],
        refined: &mut Vec<f32>,
        reconstructed: &mut Vec<f32>,
    ) -> f32 {
        let p = self.view.params();
        let Some(refine) = self.view.refine() else {
            unreachable!("re-ranking only runs on indexes with refinement data")
        };
        let l2 = p.metric == Metric::L2;
        let sum = match refine.kind() {
            RefineKind::F32 | RefineKind::F16 => match refine.f32_row(slot) {
                Some(row) => refined_sum(l2, scaled_raw, row),
                None => {
                    refined.resize(p.dim, 0.0);
                    refine.decode(slot, refined);
                    refined_sum(l2, scaled_raw, refined)
                }
            },
            RefineKind::Pq8 => {
                reconstructed.resize(p.padded_dim, 0.0);
                let (list, pos) = self.view.locate_slot(slot);
                self.view.reconstruct_rotated(list, pos, reconstructed);
                refine.add_residual(slot, reconstructed);
                refined_sum(l2, query, reconstructed)
            }
        };
        if l2 { sum } else { -sum }
    }
}

/// `Σ_i (q_i − x_i)²` (`l2`) or `Σ_i q_i x_i`, in f32, summed in [`REFINE_LANES`] interleaved
/// partial sums (lane `l` takes coordinates `l`, `l + 8`, …) that are then added pairwise: one
/// fixed order, and no chain of dependent additions as long as the vector.
fn refined_sum(l2: bool, q: &[f32], x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; REFINE_LANES];
    let term = |a: f32, b: f32| if l2 { (a - b) * (a - b) } else { a * b };
    let (qc, xc) = (q.chunks_exact(REFINE_LANES), x.chunks_exact(REFINE_LANES));
    let (q_rest, x_rest) = (qc.remainder(), xc.remainder());
    for (qs, xs) in qc.zip(xc) {
        for ((lane, &a), &b) in lanes.iter_mut().zip(qs).zip(xs) {
            *lane += term(a, b);
        }
    }
    for ((lane, &a), &b) in lanes.iter_mut().zip(q_rest).zip(x_rest) {
        *lane += term(a, b);
    }
    let mut width = REFINE_LANES / 2;
    while width > 0 {
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// Where one query's results go.
struct Output<'o> {
    ids: &'o mut [i64],
    scores: &'o mut [f32],
}

/// The scratch of one query's scan.
#[derive(Debug, Default)]
struct ScanScratch {
    /// The key of each list (smaller is better), `n_lists`.
    list_keys: Vec<f32>,
    probes: TopK,
    query: QueryScan,
    finish: FinishScratch,
}

/// One query's state between the choice of its lists and its results.
#[derive(Debug, Default)]
struct QueryScan {
    /// The best candidates so far.
    top: TopK,
    /// Fast-scan: the quantized table (inner product and cosine: the query's, for every list;
    /// L2: the query's plus the list's terms, for the list being scanned).
    quantized: QuantizedTable,
    /// L2: `‖q'‖²`.
    query_norm: f32,
    /// The slots of the query's excluded ids.
    excluded_slots: Vec<u64>,
}

/// Scratch for writing a query's results.
#[derive(Debug, Default)]
struct FinishScratch {
    /// The best `k` by id: the candidates' keys, or their refined keys when re-ranking.
    ranked: TopK,
    /// Re-ranking: the candidates' new keys and their slots.
    rescored: Vec<(f32, u64)>,
    /// Re-ranking: `scale · raw`, the query the float refinement data are scored against.
    scaled_raw: Vec<f32>,
    /// Re-ranking: a candidate's refinement vector.
    refined: Vec<f32>,
    /// Re-ranking with `pq8`: a candidate's reconstruction.
    reconstructed: Vec<f32>,
}

/// Searches one query at a time, reusing its scratch: after the first queries (whose `k` and
/// `nprobe` size the candidate buffers), a search allocates nothing.
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
    /// `⟨q', v_j⟩`, `n_lists`.
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
            dots: vec![0.0; p.n_lists],
            table: vec![0.0; index.table_len()],
            scan: ScanScratch::default(),
        }
    }

    /// The index searched.
    pub fn index(&self) -> &'s SearchIndex<'a> {
        self.index
    }

    /// The `params.k` best items for `query` (`dim` values) among the `params.nprobe` lists
    /// chosen by `params.probe`. Writes ids and scores best first: similarities (higher is
    /// better, descending) for inner product and cosine, squared distances (ascending) for L2.
    /// Equal scores are ordered by id; when more items tie at the k-th score than fit, the scan
    /// keeps those stored first in the index. Returns the number found; the remaining slots get
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
            (query, scale),
            &self.query,
            &self.dots,
            &self.table,
            params,
            &[],
            Output { ids, scores },
        ))
    }
}

/// One parallel task's share of a batch: whole rows of queries with their scales and outputs.
struct BatchPart<'q> {
    queries: &'q [f32],
    scales: &'q [f32],
    /// One slice per query, or empty.
    excluded: &'q [&'q [u64]],
    ids: &'q mut [i64],
    scores: &'q mut [f32],
}

/// The scratch of one batch task: a group of queries' prepared rows, dot products, tables and
/// scan states.
struct Batch<'s, 'a> {
    index: &'s SearchIndex<'a>,
    /// Scaled queries, `rows × dim`.
    scaled: Vec<f32>,
    /// `q'`, `rows × padded_dim`.
    rotated: Vec<f32>,
    /// `⟨q', v_j⟩` of the chunk last prepared, `chunk × n_lists`.
    dots: Vec<f32>,
    /// Lookup tables, `rows × M × stride`.
    tables: Vec<f32>,
    scan: ScanScratch,
    /// Grouped scans: one state per query of the group.
    queries: Vec<QueryScan>,
    /// Grouped scans: `(later, list, row, ⟨q', v_list⟩)` for every list each query probes;
    /// `later` is false for the query's nearest list, scanned in a first pass.
    probes: Vec<(bool, u32, u32, f32)>,
}

impl<'s, 'a> Batch<'s, 'a> {
    fn new(index: &'s SearchIndex<'a>, rows: usize) -> Self {
        let p = index.view.params();
        Self {
            index,
            scaled: vec![0.0; rows * p.dim],
            rotated: vec![0.0; rows * p.padded_dim],
            dots: Vec::with_capacity(rows.min(BATCH_ROWS) * p.n_lists),
            tables: vec![0.0; rows * index.table_len()],
            scan: ScanScratch::default(),
            queries: Vec::new(),
            probes: Vec::new(),
        }
    }

    /// Searches `scales.len()` checked queries (at most the group's rows): their tables by
    /// matrix products over chunks of `chunk` rows, then their scans, query by query or, for a
    /// fast-scan index, list by list. Each chunk's queries choose their lists while its coarse
    /// dot products are in cache (one chunk's worth, not the group's, is kept).
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        queries: &[f32],
        scales: &[f32],
        excluded: &[&[u64]],
        params: &SearchParams,
        chunk: usize,
        ids: &mut [i64],
        scores: &mut [f32],
    ) {
        let index = self.index;
        let p = index.view.params();
        let (b, dim, d, n_lists) = (scales.len(), p.dim, p.padded_dim, p.n_lists);
        let table_len = index.table_len();
        let k_out = params.k;
        let fast_scan = index.tables.fast_scan;
        if fast_scan {
            self.queries.resize_with(b, QueryScan::default);
            self.probes.clear();
        }
        for (c, ((q, s), (ids, scores))) in queries
            .chunks(chunk * dim)
            .zip(scales.chunks(chunk))
            .zip(
                ids.chunks_mut(chunk * k_out)
                    .zip(scores.chunks_mut(chunk * k_out)),
            )
            .enumerate()
        {
            let first = c * chunk;
            self.prepare(q, s, first..first + s.len());
            for (i, (dots, (raw, &scale))) in self
                .dots
                .chunks_exact(n_lists)
                .zip(q.chunks_exact(dim).zip(s))
                .enumerate()
            {
                let row = first + i;
                let query = &self.rotated[row * d..(row + 1) * d];
                let table = &self.tables[row * table_len..(row + 1) * table_len];
                let excluded = excluded.get(row).copied().unwrap_or(&[]);
                if !fast_scan {
                    index.scan_one(
                        &mut self.scan,
                        (raw, scale),
                        query,
                        dots,
                        table,
                        params,
                        excluded,
                        Output {
                            ids: &mut ids[i * k_out..(i + 1) * k_out],
                            scores: &mut scores[i * k_out..(i + 1) * k_out],
                        },
                    );
                    continue;
                }
                // Fast-scan: the query chooses its lists now; they are scanned below.
                let ScanScratch {
                    list_keys, probes, ..
                } = &mut self.scan;
                index.select_lists(dots, params.nprobe, params.probe, probes, list_keys);
                self.probes.extend(
                    probes
                        .sorted()
                        .iter()
                        .enumerate()
                        .map(|(r, &(_, j))| (r > 0, j as u32, row as u32, dots[j as usize])),
                );
                index.begin_query(&mut self.queries[row], query, table, params, excluded);
            }
        }
        if !fast_scan {
            return;
        }
        // Each probed list is scanned for all the queries that probe it while its codes are
        // in cache. Results do not depend on the order lists are scanned in (the top-k keeps
        // the best by key, then slot).
        self.probes
            .sort_unstable_by_key(|&(later, j, row, _)| (later, j, row));
        // The next list, its share of bytes fetched per query of this one, and this one's
        // first probe.
        let mut ahead: Option<(usize, usize, usize)> = None;
        for (i, &(_, j, row, dot)) in self.probes.iter().enumerate() {
            let (j, row) = (j as usize, row as usize);
            if i == 0 {
                index.fetch_list(j, 0, usize::MAX);
            }
            // The next list is fetched in shares, one as each query of this list starts, so
            // that its misses spread over this list's scans.
            if i == 0 || self.probes[i - 1].1 as usize != j {
                let rest = &self.probes[i..];
                let count = rest
                    .iter()
                    .position(|&(_, l, ..)| l as usize != j)
                    .unwrap_or(rest.len());
                ahead = rest.get(count).map(|&(_, next, ..)| {
                    let bytes = index.view.list(next as usize).codes.len();
                    (next as usize, bytes.div_ceil(count), i)
                });
            }
            if let Some((next, share, first)) = ahead {
                index.fetch_list(next, (i - first) * share, share);
            }
            let table = &self.tables[row * table_len..(row + 1) * table_len];
            index.scan_list(&mut self.queries[row], j, dot, table);
        }
        // Each query is staged a few queries before it is finished.
        for state in &mut self.queries[..b.min(STAGE_AHEAD)] {
            index.stage_query(state, params);
        }
        for (row, ((query, (raw, &scale)), (ids, scores))) in self.rotated[..b * d]
            .chunks_exact(d)
            .zip(queries.chunks_exact(dim).zip(scales))
            .zip(
                ids.chunks_exact_mut(k_out)
                    .zip(scores.chunks_exact_mut(k_out)),
            )
            .enumerate()
        {
            if let Some(ahead) = self.queries[..b].get_mut(row + STAGE_AHEAD) {
                index.stage_query(ahead, params);
            }
            index.finish_query(
                &mut self.queries[row],
                &mut self.scan.finish,
                (raw, scale),
                query,
                params,
                Output { ids, scores },
            );
        }
    }

    /// Rotates and tabulates the chunk of queries `queries` (scaled by `scales`) into rows
    /// `rows` of the group's buffers, and scores it against the coarse centroids into the
    /// chunk's dot products.
    fn prepare(&mut self, queries: &[f32], scales: &[f32], rows: std::ops::Range<usize>) {
        let index = self.index;
        let p = index.view.params();
        let (b, dim, d, n_lists) = (rows.len(), p.dim, p.padded_dim, p.n_lists);
        let (m_count, k, sub) = (p.n_subspaces, p.n_codewords(), p.sub_dim());
        let (stride, table_len) = (index.tables.stride, index.table_len());
        let rotated = &mut self.rotated[rows.start * d..rows.end * d];
        match index.rotation() {
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
        let rotated = &self.rotated[rows.start * d..rows.end * d];
        self.dots.resize(b * n_lists, 0.0);
        let dots = &mut self.dots[..];
        faer::linalg::matmul::matmul(
            MatMut::from_row_major_slice_mut(dots, b, n_lists),
            Accum::Replace,
            MatRef::from_row_major_slice(rotated, b, d),
            MatRef::from_row_major_slice(index.view.coarse_centroids(), n_lists, d).transpose(),
            1.0f32,
            Par::Seq,
        );
        let codebooks = index.view.codebooks();
        let tables = &mut self.tables[rows.start * table_len..rows.end * table_len];
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

/// A matrix stored for fast `x M` with one vector `x`: blocks of [`LANES`] columns, each block
/// all rows of its columns, row by row (columns past `n_cols` are zero). A block is one
/// contiguous stream that the product reads once while its [`LANES`] sums stay in registers.
#[derive(Debug, Clone)]
struct ColumnBlocks {
    n_rows: usize,
    n_cols: usize,
    data: Vec<f32>,
}

impl ColumnBlocks {
    /// The `n_rows × n_cols` matrix with entries `at(row, col)`.
    fn new(n_rows: usize, n_cols: usize, at: impl Fn(usize, usize) -> f32) -> Self {
        let n_blocks = n_cols.div_ceil(LANES);
        let mut data = vec![0.0f32; n_blocks * n_rows * LANES];
        for (b, block) in data.chunks_exact_mut(n_rows * LANES).enumerate() {
            for (i, row) in block.chunks_exact_mut(LANES).enumerate() {
                for (l, v) in row.iter_mut().enumerate().take(n_cols - b * LANES) {
                    *v = at(i, b * LANES + l);
                }
            }
        }
        Self {
            n_rows,
            n_cols,
            data,
        }
    }

    /// `out[c] = Σ_i x[i] · M[i][c]` for the first `n_cols` values of `out`, summed in order of
    /// `i`; `x` may be shorter than a column (the missing rows count as zero).
    ///
    /// # Panics
    /// When `x` is longer than a column or `out` shorter than a row.
    #[track_caller]
    fn dots(&self, arch: Arch, x: &[f32], out: &mut [f32]) {
        assert!(x.len() <= self.n_rows, "vector longer than a column");
        arch.dispatch(BlockDots {
            m: self,
            x,
            out: &mut out[..self.n_cols],
        });
    }
}

/// [`ColumnBlocks::dots`] as a [`WithSimd`] operation, so that its loops are compiled for the
/// instruction set chosen at run time (a closure would not be inlined there).
struct BlockDots<'a> {
    m: &'a ColumnBlocks,
    x: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for BlockDots<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self { m, x, out } = self;
        for (block, out) in m
            .data
            .chunks_exact(m.n_rows * LANES)
            .zip(out.chunks_mut(LANES))
        {
            let mut acc = [0.0f32; LANES];
            for (&xi, row) in x.iter().zip(block.chunks_exact(LANES)) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += xi * v;
                }
            }
            if let Some(out) = out.first_chunk_mut::<LANES>() {
                *out = acc;
            } else {
                let n = out.len();
                out.copy_from_slice(&acc[..n]);
            }
        }
    }
}

/// The L2 item terms `e_s = ‖r_s‖² + 2⟨v_j, r_s⟩ = Σ_m ⟨c^(m)_{k_m}, c^(m)_{k_m} + 2 v_j^(m)⟩` of
/// list `j`'s slots (0 for padding), summed in f64. One-byte codes at or above `2^n_bits` (only
/// in a corrupt index) count as zero codewords, as their zero table entries do in the scan;
/// two-byte codes are masked to `n_bits`, as the scan masks them.
fn l2_slot_terms(view: &IndexView<'_>, j: usize) -> Box<[f32]> {
    let p = view.params();
    let (d, k, sub) = (p.padded_dim, p.n_codewords(), p.sub_dim());
    let (centroids, codebooks) = (view.coarse_centroids(), view.codebooks());
    let offsets = view.list_offsets();
    let mut terms = vec![0.0f32; (offsets[j + 1] - offsets[j]) as usize].into_boxed_slice();
    let centroid = &centroids[j * d..(j + 1) * d];
    for (pos, e) in terms[..view.list(j).len()].iter_mut().enumerate() {
        let mut sum = 0.0f64;
        for m in 0..p.n_subspaces {
            let code = view.code(j, pos, m) as usize;
            let code = if p.code_width() == 2 {
                code & (k - 1)
            } else {
                code
            };
            if code >= k {
                continue;
            }
            let word = &codebooks[(m * k + code) * sub..(m * k + code + 1) * sub];
            for (&c, &v) in word.iter().zip(&centroid[m * sub..]) {
                sum += f64::from(c) * (f64::from(c) + 2.0 * f64::from(v));
            }
        }
        *e = sum as f32;
    }
    terms
}

/// The fast-scan L2 list terms `P_j[m][k] = Σ_i c(i) · (c(i) + 2 v_j(i))` over the coordinates
/// of subspace `m` (`c = c^(m)_k`), `n_lists × M × 16`, summed in f64.
fn l2_list_terms(view: &IndexView<'_>) -> Vec<f32> {
    let p = view.params();
    let (d, k, sub, m_count) = (p.padded_dim, p.n_codewords(), p.sub_dim(), p.n_subspaces);
    let (centroids, codebooks) = (view.coarse_centroids(), view.codebooks());
    let mut terms = vec![0.0f32; p.n_lists * m_count * k];
    terms
        .par_chunks_mut(m_count * k)
        .enumerate()
        .for_each(|(j, out)| {
            let centroid = &centroids[j * d..(j + 1) * d];
            for (mk, e) in out.iter_mut().enumerate() {
                let m = mk / k;
                let word = &codebooks[mk * sub..(mk + 1) * sub];
                let mut sum = 0.0f64;
                for (&c, &v) in word.iter().zip(&centroid[m * sub..]) {
                    sum += f64::from(c) * (f64::from(c) + 2.0 * f64::from(v));
                }
                *e = sum as f32;
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

/// With `keys` cut into `runs` runs of `keys.len() / runs` (the rest in none), the largest of
/// the runs' smallest keys: at least `runs` keys (one per run) do not exceed it, unless it is
/// `+∞`. `None` when there are fewer keys than runs, or NaN keys hide a run's minimum.
fn largest_run_minimum(keys: &[f32], runs: usize) -> Option<f32> {
    const LANES: usize = 8;
    let len = keys.len().checked_div(runs).filter(|&len| len > 0)?;
    // One `minps`: its result is always one of its operands, so a run's minimum below is one
    // of the run's keys, `+∞`, or NaN.
    let lesser = |a: f32, b: f32| if a < b { a } else { b };
    let mut bound = f32::NEG_INFINITY;
    for run in keys.chunks_exact(len).take(runs) {
        // Eight running minima (vector lanes), then their minimum.
        let mut lanes = [f32::INFINITY; LANES];
        let mut groups = run.chunks_exact(LANES);
        for group in &mut groups {
            for (lane, &key) in lanes.iter_mut().zip(group) {
                *lane = lesser(*lane, key);
            }
        }
        let least =
            (lanes.iter().chain(groups.remainder())).fold(f32::INFINITY, |a, &b| lesser(a, b));
        if least.is_nan() {
            return None;
        }
        bound = bound.max(least);
    }
    Some(bound)
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
    use crate::refine::encode_float_refine;
    use crate::{IndexMetadata, IndexParams, IndexParts};

    /// A fast-scan index of `n_items` random items in `n_lists` lists, with `f32` refinement
    /// data (the items' vectors are random; the codes need not be theirs).
    fn fast_index(metric: Metric, n_lists: usize, n_items: usize, seed: u64) -> IndexParts {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (dim, m) = (6, 3);
        let params = IndexParams {
            dim,
            padded_dim: dim,
            n_lists,
            n_subspaces: m,
            n_bits: 4,
            metric,
            n_items: 0,
            code_layout: CodeLayout::FastScan4,
        };
        let mut uniform =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let (centroids, codebooks) = (uniform(n_lists * dim), uniform(16 * dim));
        let vectors = uniform(n_items * dim);
        let lists: Vec<u32> = (0..n_items).map(|i| (i * 7 % n_lists) as u32).collect();
        let codes: Vec<u8> = (0..n_items * m).map(|i| (i * 11 % 16) as u8).collect();
        let ids: Vec<u64> = (0..n_items as u64).map(|i| i * 31 % 100_003).collect();
        let mut parts = IndexParts::from_item_codes(
            params,
            None,
            centroids,
            codebooks,
            &lists,
            &codes,
            &ids,
            IndexMetadata::default(),
        )
        .unwrap();
        // The refinement rows in slot order: any vectors serve.
        let slots = parts.ids.len();
        parts.refine = Some(encode_float_refine(
            RefineKind::F32,
            dim,
            &vectors
                .iter()
                .copied()
                .cycle()
                .take(slots * dim)
                .collect::<Vec<_>>(),
        ));
        parts
    }

    /// Scanning many queries list by list gives the same bits as scanning them a chunk at a
    /// time, with and without re-ranking and excluded ids, on one task or two.
    #[test]
    fn grouped_scans_equal_chunked_scans() {
        for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
            let parts = fast_index(metric, 5, 6000, 7);
            let view = parts.view().unwrap();
            let index = SearchIndex::new(view);
            let chunk = index.batch_rows();
            let n = 3 * chunk + 5;
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let queries: Vec<f32> = (0..n * 6).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let excluded: Vec<Vec<u64>> = (0..n as u64).map(|i| vec![i * 31 % 100_003]).collect();
            let excluded: Vec<&[u64]> = excluded.iter().map(Vec::as_slice).collect();
            for (rerank, nprobe) in [(0, 2), (3, 4)] {
                let params = SearchParams::new(7, nprobe).with_rerank_factor(rerank);
                let run = |group: usize, par: Par| {
                    let (mut ids, mut scores) = (vec![0i64; n * 7], vec![0f32; n * 7]);
                    index
                        .search_batch_in_groups(
                            &queries,
                            &excluded,
                            &params,
                            &mut ids,
                            &mut scores,
                            par,
                            Some(group),
                        )
                        .unwrap();
                    (ids, scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>())
                };
                let chunked = run(chunk, Par::Seq);
                assert!(chunked.0.iter().all(|&id| id >= 0));
                for (group, par) in [(4 * chunk, Par::Seq), (2 * chunk, Par::rayon(2))] {
                    assert_eq!(run(group, par), chunked, "{metric:?}, rerank {rerank}");
                }
            }
        }
    }

    /// An index with long lists scans fast-scan batches in groups larger than a chunk.
    #[test]
    fn long_fast_scan_lists_are_scanned_in_groups() {
        let (long, short) = (
            fast_index(Metric::L2, 2, 6000, 1),
            fast_index(Metric::L2, 64, 6000, 1),
        );
        let (long, short) = (
            SearchIndex::new(long.view().unwrap()),
            SearchIndex::new(short.view().unwrap()),
        );
        let chunk = long.batch_rows();
        assert!(long.group_rows(chunk) > chunk);
        assert_eq!(short.group_rows(chunk), chunk);
    }

    /// The runs' largest minimum never has fewer than `runs` keys at or below it, with NaN
    /// keys among them or not, and is missing only when NaN keys hide a run's minimum or the
    /// runs outnumber the keys.
    #[test]
    fn largest_run_minimum_bounds_the_runs_th_smallest_key() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for len in [1, 7, 8, 9, 100, 1024] {
            for nan_share in [0.0, 0.01, 0.3] {
                let keys: Vec<f32> = (0..len)
                    .map(|_| match rng.random_bool(nan_share) {
                        true => f32::NAN,
                        false => f32::from(rng.random_range(0u8..20)),
                    })
                    .collect();
                for runs in [1, 2, 3, 8, 33, len, len + 1] {
                    let bound = largest_run_minimum(&keys, runs);
                    if runs > len {
                        assert_eq!(bound, None);
                        continue;
                    }
                    let run = len / runs;
                    let hidden = keys[..run * runs]
                        .chunks_exact(run)
                        .any(|r| r.iter().all(|k| k.is_nan()));
                    match bound {
                        None => assert!(nan_share > 0.0, "len {len} runs {runs}"),
                        Some(b) if !hidden => {
                            let below = keys.iter().filter(|&&k| k <= b).count();
                            assert!(below >= runs, "len {len} runs {runs}: {below} <= {b}");
                        }
                        Some(b) => assert_eq!(b, f32::INFINITY),
                    }
                    if nan_share == 0.0 {
                        let mut minima: Vec<f32> = keys[..run * runs]
                            .chunks_exact(run)
                            .map(|r| r.iter().copied().fold(f32::INFINITY, f32::min))
                            .collect();
                        minima.sort_by(f32::total_cmp);
                        assert_eq!(bound, minima.last().copied());
                    }
                }
            }
        }
    }

    /// The lists chosen are the `nprobe` smallest keys, ties to the smaller list, NaN keys
    /// never: a full sort's choice, whatever the keys' repeats and NaNs.
    #[test]
    fn chosen_lists_equal_a_full_sort() {
        let n_lists = 300;
        let parts = fast_index(Metric::InnerProduct, n_lists, 600, 5);
        let index = SearchIndex::new(parts.view().unwrap());
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (mut probes, mut keys) = (TopK::default(), Vec::new());
        for nan_share in [0.0, 0.05, 1.0] {
            for nprobe in [1, 2, 8, 37, 150, 299, 300, 400] {
                let dots: Vec<f32> = (0..n_lists)
                    .map(|_| match rng.random_bool(nan_share) {
                        true => f32::NAN,
                        false => f32::from(rng.random_range(0u8..40)),
                    })
                    .collect();
                index.select_lists(&dots, nprobe, Probe::InnerProduct, &mut probes, &mut keys);
                let chosen: Vec<(f32, u64)> = probes.sorted().to_vec();
                let mut all: Vec<(f32, u64)> = (dots.iter().enumerate())
                    .filter(|(_, d)| !d.is_nan())
                    .map(|(j, &d)| (-d, j as u64))
                    .collect();
                all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                all.truncate(nprobe);
                assert_eq!(chosen, all, "nprobe {nprobe}, NaN share {nan_share}");
            }
        }
    }
}
