//! numpy arrays in: checked and converted once.

use numpy::prelude::*;
use numpy::{PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArray};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::invalid;

/// A 2-D float array as `n` row-major rows of `dim` float32 values: the caller's own memory when
/// it is already C-ordered float32, otherwise one converted copy.
pub struct Rows<'py> {
    array: PyReadonlyArray2<'py, f32>,
    /// Rows.
    pub n: usize,
    /// Values per row.
    pub dim: usize,
}

impl Rows<'_> {
    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        self.array
            .as_slice()
            .expect("the array was made C-contiguous")
    }
}

fn untyped<'a, 'py>(
    x: &'a Bound<'py, PyAny>,
    what: &str,
) -> PyResult<&'a Bound<'py, PyUntypedArray>> {
    x.cast::<PyUntypedArray>().map_err(|_| {
        let type_name = x
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        invalid(format!(
            "{what}: expected a numpy array, got {type_name} (use numpy.asarray)"
        ))
    })
}

/// The shape of a numpy array (any dtype), or the error naming `what`.
pub fn shape_of(x: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<usize>> {
    Ok(untyped(x, what)?.shape().to_vec())
}

fn dtype_name(array: &Bound<'_, PyUntypedArray>) -> String {
    array
        .dtype()
        .str()
        .map_or_else(|_| "?".to_owned(), |s| s.to_string())
}

fn astype<'py>(array: &Bound<'py, PyUntypedArray>, dtype: &str) -> PyResult<Bound<'py, PyAny>> {
    let kwargs = PyDict::new(array.py());
    kwargs.set_item("order", "C")?;
    array.call_method("astype", (dtype,), Some(&kwargs))
}

/// Checks that `x` is a 2-D float32 or float64 array (C or Fortran order; anything but C-ordered
/// float32 is converted once), with `dim` columns when given, and at least one row unless
/// `allow_empty`.
pub fn float_rows<'py>(
    x: &Bound<'py, PyAny>,
    what: &str,
    dim: Option<usize>,
    allow_empty: bool,
) -> PyResult<Rows<'py>> {
    let array = untyped(x, what)?;
    if array.ndim() != 2 {
        return Err(invalid(format!(
            "{what}: expected a 2-D array (n, dim), got {} dimension(s) of shape {:?}{}",
            array.ndim(),
            array.shape(),
            if array.ndim() == 1 {
                " (one vector: use x.reshape(1, -1))"
            } else {
                ""
            }
        )));
    }
    let descr = array.dtype();
    if !(descr.kind() == b'f' && matches!(descr.itemsize(), 4 | 8)) {
        return Err(invalid(format!(
            "{what}: expected float32 or float64 values, got dtype {}",
            dtype_name(array)
        )));
    }
    let (n, cols) = (array.shape()[0], array.shape()[1]);
    if let Some(dim) = dim
        && cols != dim
    {
        return Err(invalid(format!(
            "{what}: expected {dim} columns (the index's dimension), got {cols}"
        )));
    }
    if cols == 0 {
        return Err(invalid(format!("{what}: vectors of dimension 0")));
    }
    if n == 0 && !allow_empty {
        return Err(invalid(format!("{what} is empty (0 rows)")));
    }
    let is_f32 = descr.itemsize() == 4;
    let converted;
    let typed = if is_f32 && array.is_c_contiguous() {
        array.cast::<PyArray2<f32>>()?
    } else {
        converted = astype(array, "float32")?;
        converted.cast::<PyArray2<f32>>()?
    };
    Ok(Rows {
        array: typed.readonly(),
        n,
        dim: cols,
    })
}

/// Ids: a 1-D array of any integer dtype (or one column), every value in `0..=i64::MAX`.
pub fn ids(x: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u64>> {
    let array = untyped(x, what)?;
    let shape = array.shape();
    if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
        return Err(invalid(format!(
            "{what}: expected a 1-D array of ids, got shape {shape:?}"
        )));
    }
    let descr = array.dtype();
    match descr.kind() {
        b'u' if descr.itemsize() == 8 => {
            let converted = astype(array, "uint64")?.call_method1("reshape", (-1,))?;
            let typed: PyReadonlyArray1<'_, u64> = converted.extract()?;
            let values = typed.as_slice()?.to_vec();
            if let Some((row, v)) = values
                .iter()
                .enumerate()
                .find(|&(_, &v)| v > i64::MAX as u64)
            {
                return Err(invalid(format!(
                    "{what}: id {v} at row {row} does not fit int64 (ids are returned as int64)"
                )));
            }
            Ok(values)
        }
        b'u' | b'i' => {
            let converted = astype(array, "int64")?.call_method1("reshape", (-1,))?;
            let typed: PyReadonlyArray1<'_, i64> = converted.extract()?;
            typed
                .as_slice()?
                .iter()
                .enumerate()
                .map(|(row, &v)| {
                    u64::try_from(v)
                        .map_err(|_| invalid(format!("{what}: id {v} at row {row} is negative")))
                })
                .collect()
        }
        _ => Err(invalid(format!(
            "{what}: expected an integer dtype, got {}",
            dtype_name(array)
        ))),
    }
}
