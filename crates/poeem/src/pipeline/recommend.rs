//! Recommendations: each user's top-k items through an index, the items the user has already
//! seen left out, written as TSV or Parquet with the ids the data spelled.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{IdMap, PipelineError};
use crate::pq::Par;
use crate::search::{SearchIndex, SearchParams};
use crate::train::{Dataset, Model};

/// Users embedded and searched per step (and per progress report).
const CHUNK_USERS: usize = 4096;

/// How recommendations are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecFormat {
    /// Tab-separated text: a header, then `user, item, rank, score` per line. A cell that holds
    /// a tab, a line break or a quote at its start, or starts or ends with a space, is quoted
    /// (`"…"`, inner quotes doubled), as the interactions loader reads it back.
    Tsv,
    /// A Parquet file (Snappy) with columns user (string), item (string), rank (uint32),
    /// score (float32).
    Parquet,
}

impl RecFormat {
    /// Parquet for a `.parquet` or `.pq` file, TSV otherwise.
    pub fn for_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("pq") => {
                Self::Parquet
            }
            _ => Self::Tsv,
        }
    }
}

/// What [`recommend_to_file`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendReport {
    /// Users served.
    pub n_users: usize,
    /// Rows written (fewer than `n_users · k` when some user has fewer than `k` unseen items
    /// in the whole index).
    pub n_rows: usize,
    /// Users searched again with more lists because their probed lists held fewer than `k`
    /// items they had not seen.
    pub n_widened: usize,
}

/// The items each user of `dataset` has interacted with (training and held-out pairs: all the
/// data holds), as the index ids `ids` gives them, one list per query index. Items the index
/// cannot name are skipped (they can never be returned).
pub fn seen_ids(dataset: &Dataset, ids: &IdMap) -> Vec<Vec<u64>> {
    let mut seen = vec![Vec::new(); dataset.n_queries()];
    for &(q, i) in dataset.train.iter().chain(&dataset.test) {
        if let Some(id) = ids.id_of(i) {
            seen[q as usize].push(id);
        }
    }
    for list in &mut seen {
        list.sort_unstable();
        list.dedup();
    }
    seen
}

/// What to recommend and how.
#[derive(Debug, Clone, Copy)]
pub struct RecommendRequest<'a> {
    /// Users (query indices of the model), in output order.
    pub users: &'a [u32],
    /// Items per user, the search's lists and probe (`params.k`).
    pub params: SearchParams,
    /// Per query index of the model, index ids never recommended to that user.
    pub exclude: Option<&'a [Vec<u64>]>,
    /// The output's header names of the user and item columns.
    pub columns: [&'a str; 2],
}

