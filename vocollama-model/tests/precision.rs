//! Half precision and quantized weights against transformers' f32 references
//! on every fixture layout and every backend that has the float type: f16
//! within 1e-2 (max|Δ|/max|ref|), bf16 within 3e-2, q8 within 5e-2 with the
//! same greedy token at ≥ 90 % of the fixtures' positions, q4 reported; and
//! the two stages equal to the masked single pass at each precision.

mod common;

use burn::tensor::{DType, Device, FloatDType, Int, Tensor, TensorData};
use common::*;
use vocollama_model::model::precision::{Quantize, WeightDType};
use vocollama_model::{AttentionLayout, LlavaModel, LoadOptions, Session};

/// A precision under test: what is asked, and its tolerance against the f32 reference.
struct Case {
    label: &'static str,
    dtype: WeightDType,
    quantize: Quantize,
    tol: Option<f32>,
}

const CASES: [Case; 4] = [
    Case { label: "f16", dtype: WeightDType::F16, quantize: Quantize::None, tol: Some(1e-2) },
    Case { label: "bf16", dtype: WeightDType::Bf16, quantize: Quantize::None, tol: Some(3e-2) },
    Case { label: "q8", dtype: WeightDType::F16, quantize: Quantize::Q8, tol: Some(5e-2) },
    Case { label: "q4", dtype: WeightDType::F16, quantize: Quantize::Q4, tol: None },
];

/// The fixtures with a vision tower: name, tower override.
const LLAVAS: [(&str, Option<&str>); 3] =
    [("llava-gqa-bf16", None), ("llava-mha-f16-bin", Some("clip-vision-f16")), ("llava-hf", None)];

/// The cases each backend computes: every one, except the float types a device lacks.
fn cases(device: &Device) -> Vec<&'static Case> {
    CASES.iter().filter(|c| c.dtype != WeightDType::Bf16 || device.supports_dtype(DType::BF16)).collect()
}

fn load(name: &str, tower: Option<&str>, case: &Case, device: &Device) -> LlavaModel {
    let options = LoadOptions { vision_tower: tower.map(fixture), dtype: case.dtype, quantize: case.quantize };
    LlavaModel::load(&fixture(name), &options, device).unwrap_or_else(|e| panic!("{name} {}: {e}", case.label))
}

/// max|Δ|/max|ref| and the share of positions whose largest logit is the reference's.
fn compare(got: &[f32], want: &[f32], vocab: usize) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    assert!(got.iter().all(|x| x.is_finite()), "non-finite logits");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let rel = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    let argmax = |v: &[f32]| v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best });
    let rows = got.len() / vocab;
    let same = (0..rows).filter(|r| argmax(&got[r * vocab..][..vocab]) == argmax(&want[r * vocab..][..vocab])).count();
    (rel, same as f32 / rows as f32)
}

/// Check the tolerance; the share of positions whose greedy token agrees comes back.
fn judge(label: &str, case: &Case, got: &[f32], want: &[f32], vocab: usize) -> f32 {
    let (rel, top1) = compare(got, want, vocab);
    eprintln!(
        "{label} {}: max|Δ|/max|ref| = {rel:.3e}, greedy token agrees at {:.0} % of positions",
        case.label,
        100.0 * top1
    );
    if let Some(tol) = case.tol {
        assert!(rel <= tol, "{label} {}: max|Δ|/max|ref| = {rel:e} > {tol:e}", case.label);
    }
    top1
}

/// LLaMA alone on token ids.
fn llm_logits(model: &LlavaModel, ids: &[i64]) -> Vec<f32> {
    let t = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &model.device);
    let positions = model.positions(0, ids.len());
    let h = model.llm.forward(model.llm.embed(t), positions, &AttentionLayout::causal(), &mut model.llm.new_cache());
    f32s(model.llm.logits(h).into_data())
}

