//! Entity ids between a model (string tokens, dense indices) and an index (`u64` ids), and token
//! list files.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::PipelineError;
use crate::search::{Index, ItemKeysView, PADDING_ID};
use crate::train::Vocab;

/// Which `u64` ids an index gives a model's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemIds {
    /// The item's token read as a number: used when every token is a canonical decimal integer
    /// (digits only, no leading zero, below `u64::MAX`), so search results are the data's own ids.
    Tokens,
    /// The item's dense index (its position in the model's item vocabulary); the index carries
    /// the tokens as its item keys ([`crate::search::ItemKeys`]).
    Dense,
    /// Whatever integers the index gives its items, translated through the index's item keys,
    /// which are the model's item tokens (a `poeem build` over `poeem embed` output with its id
    /// list).
    Keys,
}

impl ItemIds {
    /// [`Tokens`](Self::Tokens) when every token of `items` is a canonical integer,
    /// [`Dense`](Self::Dense) otherwise.
    pub fn for_vocab(items: &Vocab) -> Self {
        if items.tokens().iter().all(|t| canonical_id(t).is_some()) {
            Self::Tokens
        } else {
            Self::Dense
        }
    }

    /// The id of every item, in index order.
    ///
    /// # Errors
    /// [`PipelineError::Mismatch`] for [`Tokens`](Self::Tokens) when a token is not a
    /// canonical integer.
    pub fn ids(self, items: &Vocab) -> Result<Vec<u64>, PipelineError> {
        match self {
            Self::Dense | Self::Keys => Ok((0..items.len() as u64).collect()),
            Self::Tokens => items
                .tokens()
                .iter()
                .map(|t| {
                    canonical_id(t).ok_or_else(|| PipelineError::Mismatch {
                        reason: format!("item id {t:?} is not an integer id"),
                    })
                })
                .collect(),
        }
    }

    /// The name stored in index metadata: `"tokens"` or `"dense"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tokens => "tokens",
            Self::Dense => "dense",
            Self::Keys => "keys",
        }
    }
}

impl std::str::FromStr for ItemIds {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tokens" => Ok(Self::Tokens),
            "dense" => Ok(Self::Dense),
            "keys" => Ok(Self::Keys),
            _ => Err(format!("expected tokens, dense or keys, got {s:?}")),
        }
    }
}

/// `token` as an id when it is the canonical decimal form of a `u64` other than the padding id.
fn canonical_id(token: &str) -> Option<u64> {
    let id: u64 = token.parse().ok()?;
    (id != PADDING_ID && id.to_string() == token).then_some(id)
}

/// Translates an index's result ids back to a model's item indices, and item indices to the
/// index's ids (to leave items out of a search).
#[derive(Debug, Clone)]
pub struct IdMap {
    kind: ItemIds,
    n_items: usize,
    /// [`ItemIds::Tokens`]: id → item index.
    tokens: HashMap<u64, u32>,
    /// [`ItemIds::Keys`]: the item index of each id (`u32::MAX`: a key the model lacks).
    keyed: Vec<u32>,
    /// The index id of each item (`PADDING_ID` for an item the ids cannot name).
    item_ids: Vec<u64>,
}

impl IdMap {
    /// The map for an index whose ids are `kind` over the items `items` (for
    /// [`ItemIds::Keys`] use [`from_keys`](Self::from_keys)).
    pub fn new(kind: ItemIds, items: &Vocab) -> Self {
        let item_ids: Vec<u64> = match kind {
            ItemIds::Dense | ItemIds::Keys => (0..items.len() as u64).collect(),
            ItemIds::Tokens => items
                .tokens()
                .iter()
                .map(|t| canonical_id(t).unwrap_or(PADDING_ID))
                .collect(),
        };
        let tokens = match kind {
            ItemIds::Dense | ItemIds::Keys => HashMap::new(),
            ItemIds::Tokens => item_ids
                .iter()
                .enumerate()
                .filter(|&(_, &id)| id != PADDING_ID)
                .map(|(i, &id)| (id, i as u32))
                .collect(),
        };
        Self {
            kind,
            n_items: items.len(),
            tokens,
            keyed: Vec::new(),
            item_ids,
        }
    }

