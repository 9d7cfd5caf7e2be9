//! Lloyd's k-means with k-means++ or random-sample initialisation, re-seeding of empty clusters,
//! and results that depend only on the seed, never on the thread count.

use faer::Par;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::centroids::Centroids;
use crate::data::{check_training_rows, sample_rows};
use crate::{PqError, Progress, ProgressFn, Stage};

/// How the first centroids are chosen.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum KMeansInit {
    /// `k` distinct training points drawn uniformly (faiss's default).
    #[default]
    RandomSample,
    /// k-means++ (D² sampling): slower to start, better spread.
    KMeansPlusPlus,
    /// Given row-major `k × dim` centroids (a warm start).
    Centroids(Vec<f32>),
}

/// Settings shared by every k-means run (the number of clusters is set by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansSettings {
    /// Most Lloyd iterations.
    pub max_iter: usize,
    /// Stop when the inertia improves by less than this fraction in one iteration (0 runs all
    /// `max_iter` iterations).
    pub tolerance: f64,
    /// Initialisation.
    pub init: KMeansInit,
    /// Train on a seeded sample of at most `k ×` this many points (`None`: all points).
    pub max_points_per_centroid: Option<usize>,
}

impl Default for KMeansSettings {
    fn default() -> Self {
        Self {
            max_iter: 25,
            tolerance: 1e-4,
            init: KMeansInit::RandomSample,
            max_points_per_centroid: Some(256),
        }
    }
}

/// Settings of one k-means run.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansConfig {
    /// Number of centroids k.
    pub n_clusters: usize,
    /// Iterations, initialisation and sampling.
    pub settings: KMeansSettings,
    /// Seed of every random choice.
    pub seed: u64,
}

impl KMeansConfig {
    /// `n_clusters` centroids with default settings.
    pub fn new(n_clusters: usize) -> Self {
        Self {
            n_clusters,
            settings: KMeansSettings::default(),
            seed: 0,
        }
    }
}

/// What a k-means run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KMeansReport {
    /// Inertia (sum of squared distances to the nearest centroid) at each iteration's assignment,
    /// before that iteration's update; the returned centroids are the last update's means.
    pub inertia: Vec<f64>,
    /// Empty clusters re-seeded, over the whole run.
    pub reseeded: usize,
    /// Points trained on (after sampling).
    pub n_train: usize,
    /// Whether the relative-improvement stop ended the run before `max_iter`.
    pub converged: bool,
}

/// Trained centroids with the report of the run.
#[derive(Debug, Clone)]
pub struct KMeans {
    /// The centroids.
    pub centroids: Centroids,
    /// How training went.
    pub report: KMeansReport,
}

impl KMeans {
    /// Trains on row-major `n × dim` points.
    ///
    /// # Errors
    /// On an empty, ragged or non-finite input, `n_clusters` of 0 or above the number of points,
    /// or warm-start centroids of the wrong shape.
    pub fn train(
        data: &[f32],
        dim: usize,
        config: &KMeansConfig,
        par: Par,
    ) -> Result<Self, PqError> {
        Self::train_with_progress(data, dim, config, par, Stage::KMeans, &mut |_| {})
    }

