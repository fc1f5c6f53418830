//! The fused attention against the tensor-op reference on every device that
//! runs it — the CubeCL kernel (wgpu; in CI the software Vulkan driver; CUDA)
//! and its CPU counterpart on flex: random inputs, sizes off the tile, GQA,
//! VoCo spans of 1..16, decode against a long cache, padding, batches, a
//! cache buffer with spare rows and strided keys; the split-K decode path at
//! chunk sizes on and off its tile, beside the row kernel on the same inputs.

mod common;

use burn::tensor::{DType, Device, Distribution, Tensor};
use common::max_rel;
use vocollama_kernels::attention::{attention, reference};
use vocollama_kernels::device::is_cuda;
use vocollama_kernels::fused::{SPLIT_MAX_ROWS, fused_attention, fused_attention_with, split_keys};
use vocollama_kernels::{KeyRule, SampleRule};

/// The devices of this build that run the fused attention (never empty).
fn devices() -> Vec<(&'static str, Device)> {
    let v: Vec<_> = common::devices().into_iter().filter(|(_, d)| vocollama_kernels::fused::available(d)).collect();
    assert!(!v.is_empty(), "no device of this build runs the fused attention");
    v
}

/// How far the kernel may be from the tensor-op reference on each backend. On CUDA the
/// reference's matrix products run on TF32 tensor cores (measured on an H200: 3e-4 to 6e-4
/// relative, where the kernel's f32 FMAs match the CPU to 2e-7), so the reference is the looser one.
fn tolerance(backend: &str) -> f32 {
    if backend == "cuda" { 1e-3 } else { 1e-4 }
}

