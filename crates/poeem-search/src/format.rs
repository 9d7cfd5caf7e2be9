//! The index file format, versions 1 and 2: its constants, the writer, and the one parser that both
//! readers ([`Index::open`](crate::Index::open) and [`Index::read`](crate::Index::read)) share.
//!
//! `docs/index-format.md` specifies the format byte by byte. In short: a 96-byte header (magic
//! `POEEMIDX`, version, section count, the [`IndexParams`]), a table of 32-byte section entries,
//! a CRC-32 of header and table, then the sections, each starting on a 64-byte boundary, packed
//! in offset order with zero padding between them; the file ends where the last section ends.
//! Every integer is little-endian and fixed-width.

use std::io::{self, Write};
use std::path::Path;

use bytemuck::{AnyBitPattern, PodCastError};

use crate::SearchError;
use crate::keys::ItemKeysView;
use crate::layout::{BLOCK, CodeLayout, IndexParams, IndexParts, IndexView, Metric};
use crate::metadata::IndexMetadata;

/// The first eight bytes of every index file.
pub const MAGIC: [u8; 8] = *b"POEEMIDX";

/// The newest format version this crate writes. A file is written with the oldest version that
/// holds it ([`version_for`]): 1 for transposed codes, 2 for the fast-scan layout.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format version this crate reads.
pub const MIN_SUPPORTED_VERSION: u32 = 1;

/// The newest format version this crate reads.
pub const MAX_SUPPORTED_VERSION: u32 = 2;

/// The version a file holding an index of shape `params` is written with: 1 unless the codes
/// use the fast-scan layout, which version 2 introduced (so files that a version-1 reader can
/// read are still written for it).
pub fn version_for(params: &IndexParams) -> u32 {
    match params.code_layout {
        CodeLayout::Transposed => 1,
        CodeLayout::FastScan4 => 2,
    }
}

/// Length of the fixed header, which the section table follows.
pub const HEADER_LEN: usize = 96;

/// Length of one section-table entry.
pub const SECTION_ENTRY_LEN: usize = 32;

/// Every section starts at a multiple of this many bytes.
pub const SECTION_ALIGN: usize = 64;

/// Section flag bit 0: a reader that does not know the section's kind may ignore it.
pub const FLAG_OPTIONAL: u32 = 1;

// Byte offsets of the header fields.
const AT_VERSION: usize = 8;
const AT_SECTION_COUNT: usize = 12;
const AT_DIM: usize = 16;
const AT_PADDED_DIM: usize = 24;
const AT_N_LISTS: usize = 32;
const AT_N_SUBSPACES: usize = 40;
const AT_N_ITEMS: usize = 48;
const AT_N_BITS: usize = 56;
const AT_METRIC: usize = 60;
const AT_BLOCK: usize = 64;
const AT_CODE_WIDTH: usize = 68;
/// Version 2: the code layout (`CodeLayout::code`); reserved (zero) in version 1.
const AT_CODE_LAYOUT: usize = 72;
const AT_RESERVED_V1: usize = 72;
const AT_RESERVED_V2: usize = 76;

/// The kinds of section that format version 1 defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// Row-major `padded_dim × padded_dim` f32 rotation; absent means the identity.
    Rotation,
    /// `n_lists × padded_dim` f32 coarse centroids.
    CoarseCentroids,
    /// `n_subspaces × 2^n_bits × sub_dim` f32 PQ codebooks.
    Codebooks,
    /// `n_lists + 1` u64 slot offsets of the lists.
    ListOffsets,
    /// `n_lists` u64 item counts of the lists.
    ListSizes,
    /// One u64 external id per slot.
    Ids,
    /// Block-transposed codes, `slot_bytes` per slot.
    Codes,
    /// A UTF-8 JSON object describing how the index was built.
    Metadata,
    /// Optional refinement data for re-ranking (see [`crate::refine`]); written with the
    /// optional flag, so that readers that do not know it skip it.
    Refine,
    /// Optional: the items' original ids as strings ([`ItemKeys`](crate::ItemKeys)).
    ItemKeys,
}