/// Writes `request.params.k` recommendations per user to `path` atomically (format by
/// [`RecFormat::for_path`]): users embedded by `model`'s query tower, searched in `index`
/// (result ids mapped back to the model's items through `ids`), their excluded items filtered
/// inside the search's top-k. A user whose probed lists hold fewer than `k` items left after
/// the exclusion is searched again with twice the lists until `k` are found or every list is
/// probed, so each user gets `k` items whenever the catalogue has them. `progress(done, total)`
/// is called after each chunk of users.
///
/// # Errors
/// The search's and embedding's errors, [`PipelineError::Mismatch`] for a result id that is no
/// item of the model, [`PipelineError::Io`] when the file cannot be written (nothing is
/// written then).
pub fn recommend_to_file(
    path: &Path,
    model: &Model,
    index: &SearchIndex<'_>,
    ids: &IdMap,
    request: &RecommendRequest<'_>,
    par: Par,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RecommendReport, PipelineError> {
    let format = RecFormat::for_path(path);
    let mut failure = None;
    let mut report = RecommendReport {
        n_users: request.users.len(),
        n_rows: 0,
        n_widened: 0,
    };
    let written = poeem_fs::write_atomically(path, |w| {
        let mut out = RecWriter::new(w, format, request.columns)?;
        let mut done = 0;
        for chunk in request.users.chunks(CHUNK_USERS) {
            let recs = match recommend_chunk(model, index, ids, request, chunk, par) {
                Ok(recs) => recs,
                Err(e) => {
                    failure = Some(e);
                    return Err(io::Error::other("recommendation failed"));
                }
            };
            report.n_widened += recs.widened;
            report.n_rows += out.write(model, chunk, &recs)?;
            done += chunk.len();
            progress(done, request.users.len());
        }
        out.finish()
    });
    if let Some(e) = failure {
        return Err(e);
    }
    written.map_err(|e| PipelineError::io(e.path, e.source))?;
    Ok(report)
}

/// The recommendations of one chunk of users: `k` item indices (`u32::MAX`: none) and scores
/// per user.
struct Chunk {
    items: Vec<u32>,
    scores: Vec<f32>,
    widened: usize,
}

fn recommend_chunk(
    model: &Model,
    index: &SearchIndex<'_>,
    ids: &IdMap,
    request: &RecommendRequest<'_>,
    users: &[u32],
    par: Par,
) -> Result<Chunk, PipelineError> {
    let params = request.params;
    let k = params.k;
    let queries = model.embed_queries(users, par)?;
    let exclude: Vec<&[u64]> = match request.exclude {
        Some(seen) => users.iter().map(|&u| seen[u as usize].as_slice()).collect(),
        None => Vec::new(),
    };
    let mut found = vec![-1i64; users.len() * k];
    let mut scores = vec![0.0f32; users.len() * k];
    index.search_batch_excluding(&queries, &exclude, &params, &mut found, &mut scores, par)?;
    // Users short of k: search again with more lists.
    let n_lists = index.view().params().n_lists;
    let dim = model.dim();
    let mut short: Vec<usize> = (0..users.len())
        .filter(|&r| found[r * k + k - 1] < 0)
        .collect();
    let widened = short.len();
    let mut nprobe = params.nprobe;
    while !short.is_empty() && nprobe < n_lists {
        nprobe = nprobe.saturating_mul(2).min(n_lists);
        let wider = SearchParams { nprobe, ..params };
        let rows: Vec<f32> = short
            .iter()
            .flat_map(|&r| queries[r * dim..(r + 1) * dim].iter().copied())
            .collect();
        let excl: Vec<&[u64]> = if exclude.is_empty() {
            Vec::new()
        } else {
            short.iter().map(|&r| exclude[r]).collect()
        };
        let mut f = vec![-1i64; short.len() * k];
        let mut s = vec![0.0f32; short.len() * k];
        index.search_batch_excluding(&rows, &excl, &wider, &mut f, &mut s, par)?;
        for (j, &r) in short.iter().enumerate() {
            found[r * k..(r + 1) * k].copy_from_slice(&f[j * k..(j + 1) * k]);
            scores[r * k..(r + 1) * k].copy_from_slice(&s[j * k..(j + 1) * k]);
        }
        short.retain(|&r| found[r * k + k - 1] < 0);
    }
    let items = found
        .into_iter()
        .map(|id| ids.index_of(id))
        .collect::<Result<Vec<u32>, _>>()?;
    Ok(Chunk {
        items,
        scores,
        widened,
    })
}

/// The output file being written.
enum RecWriter<W: Write + Send> {
    Tsv(W),
    Parquet(Box<ArrowWriter<W>>, SchemaRef),
}

impl<W: Write + Send> RecWriter<W> {
    fn new(mut w: W, format: RecFormat, columns: [&str; 2]) -> io::Result<Self> {
        match format {
            RecFormat::Tsv => {
                writeln!(
                    w,
                    "{}\t{}\trank\tscore",
                    tsv_cell(columns[0]),
                    tsv_cell(columns[1])
                )?;
                Ok(Self::Tsv(w))
            }
            RecFormat::Parquet => {
                let schema = Arc::new(Schema::new(vec![
                    Field::new(columns[0], DataType::Utf8, false),
                    Field::new(columns[1], DataType::Utf8, false),
                    Field::new("rank", DataType::UInt32, false),
                    Field::new("score", DataType::Float32, false),
                ]));
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                let writer = ArrowWriter::try_new(w, schema.clone(), Some(props))
                    .map_err(io::Error::other)?;
                Ok(Self::Parquet(Box::new(writer), schema))
            }
        }
    }

    /// Writes one chunk's rows; returns how many.
    fn write(&mut self, model: &Model, users: &[u32], recs: &Chunk) -> io::Result<usize> {
        let k = recs.items.len() / users.len().max(1);
        let rows = users.iter().enumerate().flat_map(|(r, &u)| {
            (0..k)
                .map(move |j| (u, r * k + j, j))
                .filter(|&(_, at, _)| recs.items[at] != u32::MAX)
        });
        let (queries, items) = (model.queries(), model.items());
        match self {
            Self::Tsv(w) => {
                let mut n = 0;
                for (u, at, rank) in rows {
                    writeln!(
                        w,
                        "{}\t{}\t{}\t{}",
                        tsv_cell(queries.token(u)),
                        tsv_cell(items.token(recs.items[at])),
                        rank + 1,
                        recs.scores[at]
                    )?;
                    n += 1;
                }
                Ok(n)
            }
            Self::Parquet(writer, schema) => {
                let rows: Vec<(u32, usize, usize)> = rows.collect();
                let user: StringArray = rows
                    .iter()
                    .map(|&(u, _, _)| Some(queries.token(u)))
                    .collect();
                let item: StringArray = rows
                    .iter()
                    .map(|&(_, at, _)| Some(items.token(recs.items[at])))
                    .collect();
                let rank: UInt32Array = rows.iter().map(|&(_, _, j)| Some(j as u32 + 1)).collect();
                let score: Float32Array = rows
                    .iter()
                    .map(|&(_, at, _)| Some(recs.scores[at]))
                    .collect();
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(user),
                    Arc::new(item),
                    Arc::new(rank),
                    Arc::new(score),
                ];
                let batch =
                    RecordBatch::try_new(schema.clone(), columns).map_err(io::Error::other)?;
                writer.write(&batch).map_err(io::Error::other)?;
                Ok(rows.len())
            }
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Self::Tsv(_) => Ok(()),
            Self::Parquet(writer, _) => writer.close().map(|_| ()).map_err(io::Error::other),
        }
    }
}

