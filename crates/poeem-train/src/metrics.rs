//! Ranking metrics and exact (brute-force) inner-product retrieval.
//!
//! For one query with relevant set `R` and ranked list `r₀, r₁, …` (distinct items), at cut-off
//! `K` with `h` the number of relevant items among the first `K`:
//!
//! - recall@K = `h / |R|`;
//! - precision@K = `h / K` (a list shorter than `K` is not rescaled);
//! - NDCG@K = `Σ_{i<K, rᵢ∈R} 1/log₂(i+2)` divided by its best value `Σ_{i<min(|R|,K)} 1/log₂(i+2)`
//!   (binary relevance).
//!
//! Each is averaged over the queries whose relevant set is not empty. `u32::MAX` in a ranked
//! list marks an empty slot (fewer results than asked for) and is never relevant.

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::data::Dataset;

/// Averaged ranking metrics at one cut-off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    /// The cut-off K.
    pub k: usize,
    /// Queries averaged over (those with at least one relevant item).
    pub n_queries: usize,
    /// Mean recall@K.
    pub recall: f64,
    /// Mean precision@K.
    pub precision: f64,
    /// Mean NDCG@K.
    pub ndcg: f64,
}

/// Sums per-query scores at several cut-offs.
#[derive(Debug, Clone)]
struct Accumulator {
    ks: Vec<usize>,
    /// `discount[i] = 1 / log₂(i + 2)`.
    discount: Vec<f64>,
    n_queries: usize,
    sums: Vec<[f64; 3]>,
    sorted: Vec<u32>,
}

impl Accumulator {
    fn new(ks: &[usize]) -> Result<Self, TrainError> {
        if let Some(&k) = ks.iter().find(|&&k| k == 0) {
            return Err(TrainError::InvalidConfig {
                name: "k",
                value: k.to_string(),
                reason: "a cut-off must be at least 1",
            });
        }
        let max_k = ks.iter().copied().max().unwrap_or(0);
        Ok(Self {
            ks: ks.to_vec(),
            discount: (0..max_k).map(|i| 1.0 / (i as f64 + 2.0).log2()).collect(),
            n_queries: 0,
            sums: vec![[0.0; 3]; ks.len()],
            sorted: Vec::new(),
        })
    }

    fn max_k(&self) -> usize {
        self.discount.len()
    }

    /// Adds one query. `relevant` need not be sorted; repeats count once.
    fn add(&mut self, ranked: impl IntoIterator<Item = u32>, relevant: &[u32]) {
        let mut sorted = std::mem::take(&mut self.sorted);
        let relevant = if relevant.is_sorted_by(|a, b| a < b) {
            relevant
        } else {
            sorted.clear();
            sorted.extend_from_slice(relevant);
            sorted.sort_unstable();
            sorted.dedup();
            &sorted
        };
        let n_relevant = relevant.len();
        self.add_judged(
            ranked,
            |item| relevant.binary_search(&item).is_ok(),
            n_relevant,
        );
        self.sorted = sorted;
    }

    /// Adds one query whose relevant items (`n_relevant` of them) `is_relevant` tells.
    fn add_judged(
        &mut self,
        ranked: impl IntoIterator<Item = u32>,
        is_relevant: impl Fn(u32) -> bool,
        n_relevant: usize,
    ) {
        if n_relevant == 0 {
            return;
        }
        self.n_queries += 1;
        // prefix[i]: hits and DCG over the first i + 1 positions.
        let mut hits = 0usize;
        let mut dcg = 0.0f64;
        let mut prefix: Vec<(usize, f64)> = Vec::with_capacity(self.max_k());
        for (i, item) in ranked.into_iter().take(self.max_k()).enumerate() {
            if is_relevant(item) {
                hits += 1;
                dcg += self.discount[i];
            }
            prefix.push((hits, dcg));
        }
        for (sums, &k) in self.sums.iter_mut().zip(&self.ks) {
            let (h, dcg) = match prefix.len().min(k) {
                0 => (0, 0.0),
                n => prefix[n - 1],
            };
            let ideal: f64 = self.discount[..n_relevant.min(k)].iter().sum();
            sums[0] += h as f64 / n_relevant as f64;
            sums[1] += h as f64 / k as f64;
            sums[2] += dcg / ideal;
        }
    }

    fn finish(self) -> Vec<RankingMetrics> {
        let n = self.n_queries.max(1) as f64;
        self.ks
            .iter()
            .zip(&self.sums)
            .map(|(&k, s)| RankingMetrics {
                k,
                n_queries: self.n_queries,
                recall: s[0] / n,
                precision: s[1] / n,
                ndcg: s[2] / n,
            })
            .collect()
    }
}