fn check_llava(name: &str, tower: Option<&str>) {
    let r = reference(name);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap();
    let image = assets().join(meta["image"].as_str().unwrap());
    let want = f32s(r["llava_logits"].clone());
    let ids = ids(&r["llava_input_ids"]);
    for (backend, device, _) in devices() {
        for case in cases(&device) {
            let model = load(name, tower, case, &device);
            let expect = if case.dtype == WeightDType::Bf16 { FloatDType::BF16 } else { FloatDType::F16 };
            assert_eq!(model.precision.dtype, expect, "{name} [{backend}] {}: {}", case.label, model.precision_why);
            assert_eq!(model.precision.quantize, case.quantize);
            let label = format!("{name} [{backend}]");
            let got = llava_logits(&model, &image, &ids);
            judge(&label, case, &got, &want, model.config.llm.vocab_size);
            check_packed(&label, case, &model);
            // CLIP's selected features too (the tower is never quantized).
            let v = model.vision.as_ref().unwrap();
            let px = Tensor::<4>::from_data(r["pixel_values"].clone(), (&device, DType::from(model.precision.dtype)));
            let feats = f32s(v.tower.forward(px).into_data());
            let (rel, _) = compare(&feats, &f32s(r["clip_features"].clone()), 1);
            eprintln!("{label} {}: clip features max|Δ|/max|ref| = {rel:.3e}", case.label);
            // f16 within 3e-3: the patch embedding sums in f32 (CubeCL's f16 convolution alone
            // put wgpu's features 7.9e-3 off).
            let tol = if case.dtype == WeightDType::Bf16 { 3e-2 } else { 3e-3 };
            assert!(rel <= tol, "{label} {}: clip features {rel:e}", case.label);
        }
    }
}

/// On the CPU a quantized model holds its quantized weights once, packed for the kernels,
/// and running it never rebuilds Burn's tensors from them; elsewhere nothing is packed.
fn check_packed(label: &str, case: &Case, model: &LlavaModel) {
    let mut linears = model.llm.linears();
    linears.extend(model.vision.iter().flat_map(|v| v.projector.linears()));
    let packed = linears.iter().filter(|(_, l)| l.is_packed()).count();
    let quantized = linears.iter().filter(|(_, l)| l.is_quantized()).count();
    let expect = if label.contains("[flex]") && case.quantize != Quantize::None { quantized } else { 0 };
    assert_eq!(packed, expect, "{label} {}: {packed} of {} linear layers packed", case.label, linears.len());
    assert_eq!(quantized > 0, case.quantize != Quantize::None, "{label} {}: quantized layers", case.label);
}

#[test]
fn llava_original_gqa_bf16_at_every_precision() {
    let (name, tower) = LLAVAS[0];
    check_llava(name, tower);
}

#[test]
fn llava_original_f16_bin_at_every_precision() {
    let (name, tower) = LLAVAS[1];
    check_llava(name, tower);
}

#[test]
fn llava_hf_at_every_precision() {
    let (name, tower) = LLAVAS[2];
    check_llava(name, tower);
}

#[test]
fn plain_llama_at_every_precision() {
    let r = reference("llama-tied");
    let want = f32s(r["llm_logits"].clone());
    let ids = ids(&r["llm_input_ids"]);
    for (backend, device, _) in devices() {
        for case in cases(&device) {
            let model = load("llama-tied", None, case, &device);
            judge(&format!("llama-tied [{backend}]"), case, &llm_logits(&model, &ids), &want, 512);
        }
    }
}

