//! A directory of frame caches keyed by content: a frame this model already
//! compressed into N VoCo tokens is read back instead of recomputed (a clip
//! asked about again, or clips sharing frames).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, FloatDType};
use image::RgbImage;
use sha2::{Digest, Sha256};

use super::cache::VocoCache;
use super::file::CacheDType;
use crate::error::{Error, Result};

pub struct FrameStore {
    dir: PathBuf,
    fingerprint: [u8; 32],
}

impl FrameStore {
    /// The store in `dir` (created with its first entry) for the model with `fingerprint`.
    pub fn open(dir: &Path, fingerprint: [u8; 32]) -> Result<Self> {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::Invalid(format!("{}: not a directory", dir.display())));
        }
        Ok(Self { dir: dir.to_path_buf(), fingerprint })
    }

    /// The file a frame's cache lives in: SHA-256 over the model (its
    /// fingerprint covers weights, configs and preprocessing), N and the pixels.
    pub fn path(&self, frame: &RgbImage, n: usize) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.fingerprint);
        for v in [n as u64, frame.width() as u64, frame.height() as u64] {
            h.update(v.to_le_bytes());
        }
        h.update(frame.as_raw());
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.voco"))
    }

    /// The cached frame, if present and whole (a damaged entry counts as missing and is rewritten).
    pub fn get(&self, path: &Path, device: &Device, dtype: FloatDType) -> Option<VocoCache> {
        VocoCache::load(path, &self.fingerprint, device, dtype).ok().filter(|c| c.frames == 1)
    }

    /// Store a frame's cache in f32, so a frame read back answers exactly as one computed.
    pub fn put(&self, path: &Path, cache: &VocoCache) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        cache.save(path, &self.fingerprint, CacheDType::F32)
    }
}
