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
//! | 1 | stored dtype (0 f32, 1 f16, 2 bf16) |
//! | 1 | float type of the run that computed it (0 not recorded, 1 f32, 2 f16, 3 bf16) |
//! | 1 | its quantization (0 none, 1 q8, 2 q4) |
//! | 1 | reserved, zero |
//! | 4 | version 2 only: frames K (each holds N / K tokens) |
//! | 4 × N | absolute positions |
//! | … | per layer: K then V, each `[kv_heads, N, head_dim]` |
//! | 32 | SHA-256 of every byte before it |
//!
//! The two bytes recording what computed the cache were reserved (zero) in
//! the first files, so older readers take the newer ones and newer readers
//! say "not recorded" for the older. An image cache is written as version 1, so older readers still take it;
//! version-1 readers refuse a video file (its version is newer) rather than
//! mistake K frames for one image with K·N tokens.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use half::{bf16, f16};
use sha2::{Digest, Sha256};

use super::cache::VocoCache;
use crate::error::{Error, Result};
use crate::io::bounded::open_regular;
use crate::model::precision::{Precision, Quantize};

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

/// What a `.voco` file's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    /// The fingerprint of the model that made it.
    pub fingerprint: [u8; 32],
    /// VoCo tokens, all frames together.
    pub tokens: usize,
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// How the keys and values are stored.
    pub dtype: CacheDType,
    /// What the run that computed them held its weights in (`None`: not recorded, older files).
    pub computed_in: Option<Precision>,
    pub frames: usize,
    /// Where the positions start.
    positions_at: usize,
}

/// Codes of the float type that computed a cache (byte 61; 0 = not recorded).
const COMPUTED: [(u8, FloatDType); 3] = [(1, FloatDType::F32), (2, FloatDType::F16), (3, FloatDType::BF16)];

/// What a cache must be for a model to read it: made by that model (its
/// fingerprint), in its geometry, with positions inside its context. A file is
/// compared with it from its header alone, before its payload is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub fingerprint: [u8; 32],
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions must be below this (the model's context).
    pub context: usize,
}

impl CacheSpec {
    /// Whether a header fits this spec: the reason it does not, in words.
    fn check(&self, h: &Header) -> Result<(), String> {
        if h.fingerprint != self.fingerprint {
            return Err(
                "made by a different model (fingerprint mismatch): compress the image again with this model".into()
            );
        }
        if (h.layers, h.kv_heads, h.head_dim) != (self.layers, self.kv_heads, self.head_dim) {
            return Err(format!(
                "its header declares {} layers x {} heads x {}, the model has {} x {} x {}",
                h.layers, h.kv_heads, h.head_dim, self.layers, self.kv_heads, self.head_dim
            ));
        }
        if h.tokens == 0 {
            return Err("holds no VoCo tokens".into());
        }
        if h.tokens >= self.context {
            return Err(format!(
                "declares {} VoCo tokens, more than the model's context of {}",
                h.tokens, self.context
            ));
        }
        if h.frames == 0 || !h.tokens.is_multiple_of(h.frames) {
            return Err(format!("{} VoCo tokens cannot be split into {} frames", h.tokens, h.frames));
        }
        Ok(())
    }
}

impl Header {
    /// Bytes of a header, version 2 (the longest); a file's first bytes up to this hold its header.
    pub const MAX_BYTES: usize = HEADER + 4;

