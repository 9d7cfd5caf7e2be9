//! The model commands of the `poeem` binary end to end: train → export → search → evaluate,
//! resuming after a kill, the demo, and the errors a user sees for bad data or arguments.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{assert_ok, error_of, path_str, poeem, read_npy, stderr, stdout};

use poeem::pq::Par;
use poeem::search::Index;
use poeem::train::Model;
use poeem::train::checkpoint::checkpoint_path;

/// `train` arguments of a small synthetic run with the indexing layer (4 lists, 4 subspaces of 4
/// bits), long enough (about 4,700 steps) to be killed mid-run, checkpointing every 25 steps.
fn synthetic_run(out: &Path) -> Vec<String> {
    [
        "train",
        "--synthetic",
        "--synthetic-pairs",
        "100000",
        "--dim",
        "16",
        "--batch-size",
        "64",
        "--epochs",
        "3",
        "--index",
        "pq",
        "--n-lists",
        "4",
        "--n-subspaces",
        "4",
        "--n-bits",
        "4",
        "--warmup-steps",
        "40",
        "--buffer-size",
        "256",
        "--checkpoint-every",
        "25",
        "--log-every",
        "25",
        "--seed",
        "3",
        "--threads",
        "2",
        "--out",
        path_str(out),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Embeds both sides of the model in `dir` and returns the raw `.npy` bytes.
fn embeddings(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for side in ["query", "item"] {
        let out = dir.with_extension(format!("{side}.npy"));
        assert_ok(&poeem(&[
            "embed",
            "--model",
            path_str(dir),
            "--side",
            side,
            "--out",
            path_str(&out),
        ]));
        bytes.extend(std::fs::read(&out).unwrap());
    }
    bytes
}

#[test]
fn resume_after_a_kill_ends_like_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_poeem"))
        .args(synthetic_run(&killed))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !checkpoint_path(&killed).exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(2));
    }
    let finished_early = child.try_wait().unwrap();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        finished_early.is_none() && !status.success(),
        "the run was not interrupted ({status})"
    );
    let model = Model::load(&killed).unwrap();
    let steps_done = model.layer().unwrap().steps();
    assert!(steps_done < 4_689, "killed after {steps_done} steps");

    // A fresh run into the same directory is refused; --resume takes the stored data.
    let err = error_of(
        &synthetic_run(&killed)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(err.contains("already holds a model"), "{err}");
    let resumed = poeem(&[
        "train",
        "--resume",
        "--threads",
        "2",
        "--out",
        path_str(&killed),
    ]);
    assert_ok(&resumed);
    assert!(
        stderr(&resumed).contains("resuming"),
        "{}",
        stderr(&resumed)
    );

    assert_ok(&poeem(
        &synthetic_run(&whole)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    assert!(
        embeddings(&whole) == embeddings(&killed),
        "the resumed model differs from the uninterrupted one"
    );
    assert!(
        std::fs::read(checkpoint_path(&whole)).unwrap()
            == std::fs::read(checkpoint_path(&killed)).unwrap(),
        "the final checkpoints differ"
    );
}

/// Writes a small RecBole dataset: 120 users in 4 taste groups, 40 items named `m0`.. `m39`
/// (group = item mod 4), each user rating 8 items of its group at increasing timestamps.
fn write_recbole(dir: &Path) -> PathBuf {
    let mut inter = String::from("user_id:token\titem_id:token\ttimestamp:float\n");
    for u in 0..120 {
        for t in 0..8 {
            let item = (u * 7 + t * 4) % 40 / 4 * 4 + u % 4;
            inter += &format!("u{u}\tm{item}\t{}\n", 1000 + t);
        }
    }
    let path = dir.join("toy.inter");
    std::fs::write(&path, inter).unwrap();
    let mut items = String::from("item_id:token\tgenre:token\tprice:float\n");
    for i in 0..40 {
        items += &format!("m{i}\tg{}\t{}.5\n", i % 4, i);
    }
    std::fs::write(dir.join("toy.item"), items).unwrap();
    path
}

/// `train` arguments of a fast run on `inter` (the RecBole toy data or a variant); `index` is
/// the layer (`off` for none: then no layer option is passed).
fn file_run<'a>(inter: &'a str, index: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--interactions",
        inter,
        "--preset",
        "movielens",
        "--index",
        index,
    ];
    if index != "off" {
        args.extend([
            "--n-lists",
            "4",
            "--n-subspaces",
            "4",
            "--n-bits",
            "3",
            "--warmup-steps",
            "10",
            "--buffer-size",
            "64",
        ]);
    }
    args.extend([
        "--batch-size",
        "32",
        "--epochs",
        "8",
        "--dim",
        "8",
        "--hidden",
        "16",
        "--embedding-dim",
        "8",
        "--learning-rate",
        "0.01",
        "--threads",
        "2",
        "--out",
        out,
    ]);
    args
}

