//! `vocollama info`: what a model directory holds, from its configs and
//! tensor tables alone (no weights are read).

use std::fmt;
use std::path::{Path, PathBuf};

use super::config::{
    CheckpointLayout, ClipVisionConfig, ImagePooling, LlamaConfig, ModelConfig, MultimodalConfig, ProjectorType,
    SelectFeature, VisionActivation, clip_vision_config_from_dir,
};
use super::tower::{preprocessor_for, tower_dir};
use super::weights::{Checkpoint, Format};
use crate::error::Result;
use crate::media::preprocess::{Preprocessor, Resize};
use crate::model::clip::layers_to_run;

pub struct VisionInfo {
    pub config: ClipVisionConfig,
    /// How the tower's features reach the language model.
    pub mm: MultimodalConfig,
    pub tower_dir: PathBuf,
    pub layers_run: usize,
    pub params_run: usize,
    pub projector_params: usize,
    pub preprocessor: Preprocessor,
}

impl VisionInfo {
    /// Sequence positions one image takes.
    pub fn image_tokens(&self) -> usize {
        self.mm.image_tokens(&self.config)
    }
}

pub struct Info {
    pub config: ModelConfig,
    pub format: Format,
    pub files: usize,
    /// Elements per on-disk dtype, model checkpoint and separate tower together.
    pub dtypes: Vec<(String, usize)>,
    pub llm_params: usize,
    pub vision: Option<VisionInfo>,
}

/// Parameters of the LLaMA decoder, head included.
pub fn llama_params(c: &LlamaConfig) -> usize {
    let (d, hd) = (c.hidden_size, c.head_dim);
    let attn = d * c.num_attention_heads * hd * 2 + d * c.num_key_value_heads * hd * 2;
    let layer = attn + 3 * d * c.intermediate_size + 2 * d;
    let head = if c.tie_word_embeddings { 0 } else { c.vocab_size * d };
    c.vocab_size * d + c.num_hidden_layers * layer + d + head
}

/// Parameters of a CLIP tower that runs `layers` encoder layers (no post-layernorm).
pub fn clip_params(c: &ClipVisionConfig, layers: usize) -> usize {
    let d = c.hidden_size;
    let embed = c.num_channels * c.patch_size * c.patch_size * d + d + (c.num_patches() + 1) * d;
    let layer = 4 * (d * d + d) + d * c.intermediate_size + c.intermediate_size + c.intermediate_size * d + d + 4 * d;
    embed + 2 * d + layers * layer
}

pub fn projector_params(kind: ProjectorType, vision: usize, text: usize, bias: bool) -> usize {
    (0..kind.num_linears()).map(|i| (if i == 0 { vision } else { text }) * text + if bias { text } else { 0 }).sum()
}

