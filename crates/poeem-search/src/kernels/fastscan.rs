//! The 4-bit fast-scan kernel's specification: quantized lookup tables and the portable scan.
//!
//! A fast-scan list (see [`crate::layout::fast_scan_position`]) is scored from a lookup table
//! of `M` rows of 16 floats `T[m][k]` (key contributions, smaller is better), quantized to
//! bytes per query and list ([`QuantizedTable::quantize`], whose AVX2 form computes the same
//! table bit for bit, except the entries and step of a table holding NaN, and the sign of a
//! row minimum that is both −0 and +0):
//!
//! - per subspace an offset `min_m = min_k T[m][k]`, and one shared step
//!   `δ = max_m (max_k T[m][k] − min_m) / q_max` with `q_max = min(255, ⌊65535 / M⌋)`;
//! - `Q[m][k] = round((T[m][k] − min_m) · (1/δ)) ∈ [0, q_max]` (to nearest, ties to even), so a
//!   slot's sum `Σ_m Q[m][k_m]` is at most `M · q_max ≤ 65535` and fits a 16-bit accumulator
//!   for any codes;
//! - a slot's key is `(bias + Σ_m min_m) + S · δ` with `S` its 16-bit sum (f32 arithmetic).
//!
//! Error bound: each entry is off by at most `δ/2`, so a key differs from the float ADC key
//! `bias + Σ_m T[m][k_m]` by at most `M · δ / 2` (plus f32 rounding of the two sums, a few ulps
//! of their magnitudes). Keys of one list are exact multiples of `δ` apart, so the order inside
//! a list is the float order up to that bound; re-ranking restores exact order. A table holding
//! NaN (only from an index with non-finite floats) gets a NaN offset `Σ_m min_m`, and then its
//! list offers nothing.
//!
//! The scan: for each block, the 32 sums `S_l` (wrapping 16-bit adds, in subspace order, which
//! for in-range tables never wrap), then lane by lane, for the slots holding an item, the key,
//! offered to the top-k when it does not exceed its threshold. The AVX2 kernel computes the same
//! integer sums with byte shuffles and compares them with the integer threshold that
//! [`int_threshold`] derives, so it offers exactly the same candidates in the same order.

use pulp::{Arch, Simd, WithSimd};

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
    /// Scratch of the AVX2 quantization: the summed rows (`M × 16`, with terms).
    pub(crate) sums: Vec<f32>,
    /// Scratch of the AVX2 quantization: the rows' minima, `M` rounded up to 8.
    pub(crate) lows: Vec<f32>,
}

impl QuantizedTable {
    /// Quantizes `table` (`M` rows of 16 floats), plus `terms` when given (entry by entry, one
    /// f32 addition each; as long as `table`: the fast-scan L2 table of a query and a list's
    /// terms, without a third buffer), in place of this table's contents. The portable code,
    /// the specification of [`crate::Kernel`]'s forms.
    ///
    /// # Panics
    /// When `table` is empty or not whole rows, or `terms` is not as long as `table`.
    #[track_caller]
    pub(crate) fn quantize(&mut self, table: &[f32], terms: Option<&[f32]>) {
        assert!(
            !table.is_empty() && table.len().is_multiple_of(CODEWORDS),
            "whole rows of 16"
        );
        if let Some(terms) = terms {
            assert_eq!(terms.len(), table.len(), "one term per table entry");
        }
        self.clear_entries(table.len() / CODEWORDS);
        let (base, step) = Arch::new().dispatch(Quantize {
            table,
            terms,
            entries: &mut self.entries,
        });
        self.base = base;
        self.step = step;
    }

    /// Zeroed entries for `m_count` subspaces, the missing one of an odd `M` included.
    pub(crate) fn clear_entries(&mut self, m_count: usize) {
        self.entries.clear();
        self.entries.resize(m_count.div_ceil(2) * 2 * CODEWORDS, 0);
    }

    /// The dequantized key of a sum `sum` in a list whose scores carry `offset` (its bias plus
    /// [`QuantizedTable::base`]).
    #[inline(always)]
    pub(crate) fn key(offset: f32, step: f32, sum: u16) -> f32 {
        offset + f32::from(sum) * step
    }
}

/// [`QuantizedTable::quantize`]'s work as a [`WithSimd`] operation, so that its loops over
/// fixed rows of 16 are compiled for the instruction set chosen at run time. Returns
/// `(Σ_m min_m, δ)` and writes the entries.
struct Quantize<'a> {
    table: &'a [f32],
    terms: Option<&'a [f32]>,
    entries: &'a mut [u8],
}

