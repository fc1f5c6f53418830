//! A loaded LLaVA-1.5 model: CLIP tower → projector → LLaMA, from either
//! checkpoint layout, and the splice of image embeddings into the prompt.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::{CheckpointLayout, ClipVisionConfig, ModelConfig, clip_vision_config_from_dir};
use crate::error::{Error, Result};
use crate::llama::Llama;
use crate::preprocess::{Pixels, Preprocessor};
use crate::projector::Projector;
use crate::vision::ClipVision;
use crate::weights::{Checkpoint, KeyMap, Tensors, load_module};

/// LLaVA's placeholder id for "the image goes here" in token id lists.
pub const IMAGE_TOKEN_INDEX: i64 = -200;

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The CLIP tower directory, overriding `mm_vision_tower` of config.json.
    pub vision_tower: Option<PathBuf>,
}

/// The vision half: tower, projector, and how images become pixels.
#[derive(Debug)]
pub struct VisionStack {
    pub tower: ClipVision,
    pub projector: Projector,
    pub preprocessor: Preprocessor,
    pub config: ClipVisionConfig,
    /// Where the tower's weights came from.
    pub tower_dir: PathBuf,
    pub tower_checkpoint: Checkpoint,
}

#[derive(Debug)]
pub struct LlavaModel {
    pub config: ModelConfig,
    pub checkpoint: Checkpoint,
    pub llm: Llama,
    /// `None` for a plain LLaMA directory.
    pub vision: Option<VisionStack>,
    pub device: Device,
    /// Identity of configs and weights, stamped into `.voco` files.
    pub fingerprint: [u8; 32],
}