#[allow(clippy::too_many_arguments)]
fn check(label: &str, rule: &KeyRule, b: usize, h: usize, kvh: usize, lq: usize, lk: usize, d: usize) {
    for (name, device) in devices() {
        let q = Tensor::<4>::random([b, h, lq, d], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<4>::random([b, kvh, lk, d], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<4>::random([b, kvh, lk, d], Distribution::Normal(0.0, 1.0), &device);
        let want = reference(q.clone(), k.clone(), v.clone(), rule);
        let Some(got) = fused_attention(q, k, v, rule) else {
            // The one exclusion `fused::supports` makes.
            assert!(
                is_cuda(&device) && !d.is_multiple_of(8),
                "{name} {label}: the fused attention refused head dim {d}"
            );
            continue;
        };
        let rel = max_rel(got, want);
        assert!(rel <= tolerance(name), "{name} {label}: max|Δ|/max|ref| = {rel:e}");
    }
}

fn voco(first: usize, n: usize) -> KeyRule {
    KeyRule { causal: true, samples: vec![SampleRule { left_padding: 0, voco: Some((first, first + n - 1)) }] }
}

#[test]
fn voco_layouts_with_grouped_heads() {
    // [BOS, image 37, ▁\n 2, VoCo N, text 11]: 50 + N keys, not a multiple of the 64-row cube.
    for n in [1, 2, 3, 8, 16] {
        let lk = 1 + 37 + 2 + n + 11;
        check(&format!("prefill N={n}"), &voco(40, n), 1, 4, 2, lk, lk, 16);
        check(&format!("text chunk N={n}"), &voco(40, n), 1, 4, 2, 11, lk, 16);
        check(&format!("decode N={n}"), &voco(40, n), 1, 8, 2, 1, lk, 16);
    }
}

#[test]
fn decode_against_a_long_cache_and_head_dims() {
    // The 576-token image of LLaVA-1.5, VoCo after it, one query row.
    for d in [64, 80, 128] {
        check(&format!("decode d={d}"), &voco(579, 2), 1, 4, 4, 1, 600, d);
    }
    check("causal decode", &KeyRule::causal(), 1, 32, 8, 1, 301, 64);
    // Long key spans at the real models' widths: CLIP-L's 577 keys at head dim 64, a LLaVA
    // prompt's 643 at 128. A row here walks every key: on lavapipe, whose shaders stop any
    // invocation after 65,535 loop iterations in all, the head-dim loops must be unrolled.
    check("CLIP-L's 577 keys at head dim 64", &KeyRule::full(), 1, 2, 2, 40, 577, 64);
    check("the end of a 643-token prompt at head dim 128", &KeyRule::causal(), 1, 2, 1, 40, 643, 128);
    check("full (CLIP)", &KeyRule::full(), 2, 4, 4, 65, 65, 80);
    // The test towers' shapes: 16 patches and the class token, heads of 12 and of 8.
    check("full (CLIP), head dim 12", &KeyRule::full(), 1, 4, 4, 17, 17, 12);
    check("full (CLIP), head dim 8", &KeyRule::full(), 1, 5, 5, 17, 17, 8);
}

#[test]
fn batches_with_padding_and_their_own_spans() {
    let rule = KeyRule {
        causal: true,
        samples: vec![
            SampleRule { left_padding: 3, voco: Some((10, 11)) },
            SampleRule { left_padding: 0, voco: Some((6, 6)) },
            SampleRule { left_padding: 5, voco: None },
        ],
    };
    check("mixed batch", &rule, 3, 4, 2, 20, 20, 16);
    check("mixed batch, chunk", &rule, 3, 4, 2, 4, 20, 16);
}

#[test]
fn half_precision_inputs() {
    for (name, device) in devices() {
        let mut checked = 0;
        for dtype in [DType::F16, DType::BF16] {
            if !device.supports_dtype(dtype) {
                // lavapipe has f16 but no bf16: say so in the log, test it where it exists.
                eprintln!("{name} has no {dtype:?}: the {dtype:?} attention is not exercised there");
                continue;
            }
            checked += 1;
            let rule = voco(40, 2);
            let rand =
                |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device).cast(dtype);
            let (q, k, v) = (rand([1, 4, 11, 64]), rand([1, 2, 53, 64]), rand([1, 2, 53, 64]));
            let f32s = |t: &Tensor<4>| t.clone().cast(DType::F32);
            let want = reference(f32s(&q), f32s(&k), f32s(&v), &rule);
            let got = fused_attention(q, k, v, &rule).unwrap();
            assert_eq!(got.dtype(), dtype, "{name}: the output keeps the input's float type");
            let rel = max_rel(got.cast(DType::F32), want);
            assert!(rel <= 1e-2, "{name} {dtype:?}: max|Δ|/max|ref| = {rel:e}");
        }
        assert!(checked > 0, "{name} has neither f16 nor bf16: the half-precision attention went untested");
    }
}

/// A KV cache as the model holds it: a buffer with spare rows past `lk` (never read, here
/// filled with NaN so reading one shows), and keys that are a strided view of another layout.
#[test]
fn cache_buffers_with_spare_rows_and_strided_keys() {
    let (b, h, kvh, d, lk, spare) = (1, 8, 2, 64, 300, 212);
    let rule = voco(100, 4);
    for (name, device) in devices() {
        for lq in [1, 3, 16, 40] {
            let rand = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let q = rand([b, lq, h, d]).swap_dims(1, 2);
            let (k, v) = (rand([b, lk, kvh, d]).swap_dims(1, 2), rand([b, kvh, lk, d]));
            let nan = Tensor::<4>::full([b, kvh, spare, d], f32::NAN, &device);
            let buffer = |t: Tensor<4>| Tensor::cat(vec![t, nan.clone()], 2);
            let want = reference(q.clone(), k.clone(), v.clone(), &rule);
            let prepared = rule.prepare(&device, b, lq, lk, d);
            let got = attention(q, buffer(k), buffer(v), &prepared);
            let rel = max_rel(got, want);
            assert!(rel <= tolerance(name), "{name} lq={lq}: max|Δ|/max|ref| = {rel:e}");
        }
    }
}

/// Decoding's split-K path (a few query rows, keys in chunks merged afterwards) and the row
/// kernel on the same inputs, both against the reference: chunk sizes on and off the cube's
/// 32-key tile, chunks the VoCo rule or the padding hides entirely, GQA, a batch, and the
/// chunk the automatic choice makes.
#[test]
fn split_k_decode_matches_the_row_kernel() {
    let rule = KeyRule {
        causal: true,
        samples: vec![
            // Rows after the VoCo span see keys 300.. only: the first chunks are all hidden.
            SampleRule { left_padding: 0, voco: Some((300, 303)) },
            SampleRule { left_padding: 130, voco: None },
            // Only the last few keys visible: one chunk holds them all.
            SampleRule { left_padding: 590, voco: None },
        ],
    };
    let (b, h, kvh, lk) = (3, 8, 2, 600);
    for (name, device) in devices() {
        for (lq, d) in [(1, 64), (3, 128), (SPLIT_MAX_ROWS, 16), (2, 80)] {
            let rand = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let (q, k, v) = (rand([b, h, lq, d]), rand([b, kvh, lk, d]), rand([b, kvh, lk, d]));
            let want = reference(q.clone(), k.clone(), v.clone(), &rule);
            let auto = split_keys(lq, b * h * lq, lk);
            assert!(auto > 0, "{lq} query rows take the split-K path");
            for chunk in [0, 32, 50, 64, 257, auto, lk] {
                let Some(got) = fused_attention_with(q.clone(), k.clone(), v.clone(), &rule, chunk) else {
                    assert!(is_cuda(&device) && !d.is_multiple_of(8), "{name}: the fused attention refused d={d}");
                    continue;
                };
                let rel = max_rel(got, want.clone());
                assert!(rel <= tolerance(name), "{name} lq={lq} d={d} chunk={chunk}: max|Δ|/max|ref| = {rel:e}");
            }
        }
    }
    assert_eq!(split_keys(SPLIT_MAX_ROWS + 1, 32, 600), 0, "longer blocks take the row kernel");
}
