//! One error type for loading and running models: every message names the
//! file, tensor or field at fault and what was expected.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Weights { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Image { path: PathBuf, msg: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
    pub fn config(path: &Path, msg: impl Into<String>) -> Self {
        Self::Config { path: path.to_path_buf(), msg: msg.into() }
    }
    pub fn weights(path: &Path, msg: impl Into<String>) -> Self {
        Self::Weights { path: path.to_path_buf(), msg: msg.into() }
    }
}