impl LlavaModel {
    pub fn load(dir: &Path, options: &LoadOptions, device: &Device) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let checkpoint = Checkpoint::discover(dir)?;
        let tensors = checkpoint.tensors()?;
        let (llm_map, proj_map) = match config.layout {
            CheckpointLayout::LlavaOriginal | CheckpointLayout::Llama => (
                Llama::key_map("model.", ""),
                config.mm.as_ref().map(|mm| Projector::original_key_map(mm.projector_type)),
            ),
            CheckpointLayout::LlavaHf => {
                // transformers >= 4.52 saves `model.language_model.*`; the Hub's files say `language_model.model.*`.
                if tensors.has_prefix("model.language_model.") {
                    (Llama::key_map("model.language_model.", ""), Some(Projector::hf_key_map("model.")))
                } else {
                    (Llama::key_map("language_model.model.", "language_model."), Some(Projector::hf_key_map("")))
                }
            }
        };
        let llm = load_module(Llama::init(&config.llm, device), &tensors, &llm_map, "language model")?;
        let vision = match &config.mm {
            None => None,
            Some(mm) => {
                let projector = Projector::init(
                    mm.projector_type,
                    mm.mm_hidden_size,
                    config.llm.hidden_size,
                    mm.projector_bias,
                    device,
                );
                let projector = load_module(
                    projector,
                    &tensors,
                    proj_map.as_ref().expect("multimodal layouts map the projector"),
                    "projector",
                )?;
                Some(load_vision(dir, &config, &tensors, &checkpoint, options, projector, device)?)
            }
        };
        let fingerprint = fingerprint(&config, &checkpoint, vision.as_ref())?;
        Ok(Self { config, checkpoint, llm, vision, device: device.clone(), fingerprint })
    }

    fn vision(&self) -> Result<&VisionStack> {
        self.vision.as_ref().ok_or_else(|| {
            Error::Invalid(format!("{} is a text-only model: it cannot take an image", self.config.path.display()))
        })
    }

    /// Whether the image is averaged into one token before the projector.
    pub fn avg_pool(&self) -> bool {
        self.config.mm.as_ref().is_some_and(|m| m.avg_pool)
    }

    /// Preprocess a decoded image (a video frame) for this model.
    pub fn preprocess(&self, image: &image::RgbImage) -> Result<Pixels> {
        Ok(self.vision()?.preprocessor.apply(image))
    }

    /// Decode and preprocess an image file for this model.
    pub fn load_image(&self, path: &Path) -> Result<Pixels> {
        self.vision()?.preprocessor.load(path)
    }

    /// Pixels → image embeddings `[1, patches, hidden]` (tower stopped at the selected layer, then projector).
    pub fn encode_image(&self, pixels: &Pixels) -> Result<Tensor<3>> {
        self.encode_images(std::slice::from_ref(pixels))
    }

    /// Several images through the tower as one batch: `[images, patches, hidden]`.
    pub fn encode_images(&self, pixels: &[Pixels]) -> Result<Tensor<3>> {
        let v = self.vision()?;
        let size = v.tower.image_size();
        if pixels.is_empty() {
            return Err(Error::Invalid("no image to encode".into()));
        }
        if let Some(p) = pixels.iter().find(|p| p.height != size || p.width != size) {
            return Err(Error::Invalid(format!(
                "pixels are {}x{}, the vision tower expects {size}x{size} (check preprocessor_config.json crop_size)",
                p.height, p.width
            )));
        }
        let data: Vec<f32> = pixels.iter().flat_map(|p| p.data.iter().copied()).collect();
        let t = Tensor::<4>::from_data(TensorData::new(data, [pixels.len(), 3, size, size]), &self.device);
        let features = v.tower.forward(t);
        let features = if self.avg_pool() { features.mean_dim(1) } else { features };
        Ok(v.projector.forward(features))
    }

    /// Embeddings `[B, L, hidden]` for `ids`, with `images[i]` (`[B, P, hidden]`)
    /// spliced in at the i-th `IMAGE_TOKEN_INDEX` (LLaVA's
    /// `prepare_inputs_labels_for_multimodal`). `B` > 1 is a batch of prompts
    /// that differ only in their images (video frames); without images B = 1.
    pub fn embed_with_images(&self, ids: &[i64], images: &[Tensor<3>]) -> Result<Tensor<3>> {
        let slots = ids.iter().filter(|&&t| t == IMAGE_TOKEN_INDEX).count();
        if slots != images.len() {
            return Err(Error::Invalid(format!(
                "the prompt has {slots} image placeholders but {} images were given",
                images.len()
            )));
        }
        let vocab = self.config.llm.vocab_size as i64;
        if let Some(bad) = ids.iter().find(|&&t| t != IMAGE_TOKEN_INDEX && !(0..vocab).contains(&t)) {
            return Err(Error::Invalid(format!("token id {bad} is outside the vocabulary (0..{vocab})")));
        }
        let batch = images.first().map_or(1, |i| i.dims()[0]);
        if let Some(i) = images.iter().find(|i| i.dims()[0] != batch) {
            return Err(Error::Invalid(format!("image batches differ in size: {batch} and {}", i.dims()[0])));
        }
        let mut parts = Vec::new();
        let mut images = images.iter();
        for (i, chunk) in ids.split(|&t| t == IMAGE_TOKEN_INDEX).enumerate() {
            if i > 0 {
                parts.push(images.next().expect("counted above").clone());
            }
            if !chunk.is_empty() {
                let t = Tensor::<2, Int>::from_data(TensorData::new(chunk.to_vec(), [1, chunk.len()]), &self.device);
                let e = self.llm.embed(t);
                let [_, l, d] = e.dims();
                parts.push(e.expand([batch, l, d]));
            }
        }
        Ok(Tensor::cat(parts, 1))
    }

    /// Absolute positions `start..start+len` for one sample, `[1, len]`.
    pub fn positions(&self, start: usize, len: usize) -> Tensor<2, Int> {
        Tensor::<1, Int>::arange(start as i64..(start + len) as i64, &self.device).unsqueeze()
    }
}

