//! Reading and writing vector files: NumPy `.npy` (2-D, C order, f32 or f64) and `.fvecs`
//! (per row: a little-endian i32 dimension, then that many f32).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;
use thiserror::Error;

/// Errors reading or writing a vector file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IoError {
    /// The operating system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file's content is not what the format allows.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file name has no extension this module reads.
    #[error("{path}: unknown vector file type (expected .npy or .fvecs)")]
    UnknownExtension {
        /// The file.
        path: PathBuf,
    },
}

/// Row-major `n × dim` vectors read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    /// The values, row-major.
    pub data: Vec<f32>,
    /// Row width.
    pub dim: usize,
}

impl Vectors {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads `.npy` or `.fvecs` vectors, by extension.
///
/// # Errors
/// On I/O failure, an unknown extension, or content that is not a 2-D float matrix.
pub fn read_vectors(path: &Path) -> Result<Vectors, IoError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy(path),
        Some("fvecs") => read_fvecs(path),
        _ => Err(IoError::UnknownExtension {
            path: path.to_owned(),
        }),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |source| IoError::Io {
        path: path.to_owned(),
        source,
    }
}

fn format_error(path: &Path, reason: impl Into<String>) -> IoError {
    IoError::Format {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads a 2-D C-order `.npy` of f32 (or f64, converted).
///
/// # Errors
/// As [`read_vectors`].
pub fn read_npy(path: &Path) -> Result<Vectors, IoError> {
    let file = poeem_fs::open_input(path).map_err(io_error(path))?;
    npy_vectors(path, BufReader::new(file))
}

/// Where errors of the `parse_*` functions say the bytes came from.
const IN_MEMORY: &str = "(in-memory bytes)";

/// Parses the bytes of a `.npy` file as [`read_npy`] reads the file.
///
/// # Errors
/// As [`read_npy`].
pub fn parse_npy(bytes: &[u8]) -> Result<Vectors, IoError> {
    npy_vectors(Path::new(IN_MEMORY), bytes)
}

/// Reads `.npy` vectors from `reader` (errors name `path`).
fn npy_vectors(path: &Path, reader: impl Read) -> Result<Vectors, IoError> {
    let npy = npyz::NpyFile::new(reader)
        .map_err(|e| format_error(path, format!("not a .npy file: {e}")))?;
    let shape = npy.shape().to_vec();
    if shape.len() != 2 {
        return Err(format_error(
            path,
            format!("expected a 2-D array, found shape {shape:?}"),
        ));
    }
    if npy.order() != npyz::Order::C {
        return Err(format_error(
            path,
            "expected C (row-major) order, found Fortran order",
        ));
    }
    let dim = usize::try_from(shape[1]).map_err(|_| format_error(path, "dimension too large"))?;
    if dim == 0 {
        return Err(format_error(path, "the vectors have dimension 0"));
    }
    let data: Vec<f32> = match npy.dtype() {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 4 => {
            npy.into_vec::<f32>()
                .map_err(|e| format_error(path, e.to_string()))?
        }
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 8 => {
            npy.into_vec::<f64>()
                .map_err(|e| format_error(path, e.to_string()))?
                .into_iter()
                .map(|v| v as f32)
                .collect()
        }
        other => {
            return Err(format_error(
                path,
                format!(
                    "expected float32 or float64 values, found {}",
                    other.descr()
                ),
            ));
        }
    };
    Ok(Vectors { data, dim })
}

/// Reads an `.fvecs` file.
///
/// # Errors
/// As [`read_vectors`]; also when rows disagree in dimension or the file ends mid-row.
pub fn read_fvecs(path: &Path) -> Result<Vectors, IoError> {
    let bytes = poeem_fs::read_input(path).map_err(io_error(path))?;
    fvecs_vectors(path, &bytes)
}

/// Parses the bytes of an `.fvecs` file as [`read_fvecs`] reads the file.
///
/// # Errors
/// As [`read_fvecs`].
pub fn parse_fvecs(bytes: &[u8]) -> Result<Vectors, IoError> {
    fvecs_vectors(Path::new(IN_MEMORY), bytes)
}

/// The vectors of `.fvecs` bytes (errors name `path`).
fn fvecs_vectors(path: &Path, bytes: &[u8]) -> Result<Vectors, IoError> {
    let mut data = Vec::new();
    let mut dim = None;
    let mut offset = 0usize;
    while offset < bytes.len() {
        let header = bytes
            .get(offset..offset + 4)
            .ok_or_else(|| format_error(path, format!("truncated row header at byte {offset}")))?;
        let d = i32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let d = usize::try_from(d)
            .ok()
            .filter(|&d| d > 0)
            .ok_or_else(|| format_error(path, format!("invalid dimension {d} at byte {offset}")))?;
        if *dim.get_or_insert(d) != d {
            return Err(format_error(
                path,
                format!(
                    "row at byte {offset} has dimension {d}, earlier rows {}",
                    dim.unwrap_or(0)
                ),
            ));
        }
        let row = bytes
            .get(offset + 4..offset + 4 + 4 * d)
            .ok_or_else(|| format_error(path, format!("truncated row at byte {offset}")))?;
        data.extend(
            row.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        offset += 4 + 4 * d;
    }
    let dim = dim.ok_or_else(|| format_error(path, "the file holds no vectors"))?;
    Ok(Vectors { data, dim })
}

/// Writes a 2-D C-order f32 `.npy` atomically (temporary file, fsync, rename).
///
/// # Errors
/// On I/O failure; when `data` is not a whole number of `dim`-wide rows.
pub fn write_npy(path: &Path, data: &[f32], dim: usize) -> Result<(), IoError> {
    write_matrix(path, data, dim)
}

/// Writes a 2-D C-order i64 `.npy` atomically (search results: ids, −1 for none).
///
/// # Errors
/// As [`write_npy`].
pub fn write_npy_i64(path: &Path, data: &[i64], cols: usize) -> Result<(), IoError> {
    write_matrix(path, data, cols)
}

fn write_matrix<T: npyz::AutoSerialize + Copy>(
    path: &Path,
    data: &[T],
    cols: usize,
) -> Result<(), IoError> {
    if cols == 0 || !data.len().is_multiple_of(cols) {
        return Err(format_error(
            path,
            format!("{} values do not form rows of {cols}", data.len()),
        ));
    }
    write_atomically(path, |w| {
        let shape = [(data.len() / cols) as u64, cols as u64];
        let mut writer = npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(&shape)
            .writer(w)
            .begin_nd()?;
        writer.extend(data.iter().copied())?;
        writer.finish()
    })
}

/// Reads item ids from a `.npy` of integers: 1-D, or 2-D with one column; int64, uint64, int32
/// or uint32.
///
/// # Errors
/// On I/O failure, another shape or type, or a negative id.
pub fn read_ids(path: &Path) -> Result<Vec<u64>, IoError> {
    let file = poeem_fs::open_input(path).map_err(io_error(path))?;
    npy_ids(path, BufReader::new(file))
}

/// Parses the bytes of a `.npy` file of ids as [`read_ids`] reads the file.
///
/// # Errors
/// As [`read_ids`].
pub fn parse_ids(bytes: &[u8]) -> Result<Vec<u64>, IoError> {
    npy_ids(Path::new(IN_MEMORY), bytes)
}

/// Reads ids from `.npy` bytes in `reader` (errors name `path`).
fn npy_ids(path: &Path, reader: impl Read) -> Result<Vec<u64>, IoError> {
    let npy = npyz::NpyFile::new(reader)
        .map_err(|e| format_error(path, format!("not a .npy file: {e}")))?;
    let shape = npy.shape().to_vec();
    if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
        return Err(format_error(
            path,
            format!("expected a 1-D array of ids (or one column), found shape {shape:?}"),
        ));
    }
    let signed = |values: Vec<i64>| -> Result<Vec<u64>, IoError> {
        values
            .into_iter()
            .enumerate()
            .map(|(row, v)| {
                u64::try_from(v)
                    .map_err(|_| format_error(path, format!("id {v} at row {row} is negative")))
            })
            .collect()
    };
    let read_error = |e: std::io::Error| format_error(path, e.to_string());
    let dtype = npy.dtype();
    match &dtype {
        npyz::DType::Plain(t) => match (t.type_char(), t.size_field()) {
            (npyz::TypeChar::Int, 8) => signed(npy.into_vec::<i64>().map_err(read_error)?),
            (npyz::TypeChar::Int, 4) => signed(
                npy.into_vec::<i32>()
                    .map_err(read_error)?
                    .into_iter()
                    .map(i64::from)
                    .collect(),
            ),
            (npyz::TypeChar::Uint, 8) => npy.into_vec::<u64>().map_err(read_error),
            (npyz::TypeChar::Uint, 4) => Ok(npy
                .into_vec::<u32>()
                .map_err(read_error)?
                .into_iter()
                .map(u64::from)
                .collect()),
            _ => Err(format_error(
                path,
                format!("expected integer ids, found {}", dtype.descr()),
            )),
        },
        other => Err(format_error(
            path,
            format!("expected integer ids, found {}", other.descr()),
        )),
    }
}

/// Writes an `.fvecs` file atomically.
///
/// # Errors
/// As [`write_npy`].
pub fn write_fvecs(path: &Path, data: &[f32], dim: usize) -> Result<(), IoError> {
    let dim_i32 = i32::try_from(dim)
        .ok()
        .filter(|&d| d > 0)
        .ok_or_else(|| format_error(path, format!("invalid dimension {dim}")))?;
    if !data.len().is_multiple_of(dim) {
        return Err(format_error(
            path,
            format!("{} values do not form rows of {dim}", data.len()),
        ));
    }
    write_atomically(path, |w| {
        for row in data.chunks_exact(dim) {
            w.write_all(&dim_i32.to_le_bytes())?;
            for v in row {
                w.write_all(&v.to_le_bytes())?;
            }
        }
        Ok(())
    })
}

/// Writes through `fill` atomically (see [`poeem_fs::write_atomically`]).
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<(), IoError> {
    poeem_fs::write_atomically(path, fill).map_err(|e| IoError::Io {
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("poeem-io-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn npy_and_fvecs_round_trip() {
        let dir = temp_dir("roundtrip");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        for name in ["v.npy", "v.fvecs"] {
            let path = dir.join(name);
            match name {
                "v.npy" => write_npy(&path, &data, 4).unwrap(),
                _ => write_fvecs(&path, &data, 4).unwrap(),
            }
            let back = read_vectors(&path).unwrap();
            assert_eq!(
                back,
                Vectors {
                    data: data.clone(),
                    dim: 4
                }
            );
            assert_eq!(back.len(), 3);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ids_round_trip_and_negative_ids_are_rejected() {
        let dir = temp_dir("ids");
        let path = dir.join("ids.npy");
        write_npy_i64(&path, &[3, 1, 4, 1, 5, 9], 1).unwrap();
        assert_eq!(read_ids(&path).unwrap(), vec![3, 1, 4, 1, 5, 9]);
        write_npy_i64(&path, &[3, -1], 2).unwrap();
        assert!(read_ids(&path).is_err(), "a 1×2 array is not a list of ids");
        write_npy_i64(&path, &[3, -1], 1).unwrap();
        let err = read_ids(&path).unwrap_err().to_string();
        assert!(err.contains("negative"), "{err}");
        write_npy(&path, &[1.0, 2.0], 1).unwrap();
        assert!(read_ids(&path).is_err(), "float ids are rejected");
    }

    #[test]
    fn bad_files_give_errors() {
        let dir = temp_dir("bad");
        let trunc = dir.join("t.fvecs");
        std::fs::write(&trunc, [4, 0, 0, 0, 1, 2]).unwrap();
        assert!(matches!(read_vectors(&trunc), Err(IoError::Format { .. })));
        let junk = dir.join("j.npy");
        std::fs::write(&junk, b"not numpy").unwrap();
        assert!(matches!(read_vectors(&junk), Err(IoError::Format { .. })));
        assert!(matches!(
            read_vectors(&dir.join("x.csv")),
            Err(IoError::UnknownExtension { .. })
        ));
        assert!(matches!(
            read_vectors(&dir.join("missing.npy")),
            Err(IoError::Io { .. })
        ));
        let mixed = dir.join("m.fvecs");
        std::fs::write(
            &mixed,
            [
                1, 0, 0, 0, 0, 0, 128, 63, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        )
        .unwrap();
        assert!(matches!(read_vectors(&mixed), Err(IoError::Format { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
