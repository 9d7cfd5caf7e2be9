//! Checks shared by every entry point that takes row-major vectors.

use crate::PqError;

/// Returns the number of `dim`-wide rows in `data` after checking the shape and that every value
/// is finite.
pub(crate) fn check_rows(data: &[f32], dim: usize, what: &'static str) -> Result<usize, PqError> {
    if dim == 0 {
        return Err(PqError::ZeroDimension);
    }
    if !data.len().is_multiple_of(dim) {
        return Err(PqError::RaggedRows {
            what,
            len: data.len(),
            dim,
        });
    }
    // A branch-free pass that vectorises; the position only when something is wrong.
    if !data.iter().fold(true, |ok, v| ok & v.is_finite())
        && let Some(k) = data.iter().position(|v| !v.is_finite())
    {
        return Err(PqError::NonFinite {
            what,
            row: k / dim,
            col: k % dim,
        });
    }
    Ok(data.len() / dim)
}

/// Checks a full row-major table of `n_rows` rows of `width` values and the rows of it that
/// `rows` names: each must be below `n_rows` and hold finite values (the other rows are not
/// looked at).
pub(crate) fn check_table_rows(
    table: &[f32],
    width: usize,
    n_rows: usize,
    rows: &[u32],
    what: &'static str,
) -> Result<(), PqError> {
    if table.len() != n_rows * width {
        return Err(PqError::DimensionMismatch {
            what,
            expected: n_rows * width,
            got: table.len(),
        });
    }
    for &r in rows {
        let r = r as usize;
        if r >= n_rows {
            return Err(PqError::CodeOutOfRange {
                what,
                value: r,
                max: n_rows - 1,
            });
        }
        let row = &table[r * width..(r + 1) * width];
        if !row.iter().fold(true, |ok, v| ok & v.is_finite())
            && let Some(col) = row.iter().position(|v| !v.is_finite())
        {
            return Err(PqError::NonFinite { what, row: r, col });
        }
    }
    Ok(())
}

/// Like [`check_rows`], and also refuses an empty input.
pub(crate) fn check_training_rows(
    data: &[f32],
    dim: usize,
    what: &'static str,
) -> Result<usize, PqError> {
    let n = check_rows(data, dim, what)?;
    if n == 0 {
        return Err(PqError::Empty { what });
    }
    Ok(n)
}

/// Number of row chunks a [`faer::Par`] asks for.
pub(crate) fn n_tasks(par: faer::Par) -> usize {
    match par {
        faer::Par::Seq => 1,
        faer::Par::Rayon(n) => n.get(),
    }
}

/// Rows per parallel chunk: `n_rows` split `n_tasks(par)` ways, rounded up to a multiple of
/// `align` so that chunk boundaries, and hence results, do not depend on the thread count.
pub(crate) fn chunk_rows(n_rows: usize, par: faer::Par, align: usize) -> usize {
    let per_task = n_rows.div_ceil(n_tasks(par)).max(1);
    per_task.div_ceil(align) * align
}

/// A seeded sample of at most `max_rows` rows of `data` (kept in their original order), or `None`
/// when there are no more rows than that.
pub(crate) fn sample_rows(
    data: &[f32],
    dim: usize,
    max_rows: usize,
    rng: &mut impl rand::Rng,
) -> Option<Vec<f32>> {
    let n = data.len() / dim;
    if n <= max_rows {
        return None;
    }
    let mut rows = rand::seq::index::sample(rng, n, max_rows).into_vec();
    rows.sort_unstable();
    Some(
        rows.iter()
            .flat_map(|&r| &data[r * dim..(r + 1) * dim])
            .copied()
            .collect(),
    )
}
