use std::path::PathBuf;

use thiserror::Error;

/// Errors from reading, writing, building or searching an index.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SearchError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The item keys (the `item_keys` section, or keys given to the writer) are not valid.
    #[error("item keys: {reason}")]
    BadItemKeys {
        /// What is wrong.
        reason: String,
    },
    /// The first bytes are not the index magic.
    #[error("not a poeem index file (magic bytes {found:02x?})")]
    NotAnIndex {
        /// The bytes found where the magic belongs.
        found: [u8; 8],
    },
    /// The file's format version is outside the range this reader supports.
    #[error("index format version {found} is not supported (this reader supports {min}..={max})")]
    UnsupportedVersion {
        /// The file's version.
        found: u32,
        /// Oldest supported version.
        min: u32,
        /// Newest supported version.
        max: u32,
    },
    /// Index files are little-endian and this host is not.
    #[error("index files can only be read on little-endian hosts")]
    BigEndianHost,
    /// The file ends before a structure it declares.
    #[error("{what}: needs {needed} bytes, the file has {available}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// A header field holds an impossible value.
    #[error("header field {field} = {value}: {reason}")]
    InvalidHeader {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A section lies outside the file, overlaps another, or is not 64-byte aligned.
    #[error("section {section}: offset {offset}, length {length}: {reason}")]
    BadSectionPlacement {
        /// The section's name.
        section: &'static str,
        /// Its offset in the file.
        offset: u64,
        /// Its length in bytes.
        length: u64,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A required section is absent or present twice, or an unknown required section is present.
    #[error("section {section}: {reason}")]
    BadSectionTable {
        /// The section's name, or its numeric kind.
        section: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A section's length disagrees with the header's parameters.
    #[error("section {section}: expected {expected} bytes, found {found}")]
    SectionSize {
        /// The section's name.
        section: &'static str,
        /// The length the parameters imply.
        expected: u64,
        /// The length in the section table.
        found: u64,
    },
    /// A stored CRC-32 does not match the bytes.
    #[error("{section}: CRC-32 mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch {
        /// The header or the section's name.
        section: &'static str,
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// The per-list offsets or sizes are inconsistent.
    #[error("list {list}: {reason}")]
    BadList {
        /// The list.
        list: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A stored code is out of range for the codebook size.
    #[error(
        "list {list}, item {item}, subspace {subspace}: code {code} is not below {n_codewords}"
    )]
    CodeOutOfRange {
        /// The list.
        list: usize,
        /// The item's position in the list.
        item: usize,
        /// The subspace.
        subspace: usize,
        /// The code found.
        code: u32,
        /// The number of codewords.
        n_codewords: usize,
    },
    /// Size arithmetic overflowed (an absurd header).
    #[error("{what} overflows")]
    Overflow {
        /// The quantity being computed.
        what: &'static str,
    },
    /// The metadata section is not valid UTF-8 JSON.
    #[error("metadata section: {reason}")]
    BadMetadata {
        /// The parser's complaint.
        reason: String,
    },
    /// A parameter is out of range.
    #[error("{name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A buffer's length does not match what the call needs.
    #[error("{what}: expected {expected}, got {got}")]
    DimensionMismatch {
        /// Which argument.
        what: &'static str,
        /// The length the call needs.
        expected: usize,
        /// The length it was given.
        got: usize,
    },
    /// An input holds NaN or an infinity.
    #[error("{what}: row {row}, column {col} is not finite")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Its row.
        row: usize,
        /// Its column.
        col: usize,
    },
    /// An input has no rows.
    #[error("{what} is empty")]
    Empty {
        /// Which input.
        what: &'static str,
    },
}

impl SearchError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
