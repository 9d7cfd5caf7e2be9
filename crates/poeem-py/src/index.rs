//! `poeem.Index`: an index file opened for search.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use numpy::ndarray::{Array1, Array2};
use numpy::prelude::*;
use poeem::search::format::write_index;
use poeem::search::{Index as RsIndex, SearchError, SearchParams, Searcher, SharedIndex};
use pyo3::prelude::*;
use pyo3::types::PyInt;

use crate::arrays::{float_rows, ids as ids_array};
use crate::errors::{invalid, search_error};
use crate::par;

/// Queries searched between two checks for Ctrl-C (a multiple of the batch search's chunk of
/// 64, so that the results do not depend on it).
const SIGNAL_ROWS: usize = 64 * 64;

/// An IVF-PQ index, ready to search. Thread-safe: any number of Python threads may search one
/// `Index` at once (the GIL is released while searching).
#[derive(Debug)]
#[pyclass(frozen, module = "poeem")]
pub struct Index {
    shared: SharedIndex,
    /// Where the index was opened from, for `repr`.
    source: Option<PathBuf>,
    /// id → (list, position) of its first slot, built on the first `reconstruct`.
    slots: OnceLock<HashMap<u64, (u32, u32)>>,
}

impl Index {
    /// Wraps an opened or built index (the GIL is released while the search tables are derived).
    pub fn wrap(py: Python<'_>, index: RsIndex, source: Option<PathBuf>) -> Self {
        let shared = py.detach(|| SharedIndex::new(Arc::new(index)));
        Self {
            shared,
            source,
            slots: OnceLock::new(),
        }
    }

    fn index(&self) -> &RsIndex {
        self.shared.index()
    }

    fn slots(&self) -> &HashMap<u64, (u32, u32)> {
        self.slots.get_or_init(|| {
            let view = self.index().view();
            let mut map = HashMap::with_capacity(view.params().n_items);
            for list in 0..view.params().n_lists {
                for (pos, &id) in view.list(list).ids.iter().enumerate() {
                    map.entry(id).or_insert((list as u32, pos as u32));
                }
            }
            map
        })
    }
}

fn open_with(
    py: Python<'_>,
    path: PathBuf,
    how: fn(&std::path::Path) -> Result<RsIndex, SearchError>,
) -> PyResult<Index> {
    let index = py
        .detach(|| how(&path))
        .map_err(|e| search_error(e, true))?;
    Ok(Index::wrap(py, index, Some(path)))
}

