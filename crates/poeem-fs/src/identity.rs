//! The identity of a file, to tell whether two paths name the same file.

use std::io;
use std::path::{Path, PathBuf};

/// What a path names, compared by identity rather than spelling.
///
/// An existing file is its device and inode (on Unix; elsewhere its canonical path), so hard
/// links, symbolic links and spellings such as `./x` or `dir/../x` of one file are equal. A path
/// that does not exist yet is its canonical parent directory joined with its file name (or,
/// when the parent does not exist either, the absolute path with `.` and `..` resolved
/// lexically), so two spellings of one future file are equal too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileId {
    /// An existing file.
    #[cfg(unix)]
    Inode {
        /// The device holding it.
        dev: u64,
        /// Its inode number.
        ino: u64,
    },
    /// An existing file (non-Unix): its canonical path.
    #[cfg(not(unix))]
    Canonical(PathBuf),
    /// A path that does not exist (yet).
    Missing(PathBuf),
}

impl FileId {
    /// The identity of what `path` names.
    ///
    /// # Errors
    /// When the current directory cannot be read (for a relative path that does not exist).
    pub fn of(path: &Path) -> io::Result<Self> {
        if let Ok(meta) = std::fs::metadata(path) {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                return Ok(Self::Inode {
                    dev: meta.dev(),
                    ino: meta.ino(),
                });
            }
            #[cfg(not(unix))]
            {
                let _ = meta;
                return Ok(Self::Canonical(path.canonicalize()?));
            }
        }
        let absolute = std::path::absolute(path)?;
        let located = match (absolute.parent(), absolute.file_name()) {
            (Some(parent), Some(name)) => parent.canonicalize().ok().map(|p| p.join(name)),
            _ => None,
        };
        Ok(Self::Missing(
            located.unwrap_or_else(|| lexically_normal(&absolute)),
        ))
    }
}

/// `path` with `.` components dropped and `..` applied to the component before it.
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_and_links_of_one_file_are_one_identity() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.bin");
        std::fs::write(&file, b"x").unwrap();
        let id = FileId::of(&file).unwrap();
        let dotted = dir.path().join(".").join("sub").join("..").join("a.bin");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(FileId::of(&dotted).unwrap(), id);
        let link = dir.path().join("hard.bin");
        std::fs::hard_link(&file, &link).unwrap();
        assert_eq!(FileId::of(&link).unwrap(), id);
        let other = dir.path().join("b.bin");
        std::fs::write(&other, b"x").unwrap();
        assert_ne!(FileId::of(&other).unwrap(), id);
    }

    #[test]
    fn a_missing_file_is_its_located_path() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.bin");
        let id = FileId::of(&new).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let respelled = dir.path().join("sub").join("..").join("new.bin");
        assert_eq!(FileId::of(&respelled).unwrap(), id);
        assert_ne!(FileId::of(&dir.path().join("new2.bin")).unwrap(), id);
        let deep = dir.path().join("no").join("such").join("x");
        assert_eq!(
            FileId::of(&deep).unwrap(),
            FileId::of(&dir.path().join("no").join(".").join("such").join("x")).unwrap()
        );
    }
}
