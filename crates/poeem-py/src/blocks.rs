//! Building blocks for people who assemble their own index: `poeem.KMeans` and
//! `poeem.IvfPqCodec`.

use numpy::ndarray::{Array1, Array2};
use numpy::prelude::*;
use numpy::{PyReadonlyArray2, PyUntypedArray};
use poeem::build::{BuildError, BuildOptions, index_from_codec};
use poeem::pq::{
    Centroids, CoarseQuantizer, IvfPqCodec as RsCodec, KMeans as RsKMeans, KMeansConfig,
    KMeansInit, KMeansSettings, OpqConfig, PqTraining, ProductQuantizer, Stage, train_opq,
};
use poeem::rotation::Rotation;
use poeem::search::format::encode_index;
use poeem::search::{Index as RsIndex, Metric};
use pyo3::prelude::*;

use crate::arrays::{Rows, float_rows};
use crate::build::interruptible;
use crate::errors::{build_error, invalid, pq_error, search_error};
use crate::index::Index;
use crate::par;

/// `NonFinite`-style check for the calls whose Rust side assumes finite input.
fn check_finite(rows: &Rows<'_>, what: &str) -> PyResult<()> {
    match rows.data().iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(at) => Err(invalid(format!(
            "{what}: row {}, column {} is not finite",
            at / rows.dim,
            at % rows.dim
        ))),
    }
}

/// Lloyd's k-means (faiss's method: random-sample or k-means++ initialisation, at most
/// `max_points_per_centroid × n_clusters` sampled training points, empty clusters re-seeded).
/// Results depend on the seed only, never on the thread count.
///
/// `KMeans(n_clusters, *, max_iter=25, tolerance=1e-4, init="random", max_points_per_centroid=256,
/// seed=0)`; `fit(x)`, then `centroids`, `inertia`, `assign(x)`.
#[derive(Debug)]
#[pyclass(module = "poeem")]
pub struct KMeans {
    config: KMeansConfig,
    fitted: Option<RsKMeans>,
}

#[pymethods]
impl KMeans {
    #[new]
    #[pyo3(signature = (n_clusters, *, max_iter = 25, tolerance = 1e-4, init = "random",
                        max_points_per_centroid = Some(256), seed = 0))]
    fn new(
        n_clusters: usize,
        max_iter: usize,
        tolerance: f64,
        init: &str,
        max_points_per_centroid: Option<usize>,
        seed: u64,
    ) -> PyResult<Self> {
        let init = match init {
            "random" => KMeansInit::RandomSample,
            "kmeans++" | "k-means++" => KMeansInit::KMeansPlusPlus,
            other => {
                return Err(invalid(format!(
                    "init = {other}: expected \"random\" or \"kmeans++\""
                )));
            }
        };
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(invalid(format!(
                "tolerance = {tolerance}: must be a finite number of at least 0"
            )));
        }
        if max_points_per_centroid == Some(0) {
            return Err(invalid(
                "max_points_per_centroid = 0: must be at least 1 (or None)",
            ));
        }
        Ok(Self {
            config: KMeansConfig {
                n_clusters,
                settings: KMeansSettings {
                    max_iter,
                    tolerance,
                    init,
                    max_points_per_centroid,
                },
                seed,
            },
            fitted: None,
        })
    }

    /// Trains on the rows of `x` ((n, dim) float32/float64, converted once); returns `self`.
    #[pyo3(signature = (x, *, threads = None, progress = false))]
    fn fit<'py>(
        mut slf: PyRefMut<'py, Self>,
        x: &Bound<'py, PyAny>,
        threads: Option<usize>,
        progress: bool,
    ) -> PyResult<PyRefMut<'py, Self>> {
        let py = x.py();
        let par = par(threads)?;
        let rows = float_rows(x, "x", None, false)?;
        let (data, dim, config) = (rows.data(), rows.dim, &slf.config);
        let fitted = interruptible(py, progress, |callback| {
            RsKMeans::train_with_progress(data, dim, config, par, Stage::KMeans, callback)
        })?
        .map_err(pq_error)?;
        slf.fitted = Some(fitted);
        Ok(slf)
    }

    /// The `(n_clusters, dim)` float32 centroids.
    #[getter]
    fn centroids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = &self.fitted()?.centroids;
        Ok(
            Array2::from_shape_vec((c.len(), c.dim()), c.as_slice().to_vec())
                .expect("k × dim")
                .into_pyarray(py)
                .into_any(),
        )
    }

    /// The inertia (sum of squared distances to the nearest centroid) at each iteration.
    #[getter]
    fn inertia(&self) -> PyResult<Vec<f64>> {
        Ok(self.fitted()?.report.inertia.clone())
    }

    /// The number of clusters.
    #[getter]
    fn n_clusters(&self) -> usize {
        self.config.n_clusters
    }

    /// `labels, distances = kmeans.assign(x)`: each row's nearest centroid (int64, ties to the
    /// lowest index) and its squared distance (float32).
    #[pyo3(signature = (x, *, threads = None))]
    fn assign<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        threads: Option<usize>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let fitted = self.fitted()?;
        let par = par(threads)?;
        let rows = float_rows(x, "x", Some(fitted.centroids.dim()), true)?;
        check_finite(&rows, "x")?;
        let (data, n) = (rows.data(), rows.n);
        let (labels, distances) = py.detach(|| {
            let mut labels = vec![0u32; n];
            let mut distances = vec![0.0f32; n];
            fitted
                .centroids
                .nearest_batch(data, &mut labels, &mut distances, par);
            (labels, distances)
        });
        let labels: Array1<i64> = labels.into_iter().map(i64::from).collect();
        Ok((
            labels.into_pyarray(py).into_any(),
            Array1::from_vec(distances).into_pyarray(py).into_any(),
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "poeem.KMeans(n_clusters={}, max_iter={}, seed={}{})",
            self.config.n_clusters,
            self.config.settings.max_iter,
            self.config.seed,
            if self.fitted.is_some() {
                ", fitted"
            } else {
                ""
            }
        )
    }
}

