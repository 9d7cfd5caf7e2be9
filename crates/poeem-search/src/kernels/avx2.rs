//! The AVX2 scan kernel (x86-64): the scalar kernel's lookups, assembled into four vectors of
//! eight scores that are compared with the top-k threshold eight lanes at a time, so only
//! candidates leave the registers.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::scalar::GROUP;
use super::{Scan, TABLE_STRIDE};
use crate::BLOCK;
use crate::topk::TopK;

/// Whether this CPU runs the kernel.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
}

/// The scores of one block (see [`super::scalar::score_block`]).
///
/// # Panics
/// When the CPU lacks AVX2 or `table` / `block` are shorter than `n_subspaces` rows.
pub(super) fn score_block(
    table: &[f32],
    n_subspaces: usize,
    bias: f32,
    slot_bias: Option<&[f32; BLOCK]>,
    block: &[u8],
    out: &mut [f32; BLOCK],
) {
    assert!(available(), "AVX2 is not available");
    // SAFETY: AVX2 was detected just above.
    unsafe {
        store(
            &block_scores(table, n_subspaces, bias, slot_bias, block),
            out,
        )
    }
}

/// Scans one list (see [`Scan`]).
///
/// # Panics
/// When the CPU lacks AVX2 or the lengths are inconsistent.
pub(super) fn scan(s: &Scan<'_>, top: &mut TopK) {
    assert!(available(), "AVX2 is not available");
    s.check(1);
    // SAFETY: AVX2 was detected just above.
    unsafe { scan_impl(s, top) }
}

/// The four vectors of eight scores of one block, each lane summed in subspace order as
/// [`super::scalar::score_block`] sums it.
///
/// # Panics
/// When `table` or `block` holds fewer than `n_subspaces` rows.
#[inline]
#[target_feature(enable = "avx2")]
fn block_scores(
    table: &[f32],
    n_subspaces: usize,
    bias: f32,
    slot_bias: Option<&[f32; BLOCK]>,
    block: &[u8],
) -> [__m256; 4] {
    assert!(table.len() >= n_subspaces * TABLE_STRIDE, "table too short");
    assert!(block.len() >= n_subspaces * BLOCK, "block too short");
    let mut acc = [_mm256_set1_ps(bias); BLOCK / GROUP];
    if let Some(slot_bias) = slot_bias {
        for (a, b) in acc.iter_mut().zip(slot_bias.chunks_exact(GROUP)) {
            // SAFETY: each chunk holds 8 floats, the width of an unaligned 256-bit load.
            *a = _mm256_add_ps(*a, unsafe { _mm256_loadu_ps(b.as_ptr()) });
        }
    }
    for (g, acc) in acc.iter_mut().enumerate() {
        for (t, codes) in table
            .chunks_exact(TABLE_STRIDE)
            .zip(block[g * GROUP..].chunks(BLOCK))
            .take(n_subspaces)
        {
            let (Some(t), Some(c)) = (
                t.first_chunk::<TABLE_STRIDE>(),
                codes.first_chunk::<GROUP>(),
            ) else {
                unreachable!("whole table rows and whole blocks")
            };
            let at = |l: usize| t[usize::from(c[l])];
            let v = _mm256_setr_ps(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7));
            *acc = _mm256_add_ps(*acc, v);
        }
    }
    acc
}

/// Writes four vectors of scores to `out`.
#[inline]
#[target_feature(enable = "avx2")]
fn store(lanes: &[__m256; 4], out: &mut [f32; BLOCK]) {
    for (chunk, &v) in out.chunks_exact_mut(GROUP).zip(lanes) {
        // SAFETY: each chunk holds 8 floats, the width of an unaligned 256-bit store.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), v) };
    }
}

#[target_feature(enable = "avx2")]
fn scan_impl(s: &Scan<'_>, top: &mut TopK) {
    let block_bytes = s.n_subspaces * BLOCK;
    let mut threshold = _mm256_set1_ps(top.threshold());
    let mut lanes = [0.0f32; BLOCK];
    for (b, block) in s.codes.chunks_exact(block_bytes).enumerate() {
        let acc = block_scores(s.table, s.n_subspaces, s.bias, s.block_bias(b), block);
        let mut mask = 0u32;
        for (i, &a) in acc.iter().enumerate() {
            let le = _mm256_cmp_ps::<_CMP_LE_OQ>(a, threshold);
            mask |= (_mm256_movemask_ps(le) as u32) << (GROUP * i);
        }
        let base = b * BLOCK;
        let valid = s.ids.len() - base;
        if valid < BLOCK {
            mask &= (1u32 << valid) - 1;
        }
        if mask != 0 {
            store(&acc, &mut lanes);
            while mask != 0 {
                let l = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                top.push(lanes[l], s.ids[base + l]);
            }
            threshold = _mm256_set1_ps(top.threshold());
        }
    }
}
