//! Per-entity feature files (RecBole `.user` / `.item` or plain CSV) turned into token fields.
//!
//! Each chosen column becomes one [`Field`] with its own token space:
//!
//! - **categorical**: the cell is one token; tokens are numbered in first-seen order;
//! - **multi-valued**: the cell is split by a [`Separator`] into tokens (empty pieces dropped);
//! - **numeric**: the cell is a number, mapped to one of at most `buckets` quantile buckets whose
//!   edges are computed over all values of the column in the file (the `i`-th edge is the value of
//!   rank `⌊i·n/buckets⌋`; repeated edges and an edge at the minimum are dropped, so every bucket
//!   holds data). A numeric sequence bucketises each of its values with the column's edges;
//! - **hashed**: each token goes to bucket `FNV-1a-64(token) mod buckets`, for open-ended columns
//!   (titles, zip codes) whose vocabulary should not grow with the data.
//!
//! An empty cell gives the entity no token in that field, and so does an entity that is absent
//! from the file. A numeric cell that is not a finite number (`NaN`, `inf`, `abc`) is an error
//! naming the file, line and column: a silent "missing" bucket would hide broken exports.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::table::{ColumnType, Record, TableReader, TextFormat};
use super::{Field, Vocab};
use crate::TrainError;

/// How a multi-valued cell is split into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Separator {
    /// Runs of whitespace (RecBole's `token_seq` and `float_seq`; ml-100k's genres).
    Whitespace,
    /// One character, e.g. `|` for the original MovieLens genre lists.
    Char(char),
}

/// How a feature column is turned into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FieldKind {
    /// From the column's RecBole type: `token` → [`Categorical`](Self::Categorical),
    /// `token_seq` → [`MultiValued`](Self::MultiValued) on whitespace, `float` →
    /// [`Numeric`](Self::Numeric), `float_seq` → [`NumericSeq`](Self::NumericSeq) on whitespace,
    /// with [`FeatureSource::numeric_buckets`] buckets; an untyped (plain CSV) column is
    /// categorical.
    Auto,
    /// The cell is one token.
    Categorical,
    /// The cell holds several tokens.
    MultiValued {
        /// What separates them.
        separator: Separator,
    },
    /// The cell is one number, bucketised by quantiles.
    Numeric {
        /// The most buckets (at least 1).
        buckets: usize,
    },
    /// The cell holds several numbers, each bucketised by the column's quantiles.
    NumericSeq {
        /// The most buckets (at least 1).
        buckets: usize,
        /// What separates the numbers.
        separator: Separator,
    },
    /// Tokens hashed into a fixed number of buckets.
    Hashed {
        /// The number of buckets (at least 1).
        buckets: u32,
        /// `None`: the cell is one token; otherwise what separates its tokens.
        separator: Option<Separator>,
    },
}

/// One column to use, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// The column's name (before `:type` in a RecBole header).
    pub column: String,
    /// How its cells become tokens.
    pub kind: FieldKind,
}

impl FieldSpec {
    /// Column `column` with its kind chosen from its declared type.
    pub fn auto(column: impl Into<String>) -> Self {
        Self::new(column, FieldKind::Auto)
    }

    /// Column `column` read as `kind`.
    pub fn new(column: impl Into<String>, kind: FieldKind) -> Self {
        Self {
            column: column.into(),
            kind,
        }
    }
}

/// A per-entity feature file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSource {
    /// The file.
    pub path: PathBuf,
    /// How it is split into cells.
    pub format: TextFormat,
    /// The column holding the entity id (as it appears in the interactions).
    pub id_column: String,
    /// The columns to use; `None` uses every column except the id, each with
    /// [`FieldKind::Auto`].
    pub fields: Option<Vec<FieldSpec>>,
    /// Buckets of numeric columns read with [`FieldKind::Auto`].
    pub numeric_buckets: usize,
}

impl FeatureSource {
    /// Buckets of automatically typed numeric columns unless set otherwise.
    pub const DEFAULT_NUMERIC_BUCKETS: usize = 10;

    /// All columns of `path` except `id_column`, typed automatically, delimiter detected.
    pub fn new(path: impl Into<PathBuf>, id_column: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            format: TextFormat::default(),
            id_column: id_column.into(),
            fields: None,
            numeric_buckets: Self::DEFAULT_NUMERIC_BUCKETS,
        }
    }
}

/// The 64-bit FNV-1a hash of `bytes`: stable across runs, platforms and versions (unlike
/// `std`'s randomly keyed hasher), so hashed feature buckets can be recomputed at serving time.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The bucket of `token` in a hashed field of `buckets` buckets (`buckets` ≥ 1).
///
/// # Panics
/// When `buckets` is 0.
pub fn hash_bucket(token: &str, buckets: u32) -> u32 {
    assert!(buckets > 0, "a hashed field needs at least one bucket");
    (fnv1a_64(token.as_bytes()) % u64::from(buckets)) as u32
}