#[pymethods]
impl Index {
    /// Memory-maps the index file at `path` (microseconds whatever its size; the operating
    /// system reads the codes in as searches touch them). The file must not be modified in place
    /// while it is open; replacing it (as `save` does) is fine.
    ///
    /// Raises `OSError` (e.g. `FileNotFoundError`) when the file cannot be opened and
    /// `poeem.CorruptIndexError` when it is not a valid index.
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        open_with(py, path, |p| RsIndex::open(p))
    }

    /// Reads the index file at `path` into memory. Raises as `Index.open`.
    #[staticmethod]
    fn read(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        open_with(py, path, |p| RsIndex::read(p))
    }

    /// Writes the index to `path` atomically (a temporary file renamed into place): readers of
    /// `path` see the old file or the new one, never a mix.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let index = self.index();
        py.detach(|| write_index(&path, &index.to_parts()))
            .map_err(|e| search_error(e, false))
    }

    /// Reads every byte and checks every checksum and code (O(file size)); raises
    /// `poeem.CorruptIndexError` for the first problem found.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        let index = self.index();
        py.detach(|| index.verify())
            .map_err(|e| search_error(e, true))
    }

    /// The index's parameters, file version and size, sections and build metadata, as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let index = self.index();
        let mut value =
            serde_json::to_value(index.info()).map_err(|e| invalid(format!("info: {e}")))?;
        value["metadata"] = serde_json::to_value(index.metadata())
            .map_err(|e| invalid(format!("metadata: {e}")))?;
        value["kernel"] = self.shared.kernel().name().into();
        let text = value.to_string();
        py.import("json")?.call_method1("loads", (text,))
    }

    /// Number of items.
    fn __len__(&self) -> usize {
        self.index().params().n_items
    }

    /// The vectors' dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.index().params().dim
    }

    /// The metric: `"ip"`, `"l2"` or `"cosine"`.
    #[getter]
    fn metric(&self) -> &'static str {
        self.index().params().metric.name()
    }

    /// The items' original ids when the index carries them (`poeem export` of a model whose
    /// ids are not all integers, `poeem build --ids F.txt`): a list whose entry `i` is the id of
    /// the item that search returns as `i`; `None` for an index whose integer ids are the
    /// items' own. Raises `poeem.CorruptIndexError` for unreadable keys.
    #[getter]
    fn item_keys(&self) -> PyResult<Option<Vec<String>>> {
        self.index()
            .item_keys()
            .map(|keys| keys.to_vec().map_err(|e| search_error(e, true)))
            .transpose()
    }

    /// Number of coarse lists.
    #[getter]
    fn n_lists(&self) -> usize {
        self.index().params().n_lists
    }

    /// Number of PQ subspaces.
    #[getter]
    fn n_subspaces(&self) -> usize {
        self.index().params().n_subspaces
    }

    /// Bits per PQ code.
    #[getter]
    fn n_bits(&self) -> u32 {
        self.index().params().n_bits
    }

    /// Whether the index holds a rotation (built with OPQ or trained with one).
    #[getter]
    fn rotated(&self) -> bool {
        self.index().view().rotation().is_some()
    }

    fn __repr__(&self) -> String {
        let p = self.index().params();
        let source = match &self.source {
            Some(path) => format!(
                ", {} {:?}",
                if self.index().info().mmapped {
                    "mapped from"
                } else {
                    "read from"
                },
                path.display().to_string()
            ),
            None => String::new(),
        };
        format!(
            "poeem.Index(IVF{},PQ{}x{}{}, metric={:?}, dim={}, n={}{source})",
            p.n_lists,
            p.n_subspaces,
            p.n_bits,
            if self.rotated() { " rotated" } else { "" },
            p.metric.name(),
            p.dim,
            p.n_items
        )
    }

    /// `scores, ids = index.search(xq, k, nprobe=8, threads=None)`.
    ///
    /// `xq` is an `(nq, dim)` float32 or float64 array (C or Fortran order; anything but
    /// C-ordered float32 is converted to it once). One query is searched by the single-query
    /// searcher, several by the batch search (matrix products over chunks of queries); the two
    /// agree up to float rounding of the scores. Returns float32 scores and int64 ids, both
    /// `(nq, k)`, best first: for `"ip"` and `"cosine"` the highest scores, for `"l2"` the
    /// smallest squared distances. Where fewer than `k` items are found, ids are -1 (and scores
    /// -inf for `ip`/`cosine`, +inf for `l2`). `nprobe` lists are scanned per query (more:
    /// better recall, slower); `threads` defaults to every core, 1 searches on the calling
    /// thread. On an index built with refinement data, the best `k · rerank_factor`
    /// candidates are re-scored with it (0: off). The GIL is released during the search;
    /// Ctrl-C interrupts it.
    #[pyo3(signature = (
        xq, k, *, nprobe = 8, threads = None,
        rerank_factor = SearchParams::DEFAULT_RERANK_FACTOR
    ))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        xq: &Bound<'py, PyAny>,
        k: usize,
        nprobe: usize,
        threads: Option<usize>,
        rerank_factor: usize,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let params = SearchParams::new(k, nprobe).with_rerank_factor(rerank_factor);
        params.validate().map_err(|e| search_error(e, false))?;
        let par = par(threads)?;
        let rows = float_rows(xq, "xq", Some(self.dim()), true)?;
        let (n, dim) = (rows.n, rows.dim);
        let total = n
            .checked_mul(k)
            .ok_or_else(|| invalid("nq × k overflows"))?;
        let queries = rows.data();
        let shared = &self.shared;
        let (ids, scores) = py.detach(|| -> PyResult<(Vec<i64>, Vec<f32>)> {
            let mut ids = vec![-1i64; total];
            let mut scores = vec![0.0f32; total];
            if n == 1 {
                // One query: the single-query searcher (small scratch, no batch matrix
                // products), as `poeem search --one-at-a-time` runs it.
                let search_index = shared.search_index();
                Searcher::new(&search_index)
                    .search_one(queries, &params, &mut ids, &mut scores)
                    .map_err(|e| search_error(e, false))?;
                return Ok((ids, scores));
            }
            let mut start = 0;
            for ((q, i), s) in queries
                .chunks(SIGNAL_ROWS * dim)
                .zip(ids.chunks_mut(SIGNAL_ROWS * k))
                .zip(scores.chunks_mut(SIGNAL_ROWS * k))
            {
                if start > 0 {
                    Python::attach(|py| py.check_signals())?;
                }
                shared
                    .search_batch(q, &params, i, s, par)
                    .map_err(|e| match e {
                        SearchError::NonFinite { what, row, col } => SearchError::NonFinite {
                            what,
                            row: row + start,
                            col,
                        },
                        other => other,
                    })
                    .map_err(|e| search_error(e, false))?;
                start += SIGNAL_ROWS;
            }
            Ok((ids, scores))
        })?;
        let scores = Array2::from_shape_vec((n, k), scores).expect("n × k scores");
        let ids = Array2::from_shape_vec((n, k), ids).expect("n × k ids");
        Ok((
            scores.into_pyarray(py).into_any(),
            ids.into_pyarray(py).into_any(),
        ))
    }

    /// The decoded (reconstructed) vectors of the items with these ids: an `(n, dim)` float32
    /// array for a 1-D array of ids (any integer dtype), a `(dim,)` array for one int. Where an
    /// id was given to several items, the first one (in list order) is decoded. Raises
    /// `poeem.InvalidArgumentError` for an id not in the index.
    fn reconstruct<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (ids, one) = if ids.is_instance_of::<PyInt>() {
            let id: i128 = ids.extract()?;
            let id = u64::try_from(id)
                .ok()
                .filter(|&v| v <= i64::MAX as u64)
                .ok_or_else(|| invalid(format!("id {id} is not in the index")))?;
            (vec![id], true)
        } else {
            (ids_array(ids, "ids")?, false)
        };
        let dim = self.dim();
        let out = py.detach(|| -> Result<Vec<f32>, u64> {
            let slots = self.slots();
            let view = self.index().view();
            let mut out = vec![0.0f32; ids.len() * dim];
            for (id, row) in ids.iter().zip(out.chunks_exact_mut(dim)) {
                let &(list, pos) = slots.get(id).ok_or(*id)?;
                view.reconstruct(list as usize, pos as usize, row);
            }
            Ok(out)
        });
        let out = out.map_err(|id| invalid(format!("id {id} is not in the index")))?;
        Ok(if one {
            Array1::from_vec(out).into_pyarray(py).into_any()
        } else {
            Array2::from_shape_vec((ids.len(), dim), out)
                .expect("n × dim values")
                .into_pyarray(py)
                .into_any()
        })
    }
}
