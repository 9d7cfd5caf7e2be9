//! Atomic file writes, the one implementation every poeem crate that writes files uses.
//!
//! [`write_atomically`] streams into a temporary file beside the target, syncs it, renames it over
//! the target and (on Unix) syncs the directory: readers see the old file or the complete new
//! one, never a part, and a failure leaves any old file untouched and no temporary file behind.
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where an atomic write failed: the path concerned and the operating system's error.
#[derive(Debug)]
pub struct WriteError {
    /// The file the failing operation touched (the temporary file, the target or its directory).
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Writes `path` atomically with the bytes `fill` produces (through a 1 MiB buffer).
///
/// # Errors
/// When `path` names no file, its directory does not exist, or `fill`, a write, a sync or the
/// rename fails; the error names the path concerned.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> Result<(), WriteError> {
    let at = |path: &Path| {
        let path = path.to_owned();
        move |source| WriteError { path, source }
    };
    let name = path.file_name().ok_or_else(|| WriteError {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let temp = TempFile::create(dir, name).map_err(at(dir))?;
    let written = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, &temp.file);
        fill(&mut out)?;
        out.flush()?;
        drop(out);
        temp.file.sync_all()
    })();
    written.map_err(at(&temp.path))?;
    fs::rename(&temp.path, path).map_err(at(path))?;
    temp.disarm();
    sync_dir(dir).map_err(at(dir))
}

/// A temporary file that is removed when dropped, unless disarmed after its rename.
struct TempFile {
    path: PathBuf,
    file: File,
    armed: bool,
}

impl TempFile {
    /// Creates `.<name>.<pid>.<n>.tmp` in `dir`, a name no other writer uses.
    fn create(dir: &Path, name: &OsStr) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut attempts = 0;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut temp_name = OsString::from(".");
            temp_name.push(name);
            temp_name.push(format!(".{}.{n}.tmp", std::process::id()));
            let path = dir.join(temp_name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(Self {
                        path,
                        file,
                        armed: true,
                    });
                }
                // A stale file left by an earlier process with the same id: take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Keeps the file (it has been renamed into place).
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the write already failed, and that error is the one to report.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<OsString> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomically(&path, |w| w.write_all(b"old")).unwrap();
        write_atomically(&path, |w| w.write_all(b"new contents")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new contents");
        assert_eq!(entries(dir.path()), vec![OsString::from("out.bin")]);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomically(&path, |w| w.write_all(b"old")).unwrap();
        let err = write_atomically(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), vec![OsString::from("out.bin")]);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("out.bin");
        let err = write_atomically(&path, |w| w.write_all(b"x")).unwrap_err();
        assert!(err.path.ends_with("absent"), "{}", err.path.display());
    }
}