/// Checks an `evaluate` table: a header with the given columns, then rows whose metrics are in
/// [0, 1] (up to the first line that is not a table row). Returns the rows' cells.
fn parse_table(table: &str, ks: &[usize]) -> Vec<Vec<String>> {
    let lines: Vec<&str> = table.lines().take_while(|l| l.starts_with('|')).collect();
    let cells = |line: &str| -> Vec<String> {
        line.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let header = cells(lines[0]);
    let mut expected = vec!["retrieval".to_owned()];
    for k in ks {
        expected.extend([
            format!("recall@{k}"),
            format!("precision@{k}"),
            format!("NDCG@{k}"),
        ]);
    }
    expected.push("seconds".to_owned());
    assert_eq!(header, expected, "{table}");
    let rows: Vec<Vec<String>> = lines[2..].iter().map(|l| cells(l)).collect();
    for row in &rows {
        assert_eq!(row.len(), expected.len(), "{table}");
        for cell in &row[1..row.len() - 1] {
            let v: f64 = cell.parse().unwrap();
            assert!((0.0..=1.0).contains(&v), "{table}");
        }
    }
    rows
}

#[test]
fn export_search_and_evaluate_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let inter = write_recbole(dir);
    let (poeem_dir, plain_dir) = (dir.join("poeem"), dir.join("plain"));
    let out = poeem(&file_run(path_str(&inter), "opq", path_str(&poeem_dir)));
    assert_ok(&out);
    let said = stderr(&out);
    assert!(
        said.contains(
            "split: each user's latest interaction held out (by column timestamp; users with one \
             interaction keep it for training): 840 training and 120 held-out pairs"
        ) && said.contains("features: item features from ")
            && said.contains("(2 fields: genre, price)")
            && said.contains("120 users, 40 items; 0 user and 2 item feature fields"),
        "{said}"
    );
    assert!(stdout(&out).contains("trained jointly"), "{}", stdout(&out));

    // Export: the item ids are not integers, so the index holds dense indices and the ids are
    // listed beside it.
    let index = dir.join("x.poeem");
    let out = poeem(&[
        "export",
        "--model",
        path_str(&poeem_dir),
        "--out",
        path_str(&index),
    ]);
    assert_ok(&out);
    assert!(stdout(&out).contains("no k-means"), "{}", stdout(&out));
    let listed = std::fs::read_to_string(dir.join("x.items.txt")).unwrap();
    let model = Model::load(&poeem_dir).unwrap();
    assert_eq!(listed.lines().collect::<Vec<_>>(), model.items().tokens());
    let opened = Index::open(&index).unwrap();
    opened.verify().unwrap();
    assert_eq!(opened.params().n_items, 40);
    assert_eq!(
        opened.metadata().extra["poeem_model"]
            .get("item_ids")
            .and_then(|v| v.as_str()),
        Some("dense")
    );

    // No model command overwrites the model it reads, or its own other output.
    let checkpoint = checkpoint_path(&poeem_dir);
    let saved = std::fs::read(&checkpoint).unwrap();
    let err = error_of(&[
        "export",
        "--model",
        path_str(&poeem_dir),
        "--out",
        path_str(&checkpoint),
    ]);
    assert!(
        err.contains("is the same file as the model's checkpoint"),
        "{err}"
    );
    let err = error_of(&[
        "embed",
        "--model",
        path_str(&poeem_dir),
        "--side",
        "item",
        "--out",
        path_str(&poeem_dir.join(".").join("data.json")),
    ]);
    assert!(err.contains("the model's data description"), "{err}");
    // `--out E.ids` lists its ids in E.ids.txt: the same file as `--ids E.ids.txt`.
    let ids_list = dir.join("e.ids.txt");
    std::fs::write(&ids_list, "u1\n").unwrap();
    let err = error_of(&[
        "embed",
        "--model",
        path_str(&poeem_dir),
        "--side",
        "query",
        "--ids",
        path_str(&ids_list),
        "--out",
        path_str(&dir.join("e.ids")),
    ]);
    assert!(
        err.contains("the id list") && err.contains("is the same file as --ids"),
        "{err}"
    );
    assert_eq!(std::fs::read(&checkpoint).unwrap(), saved);
    // A new run whose model directory would overwrite its data.
    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(&inter, other.join("data.json")).unwrap();
    let err = error_of(&file_run(
        path_str(&other.join("data.json")),
        "pq",
        path_str(&other),
    ));
    assert!(
        err.contains("is the same file as the interactions file"),
        "{err}"
    );

    // Search with query embeddings: the scores are the model's query embeddings against the
    // layer's quantized items, τ(x), found by scanning every list.
    let queries = dir.join("q.npy");
    let ids_file = dir.join("some_users.txt");
    std::fs::write(&ids_file, "u5\nu17\n\nu0\n").unwrap();
    assert_ok(&poeem(&[
        "embed",
        "--model",
        path_str(&poeem_dir),
        "--side",
        "query",
        "--ids",
        path_str(&ids_file),
        "--out",
        path_str(&queries),
    ]));
    assert_eq!(
        std::fs::read_to_string(dir.join("q.ids.txt")).unwrap(),
        "u5\nu17\nu0\n"
    );
    let (q, shape) = read_npy::<f32>(&queries);
    assert_eq!(shape, [3, 8]);
    let (found, scores) = (dir.join("found.npy"), dir.join("scores.npy"));
    assert_ok(&poeem(&[
        "search",
        "--index",
        path_str(&index),
        "--queries",
        path_str(&queries),
        "-k",
        "5",
        "--nprobe",
        "4",
        "--out",
        path_str(&found),
        "--scores",
        path_str(&scores),
    ]));
    let (found, (scores, _)) = (read_npy::<i64>(&found).0, read_npy::<f32>(&scores));
    let all: Vec<u32> = (0..40).collect();
    let x = model.embed_items(&all, Par::Seq).unwrap();
    let mut tau = vec![0.0f32; x.len()];
    model
        .layer()
        .unwrap()
        .quantize(&x, &mut tau, Par::Seq)
        .unwrap();
    for (r, query) in q.chunks(8).enumerate() {
        let exact = |item: usize| -> f32 {
            query
                .iter()
                .zip(&tau[item * 8..(item + 1) * 8])
                .map(|(a, b)| a * b)
                .sum()
        };
        let mut best: Vec<usize> = (0..40).collect();
        best.sort_by(|&a, &b| exact(b).total_cmp(&exact(a)));
        for s in 0..5 {
            let item = found[r * 5 + s] as usize;
            assert!((scores[r * 5 + s] - exact(item)).abs() < 1e-4);
            assert!(
                (exact(item) - exact(best[s])).abs() < 1e-4,
                "rank {s} of query {r}"
            );
        }
    }

    // Evaluate brute force and through the index at several nprobe and cut-offs.
    let out = poeem(&[
        "evaluate",
        "--model",
        path_str(&poeem_dir),
        "--index",
        path_str(&index),
        "--nprobe",
        "1,4",
        "-k",
        "5,10",
    ]);
    assert_ok(&out);
    let rows = parse_table(&stdout(&out), &[5, 10]);
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "brute force",
            "index, nprobe 1 (ip probe)",
            "index, nprobe 4 (ip probe)"
        ]
    );
    assert!(stderr(&out).contains("120 queries"), "{}", stderr(&out));
    // The coarse level's diagnostics follow the table: a share per nprobe, the probes'
    // concentration and the centroids.
    let printed = stdout(&out);
    let coarse = printed
        .split_once("coarse level:")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no coarse-level diagnostics in\n{printed}"));
    for nprobe in ["1", "4"] {
        let share = coarse
            .lines()
            .find_map(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                (cells.first() == Some(&nprobe)).then(|| cells[1].parse::<f64>().unwrap())
            })
            .unwrap_or_else(|| panic!("no nprobe {nprobe} row in\n{coarse}"));
        assert!((0.0..=1.0).contains(&share), "{coarse}");
    }
    assert!(
        coarse.contains("first probes: list") && coarse.contains("centroid norms"),
        "{coarse}"
    );

    // The post-hoc path: a plain model, its item embeddings, `poeem build`, then evaluate.
    assert_ok(&poeem(&file_run(
        path_str(&inter),
        "off",
        path_str(&plain_dir),
    )));
    let err = error_of(&[
        "export",
        "--model",
        path_str(&plain_dir),
        "--out",
        path_str(&dir.join("no.poeem")),
    ]);
    assert!(
        err.contains("without the indexing layer") && err.contains("poeem build"),
        "{err}"
    );
    let items = dir.join("items.npy");
    assert_ok(&poeem(&[
        "embed",
        "--model",
        path_str(&plain_dir),
        "--side",
        "item",
        "--out",
        path_str(&items),
    ]));
    let built = dir.join("built.poeem");
    assert_ok(&poeem(&[
        "build",
        "--vectors",
        path_str(&items),
        "--n-lists",
        "4",
        "--n-subspaces",
        "4",
        "--n-bits",
        "3",
        "--opq",
        "--out",
        path_str(&built),
    ]));
    let out = poeem(&[
        "evaluate",
        "--model",
        path_str(&plain_dir),
        "--index",
        path_str(&built),
        "--nprobe",
        "4",
        "--probe",
        "l2",
        "-k",
        "10",
    ]);
    assert_ok(&out);
    let rows = parse_table(&stdout(&out), &[10]);
    assert_eq!(rows[1][0], "index, nprobe 4 (l2 probe)");
    // Its ids are dense indices, not the data's ids.
    let err = error_of(&[
        "evaluate",
        "--model",
        path_str(&plain_dir),
        "--index",
        path_str(&built),
        "--index-ids",
        "tokens",
        "-k",
        "10",
    ]);
    assert!(err.contains("no item of the model"), "{err}");
    // An index of another dimension.
    let vectors = dir.join("v5.npy");
    let data = poeem::synthetic::clustered_gaussian(200, 5, 4, 0.3, 1);
    poeem::io::write_npy(&vectors, &data, 5).unwrap();
    let other = dir.join("d5.poeem");
    assert_ok(&poeem(&[
        "build",
        "--vectors",
        path_str(&vectors),
        "--n-lists",
        "2",
        "--n-subspaces",
        "1",
        "--n-bits",
        "2",
        "--out",
        path_str(&other),
    ]));
    let err = error_of(&[
        "evaluate",
        "--model",
        path_str(&plain_dir),
        "--index",
        path_str(&other),
        "-k",
        "10",
    ]);
    assert!(err.contains("dimension 5, the model 8"), "{err}");
}

