//! The in-memory shape of an index, shared by the file format, the builders and the search.
//!
//! Items are grouped by coarse list. Each list occupies a run of *slots* that is a multiple of
//! [`BLOCK`] long; the slots past the list's size are padding (id [`PADDING_ID`], codes 0). Codes
//! are stored block-transposed so that a scan streams contiguous bytes: inside a block of
//! [`BLOCK`] slots, subspace `m`'s codes of the 32 items are adjacent. For slot `s` of a list
//! (block `b = s / BLOCK`, lane `l = s % BLOCK`), the code of subspace `m` starts at byte
//! `((b · M + m) · BLOCK + l) · code_width` of the list's codes, little-endian.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SearchError;
use crate::keys::ItemKeys;

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

    /// Bytes of codes per slot, `M · code_width`.
    pub fn slot_bytes(&self) -> usize {
        self.n_subspaces * self.code_width()
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
        })
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
        let codes = self.list(list).codes;
        assert!(pos < self.list_sizes[list] as usize, "item out of range");
        assert!(m < self.params.n_subspaces, "subspace out of range");
        let width = self.params.code_width();
        let at = ((pos / BLOCK * self.params.n_subspaces + m) * BLOCK + pos % BLOCK) * width;
        if width == 1 {
            u32::from(codes[at])
        } else {
            u32::from(u16::from_le_bytes([codes[at], codes[at + 1]]))
        }
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
        let sub = p.sub_dim();
        let mask = p.n_codewords() - 1;
        let centroid = &self.coarse_centroids[list * p.padded_dim..(list + 1) * p.padded_dim];
        for m in 0..p.n_subspaces {
            let k = self.code(list, pos, m) as usize & mask;
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
    /// Provenance: how the index was built (a JSON object).
    pub metadata: serde_json::Value,
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
        metadata: serde_json::Value,
    ) -> Result<Self, SearchError> {
        params.n_items = lists.len();
        params.validate()?;
        let (n, m_count, width) = (lists.len(), params.n_subspaces, params.code_width());
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
                let at = base + ((pos / BLOCK * m_count + m) * BLOCK + pos % BLOCK) * width;
                codes[at..at + width].copy_from_slice(&code.to_le_bytes()[..width]);
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
        )
    }
}
