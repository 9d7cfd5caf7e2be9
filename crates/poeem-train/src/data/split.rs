//! Train/test splits of an interaction list.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// (query, item) index pairs.
pub type Pairs = Vec<(u32, u32)>;

/// How interactions are divided into training and held-out pairs.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SplitConfig {
    /// Every pair is for training.
    None,
    /// For each query with at least two interactions, its latest one is held out: the greatest
    /// timestamp, ties (and files without a time column) going to the pair later in the file.
    #[default]
    LeaveLastOut,
    /// `round(test_fraction · n)` pairs chosen uniformly at random (seeded) are held out.
    Random {
        /// The held-out share, in `[0, 1)`.
        test_fraction: f64,
        /// The seed of the choice.
        seed: u64,
    },
}

/// Splits `pairs` (query, item) into (train, test), both in file order. `times`, when given,
/// holds one timestamp per pair; `n_queries` bounds the query indices.
///
/// # Errors
/// [`TrainError::InvalidConfig`] for a test fraction outside `[0, 1)`,
/// [`TrainError::DimensionMismatch`] when `times` is not one per pair,
/// [`TrainError::OutOfRange`] for a query index of `n_queries` or more.
pub fn split_pairs(
    pairs: &[(u32, u32)],
    times: Option<&[f64]>,
    n_queries: usize,
    config: SplitConfig,
) -> Result<(Pairs, Pairs), TrainError> {
    if let Some(times) = times
        && times.len() != pairs.len()
    {
        return Err(TrainError::DimensionMismatch {
            what: "timestamps",
            expected: pairs.len(),
            got: times.len(),
        });
    }
    if let Some(&(q, _)) = pairs.iter().find(|&&(q, _)| q as usize >= n_queries) {
        return Err(TrainError::OutOfRange {
            what: "query",
            index: u64::from(q),
            bound: n_queries as u64,
        });
    }
    let held_out: Vec<bool> = match config {
        SplitConfig::None => vec![false; pairs.len()],
        SplitConfig::LeaveLastOut => {
            let mut count = vec![0u32; n_queries];
            let mut last = vec![usize::MAX; n_queries];
            for (i, &(q, _)) in pairs.iter().enumerate() {
                let q = q as usize;
                count[q] = count[q].saturating_add(1);
                // Later rows win ties, so `>=` on the timestamp.
                let later = match times {
                    Some(t) => last[q] == usize::MAX || t[i] >= t[last[q]],
                    None => true,
                };
                if later {
                    last[q] = i;
                }
            }
            let mut held_out = vec![false; pairs.len()];
            for (q, &i) in last.iter().enumerate() {
                if count[q] >= 2 {
                    held_out[i] = true;
                }
            }
            held_out
        }
        SplitConfig::Random {
            test_fraction,
            seed,
        } => {
            if !(0.0..1.0).contains(&test_fraction) {
                return Err(TrainError::InvalidConfig {
                    name: "test_fraction",
                    value: test_fraction.to_string(),
                    reason: "must be in [0, 1)",
                });
            }
            let n = pairs.len();
            let n_test = ((test_fraction * n as f64).round() as usize).min(n);
            let mut order: Vec<usize> = (0..n).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut held_out = vec![false; n];
            for i in 0..n_test {
                let j = rng.random_range(i..n);
                order.swap(i, j);
                held_out[order[i]] = true;
            }
            held_out
        }
    };
    let mut train = Vec::with_capacity(pairs.len());
    let mut test = Vec::new();
    for (&pair, &out) in pairs.iter().zip(&held_out) {
        if out {
            test.push(pair);
        } else {
            train.push(pair);
        }
    }
    Ok((train, test))
}
