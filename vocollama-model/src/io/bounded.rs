//! Files read whole, with a cap: only regular files (a device or a pipe could
//! be read without end), and none larger than what its format can need.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The largest config-like file read (config.json, an index, tokenizer files):
/// a tokenizer.json of a 256k-token vocabulary is ~20 MiB.
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// The file at `path` and its length, refused unless it is a regular file.
pub fn open_regular(path: &Path) -> Result<(std::fs::File, u64)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!("{}: not a regular file", path.display())));
    }
    Ok((file, meta.len()))
}

/// The file at `path`, refused unless it is a regular file of at most `max` bytes.
pub fn check_regular(path: &Path, max: u64) -> Result<std::fs::File> {
    let (file, len) = open_regular(path)?;
    if len > max {
        return Err(Error::Invalid(format!(
            "{}: {len} bytes, more than the {max} bytes such a file can need",
            path.display()
        )));
    }
    Ok(file)
}

/// The bytes of the regular file at `path`, at most `max` of them.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = check_regular(path, max)?;
    let mut bytes = Vec::new();
    // The length was checked; the cap also holds if the file grows while it is read.
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::Invalid(format!("{}: grew past {max} bytes while it was read", path.display())));
    }
    Ok(bytes)
}
