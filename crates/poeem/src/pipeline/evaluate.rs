//! Retrieval quality of a model, brute force and through an index.

use std::path::Path;

use super::{DataSource, IdMap, PipelineError};
use crate::pq::Par;
use crate::search::{SearchIndex, SearchParams};
use crate::train::data::{InteractionsSource, TextFormat, read_known_pairs};
use crate::train::metrics::{HeldOut, RankingMetrics, ranking_metrics_judged, top_k_inner_product};
use crate::train::synthetic::ScaledTutorial;
use crate::train::{Dataset, Model};

/// The queries of an evaluation and which items are relevant to each.
#[derive(Debug, Clone)]
pub struct EvalSet {
    queries: Vec<u32>,
    judge: Judge,
}

#[derive(Debug, Clone)]
enum Judge {
    /// A dataset's held-out pairs, the query's training items removed from its ranking.
    HeldOut(HeldOut),
    /// The (scaled) synthetic tutorial's rule over all its items, with how many items are
    /// relevant to each query type.
    Rule {
        rule: ScaledTutorial,
        relevant_counts: Vec<u32>,
    },
}

impl EvalSet {
    /// The held-out pairs of `dataset`: each query with held-out pairs is ranked against all
    /// items, the items it has in training excluded (the usual protocol).
    ///
    /// # Errors
    /// [`PipelineError::Mismatch`] when the dataset has no held-out pairs.
    pub fn held_out(dataset: &Dataset) -> Result<Self, PipelineError> {
        let held_out = HeldOut::new(dataset, true);
        if held_out.is_empty() {
            return Err(PipelineError::Mismatch {
                reason: "the data has no held-out pairs to evaluate on (its split holds none out)"
                    .to_owned(),
            });
        }
        Ok(Self {
            queries: held_out.queries().to_vec(),
            judge: Judge::HeldOut(held_out),
        })
    }

    /// The synthetic tutorial's evaluation: all 10,000 query ids, relevance by its rule
    /// ([`crate::train::synthetic::tutorial_is_relevant`]), no exclusion. Item and query index
    /// `i` must be id `i` (as in [`crate::train::synthetic::tutorial_dataset`]).
    pub fn tutorial() -> Self {
        let rule = ScaledTutorial::TUTORIAL;
        Self::by_rule(rule, (0..rule.queries).collect())
    }

    /// The scaled tutorial's evaluation ([`ScaledTutorial`]): `n_queries` query ids sampled
    /// without replacement (seeded; all of them when there are no more), ascending, relevance
    /// by its rule over all its items, no exclusion.
    pub fn scaled_tutorial(rule: ScaledTutorial, n_queries: usize, seed: u64) -> Self {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let total = rule.queries as usize;
        let mut queries: Vec<u32> = rand::seq::index::sample(&mut rng, total, n_queries.min(total))
            .into_iter()
            .map(|q| q as u32)
            .collect();
        queries.sort_unstable();
        Self::by_rule(rule, queries)
    }

    fn by_rule(rule: ScaledTutorial, queries: Vec<u32>) -> Self {
        Self {
            queries,
            judge: Judge::Rule {
                relevant_counts: rule.relevant_counts(),
                rule,
            },
        }
    }

    /// The evaluation of a model trained on `source`: the tutorial's rule for the tutorial, the
    /// held-out split of the reloaded data files otherwise, or, with `test`, the pairs of that
    /// file (the interactions' layout: the same user and item columns, any format the loader
    /// reads), each user's training items excluded as for the built-in split.
    ///
    /// # Errors
    /// [`PipelineError::Mismatch`] when the data no longer has the model's query and item ids
    /// (the files changed since training), has no held-out pairs, or a test file is given for
    /// the synthetic tutorial; the loader's errors, which for a test file name the first user
    /// or item the model does not know (file, line, column) or the missing column.
    pub fn for_model(
        source: &DataSource,
        model: &Model,
        test: Option<&Path>,
    ) -> Result<Self, PipelineError> {
        let mut dataset = source.load()?;
        if dataset.queries != *model.queries() || dataset.items != *model.items() {
            return Err(PipelineError::Mismatch {
                reason: format!(
                    "the data has {} query and {} item ids, not the {} and {} the model was \
                     trained with (in the same order): the data files changed since training",
                    dataset.n_queries(),
                    dataset.n_items(),
                    model.n_queries(),
                    model.n_items()
                ),
            });
        }
        match (source, test) {
            (DataSource::Tutorial { .. }, None) => Ok(Self::tutorial()),
            (DataSource::Tutorial { .. }, Some(_)) => Err(PipelineError::Mismatch {
                reason: "the model was trained on the synthetic tutorial, whose evaluation is \
                         its relevance rule: a test file does not apply"
                    .to_owned(),
            }),
            (DataSource::Files(_), None) => Self::held_out(&dataset),
            (DataSource::Files(config), Some(path)) => {
                let interactions = InteractionsSource {
                    path: path.to_path_buf(),
                    format: TextFormat::default(),
                    ..config.interactions.clone()
                };
                dataset.test = read_known_pairs(&interactions, &dataset.queries, &dataset.items)?;
                Self::held_out(&dataset)
            }
        }
    }

