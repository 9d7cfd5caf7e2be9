//! Delimited text tables: CSV, TSV and RecBole atomic files.
//!
//! A table is a header line followed by records. Cells are separated by one delimiter byte
//! (tab, comma or semicolon, given or detected from the header). With quoting on, a cell that
//! starts with `"` (after optional spaces) runs to the matching `"`, may contain delimiters and
//! line breaks, and writes a literal quote as `""`; a quote inside an unquoted cell is an
//! ordinary character. Spaces around unquoted cells are trimmed. Blank lines are skipped, a
//! UTF-8 byte-order mark and `\r\n` line ends are accepted.
//!
//! A Parquet file (recognised by its magic bytes, whatever its name) is read through
//! [`super::parquet`] into the same header and records.
//!
//! A header cell `name:type` with `type` one of `token`, `token_seq`, `float`, `float_seq`
//! (RecBole's atomic-file convention) declares the column `name` of that type; any other cell is
//! an untyped column named by the whole cell.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::parquet::{self, ParquetRows};
use crate::TrainError;

/// The byte that separates cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delimiter {
    /// Detected from the header line: tab when it holds a tab (outside quotes), otherwise
    /// whichever of comma and semicolon occurs more often (comma on a tie or when neither does).
    #[default]
    Auto,
    /// `\t` (TSV, RecBole atomic files).
    Tab,
    /// `,` (CSV).
    Comma,
    /// `;` (CSV as written in locales with a decimal comma).
    Semicolon,
}

impl Delimiter {
    fn byte(self) -> Option<u8> {
        match self {
            Self::Auto => None,
            Self::Tab => Some(b'\t'),
            Self::Comma => Some(b','),
            Self::Semicolon => Some(b';'),
        }
    }
}

/// How a text table is split into cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextFormat {
    /// The cell separator.
    pub delimiter: Delimiter,
    /// Whether `"` starts a quoted cell (RFC 4180). Turn it off for files whose unquoted cells
    /// may begin with a literal quote.
    pub quotes: bool,
}

impl Default for TextFormat {
    /// A detected delimiter, with quoting.
    fn default() -> Self {
        Self {
            delimiter: Delimiter::Auto,
            quotes: true,
        }
    }
}

/// The value type a RecBole header declares for a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// One categorical token.
    Token,
    /// Space-separated tokens.
    TokenSeq,
    /// One number.
    Float,
    /// Space-separated numbers.
    FloatSeq,
}

impl ColumnType {
    fn parse(suffix: &str) -> Option<Self> {
        match suffix {
            "token" => Some(Self::Token),
            "token_seq" => Some(Self::TokenSeq),
            "float" => Some(Self::Float),
            "float_seq" => Some(Self::FloatSeq),
            _ => None,
        }
    }
}

/// One header cell: the column's name and, for a RecBole header, its declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub name: String,
    pub full: String,
    pub ty: Option<ColumnType>,
}

/// One record: its cells as ranges into a shared text buffer.
#[derive(Debug, Default)]
pub(crate) struct Record {
    text: String,
    cells: Vec<Range<usize>>,
    /// The 1-based line where the record starts.
    pub line: usize,
}

impl Record {
    /// Cell `i` (trimmed when unquoted, unescaped when quoted).
    pub fn get(&self, i: usize) -> &str {
        &self.text[self.cells[i].clone()]
    }

    fn len(&self) -> usize {
        self.cells.len()
    }
}

/// Why a record could not be split.
enum SplitError {
    /// A quoted cell is still open at the end of the text.
    OpenQuote,
    /// Something other than a delimiter follows a closing quote.
    AfterQuote,
}

/// A streaming reader of one table.
#[derive(Debug)]
pub(crate) struct TableReader {
    path: PathBuf,
    reader: BufReader<File>,
    delimiter: u8,
    quotes: bool,
    /// Physical lines consumed so far.
    line: usize,
    raw: Vec<u8>,
    columns: Vec<Column>,
    /// Data records returned so far.
    rows: usize,
    /// The rows of a Parquet file (the text fields are then unused).
    parquet: Option<ParquetRows>,
}

