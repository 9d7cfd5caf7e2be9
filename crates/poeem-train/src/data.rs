//! Interaction data: loading, vocabularies, feature fields and the train/test split.
//!
//! A [`Dataset`] is built from an interactions table (CSV, TSV, a RecBole `.inter` file, see
//! [`TextFormat`], or a Parquet file, recognised by its content) whose query and item columns, and an optional time column, are chosen by
//! name; optional per-query and per-item feature files ([`FeatureSource`]) add token fields.
//!
//! - Ids are strings, numbered densely in first-seen order ([`Vocab`]): queries and items in
//!   the order of the interactions file, then catalogue items that only the item feature file
//!   lists (they are searchable even without interactions). Queries that only the query feature
//!   file lists are dropped: they can be neither trained nor evaluated.
//! - Field 0 of each side is the entity's own id (one token per entity).
//! - The split ([`SplitConfig`]) is leave-last-out by timestamp per query by default.
//!
//! Every malformed input is a [`TrainError`] naming the file and line: an empty file or one
//! with only a header, a missing column (with the available ones), a ragged or badly quoted
//! record, an empty id, a timestamp or numeric feature that is not a finite number.

mod features;
mod parquet;
mod split;
mod table;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use features::{FeatureSource, FieldKind, FieldSpec, Separator, fnv1a_64, hash_bucket};
pub use split::{Pairs, SplitConfig, split_pairs};
pub use table::{ColumnType, Delimiter, TextFormat};

use crate::TrainError;
use table::{Record, TableReader};

/// Token strings ↔ dense indices, numbered in first-seen order (deterministic).
///
/// Serialised as its list of tokens; the index is rebuilt on load.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, u32>,
}

impl Vocab {
    /// An empty vocabulary.
    pub fn new() -> Self {
        Self::default()
    }

    /// The vocabulary `"0"`, `"1"`, …, `n − 1` (token `i` has index `i`).
    ///
    /// # Errors
    /// [`TrainError::OutOfRange`] when `n` exceeds `u32::MAX`.
    pub fn numbered(n: usize) -> Result<Self, TrainError> {
        Self::from_tokens((0..n).map(|i| i.to_string()).collect())
    }

    /// The vocabulary whose token `i` is `tokens[i]`.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] when a token repeats, [`TrainError::OutOfRange`] for more
    /// than `u32::MAX` tokens.
    pub fn from_tokens(tokens: Vec<String>) -> Result<Self, TrainError> {
        let mut vocab = Self::new();
        for token in tokens {
            let n = vocab.len();
            if vocab.insert(&token)? as usize != n {
                return Err(TrainError::InvalidConfig {
                    name: "vocabulary",
                    value: token,
                    reason: "repeats an earlier token",
                });
            }
        }
        Ok(vocab)
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there is no token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The index of `token`, if known.
    pub fn get(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    /// The token of index `i`.
    ///
    /// # Panics
    /// When `i` is not below [`len`](Self::len).
    #[track_caller]
    pub fn token(&self, i: u32) -> &str {
        &self.tokens[i as usize]
    }

    /// All tokens, in index order.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The index of `token`, appending it when new.
    ///
    /// # Errors
    /// [`TrainError::OutOfRange`] when the vocabulary already holds `u32::MAX` tokens.
    pub fn insert(&mut self, token: &str) -> Result<u32, TrainError> {
        if let Some(i) = self.get(token) {
            return Ok(i);
        }
        let i = u32::try_from(self.tokens.len())
            .ok()
            .filter(|&i| i < u32::MAX)
            .ok_or(TrainError::OutOfRange {
                what: "vocabulary size",
                index: self.tokens.len() as u64,
                bound: u64::from(u32::MAX),
            })?;
        self.tokens.push(token.to_owned());
        self.index.insert(token.to_owned(), i);
        Ok(i)
    }
}

impl TryFrom<Vec<String>> for Vocab {
    type Error = TrainError;

    fn try_from(tokens: Vec<String>) -> Result<Self, TrainError> {
        Self::from_tokens(tokens)
    }
}

impl From<Vocab> for Vec<String> {
    fn from(vocab: Vocab) -> Self {
        vocab.tokens
    }
}

/// One feature field of an entity table, in CSR form: entity `e` has tokens
/// `tokens[offsets[e]..offsets[e + 1]]` (token indices below `n_tokens`). An entity without
/// tokens gets a zero vector from the bag (the mean of nothing is 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// The column the field comes from (the id column's name for field 0).
    pub name: String,
    /// The size of the field's token space.
    pub n_tokens: usize,
    /// `n_entities + 1` offsets into `tokens`.
    pub offsets: Vec<u32>,
    /// The token indices of all entities, concatenated.
    pub tokens: Vec<u32>,
}

impl Field {
    /// The identity field of `n` entities: entity `e` has the one token `e`.
    pub fn ids(name: impl Into<String>, n: usize) -> Self {
        Self {
            name: name.into(),
            n_tokens: n,
            offsets: (0..=n as u32).collect(),
            tokens: (0..n as u32).collect(),
        }
    }