/// `cell` as a TSV cell the interactions loader reads back as `cell` (see [`RecFormat::Tsv`]).
pub fn tsv_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    let needs_quotes = cell.contains(['\t', '\n', '\r'])
        || cell.starts_with('"')
        || cell.starts_with(' ')
        || cell.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", cell.replace('"', "\"\"")).into()
    } else {
        cell.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_cells_quote_only_what_needs_it() {
        assert_eq!(tsv_cell("Toy Story (1995)"), "Toy Story (1995)");
        assert_eq!(tsv_cell("say \"hi\""), "say \"hi\"");
        assert_eq!(tsv_cell("\"Heat\""), "\"\"\"Heat\"\"\"");
        assert_eq!(tsv_cell("a\tb"), "\"a\tb\"");
        assert_eq!(tsv_cell(" pad"), "\" pad\"");
    }

    #[test]
    fn formats_follow_the_extension() {
        assert_eq!(
            RecFormat::for_path(Path::new("r.parquet")),
            RecFormat::Parquet
        );
        assert_eq!(RecFormat::for_path(Path::new("r.PQ")), RecFormat::Parquet);
        assert_eq!(RecFormat::for_path(Path::new("r.tsv")), RecFormat::Tsv);
        assert_eq!(RecFormat::for_path(Path::new("r")), RecFormat::Tsv);
    }
}
