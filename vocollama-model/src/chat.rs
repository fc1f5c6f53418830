//! A conversation about one image: the image part of the prompt is computed
//! once (stage 1 into a VoCo cache, or the uncompressed prefix with all image
//! tokens), then any number of questions, or turns of one chat, run from it.

use std::time::{Duration, Instant};

use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, Generation, generate};
use crate::llava::{IMAGE_TOKEN_INDEX, LlavaModel};
use crate::pipeline::{Session, expand_ids, last_logits};
use crate::preprocess::Pixels;
use crate::sampling::Sampler;
use crate::text::template::VOCO_TOKEN;
use crate::text::template::next_turn_ids;
use crate::text::{Template, Tokenizer, tokenizer_image_token};
use crate::voco::VocoCache;

/// How the image reaches the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// VoCo-LLaMA: the image is compressed into this many `<voco>` tokens.
    Voco(usize),
    /// Plain LLaVA: every image token stays in the context (`llava_v1` template).
    None,
}

/// What preparing the image cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageStats {
    /// CLIP tower + projector.
    pub vision_encode: Duration,
    /// Stage 1 (VoCo) or the uncompressed prefix through the LLM.
    pub compress: Duration,
    /// Key/value bytes the questions attend to for the image (f32 on the device).
    pub cache_bytes: usize,
}

/// `<voco>`'s id from the tokenizer; its absence means the model is not a VoCo model.
pub fn voco_id(tokenizer: &Tokenizer) -> Result<i64> {
    tokenizer.token_to_id(VOCO_TOKEN).map(i64::from).ok_or_else(|| {
        Error::Invalid(format!(
            "the tokenizer ({}) has no {VOCO_TOKEN} token: not a VoCo-LLaMA model (use --compression none)",
            tokenizer.path.display()
        ))
    })
}

/// Pixels → image embeddings, timed to completion on the device.
pub fn encode_image(model: &LlavaModel, pixels: &Pixels) -> Result<(Tensor<3>, Duration)> {
    encode_images(model, std::slice::from_ref(pixels))
}

/// A batch of images through the tower at once (`[B, P, hidden]`), timed to completion on the device.
pub fn encode_images(model: &LlavaModel, pixels: &[Pixels]) -> Result<(Tensor<3>, Duration)> {
    let start = Instant::now();
    let embeds = model.encode_images(pixels)?;
    sync(model)?;
    Ok((embeds, start.elapsed()))
}

fn sync(model: &LlavaModel) -> Result<()> {
    model.device.sync().map_err(|e| Error::Invalid(format!("the device failed: {e:?}")))
}

/// Stage 1 alone: `image` (its embeddings) compressed into `n` VoCo tokens,
/// timed to completion on the device.
pub fn compress_image(
    model: &LlavaModel,
    tokenizer: &Tokenizer,
    image: Tensor<3>,
    n: usize,
) -> Result<(VocoCache, Duration)> {
    let (mut caches, took) = compress_images(model, tokenizer, image, n)?;
    Ok((caches.remove(0), took))
}

/// Stage 1 for a batch of images (`[B, P, hidden]`, e.g. video frames) in one
/// forward: one cache per image, timed to completion on the device.
pub fn compress_images(
    model: &LlavaModel,
    tokenizer: &Tokenizer,
    images: Tensor<3>,
    n: usize,
) -> Result<(Vec<VocoCache>, Duration)> {
    let (ids, end) = Chat::first_prompt(Chat::voco_template(n)?, tokenizer, "")?;
    let start = Instant::now();
    let caches = model.compress_batch(&ids[..end], &[images], voco_id(tokenizer)?)?;
    sync(model)?;
    Ok((caches, start.elapsed()))
}