    /// Parse and check the header at the start of `bytes` of a file of `file_len` bytes:
    /// its sizes are checked against that length (with checked arithmetic) before anything is read.
    pub fn parse(bytes: &[u8], file_len: u64) -> Result<Self, String> {
        if bytes.len() < 8 || bytes[..8] != MAGIC {
            return Err("not a .voco file (bad magic bytes)".into());
        }
        if bytes.len() < HEADER {
            return Err(format!("truncated: {file_len} bytes, the header alone is {HEADER}"));
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
        let (tokens, layers, kv_heads, head_dim) = (u32_at(44), u32_at(48), u32_at(52), u32_at(56));
        let dtype = CacheDType::from_code(bytes[60]).ok_or_else(|| format!("unknown dtype code {}", bytes[60]))?;
        let computed_in = match (bytes[61], Quantize::from_code(bytes[62])) {
            (0, _) => None,
            (code, Some(quantize)) => match COMPUTED.iter().find(|(c, _)| *c == code) {
                Some(&(_, dtype)) => Some(Precision { dtype, quantize }),
                None => return Err(format!("unknown computing dtype code {code}")),
            },
            (_, None) => return Err(format!("unknown quantization code {}", bytes[62])),
        };
        let (positions_at, frames) = match version {
            1 => (HEADER, 1),
            _ if bytes.len() < HEADER + 4 => {
                return Err(format!("truncated: {file_len} bytes, the header alone is {}", HEADER + 4));
            }
            _ => (HEADER + 4, u32_at(HEADER)),
        };
        let fingerprint = bytes[12..44].try_into().expect("32 bytes");
        let header =
            Self { version, fingerprint, tokens, layers, kv_heads, head_dim, dtype, computed_in, frames, positions_at };
        let expected = header.file_bytes().ok_or("header sizes overflow")?;
        if file_len != expected as u64 {
            return Err(format!(
                "{file_len} bytes, but its header ({tokens} tokens, {layers} layers, {kv_heads} heads x {head_dim}) needs {expected}: {}",
                if file_len < expected as u64 { "truncated" } else { "trailing bytes" }
            ));
        }
        Ok(header)
    }

    /// Read and check the header of the file at `path`, reading no more than the header.
    pub fn read(path: &Path) -> Result<Self> {
        let (file, len) = open_regular(path)?;
        Self::read_from(file, len, path).map(|(header, _, _)| header)
    }

    /// The header of the open regular file `file` of `len` bytes, with the bytes read so
    /// far and the file positioned after them.
    fn read_from(mut file: File, len: u64, path: &Path) -> Result<(Self, Vec<u8>, File)> {
        let mut prefix = Vec::with_capacity(Self::MAX_BYTES);
        (&mut file).take(Self::MAX_BYTES as u64).read_to_end(&mut prefix).map_err(|e| Error::io(path, e))?;
        let header = Self::parse(&prefix, len).map_err(|msg| invalid(path, msg))?;
        Ok((header, prefix, file))
    }

    /// Bytes of the keys and values.
    pub fn payload_bytes(&self) -> Option<usize> {
        [self.layers, self.kv_heads, self.tokens, self.head_dim, self.dtype.bytes()]
            .iter()
            .try_fold(2usize, |acc, &x| acc.checked_mul(x))
    }

    /// Bytes of the whole file.
    pub fn file_bytes(&self) -> Option<usize> {
        self.positions_at.checked_add(self.tokens.checked_mul(4)?)?.checked_add(self.payload_bytes()?)?.checked_add(32)
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
        let (computed, quantize) = match self.computed_in {
            None => (0, 0),
            Some(p) => (COMPUTED.iter().find(|(_, d)| *d == p.dtype).map_or(0, |(c, _)| *c), p.quantize.code()),
        };
        out.extend_from_slice(&[dtype.code(), computed, quantize, 0]);
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

    /// Read a `.voco` file that fits `spec` (made by the reading model), its keys
    /// and values converted once to `dtype` (the reading model's float type). The
    /// header is checked against the file's length and the spec before the rest
    /// is read, and nothing beyond the length it declares is read.
    pub fn load(path: &Path, spec: &CacheSpec, device: &Device, dtype: FloatDType) -> Result<Self> {
        let (file, len) = open_regular(path)?;
        let (header, mut bytes, file) = Header::read_from(file, len, path)?;
        spec.check(&header).map_err(|msg| invalid(path, msg))?;
        let expected = header.file_bytes().expect("checked by Header::parse") as u64;
        // The rest of the file, from where the header ended, and never more than declared.
        bytes.reserve(expected as usize - bytes.len());
        file.take(expected + 1 - bytes.len() as u64).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, spec, device, dtype).map_err(|msg| invalid(path, msg))
    }

    /// Decode a `.voco` file image that fits `spec`.
    pub fn from_bytes(bytes: &[u8], spec: &CacheSpec, device: &Device, dtype: FloatDType) -> Result<Self, String> {
        let h = Header::parse(bytes, bytes.len() as u64)?;
        spec.check(&h)?;
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err("checksum mismatch: the file is corrupted".into());
        }
        let (n, kv, d) = (h.tokens, h.kv_heads, h.head_dim);
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
        let positions: Vec<usize> = (0..n).map(|i| u32_at(h.positions_at + 4 * i)).collect();
        if let Some(&p) = positions.iter().find(|&&p| p >= spec.context) {
            return Err(format!("position {p} is outside the model's context of {}", spec.context));
        }
        let stored = match h.dtype {
            CacheDType::F32 => DType::F32,
            CacheDType::F16 => DType::F16,
            CacheDType::BF16 => DType::BF16,
        };
        let mut at = h.positions_at + 4 * n;
        let size = kv * n * d * h.dtype.bytes();
        let mut tensor = || {
            let raw = bytes[at..at + size].to_vec();
            at += size;
            // The stored type converts to the reading model's on the host, once.
            let data = TensorData::from_bytes_vec(raw, [1, kv, n, d], stored);
            Tensor::<4>::from_data(data, (device, DType::from(dtype)))
        };
        let layers = (0..h.layers).map(|_| (tensor(), tensor())).collect();
        Ok(Self { layers, positions, frames: h.frames, computed_in: h.computed_in })
    }
}

fn invalid(path: &Path, msg: String) -> Error {
    Error::Invalid(format!("{}: {msg}", path.display()))
}
