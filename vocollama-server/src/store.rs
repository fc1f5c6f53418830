//! The VoCo store: every image's VoCo cache, keyed by the SHA-256 of the
//! model's fingerprint, N and the decoded pixels, so stage 1 runs once per
//! picture whoever sends it and however often. The caches live in memory up
//! to a byte budget, least recently used out first, and optionally in a
//! directory of `.voco` files (written to a temporary file and renamed into
//! place, so a server killed mid-write leaves no partial entry; an entry that
//! does not read back whole under its key is treated as missing).

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Device, FloatDType};
use vocollama_model::VocoCache;
use vocollama_model::voco::frame_store::{FrameStore, hex};

struct Entry {
    cache: VocoCache,
    bytes: u64,
    used: u64,
}

/// Hits, misses and what is held.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub bytes: u64,
    pub budget: u64,
    pub evictions: u64,
}

pub struct VocoStore {
    budget: u64,
    entries: HashMap<[u8; 32], Entry>,
    /// Last use → key: the least recently used first.
    order: BTreeMap<u64, [u8; 32]>,
    clock: u64,
    disk: Option<FrameStore>,
    stats: StoreStats,
}

impl VocoStore {
    /// A store of at most `budget` bytes of caches in memory, backed by `disk`
    /// (a directory of `.voco` files for the model) if given.
    pub fn new(budget: u64, disk: Option<FrameStore>) -> Self {
        Self {
            budget,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
            disk,
            stats: StoreStats { budget, ..Default::default() },
        }
    }

    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// Whether `key` is held, in memory or on disk (without reading it).
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.entries.contains_key(key) || self.disk.as_ref().is_some_and(|d| d.entry_of(*key).exists())
    }

    /// The cache of `key`, counted as a hit or a miss; one read from disk (onto
    /// `device`, in `dtype`) is kept in memory.
    pub fn get(&mut self, key: &[u8; 32], device: &Device, dtype: FloatDType) -> Option<VocoCache> {
        self.clock += 1;
        if let Some(e) = self.entries.get_mut(key) {
            self.order.remove(&e.used);
            e.used = self.clock;
            self.order.insert(self.clock, *key);
            self.stats.hits += 1;
            return Some(e.cache.clone());
        }
        let read = self.disk.as_ref().and_then(|d| d.get(&d.entry_of(*key), device, dtype));
        match read {
            Some(cache) => {
                self.stats.hits += 1;
                self.remember(*key, cache.clone());
                Some(cache)
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Keep `cache` (just compressed) under `key`: in memory, and written to the directory if there is one.
    pub fn put(&mut self, key: [u8; 32], cache: &VocoCache) -> Result<(), String> {
        // Called after a miss: a file there did not read back whole, and is replaced.
        if let Some(d) = &self.disk {
            d.put(&d.entry_of(key), cache).map_err(|e| format!("the VoCo store could not write {}: {e}", hex(&key)))?;
        }
        self.clock += 1;
        self.remember(key, cache.clone());
        Ok(())
    }

    fn remember(&mut self, key: [u8; 32], cache: VocoCache) {
        let bytes = cache.device_bytes() as u64;
        if bytes > self.budget {
            return;
        }
        if let Some(old) = self.entries.remove(&key) {
            self.order.remove(&old.used);
            self.stats.bytes -= old.bytes;
        }
        while self.stats.bytes + bytes > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            let e = self.entries.remove(&oldest).expect("ordered entries are held");
            self.stats.bytes -= e.bytes;
            self.stats.evictions += 1;
        }
        self.entries.insert(key, Entry { cache, bytes, used: self.clock });
        self.order.insert(self.clock, key);
        self.stats.bytes += bytes;
        self.stats.entries = self.entries.len();
    }
}

/// A size such as `2GiB`, `512MiB`, `1.5GB` or a number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}`: expected a size such as 2GiB, 512MiB or 1000000"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        u => return Err(format!("`{s}`: unknown unit `{u}` (B, KB, MB, GB, KiB, MiB, GiB)")),
    };
    let bytes = n * scale;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("`{s}`: too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(super::parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(super::parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(super::parse_size("1000"), Ok(1000));
        assert!(super::parse_size("lots").is_err());
        assert!(super::parse_size("2 parsecs").is_err());
    }
}
