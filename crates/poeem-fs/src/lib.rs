//! File handling every poeem crate shares.
//!
//! - [`write_atomically`] streams into a temporary file beside the target, syncs it, renames it
//!   over the target and (on Unix) syncs the directory: readers see the old file or the complete
//!   new one, never a part, and a failure leaves any old file untouched and no temporary file
//!   behind. A process killed mid-write cannot remove its temporary file; the next write to the
//!   same target removes it (see [`write_atomically`]).
//! - [`open_input`] and [`read_input`] open a file to read and say so plainly when the path is a
//!   directory.
//! - [`FileId`]: the identity of a file (device and inode), to tell whether two paths name one
//!   file however they are spelled.
#![forbid(unsafe_code)]

mod identity;
mod input;
mod stale;

pub use identity::FileId;
pub use input::{open_input, read_input};

use std::ffi::OsStr;
#[cfg(test)]
use std::ffi::OsString;
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
/// The temporary file is `.<name>.<pid>.<start>.<n>.tmp` beside the target, where `pid` and
/// `start` identify the writing process (its id and, on Linux, its start time). Before writing,
/// temporary files of earlier writes to the same target are removed when their writer is
/// provably gone (a process with that id and start time no longer runs, or it is this process
/// and the write is no longer in flight); anything else is left alone.
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
    stale::remove_stale_temporaries(dir, name);
    let temp = TempFile::create(dir, name)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => io::Error::new(e.kind(), "the directory does not exist"),
            _ => e,
        })
        .map_err(at(dir))?;
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

/// A temporary file that is removed when dropped, unless disarmed after its rename. While it
/// exists its path is registered as in flight, so that no write of this process removes it.
struct TempFile {
    path: PathBuf,
    file: File,
    armed: bool,
}

impl TempFile {
    /// Creates `.<name>.<pid>.<start>.<n>.tmp` in `dir`, a name no other writer uses.
    fn create(dir: &Path, name: &OsStr) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut attempts = 0;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(stale::temp_name(name, n));
            stale::register(&path);
            let opened = OpenOptions::new().write(true).create_new(true).open(&path);
            if opened.is_err() {
                stale::unregister(&path);
            }
            match opened {
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
        stale::unregister(&self.path);
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
        assert!(
            err.to_string()
                .ends_with("absent: the directory does not exist"),
            "{err}"
        );
    }

    /// Set in the child process of `a_killed_writer_leaves_nothing_behind`: the target it writes.
    const CHILD_TARGET: &str = "POEEM_FS_TEST_CHILD_TARGET";

    #[test]
    fn a_killed_writer_leaves_nothing_behind() {
        if let Some(target) = std::env::var_os(CHILD_TARGET) {
            // The child: write a large file slowly, until killed.
            let _ = write_atomically(Path::new(&target), |w| {
                loop {
                    w.write_all(&[7u8; 1 << 20])?;
                    w.flush()?;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            });
            unreachable!("the writer loops until it is killed");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        write_atomically(&path, |w| w.write_all(b"old")).unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "tests::a_killed_writer_leaves_nothing_behind",
                "--exact",
                "--test-threads=1",
            ])
            .env(CHILD_TARGET, &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the child's temporary file holds several MiB, then kill it mid-write.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let temp = loop {
            let temps: Vec<_> = entries(dir.path())
                .into_iter()
                .filter(|n| n.to_string_lossy().ends_with(".tmp"))
                .collect();
            if let [temp] = &temps[..]
                && fs::metadata(dir.path().join(temp)).is_ok_and(|m| m.len() >= 4 << 20)
            {
                break temp.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the child wrote nothing"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        let left = vec![OsString::from("big.bin"), temp.clone()];
        let mut expected = left.clone();
        expected.sort();
        assert_eq!(entries(dir.path()), expected, "the crash left its file");
        assert_eq!(fs::read(&path).unwrap(), b"old", "the target is untouched");

        // A live writer's file and a look-alike of another target stay; the crashed one goes.
        let live = dir
            .path()
            .join(stale::temp_name(OsStr::new("big.bin"), u64::MAX));
        stale::register(&live);
        fs::write(&live, b"in flight").unwrap();
        let other = dir.path().join(".other.bin.1.2.3.tmp");
        fs::write(&other, b"not ours").unwrap();
        write_atomically(&path, |w| w.write_all(b"new")).unwrap();
        stale::unregister(&live);
        let mut expected = vec![
            OsString::from("big.bin"),
            live.file_name().unwrap().to_owned(),
            other.file_name().unwrap().to_owned(),
        ];
        expected.sort();
        assert_eq!(entries(dir.path()), expected);
        assert_eq!(fs::read(&path).unwrap(), b"new");
        // Once nothing writes it, this process's own leftover is provably stale too.
        write_atomically(&path, |w| w.write_all(b"newer")).unwrap();
        let mut expected = vec![
            OsString::from("big.bin"),
            other.file_name().unwrap().to_owned(),
        ];
        expected.sort();
        assert_eq!(entries(dir.path()), expected);
    }
}
