//! `poeem build | search | info | verify | import-reference`: the index file commands.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use poeem::build::{BuildOptions, build_index, import_reference};
use poeem::io::{read_ids, read_vectors, write_npy, write_npy_i64};
use poeem::pipeline::tsv_cell;
use poeem::pq::Par;
use poeem::search::format::write_index;
use poeem::search::{Index, ItemKeys, Metric, RefineKind, SearchIndex, SearchParams, Searcher};

use crate::outputs::{Named, check_outputs, optional};
use crate::progress::StageBar;

/// Thread count option shared by the commands: all cores by default.
#[derive(Debug, Args)]
pub struct Threads {
    /// Worker threads (default: every core). 1 runs on the calling thread only.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

impl Threads {
    /// The parallelism these options ask for.
    pub fn par(&self) -> Par {
        let n = self.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        );
        if n == 1 { Par::Seq } else { Par::rayon(n) }
    }
}

/// Arguments of `poeem build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Vectors to index: a 2-D float `.npy` (n × dim) or an `.fvecs` file.
    #[arg(long)]
    vectors: PathBuf,
    /// Ids of the vectors, in row order: a 1-D integer `.npy` (the external ids), or a text
    /// file with one id per line (any strings, such as `poeem embed`'s OUT.ids.txt), stored in
    /// the index as its item keys: items then get ids 0..n and search, evaluate and recommend
    /// print the strings [default: ids 0..n, no keys].
    #[arg(long, value_name = "F")]
    ids: Option<PathBuf>,
    /// Number of coarse (IVF) lists; about 4·√n is a common choice.
    #[arg(long)]
    n_lists: usize,
    /// Number of PQ subspaces M; the dimension is zero-padded to a multiple of M.
    #[arg(long)]
    n_subspaces: usize,
    /// Bits per PQ code (1 to 16); 8 gives 256 codewords per subspace. 4 stores the codes in
    /// the fast-scan layout (format version 2), scanned with in-register lookups.
    #[arg(long, default_value_t = BuildOptions::DEFAULT_N_BITS)]
    n_bits: u32,
    /// Store refinement data for re-ranking (`search --rerank-factor`): f32 (the vectors),
    /// f16 (half precision) or pq8 (an 8-bit PQ of the residual, M bytes per item).
    #[arg(long)]
    refine: Option<RefineKind>,
    /// Learn a rotation first (OPQ), for lower quantization error at a higher build cost.
    #[arg(long)]
    opq: bool,
    /// OPQ alternation rounds (with --opq).
    #[arg(long, default_value_t = BuildOptions::DEFAULT_OPQ_ROUNDS, requires = "opq")]
    opq_rounds: usize,
    /// Similarity the index serves: ip (inner product), l2 (squared distance) or cosine.
    #[arg(long, default_value = "ip")]
    metric: Metric,
    /// Lloyd iterations of each k-means.
    #[arg(long, default_value_t = BuildOptions::DEFAULT_KMEANS_ITERATIONS)]
    kmeans_iterations: usize,
    /// Seed of every random choice (same seed and data: same index).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    threads: Threads,
    /// Index file to write (atomically).
    #[arg(long)]
    out: PathBuf,
}

