//! Bad input gets one clear error naming the file, tensor or field.

mod common;

use std::fs;
use std::path::Path;

use burn::tensor::Device;
use common::*;
use vocollama_model::{LlavaModel, LoadOptions};

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    fs::write(p, serde_json::to_string(&v).unwrap()).unwrap();
}

fn load_err(dir: &Path, tower: Option<&Path>) -> String {
    let options = LoadOptions { vision_tower: tower.map(Path::to_path_buf), ..LoadOptions::f32() };
    let e = LlavaModel::load(dir, &options, &Device::flex()).expect_err("loading should fail");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

#[test]
fn missing_tensor_is_named_by_its_checkpoint_key() {
    let t = tempfile::tempdir().unwrap();
    copy_dir(&fixture("llama-tied"), t.path());
    edit_config(t.path(), |v| v["tie_word_embeddings"] = false.into());
    let msg = load_err(t.path(), None);
    assert!(msg.contains("missing tensor `lm_head.weight`") && msg.contains("[512, 64]"), "{msg}");
}

#[test]
fn shape_mismatch_names_tensor_file_and_both_shapes() {
    let t = tempfile::tempdir().unwrap();
    copy_dir(&fixture("llama-tied"), t.path());
    edit_config(t.path(), |v| v["intermediate_size"] = 100.into());
    let msg = load_err(t.path(), None);
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(msg.contains("tensor `model.layers.0.mlp.down_proj.weight`"), "{msg}");
    assert!(msg.contains("expected shape [64, 100], found [64, 128]"), "{msg}");
}

#[test]
fn truncated_weights_name_the_file() {
    let t = tempfile::tempdir().unwrap();
    copy_dir(&fixture("llama-tied"), t.path());
    let w = t.path().join("model.safetensors");
    let bytes = fs::read(&w).unwrap();
    fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_err(t.path(), None);
    assert!(msg.contains("model.safetensors") && msg.contains("not a readable safetensors file"), "{msg}");
}

#[test]
fn missing_shard_and_missing_weights() {
    let t = tempfile::tempdir().unwrap();
    copy_dir(&fixture("llava-gqa-bf16"), t.path());
    fs::remove_file(t.path().join("model-00002-of-00002.safetensors")).unwrap();
    let msg = load_err(t.path(), Some(&fixture("clip-full")));
    assert!(msg.contains("model-00002-of-00002.safetensors") && msg.contains("does not exist"), "{msg}");

    let t = tempfile::tempdir().unwrap();
    fs::copy(fixture("llama-tied/config.json"), t.path().join("config.json")).unwrap();
    let msg = load_err(t.path(), None);
    assert!(msg.contains("no weights found"), "{msg}");
}

#[test]
fn unreadable_config_and_bad_fields() {
    let t = tempfile::tempdir().unwrap();
    let msg = load_err(t.path(), None);
    assert!(msg.contains("config.json"), "{msg}");

    fs::write(t.path().join("config.json"), "{not json").unwrap();
    let msg = load_err(t.path(), None);
    assert!(msg.contains("config.json: not valid JSON"), "{msg}");
}

#[test]
fn unresolvable_vision_tower_says_what_to_pass() {
    let msg = load_err(&fixture("llava-mha-f16-bin"), None);
    assert!(msg.contains("openai/clip-vit-large-patch14-336") && msg.contains("--vision-tower"), "{msg}");
}

#[test]
fn tower_of_the_wrong_width_is_refused() {
    // llava-gqa-bf16 expects a 48-wide tower; clip-vision-f16 is 40 wide.
    let msg = load_err(&fixture("llava-gqa-bf16"), Some(&fixture("clip-vision-f16")));
    assert!(msg.contains("mm_hidden_size is 48") && msg.contains("hidden_size 40"), "{msg}");
}

#[test]
fn bad_image_is_named() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("not-an-image.png");
    fs::write(&img, b"hello").unwrap();
    let model = LlavaModel::load(&fixture("llava-hf"), &LoadOptions::default(), &Device::flex()).unwrap();
    let msg = model.load_image(&img).unwrap_err().to_string();
    assert!(msg.contains("not-an-image.png") && msg.contains("cannot decode image"), "{msg}");
}
