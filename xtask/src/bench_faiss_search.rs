//! `cargo xtask bench-faiss search`: IVF-PQ search on real (or generated) vectors, poeem against
//! faiss.
//!
//! Both libraries get the same standardised (and, where `n_subspaces` does not divide the
//! dimension, zero-padded) base vectors, build the same IVF-PQ (same `n_lists`, `M`, 8 bits,
//! residual encoding) and answer the same held-out queries. Recall is computed here, the same way
//! for both, against exact neighbours found by brute force.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use faer::{Accum, MatMut, MatRef};
use poeem::build::{BuildConfig, BuildReport, build_index};
use poeem::pq::{OpqConfig, OpqInit, OpqObjective, Par};
use poeem::search::{Index, Metric, RefineKind, SearchIndex, SearchParams, Searcher, write_index};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::bench_faiss::{find_faiss_python, rayon_pool};
use poeem::pipeline::{markdown_table as markdown, median};

/// Arguments of `bench-faiss search`.
#[derive(clap::Args)]
pub(crate) struct SearchArgs {
    /// Vectors to index (`.npy` or `.fvecs`); standardised per column, then split into base and
    /// queries.
    #[arg(
        long,
        required_unless_present = "generate",
        conflicts_with = "generate"
    )]
    vectors: Option<PathBuf>,
    /// Instead of `--vectors`: `ROWSxDIM` clustered Gaussian vectors (100 clusters with
    /// standard normal centres, spread 1 per coordinate; seeded by `--seed`), e.g. `2000000x64`.
    #[arg(long, value_parser = parse_rows_by_dim)]
    generate: Option<(usize, usize)>,
    /// Coarse lists (IVF).
    #[arg(long, default_value_t = 1024)]
    n_lists: usize,
    /// PQ subspaces; the dimension is zero-padded to a multiple of it.
    #[arg(long, default_value_t = 16)]
    n_subspaces: usize,
    /// Bits per code: 8 (faiss `IVF{n},PQ{M}`) or 4 (poeem's fast-scan layout against faiss
    /// `IVF{n},PQ{M}x4fsr`).
    #[arg(long, default_value_t = 8)]
    n_bits: u32,
    /// Re-rank the best k·R candidates exactly: poeem stores `--refine f32` data, faiss wraps
    /// its index in `,RFlat` with `k_factor` R (0: no re-ranking).
    #[arg(long, default_value_t = 0)]
    rerank_factor: usize,
    /// With `--rerank-factor`: poeem's refinement data, `f32` (faiss `,RFlat`), `f16` (faiss
    /// `,Refine(SQfp16)`) or `pq8` (an 8-bit PQ of the residual; faiss `,Refine(PQ{M}x8)`, an
    /// 8-bit PQ of the vectors, the same bytes per item).
    #[arg(long, default_value = "f32")]
    refine: RefineKind,
    /// Lists probed per query, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    nprobe: Vec<usize>,
    /// Neighbours returned per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Rows held out as queries (seeded shuffle).
    #[arg(long, default_value_t = 10_000)]
    queries: usize,
    /// Similarity: `l2` (smallest squared distance) or `ip` (largest inner product).
    #[arg(long, value_enum, default_value_t = BenchMetric::L2)]
    metric: BenchMetric,
    /// Timed repetitions of each search; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Threads for building the indexes (both sides) and the ground truth.
    #[arg(long, default_value_t = 2)]
    build_threads: usize,
    /// k-means iterations of both levels in both libraries, run to the end (default: each
    /// library's own defaults).
    #[arg(long)]
    kmeans_iterations: Option<usize>,
    /// Seed of the query split and of both builds.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Learn a rotation before the IVF-PQ: poeem's `--opq`, faiss's `OPQ{M},IVF{n},PQ{M}`.
    #[arg(long)]
    opq: bool,
    /// With `--opq`: poeem's initial rotation, `random` (its default, as faiss's) or
    /// `identity`.
    #[arg(long, value_enum, default_value_t = BenchOpqInit::Random)]
    opq_init: BenchOpqInit,
    /// With `--opq`: what poeem's rounds fit the rotation to, `vectors` (its default, as
    /// faiss's) or `ivf-residuals`.
    #[arg(long, value_enum, default_value_t = BenchOpqObjective::Vectors)]
    opq_objective: BenchOpqObjective,
    /// With `--opq`: poeem's alternation rounds [default: `OpqConfig`'s].
    #[arg(long)]
    opq_rounds: Option<usize>,
    /// Use a seeded sample of this many rows (queries included) instead of all of them.
    #[arg(long)]
    rows: Option<usize>,
    /// Zero-pad the vectors to this dimension (at least the data's; rounded up to a multiple
    /// of M) instead of the next multiple of M.
    #[arg(long)]
    pad_to: Option<usize>,
    /// Scale every row to unit norm after standardising (with `--metric ip`: cosine ranking).
    #[arg(long)]
    normalise: bool,
    /// Python interpreter with faiss (default: $POEEM_PYTHON, /tmp/faiss-venv/bin/python, python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Also build poeem's 8-bit index (same lists and M, no refinement) and time it in the
    /// same rounds: the baseline that 4-bit re-ranked search is judged against.
    #[arg(long)]
    against_8bit: bool,
}

