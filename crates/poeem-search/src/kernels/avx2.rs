//! The AVX2 scan kernel (x86-64): the scalar kernel's lookups, assembled into four vectors of
//! eight scores that are compared with the top-k threshold eight lanes at a time, so only
//! candidates leave the registers; the 4-bit fast-scan kernel (byte shuffles, 16-bit sums) and
//! its table quantization.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::fastscan::{CODEWORDS, QuantizedTable};
use super::scalar::GROUP;
use super::{Scan, TABLE_STRIDE};
use crate::BLOCK;
use crate::topk::TopK;

/// Whether this CPU runs the kernel.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
}

/// Whether this CPU converts half-precision values (F16C, with AVX).
pub(super) fn f16c_available() -> bool {
    is_x86_feature_detected!("f16c") && is_x86_feature_detected!("avx")
}

/// [`super::f16_to_f32_slice`] with F16C: `vcvtph2ps` on eight values at a time (exact, as
/// every conversion from half to single precision; NaN quieted with its payload kept, as
/// [`crate::refine::f16_to_f32`] does), the rest one by one.
///
/// # Panics
/// When the CPU lacks F16C or `out` is not half as long as `bytes`.
pub(super) fn f16_to_f32_slice(bytes: &[u8], out: &mut [f32]) {
    assert!(f16c_available(), "F16C is not available");
    assert_eq!(bytes.len(), 2 * out.len(), "one value per two bytes");
    // SAFETY: F16C and AVX were detected just above.
    unsafe { f16_to_f32_impl(bytes, out) }
}

#[target_feature(enable = "avx,f16c")]
fn f16_to_f32_impl(bytes: &[u8], out: &mut [f32]) {
    let (whole, rest) = bytes.as_chunks::<16>();
    let (out_whole, out_rest) = out.split_at_mut(whole.len() * 8);
    for (src, dst) in whole.iter().zip(out_whole.as_chunks_mut::<8>().0) {
        // SAFETY: `src` holds 16 bytes (one unaligned 128-bit load), `dst` 8 floats (one
        // unaligned 256-bit store).
        unsafe {
            let halves = _mm_loadu_si128(src.as_ptr().cast());
            _mm256_storeu_ps(dst.as_mut_ptr(), _mm256_cvtph_ps(halves));
        }
    }
    for (o, c) in out_rest.iter_mut().zip(rest.as_chunks::<2>().0) {
        *o = crate::refine::f16_to_f32(u16::from_le_bytes(*c));
    }
}

/// Asks the CPU to bring the cache lines of `bytes` into its caches (SSE's `prefetcht0`, part of
/// every x86-64 CPU): a hint with no effect on results.
#[inline]
pub(super) fn prefetch(bytes: &[u8]) {
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch never faults and reads nothing the program sees; the pointer is
        // in bounds anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
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
        let valid = s.n_items - base;
        if valid < BLOCK {
            mask &= (1u32 << valid) - 1;
        }
        if mask != 0 {
            store(&acc, &mut lanes);
            while mask != 0 {
                let l = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                top.push(lanes[l], s.slot(base + l));
            }
            threshold = _mm256_set1_ps(top.threshold());
        }
    }
}

/// The 32 sums of one fast-scan block (see [`super::fastscan::block_sums`]).
///
/// # Panics
/// When the CPU lacks AVX2 or `entries` / `block` are shorter than `⌈M/2⌉` groups.
pub(super) fn block_sums_4bit(entries: &[u8], n_subspaces: usize, block: &[u8]) -> [u16; BLOCK] {
    assert!(available(), "AVX2 is not available");
    let groups = n_subspaces.div_ceil(2);
    assert!(entries.len() >= groups * BLOCK, "table too short");
    assert!(block.len() >= groups * BLOCK, "block too short");
    // SAFETY: AVX2 was detected just above; the lengths were checked.
    unsafe {
        let (even, odd) = sums_4bit(&entries[..groups * BLOCK], block);
        unpack_sums(even, odd)
    }
}

/// Scans one fast-scan list (see [`super::Scan4`]).
///
/// # Panics
/// When the CPU lacks AVX2 or the lengths are inconsistent.
pub(super) fn scan4(s: &super::Scan4<'_>, top: &mut TopK) {
    assert!(available(), "AVX2 is not available");
    s.check();
    // SAFETY: AVX2 was detected just above.
    unsafe { scan4_impl(s, top) }
}