impl SectionKind {
    /// All kinds, in code order (which is also the order the writer lays them out in, except
    /// that metadata comes before ids and codes).
    pub const ALL: [SectionKind; 10] = [
        SectionKind::Rotation,
        SectionKind::CoarseCentroids,
        SectionKind::Codebooks,
        SectionKind::ListOffsets,
        SectionKind::ListSizes,
        SectionKind::Ids,
        SectionKind::Codes,
        SectionKind::Metadata,
        SectionKind::Refine,
        SectionKind::ItemKeys,
    ];

    /// The kind's number in the section table.
    pub fn code(self) -> u32 {
        match self {
            SectionKind::Rotation => 1,
            SectionKind::CoarseCentroids => 2,
            SectionKind::Codebooks => 3,
            SectionKind::ListOffsets => 4,
            SectionKind::ListSizes => 5,
            SectionKind::Ids => 6,
            SectionKind::Codes => 7,
            SectionKind::Metadata => 8,
            SectionKind::Refine => 9,
            SectionKind::ItemKeys => 10,
        }
    }

    /// The kind numbered `code`, if version 1 defines one.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The kind's name, as error messages and [`IndexInfo`](crate::IndexInfo) spell it.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Rotation => "rotation",
            SectionKind::CoarseCentroids => "coarse_centroids",
            SectionKind::Codebooks => "codebooks",
            SectionKind::ListOffsets => "list_offsets",
            SectionKind::ListSizes => "list_sizes",
            SectionKind::Ids => "ids",
            SectionKind::Codes => "codes",
            SectionKind::Metadata => "metadata",
            SectionKind::Refine => "refine",
            SectionKind::ItemKeys => "item_keys",
        }
    }

    /// Whether every file holds this section (all but the rotation, the refinement data and
    /// the item keys).
    pub fn is_required(self) -> bool {
        !matches!(
            self,
            SectionKind::Rotation | SectionKind::Refine | SectionKind::ItemKeys
        )
    }

    /// The flags the writer gives the section: [`FLAG_OPTIONAL`] for the kinds added after
    /// version 1 was first written (the refinement data, the item keys), which readers that
    /// do not know them skip; 0 otherwise.
    pub fn flags(self) -> u32 {
        if matches!(self, SectionKind::Refine | SectionKind::ItemKeys) {
            FLAG_OPTIONAL
        } else {
            0
        }
    }

    /// Whether opening an index checks this section's CRC: everything but the two sections
    /// that grow with the number of items, which only [`Index::verify`](crate::Index::verify)
    /// reads in full.
    fn checked_at_open(self) -> bool {
        !matches!(
            self,
            SectionKind::Ids | SectionKind::Codes | SectionKind::Refine | SectionKind::ItemKeys
        )
    }

    fn slot(self) -> usize {
        self.code() as usize - 1
    }
}

/// One entry of the section table, as read from a file whose placement rules it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SectionEntry {
    pub(crate) kind: u32,
    pub(crate) flags: u32,
    pub(crate) offset: u64,
    pub(crate) length: u64,
    pub(crate) crc32: u32,
}

impl SectionEntry {
    /// The known kind, or `None` for an (optional) unknown one.
    pub(crate) fn known_kind(&self) -> Option<SectionKind> {
        SectionKind::from_code(self.kind)
    }

    /// The section's name, `"unknown"` for a kind version 1 does not define.
    pub(crate) fn name(&self) -> &'static str {
        self.known_kind().map_or("unknown", SectionKind::name)
    }

    fn end(&self) -> u64 {
        // Checked against the file length when the entry was parsed.
        self.offset + self.length
    }

    /// The section's bytes in `bytes` (the buffer the entry was parsed from).
    fn bytes<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], SearchError> {
        let range = usize::try_from(self.offset)
            .ok()
            .zip(usize::try_from(self.end()).ok())
            .map(|(start, end)| start..end);
        range
            .and_then(|r| bytes.get(r))
            .ok_or_else(|| self.placement_error("extends past the end of the file"))
    }

    fn placement_error(&self, reason: &'static str) -> SearchError {
        SearchError::BadSectionPlacement {
            section: self.name(),
            offset: self.offset,
            length: self.length,
            reason,
        }
    }

    fn check_crc(&self, bytes: &[u8]) -> Result<(), SearchError> {
        let computed = crc32fast::hash(self.bytes(bytes)?);
        if computed == self.crc32 {
            Ok(())
        } else {
            Err(SearchError::ChecksumMismatch {
                section: self.name(),
                stored: self.crc32,
                computed,
            })
        }
    }
}

