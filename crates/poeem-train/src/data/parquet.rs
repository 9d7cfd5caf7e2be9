//! Parquet tables, read as the text tables are: a header (the schema's column names) and
//! records of string cells, so interactions and feature files exported from a warehouse load
//! without conversion.
//!
//! Cells are spelled as a CSV export would spell them: strings as they are, integers in
//! decimal, floats in Rust's shortest round-trip form, booleans `true`/`false`, timestamps and
//! dates as their stored integer (the unit of the column), dictionary-encoded columns through
//! their dictionary, and list columns as their elements separated by spaces (so they read as
//! RecBole `token_seq` / `float_seq`). A null is an empty cell. Column types follow the
//! schema: float columns are numeric features, lists of floats numeric sequences, other lists
//! token sequences, everything else categorical. Record "lines" in errors are 1-based row
//! numbers.

use std::fmt::Write as _;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::table::ColumnType;
use crate::TrainError;

/// The four bytes a Parquet file starts (and ends) with.
pub(crate) const MAGIC: &[u8; 4] = b"PAR1";

/// A column of the schema: its name and the RecBole type it counts as.
pub(crate) type SchemaColumn = (String, Option<ColumnType>);

/// Rows decoded per batch.
const BATCH_ROWS: usize = 8192;

/// A streaming reader of a Parquet file's rows as string cells.
pub(crate) struct ParquetRows {
    path: PathBuf,
    batches: ParquetRecordBatchReader,
    /// The current batch's columns (dictionaries resolved to their keys).
    columns: Vec<Column>,
    /// Rows of the current batch, and the next one to return.
    n_rows: usize,
    next: usize,
    /// Rows returned before the current batch.
    rows_before: usize,
}

impl std::fmt::Debug for ParquetRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetRows")
            .field("path", &self.path)
            .field("rows_before", &self.rows_before)
            .finish_non_exhaustive()
    }
}

/// One column of a batch, ready to spell cells.
struct Column {
    array: ArrayRef,
    /// For a dictionary column: each row's index into `array` (the dictionary's values).
    keys: Option<Vec<usize>>,
}

impl ParquetRows {
    /// Opens `path` and returns the reader with the schema's columns (name and type).
    ///
    /// # Errors
    /// [`TrainError::Io`] when the file cannot be opened, [`TrainError::Malformed`] when it is
    /// not a readable Parquet file or has a column of a type that cannot be spelled as text.
    pub(crate) fn open(path: &Path) -> Result<(Self, Vec<SchemaColumn>), TrainError> {
        let file: File = poeem_fs::open_input(path).map_err(|e| TrainError::io(path, e))?;
        let malformed = |reason: String| TrainError::Malformed {
            path: path.to_path_buf(),
            line: 0,
            reason,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| malformed(format!("not a readable Parquet file: {e}")))?;
        let mut columns = Vec::new();
        for field in builder.schema().fields() {
            let ty = column_type(field.data_type()).ok_or_else(|| {
                malformed(format!(
                    "column {:?} has type {}, which cannot be read as ids or features (use \
                     strings, integers, floats, booleans, timestamps, dates, dictionaries or \
                     lists of them)",
                    field.name(),
                    field.data_type()
                ))
            })?;
            columns.push((field.name().clone(), ty));
        }
        let batches = builder
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| malformed(format!("cannot read: {e}")))?;
        let rows = Self {
            path: path.to_path_buf(),
            batches,
            columns: Vec::new(),
            n_rows: 0,
            next: 0,
            rows_before: 0,
        };
        Ok((rows, columns))
    }

    /// Spells the next row's cells into `text`, one range per column in `cells`; returns the
    /// row's 1-based number, or `None` after the last row.
    ///
    /// # Errors
    /// [`TrainError::Malformed`] when a page cannot be decoded.
    pub(crate) fn next_row(
        &mut self,
        text: &mut String,
        cells: &mut Vec<Range<usize>>,
    ) -> Result<Option<usize>, TrainError> {
        while self.next == self.n_rows {
            match self.batches.next() {
                None => return Ok(None),
                Some(batch) => {
                    let batch = batch.map_err(|e| TrainError::Malformed {
                        path: self.path.clone(),
                        line: self.rows_before + self.n_rows + 1,
                        reason: format!("cannot decode: {e}"),
                    })?;
                    self.start_batch(&batch);
                }
            }
        }
        text.clear();
        cells.clear();
        let row = self.next;
        for column in &self.columns {
            let start = text.len();
            match &column.keys {
                None => spell(&column.array, row, text),
                Some(keys) if keys[row] != usize::MAX => spell(&column.array, keys[row], text),
                Some(_) => {}
            }
            cells.push(start..text.len());
        }
        self.next += 1;
        Ok(Some(self.rows_before + row + 1))
    }

    fn start_batch(&mut self, batch: &RecordBatch) {
        self.rows_before += self.n_rows;
        self.n_rows = batch.num_rows();
        self.next = 0;
        self.columns = batch
            .columns()
            .iter()
            .map(|array| match array.as_any_dictionary_opt() {
                Some(dict) => {
                    // A null row's normalised key is arbitrary: mark it.
                    let mut keys = dict.normalized_keys();
                    for (row, key) in keys.iter_mut().enumerate() {
                        if array.is_null(row) {
                            *key = usize::MAX;
                        }
                    }
                    Column {
                        keys: Some(keys),
                        array: dict.values().clone(),
                    }
                }
                None => Column {
                    array: array.clone(),
                    keys: None,
                },
            })
            .collect();
    }
}