pub struct Chat<'m> {
    model: &'m LlavaModel,
    tokenizer: &'m Tokenizer,
    pub template: Template,
    /// The ids the image stage covers (through the last `<voco>`, or through `<image>`).
    prefix: Vec<i64>,
    base: Session<'m>,
    session: Session<'m>,
    /// Answered turns of the conversation in progress.
    turns: usize,
    /// Ids so far, for the repetition penalty.
    context: Vec<i64>,
    pub stats: ImageStats,
}

impl<'m> Chat<'m> {
    /// The ids of the first turn's whole prompt, and where the image stage ends in it.
    pub(crate) fn first_prompt(template: Template, tokenizer: &Tokenizer, question: &str) -> Result<(Vec<i64>, usize)> {
        let ids = tokenizer_image_token(&template.prompt(&[(question, None)]), tokenizer)?;
        let end = match template {
            Template::VocoVicunaV1 { .. } | Template::VocoVideo { .. } => {
                let voco = voco_id(tokenizer)?;
                ids.iter().rposition(|&t| t == voco)
            }
            Template::LlavaV1 => ids.iter().position(|&t| t == IMAGE_TOKEN_INDEX),
        };
        let end = end.ok_or_else(|| Error::Invalid("the prompt lost its image placeholder".into()))?;
        Ok((ids, end + 1))
    }

    fn new(
        model: &'m LlavaModel,
        tokenizer: &'m Tokenizer,
        template: Template,
        prefix: Vec<i64>,
        base: Session<'m>,
        stats: ImageStats,
    ) -> Self {
        Self {
            model,
            tokenizer,
            template,
            context: prefix.clone(),
            prefix,
            session: base.clone(),
            base,
            turns: 0,
            stats,
        }
    }

    fn voco_template(n: usize) -> Result<Template> {
        if n == 0 {
            return Err(Error::Invalid("--voco-tokens must be at least 1".into()));
        }
        Ok(Template::VocoVicunaV1 { voco_tokens: n })
    }

    /// Stage 1: compress `image` (its embeddings) into `n` VoCo tokens.
    pub fn compress(
        model: &'m LlavaModel,
        tokenizer: &'m Tokenizer,
        image: Tensor<3>,
        n: usize,
    ) -> Result<(Self, VocoCache)> {
        let (cache, compress) = compress_image(model, tokenizer, image, n)?;
        let chat = Self::from_cache(model, tokenizer, &cache)?;
        let stats = ImageStats { compress, ..chat.stats };
        Ok((Self { stats, ..chat }, cache))
    }

    /// Stage 2 from a VoCo cache (just compressed, or read from a `.voco`
    /// file): one image, or the joined frames of a video, answered with the
    /// video system prompt after the last frame.
    pub fn from_cache(model: &'m LlavaModel, tokenizer: &'m Tokenizer, cache: &VocoCache) -> Result<Self> {
        let n = cache.tokens_per_frame();
        let template = match cache.frames {
            1 => Self::voco_template(n)?,
            _ => Template::VocoVideo { voco_tokens: n },
        };
        let (ids, end) = Self::first_prompt(template, tokenizer, "")?;
        let prefix = ids[..end].to_vec();
        Self::check_positions(cache, expand_ids(&prefix, model.image_tokens()).len())?;
        let base = Session::from_voco(model, cache)?;
        let stats =
            ImageStats { cache_bytes: cache.payload_bytes(crate::voco::cache::CacheDType::F32), ..Default::default() };
        Ok(Self::new(model, tokenizer, template, prefix, base, stats))
    }

