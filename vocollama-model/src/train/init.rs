//! New models with fresh random weights, from a named shape: what training
//! from scratch starts from (the miniatures, the embedded demo model). A
//! random CLIP tower stays frozen as the paper's tower does; its random
//! features still carry colour and position.

use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor, TensorData};
use serde_json::{Value, json};

use super::checkpoint::{
    TOKENIZER_FILES, copy_files, llava_tensors, module_tensors, write_dir_atomic, write_safetensors,
};
use crate::config::{ModelConfig, clip_vision_config_from_dir};
use crate::error::{Error, Result};
use crate::llama::Llama;
use crate::projector::Projector;
use crate::rng::SplitMix64;
use crate::text::Tokenizer;
use crate::vision::ClipVision;
use crate::weights::KeyMap;

/// A model shape: the tower's and the language model's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub image_size: usize,
    pub patch_size: usize,
    pub vision_hidden: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub context: usize,
}

pub const PRESETS: [Preset; 2] = [
    // 64 image tokens from a 64 px image; about 1 M language-model parameters.
    Preset {
        name: "tiny",
        image_size: 64,
        patch_size: 8,
        vision_hidden: 64,
        vision_layers: 2,
        vision_heads: 4,
        hidden: 128,
        layers: 4,
        heads: 4,
        kv_heads: 2,
        intermediate: 352,
        context: 1024,
    },
    Preset {
        name: "small",
        image_size: 112,
        patch_size: 14,
        vision_hidden: 128,
        vision_layers: 3,
        vision_heads: 4,
        hidden: 256,
        layers: 6,
        heads: 8,
        kv_heads: 4,
        intermediate: 704,
        context: 1024,
    },
];

pub fn preset(name: &str) -> Result<Preset> {
    PRESETS.iter().copied().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        Error::Invalid(format!("unknown model preset `{name}` (expected one of {})", names.join(", ")))
    })
}

/// HF's initialisation: weights N(0, std), biases 0, norm scales 1, norm shifts 0.
struct Randomize {
    rng: SplitMix64,
    std: f64,
    name: String,
}

impl ModuleMapper for Randomize {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.name = name.to_string();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        let shape = value.shape();
        let n = shape.num_elements();
        let data: Vec<f32> = match self.name.as_str() {
            "gamma" => vec![1.0; n],
            "beta" | "bias" => vec![0.0; n],
            _ => (0..n)
                .map(|_| {
                    // Box–Muller.
                    let (u, v) = (self.rng.next_f64().max(1e-300), self.rng.next_f64());
                    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos() * self.std) as f32
                })
                .collect(),
        };
        let t = Tensor::<D>::from_data(TensorData::new(data, shape), &value.device());
        Param::from_mapped_value(id, t, mapper)
    }
}

/// `module` with fresh N(0, `std`) weights drawn from `seed`.
pub fn randomize<M: Module>(module: M, seed: u64, std: f64) -> M {
    module.map(&mut Randomize { rng: SplitMix64::new(seed), std, name: String::new() })
}

