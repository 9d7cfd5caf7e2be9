//! Givens coordinate descent on a rotation, for `poeem.torch` (`poeem._poeem.givens_skew`,
//! `poeem._poeem.givens_step`): the skew-symmetric gradient of a batch, and one step from a
//! (possibly all-reduced) skew matrix. Both release the GIL.

use numpy::PyReadonlyArray2;
use numpy::ndarray::Array2;
use numpy::prelude::*;
use poeem::rotation::{
    GivensConfig, GivensOptimizer, PairSelection, Rotation, skew_gradient_from_batch,
};
use pyo3::prelude::*;

use crate::arrays::float_rows;
use crate::errors::invalid;
use crate::par;

/// `S = Yᵀ dY − dYᵀ Y` as a `(d, d)` float64 array for the `(n, d)` batch `y` and the gradient
/// `dy = ∂f/∂Y` of a loss of `Y = X R`: the Riemannian gradient a Givens step follows. Summing
/// the `S` of several batches gives the `S` of their union.
#[pyfunction]
#[pyo3(signature = (y, dy, *, threads = None))]
pub fn givens_skew<'py>(
    py: Python<'py>,
    y: &Bound<'py, PyAny>,
    dy: &Bound<'py, PyAny>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let par = par(threads)?;
    let y = float_rows(y, "y", None, false)?;
    let dy = float_rows(dy, "dy", Some(y.dim), false)?;
    if dy.n != y.n {
        return Err(invalid(format!("dy: {} rows for {} rows of y", dy.n, y.n)));
    }
    let d = y.dim;
    let (ys, dys) = (y.data(), dy.data());
    let skew = py
        .detach(|| skew_gradient_from_batch(ys, dys, d, par))
        .map_err(|e| invalid(e.to_string()))?;
    Ok(Array2::from_shape_vec((d, d), skew)
        .expect("d × d")
        .into_pyarray(py)
        .into_any())
}

/// One Givens step: `rotation` `(d, d)` float32, orthonormal; `skew` `(d, d)` float64 (from
/// `givens_skew`, possibly summed over processes); `steps` the steps taken before (fixes the
/// random pair stream and the re-orthonormalisation schedule). Returns the new rotation.
#[pyfunction]
#[pyo3(signature = (rotation, skew, *, selection, learning_rate, max_angle,
                    reorthonormalize_every, seed, steps, threads = None))]
#[allow(clippy::too_many_arguments)]
pub fn givens_step<'py>(
    py: Python<'py>,
    rotation: &Bound<'py, PyAny>,
    skew: PyReadonlyArray2<'py, f64>,
    selection: &str,
    learning_rate: f32,
    max_angle: f32,
    reorthonormalize_every: u64,
    seed: u64,
    steps: u64,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let par = par(threads)?;
    let selection = match selection {
        "random" => PairSelection::Random,
        "greedy" => PairSelection::Greedy,
        "steepest" => PairSelection::Steepest,
        other => {
            return Err(invalid(format!(
                "selection = {other}: expected \"random\", \"greedy\" or \"steepest\""
            )));
        }
    };
    if !(learning_rate.is_finite() && learning_rate >= 0.0) {
        return Err(invalid(format!(
            "learning_rate = {learning_rate}: must be finite and at least 0"
        )));
    }
    if !(max_angle.is_finite() && max_angle > 0.0) {
        return Err(invalid(format!(
            "max_angle = {max_angle}: must be finite and positive"
        )));
    }
    let r = float_rows(rotation, "rotation", None, false)?;
    let d = r.dim;
    if r.n != d {
        return Err(invalid(format!(
            "rotation: expected a square matrix, got ({}, {d})",
            r.n
        )));
    }
    if skew.shape() != [d, d] {
        return Err(invalid(format!(
            "skew: expected shape ({d}, {d}), got {:?}",
            skew.shape()
        )));
    }
    let skew = skew.as_array().iter().copied().collect::<Vec<f64>>();
    let mut live = Rotation::from_row_major_exact(d, r.data().to_vec())
        .map_err(|e| invalid(format!("rotation: {e}")))?;
    let config = GivensConfig {
        learning_rate,
        max_angle,
        selection,
        reorthonormalize_every,
        seed,
    };
    py.detach(|| {
        let mut optimizer = GivensOptimizer::resume(config, steps);
        optimizer.step_with_skew(&mut live, &skew, par).map(|_| ())
    })
    .map_err(|e| invalid(e.to_string()))?;
    Ok(Array2::from_shape_vec((d, d), live.as_slice().to_vec())
        .expect("d × d")
        .into_pyarray(py)
        .into_any())
}
