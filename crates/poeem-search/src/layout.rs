//! The in-memory shape of an index, shared by the file format, the builders and the search.
//!
//! Items are grouped by coarse list. Each list occupies a run of *slots* that is a multiple of
//! [`BLOCK`] long; the slots past the list's size are padding (id [`PADDING_ID`], codes 0). Codes
//! are stored block-transposed so that a scan streams contiguous bytes: inside a block of
//! [`BLOCK`] slots, subspace `m`'s codes of the 32 items are adjacent. For slot `s` of a list
//! (block `b = s / BLOCK`, lane `l = s % BLOCK`), the code of subspace `m` starts at byte
//! `((b · M + m) · BLOCK + l) · code_width` of the list's codes, little-endian
//! ([`CodeLayout::Transposed`]). 4-bit codes may instead be packed two per byte in the fast-scan
//! layout ([`CodeLayout::FastScan4`], see [`fast_scan_position`]), which format version 2 adds.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SearchError;
use crate::keys::ItemKeys;
use crate::metadata::IndexMetadata;
use crate::refine::RefineView;

/// Items per code block: lists are padded to a multiple of this many slots.
pub const BLOCK: usize = 32;

/// The id stored in padding slots.
pub const PADDING_ID: u64 = u64::MAX;

/// How a query is compared with the items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// ⟨q, x⟩, larger is better.
    InnerProduct,
    /// ‖q − x‖², smaller is better.
    L2,
    /// ⟨q/‖q‖, x/‖x‖⟩, larger is better: items are normalised when the index is built and queries
    /// when they are searched.
    Cosine,
}

impl Metric {
    /// All metrics, in on-disk code order.
    pub const ALL: [Metric; 3] = [Metric::InnerProduct, Metric::L2, Metric::Cosine];

    /// The metric's on-disk code.
    pub fn code(self) -> u32 {
        match self {
            Metric::InnerProduct => 0,
            Metric::L2 => 1,
            Metric::Cosine => 2,
        }
    }

    /// The metric with on-disk code `code`.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.code() == code)
    }

    /// The metric's short name (`ip`, `l2`, `cosine`), as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::InnerProduct => "ip",
            Metric::L2 => "l2",
            Metric::Cosine => "cosine",
        }
    }

    /// Whether a larger score is a better match.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }
}

impl FromStr for Metric {
    type Err = SearchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ip" | "inner_product" | "dot" => Ok(Metric::InnerProduct),
            "l2" => Ok(Metric::L2),
            "cosine" | "cos" => Ok(Metric::Cosine),
            _ => Err(SearchError::InvalidParameter {
                name: "metric",
                value: s.to_owned(),
                reason: "expected ip, l2 or cosine",
            }),
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a list's codes are arranged inside its blocks of [`BLOCK`] slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeLayout {
    /// Format version 1's layout: `code_width` bytes per code, subspace-major inside a block
    /// (`M · code_width` bytes per slot).
    #[default]
    Transposed,
    /// 4-bit codes, two per byte, for the fast-scan kernels (format version 2, `n_bits` = 4):
    /// `⌈M/2⌉` bytes per slot; see [`fast_scan_position`].
    FastScan4,
}

impl CodeLayout {
    /// The layout's on-disk code (format version 2's header field `code_layout`).
    pub fn code(self) -> u32 {
        match self {
            CodeLayout::Transposed => 0,
            CodeLayout::FastScan4 => 1,
        }
    }

    /// The layout with on-disk code `code`.
    pub fn from_code(code: u32) -> Option<Self> {
        [CodeLayout::Transposed, CodeLayout::FastScan4]
            .into_iter()
            .find(|l| l.code() == code)
    }

    /// The layout's name (`transposed`, `fast_scan4`).
    pub fn name(self) -> &'static str {
        match self {
            CodeLayout::Transposed => "transposed",
            CodeLayout::FastScan4 => "fast_scan4",
        }
    }

    /// The layout a builder picks for `n_bits`: fast-scan for 4-bit codes, transposed otherwise.
    pub fn for_bits(n_bits: u32) -> Self {
        if n_bits == 4 {
            CodeLayout::FastScan4
        } else {
            CodeLayout::Transposed
        }
    }
}

