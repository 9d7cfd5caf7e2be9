//! A bounded reader of faiss's little-endian fields: every array length is checked against the
//! bytes left in the file before anything is allocated.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use crate::FaissError;

/// A `Read + Seek` source with its length and the current position.
pub(crate) struct Input<R> {
    inner: R,
    name: PathBuf,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Input<R> {
    /// Wraps `inner`, measuring its length and starting at its beginning.
    pub(crate) fn new(mut inner: R, name: PathBuf) -> Result<Self, FaissError> {
        let len = inner
            .seek(SeekFrom::End(0))
            .and_then(|len| inner.seek(SeekFrom::Start(0)).map(|_| len))
            .map_err(|e| FaissError::io(&name, e))?;
        Ok(Self {
            inner,
            name,
            pos: 0,
            len,
        })
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    fn need(&self, what: &'static str, needed: u64) -> Result<(), FaissError> {
        if needed <= self.remaining() {
            Ok(())
        } else {
            Err(FaissError::Truncated {
                what,
                offset: self.pos,
                needed,
                available: self.remaining(),
            })
        }
    }

    /// Reads exactly `buf.len()` bytes.
    pub(crate) fn fill(&mut self, what: &'static str, buf: &mut [u8]) -> Result<(), FaissError> {
        self.need(what, buf.len() as u64)?;
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                FaissError::Truncated {
                    what,
                    offset: self.pos,
                    needed: buf.len() as u64,
                    available: 0,
                }
            } else {
                FaissError::io(&self.name, e)
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], FaissError> {
        let mut buf = [0u8; N];
        self.fill(what, &mut buf)?;
        Ok(buf)
    }

    pub(crate) fn fourcc(&mut self, what: &'static str) -> Result<[u8; 4], FaissError> {
        self.array(what)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, FaissError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A C++ `bool`: one byte, 0 or 1.
    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, FaissError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(FaissError::invalid(what, b, "a bool must be 0 or 1")),
        }
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, FaissError> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, FaissError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, FaissError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn f32(&mut self, what: &'static str) -> Result<f32, FaissError> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    /// A `size_t` count of elements of `elem_size` bytes that must follow in the file.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        elem_size: u64,
    ) -> Result<usize, FaissError> {
        let n = self.u64(what)?;
        let bytes = n
            .checked_mul(elem_size)
            .ok_or_else(|| FaissError::Truncated {
                what,
                offset: self.pos,
                needed: u64::MAX,
                available: self.remaining(),
            })?;
        self.need(what, bytes)?;
        usize::try_from(n).map_err(|_| FaissError::invalid(what, n, "does not fit in memory"))
    }

    /// `n` little-endian f32 values, `n` already checked by [`Input::count`] or bounded by
    /// the caller against the bytes left.
    pub(crate) fn f32s(&mut self, what: &'static str, n: usize) -> Result<Vec<f32>, FaissError> {
        self.need(what, (n as u64).saturating_mul(4))?;
        let mut bytes = vec![0u8; n * 4];
        self.fill(what, &mut bytes)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// A faiss `std::vector<float>`: a `size_t` count, then the values.
    pub(crate) fn f32_vec(&mut self, what: &'static str) -> Result<Vec<f32>, FaissError> {
        let n = self.count(what, 4)?;
        self.f32s(what, n)
    }

    /// Moves to byte `pos` of the file (at most its length).
    pub(crate) fn seek_to(&mut self, pos: u64) -> Result<(), FaissError> {
        let pos = pos.min(self.len);
        self.inner
            .seek(SeekFrom::Start(pos))
            .map_err(|e| FaissError::io(&self.name, e))?;
        self.pos = pos;
        Ok(())
    }

    /// Skips `n` bytes that must be in the file.
    pub(crate) fn skip(&mut self, what: &'static str, n: u64) -> Result<(), FaissError> {
        self.need(what, n)?;
        self.inner
            .seek(SeekFrom::Current(n as i64))
            .map_err(|e| FaissError::io(&self.name, e))?;
        self.pos += n;
        Ok(())
    }
}
