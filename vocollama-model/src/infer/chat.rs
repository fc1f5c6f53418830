//! A conversation about one image (or one clip): the image part of the
//! prompt is computed once — stage 1 into a VoCo cache, or the uncompressed
//! prefix with every image token — then any number of questions, or the
//! turns of one chat, run from it.

use burn::tensor::Tensor;

use super::generate::{GenerateOptions, Generation, generate};
use super::sampling::Sampler;
use super::session::{Mark, Session, last_logits};
use crate::backend::timed;
use crate::error::{Error, Result};
use crate::media::preprocess::Pixels;
use crate::model::llava::{LlavaModel, expand_ids};
use crate::text::{Template, Tokenizer};
use crate::voco::cache::VocoCache;
use crate::voco::compress::{ImageStats, Stage1Prompt, compress};

/// How the image reaches the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Compression {
    /// VoCo-LLaMA: the image is compressed into N `<voco>` tokens and the text sees only them.
    Voco,
    /// Plain LLaVA: every image token stays in the context (`llava_v1` template).
    None,
}

pub struct Chat<'m> {
    model: &'m LlavaModel,
    tokenizer: &'m Tokenizer,
    pub template: Template,
    /// The ids the image stage covers (through the last `<voco>`, or through `<image>`).
    prefix: Vec<i64>,
    session: Session<'m>,
    /// The session right after the image stage: where every new conversation starts.
    start: Mark,
    /// Answered turns of the conversation in progress.
    turns: usize,
    /// Ids so far, for the repetition penalty.
    context: Vec<i64>,
    pub stats: ImageStats,
}

impl<'m> Chat<'m> {
    fn new(
        model: &'m LlavaModel,
        tokenizer: &'m Tokenizer,
        template: Template,
        prefix: Vec<i64>,
        session: Session<'m>,
        stats: ImageStats,
    ) -> Self {
        Self {
            model,
            tokenizer,
            template,
            context: prefix.clone(),
            prefix,
            start: session.mark(),
            session,
            turns: 0,
            stats,
        }
    }

    /// Stage 1, then stage 2: `pixels` compressed into `n` VoCo tokens; the
    /// chat over the cache, and the cache.
    pub fn compress(
        model: &'m LlavaModel,
        tokenizer: &'m Tokenizer,
        pixels: &Pixels,
        n: usize,
    ) -> Result<(Self, VocoCache)> {
        let prompt = Stage1Prompt::new(tokenizer, n)?;
        let (mut caches, stats) = compress(model, &prompt, std::slice::from_ref(pixels))?;
        let cache = caches.remove(0);
        let chat = Self::from_cache(model, tokenizer, &cache)?;
        Ok((Self { stats, ..chat }, cache))
    }

    /// Stage 2 from a VoCo cache (just compressed, or read from a `.voco`
    /// file): one image, or the joined frames of a video, answered with the
    /// video system prompt after the last frame.
    pub fn from_cache(model: &'m LlavaModel, tokenizer: &'m Tokenizer, cache: &VocoCache) -> Result<Self> {
        let n = cache.tokens_per_frame();
        let template = match cache.frames {
            1 => Template::voco(n)?,
            _ => Template::VocoVideo { voco_tokens: n },
        };
        let (ids, end) = template.first_turn_ids(tokenizer, "")?;
        let prefix = ids[..end].to_vec();
        Self::check_positions(cache, expand_ids(&prefix, model.image_tokens()).len())?;
        let base = Session::from_voco(model, cache)?;
        let stats = ImageStats { cache_bytes: cache.device_bytes(), ..Default::default() };
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
    pub fn uncompressed(model: &'m LlavaModel, tokenizer: &'m Tokenizer, pixels: &Pixels) -> Result<Self> {
        Self::causal_prefix(model, tokenizer, Template::LlavaV1, pixels)
    }

    /// The VoCo prompt run causally: text sees the image tokens as well as the
    /// VoCo tokens (the paper's upper bound, evaluated as it was trained).
    pub fn causal(model: &'m LlavaModel, tokenizer: &'m Tokenizer, pixels: &Pixels, n: usize) -> Result<Self> {
        Self::causal_prefix(model, tokenizer, Template::voco(n)?, pixels)
    }

    /// `template`'s image part run once, causally, with every image token cached.
    fn causal_prefix(
        model: &'m LlavaModel,
        tokenizer: &'m Tokenizer,
        template: Template,
        pixels: &Pixels,
    ) -> Result<Self> {
        let (ids, end) = template.first_turn_ids(tokenizer, "")?;
        let prefix = ids[..end].to_vec();
        let (image, vision_encode) = timed(&model.device, || model.encode_image(pixels))?;
        let mut base = Session::empty(model);
        let ((), compress) = timed(&model.device, || base.feed(&prefix, &[image]).map(drop))?;
        let cache_bytes = base.cached() * model.config.llm.kv_bytes_per_token(model.precision.float_bytes());
        let stats = ImageStats { vision_encode, compress, cache_bytes };
        Ok(Self::new(model, tokenizer, template, prefix, base, stats))
    }

    /// Back to right after the image: the next question starts a new
    /// conversation. The image's part of the KV cache stays where it is.
    pub fn reset(&mut self) {
        self.session.rewind(self.start);
        self.context = self.prefix.clone();
        self.turns = 0;
    }

    /// The ids the next turn feeds: the first turn's prompt after the image
    /// stage, or `</s>USER: q ASSISTANT:` after an answer.
    fn turn_ids(&self, question: &str) -> Result<Vec<i64>> {
        if self.turns > 0 {
            return self.template.next_turn_ids(self.tokenizer, question);
        }
        let (ids, _) = self.template.first_turn_ids(self.tokenizer, question)?;
        if !ids.starts_with(&self.prefix) {
            return Err(Error::Invalid(
                "the tokenizer joins the question to the image part of the prompt; the cached image cannot be reused"
                    .into(),
            ));
        }
        Ok(ids[self.prefix.len()..].to_vec())
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
        let h: Tensor<3> = self.session.feed(&ids, &[])?;
        self.context.extend_from_slice(&ids);
        Ok(last_logits(self.model, h))
    }
}