/// Write a new original-layout LLaVA model of shape `p` to `out`: random
/// weights from `seed`, `tokenizer_dir`'s tokenizer (which must hold `<voco>`),
/// its CLIP tower in `vision_tower/`.
/// With `avg_pool`, the tower's features are averaged into one token and a
/// `linear` projector maps it (the LLaMA-VID-style baseline).
pub fn init_model(
    out: &Path,
    p: &Preset,
    tokenizer_dir: &Path,
    voco_tokens: usize,
    avg_pool: bool,
    seed: u64,
) -> Result<()> {
    let tokenizer = Tokenizer::for_model(tokenizer_dir, crate::config::CheckpointLayout::LlavaOriginal)?;
    crate::chat::voco_id(&tokenizer)?;
    let vocab = tokenizer.vocab_size();
    let tower = json!({
        "architectures": ["CLIPVisionModel"],
        "model_type": "clip_vision_model",
        "hidden_size": p.vision_hidden,
        "intermediate_size": 4 * p.vision_hidden,
        "num_hidden_layers": p.vision_layers,
        "num_attention_heads": p.vision_heads,
        "num_channels": 3,
        "image_size": p.image_size,
        "patch_size": p.patch_size,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    });
    let preprocessor = json!({
        "crop_size": {"height": p.image_size, "width": p.image_size},
        "do_center_crop": true, "do_normalize": true, "do_resize": true, "do_convert_rgb": true,
        "image_mean": crate::preprocess::CLIP_MEAN, "image_std": crate::preprocess::CLIP_STD,
        "resample": 3, "size": {"shortest_edge": p.image_size},
    });
    let config = json!({
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "vocab_size": vocab,
        "hidden_size": p.hidden,
        "intermediate_size": p.intermediate,
        "num_hidden_layers": p.layers,
        "num_attention_heads": p.heads,
        "num_key_value_heads": p.kv_heads,
        "max_position_embeddings": p.context,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "bos_token_id": tokenizer.bos_id(),
        "eos_token_id": tokenizer.eos_id(),
        "pad_token_id": 0,
        "tie_word_embeddings": false,
        "torch_dtype": "float32",
        "mm_vision_tower": "vision_tower",
        "mm_hidden_size": p.vision_hidden,
        "mm_projector_type": if avg_pool { "linear" } else { "mlp2x_gelu" },
        "mm_image_pooling": if avg_pool { "avg" } else { "none" },
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": false,
        "mm_use_im_patch_token": false,
        "image_aspect_ratio": "pad",
        "voco_num": voco_tokens,
    });
    let device = Device::flex();
    write_dir_atomic(out, |dir| {
        let write = |path: &Path, v: &Value| {
            std::fs::write(path, serde_json::to_string_pretty(v).expect("json")).map_err(|e| Error::io(path, e))
        };
        let tdir = dir.join("vision_tower");
        std::fs::create_dir_all(&tdir).map_err(|e| Error::io(&tdir, e))?;
        write(&tdir.join("config.json"), &tower)?;
        write(&tdir.join("preprocessor_config.json"), &preprocessor)?;
        write(&dir.join("config.json"), &config)?;
        copy_files(tokenizer_dir, dir, Some(&TOKENIZER_FILES))?;
        // Modules built from the files just written: one source of truth for the shapes.
        let c = ModelConfig::from_dir(dir)?;
        let mm = c.mm.as_ref().expect("a multimodal config");
        let vc = clip_vision_config_from_dir(&tdir)?;
        let (clip, projector, llm) = random_modules(&vc, mm, &c.llm, seed, &device)?;
        write_safetensors(
            &tdir.join("model.safetensors"),
            &module_tensors(&clip, &KeyMap::new([("vision_model.", "")])),
        )?;
        write_safetensors(&dir.join("model.safetensors"), &llava_tensors(&llm, Some(&projector)))
    })
}

/// The tower, projector and language model of a shape with N(0, 0.02)
/// weights drawn from `seed` (one stream per module).
fn random_modules(
    vision: &crate::config::ClipVisionConfig,
    mm: &crate::config::MultimodalConfig,
    llm: &crate::config::LlamaConfig,
    seed: u64,
    device: &Device,
) -> Result<(ClipVision, Projector, Llama)> {
    let tower = randomize(ClipVision::init(vision, mm.select_layer, mm.select_feature, device)?, seed ^ 1, 0.02);
    let projector = randomize(
        Projector::init(mm.projector_type, mm.mm_hidden_size, llm.hidden_size, mm.projector_bias, device),
        seed ^ 3,
        0.02,
    );
    Ok((tower, projector, randomize(Llama::init(llm, device), seed ^ 2, 0.02)))
}

impl crate::llava::LlavaModel {
    /// A LLaVA of the given shapes with random N(0, 0.02) weights, built in
    /// memory on `device` (benchmarks: no files). CLIP features from layer −2,
    /// patches only, an `mlp2x_gelu` projector, CLIP's default preprocessing.
    pub fn random(
        llm: &crate::config::LlamaConfig,
        vision: &crate::config::ClipVisionConfig,
        voco_tokens: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        use crate::config::{CheckpointLayout, MultimodalConfig, ProjectorType, SelectFeature};
        use crate::llava::VisionStack;
        use crate::weights::{Checkpoint, Format};
        let mm = MultimodalConfig {
            projector_type: ProjectorType::MlpGelu(2),
            projector_bias: true,
            mm_hidden_size: vision.hidden_size,
            select_layer: -2,
            select_feature: SelectFeature::Patch,
            pad_to_square: false,
            vision_tower: None,
            image_token_index: None,
            avg_pool: false,
        };
        let (tower, projector, model) = random_modules(vision, &mm, llm, seed, device)?;
        let nowhere = Checkpoint { dir: Default::default(), format: Format::Safetensors, files: vec![] };
        let stack = VisionStack {
            tower,
            projector,
            preprocessor: crate::preprocess::Preprocessor::clip_default(vision.image_size, false),
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
        let fingerprint = {
            use sha2::{Digest, Sha256};
            Sha256::digest(format!("random {seed} {llm:?} {vision:?}").as_bytes()).into()
        };
        Ok(Self { config, checkpoint: nowhere, llm: model, vision: Some(stack), device: device.clone(), fingerprint })
    }
}