/// Where the 4-bit code of subspace `m` of lane `lane` (0..32) lies inside a fast-scan block:
/// `(byte, shift)`, the code being `(block[byte] >> shift) & 0xF`.
///
/// A block of [`BLOCK`] slots holds `⌈M/2⌉` groups of 32 bytes, one per pair of subspaces
/// `(2p, 2p+1)`. In group `p`, byte `i < 16` holds subspace `2p`'s code of lane `i` in its low
/// nibble and of lane `i + 16` in its high nibble; byte `16 + i` holds subspace `2p + 1`'s codes
/// of the same lanes. (With `M` odd the last group's second half is zero.) One 32-byte shuffle
/// of the group's low nibbles, against a register holding subspace `2p`'s 16-entry table in its
/// low half and `2p + 1`'s in its high half, thus looks up both subspaces for lanes 0..16; the
/// high nibbles do the same for lanes 16..32.
#[inline(always)]
pub fn fast_scan_position(m: usize, lane: usize) -> (usize, u32) {
    let byte = (m / 2) * BLOCK + (m % 2) * (BLOCK / 2) + lane % (BLOCK / 2);
    (byte, if lane < BLOCK / 2 { 0 } else { 4 })
}

/// The numbers that fix an index's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexParams {
    /// Dimension of the vectors and queries.
    pub dim: usize,
    /// `dim` zero-padded to a multiple of `n_subspaces`; rotation, centroids and codebooks live
    /// in this space.
    pub padded_dim: usize,
    /// Coarse lists J (at least 1; a codec without a coarse level has one list at the origin).
    pub n_lists: usize,
    /// PQ subspaces M.
    pub n_subspaces: usize,
    /// Bits per code (1 to 16): codes take one byte up to 8 bits, two above.
    pub n_bits: u32,
    /// How queries are compared with items.
    pub metric: Metric,
    /// Number of items (slots holding an item, not padding).
    pub n_items: usize,
    /// How the codes are laid out ([`CodeLayout::Transposed`] unless 4-bit fast-scan).
    #[serde(default)]
    pub code_layout: CodeLayout,
}

impl IndexParams {
    /// Dimension of one subspace.
    pub fn sub_dim(&self) -> usize {
        self.padded_dim / self.n_subspaces
    }

    /// Codewords per subspace, `2^n_bits`.
    pub fn n_codewords(&self) -> usize {
        1usize << self.n_bits
    }

    /// Bytes per code: 1 for up to 8 bits, 2 above.
    pub fn code_width(&self) -> usize {
        if self.n_bits <= 8 { 1 } else { 2 }
    }

    /// Bytes of codes per slot: `M · code_width`, or `⌈M/2⌉` in the fast-scan layout.
    pub fn slot_bytes(&self) -> usize {
        match self.code_layout {
            CodeLayout::Transposed => self.n_subspaces * self.code_width(),
            CodeLayout::FastScan4 => self.n_subspaces.div_ceil(2),
        }
    }

    /// Bytes of codes per block of [`BLOCK`] slots.
    pub fn block_bytes(&self) -> usize {
        self.slot_bytes() * BLOCK
    }

    /// Checks that the numbers are consistent with each other.
    ///
    /// # Errors
    /// [`SearchError::InvalidParameter`] naming the first bad field.
    pub fn validate(&self) -> Result<(), SearchError> {
        let bad = |name: &'static str, value: usize, reason: &'static str| {
            Err(SearchError::InvalidParameter {
                name,
                value: value.to_string(),
                reason,
            })
        };
        if self.dim == 0 {
            return bad("dim", self.dim, "must be at least 1");
        }
        if self.n_subspaces == 0 {
            return bad("n_subspaces", self.n_subspaces, "must be at least 1");
        }
        let padded = self
            .dim
            .div_ceil(self.n_subspaces)
            .checked_mul(self.n_subspaces);
        if padded != Some(self.padded_dim) {
            return bad(
                "padded_dim",
                self.padded_dim,
                "must be dim rounded up to a multiple of n_subspaces",
            );
        }
        if self.n_lists == 0 {
            return bad("n_lists", self.n_lists, "must be at least 1");
        }
        if !(1..=16).contains(&self.n_bits) {
            return bad("n_bits", self.n_bits as usize, "must be between 1 and 16");
        }
        if self.code_layout == CodeLayout::FastScan4 && self.n_bits != 4 {
            return bad(
                "n_bits",
                self.n_bits as usize,
                "the fast-scan layout holds 4-bit codes only",
            );
        }
        Ok(())
    }
}

