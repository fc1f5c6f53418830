//! A LLaVA-1.5 model — CLIP tower → projector → LLaMA — loaded from either
//! checkpoint layout or built with random weights, and the splice of image
//! embeddings into the prompt: the one forward every path runs through.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use super::clip::ClipVision;
use super::footprint;
use super::llama::Llama;
use super::precision::{self, Precision, Quantize, WeightDType};
use super::projector::Projector;
use super::random;
use crate::checkpoint::config::{
    CheckpointLayout, ClipVisionConfig, ImagePooling, LlamaConfig, ModelConfig, MultimodalConfig,
    clip_vision_config_from_dir,
};
use crate::checkpoint::fingerprint::{self, TowerIdentity};
use crate::checkpoint::tower::{preprocessor_for, tower_dir};
use crate::checkpoint::weights::{Checkpoint, Format, KeyMap, Target, Tensors, load_module};
use crate::error::{Error, Result};
use crate::infer::kv_cache::KvCache;
use crate::media::preprocess::{Pixels, Preprocessor};
use crate::voco::file::CacheSpec;
use crate::voco::layout::AttentionLayout;

/// LLaVA's placeholder id for "the image goes here" in token id lists.
pub const IMAGE_TOKEN_INDEX: i64 = -200;

/// `ids` with every image placeholder repeated `per_image` times: one entry per sequence position.
pub fn expand_ids(ids: &[i64], per_image: usize) -> Vec<i64> {
    ids.iter().flat_map(|&t| std::iter::repeat_n(t, if t == IMAGE_TOKEN_INDEX { per_image } else { 1 })).collect()
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The CLIP tower directory, overriding `mm_vision_tower` of config.json.
    pub vision_tower: Option<PathBuf>,
    /// The float type weights and activations compute in (`auto`: the checkpoint's, as the backend allows).
    pub dtype: WeightDType,
    /// Quantization of the linear weights of the language model and the projector.
    pub quantize: Quantize,
}

impl LoadOptions {
    /// Everything in f32, as transformers' references are computed.
    pub fn f32() -> Self {
        Self { dtype: WeightDType::F32, ..Self::default() }
    }
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
    /// What the weights and activations compute in.
    pub precision: Precision,
    /// Why that precision: asked for, or what `auto` made of the checkpoint and backend.
    pub precision_why: String,
}

/// What loading a model directory will hold, and what that needs.
pub struct LoadPlan {
    pub config: ModelConfig,
    pub checkpoint: Checkpoint,
    tensors: Tensors,
    tower: Option<TowerFiles>,
    preprocessor: Option<Preprocessor>,
    /// The identity `.voco` files made by this model carry.
    pub fingerprint: [u8; 32],
    pub precision: Precision,
    /// Why that precision.
    pub precision_why: String,
    pub footprint: footprint::Footprint,
    /// What the device can hold (GPU backends that say), and what the host has available.
    pub device_memory: Option<u64>,
    pub host_memory: Option<u64>,
}

impl LoadPlan {
    /// Refuse, in one line naming the sizes, what the device or the host cannot hold.
    pub fn check(&self) -> Result<()> {
        footprint::check(&self.footprint, self.precision, self.device_memory, self.host_memory)
    }
}

/// A CLIP tower's files: its config, where it is, and its own tensors
/// (`None` when it lives in the model's checkpoint, as llava-hf keeps it).
struct TowerFiles {
    config: ClipVisionConfig,
    dir: PathBuf,
    checkpoint: Checkpoint,
    tensors: Option<Tensors>,
}

impl LlavaModel {
    /// What a VoCo cache must be for this model to read it.
    pub fn cache_spec(&self) -> CacheSpec {
        let c = &self.config.llm;
        CacheSpec {
            fingerprint: self.fingerprint,
            layers: c.num_hidden_layers,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            context: c.max_position_embeddings,
        }
    }