/// Quantile edges of `values` for at most `buckets` buckets (see the module docs). `values` is
/// sorted in place.
pub(crate) fn quantile_edges(values: &mut [f64], buckets: usize) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let mut edges: Vec<f64> = Vec::new();
    if n == 0 {
        return edges;
    }
    for i in 1..buckets {
        let e = values[(i * n / buckets).min(n - 1)];
        if e > values[0] && edges.last().is_none_or(|&last| e > last) {
            edges.push(e);
        }
    }
    edges
}

/// The bucket of `value` given sorted `edges`: the number of edges at or below it.
pub(crate) fn bucket_of(edges: &[f64], value: f64) -> u32 {
    edges.partition_point(|&e| e <= value) as u32
}

/// How one field maps cells to tokens while the file is read.
#[derive(Debug)]
enum Encoding {
    Vocab(Vocab),
    Hash(u32),
    Quantile { buckets: usize, values: Vec<f64> },
}

#[derive(Debug)]
struct FieldBuilder {
    name: String,
    col: usize,
    split: Option<Separator>,
    encoding: Encoding,
    /// End of each row's tokens (or values) in `tokens` (or the quantile values).
    row_ends: Vec<usize>,
    tokens: Vec<u32>,
}

impl FieldBuilder {
    fn new(
        reader: &TableReader,
        spec: &FieldSpec,
        default_buckets: usize,
    ) -> Result<Self, TrainError> {
        let col = reader.column(&spec.column)?;
        let kind = match spec.kind {
            FieldKind::Auto => match reader.columns()[col].ty {
                Some(ColumnType::TokenSeq) => FieldKind::MultiValued {
                    separator: Separator::Whitespace,
                },
                Some(ColumnType::Float) => FieldKind::Numeric {
                    buckets: default_buckets,
                },
                Some(ColumnType::FloatSeq) => FieldKind::NumericSeq {
                    buckets: default_buckets,
                    separator: Separator::Whitespace,
                },
                Some(ColumnType::Token) | None => FieldKind::Categorical,
            },
            kind => kind,
        };
        let check = |buckets: u64| {
            if buckets == 0 {
                Err(TrainError::InvalidConfig {
                    name: "buckets",
                    value: format!("{} (column {})", buckets, spec.column),
                    reason: "must be at least 1",
                })
            } else {
                Ok(())
            }
        };
        let (split, encoding) = match kind {
            FieldKind::Auto | FieldKind::Categorical => (None, Encoding::Vocab(Vocab::new())),
            FieldKind::MultiValued { separator } => {
                (Some(separator), Encoding::Vocab(Vocab::new()))
            }
            FieldKind::Numeric { buckets } => {
                check(buckets as u64)?;
                (
                    None,
                    Encoding::Quantile {
                        buckets,
                        values: Vec::new(),
                    },
                )
            }
            FieldKind::NumericSeq { buckets, separator } => {
                check(buckets as u64)?;
                (
                    Some(separator),
                    Encoding::Quantile {
                        buckets,
                        values: Vec::new(),
                    },
                )
            }
            FieldKind::Hashed { buckets, separator } => {
                check(u64::from(buckets))?;
                (separator, Encoding::Hash(buckets))
            }
        };
        Ok(Self {
            name: reader.columns()[col].name.clone(),
            col,
            split,
            encoding,
            row_ends: Vec::new(),
            tokens: Vec::new(),
        })
    }

    /// Encodes this field's cell of `record` as the next row.
    fn push(&mut self, reader: &TableReader, record: &Record) -> Result<(), TrainError> {
        let cell = record.get(self.col);
        let pieces: Box<dyn Iterator<Item = &str>> = match self.split {
            None => Box::new(std::iter::once(cell)),
            Some(Separator::Whitespace) => Box::new(cell.split_whitespace()),
            Some(Separator::Char(c)) => Box::new(cell.split(c).map(str::trim)),
        };
        for piece in pieces.filter(|p| !p.is_empty()) {
            match &mut self.encoding {
                Encoding::Vocab(vocab) => {
                    let token = vocab.insert(piece)?;
                    self.tokens.push(token);
                }
                Encoding::Hash(buckets) => self.tokens.push(hash_bucket(piece, *buckets)),
                Encoding::Quantile { values, .. } => match piece.parse::<f64>() {
                    Ok(v) if v.is_finite() => values.push(v),
                    _ => return Err(reader.bad_value(record, self.col, "is not a finite number")),
                },
            }
        }
        let len = match &self.encoding {
            Encoding::Quantile { values, .. } => values.len(),
            _ => self.tokens.len(),
        };
        self.row_ends.push(len);
        Ok(())
    }

