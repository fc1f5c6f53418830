//! Where a model's CLIP tower and its image preprocessing are: the model's
//! own checkpoint (llava-hf), or a separate CLIP directory named by
//! `mm_vision_tower` (original LLaVA) and found on this machine — never downloaded.

use std::path::{Path, PathBuf};

use super::config::{CheckpointLayout, ClipVisionConfig, ModelConfig};
use crate::error::{Error, Result};
use crate::media::preprocess::Preprocessor;

/// The image preprocessing of a model: `preprocessor_config.json` (LLaVA reads
/// it from the tower, llava-hf ships it beside the model), else CLIP's defaults.
pub fn preprocessor_for(
    dir: &Path,
    config: &ModelConfig,
    tower_dir: &Path,
    vision: &ClipVisionConfig,
) -> Result<Preprocessor> {
    let pad = config.mm.as_ref().is_some_and(|m| m.pad_to_square);
    let mut candidates = [dir.join("preprocessor_config.json"), tower_dir.join("preprocessor_config.json")];
    if config.layout != CheckpointLayout::LlavaHf {
        candidates.reverse();
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Preprocessor::from_file(p, pad),
        None => Ok(Preprocessor::clip_default(vision.image_size, pad)),
    }
}

/// The separate CLIP directory this model uses, or `None` when the model
/// carries its own tower (llava-hf) and no override was given.
pub fn tower_dir(dir: &Path, config: &ModelConfig, vision_tower: Option<&Path>) -> Result<Option<PathBuf>> {
    match (vision_tower, &config.vision, &config.mm) {
        (Some(p), _, _) => Ok(Some(p.to_path_buf())),
        (None, Some(_), _) | (None, None, None) => Ok(None),
        (None, None, Some(_)) => resolve_tower(dir, config).map(Some),
    }
}

/// Find `mm_vision_tower` on this machine: a directory inside the model
/// directory, a sibling directory named like the Hub repository (its last
/// component), or the HF hub cache. Nothing is downloaded, and a path that
/// leaves the model directory (absolute, or climbing with `..`) is not
/// followed: a model from someone else must not open files anywhere; a tower
/// elsewhere is named on the command line (`--vision-tower`).
fn resolve_tower(dir: &Path, config: &ModelConfig) -> Result<PathBuf> {
    let name = config.mm.as_ref().and_then(|m| m.vision_tower.clone()).ok_or_else(|| {
        Error::config(&config.path, "field `mm_vision_tower` is missing; pass the CLIP directory with --vision-tower")
    })?;
    let mut tried = Vec::new();
    let as_path = Path::new(&name);
    let inside = as_path.components().next().is_some()
        && as_path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    let mut candidates = if inside { vec![dir.join(as_path)] } else { Vec::new() };
    if let Some(base) = as_path.file_name() {
        candidates.push(dir.join(base));
        if let Some(parent) = dir.parent() {
            candidates.push(parent.join(base));
        }
    }
    if let Some(cache) = hf_cache_dir() {
        let repo = cache.join(format!("models--{}", name.replace('/', "--"))).join("snapshots");
        if let Ok(entries) = std::fs::read_dir(&repo) {
            let mut snaps: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            snaps.sort();
            candidates.extend(snaps);
        } else {
            tried.push(repo.display().to_string());
        }
    }
    for c in candidates {
        if c.join("config.json").is_file() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    let outside = if inside { "" } else { " (a path leaving the model directory is not followed)" };
    Err(Error::config(
        &config.path,
        format!(
            "mm_vision_tower \"{name}\" was not found on this machine{outside} (tried {}); pass the CLIP directory with --vision-tower",
            tried.join(", ")
        ),
    ))
}

fn hf_cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}