    /// The evaluated queries (indices into the model's query vocabulary); row `r` of every
    /// per-query input and ranking is query `queries()[r]`.
    pub fn queries(&self) -> &[u32] {
        &self.queries
    }

    /// Extra results to ask an index for beyond the largest cut-off, so that at least that
    /// many remain once each query's training items are removed.
    pub fn extra_results(&self) -> usize {
        match &self.judge {
            Judge::HeldOut(h) => h.max_excluded(),
            Judge::Rule { .. } => 0,
        }
    }

    /// Metrics at each cut-off of `ks` of exact inner-product retrieval: `query_vectors` holds
    /// one row per evaluated query, `item_vectors` one row per item.
    ///
    /// # Errors
    /// [`PipelineError::Train`] for a cut-off of 0 or buffers of the wrong length.
    pub fn brute_force(
        &self,
        query_vectors: &[f32],
        item_vectors: &[f32],
        dim: usize,
        ks: &[usize],
        par: Par,
    ) -> Result<Vec<RankingMetrics>, PipelineError> {
        match &self.judge {
            Judge::HeldOut(h) => Ok(h.evaluate(query_vectors, item_vectors, dim, ks, par)?),
            Judge::Rule { rule, .. } => {
                check_rows(query_vectors, self.queries.len(), dim, "query vectors")?;
                check_rows(item_vectors, rule.items as usize, dim, "item vectors")?;
                let k = ks.iter().copied().max().unwrap_or(1).max(1);
                let rankings = top_k_inner_product(query_vectors, item_vectors, dim, k, par);
                let width = k.min(rule.items as usize);
                self.score(&rankings, width, ks)
            }
        }
    }

    /// [`brute_force`](Self::brute_force) with the model's own embeddings
    /// ([`Model::embed_queries`], [`Model::embed_items`]).
    ///
    /// # Errors
    /// As [`brute_force`](Self::brute_force), and [`PipelineError::Train`] when the queries are
    /// not the model's.
    pub fn brute_force_model(
        &self,
        model: &Model,
        ks: &[usize],
        par: Par,
    ) -> Result<Vec<RankingMetrics>, PipelineError> {
        let queries = model.embed_queries(&self.queries, par)?;
        let all: Vec<u32> = (0..model.n_items() as u32).collect();
        let items = model.embed_items(&all, par)?;
        self.brute_force(&queries, &items, model.dim(), ks, par)
    }

    /// Metrics of given rankings: `width` item indices per evaluated query, best first,
    /// `u32::MAX` for an empty slot. A query's training items are removed before the cut.
    ///
    /// # Errors
    /// [`PipelineError::Train`] for a cut-off of 0 or rankings of the wrong length.
    pub fn score(
        &self,
        rankings: &[u32],
        width: usize,
        ks: &[usize],
    ) -> Result<Vec<RankingMetrics>, PipelineError> {
        match &self.judge {
            Judge::HeldOut(h) => Ok(h.score_rankings(rankings, width, ks)?),
            Judge::Rule {
                rule,
                relevant_counts,
            } => {
                check_rows(rankings, self.queries.len(), width, "rankings")?;
                let lists = self.queries.iter().enumerate().map(|(r, &q)| {
                    let (x, y) = rule.query_type(q);
                    let n_relevant = if q < rule.queries {
                        relevant_counts[(x * rule.base + y) as usize] as usize
                    } else {
                        0
                    };
                    let ranked = &rankings[r * width..(r + 1) * width];
                    (ranked, move |item| rule.is_relevant(q, item), n_relevant)
                });
                Ok(ranking_metrics_judged(lists, ks)?)
            }
        }
    }

