//! The `poeem` binary end to end: build → info → verify → search, import-reference, and the
//! errors a user sees for bad input.

use std::path::{Path, PathBuf};

mod common;
use common::{assert_ok, error_of, path_str, poeem, read_npy, stderr};

use poeem::build::{ReferenceFile, encode_reference};
use poeem::io::{write_npy, write_npy_i64};
use poeem::search::Index;

const N: usize = 3_000;
const DIM: usize = 12;

/// Writes clustered vectors, ids 1000.. and 20 queries (copies of the first 20 vectors).
fn write_data(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let data = poeem::synthetic::clustered_gaussian(N, DIM, 40, 0.3, 7);
    let vectors = dir.join("vectors.npy");
    let ids = dir.join("ids.npy");
    let queries = dir.join("queries.npy");
    write_npy(&vectors, &data, DIM).unwrap();
    let id_values: Vec<i64> = (0..N as i64).map(|i| 1000 + i).collect();
    write_npy_i64(&ids, &id_values, 1).unwrap();
    write_npy(&queries, &data[..20 * DIM], DIM).unwrap();
    (vectors, ids, queries)
}

#[test]
fn build_info_verify_search_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (vectors, ids, queries) = write_data(dir.path());
    let index = dir.path().join("x.poeem");
    let out = poeem(&[
        "build",
        "--vectors",
        path_str(&vectors),
        "--ids",
        path_str(&ids),
        "--n-lists",
        "16",
        "--n-subspaces",
        "6",
        "--metric",
        "l2",
        "--seed",
        "3",
        "--threads",
        "2",
        "--out",
        path_str(&index),
    ]);
    assert_ok(&out);

    let info = poeem(&["info", "--index", path_str(&index)]);
    assert_ok(&info);
    let text = String::from_utf8_lossy(&info.stdout);
    for expected in [
        "metric        l2",
        "items         3000",
        "lists         16",
        "codes",
    ] {
        assert!(text.contains(expected), "info lacks {expected:?}:\n{text}");
    }

    assert_ok(&poeem(&["verify", "--index", path_str(&index)]));

    let ids_out = dir.path().join("ids_out.npy");
    let scores_out = dir.path().join("scores_out.npy");
    let search = poeem(&[
        "search",
        "--index",
        path_str(&index),
        "--queries",
        path_str(&queries),
        "-k",
        "5",
        "--nprobe",
        "16",
        "--out",
        path_str(&ids_out),
        "--scores",
        path_str(&scores_out),
    ]);
    assert_ok(&search);
    let (found, shape) = read_npy::<i64>(&ids_out);
    assert_eq!(shape, vec![20, 5]);
    // Each query is a copy of an indexed vector: with every list probed, its own id ranks near
    // the top (PQ is lossy, so allow it anywhere in the top 5 for most queries).
    let hits = (0..20)
        .filter(|&q| found[q * 5..(q + 1) * 5].contains(&(1000 + q as i64)))
        .count();
    assert!(hits >= 16, "only {hits}/20 queries found themselves");
    assert!(std::fs::metadata(&scores_out).unwrap().len() > 0);
}

#[test]
fn verify_fails_on_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (vectors, _, _) = write_data(dir.path());
    let index = dir.path().join("x.poeem");
    build_small(&vectors, &index);
    let mut bytes = std::fs::read(&index).unwrap();
    let last = bytes.len() - 1;
    // The last section's final byte and a byte in the middle of the file (the codes or ids).
    for at in [last, bytes.len() / 2] {
        bytes[at] ^= 0x5a;
        std::fs::write(&index, &bytes).unwrap();
        let out = poeem(&["verify", "--index", path_str(&index)]);
        assert!(!out.status.success(), "verify accepted a corrupt file");
        let err = stderr(&out);
        assert!(err.contains("error:"), "{err}");
        bytes[at] ^= 0x5a;
    }
}

