//! `cargo xtask check-reproduction DIR`: checks the structure of what `cargo xtask reproduce all
//! --quick --out DIR` wrote, the run CI makes (a step of its own, outside `cargo test`).
//!
//! Every experiment's folder holds a `results.json` with the run's provenance (command, date, git
//! revision, machine, seeds, data hash, elapsed time), a `report.md` and the plots it links; the
//! synthetic comparison has every method's precision at every nprobe on every seed, the ordering
//! check and the summary; the others have their own tables. Each failed check names the file and
//! the field.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use super::Experiment;

/// The field of `value` at `path` (`.`-separated keys and array indices).
fn at<'a>(value: &'a Value, path: &str) -> Result<&'a Value> {
    path.split('.').try_fold(value, |v, key| {
        let next = match key.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(key),
        };
        next.with_context(|| format!("no field {path}"))
    })
}

fn array<'a>(value: &'a Value, path: &str) -> Result<&'a Vec<Value>> {
    at(value, path)?
        .as_array()
        .with_context(|| format!("{path} is not an array"))
}

fn number(value: &Value, path: &str) -> Result<f64> {
    at(value, path)?
        .as_f64()
        .with_context(|| format!("{path} is not a number"))
}

fn text<'a>(value: &'a Value, path: &str) -> Result<&'a str> {
    at(value, path)?
        .as_str()
        .with_context(|| format!("{path} is not a string"))
}

fn expect_len(value: &Value, path: &str, len: usize) -> Result<()> {
    let found = array(value, path)?.len();
    ensure!(found == len, "{path} has {found} entries, expected {len}");
    Ok(())
}

fn expect_eq(value: &Value, path: &str, expected: &Value) -> Result<()> {
    let found = at(value, path)?;
    ensure!(found == expected, "{path} is {found}, expected {expected}");
    Ok(())
}

fn unit_interval(value: &Value, path: &str) -> Result<()> {
    let v = number(value, path)?;
    ensure!((0.0..=1.0).contains(&v), "{path} = {v} is outside [0, 1]");
    Ok(())
}

