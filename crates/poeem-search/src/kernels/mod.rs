//! Scan kernels: the scores of block-transposed PQ codes by table lookup, and the filter that
//! passes only candidates able to enter the top-k.
//!
//! A list's codes come in blocks of [`BLOCK`] slots; inside a block, subspace `m`'s codes of the
//! 32 slots are adjacent. With a lookup table `T` of `M` rows of [`TABLE_STRIDE`] floats, slot
//! `s` scores `(bias + b_s) + Σ_m T[m][code_m(s)]`, summed in subspace order, where `b_s` is an
//! optional per-slot term (the L2 search's `‖r‖² + 2⟨v, r⟩` of the item's residual `r`).
//! One-byte codes index a row of 256 entries directly (entries at or above `2^n_bits` are zero,
//! so any byte, even a corrupt one, stays in bounds). The scalar kernel is the specification; the AVX2
//! kernel (x86-64) compares eight scores with the top-k threshold at once, and returns the same
//! bits. Lookups are scalar loads in both: two loads per lookup (code byte, table entry) bound
//! the scan, and the gather instructions of the CPUs measured (Zen 4) are slower than that.

use std::fmt;
use std::str::FromStr;

use crate::topk::TopK;
use crate::{BLOCK, SearchError};

#[cfg(target_arch = "x86_64")]
mod avx2;
pub(crate) mod fastscan;
pub(crate) mod scalar;

pub use fastscan::QuantizedTable;

/// Entries per subspace row of a lookup table for one-byte codes.
pub const TABLE_STRIDE: usize = 256;

/// An instruction set for the scan kernel, chosen once per [`crate::SearchIndex`].
///
/// There is no AVX-512 kernel: on the Zen 4 CPU measured, 16-lane gathers scored codes more
/// slowly than scalar lookups, and the lookups, not the compares, bound the scan. For the
/// 4-bit scan, 512-bit shuffles over two subspace pairs at a time (half the instructions)
/// left a batched 2M-item search's time per query unchanged on a Sapphire Rapids-class Xeon
/// (2026-12-03): 512-bit shuffles issue on one port, 256-bit ones on two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// Portable code, the specification of the others.
    Scalar,
    /// x86-64 AVX2: scalar lookups assembled into 8-lane sums, 8-lane threshold compares.
    Avx2,
}

