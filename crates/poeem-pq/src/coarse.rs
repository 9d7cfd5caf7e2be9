//! The coarse (IVF) quantizer: `n_lists` centroids that split the space into inverted lists.

use faer::Par;

use crate::centroids::Centroids;
use crate::data::check_rows;
use crate::{KMeans, KMeansConfig, KMeansSettings, PqError, ProgressFn, Stage};

/// `n_lists` coarse centroids; a vector belongs to the list of its nearest centroid.
#[derive(Debug, Clone, PartialEq)]
pub struct CoarseQuantizer {
    centroids: Centroids,
}

impl CoarseQuantizer {
    /// Trains `n_lists` centroids by k-means on row-major `n × dim` vectors.
    ///
    /// # Errors
    /// As [`KMeans::train`].
    pub fn train(
        data: &[f32],
        dim: usize,
        n_lists: usize,
        settings: &KMeansSettings,
        seed: u64,
        par: Par,
        progress: ProgressFn<'_>,
    ) -> Result<Self, PqError> {
        let config = KMeansConfig {
            n_clusters: n_lists,
            settings: settings.clone(),
            seed,
        };
        let kmeans = KMeans::train_with_progress(data, dim, &config, par, Stage::Coarse, progress)?;
        Ok(Self {
            centroids: kmeans.centroids,
        })
    }

    /// Wraps trained centroids.
    pub fn from_centroids(centroids: Centroids) -> Self {
        Self { centroids }
    }

    /// Copies the centroids of `lists` from `centroids`, the full row-major
    /// `n_lists × dim` table of new values, in place; see [`Centroids::copy_rows`].
    ///
    /// # Errors
    /// As [`Centroids::copy_rows`]; on error nothing changes.
    pub fn copy_centroids(&mut self, centroids: &[f32], lists: &[u32]) -> Result<(), PqError> {
        self.centroids.copy_rows(centroids, lists)
    }

    /// Number of lists.
    pub fn n_lists(&self) -> usize {
        self.centroids.len()
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.centroids.dim()
    }

    /// The centroids.
    pub fn centroids(&self) -> &Centroids {
        &self.centroids
    }

    /// The list of each row of `data` and its squared distance to the list's centroid.
    ///
    /// # Errors
    /// On a ragged or non-finite input, or output buffers of the wrong length.
    pub fn assign(
        &self,
        data: &[f32],
        lists: &mut [u32],
        distances: &mut [f32],
        par: Par,
    ) -> Result<(), PqError> {
        let n = check_rows(data, self.dim(), "vectors to assign")?;
        if lists.len() != n || distances.len() != n {
            return Err(PqError::DimensionMismatch {
                what: "assignment outputs",
                expected: n,
                got: lists.len().min(distances.len()),
            });
        }
        self.centroids.nearest_batch(data, lists, distances, par);
        Ok(())
    }

    /// The list of each row of `data`, as [`assign`](Self::assign) gives it, without the
    /// distances (which saves a squared norm per row).
    ///
    /// # Errors
    /// On a ragged or non-finite input, or `lists` of the wrong length.
    pub fn assign_lists(&self, data: &[f32], lists: &mut [u32], par: Par) -> Result<(), PqError> {
        let n = check_rows(data, self.dim(), "vectors to assign")?;
        if lists.len() != n {
            return Err(PqError::DimensionMismatch {
                what: "assignment outputs",
                expected: n,
                got: lists.len(),
            });
        }
        self.centroids.nearest_labels(data, lists, par);
        Ok(())
    }

    /// The `out.len()` lists nearest to `query` by L2, nearest first, ties to the lower list
    /// number; `distances` is scratch of `n_lists` values. At most `n_lists` are written; the
    /// number written is returned.
    ///
    /// # Panics
    /// When `query` is not `dim` long or `distances` not `n_lists` long.
    #[track_caller]
    pub fn nearest_lists(&self, query: &[f32], distances: &mut [f32], out: &mut [u32]) -> usize {
        self.centroids.distances_one(query, distances);
        let nprobe = out.len().min(self.n_lists());
        let mut order: Vec<u32> = (0..self.n_lists() as u32).collect();
        let cmp = |a: &u32, b: &u32| {
            distances[*a as usize]
                .total_cmp(&distances[*b as usize])
                .then(a.cmp(b))
        };
        if nprobe < order.len() && nprobe > 0 {
            order.select_nth_unstable_by(nprobe - 1, cmp);
        }
        order.truncate(nprobe);
        order.sort_unstable_by(cmp);
        out[..nprobe].copy_from_slice(&order);
        nprobe
    }
}
