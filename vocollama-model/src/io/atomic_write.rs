//! Files are written whole or not at all: a temporary file beside the target,
//! synced, then renamed over it.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// A new, empty directory in `parent` named after `name` with a random tail,
/// created exclusively (an existing path, a planted symlink included, is
/// never reused).
pub fn fresh_dir(parent: &Path, name: &str) -> Result<std::path::PathBuf> {
    let mut last = None;
    for _ in 0..16 {
        let tail: u64 = rand_tail();
        let dir = parent.join(format!(".{name}.{}-{tail:016x}.tmp", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    Err(Error::io(parent, last.expect("tried at least once")))
}

/// A random 64-bit value from the standard library's hasher seed.
fn rand_tail() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Rename `from` to `to`, which must not exist: never replaces anything
/// (Linux: `renameat2(RENAME_NOREPLACE)`; elsewhere checked just before).
pub fn rename_new(from: &Path, to: &Path) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|e| Error::io(p, e.into()));
        let (a, b) = (c(from)?, c(to)?);
        // SAFETY: both are valid NUL-terminated paths for the duration of the call.
        let rc =
            unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_NOREPLACE) };
        if rc != 0 {
            return Err(Error::io(to, std::io::Error::last_os_error()));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        if std::fs::symlink_metadata(to).is_ok() {
            return Err(Error::io(to, std::io::ErrorKind::AlreadyExists.into()));
        }
        std::fs::rename(from, to).map_err(|e| Error::io(to, e))
    }
}