/// What parsing a file established: its header, its section table and its metadata. The
/// sections' contents stay in the file's buffer; [`view`] borrows them.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) version: u32,
    pub(crate) params: IndexParams,
    /// Bytes covered by the header CRC: the fixed header and the section table.
    pub(crate) table_end: usize,
    pub(crate) header_crc32: u32,
    /// Entries in table order.
    pub(crate) entries: Vec<SectionEntry>,
    /// For each known kind (by [`SectionKind::slot`]), its entry's position in `entries`.
    known: [Option<usize>; SectionKind::ALL.len()],
    pub(crate) metadata: IndexMetadata,
    pub(crate) file_len: u64,
}

impl Layout {
    fn entry(&self, kind: SectionKind) -> Option<&SectionEntry> {
        self.known[kind.slot()].and_then(|i| self.entries.get(i))
    }

    fn section<'a>(&self, bytes: &'a [u8], kind: SectionKind) -> Result<&'a [u8], SearchError> {
        self.entry(kind)
            .ok_or_else(|| missing(kind))
            .and_then(|e| e.bytes(bytes))
    }
}

/// Fails on a big-endian host: files store little-endian values that are borrowed in place.
pub(crate) fn check_host() -> Result<(), SearchError> {
    if cfg!(target_endian = "little") {
        Ok(())
    } else {
        Err(SearchError::BigEndianHost)
    }
}

fn align_up(offset: u64) -> Option<u64> {
    offset.checked_next_multiple_of(SECTION_ALIGN as u64)
}

fn missing(kind: SectionKind) -> SearchError {
    SearchError::BadSectionTable {
        section: kind.name().to_owned(),
        reason: "required section is missing",
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let field = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(field.try_into().ok()?))
}

fn truncated(what: &'static str, needed: u64, available: usize) -> SearchError {
    SearchError::Truncated {
        what,
        needed,
        available: available as u64,
    }
}

/// Borrows a section's bytes as values of `T`; the section's 64-byte alignment and the
/// buffer's aligned base make the cast succeed for every file that passed [`parse`].
fn cast<'a, T: AnyBitPattern>(
    bytes: &'a [u8],
    layout: &Layout,
    kind: SectionKind,
) -> Result<&'a [T], SearchError> {
    let section = layout.section(bytes, kind)?;
    bytemuck::try_cast_slice(section).map_err(|e| {
        let reason = match e {
            PodCastError::OutputSliceWouldHaveSlop | PodCastError::SizeMismatch => {
                "length is not a multiple of the element size"
            }
            _ => "is not aligned in memory",
        };
        layout
            .entry(kind)
            .map_or_else(|| missing(kind), |entry| entry.placement_error(reason))
    })
}

/// Reads and checks a header field that the parameters hold as a `usize`.
fn header_usize(header: &[u8], at: usize, field: &'static str) -> Result<usize, SearchError> {
    let value = le_u64(header, at).ok_or(truncated("header", HEADER_LEN as u64, header.len()))?;
    usize::try_from(value).map_err(|_| SearchError::InvalidHeader {
        field,
        value,
        reason: "does not fit in this platform's address space",
    })
}