impl TableReader {
    /// Opens `path` and reads its header.
    ///
    /// # Errors
    /// [`TrainError::Io`] when the file cannot be read, [`TrainError::EmptyData`] when it holds
    /// no header, [`TrainError::Malformed`] for a bad header (an empty or repeated name).
    pub fn open(path: &Path, format: TextFormat) -> Result<Self, TrainError> {
        let file = poeem_fs::open_input(path).map_err(|e| TrainError::io(path, e))?;
        let mut reader = Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, file),
            delimiter: b',',
            quotes: format.quotes,
            line: 0,
            raw: Vec::new(),
            columns: Vec::new(),
            rows: 0,
            parquet: None,
        };
        let head = reader
            .reader
            .fill_buf()
            .map_err(|e| TrainError::io(path, e))?;
        if head.starts_with(parquet::MAGIC) {
            let (rows, columns) = ParquetRows::open(path)?;
            reader.parquet = Some(rows);
            reader.columns = columns
                .into_iter()
                .map(|(name, ty)| Column {
                    full: name.clone(),
                    name,
                    ty,
                })
                .collect();
            return Ok(reader);
        }
        let Some(first) = reader.next_nonblank_line()? else {
            return Err(TrainError::EmptyData {
                path: path.to_path_buf(),
                reason: "the file is empty",
            });
        };
        let first = first.strip_prefix('\u{feff}').unwrap_or(&first).to_owned();
        reader.delimiter = format
            .delimiter
            .byte()
            .unwrap_or_else(|| detect_delimiter(&first, format.quotes));
        let header_line = reader.line;
        let mut record = Record::default();
        reader.split_logical(first, header_line, &mut record)?;
        let mut columns: Vec<Column> = Vec::with_capacity(record.len());
        for i in 0..record.len() {
            let full = record.get(i).to_owned();
            let (name, ty) = match full.rsplit_once(':') {
                Some((name, suffix)) => match ColumnType::parse(suffix) {
                    Some(ty) => (name.to_owned(), Some(ty)),
                    None => (full.clone(), None),
                },
                None => (full.clone(), None),
            };
            if name.is_empty() {
                return Err(reader.malformed(header_line, format!("column {} has no name", i + 1)));
            }
            if columns.iter().any(|c| c.name == name) {
                return Err(reader.malformed(header_line, format!("column {name:?} repeats")));
            }
            columns.push(Column { name, full, ty });
        }
        reader.columns = columns;
        Ok(reader)
    }

    /// The header's columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The position of the column called `name` (its name before `:type`, or the whole header
    /// cell).
    ///
    /// # Errors
    /// [`TrainError::MissingColumn`], listing the available names.
    pub fn column(&self, name: &str) -> Result<usize, TrainError> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .or_else(|| self.columns.iter().position(|c| c.full == name))
            .ok_or_else(|| TrainError::MissingColumn {
                path: self.path.clone(),
                column: name.to_owned(),
                available: self.columns.iter().map(|c| c.name.clone()).collect(),
            })
    }

    /// Reads the next record into `record`; `false` at the end of the file.
    ///
    /// # Errors
    /// [`TrainError::Malformed`] for a record with the wrong number of cells, an unterminated
    /// quote, text after a closing quote or invalid UTF-8; [`TrainError::EmptyData`] when the
    /// file ends before its first record; [`TrainError::Io`] on a read failure.
    pub fn next_record(&mut self, record: &mut Record) -> Result<bool, TrainError> {
        if let Some(rows) = &mut self.parquet {
            let Some(row) = rows.next_row(&mut record.text, &mut record.cells)? else {
                if self.rows == 0 {
                    return Err(TrainError::EmptyData {
                        path: self.path.clone(),
                        reason: "the file has no rows",
                    });
                }
                return Ok(false);
            };
            record.line = row;
            self.rows += 1;
            return Ok(true);
        }
        let Some(text) = self.next_nonblank_line()? else {
            if self.rows == 0 {
                return Err(TrainError::EmptyData {
                    path: self.path.clone(),
                    reason: "the file has a header but no rows",
                });
            }
            return Ok(false);
        };
        let start = self.line;
        self.split_logical(text, start, record)?;
        if record.len() != self.columns.len() {
            return Err(self.malformed(
                start,
                format!(
                    "{} cells where the header has {} columns",
                    record.len(),
                    self.columns.len()
                ),
            ));
        }
        self.rows += 1;
        Ok(true)
    }

    /// A [`TrainError::Malformed`] at `line` of this file.
    pub fn malformed(&self, line: usize, reason: String) -> TrainError {
        TrainError::Malformed {
            path: self.path.clone(),
            line,
            reason,
        }
    }

    /// A [`TrainError::BadValue`] for column `col` of `record`.
    pub fn bad_value(&self, record: &Record, col: usize, reason: &'static str) -> TrainError {
        TrainError::BadValue {
            path: self.path.clone(),
            line: record.line,
            column: self.columns[col].name.clone(),
            value: record.get(col).to_owned(),
            reason,
        }
    }

    /// Splits `text`, pulling further lines while a quoted cell is open.
    fn split_logical(
        &mut self,
        mut text: String,
        start: usize,
        record: &mut Record,
    ) -> Result<(), TrainError> {
        loop {
            match split_record(&text, self.delimiter, self.quotes, record) {
                Ok(()) => {
                    record.line = start;
                    return Ok(());
                }
                Err(SplitError::AfterQuote) => {
                    return Err(self.malformed(
                        start,
                        "text between a closing quote and the next delimiter".to_owned(),
                    ));
                }
                Err(SplitError::OpenQuote) => match self.next_line()? {
                    Some(more) => {
                        text.push('\n');
                        text.push_str(&more);
                    }
                    None => {
                        return Err(
                            self.malformed(start, "a quoted cell is never closed".to_owned())
                        );
                    }
                },
            }
        }
    }

    /// The next line that holds more than spaces, without its line end.
    fn next_nonblank_line(&mut self) -> Result<Option<String>, TrainError> {
        while let Some(line) = self.next_line()? {
            if !line.trim().is_empty() {
                return Ok(Some(line));
            }
        }
        Ok(None)
    }

    /// The next physical line without its line end; `None` at the end of the file.
    fn next_line(&mut self) -> Result<Option<String>, TrainError> {
        self.raw.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.raw)
            .map_err(|e| TrainError::io(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if self.raw.last() == Some(&b'\n') {
            self.raw.pop();
            if self.raw.last() == Some(&b'\r') {
                self.raw.pop();
            }
        }
        match std::str::from_utf8(&self.raw) {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(e) => Err(self.malformed(
                self.line,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )),
        }
    }
}

