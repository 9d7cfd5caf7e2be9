//! Refinement data: a second, finer copy of every item, stored in the optional `refine`
//! section, with which a search re-scores its best `k · R` candidates (re-ranking).
//!
//! The section starts with a 64-byte header, then the data in slot order (padding slots
//! included, all zero):
//!
//! | offset | size | field |
//! | ---: | ---: | --- |
//! | 0 | 4 | kind: 1 = `f32`, 2 = `f16`, 3 = `pq8` ([`RefineKind::code`]) |
//! | 4 | 4 | `pq8`: subspaces `M_r` of the residual quantizer (dividing `padded_dim`); else 0 |
//! | 8 | 8 | values per vector: `dim` for `f32` / `f16`, `padded_dim` for `pq8` |
//! | 16 | 48 | zero |
//!
//! - `f32`: `slots × dim` little-endian f32, the indexed vectors (normalised for cosine) in the
//!   original space;
//! - `f16`: the same as IEEE-754 half-precision values (u16, little-endian, rounded to nearest
//!   even);
//! - `pq8`: an 8-bit product quantizer of the residual `x' − x̂'` (rotated, padded space; `x̂'`
//!   the item's IVF-PQ reconstruction): `M_r × 256 × (padded_dim / M_r)` f32 codebooks, then
//!   `slots × M_r` one-byte codes, item-major.
//!
//! Values are read with `from_le_bytes`, never cast in place, so an in-memory
//! [`IndexParts`](crate::IndexParts) needs no alignment; only the candidates are read.

use crate::SearchError;
use crate::layout::IndexParams;

/// Length of the refine section's header.
pub const REFINE_HEADER_LEN: usize = 64;

/// Codewords per subspace of the `pq8` residual quantizer.
pub const REFINE_PQ_CODEWORDS: usize = 256;

/// What the refinement data holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefineKind {
    /// The vectors as f32: re-ranking scores them exactly.
    F32,
    /// The vectors as half-precision floats (half the bytes of `f32`).
    F16,
    /// An 8-bit product quantizer of the IVF-PQ residual.
    Pq8,
}

impl RefineKind {
    /// The kind's code in the section header.
    pub fn code(self) -> u32 {
        match self {
            RefineKind::F32 => 1,
            RefineKind::F16 => 2,
            RefineKind::Pq8 => 3,
        }
    }

    /// Bytes of one stored value of `f32` / `f16` data; `None` for `pq8`, which stores codes.
    pub fn value_bytes(self) -> Option<usize> {
        match self {
            RefineKind::F32 => Some(4),
            RefineKind::F16 => Some(2),
            RefineKind::Pq8 => None,
        }
    }

    /// The kind with code `code`.
    pub fn from_code(code: u32) -> Option<Self> {
        [RefineKind::F32, RefineKind::F16, RefineKind::Pq8]
            .into_iter()
            .find(|k| k.code() == code)
    }

    /// The kind's name (`f32`, `f16`, `pq8`), as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            RefineKind::F32 => "f32",
            RefineKind::F16 => "f16",
            RefineKind::Pq8 => "pq8",
        }
    }
}

impl std::str::FromStr for RefineKind {
    type Err = SearchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(RefineKind::F32),
            "f16" => Ok(RefineKind::F16),
            "pq8" => Ok(RefineKind::Pq8),
            _ => Err(SearchError::InvalidParameter {
                name: "refine",
                value: s.to_owned(),
                reason: "expected f32, f16 or pq8",
            }),
        }
    }
}

impl std::fmt::Display for RefineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated view of a refine section.
#[derive(Debug, Clone, Copy)]
pub struct RefineView<'a> {
    kind: RefineKind,
    /// Values per vector (`dim`, or `padded_dim` for `pq8`).
    width: usize,
    /// `pq8`: subspaces of the residual quantizer.
    n_sub: usize,
    /// `pq8`: the codebooks' bytes.
    codebooks: &'a [u8],
    /// The per-slot data.
    data: &'a [u8],
}

fn bad(reason: &'static str) -> SearchError {
    SearchError::BadSectionTable {
        section: "refine".to_owned(),
        reason,
    }
}

