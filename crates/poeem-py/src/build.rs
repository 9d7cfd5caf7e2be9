//! `poeem.build_index`, and the progress / Ctrl-C plumbing of long computations.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use poeem::build::{BuildError, BuildOptions, build_index as rs_build_index};
use poeem::pq::{Progress, Stage};
use poeem::search::format::encode_index;
use poeem::search::{Index as RsIndex, Metric};
use pyo3::prelude::*;

use crate::arrays::{float_rows, ids as ids_array};
use crate::errors::{build_error, invalid, search_error};
use crate::index::Index;
use crate::par;

/// The unwinding payload that stops a computation when Python has a pending exception (Ctrl-C).
struct Interrupted(PyErr);

/// Runs `work` with the GIL released, giving it a progress callback that draws a one-line
/// progress report on stderr when `show` is set and checks for Ctrl-C at every event. An
/// interrupt unwinds out of `work` (no panic message: `resume_unwind` skips the hook) and comes
/// back as the Python exception (`KeyboardInterrupt`).
pub fn interruptible<T: Send>(
    py: Python<'_>,
    show: bool,
    work: impl FnOnce(&mut dyn FnMut(&Progress)) -> T + Send,
) -> PyResult<T> {
    let outcome = py.detach(|| {
        let mut shown = false;
        let mut callback = |p: &Progress| {
            if show {
                let stage = match p.stage {
                    Stage::Coarse => "coarse k-means".to_owned(),
                    Stage::Subspace { index, count } => format!("PQ k-means {}/{count}", index + 1),
                    Stage::OpqRound => "OPQ round".to_owned(),
                    _ => "k-means".to_owned(),
                };
                eprint!(
                    "\r\x1b[2K{stage}: step {}/{} (objective {:.6e})",
                    p.step, p.total, p.objective
                );
                shown = true;
            }
            if let Err(e) = Python::attach(|py| py.check_signals()) {
                resume_unwind(Box::new(Interrupted(e)));
            }
        };
        let result = catch_unwind(AssertUnwindSafe(|| work(&mut callback)));
        if shown {
            eprintln!();
        }
        result
    });
    match outcome {
        Ok(value) => Ok(value),
        Err(payload) => match payload.downcast::<Interrupted>() {
            Ok(interrupted) => Err(interrupted.0),
            Err(other) => resume_unwind(other),
        },
    }
}

/// `poeem.build_index(xb, *, n_lists, n_subspaces, ...)`: trains an IVF-PQ index on `xb` and
/// returns it in memory (`save` writes it). The same settings give the same index as
/// `poeem build` (every section but the metadata byte for byte).
#[pyfunction]
#[pyo3(signature = (
    xb, *, ids = None, n_lists, n_subspaces, n_bits = BuildOptions::DEFAULT_N_BITS,
    metric = "ip", opq = false, opq_rounds = BuildOptions::DEFAULT_OPQ_ROUNDS,
    kmeans_iterations = BuildOptions::DEFAULT_KMEANS_ITERATIONS, seed = 0, threads = None,
    progress = false, refine = None
))]
#[allow(clippy::too_many_arguments)]
pub fn build_index(
    py: Python<'_>,
    xb: &Bound<'_, PyAny>,
    ids: Option<&Bound<'_, PyAny>>,
    n_lists: usize,
    n_subspaces: usize,
    n_bits: u32,
    metric: &str,
    opq: bool,
    opq_rounds: usize,
    kmeans_iterations: usize,
    seed: u64,
    threads: Option<usize>,
    progress: bool,
    refine: Option<&str>,
) -> PyResult<Index> {
    let metric: Metric = metric.parse().map_err(|e| search_error(e, false))?;
    let refine = refine
        .map(str::parse::<poeem::search::RefineKind>)
        .transpose()
        .map_err(|e| search_error(e, false))?;
    let par = par(threads)?;
    let rows = float_rows(xb, "xb", None, false)?;
    let ids = ids.map(|ids| ids_array(ids, "ids")).transpose()?;
    if let Some(ids) = &ids
        && ids.len() != rows.n
    {
        return Err(invalid(format!(
            "ids: {} ids for {} vectors",
            ids.len(),
            rows.n
        )));
    }
    let config = BuildOptions {
        n_lists,
        n_subspaces,
        n_bits,
        metric,
        opq_rounds: opq.then_some(opq_rounds),
        kmeans_iterations,
        seed,
        refine,
    }
    .config();
    let (data, dim) = (rows.data(), rows.dim);
    let built = interruptible(py, progress, |callback| -> Result<RsIndex, BuildError> {
        let (parts, _report) = rs_build_index(data, dim, ids.as_deref(), &config, par, callback)?;
        let bytes = encode_index(&parts)?;
        Ok(RsIndex::from_bytes(&bytes)?)
    })?;
    let index = built.map_err(build_error)?;
    Ok(Index::wrap(py, index, None))
}
