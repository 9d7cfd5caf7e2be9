//! Temporary files of atomic writes: their names, and the removal of those whose writer is gone.
//!
//! A temporary file is `.<name>.<pid>.<start>.<n>.tmp`: the target's name, the writing process's
//! id and start time (clock ticks since boot, from `/proc/<pid>/stat`; 0 where unknown) and a
//! counter. A process killed mid-write leaves its file behind; the next write to the same target
//! removes it when it can prove the writer gone: the file names this process but is not one of its
//! writes in flight (no other process can have this id now), or no process with that id runs, or
//! the one that does started at another time (the id was reused). Files of live writers, files
//! that do not follow the pattern and anything that is not a regular file are left alone.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// File names of this process's temporary files that are being written.
static IN_FLIGHT: Mutex<Vec<OsString>> = Mutex::new(Vec::new());

/// The process id and start time of this process.
fn this_process() -> (u32, u64) {
    static THIS: OnceLock<(u32, u64)> = OnceLock::new();
    *THIS.get_or_init(|| {
        let pid = std::process::id();
        (pid, start_time(pid).unwrap_or(0))
    })
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), where it can be read.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may hold spaces; fields 3.. follow it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The name of this process's `n`-th temporary file for target file name `name`.
pub(crate) fn temp_name(name: &OsStr, n: u64) -> OsString {
    let (pid, start) = this_process();
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".{pid}.{start}.{n}.tmp"));
    temp
}

/// Records that the temporary file at `path` is being written by this process.
pub(crate) fn register(path: &Path) {
    if let Some(name) = path.file_name() {
        lock().push(name.to_owned());
    }
}

/// Records that the temporary file at `path` is no longer being written.
pub(crate) fn unregister(path: &Path) {
    if let Some(name) = path.file_name() {
        let mut in_flight = lock();
        if let Some(i) = in_flight.iter().position(|n| n == name) {
            in_flight.swap_remove(i);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<OsString>> {
    // The list stays consistent even if a holder panicked: each change is one push or remove.
    IN_FLIGHT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The writer (process id, start time if recorded) of `file`, when it is a temporary file of
/// target file name `name`; earlier versions wrote `.<name>.<pid>.<n>.tmp`, without start time.
fn writer_of(file: &OsStr, name: &OsStr) -> Option<(u32, Option<u64>)> {
    let file = file.as_encoded_bytes();
    let name = name.as_encoded_bytes();
    let rest = file
        .strip_prefix(b".")?
        .strip_prefix(name)?
        .strip_prefix(b".")?;
    let fields = std::str::from_utf8(rest.strip_suffix(b".tmp")?).ok()?;
    let numbers: Vec<u64> = fields
        .split('.')
        .map(|f| {
            (!f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
                .then(|| f.parse().ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    let pid = u32::try_from(numbers[0]).ok()?;
    match numbers[..] {
        [_, start, _] => Some((pid, Some(start))),
        [_, _] => Some((pid, None)),
        _ => None,
    }
}

/// Whether the temporary file `file`, written by `(pid, start)`, provably has no live writer.
fn writer_is_gone(file: &OsStr, pid: u32, start: Option<u64>) -> bool {
    let (this_pid, _) = this_process();
    if pid == this_pid {
        // No other process has this id while this one runs.
        return !lock().iter().any(|n| n == file);
    }
    if !Path::new("/proc/self/stat").exists() {
        return false; // no process table to consult: nothing is provable
    }
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return true;
    }
    match (start, start_time(pid)) {
        (Some(recorded), Some(running)) => recorded != 0 && recorded != running,
        _ => false,
    }
}

/// Removes the temporary files in `dir` of earlier writes to `name` whose writer is gone. Best
/// effort: a directory or file that cannot be read or removed is left as it is.
pub(crate) fn remove_stale_temporaries(dir: &Path, name: &OsStr) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some((pid, start)) = writer_of(&file, name) else {
            continue;
        };
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if regular && writer_is_gone(&file, pid, start) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_parse_back_to_their_writer() {
        let name = OsStr::new("out.poeem");
        let (pid, start) = this_process();
        let temp = temp_name(name, 7);
        assert_eq!(writer_of(&temp, name), Some((pid, Some(start))));
        assert_eq!(
            writer_of(OsStr::new(".out.poeem.12.3.tmp"), name),
            Some((12, None))
        );
        for other in [
            ".out.poeem.tmp",
            ".out.poeem.x.1.tmp",
            ".out.poeem.1.2.3.4.tmp",
            ".out.poeem.1..3.tmp",
            ".out.poeem.1.2.3",
            "out.poeem.1.2.3.tmp",
            ".other.1.2.3.tmp",
            ".out.poeem.99999999999.2.3.tmp",
        ] {
            assert_eq!(writer_of(OsStr::new(other), name), None, "{other}");
        }
    }

    #[test]
    fn this_process_in_flight_files_are_kept_and_its_finished_ones_are_not() {
        let temp = temp_name(OsStr::new("x"), 1_000_000);
        let (pid, start) = this_process();
        register(Path::new(&temp));
        assert!(!writer_is_gone(&temp, pid, Some(start)));
        unregister(Path::new(&temp));
        assert!(writer_is_gone(&temp, pid, Some(start)));
    }
}