impl<'a> RefineView<'a> {
    /// Checks a refine section against the index's shape and slot count.
    ///
    /// # Errors
    /// [`SearchError::BadSectionTable`] for a bad header, [`SearchError::SectionSize`] for a
    /// length that does not match it.
    pub fn parse(bytes: &'a [u8], p: &IndexParams, slots: usize) -> Result<Self, SearchError> {
        let header = bytes
            .get(..REFINE_HEADER_LEN)
            .ok_or(bad("shorter than its header"))?;
        let u32_at = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let kind = RefineKind::from_code(u32_at(0)).ok_or(bad("unknown refinement kind"))?;
        let n_sub = u32_at(4) as usize;
        let mut width_bytes = [0u8; 8];
        width_bytes.copy_from_slice(&header[8..16]);
        let width = u64::from_le_bytes(width_bytes);
        if header[16..].iter().any(|&b| b != 0) {
            return Err(bad("reserved header bytes are not zero"));
        }
        let expected_width = match kind {
            RefineKind::F32 | RefineKind::F16 => p.dim,
            RefineKind::Pq8 => p.padded_dim,
        };
        if width != expected_width as u64 {
            return Err(bad("values per vector do not match the index"));
        }
        let overflow = || SearchError::Overflow {
            what: "refine section size",
        };
        let (codebook_len, per_slot) = match kind {
            RefineKind::F32 | RefineKind::F16 if n_sub != 0 => {
                return Err(bad("subspaces are set for a float kind"));
            }
            RefineKind::F32 => (0, p.dim.checked_mul(4).ok_or_else(overflow)?),
            RefineKind::F16 => (0, p.dim.checked_mul(2).ok_or_else(overflow)?),
            RefineKind::Pq8 => {
                if n_sub == 0 || !p.padded_dim.is_multiple_of(n_sub) {
                    return Err(bad("pq8 subspaces must divide padded_dim"));
                }
                let books = p
                    .padded_dim
                    .checked_mul(4 * REFINE_PQ_CODEWORDS)
                    .ok_or_else(overflow)?;
                (books, n_sub)
            }
        };
        let expected = slots
            .checked_mul(per_slot)
            .and_then(|n| n.checked_add(codebook_len))
            .and_then(|n| n.checked_add(REFINE_HEADER_LEN))
            .ok_or_else(overflow)?;
        if bytes.len() != expected {
            return Err(SearchError::SectionSize {
                section: "refine",
                expected: expected as u64,
                found: bytes.len() as u64,
            });
        }
        let (codebooks, data) = bytes[REFINE_HEADER_LEN..].split_at(codebook_len);
        Ok(Self {
            kind,
            width: expected_width,
            n_sub,
            codebooks,
            data,
        })
    }

    /// What the data holds.
    pub fn kind(&self) -> RefineKind {
        self.kind
    }

    /// `pq8`: the residual quantizer's subspaces (0 for the float kinds).
    pub fn n_subspaces(&self) -> usize {
        self.n_sub
    }

