//! What the model tests share: fixtures, references, devices, tolerances, and
//! the slow-way references the fast paths are compared with.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::store::{ModuleStore, SafetensorsStore, bridge};
use burn::tensor::{Device, Tensor, TensorData};
use vocollama_kernels::rope::apply_rope;
use vocollama_model::model::llama::Llama;
use vocollama_model::model::llava::expand_ids;
use vocollama_model::voco::compress;
use vocollama_model::{AttentionLayout, LlavaModel, LoadOptions, Pixels, Stage1Prompt, VocoCache, backend};

pub fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets")
}

pub fn fixture(name: &str) -> PathBuf {
    assets().join("fixtures").join(name)
}

/// Every tensor of a safetensors file written by `tools/make_fixtures.py`.
pub fn read_tensors(path: PathBuf) -> HashMap<String, TensorData> {
    let mut store = SafetensorsStore::from_file(&path);
    let all = store.get_all_tensors().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    all.iter().map(|(k, t)| (k.clone(), bridge::to_data(t).expect("readable tensor"))).collect()
}

/// A fixture model at f32 on `device`, with `tower` (a fixture directory) as its vision tower when given.
pub fn load_f32(name: &str, tower: Option<&str>, device: &Device) -> LlavaModel {
    let options = LoadOptions { vision_tower: tower.map(fixture), ..LoadOptions::f32() };
    LlavaModel::load(&fixture(name), &options, device).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn reference(name: &str) -> HashMap<String, TensorData> {
    read_tensors(fixture(name).join("reference.safetensors"))
}

pub fn ids(data: &TensorData) -> Vec<i64> {
    data.clone().convert::<i64>().try_into_vec::<i64>().expect("integer ids")
}

/// Every backend compiled into this build, with its f32 tolerance against
/// transformers: the CPU backend 1e-4, GPU backends 1e-3, CUDA 3e-3. On CUDA,
/// Burn runs f32 matrix products on TF32 tensor cores (10-bit mantissas, as
/// cuDNN's convolutions do by default): on an H200 a 64×512×96 product is
/// 6.3e-4 off the CPU's and the test models' logits 1.2e-3 to 1.6e-3. A
/// compiled-in backend whose device cannot start fails the test: never skipped.
pub fn devices() -> Vec<(&'static str, Device, f32)> {
    let tolerance = |n: &str| match n {
        "flex" => 1e-4,
        "cuda" => 3e-3,
        _ => 1e-3,
    };
    let names = backend::compiled_backends();
    names.into_iter().map(|n| (n, backend::device(n).unwrap_or_else(|e| panic!("{n}: {e}")), tolerance(n))).collect()
}

/// max|got − want| / max|want| ≤ tol, with equal shapes.
pub fn assert_close(label: &str, got: TensorData, want: &TensorData, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{label}: shape");
    let g = got.convert::<f32>().try_into_vec::<f32>().unwrap();
    let w = want.clone().convert::<f32>().try_into_vec::<f32>().unwrap();
    let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = g.iter().zip(&w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 0.0, "{label}: the reference is all zeros, the test could not fail");
    assert!(g.iter().all(|x| x.is_finite()), "{label}: non-finite output");
    let rel = diff / scale;
    eprintln!("{label}: max|Δ|/max|ref| = {rel:.3e}");
    assert!(rel <= tol, "{label}: max|Δ|/max|ref| = {rel:.3e} > {tol:e} (max|Δ| {diff:e}, max|ref| {scale:e})");
}

/// max|got − want| / max|want| of two tensors, with equal shapes and a reference that is not all zeros.
pub fn max_rel<const D: usize>(got: Tensor<D>, want: Tensor<D>) -> f32 {
    assert_eq!(got.dims(), want.dims(), "shapes");
    let g = got.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    let w = want.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "the reference is all zeros, the comparison could not fail");
    assert!(g.iter().all(|x| x.is_finite()), "non-finite output");
    g.iter().zip(&w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

/// Stage 1 of one image through the library's entry point: the prompt `ids` (ending in its VoCo tokens).
pub fn compress_one(model: &LlavaModel, ids: &[i64], voco: i64, pixels: &Pixels) -> VocoCache {
    let prompt = Stage1Prompt::from_ids(ids.to_vec(), voco).unwrap();
    compress(model, &prompt, std::slice::from_ref(pixels)).unwrap().0.remove(0)
}

/// The masked single pass over the whole prompt (`docs/design.md` §4): the
/// definition the two stages must reproduce. Hidden states of every position.
pub fn masked_single_pass(model: &LlavaModel, ids: &[i64], images: &[Tensor<3>], voco: i64) -> Tensor<3> {
    let layout = AttentionLayout::for_sequence(&expand_ids(ids, model.image_tokens()), voco);
    model.forward(ids, images, 0, &layout, &mut model.llm.new_cache()).unwrap()
}

/// Stage 1 computed the slow way at absolute positions `start..`: the whole
/// prompt run causally there, the VoCo rows of every layer's keys and values
/// cut out with tensor ops. What a cache moved by `start` must equal.
pub fn compress_at(model: &LlavaModel, ids: &[i64], voco: i64, image: Tensor<3>, start: usize) -> VocoCache {
    let mut cache = model.llm.new_cache();
    model.forward(ids, &[image], start, &AttentionLayout::causal(), &mut cache).unwrap();
    let expanded = expand_ids(ids, model.image_tokens());
    let first = expanded.iter().position(|&t| t == voco).unwrap();
    let n = expanded.len() - first;
    let layers = (0..model.llm.num_layers())
        .map(|i| {
            let (k, v) = cache.layer(i).unwrap().clone();
            let [b, h, _, d] = k.dims();
            (k.slice([0..b, 0..h, first..first + n, 0..d]), v.slice([0..b, 0..h, first..first + n, 0..d]))
        })
        .collect();
    let positions = (start + first..start + first + n).collect();
    VocoCache { layers, positions, frames: 1, computed_in: Some(model.precision) }
}

/// The LLaMA decoder written out with Burn's attention and an explicit
/// `[len, len]` mask (`true` = hidden) over `x: [1, len, hidden]` at
/// `positions`: a reference for layouts no structure describes (video frame
/// blocks). Final-normed hidden states.
pub fn forward_with_mask(llm: &Llama, x: Tensor<3>, positions: Vec<i64>, mask: Vec<bool>) -> Tensor<3> {
    use burn::tensor::activation::silu;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::{Bool, Int};
    let device = x.device();
    let [b, l, _] = x.dims();
    let half = llm.inv_freq().len();
    let d = 2 * half;
    let inv = Tensor::<1>::from_data(TensorData::new(llm.inv_freq().to_vec(), [half]), &device).reshape([1, 1, half]);
    let pos = Tensor::<1, Int>::from_data(TensorData::new(positions, [l]), &device).float().reshape([1, l, 1]);
    let freqs = pos * inv;
    let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1);
    let (cos, sin) = (emb.clone().cos(), emb.sin());
    let mask = Tensor::<4, Bool>::from_data(TensorData::new(mask, [1, 1, l, l]), &device);
    // Burn's functional linear layer (the batched product), not the model's.
    let fwd = |l: &vocollama_model::model::linear::Linear, x: Tensor<3>| {
        burn::tensor::module::linear(x, l.weight.val(), l.bias.as_ref().map(|b| b.val()))
    };
    let mut x = x;
    for layer in &llm.layers {
        let a = &layer.self_attn;
        let heads = a.q_proj.weight.dims()[1] / d;
        let kv_heads = a.k_proj.weight.dims()[1] / d;
        let h = layer.input_layernorm.forward(x.clone());
        let split = |t: Tensor<3>, n: usize| t.reshape([b, l, n, d]).swap_dims(1, 2);
        let repeat = |t: Tensor<4>| {
            t.unsqueeze_dim::<5>(2).expand([b, kv_heads, heads / kv_heads, l, d]).reshape([b, heads, l, d])
        };
        let q = apply_rope(split(fwd(&a.q_proj, h.clone()), heads), cos.clone(), sin.clone());
        let k = repeat(apply_rope(split(fwd(&a.k_proj, h.clone()), kv_heads), cos.clone(), sin.clone()));
        let v = repeat(split(fwd(&a.v_proj, h), kv_heads));
        let o =
            attention(q, k, v, Some(mask.clone().expand([b, heads, l, l])), None, AttentionModuleOptions::default());
        x = x + fwd(&a.o_proj, o.swap_dims(1, 2).reshape([b, l, heads * d]));
        let h = layer.post_attention_layernorm.forward(x.clone());
        let m = &layer.mlp;
        x = x + fwd(&m.down_proj, silu(fwd(&m.gate_proj, h.clone())) * fwd(&m.up_proj, h));
    }
    llm.norm.forward(x)
}

/// Any tensor's values as f32.
pub fn f32s(t: TensorData) -> Vec<f32> {
    t.convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// The whole LLaVA chain from the image file to the logits of every position of `ids`.
pub fn llava_logits(model: &LlavaModel, image: &std::path::Path, ids: &[i64]) -> Vec<f32> {
    let pixels = model.load_image(image).unwrap();
    let embeds = model.encode_image(&pixels).unwrap();
    assert!(ids.contains(&vocollama_model::IMAGE_TOKEN_INDEX));
    let layout = AttentionLayout::causal();
    let h = model.forward(ids, &[embeds], 0, &layout, &mut model.llm.new_cache()).unwrap();
    f32s(model.llm.logits(h).into_data())
}
