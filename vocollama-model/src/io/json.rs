//! JSON files read into `serde_json` values, one error per file naming it.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// The JSON value in `path`.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::config(path, format!("not valid JSON: {e}")))
}