    /// The number of entities.
    pub fn n_entities(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The tokens of entity `e`.
    ///
    /// # Panics
    /// When `e` is not below [`n_entities`](Self::n_entities).
    #[track_caller]
    pub fn tokens_of(&self, e: usize) -> &[u32] {
        &self.tokens[self.offsets[e] as usize..self.offsets[e + 1] as usize]
    }
}

/// All fields of one side (queries or items). Field 0 is the entity's own id (one token per
/// entity: token = entity index, `n_tokens = n_entities`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityFeatures {
    /// The number of entities.
    pub n_entities: usize,
    /// The fields, the id field first.
    pub fields: Vec<Field>,
}

impl EntityFeatures {
    /// `n` entities with the id field only, named `name`.
    pub fn ids_only(name: impl Into<String>, n: usize) -> Self {
        Self {
            n_entities: n,
            fields: vec![Field::ids(name, n)],
        }
    }
}

/// The interactions table and which of its columns to use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionsSource {
    /// The file.
    pub path: PathBuf,
    /// How it is split into cells.
    pub format: TextFormat,
    /// The query (user) id column.
    pub query_column: String,
    /// The item id column.
    pub item_column: String,
    /// The timestamp column (numbers), used by the leave-last-out split.
    pub time_column: Option<String>,
}

impl InteractionsSource {
    /// Columns `query_column` and `item_column` of `path`, no time column, delimiter detected.
    pub fn new(
        path: impl Into<PathBuf>,
        query_column: impl Into<String>,
        item_column: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            format: TextFormat::default(),
            query_column: query_column.into(),
            item_column: item_column.into(),
            time_column: None,
        }
    }

    /// The same source with time column `column`.
    pub fn with_time_column(mut self, column: impl Into<String>) -> Self {
        self.time_column = Some(column.into());
        self
    }
}

/// Everything [`Dataset::load`] reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// The interactions.
    pub interactions: InteractionsSource,
    /// Per-query (user) features.
    pub query_features: Option<FeatureSource>,
    /// Per-item features.
    pub item_features: Option<FeatureSource>,
    /// The train/test split.
    pub split: SplitConfig,
}

impl DataConfig {
    /// The interactions alone, split leave-last-out.
    pub fn new(interactions: InteractionsSource) -> Self {
        Self {
            interactions,
            query_features: None,
            item_features: None,
            split: SplitConfig::LeaveLastOut,
        }
    }