impl Kernel {
    /// All kernels, from the most portable.
    pub const ALL: [Kernel; 2] = [Kernel::Scalar, Kernel::Avx2];

    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        [Kernel::Avx2, Kernel::Scalar]
            .into_iter()
            .find(|k| k.is_available())
            .unwrap_or(Kernel::Scalar)
    }

    /// Whether this CPU runs the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 => false,
        }
    }

    /// The kernel's short name (`scalar`, `avx2`).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
        }
    }

    /// The error for a kernel this CPU does not run.
    pub(crate) fn unavailable(self) -> SearchError {
        SearchError::InvalidParameter {
            name: "kernel",
            value: self.name().to_owned(),
            reason: "this CPU does not support its instructions",
        }
    }

    /// Scores whole blocks of one-byte codes: for slot `s = b·32 + l` (block `b`, lane `l`),
    /// `out[s] = bias + Σ_m table[m·256 + codes[(b·M + m)·32 + l]]`, summed in subspace order.
    /// Every kernel returns the same bits. This is the scan without the top-k filter, for tests
    /// and benchmarks.
    ///
    /// # Errors
    /// [`SearchError::InvalidParameter`] when this CPU does not run the kernel or
    /// `n_subspaces` is 0; [`SearchError::DimensionMismatch`] when `table` is not
    /// `n_subspaces · 256` long, `codes` not a whole number of blocks, or `out` not one score
    /// per slot.
    pub fn score_blocks(
        self,
        table: &[f32],
        n_subspaces: usize,
        bias: f32,
        codes: &[u8],
        out: &mut [f32],
    ) -> Result<(), SearchError> {
        self.score_blocks_impl(table, n_subspaces, bias, None, codes, out)
    }

    /// As [`Kernel::score_blocks`], with a term per slot added to the bias first:
    /// `out[s] = (bias + slot_bias[s]) + Σ_m …` (the form of an L2 scan).
    ///
    /// # Errors
    /// As [`Kernel::score_blocks`], and [`SearchError::DimensionMismatch`] when `slot_bias` is
    /// not one value per slot.
    pub fn score_blocks_with_slot_bias(
        self,
        table: &[f32],
        n_subspaces: usize,
        bias: f32,
        slot_bias: &[f32],
        codes: &[u8],
        out: &mut [f32],
    ) -> Result<(), SearchError> {
        self.score_blocks_impl(table, n_subspaces, bias, Some(slot_bias), codes, out)
    }

    /// The checks every kernel call starts with: the kernel runs here, and `M` is at least 1.
    fn check_call(self, n_subspaces: usize) -> Result<(), SearchError> {
        if !self.is_available() {
            return Err(self.unavailable());
        }
        if n_subspaces == 0 {
            return Err(SearchError::InvalidParameter {
                name: "n_subspaces",
                value: "0".to_owned(),
                reason: "must be at least 1",
            });
        }
        Ok(())
    }

    fn score_blocks_impl(
        self,
        table: &[f32],
        n_subspaces: usize,
        bias: f32,
        slot_bias: Option<&[f32]>,
        codes: &[u8],
        out: &mut [f32],
    ) -> Result<(), SearchError> {
        self.check_call(n_subspaces)?;
        let mismatch = |what, expected, got| SearchError::DimensionMismatch {
            what,
            expected,
            got,
        };
        if table.len() != n_subspaces * TABLE_STRIDE {
            return Err(mismatch(
                "table entries",
                n_subspaces * TABLE_STRIDE,
                table.len(),
            ));
        }
        let block_bytes = n_subspaces * BLOCK;
        let n_blocks = codes.len() / block_bytes;
        if codes.len() != n_blocks * block_bytes {
            return Err(mismatch(
                "code bytes (whole blocks)",
                n_blocks.max(1) * block_bytes,
                codes.len(),
            ));
        }
        if out.len() != n_blocks * BLOCK {
            return Err(mismatch("scores", n_blocks * BLOCK, out.len()));
        }
        if let Some(slot_bias) = slot_bias
            && slot_bias.len() != n_blocks * BLOCK
        {
            return Err(mismatch("slot biases", n_blocks * BLOCK, slot_bias.len()));
        }
        for (b, (block, out)) in codes
            .chunks_exact(block_bytes)
            .zip(out.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let Some(out) = out.first_chunk_mut::<BLOCK>() else {
                unreachable!("chunks_exact_mut yields whole blocks")
            };
            let slot_bias = slot_bias.and_then(|s| s[b * BLOCK..].first_chunk::<BLOCK>());
            match self {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => avx2::score_block(table, n_subspaces, bias, slot_bias, block, out),
                _ => scalar::score_block(table, n_subspaces, bias, slot_bias, block, out),
            }
        }
        Ok(())
    }

    /// The 16-bit sums of whole fast-scan blocks of 4-bit codes (see
    /// [`crate::layout::fast_scan_position`]): for slot `s = b·32 + l`,
    /// `out[s] = Σ_m entries[m·16 + code_m(s)]` (wrapping), with `entries` a quantized table of
    /// `32 · ⌈M/2⌉` bytes (subspace `m`'s 16 entries at `m·16`, zeros past `M`). Every kernel
    /// returns the same sums. The scan without its top-k filter, for tests and benchmarks.
    ///
    /// # Errors
    /// As [`Kernel::score_blocks`], for a table not `32 · ⌈M/2⌉` long, codes not whole blocks
    /// of `16 · ⌈M/2⌉ · 2` bytes, or `out` not one sum per slot.
    pub fn sum_blocks_4bit(
        self,
        entries: &[u8],
        n_subspaces: usize,
        codes: &[u8],
        out: &mut [u16],
    ) -> Result<(), SearchError> {
        self.check_call(n_subspaces)?;
        let mismatch = |what, expected, got| SearchError::DimensionMismatch {
            what,
            expected,
            got,
        };
        let block_bytes = n_subspaces.div_ceil(2) * BLOCK;
        if entries.len() != block_bytes {
            return Err(mismatch(
                "quantized table entries",
                block_bytes,
                entries.len(),
            ));
        }
        let n_blocks = codes.len() / block_bytes;
        if codes.len() != n_blocks * block_bytes {
            return Err(mismatch(
                "code bytes (whole blocks)",
                n_blocks.max(1) * block_bytes,
                codes.len(),
            ));
        }
        if out.len() != n_blocks * BLOCK {
            return Err(mismatch("sums", n_blocks * BLOCK, out.len()));
        }
        for (block, out) in codes
            .chunks_exact(block_bytes)
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let sums = match self {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => avx2::block_sums_4bit(entries, n_subspaces, block),
                _ => fastscan::block_sums(entries, n_subspaces, block),
            };
            out.copy_from_slice(&sums);
        }
        Ok(())
    }

    /// Quantizes the fast-scan lookup table `table + terms` (`M` rows of 16 floats; `terms`,
    /// when given, as long as `table`) into `out`, as [`QuantizedTable::quantize`] does.
    /// A kernel this CPU does not run falls back to the portable code.
    ///
    /// # Panics
    /// When `table` is empty or not whole rows, or `terms` is not as long as `table`.
    #[track_caller]
    pub(crate) fn quantize4(self, table: &[f32], terms: Option<&[f32]>, out: &mut QuantizedTable) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if avx2::available() => avx2::quantize4(table, terms, out),
            _ => out.quantize(table, terms),
        }
    }

    /// Scans one fast-scan list, offering every item whose key does not exceed the threshold
    /// of `top` to it. A kernel this CPU does not run falls back to the scalar one.
    ///
    /// # Panics
    /// When the table or the codes are shorter than [`Scan4`] requires.
    #[track_caller]
    pub(crate) fn scan4(self, s: &Scan4<'_>, top: &mut TopK) {
        s.check();
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if avx2::available() => avx2::scan4(s, top),
            _ => fastscan::scan(s, top),
        }
    }

    /// Scans one list of one-byte codes, offering every item whose score does not exceed the
    /// threshold of `top` to it. A kernel this CPU does not run (never held by a
    /// [`crate::SearchIndex`]) falls back to the scalar one.
    ///
    /// # Panics
    /// When the table or the codes are shorter than [`Scan`] requires.
    #[track_caller]
    pub(crate) fn scan(self, s: &Scan<'_>, top: &mut TopK) {
        s.check(1);
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if avx2::available() => avx2::scan(s, top),
            _ => scalar::scan(s, top),
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kernel {
    type Err = SearchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| SearchError::InvalidParameter {
                name: "kernel",
                value: s.to_owned(),
                reason: "expected scalar or avx2",
            })
    }
}

