//! The VoCo store at scale: 10,000 image caches of the full-size 7B shape
//! (Vicuna-7B: 32 layers, 32 KV heads of 128, one VoCo token, f16: 0.5 MiB
//! each) held in its memory budget on the CPU backend, and the time to look
//! one up (a hit, a miss) and to add one (evicting the oldest when full).
//!
//!     cargo bench -p vocollama-server --bench store [-- --entries 10000 --tokens 1]

use std::time::Instant;

use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use vocollama_model::VocoCache;
use vocollama_server::store::VocoStore;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: expected a number, got {v}")))
        .unwrap_or(default)
}

/// Resident bytes now (Linux's `VmRSS`).
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .map_or(0, |k| k * 1024)
}

fn key(i: usize) -> [u8; 32] {
    let mut k = [0u8; 32];
    let mut x = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    for chunk in k.chunks_mut(8) {
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    k
}

/// One image's cache: `tokens` VoCo positions of every layer, values distinct per image.
fn cache(i: usize, layers: usize, kv: usize, tokens: usize, d: usize, device: &Device) -> VocoCache {
    let n = kv * tokens * d;
    let layer = |j: usize| {
        let values: Vec<half::f16> =
            (0..n).map(|v| half::f16::from_f32(((i * 31 + j * 7 + v) % 251) as f32 / 251.0)).collect();
        Tensor::<4>::from_data(TensorData::new(values, [1, kv, tokens, d]), (device, DType::F16))
    };
    VocoCache {
        layers: (0..layers).map(|j| (layer(2 * j), layer(2 * j + 1))).collect(),
        positions: (0..tokens).map(|t| 600 + t).collect(),
        frames: 1,
        computed_in: None,
    }
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q) as usize]
}

fn main() {
    let entries = arg("--entries", 10_000);
    let tokens = arg("--tokens", 1);
    let (layers, kv, d) = (32, 32, 128);
    let device = vocollama_model::backend::device("flex").expect("the CPU backend");
    let per_entry = 2 * layers * kv * tokens * d * 2;
    let budget = (entries * per_entry) as u64;
    let mut store = VocoStore::new(budget, None);

    let before = resident();
    let start = Instant::now();
    for i in 0..entries {
        store.put(key(i), &cache(i, layers, kv, tokens, d, &device)).expect("in memory");
    }
    let fill = start.elapsed();
    let held = resident().saturating_sub(before);
    let stats = store.stats();
    assert_eq!(stats.entries, entries, "every cache fits the budget");

    // Lookups of held keys, in a scattered order, then of keys never stored.
    let mut hits: Vec<f64> = (0..100_000)
        .map(|j| {
            let k = key((j * 7919) % entries);
            let t = Instant::now();
            let found = store.get(&k, &device, FloatDType::F16);
            let ns = t.elapsed().as_nanos() as f64;
            assert!(found.is_some());
            ns
        })
        .collect();
    let mut misses: Vec<f64> = (0..10_000)
        .map(|j| {
            let k = key(entries + j);
            let t = Instant::now();
            let found = store.get(&k, &device, FloatDType::F16);
            let ns = t.elapsed().as_nanos() as f64;
            assert!(found.is_none());
            ns
        })
        .collect();
    // Adding to a full store evicts the least recently used.
    let extra: Vec<VocoCache> = (0..100).map(|j| cache(entries + j, layers, kv, tokens, d, &device)).collect();
    let t = Instant::now();
    for (j, c) in extra.iter().enumerate() {
        store.put(key(entries + j), c).expect("in memory");
    }
    let evicting = t.elapsed().as_secs_f64() * 1e6 / extra.len() as f64;
    let after = store.stats();

    let mib = |b: f64| b / (1u64 << 20) as f64;
    println!(
        "| VoCo store, 7B shape ({layers} layers x {kv} KV heads x {d}, {tokens} VoCo token{}, f16) | |",
        if tokens == 1 { "" } else { "s" }
    );
    println!("| --- | ---: |");
    println!("| entries held | {} |", stats.entries);
    println!("| bytes per entry | {:.3} MiB |", mib(per_entry as f64));
    println!("| budget / bytes held (accounted) | {:.0} / {:.0} MiB |", mib(budget as f64), mib(stats.bytes as f64));
    println!(
        "| resident memory added | {:.0} MiB ({:.3} MiB per entry) |",
        mib(held as f64),
        mib(held as f64 / entries as f64)
    );
    println!("| filling (creating and adding each cache) | {:.1} s |", fill.as_secs_f64());
    println!("| lookup, hit: p50 / p99 | {:.0} / {:.0} ns |", percentile(&mut hits, 0.5), percentile(&mut hits, 0.99));
    println!(
        "| lookup, miss: p50 / p99 | {:.0} / {:.0} ns |",
        percentile(&mut misses, 0.5),
        percentile(&mut misses, 0.99)
    );
    println!("| adding to a full store (evicting the oldest) | {evicting:.1} µs |");
    println!("| evictions / entries after adding 100 | {} / {} |", after.evictions, after.entries);
}