/// The sums of one block as two vectors of sixteen u16: `even` holds lanes 0, 2, …, 30 and
/// `odd` lanes 1, 3, …, 31 (lane `2w` or `2w + 1` in word `w`).
///
/// Per group: the low nibbles of its 32 bytes index the shuffle for lanes 0..16 (subspace `2p`
/// in the low 128 bits, `2p + 1` in the high 128 bits), the high nibbles for lanes 16..32; each
/// shuffled vector is added as sixteen words (each word `even + 256 · odd`, wrapping) and, shifted
/// right by 8, as its odd bytes; at the end `Σ even = Σ words − 256 · Σ odd` (exact modulo
/// 2^16, as the specification's wrapping sums), which saves masking every shuffle. Then the two
/// 128-bit halves (the two subspaces of each pair) are added.
/// `entries` is the quantized table, one 32-byte group per pair (its loads hit L1).
#[inline]
#[target_feature(enable = "avx2")]
fn sums_4bit(entries: &[u8], block: &[u8]) -> (__m256i, __m256i) {
    assert!(block.len() >= entries.len(), "block too short");
    let nibble = _mm256_set1_epi8(0x0F);
    let (mut lo_words, mut lo_odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let (mut hi_words, mut hi_odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for (lut, codes) in entries.chunks_exact(BLOCK).zip(block.chunks_exact(BLOCK)) {
        // SAFETY: each chunk holds 32 bytes, the width of an unaligned 256-bit load.
        let (lut, v) = unsafe {
            (
                _mm256_loadu_si256(lut.as_ptr().cast()),
                _mm256_loadu_si256(codes.as_ptr().cast()),
            )
        };
        let lo = _mm256_and_si256(v, nibble);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
        let r_lo = _mm256_shuffle_epi8(lut, lo);
        let r_hi = _mm256_shuffle_epi8(lut, hi);
        lo_words = _mm256_add_epi16(lo_words, r_lo);
        lo_odd = _mm256_add_epi16(lo_odd, _mm256_srli_epi16::<8>(r_lo));
        hi_words = _mm256_add_epi16(hi_words, r_hi);
        hi_odd = _mm256_add_epi16(hi_odd, _mm256_srli_epi16::<8>(r_hi));
    }
    let lo_even = _mm256_sub_epi16(lo_words, _mm256_slli_epi16::<8>(lo_odd));
    let hi_even = _mm256_sub_epi16(hi_words, _mm256_slli_epi16::<8>(hi_odd));
    // Low halves of lo_* are subspace 2p of lanes 0..16, high halves subspace 2p+1 of the same
    // lanes; likewise hi_* for lanes 16..32. Add the halves: lanes 0..16 land in the low half of
    // the result, lanes 16..32 in the high half.
    let even = _mm256_add_epi16(
        _mm256_permute2x128_si256::<0x20>(lo_even, hi_even),
        _mm256_permute2x128_si256::<0x31>(lo_even, hi_even),
    );
    let odd = _mm256_add_epi16(
        _mm256_permute2x128_si256::<0x20>(lo_odd, hi_odd),
        _mm256_permute2x128_si256::<0x31>(lo_odd, hi_odd),
    );
    (even, odd)
}

/// The two vectors of [`sums_4bit`] as 32 sums in lane order.
#[inline]
#[target_feature(enable = "avx2")]
fn unpack_sums(even: __m256i, odd: __m256i) -> [u16; BLOCK] {
    let (mut e, mut o) = ([0u16; 16], [0u16; 16]);
    // SAFETY: each array holds 16 u16, the width of an unaligned 256-bit store.
    unsafe {
        _mm256_storeu_si256(e.as_mut_ptr().cast(), even);
        _mm256_storeu_si256(o.as_mut_ptr().cast(), odd);
    }
    let mut out = [0u16; BLOCK];
    for w in 0..16 {
        out[2 * w] = e[w];
        out[2 * w + 1] = o[w];
    }
    out
}

/// Bit `l` set when lane `l`'s sum is at most `t`: `min(sum, t) == sum`, unsigned, in sixteen
/// lanes at a time; each word sets two mask bits, of which lane `2w` keeps the even one and
/// lane `2w + 1` the odd one.
#[inline]
#[target_feature(enable = "avx2")]
fn passing(even: __m256i, odd: __m256i, t: __m256i) -> u32 {
    let e = _mm256_cmpeq_epi16(_mm256_min_epu16(even, t), even);
    let o = _mm256_cmpeq_epi16(_mm256_min_epu16(odd, t), odd);
    let e = _mm256_movemask_epi8(e) as u32;
    let o = _mm256_movemask_epi8(o) as u32;
    (e & 0x5555_5555) | (o & 0xAAAA_AAAA)
}

#[target_feature(enable = "avx2")]
fn scan4_impl(s: &super::Scan4<'_>, top: &mut TopK) {
    use super::fastscan::{QuantizedTable, int_threshold};
    let block_bytes = s.block_bytes();
    let entries = &s.table.entries[..block_bytes];
    let offset = s.bias + s.table.base;
    let step = s.table.step;
    let mut float_threshold = top.threshold();
    let mut t = int_threshold(offset, step, float_threshold);
    for (b, block) in s.codes.chunks_exact(block_bytes).enumerate() {
        if t < 0 {
            // The threshold only falls: no later slot of this list can pass either.
            return;
        }
        let (even, odd) = sums_4bit(entries, block);
        let mut mask = passing(even, odd, _mm256_set1_epi16(t as u16 as i16));
        let base = b * BLOCK;
        let valid = s.n_items - base;
        if valid < BLOCK {
            mask &= (1u32 << valid) - 1;
        }
        if mask != 0 {
            let sums = unpack_sums(even, odd);
            while mask != 0 {
                let l = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                top.push(QuantizedTable::key(offset, step, sums[l]), s.slot(base + l));
            }
            let now = top.threshold();
            if now != float_threshold {
                float_threshold = now;
                t = int_threshold(offset, step, now);
            }
        }
    }
}

/// [`QuantizedTable::quantize`] in AVX2: the same table, bit for bit (the minima and maxima
/// are exact in any order, but for which zero a row holding both −0 and +0 as its minimum
/// reports, and the rest is the same f32 steps in the same order), except the entries and step
/// of a table holding NaN, whose offset is NaN in both.
///
/// # Panics
/// When the CPU lacks AVX2, `table` is empty or not whole rows, or `terms` is not as long.
pub(super) fn quantize4(table: &[f32], terms: Option<&[f32]>, out: &mut QuantizedTable) {
    assert!(available(), "AVX2 is not available");
    assert!(
        !table.is_empty() && table.len().is_multiple_of(CODEWORDS),
        "whole rows of 16"
    );
    if let Some(terms) = terms {
        assert_eq!(terms.len(), table.len(), "one term per table entry");
    }
    // SAFETY: AVX2 was detected just above.
    unsafe { quantize4_impl(table, terms, out) }
}

/// The minima (or, `MAX`, maxima) of eight vectors as one vector, lane `r` for vector `r`: a
/// tree of interleaving shuffles, seven comparisons for the eight reductions.
#[inline]
#[target_feature(enable = "avx2")]
fn reduce_rows<const MAX: bool>(v: &[__m256; 8]) -> __m256 {
    let op = |a: __m256, b: __m256| {
        if MAX {
            _mm256_max_ps(a, b)
        } else {
            _mm256_min_ps(a, b)
        }
    };
    // Rows 2i and 2i + 1, interleaved in each 128-bit half.
    let pair = |a: __m256, b: __m256| op(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    let (p01, p23, p45, p67) = (
        pair(v[0], v[1]),
        pair(v[2], v[3]),
        pair(v[4], v[5]),
        pair(v[6], v[7]),
    );
    // Rows 0..4 (and 4..8) in each 128-bit half.
    let quad = |a: __m256, b: __m256| {
        op(
            _mm256_shuffle_ps::<0x44>(a, b),
            _mm256_shuffle_ps::<0xEE>(a, b),
        )
    };
    let (q0, q1) = (quad(p01, p23), quad(p45, p67));
    op(
        _mm256_permute2f128_ps::<0x20>(q0, q1),
        _mm256_permute2f128_ps::<0x31>(q0, q1),
    )
}

/// Eight rows at a time: each row's two halves (plus its terms, kept in `out.sums`) reduced to
/// a minimum and maximum vector, whose eight row reductions come out of [`reduce_rows`] as one
/// vector each; then every row's entries, sixteen at a time, converted with `vcvtps2dq` (round
/// to nearest, ties to even, as the portable code's rounding) and packed to bytes.
#[target_feature(enable = "avx2")]
fn quantize4_impl(table: &[f32], terms: Option<&[f32]>, out: &mut QuantizedTable) {
    let m_count = table.len() / CODEWORDS;
    let q_max = (65535 / m_count).min(255) as f32;
    out.clear_entries(m_count);
    let QuantizedTable {
        entries,
        base,
        step,
        sums,
        lows,
    } = out;
    let groups = m_count.div_ceil(8);
    lows.resize(groups * 8, 0.0);
    if terms.is_some() {
        sums.resize(table.len(), 0.0);
    }
    let rows = table.as_chunks::<CODEWORDS>().0;
    let mut range = _mm256_setzero_ps();
    let mut nan = _mm256_setzero_ps();
    for (g, group_lows) in lows.as_chunks_mut::<8>().0.iter_mut().enumerate() {
        let (mut lo, mut hi) = ([_mm256_setzero_ps(); 8], [_mm256_setzero_ps(); 8]);
        let first = g * 8;
        let count = (m_count - first).min(8);
        for r in 0..count {
            let m = first + r;
            let row = &rows[m];
            // SAFETY: a row holds 16 floats, two unaligned 256-bit loads; so do `terms` and
            // `sums` at the same place (both as long as `table`).
            let (a, b) = unsafe {
                let (mut a, mut b) = (
                    _mm256_loadu_ps(row.as_ptr()),
                    _mm256_loadu_ps(row.as_ptr().add(8)),
                );
                if let Some(terms) = terms {
                    let t = terms[m * CODEWORDS..(m + 1) * CODEWORDS].as_ptr();
                    a = _mm256_add_ps(a, _mm256_loadu_ps(t));
                    b = _mm256_add_ps(b, _mm256_loadu_ps(t.add(8)));
                    let dst = sums[m * CODEWORDS..(m + 1) * CODEWORDS].as_mut_ptr();
                    _mm256_storeu_ps(dst, a);
                    _mm256_storeu_ps(dst.add(8), b);
                }
                (a, b)
            };
            nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b));
            lo[r] = _mm256_min_ps(a, b);
            hi[r] = _mm256_max_ps(a, b);
        }
        let (lo, hi) = (reduce_rows::<false>(&lo), reduce_rows::<true>(&hi));
        // Lanes past the last row hold zeros: a range of 0, as the range starts.
        range = _mm256_max_ps(range, _mm256_sub_ps(hi, lo));
        // SAFETY: `group_lows` holds 8 floats, one unaligned 256-bit store.
        unsafe { _mm256_storeu_ps(group_lows.as_mut_ptr(), lo) };
    }
    let half = _mm_max_ps(
        _mm256_castps256_ps128(range),
        _mm256_extractf128_ps::<1>(range),
    );
    let half = _mm_max_ps(half, _mm_movehl_ps(half, half));
    let range = _mm_cvtss_f32(_mm_max_ss(half, _mm_shuffle_ps::<1>(half, half)));
    // The offset is summed in row order, as the portable code sums it.
    *base = if _mm256_movemask_ps(nan) != 0 {
        f32::NAN
    } else {
        lows[..m_count].iter().fold(0.0, |sum, &lo| sum + lo)
    };
    *step = if range.is_finite() && range > 0.0 {
        range / q_max
    } else {
        0.0
    };
    let scale = _mm256_set1_ps(if *step > 0.0 { 1.0 / *step } else { 0.0 });
    let (ceiling, zero) = (_mm256_set1_ps(q_max), _mm256_setzero_ps());
    let values: &[f32] = if terms.is_some() { sums } else { table };
    for ((row, &lo), dst) in values
        .as_chunks::<CODEWORDS>()
        .0
        .iter()
        .zip(lows.iter())
        .zip(entries.as_chunks_mut::<CODEWORDS>().0)
    {
        let lo = _mm256_set1_ps(lo);
        // As the portable code: `max(min((v − lo) · scale, q_max), 0)`, operands in its
        // order, so NaN becomes `q_max`.
        let level = |v: __m256| {
            _mm256_cvtps_epi32(_mm256_max_ps(
                _mm256_min_ps(_mm256_mul_ps(_mm256_sub_ps(v, lo), scale), ceiling),
                zero,
            ))
        };
        // SAFETY: `row` holds 16 floats (two unaligned 256-bit loads), `dst` 16 bytes (one
        // unaligned 128-bit store).
        unsafe {
            let (a, b) = (
                level(_mm256_loadu_ps(row.as_ptr())),
                level(_mm256_loadu_ps(row.as_ptr().add(8))),
            );
            // Words [a0..4 b0..4 | a4..8 b4..8], reordered to [a | b], then bytes.
            let words = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(a, b));
            let bytes = _mm_packus_epi16(
                _mm256_castsi256_si128(words),
                _mm256_extracti128_si256::<1>(words),
            );
            _mm_storeu_si128(dst.as_mut_ptr().cast(), bytes);
        }
    }
}