/// `poeem build`: trains the coarse quantizer and PQ (optionally OPQ) on the vectors, encodes them
/// and writes the index.
pub fn build(args: &BuildArgs) -> Result<()> {
    let inputs = [Named::new("--vectors", &args.vectors)]
        .into_iter()
        .chain(optional("--ids", args.ids.as_deref()));
    check_outputs(
        &inputs.collect::<Vec<_>>(),
        &[Named::new("--out", &args.out)],
    )?;
    let vectors = read_vectors(&args.vectors)?;
    let (ids, keys) = match args.ids.as_deref() {
        Some(path) if is_npy(path) => (Some(read_ids(path)?), None),
        Some(path) => {
            let keys = read_lines(path)?;
            if keys.len() != vectors.len() {
                bail!(
                    "{}: {} ids for {} vectors (one per line, in row order)",
                    path.display(),
                    keys.len(),
                    vectors.len()
                );
            }
            let keys = ItemKeys::new(&keys).with_context(|| path.display().to_string())?;
            (None, Some(keys))
        }
        None => (None, None),
    };
    let config = BuildOptions {
        n_lists: args.n_lists,
        n_subspaces: args.n_subspaces,
        n_bits: args.n_bits,
        metric: args.metric,
        opq_rounds: args.opq.then_some(args.opq_rounds),
        kmeans_iterations: args.kmeans_iterations,
        seed: args.seed,
        refine: args.refine,
    }
    .config();
    eprintln!(
        "building IVF{},PQ{}x{}{}{} ({}) over {} vectors of dimension {}",
        args.n_lists,
        args.n_subspaces,
        args.n_bits,
        if args.opq { " with OPQ" } else { "" },
        args.refine
            .map_or(String::new(), |r| format!(", refine {r}")),
        args.metric,
        vectors.len(),
        vectors.dim
    );
    let start = Instant::now();
    let mut bar = StageBar::new();
    let built = build_index(
        &vectors.data,
        vectors.dim,
        ids.as_deref(),
        &config,
        args.threads.par(),
        &mut |event| bar.update(event),
    );
    bar.finish();
    let (mut parts, _report) = built.context("building the index")?;
    parts.item_keys = keys;
    write_index(&args.out, &parts)?;
    eprintln!(
        "wrote {} ({} items, {} lists) in {:.2} s",
        args.out.display(),
        parts.params.n_items,
        parts.params.n_lists,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Arguments of `poeem search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Index file.
    #[arg(long)]
    index: PathBuf,
    /// Queries: a 2-D float `.npy` (n × dim) or an `.fvecs` file.
    #[arg(long)]
    queries: PathBuf,
    /// Results per query.
    #[arg(short = 'k', long = "k")]
    k: usize,
    /// Lists probed per query (more: better recall, slower).
    #[arg(long)]
    nprobe: usize,
    /// On an index built with --refine: re-score the best k·R candidates with the refinement
    /// data and return the best k of them (0: off).
    #[arg(long, default_value_t = SearchParams::DEFAULT_RERANK_FACTOR)]
    rerank_factor: usize,
    #[command(flatten)]
    threads: Threads,
    /// Search one query per call on the calling thread (a `Searcher` reused across queries)
    /// instead of one batch (--threads is then ignored); the same results up to float rounding. For timing single-query
    /// serving.
    #[arg(long)]
    one_at_a_time: bool,
    /// Run the search this many times and report the median time (for benchmarks: the later
    /// runs find the index's pages and the caches warm).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeats: u32,
    /// Results: an int64 n × k `.npy` of ids, best first, −1 where fewer than k were found;
    /// or, for OUT ending in .tsv, a table with a header and one line per result (query row
    /// from 0, rank from 1, id, score), the ids spelled by the index's item keys when it
    /// carries them.
    #[arg(long)]
    out: PathBuf,
    /// Their scores, a float32 n × k `.npy` (inner product or cosine: higher is better; l2:
    /// squared distance, lower is better).
    #[arg(long)]
    scores: Option<PathBuf>,
}

/// `poeem search`: batch search, results to `.npy` files.
pub fn search(args: &SearchArgs) -> Result<()> {
    let outputs = [Named::new("--out", &args.out)]
        .into_iter()
        .chain(optional("--scores", args.scores.as_deref()));
    check_outputs(
        &[
            Named::new("--index", &args.index),
            Named::new("--queries", &args.queries),
        ],
        &outputs.collect::<Vec<_>>(),
    )?;
    let index = Index::open(&args.index)?;
    let queries = read_vectors(&args.queries)?;
    let dim = index.params().dim;
    if queries.dim != dim {
        bail!(
            "{}: queries have dimension {}, the index {dim}",
            args.queries.display(),
            queries.dim
        );
    }
    let n = queries.len();
    let params = SearchParams::new(args.k, args.nprobe).with_rerank_factor(args.rerank_factor);
    let searchable = SearchIndex::new(index.view());
    let mut ids = vec![-1i64; n * args.k];
    let mut scores = vec![0.0f32; n * args.k];
    let mut times = Vec::with_capacity(args.repeats as usize);
    for _ in 0..args.repeats {
        let start = Instant::now();
        if args.one_at_a_time {
            let mut searcher = Searcher::new(&searchable);
            for ((query, ids), scores) in queries
                .data
                .chunks_exact(dim)
                .zip(ids.chunks_exact_mut(args.k))
                .zip(scores.chunks_exact_mut(args.k))
            {
                searcher.search_one(query, &params, ids, scores)?;
            }
        } else {
            searchable.search_batch(
                &queries.data,
                &params,
                &mut ids,
                &mut scores,
                args.threads.par(),
            )?;
        }
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let seconds = times[times.len() / 2];
    if args.out.extension().is_some_and(|e| e == "tsv") {
        write_results_tsv(&args.out, &index, &ids, &scores, args.k)?;
    } else {
        write_npy_i64(&args.out, &ids, args.k)?;
        if index.item_keys().is_some() {
            eprintln!(
                "note: the index carries item keys; --out F.tsv writes them instead of the \
                 integer ids"
            );
        }
    }
    if let Some(path) = &args.scores {
        write_npy(path, &scores, args.k)?;
    }
    eprintln!(
        "searched {n} queries{} (k {}, nprobe {}) in {seconds:.3} s ({:.0} queries/s, {:.2} µs per query, kernel {})",
        if args.one_at_a_time {
            " one at a time"
        } else {
            ""
        },
        args.k,
        args.nprobe,
        n as f64 / seconds.max(1e-9),
        seconds * 1e6 / n.max(1) as f64,
        searchable.kernel().name()
    );
    Ok(())
}

/// Whether `path` names a `.npy` file.
fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// The lines of a UTF-8 text file, without their line ends (`\r\n` accepted); the file's
/// final line end does not start another line.
fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = poeem::fs::read_input(path).with_context(|| path.display().to_string())?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not UTF-8 text: {e}", path.display()))?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// Writes search results as TSV (see [`SearchArgs::out`]), atomically.
fn write_results_tsv(
    path: &Path,
    index: &Index,
    ids: &[i64],
    scores: &[f32],
    k: usize,
) -> Result<()> {
    let keys = index.item_keys();
    let mut spelled = Vec::with_capacity(ids.len());
    for &id in ids {
        spelled.push(match (u64::try_from(id), keys) {
            (Err(_), _) => None,
            (Ok(id), Some(keys)) => Some(keys.get(id)?.to_owned()),
            (Ok(id), None) => Some(id.to_string()),
        });
    }
    poeem::fs::write_atomically(path, |w| {
        use std::io::Write as _;
        writeln!(w, "query\trank\tid\tscore")?;
        for (i, (id, score)) in spelled.iter().zip(scores).enumerate() {
            if let Some(id) = id {
                writeln!(w, "{}\t{}\t{}\t{score}", i / k, i % k + 1, tsv_cell(id))?;
            }
        }
        Ok(())
    })
    .map_err(|e| anyhow::Error::new(e.source).context(e.path.display().to_string()))
}

/// Arguments of `poeem info` and `poeem verify`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Index file.
    #[arg(long)]
    index: PathBuf,
}

/// `poeem info`: header, section sizes, parameters and build metadata.
pub fn info(args: &IndexArgs) -> Result<()> {
    let index = Index::open(&args.index)?;
    let info = index.info();
    let p = index.params();
    outln!("file          {}", args.index.display());
    outln!("format        v{}", info.format_version);
    outln!("size          {} bytes", info.file_size);
    outln!("metric        {}", p.metric);
    outln!("items         {}", p.n_items);
    outln!(
        "dimension     {} (padded to {}){}",
        p.dim,
        p.padded_dim,
        if index.view().rotation().is_some() {
            ", rotated"
        } else {
            ""
        }
    );
    outln!("lists         {}", p.n_lists);
    outln!(
        "PQ            {} subspaces × {} bits ({} codewords each)",
        p.n_subspaces,
        p.n_bits,
        p.n_codewords()
    );
    outln!("code layout   {}", p.code_layout.name());
    if let Some(refine) = index.view().refine() {
        outln!("refine        {}", refine.kind());
    }
    let sizes = index.view().list_sizes();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let empty = sizes.iter().filter(|&&s| s == 0).count();
    outln!(
        "list sizes    mean {:.1}, largest {largest}, empty {empty}",
        p.n_items as f64 / p.n_lists as f64
    );
    outln!("sections");
    for section in &info.sections {
        outln!(
            "  {:<18} offset {:>12}  length {:>12}  crc32 {:08x}",
            section.name,
            section.offset,
            section.length,
            section.crc32
        );
    }
    outln!(
        "metadata\n{}",
        serde_json::to_string_pretty(index.metadata()).context("printing metadata")?
    );
    Ok(())
}

/// `poeem verify`: checks every checksum and code; fails on any corruption.
pub fn verify(args: &IndexArgs) -> Result<()> {
    let start = Instant::now();
    let index = Index::open(&args.index)?;
    index
        .verify()
        .with_context(|| format!("{} is corrupt", args.index.display()))?;
    outln!(
        "{}: OK ({} items, every section checksum matches; {:.2} s)",
        args.index.display(),
        index.params().n_items,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Arguments of `poeem import-reference`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Index file written by the reference (TensorFlow) Poeem implementation.
    #[arg(long)]
    input: PathBuf,
    /// Similarity the index serves (the reference file does not record it).
    #[arg(long, default_value = "ip")]
    metric: Metric,
    /// Index file to write (atomically).
    #[arg(long)]
    out: PathBuf,
}

/// `poeem import-reference`: converts a reference index file to this project's format.
pub fn import(args: &ImportArgs) -> Result<()> {
    check_outputs(
        &[Named::new("--input", &args.input)],
        &[Named::new("--out", &args.out)],
    )?;
    let imported = import_reference(&args.input, args.metric)?;
    write_index(&args.out, &imported.parts)?;
    outln!(
        "imported {} items from {} ({} with norm 0 dropped) into {}",
        imported.parts.params.n_items,
        args.input.display(),
        imported.n_dropped_zero_norm,
        args.out.display()
    );
    Ok(())
}
