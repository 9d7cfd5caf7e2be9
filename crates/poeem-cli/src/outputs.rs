//! The check every command runs before reading or writing: inputs are files, outputs have a
//! directory to go to, and no output is one of the inputs or another output.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use poeem::fs::FileId;

/// A file a command reads or writes, with the words that name it in messages (usually the
/// option, e.g. `--index`).
#[derive(Debug)]
pub struct Named {
    what: String,
    path: PathBuf,
    /// The command creates the output's directory (a model directory) before writing it.
    creates_dir: bool,
}

impl Named {
    /// The file at `path`, called `what`.
    pub fn new(what: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            what: what.into(),
            path: path.into(),
            creates_dir: false,
        }
    }

    /// An output whose directory the command creates when it is missing.
    pub fn in_created_dir(mut self) -> Self {
        self.creates_dir = true;
        self
    }
}

/// Refuses, before anything is read or written, an input that is a directory, an output whose
/// directory does not exist, and outputs that would destroy an input or another output.
///
/// Paths are compared by identity ([`FileId`]): two spellings, a hard link or a symbolic link of
/// one file are the same file.
///
/// # Errors
/// When an input is a directory, an output's directory is missing, or an output is the same
/// file as an input or as another output; the message names the files concerned.
pub fn check_outputs(inputs: &[Named], outputs: &[Named]) -> Result<()> {
    if let Some(dir) = inputs.iter().find(|input| input.path.is_dir()) {
        bail!(
            "{} {} is a directory, not a file",
            dir.what,
            dir.path.display()
        );
    }
    for output in outputs.iter().filter(|output| !output.creates_dir) {
        let parent = match output.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            bail!(
                "{} {}: the directory {} does not exist (create it first)",
                output.what,
                output.path.display(),
                parent.display()
            );
        }
        if output.path.is_dir() {
            bail!(
                "{} {} is a directory: give the path of a file to write",
                output.what,
                output.path.display()
            );
        }
    }
    let id = |file: &Named| {
        FileId::of(&file.path).with_context(|| format!("locating {}", file.path.display()))
    };
    let input_ids = inputs.iter().map(id).collect::<Result<Vec<_>>>()?;
    let output_ids = outputs.iter().map(id).collect::<Result<Vec<_>>>()?;
    for (i, (output, output_id)) in outputs.iter().zip(&output_ids).enumerate() {
        if let Some(input) = inputs
            .iter()
            .zip(&input_ids)
            .find_map(|(input, input_id)| (input_id == output_id).then_some(input))
        {
            bail!(
                "{} {} is the same file as {} {}: refusing to overwrite an input (choose \
                 another output path)",
                output.what,
                output.path.display(),
                input.what,
                input.path.display()
            );
        }
        if let Some(earlier) = outputs[..i]
            .iter()
            .zip(&output_ids)
            .find_map(|(earlier, earlier_id)| (earlier_id == output_id).then_some(earlier))
        {
            bail!(
                "{} {} and {} {} are the same file: give each output its own path",
                earlier.what,
                earlier.path.display(),
                output.what,
                output.path.display()
            );
        }
    }
    Ok(())
}

/// The inputs an optional path adds.
pub fn optional(what: &str, path: Option<&Path>) -> Option<Named> {
    path.map(|path| Named::new(what, path))
}