/// Metrics at each cut-off of `ks` over `(ranked list, relevant items)` pairs, one per query.
/// Relevant items need not be sorted; repeats count once.
///
/// # Errors
/// [`TrainError::InvalidConfig`] for a cut-off of 0.
pub fn ranking_metrics<'a>(
    lists: impl IntoIterator<Item = (&'a [u32], &'a [u32])>,
    ks: &[usize],
) -> Result<Vec<RankingMetrics>, TrainError> {
    let mut acc = Accumulator::new(ks)?;
    for (ranked, relevant) in lists {
        acc.add(ranked.iter().copied(), relevant);
    }
    Ok(acc.finish())
}

/// [`ranking_metrics`] for relevance given by a rule: one `(ranked list, is relevant, number of
/// relevant items)` per query. Unranked (`u32::MAX`) slots must not be judged relevant.
///
/// # Errors
/// [`TrainError::InvalidConfig`] for a cut-off of 0.
pub fn ranking_metrics_judged<'a, F: Fn(u32) -> bool + 'a>(
    lists: impl IntoIterator<Item = (&'a [u32], F, usize)>,
    ks: &[usize],
) -> Result<Vec<RankingMetrics>, TrainError> {
    let mut acc = Accumulator::new(ks)?;
    for (ranked, is_relevant, n_relevant) in lists {
        acc.add_judged(ranked.iter().copied(), is_relevant, n_relevant);
    }
    Ok(acc.finish())
}

/// Queries per GEMM block (chunks handed to threads are multiples of it, so results do not
/// depend on the thread count).
const QUERY_BLOCK: usize = 64;
/// Items per GEMM block.
const ITEM_BLOCK: usize = 2048;

/// For each query row, the indices of the `k` items of largest inner product, best first,
/// exactly; ties go to the lower item index and NaN scores rank last. Returns
/// `n_queries × min(k, n_items)` indices, row-major. The result does not depend on `par`.
///
/// # Panics
/// When `dim` is 0 or a buffer is not whole rows of `dim`.
#[track_caller]
pub fn top_k_inner_product(
    queries: &[f32],
    items: &[f32],
    dim: usize,
    k: usize,
    par: Par,
) -> Vec<u32> {
    top_k_inner_product_filtered(queries, items, dim, k, par, &|_, _| false)
}

/// [`top_k_inner_product`] skipping the items for which `exclude(query_row, item)` is true.
/// A row with fewer than `min(k, n_items)` admissible items is padded with `u32::MAX`.
///
/// # Panics
/// When `dim` is 0 or a buffer is not whole rows of `dim`.
#[track_caller]
pub fn top_k_inner_product_filtered(
    queries: &[f32],
    items: &[f32],
    dim: usize,
    k: usize,
    par: Par,
    exclude: &(dyn Fn(usize, u32) -> bool + Sync),
) -> Vec<u32> {
    assert!(dim > 0, "dim must be positive");
    assert_eq!(queries.len() % dim, 0, "queries must be whole rows");
    assert_eq!(items.len() % dim, 0, "items must be whole rows");
    let (n_queries, n_items) = (queries.len() / dim, items.len() / dim);
    assert!(
        u32::try_from(n_items).is_ok_and(|n| n < u32::MAX),
        "too many items"
    );
    let width = k.min(n_items);
    let mut out = vec![u32::MAX; n_queries * width];
    if width == 0 {
        return out;
    }
    let threads = match par {
        Par::Seq => 1,
        Par::Rayon(n) => n.get(),
    };
    let rows = n_queries.div_ceil(4 * threads).div_ceil(QUERY_BLOCK).max(1) * QUERY_BLOCK;
    let run = |(chunk, out): (usize, &mut [u32])| {
        let first = chunk * rows;
        let n = out.len() / width;
        top_k_chunk(
            &queries[first * dim..(first + n) * dim],
            first,
            items,
            dim,
            width,
            exclude,
            out,
        );
    };
    match par {
        Par::Seq => out.chunks_mut(rows * width).enumerate().for_each(run),
        Par::Rayon(_) => out.par_chunks_mut(rows * width).enumerate().for_each(run),
    }
    out
}

/// Exact top-`k` of a chunk of query rows (the first being row `first`) into `out`.
fn top_k_chunk(
    queries: &[f32],
    first: usize,
    items: &[f32],
    dim: usize,
    k: usize,
    exclude: &(dyn Fn(usize, u32) -> bool + Sync),
    out: &mut [u32],
) {
    let n_items = items.len() / dim;
    let mut scores = vec![0.0f32; QUERY_BLOCK * ITEM_BLOCK.min(n_items)];
    let mut selectors: Vec<Selector> = (0..QUERY_BLOCK).map(|_| Selector::new(k)).collect();
    for (block, (queries, out)) in queries
        .chunks(QUERY_BLOCK * dim)
        .zip(out.chunks_mut(QUERY_BLOCK * k))
        .enumerate()
    {
        let b = queries.len() / dim;
        let row0 = first + block * QUERY_BLOCK;
        selectors.iter_mut().for_each(Selector::clear);
        for (item_block, items) in items.chunks(ITEM_BLOCK * dim).enumerate() {
            let m = items.len() / dim;
            let scores = &mut scores[..b * m];
            faer::linalg::matmul::matmul(
                MatMut::from_row_major_slice_mut(scores, b, m),
                Accum::Replace,
                MatRef::from_row_major_slice(queries, b, dim),
                MatRef::from_row_major_slice(items, m, dim).transpose(),
                1.0f32,
                Par::Seq,
            );
            let item0 = (item_block * ITEM_BLOCK) as u32;
            for (r, (row, selector)) in scores.chunks_exact(m).zip(&mut selectors).enumerate() {
                for (j, &s) in row.iter().enumerate() {
                    let item = item0 + j as u32;
                    if selector.admits(s) && !exclude(row0 + r, item) {
                        selector.push(s, item);
                    }
                }
            }
        }
        for (selector, out) in selectors.iter_mut().zip(out.chunks_exact_mut(k)) {
            selector.write(out);
        }
    }
}

/// Keeps the best `k` of a stream of (score, index) offered in increasing index order.
#[derive(Debug)]
struct Selector {
    k: usize,
    candidates: Vec<(f32, u32)>,
    /// Once `full`, the k-th best score so far: a later item must beat it strictly.
    threshold: f32,
    full: bool,
}

/// Best first: larger score, then lower index.
fn better(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// NaN ranks last; −0 equals +0.
fn normalise(s: f32) -> f32 {
    if s.is_nan() {
        f32::NEG_INFINITY
    } else {
        s + 0.0
    }
}

impl Selector {
    fn new(k: usize) -> Self {
        Self {
            k,
            candidates: Vec::with_capacity(2 * k),
            threshold: f32::NEG_INFINITY,
            full: false,
        }
    }

    fn clear(&mut self) {
        self.candidates.clear();
        self.threshold = f32::NEG_INFINITY;
        self.full = false;
    }

    /// Whether score `s` could enter the top `k` (items arrive in increasing index order, so
    /// an equal score loses to the kept one).
    fn admits(&self, s: f32) -> bool {
        !self.full || normalise(s) > self.threshold
    }

    fn push(&mut self, s: f32, item: u32) {
        self.candidates.push((normalise(s), item));
        if self.candidates.len() >= 2 * self.k {
            self.shrink();
            self.threshold = self.candidates[self.k - 1].0;
            self.full = true;
        }
    }

    /// Keeps the best `k` candidates, the k-th best last.
    fn shrink(&mut self) {
        if self.candidates.len() > self.k {
            self.candidates.select_nth_unstable_by(self.k - 1, better);
            self.candidates.truncate(self.k);
        }
    }

    /// Writes the kept indices, best first, padding with `u32::MAX`.
    fn write(&mut self, out: &mut [u32]) {
        self.shrink();
        self.candidates.sort_unstable_by(better);
        out.fill(u32::MAX);
        for (o, &(_, item)) in out.iter_mut().zip(&self.candidates) {
            *o = item;
        }
    }
}

/// The held-out pairs of a dataset grouped by query, for evaluation by ranking all items.
///
/// Each query with held-out pairs is one evaluation row: its relevant set is its held-out
/// items. With `exclude_train` (the usual protocol, and the default of callers), the items the
/// query has in training are removed from its ranking, except those that are also held out.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldOut {
    queries: Vec<u32>,
    relevant: Vec<Vec<u32>>,
    excluded: Vec<Vec<u32>>,
}

impl HeldOut {
    /// The held-out queries of `dataset`.
    pub fn new(dataset: &Dataset, exclude_train: bool) -> Self {
        Self::from_pairs(&dataset.train, &dataset.test, exclude_train)
    }

    /// The queries of `test`, with the items of `train` excluded when `exclude_train`.
    pub fn from_pairs(train: &[(u32, u32)], test: &[(u32, u32)], exclude_train: bool) -> Self {
        let mut queries: Vec<u32> = test.iter().map(|&(q, _)| q).collect();
        queries.sort_unstable();
        queries.dedup();
        let row = |q: u32| queries.binary_search(&q).ok();
        let mut relevant = vec![Vec::new(); queries.len()];
        for &(q, i) in test {
            if let Some(r) = row(q) {
                relevant[r].push(i);
            }
        }
        let mut excluded = vec![Vec::new(); queries.len()];
        if exclude_train {
            for &(q, i) in train {
                if let Some(r) = row(q) {
                    excluded[r].push(i);
                }
            }
        }
        for (relevant, excluded) in relevant.iter_mut().zip(&mut excluded) {
            relevant.sort_unstable();
            relevant.dedup();
            excluded.sort_unstable();
            excluded.dedup();
            excluded.retain(|i| relevant.binary_search(i).is_err());
        }
        Self {
            queries,
            relevant,
            excluded,
        }
    }

    /// The evaluated queries, ascending: row `r` of every per-query input is query
    /// `queries()[r]`.
    pub fn queries(&self) -> &[u32] {
        &self.queries
    }

    /// The number of evaluated queries.
    pub fn len(&self) -> usize {
        self.queries.len()
    }

    /// Whether there is nothing to evaluate.
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// The held-out items of row `r`, ascending.
    pub fn relevant(&self, r: usize) -> &[u32] {
        &self.relevant[r]
    }

    /// The items removed from row `r`'s ranking, ascending.
    pub fn excluded(&self, r: usize) -> &[u32] {
        &self.excluded[r]
    }

    /// The largest number of excluded items of a row: a search for `k` plus this many results
    /// leaves at least `k` after exclusion.
    pub fn max_excluded(&self) -> usize {
        self.excluded.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Ranks all items by exact inner product for each row and scores the rankings at each
    /// cut-off of `ks`. `query_vectors` holds one row per [`queries`](Self::queries) entry,
    /// `item_vectors` one row per item.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for `dim` or a cut-off of 0,
    /// [`TrainError::DimensionMismatch`] for buffers of the wrong length.
    pub fn evaluate(
        &self,
        query_vectors: &[f32],
        item_vectors: &[f32],
        dim: usize,
        ks: &[usize],
        par: Par,
    ) -> Result<Vec<RankingMetrics>, TrainError> {
        let acc = Accumulator::new(ks)?;
        if dim == 0 {
            return Err(TrainError::InvalidConfig {
                name: "dim",
                value: "0".to_owned(),
                reason: "must be positive",
            });
        }
        if query_vectors.len() != self.len() * dim {
            return Err(TrainError::DimensionMismatch {
                what: "query vectors",
                expected: self.len() * dim,
                got: query_vectors.len(),
            });
        }
        if !item_vectors.len().is_multiple_of(dim) {
            return Err(TrainError::DimensionMismatch {
                what: "item vectors",
                expected: item_vectors.len() / dim * dim,
                got: item_vectors.len(),
            });
        }
        let k = acc.max_k();
        let exclude = |r: usize, item: u32| self.excluded[r].binary_search(&item).is_ok();
        let rankings =
            top_k_inner_product_filtered(query_vectors, item_vectors, dim, k, par, &exclude);
        let width = k.min(item_vectors.len() / dim);
        Ok(self.score_with(acc, &rankings, width))
    }

    /// Scores given rankings (`width` items per row, row `r` for query `queries()[r]`, e.g.
    /// from an approximate index) at each cut-off of `ks`. Excluded items are removed from
    /// each ranking before it is cut; `u32::MAX` marks an empty slot.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for a cut-off of 0,
    /// [`TrainError::DimensionMismatch`] when `rankings` is not `len() × width`.
    pub fn score_rankings(
        &self,
        rankings: &[u32],
        width: usize,
        ks: &[usize],
    ) -> Result<Vec<RankingMetrics>, TrainError> {
        let acc = Accumulator::new(ks)?;
        if rankings.len() != self.len() * width {
            return Err(TrainError::DimensionMismatch {
                what: "rankings",
                expected: self.len() * width,
                got: rankings.len(),
            });
        }
        Ok(self.score_with(acc, rankings, width))
    }

    fn score_with(
        &self,
        mut acc: Accumulator,
        rankings: &[u32],
        width: usize,
    ) -> Vec<RankingMetrics> {
        for r in 0..self.len() {
            let ranked = rankings[r * width..(r + 1) * width]
                .iter()
                .copied()
                .filter(|i| self.excluded[r].binary_search(i).is_err());
            acc.add(ranked, &self.relevant[r]);
        }
        acc.finish()
    }
}
