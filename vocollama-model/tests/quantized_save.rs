//! A quantized model saved and loaded again (`docs/design.md` §13): the saved
//! directory holds the linear weights quantized (values and F16 scales), it
//! loads as it is — the same logits, bit for bit, as the model that was
//! saved, on every backend — and what cannot be done is refused in one line
//! with nothing left behind.

mod common;

use std::path::Path;

use burn::tensor::DType;
use common::*;
use vocollama_model::checkpoint::quantized;
use vocollama_model::checkpoint::weights::Checkpoint;
use vocollama_model::model::precision::{Quantize, WeightDType};
use vocollama_model::{LlavaModel, LoadOptions, backend};

fn prompt(name: &str) -> (std::path::PathBuf, Vec<i64>) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap();
    (assets().join(meta["image"].as_str().unwrap()), ids(&reference(name)["llava_input_ids"]))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn a_saved_quantized_model_loads_as_it_was_saved() {
    // The original layout with its CLIP tower beside it, and llava-hf with the tower inside.
    for (name, separate_tower) in [("llava-gqa-bf16", true), ("llava-hf", false)] {
        let (image, ids) = prompt(name);
        for (backend, device, _) in devices() {
            for q in [Quantize::Q8, Quantize::Q4] {
                let label = format!("{name} [{backend}] {}", q.name());
                let options = LoadOptions { dtype: WeightDType::F16, quantize: q, ..LoadOptions::default() };
                let model = LlavaModel::load(&fixture(name), &options, &device).unwrap();
                let tmp = tempfile::tempdir().unwrap();
                let out = tmp.path().join("model-q");
                let saved = quantized::save(&model, &out).unwrap();
                assert_eq!(saved.tower.is_some(), separate_tower, "{label}");
                assert_eq!(entries(tmp.path()), ["model-q"], "{label}: only the new directory is left");

                // On disk: values and scales, joined on reading; the rest in f16.
                let tensors = Checkpoint::discover(&out).unwrap().tensors().unwrap();
                assert_eq!(tensors.quantized, Some(q), "{label}");
                let quantized = tensors.entries.values().filter(|e| matches!(e.dtype, DType::QFloat(_))).count();
                assert_eq!(quantized, saved.quantized_tensors, "{label}");
                // 2 layers x 7 linear layers (inputs of 64 and 128: whole blocks) and the
                // projector's second (its first reads CLIP's 48 features); lm_head stays f16.
                assert_eq!(quantized, 2 * 7 + 1, "{label}");
                assert!(tensors.entries.values().all(|e| matches!(e.dtype, DType::QFloat(_) | DType::F16)), "{label}");

                // Loaded as it is: the same precision, and the same logits bit for bit.
                let reloaded = LlavaModel::load(&out, &LoadOptions::default(), &device).unwrap();
                assert_eq!(reloaded.precision, model.precision, "{label}: {}", reloaded.precision_why);
                assert!(reloaded.precision_why.contains(&format!("saved as {}", q.name())), "{label}");
                let want = llava_logits(&model, &image, &ids);
                let got = llava_logits(&reloaded, &image, &ids);
                assert!(got == want, "{label}: the reloaded model's logits differ from the saved model's");
                eprintln!("{label}: saved {} bytes of weights; reloaded logits identical", saved.weights_bytes);
            }
        }
    }
}

#[test]
fn q4_files_hold_half_the_bytes_of_q8() {
    let device = backend::device("flex").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut sizes = vec![];
    for q in [Quantize::Q8, Quantize::Q4] {
        let options = LoadOptions { dtype: WeightDType::F16, quantize: q, ..LoadOptions::default() };
        let model = LlavaModel::load(&fixture("llama-tied"), &options, &device).unwrap();
        let out = tmp.path().join(q.name());
        quantized::save(&model, &out).unwrap();
        let t = Checkpoint::discover(&out).unwrap().tensors().unwrap();
        // Bytes of the quantized weights on disk: values + one f16 scale per 32.
        let values: usize = t
            .entries
            .values()
            .filter(|e| matches!(e.dtype, DType::QFloat(_)))
            .map(|e| e.shape.iter().product::<usize>())
            .sum();
        // The data after the header.
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        sizes.push((values, bytes.len() as u64 - 8 - header));
    }
    let ((n8, f8), (n4, f4)) = (sizes[0], sizes[1]);
    assert_eq!(n8, n4);
    // q8: a byte a weight + 2 bytes per 32; q4: half a byte + the same scales.
    assert_eq!(f8 - f4, (n8 / 2) as u64, "q8 data {f8} bytes, q4 data {f4} bytes, {n8} quantized weights");
}

#[test]
fn saving_and_loading_refuse_what_they_cannot_do() {
    let device = backend::device("flex").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Nothing quantized to save.
    let plain = LlavaModel::load(&fixture("llama-tied"), &LoadOptions::default(), &device).unwrap();
    let e = quantized::save(&plain, &tmp.path().join("x")).unwrap_err().to_string();
    assert!(e.contains("nothing quantized to save"), "{e}");
    assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));

    // An --out that exists is the user's: refused, left as it was.
    let q8 = LoadOptions { quantize: Quantize::Q8, ..LoadOptions::default() };
    let model = LlavaModel::load(&fixture("llama-tied"), &q8, &device).unwrap();
    let theirs = tmp.path().join("theirs");
    std::fs::write(&theirs, b"notes").unwrap();
    let e = quantized::save(&model, &theirs).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&theirs).unwrap(), b"notes");
    assert_eq!(entries(tmp.path()), ["theirs"]);

    // Saved as q8, asked to load as q4: refused naming both.
    let out = tmp.path().join("q8");
    quantized::save(&model, &out).unwrap();
    let q4 = LoadOptions { quantize: Quantize::Q4, ..LoadOptions::default() };
    let e = LlavaModel::load(&out, &q4, &device).unwrap_err().to_string();
    assert!(e.contains("--quantize q4") && e.contains("saved quantized as q8"), "{e}");
    let reloaded = LlavaModel::load(&out, &q8, &device).expect("asking for what it holds is fine");
    // Saved again from the saved files: the same bytes.
    let again = tmp.path().join("again");
    quantized::save(&reloaded, &again).unwrap();
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(weights(&again) == weights(&out), "a re-saved model differs from the one it was loaded from");

    // Scales that do not match their values: one line naming the tensor.
    let file = out.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let key = "model.layers.0.mlp.down_proj.weight_scale";
    let shape = header[key]["shape"].as_array().unwrap().clone();
    let [a, b] = [shape[0].as_u64().unwrap(), shape[1].as_u64().unwrap()];
    header[key]["shape"] = serde_json::json!([b, a]);
    let mut head = serde_json::to_vec(&header).unwrap();
    head.resize(n, b' ');
    assert_eq!(head.len(), n, "the edited header fits in place");
    std::fs::write(&file, [&bytes[..8], &head, &bytes[8 + n..]].concat()).unwrap();
    let e = LlavaModel::load(&out, &LoadOptions::default(), &device).unwrap_err().to_string();
    assert!(e.contains("model.layers.0.mlp.down_proj.weight") && e.contains("scales"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}
