//! faiss's post-hoc indexes for `cargo xtask reproduce --faiss`: `IVF{J},PQ{M}x{b}` and
//! `OPQ{M},IVF{J},PQ{M}x{b}` built by faiss, through a Python that can `import faiss`, on the
//! item embeddings poeem's post-hoc indexes use. faiss only ranks the items; xtask scores the
//! rankings with its own metric code, as it does poeem's.
//!
//! The vectors go to the script (`faiss_posthoc.py`, embedded) as `.npy` files in a scratch
//! folder, with a JSON configuration; the script saves one int64 `.npy` of labels per index and
//! nprobe there and prints a JSON summary (build time, distortion, faiss version).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::bench_faiss::{find_faiss_python, python_command};
use crate::bench_faiss_search::read_ids;

/// The faiss script, embedded so that the binary runs from any folder.
const SCRIPT: &str = include_str!("faiss_posthoc.py");

/// The largest seed: faiss's k-means seeds are C ints and the script uses `seed`, `seed + 1`
/// and `seed + 2`.
const MAX_SEED: u64 = (1 << 31) - 3;

/// The most bits per PQ code accepted (2¹⁶ codewords per subspace).
const MAX_BITS: u32 = 16;

/// Lines of the script's stderr kept in an error (the end, where Python's traceback is).
const STDERR_LINES: usize = 30;

/// The faiss post-hoc indexes of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaissIndex {
    /// `IVF{J},PQ{M}x{b}`: coarse lists, residuals product-quantized.
    IvfPq,
    /// `OPQ{M},IVF{J},PQ{M}x{b}`: the same after a rotation learned by OPQ.
    OpqIvfPq,
}

impl FaissIndex {
    /// The name shown in tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FaissIndex::IvfPq => "faiss IVF-PQ",
            FaissIndex::OpqIvfPq => "faiss OPQ+IVF-PQ",
        }
    }

    /// The `index_factory` string of this index.
    pub(crate) fn factory(self, n_lists: usize, n_subspaces: usize, n_bits: u32) -> String {
        let ivf_pq = format!("IVF{n_lists},PQ{n_subspaces}x{n_bits}");
        match self {
            FaissIndex::IvfPq => ivf_pq,
            FaissIndex::OpqIvfPq => format!("OPQ{n_subspaces},{ivf_pq}"),
        }
    }
}

/// How faiss builds and searches its indexes.
#[derive(Clone, Debug)]
pub(crate) struct FaissSettings {
    /// Coarse lists (`J`).
    pub(crate) n_lists: usize,
    /// PQ subspaces (`M`); must divide the dimension.
    pub(crate) n_subspaces: usize,
    /// Bits per subspace code (1 to 16).
    pub(crate) n_bits: u32,
    /// Rank by inner product (`METRIC_INNER_PRODUCT`) rather than squared L2 distance.
    pub(crate) inner_product: bool,
    /// Results per query.
    pub(crate) k: usize,
    /// Lists probed, one search each (1 to `n_lists`).
    pub(crate) nprobes: Vec<usize>,
    /// Seed of the coarse k-means (`seed`), of the PQ's (`seed + 1`) and of OPQ's PQ
    /// (`seed + 2`); at most 2³¹ − 3.
    pub(crate) seed: u64,
    /// OpenMP threads for build and search (0: faiss's default).
    pub(crate) threads: usize,
}

/// One faiss index, built and searched.
#[derive(Clone, Debug)]
pub(crate) struct FaissResult {
    /// Which index.
    pub(crate) index: FaissIndex,
    /// Train + add, measured inside Python with `perf_counter`.
    pub(crate) build_seconds: f64,
    /// Σ‖x − x̂‖² / Σ‖x‖² over the items (the same as the ratio of the means), x̂ =
    /// `sa_decode(sa_encode(x))`: the coarse centroid plus the decoded residual, rotated back
    /// where OPQ is used. NaN when every item is zero.
    pub(crate) relative_distortion: f64,
    /// One per nprobe, in the settings' order: `n_queries × k` item rows, row-major, best first
    /// within a query; `u32::MAX` where faiss found fewer than `k` items.
    pub(crate) rankings: Vec<Vec<u32>>,
    /// `faiss.__version__`.
    pub(crate) faiss_version: String,
}

/// A Python that can `import faiss, numpy` (`python` first, then the usual places), or `None`.
pub(crate) fn available(python: Option<&Path>) -> Option<PathBuf> {
    find_faiss_python(python)
}