/// Parses and validates the header fields into parameters.
fn parse_params(header: &[u8], version: u32) -> Result<IndexParams, SearchError> {
    let field32 =
        |at| le_u32(header, at).ok_or(truncated("header", HEADER_LEN as u64, header.len()));
    let reserved = if version >= 2 {
        AT_RESERVED_V2
    } else {
        AT_RESERVED_V1
    };
    if let Some(at) = (reserved..HEADER_LEN).find(|&at| header.get(at) != Some(&0)) {
        return Err(SearchError::InvalidHeader {
            field: "reserved",
            value: header.get(at).copied().map_or(0, u64::from),
            reason: "reserved header bytes must be zero",
        });
    }
    let block = field32(AT_BLOCK)?;
    if block as usize != BLOCK {
        return Err(SearchError::InvalidHeader {
            field: "block_size",
            value: u64::from(block),
            reason: "this reader supports blocks of 32 slots only",
        });
    }
    let metric_code = field32(AT_METRIC)?;
    let metric = Metric::from_code(metric_code).ok_or(SearchError::InvalidHeader {
        field: "metric",
        value: u64::from(metric_code),
        reason: "unknown metric code",
    })?;
    let code_layout = if version >= 2 {
        let code = field32(AT_CODE_LAYOUT)?;
        CodeLayout::from_code(code).ok_or(SearchError::InvalidHeader {
            field: "code_layout",
            value: u64::from(code),
            reason: "unknown code layout",
        })?
    } else {
        CodeLayout::Transposed
    };
    let params = IndexParams {
        code_layout,
        dim: header_usize(header, AT_DIM, "dim")?,
        padded_dim: header_usize(header, AT_PADDED_DIM, "padded_dim")?,
        n_lists: header_usize(header, AT_N_LISTS, "n_lists")?,
        n_subspaces: header_usize(header, AT_N_SUBSPACES, "n_subspaces")?,
        n_bits: field32(AT_N_BITS)?,
        metric,
        n_items: header_usize(header, AT_N_ITEMS, "n_items")?,
    };
    // `validate` rounds `dim` up to a multiple of `n_subspaces`; make sure that cannot overflow.
    if params.n_subspaces != 0
        && params
            .dim
            .checked_next_multiple_of(params.n_subspaces)
            .is_none()
    {
        return Err(SearchError::Overflow {
            what: "padded dimension",
        });
    }
    params.validate()?;
    let code_width = field32(AT_CODE_WIDTH)?;
    if code_width as usize != params.code_width() {
        return Err(SearchError::InvalidHeader {
            field: "code_width",
            value: u64::from(code_width),
            reason: "must be 1 for n_bits up to 8 and 2 above",
        });
    }
    Ok(params)
}

/// The length in bytes a fixed-size section must have, from the parameters alone.
fn fixed_len(params: &IndexParams, kind: SectionKind) -> Result<Option<u64>, SearchError> {
    let p = params;
    let (values, width, what) = match kind {
        SectionKind::Rotation => (
            p.padded_dim.checked_mul(p.padded_dim),
            4,
            "rotation section size",
        ),
        SectionKind::CoarseCentroids => (
            p.n_lists.checked_mul(p.padded_dim),
            4,
            "coarse centroid section size",
        ),
        SectionKind::Codebooks => (
            p.n_codewords().checked_mul(p.padded_dim),
            4,
            "codebook section size",
        ),
        SectionKind::ListOffsets => (p.n_lists.checked_add(1), 8, "list offset section size"),
        SectionKind::ListSizes => (Some(p.n_lists), 8, "list size section size"),
        SectionKind::Ids
        | SectionKind::Codes
        | SectionKind::Metadata
        | SectionKind::Refine
        | SectionKind::ItemKeys => {
            return Ok(None);
        }
    };
    values
        .and_then(|n| n.checked_mul(width))
        .and_then(|n| u64::try_from(n).ok())
        .map(Some)
        .ok_or(SearchError::Overflow { what })
}

fn check_len(entry: &SectionEntry, kind: SectionKind, expected: u64) -> Result<(), SearchError> {
    if entry.length == expected {
        Ok(())
    } else {
        Err(SearchError::SectionSize {
            section: kind.name(),
            expected,
            found: entry.length,
        })
    }
}