    /// The stored bytes of slot `slot`: its vector for `f32` / `f16`, its codes for `pq8`.
    ///
    /// # Panics
    /// When `slot` is not below the slot count.
    pub fn slot_bytes(&self, slot: usize) -> &'a [u8] {
        let per_slot = self
            .kind
            .value_bytes()
            .map_or(self.n_sub, |bytes| self.width * bytes);
        &self.data[slot * per_slot..][..per_slot]
    }

    /// Slot `slot`'s `f32` vector in place, without a copy: `None` unless the data are `f32`
    /// and the section's bytes lie 4-aligned on a little-endian CPU (as in files this crate
    /// writes, read or mapped whole); [`RefineView::decode`] works in every case.
    ///
    /// # Panics
    /// When `slot` is not below the slot count.
    pub fn f32_row(&self, slot: usize) -> Option<&'a [f32]> {
        if self.kind != RefineKind::F32 || cfg!(target_endian = "big") {
            return None;
        }
        bytemuck::try_cast_slice(self.slot_bytes(slot)).ok()
    }

    /// The refined vector of slot `slot` into `out` (`dim` values for `f32` / `f16` in the
    /// original space; for `pq8`, `padded_dim` values of the decoded residual, to add to the
    /// item's reconstruction in the rotated space).
    ///
    /// # Panics
    /// When `slot` is not below the slot count or `out` has the wrong length.
    #[track_caller]
    pub fn decode(&self, slot: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.width, "output length");
        match self.kind {
            RefineKind::F32 => {
                let row = self.slot_bytes(slot);
                for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            RefineKind::F16 => crate::kernels::f16_to_f32_slice(self.slot_bytes(slot), out),
            RefineKind::Pq8 => self.each_residual_value(slot, out, |o, v| *o = v),
        }
    }

    /// `pq8`: adds slot `slot`'s decoded residual to `out` (`padded_dim` values, one f32
    /// addition each), the item's reconstruction in the rotated space becoming its refined
    /// vector without a second buffer.
    ///
    /// # Panics
    /// When the data are not `pq8`, `slot` is not below the slot count or `out` has the wrong
    /// length.
    #[track_caller]
    pub fn add_residual(&self, slot: usize, out: &mut [f32]) {
        assert_eq!(self.kind, RefineKind::Pq8, "a pq8 residual");
        assert_eq!(out.len(), self.width, "output length");
        self.each_residual_value(slot, out, |o, v| *o += v);
    }

    /// Calls `op(o, v)` for each of `out`'s values `o` and slot `slot`'s decoded `pq8`
    /// residual value `v` at the same place.
    #[inline(always)]
    fn each_residual_value(&self, slot: usize, out: &mut [f32], op: impl Fn(&mut f32, f32)) {
        let sub = self.width / self.n_sub;
        let codes = self.slot_bytes(slot);
        // The codebooks in place when their bytes lie 4-aligned on a little-endian CPU (as in
        // files this crate writes), else value by value.
        let floats: Option<&[f32]> = if cfg!(target_endian = "little") {
            bytemuck::try_cast_slice(self.codebooks).ok()
        } else {
            None
        };
        for (m, (&code, dst)) in codes.iter().zip(out.chunks_exact_mut(sub)).enumerate() {
            let word = (m * REFINE_PQ_CODEWORDS + usize::from(code)) * sub;
            match floats {
                Some(floats) => {
                    for (o, &v) in dst.iter_mut().zip(&floats[word..word + sub]) {
                        op(o, v);
                    }
                }
                None => {
                    let bytes = &self.codebooks[word * 4..(word + sub) * 4];
                    for (o, c) in dst.iter_mut().zip(bytes.as_chunks::<4>().0) {
                        op(o, f32::from_le_bytes(*c));
                    }
                }
            }
        }
    }
}

/// The refine section's header for `kind`.
pub(crate) fn header(kind: RefineKind, n_sub: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(REFINE_HEADER_LEN);
    out.extend_from_slice(&kind.code().to_le_bytes());
    out.extend_from_slice(&(n_sub as u32).to_le_bytes());
    out.extend_from_slice(&(width as u64).to_le_bytes());
    out.resize(REFINE_HEADER_LEN, 0);
    out
}

/// The bytes of an `f32` or `f16` refine section: `vectors` holds `slots × dim` values in slot
/// order (zeros in padding slots).
///
/// # Panics
/// When `kind` is [`RefineKind::Pq8`] or `vectors` is not whole rows of `dim`.
#[track_caller]
pub fn encode_float_refine(kind: RefineKind, dim: usize, vectors: &[f32]) -> Vec<u8> {
    assert!(dim > 0 && vectors.len().is_multiple_of(dim), "whole rows");
    let mut out = header(kind, 0, dim);
    push_float_values(kind, vectors, &mut out);
    out
}

/// Appends `values` to `out` as the stored values of `f32` or `f16` refinement data.
///
/// # Panics
/// When `kind` is [`RefineKind::Pq8`].
#[track_caller]
pub(crate) fn push_float_values(kind: RefineKind, values: &[f32], out: &mut Vec<u8>) {
    match kind {
        RefineKind::F32 => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
        RefineKind::F16 => out.extend(values.iter().flat_map(|&v| f32_to_f16(v).to_le_bytes())),
        RefineKind::Pq8 => panic!("pq8 refinement has codebooks: use encode_pq8_refine"),
    }
}