/// Builds each of `indexes` with faiss on `items` (row-major `n × dim`; item `i` is row `i`)
/// and searches it with `queries` (row-major, `dim` wide) at each of the settings' nprobes.
///
/// One run of the script serves every index. faiss's k-means are seeded and polysemous training
/// is off; with one thread, repeated runs give the same rankings (with more, faiss's reductions
/// may differ in the last bits).
///
/// # Errors
/// When the inputs or settings are invalid, when the script cannot run or fails (its stderr is
/// quoted), or when its output is not what was asked for.
pub(crate) fn post_hoc(
    python: &Path,
    items: &[f32],
    queries: &[f32],
    dim: usize,
    indexes: &[FaissIndex],
    settings: &FaissSettings,
) -> Result<Vec<FaissResult>> {
    let n_items = check_vectors("items", items, dim)?;
    let n_queries = check_vectors("queries", queries, dim)?;
    ensure!(
        u32::try_from(n_items).is_ok(),
        "faiss: {n_items} items are too many to number with u32"
    );
    check_settings(settings, n_items, dim)?;
    if indexes.is_empty() {
        return Ok(Vec::new());
    }

    let scratch = ScratchDir::create()?;
    let dir = scratch.path();
    let items_path = dir.join("items.npy");
    let queries_path = dir.join("queries.npy");
    poeem::io::write_npy(&items_path, items, dim)?;
    poeem::io::write_npy(&queries_path, queries, dim)?;
    let label_paths: Vec<Vec<PathBuf>> = (0..indexes.len())
        .map(|i| {
            (0..settings.nprobes.len())
                .map(|j| dir.join(format!("labels_{i}_{j}.npy")))
                .collect()
        })
        .collect();
    let index_specs = indexes
        .iter()
        .zip(&label_paths)
        .map(|(index, paths)| {
            Ok(json!({
                "factory": index.factory(settings.n_lists, settings.n_subspaces, settings.n_bits),
                "labels": paths.iter().map(|p| utf8(p)).collect::<Result<Vec<_>>>()?,
            }))
        })
        .collect::<Result<Vec<Value>>>()?;
    let config = json!({
        "items": utf8(&items_path)?,
        "queries": utf8(&queries_path)?,
        "metric": if settings.inner_product { "ip" } else { "l2" },
        "k": settings.k,
        "nprobes": settings.nprobes,
        "seed": settings.seed,
        "threads": settings.threads,
        "indexes": index_specs,
    });
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_string())
        .with_context(|| format!("writing {}", config_path.display()))?;
    let script_path = dir.join("faiss_posthoc.py");
    std::fs::write(&script_path, SCRIPT)
        .with_context(|| format!("writing {}", script_path.display()))?;

    let output = python_command(python)
        .arg(&script_path)
        .arg(&config_path)
        .output()
        .with_context(|| format!("starting {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "the faiss script failed ({}):\n{}",
            output.status,
            stderr_tail(&output.stderr)
        );
    }
    let summary: Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "reading the faiss script's JSON: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    let faiss_version = summary["faiss_version"]
        .as_str()
        .context("the faiss script's JSON has no faiss_version")?
        .to_owned();
    let reports = summary["indexes"]
        .as_array()
        .filter(|reports| reports.len() == indexes.len())
        .with_context(|| {
            format!(
                "the faiss script's JSON does not report the {} indexes asked for",
                indexes.len()
            )
        })?;
    indexes
        .iter()
        .zip(reports)
        .zip(&label_paths)
        .map(|((&index, report), paths)| {
            let build_seconds = report["build_seconds"].as_f64().with_context(|| {
                format!("the faiss script gave no build time for {}", index.name())
            })?;
            let rankings = paths
                .iter()
                .map(|path| labels_to_rows(&read_ids(path, n_queries, settings.k)?, n_items))
                .collect::<Result<_>>()?;
            Ok(FaissResult {
                index,
                build_seconds,
                relative_distortion: report["relative_distortion"].as_f64().unwrap_or(f64::NAN),
                rankings,
                faiss_version: faiss_version.clone(),
            })
        })
        .collect()
}

/// Checks that `data` is a non-empty whole number of finite `dim`-wide rows; returns the rows.
fn check_vectors(name: &str, data: &[f32], dim: usize) -> Result<usize> {
    ensure!(dim >= 1, "faiss: the {name} have dimension 0");
    ensure!(!data.is_empty(), "faiss: there are no {name}");
    ensure!(
        data.len().is_multiple_of(dim),
        "faiss: {} values of {name} do not form rows of {dim}",
        data.len()
    );
    if let Some(at) = data.iter().position(|v| !v.is_finite()) {
        bail!(
            "faiss: the {name} hold a non-finite value ({}) at row {}, column {}",
            data[at],
            at / dim,
            at % dim
        );
    }
    Ok(data.len() / dim)
}