#[test]
fn bad_data_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = |name: &str| dir.join(name).to_str().unwrap().to_owned();

    // NaN in a numeric feature: the file, line and column are named.
    let inter = write_recbole(dir);
    let item_file = dir.join("toy.item");
    let mut items = std::fs::read_to_string(&item_file).unwrap();
    items = items.replacen("m2\tg2\t2.5", "m2\tg2\tNaN", 1);
    std::fs::write(&item_file, items).unwrap();
    let err = error_of(&file_run(path_str(&inter), "pq", &out("nan")));
    assert!(
        err.contains("toy.item:4") && err.contains("price") && err.contains("NaN"),
        "{err}"
    );
    assert!(!dir.join("nan").join("checkpoint.poeem").exists());

    // An empty interactions file.
    let empty = dir.join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let err = error_of(&file_run(path_str(&empty), "pq", &out("e")));
    assert!(err.contains("empty.csv") && err.contains("empty"), "{err}");

    // A missing column: the available ones are listed.
    let csv = dir.join("pairs.csv");
    std::fs::write(&csv, "user,movie\n1,2\n1,3\n2,3\n").unwrap();
    let err = error_of(&file_run(path_str(&csv), "pq", &out("m")));
    assert!(
        err.contains("no column \"user_id\"") && err.contains("user, movie"),
        "{err}"
    );

    // A model directory without a model.
    let err = error_of(&["export", "--model", &out("none"), "--out", &out("x.poeem")]);
    assert!(err.contains("no checkpoint"), "{err}");
    let err = error_of(&["train", "--resume", "--out", &out("none")]);
    assert!(err.contains("no checkpoint to resume"), "{err}");
}

