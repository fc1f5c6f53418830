//! A directory of frame caches keyed by content: a frame this model already
//! compressed into N VoCo tokens is read back instead of recomputed (a clip
//! asked about again, or clips sharing frames).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, FloatDType};
use image::RgbImage;
use sha2::{Digest, Sha256};

use super::cache::VocoCache;
use super::file::{CacheDType, CacheSpec};
use crate::error::{Error, Result};

pub struct FrameStore {
    dir: PathBuf,
    /// The model's: entries are checked against it, with the entry's own key as fingerprint.
    spec: CacheSpec,
}

/// Where one frame's cache lives, and the key it is stamped with.
pub struct Entry {
    pub path: PathBuf,
    /// SHA-256 over the model's fingerprint, N and the pixels: the file name, and the
    /// fingerprint written into the entry, so an entry renamed or swapped is not taken.
    key: [u8; 32],
}

/// SHA-256 over a model's fingerprint, N and a picture's size and pixels: what
/// names the picture's VoCo cache for that model (its fingerprint covers
/// weights, configs and preprocessing).
pub fn key(fingerprint: &[u8; 32], frame: &RgbImage, n: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(fingerprint);
    for v in [n as u64, frame.width() as u64, frame.height() as u64] {
        h.update(v.to_le_bytes());
    }
    h.update(frame.as_raw());
    h.finalize().into()
}

/// A key in lowercase hexadecimal.
pub fn hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

impl Entry {
    /// Whether the entry's file is there (whole or not: [`FrameStore::get`] says).
    pub fn exists(&self) -> bool {
        self.path.is_file()
    }
}

impl FrameStore {
    /// The store in `dir` (created with its first entry) for the model whose caches fit `spec`.
    pub fn open(dir: &Path, spec: CacheSpec) -> Result<Self> {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::Invalid(format!("{}: not a directory", dir.display())));
        }
        Ok(Self { dir: dir.to_path_buf(), spec })
    }

    /// The entry of a frame compressed into `n` VoCo tokens: keyed by the model (its
    /// fingerprint covers weights, configs and preprocessing), N and the pixels.
    pub fn entry(&self, frame: &RgbImage, n: usize) -> Entry {
        self.entry_of(key(&self.spec.fingerprint, frame, n))
    }

    /// The entry stamped with `key` (one that [`key`] gave).
    pub fn entry_of(&self, key: [u8; 32]) -> Entry {
        Entry { path: self.dir.join(format!("{}.voco", hex(&key))), key }
    }

    /// The cached frame, if present, whole and stamped with this entry's key (anything
    /// else — missing, damaged, another frame's, not a file — counts as missing and is recomputed).
    pub fn get(&self, entry: &Entry, device: &Device, dtype: FloatDType) -> Option<VocoCache> {
        let spec = CacheSpec { fingerprint: entry.key, ..self.spec.clone() };
        VocoCache::load(&entry.path, &spec, device, dtype).ok().filter(|c| c.frames == 1)
    }

    /// Store a frame's cache in f32, so a frame read back answers exactly as one computed.
    pub fn put(&self, entry: &Entry, cache: &VocoCache) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        cache.save(&entry.path, &entry.key, CacheDType::F32)
    }
}
