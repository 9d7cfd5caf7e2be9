//! The portable scan kernel: the specification the SIMD kernels are tested against.
//!
//! A block of [`BLOCK`] slots is scored as `bias + Σ_m T[m][code_m]`, the terms added in
//! subspace order, lane by lane; the SIMD kernels add in the same order and so return the same
//! bits.

use super::{Scan, TABLE_STRIDE};
use crate::BLOCK;
use crate::topk::TopK;

/// Lanes scored together: eight accumulators stay in registers while the subspaces stream by.
pub(crate) const GROUP: usize = 8;

/// The scores of one block of one-byte codes (`M · BLOCK` bytes, subspace-major) into `out`:
/// lane `l` starts from `bias` (plus `slot_bias[l]` when given) and adds its table entries.
///
/// Each group of [`GROUP`] lanes is summed over all subspaces before the next: on the CPUs
/// measured this beats gathers (Zen 4 gathers are slower than two scalar loads per lookup).
#[inline(always)]
pub(crate) fn score_block(
    table: &[f32],
    n_subspaces: usize,
    bias: f32,
    slot_bias: Option<&[f32; BLOCK]>,
    block: &[u8],
    out: &mut [f32; BLOCK],
) {
    for (g, out) in out.chunks_exact_mut(GROUP).enumerate() {
        let mut acc = [bias; GROUP];
        if let Some(slot_bias) = slot_bias {
            for (a, &b) in acc.iter_mut().zip(&slot_bias[g * GROUP..]) {
                *a += b;
            }
        }
        for (t, codes) in table
            .chunks_exact(TABLE_STRIDE)
            .zip(block[g * GROUP..].chunks(BLOCK))
            .take(n_subspaces)
        {
            let (Some(t), Some(codes)) = (
                t.first_chunk::<TABLE_STRIDE>(),
                codes.first_chunk::<GROUP>(),
            ) else {
                unreachable!("whole table rows and whole blocks")
            };
            for (a, &c) in acc.iter_mut().zip(codes) {
                *a += t[usize::from(c)];
            }
        }
        out.copy_from_slice(&acc);
    }
}

/// Offers the items of a block whose score does not exceed `top`'s threshold to `top`:
/// `lanes` holds the block's scores, `base` the list position of its first item (padding
/// past the list's items is skipped).
#[inline(always)]
pub(crate) fn offer(top: &mut TopK, s: &Scan<'_>, base: usize, lanes: &[f32; BLOCK]) {
    let valid = (s.n_items - base).min(BLOCK);
    let mut threshold = top.threshold();
    for (l, &score) in lanes[..valid].iter().enumerate() {
        if score <= threshold {
            top.push(score, s.slot(base + l));
            threshold = top.threshold();
        }
    }
}

/// Scans a list of one-byte codes (see [`Scan`]).
pub(crate) fn scan(s: &Scan<'_>, top: &mut TopK) {
    let mut lanes = [0.0f32; BLOCK];
    for (b, block) in s.codes.chunks_exact(s.n_subspaces * BLOCK).enumerate() {
        score_block(
            s.table,
            s.n_subspaces,
            s.bias,
            s.block_bias(b),
            block,
            &mut lanes,
        );
        offer(top, s, b * BLOCK, &lanes);
    }
}

/// Scans a list of two-byte codes (9 to 16 bits): `s.table` holds `M` rows of `stride`
/// entries, and each code is masked with `mask` (`2^n_bits − 1 < stride`) before the lookup.
pub(crate) fn scan_wide(s: &Scan<'_>, stride: usize, mask: u16, top: &mut TopK) {
    s.check(2);
    assert!(
        usize::from(mask) < stride,
        "the mask must stay inside a table row"
    );
    assert!(s.table.len() >= s.n_subspaces * stride, "table too short");
    let mut lanes = [0.0f32; BLOCK];
    for (b, block) in s.codes.chunks_exact(s.n_subspaces * BLOCK * 2).enumerate() {
        lanes.fill(s.bias);
        if let Some(slot_bias) = s.block_bias(b) {
            for (a, &b) in lanes.iter_mut().zip(slot_bias) {
                *a += b;
            }
        }
        for (t, codes) in s
            .table
            .chunks_exact(stride)
            .zip(block.chunks_exact(BLOCK * 2))
        {
            for (o, c) in lanes.iter_mut().zip(codes.chunks_exact(2)) {
                let code = u16::from_le_bytes([c[0], c[1]]) & mask;
                *o += t[usize::from(code)];
            }
        }
        offer(top, s, b * BLOCK, &lanes);
    }
}