/// What `dir` holds; `vision_tower` overrides where its CLIP tower is.
pub fn describe(dir: &Path, vision_tower: Option<&Path>) -> Result<Info> {
    let config = ModelConfig::from_dir(dir)?;
    let checkpoint = Checkpoint::discover(dir)?;
    let mut census = checkpoint.tensors()?.dtype_census();
    let vision = match &config.mm {
        None => None,
        Some(mm) => {
            let (vc, tdir) = match (tower_dir(dir, &config, vision_tower)?, &config.vision) {
                (Some(t), _) => {
                    let c = clip_vision_config_from_dir(&t)?;
                    for (k, n) in Checkpoint::discover(&t)?.tensors()?.dtype_census() {
                        *census.entry(k).or_insert(0) += n;
                    }
                    (c, t)
                }
                (None, Some(v)) => (v.clone(), dir.to_path_buf()),
                (None, None) => unreachable!("tower_dir resolves a tower for every multimodal config without one"),
            };
            let layers_run = layers_to_run(vc.num_hidden_layers, mm.select_layer)?;
            Some(VisionInfo {
                params_run: clip_params(&vc, layers_run),
                projector_params: projector_params(
                    mm.projector_type,
                    mm.mm_hidden_size,
                    config.llm.hidden_size,
                    mm.projector_bias,
                ),
                preprocessor: preprocessor_for(dir, &config, &tdir, &vc)?,
                config: vc,
                mm: mm.clone(),
                tower_dir: tdir,
                layers_run,
            })
        }
    };
    Ok(Info {
        llm_params: llama_params(&config.llm),
        format: checkpoint.format,
        files: checkpoint.files.len(),
        dtypes: census.into_iter().collect(),
        config,
        vision,
    })
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

impl fmt::Display for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let layout = match c.layout {
            CheckpointLayout::LlavaOriginal => "LLaVA original layout",
            CheckpointLayout::LlavaHf => "llava-hf layout",
            CheckpointLayout::Llama => "plain LLaMA",
        };
        let dir = c.path.parent().unwrap_or(Path::new("."));
        writeln!(
            f,
            "model       {} ({}, {layout})",
            dir.display(),
            if c.model_type.is_empty() { "?" } else { &c.model_type }
        )?;
        let fmt_name = match self.format {
            Format::Safetensors => "safetensors",
            Format::Pytorch => "PyTorch .bin",
        };
        let dt: Vec<String> = self.dtypes.iter().map(|(d, n)| format!("{} {}", d.to_lowercase(), human(*n))).collect();
        writeln!(
            f,
            "weights     {fmt_name}, {} file{}; on disk: {}{}",
            self.files,
            if self.files == 1 { "" } else { "s" },
            dt.join(", "),
            c.declared_dtype.as_ref().map(|d| format!(" (config says {d})")).unwrap_or_default()
        )?;
        let l = &c.llm;
        writeln!(
            f,
            "language    LLaMA: {} layers, hidden {}, FFN {}, {} heads ({} key/value, head dim {}), vocab {}, RoPE theta {}, RMSNorm eps {:e}, lm_head {}",
            l.num_hidden_layers,
            l.hidden_size,
            l.intermediate_size,
            l.num_attention_heads,
            l.num_key_value_heads,
            l.head_dim,
            l.vocab_size,
            l.rope_theta,
            l.rms_norm_eps,
            if l.tie_word_embeddings { "tied" } else { "untied" }
        )?;
        writeln!(f, "            {} parameters, context {} tokens", human(self.llm_params), l.max_position_embeddings)?;
        let mut total = self.llm_params;
        if let Some(v) = &self.vision {
            let vc = &v.config;
            writeln!(
                f,
                "vision      CLIP ViT at {0}x{0}, patch {1} ({2} patches), hidden {3}, {4} heads, {5}; {6} of {7} layers run (select layer {8}), features {9}",
                vc.image_size,
                vc.patch_size,
                vc.num_patches(),
                vc.hidden_size,
                vc.num_attention_heads,
                match vc.hidden_act {
                    VisionActivation::QuickGelu => "quick_gelu",
                    VisionActivation::Gelu => "gelu",
                },
                v.layers_run,
                vc.num_hidden_layers,
                v.mm.select_layer,
                match v.mm.select_feature {
                    SelectFeature::Patch => "patch (CLS dropped)",
                    SelectFeature::ClsPatch => "cls_patch",
                }
            )?;
            writeln!(f, "            {} parameters used, tower at {}", human(v.params_run), v.tower_dir.display())?;
            let kind = match v.mm.projector_type {
                ProjectorType::Linear => "linear".to_string(),
                ProjectorType::MlpGelu(n) => format!("mlp{n}x_gelu"),
            };
            writeln!(
                f,
                "projector   {kind} {} -> {}, {} parameters{}",
                vc.hidden_size,
                l.hidden_size,
                human(v.projector_params),
                if v.mm.image_pooling == ImagePooling::Avg { "; the image averaged into one token first" } else { "" }
            )?;
            let p = &v.preprocessor;
            let mut steps = Vec::new();
            if p.pad_to_square {
                steps.push("pad to square (mean colour)".to_string());
            }
            match p.resize {
                Some(Resize::ShortestEdge(s)) => steps.push(format!("resize shortest edge to {s} (bicubic)")),
                Some(Resize::Exact(h, w)) => steps.push(format!("resize to {h}x{w} (bicubic)")),
                None => {}
            }
            if let Some((h, w)) = p.crop {
                steps.push(format!("centre crop {h}x{w}"));
            }
            if p.normalize.is_some() {
                steps.push("normalise".to_string());
            }
            writeln!(f, "image       {}", steps.join(", "))?;
            total += v.params_run + v.projector_params;
        }
        writeln!(f, "total       {} parameters", human(total))?;
        let (f32b, f16b) = (l.kv_bytes_per_token(4), l.kv_bytes_per_token(2));
        write!(f, "kv cache    {} per token in f32, {} in f16", bytes(f32b), bytes(f16b))?;
        if let Some(v) = &self.vision {
            let n = v.image_tokens();
            write!(f, "; one image ({n} tokens): {} in f16", bytes(n * f16b))?;
        }
        if let Some(n) = c.voco_num {
            write!(f, "\nvoco        {n} VoCo tokens per image: {} in f16", bytes(n * f16b))?;
        }
        Ok(())
    }
}
