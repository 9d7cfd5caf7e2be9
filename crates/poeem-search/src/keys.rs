//! Item keys: the original ids of an index's items (any UTF-8 strings: titles, SKUs, ids with
//! spaces or quotes), stored in the optional `item_keys` section (`docs/index-format.md`).
//!
//! Key `i` belongs to the item whose external id is `i`: an index with keys gives its items the
//! ids `0..n_keys` (their row numbers at build time) and the keys translate search results back
//! to the ids the data spelled. Keys are unique, so the translation goes both ways.
//!
//! The section holds `n_keys` (u64), `n_keys + 1` byte offsets (u64, the first 0, the last the
//! length of the text) and the keys' UTF-8 text, concatenated. Opening an index checks only
//! the count and the last offset (O(1)); [`ItemKeysView::get`] checks the one key it reads and
//! [`Index::verify`](crate::Index::verify) checks them all ([`ItemKeysView::verify`]).

use std::collections::HashSet;

use crate::SearchError;
use crate::layout::PADDING_ID;

/// The keys of an index's items, owned: key `i` names the item of id `i`. Held in the
/// section's encoding (8-byte aligned), so that an index's keys are copied without decoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ItemKeys {
    /// The section's bytes, in whole words.
    words: Vec<u64>,
    /// The section's length in bytes.
    len: usize,
}

fn bad(reason: String) -> SearchError {
    SearchError::BadItemKeys { reason }
}

impl ItemKeys {
    /// The keys `keys[0]`, `keys[1]`, … of ids 0, 1, ….
    ///
    /// # Errors
    /// [`SearchError::BadItemKeys`] when a key repeats (results could not be mapped back).
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Result<Self, SearchError> {
        let mut seen = HashSet::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            if !seen.insert(key.as_ref()) {
                return Err(bad(format!(
                    "key {:?} (id {i}) repeats an earlier key",
                    key.as_ref()
                )));
            }
        }
        let text: usize = keys.iter().map(|k| k.as_ref().len()).sum();
        let mut out = Vec::with_capacity(8 * (keys.len() + 2) + text);
        out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
        let mut offset = 0u64;
        out.extend_from_slice(&offset.to_le_bytes());
        for key in keys {
            offset += key.as_ref().len() as u64;
            out.extend_from_slice(&offset.to_le_bytes());
        }
        for key in keys {
            out.extend_from_slice(key.as_ref().as_bytes());
        }
        Ok(Self::from_bytes(&out))
    }

    /// The section bytes `bytes`, unchecked.
    fn from_bytes(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Self {
            words,
            len: bytes.len(),
        }
    }

    /// The section's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    /// The keys, read in place.
    ///
    /// # Errors
    /// [`SearchError::BadItemKeys`] for keys copied from a corrupt file.
    pub fn view(&self) -> Result<ItemKeysView<'_>, SearchError> {
        ItemKeysView::parse(self.bytes())
    }

    /// Checks every key and that every item id in `slot_ids` (padding slots skipped) has one.
    pub(crate) fn check(&self, slot_ids: &[u64]) -> Result<(), SearchError> {
        self.view()?.verify(slot_ids)
    }
}

fn check_ids(n_keys: usize, slot_ids: &[u64]) -> Result<(), SearchError> {
    match slot_ids
        .iter()
        .find(|&&id| id != PADDING_ID && id >= n_keys as u64)
    {
        Some(id) => Err(bad(format!(
            "item id {id} has no key ({n_keys} keys: ids must be below it)"
        ))),
        None => Ok(()),
    }
}

/// The keys of an opened index, borrowed from its file.
#[derive(Debug, Clone, Copy)]
pub struct ItemKeysView<'a> {
    /// `n_keys + 1` offsets into `text`.
    offsets: &'a [u64],
    text: &'a [u8],
}

