//! What a reproduction run records about where and on what it ran: the machine, the date, the
//! git revision and a hash of the input data.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The machine: CPU model, logical cores, memory, operating system and architecture.
pub(crate) fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, name)| name.trim().to_owned());
    let memory_gib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let kib: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some((kib / (1024.0 * 1024.0) * 10.0).round() / 10.0)
    });
    json!({
        "cpu": cpu,
        "logical_cores": std::thread::available_parallelism().map_or(1, usize::from),
        "memory_gib": memory_gib,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}

/// A one-line description of [`machine`] for reports.
pub(crate) fn machine_line(machine: &Value) -> String {
    let memory = machine["memory_gib"]
        .as_f64()
        .map_or_else(String::new, |g| format!(", {g} GiB"));
    format!(
        "{}, {} logical cores{memory}, {}/{}",
        machine["cpu"].as_str().unwrap_or("unknown CPU"),
        machine["logical_cores"],
        machine["os"].as_str().unwrap_or("?"),
        machine["arch"].as_str().unwrap_or("?"),
    )
}

/// The current UTC time, RFC 3339 to the second.
pub(crate) fn utc_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The workspace's git revision, with `-dirty` when tracked files have uncommitted changes;
/// `"unknown"` outside a git checkout.
pub(crate) fn git_revision(workspace: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(workspace)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{rev}-dirty") } else { rev }
        }
        _ => "unknown".to_owned(),
    }
}

/// A SHA-256 digest being fed the input data of a run.
#[derive(Default)]
pub(crate) struct DataHash(Sha256);

impl DataHash {
    /// Feeds (query, item) pairs, each as two little-endian u32.
    pub(crate) fn pairs(&mut self, pairs: &[(u32, u32)]) {
        let mut bytes = Vec::with_capacity(8 * pairs.len().min(1 << 16));
        for chunk in pairs.chunks(1 << 16) {
            bytes.clear();
            for &(q, i) in chunk {
                bytes.extend_from_slice(&q.to_le_bytes());
                bytes.extend_from_slice(&i.to_le_bytes());
            }
            self.0.update(&bytes);
        }
    }

    /// Feeds f32 values, little-endian.
    pub(crate) fn floats(&mut self, values: &[f32]) {
        for v in values {
            self.0.update(v.to_le_bytes());
        }
    }

    /// Feeds a file's name and contents.
    ///
    /// # Errors
    /// The file cannot be read.
    pub(crate) fn file(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if let Some(name) = path.file_name() {
            self.0.update(name.as_encoded_bytes());
        }
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(&bytes);
        Ok(())
    }

    /// The digest as lowercase hex.
    pub(crate) fn hex(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_hashes_are_stable_and_tell_inputs_apart() {
        let hash = |pairs: &[(u32, u32)]| {
            let mut h = DataHash::default();
            h.pairs(pairs);
            h.hex()
        };
        assert_eq!(hash(&[(1, 2)]), hash(&[(1, 2)]));
        assert_ne!(hash(&[(1, 2)]), hash(&[(2, 1)]));
        assert_eq!(hash(&[]).len(), 64);
        // SHA-256 of nothing.
        assert_eq!(
            hash(&[]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn machine_and_date_are_filled_in() {
        let m = machine();
        assert!(m["logical_cores"].as_u64().unwrap() >= 1);
        assert!(machine_line(&m).contains("logical cores"));
        let now = utc_now();
        assert!(now.ends_with('Z') && now.len() == 20, "{now}");
    }
}