/// How a column of `data_type` reads as features; `None` when it cannot be spelled as text.
/// (The outer `Option` is whether it is supported, the inner the RecBole type it counts as.)
fn column_type(data_type: &DataType) -> Option<Option<ColumnType>> {
    use DataType as D;
    Some(match data_type {
        D::Float16 | D::Float32 | D::Float64 => Some(ColumnType::Float),
        D::List(f) | D::LargeList(f) => match f.data_type() {
            D::Float16 | D::Float32 | D::Float64 => Some(ColumnType::FloatSeq),
            inner if scalar(inner) => Some(ColumnType::TokenSeq),
            _ => return None,
        },
        D::Dictionary(_, value) if scalar(value) => column_type(value)?,
        other if scalar(other) => Some(ColumnType::Token),
        _ => return None,
    })
}

/// Whether `spell` spells a value of this type.
fn scalar(data_type: &DataType) -> bool {
    use DataType as D;
    matches!(
        data_type,
        D::Utf8
            | D::LargeUtf8
            | D::Utf8View
            | D::Boolean
            | D::Int8
            | D::Int16
            | D::Int32
            | D::Int64
            | D::UInt8
            | D::UInt16
            | D::UInt32
            | D::UInt64
            | D::Float16
            | D::Float32
            | D::Float64
            | D::Date32
            | D::Date64
            | D::Timestamp(_, _)
    )
}

/// Appends value `row` of `array` to `out` (nothing for a null).
fn spell(array: &ArrayRef, row: usize, out: &mut String) {
    use DataType as D;
    if array.is_null(row) {
        return;
    }
    macro_rules! number {
        ($t:ty) => {{
            let _ = write!(out, "{}", array.as_primitive::<$t>().value(row));
        }};
    }
    match array.data_type() {
        D::Utf8 => out.push_str(array.as_string::<i32>().value(row)),
        D::LargeUtf8 => out.push_str(array.as_string::<i64>().value(row)),
        D::Utf8View => out.push_str(array.as_string_view().value(row)),
        D::Boolean => out.push_str(if array.as_boolean().value(row) {
            "true"
        } else {
            "false"
        }),
        D::Int8 => number!(Int8Type),
        D::Int16 => number!(Int16Type),
        D::Int32 => number!(Int32Type),
        D::Int64 => number!(Int64Type),
        D::UInt8 => number!(UInt8Type),
        D::UInt16 => number!(UInt16Type),
        D::UInt32 => number!(UInt32Type),
        D::UInt64 => number!(UInt64Type),
        D::Float16 => number!(Float16Type),
        D::Float32 => number!(Float32Type),
        D::Float64 => number!(Float64Type),
        D::Date32 => number!(Date32Type),
        D::Date64 => number!(Date64Type),
        D::Timestamp(TimeUnit::Second, _) => number!(TimestampSecondType),
        D::Timestamp(TimeUnit::Millisecond, _) => number!(TimestampMillisecondType),
        D::Timestamp(TimeUnit::Microsecond, _) => number!(TimestampMicrosecondType),
        D::Timestamp(TimeUnit::Nanosecond, _) => number!(TimestampNanosecondType),
        D::List(_) => spell_list(array.as_list::<i32>().value(row), out),
        D::LargeList(_) => spell_list(array.as_list::<i64>().value(row), out),
        // `column_type` admits no other type.
        _ => {}
    }
}

/// Appends a list's elements separated by single spaces (nulls skipped).
fn spell_list(values: ArrayRef, out: &mut String) {
    let mut first = true;
    for i in 0..values.len() {
        if values.is_null(i) {
            continue;
        }
        if !first {
            out.push(' ');
        }
        first = false;
        spell(&values, i, out);
    }
}