/// Reads the section table, checking each entry's flags, kind and placement and the set of
/// known kinds present.
fn parse_table(
    bytes: &[u8],
    count: usize,
    data_start: u64,
) -> Result<(Vec<SectionEntry>, [Option<usize>; SectionKind::ALL.len()]), SearchError> {
    let mut entries = Vec::with_capacity(count);
    let mut known = [None; SectionKind::ALL.len()];
    for i in 0..count {
        let at = HEADER_LEN + i * SECTION_ENTRY_LEN;
        let short = || {
            truncated(
                "section table",
                (at + SECTION_ENTRY_LEN) as u64,
                bytes.len(),
            )
        };
        let entry = SectionEntry {
            kind: le_u32(bytes, at).ok_or_else(short)?,
            flags: le_u32(bytes, at + 4).ok_or_else(short)?,
            offset: le_u64(bytes, at + 8).ok_or_else(short)?,
            length: le_u64(bytes, at + 16).ok_or_else(short)?,
            crc32: le_u32(bytes, at + 24).ok_or_else(short)?,
        };
        let reserved = le_u32(bytes, at + 28).ok_or_else(short)?;
        let label = || match entry.known_kind() {
            Some(kind) => kind.name().to_owned(),
            None => format!("kind {}", entry.kind),
        };
        let table_error = |reason| SearchError::BadSectionTable {
            section: label(),
            reason,
        };
        if entry.flags & !FLAG_OPTIONAL != 0 {
            return Err(table_error("unknown flag bits are set"));
        }
        if reserved != 0 {
            return Err(table_error("the reserved field is not zero"));
        }
        match entry.known_kind() {
            Some(kind) if known[kind.slot()].is_some() => {
                return Err(table_error("the section appears twice"));
            }
            Some(kind) => known[kind.slot()] = Some(i),
            None if entry.flags & FLAG_OPTIONAL == 0 => {
                return Err(table_error(
                    "unknown section kind that is not marked optional (a newer writer?)",
                ));
            }
            None => {}
        }
        if !entry.offset.is_multiple_of(SECTION_ALIGN as u64) {
            return Err(entry.placement_error("is not 64-byte aligned"));
        }
        if entry.offset < data_start {
            return Err(entry.placement_error("overlaps the header or the section table"));
        }
        match entry.offset.checked_add(entry.length) {
            Some(end) if end <= bytes.len() as u64 => {}
            _ => return Err(entry.placement_error("extends past the end of the file")),
        }
        entries.push(entry);
    }
    if let Some(kind) = SectionKind::ALL
        .into_iter()
        .find(|k| k.is_required() && known[k.slot()].is_none())
    {
        return Err(missing(kind));
    }
    Ok((entries, known))
}

/// Entries sorted by offset (ties by end), the order placement and padding are checked in.
fn by_offset(entries: &[SectionEntry]) -> Vec<&SectionEntry> {
    let mut sorted: Vec<&SectionEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| (e.offset, e.end()));
    sorted
}

/// Checks that the sections are packed: each starts at the first 64-byte boundary after the
/// previous one (the first after the header CRC), and the file ends where the last one ends.
fn check_packing(
    entries: &[SectionEntry],
    data_start: u64,
    file_len: u64,
) -> Result<(), SearchError> {
    let mut prev_end = None::<u64>;
    let mut expected_start = data_start;
    for entry in by_offset(entries) {
        if prev_end.is_some_and(|end| entry.offset < end) {
            return Err(entry.placement_error("overlaps another section"));
        }
        if entry.offset != expected_start {
            return Err(entry.placement_error(
                "does not start at the first 64-byte boundary after the previous section",
            ));
        }
        prev_end = Some(entry.end());
        expected_start = align_up(entry.end()).ok_or(SearchError::Overflow {
            what: "section end",
        })?;
    }
    if prev_end.unwrap_or(data_start) != file_len {
        return Err(SearchError::BadSectionTable {
            section: "(file)".to_owned(),
            reason: "bytes follow the end of the last section",
        });
    }
    Ok(())
}

