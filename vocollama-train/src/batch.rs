//! Records → token ids with answer-only labels, and a left-padded batch
//! through the model with the training attention layout, to the loss.

use std::path::Path;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use vocollama_model::model::llava::expand_ids;
use vocollama_model::text::{Template, Tokenizer, prompt_ids};
use vocollama_model::voco::{AttentionLayout, VocoSpan};
use vocollama_model::{Error, IMAGE_TOKEN_INDEX, LlavaModel, Pixels, Result};

use crate::data::Record;

/// Labels of positions the loss ignores (transformers' `IGNORE_INDEX`).
pub const IGNORE: i64 = -100;

/// Which attention the training forward uses (`docs/design.md` §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum TrainLayout {
    /// Text after the VoCo tokens sees only them: VoCo-LLaMA.
    Voco,
    /// Plain causal attention over the same prompt: the paper's upper bound
    /// (and, evaluated with the VoCo restriction, its lower bound).
    Causal,
}

impl TrainLayout {
    pub fn name(self) -> &'static str {
        match self {
            Self::Voco => "voco",
            Self::Causal => "causal",
        }
    }
}

/// How the labelled tokens of a batch weigh in its loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LossWeight {
    /// Every answer token alike, as LLaVA and VoCo-LLaMA train: a long answer
    /// (a caption) outweighs a one-word one by its length.
    #[default]
    Token,
    /// Every answer alike: the mean over answers of each answer's mean token
    /// loss, so that one-word answers are not drowned by long ones.
    Answer,
}

impl LossWeight {
    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Answer => "answer",
        }
    }
}

/// One record as the model sees it.
#[derive(Debug, Clone)]
pub struct Example {
    /// Prompt and answers, `IMAGE_TOKEN_INDEX` where the image goes.
    pub ids: Vec<i64>,
    /// One label per position of the expanded sequence (image tokens included):
    /// the token itself inside answers and their `</s>`, `IGNORE` elsewhere.
    pub labels: Vec<i64>,
}

/// Tokenize `record` with `template`; only the assistant's answers (with the
/// `</s>` closing each) are labelled, as LLaVA's `preprocess_v1` does.
pub fn encode_example(
    record: &Record,
    template: Template,
    tokenizer: &Tokenizer,
    image_tokens: usize,
) -> Result<Example> {
    let questions: Vec<String> = (0..record.turns.len()).map(|t| record.question(t)).collect();
    let turns: Vec<(&str, Option<&str>)> =
        questions.iter().zip(&record.turns).map(|(q, (_, a))| (q.as_str(), Some(a.as_str()))).collect();
    // The record's words are text: a `<voco>` or `</s>` in them is not a token.
    let ids = prompt_ids(&template.prompt_parts(&turns), tokenizer)?;
    let mut labelled = vec![false; ids.len()];
    for t in 0..turns.len() {
        let mut open = turns[..=t].to_vec();
        open[t].1 = None;
        let before = prompt_ids(&template.prompt_parts(&open), tokenizer)?;
        let through = prompt_ids(&template.prompt_parts(&turns[..=t]), tokenizer)?;
        if !ids.starts_with(&before) || !ids.starts_with(&through) || through.len() <= before.len() {
            return Err(Error::Invalid(format!(
                "record {}: turn {t}'s answer does not tokenize on its own (the tokenizer joins it to the prompt)",
                record.id
            )));
        }
        labelled[before.len()..through.len()].iter_mut().for_each(|l| *l = true);
    }
    let labels = ids
        .iter()
        .zip(&labelled)
        .flat_map(|(&id, &l)| {
            let n = if id == IMAGE_TOKEN_INDEX { image_tokens } else { 1 };
            std::iter::repeat_n(if l { id } else { IGNORE }, n)
        })
        .collect();
    Ok(Example { ids, labels })
}

/// A batch: examples and the tower's selected features of each one's image
/// (`[1, patches, mm_hidden]`; `None` for text-only records).
pub struct Batch<'a> {
    pub examples: Vec<&'a Example>,
    pub features: Vec<Option<Tensor<3>>>,
}

impl<'a> Batch<'a> {
    /// A batch whose images go through the tower now (training computes them
    /// once instead, while the tower is frozen: [`crate::trainer`]).
    pub fn from_pixels(model: &LlavaModel, examples: Vec<&'a Example>, pixels: &[Option<Pixels>]) -> Result<Self> {
        Ok(Self { examples, features: frozen_tower_features(model, pixels)? })
    }
}

/// The tower's features `[1, patches, mm_hidden]` of each image, all images
/// through the tower as one batch; `None` stays `None`. Detached: the tower is
/// frozen in training, so its features are inputs, not part of the graph.
pub fn frozen_tower_features(model: &LlavaModel, pixels: &[Option<Pixels>]) -> Result<Vec<Option<Tensor<3>>>> {
    let present: Vec<Pixels> = pixels.iter().flatten().cloned().collect();
    if present.is_empty() {
        return Ok(vec![None; pixels.len()]);
    }
    let all = model.tower_features(&present)?.detach();
    let [_, p, d] = all.dims();
    let mut next = 0;
    Ok(pixels
        .iter()
        .map(|px| {
            px.as_ref().map(|_| {
                next += 1;
                all.clone().slice([next - 1..next, 0..p, 0..d])
            })
        })
        .collect())
}