#[test]
fn bad_arguments_get_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let out = path_str(&out);
    let err = error_of(&["train", "--synthetic", "--index", "bogus", "--out", out]);
    assert!(err.contains("invalid value 'bogus'") && err.contains("givens-steepest"));
    let err = error_of(&["train", "--out", out]);
    assert!(err.contains("--interactions"), "{err}");
    let err = error_of(&["train", "--synthetic", "--resume", "--out", out]);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = error_of(&[
        "train",
        "--synthetic",
        "--index",
        "off",
        "--n-lists",
        "4",
        "--out",
        out,
    ]);
    assert!(
        err.contains("--n-lists") && err.contains("--index off"),
        "{err}"
    );
    let err = error_of(&[
        "train",
        "--synthetic",
        "--index",
        "off",
        "--layer-learning-rate",
        "0.01",
        "--out",
        out,
    ]);
    assert!(err.contains("--layer-learning-rate"), "{err}");
    let err = error_of(&[
        "train",
        "--synthetic",
        "--layer-learning-rate=-1",
        "--out",
        out,
    ]);
    assert!(err.contains("layer optimizer learning_rate = -1"), "{err}");
    let err = error_of(&["train", "--synthetic", "--epochs", "0", "--out", out]);
    assert!(err.contains("epochs"), "{err}");
    let err = error_of(&["evaluate", "--model", out]);
    assert!(err.contains("-k"), "{err}");
    let err = error_of(&["embed", "--model", out, "--side", "left", "--out", "e.npy"]);
    assert!(err.contains("invalid value 'left'"), "{err}");
}

