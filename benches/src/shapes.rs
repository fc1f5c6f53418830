//! Model shapes for benchmarks, built from random weights in memory: the
//! training presets `tiny` and `small`, and `slice7b` — CLIP ViT-L/14-336 in
//! full with a Vicuna-7B-wide LLaMA of a chosen depth, so every per-layer cost
//! is the real 7B one.

use vocollama_model::checkpoint::config::{ClipVisionConfig, LlamaConfig, MultimodalConfig, VisionActivation};
use vocollama_model::model::random::PRESETS;
use vocollama_model::{Error, Result};

/// LLaMA-1/Vicuna's vocabulary plus `<voco>`.
pub const VOCAB: usize = 32001;

#[derive(Debug, Clone)]
pub struct Shape {
    pub name: String,
    pub vision: ClipVisionConfig,
    pub llm: LlamaConfig,
}

impl Shape {
    /// `tiny`, `small` or `slice7b`; `layers` overrides the LLaMA depth
    /// (`slice7b` defaults to 4 of Vicuna-7B's 32).
    pub fn named(name: &str, layers: Option<usize>) -> Result<Self> {
        let mut shape = match name {
            "slice7b" => Self {
                name: name.into(),
                vision: ClipVisionConfig {
                    hidden_size: 1024,
                    intermediate_size: 4096,
                    num_hidden_layers: 24,
                    num_attention_heads: 16,
                    num_channels: 3,
                    image_size: 336,
                    patch_size: 14,
                    hidden_act: VisionActivation::QuickGelu,
                    layer_norm_eps: 1e-5,
                },
                llm: llama(4096, 11008, 4, 32, 32, 4096),
            },
            _ => {
                let p = PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
                    Error::Invalid(format!("unknown benchmark shape `{name}` (expected tiny, small or slice7b)"))
                })?;
                Self { name: name.into(), vision: p.vision_config(), llm: p.llama_config(VOCAB) }
            }
        };
        if let Some(l) = layers {
            if l == 0 {
                return Err(Error::Invalid("--layers must be at least 1".into()));
            }
            shape.llm.num_hidden_layers = l;
        }
        Ok(shape)
    }

    /// A model directory's LLaMA with the tower LLaVA-1.5 uses (CLIP ViT-L/14-336), for the
    /// PyTorch side of `bench --model`: its own tower config where the model holds one
    /// (llava-hf), else the 336-px CLIP-L that `mm_vision_tower` names.
    pub fn of_model(config: &vocollama_model::ModelConfig) -> Result<Self> {
        let slice = Self::named("slice7b", None)?;
        let vision = match &config.vision {
            Some(v) => v.clone(),
            None => {
                let tower = config.mm.as_ref().and_then(|m| m.vision_tower.clone()).unwrap_or_default();
                if !tower.contains("clip-vit-large-patch14-336") {
                    return Err(Error::Invalid(format!(
                        "--torch with --model: the PyTorch side builds CLIP ViT-L/14-336, but the model's tower is `{tower}`"
                    )));
                }
                slice.vision
            }
        };
        Ok(Self { name: "the model directory's".into(), vision, llm: config.llm.clone() })
    }

    /// Image tokens after the tower, as `LlavaModel::random` builds the model (LLaVA-1.5's choices).
    pub fn image_tokens(&self) -> usize {
        MultimodalConfig::llava15(self.vision.hidden_size).image_tokens(&self.vision)
    }

    /// One line: what this shape is.
    pub fn describe(&self) -> String {
        let (v, l) = (&self.vision, &self.llm);
        format!(
            "`{}`: CLIP {} px / {} px patches ({} image tokens), {} layers × {} (FFN {}); \
             LLaMA {} layers × {} (FFN {}, {} heads, {} KV heads), vocabulary {}",
            self.name,
            v.image_size,
            v.patch_size,
            self.image_tokens(),
            v.num_hidden_layers,
            v.hidden_size,
            v.intermediate_size,
            l.num_hidden_layers,
            l.hidden_size,
            l.intermediate_size,
            l.num_attention_heads,
            l.num_key_value_heads,
            l.vocab_size
        )
    }
}

fn llama(hidden: usize, ffn: usize, layers: usize, heads: usize, kv_heads: usize, context: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: VOCAB,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim: hidden / heads,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        max_position_embeddings: context,
        tie_word_embeddings: false,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
    }
}