    /// The field in CSR form over `n_entities`, where `rows[e]` is entity `e`'s row (or
    /// `u32::MAX` when the file has none).
    fn finish(self, rows: &[u32], n_entities: usize) -> Field {
        let (n_tokens, tokens) = match self.encoding {
            Encoding::Vocab(vocab) => (vocab.len(), self.tokens),
            Encoding::Hash(buckets) => (buckets as usize, self.tokens),
            Encoding::Quantile { buckets, values } => {
                let mut sorted = values.clone();
                let edges = quantile_edges(&mut sorted, buckets);
                let tokens = values.iter().map(|&v| bucket_of(&edges, v)).collect();
                (edges.len() + 1, tokens)
            }
        };
        let mut offsets = Vec::with_capacity(n_entities + 1);
        let mut out = Vec::with_capacity(tokens.len());
        offsets.push(0u32);
        for e in 0..n_entities {
            let row = rows.get(e).copied().unwrap_or(u32::MAX);
            if row != u32::MAX {
                let row = row as usize;
                let start = if row == 0 { 0 } else { self.row_ends[row - 1] };
                out.extend_from_slice(&tokens[start..self.row_ends[row]]);
            }
            offsets.push(out.len() as u32);
        }
        Field {
            name: self.name,
            n_tokens,
            offsets,
            tokens: out,
        }
    }
}

/// Reads `source` into fields over the entities of `vocab`. With `add_entities`, ids absent from
/// `vocab` are appended to it (catalogue items without interactions); otherwise their rows are
/// skipped.
pub(crate) fn read_features(
    source: &FeatureSource,
    vocab: &mut Vocab,
    add_entities: bool,
) -> Result<Vec<Field>, TrainError> {
    let mut reader = TableReader::open(&source.path, source.format)?;
    let id_col = reader.column(&source.id_column)?;
    let specs: Vec<FieldSpec> = match &source.fields {
        Some(specs) => specs.clone(),
        None => reader
            .columns()
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != id_col)
            .map(|(_, c)| FieldSpec::auto(c.name.clone()))
            .collect(),
    };
    let mut builders = Vec::with_capacity(specs.len());
    for spec in &specs {
        let builder = FieldBuilder::new(&reader, spec, source.numeric_buckets)?;
        if builder.col == id_col {
            return Err(TrainError::InvalidConfig {
                name: "fields",
                value: spec.column.clone(),
                reason: "is the id column, which is always field 0",
            });
        }
        if builders.iter().any(|b: &FieldBuilder| b.col == builder.col) {
            return Err(TrainError::InvalidConfig {
                name: "fields",
                value: spec.column.clone(),
                reason: "is listed twice",
            });
        }
        builders.push(builder);
    }
    // rows[e]: the file row of entity e; lines[row]: its line, for repeated-id errors.
    let mut rows: Vec<u32> = vec![u32::MAX; vocab.len()];
    let mut lines: Vec<usize> = Vec::new();
    let mut record = Record::default();
    while reader.next_record(&mut record)? {
        let id = record.get(id_col);
        if id.is_empty() {
            return Err(reader.malformed(record.line, format!("empty {}", source.id_column)));
        }
        let entity = if add_entities {
            vocab.insert(id)?
        } else {
            match vocab.get(id) {
                Some(e) => e,
                None => continue,
            }
        } as usize;
        if entity >= rows.len() {
            rows.resize(entity + 1, u32::MAX);
        }
        if rows[entity] != u32::MAX {
            let first = lines[rows[entity] as usize];
            return Err(reader.malformed(
                record.line,
                format!(
                    "{} {id:?} already has a row at line {first}",
                    source.id_column
                ),
            ));
        }
        rows[entity] = u32::try_from(lines.len()).map_err(|_| TrainError::OutOfRange {
            what: "feature rows",
            index: lines.len() as u64,
            bound: u64::from(u32::MAX),
        })?;
        lines.push(record.line);
        for builder in &mut builders {
            builder.push(&reader, &record)?;
        }
    }
    let n_entities = vocab.len();
    Ok(builders
        .into_iter()
        .map(|b| b.finish(&rows, n_entities))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn quantile_edges_split_evenly_and_skip_ties() {
        let mut v: Vec<f64> = (1..=10).map(f64::from).collect();
        let edges = quantile_edges(&mut v, 5);
        assert_eq!(edges, vec![3.0, 5.0, 7.0, 9.0]);
        let buckets: Vec<u32> = (1..=10).map(|x| bucket_of(&edges, f64::from(x))).collect();
        assert_eq!(buckets, vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        let mut ties = vec![1.0, 1.0, 1.0, 2.0, 2.0, 3.0];
        assert_eq!(quantile_edges(&mut ties, 3), vec![2.0]);
        assert!(quantile_edges(&mut [], 4).is_empty());
        assert!(quantile_edges(&mut [5.0], 1).is_empty());
    }
}
