//! Checkpoints: one file per model directory holding the model (configuration, vocabularies,
//! feature tables, parameters, indexing layer) and the trainer's state (its configuration,
//! step, optimiser states), written atomically so that a crash never leaves a half-written
//! checkpoint behind.
//!
//! # Format (version 1)
//!
//! All integers little-endian.
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | magic `POEEMCKP` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | number of sections `n` |
//! | 16 | 24 `n` | section table: tag (4 ASCII bytes), CRC-32 of the payload (u32), offset (u64), length (u64) |
//! | 16 + 24 `n` | 4 | CRC-32 of the bytes before it |
//! | … | | the payloads, in table order |
//!
//! Sections: `MODL` (the [`Model`]) and `TRNR` (the trainer's state), each a CBOR encoding
//! (RFC 8949) of the serde data model. Float arrays of the model's parameters and of the
//! optimiser states are CBOR byte strings of little-endian `f32` (compact and exact); every
//! other float (the layer's states) is a CBOR float, which encodes `f32` exactly too, and a
//! float array written as CBOR floats (as checkpoints before 2026-12-03 did for the optimiser
//! states) reads the same. Loading checks the magic,
//! the version, both CRCs and the section bounds before decoding, then the model's internal
//! consistency.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TrainError;
use crate::model::Model;

/// Name of the checkpoint file inside a model directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.poeem";
/// The checkpoint format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"POEEMCKP";
const HEADER_LEN: usize = 16;
const ENTRY_LEN: usize = 24;
const MAX_SECTIONS: usize = 16;
pub(crate) const MODEL_TAG: [u8; 4] = *b"MODL";
pub(crate) const TRAINER_TAG: [u8; 4] = *b"TRNR";

/// The path of the checkpoint file in `dir`.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Serialises a section's value as CBOR into the checkpoint file being written.
pub(crate) type EncodeSection<'a> = &'a dyn Fn(&mut dyn Write) -> std::io::Result<()>;

/// Encodes `value` as CBOR into `out`.
pub(crate) fn encode_into<T: Serialize>(value: &T, out: &mut dyn Write) -> std::io::Result<()> {
    ciborium::into_writer(value, out).map_err(|e| match e {
        ciborium::ser::Error::Io(e) => e,
        ciborium::ser::Error::Value(reason) => {
            std::io::Error::other(format!("cannot encode: {reason}"))
        }
    })
}

/// Decodes a CBOR section.
fn decode<T: DeserializeOwned>(bytes: &[u8], tag: [u8; 4], path: &Path) -> Result<T, TrainError> {
    ciborium::from_reader(bytes).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("section {}: {e}", tag_name(tag)),
    })
}

fn tag_name(tag: [u8; 4]) -> String {
    String::from_utf8_lossy(&tag).into_owned()
}

