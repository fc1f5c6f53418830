//! The `.voco` file (`docs/design.md` §7): a VoCo cache on disk, stamped with
//! the fingerprint of the model that made it and checksummed.
//!
//! Layout, little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `VOCO\r\n\x1a\n` (catches text-mode mangling, like PNG's) |
//! | 4 | format version: 1 for one image, 2 for a video |
//! | 32 | model fingerprint (SHA-256 of the configs and weight files' identity) |
//! | 4 × 4 | N tokens (all frames together), layers, key/value heads, head dim |
//! | 1 + 3 | dtype (0 f32, 1 f16, 2 bf16), 3 reserved zero bytes |
//! | 4 | version 2 only: frames K (each holds N / K tokens) |
//! | 4 × N | absolute positions |
//! | … | per layer: K then V, each `[kv_heads, N, head_dim]` |
//! | 32 | SHA-256 of every byte before it |
//!
//! An image cache is written as version 1, so older readers still take it;
//! version-1 readers refuse a video file (its version is newer) rather than
//! mistake K frames for one image with K·N tokens.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use half::{bf16, f16};
use sha2::{Digest, Sha256};

use super::cache::VocoCache;
use crate::error::{Error, Result};

pub const MAGIC: [u8; 8] = *b"VOCO\r\n\x1a\n";
/// The newest format version this code reads and writes.
pub const VERSION: u32 = 2;
/// Header bytes before the positions in version 1; version 2 adds the frame count.
const HEADER: usize = 8 + 4 + 32 + 16 + 4;

/// How the payload of a `.voco` file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum CacheDType {
    #[cfg_attr(feature = "clap", value(name = "f32"))]
    F32,
    #[cfg_attr(feature = "clap", value(name = "f16"))]
    F16,
    #[cfg_attr(feature = "clap", value(name = "bf16"))]
    BF16,
}

impl CacheDType {
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }
    fn code(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::BF16 => 2,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        [Self::F32, Self::F16, Self::BF16].into_iter().find(|d| d.code() == c)
    }
}

impl VocoCache {
    /// Encode as a `.voco` file image.
    pub fn to_bytes(&self, fingerprint: &[u8; 32], dtype: CacheDType) -> Vec<u8> {
        let (layers, kv, d) = self.geometry();
        let n = self.len();
        let version: u32 = if self.frames == 1 { 1 } else { 2 };
        let mut out = Vec::with_capacity(HEADER + 4 + 4 * n + self.payload_bytes(dtype) + 32);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(fingerprint);
        for v in [n, layers, kv, d] {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        out.extend_from_slice(&[dtype.code(), 0, 0, 0]);
        if version == 2 {
            out.extend_from_slice(&(self.frames as u32).to_le_bytes());
        }
        for &p in &self.positions {
            out.extend_from_slice(&(p as u32).to_le_bytes());
        }
        for (k, v) in &self.layers {
            for t in [k, v] {
                let values = t.to_data().convert::<f32>().try_into_vec::<f32>().expect("f32 cache");
                for x in values {
                    match dtype {
                        CacheDType::F32 => out.extend_from_slice(&x.to_le_bytes()),
                        CacheDType::F16 => out.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
                        CacheDType::BF16 => out.extend_from_slice(&bf16::from_f32(x).to_le_bytes()),
                    }
                }
            }
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Write atomically: a temporary file beside `path`, then a rename.
    pub fn save(&self, path: &Path, fingerprint: &[u8; 32], dtype: CacheDType) -> Result<()> {
        crate::io::atomic_write::write_atomic(path, &self.to_bytes(fingerprint, dtype))
    }

    /// Read a `.voco` file made by the model with this `fingerprint`.
    pub fn load(path: &Path, fingerprint: &[u8; 32], device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, fingerprint, device)
            .map_err(|msg| Error::Invalid(format!("{}: {msg}", path.display())))
    }

    pub fn from_bytes(bytes: &[u8], fingerprint: &[u8; 32], device: &Device) -> Result<Self, String> {
        if bytes.len() < 8 || bytes[..8] != MAGIC {
            return Err("not a .voco file (bad magic bytes)".into());
        }
        if bytes.len() < HEADER {
            return Err(format!("truncated: {} bytes, the header alone is {HEADER}", bytes.len()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
        let version = u32_at(8) as u32;
        if version > VERSION {
            return Err(format!(
                "format version {version} is newer than this vocollama reads ({VERSION}): upgrade vocollama"
            ));
        }
        if version == 0 {
            return Err("format version 0 is not valid".into());
        }
        let (n, layers, kv, d) = (u32_at(44), u32_at(48), u32_at(52), u32_at(56));
        let dtype = CacheDType::from_code(bytes[60]).ok_or_else(|| format!("unknown dtype code {}", bytes[60]))?;
        let (header, frames) = match version {
            1 => (HEADER, 1),
            _ if bytes.len() < HEADER + 4 => {
                return Err(format!("truncated: {} bytes, the header alone is {}", bytes.len(), HEADER + 4));
            }
            _ => (HEADER + 4, u32_at(HEADER)),
        };
        let payload = 2usize
            .checked_mul(layers)
            .and_then(|x| x.checked_mul(kv))
            .and_then(|x| x.checked_mul(n))
            .and_then(|x| x.checked_mul(d))
            .and_then(|x| x.checked_mul(dtype.bytes()))
            .ok_or("header sizes overflow")?;
        let expected = header + 4 * n + payload + 32;
        if bytes.len() != expected {
            return Err(format!(
                "{} bytes, but its header ({n} tokens, {layers} layers, {kv} heads x {d}) needs {expected}: {}",
                bytes.len(),
                if bytes.len() < expected { "truncated" } else { "trailing bytes" }
            ));
        }
        let (body, sum) = bytes.split_at(expected - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err("checksum mismatch: the file is corrupted".into());
        }
        if bytes[12..44] != fingerprint[..] {
            return Err(
                "made by a different model (fingerprint mismatch): compress the image again with this model".into()
            );
        }
        if n == 0 || layers == 0 {
            return Err("holds no VoCo tokens".into());
        }
        if frames == 0 || n % frames != 0 {
            return Err(format!("{n} VoCo tokens cannot be split into {frames} frames"));
        }
        let positions = (0..n).map(|i| u32_at(header + 4 * i)).collect();
        let mut at = header + 4 * n;
        let count = kv * n * d;
        let mut tensor = || {
            let raw = &bytes[at..at + count * dtype.bytes()];
            at += raw.len();
            let values: Vec<f32> = match dtype {
                CacheDType::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                CacheDType::F16 => {
                    raw.chunks_exact(2).map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f32()).collect()
                }
                CacheDType::BF16 => {
                    raw.chunks_exact(2).map(|c| bf16::from_le_bytes(c.try_into().unwrap()).to_f32()).collect()
                }
            };
            Tensor::<4>::from_data(TensorData::new(values, [1, kv, n, d]), device)
        };
        let layers = (0..layers).map(|_| (tensor(), tensor())).collect();
        Ok(Self { layers, positions, frames })
    }
}