impl KMeans {
    fn fitted(&self) -> PyResult<&RsKMeans> {
        self.fitted
            .as_ref()
            .ok_or_else(|| invalid("this KMeans is not fitted yet: call fit(x) first"))
    }
}

/// An IVF-PQ codec (coarse lists, product quantizer, optional OPQ rotation): the quantizers of
/// an index without the index. `IvfPqCodec.train(x, n_lists=..., n_subspaces=...)` trains one
/// the way `build_index` does; `encode(x)` gives `(lists, codes)`, `decode(lists, codes)` the
/// reconstructions.
#[derive(Debug)]
#[pyclass(frozen, module = "poeem")]
pub struct IvfPqCodec {
    codec: RsCodec,
}

/// Codes as numpy arrays: `uint8` up to 8 bits, `uint16` above.
fn codes_array<'py>(
    py: Python<'py>,
    codes: Vec<u16>,
    n: usize,
    m: usize,
    wide: bool,
) -> Bound<'py, PyAny> {
    if wide {
        Array2::from_shape_vec((n, m), codes)
            .expect("n × M")
            .into_pyarray(py)
            .into_any()
    } else {
        Array2::from_shape_vec((n, m), codes.into_iter().map(|c| c as u8).collect())
            .expect("n × M")
            .into_pyarray(py)
            .into_any()
    }
}