/// The bytes of a `pq8` refine section: `codebooks` holds `M_r × 256 × (padded_dim / M_r)`
/// values, `codes` `slots × M_r` codes in slot order.
///
/// # Panics
/// When the lengths disagree.
#[track_caller]
pub fn encode_pq8_refine(
    padded_dim: usize,
    n_sub: usize,
    codebooks: &[f32],
    codes: &[u8],
) -> Vec<u8> {
    assert!(
        n_sub > 0 && padded_dim.is_multiple_of(n_sub),
        "subspaces divide padded_dim"
    );
    assert_eq!(
        codebooks.len(),
        REFINE_PQ_CODEWORDS * padded_dim,
        "codebook values"
    );
    assert!(codes.len().is_multiple_of(n_sub), "whole rows of codes");
    let mut out = header(RefineKind::Pq8, n_sub, padded_dim);
    out.extend(codebooks.iter().flat_map(|v| v.to_le_bytes()));
    out.extend_from_slice(codes);
    out
}

/// `x` rounded to the nearest half-precision value (ties to even; overflow to ±∞, NaN kept).
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xFF) as i32;
    let man = bits & 0x7F_FFFF;
    if exp == 0xFF {
        // ∞ or NaN (keep a quiet NaN bit).
        return sign | 0x7C00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1F {
        return sign | 0x7C00;
    }
    if e <= 0 {
        // Subnormal half (or zero): shift the full mantissa with its implicit bit.
        if e < -10 {
            return sign;
        }
        let full = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = full >> shift;
        let rest = full & ((1 << shift) - 1);
        let midpoint = 1 << (shift - 1);
        let round = rest > midpoint || (rest == midpoint && half & 1 == 1);
        return sign | (half + u32::from(round)) as u16;
    }
    let half = ((e as u32) << 10) | (man >> 13);
    let rest = man & 0x1FFF;
    let round = rest > 0x1000 || (rest == 0x1000 && half & 1 == 1);
    // A carry out of the mantissa correctly bumps the exponent (up to ∞).
    sign | (half + u32::from(round)) as u16
}