impl WithSimd for Quantize<'_> {
    type Output = (f32, f32);

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> (f32, f32) {
        let Self {
            table,
            terms,
            entries,
        } = self;
        let m_count = table.len() / CODEWORDS;
        let q_max = (65535 / m_count).min(255) as f32;
        let mut base = 0.0f32;
        let mut range = 0.0f32;
        let mut nan = false;
        for m in 0..m_count {
            let values = row(table, terms, m);
            let (lo, hi) = row_min_max(&values);
            base += lo;
            range = range.max(hi - lo);
            nan |= values.iter().fold(false, |n, v| n | v.is_nan());
        }
        if nan {
            base = f32::NAN;
        }
        let step = if range.is_finite() && range > 0.0 {
            range / q_max
        } else {
            0.0
        };
        let scale = if step > 0.0 { 1.0 / step } else { 0.0 };
        for (m, dst) in entries
            .chunks_exact_mut(CODEWORDS)
            .take(m_count)
            .enumerate()
        {
            let values = row(table, terms, m);
            let (lo, _) = row_min_max(&values);
            for (d, &v) in dst.iter_mut().zip(&values) {
                // NaN becomes `q_max`; a NaN `lo` has already made the keys NaN.
                *d = round_byte(greater(lesser((v - lo) * scale, q_max), 0.0));
            }
        }
        (base, step)
    }
}

/// `x` (in `[0, 255]`) rounded to the nearest integer, ties to even: adding `1.5 · 2^23`
/// leaves the rounded value in the low mantissa bits. No conversion instruction, so the loop
/// vectorizes.
#[inline(always)]
fn round_byte(x: f32) -> u8 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5 · 2^23
    (x + SHIFTER).to_bits() as u8
}

/// Row `m` of `table` (plus `terms`).
#[inline(always)]
fn row(table: &[f32], terms: Option<&[f32]>, m: usize) -> [f32; CODEWORDS] {
    let at = |t: &[f32]| -> [f32; CODEWORDS] {
        let Some(r) = t[m * CODEWORDS..].first_chunk::<CODEWORDS>() else {
            unreachable!("whole rows of 16")
        };
        *r
    };
    let values = at(table);
    match terms {
        Some(terms) => {
            let terms = at(terms);
            std::array::from_fn(|i| values[i] + terms[i])
        }
        None => values,
    }
}

/// The smallest and largest of a row by a tree of pairwise steps that the compiler turns into
/// vector instructions. With NaN in the row, either may come out NaN or not (the table's
/// offset is made NaN anyway).
#[inline(always)]
fn row_min_max(v: &[f32; CODEWORDS]) -> (f32, f32) {
    let (mut lo, mut hi) = (*v, *v);
    let mut width = CODEWORDS / 2;
    while width > 0 {
        for i in 0..width {
            lo[i] = lesser(lo[i], lo[i + width]);
            hi[i] = greater(hi[i], hi[i + width]);
        }
        width /= 2;
    }
    (lo[0], hi[0])
}

