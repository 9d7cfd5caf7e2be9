//! The bytes behind an open index: a read-only memory map of the file, or a heap buffer whose
//! start is 64-byte aligned. This is the only module of the crate that maps files.
//!
//! Both kinds start on a 64-byte boundary (a mapping starts on a page), so the 64-byte aligned
//! sections of a file can be borrowed as `&[f32]` and `&[u64]` without copying.

use std::io::Read;
use std::path::Path;

use memmap2::Mmap;

use crate::SearchError;

/// Alignment of a heap buffer's first byte.
const ALIGN: usize = 64;

/// The immutable bytes of an index file.
pub(crate) enum Storage {
    /// A read-only mapping of the whole file.
    Mapped(Mmap),
    /// A copy on the heap.
    Heap(AlignedBytes),
}

impl Storage {
    /// Maps the file at `path` read-only.
    pub(crate) fn map(path: &Path) -> Result<Self, SearchError> {
        let file = poeem_fs::open_input(path).map_err(|e| SearchError::io(path, e))?;
        // SAFETY: `Mmap::map` is unsafe because another process may change or truncate the file
        // while it is mapped, which would change bytes behind a shared reference or raise
        // SIGBUS. The mapping is read-only and private to this `Storage`, and index files are
        // replaced by renaming a new file over them (`write_index`), which leaves the mapped
        // inode untouched; `Index::open` documents that files must not be modified in place.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|e| SearchError::io(path, e))?;
        Ok(Self::Mapped(map))
    }

    /// Reads the file at `path` into an aligned heap buffer.
    pub(crate) fn read(path: &Path) -> Result<Self, SearchError> {
        let mut file = poeem_fs::open_input(path).map_err(|e| SearchError::io(path, e))?;
        let len = file.metadata().map_err(|e| SearchError::io(path, e))?.len();
        let len = usize::try_from(len).map_err(|_| SearchError::Overflow { what: "file size" })?;
        let mut buf = AlignedBytes::zeroed(len).map_err(|e| SearchError::io(path, e))?;
        file.read_exact(buf.as_mut_slice())
            .map_err(|e| SearchError::io(path, e))?;
        Ok(Self::Heap(buf))
    }

    /// Copies `bytes` into an aligned heap buffer.
    pub(crate) fn copy_from(bytes: &[u8]) -> Result<Self, SearchError> {
        let mut buf = AlignedBytes::zeroed(bytes.len())
            .map_err(|e| SearchError::io("(in-memory copy)", e))?;
        buf.as_mut_slice().copy_from_slice(bytes);
        Ok(Self::Heap(buf))
    }

    /// The file's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Heap(buf) => buf.as_slice(),
        }
    }

    /// Whether the bytes are a memory map.
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self, Storage::Mapped(_))
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_mapped() { "Mapped" } else { "Heap" };
        f.debug_struct("Storage")
            .field("kind", &kind)
            .field("len", &self.bytes().len())
            .finish()
    }
}

/// A heap buffer of `len` bytes starting at a 64-byte aligned address.
///
/// The vector is allocated once with `ALIGN − 1` spare bytes and never grows, so its heap
/// address, and with it the alignment of `start`, survives moves of the struct.
pub(crate) struct AlignedBytes {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBytes {
    /// A zeroed buffer, or an out-of-memory error instead of an abort for absurd lengths.
    fn zeroed(len: usize) -> std::io::Result<Self> {
        let total = len
            .checked_add(ALIGN - 1)
            .ok_or(std::io::ErrorKind::OutOfMemory)?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(total)
            .map_err(|_| std::io::ErrorKind::OutOfMemory)?;
        buf.resize(total, 0);
        let start = buf.as_ptr().addr().wrapping_neg() % ALIGN;
        Ok(Self { buf, start, len })
    }

    fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}