    /// Metrics of retrieval through `index` with `params`' nprobe and probe (its `k` is
    /// replaced): the queries (`query_vectors`, one row per evaluated query) are searched for
    /// the largest cut-off plus [`extra_results`](Self::extra_results) items, whose ids `ids`
    /// maps back to item indices.
    ///
    /// # Errors
    /// The search's errors (a query of the wrong dimension, …), [`PipelineError::Mismatch`] for
    /// a result id that is no item of the model, and those of [`score`](Self::score).
    pub fn through_index(
        &self,
        index: &SearchIndex<'_>,
        query_vectors: &[f32],
        ids: &IdMap,
        ks: &[usize],
        params: SearchParams,
        par: Par,
    ) -> Result<Vec<RankingMetrics>, PipelineError> {
        let k = ks.iter().copied().max().unwrap_or(1).max(1) + self.extra_results();
        let params = SearchParams { k, ..params };
        let rankings = index_rankings(index, query_vectors, &params, ids, par)?;
        self.score(&rankings, k, ks)
    }
}

/// Searches `index` for the `params.k` best items of each row of `query_vectors` and returns
/// their item indices (`ids` maps result ids back), `params.k` per row, best first, `u32::MAX`
/// where fewer were found.
///
/// # Errors
/// The search's errors, and [`PipelineError::Mismatch`] for a result id that `ids` does not
/// know.
pub fn index_rankings(
    index: &SearchIndex<'_>,
    query_vectors: &[f32],
    params: &SearchParams,
    ids: &IdMap,
    par: Par,
) -> Result<Vec<u32>, PipelineError> {
    let dim = index.view().params().dim;
    let n = query_vectors.len() / dim.max(1);
    let mut found = vec![-1i64; n * params.k];
    let mut scores = vec![0.0f32; n * params.k];
    index.search_batch(query_vectors, params, &mut found, &mut scores, par)?;
    found.into_iter().map(|id| ids.index_of(id)).collect()
}

/// Checks that `values` holds `rows` rows of `width`.
fn check_rows<T>(
    values: &[T],
    rows: usize,
    width: usize,
    what: &'static str,
) -> Result<(), PipelineError> {
    if values.len() == rows * width {
        Ok(())
    } else {
        Err(crate::train::TrainError::DimensionMismatch {
            what,
            expected: rows * width,
            got: values.len(),
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::synthetic::{TUTORIAL_VOCAB, tutorial_precision};

    #[test]
    fn tutorial_metrics_agree_with_the_tutorial_precision() {
        // A fixed pseudo-random ranking of 120 items per query.
        let width = 120;
        let rankings: Vec<u32> = (0..TUTORIAL_VOCAB as usize * width)
            .map(|i| ((i as u64 * 2_654_435_761) % u64::from(TUTORIAL_VOCAB)) as u32)
            .collect();
        let set = EvalSet::tutorial();
        let metrics = set.score(&rankings, width, &[10, 100]).unwrap();
        assert_eq!(metrics[1].n_queries, TUTORIAL_VOCAB as usize);
        let expected = tutorial_precision(&rankings, width, 100);
        assert!((metrics[1].precision - expected).abs() < 1e-12);
        assert!(metrics.iter().all(|m| (0.0..=1.0).contains(&m.recall)));
        assert!(set.score(&rankings[1..], width, &[10]).is_err());
    }

    #[test]
    fn held_out_needs_held_out_pairs() {
        let empty = Dataset::from_pairs(2, 2, vec![(0, 0), (1, 1)], vec![]).unwrap();
        assert!(EvalSet::held_out(&empty).is_err());
        let data = Dataset::from_pairs(2, 3, vec![(0, 0), (1, 1)], vec![(0, 2)]).unwrap();
        let set = EvalSet::held_out(&data).unwrap();
        assert_eq!(set.queries(), [0]);
        assert_eq!(set.extra_results(), 1);
        // Query 0 ranks its training item 0 first; it is removed, so item 2 is at rank 1.
        let m = set.score(&[0, 2, 1], 3, &[1]).unwrap();
        assert_eq!(m[0].recall, 1.0);
    }
}
