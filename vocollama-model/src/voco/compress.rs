//! Stage 1 (`docs/design.md` §6): images compressed into VoCo caches. The
//! stage-1 prompt `[BOS, image, ▁\n, <voco>*N]` runs causally once, and per
//! layer the keys and values of its N VoCo positions are gathered on the
//! device (the handoff) into the cache. One entry point serves one image and
//! a batch of video frames alike: prompts that differ only in their image.

use std::time::Duration;

use burn::tensor::Tensor;
use vocollama_kernels::voco_handoff;

use super::cache::VocoCache;
use super::layout::{AttentionLayout, VocoSpan};
use crate::backend::timed;
use crate::error::{Error, Result};
use crate::media::preprocess::Pixels;
use crate::model::llava::{LlavaModel, expand_ids};
use crate::text::Tokenizer;
use crate::text::template::{Template, voco_id};

/// The ids stage 1 runs: everything up to and including the VoCo tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage1Prompt {
    ids: Vec<i64>,
    voco_id: i64,
    voco_tokens: usize,
}

impl Stage1Prompt {
    /// The stage-1 prompt of VoCo-LLaMA's template with `n` VoCo tokens.
    pub fn new(tokenizer: &Tokenizer, n: usize) -> Result<Self> {
        let (ids, end) = Template::voco(n)?.first_turn_ids(tokenizer, "")?;
        Self::from_ids(ids[..end].to_vec(), voco_id(tokenizer)?)
    }

    /// A stage-1 prompt given as ids, image placeholders included: it must end
    /// in its VoCo tokens (`voco_id`), with nothing between them.
    pub fn from_ids(ids: Vec<i64>, voco_id: i64) -> Result<Self> {
        let span = VocoSpan::find(&ids, voco_id)
            .ok_or_else(|| Error::Invalid("the stage-1 prompt holds no VoCo token (N must be at least 1)".into()))?;
        if span.last + 1 != ids.len() || ids[span.first..].iter().any(|&t| t != voco_id) {
            return Err(Error::Invalid(
                "the stage-1 prompt must end in its VoCo tokens, with nothing between them".into(),
            ));
        }
        Ok(Self { voco_tokens: span.len(), ids, voco_id })
    }

    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// N, the VoCo tokens each image is compressed into.
    pub fn voco_tokens(&self) -> usize {
        self.voco_tokens
    }
}

/// What preparing an image for the questions cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageStats {
    /// CLIP tower + projector.
    pub vision_encode: Duration,
    /// Stage 1 (VoCo) or the uncompressed prefix through the LLM.
    pub compress: Duration,
    /// Key/value bytes the questions attend to for the image, as held on the device.
    pub cache_bytes: usize,
}

/// Stage 1 for `images` — one image, or a batch of video frames: the tower
/// takes them as one batch, then `prompt` runs once per image in one batched
/// forward. One cache per image, each the cache that image alone would give,
/// and what it cost, timed to completion on the device.
pub fn compress(model: &LlavaModel, prompt: &Stage1Prompt, images: &[Pixels]) -> Result<(Vec<VocoCache>, ImageStats)> {
    let (embeds, vision_encode) = timed(&model.device, || model.encode_images(images))?;
    let (caches, compress) = timed(&model.device, || stage1(model, prompt, embeds))?;
    let cache_bytes = caches.iter().map(VocoCache::device_bytes).sum();
    Ok((caches, ImageStats { vision_encode, compress, cache_bytes }))
}

/// The causal forward of `prompt` with `images: [B, P, hidden]`, then the handoff.
fn stage1(model: &LlavaModel, prompt: &Stage1Prompt, images: Tensor<3>) -> Result<Vec<VocoCache>> {
    let expanded = expand_ids(&prompt.ids, model.image_tokens());
    let span = VocoSpan::find(&expanded, prompt.voco_id).expect("a stage-1 prompt holds its VoCo tokens");
    let mut cache = model.llm.new_cache();
    model.forward(&prompt.ids, &[images], 0, &AttentionLayout::causal(), &mut cache)?;
    // The handoff gathers the VoCo rows on the device (a kernel on CubeCL backends).
    let layers: Vec<(Tensor<4>, Tensor<4>)> = (0..model.llm.num_layers())
        .map(|i| {
            let (k, v) = cache.layer(i).expect("every layer cached");
            voco_handoff(k.clone(), v.clone(), span.first, span.len(), 0, model.llm.inv_freq())
        })
        .collect();
    let batch = layers.first().map_or(1, |(k, _)| k.dims()[0]);
    let positions: Vec<usize> = (span.first..=span.last).collect();
    Ok((0..batch)
        .map(|b| VocoCache {
            layers: layers.iter().map(|(k, v)| (k.clone().narrow(0, b, 1), v.clone().narrow(0, b, 1))).collect(),
            positions: positions.clone(),
            frames: 1,
            computed_in: Some(model.precision),
        })
        .collect())
}
