//! How well an index's coarse level serves the queries: whether the lists a query probes hold
//! its exact best items, whether queries crowd onto small lists, and where the centroids sit
//! relative to their lists' items. The same measures for a post-hoc index and for a jointly
//! trained one, so that a loss at low nprobe can be traced to the coarse level.

use serde::Serialize;

use super::{IdMap, PipelineError};
use crate::pq::Par;
use crate::search::{IndexView, Probe, SearchIndex};
use crate::train::metrics::top_k_inner_product;

/// Coarse-level diagnostics of an index for a set of queries
/// ([`CoarseDiagnostics::measure`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoarseDiagnostics {
    /// The size of the exact top-k whose coverage is measured.
    pub k: usize,
    /// One row per nprobe measured.
    pub coverage: Vec<ProbeCoverage>,
    /// Lists, their sizes, and how many queries probe each one first.
    pub concentration: ProbeConcentration,
    /// `‖v_j‖` over the non-empty lists: minimum, median, maximum.
    pub centroid_norms: [f64; 3],
    /// The root mean square, over items, of the distance between an item's centroid and the
    /// mean of that centroid's list (rotated space): 0 when every centroid is its list's mean,
    /// as k-means leaves it.
    pub centroid_offset: f64,
    /// The root mean square distance between an item and its list's centroid (rotated space).
    pub item_to_centroid: f64,
}

/// What the lists probed at one nprobe hold of the queries' exact best items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProbeCoverage {
    /// Lists probed per query.
    pub nprobe: usize,
    /// Mean over queries of the share of its exact top-k items that lie in the lists it
    /// probes: the recall an exact scan of those lists would reach against brute force.
    pub top_k_share: f64,
    /// Share of queries whose exact best item lies in a probed list.
    pub best_item_share: f64,
}

/// How the queries' first probes spread over the lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeConcentration {
    /// Items in each list.
    pub list_sizes: Vec<usize>,
    /// Queries whose first probe is each list.
    pub first_probes: Vec<usize>,
}

impl ProbeConcentration {
    /// The list most queries probe first (the lowest index on ties), with its query count and
    /// size.
    pub fn most_probed(&self) -> (usize, usize, usize) {
        let (list, &queries) = self
            .first_probes
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
            .unwrap_or((0, &0));
        (
            list,
            queries,
            self.list_sizes.get(list).copied().unwrap_or(0),
        )
    }

    /// The mean size of the list a query probes first, over the mean list size: 1 when
    /// queries probe lists regardless of their size, below 1 when they crowd onto small lists.
    pub fn probed_size_ratio(&self) -> f64 {
        let queries: usize = self.first_probes.iter().sum();
        let items: usize = self.list_sizes.iter().sum();
        if queries == 0 || items == 0 {
            return 0.0;
        }
        let probed: usize = self
            .first_probes
            .iter()
            .zip(&self.list_sizes)
            .map(|(q, s)| q * s)
            .sum();
        let mean_size = items as f64 / self.list_sizes.len() as f64;
        probed as f64 / queries as f64 / mean_size
    }

    /// The share of queries whose first probe is a list of fewer than `k` items: at nprobe 1
    /// they cannot get `k` results, whatever the lists hold.
    pub fn short_first_lists(&self, k: usize) -> f64 {
        let queries: usize = self.first_probes.iter().sum();
        let short: usize = self
            .first_probes
            .iter()
            .zip(&self.list_sizes)
            .filter(|(_, s)| **s < k)
            .map(|(q, _)| q)
            .sum();
        short as f64 / queries.max(1) as f64
    }

    /// Lists holding no item.
    pub fn empty_lists(&self) -> usize {
        self.list_sizes.iter().filter(|&&s| s == 0).count()
    }
}

impl CoarseDiagnostics {
    /// Measures `index` for the queries `query_vectors` (one row each, as searched) against
    /// the exact top-`k` of `item_vectors` (one row per item of the model, in the order `ids`
    /// maps index ids to) by inner product, at each of `nprobes`, probing with `probe`.
    ///
    /// # Errors
    /// [`PipelineError::Mismatch`] when the vectors do not have the index's dimension, an
    /// index id is no item, or `k` or an nprobe is 0; the search's query errors.
    #[allow(clippy::too_many_arguments)]
    pub fn measure(
        index: &SearchIndex<'_>,
        query_vectors: &[f32],
        item_vectors: &[f32],
        ids: &IdMap,
        k: usize,
        nprobes: &[usize],
        probe: Probe,
        par: Par,
    ) -> Result<Self, PipelineError> {
        let dim = index.view().params().dim;
        let whole_rows =
            query_vectors.len().is_multiple_of(dim) && item_vectors.len().is_multiple_of(dim);
        let width = k.min(item_vectors.len() / dim);
        // Bad shapes get their error from `measure_against`.
        let exact = if whole_rows && width > 0 {
            top_k_inner_product(query_vectors, item_vectors, dim, width, par)
        } else {
            Vec::new()
        };
        Self::measure_against(
            index,
            query_vectors,
            item_vectors,
            ids,
            &exact,
            width,
            nprobes,
            probe,
        )
    }

