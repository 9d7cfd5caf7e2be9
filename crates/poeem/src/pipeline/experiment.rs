//! The timed steps of an index comparison, shared by the tutorial and the reproduction runs:
//! train a model, build a post-hoc index on its item embeddings, export a learned index, and
//! measure retrieval through an index at several nprobes.

use std::time::Instant;

use super::{EvalSet, IdMap, PipelineError, export_index};
use crate::build::{BuildConfig, build_index};
use crate::pq::{Par, Progress};
use crate::search::{IndexParts, Probe, SearchIndex, SearchParams};
use crate::train::metrics::RankingMetrics;
use crate::train::{Dataset, Model, TrainConfig, TrainProgress, TrainReport, Trainer};

/// An index made for a comparison, with the time it took.
#[derive(Debug, Clone)]
pub struct TimedIndex {
    /// The index.
    pub parts: IndexParts,
    /// Seconds of each run that made it, from the item embeddings: the whole post-hoc build
    /// (k-means, OPQ, encoding) or the export's encoding with the learned codec.
    pub seconds: Vec<f64>,
    /// Mean squared quantization error of the items over their mean squared norm.
    pub relative_distortion: f64,
}

impl TimedIndex {
    /// The median of [`seconds`](Self::seconds).
    pub fn median_seconds(&self) -> f64 {
        median(&self.seconds)
    }
}

/// Trains a model on `dataset` from scratch, handing `progress` the trainer's reports.
///
/// # Errors
/// The trainer's errors (settings that do not fit the data, such as a warm-up longer than the
/// run).
pub fn train_model(
    config: &TrainConfig,
    dataset: &Dataset,
    progress: &mut dyn FnMut(&TrainProgress),
) -> Result<(Model, TrainReport), PipelineError> {
    let mut trainer = Trainer::new(config.clone(), dataset)?;
    let report = trainer.train(progress)?;
    Ok((trainer.into_model(), report))
}

/// Builds the post-hoc index `config` on `items` (row-major, `dim` wide; item `i` gets id `i`)
/// `runs` times (at least once; every run gives the same index) and keeps each run's time.
/// `progress` sees the first run's quantizer training.
///
/// # Errors
/// The build's errors.
pub fn build_post_hoc(
    items: &[f32],
    dim: usize,
    config: &BuildConfig,
    runs: usize,
    par: Par,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TimedIndex, PipelineError> {
    let mut seconds = Vec::new();
    let mut built = None;
    for run in 0..runs.max(1) {
        let start = Instant::now();
        let result = build_index(items, dim, None, config, par, &mut |p| {
            if run == 0 {
                progress(p);
            }
        })?;
        seconds.push(start.elapsed().as_secs_f64());
        built = Some(result);
    }
    let (parts, report) = built.expect("at least one build");
    Ok(TimedIndex {
        parts,
        seconds,
        relative_distortion: report.relative_distortion,
    })
}

/// Exports the index `model` learned ([`export_index`]) `runs` times (at least once) and keeps
/// the time of each run's encoding; also returns the map from the index's ids to the model's
/// items, and the seconds the last run spent embedding the items.
///
/// # Errors
/// Those of [`export_index`].
pub fn export_timed(
    model: &Model,
    runs: usize,
    par: Par,
) -> Result<(TimedIndex, IdMap, f64), PipelineError> {
    let mut seconds = Vec::new();
    let mut exported = None;
    for _ in 0..runs.max(1) {
        let result = export_index(model, par)?;
        seconds.push(result.1.encode_seconds);
        exported = Some(result);
    }
    let (parts, report) = exported.expect("at least one export");
    let index = TimedIndex {
        parts,
        seconds,
        relative_distortion: report.relative_distortion,
    };
    Ok((
        index,
        IdMap::new(report.item_ids, model.items()),
        report.embed_seconds,
    ))
}

impl EvalSet {
    /// Metrics at each cut-off of `ks` through the index `parts`, once for each nprobe of
    /// `nprobes` (the outer vector follows `nprobes`), lists chosen by `probe`. `queries` holds
    /// one row per evaluated query; `ids` maps the index's ids to the model's items.
    ///
    /// # Errors
    /// A malformed index, and those of [`through_index`](Self::through_index).
    #[allow(clippy::too_many_arguments)]
    pub fn through_index_at(
        &self,
        parts: &IndexParts,
        queries: &[f32],
        ids: &IdMap,
        ks: &[usize],
        nprobes: &[usize],
        probe: Probe,
        par: Par,
    ) -> Result<Vec<Vec<RankingMetrics>>, PipelineError> {
        let index = SearchIndex::new(parts.view()?);
        let k = ks.iter().copied().max().unwrap_or(1);
        nprobes
            .iter()
            .map(|&nprobe| {
                let params = SearchParams::new(k, nprobe).with_probe(probe);
                self.through_index(&index, queries, ids, ks, params, par)
            })
            .collect()
    }
}

/// The median of `values` (NaN for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
