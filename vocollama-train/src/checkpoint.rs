//! Trained models written in the original LLaVA layout that the loader reads
//! (`config.json`, `model.safetensors`, the tokenizer files, the CLIP tower in
//! `vision_tower/`), so every other command uses them as they are; the
//! directory is written whole ([`crate::model_dir`]).

use std::path::{Path, PathBuf};

use burn::module::Module;
use serde_json::{Map, Value};
use vocollama_model::checkpoint::config::CheckpointLayout;
use vocollama_model::checkpoint::weights::{KeyMap, pytorch_params};
use vocollama_model::io::json::read_json;
use vocollama_model::model::clip::ClipVision;
use vocollama_model::model::llama::Llama;
use vocollama_model::model::projector::Projector;
use vocollama_model::{Error, LlavaModel, Result};

use crate::model_dir::{mark, write_model_dir};

/// Files a model directory's tokenizer may consist of.
pub const TOKENIZER_FILES: [&str; 5] =
    ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"];

/// A module's parameters as `(checkpoint key, PyTorch shape, f32 values)`.
pub fn module_tensors<M: Module>(module: &M, map: &KeyMap) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    pytorch_params(module, true)
        .into_iter()
        .map(|p| {
            let data = p.data.expect("read").try_into_vec::<f32>().expect("f32 parameters");
            (map.to_checkpoint(&p.name), p.shape, data)
        })
        .collect()
}

/// A safetensors file of f32 tensors.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let mut header = Map::new();
    let mut offset = 0usize;
    let mut sorted: Vec<&(String, Vec<usize>, Vec<f32>)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, shape, data) in &sorted {
        let end = offset + 4 * data.len();
        header.insert(name.clone(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}));
        offset = end;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut head = serde_json::to_vec(&Value::Object(header)).expect("header serialises");
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + head.len() + offset);
    bytes.extend_from_slice(&(head.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&head);
    for (_, _, data) in sorted {
        for x in data {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    vocollama_model::io::atomic_write::write_atomic(path, &bytes)
}

/// A CLIP tower's tensors under the names of a `CLIPVisionModel` checkpoint.
pub fn tower_tensors(tower: &ClipVision) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    module_tensors(tower, &KeyMap::new([("vision_model.", "")]))
}

/// `value` as pretty JSON at `path`.
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value).expect("JSON serialises")).map_err(|e| Error::io(path, e))
}

/// The LLaMA and projector tensors under their original-LLaVA names.
pub fn llava_tensors(llm: &Llama, projector: Option<&Projector>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = module_tensors(llm, &Llama::key_map("model.", ""));
    if let Some(p) = projector {
        out.extend(module_tensors(p, &Projector::original_key_map(p.kind())));
    }
    out
}

/// The regular files of `from` (those named in `names`, if given) copied into `to`.
pub fn copy_files(from: &Path, to: &Path, names: Option<&[&str]>) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let path = entry.map_err(|e| Error::io(from, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if path.is_file() && names.is_none_or(|n| n.contains(&name.as_str())) {
            std::fs::copy(&path, to.join(&name)).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Write `model` to `out`: its config.json with `updates` applied, its
/// weights in f32, its tokenizer files and its vision tower (copied).
pub fn save_llava(model: &LlavaModel, out: &Path, updates: &Map<String, Value>) -> Result<()> {
    save_llava_with(model, out, updates, &|_| Ok(()))
}

/// [`save_llava`], with `extra` writing more files into the directory before it is moved into place.
pub fn save_llava_with(
    model: &LlavaModel,
    out: &Path,
    updates: &Map<String, Value>,
    extra: &dyn Fn(&Path) -> Result<()>,
) -> Result<()> {
    if model.config.layout != CheckpointLayout::LlavaOriginal {
        return Err(Error::Invalid(format!(
            "{}: training reads and writes the original LLaVA layout (llava_llama), not this one",
            model.config.path.display()
        )));
    }
    let source: PathBuf = model.config.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut config = read_json(&model.config.path)?;
    let obj = config.as_object_mut().ok_or_else(|| Error::config(&model.config.path, "not a JSON object"))?;
    for (k, v) in updates {
        obj.insert(k.clone(), v.clone());
    }
    obj.insert("torch_dtype".into(), Value::from("float32"));
    mark(obj);
    if model.vision.is_some() {
        obj.insert("mm_vision_tower".into(), Value::from("vision_tower"));
    }
    let tensors = llava_tensors(&model.llm, model.vision.as_ref().map(|v| &v.projector));
    write_model_dir(out, |dir| {
        let cfg = serde_json::to_string_pretty(&config).expect("config serialises");
        std::fs::write(dir.join("config.json"), cfg).map_err(|e| Error::io(&dir.join("config.json"), e))?;
        write_safetensors(&dir.join("model.safetensors"), &tensors)?;
        copy_files(&source, dir, Some(&TOKENIZER_FILES))?;
        if let Some(v) = &model.vision {
            copy_files(&v.tower_dir, &dir.join("vision_tower"), None)?;
        }
        extra(dir)
    })
}