    /// [`measure`](Self::measure) against given exact rankings: `exact` holds `width` item
    /// indices per query, best first (as [`top_k_inner_product`] returns them), so that a
    /// caller who has them already (from a brute-force evaluation) does not compute them
    /// again.
    ///
    /// # Errors
    /// As [`measure`](Self::measure), and [`PipelineError::Mismatch`] when `exact` does not
    /// hold `width` items per query.
    #[allow(clippy::too_many_arguments)]
    pub fn measure_against(
        index: &SearchIndex<'_>,
        query_vectors: &[f32],
        item_vectors: &[f32],
        ids: &IdMap,
        exact: &[u32],
        width: usize,
        nprobes: &[usize],
        probe: Probe,
    ) -> Result<Self, PipelineError> {
        let view = index.view();
        let params = view.params();
        let (dim, p, n_lists) = (params.dim, params.padded_dim, params.n_lists);
        let mismatch = |reason: String| PipelineError::Mismatch { reason };
        if width == 0 || nprobes.contains(&0) {
            return Err(mismatch("k and every nprobe must be at least 1".into()));
        }
        if !query_vectors.len().is_multiple_of(dim) || !item_vectors.len().is_multiple_of(dim) {
            return Err(mismatch(format!(
                "query and item vectors must be whole rows of the index's dimension {dim}"
            )));
        }
        let n_items = item_vectors.len() / dim;
        let n_queries = query_vectors.len() / dim;
        if exact.len() != n_queries * width || exact.iter().any(|&i| i as usize >= n_items) {
            return Err(mismatch(format!(
                "the exact rankings must hold {width} of the {n_items} items for each of the \
                 {n_queries} queries"
            )));
        }
        let (list_of, list_sizes) = list_of_items(view, ids, n_items)?;
        let max_nprobe = nprobes.iter().copied().max().unwrap_or(1).min(n_lists);
        let mut first_probes = vec![0usize; n_lists];
        let mut found = vec![(0usize, 0usize); nprobes.len()];
        let mut probed = vec![usize::MAX; n_lists];
        for (query, best) in query_vectors
            .chunks_exact(dim)
            .zip(exact.chunks_exact(width.max(1)))
        {
            let lists = index.probed_lists(query, max_nprobe, probe)?;
            // `probed[j]`: the rank at which this query probes list j.
            for (rank, &j) in lists.iter().enumerate() {
                probed[j as usize] = rank;
            }
            if let Some(&first) = lists.first() {
                first_probes[first as usize] += 1;
            }
            for (&nprobe, (hits, best_hits)) in nprobes.iter().zip(&mut found) {
                let inside = |item: &&u32| {
                    let list = list_of[**item as usize];
                    list != u32::MAX && probed[list as usize] < nprobe
                };
                *hits += best.iter().filter(inside).count();
                *best_hits += usize::from(best.first().filter(inside).is_some());
            }
            for &j in &lists {
                probed[j as usize] = usize::MAX;
            }
        }
        let denominator = (n_queries * width).max(1) as f64;
        let coverage = nprobes
            .iter()
            .zip(&found)
            .map(|(&nprobe, &(hits, best_hits))| ProbeCoverage {
                nprobe,
                top_k_share: hits as f64 / denominator,
                best_item_share: best_hits as f64 / n_queries.max(1) as f64,
            })
            .collect();

        // Centroids against their lists' items, in the rotated, padded space.
        let centroids = view.coarse_centroids();
        let rotated = rotate(item_vectors, dim, p, view.rotation());
        let mut means = vec![0.0f64; n_lists * p];
        let mut spread = 0.0f64;
        let mut assigned = 0usize;
        for (x, &list) in rotated.chunks_exact(p).zip(&list_of) {
            if list == u32::MAX {
                continue;
            }
            let j = list as usize;
            let v = &centroids[j * p..(j + 1) * p];
            for ((m, &x), &v) in means[j * p..(j + 1) * p].iter_mut().zip(x).zip(v) {
                *m += f64::from(x);
                spread += (f64::from(x) - f64::from(v)).powi(2);
            }
            assigned += 1;
        }
        let mut offset = 0.0f64;
        let mut norms = Vec::new();
        for (j, &size) in list_sizes.iter().enumerate() {
            if size == 0 {
                continue;
            }
            let v = &centroids[j * p..(j + 1) * p];
            let squared: f64 = means[j * p..(j + 1) * p]
                .iter()
                .zip(v)
                .map(|(&m, &v)| (m / size as f64 - f64::from(v)).powi(2))
                .sum();
            offset += size as f64 * squared;
            norms.push(v.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt());
        }
        norms.sort_by(f64::total_cmp);
        let centroid_norms = match norms.len() {
            0 => [0.0; 3],
            n => [norms[0], norms[n / 2], norms[n - 1]],
        };
        let per_item = assigned.max(1) as f64;
        Ok(Self {
            k: width,
            coverage,
            concentration: ProbeConcentration {
                list_sizes,
                first_probes,
            },
            centroid_norms,
            centroid_offset: (offset / per_item).sqrt(),
            item_to_centroid: (spread / per_item).sqrt(),
        })
    }