#[test]
fn import_reference_converts_a_reference_file() {
    let dir = tempfile::tempdir().unwrap();
    let (dim, n_lists, k, m, n) = (8usize, 3usize, 16usize, 4usize, 50usize);
    let reference = ReferenceFile {
        use_residual: 1,
        dim,
        n_lists,
        n_codewords: k,
        n_subspaces: m,
        codebooks: (0..m * k * (dim / m))
            .map(|i| (i % 7) as f32 * 0.1)
            .collect(),
        ids: (0..n as i64).map(|i| 500 + i).collect(),
        norms: (0..n)
            .map(|i| if i % 10 == 0 { 0.0 } else { 1.0 })
            .collect(),
        codes: (0..n * m).map(|i| (i % k) as u16).collect(),
        coarse_centroids: (0..n_lists * dim).map(|i| i as f32).collect(),
        assignments: (0..n as u32).map(|i| i % n_lists as u32).collect(),
    };
    let input = dir.path().join("old.idx");
    std::fs::write(&input, encode_reference(&reference).unwrap()).unwrap();
    let out_path = dir.path().join("new.poeem");
    let out = poeem(&[
        "import-reference",
        "--input",
        path_str(&input),
        "--out",
        path_str(&out_path),
    ]);
    assert_ok(&out);
    let index = Index::open(&out_path).unwrap();
    index.verify().unwrap();
    assert_eq!(index.params().n_items, 45, "five zero-norm items dropped");
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 with norm 0 dropped"));
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (vectors, _, _) = write_data(dir.path());
    let index = dir.path().join("x.poeem");
    build_small(&vectors, &index);

    // Queries of the wrong dimension.
    let queries = dir.path().join("q.npy");
    write_npy(&queries, &[0.0; 10], 5).unwrap();
    let out_ids = dir.path().join("o.npy");
    let out = poeem(&[
        "search",
        "--index",
        path_str(&index),
        "--queries",
        path_str(&queries),
        "-k",
        "3",
        "--nprobe",
        "2",
        "--out",
        path_str(&out_ids),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("dimension 5"), "{}", stderr(&out));
    assert!(!out_ids.exists(), "no output is written on error");

    // NaN in the vectors.
    let nan = dir.path().join("nan.npy");
    let mut data = vec![1.0f32; 200 * 4];
    data[3 * 4 + 2] = f32::NAN;
    write_npy(&nan, &data, 4).unwrap();
    let out = poeem(&[
        "build",
        "--vectors",
        path_str(&nan),
        "--n-lists",
        "2",
        "--n-subspaces",
        "2",
        "--out",
        path_str(&dir.path().join("nan.poeem")),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("row 3") && err.contains("not finite"), "{err}");

    // A file that is not an index, and a missing file.
    let not_index = poeem(&["info", "--index", path_str(&vectors)]);
    assert!(!not_index.status.success());
    assert!(
        stderr(&not_index).contains("not a poeem index"),
        "{}",
        stderr(&not_index)
    );
    let missing = poeem(&[
        "verify",
        "--index",
        path_str(&dir.path().join("none.poeem")),
    ]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("none.poeem"),
        "{}",
        stderr(&missing)
    );

    // Wrong arguments: an unknown metric and a missing required flag.
    let out = poeem(&[
        "build",
        "--vectors",
        "v.npy",
        "--n-lists",
        "2",
        "--n-subspaces",
        "2",
        "--metric",
        "hamming",
        "--out",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("hamming"), "{}", stderr(&out));
    let out = poeem(&["search", "--index", "x.poeem"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--queries"), "{}", stderr(&out));
}

/// Builds a small index (8 lists, 4 subspaces) of `vectors` into `index`.
fn build_small(vectors: &Path, index: &Path) {
    assert_ok(&poeem(&[
        "build",
        "--vectors",
        path_str(vectors),
        "--n-lists",
        "8",
        "--n-subspaces",
        "4",
        "--out",
        path_str(index),
    ]));
}

#[test]
fn outputs_never_overwrite_inputs_or_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let (vectors, ids, queries) = write_data(dir.path());
    let index = dir.path().join("x.poeem");
    let build = |out: &str, ids_path: &str| {
        poeem(&[
            "build",
            "--vectors",
            path_str(&vectors),
            "--ids",
            ids_path,
            "--n-lists",
            "8",
            "--n-subspaces",
            "4",
            "--out",
            out,
        ])
    };
    assert_ok(&build(path_str(&index), path_str(&ids)));
    let snapshot = |paths: &[&Path]| -> Vec<Vec<u8>> {
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    };
    let files = [
        vectors.as_path(),
        ids.as_path(),
        queries.as_path(),
        index.as_path(),
    ];
    let before = snapshot(&files);

    // `./`-spelled, `dir/../`-spelled and hard-linked copies of an input are that input.
    let dotted = dir.path().join(".").join("vectors.npy");
    let err = stderr(&build(path_str(&dotted), path_str(&ids)));
    assert!(
        err.contains(&format!(
            "--out {} is the same file as --vectors {}",
            dotted.display(),
            vectors.display()
        )),
        "{err}"
    );
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let up = dir.path().join("sub").join("..").join("ids.npy");
    let err = stderr(&build(path_str(&up), path_str(&ids)));
    assert!(err.contains("is the same file as --ids"), "{err}");
    let linked = dir.path().join("linked.npy");
    std::fs::hard_link(&ids, &linked).unwrap();
    let err = stderr(&build(path_str(&linked), path_str(&ids)));
    assert!(
        err.contains(&format!("--out {}", linked.display())) && err.contains("--ids"),
        "{err}"
    );

    let search = |out: &Path, scores: &Path| {
        error_of(&[
            "search",
            "--index",
            path_str(&index),
            "--queries",
            path_str(&queries),
            "-k",
            "3",
            "--nprobe",
            "2",
            "--out",
            path_str(out),
            "--scores",
            path_str(scores),
        ])
    };
    let fresh = dir.path().join("fresh.npy");
    let err = search(&index, &fresh);
    assert!(err.contains("is the same file as --index"), "{err}");
    let err = search(&fresh, &queries);
    assert!(
        err.contains("--scores") && err.contains("--queries"),
        "{err}"
    );
    // Two outputs that do not exist yet, spelled differently.
    let err = search(&fresh, &dir.path().join("sub").join("..").join("fresh.npy"));
    assert!(
        err.contains("are the same file: give each output its own path"),
        "{err}"
    );
    assert!(!fresh.exists(), "nothing is written");

    let err = error_of(&[
        "import-reference",
        "--input",
        path_str(&index),
        "--out",
        path_str(&dir.path().join(".").join("x.poeem")),
    ]);
    assert!(err.contains("is the same file as --input"), "{err}");

    assert_eq!(snapshot(&files), before, "no input changed");
}

#[test]
fn messages_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (vectors, _, queries) = write_data(dir.path());
    let index = dir.path().join("x.poeem");
    build_small(&vectors, &index);

    // A missing directory of --out is named, before any work.
    let missing_dir = dir.path().join("no").join("such");
    let out_path = missing_dir.join("x.poeem");
    let err = error_of(&[
        "build",
        "--vectors",
        path_str(&vectors),
        "--n-lists",
        "8",
        "--n-subspaces",
        "4",
        "--out",
        path_str(&out_path),
    ]);
    assert!(
        err.contains(&format!(
            "the directory {} does not exist",
            missing_dir.display()
        )) && !err.contains("building"),
        "{err}"
    );

    // A directory given as an input file says so.
    let err = error_of(&["info", "--index", path_str(dir.path())]);
    assert!(err.contains("is a directory, not a file"), "{err}");
    let err = error_of(&[
        "search",
        "--index",
        path_str(dir.path()),
        "--queries",
        path_str(&queries),
        "-k",
        "1",
        "--nprobe",
        "1",
        "--out",
        path_str(&dir.path().join("o.npy")),
    ]);
    assert!(
        err.contains(&format!("--index {} is a directory", dir.path().display())),
        "{err}"
    );

    // A missing file: the operating system's message once.
    let err = error_of(&["verify", "--index", path_str(&dir.path().join("none"))]);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");

    // A file that is not a reference index says so, not which field disagrees.
    let err = error_of(&[
        "import-reference",
        "--input",
        path_str(&vectors),
        "--out",
        path_str(&dir.path().join("r.poeem")),
    ]);
    assert!(
        err.contains("not an index file of the reference implementation"),
        "{err}"
    );
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (vectors, _, _) = write_data(dir.path());
    let index = dir.path().join("x.poeem");
    build_small(&vectors, &index);
    // `poeem info --index X | head -0`: the reader is gone before the first line is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_poeem"))
        .args(["info", "--index", path_str(&index)])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(stderr(&out), "", "no message, no panic");
    assert_eq!(out.status.code(), Some(141), "the status of SIGPIPE");
}
