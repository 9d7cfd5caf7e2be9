//! Row-blocked helpers shared by the towers and the loss: a GEMM whose rows are split into fixed
//! blocks, and a parallel loop over row blocks. Block boundaries never depend on the thread count,
//! so neither do the results.

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Rows per block of [`gemm`] and [`for_row_blocks`].
pub(crate) const ROW_BLOCK: usize = 64;
/// Multiply-adds below which a GEMM runs on one thread (handing blocks to other threads costs
/// more than it saves).
const PARALLEL_GEMM_WORK: usize = 1 << 21;
/// Values below which a row loop runs on one thread.
const PARALLEL_LOOP_LEN: usize = 1 << 15;

/// `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate`), with `dst` row-major
/// `lhs.nrows() × rhs.ncols()`. Each block of [`ROW_BLOCK`] rows is one sequential faer GEMM;
/// blocks run in parallel under `par`.
///
/// # Panics
/// When the shapes disagree.
#[track_caller]
pub(crate) fn gemm(
    dst: &mut [f32],
    lhs: MatRef<'_, f32>,
    rhs: MatRef<'_, f32>,
    accumulate: bool,
    par: Par,
) {
    let (m, n) = (lhs.nrows(), rhs.ncols());
    assert_eq!(lhs.ncols(), rhs.nrows(), "inner dimensions");
    assert_eq!(dst.len(), m * n, "output shape");
    if m == 0 || n == 0 {
        return;
    }
    let par = if m * n * lhs.ncols() < PARALLEL_GEMM_WORK {
        Par::Seq
    } else {
        par
    };
    let accum = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    for_row_blocks(dst, n, par, |first, block| {
        let rows = block.len() / n;
        faer::linalg::matmul::matmul(
            MatMut::from_row_major_slice_mut(block, rows, n),
            accum,
            lhs.subrows(first, rows),
            rhs,
            1.0f32,
            Par::Seq,
        );
    });
}

/// Calls `f(first_row, block)` on consecutive blocks of [`ROW_BLOCK`] rows of the row-major
/// buffer `data` (rows `row_len` wide), in parallel under `par` when `data` is long enough to
/// pay for it. The blocks, and so the results, are the same either way.
pub(crate) fn for_row_blocks<T: Send>(
    data: &mut [T],
    row_len: usize,
    par: Par,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if row_len == 0 || data.is_empty() {
        return;
    }
    let chunk = ROW_BLOCK * row_len;
    let par = if data.len() < PARALLEL_LOOP_LEN {
        Par::Seq
    } else {
        par
    };
    match par {
        Par::Seq => data
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, block)| f(i * ROW_BLOCK, block)),
        Par::Rayon(_) => data
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, block)| f(i * ROW_BLOCK, block)),
    }
}

/// Runs `a` and `b`, side by side under a parallel `par` (each result is the same either way:
/// callers give them disjoint data).
pub(crate) fn join<A: Send, B: Send>(
    par: Par,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    match par {
        Par::Seq => (a(), b()),
        Par::Rayon(_) => rayon::join(a, b),
    }
}

/// Resizes `buf` to `len` values (keeping its allocation when it shrinks), for scratch buffers
/// whose contents are overwritten before use.
pub(crate) fn resize(buf: &mut Vec<f32>, len: usize) {
    buf.resize(len, 0.0);
}