/// Parses a whole index file and validates everything that opening promises: the header CRC,
/// the header fields, the section table and placement, every section's length, the CRCs of
/// all sections except ids and codes, the metadata, and the lists (through [`IndexView::new`]).
///
/// Reads only the header, the table and the small sections, never the ids or the codes.
pub(crate) fn parse(bytes: &[u8]) -> Result<Layout, SearchError> {
    check_host()?;
    let file_len = bytes.len() as u64;
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if head != &MAGIC[..head.len()] {
        let mut found = [0u8; 8];
        found[..head.len()].copy_from_slice(head);
        return Err(SearchError::NotAnIndex { found });
    }
    let version =
        le_u32(bytes, AT_VERSION).ok_or(truncated("header", HEADER_LEN as u64, bytes.len()))?;
    if !(MIN_SUPPORTED_VERSION..=MAX_SUPPORTED_VERSION).contains(&version) {
        return Err(SearchError::UnsupportedVersion {
            found: version,
            min: MIN_SUPPORTED_VERSION,
            max: MAX_SUPPORTED_VERSION,
        });
    }
    let header =
        bytes
            .get(..HEADER_LEN)
            .ok_or(truncated("header", HEADER_LEN as u64, bytes.len()))?;
    let count = le_u32(header, AT_SECTION_COUNT).ok_or(truncated(
        "header",
        HEADER_LEN as u64,
        bytes.len(),
    ))? as usize;
    let table_end = count
        .checked_mul(SECTION_ENTRY_LEN)
        .and_then(|n| n.checked_add(HEADER_LEN))
        .ok_or(SearchError::Overflow {
            what: "section table size",
        })?;
    let stored_crc = le_u32(bytes, table_end).ok_or(truncated(
        "section table",
        table_end as u64 + 4,
        bytes.len(),
    ))?;
    let computed = crc32fast::hash(&bytes[..table_end]);
    if computed != stored_crc {
        return Err(SearchError::ChecksumMismatch {
            section: "header",
            stored: stored_crc,
            computed,
        });
    }
    let params = parse_params(header, version)?;
    let data_start = align_up(table_end as u64 + 4).ok_or(SearchError::Overflow {
        what: "header size",
    })?;
    let (entries, known) = parse_table(bytes, count, data_start)?;
    let mut layout = Layout {
        version,
        params,
        table_end,
        header_crc32: stored_crc,
        entries,
        known,
        metadata: IndexMetadata::default(),
        file_len,
    };
    for kind in SectionKind::ALL {
        if let (Some(entry), Some(expected)) = (layout.entry(kind), fixed_len(&params, kind)?) {
            check_len(entry, kind, expected)?;
        }
    }
    check_packing(&layout.entries, data_start, file_len)?;
    for entry in &layout.entries {
        if entry.known_kind().is_some_and(SectionKind::checked_at_open) {
            entry.check_crc(bytes)?;
        }
    }
    // The list offsets fix the number of slots, and with it the lengths of ids and codes.
    let offsets: &[u64] = cast(bytes, &layout, SectionKind::ListOffsets)?;
    let slots = offsets.last().copied().unwrap_or(0);
    let ids_len = slots.checked_mul(8).ok_or(SearchError::Overflow {
        what: "ids section size",
    })?;
    let codes_len = slots
        .checked_mul(params.slot_bytes() as u64)
        .ok_or(SearchError::Overflow {
            what: "codes section size",
        })?;
    for (kind, expected) in [(SectionKind::Ids, ids_len), (SectionKind::Codes, codes_len)] {
        let entry = layout.entry(kind).ok_or_else(|| missing(kind))?;
        check_len(entry, kind, expected)?;
    }
    layout.metadata = IndexMetadata::decode(layout.section(bytes, SectionKind::Metadata)?)?;
    view(bytes, &layout)?;
    item_keys(bytes, &layout)?;
    Ok(layout)
}

/// The validated view of a parsed file's sections, borrowed from `bytes`, which must be the
/// buffer `layout` was parsed from.
pub(crate) fn view<'a>(bytes: &'a [u8], layout: &Layout) -> Result<IndexView<'a>, SearchError> {
    let rotation = match layout.entry(SectionKind::Rotation) {
        Some(_) => Some(cast(bytes, layout, SectionKind::Rotation)?),
        None => None,
    };
    IndexView::new(
        layout.params,
        rotation,
        cast(bytes, layout, SectionKind::CoarseCentroids)?,
        cast(bytes, layout, SectionKind::Codebooks)?,
        cast(bytes, layout, SectionKind::ListOffsets)?,
        cast(bytes, layout, SectionKind::ListSizes)?,
        cast(bytes, layout, SectionKind::Ids)?,
        layout.section(bytes, SectionKind::Codes)?,
    )?
    .with_refine(match layout.entry(SectionKind::Refine) {
        Some(entry) => Some(entry.bytes(bytes)?),
        None => None,
    })
}

/// The bytes of the refine section, when the file has one.
pub(crate) fn refine_bytes<'a>(bytes: &'a [u8], layout: &Layout) -> Option<&'a [u8]> {
    layout
        .entry(SectionKind::Refine)
        .and_then(|e| e.bytes(bytes).ok())
}

