//! [`Index`]: an index file opened for search, memory-mapped or on the heap.

use std::path::Path;

use serde::Serialize;

use crate::SearchError;
use crate::format::{self, FLAG_OPTIONAL, Layout};
use crate::keys::ItemKeysView;
use crate::layout::{
    BLOCK, CodeLayout, IndexParams, IndexParts, IndexView, PADDING_ID, fast_scan_position,
};
use crate::metadata::IndexMetadata;
use crate::storage::Storage;

/// An index file, validated and ready to search.
///
/// Opening checks the header, the section table, every section's placement and length, the
/// checksums of all sections but the ids and the codes, and the lists' offsets and sizes, so
/// that [`Index::view`] never fails and searching the view cannot read out of bounds whatever
/// the file holds. [`Index::verify`] additionally reads every byte (all checksums, every code).
///
/// An `Index` is `Send + Sync`: many threads may search one index through their own views.
pub struct Index {
    storage: Storage,
    layout: Layout,
}

/// What [`Index::info`] reports about an index file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct IndexInfo {
    /// The file's format version.
    pub format_version: u32,
    /// The file's length in bytes.
    pub file_size: u64,
    /// Whether the index is memory-mapped ([`Index::open`]) rather than on the heap.
    pub mmapped: bool,
    /// The index's shape.
    pub params: IndexParams,
    /// The CRC-32 of the header and the section table.
    pub header_crc32: u32,
    /// The sections, in section-table order.
    pub sections: Vec<SectionInfo>,
}

/// One section of an index file, as [`Index::info`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SectionInfo {
    /// The section kind's number.
    pub kind: u32,
    /// The kind's name, `"unknown"` for an optional kind this reader does not know.
    pub name: &'static str,
    /// Whether the section carries the optional flag.
    pub optional: bool,
    /// The section's offset in the file.
    pub offset: u64,
    /// The section's length in bytes.
    pub length: u64,
    /// The section's stored CRC-32.
    pub crc32: u32,
}

impl Index {
    /// Memory-maps and validates the index file at `path`.
    ///
    /// Opening reads the header and the small sections only (rotation, centroids, codebooks,
    /// list offsets and sizes, metadata), never the ids or codes, so it takes milliseconds
    /// whatever the index's size; the operating system pages the rest in as search touches it.
    /// The file must not be modified in place while it is open (replacing it by a rename, as
    /// [`write_index`](crate::write_index) does, is fine).
    ///
    /// # Errors
    /// [`SearchError::Io`] when the file cannot be opened or mapped, [`SearchError::BigEndianHost`]
    /// on a big-endian host, or the first structural problem found (see `docs/index-format.md`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SearchError> {
        format::check_host()?;
        Self::from_storage(Storage::map(path.as_ref())?)
    }

    /// Reads the index file at `path` into memory and validates it.
    ///
    /// # Errors
    /// As [`Index::open`].
    pub fn read(path: impl AsRef<Path>) -> Result<Self, SearchError> {
        format::check_host()?;
        Self::from_storage(Storage::read(path.as_ref())?)
    }

    /// Validates the bytes of an index file, copying them into an aligned buffer.
    ///
    /// # Errors
    /// As [`Index::open`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SearchError> {
        format::check_host()?;
        Self::from_storage(Storage::copy_from(bytes)?)
    }

    fn from_storage(storage: Storage) -> Result<Self, SearchError> {
        let layout = format::parse(storage.bytes())?;
        Ok(Self { storage, layout })
    }

    /// The validated view that search reads.
    ///
    /// The view is rebuilt from the file's sections and revalidated in O(n_lists) on each
    /// call; it is `Copy`, so take it once per searcher rather than once per query.
    ///
    /// # Panics
    /// Never for an index read into memory. For a mapped one, only when the file was modified
    /// in place after opening, which [`Index::open`] rules out.
    pub fn view(&self) -> IndexView<'_> {
        format::view(self.storage.bytes(), &self.layout)
            .expect("the sections were validated when the index was opened")
    }

    /// The bytes of the optional refine section, when the file has one.
    pub fn refine_bytes(&self) -> Option<&[u8]> {
        format::refine_bytes(self.storage.bytes(), &self.layout)
    }

    /// The index's shape.
    pub fn params(&self) -> &IndexParams {
        &self.layout.params
    }

    /// The metadata section: how the index was built.
    pub fn metadata(&self) -> &IndexMetadata {
        &self.layout.metadata
    }

    /// The items' original ids, when the index carries them (the optional `item_keys`
    /// section): key `i` names the item of id `i`.
    ///
    /// # Panics
    /// As [`view`](Self::view).
    pub fn item_keys(&self) -> Option<ItemKeysView<'_>> {
        format::item_keys(self.storage.bytes(), &self.layout)
            .expect("the item keys were validated when the index was opened")
    }

    /// Checks every byte: the header's and every section's CRC-32, zero padding between
    /// sections, every item's codes below `2^n_bits`, padding slots holding [`PADDING_ID`] and
    /// zero codes, and the item keys (when present: every key readable and unique, every item
    /// id with a key). Reads the whole file, O(file size).
    ///
    /// # Errors
    /// [`SearchError::ChecksumMismatch`], [`SearchError::BadSectionPlacement`] (nonzero
    /// padding), [`SearchError::CodeOutOfRange`] or [`SearchError::BadList`] for the first
    /// problem found.
    pub fn verify(&self) -> Result<(), SearchError> {
        let bytes = self.storage.bytes();
        format::check_checksums(bytes, &self.layout)?;
        format::check_padding(bytes, &self.layout)?;
        let view = self.view();
        check_lists(&view)?;
        match self.item_keys() {
            Some(keys) => keys.verify(view.slot_ids()),
            None => Ok(()),
        }
    }

    /// The file's version, size, storage kind, parameters and section table.
    pub fn info(&self) -> IndexInfo {
        IndexInfo {
            format_version: self.layout.version,
            file_size: self.layout.file_len,
            mmapped: self.storage.is_mapped(),
            params: self.layout.params,
            header_crc32: self.layout.header_crc32,
            sections: self
                .layout
                .entries
                .iter()
                .map(|e| SectionInfo {
                    kind: e.kind,
                    name: e.name(),
                    optional: e.flags & FLAG_OPTIONAL != 0,
                    offset: e.offset,
                    length: e.length,
                    crc32: e.crc32,
                })
                .collect(),
        }
    }

    /// An owned copy of the index (sections of unknown kinds are dropped; the item keys are
    /// copied as stored, checked again when the parts are written).
    pub fn to_parts(&self) -> IndexParts {
        let view = self.view();
        IndexParts {
            params: *view.params(),
            rotation: view.rotation().map(<[f32]>::to_vec),
            coarse_centroids: view.coarse_centroids().to_vec(),
            codebooks: view.codebooks().to_vec(),
            list_offsets: view.list_offsets().to_vec(),
            list_sizes: view.list_sizes().to_vec(),
            ids: view.slot_ids().to_vec(),
            codes: view.codes().to_vec(),
            metadata: self.layout.metadata.clone(),
            refine: self.refine_bytes().map(<[u8]>::to_vec),
            item_keys: self.item_keys().map(|keys| keys.copy()),
        }
    }
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("format_version", &self.layout.version)
            .field("params", &self.layout.params)
            .field("storage", &self.storage)
            .field("sections", &self.layout.entries.len())
            .finish()
    }
}