fn load_vision(
    dir: &Path,
    config: &ModelConfig,
    tensors: &Tensors,
    checkpoint: &Checkpoint,
    options: &LoadOptions,
    projector: Projector,
    device: &Device,
) -> Result<VisionStack> {
    let mm = config.mm.as_ref().expect("called for multimodal configs");
    // llava-hf keeps the tower in its own checkpoint; LLaVA in a separate CLIP directory.
    let (vconfig, tower_dir, tower_checkpoint, own) = match (&config.vision, tower_dir(dir, config, options)?) {
        (Some(v), None) => (v.clone(), dir.to_path_buf(), checkpoint.clone(), None),
        (_, tower_dir) => {
            let tower_dir = tower_dir.expect("a separate tower unless the config embeds one");
            let c = clip_vision_config_from_dir(&tower_dir)?;
            let ck = Checkpoint::discover(&tower_dir)?;
            let t = ck.tensors()?;
            (c, tower_dir, ck, Some(t))
        }
    };
    if vconfig.hidden_size != mm.mm_hidden_size {
        return Err(Error::config(
            &config.path,
            format!(
                "mm_hidden_size is {} but the vision tower at {} has hidden_size {}",
                mm.mm_hidden_size,
                tower_dir.display(),
                vconfig.hidden_size
            ),
        ));
    }
    let tower = ClipVision::init(&vconfig, mm.select_layer, mm.select_feature, device)?;
    let tower = match &own {
        Some(t) => {
            // A CLIPModel or a Hub CLIPVisionModel says `vision_model.*`; transformers 5 saves a bare tree.
            let map = if t.has_prefix("vision_model.") {
                KeyMap::new([("vision_model.", "")])
            } else {
                KeyMap::new([("", "")])
            };
            load_module(tower, t, &map, "vision tower")?
        }
        None => {
            let prefix =
                if tensors.has_prefix("model.vision_tower.") { "model.vision_tower." } else { "vision_tower." };
            let map = if tensors.has_prefix(&format!("{prefix}vision_model.")) {
                KeyMap::new([(format!("{prefix}vision_model."), String::new())])
            } else {
                KeyMap::new([(prefix.to_string(), String::new())])
            };
            load_module(tower, tensors, &map, "vision tower")?
        }
    };
    let preprocessor = preprocessor_for(dir, config, &tower_dir, &vconfig)?;
    Ok(VisionStack { tower, projector, preprocessor, config: vconfig, tower_dir, tower_checkpoint })
}

/// SHA-256 over everything that decides what stage 1 computes: configs,
/// weight files' identity, the preprocessing.
fn fingerprint(config: &ModelConfig, checkpoint: &Checkpoint, vision: Option<&VisionStack>) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"vocollama model fingerprint v1\0");
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
    h.update(read(&config.path)?);
    checkpoint.identity(&mut h)?;
    if let Some(v) = vision {
        if v.tower_checkpoint.dir != checkpoint.dir {
            h.update(read(&v.tower_dir.join("config.json"))?);
            v.tower_checkpoint.identity(&mut h)?;
        }
        h.update(format!("{:?}", v.preprocessor).as_bytes());
    }
    Ok(h.finalize().into())
}

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
pub fn tower_dir(dir: &Path, config: &ModelConfig, options: &LoadOptions) -> Result<Option<PathBuf>> {
    match (&options.vision_tower, &config.vision, &config.mm) {
        (Some(p), _, _) => Ok(Some(p.clone())),
        (None, Some(_), _) | (None, None, None) => Ok(None),
        (None, None, Some(_)) => resolve_tower(dir, config).map(Some),
    }
}

/// Find `mm_vision_tower` on this machine: a path (relative to the model
/// directory, then to the working directory), a sibling directory named like
/// the Hub repository, or the HF hub cache. Nothing is downloaded.
fn resolve_tower(dir: &Path, config: &ModelConfig) -> Result<PathBuf> {
    let name = config.mm.as_ref().and_then(|m| m.vision_tower.clone()).ok_or_else(|| {
        Error::config(&config.path, "field `mm_vision_tower` is missing; pass the CLIP directory with --vision-tower")
    })?;
    let mut tried = Vec::new();
    let as_path = Path::new(&name);
    let mut candidates = vec![dir.join(as_path), as_path.to_path_buf()];
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
    Err(Error::config(
        &config.path,
        format!(
            "mm_vision_tower \"{name}\" was not found on this machine (tried {}); pass the CLIP directory with --vision-tower",
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