    /// The map for an index that carries item keys: id `i` is the item whose token is key `i`.
    ///
    /// # Errors
    /// [`PipelineError::Search`] when a key cannot be read (a corrupt file).
    pub fn from_keys(keys: &ItemKeysView<'_>, items: &Vocab) -> Result<Self, PipelineError> {
        let mut keyed = Vec::with_capacity(keys.len());
        let mut item_ids = vec![PADDING_ID; items.len()];
        for id in 0..keys.len() as u64 {
            let item = items.get(keys.get(id)?).unwrap_or(u32::MAX);
            if item != u32::MAX {
                item_ids[item as usize] = id;
            }
            keyed.push(item);
        }
        Ok(Self {
            kind: ItemIds::Keys,
            n_items: items.len(),
            tokens: HashMap::new(),
            keyed,
            item_ids,
        })
    }

    /// The map for `index` over `items`: through its item keys when it has them, else as
    /// `kind`, else as its metadata records ([`exported_item_ids`](super::exported_item_ids)),
    /// else dense item indices.
    ///
    /// # Errors
    /// As [`from_keys`](Self::from_keys).
    pub fn for_index(
        index: &Index,
        items: &Vocab,
        kind: Option<ItemIds>,
    ) -> Result<Self, PipelineError> {
        match (index.item_keys(), kind) {
            (Some(keys), None | Some(ItemIds::Keys)) => Self::from_keys(&keys, items),
            (_, Some(kind)) if kind != ItemIds::Keys => Ok(Self::new(kind, items)),
            _ => {
                let kind = super::exported_item_ids(index.metadata()).unwrap_or(ItemIds::Dense);
                Ok(Self::new(kind, items))
            }
        }
    }

    /// Which ids the map reads.
    pub fn kind(&self) -> ItemIds {
        self.kind
    }

    /// The index id of item `item`, `None` when the index's ids cannot name it.
    pub fn id_of(&self, item: u32) -> Option<u64> {
        self.item_ids
            .get(item as usize)
            .copied()
            .filter(|&id| id != PADDING_ID)
    }

    /// The item index of result id `id`; `u32::MAX` for an empty result slot (a negative id).
    ///
    /// # Errors
    /// [`PipelineError::Mismatch`] when no item of the model has that id (the index belongs to
    /// another model, or holds ids of another kind).
    pub fn index_of(&self, id: i64) -> Result<u32, PipelineError> {
        let Ok(id) = u64::try_from(id) else {
            return Ok(u32::MAX);
        };
        let found = match self.kind {
            ItemIds::Dense => (id < self.n_items as u64).then_some(id as u32),
            ItemIds::Tokens => self.tokens.get(&id).copied(),
            ItemIds::Keys => usize::try_from(id)
                .ok()
                .and_then(|i| self.keyed.get(i))
                .copied()
                .filter(|&i| i != u32::MAX),
        };
        found.ok_or_else(|| PipelineError::Mismatch {
            reason: format!(
                "the index returned id {id}, which is no item of the model ({} ids over {} items)",
                self.kind.name(),
                self.n_items
            ),
        })
    }
}

