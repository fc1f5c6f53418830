//! A conversation in progress over a KV cache: stage 2 starts one from a VoCo
//! cache (`docs/design.md` §6), the uncompressed path from a prompt with every
//! image token, and each turn grows it — nothing of the image is recomputed.

use burn::tensor::Tensor;

use super::kv_cache::KvCache;
use crate::error::{Error, Result};
use crate::model::llava::LlavaModel;
use crate::voco::cache::VocoCache;
use crate::voco::layout::AttentionLayout;

/// A conversation in progress: the KV cache so far and the next position.
/// Stage 2 starts one from a [`VocoCache`]; the uncompressed path from a prompt.
#[derive(Clone)]
pub struct Session<'m> {
    model: &'m LlavaModel,
    cache: KvCache,
    next: usize,
}

impl<'m> Session<'m> {
    /// Stage 2: text continues at the position after the last VoCo token,
    /// attending to `[VoCo cache ; text so far]`.
    pub fn from_voco(model: &'m LlavaModel, voco: &VocoCache) -> Result<Self> {
        let (layers, kv, d) = voco.geometry();
        let c = &model.config.llm;
        if (layers, kv, d) != (c.num_hidden_layers, c.num_key_value_heads, c.head_dim) {
            return Err(Error::Invalid(format!(
                "the VoCo cache has {layers} layers x {kv} heads x {d}, the model {} x {} x {}",
                c.num_hidden_layers, c.num_key_value_heads, c.head_dim
            )));
        }
        // A cache read from a file of another float type converts here, once.
        let dtype = model.precision.dtype;
        let layers = voco.layers.iter().map(|(k, v)| (k.clone().cast(dtype), v.clone().cast(dtype))).collect();
        Ok(Self { model, cache: KvCache::from_layers(layers), next: voco.next_position() })
    }

    /// An empty session (the uncompressed path feeds the whole prompt, image included).
    pub fn empty(model: &'m LlavaModel) -> Self {
        Self { model, cache: model.llm.new_cache(), next: 0 }
    }

    /// The model the session runs.
    pub fn model(&self) -> &'m LlavaModel {
        self.model
    }

    /// The absolute position the next token takes.
    pub fn position(&self) -> usize {
        self.next
    }

    /// Cached key/value positions (VoCo tokens + text, or the whole uncompressed prompt).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The KV cache so far.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Where the conversation stands, to come back to with [`Session::rewind`].
    pub fn mark(&self) -> Mark {
        Mark { cached: self.cache.len(), next: self.next }
    }

    /// Back to `mark`: what was fed since is forgotten, nothing is copied.
    pub fn rewind(&mut self, mark: Mark) {
        self.cache.truncate(mark.cached);
        self.next = mark.next;
    }

    /// Run `ids` (images spliced at placeholders) causally after what is cached;
    /// the hidden states of the new positions.
    pub fn feed(&mut self, ids: &[i64], images: &[Tensor<3>]) -> Result<Tensor<3>> {
        let before = self.cache.len();
        let h = self.model.forward(ids, images, self.next, &AttentionLayout::causal(), &mut self.cache)?;
        self.next += self.cache.len() - before;
        Ok(h)
    }

    /// The KV cache and the next position, for decoding in a [`super::batch::DecodeBatch`].
    pub(crate) fn into_parts(self) -> (KvCache, usize) {
        (self.cache, self.next)
    }

    /// Next-token logits `[vocab]` after feeding `ids`.
    pub fn next_logits(&mut self, ids: &[i64], images: &[Tensor<3>]) -> Result<Vec<f32>> {
        let h = self.feed(ids, images)?;
        Ok(last_logits(self.model, h))
    }
}

/// A point of a [`Session`] to come back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    cached: usize,
    next: usize,
}

/// The logits of the last position of `h: [1, L, hidden]`, on the host.
pub fn last_logits(model: &LlavaModel, h: Tensor<3>) -> Vec<f32> {
    let [b, l, d] = h.dims();
    let logits = model.llm.logits(h.slice([0..b, l - 1..l, 0..d]));
    logits.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 logits")
}
