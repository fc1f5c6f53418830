//! The fused kernel against the tensor-op reference on a CubeCL device (wgpu;
//! in CI the software Vulkan driver): random inputs, sizes off the tile, GQA,
//! VoCo spans of 1..16, decode against a long cache, padding, batches.
#![cfg(feature = "wgpu")]

mod common;

use burn::tensor::{Device, Distribution, Tensor};
use common::max_rel;
use vocollama_kernels::attention::reference;
use vocollama_kernels::fused::fused_attention;
use vocollama_kernels::{KeyRule, SampleRule};

fn device() -> Device {
    common::cube_device()
}

#[allow(clippy::too_many_arguments)]
fn check(label: &str, rule: &KeyRule, b: usize, h: usize, kvh: usize, lq: usize, lk: usize, d: usize) {
    let device = device();
    let q = Tensor::<4>::random([b, h, lq, d], Distribution::Normal(0.0, 1.0), &device);
    let k = Tensor::<4>::random([b, kvh, lk, d], Distribution::Normal(0.0, 1.0), &device);
    let v = Tensor::<4>::random([b, kvh, lk, d], Distribution::Normal(0.0, 1.0), &device);
    let want = reference(q.clone(), k.clone(), v.clone(), rule);
    let rel = max_rel(fused_attention(q, k, v, rule).unwrap(), want);
    assert!(rel <= 1e-4, "{label}: max|Δ|/max|ref| = {rel:e}");
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
    check("full (CLIP)", &KeyRule::full(), 2, 4, 4, 65, 65, 80);
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
    use burn::tensor::DType;
    let device = device();
    let mut checked = 0;
    for dtype in [DType::F16, DType::BF16] {
        if !device.supports_dtype(dtype) {
            // lavapipe has f16 but no bf16: say so in the log, test it where it exists.
            eprintln!("this wgpu adapter has no {dtype:?}: the {dtype:?} kernel is not exercised here");
            continue;
        }
        checked += 1;
        let rule = voco(40, 2);
        let rand = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device).cast(dtype);
        let (q, k, v) = (rand([1, 4, 11, 64]), rand([1, 2, 53, 64]), rand([1, 2, 53, 64]));
        let f32s = |t: &Tensor<4>| t.clone().cast(DType::F32);
        let want = reference(f32s(&q), f32s(&k), f32s(&v), &rule);
        let rel = max_rel(fused_attention(q, k, v, &rule).unwrap().cast(DType::F32), want);
        assert!(rel <= 1e-2, "{dtype:?}: max|Δ|/max|ref| = {rel:e}");
    }
    assert!(checked > 0, "the adapter has neither f16 nor bf16: the half-precision kernel went untested");
}