/// Picks the delimiter of a header line (see [`Delimiter::Auto`]).
fn detect_delimiter(header: &str, quotes: bool) -> u8 {
    let (mut tabs, mut commas, mut semicolons) = (0usize, 0usize, 0usize);
    let mut quoted = false;
    for b in header.bytes() {
        match b {
            b'"' if quotes => quoted = !quoted,
            b'\t' if !quoted => tabs += 1,
            b',' if !quoted => commas += 1,
            b';' if !quoted => semicolons += 1,
            _ => {}
        }
    }
    if tabs > 0 {
        b'\t'
    } else if semicolons > commas {
        b';'
    } else {
        b','
    }
}

/// Whether `b` is trimmed around unquoted cells (a space, or a tab when tab is not the
/// delimiter).
fn is_pad(b: u8, delimiter: u8) -> bool {
    b == b' ' || (b == b'\t' && delimiter != b'\t')
}

/// Splits one logical record into `record` (text and cell ranges).
fn split_record(
    text: &str,
    delimiter: u8,
    quotes: bool,
    record: &mut Record,
) -> Result<(), SplitError> {
    record.text.clear();
    record.cells.clear();
    let bytes = text.as_bytes();
    let mut i = 0;
    loop {
        // One cell starts at `i`.
        let mut j = i;
        while j < bytes.len() && is_pad(bytes[j], delimiter) {
            j += 1;
        }
        if quotes && j < bytes.len() && bytes[j] == b'"' {
            let start = record.text.len();
            let mut k = j + 1;
            loop {
                let Some(offset) = bytes[k..].iter().position(|&b| b == b'"') else {
                    return Err(SplitError::OpenQuote);
                };
                record.text.push_str(&text[k..k + offset]);
                k += offset + 1;
                if bytes.get(k) == Some(&b'"') {
                    record.text.push('"');
                    k += 1;
                } else {
                    break;
                }
            }
            record.cells.push(start..record.text.len());
            while k < bytes.len() && is_pad(bytes[k], delimiter) {
                k += 1;
            }
            match bytes.get(k) {
                None => return Ok(()),
                Some(&b) if b == delimiter => i = k + 1,
                Some(_) => return Err(SplitError::AfterQuote),
            }
        } else {
            let end = bytes[i..]
                .iter()
                .position(|&b| b == delimiter)
                .map_or(bytes.len(), |p| i + p);
            let mut lo = i;
            let mut hi = end;
            while lo < hi && is_pad(bytes[lo], delimiter) {
                lo += 1;
            }
            while hi > lo && is_pad(bytes[hi - 1], delimiter) {
                hi -= 1;
            }
            let start = record.text.len();
            record.text.push_str(&text[lo..hi]);
            record.cells.push(start..record.text.len());
            if end == bytes.len() {
                return Ok(());
            }
            i = end + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(text: &str, delimiter: u8) -> Result<Vec<String>, &'static str> {
        let mut record = Record::default();
        match split_record(text, delimiter, true, &mut record) {
            Ok(()) => Ok((0..record.len())
                .map(|i| record.get(i).to_owned())
                .collect()),
            Err(SplitError::OpenQuote) => Err("open"),
            Err(SplitError::AfterQuote) => Err("after"),
        }
    }

    #[test]
    fn splits_quoted_and_plain_cells() {
        assert_eq!(
            cells("a,b,c", b','),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            cells(" a , \"b,\"\"c\"\" \" ,", b','),
            Ok(vec!["a".into(), "b,\"c\" ".into(), String::new()])
        );
        assert_eq!(cells("x\"y,z", b','), Ok(vec!["x\"y".into(), "z".into()]));
        assert_eq!(cells("\"a", b','), Err("open"));
        assert_eq!(cells("\"a\"b,c", b','), Err("after"));
        assert_eq!(cells("a b\t c", b'\t'), Ok(vec!["a b".into(), "c".into()]));
        assert_eq!(cells("", b','), Ok(vec![String::new()]));
    }

    #[test]
    fn detects_delimiters() {
        assert_eq!(detect_delimiter("a:token\tb:token", true), b'\t');
        assert_eq!(detect_delimiter("a;b;c", true), b';');
        assert_eq!(detect_delimiter("\"a;b\",c", true), b',');
        assert_eq!(detect_delimiter("single", true), b',');
    }
}