/// Little-endian half-precision values as `f32` (exact), into `out` (one per two bytes): eight
/// at a time by F16C's conversion where the CPU has it, else by [`crate::refine::f16_to_f32`],
/// with the same values.
///
/// # Panics
/// When `out` is not half as long as `bytes`.
#[inline]
pub(crate) fn f16_to_f32_slice(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(bytes.len(), 2 * out.len(), "one value per two bytes");
    #[cfg(target_arch = "x86_64")]
    if avx2::f16c_available() {
        avx2::f16_to_f32_slice(bytes, out);
        return;
    }
    for (o, c) in out.iter_mut().zip(bytes.as_chunks::<2>().0) {
        *o = crate::refine::f16_to_f32(u16::from_le_bytes(*c));
    }
}

/// Hints the CPU to fetch the first `max_bytes` of `bytes` into its caches (a no-op where no
/// prefetch instruction is wired up).
#[inline]
pub(crate) fn prefetch(bytes: &[u8], max_bytes: usize) {
    let bytes = &bytes[..bytes.len().min(max_bytes)];
    #[cfg(target_arch = "x86_64")]
    avx2::prefetch(bytes);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// One fast-scan list to scan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scan4<'a> {
    /// The query's (and, for L2, the list's) quantized table.
    pub table: &'a QuantizedTable,
    /// `M`.
    pub n_subspaces: usize,
    /// Added to every key of the list (before [`QuantizedTable::base`]).
    pub bias: f32,
    /// The list's fast-scan codes, `padded_len(n_items) · ⌈M/2⌉` bytes.
    pub codes: &'a [u8],
    /// Items in the list.
    pub n_items: usize,
    /// The index-wide slot of the list's first item: item `pos` is offered as
    /// `first_slot + pos` (ids are looked up for the few kept, not for every candidate).
    pub first_slot: u64,
}