#[pymethods]
impl IvfPqCodec {
    /// Trains on `x` with the settings of `build_index` (codebooks fitted on residuals; with
    /// `opq=True` a rotation learned by OPQ first). `n_lists=0` trains a flat PQ (one list at
    /// the origin).
    #[staticmethod]
    #[pyo3(signature = (x, *, n_lists, n_subspaces, n_bits = BuildOptions::DEFAULT_N_BITS,
                        opq = false, opq_rounds = BuildOptions::DEFAULT_OPQ_ROUNDS,
                        kmeans_iterations = BuildOptions::DEFAULT_KMEANS_ITERATIONS, seed = 0,
                        threads = None, progress = false))]
    #[allow(clippy::too_many_arguments)]
    fn train(
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        n_lists: usize,
        n_subspaces: usize,
        n_bits: u32,
        opq: bool,
        opq_rounds: usize,
        kmeans_iterations: usize,
        seed: u64,
        threads: Option<usize>,
        progress: bool,
    ) -> PyResult<Self> {
        let par = par(threads)?;
        let rows = float_rows(x, "x", None, false)?;
        let build = BuildOptions {
            n_lists,
            n_subspaces,
            n_bits,
            metric: Metric::InnerProduct,
            opq_rounds: opq.then_some(opq_rounds),
            kmeans_iterations,
            seed,
            refine: None,
        }
        .config();
        let mut config = build.codec_config();
        config.pq_training = PqTraining::Residuals;
        let (data, dim) = (rows.data(), rows.dim);
        let opq_config: Option<OpqConfig> = build.opq.clone();
        let codec = interruptible(py, progress, |callback| match &opq_config {
            Some(opq) => train_opq(data, dim, &config, opq, par, callback).map(|(c, _)| c),
            None => RsCodec::train(data, dim, &config, par, callback),
        })?
        .map_err(pq_error)?;
        Ok(Self { codec })
    }

    /// Assembles a codec from learned parts (what `poeem.torch.IndexingLayer` learns):
    /// `coarse_centroids` `(n_lists, padded_dim)` (0 rows: a flat PQ with one list at the
    /// origin), `codebooks` `(n_subspaces, 2**n_bits, padded_dim / n_subspaces)` and an
    /// orthonormal `rotation` `(padded_dim, padded_dim)` (None: the identity). `dim` is the
    /// vectors' dimension before zero padding (default `padded_dim`). The values are kept bit
    /// for bit, so `encode`/`decode` and `index` see exactly these parts.
    #[staticmethod]
    #[pyo3(signature = (coarse_centroids, codebooks, rotation = None, *, dim = None))]
    fn from_parts(
        coarse_centroids: &Bound<'_, PyAny>,
        codebooks: &Bound<'_, PyAny>,
        rotation: Option<&Bound<'_, PyAny>>,
        dim: Option<usize>,
    ) -> PyResult<Self> {
        let book_shape = crate::arrays::shape_of(codebooks, "codebooks")?;
        let [m, k, sub] = book_shape[..] else {
            return Err(invalid(format!(
                "codebooks: expected a 3-D array (n_subspaces, 2**n_bits, sub_dim), got shape \
                 {book_shape:?}"
            )));
        };
        if m == 0 || sub == 0 || !k.is_power_of_two() || k < 2 {
            return Err(invalid(format!(
                "codebooks: shape {book_shape:?}: expected at least one subspace of at least one \
                 value and a power of two (≥ 2) of codewords"
            )));
        }
        let n_bits = k.trailing_zeros();
        let padded = m * sub;
        let flat = codebooks.call_method1("reshape", (m * k, sub))?;
        let books = float_rows(&flat, "codebooks", Some(sub), false)?;
        let coarse = float_rows(coarse_centroids, "coarse_centroids", Some(padded), true)?;
        let rotation = match rotation {
            None => Rotation::identity(padded),
            Some(r) => {
                let r = float_rows(r, "rotation", Some(padded), false)?;
                if r.n != padded {
                    return Err(invalid(format!(
                        "rotation: expected shape ({padded}, {padded}), got ({}, {padded})",
                        r.n
                    )));
                }
                Rotation::from_row_major_exact(padded, r.data().to_vec())
                    .map_err(|e| invalid(format!("rotation: {e}")))?
            }
        };
        let dim = dim.unwrap_or(padded);
        if dim == 0 || poeem::pq::padded_dim(dim, m) != padded {
            return Err(invalid(format!(
                "dim = {dim}: does not pad to the parts' dimension {padded} with {m} subspaces"
            )));
        }
        let pq =
            ProductQuantizer::from_codebooks(padded, m, n_bits, books.data()).map_err(pq_error)?;
        let coarse = if coarse.n == 0 {
            None
        } else {
            let centroids = Centroids::new(padded, coarse.data().to_vec()).map_err(pq_error)?;
            Some(CoarseQuantizer::from_centroids(centroids))
        };
        let codec = RsCodec::from_parts(dim, rotation, coarse, pq).map_err(pq_error)?;
        Ok(Self { codec })
    }

    /// The `(n_lists, padded_dim)` float32 coarse centroids (0 rows for a flat PQ).
    #[getter]
    fn coarse_centroids<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        let p = self.codec.padded_dim();
        let values = self
            .codec
            .coarse()
            .map(|c| c.centroids().as_slice().to_vec())
            .unwrap_or_default();
        Array2::from_shape_vec((values.len() / p, p), values)
            .expect("n_lists × padded_dim")
            .into_pyarray(py)
            .into_any()
    }

    /// The `(n_subspaces, 2**n_bits, padded_dim / n_subspaces)` float32 codebooks.
    #[getter]
    fn codebooks<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        let pq = self.codec.pq();
        numpy::ndarray::Array3::from_shape_vec(
            (pq.n_subspaces(), pq.n_codewords(), pq.sub_dim()),
            pq.codebooks_flat(),
        )
        .expect("M × K × sub_dim")
        .into_pyarray(py)
        .into_any()
    }

    /// The `(padded_dim, padded_dim)` float32 rotation (rows: `x ↦ x R`; the identity when the
    /// codec has none).
    #[getter]
    fn rotation<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        let r = self.codec.rotation();
        Array2::from_shape_vec((r.dim(), r.dim()), r.as_slice().to_vec())
            .expect("d × d")
            .into_pyarray(py)
            .into_any()
    }

    /// The dimension after zero padding to a multiple of `n_subspaces`.
    #[getter]
    fn padded_dim(&self) -> usize {
        self.codec.padded_dim()
    }

    /// `lists, codes, rotated, reconstructions = codec.quantize(x)`: `encode` and `decode` in
    /// one call, plus the padded, rotated rows `x R` `(n, padded_dim)` the codes were chosen
    /// for. `reconstructions` equals `decode(*encode(x))` bit for bit. NaN or infinity raises.
    #[pyo3(signature = (x, *, threads = None))]
    #[allow(clippy::type_complexity)]
    fn quantize<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        threads: Option<usize>,
    ) -> PyResult<(
        Bound<'py, PyAny>,
        Bound<'py, PyAny>,
        Bound<'py, PyAny>,
        Bound<'py, PyAny>,
    )> {
        let par = par(threads)?;
        let rows = float_rows(x, "x", Some(self.codec.dim()), true)?;
        check_finite(&rows, "x")?;
        let (data, n, m) = (rows.data(), rows.n, self.n_subspaces());
        let (p, dim) = (self.codec.padded_dim(), self.codec.dim());
        let (lists, codes, rotated, out) = py
            .detach(|| {
                let rotated = self.codec.rotate(data, par)?;
                let mut lists = vec![0u32; n];
                let mut codes = vec![0u16; n * m];
                self.codec.encode(data, &mut lists, &mut codes, par)?;
                let mut out = vec![0.0f32; n * dim];
                self.codec.decode(&lists, &codes, &mut out, par)?;
                Ok::<_, poeem::pq::PqError>((lists, codes, rotated, out))
            })
            .map_err(pq_error)?;
        let lists: Array1<i64> = lists.into_iter().map(i64::from).collect();
        Ok((
            lists.into_pyarray(py).into_any(),
            codes_array(py, codes, n, m, self.n_bits() > 8),
            Array2::from_shape_vec((n, p), rotated)
                .expect("n × padded_dim")
                .into_pyarray(py)
                .into_any(),
            Array2::from_shape_vec((n, dim), out)
                .expect("n × dim")
                .into_pyarray(py)
                .into_any(),
        ))
    }

    /// `codec.index(x, *, ids=None, metric="ip")`: an index of the rows of `x` encoded with this
    /// codec, no k-means (the encode-only export `poeem export` uses; `metric="cosine"`
    /// normalises the rows first). Returns a `poeem.Index` in memory; `save` writes it.
    #[pyo3(signature = (x, *, ids = None, metric = "ip", threads = None))]
    fn index(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        ids: Option<&Bound<'_, PyAny>>,
        metric: &str,
        threads: Option<usize>,
    ) -> PyResult<Index> {
        let metric: Metric = metric.parse().map_err(|e| search_error(e, false))?;
        let par = par(threads)?;
        let rows = float_rows(x, "x", Some(self.codec.dim()), false)?;
        let ids = ids.map(|ids| crate::arrays::ids(ids, "ids")).transpose()?;
        if let Some(ids) = &ids
            && ids.len() != rows.n
        {
            return Err(invalid(format!(
                "ids: {} ids for {} vectors",
                ids.len(),
                rows.n
            )));
        }
        let data = rows.data();
        let built = py.detach(|| -> Result<RsIndex, BuildError> {
            let parts = index_from_codec(
                &self.codec,
                data,
                ids.as_deref(),
                metric,
                poeem::search::IndexMetadata::default(),
                par,
            )?;
            let bytes = encode_index(&parts)?;
            Ok(RsIndex::from_bytes(&bytes)?)
        });
        let index = built.map_err(build_error)?;
        Ok(Index::wrap(py, index, None))
    }

    /// The vectors' dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.codec.dim()
    }

    /// Number of coarse lists.
    #[getter]
    fn n_lists(&self) -> usize {
        self.codec.n_lists()
    }

    /// Number of PQ subspaces.
    #[getter]
    fn n_subspaces(&self) -> usize {
        self.codec.pq().n_subspaces()
    }

    /// Bits per code.
    #[getter]
    fn n_bits(&self) -> u32 {
        self.codec.pq().n_bits()
    }

    /// `lists, codes = codec.encode(x)`: each row's coarse list (int64) and its PQ codes
    /// ((n, n_subspaces), uint8 up to 8 bits, uint16 above).
    #[pyo3(signature = (x, *, threads = None))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        threads: Option<usize>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let par = par(threads)?;
        let rows = float_rows(x, "x", Some(self.codec.dim()), true)?;
        let (data, n, m) = (rows.data(), rows.n, self.n_subspaces());
        let (lists, codes) = py
            .detach(|| {
                let mut lists = vec![0u32; n];
                let mut codes = vec![0u16; n * m];
                self.codec
                    .encode(data, &mut lists, &mut codes, par)
                    .map(|()| (lists, codes))
            })
            .map_err(pq_error)?;
        let lists: Array1<i64> = lists.into_iter().map(i64::from).collect();
        Ok((
            lists.into_pyarray(py).into_any(),
            codes_array(py, codes, n, m, self.n_bits() > 8),
        ))
    }

    /// The reconstructions `(n, dim)` float32 of `(lists, codes)` as `encode` returns them.
    #[pyo3(signature = (lists, codes, *, threads = None))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        lists: &Bound<'py, PyAny>,
        codes: &Bound<'py, PyAny>,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let par = par(threads)?;
        let lists = crate::arrays::ids(lists, "lists")?;
        let n_lists = self.codec.n_lists().max(1);
        if let Some((row, &l)) = lists
            .iter()
            .enumerate()
            .find(|&(_, &l)| l >= n_lists as u64)
        {
            return Err(invalid(format!(
                "lists: list {l} at row {row} is not below n_lists = {n_lists}"
            )));
        }
        let lists: Vec<u32> = lists.into_iter().map(|l| l as u32).collect();
        let codes = codes_u16(
            codes,
            lists.len(),
            self.n_subspaces(),
            1usize << self.n_bits(),
        )?;
        let dim = self.dim();
        let n = lists.len();
        let out = py
            .detach(|| {
                let mut out = vec![0.0f32; n * dim];
                self.codec
                    .decode(&lists, &codes, &mut out, par)
                    .map(|()| out)
            })
            .map_err(pq_error)?;
        Ok(Array2::from_shape_vec((n, dim), out)
            .expect("n × dim")
            .into_pyarray(py)
            .into_any())
    }

    fn __repr__(&self) -> String {
        format!(
            "poeem.IvfPqCodec(IVF{},PQ{}x{}, dim={})",
            self.n_lists(),
            self.n_subspaces(),
            self.n_bits(),
            self.dim()
        )
    }
}

