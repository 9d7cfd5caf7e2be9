//! The Python extension module `poeem._poeem`; the package `poeem` (in `python/`) re-exports it.
//!
//! Every call that computes (build, search, decode, k-means, encode) releases the GIL; long ones
//! check for Ctrl-C from their progress callbacks and raise `KeyboardInterrupt`, leaving nothing
//! written. Bad input raises Python exceptions (see `errors.rs`), never aborts the interpreter.
#![forbid(unsafe_code)]

mod arrays;
mod blocks;
mod build;
mod errors;
mod givens;
mod index;

use poeem::pq::Par;
use pyo3::prelude::*;

use crate::errors::invalid;

/// `threads` → parallelism: `None` every core, 1 the calling thread only.
fn par(threads: Option<usize>) -> PyResult<Par> {
    let n = match threads {
        None => std::thread::available_parallelism().map_or(1, usize::from),
        Some(0) => {
            return Err(invalid(
                "threads = 0: must be at least 1 (or None: every core)",
            ));
        }
        Some(n) => n,
    };
    Ok(if n == 1 { Par::Seq } else { Par::rayon(n) })
}

#[pymodule]
fn _poeem(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<index::Index>()?;
    m.add_class::<blocks::KMeans>()?;
    m.add_class::<blocks::IvfPqCodec>()?;
    m.add_function(wrap_pyfunction!(build::build_index, m)?)?;
    m.add_function(wrap_pyfunction!(givens::givens_skew, m)?)?;
    m.add_function(wrap_pyfunction!(givens::givens_step, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
