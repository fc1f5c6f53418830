//! Conversations decoded together: every step feeds one token per
//! conversation through one batched forward, so the weights are read once
//! for all of them (decoding is bound by reading the weights).
//!
//! The conversations' KV caches are joined into one buffer, each sample's
//! positions right-aligned: sample b's cached keys are the last `len_b` rows,
//! the rows before them are left padding that its attention rule hides (a few
//! integers, as for any padded batch, never a mask). Each step writes every
//! sample's new key at the same row, so the buffer grows in place as one
//! conversation's would. Joining or leaving copies the caches once; a step
//! copies nothing.

use burn::tensor::{Int, Tensor, TensorData};

use super::kv_cache::KvCache;
use super::session::Session;
use crate::error::{Error, Result};
use crate::model::llava::LlavaModel;
use crate::voco::layout::AttentionLayout;

pub struct DecodeBatch<'m> {
    model: &'m LlavaModel,
    /// `[samples, kv_heads, rows, head_dim]` per layer; `None` while empty.
    cache: Option<KvCache>,
    /// Per sample: the padding rows before its keys.
    padding: Vec<usize>,
    /// Per sample: the absolute position its next token takes.
    next: Vec<usize>,
}

impl<'m> DecodeBatch<'m> {
    pub fn new(model: &'m LlavaModel) -> Self {
        Self { model, cache: None, padding: Vec::new(), next: Vec::new() }
    }

    /// Conversations in the batch.
    pub fn len(&self) -> usize {
        self.next.len()
    }

    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// Add a conversation (its prompt already fed) as the last sample.
    pub fn join(&mut self, session: Session<'m>) {
        let (cache, next) = session.into_parts();
        let len = cache.len();
        let Some(joined) = self.cache.take() else {
            self.cache = Some(cache);
            self.padding = vec![0];
            self.next = vec![next];
            return;
        };
        let rows = joined.len().max(len);
        let layers = (0..self.model.llm.num_layers())
            .map(|i| {
                let (k, v) = joined.layer(i).expect("every layer cached");
                let (nk, nv) = cache.layer(i).expect("every layer cached");
                let pad = |t: Tensor<4>| padded(t, rows);
                (Tensor::cat(vec![pad(k), pad(nk)], 0), Tensor::cat(vec![pad(v), pad(nv)], 0))
            })
            .collect();
        let grown = rows - joined.len();
        self.padding.iter_mut().for_each(|p| *p += grown);
        self.padding.push(rows - len);
        self.next.push(next);
        self.cache = Some(KvCache::from_layers(layers));
    }

    /// Keep the samples whose `keep` is true, in order; the others leave. The
    /// caches are copied once however many leave; padding every remaining
    /// sample shares is cut away.
    pub fn retain(&mut self, keep: &[bool]) {
        assert_eq!(keep.len(), self.len(), "one flag per sample");
        if keep.iter().all(|&k| k) {
            return;
        }
        let mut flags = keep.iter();
        self.padding.retain(|_| *flags.next().expect("one flag per sample"));
        let mut flags = keep.iter();
        self.next.retain(|_| *flags.next().expect("one flag per sample"));
        let joined = self.cache.take().expect("samples to leave");
        if self.next.is_empty() {
            return;
        }
        let cut = self.padding.iter().copied().min().unwrap_or(0);
        let rows = joined.len() - cut;
        let layers = (0..self.model.llm.num_layers())
            .map(|l| {
                let (k, v) = joined.layer(l).expect("every layer cached");
                let kept = |t: Tensor<4>| {
                    let t = t.narrow(2, cut, rows);
                    let parts = keep.iter().enumerate().filter(|(_, k)| **k).map(|(i, _)| t.clone().narrow(0, i, 1));
                    Tensor::cat(parts.collect(), 0)
                };
                (kept(k), kept(v))
            })
            .collect();
        self.padding.iter_mut().for_each(|p| *p -= cut);
        self.cache = Some(KvCache::from_layers(layers));
    }

    /// Feed `ids[b]` to sample b at its next position, all in one forward:
    /// each sample's next-token logits `[vocab]`.
    pub fn step(&mut self, ids: &[i64]) -> Result<Vec<Vec<f32>>> {
        let b = self.len();
        if ids.len() != b {
            return Err(Error::Invalid(format!("a decode step needs {b} tokens, one per sample, got {}", ids.len())));
        }
        let max = self.model.config.llm.max_position_embeddings;
        if let Some(i) = self.next.iter().position(|&p| p >= max) {
            return Err(Error::Invalid(format!(
                "sample {i} would take position {} but the model's context is {max} tokens",
                self.next[i]
            )));
        }
        let device = &self.model.device;
        let x = self.model.llm.embed(Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [b, 1]), device));
        let positions: Vec<i64> = self.next.iter().map(|&p| p as i64).collect();
        let positions = Tensor::<2, Int>::from_data(TensorData::new(positions, [b, 1]), device);
        let layout = AttentionLayout::causal().with_left_padding(self.padding.clone());
        let cache = self.cache.as_mut().expect("a sample to decode");
        let h = self.model.llm.forward(x, positions, &layout, cache);
        self.next.iter_mut().for_each(|p| *p += 1);
        let logits = self.model.llm.logits(h); // [b, 1, vocab], f32
        let vocab = logits.dims()[2];
        let all = logits.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 logits");
        Ok(all.chunks(vocab).map(<[f32]>::to_vec).collect())
    }
}

/// `t: [b, h, len, d]` with zero rows in front, to `rows` rows.
fn padded(t: Tensor<4>, rows: usize) -> Tensor<4> {
    let [b, h, len, d] = t.dims();
    if len == rows {
        return t;
    }
    let zeros = Tensor::<4>::zeros([b, h, rows - len, d], (&t.device(), t.dtype()));
    Tensor::cat(vec![zeros, t], 2)
}