    /// What loading `dir` with `options` on `device` would hold and need, read
    /// from its configs and tensor tables alone (no weights are read).
    pub fn plan(dir: &Path, options: &LoadOptions, device: &Device) -> Result<LoadPlan> {
        let config = ModelConfig::from_dir(dir)?;
        let checkpoint = Checkpoint::discover(dir)?;
        let tensors = checkpoint.tensors()?;
        let tower = match &config.mm {
            None => None,
            Some(mm) => Some(tower_files(dir, &config, mm, &checkpoint, options)?),
        };
        let cpu = !vocollama_kernels::device::is_cubecl(device);
        // Weights saved quantized load as they are: asking for another quantization is an error.
        let quantize = match (tensors.quantized, options.quantize) {
            (None, asked) => asked,
            (Some(saved), Quantize::None) => saved,
            (Some(saved), asked) if asked == saved => saved,
            (Some(saved), asked) => {
                return Err(Error::Invalid(format!(
                    "--quantize {}: {} holds linear weights saved quantized as {}; load them as they are \
                     (--quantize {} or none) or quantize the unquantized model",
                    asked.name(),
                    dir.display(),
                    saved.name(),
                    saved.name()
                )));
            }
        };
        let (precision, mut precision_why) =
            precision::resolve(options.dtype, quantize, tensors.float_dtype(), device, cpu)?;
        if let Some(saved) = tensors.quantized {
            precision_why.push_str(&format!("; linear weights saved as {}", saved.name()));
        }
        let vision_configs = tower.as_ref().zip(config.mm.as_ref()).map(|(t, mm)| (&t.config, mm));
        let footprint = footprint::estimate(&config.llm, vision_configs, precision, cpu)?;
        let device_memory = if cpu { None } else { footprint::device_capacity(device) };
        let preprocessor = match &tower {
            Some(t) => Some(preprocessor_for(dir, &config, &t.dir, &t.config)?),
            None => None,
        };
        let fingerprint = fingerprint::of_model(
            &config,
            &checkpoint,
            tower.as_ref().map(|t| TowerIdentity { dir: &t.dir, checkpoint: &t.checkpoint }),
            preprocessor.as_ref(),
        )?;
        Ok(LoadPlan {
            config,
            checkpoint,
            tensors,
            tower,
            preprocessor,
            fingerprint,
            precision,
            precision_why,
            footprint,
            device_memory,
            host_memory: crate::memory::available(),
        })
    }

    /// Load a model directory at the precision `options` asks for, refusing
    /// before any weight is read when the device or the host cannot hold it.
    pub fn load(dir: &Path, options: &LoadOptions, device: &Device) -> Result<Self> {
        let plan = Self::plan(dir, options, device)?;
        plan.check()?;
        let LoadPlan {
            config, checkpoint, tensors, tower, preprocessor, fingerprint, precision, precision_why, ..
        } = plan;

        let (llm_map, proj_map) = key_maps(&config, &tensors);
        // Linear weights quantized where asked; the embeddings, norms and lm_head stay in the float type.
        let quantized = Target { dtype: precision.dtype, quantize: precision.quantize, keep_float: &["lm_head"] };
        let mut llm = load_module(Llama::init(&config.llm, device), &tensors, &llm_map, "language model", &quantized)?;
        llm.pack();
        let vision = match (&config.mm, tower) {
            (Some(mm), Some(tower)) => {
                let projector = Projector::init(
                    mm.projector_type,
                    mm.mm_hidden_size,
                    config.llm.hidden_size,
                    mm.projector_bias,
                    device,
                );
                let map = proj_map.as_ref().expect("multimodal layouts map the projector");
                let mut projector = load_module(projector, &tensors, map, "projector", &quantized)?;
                projector.pack();
                // The tower stays in the float type (CLIP's share of the weights is small).
                let target = Target::float(precision.dtype);
                let preprocessor = preprocessor.expect("a tower comes with its preprocessing");
                Some(load_vision(&config, &tensors, tower, preprocessor, projector, &target, device)?)
            }
            _ => None,
        };
        Ok(Self { config, checkpoint, llm, vision, device: device.clone(), fingerprint, precision, precision_why })
    }