/// Checks the settings against each other, the dimension and the number of items.
fn check_settings(settings: &FaissSettings, n_items: usize, dim: usize) -> Result<()> {
    ensure!(settings.k >= 1, "faiss: k must be at least 1");
    ensure!(settings.n_lists >= 1, "faiss: n_lists must be at least 1");
    ensure!(
        settings.n_subspaces >= 1 && dim.is_multiple_of(settings.n_subspaces),
        "faiss: {} subspaces do not divide the dimension {dim}",
        settings.n_subspaces
    );
    ensure!(
        (1..=MAX_BITS).contains(&settings.n_bits),
        "faiss: {} bits per code is not between 1 and {MAX_BITS}",
        settings.n_bits
    );
    ensure!(
        !settings.nprobes.is_empty(),
        "faiss: nprobes needs at least one value"
    );
    if let Some(&bad) = settings
        .nprobes
        .iter()
        .find(|&&p| p == 0 || p > settings.n_lists)
    {
        bail!(
            "faiss: nprobe {bad} is not between 1 and n_lists ({})",
            settings.n_lists
        );
    }
    let codewords = 1usize << settings.n_bits;
    ensure!(
        n_items >= settings.n_lists.max(codewords),
        "faiss: k-means needs at least as many points as centroids, but there are {n_items} items \
         for {} lists and {codewords} codewords per subspace",
        settings.n_lists
    );
    ensure!(
        settings.seed <= MAX_SEED,
        "faiss: seed {} is too large (faiss seeds are C ints; at most {MAX_SEED})",
        settings.seed
    );
    Ok(())
}

/// faiss's labels as item rows: `u32::MAX` where faiss found no item (−1).
fn labels_to_rows(labels: &[i64], n_items: usize) -> Result<Vec<u32>> {
    labels
        .iter()
        .map(|&label| {
            if label == -1 {
                return Ok(u32::MAX);
            }
            usize::try_from(label)
                .ok()
                .filter(|&row| row < n_items)
                .and_then(|row| u32::try_from(row).ok())
                .with_context(|| {
                    format!(
                        "faiss returned item {label}, which is not a row of the {n_items} items"
                    )
                })
        })
        .collect()
}

/// `path` as UTF-8, for the script's JSON configuration.
fn utf8(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{}: the path is not UTF-8", path.display()))
}