/// q8 keeps the greedy token at ≥ 90 % of the positions of all four fixtures' prompts.
#[test]
fn q8_keeps_the_greedy_token() {
    let q8 = &CASES[2];
    for (backend, device, _) in devices() {
        let (mut agree, mut total) = (0.0, 0);
        let mut count = |share: f32, positions: usize| {
            agree += share * positions as f32;
            total += positions;
        };
        for (name, tower) in LLAVAS {
            let r = reference(name);
            let meta: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap();
            let model = load(name, tower, q8, &device);
            let vocab = model.config.llm.vocab_size;
            let image = assets().join(meta["image"].as_str().unwrap());
            let got = llava_logits(&model, &image, &ids(&r["llava_input_ids"]));
            count(judge(name, q8, &got, &f32s(r["llava_logits"].clone()), vocab), got.len() / vocab);
        }
        let r = reference("llama-tied");
        let got = llm_logits(&load("llama-tied", None, q8, &device), &ids(&r["llm_input_ids"]));
        count(judge("llama-tied", q8, &got, &f32s(r["llm_logits"].clone()), 512), got.len() / 512);
        let share = agree / total as f32;
        eprintln!(
            "[{backend}] q8: the greedy token agrees at {agree:.0} of {total} positions ({:.0} %)",
            100.0 * share
        );
        assert!(share >= 0.9, "[{backend}] q8: the greedy token agrees at only {:.0} % of positions", 100.0 * share);
    }
}

#[test]
fn two_stages_equal_the_masked_pass_at_every_precision() {
    const VOCO: i64 = 511;
    let r = read_tensors(fixture("llava-gqa-bf16/voco-reference.safetensors"));
    let ids = ids(&r["n2_ids"]);
    let split = ids.iter().rposition(|&t| t == VOCO).unwrap() + 1;
    let (prefix, text) = ids.split_at(split);
    for (backend, device, _) in devices() {
        for case in cases(&device) {
            let m = load("llava-gqa-bf16", None, case, &device);
            let pixels = m.load_image(&assets().join("images/wide.png")).unwrap();
            let image = m.encode_image(&pixels).unwrap();
            let single = masked_single_pass(&m, &ids, &[image], VOCO);
            let [b, l, d] = single.dims();
            let want = f32s(m.llm.logits(single.slice([0..b, l - text.len()..l, 0..d])).into_data());
            let cache = compress_one(&m, prefix, VOCO, &pixels);
            assert_eq!(cache.computed_in, Some(m.precision), "the cache says what computed it");
            let got = f32s(m.llm.logits(Session::from_voco(&m, &cache).unwrap().feed(text, &[]).unwrap()).into_data());
            let (rel, top1) = compare(&got, &want, 512);
            eprintln!(
                "[{backend}] {}: two stages vs masked pass {rel:.3e}, greedy agrees {:.0} %",
                case.label,
                100.0 * top1
            );
            // Both sides run the same weights: the float type's rounding is all that differs.
            let tol = if case.dtype == WeightDType::Bf16 { 3e-2 } else { 1e-2 };
            assert!(rel <= tol, "[{backend}] {}: {rel:e} > {tol:e}", case.label);
        }
    }
}

#[test]
fn bf16_where_the_device_has_it_and_refused_by_name_where_not() {
    for (backend, device, _) in devices() {
        let options = LoadOptions { dtype: WeightDType::Bf16, ..LoadOptions::default() };
        if device.supports_dtype(DType::BF16) {
            let m = LlavaModel::load(&fixture("llava-gqa-bf16"), &options, &device).unwrap();
            assert_eq!(m.precision.dtype, FloatDType::BF16, "[{backend}]");
            continue;
        }
        // lavapipe (wgpu on the CPU) has f16 but no bf16.
        let e = LlavaModel::load(&fixture("llava-gqa-bf16"), &options, &device).unwrap_err().to_string();
        eprintln!("[{backend}] {e}");
        assert!(e.contains("--dtype bf16") && e.contains("no bf16"), "{e}");
        // `auto` takes the nearest it has for the bf16 checkpoint.
        let m = LlavaModel::load(&fixture("llava-gqa-bf16"), &LoadOptions::default(), &device).unwrap();
        assert_eq!(m.precision.dtype, FloatDType::F16, "{}", m.precision_why);
        assert!(m.precision_why.contains("no bf16"), "{}", m.precision_why);
    }
}
