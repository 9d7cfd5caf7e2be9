//! `poeem export-faiss` / `import-faiss`: a round trip gives the same search results, and a file
//! that is not a faiss IVF-PQ index gets an error naming what was found.

mod common;

use std::path::Path;

use common::{assert_ok, path_str, poeem, read_npy, stderr, stdout};
use poeem::io::write_npy;

/// `poeem export-faiss --index index --out faiss`, which must succeed; its output.
fn export(index: &Path, faiss: &Path) -> String {
    let exported = poeem(&[
        "export-faiss",
        "--index",
        path_str(index),
        "--out",
        path_str(faiss),
    ]);
    assert_ok(&exported);
    stdout(&exported)
}

#[test]
fn export_then_import_searches_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (n, dim) = (600usize, 10usize);
    let mut state = 7u64;
    let data: Vec<f32> = (0..n * dim)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    let write = |name: &str, rows: usize| write_npy(&path(name), &data[..rows * dim], dim).unwrap();
    write("x.npy", n);
    write("q.npy", 20);
    let (index, faiss, back) = (path("x.poeem"), path("x.faiss"), path("y.poeem"));
    assert_ok(&poeem(&[
        "build",
        "--vectors",
        path_str(&path("x.npy")),
        "--n-lists",
        "8",
        "--n-subspaces",
        "4",
        "--n-bits",
        "6",
        "--metric",
        "cosine",
        "--opq",
        "--opq-rounds",
        "2",
        "--threads",
        "1",
        "--out",
        path_str(&index),
    ]));
    assert!(!export(&index, &faiss).contains("refinement"));
    assert_ok(&poeem(&[
        "import-faiss",
        "--input",
        path_str(&faiss),
        "--out",
        path_str(&back),
    ]));
    assert_ok(&poeem(&["verify", "--index", path_str(&back)]));
    let mut results = Vec::new();
    for (i, idx) in [&index, &back].into_iter().enumerate() {
        let (ids, scores) = (path(&format!("ids{i}.npy")), path(&format!("s{i}.npy")));
        assert_ok(&poeem(&[
            "search",
            "--index",
            path_str(idx),
            "--queries",
            path_str(&path("q.npy")),
            "-k",
            "5",
            "--nprobe",
            "3",
            "--out",
            path_str(&ids),
            "--scores",
            path_str(&scores),
        ]));
        results.push((read_npy::<i64>(&ids).0, read_npy::<f32>(&scores).0));
    }
    assert_eq!(results[0], results[1]);
}

#[test]
fn a_file_that_is_not_ivfpq_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("flat.faiss");
    std::fs::write(&input, b"IxF2\x04\0\0\0").unwrap();
    let out = dir.path().join("x.poeem");
    let output = poeem(&[
        "import-faiss",
        "--input",
        path_str(&input),
        "--out",
        path_str(&out),
    ]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("\"IxF2\"") && err.contains("supported: IwPQ"),
        "{err}"
    );
    assert!(!out.exists());
}

/// Refinement data go out as an `IndexRefineFlat` when the ids are 0..n-1, and are left out,
/// saying why, when they are not.
#[test]
fn export_writes_refinement_data_when_ids_allow() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (n, dim) = (300usize, 8usize);
    let data: Vec<f32> = (0..n * dim)
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    write_npy(&path("x.npy"), &data, dim).unwrap();
    let ids: Vec<i64> = (0..n as i64).map(|i| 3 * i + 7).collect();
    npyz::to_file_1d(path("ids.npy"), ids).unwrap();
    let export_built = |with_ids: bool| -> String {
        let (vectors, ids, index) = (path("x.npy"), path("ids.npy"), path("x.poeem"));
        let mut build = vec![
            "build",
            "--vectors",
            path_str(&vectors),
            "--out",
            path_str(&index),
        ];
        if with_ids {
            build.extend(["--ids", path_str(&ids)]);
        }
        for (flag, value) in [
            ("--n-lists", "4"),
            ("--n-subspaces", "4"),
            ("--n-bits", "4"),
            ("--refine", "f16"),
            ("--metric", "l2"),
            ("--threads", "1"),
        ] {
            build.extend([flag, value]);
        }
        assert_ok(&poeem(&build));
        let faiss = path("x.faiss");
        let out = export(&index, &faiss);
        let bytes = std::fs::read(&faiss).unwrap();
        assert_eq!(bytes.starts_with(b"IxRF"), !with_ids);
        out
    };
    let written = export_built(false);
    assert!(
        written.contains("the f16 refinement data as an IndexRefineFlat"),
        "{written}"
    );
    let left_out = export_built(true);
    assert!(
        left_out.contains("f16 refinement data are not in the faiss file")
            && left_out.contains("ids 0..n-1"),
        "{left_out}"
    );
}
