//! Writing an index file list by list, for converters whose input does not fit in memory.
//!
//! [`write_index_streaming`] takes the small parts of an index ([`IndexHead`]: parameters,
//! rotation, centroids, codebooks, list sizes, metadata) and asks a callback for one list at a
//! time, so that memory stays bounded by one list plus the small parts. It writes the same bytes
//! as [`write_index`](crate::write_index) would for the same index: the section order, padding
//! and checksums of `docs/index-format.md`, and the same atomic publish (temporary file, sync,
//! rename). The ids and codes (and float refinement data) of each list go to their places in
//! their sections through sequential write buffers; the header, whose table holds the CRC-32s of
//! those sections, is written last, over a placeholder.

use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use crate::SearchError;
use crate::format::{SectionKind, check_host, encode_header};
use crate::layout::{BLOCK, IndexParams, PADDING_ID, padded_len, put_code};
use crate::metadata::IndexMetadata;
use crate::refine::{self, REFINE_HEADER_LEN, RefineKind};

/// The parts of an index that precede its lists: everything but the ids and codes.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexHead {
    /// The index's shape; `n_items` must equal the sum of `list_sizes`.
    pub params: IndexParams,
    /// Row-major `padded_dim²` rotation, or `None` for the identity.
    pub rotation: Option<Vec<f32>>,
    /// `n_lists × padded_dim` coarse centroids.
    pub coarse_centroids: Vec<f32>,
    /// `M × 2^n_bits × sub_dim` codebooks.
    pub codebooks: Vec<f32>,
    /// `n_lists` item counts.
    pub list_sizes: Vec<u64>,
    /// Provenance.
    pub metadata: IndexMetadata,
    /// Float refinement data (`f32` or `f16`), whose vectors each list brings in
    /// [`ListBuffer::refine`]; `None` for none (`pq8` data are not written list by list).
    pub refine: Option<RefineKind>,
}

/// One list as a [`write_index_streaming`] callback hands it over: item `i` has id `ids[i]` and
/// codes `codes[i·M..(i+1)·M]` (item-major, not yet block-transposed).
#[derive(Debug, Clone, Default)]
pub struct ListBuffer {
    /// The list's ids, in item order.
    pub ids: Vec<u64>,
    /// The list's codes, `M` per item, each below `2^n_bits`.
    pub codes: Vec<u32>,
    /// With [`IndexHead::refine`]: the items' refinement vectors, `dim` values each, in item
    /// order (empty otherwise).
    pub refine: Vec<f32>,
}

impl ListBuffer {
    /// Empties the vectors, keeping their capacity.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.codes.clear();
        self.refine.clear();
    }
}