    /// [`KMeans::train`], reporting each iteration to `progress` under `stage`.
    ///
    /// # Errors
    /// As [`KMeans::train`].
    pub fn train_with_progress(
        data: &[f32],
        dim: usize,
        config: &KMeansConfig,
        par: Par,
        stage: Stage,
        progress: ProgressFn<'_>,
    ) -> Result<Self, PqError> {
        let n = check_training_rows(data, dim, "k-means training data")?;
        let k = config.n_clusters;
        if k == 0 {
            return Err(PqError::InvalidSetting {
                setting: "n_clusters",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        if n < k {
            return Err(PqError::TooFewPoints {
                what: "k-means",
                n_points: n,
                n_centroids: k,
            });
        }
        let settings = &config.settings;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);

        let sampled = settings
            .max_points_per_centroid
            .and_then(|per| sample_rows(data, dim, k.saturating_mul(per.max(1)), &mut rng));
        let train = sampled.as_deref().unwrap_or(data);
        let n_train = train.len() / dim;

        let initial = match &settings.init {
            KMeansInit::RandomSample => sample(&mut rng, n_train, k)
                .into_iter()
                .flat_map(|r| &train[r * dim..(r + 1) * dim])
                .copied()
                .collect(),
            KMeansInit::KMeansPlusPlus => kmeans_plus_plus(train, dim, k, &mut rng, par),
            KMeansInit::Centroids(c) => {
                if c.len() != k * dim {
                    return Err(PqError::DimensionMismatch {
                        what: "initial centroids",
                        expected: k * dim,
                        got: c.len(),
                    });
                }
                if let Some(i) = c.iter().position(|v| !v.is_finite()) {
                    return Err(PqError::NonFinite {
                        what: "initial centroids",
                        row: i / dim,
                        col: i % dim,
                    });
                }
                c.clone()
            }
        };

        let mut centroids = Centroids::from_checked(dim, initial);
        let mut report = KMeansReport {
            n_train,
            ..KMeansReport::default()
        };
        let mut labels = vec![0u32; n_train];
        let mut distances = vec![0.0f32; n_train];
        let max_iter = settings.max_iter.max(1);
        for iteration in 0..max_iter {
            centroids.nearest_batch(train, &mut labels, &mut distances, par);
            let inertia: f64 = distances.iter().map(|&d| f64::from(d)).sum();
            progress(&Progress {
                stage,
                step: iteration + 1,
                total: max_iter,
                objective: inertia,
            });
            let previous = report.inertia.last().copied();
            report.inertia.push(inertia);
            let (means, reseeded) = update_centroids(
                train,
                dim,
                k,
                &labels,
                &mut distances,
                centroids.as_slice(),
                par,
            );
            report.reseeded += reseeded;
            centroids = Centroids::from_checked(dim, means);
            let stalled = previous.is_some_and(|p| p - inertia <= settings.tolerance * p);
            if settings.tolerance > 0.0 && stalled && iteration + 1 < max_iter {
                report.converged = true;
                break;
            }
        }
        Ok(Self { centroids, report })
    }
}

/// The mean of each cluster; an empty cluster takes the point farthest from its centroid among
/// clusters with more than one point (lowest index on ties). Sums run in point order within each
/// cluster, in f64, so the result does not depend on `par`.
fn update_centroids(
    data: &[f32],
    dim: usize,
    k: usize,
    labels: &[u32],
    distances: &mut [f32],
    previous: &[f32],
    par: Par,
) -> (Vec<f32>, usize) {
    // Counting sort of the points by cluster.
    let mut counts = vec![0usize; k];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let mut starts = vec![0usize; k + 1];
    for c in 0..k {
        starts[c + 1] = starts[c] + counts[c];
    }
    let mut order = vec![0u32; labels.len()];
    let mut cursor = starts.clone();
    for (i, &l) in labels.iter().enumerate() {
        order[cursor[l as usize]] = i as u32;
        cursor[l as usize] += 1;
    }

    let mut means = vec![0.0f32; k * dim];
    let mean_of = |(c, mean): (usize, &mut [f32])| {
        let members = &order[starts[c]..starts[c + 1]];
        if members.is_empty() {
            mean.copy_from_slice(&previous[c * dim..(c + 1) * dim]);
            return;
        }
        let mut sum = vec![0.0f64; dim];
        for &i in members {
            for (s, &v) in sum
                .iter_mut()
                .zip(&data[i as usize * dim..(i as usize + 1) * dim])
            {
                *s += f64::from(v);
            }
        }
        let inv = 1.0 / members.len() as f64;
        for (m, s) in mean.iter_mut().zip(sum) {
            *m = (s * inv) as f32;
        }
    };
    match par {
        Par::Seq => means.chunks_exact_mut(dim).enumerate().for_each(mean_of),
        Par::Rayon(_) => means
            .par_chunks_exact_mut(dim)
            .enumerate()
            .for_each(mean_of),
    }

    let empty: Vec<usize> = (0..k).filter(|&c| counts[c] == 0).collect();
    if empty.is_empty() {
        return (means, 0);
    }
    let mut candidates: Vec<u32> = (0..labels.len() as u32).collect();
    candidates.sort_by(|&a, &b| {
        distances[b as usize]
            .total_cmp(&distances[a as usize])
            .then(a.cmp(&b))
    });
    let mut candidates = candidates.into_iter();
    let mut reseeded = 0;
    let mut taken: Vec<usize> = Vec::new();
    for c in empty {
        // A useful seed lies off every centroid (distance > 0), comes from a cluster that keeps
        // a point, and is not a copy of a point already taken in this update.
        let row = |i: usize| &data[i * dim..(i + 1) * dim];
        let Some(point) = candidates.by_ref().find(|&i| {
            let i = i as usize;
            distances[i] > 0.0
                && counts[labels[i] as usize] > 1
                && taken.iter().all(|&t| row(t) != row(i))
        }) else {
            break;
        };
        let point = point as usize;
        taken.push(point);
        counts[labels[point] as usize] -= 1;
        counts[c] = 1;
        distances[point] = 0.0;
        means[c * dim..(c + 1) * dim].copy_from_slice(&data[point * dim..(point + 1) * dim]);
        reseeded += 1;
    }
    (means, reseeded)
}

/// k-means++: the first centroid uniformly, each next one with probability proportional to the
/// squared distance to the nearest centroid chosen so far.
fn kmeans_plus_plus(
    data: &[f32],
    dim: usize,
    k: usize,
    rng: &mut ChaCha8Rng,
    par: Par,
) -> Vec<f32> {
    let n = data.len() / dim;
    let mut chosen = Vec::with_capacity(k * dim);
    let first = rng.random_range(0..n);
    chosen.extend_from_slice(&data[first * dim..(first + 1) * dim]);
    let mut nearest = vec![f32::INFINITY; n];
    for c in 1..k {
        let latest = &chosen[(c - 1) * dim..c * dim];
        let update = |(x, d): (&[f32], &mut f32)| {
            let dist: f32 = x.iter().zip(latest).map(|(a, b)| (a - b) * (a - b)).sum();
            *d = d.min(dist);
        };
        match par {
            Par::Seq => data
                .chunks_exact(dim)
                .zip(nearest.iter_mut())
                .for_each(update),
            Par::Rayon(_) => data
                .par_chunks_exact(dim)
                .zip(nearest.par_iter_mut())
                .with_min_len(1024)
                .for_each(update),
        }
        let total: f64 = nearest.iter().map(|&d| f64::from(d)).sum();
        let next = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, &d) in nearest.iter().enumerate() {
                target -= f64::from(d);
                if target < 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        } else {
            // Every point coincides with a chosen centroid: any point will do.
            rng.random_range(0..n)
        };
        chosen.extend_from_slice(&data[next * dim..(next + 1) * dim]);
    }
    chosen
}

/// Mean squared norm of the rows of `data`: the inertia of a single centroid at the origin, a
/// scale for relative comparisons.
pub fn mean_squared_norm(data: &[f32], dim: usize) -> f64 {
    let n = data.len() / dim.max(1);
    if n == 0 {
        return 0.0;
    }
    // Eight independent f64 sums over the whole buffer (the rows' boundaries do not matter to
    // the total), which vectorise where one running sum would wait on each addition.
    let mut lanes = [0.0f64; 8];
    let blocks = data[..n * dim].chunks_exact(8);
    let tail: f64 = blocks
        .remainder()
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum();
    for block in blocks {
        for (lane, &v) in lanes.iter_mut().zip(block) {
            *lane += f64::from(v) * f64::from(v);
        }
    }
    (lanes.iter().sum::<f64>() + tail) / n as f64
}
