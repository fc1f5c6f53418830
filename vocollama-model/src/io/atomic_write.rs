//! Files are written whole or not at all, and nothing that is not the
//! program's own is replaced: a fresh temporary file (a random name, created
//! exclusively, so a planted link is never followed) beside the target,
//! synced, then renamed over it; a target that exists and is not a regular
//! file is refused; the temporary file is removed on every error. A process
//! killed mid-write leaves its temporary file; the next write beside it
//! removes it (its name carries the writer's process id, no longer running).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Write `bytes` to `path`, whole or not at all.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    refuse_unless_regular(path)?;
    let (tmp, mut f) = fresh_file(path)?;
    let written = f.write_all(bytes).and_then(|_| f.sync_all()).and_then(|_| {
        drop(f);
        kill_point("before-rename");
        std::fs::rename(&tmp, path)
    });
    written.map_err(|e| {
        // Only the file this call created.
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// An existing `path` may be replaced only if it is a regular file (not a
/// device, a directory or a symbolic link).
pub fn refuse_unless_regular(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => {
            let t = m.file_type();
            let what = if t.is_symlink() {
                "a symbolic link"
            } else if t.is_dir() {
                "a directory"
            } else {
                "not a regular file"
            };
            Err(Error::Invalid(format!("{}: exists and is {what}; refusing to replace it", path.display())))
        }
        _ => Ok(()),
    }
}

/// A new temporary file beside `path`, created exclusively with a random name.
fn fresh_file(path: &Path) -> Result<(PathBuf, std::fs::File)> {
    fresh(path, |tmp| std::fs::File::create_new(tmp))
}

/// A new, empty directory beside `path` named after it with a random tail,
/// created exclusively (an existing path, a planted symlink included, is
/// never reused).
pub fn fresh_dir(path: &Path) -> Result<PathBuf> {
    fresh(path, |tmp| std::fs::create_dir(tmp)).map(|(dir, ())| dir)
}

/// `create` at a fresh name `.NAME.PID-RANDOM.tmp` beside `path`, retried
/// while the name is taken; stale ones of killed writers are removed first.
fn fresh<T>(path: &Path, create: impl Fn(&Path) -> std::io::Result<T>) -> Result<(PathBuf, T)> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    sweep_stale(path);
    let mut last = None;
    for _ in 0..16 {
        let tmp = path.with_file_name(format!(".{name}.{}-{:016x}.tmp", std::process::id(), rand_tail()));
        match create(&tmp) {
            Ok(made) => {
                kill_point("created");
                return Ok((tmp, made));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(Error::io(&tmp, e)),
        }
    }
    Err(Error::io(path, last.expect("tried at least once")))
}

/// Remove the temporary files and directories (`.NAME.PID-RANDOM.tmp`) that
/// writers of `path`'s directory left when they were killed: names of exactly
/// that form whose process is no longer running. Anything else is left alone.
fn sweep_stale(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(stale_writer) else { continue };
        if pid != std::process::id() && !running(pid) {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                Ok(t) if t.is_file() => std::fs::remove_file(&p),
                _ => continue,
            };
        }
    }
}

/// The writer's process id in a temporary name `.NAME.PID-<16 hex>.tmp`, if it is one.
fn stale_writer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (head, tail) = rest.rsplit_once('-')?;
    if tail.len() != 16 || !tail.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (_, pid) = head.rsplit_once('.')?;
    pid.parse().ok()
}

/// Whether a process `pid` exists (Linux: `/proc/PID`; elsewhere assumed, so nothing is removed).
fn running(pid: u32) -> bool {
    if cfg!(target_os = "linux") { Path::new(&format!("/proc/{pid}")).exists() } else { true }
}

/// Tests kill the process at a named step of a write (`VOCOLLAMA_KILL_AT=created|before-rename`),
/// as a power cut or `kill -9` would, to check what a killed save leaves.
fn kill_point(step: &str) {
    if std::env::var_os("VOCOLLAMA_KILL_AT").is_some_and(|s| s == step) {
        std::process::abort();
    }
}

/// A random 64-bit value from the standard library's hasher seed.
fn rand_tail() -> u64 {
    #[cfg(test)]
    if let Some(t) = tests::FORCED_TAILS.with(|f| f.borrow_mut().pop()) {
        return t;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Tails `rand_tail` returns next (popped from the end), so a test can plant a link at the name.
        pub(super) static FORCED_TAILS: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    #[cfg(unix)]
    #[test]
    fn a_link_planted_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"keep").unwrap();
        let target = dir.path().join("out.bin");
        let planted = dir.path().join(format!(".out.bin.{}-{:016x}.tmp", std::process::id(), 0x1111u64));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        // The first name tried is the planted one; the second is free.
        FORCED_TAILS.with(|f| *f.borrow_mut() = vec![0x2222, 0x1111]);
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep", "the write went through the planted link");
        assert!(std::fs::symlink_metadata(&planted).unwrap().file_type().is_symlink(), "the planted link was touched");
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(names(dir.path()), [planted.file_name().unwrap().to_str().unwrap(), "out.bin", "victim.txt"]);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_regular_file_is_replaced_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(names(dir.path()), ["out.bin"]);
    }

    #[cfg(unix)]
    #[test]
    fn devices_links_and_directories_are_refused_and_left_as_they_are() {
        use std::os::unix::fs::FileTypeExt;
        // A device node (as root, replacing /dev/null would break the system).
        let e = write_atomic(Path::new("/dev/null"), b"x").unwrap_err().to_string();
        assert!(e.contains("/dev/null") && e.contains("not a regular file"), "{e}");
        assert!(std::fs::symlink_metadata("/dev/null").unwrap().file_type().is_char_device());

        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("theirs.txt");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = write_atomic(&link, b"x").unwrap_err().to_string();
        assert!(e.contains("a symbolic link"), "{e}");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = write_atomic(&sub, b"x").unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        assert_eq!(names(dir.path()), ["link", "sub", "theirs.txt"], "no temporary file left");
    }

    #[test]
    fn stale_temporary_files_of_dead_writers_are_swept_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        // A pid above the kernel's maximum (2^22) is never running.
        let dead = format!(".out.bin.{}-{:016x}.tmp", 4_194_304 + 17, 0xabcdefu64);
        let dead_dir = format!(".other.{}-{:016x}.tmp", 4_194_305, 1u64);
        let mine = format!(".out.bin.{}-{:016x}.tmp", std::process::id(), 2u64);
        let lookalikes =
            [".out.bin.123-xyz.tmp", ".out.bin.tmp", "notes.txt", ".out.bin.4194321-00000000000000000.tmp"];
        std::fs::write(dir.path().join(&dead), b"partial").unwrap();
        std::fs::create_dir(dir.path().join(&dead_dir)).unwrap();
        std::fs::write(dir.path().join(&dead_dir).join("model.safetensors"), b"partial").unwrap();
        std::fs::write(dir.path().join(&mine), b"in progress").unwrap();
        for l in lookalikes {
            std::fs::write(dir.path().join(l), b"theirs").unwrap();
        }
        write_atomic(&path, b"new").unwrap();
        let mut want: Vec<String> = lookalikes.iter().map(|s| s.to_string()).collect();
        want.extend([mine, "out.bin".into()]);
        want.sort();
        assert_eq!(names(dir.path()), want);
        assert_eq!(stale_writer(".a.b.42-0123456789abcdef.tmp"), Some(42));
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // The parent does not exist: nothing can be created, nothing is left.
        let path = dir.path().join("missing/out.bin");
        assert!(write_atomic(&path, b"x").is_err());
        assert!(names(dir.path()).is_empty());
    }
}
