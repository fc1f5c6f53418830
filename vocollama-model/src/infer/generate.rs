//! The decode loop: prefill a turn's prompt into a [`Session`], then sample
//! one token at a time until EOS, the token limit or the end of the context,
//! streaming whole characters as they complete.

use std::time::{Duration, Instant};

use super::sampling::{Sampler, SamplingConfig};
use super::session::Session;
use crate::error::Result;
use crate::model::llava::LlavaModel;
use crate::text::{StreamDecoder, Tokenizer};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub sampling: SamplingConfig,
    pub max_new_tokens: usize,
    /// Ids that end the answer (the tokenizer's and the config's EOS).
    pub stop: Vec<u32>,
}

impl GenerateOptions {
    /// Answers of at most `max_new_tokens`, ending at the EOS of the tokenizer
    /// or of the model's config.
    pub fn new(tokenizer: &Tokenizer, model: &LlavaModel, sampling: SamplingConfig, max_new_tokens: usize) -> Self {
        let mut stop: Vec<u32> = tokenizer.eos_id().into_iter().collect();
        stop.extend(model.config.llm.eos_token_id.filter(|id| !stop.contains(id)));
        Self { sampling, max_new_tokens, stop }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    MaxTokens,
    /// The model's context is full: the answer so far is kept.
    ContextFull,
}

impl StopReason {
    /// OpenAI's `finish_reason`: `stop` at EOS, `length` at a limit.
    pub fn finish_reason(self) -> &'static str {
        match self {
            StopReason::Eos => "stop",
            StopReason::MaxTokens | StopReason::ContextFull => "length",
        }
    }
}

/// One answer and what it cost.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids, the stop token excluded.
    pub ids: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    pub prefill_tokens: usize,
    pub prefill: Duration,
    pub decode_tokens: usize,
    pub decode: Duration,
}

/// Feed `prompt` after what `session` holds and generate. `context` holds the
/// ids seen so far (for the repetition penalty) and grows with the prompt and
/// the answer; `on_text` receives the answer's text as it completes.
/// The last generated token is fed too, so the session ends after the answer
/// (the stop token itself is not fed: the next turn's `</s>` supplies it).
pub fn generate(
    session: &mut Session<'_>,
    prompt: &[i64],
    tokenizer: &Tokenizer,
    options: &GenerateOptions,
    sampler: &mut Sampler,
    context: &mut Vec<i64>,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    let start = Instant::now();
    let mut logits = session.next_logits(prompt, &[])?;
    let prefill = start.elapsed();
    context.extend_from_slice(prompt);

    let mut stream = StreamDecoder::new(tokenizer);
    let mut text = String::new();
    let mut emit = |s: Option<String>, text: &mut String| {
        if let Some(s) = s {
            on_text(&s);
            text.push_str(&s);
        }
    };
    let start = Instant::now();
    let mut decode_tokens = 0;
    // Each generated token is fed at the next position: stop where the context ends.
    let room = session.model().config.llm.max_position_embeddings.saturating_sub(session.position());
    let (limit, mut stop) = if room < options.max_new_tokens {
        (room, StopReason::ContextFull)
    } else {
        (options.max_new_tokens, StopReason::MaxTokens)
    };
    for step in 0..limit {
        let id = sampler.sample(&logits, context) as u32;
        if options.stop.contains(&id) {
            stop = StopReason::Eos;
            break;
        }
        context.push(i64::from(id));
        emit(stream.push(id), &mut text);
        decode_tokens += 1;
        if step + 1 == limit {
            // The last one is fed without logits, so the session holds the whole answer.
            session.feed(&[i64::from(id)], &[])?;
        } else {
            logits = session.next_logits(&[i64::from(id)], &[])?;
        }
    }
    emit(stream.finish(), &mut text);
    Ok(Generation {
        ids: stream.ids().to_vec(),
        text,
        stop,
        prefill_tokens: prompt.len(),
        prefill,
        decode_tokens,
        decode: start.elapsed(),
    })
}
