//! Where a model's training data comes from, stored in its model directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::PipelineError;
use crate::train::synthetic::tutorial_dataset;
use crate::train::{DataConfig, Dataset};

/// Name of the data description inside a model directory (beside the checkpoint).
pub const DATA_FILE: &str = "data.json";

/// The data a model is trained on: the synthetic tutorial (regenerated from its size and seed)
/// or data files (re-read, split the same way, whenever needed).
///
/// `poeem train` writes it into the model directory as [`DATA_FILE`] before the first step, so
/// that `--resume` and `poeem evaluate` rebuild the same [`Dataset`] (and so the same held-out
/// split) without data arguments. File paths are stored absolute; the files must still be there
/// and unchanged when the data is reloaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// [`tutorial_dataset`]`(n_pairs, seed)`: 10,000 query and item ids, no held-out pairs
    /// (evaluation uses the tutorial's relevance rule, [`EvalSet::tutorial`]).
    ///
    /// [`EvalSet::tutorial`]: super::EvalSet::tutorial
    Tutorial {
        /// Training pairs.
        n_pairs: usize,
        /// Seed of the pairs.
        seed: u64,
    },
    /// Interactions and feature files read by [`Dataset::load`].
    Files(Box<DataConfig>),
}

impl DataSource {
    /// Builds the dataset.
    ///
    /// # Errors
    /// The loader's errors for unreadable or malformed files.
    pub fn load(&self) -> Result<Dataset, PipelineError> {
        Ok(match self {
            Self::Tutorial { n_pairs, seed } => tutorial_dataset(*n_pairs, *seed),
            Self::Files(config) => Dataset::load(config)?,
        })
    }

    /// The data files the source reads, each with what it holds ("interactions", "query
    /// features", "item features"); none for the synthetic tutorial.
    pub fn files(&self) -> Vec<(&'static str, &Path)> {
        let Self::Files(config) = self else {
            return Vec::new();
        };
        let mut files = vec![("interactions", config.interactions.path.as_path())];
        if let Some(source) = &config.query_features {
            files.push(("query features", &source.path));
        }
        if let Some(source) = &config.item_features {
            files.push(("item features", &source.path));
        }
        files
    }

    /// The same source with every file path made absolute (relative to the current directory),
    /// so that it can be reloaded from anywhere.
    ///
    /// # Errors
    /// [`PipelineError::Io`] when the current directory cannot be read.
    pub fn absolute(mut self) -> Result<Self, PipelineError> {
        if let Self::Files(config) = &mut self {
            let cwd = std::env::current_dir().map_err(|e| PipelineError::io(".", e))?;
            let absolute = |path: &mut PathBuf| {
                if path.is_relative() {
                    *path = cwd.join(&*path);
                }
            };
            absolute(&mut config.interactions.path);
            if let Some(source) = &mut config.query_features {
                absolute(&mut source.path);
            }
            if let Some(source) = &mut config.item_features {
                absolute(&mut source.path);
            }
        }
        Ok(self)
    }

    /// Writes the description into `model_dir` ([`DATA_FILE`]) atomically.
    ///
    /// # Errors
    /// [`PipelineError::Io`] when the file cannot be written.
    pub fn save(&self, model_dir: &Path) -> Result<(), PipelineError> {
        let path = model_dir.join(DATA_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| PipelineError::BadFile {
            path: path.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        poeem_fs::write_atomically(&path, |w| {
            use std::io::Write;
            w.write_all(&json)?;
            w.write_all(b"\n")
        })
        .map_err(|e| PipelineError::io(e.path, e.source))
    }

    /// Reads the description from `model_dir`.
    ///
    /// # Errors
    /// [`PipelineError::Io`] when there is none (naming the file and what writes it),
    /// [`PipelineError::BadFile`] when it is not a valid description.
    pub fn read(model_dir: &Path) -> Result<Self, PipelineError> {
        let path = model_dir.join(DATA_FILE);
        let bytes = poeem_fs::read_input(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                PipelineError::BadFile {
                    path: path.clone(),
                    reason: format!(
                        "missing: {} holds no data description (`poeem train` writes one)",
                        model_dir.display()
                    ),
                }
            } else {
                PipelineError::io(&path, e)
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|e| PipelineError::BadFile {
            path,
            reason: format!("not a data description: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::InteractionsSource;

    #[test]
    fn a_data_source_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        for source in [
            DataSource::Tutorial {
                n_pairs: 1234,
                seed: 9,
            },
            DataSource::Files(Box::new(DataConfig::new(
                InteractionsSource::new("/data/x.csv", "user", "item").with_time_column("t"),
            ))),
        ] {
            source.save(dir.path()).unwrap();
            assert_eq!(DataSource::read(dir.path()).unwrap(), source);
        }
        std::fs::write(dir.path().join(DATA_FILE), b"{\"kind\": \"nope\"}").unwrap();
        let err = DataSource::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a data description"), "{err}");
        let err = DataSource::read(&dir.path().join("absent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("poeem train"), "{err}");
    }

    #[test]
    fn relative_paths_become_absolute() {
        let source = DataSource::Files(Box::new(DataConfig::new(InteractionsSource::new(
            "rel/x.csv",
            "u",
            "i",
        ))))
        .absolute()
        .unwrap();
        let DataSource::Files(config) = source else {
            unreachable!()
        };
        assert!(config.interactions.path.is_absolute());
        assert!(config.interactions.path.ends_with("rel/x.csv"));
    }
}