/// The item keys of a parsed file, if it has them (their count and last offset checked).
pub(crate) fn item_keys<'a>(
    bytes: &'a [u8],
    layout: &Layout,
) -> Result<Option<ItemKeysView<'a>>, SearchError> {
    match layout.entry(SectionKind::ItemKeys) {
        Some(entry) => ItemKeysView::parse(entry.bytes(bytes)?).map(Some),
        None => Ok(None),
    }
}

/// Checks the header CRC and every section's CRC, unknown optional sections included.
pub(crate) fn check_checksums(bytes: &[u8], layout: &Layout) -> Result<(), SearchError> {
    let covered = bytes.get(..layout.table_end).ok_or(truncated(
        "section table",
        layout.table_end as u64,
        bytes.len(),
    ))?;
    let computed = crc32fast::hash(covered);
    if computed != layout.header_crc32 {
        return Err(SearchError::ChecksumMismatch {
            section: "header",
            stored: layout.header_crc32,
            computed,
        });
    }
    layout.entries.iter().try_for_each(|e| e.check_crc(bytes))
}

/// Checks that the padding before each section (after the header CRC, between sections) is
/// zero, so that every byte of a file is covered by a CRC or by this check.
pub(crate) fn check_padding(bytes: &[u8], layout: &Layout) -> Result<(), SearchError> {
    let mut pad_start = layout.table_end + 4;
    for entry in by_offset(&layout.entries) {
        let start = usize::try_from(entry.offset)
            .map_err(|_| entry.placement_error("extends past the end of the file"))?;
        let padding = bytes
            .get(pad_start..start)
            .ok_or_else(|| entry.placement_error("overlaps another section"))?;
        if padding.iter().any(|&b| b != 0) {
            return Err(entry.placement_error("the padding before the section is not zero"));
        }
        pad_start = start + entry.bytes(bytes)?.len();
    }
    Ok(())
}

