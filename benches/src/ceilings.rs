//! The machine's ceilings, measured in the same run: how fast memory streams
//! on every core (a parallel sum reads, a parallel copy reads and writes), so
//! a decoded token's time can be set against the time its weights take to
//! read (`weight bytes / read bandwidth`, the decode ceiling).

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ceilings {
    /// Bytes read per second by a parallel sum over 1 GiB (GB/s, best of 5).
    pub read_gbs: f64,
    /// Bytes read plus bytes written per second by a parallel copy of 512 MiB (GB/s, best of 5).
    pub copy_gbs: f64,
    /// Threads that did it (rayon's pool: every core).
    pub threads: usize,
}

/// Measure both, on buffers far larger than any cache.
pub fn measure() -> Ceilings {
    let n = (1usize << 30) / 8;
    let a: Vec<u64> = (0..n as u64).into_par_iter().map(|i| i.wrapping_mul(0x9E37_79B9)).collect();
    let mut best_read = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let s: u64 = a.par_chunks(1 << 16).map(sum).sum();
        std::hint::black_box(s);
        best_read = best_read.min(t.elapsed().as_secs_f64());
    }
    let half = n / 2;
    let (src, rest) = a.split_at(half);
    let mut dst = rest.to_vec();
    let mut best_copy = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        dst.par_chunks_mut(1 << 16).zip(src.par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s));
        std::hint::black_box(&dst);
        best_copy = best_copy.min(t.elapsed().as_secs_f64());
    }
    Ceilings {
        read_gbs: (n * 8) as f64 / best_read / 1e9,
        copy_gbs: (2 * half * 8) as f64 / best_copy / 1e9,
        threads: rayon::current_num_threads(),
    }
}

/// A sum that the loads, not the adds, bound: eight independent chains.
fn sum(c: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = c.chunks_exact(8);
    let rest: u64 = chunks.remainder().iter().fold(0, |x, y| x.wrapping_add(*y));
    for ch in chunks {
        let ch: &[u64; 8] = ch.try_into().expect("8 words");
        for i in 0..8 {
            acc[i] = acc[i].wrapping_add(ch[i]);
        }
    }
    acc.iter().fold(rest, |x, y| x.wrapping_add(*y))
}
