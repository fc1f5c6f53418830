//! Stage 1 (compress an image into a VoCo cache), stage 2 (answer from it),
//! and the uncompressed LLaVA path, all as [`Session`]s over a KV cache that
//! grow one turn at a time: nothing of the image is ever recomputed.

use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::llama::KvCache;
use crate::llava::{IMAGE_TOKEN_INDEX, LlavaModel};
use crate::voco::{AttentionLayout, VocoCache, VocoSpan};
use vocollama_kernels::voco_handoff;

/// `ids` with every image placeholder repeated `per_image` times: one entry per sequence position.
pub fn expand_ids(ids: &[i64], per_image: usize) -> Vec<i64> {
    ids.iter().flat_map(|&t| std::iter::repeat_n(t, if t == IMAGE_TOKEN_INDEX { per_image } else { 1 })).collect()
}

impl LlavaModel {
    /// Sequence positions one image takes.
    pub fn image_tokens(&self) -> usize {
        self.vision.as_ref().map_or(0, |v| match self.avg_pool() {
            true => 1,
            false => {
                v.config.num_patches() + usize::from(v.tower.select_feature() == crate::config::SelectFeature::ClsPatch)
            }
        })
    }

    fn check_context(&self, start: usize, len: usize) -> Result<()> {
        let max = self.config.llm.max_position_embeddings;
        if start + len > max {
            return Err(Error::Invalid(format!(
                "the prompt needs positions up to {} but the model's context is {max} tokens",
                start + len
            )));
        }
        Ok(())
    }

    /// One forward over a whole prompt (images spliced in) under `layout`,
    /// appending to `cache`; the hidden states of every position.
    pub fn forward_prompt(
        &self,
        ids: &[i64],
        images: &[Tensor<3>],
        layout: &AttentionLayout,
        cache: &mut KvCache,
    ) -> Result<Tensor<3>> {
        let start = cache.len();
        self.forward_at(ids, images, start, layout, cache)
    }

    /// The prompt's tokens at absolute positions `start..`, appended to `cache`.
    fn forward_at(
        &self,
        ids: &[i64],
        images: &[Tensor<3>],
        start: usize,
        layout: &AttentionLayout,
        cache: &mut KvCache,
    ) -> Result<Tensor<3>> {
        let x = self.embed_with_images(ids, images)?;
        let len = x.dims()[1];
        self.check_context(start, len)?;
        Ok(self.llm.forward(x, self.positions(start, len), layout, cache))
    }

    /// The masked single pass of `voco-spec.md` §3 over the whole prompt:
    /// the definition the two stages must reproduce. Hidden states of every position.
    pub fn forward_masked(&self, ids: &[i64], images: &[Tensor<3>], voco_id: i64) -> Result<Tensor<3>> {
        let layout = AttentionLayout::for_sequence(&expand_ids(ids, self.image_tokens()), voco_id);
        self.forward_prompt(ids, images, &layout, &mut self.llm.new_cache())
    }

    /// Stage 1: run `ids` (`[BOS, <image>, ▁, \n, <voco>*N]`, ending in its
    /// VoCo tokens) causally and keep, per layer, the keys and values of the
    /// VoCo positions.
    pub fn compress(&self, ids: &[i64], images: &[Tensor<3>], voco_id: i64) -> Result<VocoCache> {
        self.compress_at(ids, images, voco_id, 0)
    }

    /// Stage 1 with the prompt at absolute positions `start..` (for references
    /// of moved caches; `compress` starts at 0).
    pub fn compress_at(&self, ids: &[i64], images: &[Tensor<3>], voco_id: i64, start: usize) -> Result<VocoCache> {
        let mut caches = self.compress_batch_at(ids, images, voco_id, start)?;
        match caches.len() {
            1 => Ok(caches.remove(0)),
            b => Err(Error::Invalid(format!("compress takes one image per placeholder, not a batch of {b}"))),
        }
    }

    /// Stage 1 for a batch of prompts that differ only in their images
    /// (`images[i]`: `[B, P, hidden]`, e.g. B video frames): one forward, one
    /// cache per sample, each the cache that sample alone would give.
    pub fn compress_batch(&self, ids: &[i64], images: &[Tensor<3>], voco_id: i64) -> Result<Vec<VocoCache>> {
        self.compress_batch_at(ids, images, voco_id, 0)
    }

    fn compress_batch_at(
        &self,
        ids: &[i64],
        images: &[Tensor<3>],
        voco_id: i64,
        start: usize,
    ) -> Result<Vec<VocoCache>> {
        let expanded = expand_ids(ids, self.image_tokens());
        let span = VocoSpan::find(&expanded, voco_id)
            .ok_or_else(|| Error::Invalid("the stage-1 prompt holds no VoCo token (N must be at least 1)".into()))?;
        if span.last + 1 != expanded.len() || expanded[span.first..].iter().any(|&t| t != voco_id) {
            return Err(Error::Invalid(
                "the stage-1 prompt must end in its VoCo tokens, with nothing between them".into(),
            ));
        }
        let mut cache = self.llm.new_cache();
        self.forward_at(ids, images, start, &AttentionLayout::causal(), &mut cache)?;
        // The handoff gathers the VoCo rows on the device (a kernel on CubeCL backends).
        let layers: Vec<(Tensor<4>, Tensor<4>)> = (0..self.llm.num_layers())
            .map(|i| {
                let (k, v) = cache.layer(i).expect("every layer cached");
                voco_handoff(k.clone(), v.clone(), span.first, span.len(), 0, self.llm.inv_freq())
            })
            .collect();
        let batch = layers.first().map_or(1, |(k, _)| k.dims()[0]);
        let positions: Vec<usize> = (start + span.first..=start + span.last).collect();
        Ok((0..batch)
            .map(|b| VocoCache {
                layers: layers.iter().map(|(k, v)| (k.clone().narrow(0, b, 1), v.clone().narrow(0, b, 1))).collect(),
                positions: positions.clone(),
                frames: 1,
            })
            .collect())
    }
}

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
        Ok(Self { model, cache: voco.kv_cache(), next: voco.next_position() })
    }

    /// An empty session (the uncompressed path feeds the whole prompt, image included).
    pub fn empty(model: &'m LlavaModel) -> Self {
        Self { model, cache: model.llm.new_cache(), next: 0 }
    }

    /// The absolute position the next token takes.
    pub fn position(&self) -> usize {
        self.next
    }

    /// Cached key/value positions (VoCo tokens + text, or the whole uncompressed prompt).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Run `ids` (images spliced at placeholders) causally after what is cached;
    /// the hidden states of the new positions.
    pub fn feed(&mut self, ids: &[i64], images: &[Tensor<3>]) -> Result<Tensor<3>> {
        let before = self.cache.len();
        let h = self.model.forward_at(ids, images, self.next, &AttentionLayout::causal(), &mut self.cache)?;
        self.next += self.cache.len() - before;
        Ok(h)
    }

    /// Next-token logits `[vocab]` after feeding `ids`.
    pub fn next_logits(&mut self, ids: &[i64], images: &[Tensor<3>]) -> Result<Vec<f32>> {
        let h = self.feed(ids, images)?;
        Ok(last_logits(self.model, h))
    }
}

/// The logits of the last position of `h: [1, L, hidden]`, on the host.
pub fn last_logits(model: &LlavaModel, h: Tensor<3>) -> Vec<f32> {
    let [b, l, d] = h.dims();
    let logits = model.llm.logits(h.slice([0..b, l - 1..l, 0..d]));
    logits.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 logits")
}