    /// The RecBole atomic files `dir/name.inter` (columns `user_id`, `item_id`, `timestamp`),
    /// and `dir/name.user` / `dir/name.item` when they exist (all columns, typed by their
    /// headers), split leave-last-out.
    pub fn recbole(dir: impl AsRef<Path>, name: &str) -> Self {
        let dir = dir.as_ref();
        let file = |ext: &str| dir.join(format!("{name}.{ext}"));
        let interactions = InteractionsSource::new(file("inter"), "user_id", "item_id")
            .with_time_column("timestamp");
        let optional = |ext: &str, id: &str| {
            let path = file(ext);
            path.is_file().then(|| FeatureSource::new(path, id))
        };
        Self {
            interactions,
            query_features: optional("user", "user_id"),
            item_features: optional("item", "item_id"),
            split: SplitConfig::LeaveLastOut,
        }
    }
}

/// Interactions split for training and evaluation, with both sides' vocabularies and feature
/// tables. Indices are dense ([`Vocab`] order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Query (user) ids.
    pub queries: Vocab,
    /// Item ids.
    pub items: Vocab,
    /// Query fields, the id field first.
    pub query_features: EntityFeatures,
    /// Item fields, the id field first.
    pub item_features: EntityFeatures,
    /// Training pairs (query, item), in file order (the trainer shuffles).
    pub train: Vec<(u32, u32)>,
    /// Held-out pairs, in file order.
    pub test: Vec<(u32, u32)>,
    /// How often each item occurs in `train`.
    pub item_counts: Vec<u64>,
}

impl Dataset {
    /// Reads the files of `config`.
    ///
    /// # Errors
    /// [`TrainError::Io`], [`TrainError::EmptyData`], [`TrainError::MissingColumn`],
    /// [`TrainError::Malformed`], [`TrainError::BadValue`] for unreadable or malformed files,
    /// [`TrainError::InvalidConfig`] for bad settings.
    pub fn load(config: &DataConfig) -> Result<Self, TrainError> {
        let source = &config.interactions;
        let (mut queries, mut items) = (Vocab::new(), Vocab::new());
        let (pairs, times) = read_interactions(source, &mut queries, &mut items)?;
        let (train, test) = split_pairs(&pairs, times.as_deref(), queries.len(), config.split)?;
        drop(pairs);
        let mut query_fields = vec![];
        if let Some(features) = &config.query_features {
            query_fields = features::read_features(features, &mut queries, false)?;
        }
        let mut item_fields = vec![];
        if let Some(features) = &config.item_features {
            item_fields = features::read_features(features, &mut items, true)?;
        }
        let side = |name: &str, n: usize, fields: Vec<Field>| {
            let mut side = EntityFeatures::ids_only(name, n);
            side.fields.extend(fields);
            side
        };
        let query_features = side(&source.query_column, queries.len(), query_fields);
        let item_features = side(&source.item_column, items.len(), item_fields);
        let item_counts = count_items(&train, items.len());
        Ok(Self {
            queries,
            items,
            query_features,
            item_features,
            train,
            test,
            item_counts,
        })
    }

    /// A dataset of ids only: queries `0..n_queries` and items `0..n_items` (tokens `"0"`,
    /// `"1"`, …), with the given pairs.
    ///
    /// # Errors
    /// [`TrainError::OutOfRange`] for a pair whose query or item index is out of range.
    pub fn from_pairs(
        n_queries: usize,
        n_items: usize,
        train: Vec<(u32, u32)>,
        test: Vec<(u32, u32)>,
    ) -> Result<Self, TrainError> {
        check_pairs(
            train.iter().chain(&test),
            n_queries,
            n_items,
            ["query", "item"],
        )?;
        let item_counts = count_items(&train, n_items);
        Ok(Self {
            queries: Vocab::numbered(n_queries)?,
            items: Vocab::numbered(n_items)?,
            query_features: EntityFeatures::ids_only("query_id", n_queries),
            item_features: EntityFeatures::ids_only("item_id", n_items),
            train,
            test,
            item_counts,
        })
    }

    /// The number of queries.
    pub fn n_queries(&self) -> usize {
        self.queries.len()
    }

    /// The number of items.
    pub fn n_items(&self) -> usize {
        self.items.len()
    }
}