impl<'a> ItemKeysView<'a> {
    /// Reads the section's count and last offset (O(1)); the section must start 8-byte
    /// aligned (sections are 64-byte aligned in a buffer that is).
    pub(crate) fn parse(section: &'a [u8]) -> Result<Self, SearchError> {
        let count = section
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| bad("the section is shorter than its count".to_owned()))?;
        let offsets_len = count
            .checked_add(1)
            .and_then(|n| n.checked_mul(8))
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= section.len() - 8)
            .ok_or_else(|| bad(format!("{count} keys do not fit in the section")))?;
        let offsets: &[u64] = bytemuck::try_cast_slice(&section[8..8 + offsets_len])
            .map_err(|_| bad("the offsets are not aligned in memory".to_owned()))?;
        let text = &section[8 + offsets_len..];
        if offsets[0] != 0 || offsets[offsets.len() - 1] != text.len() as u64 {
            return Err(bad(format!(
                "the offsets run from {} to {}, the text is {} bytes",
                offsets[0],
                offsets[offsets.len() - 1],
                text.len()
            )));
        }
        Ok(Self { offsets, text })
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of id `id`.
    ///
    /// # Errors
    /// [`SearchError::BadItemKeys`] when `id` has no key, or its offsets or text are corrupt
    /// (which [`Index::verify`](crate::Index::verify) detects up front).
    pub fn get(&self, id: u64) -> Result<&'a str, SearchError> {
        let i = usize::try_from(id)
            .ok()
            .filter(|&i| i < self.len())
            .ok_or_else(|| bad(format!("id {id} has no key ({} keys)", self.len())))?;
        let (start, end) = (self.offsets[i], self.offsets[i + 1]);
        let bytes = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| self.text.get(s..e))
            .ok_or_else(|| bad(format!("key {i} spans bytes {start}..{end}, out of order")))?;
        std::str::from_utf8(bytes).map_err(|e| bad(format!("key {i} is not UTF-8: {e}")))
    }

    /// Every key, in id order.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn to_vec(&self) -> Result<Vec<String>, SearchError> {
        (0..self.len() as u64)
            .map(|id| self.get(id).map(str::to_owned))
            .collect()
    }

    /// An owned copy of the keys as stored (unchecked beyond what opening checked).
    pub fn copy(&self) -> ItemKeys {
        let len = 8 + 8 * self.offsets.len() + self.text.len();
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(&(self.len() as u64).to_le_bytes());
        bytes.extend_from_slice(bytemuck::cast_slice(self.offsets));
        bytes.extend_from_slice(self.text);
        ItemKeys::from_bytes(&bytes)
    }

    /// Checks every key (ordered offsets, UTF-8, no repeats) and that every item id in
    /// `slot_ids` has one. O(size of the keys and ids).
    pub(crate) fn verify(&self, slot_ids: &[u64]) -> Result<(), SearchError> {
        let mut seen = HashSet::with_capacity(self.len());
        for id in 0..self.len() as u64 {
            let key = self.get(id)?;
            if !seen.insert(key) {
                return Err(bad(format!("key {key:?} (id {id}) repeats an earlier key")));
            }
        }
        check_ids(self.len(), slot_ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_section() {
        let strings = ["Toy Story (1995)", "", "\"quoted\", comma", "Amélie — 天"];
        let keys = ItemKeys::new(&strings).unwrap();
        let view = keys.view().unwrap();
        assert_eq!(view.len(), 4);
        assert_eq!(view.get(3).unwrap(), "Amélie — 天");
        assert_eq!(view.to_vec().unwrap(), strings);
        assert_eq!(view.copy(), keys);
        assert!(view.get(4).is_err());
        keys.check(&[0, 3, PADDING_ID]).unwrap();
        assert!(keys.check(&[4]).is_err());
        assert!(ItemKeys::new(&["a", "a"]).is_err());
    }

    #[test]
    fn corrupt_sections_are_errors() {
        let bytes = ItemKeys::new(&["ab", "c"]).unwrap().bytes().to_vec();
        for cut in 0..bytes.len() {
            assert!(ItemKeys::from_bytes(&bytes[..cut]).view().is_err());
        }
        // Offsets out of order: key 0 ends after key 1.
        let mut swapped = bytes.clone();
        swapped[16] = 5;
        let keys = ItemKeys::from_bytes(&swapped);
        assert!(keys.view().unwrap().get(1).is_err() && keys.check(&[]).is_err());
        // Invalid UTF-8.
        let mut bad_text = bytes.clone();
        let last = bad_text.len() - 1;
        bad_text[last] = 0xff;
        let keys = ItemKeys::from_bytes(&bad_text);
        assert!(keys.view().unwrap().get(1).is_err() && keys.check(&[]).is_err());
    }
}
