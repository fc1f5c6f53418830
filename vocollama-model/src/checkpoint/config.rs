//! config.json of the three checkpoint layouts and of the CLIP tower, parsed into typed configs.
//!
//! Missing fields take the defaults of the HF config classes (`LlamaConfig`,
//! `CLIPVisionConfig`, `LlavaConfig`), because real checkpoints rely on them:
//! llava-hf's `text_config` often lists only what differs from LLaMA-2 7B.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::fields::Fields;
use crate::error::{Error, Result};
use crate::io::json::read_json;

/// How the tensors of a model directory are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointLayout {
    /// The LLaVA code base (`llava_llama`, also VoCo-LLaMA): `model.*`, `lm_head.*`,
    /// `model.mm_projector.*`, the CLIP tower in its own directory.
    LlavaOriginal,
    /// HF's `LlavaForConditionalGeneration` (`model_type: llava` with `text_config`).
    LlavaHf,
    /// A plain `LlamaForCausalLM`: no vision.
    Llama,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl LlamaConfig {
    /// Bytes of K and V per token over all layers, for `dtype_bytes`-wide elements.
    pub fn kv_bytes_per_token(&self, dtype_bytes: usize) -> usize {
        2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * dtype_bytes
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionActivation {
    QuickGelu,
    Gelu,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: VisionActivation,
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

/// Which hidden states of the tower become image features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectFeature {
    /// Drop the CLS token (`patch`, llava-hf `default`).
    Patch,
    /// Keep it (`cls_patch`, llava-hf `full`).
    ClsPatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectorType {
    Linear,
    /// `mlp{N}x_gelu`: N linear layers with GELU between them.
    MlpGelu(usize),
}

impl ProjectorType {
    pub fn num_linears(self) -> usize {
        match self {
            Self::Linear => 1,
            Self::MlpGelu(n) => n,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MultimodalConfig {
    pub projector_type: ProjectorType,
    pub projector_bias: bool,
    pub mm_hidden_size: usize,
    /// Index into CLIP's hidden states (0 = embeddings, negative from the end).
    pub select_layer: i64,
    pub select_feature: SelectFeature,
    /// `image_aspect_ratio: pad`: expand to a square with the mean colour first.
    pub pad_to_square: bool,
    /// `mm_vision_tower` as written in config.json (original layout).
    pub vision_tower: Option<String>,
    /// The token id that stands for the image in llava-hf prompts.
    pub image_token_index: Option<i64>,
    /// `mm_image_pooling`: how the tower's features become image tokens.
    pub image_pooling: ImagePooling,
}

impl MultimodalConfig {
    /// Sequence positions one image takes with the tower `vision`: its
    /// patches, plus the CLS feature with `cls_patch`, or one averaged token.
    pub fn image_tokens(&self, vision: &ClipVisionConfig) -> usize {
        match self.image_pooling {
            ImagePooling::Avg => 1,
            ImagePooling::None => vision.num_patches() + usize::from(self.select_feature == SelectFeature::ClsPatch),
        }
    }

    /// LLaVA-1.5's choices for a tower `vision_hidden` wide: an `mlp2x_gelu`
    /// projector with biases, features of the second-to-last layer, patches only.
    pub fn llava15(vision_hidden: usize) -> Self {
        Self {
            projector_type: ProjectorType::MlpGelu(2),
            projector_bias: true,
            mm_hidden_size: vision_hidden,
            select_layer: -2,
            select_feature: SelectFeature::Patch,
            pad_to_square: false,
            vision_tower: None,
            image_token_index: None,
            image_pooling: ImagePooling::None,
        }
    }
}

/// How the tower's features become image tokens (`mm_image_pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ImagePooling {
    /// Every patch is a token (LLaVA).
    #[default]
    None,
    /// The features averaged into one token before the projector (the
    /// LLaMA-VID-style baseline of the paper's table 1).
    Avg,
}

/// A parsed model directory's config.json.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub layout: CheckpointLayout,
    pub model_type: String,
    pub llm: LlamaConfig,
    pub mm: Option<MultimodalConfig>,
    /// The vision config when it lives in the model's own config (llava-hf).
    pub vision: Option<ClipVisionConfig>,
    /// `voco_num` of VoCo-LLaMA configs.
    pub voco_num: Option<usize>,
    /// The dtype the checkpoint declares (`torch_dtype` / `dtype`).
    pub declared_dtype: Option<String>,
}

// Sane maxima for the sizes a config declares, far beyond any released model.
const MAX_WIDTH: usize = 1 << 16;
const MAX_FFN: usize = 1 << 18;
const MAX_LAYERS: usize = 1024;
const MAX_HEADS: usize = 1024;
const MAX_HEAD_DIM: usize = 1024;
const MAX_VOCAB: usize = 1 << 22;
const MAX_CONTEXT: usize = 1 << 20;
const MAX_IMAGE: usize = 4096;

fn parse_llama(f: &Fields) -> Result<LlamaConfig> {
    let hidden_size = f.usize_upto("hidden_size", 4096, MAX_WIDTH)?;
    let num_attention_heads = f.usize_upto("num_attention_heads", 32, MAX_HEADS)?;
    let num_key_value_heads = f.usize_upto("num_key_value_heads", num_attention_heads, num_attention_heads)?;
    let head_dim = f.usize_upto("head_dim", (hidden_size / num_attention_heads).max(1), MAX_HEAD_DIM)?;
    if head_dim % 2 != 0 {
        return Err(f.error("head_dim", format!("expected an even head size (RoPE rotates pairs), found {head_dim}")));
    }
    if num_attention_heads % num_key_value_heads != 0 {
        return Err(f.error(
            "num_key_value_heads",
            format!(
                "{num_attention_heads} attention heads are not a multiple of {num_key_value_heads} key/value heads"
            ),
        ));
    }
    // transformers >= 5 writes `rope_parameters`; older configs a flat `rope_theta`.
    let rope_theta = match f.get("rope_parameters") {
        Some(v) => {
            let rp = Fields::new(f.path, "rope_parameters", v)?;
            rp.choice("rope_type", "default", &[("default", ())], "")?;
            rp.positive_f64_or("rope_theta", f.positive_f64_or("rope_theta", 10000.0)?)?
        }
        None => f.positive_f64_or("rope_theta", 10000.0)?,
    };
    if let Some(v) = f.get("rope_scaling") {
        return Err(f.error("rope_scaling", format!("rope scaling {v} is not supported")));
    }
    f.choice("hidden_act", "silu", &[("silu", ())], "")?;
    Ok(LlamaConfig {
        vocab_size: f.usize_upto("vocab_size", 32000, MAX_VOCAB)?,
        hidden_size,
        intermediate_size: f.usize_upto("intermediate_size", 11008, MAX_FFN)?,
        num_hidden_layers: f.usize_upto("num_hidden_layers", 32, MAX_LAYERS)?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: f.positive_f64_or("rms_norm_eps", 1e-6)?,
        rope_theta,
        max_position_embeddings: f.usize_upto("max_position_embeddings", 2048, MAX_CONTEXT)?,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        bos_token_id: f.token_id("bos_token_id", Some(1))?,
        eos_token_id: f.token_id("eos_token_id", Some(2))?,
    })
}

fn parse_clip_vision(f: &Fields) -> Result<ClipVisionConfig> {
    let hidden_act = f.choice(
        "hidden_act",
        "quick_gelu",
        &[("quick_gelu", VisionActivation::QuickGelu), ("gelu", VisionActivation::Gelu)],
        "",
    )?;
    let c = ClipVisionConfig {
        hidden_size: f.usize_upto("hidden_size", 768, MAX_WIDTH)?,
        intermediate_size: f.usize_upto("intermediate_size", 3072, MAX_FFN)?,
        num_hidden_layers: f.usize_upto("num_hidden_layers", 12, MAX_LAYERS)?,
        num_attention_heads: f.usize_upto("num_attention_heads", 12, MAX_HEADS)?,
        num_channels: f.usize_upto("num_channels", 3, 4)?,
        image_size: f.usize_upto("image_size", 224, MAX_IMAGE)?,
        patch_size: f.usize_upto("patch_size", 32, MAX_IMAGE)?,
        hidden_act,
        layer_norm_eps: f.positive_f64_or("layer_norm_eps", 1e-5)?,
    };
    if !c.image_size.is_multiple_of(c.patch_size) || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(Error::config(
            f.path,
            format!(
                "vision config: image_size {} must be a multiple of patch_size {} and hidden_size {} of num_attention_heads {}",
                c.image_size, c.patch_size, c.hidden_size, c.num_attention_heads
            ),
        ));
    }
    Ok(c)
}

fn parse_projector_type(path: &Path, s: &str) -> Result<ProjectorType> {
    if s == "linear" {
        return Ok(ProjectorType::Linear);
    }
    let n = s
        .strip_prefix("mlp")
        .and_then(|r| r.strip_suffix("x_gelu"))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n >= 1);
    n.map(ProjectorType::MlpGelu).ok_or_else(|| {
        Error::config(path, format!("field `mm_projector_type`: expected \"linear\" or \"mlpNx_gelu\", found \"{s}\""))
    })
}

impl ModelConfig {
    /// Parse `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let value = read_json(&path)?;
        Self::parse(&path, &value)
    }

    pub fn parse(path: &Path, value: &Value) -> Result<Self> {
        let top = Fields::new(path, "", value)?;
        let model_type = top.opt_str("model_type")?.unwrap_or("").to_string();
        let declared_dtype = top.opt_str("torch_dtype")?.or(top.opt_str("dtype")?).map(str::to_string);
        let voco_num = top.opt_usize("voco_num")?;
        if let Some(n) = voco_num.filter(|&n| n > MAX_CONTEXT) {
            return Err(top.error("voco_num", format!("expected 1 to {MAX_CONTEXT}, found {n}")));
        }
        // The original LLaVA code writes `model_type: llava` too (liuhaotian's 1.5
        // checkpoints), so the `mm_*` fields decide the layout, not the type name.
        if top.get("mm_vision_tower").is_some() || top.get("mm_projector_type").is_some() {
            let llm = parse_llama(&top)?;
            let projector_type = parse_projector_type(path, top.opt_str("mm_projector_type")?.unwrap_or("linear"))?;
            let select_feature = top.choice(
                "mm_vision_select_feature",
                "patch",
                &[("patch", SelectFeature::Patch), ("cls_patch", SelectFeature::ClsPatch)],
                "",
            )?;
            let pad_to_square = top.choice(
                "image_aspect_ratio",
                "square",
                &[("pad", true), ("square", false)],
                " (anyres is LLaVA-1.6, not supported)",
            )?;
            top.choice("mm_patch_merge_type", "flat", &[("flat", ())], "")?;
            let mm = MultimodalConfig {
                projector_type,
                projector_bias: true,
                mm_hidden_size: top.opt_usize("mm_hidden_size")?.filter(|&n| n <= MAX_WIDTH).ok_or_else(|| {
                    Error::config(path, format!("field `mm_hidden_size` is missing or over {MAX_WIDTH} (expected the vision width, e.g. 1024)"))
                })?,
                select_layer: top.i64_or("mm_vision_select_layer", -1)?,
                select_feature,
                pad_to_square,
                vision_tower: top.opt_str("mm_vision_tower")?.map(str::to_string),
                image_token_index: None,
                image_pooling: top.choice(
                    "mm_image_pooling",
                    "none",
                    &[("avg", ImagePooling::Avg), ("none", ImagePooling::None)],
                    "",
                )?,
            };
            return Ok(Self {
                path: path.to_path_buf(),
                layout: CheckpointLayout::LlavaOriginal,
                model_type,
                llm,
                mm: Some(mm),
                vision: None,
                voco_num,
                declared_dtype,
            });
        }
        if let Some(text) = top.get("text_config") {
            let tf = Fields::new(path, "text_config", text)?;
            tf.choice("model_type", "llama", &[("llama", ())], "")?;
            let llm = parse_llama(&tf)?;
            let empty = Value::Object(Map::new());
            let vf = Fields::new(path, "vision_config", top.get("vision_config").unwrap_or(&empty))?;
            let vision = parse_clip_vision(&vf)?;
            let select_layer = match top.get("vision_feature_layer") {
                Some(Value::Array(_)) => {
                    return Err(Error::config(
                        path,
                        "field `vision_feature_layer`: a list of layers is not supported (expected one integer)",
                    ));
                }
                _ => top.i64_or("vision_feature_layer", -2)?,
            };
            let select_feature = top.choice(
                "vision_feature_select_strategy",
                "default",
                &[("default", SelectFeature::Patch), ("full", SelectFeature::ClsPatch)],
                "",
            )?;
            top.choice("projector_hidden_act", "gelu", &[("gelu", ())], "")?;
            let mm = MultimodalConfig {
                projector_type: ProjectorType::MlpGelu(2),
                projector_bias: top.bool_or("multimodal_projector_bias", true)?,
                mm_hidden_size: vision.hidden_size,
                select_layer,
                select_feature,
                pad_to_square: top.opt_str("image_aspect_ratio")? == Some("pad"),
                vision_tower: None,
                image_token_index: Some(top.i64_or("image_token_index", top.i64_or("image_token_id", 32000)?)?),
                image_pooling: ImagePooling::None,
            };
            return Ok(Self {
                path: path.to_path_buf(),
                layout: CheckpointLayout::LlavaHf,
                model_type,
                llm,
                mm: Some(mm),
                vision: Some(vision),
                voco_num,
                declared_dtype: declared_dtype.or(tf.opt_str("torch_dtype")?.map(str::to_string)),
            });
        }
        if model_type == "llama" || model_type.is_empty() && top.get("num_hidden_layers").is_some() {
            return Ok(Self {
                path: path.to_path_buf(),
                layout: CheckpointLayout::Llama,
                model_type,
                llm: parse_llama(&top)?,
                mm: None,
                vision: None,
                voco_num,
                declared_dtype,
            });
        }
        Err(Error::config(
            path,
            format!(
                "field `model_type`: expected a LLaVA config (mm_* fields), llava-hf (text_config) or \"llama\", found \"{model_type}\""
            ),
        ))
    }
}

/// Parse a CLIP tower's config.json: a full `CLIPModel` (`vision_config`) or a `CLIPVisionModel`.
pub fn clip_vision_config_from_dir(dir: &Path) -> Result<ClipVisionConfig> {
    let path = dir.join("config.json");
    let value = read_json(&path)?;
    let top = Fields::new(&path, "", &value)?;
    match top.get("vision_config") {
        Some(v) => parse_clip_vision(&Fields::new(&path, "vision_config", v)?),
        None => match top.opt_str("model_type")? {
            Some("clip_vision_model") | None => parse_clip_vision(&top),
            Some(other) => Err(Error::config(
                &path,
                format!("field `model_type`: expected \"clip\" or \"clip_vision_model\", found \"{other}\""),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ModelConfig> {
        ModelConfig::parse(Path::new("config.json"), &serde_json::from_str(json).unwrap())
    }

    #[test]
    fn hf_defaults_fill_a_sparse_llava_hf_config() {
        let c = parse(r#"{"model_type":"llava","text_config":{"model_type":"llama","vocab_size":32064,"rms_norm_eps":1e-05},
                         "vision_config":{"hidden_size":1024,"image_size":336,"intermediate_size":4096,"num_attention_heads":16,"num_hidden_layers":24,"patch_size":14}}"#)
        .unwrap();
        assert_eq!(c.layout, CheckpointLayout::LlavaHf);
        assert_eq!((c.llm.hidden_size, c.llm.num_hidden_layers, c.llm.num_key_value_heads), (4096, 32, 32));
        assert_eq!(c.vision.as_ref().unwrap().num_patches(), 576);
        assert_eq!(c.mm.as_ref().unwrap().image_token_index, Some(32000));
        // Vicuna-7B in f16: 0.5 MiB of K/V per token.
        assert_eq!(c.llm.kv_bytes_per_token(2), 512 * 1024);
    }

    #[test]
    fn bad_fields_are_named() {
        let e = parse(r#"{"model_type":"llava_llama","mm_vision_tower":"x","mm_hidden_size":8,"hidden_size":"big"}"#)
            .unwrap_err();
        assert_eq!(e.to_string(), "config.json: field `hidden_size`: expected a positive integer, found \"big\"");
        let e = parse(
            r#"{"model_type":"llava_llama","mm_vision_tower":"x","mm_hidden_size":8,"mm_projector_type":"resampler"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("mm_projector_type"), "{e}");
        let e = parse(r#"{"model_type":"bert"}"#).unwrap_err();
        assert!(e.to_string().contains("\"bert\""), "{e}");
        let e = parse(r#"{"model_type":"llama","num_attention_heads":6,"num_key_value_heads":4}"#).unwrap_err();
        assert!(e.to_string().contains("not a multiple"), "{e}");
    }

    #[test]
    fn projector_types() {
        let p = Path::new("c");
        assert_eq!(parse_projector_type(p, "mlp2x_gelu").unwrap(), ProjectorType::MlpGelu(2));
        assert_eq!(parse_projector_type(p, "mlp3x_gelu").unwrap().num_linears(), 3);
        assert_eq!(parse_projector_type(p, "linear").unwrap(), ProjectorType::Linear);
        assert!(parse_projector_type(p, "mlpx_gelu").is_err());
    }
}