/// The value of half-precision bits `h`.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1F);
    let man = u32::from(h & 0x3FF);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = man · 2^-24.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1F, 0) => sign | 0x7F80_0000,
        (0x1F, _) => sign | 0x7FC0_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `f32_row` borrows what `decode` copies, for aligned `f32` data only.
    #[test]
    fn f32_rows_are_the_decoded_vectors() {
        use crate::{CodeLayout, IndexParams, Metric};
        let p = IndexParams {
            dim: 3,
            padded_dim: 4,
            n_lists: 1,
            n_subspaces: 2,
            n_bits: 8,
            metric: Metric::L2,
            n_items: 2,
            code_layout: CodeLayout::Transposed,
        };
        let vectors = [1.0f32, -2.5, 3.25, 0.0, 7.0, -0.125];
        // A buffer of u64 puts the section 8-aligned, as a file's 64-aligned sections are.
        let bytes = encode_float_refine(RefineKind::F32, 3, &vectors);
        let mut words = vec![0u64; bytes.len().div_ceil(8) + 1];
        let aligned = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()];
        aligned.copy_from_slice(&bytes);
        let view = RefineView::parse(aligned, &p, 2).unwrap();
        let mut out = [0.0f32; 3];
        for slot in 0..2 {
            view.decode(slot, &mut out);
            if cfg!(target_endian = "little") {
                assert_eq!(view.f32_row(slot), Some(&out[..]));
            }
        }
        // Misaligned by one byte: no borrowed row, decode still works.
        let shifted = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[1..=bytes.len()];
        shifted.copy_from_slice(&bytes);
        let view = RefineView::parse(shifted, &p, 2).unwrap();
        assert_eq!(view.f32_row(1), None);
        view.decode(1, &mut out);
        assert_eq!(out, [0.0, 7.0, -0.125]);
        let half = encode_float_refine(RefineKind::F16, 3, &vectors);
        let mut words = vec![0u64; half.len().div_ceil(8)];
        let aligned = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..half.len()];
        aligned.copy_from_slice(&half);
        assert_eq!(RefineView::parse(aligned, &p, 2).unwrap().f32_row(0), None);
    }

    /// A `pq8` residual decodes to its codewords' values, and adds to a vector by one
    /// addition each, with the codebooks borrowed in place (aligned) or read value by value
    /// (misaligned by a byte).
    #[test]
    fn pq8_residuals_decode_and_add_aligned_or_not() {
        use crate::{CodeLayout, IndexParams, Metric};
        let p = IndexParams {
            dim: 3,
            padded_dim: 4,
            n_lists: 1,
            n_subspaces: 2,
            n_bits: 4,
            metric: Metric::L2,
            n_items: 2,
            code_layout: CodeLayout::FastScan4,
        };
        let books: Vec<f32> = (0..REFINE_PQ_CODEWORDS * 4)
            .map(|i| i as f32 * 0.25 - 7.0)
            .collect();
        let bytes = encode_pq8_refine(4, 2, &books, &[3, 255, 0, 17]);
        let mut words = vec![0u64; bytes.len().div_ceil(8) + 1];
        // Slot 1 has codes 0 and 17: subspace 0 (values 0, 1) takes word 0, subspace 1
        // (values 2, 3) word 17 of its 256.
        let word = |m: usize, k: usize, j: usize| books[(m * REFINE_PQ_CODEWORDS + k) * 2 + j];
        let expected = [word(0, 0, 0), word(0, 0, 1), word(1, 17, 0), word(1, 17, 1)];
        for shift in [0, 1] {
            let at = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[shift..][..bytes.len()];
            at.copy_from_slice(&bytes);
            let view = RefineView::parse(at, &p, 2).unwrap();
            let mut out = [9.0f32; 4];
            view.decode(1, &mut out);
            assert_eq!(out, expected, "shift {shift}");
            let mut sum = [0.5f32, -1.0, 2.0, 0.0];
            view.add_residual(1, &mut sum);
            let added: Vec<f32> = [0.5f32, -1.0, 2.0, 0.0]
                .iter()
                .zip(&expected)
                .map(|(a, b)| a + b)
                .collect();
            assert_eq!(sum[..], added[..], "shift {shift}");
        }
    }

    /// The row conversion (F16C where the CPU has it) gives the scalar conversion's bits for
    /// every half-precision value, NaN payloads included, at every offset of a row's tail.
    #[test]
    fn row_conversion_equals_the_scalar_one() {
        let bytes: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
        for tail in 0..9 {
            let bytes = &bytes[..bytes.len() - 2 * tail];
            let mut out = vec![0.0f32; bytes.len() / 2];
            crate::kernels::f16_to_f32_slice(bytes, &mut out);
            for (h, v) in out.iter().enumerate() {
                assert_eq!(v.to_bits(), f16_to_f32(h as u16).to_bits(), "{h:#06x}");
            }
        }
    }

    #[test]
    fn half_precision_round_trips_and_rounds_to_nearest() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f16_to_f32(f32_to_f16(x)).is_nan());
            } else {
                assert_eq!(f32_to_f16(x), h, "{h:#06x}");
            }
        }
        assert_eq!(f16_to_f32(f32_to_f16(1.0 + 1.0 / 4096.0)), 1.0);
        assert_eq!(f16_to_f32(f32_to_f16(65520.0)), f32::INFINITY);
        assert_eq!(f16_to_f32(f32_to_f16(1e-9)), 0.0);
        // Nearest: the error is at most half an ulp of the half-precision value.
        let mut x = 1e-4f32;
        while x < 6e4 {
            let y = f16_to_f32(f32_to_f16(x));
            assert!((y - x).abs() <= x * (1.0 / 2048.0) + 3e-8, "{x} -> {y}");
            x *= 1.0173;
        }
    }
}