    /// A cache's positions must be the ones this model's stage-1 prompt (`len`
    /// positions) gives its VoCo tokens: every frame there (shared), or frame
    /// t moved t·N further (sequential).
    fn check_positions(cache: &VocoCache, len: usize) -> Result<()> {
        let n = cache.tokens_per_frame();
        let stage1: Vec<usize> = (len - n..len).collect();
        let frames: Vec<&[usize]> = cache.positions.chunks(n).collect();
        let placed_at = |step: usize| {
            frames.iter().enumerate().all(|(t, f)| f.iter().zip(&stage1).all(|(&p, &s)| p == s + t * step))
        };
        if placed_at(0) || placed_at(n) {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "the VoCo cache holds positions {}..={} ({} frame{} of {n}) but this model's stage-1 prompt puts {n} VoCo tokens at {}..={}{}",
            cache.positions[0],
            cache.positions[cache.len() - 1],
            cache.frames,
            if cache.frames == 1 { "" } else { "s" },
            stage1[0],
            stage1[n - 1],
            if cache.frames == 1 { "" } else { ", frame after frame or all frames there" }
        )))
    }

    /// Plain LLaVA (`llava_v1`): the prompt through `<image>` is run once with every image token.
    pub fn uncompressed(model: &'m LlavaModel, tokenizer: &'m Tokenizer, image: Tensor<3>) -> Result<Self> {
        Self::causal_prefix(model, tokenizer, Template::LlavaV1, image)
    }

    /// The VoCo prompt run causally: text sees the image tokens as well as the
    /// VoCo tokens (the paper's upper bound, evaluated as it was trained).
    pub fn causal(model: &'m LlavaModel, tokenizer: &'m Tokenizer, image: Tensor<3>, n: usize) -> Result<Self> {
        Self::causal_prefix(model, tokenizer, Self::voco_template(n)?, image)
    }

    /// `template`'s image part run once, causally, with every image token cached.
    fn causal_prefix(
        model: &'m LlavaModel,
        tokenizer: &'m Tokenizer,
        template: Template,
        image: Tensor<3>,
    ) -> Result<Self> {
        let (ids, end) = Self::first_prompt(template, tokenizer, "")?;
        let prefix = ids[..end].to_vec();
        let mut base = Session::empty(model);
        let start = Instant::now();
        base.feed(&prefix, &[image])?;
        sync(model)?;
        let stats = ImageStats {
            compress: start.elapsed(),
            cache_bytes: base.cached() * model.config.llm.kv_bytes_per_token(4),
            ..Default::default()
        };
        Ok(Self::new(model, tokenizer, template, prefix, base, stats))
    }

    /// Back to right after the image: the next question starts a new conversation.
    pub fn reset(&mut self) {
        self.session = self.base.clone();
        self.context = self.prefix.clone();
        self.turns = 0;
    }

    /// The ids the next turn feeds: the first turn's prompt after the image
    /// stage, or `</s>USER: q ASSISTANT:` after an answer.
    pub fn turn_ids(&self, question: &str) -> Result<Vec<i64>> {
        if self.turns == 0 {
            let (ids, _) = Self::first_prompt(self.template, self.tokenizer, question)?;
            if !ids.starts_with(&self.prefix) {
                return Err(Error::Invalid(
                    "the tokenizer joins the question to the image part of the prompt; the cached image cannot be reused".into(),
                ));
            }
            return Ok(ids[self.prefix.len()..].to_vec());
        }
        next_turn_ids(self.template, question, self.tokenizer)
    }

    /// Answer `question` as the next turn, streaming its text to `on_text`.
    pub fn ask(
        &mut self,
        question: &str,
        options: &GenerateOptions,
        sampler: &mut Sampler,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let ids = self.turn_ids(question)?;
        let g = generate(&mut self.session, &ids, self.tokenizer, options, sampler, &mut self.context, on_text)?;
        self.turns += 1;
        Ok(g)
    }

    /// Next-token logits after `question`'s turn, without generating.
    pub fn next_logits(&mut self, question: &str) -> Result<Vec<f32>> {
        let ids = self.turn_ids(question)?;
        let h = self.session.feed(&ids, &[])?;
        self.context.extend_from_slice(&ids);
        Ok(last_logits(self.model, h))
    }

    /// The positions the image stage occupies (BOS and image included).
    pub fn prefix_ids(&self) -> &[i64] {
        &self.prefix
    }
}