fn positive(value: &Value, path: &str) -> Result<()> {
    let v = number(value, path)?;
    ensure!(v > 0.0, "{path} = {v} is not positive");
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Checks the outputs of `reproduce all --quick --out root`.
///
/// # Errors
/// The first check that fails, naming the file and field.
pub(crate) fn check_quick_run(root: &Path) -> Result<()> {
    for experiment in Experiment::EACH {
        let dir = root.join(experiment.name());
        let results = read_json(&dir.join("results.json"))?;
        check_common(&results, experiment, &dir)
            .with_context(|| format!("{}", dir.join("results.json").display()))?;
        let path = dir.join("results.json");
        let specific = match experiment {
            Experiment::Synthetic => check_synthetic(&results),
            Experiment::Movielens => check_movielens(&results),
            Experiment::Ablation => expect_len(&results, "results.variants", 8),
            Experiment::Rotation => expect_len(&results, "results.synthetic.methods", 5),
            Experiment::Scale => check_scale(&results),
            Experiment::All => unreachable!("EACH lists single experiments"),
        };
        specific.with_context(|| format!("{}", path.display()))?;
    }
    Ok(())
}

/// The scale run: both models, the post-hoc indexes and the export at every nprobe, every
/// stage timed with its peak memory.
fn check_scale(results: &Value) -> Result<()> {
    let nprobes = array(results, "results.nprobes")?.len();
    ensure!(nprobes > 0, "results.nprobes is empty");
    let runs = array(results, "results.runs")?;
    ensure!(!runs.is_empty(), "results.runs is empty");
    for (r, run) in runs.iter().enumerate() {
        let base = format!("results.runs.{r}");
        for m in 0..2 {
            unit_interval(results, &format!("{base}.models.{m}.brute_force_precision"))?;
            positive(results, &format!("{base}.models.{m}.examples_per_second"))?;
        }
        let names: Vec<&str> = array(run, "indexes")?
            .iter()
            .filter_map(|i| i.get("name")?.as_str())
            .collect();
        for name in [
            "post-hoc IVF-PQ",
            "post-hoc OPQ+IVF-PQ",
            "Poeem (exported)",
            "post-hoc IVF-PQ on the Poeem model",
        ] {
            ensure!(names.contains(&name), "{base}.indexes lacks {name}");
        }
        for i in 0..names.len() {
            expect_len(results, &format!("{base}.indexes.{i}.precision"), nprobes)?;
            for p in 0..nprobes {
                unit_interval(results, &format!("{base}.indexes.{i}.precision.{p}"))?;
            }
        }
        let stages = array(run, "stages")?;
        ensure!(
            stages.len() >= 10,
            "{base}.stages has {} entries",
            stages.len()
        );
        for s in 0..stages.len() {
            number(results, &format!("{base}.stages.{s}.seconds"))?;
        }
        expect_len(results, &format!("{base}.poeem_ahead"), nprobes)?;
    }
    Ok(())
}

/// What every experiment writes: provenance, report, plots.
fn check_common(results: &Value, experiment: Experiment, dir: &Path) -> Result<()> {
    expect_eq(results, "experiment", &json!(experiment.name()))?;
    expect_eq(results, "quick", &json!(true))?;
    ensure!(
        text(results, "command")?.contains("--quick"),
        "command lacks --quick"
    );
    ensure!(text(results, "date")?.ends_with('Z'), "date is not UTC");
    ensure!(
        !text(results, "git_revision")?.is_empty(),
        "git_revision is empty"
    );
    ensure!(
        number(results, "machine.logical_cores")? >= 1.0,
        "machine.logical_cores < 1"
    );
    ensure!(!array(results, "seeds")?.is_empty(), "seeds is empty");
    let sha = text(results, "data.sha256")?;
    ensure!(
        sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
        "data.sha256 {sha:?} is not a SHA-256"
    );
    positive(results, "elapsed_seconds")?;
    let report_path = dir.join("report.md");
    let report = std::fs::read_to_string(&report_path)
        .with_context(|| format!("reading {}", report_path.display()))?;
    ensure!(
        report.starts_with("# "),
        "{} does not start with a title",
        report_path.display()
    );
    for plot in array(results, "plots")? {
        let file = plot.as_str().context("plots holds a non-string")?;
        let svg = std::fs::read_to_string(dir.join(file))
            .with_context(|| format!("reading plot {file}"))?;
        ensure!(svg.starts_with("<svg"), "plot {file} is not an SVG");
        ensure!(
            report.contains(&format!("]({file})")),
            "report.md does not link plot {file}"
        );
    }
    Ok(())
}

/// The synthetic comparison: every method at every nprobe on every seed.
fn check_synthetic(results: &Value) -> Result<()> {
    expect_eq(results, "seeds", &json!([1, 2, 3]))?;
    expect_eq(results, "results.nprobes", &json!([1, 2, 4, 8]))?;
    let expected = [
        "post-hoc IVF-PQ",
        "post-hoc OPQ+IVF-PQ",
        "Poeem",
        "Poeem + OPQ at warm start",
        "Poeem + Givens (random)",
        "Poeem + Givens (greedy)",
        "Poeem + Givens (steepest)",
    ];
    for (s, run) in array(results, "results.seeds")?.iter().enumerate() {
        let check = || -> Result<()> {
            unit_interval(run, "plain.brute_force_precision")?;
            positive(run, "plain.training_seconds")?;
            expect_len(run, "poeem_models", 5)?;
            let indexes = array(run, "indexes")?;
            let names = indexes
                .iter()
                .map(|i| text(i, "name"))
                .collect::<Result<Vec<_>>>()?;
            ensure!(
                names == expected,
                "indexes are {names:?}, expected {expected:?}"
            );
            for (i, index) in indexes.iter().enumerate() {
                expect_len(index, "precision", 4)?;
                for p in 0..4 {
                    unit_interval(index, &format!("precision.{p}"))
                        .with_context(|| format!("index {i}"))?;
                }
                positive(index, "seconds")?;
                positive(index, "relative_distortion")?;
            }
            Ok(())
        };
        check().with_context(|| format!("results.seeds.{s}"))?;
    }
    expect_len(results, "results.ordering_at_nprobe_1", 5)?;
    for (i, o) in array(results, "results.ordering_at_nprobe_1")?
        .iter()
        .enumerate()
    {
        expect_len(o, "holds", 3).with_context(|| format!("ordering_at_nprobe_1.{i}"))?;
    }
    expect_len(results, "results.summary", expected.len())
}

/// The MovieLens comparison: one seed, the layer's curve, metrics at six nprobes, the
/// coarse-level diagnostics of every index poeem built or exported (shares in [0, 1]) and the
/// coarse-level ablation's two models after the five rotation variants.
fn check_movielens(results: &Value) -> Result<()> {
    expect_len(results, "results.seeds", 1)?;
    let run = at(results, "results.seeds.0")?;
    expect_eq(run, "models.1.name", &json!("Poeem"))?;
    let curve = array(run, "models.1.layer_curve")?.len();
    ensure!(curve > 5, "models.1.layer_curve has only {curve} points");
    for i in 0..array(run, "indexes")?.len() {
        let by_nprobe = format!("indexes.{i}.by_nprobe");
        expect_len(run, &by_nprobe, 6)?;
        for j in 0..6 {
            expect_len(run, &format!("{by_nprobe}.{j}"), 3)?;
        }
        let index = at(run, &format!("indexes.{i}"))?;
        if index["made_by"] == "export"
            || index["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("post-hoc"))
        {
            let coverage = format!("indexes.{i}.coarse.coverage");
            expect_len(run, &coverage, 6)?;
            for (j, c) in array(run, &coverage)?.iter().enumerate() {
                for key in ["top_k_share", "best_item_share"] {
                    let share = c[key].as_f64().unwrap_or(f64::NAN);
                    ensure!(
                        (0.0..=1.0).contains(&share),
                        "indexes.{i}.coarse.coverage.{j}.{key} is {share}, not a share"
                    );
                }
            }
        }
    }
    expect_len(run, "models", 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_malformed_run_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", check_quick_run(dir.path()).unwrap_err());
        assert!(err.contains("synthetic/results.json"), "{err}");

        std::fs::create_dir(dir.path().join("synthetic")).unwrap();
        let results = json!({
            "experiment": "synthetic", "quick": true, "command": "cargo xtask reproduce all --quick",
            "date": "2026-01-01T00:00:00Z", "git_revision": "abc", "machine": {"logical_cores": 2},
            "seeds": [1, 2, 3], "data": {"sha256": "0".repeat(64)}, "elapsed_seconds": 1.0,
            "plots": ["p.svg"], "results": {"nprobes": [1, 2, 4, 8], "seeds": []},
        });
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join("synthetic").join(name), text).unwrap();
        };
        write("results.json", &results.to_string());
        write("report.md", "# Synthetic\n");
        write("p.svg", "<svg/>");
        let err = format!("{:#}", check_quick_run(dir.path()).unwrap_err());
        assert!(err.contains("does not link plot p.svg"), "{err}");
        write("report.md", "# Synthetic\n![p](p.svg)\n");
        let err = format!("{:#}", check_quick_run(dir.path()).unwrap_err());
        assert!(
            err.contains("no field results.ordering_at_nprobe_1"),
            "{err}"
        );

        let mut wrong = results.clone();
        wrong["quick"] = json!(false);
        write("results.json", &wrong.to_string());
        let err = format!("{:#}", check_quick_run(dir.path()).unwrap_err());
        assert!(err.contains("quick is false, expected true"), "{err}");
    }

    #[test]
    fn field_paths_walk_objects_and_arrays() {
        let v = json!({"a": [{"b": 2.5}, {"b": "x"}]});
        assert_eq!(number(&v, "a.0.b").unwrap(), 2.5);
        assert_eq!(text(&v, "a.1.b").unwrap(), "x");
        assert!(number(&v, "a.1.b").is_err());
        assert!(at(&v, "a.2").is_err());
        assert!(expect_len(&v, "a", 3).is_err());
    }
}