/// Number of slots a list of `len` items occupies.
pub fn padded_len(len: usize) -> usize {
    len.div_ceil(BLOCK) * BLOCK
}

/// A validated, borrowed view of a whole index: what search reads.
///
/// Built only by [`IndexView::new`], which checks every length and offset, so that code reading
/// a view can index it without further checks.
#[derive(Debug, Clone, Copy)]
pub struct IndexView<'a> {
    params: IndexParams,
    rotation: Option<&'a [f32]>,
    coarse_centroids: &'a [f32],
    codebooks: &'a [f32],
    list_offsets: &'a [u64],
    list_sizes: &'a [u64],
    ids: &'a [u64],
    codes: &'a [u8],
    refine: Option<RefineView<'a>>,
}

/// One list of a view: its items' ids and block-transposed codes.
#[derive(Debug, Clone, Copy)]
pub struct ListView<'a> {
    /// Ids of the list's items (padding excluded).
    pub ids: &'a [u64],
    /// The list's codes: `padded_len(ids.len()) · M · code_width` bytes, block-transposed.
    pub codes: &'a [u8],
}

impl ListView<'_> {
    /// The code of subspace `m` of slot `pos` (padding slots included) in a list of an index
    /// with parameters `p`.
    ///
    /// # Panics
    /// When `pos` or `m` is out of range.
    #[track_caller]
    pub fn code(&self, p: &IndexParams, pos: usize, m: usize) -> u32 {
        assert!(m < p.n_subspaces, "subspace out of range");
        let block = &self.codes[pos / BLOCK * p.block_bytes()..][..p.block_bytes()];
        let lane = pos % BLOCK;
        match (p.code_layout, p.code_width()) {
            (CodeLayout::FastScan4, _) => {
                let (byte, shift) = fast_scan_position(m, lane);
                u32::from((block[byte] >> shift) & 0xF)
            }
            (CodeLayout::Transposed, 1) => u32::from(block[m * BLOCK + lane]),
            (CodeLayout::Transposed, _) => {
                let at = (m * BLOCK + lane) * 2;
                u32::from(u16::from_le_bytes([block[at], block[at + 1]]))
            }
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the list holds no item.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl<'a> IndexView<'a> {
    /// Checks the parts against `params` and against each other.
    ///
    /// - `rotation`: `padded_dim²` values, row-major (`x ↦ x R`), or `None` for the identity;
    /// - `coarse_centroids`: `n_lists × padded_dim`;
    /// - `codebooks`: `M × 2^n_bits × sub_dim`, subspace-major;
    /// - `list_offsets`: `n_lists + 1` slot offsets, starting at 0, each a multiple of [`BLOCK`],
    ///   with `list_offsets[j + 1] − list_offsets[j] = padded_len(list_sizes[j])`;
    /// - `list_sizes`: `n_lists` item counts summing to `n_items`;
    /// - `ids`: one per slot; `codes`: `slots · M · code_width` bytes.
    ///
    /// # Errors
    /// The first inconsistency found, naming it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        params: IndexParams,
        rotation: Option<&'a [f32]>,
        coarse_centroids: &'a [f32],
        codebooks: &'a [f32],
        list_offsets: &'a [u64],
        list_sizes: &'a [u64],
        ids: &'a [u64],
        codes: &'a [u8],
    ) -> Result<Self, SearchError> {
        params.validate()?;
        let p = &params;
        let mismatch = |what: &'static str, expected: usize, got: usize| {
            if expected == got {
                Ok(())
            } else {
                Err(SearchError::DimensionMismatch {
                    what,
                    expected,
                    got,
                })
            }
        };
        let overflow = |what: &'static str| SearchError::Overflow { what };
        if let Some(r) = rotation {
            let len = p
                .padded_dim
                .checked_mul(p.padded_dim)
                .ok_or(overflow("rotation size"))?;
            mismatch("rotation values", len, r.len())?;
        }
        let coarse_len = p
            .n_lists
            .checked_mul(p.padded_dim)
            .ok_or(overflow("coarse centroid count"))?;
        mismatch("coarse centroid values", coarse_len, coarse_centroids.len())?;
        let codebook_len = p
            .n_codewords()
            .checked_mul(p.padded_dim)
            .ok_or(overflow("codebook size"))?;
        mismatch("codebook values", codebook_len, codebooks.len())?;
        let n_offsets = p.n_lists.checked_add(1).ok_or(overflow("list count"))?;
        mismatch("list offsets", n_offsets, list_offsets.len())?;
        mismatch("list sizes", p.n_lists, list_sizes.len())?;
        if list_offsets[0] != 0 {
            return Err(SearchError::BadList {
                list: 0,
                reason: "the first list does not start at slot 0",
            });
        }
        let mut n_items = 0usize;
        for (list, (&size, pair)) in list_sizes.iter().zip(list_offsets.windows(2)).enumerate() {
            let size = usize::try_from(size).map_err(|_| overflow("list size"))?;
            let (start, end) = (pair[0], pair[1]);
            if end < start {
                return Err(SearchError::BadList {
                    list,
                    reason: "list offsets decrease",
                });
            }
            if start % BLOCK as u64 != 0 {
                return Err(SearchError::BadList {
                    list,
                    reason: "list offset is not a multiple of the block size",
                });
            }
            let padded = size
                .checked_next_multiple_of(BLOCK)
                .ok_or(overflow("list size"))?;
            if end - start != padded as u64 {
                return Err(SearchError::BadList {
                    list,
                    reason: "list slots do not match its size rounded up to a block",
                });
            }
            n_items = n_items.checked_add(size).ok_or(overflow("item count"))?;
        }
        mismatch("items in the lists", p.n_items, n_items)?;
        let slots = usize::try_from(list_offsets[p.n_lists]).map_err(|_| overflow("slot count"))?;
        mismatch("ids (one per slot)", slots, ids.len())?;
        let code_len = slots
            .checked_mul(p.slot_bytes())
            .ok_or(overflow("code bytes"))?;
        mismatch("code bytes", code_len, codes.len())?;
        Ok(Self {
            params,
            rotation,
            coarse_centroids,
            codebooks,
            list_offsets,
            list_sizes,
            ids,
            codes,
            refine: None,
        })
    }

    /// The same view with refinement data: the bytes of a refine section (see
    /// [`crate::refine`]), checked against the shape and slot count, or `None`.
    ///
    /// # Errors
    /// When the section's header or length is inconsistent.
    pub fn with_refine(self, refine: Option<&'a [u8]>) -> Result<Self, SearchError> {
        let refine = match refine {
            Some(bytes) => Some(RefineView::parse(bytes, &self.params, self.ids.len())?),
            None => None,
        };
        Ok(Self { refine, ..self })
    }

    /// The refinement data, if the index has some.
    pub fn refine(&self) -> Option<&RefineView<'a>> {
        self.refine.as_ref()
    }

    /// The list holding slot `slot` and the slot's position in it.
    ///
    /// # Panics
    /// When `slot` is not below the slot count.
    #[track_caller]
    pub fn locate_slot(&self, slot: usize) -> (usize, usize) {
        assert!(slot < self.ids.len(), "slot out of range");
        let list = self
            .list_offsets
            .partition_point(|&o| o <= slot as u64)
            .saturating_sub(1)
            .min(self.params.n_lists - 1);
        (list, slot - self.list_offsets[list] as usize)
    }

    /// The index's shape.
    pub fn params(&self) -> &IndexParams {
        &self.params
    }

    /// The rotation, row-major `padded_dim × padded_dim`, or `None` for the identity.
    pub fn rotation(&self) -> Option<&'a [f32]> {
        self.rotation
    }

    /// Coarse centroids, `n_lists × padded_dim`.
    pub fn coarse_centroids(&self) -> &'a [f32] {
        self.coarse_centroids
    }

    /// PQ codebooks, `M × 2^n_bits × sub_dim`.
    pub fn codebooks(&self) -> &'a [f32] {
        self.codebooks
    }

    /// Slot offsets of the lists (`n_lists + 1`).
    pub fn list_offsets(&self) -> &'a [u64] {
        self.list_offsets
    }

    /// Item counts of the lists.
    pub fn list_sizes(&self) -> &'a [u64] {
        self.list_sizes
    }

    /// Ids of all slots (padding slots hold [`PADDING_ID`]).
    pub fn slot_ids(&self) -> &'a [u64] {
        self.ids
    }

    /// All codes, block-transposed by list.
    pub fn codes(&self) -> &'a [u8] {
        self.codes
    }

    /// List `list`.
    ///
    /// # Panics
    /// When `list >= n_lists`.
    #[track_caller]
    pub fn list(&self, list: usize) -> ListView<'a> {
        let start = self.list_offsets[list] as usize;
        let end = self.list_offsets[list + 1] as usize;
        let size = self.list_sizes[list] as usize;
        let slot_bytes = self.params.slot_bytes();
        ListView {
            ids: &self.ids[start..start + size],
            codes: &self.codes[start * slot_bytes..end * slot_bytes],
        }
    }

    /// The code of subspace `m` of item `pos` in `list`.
    ///
    /// # Panics
    /// When `list`, `pos` or `m` is out of range.
    #[track_caller]
    pub fn code(&self, list: usize, pos: usize, m: usize) -> u32 {
        assert!(pos < self.list_sizes[list] as usize, "item out of range");
        self.list(list).code(&self.params, pos, m)
    }

    /// The reconstruction of item `pos` of `list` in the rotated, padded space:
    /// `v_list + [c¹_{k₁} | … | c^M_{k_M}]` (codes masked to `n_bits`).
    ///
    /// # Panics
    /// When `list` or `pos` is out of range or `out` is not `padded_dim` long.
    #[track_caller]
    pub fn reconstruct_rotated(&self, list: usize, pos: usize, out: &mut [f32]) {
        let p = &self.params;
        assert_eq!(out.len(), p.padded_dim, "output length");
        assert!(pos < self.list_sizes[list] as usize, "item out of range");
        let sub = p.sub_dim();
        let mask = p.n_codewords() - 1;
        let centroid = &self.coarse_centroids[list * p.padded_dim..(list + 1) * p.padded_dim];
        let items = self.list(list);
        for m in 0..p.n_subspaces {
            let k = items.code(p, pos, m) as usize & mask;
            let word = &self.codebooks[(m * p.n_codewords() + k) * sub..][..sub];
            let dst = &mut out[m * sub..(m + 1) * sub];
            for ((o, &c), &w) in dst.iter_mut().zip(&centroid[m * sub..]).zip(word) {
                *o = c + w;
            }
        }
    }

    /// The reconstruction of item `pos` of `list` in the original space (`dim` values):
    /// the rotated reconstruction times `Rᵀ`, cut to `dim`.
    ///
    /// # Panics
    /// As [`IndexView::reconstruct_rotated`], or when `out` is not `dim` long.
    #[track_caller]
    pub fn reconstruct(&self, list: usize, pos: usize, out: &mut [f32]) {
        let p = &self.params;
        assert_eq!(out.len(), p.dim, "output length");
        let mut rotated = vec![0.0f32; p.padded_dim];
        self.reconstruct_rotated(list, pos, &mut rotated);
        match self.rotation {
            None => out.copy_from_slice(&rotated[..p.dim]),
            Some(r) => {
                // x = x' Rᵀ: x_i = Σ_j x'_j R[i][j].
                for (i, o) in out.iter_mut().enumerate() {
                    let row = &r[i * p.padded_dim..(i + 1) * p.padded_dim];
                    *o = row.iter().zip(&rotated).map(|(a, b)| a * b).sum();
                }
            }
        }
    }
}