/// The end of the script's stderr, each run of one repeated line (faiss warns once per
/// subspace) shown once with its count.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for line in text.lines() {
        match runs.last_mut() {
            Some((last, count)) if *last == line => *count += 1,
            _ => runs.push((line, 1)),
        }
    }
    if runs.is_empty() {
        return "(nothing on stderr)".to_owned();
    }
    runs[runs.len().saturating_sub(STDERR_LINES)..]
        .iter()
        .map(|&(line, count)| {
            if count > 1 {
                format!("{line} (×{count})")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A new folder under the system's temporary folder, removed with its content when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates a folder named after the process, a counter and the clock; `create_dir` fails
    /// rather than reuse a folder that exists.
    fn create() -> Result<Self> {
        static CREATED: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "poeem-faiss-{}-{}-{nanos}",
            std::process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating the scratch folder {}", path.display()))?;
        Ok(Self(path))
    }

    /// The folder.
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a folder left behind in the temporary folder is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> FaissSettings {
        FaissSettings {
            n_lists: 4,
            n_subspaces: 4,
            n_bits: 8,
            inner_product: false,
            k: 10,
            nprobes: vec![1, 4],
            seed: 3,
            threads: 1,
        }
    }

    #[test]
    fn factory_strings_name_lists_subspaces_and_bits() {
        assert_eq!(FaissIndex::IvfPq.factory(8, 16, 8), "IVF8,PQ16x8");
        assert_eq!(
            FaissIndex::OpqIvfPq.factory(1024, 8, 4),
            "OPQ8,IVF1024,PQ8x4"
        );
        assert_ne!(FaissIndex::IvfPq.name(), FaissIndex::OpqIvfPq.name());
    }

    #[test]
    fn missing_labels_become_u32_max_and_strays_are_errors() {
        assert_eq!(
            labels_to_rows(&[2, -1, 0], 3).unwrap(),
            vec![2, u32::MAX, 0]
        );
        assert!(labels_to_rows(&[3], 3).is_err());
        assert!(labels_to_rows(&[-2], 3).is_err());
    }

    #[test]
    fn bad_inputs_are_refused_before_python_runs() {
        let items = vec![0.5f32; 300 * 4];
        let python = Path::new("/nonexistent/python");
        let run = |items: &[f32], queries: &[f32], dim: usize, settings: &FaissSettings| {
            post_hoc(python, items, queries, dim, &[FaissIndex::IvfPq], settings)
                .unwrap_err()
                .to_string()
        };
        let s = settings();
        assert!(run(&items, &[], 4, &s).contains("no queries"));
        assert!(run(&items, &items[..5], 4, &s).contains("rows of 4"));
        assert!(run(&items, &items, 0, &s).contains("dimension 0"));
        let mut bad = items.clone();
        bad[6] = f32::NAN;
        assert!(run(&bad, &items, 4, &s).contains("row 1, column 2"));
        assert!(
            run(
                &items,
                &items,
                4,
                &FaissSettings {
                    n_subspaces: 3,
                    ..s.clone()
                }
            )
            .contains("divide")
        );
        assert!(
            run(
                &items,
                &items,
                4,
                &FaissSettings {
                    nprobes: vec![5],
                    ..s.clone()
                }
            )
            .contains("nprobe 5")
        );
        assert!(
            run(
                &items,
                &items,
                4,
                &FaissSettings {
                    nprobes: vec![],
                    ..s.clone()
                }
            )
            .contains("nprobes")
        );
        assert!(run(&items, &items, 4, &FaissSettings { k: 0, ..s.clone() }).contains("k must"));
        assert!(
            run(
                &items,
                &items,
                4,
                &FaissSettings {
                    n_bits: 0,
                    ..s.clone()
                }
            )
            .contains("bits")
        );
        assert!(
            run(
                &items,
                &items,
                4,
                &FaissSettings {
                    n_bits: 9,
                    ..s.clone()
                }
            )
            .contains("at least as many points")
        );
        assert!(
            run(
                &items,
                &items,
                4,
                &FaissSettings {
                    seed: 1 << 31,
                    ..s.clone()
                }
            )
            .contains("seed")
        );
        // Valid inputs reach the missing interpreter.
        assert!(run(&items, &items, 4, &s).contains("starting /nonexistent/python"));
    }

    #[test]
    fn a_failing_interpreter_is_reported_with_its_exit_status() {
        let items = vec![0.5f32; 300 * 4];
        let err = post_hoc(
            Path::new("false"),
            &items,
            &items,
            4,
            &[FaissIndex::IvfPq],
            &settings(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("the faiss script failed"), "{err}");
    }

    #[test]
    fn stderr_keeps_the_end_and_counts_repeated_lines() {
        let tail = stderr_tail(b"WARNING a\nWARNING a\nWARNING a\nTraceback\nValueError: x\n");
        assert_eq!(tail, "WARNING a (×3)\nTraceback\nValueError: x");
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(long.as_bytes());
        assert_eq!(tail.lines().count(), STDERR_LINES);
        assert!(tail.ends_with("line 99"));
        assert_eq!(stderr_tail(b""), "(nothing on stderr)");
    }

    #[test]
    fn the_scratch_folder_goes_with_its_content() {
        let scratch = ScratchDir::create().unwrap();
        let path = scratch.path().to_owned();
        std::fs::write(path.join("file"), b"x").unwrap();
        assert_ne!(ScratchDir::create().unwrap().path(), path);
        drop(scratch);
        assert!(!path.exists());
    }

    /// Runs faiss when a Python with it is found: with the queries among the items, each query
    /// finds itself near the top, and runs are repeatable.
    #[test]
    fn faiss_finds_each_query_item_near_the_top() {
        let Some(python) = available(None) else {
            eprintln!("skipped: no Python that can `import faiss, numpy` was found");
            return;
        };
        let dim = 16;
        let items = poeem::synthetic::clustered_gaussian(2000, dim, 40, 0.3, 11);
        let n_queries = 100;
        let queries = &items[..n_queries * dim];
        let indexes = [FaissIndex::IvfPq, FaissIndex::OpqIvfPq];
        let s = settings();
        let results = post_hoc(&python, &items, queries, dim, &indexes, &s).unwrap();
        assert_eq!(results.len(), 2);
        for (result, &index) in results.iter().zip(&indexes) {
            assert_eq!(result.index, index);
            assert!(!result.faiss_version.is_empty());
            assert!(result.build_seconds > 0.0);
            assert!(
                result.relative_distortion > 0.0 && result.relative_distortion < 0.2,
                "{result:?}"
            );
            assert_eq!(result.rankings.len(), s.nprobes.len());
            assert!(result.rankings.iter().all(|r| r.len() == n_queries * s.k));
            let widest = result.rankings.last().unwrap();
            let found = widest
                .chunks_exact(s.k)
                .enumerate()
                .filter(|&(q, row)| row.contains(&(q as u32)))
                .count();
            assert!(found >= 95, "{}: {found} of {n_queries}", index.name());
        }
        let again = post_hoc(&python, &items, queries, dim, &indexes, &s).unwrap();
        for (a, b) in results.iter().zip(&again) {
            assert_eq!(a.rankings, b.rankings, "{}", a.index.name());
        }

        let ip = FaissSettings {
            inner_product: true,
            ..s.clone()
        };
        let results = post_hoc(&python, &items, queries, dim, &[FaissIndex::IvfPq], &ip).unwrap();
        assert!(
            results[0]
                .rankings
                .iter()
                .all(|r| r.len() == n_queries * s.k)
        );
    }
}