/// `(n, m)` codes of any unsigned/signed integer dtype, each below `n_codewords`, as `u16`.
fn codes_u16(
    codes: &Bound<'_, PyAny>,
    n: usize,
    m: usize,
    n_codewords: usize,
) -> PyResult<Vec<u16>> {
    let is_int = codes
        .cast::<PyUntypedArray>()
        .is_ok_and(|a| matches!(a.dtype().kind(), b'i' | b'u'));
    if !is_int {
        return Err(invalid(
            "codes: expected an integer numpy array of shape (n, n_subspaces)",
        ));
    }
    let array = codes
        .call_method1("astype", ("int64",))
        .map_err(|_| invalid("codes: expected an integer numpy array of shape (n, n_subspaces)"))?;
    let typed: PyReadonlyArray2<'_, i64> = array
        .extract()
        .map_err(|_| invalid("codes: expected a 2-D integer array (n, n_subspaces)"))?;
    let shape = typed.shape();
    if shape != [n, m] {
        return Err(invalid(format!(
            "codes: expected shape ({n}, {m}), got {shape:?}"
        )));
    }
    let values = typed.as_array();
    let mut out = Vec::with_capacity(n * m);
    for ((row, col), &v) in values.indexed_iter() {
        if !(0..n_codewords as i64).contains(&v) {
            return Err(invalid(format!(
                "codes: row {row}, column {col}: code {v} is not below {n_codewords}"
            )));
        }
        out.push(v as u16);
    }
    Ok(out)
}
