//! JSON files read into `serde_json` values, one error per file naming it.

use std::path::Path;

use serde_json::Value;

use super::bounded::{MAX_CONFIG_BYTES, read_bounded};
use crate::error::{Error, Result};

/// The JSON value in the config-like file `path` (at most [`MAX_CONFIG_BYTES`]).
pub fn read_json(path: &Path) -> Result<Value> {
    read_json_capped(path, MAX_CONFIG_BYTES)
}

/// The JSON value in `path`, a regular file of at most `max` bytes (a dataset may be large).
pub fn read_json_capped(path: &Path, max: u64) -> Result<Value> {
    let bytes = read_bounded(path, max)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::config(path, format!("not valid JSON: {e}")))
}