/// Writes the sections into `dir`'s checkpoint file atomically (temporary file, fsync, rename,
/// directory fsync). Each section is encoded straight into the file, its length and checksum
/// counted on the way, and the header (a placeholder until then) is written last: nothing the
/// size of the model is held in memory.
pub(crate) fn write_sections(
    dir: &Path,
    sections: &[([u8; 4], EncodeSection<'_>)],
) -> Result<PathBuf, TrainError> {
    let path = checkpoint_path(dir);
    let table_end = HEADER_LEN + ENTRY_LEN * sections.len() + 4;
    poeem_fs::write_atomically(&path, |file| {
        file.write_all(&vec![0; table_end])?;
        let mut header = Vec::with_capacity(table_end);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&(sections.len() as u32).to_le_bytes());
        let mut offset = table_end as u64;
        for (tag, encode) in sections {
            let mut counted = Counted {
                out: &mut *file,
                len: 0,
                crc: crc32fast::Hasher::new(),
            };
            encode(&mut counted)?;
            let (len, crc) = (counted.len, counted.crc.finalize());
            header.extend_from_slice(tag);
            header.extend_from_slice(&crc.to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            header.extend_from_slice(&len.to_le_bytes());
            offset += len;
        }
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header)
    })
    .map_err(|e| TrainError::io(e.path, e.source))?;
    Ok(path)
}

/// A writer that counts the bytes passing through it and their CRC-32.
struct Counted<'a, W: Write> {
    out: &'a mut W,
    len: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.len += n as u64;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A checked section table.
struct Sections {
    path: PathBuf,
    file: File,
    entries: Vec<([u8; 4], u32, u64, u64)>,
}

impl Sections {
    /// Opens `dir`'s checkpoint and checks its header.
    fn open(dir: &Path) -> Result<Self, TrainError> {
        let path = checkpoint_path(dir);
        let corrupt = |reason: String| TrainError::Checkpoint {
            path: path.clone(),
            reason,
        };
        let mut file = match poeem_fs::open_input(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupt(format!(
                    "no checkpoint in {} (expected the file {CHECKPOINT_FILE})",
                    dir.display()
                )));
            }
            Err(e) => return Err(TrainError::io(&path, e)),
        };
        let file_len = file.metadata().map_err(|e| TrainError::io(&path, e))?.len();
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head)
            .map_err(|_| corrupt("truncated header".into()))?;
        if &head[..8] != MAGIC {
            return Err(corrupt("not a poeem checkpoint (bad magic)".into()));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {version}, this build reads version {FORMAT_VERSION}"
            )));
        }
        let n = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize;
        if n > MAX_SECTIONS {
            return Err(corrupt(format!("{n} sections (corrupt header)")));
        }
        let mut table = vec![0u8; ENTRY_LEN * n + 4];
        file.read_exact(&mut table)
            .map_err(|_| corrupt("truncated section table".into()))?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head);
        hasher.update(&table[..ENTRY_LEN * n]);
        let stored = u32::from_le_bytes(table[ENTRY_LEN * n..].try_into().expect("4 bytes"));
        if hasher.finalize() != stored {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let entries = table[..ENTRY_LEN * n]
            .chunks_exact(ENTRY_LEN)
            .map(|e| {
                let tag: [u8; 4] = e[..4].try_into().expect("4 bytes");
                let crc = u32::from_le_bytes(e[4..8].try_into().expect("4 bytes"));
                let offset = u64::from_le_bytes(e[8..16].try_into().expect("8 bytes"));
                let len = u64::from_le_bytes(e[16..24].try_into().expect("8 bytes"));
                (tag, crc, offset, len)
            })
            .collect::<Vec<_>>();
        for &(tag, _, offset, len) in &entries {
            if offset.checked_add(len).is_none_or(|end| end > file_len) {
                return Err(corrupt(format!(
                    "section {} extends past the end of the file (truncated?)",
                    tag_name(tag)
                )));
            }
        }
        Ok(Self {
            path,
            file,
            entries,
        })
    }

    /// Reads, checks and decodes section `tag`.
    fn read<T: DeserializeOwned>(&mut self, tag: [u8; 4]) -> Result<T, TrainError> {
        let path = self.path.clone();
        let corrupt = |reason: String| TrainError::Checkpoint {
            path: path.clone(),
            reason,
        };
        let &(_, crc, offset, len) = self
            .entries
            .iter()
            .find(|e| e.0 == tag)
            .ok_or_else(|| corrupt(format!("no section {}", tag_name(tag))))?;
        let len = usize::try_from(len).map_err(|_| corrupt("section too large".into()))?;
        let mut bytes = vec![0u8; len];
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut bytes))
            .map_err(|e| TrainError::io(&path, e))?;
        if crc32fast::hash(&bytes) != crc {
            return Err(corrupt(format!(
                "section {} checksum mismatch (corrupt file)",
                tag_name(tag)
            )));
        }
        decode(&bytes, tag, &path)
    }
}

/// Reads the model and the trainer state from `dir`'s checkpoint.
pub(crate) fn read_checkpoint<S: DeserializeOwned>(dir: &Path) -> Result<(Model, S), TrainError> {
    let mut sections = Sections::open(dir)?;
    let model = read_model(&mut sections)?;
    let state = sections.read(TRAINER_TAG)?;
    Ok((model, state))
}

fn read_model(sections: &mut Sections) -> Result<Model, TrainError> {
    let model: Model = sections.read(MODEL_TAG)?;
    model.validate().map_err(|e| TrainError::Checkpoint {
        path: sections.path.clone(),
        reason: format!("inconsistent model: {e}"),
    })?;
    Ok(model)
}

impl Model {
    /// Loads the model of the checkpoint in `dir` (for embedding and export; the optimiser
    /// states are not read).
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] when there is no checkpoint or it is truncated, corrupt, of
    /// another format version or inconsistent; [`TrainError::Io`] when it cannot be read.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, TrainError> {
        read_model(&mut Sections::open(dir.as_ref())?)
    }
}
