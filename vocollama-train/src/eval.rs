//! Accuracy on question-answer records: greedy answers compared with the
//! reference after normalisation, per question type.

use std::collections::BTreeMap;
use std::path::Path;

use vocollama_model::{Chat, Error, GenerateOptions, LlavaModel, Result, Sampler, SamplingConfig, Tokenizer};

use crate::batch::record_pixels;
use crate::data::{Record, normalize_answer};

/// How the image reaches the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum EvalMode {
    /// Text sees only the N VoCo tokens (two stages: compress, then answer).
    Voco,
    /// Text sees the image tokens too (causal attention over the same prompt).
    None,
    /// The VoCo restriction on a model trained causally: the paper's lower bound.
    Lower,
}

impl EvalMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Voco => "voco",
            Self::None => "none",
            Self::Lower => "lower",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub id: String,
    pub kind: String,
    pub question: String,
    pub answer: String,
    pub predicted: String,
    pub correct: bool,
}

#[derive(Debug, Clone, Default)]
pub struct EvalReport {
    pub predictions: Vec<Prediction>,
}

impl EvalReport {
    /// (correct, total) per question type, and over all.
    pub fn by_kind(&self) -> (BTreeMap<String, (usize, usize)>, (usize, usize)) {
        let mut m: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for p in &self.predictions {
            let e = m.entry(p.kind.clone()).or_default();
            e.0 += usize::from(p.correct);
            e.1 += 1;
        }
        let all = self.predictions.iter().fold((0, 0), |(c, t), p| (c + usize::from(p.correct), t + 1));
        (m, all)
    }

    pub fn accuracy(&self) -> f64 {
        let (_, (c, t)) = self.by_kind();
        if t == 0 { 0.0 } else { c as f64 / t as f64 }
    }
}

/// Answer the first question of every record greedily (`max_new_tokens` at
/// most) with `n` VoCo tokens under `mode`; `on_record` hears each prediction.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &LlavaModel,
    tokenizer: &Tokenizer,
    records: &[Record],
    root: &Path,
    mode: EvalMode,
    n: usize,
    max_new_tokens: usize,
    on_record: &mut dyn FnMut(&Prediction),
) -> Result<EvalReport> {
    let options = GenerateOptions::new(tokenizer, model, SamplingConfig::default(), max_new_tokens);
    let mut report = EvalReport::default();
    for r in records {
        let pixels = record_pixels(model, r, root)?
            .ok_or_else(|| Error::Invalid(format!("record {}: evaluation needs an image", r.id)))?;
        let mut chat = match mode {
            EvalMode::Voco | EvalMode::Lower => Chat::compress(model, tokenizer, &pixels, n)?.0,
            EvalMode::None => Chat::causal(model, tokenizer, &pixels, n)?,
        };
        let question = r.question(0);
        let g = chat.ask(&question, &options, &mut Sampler::new(options.sampling.clone()), &mut |_| {})?;
        let answer = r.turns[0].1.clone();
        let correct = normalize_answer(&g.text) == normalize_answer(&answer);
        let p = Prediction {
            id: r.id.clone(),
            kind: r.kind.clone().unwrap_or_else(|| "all".into()),
            question,
            answer,
            predicted: g.text.trim().to_string(),
            correct,
        };
        on_record(&p);
        report.predictions.push(p);
    }
    Ok(report)
}