/// poeem's OPQ initial rotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BenchOpqInit {
    /// A seeded random rotation.
    Random,
    /// The identity.
    Identity,
}

/// poeem's OPQ objectives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BenchOpqObjective {
    /// A PQ of the rotated vectors.
    Vectors,
    /// The whole IVF-PQ codec.
    IvfResiduals,
}

/// The metrics both libraries share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BenchMetric {
    /// Smallest squared Euclidean distance.
    L2,
    /// Largest inner product.
    Ip,
}

impl BenchMetric {
    fn poeem(self) -> Metric {
        match self {
            BenchMetric::L2 => Metric::L2,
            BenchMetric::Ip => Metric::InnerProduct,
        }
    }

    fn name(self) -> &'static str {
        self.poeem().name()
    }
}

/// The timed search modes: (key shared with the Python script, description).
const MODES: [(&str, &str); 3] = [
    ("one", "1 thread, one query per call"),
    ("batch1", "1 thread, batched"),
    ("batch2", "2 threads, batched"),
];

pub(crate) fn search(args: &SearchArgs) -> Result<()> {
    let Some(python) = find_faiss_python(args.python.as_deref()) else {
        println!("faiss is missing: no Python that can `import faiss, numpy` was found; skipping.");
        println!(
            "Install one with: python3 -m venv /tmp/faiss-venv && /tmp/faiss-venv/bin/pip install faiss-cpu==1.15.1 numpy"
        );
        return Ok(());
    };
    check_args(args)?;
    rayon_pool(args.build_threads.max(2))?;
    let repeats = args.repeats.max(1);
    let (m, k) = (args.n_subspaces, args.k);

    let (source, dim, mut data) = match (&args.vectors, args.generate) {
        (Some(path), _) => {
            let vectors = poeem::io::read_vectors(path)
                .with_context(|| format!("reading {}", path.display()))?;
            (path.display().to_string(), vectors.dim, vectors.data)
        }
        (None, Some((rows, dim))) => (
            format!(
                "generated clustered Gaussian (100 clusters, spread 1, seed {})",
                args.seed
            ),
            dim,
            poeem::synthetic::clustered_gaussian(rows, dim, GENERATED_CLUSTERS, 1.0, args.seed),
        ),
        (None, None) => bail!("give --vectors or --generate"),
    };
    if let Some(rows) = args.rows {
        data = sample_rows(&data, dim, rows, args.seed);
    }
    let n = data.len() / dim;
    ensure!(
        n > args.queries + args.n_lists,
        "{source}: {n} rows are too few to hold out {} queries and still train {} lists",
        args.queries,
        args.n_lists
    );
    standardise_columns(&mut data, dim)?;
    if args.normalise {
        normalise_rows(&mut data, dim);
    }
    let padded_dim = args.pad_to.unwrap_or(dim).max(dim).div_ceil(m) * m;
    let (queries, base) = split_and_pad(&data, dim, padded_dim, args.queries, args.seed);
    drop(data);
    let (nq, nb) = (args.queries, base.len() / padded_dim);

    println!(
        "data: {source} ({n} × {dim}), standardised per column; {nb} base vectors, {nq} held-out queries (seed {})",
        args.seed
    );
    if padded_dim != dim {
        println!(
            "dimension {dim} is not a multiple of M = {m}: both libraries get the vectors zero-padded to {padded_dim}"
        );
    }
    println!(
        "index: {}IVF{},PQ{m}x{}{}, residuals encoded, metric {}; k = {k}{}",
        if args.opq {
            let init = match args.opq_init {
                BenchOpqInit::Random => "random",
                BenchOpqInit::Identity => "identity",
            };
            format!("OPQ{m} (poeem's from a {init} rotation),")
        } else {
            String::new()
        },
        args.n_lists,
        args.n_bits,
        if args.n_bits == 4 { " (fast-scan)" } else { "" },
        args.metric.name(),
        if args.rerank_factor > 0 {
            format!(
                "; re-ranking of the best k·{} (poeem --refine {}, faiss {})",
                args.rerank_factor,
                args.refine.name(),
                match args.refine {
                    RefineKind::F32 => "RFlat".to_owned(),
                    RefineKind::F16 => "Refine(SQfp16)".to_owned(),
                    RefineKind::Pq8 => format!("Refine(PQ{m}x8)"),
                }
            )
        } else {
            String::new()
        }
    );

    let start = Instant::now();
    let truth = exact_top_k(
        &base,
        &queries,
        padded_dim,
        k,
        args.metric,
        Par::rayon(args.build_threads.max(1)),
    );
    println!(
        "exact ground truth: brute force (GEMM) in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let dir = crate::target_dir().join("bench-faiss");
    std::fs::create_dir_all(&dir)?;
    let (base_path, query_path) = (dir.join("search_base.npy"), dir.join("search_queries.npy"));
    poeem::io::write_npy(&base_path, &base, padded_dim)?;
    poeem::io::write_npy(&query_path, &queries, padded_dim)?;

    // faiss builds first, then poeem; then each timed search runs on faiss and at once on poeem,
    // so that both meet the same machine load.
    let script = dir.join("faiss_search.py");
    std::fs::write(&script, include_str!("faiss_search.py"))?;
    let mut peer = FaissProcess::spawn(
        &python,
        &script,
        &[
            base_path.as_os_str(),
            query_path.as_os_str(),
            dir.as_os_str(),
            args.metric.name().as_ref(),
        ],
        &[
            args.n_lists,
            m,
            k,
            args.seed as usize,
            args.build_threads,
            args.kmeans_iterations.unwrap_or(0),
            args.n_bits as usize,
            args.rerank_factor,
            usize::from(args.opq),
        ],
        &[args.refine.name()],
    )?;
    let faiss = peer.receive()?;

    // poeem: build, write the index file, and search it through the mmap, as a server would.
    let mut config = BuildConfig::new(args.n_lists, m, args.n_bits);
    config.metric = args.metric.poeem();
    if args.rerank_factor > 0 {
        config.refine = Some(args.refine);
    }
    config.seed = args.seed;
    if args.opq {
        config.opq = Some(OpqConfig {
            init: match args.opq_init {
                BenchOpqInit::Random => OpqInit::Random,
                BenchOpqInit::Identity => OpqInit::Identity,
            },
            objective: match args.opq_objective {
                BenchOpqObjective::Vectors => OpqObjective::Vectors,
                BenchOpqObjective::IvfResiduals => OpqObjective::IvfResiduals,
            },
            n_rounds: args.opq_rounds.unwrap_or(OpqConfig::default().n_rounds),
            ..OpqConfig::default()
        });
    }
    if let Some(iterations) = args.kmeans_iterations {
        config.kmeans.max_iter = iterations;
        config.kmeans.tolerance = 0.0;
    }
    let build_and_open =
        |config: &BuildConfig, name: &str| -> Result<(Index, BuildReport, f64, u64)> {
            let start = Instant::now();
            let par = Par::rayon(args.build_threads.max(1));
            let (parts, report) = build_index(&base, padded_dim, None, config, par, &mut |_| {})?;
            let seconds = start.elapsed().as_secs_f64();
            let path = dir.join(name);
            write_index(&path, &parts)?;
            let bytes = std::fs::metadata(&path)?.len();
            Ok((Index::open(&path)?, report, seconds, bytes))
        };
    let (index, report, build_seconds, index_bytes) = build_and_open(&config, "search.poeem")?;
    let search_index = SearchIndex::new(index.view());
    let baseline = if args.against_8bit {
        let config = BuildConfig {
            n_bits: 8,
            refine: None,
            ..config.clone()
        };
        Some(build_and_open(&config, "search-8bit.poeem")?.0)
    } else {
        None
    };
    let baseline_index = baseline
        .as_ref()
        .map(|index| SearchIndex::new(index.view()));

    let mut rows = Vec::new();
    for (mode, label) in MODES {
        for &nprobe in &args.nprobe {
            let params = SearchParams::new(k, nprobe).with_rerank_factor(args.rerank_factor);
            let (mut ids, mut scores) = (vec![-1i64; nq * k], vec![0.0f32; nq * k]);
            let (mut base_ids, mut base_scores) = (ids.clone(), scores.clone());
            let (mut faiss_times, mut times, mut base_times) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..repeats {
                let answer = peer.request(&format!("{mode} {nprobe}"))?;
                faiss_times.push(
                    answer["seconds"]
                        .as_f64()
                        .context("the faiss script answered without seconds")?,
                );
                times.push(time_search(
                    &search_index,
                    mode,
                    &queries,
                    &params,
                    &mut ids,
                    &mut scores,
                )?);
                if let Some(baseline) = &baseline_index {
                    base_times.push(time_search(
                        baseline,
                        mode,
                        &queries,
                        &SearchParams::new(k, nprobe),
                        &mut base_ids,
                        &mut base_scores,
                    )?);
                }
            }
            let faiss_ids = read_ids(&dir.join(format!("faiss_ids_{mode}_{nprobe}.npy")), nq, k)?;
            let (faiss_qps, poeem_qps) =
                (nq as f64 / median(&faiss_times), nq as f64 / median(&times));
            let mut row = vec![
                label.to_owned(),
                nprobe.to_string(),
                format!("{:.4}", recall(&faiss_ids, &truth, k)),
                format!("{:.4}", recall(&ids, &truth, k)),
                format!("{faiss_qps:.0}"),
                format!("{poeem_qps:.0}"),
                format!("{:.2}×", poeem_qps / faiss_qps),
            ];
            if baseline_index.is_some() {
                let base_qps = nq as f64 / median(&base_times);
                row.extend([
                    format!("{:.4}", recall(&base_ids, &truth, k)),
                    format!("{base_qps:.0}"),
                    format!("{:.2}×", poeem_qps / base_qps),
                ]);
            }
            rows.push(row);
        }
    }
    peer.finish()?;

    println!(
        "faiss index: {}",
        faiss["settings"]["factory"].as_str().unwrap_or("?")
    );
    println!(
        "faiss {} ({}); recall@{k} = mean over queries of |returned k ∩ true k| / k (missing results count as misses); QPS = queries / median of {repeats} timed runs",
        faiss["faiss_version"].as_str().unwrap_or("?"),
        python.display()
    );
    println!(
        "poeem scan kernel: {}; lists probed by L2 distance to the centroids (poeem's default){}",
        search_index.kernel().name(),
        if args.metric == BenchMetric::Ip {
            "; faiss probes by inner product"
        } else {
            ""
        }
    );
    println!(
        "faiss, one query per call: a Python loop over the SWIG search on pre-made pointers; the loop's own cost, {:.2} µs per call on an empty index, is included, not subtracted",
        faiss["call_overhead_seconds"].as_f64().unwrap_or(f64::NAN) * 1e6
    );
    println!();
    let (faiss_recall, poeem_recall) = (format!("faiss recall@{k}"), format!("poeem recall@{k}"));
    let base_recall = format!("poeem 8-bit recall@{k}");
    let mut header = vec![
        "mode",
        "nprobe",
        &faiss_recall,
        &poeem_recall,
        "faiss QPS",
        "poeem QPS",
        "poeem/faiss",
    ];
    if baseline_index.is_some() {
        header.extend([base_recall.as_str(), "poeem 8-bit QPS", "poeem/8-bit"]);
    }
    print!("{}", markdown(&header, &rows));
    println!();
    let seconds = |key: &str| faiss[key].as_f64().unwrap_or(f64::NAN);
    let (faiss_train, faiss_add) = (seconds("train_seconds"), seconds("add_seconds"));
    let settings = &faiss["settings"];
    let km = &config.kmeans;
    println!(
        "build on {} thread(s), one run each; k-means ({}): faiss {} coarse / {} PQ iterations, at most {} / {} points per centroid; poeem at most {} iterations on both levels (stopping when the inertia improves by less than {}), at most {:?} points per centroid",
        args.build_threads,
        if args.kmeans_iterations.is_some() {
            "--kmeans-iterations"
        } else {
            "each library's defaults"
        },
        settings["coarse_kmeans_iterations"],
        settings["pq_kmeans_iterations"],
        settings["coarse_max_points_per_centroid"],
        settings["pq_max_points_per_centroid"],
        km.max_iter,
        km.tolerance,
        km.max_points_per_centroid,
    );
    print!(
        "{}",
        markdown(
            &["library", "train", "encode + add", "total", "index size"],
            &[
                vec![
                    "faiss".to_owned(),
                    format!("{faiss_train:.2} s"),
                    format!("{faiss_add:.2} s"),
                    format!("{:.2} s", faiss_train + faiss_add),
                    format!("{:.1} MB (serialised)", seconds("index_bytes") / 1e6),
                ],
                vec![
                    "poeem".to_owned(),
                    format!("{:.2} s", report.train_seconds),
                    format!("{:.2} s", report.encode_seconds),
                    format!("{build_seconds:.2} s"),
                    format!("{:.1} MB (file)", index_bytes as f64 / 1e6),
                ],
            ]
        )
    );
    println!(
        "poeem relative distortion (mean ‖x − x̂‖² / mean ‖x‖²): {:.4}",
        report.relative_distortion
    );
    Ok(())
}

/// Seconds of one timed search of `queries` on `index` in `mode` (a key of [`MODES`]).
fn time_search(
    index: &SearchIndex<'_>,
    mode: &str,
    queries: &[f32],
    params: &SearchParams,
    ids: &mut [i64],
    scores: &mut [f32],
) -> Result<f64> {
    let k = params.k;
    let dim = queries.len() / (ids.len() / k);
    ids.fill(-1);
    let start = Instant::now();
    match mode {
        "one" => {
            let mut searcher = Searcher::new(index);
            for ((q, i), s) in queries
                .chunks_exact(dim)
                .zip(ids.chunks_exact_mut(k))
                .zip(scores.chunks_exact_mut(k))
            {
                searcher.search_one(q, params, i, s)?;
            }
        }
        "batch1" => index.search_batch(queries, params, ids, scores, Par::Seq)?,
        _ => index.search_batch(queries, params, ids, scores, Par::rayon(2))?,
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Clusters of `--generate`'s vectors.
const GENERATED_CLUSTERS: usize = 100;

/// `ROWSxDIM` (both at least 1).
fn parse_rows_by_dim(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected ROWSxDIM with both at least 1, e.g. 2000000x64; got {s:?}");
    let (rows, dim) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let (rows, dim) = (
        rows.trim().parse::<usize>().map_err(|_| bad())?,
        dim.trim().parse::<usize>().map_err(|_| bad())?,
    );
    if rows == 0 || dim == 0 {
        return Err(bad());
    }
    Ok((rows, dim))
}

fn check_args(args: &SearchArgs) -> Result<()> {
    ensure!(args.k >= 1, "--k must be at least 1");
    ensure!(
        matches!(args.n_bits, 4 | 8),
        "--n-bits must be 4 (fast-scan) or 8"
    );
    ensure!(args.queries >= 1, "--queries must be at least 1");
    ensure!(args.n_lists >= 1, "--n-lists must be at least 1");
    ensure!(args.n_subspaces >= 1, "--n-subspaces must be at least 1");
    ensure!(
        args.build_threads >= 1,
        "--build-threads must be at least 1"
    );
    ensure!(!args.nprobe.is_empty(), "--nprobe needs at least one value");
    ensure!(
        !args.against_8bit || args.n_bits == 4,
        "--against-8bit compares a 4-bit index with the 8-bit one: give --n-bits 4"
    );
    ensure!(
        args.kmeans_iterations != Some(0),
        "--kmeans-iterations must be at least 1"
    );
    if let Some(&bad) = args.nprobe.iter().find(|&&p| p == 0 || p > args.n_lists) {
        bail!(
            "--nprobe {bad} is not between 1 and --n-lists ({})",
            args.n_lists
        );
    }
    Ok(())
}

/// Scales every column to mean 0 and standard deviation 1 (a constant column becomes 0).
pub(crate) fn standardise_columns(data: &mut [f32], dim: usize) -> Result<()> {
    if let Some(at) = data.iter().position(|v| !v.is_finite()) {
        bail!(
            "the vectors hold a non-finite value at row {}, column {}",
            at / dim,
            at % dim
        );
    }
    let n = (data.len() / dim) as f64;
    let mut mean = vec![0.0f64; dim];
    let mut square = vec![0.0f64; dim];
    for row in data.chunks_exact(dim) {
        for ((m, s), &v) in mean.iter_mut().zip(&mut square).zip(row) {
            *m += f64::from(v);
            *s += f64::from(v) * f64::from(v);
        }
    }
    let scale: Vec<(f64, f64)> = mean
        .iter()
        .zip(&square)
        .map(|(&sum, &sum_sq)| {
            let m = sum / n;
            let sd = (sum_sq / n - m * m).max(0.0).sqrt();
            (m, if sd > 0.0 { 1.0 / sd } else { 0.0 })
        })
        .collect();
    for row in data.chunks_exact_mut(dim) {
        for (v, &(m, inv)) in row.iter_mut().zip(&scale) {
            *v = ((f64::from(*v) - m) * inv) as f32;
        }
    }
    Ok(())
}

/// Shuffles the rows (seeded), returns (the first `n_queries` rows, the others), each row
/// zero-padded from `dim` to `padded_dim`.
fn split_and_pad(
    data: &[f32],
    dim: usize,
    padded_dim: usize,
    n_queries: usize,
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let mut order: Vec<usize> = (0..data.len() / dim).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let gather = |rows: &[usize]| {
        let mut out = vec![0.0f32; rows.len() * padded_dim];
        for (dst, &r) in out.chunks_exact_mut(padded_dim).zip(rows) {
            dst[..dim].copy_from_slice(&data[r * dim..(r + 1) * dim]);
        }
        out
    };
    (gather(&order[..n_queries]), gather(&order[n_queries..]))
}

/// A seeded sample of `rows` rows of `data` (all of them when there are fewer), in their order.
fn sample_rows(data: &[f32], dim: usize, rows: usize, seed: u64) -> Vec<f32> {
    let n = data.len() / dim;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x0005_A3B1));
    order.truncate(rows.min(n));
    order.sort_unstable();
    order
        .iter()
        .flat_map(|&r| &data[r * dim..(r + 1) * dim])
        .copied()
        .collect()
}

/// Scales every row to unit norm (zero rows stay zero).
fn normalise_rows(data: &mut [f32], dim: usize) {
    for row in data.chunks_exact_mut(dim) {
        let norm = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            row.iter_mut()
                .for_each(|v| *v = (f64::from(*v) / norm) as f32);
        }
    }
}