#[test]
fn unknown_ids_and_unfinished_layers_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = dir.join("m");
    // The layer never leaves its warm-up (1,000 steps of a 16-step run).
    assert_ok(&poeem(&[
        "train",
        "--synthetic",
        "--synthetic-pairs",
        "1000",
        "--dim",
        "8",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--warmup-steps",
        "1000",
        "--out",
        path_str(&model),
    ]));
    let err = error_of(&[
        "export",
        "--model",
        path_str(&model),
        "--out",
        path_str(&dir.join("x.poeem")),
    ]);
    assert!(
        err.contains("not learned a codec") && err.contains("warm-up"),
        "{err}"
    );

    let ids = dir.join("ids.txt");
    std::fs::write(&ids, "17\n9999\n10000\n").unwrap();
    let err = error_of(&[
        "embed",
        "--model",
        path_str(&model),
        "--side",
        "item",
        "--ids",
        path_str(&ids),
        "--out",
        path_str(&dir.join("e.npy")),
    ]);
    assert!(
        err.contains("unknown item id \"10000\"") && err.contains("ids.txt:3"),
        "{err}"
    );
    assert!(!dir.join("e.npy").exists());

    // The synthetic model evaluates by the tutorial's rule over its 10,000 queries.
    let out = poeem(&["evaluate", "--model", path_str(&model), "-k", "100"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("10000 queries"), "{}", stderr(&out));
    parse_table(&stdout(&out), &[100]);
}

