//! The other runtimes' benchmark scripts, run as child processes in the same run:
//! each writes its JSON report to a file this side reads back.

use std::path::Path;
use std::process::Command;

use serde::de::DeserializeOwned;
use vocollama_model::{Error, Result};

/// `python script args…`, then the JSON it wrote at `out`; `side` names it in errors and
/// `fix` says what to do when Python cannot be run.
pub fn run<T: DeserializeOwned>(
    python: &str,
    script: &Path,
    args: &[String],
    out: &Path,
    side: &str,
    fix: &str,
) -> Result<T> {
    let status = Command::new(python)
        .args(args)
        .status()
        .map_err(|e| Error::Invalid(format!("cannot run `{python}` for {side} ({e}); {fix}")))?;
    if !status.success() {
        return Err(Error::Invalid(format!("{} failed ({status}); see its output above", script.display())));
    }
    let text = std::fs::read_to_string(out).map_err(|e| Error::io(out, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{}: its JSON report is not what was expected: {e}", script.display())))
}