impl Scan4<'_> {
    /// Bytes per block.
    #[inline(always)]
    pub(crate) fn block_bytes(&self) -> usize {
        self.n_subspaces.div_ceil(2) * BLOCK
    }

    /// The slot offered for item `pos` of the list.
    #[inline(always)]
    pub(crate) fn slot(&self, pos: usize) -> u64 {
        self.first_slot + pos as u64
    }

    /// Checks the lengths the kernels rely on.
    #[track_caller]
    pub(crate) fn check(&self) {
        assert!(self.n_subspaces > 0, "at least one subspace");
        assert_eq!(
            self.table.entries.len(),
            self.block_bytes(),
            "table of the index's shape"
        );
        assert_eq!(
            self.codes.len(),
            crate::padded_len(self.n_items) * self.n_subspaces.div_ceil(2),
            "codes must cover the list's blocks"
        );
    }
}

/// One list to scan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scan<'a> {
    /// `M` rows of lookup entries: [`TABLE_STRIDE`] per row for one-byte codes.
    pub table: &'a [f32],
    /// `M`.
    pub n_subspaces: usize,
    /// Added to every score of the list.
    pub bias: f32,
    /// Added to the score of each slot: one value per slot, padding included, or empty for none.
    pub slot_bias: &'a [f32],
    /// The list's block-transposed codes, `padded_len(n_items) · M · code_width` bytes.
    pub codes: &'a [u8],
    /// Items in the list (padding excluded).
    pub n_items: usize,
    /// The index-wide slot of the list's first item: item `pos` is offered as
    /// `first_slot + pos`.
    pub first_slot: u64,
}

impl Scan<'_> {
    /// Checks the lengths the kernels rely on, for codes of `width` bytes.
    #[track_caller]
    pub(crate) fn check(&self, width: usize) {
        assert!(self.n_subspaces > 0, "at least one subspace");
        if width == 1 {
            assert!(
                self.table.len() >= self.n_subspaces * TABLE_STRIDE,
                "table too short"
            );
        }
        let slots = crate::padded_len(self.n_items);
        assert_eq!(
            self.codes.len(),
            slots * self.n_subspaces * width,
            "codes must cover the list's blocks"
        );
        assert!(
            self.slot_bias.is_empty() || self.slot_bias.len() == slots,
            "one slot bias per slot, or none"
        );
    }

    /// The slot offered for item `pos` of the list.
    #[inline(always)]
    pub(crate) fn slot(&self, pos: usize) -> u64 {
        self.first_slot + pos as u64
    }

    /// The slot biases of block `b`, if any.
    #[inline(always)]
    pub(crate) fn block_bias(&self, b: usize) -> Option<&[f32; BLOCK]> {
        self.slot_bias.get(b * BLOCK..)?.first_chunk::<BLOCK>()
    }
}