/// Writes `tokens` to `path`, one per line, atomically.
///
/// # Errors
/// [`PipelineError::Mismatch`] when a token holds a line break (the list could not be read
/// back), [`PipelineError::Io`] when the file cannot be written.
pub fn write_token_list(path: &Path, tokens: &[String]) -> Result<(), PipelineError> {
    if let Some(bad) = tokens.iter().find(|t| t.contains(['\n', '\r'])) {
        return Err(PipelineError::Mismatch {
            reason: format!("id {bad:?} holds a line break and cannot be listed one per line"),
        });
    }
    poeem_fs::write_atomically(path, |w| {
        for token in tokens {
            w.write_all(token.as_bytes())?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(|e| PipelineError::io(e.path, e.source))
}

/// Reads ids from `path`, one per line (surrounding whitespace trimmed, blank lines skipped),
/// and returns their indices in `vocab`, in file order.
///
/// # Errors
/// [`PipelineError::Io`] when the file cannot be read, [`PipelineError::BadFile`] when it is
/// not UTF-8 or lists no id, [`PipelineError::UnknownId`] naming the first id `vocab` does not
/// hold and its line.
pub fn read_token_indices(
    path: &Path,
    vocab: &Vocab,
    side: &'static str,
) -> Result<Vec<u32>, PipelineError> {
    let bytes = poeem_fs::read_input(path).map_err(|e| PipelineError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| PipelineError::BadFile {
        path: path.to_path_buf(),
        reason: format!("not UTF-8 text: {e}"),
    })?;
    let mut indices = Vec::new();
    for (line, token) in text.lines().enumerate() {
        let token = token.trim();
        if token.is_empty() {
            continue;
        }
        let index = vocab.get(token).ok_or_else(|| PipelineError::UnknownId {
            side,
            token: token.to_owned(),
            location: Some(format!("{}:{}", path.display(), line + 1)),
        })?;
        indices.push(index);
    }
    if indices.is_empty() {
        return Err(PipelineError::BadFile {
            path: path.to_path_buf(),
            reason: "lists no id".to_owned(),
        });
    }
    Ok(indices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[&str]) -> Vocab {
        Vocab::from_tokens(tokens.iter().map(|t| t.to_string()).collect()).unwrap()
    }

    #[test]
    fn integer_tokens_become_ids_and_others_dense_indices() {
        let numbers = vocab(&["7", "0", "18446744073709551614"]);
        assert_eq!(ItemIds::for_vocab(&numbers), ItemIds::Tokens);
        assert_eq!(ItemIds::Tokens.ids(&numbers).unwrap(), [7, 0, u64::MAX - 1]);
        for odd in [
            &["1", "01"][..],
            &["1", "x"],
            &["-3"],
            &["18446744073709551615"],
        ] {
            let v = vocab(odd);
            assert_eq!(ItemIds::for_vocab(&v), ItemIds::Dense, "{odd:?}");
            assert_eq!(
                ItemIds::Dense.ids(&v).unwrap(),
                (0..odd.len() as u64).collect::<Vec<_>>()
            );
        }
        assert!(ItemIds::Tokens.ids(&vocab(&["a"])).is_err());
    }

    #[test]
    fn result_ids_map_back_to_item_indices() {
        let items = vocab(&["30", "10", "20"]);
        let tokens = IdMap::new(ItemIds::Tokens, &items);
        assert_eq!(tokens.index_of(20).unwrap(), 2);
        assert_eq!(tokens.index_of(-1).unwrap(), u32::MAX);
        assert!(tokens.index_of(2).unwrap_err().to_string().contains("id 2"));
        assert_eq!(tokens.id_of(0), Some(30));
        let dense = IdMap::new(ItemIds::Dense, &items);
        assert_eq!(dense.index_of(2).unwrap(), 2);
        assert_eq!(dense.id_of(2), Some(2));
        assert!(dense.index_of(3).is_err());
        let keys = crate::search::ItemKeys::new(&["20", "nope", "30"]).unwrap();
        let keyed = IdMap::from_keys(&keys.view().unwrap(), &items).unwrap();
        assert_eq!(keyed.index_of(0).unwrap(), 2);
        assert_eq!(keyed.index_of(2).unwrap(), 0);
        assert!(keyed.index_of(1).is_err() && keyed.index_of(3).is_err());
        assert_eq!((keyed.id_of(0), keyed.id_of(1)), (Some(2), None));
    }

    #[test]
    fn token_lists_round_trip_and_unknown_ids_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let items = vocab(&["a b", "c", "d"]);
        let path = dir.path().join("ids.txt");
        write_token_list(&path, items.tokens()).unwrap();
        assert_eq!(
            read_token_indices(&path, &items, "item").unwrap(),
            [0, 1, 2]
        );
        std::fs::write(&path, "d\n\n  c \nzz\n").unwrap();
        let err = read_token_indices(&path, &items, "item")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown item id \"zz\"") && err.contains(":4"),
            "{err}"
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token_indices(&path, &items, "item").is_err());
        let bad = ["x\ny".to_owned()];
        assert!(write_token_list(&path, &bad).is_err());
    }
}
