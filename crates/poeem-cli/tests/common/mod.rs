//! Helpers shared by the `poeem` binary's integration tests.
// Each test binary uses a different subset of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `poeem` binary with `args`.
pub fn poeem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_poeem"))
        .args(args)
        .output()
        .expect("the poeem binary runs")
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "poeem failed: {}\n{}",
        stderr(output),
        stdout(output)
    );
}

/// The values and shape of a `.npy` file.
pub fn read_npy<T: npyz::Deserialize>(path: &Path) -> (Vec<T>, Vec<u64>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (npy.into_vec::<T>().unwrap(), shape)
}

/// Runs `poeem args`, which must fail, and returns its message.
pub fn error_of(args: &[&str]) -> String {
    let out = poeem(args);
    assert!(
        !out.status.success(),
        "poeem {args:?} should fail: {}",
        stdout(&out)
    );
    stderr(&out)
}
