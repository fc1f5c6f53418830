//! Model directories written whole, and never over what is not ours.
//!
//! A model directory this program writes carries `vocollama_version` in its
//! config.json. `--out` may name a new path, an empty directory, or such a
//! directory (or one holding only such `checkpoint-*` directories); anything
//! else is refused before any work. The new model is built in a fresh,
//! exclusively created sibling directory and swapped with the old one in one
//! step (Linux's `renameat2(RENAME_EXCHANGE)`), so at every instant `--out`
//! holds a whole model, old or new; a failure before the swap removes only
//! the new directory. After the swap, what the old directory held besides the
//! model's own files (the run's checkpoints, anything a user put there) moves
//! into the new one; the old model's files are removed.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vocollama_model::io::json::read_json;
use vocollama_model::{Error, Result};

/// The config.json key that marks a model directory written by vocollama.
pub const MARKER: &str = "vocollama_version";

/// The entries of a model directory this program writes: only these are
/// removed with an old model; everything else in it is kept.
pub const MODEL_FILES: [&str; 10] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vision_tower",
    "trainer_state.json",
    "optimizer.bpk",
];

/// Whether `dir` holds a model written by vocollama (its config.json says so).
fn is_model_dir(dir: &Path) -> bool {
    let config = dir.join("config.json");
    config.is_file() && read_json(&config).is_ok_and(|v| v.get(MARKER).is_some())
}

/// Refuse an `--out` this program may not replace: an existing non-directory
/// (a file, a device, a link), or a non-empty directory that is neither a
/// vocollama model directory nor one holding only its `checkpoint-*` directories.
pub fn check_out(out: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(out, e)),
        Ok(m) => m,
    };
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: exists and is not a directory; refusing to replace it (choose a new --out)",
            out.display()
        )));
    }
    if is_model_dir(out) {
        return Ok(());
    }
    for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let entry = entry.map_err(|e| Error::io(out, e))?;
        let ours = entry.file_name().to_string_lossy().starts_with("checkpoint-")
            && entry.file_type().is_ok_and(|t| t.is_dir())
            && is_model_dir(&entry.path());
        if !ours {
            return Err(Error::Invalid(format!(
                "{}: not empty and not a model directory written by vocollama (it holds {}); \
                 refusing to replace it (choose a new --out)",
                out.display(),
                entry.file_name().to_string_lossy()
            )));
        }
    }
    Ok(())
}

/// `config` (a config.json object) marked as written by this program.
pub fn mark(config: &mut serde_json::Map<String, Value>) {
    config.insert(MARKER.into(), Value::from(env!("CARGO_PKG_VERSION")));
}

/// Write a model directory at `out`: `fill` writes it into a fresh sibling
/// directory (its config.json marked with [`mark`]), which then takes `out`'s
/// place in one step. `out` is checked first with [`check_out`].
pub fn write_model_dir(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    check_out(out)?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    // A fresh directory with a random name, created exclusively; removed on drop until kept.
    let new = tempfile::Builder::new()
        .prefix(&format!(".{name}.new-"))
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    fill(new.path())?;
    #[cfg(unix)]
    {
        // A model directory as `mkdir` would make it, not the temporary directory's 0700.
        use std::os::unix::fs::PermissionsExt;
        let path = new.path();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|e| Error::io(path, e))?;
    }
    if !is_model_dir(new.path()) {
        return Err(Error::Invalid(format!("{}: the new model's config.json is not marked as ours", out.display())));
    }
    if !out.exists() {
        return std::fs::rename(new.path(), out).map(|()| drop(new.keep())).map_err(|e| Error::io(out, e));
    }
    let old = exchange(new.path(), out)?;
    // `new` now names the old directory: keep the tempdir guard from deleting it wholesale.
    let _ = new.keep();
    retire(&old, out)
}

/// Swap the directories `a` and `b` in one step; `a`'s path now holds what `b` held.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<PathBuf> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::io(p, std::io::ErrorKind::InvalidInput.into()))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc != 0 {
        return Err(Error::io(b, std::io::Error::last_os_error()));
    }
    Ok(a.to_path_buf())
}

/// Elsewhere: the old directory moved aside, then the new one into place (a
/// moment without a model at `b`, but nothing lost: the old one is beside it).
#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, b: &Path) -> Result<PathBuf> {
    let aside = a.with_extension("old");
    std::fs::rename(b, &aside).map_err(|e| Error::io(b, e))?;
    std::fs::rename(a, b).map_err(|e| Error::io(b, e))?;
    Ok(aside)
}

/// After a swap: what `old` held besides a model's own files moves into
/// `out`; the old model's files go, then the directory if it is empty.
fn retire(old: &Path, out: &Path) -> Result<()> {
    for entry in std::fs::read_dir(old).map_err(|e| Error::io(old, e))? {
        let entry = entry.map_err(|e| Error::io(old, e))?;
        let name = entry.file_name();
        let path = entry.path();
        if MODEL_FILES.iter().any(|f| name == *f) {
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| Error::io(&path, e))?;
        } else if !out.join(&name).exists() {
            std::fs::rename(&path, out.join(&name)).map_err(|e| Error::io(&path, e))?;
        }
    }
    // Left in place (and said) when something could not move: nothing of it is deleted.
    std::fs::remove_dir(old).map_err(|e| {
        Error::Invalid(format!(
            "{}: the new model is in place, but the previous one's directory keeps entries that could not move back ({e})",
            old.display()
        ))
    })
}