/// Checks that every pair's query is below `n_queries` and its item below `n_items`; `what`
/// names the two sides in the error.
pub(crate) fn check_pairs<'a>(
    pairs: impl IntoIterator<Item = &'a (u32, u32)>,
    n_queries: usize,
    n_items: usize,
    what: [&'static str; 2],
) -> Result<(), TrainError> {
    for &(q, i) in pairs {
        for (index, bound, what) in [(q, n_queries, what[0]), (i, n_items, what[1])] {
            if index as usize >= bound {
                return Err(TrainError::OutOfRange {
                    what,
                    index: u64::from(index),
                    bound: bound as u64,
                });
            }
        }
    }
    Ok(())
}

/// Occurrences of each of `n_items` items in `pairs`.
fn count_items(pairs: &[(u32, u32)], n_items: usize) -> Vec<u64> {
    let mut counts = vec![0u64; n_items];
    for &(_, i) in pairs {
        counts[i as usize] += 1;
    }
    counts
}

/// Reads the pairs (and timestamps) of `source`, numbering ids into the vocabularies.
fn read_interactions(
    source: &InteractionsSource,
    queries: &mut Vocab,
    items: &mut Vocab,
) -> Result<(Pairs, Option<Vec<f64>>), TrainError> {
    read_pairs_with(source, |side, id| {
        let vocab = if side == 0 {
            &mut *queries
        } else {
            &mut *items
        };
        vocab.insert(id).map(Some)
    })
}

/// Reads the (query, item) pairs of `source` (its time column is ignored), every id of which
/// must be in `queries` or `items`: a held-out file for a trained model. Pairs keep the file's
/// order.
///
/// # Errors
/// As [`Dataset::load`] for unreadable or malformed files (a missing column lists the file's
/// columns), and [`TrainError::BadValue`] naming the line and column of the first id the
/// vocabularies do not hold.
pub fn read_known_pairs(
    source: &InteractionsSource,
    queries: &Vocab,
    items: &Vocab,
) -> Result<Pairs, TrainError> {
    let source = InteractionsSource {
        time_column: None,
        ..source.clone()
    };
    let (pairs, _) = read_pairs_with(&source, |side, id| {
        Ok(if side == 0 {
            queries.get(id)
        } else {
            items.get(id)
        })
    })?;
    Ok(pairs)
}

/// Reads the pairs (and timestamps) of `source`; `index(side, id)` numbers a query (side 0) or
/// item (side 1) id, `None` for an id it does not accept.
fn read_pairs_with(
    source: &InteractionsSource,
    mut index: impl FnMut(usize, &str) -> Result<Option<u32>, TrainError>,
) -> Result<(Pairs, Option<Vec<f64>>), TrainError> {
    let mut reader = TableReader::open(&source.path, source.format)?;
    let q_col = reader.column(&source.query_column)?;
    let i_col = reader.column(&source.item_column)?;
    let t_col = match &source.time_column {
        Some(name) => Some(reader.column(name)?),
        None => None,
    };
    let mut pairs = Vec::new();
    let mut times = t_col.map(|_| Vec::new());
    let mut record = Record::default();
    while reader.next_record(&mut record)? {
        let mut id = |side: usize, col: usize, what: &str| {
            let cell = record.get(col);
            if cell.is_empty() {
                return Err(reader.malformed(record.line, format!("empty {what}")));
            }
            index(side, cell)?.ok_or_else(|| {
                reader.bad_value(&record, col, "is not an id of the model's training data")
            })
        };
        let q = id(0, q_col, &source.query_column)?;
        let i = id(1, i_col, &source.item_column)?;
        pairs.push((q, i));
        if let (Some(col), Some(times)) = (t_col, times.as_mut()) {
            match record.get(col).parse::<f64>() {
                Ok(t) if t.is_finite() => times.push(t),
                _ => return Err(reader.bad_value(&record, col, "is not a finite number")),
            }
        }
    }
    Ok((pairs, times))
}