/// Queries per ground-truth task, and base rows per GEMM block.
const QUERY_BLOCK: usize = 64;
const BASE_BLOCK: usize = 4096;

/// The exact `k` nearest base rows of each query by `metric`, best first (ties to the lower
/// row), as `n_queries × k` row numbers. Dot products come from GEMMs over blocks of queries
/// and base rows; squared distances are `‖x‖² − 2⟨q, x⟩` (the query's norm orders nothing).
fn exact_top_k(
    base: &[f32],
    queries: &[f32],
    dim: usize,
    k: usize,
    metric: BenchMetric,
    par: Par,
) -> Vec<i64> {
    let nb = base.len() / dim;
    let (bias, alpha): (Vec<f32>, f32) = match metric {
        BenchMetric::L2 => (
            base.chunks_exact(dim)
                .map(|x| x.iter().map(|v| v * v).sum())
                .collect(),
            -2.0,
        ),
        BenchMetric::Ip => (vec![0.0; nb], -1.0),
    };
    let mut out = vec![0i64; queries.len() / dim * k];
    let task = |(queries, out): (&[f32], &mut [i64])| {
        let nq = queries.len() / dim;
        let mut dots = vec![0.0f32; nq * BASE_BLOCK];
        // Per query, the best (cost, row) so far in ascending order.
        let mut best: Vec<Vec<(f32, usize)>> = vec![Vec::with_capacity(k + 1); nq];
        for (b, block) in base.chunks(BASE_BLOCK * dim).enumerate() {
            let rows = block.len() / dim;
            let dots = &mut dots[..nq * rows];
            faer::linalg::matmul::matmul(
                MatMut::from_row_major_slice_mut(dots, nq, rows),
                Accum::Replace,
                MatRef::from_row_major_slice(queries, nq, dim),
                MatRef::from_row_major_slice(block, rows, dim).transpose(),
                alpha,
                Par::Seq,
            );
            let first = b * BASE_BLOCK;
            for (dots, best) in dots.chunks_exact(rows).zip(&mut best) {
                for (r, (&d, &bias)) in dots.iter().zip(&bias[first..first + rows]).enumerate() {
                    let cost = bias + d;
                    if best.len() == k && cost >= best[k - 1].0 {
                        continue;
                    }
                    let at = best.partition_point(|&(c, _)| c <= cost);
                    best.insert(at, (cost, first + r));
                    best.truncate(k);
                }
            }
        }
        for (row, best) in out.chunks_exact_mut(k).zip(&best) {
            row.fill(-1);
            for (o, &(_, id)) in row.iter_mut().zip(best) {
                *o = id as i64;
            }
        }
    };
    let chunks = queries
        .chunks(QUERY_BLOCK * dim)
        .zip(out.chunks_mut(QUERY_BLOCK * k));
    match par {
        Par::Seq => chunks.for_each(task),
        Par::Rayon(_) => chunks.collect::<Vec<_>>().into_par_iter().for_each(task),
    }
    out
}