/// Where a section's bytes go and the running state of its CRC.
struct Region {
    at: u64,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl Region {
    const FLUSH_AT: usize = 1 << 20;

    fn new(at: u64) -> Self {
        Self {
            at,
            buf: Vec::with_capacity(Self::FLUSH_AT + 4096),
            crc: crc32fast::Hasher::new(),
            len: 0,
        }
    }

    fn push(&mut self, out: &mut (impl Write + Seek), bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= Self::FLUSH_AT {
            self.flush(out)?;
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut (impl Write + Seek)) -> io::Result<()> {
        if !self.buf.is_empty() {
            out.seek(SeekFrom::Start(self.at))?;
            out.write_all(&self.buf)?;
            self.at += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Checks a head's parts against its parameters and returns each list's slot offset (n_lists + 1).
fn check_head(head: &IndexHead) -> Result<Vec<u64>, SearchError> {
    let p = &head.params;
    p.validate()?;
    let mismatch = |what: &'static str, expected: Option<usize>, got: usize| match expected {
        Some(e) if e == got => Ok(()),
        Some(e) => Err(SearchError::DimensionMismatch {
            what,
            expected: e,
            got,
        }),
        None => Err(SearchError::Overflow { what }),
    };
    if let Some(r) = &head.rotation {
        mismatch(
            "rotation values",
            p.padded_dim.checked_mul(p.padded_dim),
            r.len(),
        )?;
    }
    mismatch(
        "coarse centroid values",
        p.n_lists.checked_mul(p.padded_dim),
        head.coarse_centroids.len(),
    )?;
    mismatch(
        "codebook values",
        p.n_codewords().checked_mul(p.padded_dim),
        head.codebooks.len(),
    )?;
    mismatch("list sizes", Some(p.n_lists), head.list_sizes.len())?;
    let mut offsets = Vec::with_capacity(p.n_lists + 1);
    offsets.push(0u64);
    let (mut slots, mut items) = (0u64, 0u64);
    for &size in &head.list_sizes {
        let padded = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_next_multiple_of(BLOCK))
            .ok_or(SearchError::Overflow { what: "list size" })?;
        slots = slots
            .checked_add(padded as u64)
            .ok_or(SearchError::Overflow { what: "slot count" })?;
        items = items
            .checked_add(size)
            .ok_or(SearchError::Overflow { what: "item count" })?;
        offsets.push(slots);
    }
    mismatch("items in the lists", usize::try_from(items).ok(), p.n_items)?;
    Ok(offsets)
}

/// Writes an index to `path` atomically, asking `next_list(j, buffer)` for list `j`'s items,
/// for `j` in `0..n_lists` in order.
///
/// The callback receives an empty [`ListBuffer`] and must fill it with exactly
/// `head.list_sizes[j]` ids, `M` codes per item and, with `head.refine`, `dim` refinement
/// values per item. Memory use is one list plus the head plus a 1 MiB write buffer a section.
/// The file is identical to what [`write_index`](crate::write_index) writes for the same index,
/// and it is published the same way: readers see the old file or the complete new one, and on
/// any error no file is left behind.
///
/// # Errors
/// The callback's error as it is; [`SearchError`] (converted into `E`) when the head is
/// inconsistent or asks for `pq8` refinement data, a list has the wrong number of ids, codes or
/// refinement values, a code is not below `2^n_bits`, the host is big-endian, or writing fails.
pub fn write_index_streaming<E: From<SearchError>>(
    path: &Path,
    head: &IndexHead,
    mut next_list: impl FnMut(usize, &mut ListBuffer) -> Result<(), E>,
) -> Result<(), E> {
    check_host()?;
    let offsets = check_head(head)?;
    let p = head.params;
    let metadata = head.metadata.encode()?;
    let slots = offsets[p.n_lists];
    let overflow = |what| SearchError::Overflow { what };
    let ids_len = slots.checked_mul(8).ok_or(overflow("ids section size"))?;
    let codes_len = slots
        .checked_mul(p.slot_bytes() as u64)
        .ok_or(overflow("codes section size"))?;
    let refine_width = match head.refine.map(RefineKind::value_bytes) {
        None => 0,
        Some(Some(bytes)) => bytes,
        Some(None) => {
            return Err(SearchError::InvalidParameter {
                name: "refine",
                value: "pq8".to_owned(),
                reason: "pq8 refinement data are not written list by list",
            }
            .into());
        }
    };
    let refine_len = slots
        .checked_mul((p.dim * refine_width) as u64)
        .and_then(|len| len.checked_add(REFINE_HEADER_LEN as u64))
        .ok_or(overflow("refine section size"))?;
    let small: Vec<(SectionKind, Vec<u8>)> = {
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let u64s = |v: &[u64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut small = Vec::with_capacity(6);
        if let Some(r) = &head.rotation {
            small.push((SectionKind::Rotation, f32s(r)));
        }
        small.push((SectionKind::CoarseCentroids, f32s(&head.coarse_centroids)));
        small.push((SectionKind::Codebooks, f32s(&head.codebooks)));
        small.push((SectionKind::ListOffsets, u64s(&offsets)));
        small.push((SectionKind::ListSizes, u64s(&head.list_sizes)));
        small.push((SectionKind::Metadata, metadata));
        small
    };
    let mut entries: Vec<(SectionKind, u64, u32)> = small
        .iter()
        .map(|(kind, bytes)| (*kind, bytes.len() as u64, crc32fast::hash(bytes)))
        .collect();
    // The sections written list by list, in the order `write_index` writes them.
    let (ids_entry, codes_entry, refine_entry) = (small.len(), small.len() + 1, small.len() + 2);
    entries.push((SectionKind::Ids, ids_len, 0));
    entries.push((SectionKind::Codes, codes_len, 0));
    if head.refine.is_some() {
        entries.push((SectionKind::Refine, refine_len, 0));
    }
    // A first encoding fixes the offsets; the CRCs of the list sections are filled in at the end.
    let (placeholder, section_offsets, _) = encode_header(&p, &entries)?;
    let (ids_at, codes_at) = (section_offsets[ids_entry], section_offsets[codes_entry]);
    let refine_at = section_offsets.get(refine_entry).copied();

    let mut failure: Option<E> = None;
    let written = poeem_fs::write_atomically(path, |out| {
        const ZEROS: [u8; 64] = [0; 64];
        out.write_all(&placeholder)?;
        let mut pos = placeholder.len() as u64;
        for ((_, bytes), &offset) in small.iter().zip(&section_offsets) {
            out.write_all(&ZEROS[..(offset - pos) as usize])?;
            out.write_all(bytes)?;
            pos = offset + bytes.len() as u64;
        }
        // Padding up to the ids section, so the file has no hole even when ids are empty.
        out.write_all(&ZEROS[..(ids_at - pos) as usize])?;
        let mut ids = Region::new(ids_at);
        let mut codes = Region::new(codes_at);
        // The zero padding between ids and codes is written with the ids, and the padding
        // between codes and refinement data with the codes.
        let ids_pad = (codes_at - ids_at - ids_len) as usize;
        let codes_pad = refine_at.map_or(0, |at| (at - codes_at - codes_len) as usize);
        let mut refine_region = refine_at.map(Region::new);
        let mut refine_bytes: Vec<u8> = Vec::new();
        if let (Some(region), Some(kind)) = (&mut refine_region, head.refine) {
            region.push(out, &refine::header(kind, 0, p.dim))?;
        }
        let mut list = ListBuffer::default();
        let m_count = p.n_subspaces;
        let n_codewords = p.n_codewords() as u64;
        let mut block_codes: Vec<u8> = Vec::new();
        let mut id_bytes: Vec<u8> = Vec::new();
        for j in 0..p.n_lists {
            list.clear();
            if let Err(e) = next_list(j, &mut list) {
                failure = Some(e);
                return Err(io::Error::other("the list source failed"));
            }
            let size = head.list_sizes[j] as usize;
            let check = |what, expected: usize, got: usize| {
                (expected == got)
                    .then_some(())
                    .ok_or(SearchError::DimensionMismatch {
                        what,
                        expected,
                        got,
                    })
            };
            let refine_values = if head.refine.is_some() {
                size * p.dim
            } else {
                0
            };
            let checked = check("ids of a list", size, list.ids.len()).and_then(|()| {
                check("codes of a list", size * m_count, list.codes.len())?;
                check(
                    "refinement values of a list",
                    refine_values,
                    list.refine.len(),
                )?;
                match list.codes.iter().position(|&c| u64::from(c) >= n_codewords) {
                    Some(at) => Err(SearchError::CodeOutOfRange {
                        list: j,
                        item: at / m_count,
                        subspace: at % m_count,
                        code: list.codes[at],
                        n_codewords: n_codewords as usize,
                    }),
                    None => Ok(()),
                }
            });
            if let Err(e) = checked {
                failure = Some(e.into());
                return Err(io::Error::other("a list was inconsistent"));
            }
            let padded = padded_len(size);
            id_bytes.clear();
            id_bytes.extend(list.ids.iter().flat_map(|id| id.to_le_bytes()));
            id_bytes.extend((size..padded).flat_map(|_| PADDING_ID.to_le_bytes()));
            ids.push(out, &id_bytes)?;
            block_codes.clear();
            block_codes.resize(padded * p.slot_bytes(), 0);
            for (pos, item) in list.codes.chunks_exact(m_count).enumerate() {
                for (m, &code) in item.iter().enumerate() {
                    put_code(&p, &mut block_codes, pos, m, code);
                }
            }
            codes.push(out, &block_codes)?;
            if let (Some(region), Some(kind)) = (&mut refine_region, head.refine) {
                refine_bytes.clear();
                refine::push_float_values(kind, &list.refine, &mut refine_bytes);
                refine_bytes.resize(padded * p.dim * refine_width, 0);
                region.push(out, &refine_bytes)?;
            }
        }
        ids.buf.extend_from_slice(&ZEROS[..ids_pad]);
        ids.flush(out)?;
        codes.buf.resize(codes.buf.len() + codes_pad, 0);
        codes.flush(out)?;
        entries[ids_entry].2 = ids.crc.clone().finalize();
        entries[codes_entry].2 = codes.crc.clone().finalize();
        if let Some(region) = &mut refine_region {
            region.flush(out)?;
            entries[refine_entry].2 = region.crc.clone().finalize();
            debug_assert_eq!(region.len, refine_len);
        }
        debug_assert_eq!((ids.len, codes.len), (ids_len, codes_len));
        let (header, _, _) = encode_header(&p, &entries).map_err(io::Error::other)?;
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&header)?;
        Ok(())
    });
    match (written, failure) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(SearchError::io(e.path, e.source).into()),
        (Ok(()), None) => Ok(()),
    }
}