/// Writes `code` as the code of subspace `m` of slot `pos` into a list's codes `codes` (which
/// must hold zeros where a fast-scan code goes: its nibble is or-ed in).
///
/// # Panics
/// When `pos` lies past `codes`.
#[track_caller]
pub(crate) fn put_code(p: &IndexParams, codes: &mut [u8], pos: usize, m: usize, code: u32) {
    let block = &mut codes[pos / BLOCK * p.block_bytes()..][..p.block_bytes()];
    let lane = pos % BLOCK;
    match p.code_layout {
        CodeLayout::FastScan4 => {
            let (byte, shift) = fast_scan_position(m, lane);
            block[byte] |= ((code & 0xF) as u8) << shift;
        }
        CodeLayout::Transposed => {
            let width = p.code_width();
            let at = (m * BLOCK + lane) * width;
            block[at..at + width].copy_from_slice(&code.to_le_bytes()[..width]);
        }
    }
}

/// An index held in memory, the input of the file writer.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexParts {
    /// The index's shape.
    pub params: IndexParams,
    /// Row-major `padded_dim²` rotation, or `None` for the identity.
    pub rotation: Option<Vec<f32>>,
    /// `n_lists × padded_dim` coarse centroids.
    pub coarse_centroids: Vec<f32>,
    /// `M × 2^n_bits × sub_dim` codebooks.
    pub codebooks: Vec<f32>,
    /// `n_lists + 1` slot offsets.
    pub list_offsets: Vec<u64>,
    /// `n_lists` item counts.
    pub list_sizes: Vec<u64>,
    /// One id per slot.
    pub ids: Vec<u64>,
    /// Block-transposed codes.
    pub codes: Vec<u8>,
    /// Provenance: how the index was built.
    pub metadata: IndexMetadata,
    /// The bytes of the optional refine section ([`crate::refine`]), or `None`.
    pub refine: Option<Vec<u8>>,
    /// The items' original ids (key `i` names the item of id `i`), written as the optional
    /// `item_keys` section; `None` for an index whose integer ids are the items' own.
    pub item_keys: Option<ItemKeys>,
}

