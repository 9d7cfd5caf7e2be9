//! The 4-bit fast-scan kernel's specification: quantized lookup tables and the portable scan.
//!
//! A fast-scan list (see [`crate::layout::fast_scan_position`]) is scored from a lookup table
//! of `M` rows of 16 floats `T[m][k]` (key contributions, smaller is better), quantized to
//! bytes per query and list ([`QuantizedTable::quantize`]):
//!
//! - per subspace an offset `min_m = min_k T[m][k]`, and one shared step
//!   `δ = max_m (max_k T[m][k] − min_m) / q_max` with `q_max = min(255, ⌊65535 / M⌋)`;
//! - `Q[m][k] = round((T[m][k] − min_m) / δ) ∈ [0, q_max]`, so a slot's sum `Σ_m Q[m][k_m]`
//!   is at most `M · q_max ≤ 65535` and fits a 16-bit accumulator for any codes;
//! - a slot's key is `(bias + Σ_m min_m) + S · δ` with `S` its 16-bit sum (f32 arithmetic).
//!
//! Error bound: each entry is off by at most `δ/2`, so a key differs from the float ADC key
//! `bias + Σ_m T[m][k_m]` by at most `M · δ / 2` (plus f32 rounding of the two sums, a few ulps
//! of their magnitudes). Keys of one list are exact multiples of `δ` apart, so the order inside
//! a list is the float order up to that bound; re-ranking restores exact order.
//!
//! The scan: for each block, the 32 sums `S_l` (wrapping 16-bit adds, in subspace order, which
//! for in-range tables never wrap), then lane by lane, for the slots holding an item, the key,
//! offered to the top-k when it does not exceed its threshold. The AVX2 kernel computes the same
//! integer sums with byte shuffles and compares them with the integer threshold that
//! [`int_threshold`] derives, so it offers exactly the same candidates in the same order.

use super::Scan4;
use crate::BLOCK;
use crate::layout::fast_scan_position;
use crate::topk::TopK;

/// Codewords per subspace of a fast-scan index.
pub(crate) const CODEWORDS: usize = 16;

/// A quantized lookup table: `⌈M/2⌉` groups of 32 bytes, group `p` holding subspace `2p`'s 16
/// entries then subspace `2p + 1`'s (zeros for the missing subspace of an odd `M`), plus the
/// affine map back to keys.
#[derive(Debug, Clone, Default)]
pub struct QuantizedTable {
    /// The entries, `32 · ⌈M/2⌉` bytes.
    pub(crate) entries: Vec<u8>,
    /// `Σ_m min_m`.
    pub(crate) base: f32,
    /// The step `δ` (0 when every row is constant or the table is not finite).
    pub(crate) step: f32,
}

impl QuantizedTable {
    /// Quantizes `table` (`M` rows of 16 floats) in place of this table's contents.
    ///
    /// # Panics
    /// When `table` is empty or not whole rows.
    #[track_caller]
    pub fn quantize(&mut self, table: &[f32]) {
        assert!(
            !table.is_empty() && table.len().is_multiple_of(CODEWORDS),
            "whole rows of 16"
        );
        let m_count = table.len() / CODEWORDS;
        let q_max = (65535 / m_count).min(255) as f32;
        let mut base = 0.0f32;
        let mut range = 0.0f32;
        for row in table.chunks_exact(CODEWORDS) {
            let (lo, hi) = row
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            base += lo;
            range = range.max(hi - lo);
        }
        let step = if range.is_finite() && range > 0.0 {
            range / q_max
        } else {
            0.0
        };
        let scale = if step > 0.0 { 1.0 / step } else { 0.0 };
        self.entries.clear();
        self.entries.resize(m_count.div_ceil(2) * 2 * CODEWORDS, 0);
        for (m, row) in table.chunks_exact(CODEWORDS).enumerate() {
            let lo = row.iter().fold(f32::INFINITY, |lo, &v| lo.min(v));
            let dst = &mut self.entries[m * CODEWORDS..(m + 1) * CODEWORDS];
            for (d, &v) in dst.iter_mut().zip(row) {
                // Round half up (the value is ≥ 0): `as` truncates, saturates, and maps NaN to
                // 0; no libm call, so the loop vectorizes.
                *d = ((v - lo) * scale + 0.5).min(q_max) as u8;
            }
        }
        self.base = base;
        self.step = step;
    }

    /// The dequantized key of a sum `sum` in a list whose scores carry `offset` (its bias plus
    /// [`QuantizedTable::base`]).
    #[inline(always)]
    pub(crate) fn key(offset: f32, step: f32, sum: u16) -> f32 {
        offset + f32::from(sum) * step
    }
}

/// The largest sum `S` whose key `offset + S · step` does not exceed `threshold`, or −1 when
/// none does (0 ≤ S ≤ 65535). Keys grow with `S` (f32 rounding is monotonic), so a slot passes
/// the top-k test exactly when its sum is at most this value.
pub(crate) fn int_threshold(offset: f32, step: f32, threshold: f32) -> i32 {
    let key = |s: i32| QuantizedTable::key(offset, step, s as u16);
    // NaN offsets fail every comparison: no slot passes.
    if key(0).partial_cmp(&threshold).is_none_or(|o| o.is_gt()) {
        return -1;
    }
    if key(65535) <= threshold {
        return 65535;
    }
    let (mut lo, mut hi) = (0i32, 65535i32);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if key(mid) <= threshold {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The 32 sums of one fast-scan block (`32 · ⌈M/2⌉` bytes), in lane order.
#[inline(always)]
pub(crate) fn block_sums(entries: &[u8], n_subspaces: usize, block: &[u8]) -> [u16; BLOCK] {
    let mut sums = [0u16; BLOCK];
    for m in 0..n_subspaces {
        let row = &entries[m * CODEWORDS..(m + 1) * CODEWORDS];
        for (lane, s) in sums.iter_mut().enumerate() {
            let (byte, shift) = fast_scan_position(m, lane);
            let code = usize::from((block[byte] >> shift) & 0xF);
            *s = s.wrapping_add(u16::from(row[code]));
        }
    }
    sums
}

/// Scans a fast-scan list (see [`Scan4`]): the specification of the SIMD kernels.
pub(crate) fn scan(s: &Scan4<'_>, top: &mut TopK) {
    let offset = s.bias + s.table.base;
    let step = s.table.step;
    for (b, block) in s.codes.chunks_exact(s.block_bytes()).enumerate() {
        let sums = block_sums(&s.table.entries, s.n_subspaces, block);
        let base = b * BLOCK;
        let valid = (s.n_items - base).min(BLOCK);
        for (l, &sum) in sums[..valid].iter().enumerate() {
            let key = QuantizedTable::key(offset, step, sum);
            if key <= top.threshold() {
                top.push(key, s.id(base + l));
            }
        }
    }
}
