//! VoCo-aware fused attention vs Burn's `attention` with a dense mask, for the
//! layout `[BOS, image, ▁\n, VoCo × N, text × T]`: the text rows (a stage-2
//! question of T tokens) attending to the whole sequence, per CubeCL backend.
//! Reported: median times, their ratio, the share of key tiles the fused
//! kernel never loads for the text rows (the layout hides them), and the same
//! at a 4× smaller and a 4× larger image, so one sees which path's text-row
//! work grows with it. Then decoding: one query row against caches of 100 to
//! 8,000 positions, the split-K path against the row kernel (one unit per row).
//!
//!     cargo bench -p vocollama-benches --bench attention

use std::time::{Duration, Instant};

use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};
use vocollama_kernels::fused::{available, fused_attention, fused_attention_with, key_tile_rows, split_keys};
use vocollama_kernels::{KeyRule, SampleRule};
use vocollama_model::backend;

const HEADS: usize = 32;
const HEAD_DIM: usize = 128;
const VOCO: usize = 2;
const TEXT: usize = 64;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(reps: usize, device: &Device, mut f: impl FnMut() -> Tensor<4>) -> Duration {
    let _ = f().into_data(); // warm-up: shader compilation and autotuning
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                let out = f();
                device.sync().expect("device sync");
                let _ = out;
                t.elapsed()
            })
            .collect(),
    )
}

/// (fused, dense-mask) medians for the text rows, with `image` image tokens, and
/// the share of key tiles the fused kernel skips for them.
fn measure(device: &Device, image: usize, reps: usize) -> (Duration, Duration, f64) {
    let first = 1 + image + 2;
    let lk = first + VOCO + TEXT;
    let rule =
        KeyRule { causal: true, samples: vec![SampleRule { left_padding: 0, voco: Some((first, first + VOCO - 1)) }] };
    let q = Tensor::<4>::random([1, HEADS, TEXT, HEAD_DIM], Distribution::Normal(0.0, 1.0), device);
    let k = Tensor::<4>::random([1, HEADS, lk, HEAD_DIM], Distribution::Normal(0.0, 1.0), device);
    let v = Tensor::<4>::random([1, HEADS, lk, HEAD_DIM], Distribution::Normal(0.0, 1.0), device);
    let fused = time(reps, device, || {
        fused_attention(q.clone(), k.clone(), v.clone(), &rule).expect("a device that runs the fused attention")
    });
    let mask = Tensor::<3, Bool>::from_data(TensorData::new(rule.dense(1, TEXT, lk), [1, TEXT, lk]), device)
        .unsqueeze_dim::<4>(1)
        .expand([1, HEADS, TEXT, lk]);
    let dense = time(reps, device, || {
        burn_attention(q.clone(), k.clone(), v.clone(), Some(mask.clone()), None, AttentionModuleOptions::default())
    });
    // Key tiles a cube of text rows loads: from the first VoCo token through the last row.
    let tile = key_tile_rows(HEAD_DIM);
    let skipped = 1.0 - (lk - first).div_ceil(tile) as f64 / lk.div_ceil(tile) as f64;
    (fused, dense, skipped)
}

/// (split-K, row kernel) medians for one decoded row of every head against `lk` cached positions.
fn measure_decode(device: &Device, lk: usize, reps: usize) -> (Duration, Duration) {
    let rule = KeyRule::causal();
    let q = Tensor::<4>::random([1, HEADS, 1, HEAD_DIM], Distribution::Normal(0.0, 1.0), device);
    let k = Tensor::<4>::random([1, HEADS, lk, HEAD_DIM], Distribution::Normal(0.0, 1.0), device);
    let v = Tensor::<4>::random([1, HEADS, lk, HEAD_DIM], Distribution::Normal(0.0, 1.0), device);
    let run = |split: usize| {
        time(reps, device, || fused_attention_with(q.clone(), k.clone(), v.clone(), &rule, split).expect("fused"))
    };
    (run(split_keys(1, HEADS, lk)), run(0))
}

fn main() {
    let reps = 10;
    println!("text rows: {TEXT} queries, {HEADS} heads x {HEAD_DIM}, N = {VOCO} VoCo; median of {reps}");
    println!("| backend | image | keys | key tiles skipped | fused ms | dense-mask ms | dense / fused |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for name in backend::compiled_backends() {
        let device = backend::device(name).expect("compiled-in backend");
        if !available(&device) {
            println!("| {name} | — | — | — | (no fused kernel: tensor-op reference) | | |");
            continue;
        }
        for image in [144, 576, 2304] {
            let (fused, dense, hidden) = measure(&device, image, reps);
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "| {name} | {image} | {} | {:.1} % | {:.2} | {:.2} | {:.2}x |",
                1 + image + 2 + VOCO + TEXT,
                hidden * 100.0,
                ms(fused),
                ms(dense),
                ms(dense) / ms(fused)
            );
        }
    }
    decode_table(reps);
}

/// Decoding: one query row per head, the split-K path against the row kernel.
fn decode_table(reps: usize) {
    println!("\ndecoding: 1 query row, {HEADS} heads x {HEAD_DIM}; median of {reps}");
    println!("| backend | cached positions | keys per chunk | split-K ms | row kernel ms | row / split-K |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for name in backend::compiled_backends() {
        let device = backend::device(name).expect("compiled-in backend");
        if !vocollama_kernels::device::is_cubecl(&device) {
            continue;
        }
        for lk in [100, 579, 2000, 8000] {
            let (split, rows) = measure_decode(&device, lk, reps);
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "| {name} | {lk} | {} | {:.3} | {:.3} | {:.2}x |",
                split_keys(1, HEADS, lk),
                ms(split),
                ms(rows),
                ms(rows) / ms(split)
            );
        }
    }
}