    /// A LLaVA-1.5 of the given shapes with random weights ([`random::modules`]), built in
    /// memory on `device` (benchmarks: no files): CLIP features from layer −2,
    /// patches only, an `mlp2x_gelu` projector, CLIP's default preprocessing.
    pub fn random(
        llm: &LlamaConfig,
        vision: &ClipVisionConfig,
        voco_tokens: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mm = MultimodalConfig::llava15(vision.hidden_size);
        let (tower, projector, model) = random::modules(vision, &mm, llm, seed, device)?;
        let nowhere = Checkpoint { dir: Default::default(), format: Format::Safetensors, files: vec![] };
        let preprocessor = Preprocessor::clip_default(vision.image_size, false);
        let fingerprint = fingerprint::of_random(seed, llm, vision, &preprocessor);
        let stack = VisionStack {
            tower,
            projector,
            preprocessor,
            config: vision.clone(),
            tower_dir: Default::default(),
            tower_checkpoint: nowhere.clone(),
        };
        let config = ModelConfig {
            path: "(random weights)".into(),
            layout: CheckpointLayout::LlavaOriginal,
            model_type: "llava_llama".into(),
            llm: llm.clone(),
            mm: Some(mm),
            vision: None,
            voco_num: Some(voco_tokens),
            declared_dtype: None,
        };
        Ok(Self {
            config,
            checkpoint: nowhere,
            llm: model,
            vision: Some(stack),
            device: device.clone(),
            fingerprint,
            precision: Precision::F32,
            precision_why: "random weights in f32".into(),
        })
    }

    /// The tower, projector and preprocessor (an error for a text-only model).
    pub fn vision(&self) -> Result<&VisionStack> {
        self.vision.as_ref().ok_or_else(|| {
            Error::Invalid(format!("{} is a text-only model: it cannot take an image", self.config.path.display()))
        })
    }

    /// Sequence positions one image takes (0 for a text-only model).
    pub fn image_tokens(&self) -> usize {
        match (&self.vision, &self.config.mm) {
            (Some(v), Some(mm)) => mm.image_tokens(&v.config),
            _ => 0,
        }
    }

    /// Preprocess a decoded image (a video frame) for this model.
    pub fn preprocess(&self, image: &image::RgbImage) -> Result<Pixels> {
        self.vision()?.preprocessor.apply(image)
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
        self.project_features(self.tower_features(pixels)?)
    }

    /// Several images through the tower alone: its selected features `[images, patches, mm_hidden]`.
    pub fn tower_features(&self, pixels: &[Pixels]) -> Result<Tensor<3>> {
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
        let dtype = DType::from(self.precision.dtype);
        let t = Tensor::<4>::from_data(TensorData::new(data, [pixels.len(), 3, size, size]), (&self.device, dtype));
        Ok(v.tower.forward(t))
    }