#[test]
fn quick_demo_prints_its_tables() {
    let out = poeem(&["demo", "--quick", "--seed", "1", "--threads", "2"]);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("1000000 pairs (seed 1)"), "{text}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with('|') && !l.contains("---"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    let methods: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(
        methods,
        [
            "method",
            "brute force (plain model)",
            "brute force (Poeem model, unquantized)",
            "post-hoc IVF-PQ",
            "post-hoc OPQ+IVF-PQ",
            "Poeem (exported)",
            "model",
            "plain",
            "Poeem",
        ],
        "{text}"
    );
    for row in &rows[1..6] {
        let precision: f64 = row[1].parse().unwrap();
        assert!((0.0..=1.0).contains(&precision), "{text}");
    }
    for row in &rows[3..6] {
        let distortion: f64 = row[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&distortion), "{text}");
        let seconds: f64 = row[3].split(' ').next().unwrap().parse().unwrap();
        assert!(seconds > 0.0, "{text}");
    }
    // Trained models beat a random ranking (about 0.17) by far.
    let brute: f64 = rows[1][1].parse().unwrap();
    assert!(brute > 0.5, "{text}");
    for row in &rows[7..9] {
        assert_eq!(row[3], "7813", "{text}");
    }
}

/// A CSV cell quoted as RFC 4180 writes it.
fn csv_cell(cell: &str) -> String {
    format!("\"{}\"", cell.replace('"', "\"\""))
}

/// The toy data of `write_recbole` with string ids: user and item names with spaces, quotes,
/// commas and non-ASCII letters (item 0 starts with a quote), as a quoted CSV file. Returns its
/// path, each user's items (in file order) and each user's last item.
fn write_string_ids(dir: &Path) -> (PathBuf, Vec<(String, Vec<String>)>) {
    let user = |u: usize| format!("user {u} ü");
    let item = |i: usize| {
        if i == 0 {
            "\"Heat\" (1995)".to_owned()
        } else {
            format!("Film {i}: \"Ça\", part {i}")
        }
    };
    let mut csv = String::from("user_id,item_id,timestamp\n");
    let mut users = Vec::new();
    for u in 0..120 {
        let mut items = Vec::new();
        for t in 0..8 {
            let i = (u * 7 + t * 4) % 40 / 4 * 4 + u % 4;
            csv += &format!(
                "{},{},{}\n",
                csv_cell(&user(u)),
                csv_cell(&item(i)),
                1000 + t
            );
            items.push(item(i));
        }
        users.push((user(u), items));
    }
    let path = dir.join("strings.csv");
    std::fs::write(&path, csv).unwrap();
    (path, users)
}

/// The rows of a TSV file as the interactions loader reads them (quotes undone): the pairs of
/// columns `a` and `b` in file order, as strings.
fn read_pairs(path: &Path, a: &str, b: &str) -> Vec<(String, String)> {
    use poeem::train::data::{DataConfig, Dataset, InteractionsSource, SplitConfig};
    let mut config = DataConfig::new(InteractionsSource::new(path, a, b));
    config.split = SplitConfig::None;
    let data = Dataset::load(&config).unwrap();
    data.train
        .iter()
        .map(|&(q, i)| {
            (
                data.queries.token(q).to_owned(),
                data.items.token(i).to_owned(),
            )
        })
        .collect()
}