/// Checks every code of every list against `2^n_bits`, and that padding slots hold
/// [`PADDING_ID`] and zero codes.
fn check_lists(view: &IndexView<'_>) -> Result<(), SearchError> {
    let p = view.params();
    let (n_subspaces, width, n_codewords) = (p.n_subspaces, p.code_width(), p.n_codewords());
    let offsets = view.list_offsets();
    for (list, &size) in view.list_sizes().iter().enumerate() {
        // The view's validation bounds these by the slot count.
        let (start, end, size) = (
            offsets[list] as usize,
            offsets[list + 1] as usize,
            size as usize,
        );
        if view.slot_ids()[start + size..end]
            .iter()
            .any(|&id| id != PADDING_ID)
        {
            return Err(SearchError::BadList {
                list,
                reason: "a padding slot's id is not PADDING_ID",
            });
        }
        let codes = view.list(list).codes;
        if p.code_layout == CodeLayout::FastScan4 {
            // Every nibble is a valid 4-bit code; padding lanes and the missing subspace of an
            // odd M must hold zero.
            let n_groups = n_subspaces.div_ceil(2);
            for (block, block_codes) in codes.chunks_exact(p.block_bytes()).enumerate() {
                let filled = size.saturating_sub(block * BLOCK).min(BLOCK);
                for m in 0..2 * n_groups {
                    for lane in 0..BLOCK {
                        if m < n_subspaces && lane < filled {
                            continue;
                        }
                        let (byte, shift) = fast_scan_position(m, lane);
                        if (block_codes[byte] >> shift) & 0xF != 0 {
                            return Err(SearchError::BadList {
                                list,
                                reason: "a padding slot or subspace holds a nonzero code",
                            });
                        }
                    }
                }
            }
            continue;
        }
        for (block, block_codes) in codes.chunks_exact(n_subspaces * BLOCK * width).enumerate() {
            let filled = size.saturating_sub(block * BLOCK).min(BLOCK);
            for (subspace, lanes) in block_codes.chunks_exact(BLOCK * width).enumerate() {
                let (items, padding) = lanes.split_at(filled * width);
                if padding.iter().any(|&b| b != 0) {
                    return Err(SearchError::BadList {
                        list,
                        reason: "a padding slot holds a nonzero code",
                    });
                }
                // A vectorisable maximum first; the slow search only when it is out of range.
                let code_at = |lane: usize| match width {
                    1 => u32::from(items[lane]),
                    _ => u32::from(u16::from_le_bytes([items[2 * lane], items[2 * lane + 1]])),
                };
                let max = if width == 1 {
                    items.iter().copied().max().map(u32::from)
                } else {
                    items
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .max()
                        .map(u32::from)
                };
                let out_of_range = max.filter(|&m| m as usize >= n_codewords).and_then(|_| {
                    (0..filled)
                        .map(|lane| (lane, code_at(lane)))
                        .find(|&(_, c)| c as usize >= n_codewords)
                });
                if let Some((lane, code)) = out_of_range {
                    return Err(SearchError::CodeOutOfRange {
                        list,
                        item: block * BLOCK + lane,
                        subspace,
                        code,
                        n_codewords,
                    });
                }
            }
        }
    }
    Ok(())
}
