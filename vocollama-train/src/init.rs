//! New models with fresh random weights, from a named shape: what training
//! from scratch starts from (the miniatures, the embedded demo model), with
//! a random CLIP tower or a given one (trained by [`crate::tower`]); the
//! LLaVA stages keep it frozen, as the paper's.

use std::path::Path;

use burn::tensor::Device;
use serde_json::json;
use vocollama_model::checkpoint::config::{
    CheckpointLayout, ImagePooling, ModelConfig, VisionActivation, clip_vision_config_from_dir,
};
use vocollama_model::media::preprocess::{CLIP_MEAN, CLIP_STD};
use vocollama_model::model::random::{Preset, modules};
use vocollama_model::text::Tokenizer;
use vocollama_model::text::template::voco_id;
use vocollama_model::{Error, Result};

use crate::checkpoint::{TOKENIZER_FILES, copy_files, llava_tensors, tower_tensors, write_json, write_safetensors};
use crate::model_dir::{mark, write_model_dir};

/// Write a new original-layout LLaVA model of shape `p` to `out`: random
/// weights from `seed`, `tokenizer_dir`'s tokenizer (which must hold `<voco>`),
/// its CLIP tower in `vision_tower/` (random, or a copy of `vision_tower`:
/// a trained one). With [`ImagePooling::Avg`] the tower's features are
/// averaged into one token and a `linear` projector maps it (the
/// LLaMA-VID-style baseline). Returns the image tokens per image of the new model.
pub fn init_model(
    out: &Path,
    p: &Preset,
    tokenizer_dir: &Path,
    voco_tokens: usize,
    pooling: ImagePooling,
    vision_tower: Option<&Path>,
    seed: u64,
) -> Result<usize> {
    let tokenizer = Tokenizer::for_model(tokenizer_dir, CheckpointLayout::LlavaOriginal)?;
    voco_id(&tokenizer)?;
    let v = match vision_tower {
        Some(dir) => clip_vision_config_from_dir(dir)?,
        None => p.vision_config(),
    };
    let l = p.llama_config(tokenizer.vocab_size());
    let tower = json!({
        "architectures": ["CLIPVisionModel"],
        "model_type": "clip_vision_model",
        "hidden_size": v.hidden_size,
        "intermediate_size": v.intermediate_size,
        "num_hidden_layers": v.num_hidden_layers,
        "num_attention_heads": v.num_attention_heads,
        "num_channels": v.num_channels,
        "image_size": v.image_size,
        "patch_size": v.patch_size,
        "hidden_act": match v.hidden_act { VisionActivation::QuickGelu => "quick_gelu", VisionActivation::Gelu => "gelu" },
        "layer_norm_eps": v.layer_norm_eps,
    });
    let preprocessor = json!({
        "crop_size": {"height": v.image_size, "width": v.image_size},
        "do_center_crop": true, "do_normalize": true, "do_resize": true, "do_convert_rgb": true,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "resample": 3, "size": {"shortest_edge": v.image_size},
    });
    let avg = pooling == ImagePooling::Avg;
    let mut config = json!({
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "vocab_size": l.vocab_size,
        "hidden_size": l.hidden_size,
        "intermediate_size": l.intermediate_size,
        "num_hidden_layers": l.num_hidden_layers,
        "num_attention_heads": l.num_attention_heads,
        "num_key_value_heads": l.num_key_value_heads,
        "max_position_embeddings": l.max_position_embeddings,
        "rms_norm_eps": l.rms_norm_eps,
        "rope_theta": l.rope_theta,
        "hidden_act": "silu",
        "bos_token_id": tokenizer.bos_id(),
        "eos_token_id": tokenizer.eos_id(),
        "pad_token_id": 0,
        "tie_word_embeddings": l.tie_word_embeddings,
        "torch_dtype": "float32",
        "mm_vision_tower": "vision_tower",
        "mm_hidden_size": v.hidden_size,
        "mm_projector_type": if avg { "linear" } else { "mlp2x_gelu" },
        "mm_image_pooling": if avg { "avg" } else { "none" },
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": false,
        "mm_use_im_patch_token": false,
        "image_aspect_ratio": "pad",
        "voco_num": voco_tokens,
    });
    mark(config.as_object_mut().expect("an object"));
    let device = Device::flex();
    let mut image_tokens = 0;
    write_model_dir(out, |dir| {
        let tdir = dir.join("vision_tower");
        std::fs::create_dir_all(&tdir).map_err(|e| Error::io(&tdir, e))?;
        match vision_tower {
            Some(from) => copy_files(from, &tdir, None)?,
            None => {
                write_json(&tdir.join("config.json"), &tower)?;
                write_json(&tdir.join("preprocessor_config.json"), &preprocessor)?;
            }
        }
        write_json(&dir.join("config.json"), &config)?;
        copy_files(tokenizer_dir, dir, Some(&TOKENIZER_FILES))?;
        // Modules built from the files just written: one source of truth for the shapes.
        let c = ModelConfig::from_dir(dir)?;
        let mm = c.mm.as_ref().expect("a multimodal config");
        let vc = clip_vision_config_from_dir(&tdir)?;
        image_tokens = mm.image_tokens(&vc);
        let (clip, projector, llm) = modules(&vc, mm, &c.llm, seed, &device)?;
        if vision_tower.is_none() {
            write_safetensors(&tdir.join("model.safetensors"), &tower_tensors(&clip))?;
        }
        write_safetensors(&dir.join("model.safetensors"), &llava_tensors(&llm, Some(&projector)))
    })?;
    Ok(image_tokens)
}