/// Encodes the header, the section table (one entry per `(kind, length, crc32)`, laid out in
/// that order, each at the first 64-byte boundary after the previous one) and the header CRC.
/// Returns the encoded bytes, each section's offset, and the file length.
pub(crate) fn encode_header(
    p: &IndexParams,
    entries: &[(SectionKind, u64, u32)],
) -> Result<(Vec<u8>, Vec<u64>, u64), SearchError> {
    let table_end = HEADER_LEN + entries.len() * SECTION_ENTRY_LEN;
    let mut header = Vec::with_capacity(table_end + 4);
    header.extend_from_slice(&MAGIC);
    let version = version_for(p);
    header.extend_from_slice(&version.to_le_bytes());
    header.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for value in [p.dim, p.padded_dim, p.n_lists, p.n_subspaces, p.n_items] {
        header.extend_from_slice(&(value as u64).to_le_bytes());
    }
    for value in [
        p.n_bits,
        p.metric.code(),
        BLOCK as u32,
        p.code_width() as u32,
    ] {
        header.extend_from_slice(&value.to_le_bytes());
    }
    if version >= 2 {
        header.extend_from_slice(&p.code_layout.code().to_le_bytes());
    }
    header.resize(HEADER_LEN, 0);
    let mut offset = align_up(table_end as u64 + 4).ok_or(SearchError::Overflow {
        what: "header size",
    })?;
    let mut offsets = Vec::with_capacity(entries.len());
    let mut file_len = offset;
    for &(kind, length, crc) in entries {
        header.extend_from_slice(&kind.code().to_le_bytes());
        header.extend_from_slice(&kind.flags().to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        header.extend_from_slice(&length.to_le_bytes());
        header.extend_from_slice(&crc.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        offsets.push(offset);
        file_len = offset
            .checked_add(length)
            .ok_or(SearchError::Overflow { what: "file size" })?;
        offset = align_up(file_len).ok_or(SearchError::Overflow { what: "file size" })?;
    }
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    Ok((header, offsets, file_len))
}

/// An index laid out for writing: the encoded header and table, and each section's bytes at
/// its offset.
struct Plan<'a> {
    header: Vec<u8>,
    sections: Vec<(u64, &'a [u8])>,
    file_len: u64,
}

impl<'a> Plan<'a> {
    fn new(parts: &'a IndexParts, metadata: &'a [u8]) -> Result<Self, SearchError> {
        let p = &parts.params;
        let mut payloads: Vec<(SectionKind, &'a [u8])> = Vec::with_capacity(8);
        if let Some(rotation) = &parts.rotation {
            payloads.push((SectionKind::Rotation, bytemuck::cast_slice(rotation)));
        }
        payloads.extend([
            (
                SectionKind::CoarseCentroids,
                bytemuck::cast_slice(&parts.coarse_centroids),
            ),
            (
                SectionKind::Codebooks,
                bytemuck::cast_slice(&parts.codebooks),
            ),
            (
                SectionKind::ListOffsets,
                bytemuck::cast_slice(&parts.list_offsets),
            ),
            (
                SectionKind::ListSizes,
                bytemuck::cast_slice(&parts.list_sizes),
            ),
            (SectionKind::Metadata, metadata),
            (SectionKind::Ids, bytemuck::cast_slice(&parts.ids)),
            (SectionKind::Codes, &parts.codes[..]),
        ]);
        if let Some(refine) = &parts.refine {
            payloads.push((SectionKind::Refine, &refine[..]));
        }
        if let Some(keys) = &parts.item_keys {
            payloads.push((SectionKind::ItemKeys, keys.bytes()));
        }
        let entries: Vec<(SectionKind, u64, u32)> = payloads
            .iter()
            .map(|&(kind, bytes)| (kind, bytes.len() as u64, crc32fast::hash(bytes)))
            .collect();
        let (header, offsets, file_len) = encode_header(p, &entries)?;
        let sections = offsets
            .into_iter()
            .zip(payloads)
            .map(|(offset, (_, bytes))| (offset, bytes))
            .collect();
        Ok(Self {
            header,
            sections,
            file_len,
        })
    }

    /// Streams the file: header, then each section after its zero padding.
    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        const ZEROS: [u8; SECTION_ALIGN] = [0; SECTION_ALIGN];
        out.write_all(&self.header)?;
        let mut pos = self.header.len() as u64;
        for &(offset, bytes) in &self.sections {
            // Padding is below SECTION_ALIGN bytes by construction.
            let pad = (offset - pos) as usize;
            out.write_all(&ZEROS[..pad])?;
            out.write_all(bytes)?;
            pos = offset + bytes.len() as u64;
        }
        Ok(())
    }
}

/// Checks `parts` and serialises its metadata and item keys, the steps both writers share.
fn prepare(parts: &IndexParts) -> Result<Vec<u8>, SearchError> {
    check_host()?;
    parts.view()?;
    if let Some(keys) = &parts.item_keys {
        keys.check(&parts.ids)?;
    }
    parts.metadata.encode()
}

/// Encodes an index as the bytes of a file (version [`version_for`] its parameters).
///
/// For large indexes prefer [`write_index`], which streams to disk instead of building the
/// whole file in memory.
///
/// # Errors
/// When the parts are inconsistent (see [`IndexView::new`]) or the host is big-endian.
pub fn encode_index(parts: &IndexParts) -> Result<Vec<u8>, SearchError> {
    let metadata = prepare(parts)?;
    let plan = Plan::new(parts, &metadata)?;
    let capacity =
        usize::try_from(plan.file_len).map_err(|_| SearchError::Overflow { what: "file size" })?;
    let mut out = Vec::with_capacity(capacity);
    plan.write_to(&mut out)
        .map_err(|e| SearchError::io("(in-memory buffer)", e))?;
    Ok(out)
}

/// Writes an index to `path` atomically.
///
/// The file is streamed into a temporary file in the same directory, synced, and renamed over
/// `path`; on Unix the directory is synced too. Readers therefore see either the old file or the
/// complete new one, and an error leaves any old file untouched and no temporary file behind.
///
/// # Errors
/// As [`encode_index`], and [`SearchError::Io`] when the directory does not exist or a write,
/// sync or rename fails.
pub fn write_index(path: &Path, parts: &IndexParts) -> Result<(), SearchError> {
    let metadata = prepare(parts)?;
    let plan = Plan::new(parts, &metadata)?;
    poeem_fs::write_atomically(path, |out| plan.write_to(out))
        .map_err(|e| SearchError::io(e.path, e.source))
}