/// Cross-entropy over the labelled positions of a batch, run left-padded under
/// `layout` (VoCo spans located by `voco_id` per sample), averaged as `weight`
/// says; the number of labelled tokens comes with it.
pub fn batch_loss(
    model: &LlavaModel,
    batch: &Batch,
    layout: TrainLayout,
    weight: LossWeight,
    voco_id: i64,
) -> Result<(Tensor<1>, usize)> {
    let device = &model.device;
    let with_image: Vec<Tensor<3>> = batch.features.iter().flatten().cloned().collect();
    let images = if with_image.is_empty() { None } else { Some(model.project_features(Tensor::cat(with_image, 0))?) };
    let per_image = model.image_tokens();
    let expanded: Vec<Vec<i64>> = batch.examples.iter().map(|e| expand_ids(&e.ids, per_image)).collect();
    let len = expanded.iter().map(Vec::len).max().unwrap_or(0);
    let hidden = model.config.llm.hidden_size;
    let (mut rows, mut pads, mut spans, mut positions, mut labels) = (vec![], vec![], vec![], vec![], vec![]);
    let mut next_image = 0;
    for (b, e) in batch.examples.iter().enumerate() {
        let imgs: Vec<Tensor<3>> = match (&batch.features[b], &images) {
            (Some(_), Some(all)) => {
                let [_, p, d] = all.dims();
                next_image += 1;
                vec![all.clone().slice([next_image - 1..next_image, 0..p, 0..d])]
            }
            _ => vec![],
        };
        let x = model.embed_with_images(&e.ids, &imgs)?;
        let l = expanded[b].len();
        let pad = len - l;
        rows.push(if pad > 0 { Tensor::cat(vec![Tensor::zeros([1, pad, hidden], device), x], 1) } else { x });
        pads.push(pad);
        spans.push(match layout {
            TrainLayout::Voco => {
                VocoSpan::find(&expanded[b], voco_id).map(|s| VocoSpan { first: s.first + pad, last: s.last + pad })
            }
            TrainLayout::Causal => None,
        });
        positions.extend((0..len).map(|i| i.saturating_sub(pad) as i64));
        labels.extend(std::iter::repeat_n(IGNORE, pad).chain(e.labels.iter().copied()));
    }
    let bsz = rows.len();
    let x = Tensor::cat(rows, 0);
    let positions = Tensor::<2, Int>::from_data(TensorData::new(positions, [bsz, len]), device);
    let layout = AttentionLayout::causal().with_left_padding(pads).with_voco(spans);
    let h = model.llm.forward(x, positions, &layout, &mut model.llm.new_cache());
    // Position i predicts the label at i + 1; only the labelled positions go
    // through `lm_head` (a vocabulary-wide row for every prompt token is most
    // of the work otherwise).
    let targets: Vec<i64> = (0..bsz).flat_map(|b| labels[b * len + 1..(b + 1) * len].to_vec()).collect();
    let rows: Vec<i64> = (0..targets.len()).filter(|&i| targets[i] != IGNORE).map(|i| i as i64).collect();
    let count = rows.len();
    if count == 0 {
        return Err(Error::Invalid("a batch without any answer token to learn".into()));
    }
    let h = h.slice([0..bsz, 0..len - 1, 0..hidden]).reshape([bsz * (len - 1), hidden]);
    let h = h.select(0, Tensor::<1, Int>::from_data(TensorData::new(rows.clone(), [count]), device));
    let logp = log_softmax(model.llm.logits(h.unsqueeze::<3>()), 2);
    let index: Vec<i64> = rows.iter().map(|&i| targets[i as usize]).collect();
    let index = Tensor::<3, Int>::from_data(TensorData::new(index, [1, count, 1]), device);
    let logp = logp.gather(2, index).reshape([count]);
    let loss = match weight {
        LossWeight::Token => logp.sum().neg() / count as f32,
        LossWeight::Answer => {
            let (weights, answers) = answer_weights(&rows, len - 1);
            let weights = Tensor::<1>::from_data(TensorData::new(weights, [count]), device);
            (logp * weights).sum().neg() / answers as f32
        }
    };
    Ok((loss, count))
}

/// For labelled target rows (ascending indices into samples of `per_sample`
/// targets each): 1 / the length of the answer each belongs to (an answer is a
/// run of consecutive labelled targets inside one sample), and the number of answers.
fn answer_weights(rows: &[i64], per_sample: usize) -> (Vec<f32>, usize) {
    let mut runs: Vec<(usize, usize)> = vec![];
    for (k, &r) in rows.iter().enumerate() {
        let r = r as usize;
        let joins = k > 0 && {
            let prev = rows[k - 1] as usize;
            prev + 1 == r && prev / per_sample == r / per_sample
        };
        match runs.last_mut() {
            Some((_, n)) if joins => *n += 1,
            _ => runs.push((k, 1)),
        }
    }
    let mut weights = vec![0f32; rows.len()];
    for &(first, n) in &runs {
        weights[first..first + n].iter_mut().for_each(|w| *w = 1.0 / n as f32);
    }
    (weights, runs.len())
}

#[cfg(test)]
mod tests {
    use super::answer_weights;

    #[test]
    fn answers_are_runs_of_labels_within_a_sample() {
        // Sample 0 (targets 0..5): an answer of two at 1, 2 and one of one at 4; sample 1 (5..10):
        // 5 follows 4 but starts a new sample, then 6, 7 with it: one answer of three.
        let (w, n) = answer_weights(&[1, 2, 4, 5, 6, 7], 5);
        assert_eq!(n, 3);
        assert_eq!(w, vec![0.5, 0.5, 1.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]);
    }
}

/// Pixels for a record's image, resolved against `root` (the data file's directory).
pub fn record_pixels(model: &LlavaModel, record: &Record, root: &Path) -> Result<Option<Pixels>> {
    record.image.as_ref().map(|p| model.load_image(&root.join(p))).transpose()
}