/// Recall@k: the mean over queries of the fraction of the `k` true neighbours among the `k`
/// returned ids (−1, no result, never matches).
fn recall(found: &[i64], truth: &[i64], k: usize) -> f64 {
    let hits: usize = found
        .chunks_exact(k)
        .zip(truth.chunks_exact(k))
        .map(|(found, truth)| {
            found
                .iter()
                .filter(|&&id| id >= 0 && truth.contains(&id))
                .count()
        })
        .sum();
    hits as f64 / truth.len() as f64
}

/// Reads an `n × k` int64 `.npy` of result ids written by the faiss script.
pub(crate) fn read_ids(path: &Path, n: usize, k: usize) -> Result<Vec<i64>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .with_context(|| format!("{}: not a .npy file", path.display()))?;
    let shape = npy.shape().to_vec();
    ensure!(
        shape == [n as u64, k as u64],
        "{}: expected shape [{n}, {k}], found {shape:?}",
        path.display()
    );
    npy.into_vec::<i64>()
        .with_context(|| format!("{}: expected int64 ids", path.display()))
}

/// The faiss script, running: it answers each request line with one JSON line.
struct FaissProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl FaissProcess {
    /// Starts `script` with the OpenBLAS overrides of these machines removed (they select a
    /// slower kernel), as `bench-faiss quantizers` does, so that the peer runs at its best. Its
    /// stderr goes to ours.
    fn spawn(
        python: &Path,
        script: &Path,
        paths: &[&std::ffi::OsStr],
        numbers: &[usize],
        words: &[&str],
    ) -> Result<Self> {
        let mut child = crate::bench_faiss::python_command(python)
            .arg(script)
            .args(paths)
            .args(numbers.iter().map(ToString::to_string))
            .args(words)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the faiss script")?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        Ok(Self {
            child,
            stdin,
            stdout: BufReader::new(stdout.context("the faiss script's stdout")?),
        })
    }

    /// Reads the script's next JSON line.
    fn receive(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            bail!("the faiss script ended early ({status}); its errors are printed above");
        }
        serde_json::from_str(&line)
            .with_context(|| format!("reading the faiss script's JSON: {line}"))
    }

    /// Sends one request line and reads the answer.
    fn request(&mut self, line: &str) -> Result<serde_json::Value> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the faiss script's stdin is closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .context("writing to the faiss script")?;
        self.receive()
    }

    /// Closes the script's input and waits for it to end.
    fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        ensure!(status.success(), "the faiss script failed ({status})");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked GEMM top-k agrees with a direct sort of exact scores.
    #[test]
    fn exact_top_k_matches_a_sort() {
        let dim = 7;
        let base = poeem::synthetic::clustered_gaussian(BASE_BLOCK + 300, dim, 20, 0.5, 3);
        let queries = poeem::synthetic::clustered_gaussian(QUERY_BLOCK + 5, dim, 20, 0.5, 4);
        let k = 5;
        for metric in [BenchMetric::L2, BenchMetric::Ip] {
            let got = exact_top_k(&base, &queries, dim, k, metric, Par::Seq);
            for (q, row) in queries.chunks_exact(dim).zip(got.chunks_exact(k)) {
                let mut scored: Vec<(f64, usize)> = base
                    .chunks_exact(dim)
                    .enumerate()
                    .map(|(i, x)| {
                        let cost = match metric {
                            BenchMetric::L2 => q
                                .iter()
                                .zip(x)
                                .map(|(a, b)| f64::from(a - b).powi(2))
                                .sum::<f64>(),
                            BenchMetric::Ip => {
                                -q.iter().zip(x).map(|(a, b)| f64::from(a * b)).sum::<f64>()
                            }
                        };
                        (cost, i)
                    })
                    .collect();
                scored.sort_by(|a, b| a.0.total_cmp(&b.0));
                let want: Vec<i64> = scored[..k].iter().map(|&(_, i)| i as i64).collect();
                assert_eq!(row, want.as_slice(), "{metric:?}");
            }
        }
    }

    #[test]
    fn rows_by_dim_parses_and_rejects() {
        assert_eq!(parse_rows_by_dim("2000000x64"), Ok((2_000_000, 64)));
        assert_eq!(parse_rows_by_dim("10X3"), Ok((10, 3)));
        for bad in ["", "64", "0x64", "10x0", "x64", "10x", "ax3", "10x3x2"] {
            assert!(parse_rows_by_dim(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn recall_counts_hits_and_ignores_missing_results() {
        let truth = [1, 2, 3, 4, 5, 6];
        assert_eq!(recall(&[3, 2, 1, 4, 5, 6], &truth, 3), 1.0);
        assert_eq!(recall(&[1, -1, 9, 7, 8, 6], &truth, 3), 2.0 / 6.0);
    }

    #[test]
    fn standardising_gives_zero_mean_unit_variance_and_zeroes_constant_columns() {
        let mut data = vec![1.0, 5.0, 3.0, 5.0, 5.0, 5.0];
        standardise_columns(&mut data, 2).unwrap();
        let want = [-1.224_744_9, 0.0, 0.0, 0.0, 1.224_744_9, 0.0];
        assert!(
            data.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{data:?}"
        );
        assert!(standardise_columns(&mut [1.0, f32::NAN], 2).is_err());
    }

    #[test]
    fn split_pads_and_keeps_every_row_once() {
        let data: Vec<f32> = (0..30).map(|v| v as f32).collect();
        let (q, b) = split_and_pad(&data, 3, 4, 4, 9);
        assert_eq!((q.len(), b.len()), (16, 24));
        let mut firsts: Vec<f32> = q.chunks(4).chain(b.chunks(4)).map(|r| r[0]).collect();
        assert!(
            q.chunks(4)
                .chain(b.chunks(4))
                .all(|r| r[3] == 0.0 && r[1] == r[0] + 1.0)
        );
        firsts.sort_by(f32::total_cmp);
        assert_eq!(firsts, (0..10).map(|v| (3 * v) as f32).collect::<Vec<_>>());
    }
}