impl IndexParts {
    /// Groups encoded items by list.
    ///
    /// `lists[i]` is item i's list, `item_codes[i·M..(i+1)·M]` its codes and `ids[i]` its id;
    /// items keep their input order inside a list. `params.n_items` is set to `lists.len()`.
    ///
    /// # Errors
    /// On mismatched lengths, a list out of range, a code not below `2^n_bits`, or parts whose
    /// lengths disagree with `params`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_item_codes<C: Copy + Into<u32>>(
        mut params: IndexParams,
        rotation: Option<Vec<f32>>,
        coarse_centroids: Vec<f32>,
        codebooks: Vec<f32>,
        lists: &[u32],
        item_codes: &[C],
        ids: &[u64],
        metadata: IndexMetadata,
    ) -> Result<Self, SearchError> {
        params.n_items = lists.len();
        params.validate()?;
        let (n, m_count) = (lists.len(), params.n_subspaces);
        if item_codes.len() != n * m_count {
            return Err(SearchError::DimensionMismatch {
                what: "item codes",
                expected: n * m_count,
                got: item_codes.len(),
            });
        }
        if ids.len() != n {
            return Err(SearchError::DimensionMismatch {
                what: "ids",
                expected: n,
                got: ids.len(),
            });
        }
        let mut list_sizes = vec![0u64; params.n_lists];
        for &list in lists {
            let slot =
                list_sizes
                    .get_mut(list as usize)
                    .ok_or_else(|| SearchError::InvalidParameter {
                        name: "list",
                        value: list.to_string(),
                        reason: "is not below n_lists",
                    })?;
            *slot += 1;
        }
        let mut list_offsets = Vec::with_capacity(params.n_lists + 1);
        list_offsets.push(0u64);
        for &size in &list_sizes {
            let last = *list_offsets.last().unwrap_or(&0);
            list_offsets.push(last + padded_len(size as usize) as u64);
        }
        let slots = *list_offsets.last().unwrap_or(&0) as usize;
        let mut slot_ids = vec![PADDING_ID; slots];
        let mut codes = vec![0u8; slots * params.slot_bytes()];
        let mut filled = vec![0usize; params.n_lists];
        let n_codewords = params.n_codewords() as u32;
        for (i, &list) in lists.iter().enumerate() {
            let list = list as usize;
            let pos = filled[list];
            filled[list] += 1;
            let slot = list_offsets[list] as usize + pos;
            slot_ids[slot] = ids[i];
            let base = list_offsets[list] as usize * params.slot_bytes();
            for m in 0..m_count {
                let code: u32 = item_codes[i * m_count + m].into();
                if code >= n_codewords {
                    return Err(SearchError::CodeOutOfRange {
                        list,
                        item: pos,
                        subspace: m,
                        code,
                        n_codewords: n_codewords as usize,
                    });
                }
                put_code(&params, &mut codes[base..], pos, m, code);
            }
        }
        let parts = Self {
            params,
            rotation,
            coarse_centroids,
            codebooks,
            list_offsets,
            list_sizes,
            ids: slot_ids,
            codes,
            metadata,
            refine: None,
            item_keys: None,
        };
        parts.view()?;
        Ok(parts)
    }

    /// The validated view of these parts.
    ///
    /// # Errors
    /// When the parts are inconsistent (see [`IndexView::new`]).
    pub fn view(&self) -> Result<IndexView<'_>, SearchError> {
        IndexView::new(
            self.params,
            self.rotation.as_deref(),
            &self.coarse_centroids,
            &self.codebooks,
            &self.list_offsets,
            &self.list_sizes,
            &self.ids,
            &self.codes,
        )?
        .with_refine(self.refine.as_deref())
    }
}
