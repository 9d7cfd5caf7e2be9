use std::path::PathBuf;

use poeem_search::SearchError;
use thiserror::Error;

/// Errors from reading or writing faiss index files.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FaissError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file ends before a field or array it declares.
    #[error(
        "faiss file truncated: {what} at byte {offset} needs {needed} bytes, {available} remain"
    )]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// A structure of a kind this reader does not convert.
    #[error("faiss file, byte {offset}: found {what} {found}; supported: {supported}")]
    Unsupported {
        /// What kind of structure (index, coarse quantizer, vector transform, inverted lists).
        what: &'static str,
        /// The four-character code found, printable, with its hex value.
        found: String,
        /// Where it was found.
        offset: u64,
        /// What this reader accepts there.
        supported: &'static str,
    },
    /// A field holds a value that is impossible or that poeem cannot represent.
    #[error("faiss file, {field} = {value}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Bytes follow the end of the index.
    #[error("faiss file: {count} bytes follow the end of the index at byte {offset}")]
    TrailingBytes {
        /// Where the index ends.
        offset: u64,
        /// How many bytes follow.
        count: u64,
    },
    /// The poeem side: reading, validating or writing a poeem index.
    #[error(transparent)]
    Search(#[from] SearchError),
}

impl FaissError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        field: &'static str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// A four-character code as faiss prints it: the characters, with non-printable bytes escaped,
/// and the little-endian u32 value.
pub(crate) fn fourcc_name(code: [u8; 4]) -> String {
    let text: String = code
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect();
    format!("\"{text}\" (0x{:08x})", u32::from_le_bytes(code))
}