/// Evaluate tables without their timing column.
fn without_seconds(rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.into_iter()
        .map(|mut r| {
            r.pop();
            r
        })
        .collect()
}

#[test]
fn string_ids_go_through_export_build_search_evaluate_and_recommend() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (csv, users) = write_string_ids(dir);
    let model_dir = dir.join("model");
    let mut args = file_run(path_str(&csv), "pq", path_str(&model_dir));
    args.extend(["--time-col", "timestamp"]);
    let out = poeem(&args);
    assert_ok(&out);
    let said = stderr(&out);
    assert!(
        said.contains("features: none loaded, ids only (pass --user-features F"),
        "{said}"
    );
    let model = Model::load(&model_dir).unwrap();
    let items = model.items().tokens().to_vec();

    // Export attaches the data's ids to the index.
    let index = dir.join("x.poeem");
    assert_ok(&poeem(&[
        "export",
        "--model",
        path_str(&model_dir),
        "--out",
        path_str(&index),
    ]));
    let opened = Index::open(&index).unwrap();
    opened.verify().unwrap();
    assert_eq!(opened.item_keys().unwrap().to_vec().unwrap(), items);

    // Search prints the ids as the data spelled them.
    let queries = dir.join("q.npy");
    assert_ok(&poeem(&[
        "embed",
        "--model",
        path_str(&model_dir),
        "--side",
        "query",
        "--out",
        path_str(&queries),
    ]));
    let found = dir.join("found.tsv");
    assert_ok(&poeem(&[
        "search",
        "--index",
        path_str(&index),
        "--queries",
        path_str(&queries),
        "-k",
        "3",
        "--nprobe",
        "4",
        "--out",
        path_str(&found),
    ]));
    let results = read_pairs(&found, "query", "id");
    assert_eq!(results.len(), 120 * 3);
    assert!(results.iter().all(|(_, id)| items.contains(id)));
    assert!(results.iter().any(|(_, id)| id == "\"Heat\" (1995)"));

    // A post-hoc index built with the embedding's id list carries the same ids.
    let emb = dir.join("e.npy");
    assert_ok(&poeem(&[
        "embed",
        "--model",
        path_str(&model_dir),
        "--side",
        "item",
        "--out",
        path_str(&emb),
    ]));
    let built = dir.join("b.poeem");
    assert_ok(&poeem(&[
        "build",
        "--vectors",
        path_str(&emb),
        "--ids",
        path_str(&dir.join("e.ids.txt")),
        "--n-lists",
        "2",
        "--n-subspaces",
        "4",
        "--n-bits",
        "4",
        "--out",
        path_str(&built),
    ]));
    assert_eq!(
        Index::open(&built)
            .unwrap()
            .item_keys()
            .unwrap()
            .to_vec()
            .unwrap(),
        items
    );

    // Evaluate on a test file holding the built-in split's pairs: the same table, through
    // both indexes.
    let evaluate = |test: Option<&Path>| {
        let mut args = vec![
            "evaluate",
            "--model",
            path_str(&model_dir),
            "--index",
            path_str(&index),
            "--nprobe",
            "1,4",
            "-k",
            "5,10",
        ];
        if let Some(test) = test {
            args.extend(["--test", path_str(test)]);
        }
        let out = poeem(&args);
        assert_ok(&out);
        without_seconds(parse_table(&stdout(&out), &[5, 10]))
    };
    let mut test_csv = String::from("item_id,user_id\n");
    for (user, items) in &users {
        test_csv += &format!("{},{}\n", csv_cell(items.last().unwrap()), csv_cell(user));
    }
    let test = dir.join("test.csv");
    std::fs::write(&test, test_csv).unwrap();
    assert_eq!(evaluate(Some(&test)), evaluate(None));
    let out = poeem(&[
        "evaluate",
        "--model",
        path_str(&model_dir),
        "--index",
        path_str(&built),
        "-k",
        "5",
    ]);
    assert_ok(&out);

    // Bad test files get clear errors.
    for (text, expected) in [
        (
            "user_id,item_id\n\"user 1 ü\",\"Film 1: \"\"Ça\"\", part 1\"\nnobody,\"Film 2: \"\"Ça\"\", part 2\"\n",
            "bad.csv:3: column user_id: \"nobody\" is not an id of the model's training data",
        ),
        (
            "user_id,item_id\n\"user 1 ü\",Unknown Film\n",
            "bad.csv:2: column item_id: \"Unknown Film\" is not an id",
        ),
        (
            "user,item_id\n\"user 1 ü\",x\n",
            "no column \"user_id\" (available: user, item_id)",
        ),
    ] {
        let bad = dir.join("bad.csv");
        std::fs::write(&bad, text).unwrap();
        let err = error_of(&[
            "evaluate",
            "--model",
            path_str(&model_dir),
            "-k",
            "5",
            "--test",
            path_str(&bad),
        ]);
        assert!(err.contains(expected), "{err}");
    }

    // Recommend: k items per user, none the user has seen, ranks 1..=k, ids as spelled. With
    // nprobe 1 the probed list often holds fewer unseen items than k; the user is then searched
    // with more lists, so every user still gets k (32 of 40 items: at most 8 are seen).
    let recs = dir.join("recs.tsv");
    let out = poeem(&[
        "recommend",
        "--model",
        path_str(&model_dir),
        "--index",
        path_str(&index),
        "--all",
        "-k",
        "32",
        "--nprobe",
        "1",
        "--exclude-seen",
        "--out",
        path_str(&recs),
    ]);
    assert_ok(&out);
    assert!(stdout(&out).contains("for 120 users"), "{}", stdout(&out));
    let text = std::fs::read_to_string(&recs).unwrap();
    assert!(
        text.starts_with("user_id\titem_id\trank\tscore\n"),
        "{text}"
    );
    let rows = read_pairs(&recs, "user_id", "item_id");
    let ranks: Vec<usize> = text
        .lines()
        .skip(1)
        .map(|l| l.rsplit('\t').nth(1).unwrap().parse().unwrap())
        .collect();
    for (u, (user, seen)) in users.iter().enumerate() {
        let mine: Vec<&(String, String)> = rows[u * 32..(u + 1) * 32].iter().collect();
        assert!(mine.iter().all(|(who, _)| who == user));
        assert!(mine.iter().all(|(_, item)| !seen.contains(item)), "{user}");
        assert_eq!(
            &ranks[u * 32..(u + 1) * 32],
            &(1..=32).collect::<Vec<_>>()[..]
        );
    }
    assert_eq!(rows.len(), 120 * 32);

    // Some users, as Parquet; the output may not be an input.
    let some = dir.join("some.txt");
    std::fs::write(&some, "user 3 ü\nuser 0 ü\n").unwrap();
    let parquet = dir.join("recs.parquet");
    assert_ok(&poeem(&[
        "recommend",
        "--model",
        path_str(&model_dir),
        "--index",
        path_str(&index),
        "--users",
        path_str(&some),
        "-k",
        "5",
        "--nprobe",
        "2",
        "--out",
        path_str(&parquet),
    ]));
    let rows = read_pairs(&parquet, "user_id", "item_id");
    assert_eq!(rows.len(), 10);
    assert_eq!(
        (rows[0].0.as_str(), rows[9].0.as_str()),
        ("user 3 ü", "user 0 ü")
    );
    let err = error_of(&[
        "recommend",
        "--model",
        path_str(&model_dir),
        "--index",
        path_str(&index),
        "--all",
        "-k",
        "5",
        "--exclude-seen",
        "--out",
        path_str(&csv),
    ]);
    assert!(
        err.contains("is the same file as the interactions file"),
        "{err}"
    );
}