    /// A few lines for a terminal or a report: coverage per nprobe, the concentration of
    /// first probes and the centroids' placement.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{:>7}  {:>14}  {:>16}",
            "nprobe",
            format!("top-{} inside", self.k),
            "best item inside"
        )];
        for c in &self.coverage {
            lines.push(format!(
                "{:>7}  {:>14.4}  {:>16.4}",
                c.nprobe, c.top_k_share, c.best_item_share
            ));
        }
        let c = &self.concentration;
        let (list, queries, size) = c.most_probed();
        let largest = c.list_sizes.iter().copied().max().unwrap_or(0);
        lines.push(format!(
            "first probes: list {list} takes {queries} of {} queries and holds {size} items \
             (largest list {largest}, empty lists {}); probed list size / mean list size {:.2}; \
             first list under {} items for {:.4} of the queries",
            c.first_probes.iter().sum::<usize>(),
            c.empty_lists(),
            c.probed_size_ratio(),
            self.k,
            c.short_first_lists(self.k)
        ));
        let [low, median, high] = self.centroid_norms;
        lines.push(format!(
            "centroid norms {low:.3} / {median:.3} / {high:.3} (min / median / max); centroid \
             offset from its list's mean {:.4} (RMS over items; item to centroid {:.4})",
            self.centroid_offset, self.item_to_centroid
        ));
        lines
    }
}

/// `[x | 0] R` for every row of `x` (`R` row-major `p × p`), or the zero-padded rows without a
/// rotation.
fn rotate(x: &[f32], dim: usize, p: usize, rotation: Option<&[f32]>) -> Vec<f32> {
    let n = x.len() / dim;
    let mut out = vec![0.0f32; n * p];
    for (o, row) in out.chunks_exact_mut(p).zip(x.chunks_exact(dim)) {
        match rotation {
            None => o[..dim].copy_from_slice(row),
            Some(r) => {
                for (&v, r_row) in row.iter().zip(r.chunks_exact(p)) {
                    for (o, &r) in o.iter_mut().zip(r_row) {
                        *o += v * r;
                    }
                }
            }
        }
    }
    out
}

/// The list of each of `n_items` items (`u32::MAX`: in no list) and each list's size, read
/// from the index; `ids` maps index ids to items.
fn list_of_items(
    view: &IndexView<'_>,
    ids: &IdMap,
    n_items: usize,
) -> Result<(Vec<u32>, Vec<usize>), PipelineError> {
    let n_lists = view.params().n_lists;
    let mut list_of = vec![u32::MAX; n_items];
    let mut list_sizes = vec![0usize; n_lists];
    for (j, size) in list_sizes.iter_mut().enumerate() {
        let list = view.list(j);
        *size = list.len();
        for &id in list.ids {
            let item = ids.index_of(id as i64)? as usize;
            if item >= n_items {
                return Err(PipelineError::Mismatch {
                    reason: format!(
                        "the index holds item {item}, but only {n_items} item vectors were given"
                    ),
                });
            }
            list_of[item] = j as u32;
        }
    }
    Ok((list_of, list_sizes))
}

#[cfg(test)]
mod tests {
    use super::ProbeConcentration;

    #[test]
    fn short_first_lists_count_the_queries_sent_first_to_lists_under_k() {
        let c = ProbeConcentration {
            list_sizes: vec![50, 100, 150, 0],
            first_probes: vec![3, 1, 4, 2],
        };
        // Lists 0 (50 items) and 3 (empty) take 5 of the 10 first probes.
        assert_eq!(c.short_first_lists(100), 0.5);
        assert_eq!(c.short_first_lists(101), 0.6);
        assert_eq!(c.short_first_lists(1), 0.2);
        // (3·50 + 1·100 + 4·150 + 0) / 10 over a mean of 75.
        assert!((c.probed_size_ratio() - 85.0 / 75.0).abs() < 1e-12);
        let none = ProbeConcentration {
            list_sizes: vec![10],
            first_probes: vec![0],
        };
        assert_eq!(none.short_first_lists(100), 0.0);
    }
}