/// `a` when it is smaller, else `b` (so `b` when either is NaN): one `minps`.
#[inline(always)]
fn lesser(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

/// `a` when it is larger, else `b` (so `b` when either is NaN): one `maxps`.
#[inline(always)]
fn greater(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
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
    // Now key(0) ≤ threshold < key(65535), so the step is positive and the quotient finite:
    // start from it, and walk to the exact boundary, one sum at a time while that is short,
    // else by bisection.
    let guess = ((threshold - offset) / step).clamp(0.0, 65534.0) as i32;
    let up = key(guess) <= threshold;
    let (mut lo, mut hi) = if up { (guess, 65535) } else { (0, guess) };
    // key(lo) ≤ threshold < key(hi) throughout.
    for _ in 0..2 {
        if up {
            if key(lo + 1) > threshold {
                return lo;
            }
            lo += 1;
        } else {
            if key(hi - 1) <= threshold {
                return hi - 1;
            }
            hi -= 1;
        }
    }
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
                top.push(key, s.slot(base + l));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::Kernel;

    /// The boundary by bisection alone: the definition `int_threshold` must meet.
    fn bisected(offset: f32, step: f32, threshold: f32) -> i32 {
        let key = |s: i32| QuantizedTable::key(offset, step, s as u16);
        (0..=65535)
            .rev()
            .find(|&s| key(s) <= threshold)
            .map_or(-1, |s| {
                // Keys are monotonic: every smaller sum passes too.
                assert!(key(0) <= threshold);
                s
            })
    }

    #[test]
    fn int_threshold_is_the_largest_passing_sum() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut cases = vec![
            (0.0, 0.0, 0.0),
            (1.0, 0.0, 0.5),
            (1.0, 0.0, 1.0),
            (0.0, 1.0, f32::INFINITY),
            (f32::NAN, 1.0, 5.0),
            (-3.0, 1e-7, -2.999),
            (1e6, 0.25, 1e6 + 100.0),
        ];
        for _ in 0..300 {
            let (offset, step) = (next() * 200.0 - 100.0, next() * next() * 0.01);
            let sum = (next() * 70000.0) as u16;
            // A threshold exactly on a key, and others near one.
            let on = QuantizedTable::key(offset, step, sum);
            cases.extend([
                (offset, step, on),
                (offset, step, on + step * (next() - 0.5)),
                (offset, step, f32::from_bits(on.to_bits() + 1)),
                (offset, step, offset - next()),
            ]);
        }
        for (offset, step, threshold) in cases {
            assert_eq!(
                int_threshold(offset, step, threshold),
                bisected(offset, step, threshold),
                "offset {offset}, step {step}, threshold {threshold}"
            );
        }
    }

    #[test]
    fn quantizing_a_sum_equals_quantizing_the_summed_table() {
        let table: Vec<f32> = (0..5 * CODEWORDS)
            .map(|i| (i * 37 % 23) as f32 * 0.3 - 2.0)
            .collect();
        let terms: Vec<f32> = (0..5 * CODEWORDS)
            .map(|i| (i * 11 % 7) as f32 * 0.7)
            .collect();
        let summed: Vec<f32> = table.iter().zip(&terms).map(|(a, b)| a + b).collect();
        let (mut a, mut b) = (QuantizedTable::default(), QuantizedTable::default());
        a.quantize(&table, Some(&terms));
        b.quantize(&summed, None);
        assert_eq!(
            (a.entries, a.base, a.step),
            (b.entries.clone(), b.base, b.step)
        );
        // Each row's smallest entry quantizes to 0, the widest row's largest to q_max = 255;
        // the missing sixth row is zeros.
        for row in b.entries.chunks_exact(CODEWORDS).take(5) {
            assert_eq!(row.iter().min(), Some(&0));
        }
        assert_eq!(b.entries.iter().max(), Some(&255));
        assert!(b.entries[5 * CODEWORDS..].iter().all(|&e| e == 0));
    }

    /// A table of `m_count` rows for the quantization tests: mostly finite values of varied
    /// scales and signs, some rows constant, some entries ±∞ or NaN when asked.
    fn test_table(rng: &mut ChaCha8Rng, m_count: usize, specials: bool) -> Vec<f32> {
        let mut table = Vec::with_capacity(m_count * CODEWORDS);
        for _ in 0..m_count {
            let (scale, shift) = (
                10f32.powi(rng.random_range(-3..4)),
                rng.random_range(-50.0..50.0),
            );
            let constant = rng.random_bool(0.1);
            let first = rng.random_range(-1.0f32..1.0) * scale + shift;
            for _ in 0..CODEWORDS {
                let v = match constant {
                    true => first,
                    false => rng.random_range(-1.0f32..1.0) * scale + shift,
                };
                table.push(match specials && rng.random_bool(0.02) {
                    true => [f32::INFINITY, f32::NEG_INFINITY, f32::NAN][rng.random_range(0..3)],
                    false => v,
                });
            }
        }
        table
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            rng_seed: RngSeed::Fixed(0x0A17),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Every kernel this CPU runs quantizes a table (with the list terms or not) exactly
        /// as the portable code: the same entries, offset and step; a table holding NaN gets
        /// a NaN offset from each.
        #[test]
        fn kernel_quantization_equals_the_specification(
            m_count in 1usize..40,
            with_terms: bool,
            specials: bool,
            seed: u64,
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let table = test_table(&mut rng, m_count, specials);
            let terms = with_terms.then(|| test_table(&mut rng, m_count, specials));
            let mut expected = QuantizedTable::default();
            expected.quantize(&table, terms.as_deref());
            let has_nan = table
                .iter()
                .zip(terms.as_deref().unwrap_or(&[0.0; 0]).iter().chain(std::iter::repeat(&0.0)))
                .any(|(a, b)| (a + b).is_nan());
            prop_assert_eq!(expected.base.is_nan(), has_nan);
            for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
                let mut got = QuantizedTable::default();
                // Scratch and entries left by a larger table must not leak into this one.
                kernel.quantize4(&test_table(&mut rng, 45, false), None, &mut got);
                kernel.quantize4(&table, terms.as_deref(), &mut got);
                prop_assert_eq!(got.entries.len(), expected.entries.len());
                if has_nan {
                    prop_assert!(got.base.is_nan(), "{}", kernel);
                } else {
                    prop_assert_eq!(&got.entries, &expected.entries, "{}", kernel);
                    prop_assert_eq!(got.base.to_bits(), expected.base.to_bits(), "{}", kernel);
                    prop_assert_eq!(got.step.to_bits(), expected.step.to_bits(), "{}", kernel);
                }
            }
        }
    }
}