    /// The tower's selected features `[B, patches, mm_hidden]` of
    /// [`Self::tower_features`] through the pooling and the projector, as
    /// [`Self::encode_images`] ends: what training with a frozen tower runs
    /// on features computed once.
    pub fn project_features(&self, features: Tensor<3>) -> Result<Tensor<3>> {
        let v = self.vision()?;
        let pooling = self.config.mm.as_ref().map(|m| m.image_pooling);
        let features = if pooling == Some(ImagePooling::Avg) { features.mean_dim(1) } else { features };
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

    /// The prompt `ids` (images spliced in at their placeholders) at absolute
    /// positions `start..` under `layout`, appended to `cache`: the hidden
    /// states of the new positions. Every path runs through here — stage 1,
    /// stage 2, the uncompressed prompt.
    pub fn forward(
        &self,
        ids: &[i64],
        images: &[Tensor<3>],
        start: usize,
        layout: &AttentionLayout,
        cache: &mut KvCache,
    ) -> Result<Tensor<3>> {
        let x = self.embed_with_images(ids, images)?;
        let len = x.dims()[1];
        let max = self.config.llm.max_position_embeddings;
        if start + len > max {
            return Err(Error::Invalid(format!(
                "the prompt needs positions up to {} but the model's context is {max} tokens",
                start + len
            )));
        }
        Ok(self.llm.forward(x, self.positions(start, len), layout, cache))
    }
}

/// Checkpoint names → module paths for the language model and the projector, by layout.
pub(crate) fn key_maps(config: &ModelConfig, tensors: &Tensors) -> (KeyMap, Option<KeyMap>) {
    match config.layout {
        CheckpointLayout::LlavaOriginal | CheckpointLayout::Llama => {
            (Llama::key_map("model.", ""), config.mm.as_ref().map(|mm| Projector::original_key_map(mm.projector_type)))
        }
        CheckpointLayout::LlavaHf => {
            // transformers >= 4.52 saves `model.language_model.*`; the Hub's files say `language_model.model.*`.
            if tensors.has_prefix("model.language_model.") {
                (Llama::key_map("model.language_model.", ""), Some(Projector::hf_key_map("model.")))
            } else {
                (Llama::key_map("language_model.model.", "language_model."), Some(Projector::hf_key_map("")))
            }
        }
    }
}

/// Find a model's CLIP tower: its own directory (original LLaVA), or inside
/// the model's checkpoint (llava-hf), with its config checked against the model's.
fn tower_files(
    dir: &Path,
    config: &ModelConfig,
    mm: &MultimodalConfig,
    checkpoint: &Checkpoint,
    options: &LoadOptions,
) -> Result<TowerFiles> {
    let separate = tower_dir(dir, config, options.vision_tower.as_deref())?;
    let tower = match (&config.vision, separate) {
        (Some(v), None) => {
            TowerFiles { config: v.clone(), dir: dir.to_path_buf(), checkpoint: checkpoint.clone(), tensors: None }
        }
        (_, tower_dir) => {
            let tower_dir = tower_dir.expect("a separate tower unless the config embeds one");
            let c = clip_vision_config_from_dir(&tower_dir)?;
            let ck = Checkpoint::discover(&tower_dir)?;
            let t = ck.tensors()?;
            TowerFiles { config: c, dir: tower_dir, checkpoint: ck, tensors: Some(t) }
        }
    };
    if tower.config.hidden_size != mm.mm_hidden_size {
        return Err(Error::config(
            &config.path,
            format!(
                "mm_hidden_size is {} but the vision tower at {} has hidden_size {}",
                mm.mm_hidden_size,
                tower.dir.display(),
                tower.config.hidden_size
            ),
        ));
    }
    Ok(tower)
}

fn load_vision(
    config: &ModelConfig,
    tensors: &Tensors,
    files: TowerFiles,
    preprocessor: Preprocessor,
    projector: Projector,
    target: &Target,
    device: &Device,
) -> Result<VisionStack> {
    let mm = config.mm.as_ref().expect("called for multimodal configs");
    let vconfig = files.config;
    let tower = ClipVision::init(&vconfig, mm.select_layer, mm.select_feature, device)?;
    let tower = match &files.tensors {
        Some(t) => {
            // A CLIPModel or a Hub CLIPVisionModel says `vision_model.*`; transformers 5 saves a bare tree.
            let map = if t.has_prefix("vision_model.") {
                KeyMap::new([("vision_model.", "")])
            } else {
                KeyMap::new([("", "")])
            };
            load_module(tower, t, &map, "vision tower", target)?
        }
        None => {
            let prefix =
                if tensors.has_prefix("model.vision_tower.") { "model.vision_tower." } else { "vision_tower." };
            let map = if tensors.has_prefix(&format!("{prefix}vision_model.")) {
                KeyMap::new([(format!("{prefix}vision_model."), String::new())])
            } else {
                KeyMap::new([(prefix.to_string(), String::new())])
            };
            load_module(tower, tensors, &map, "vision tower", target)?
        }
    };
    Ok(VisionStack {
        tower,
        projector,
        preprocessor,
        config: vconfig,
        tower_dir: files.dir,
        tower_checkpoint: files.checkpoint,
    })
}
