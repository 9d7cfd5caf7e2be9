//! Opening files to read, with a plain error for a directory.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Opens `path` for reading.
///
/// # Errors
/// The operating system's error, or [`io::ErrorKind::IsADirectory`] ("is a directory, not a
/// file") when `path` is a directory: opening one succeeds on Unix, and what fails later (a read,
/// a memory map) says something less clear.
pub fn open_input(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory, not a file",
        ));
    }
    Ok(file)
}

/// Reads the whole file at `path`.
///
/// # Errors
/// As [`open_input`], and read errors.
pub fn read_input(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open_input(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_refused_and_a_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_input(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::IsADirectory);
        assert_eq!(err.to_string(), "is a directory, not a file");
        let file = dir.path().join("f");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(read_input(&file).unwrap(), b"abc");
        assert_eq!(
            read_input(&dir.path().join("none")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
