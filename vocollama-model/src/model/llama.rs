//! The LLaMA decoder (HF `LlamaForCausalLM`): RMSNorm, RoPE in HF's
//! rotate-half form, grouped-query attention, SwiGLU, tied or untied head.
//!
//! Every forward takes explicit absolute positions and an attention layout,
//! because VoCo keeps the natural positions of its tokens and restricts
//! which keys text may see.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, RmsNorm, RmsNormConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use vocollama_kernels::rope::apply_rope;
use vocollama_kernels::{PreparedRule, attention};

use super::linear::{Linear, linear, zeros};
use super::precision::in_f32;
use crate::checkpoint::config::LlamaConfig;
use crate::checkpoint::weights::KeyMap;
use crate::infer::kv_cache::KvCache;
use crate::voco::layout::AttentionLayout;

#[derive(Module, Debug)]
pub struct LlamaAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
}

#[derive(Module, Debug)]
pub struct LlamaMlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    pub self_attn: LlamaAttention,
    pub mlp: LlamaMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

/// Mirrors HF's `model.*` plus `lm_head` (absent when tied to `embed_tokens`).
#[derive(Module, Debug)]
pub struct Llama {
    pub embed_tokens: Embedding,
    pub layers: Vec<LlamaDecoderLayer>,
    pub norm: RmsNorm,
    pub lm_head: Option<Linear>,
    #[module(skip)]
    shape: Shape,
}

/// The head geometry and RoPE frequencies every layer shares.
#[derive(Debug, Clone)]
struct Shape {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// HF: 1 / theta^(2i/d) in float32.
    inv_freq: Vec<f32>,
}

impl Llama {
    /// A zero-initialised model of this shape (weights are loaded next).
    pub fn init(c: &LlamaConfig, device: &Device) -> Self {
        let (d, hd) = (c.hidden_size, c.head_dim);
        let norm = || RmsNormConfig::new(d).with_epsilon(c.rms_norm_eps).init(device);
        let layers = (0..c.num_hidden_layers)
            .map(|_| LlamaDecoderLayer {
                self_attn: LlamaAttention {
                    q_proj: zeros(d, c.num_attention_heads * hd, false, device),
                    k_proj: zeros(d, c.num_key_value_heads * hd, false, device),
                    v_proj: zeros(d, c.num_key_value_heads * hd, false, device),
                    o_proj: zeros(c.num_attention_heads * hd, d, false, device),
                },
                mlp: LlamaMlp {
                    gate_proj: zeros(d, c.intermediate_size, false, device),
                    up_proj: zeros(d, c.intermediate_size, false, device),
                    down_proj: zeros(c.intermediate_size, d, false, device),
                },
                input_layernorm: norm(),
                post_attention_layernorm: norm(),
            })
            .collect();
        let inv_freq = (0..hd / 2).map(|i| 1.0 / (c.rope_theta as f32).powf((2 * i) as f32 / hd as f32)).collect();
        Self {
            embed_tokens: EmbeddingConfig::new(c.vocab_size, d).with_initializer(Initializer::Zeros).init(device),
            layers,
            norm: norm(),
            lm_head: (!c.tie_word_embeddings).then(|| zeros(d, c.vocab_size, false, device)),
            shape: Shape { heads: c.num_attention_heads, kv_heads: c.num_key_value_heads, head_dim: hd, inv_freq },
        }
    }

    /// Checkpoint names under `prefix` (`model.` in LLaVA and plain LLaMA,
    /// `language_model.model.` or `model.language_model.` in llava-hf) and the head's.
    pub fn key_map(model_prefix: &str, lm_head_prefix: &str) -> KeyMap {
        KeyMap::new([
            (format!("{lm_head_prefix}lm_head."), "lm_head.".to_string()),
            (model_prefix.to_string(), String::new()),
        ])
    }

    /// Module paths of the linear layers (`layers.{i}.self_attn.q_proj`, …, `lm_head`),
    /// with the layers.
    pub fn linears(&self) -> Vec<(String, &Linear)> {
        let mut out = vec![];
        for (i, l) in self.layers.iter().enumerate() {
            let (a, m) = (&l.self_attn, &l.mlp);
            for (name, layer) in
                [("q_proj", &a.q_proj), ("k_proj", &a.k_proj), ("v_proj", &a.v_proj), ("o_proj", &a.o_proj)]
            {
                out.push((format!("layers.{i}.self_attn.{name}"), layer));
            }
            for (name, layer) in [("gate_proj", &m.gate_proj), ("up_proj", &m.up_proj), ("down_proj", &m.down_proj)] {
                out.push((format!("layers.{i}.mlp.{name}"), layer));
            }
        }
        out.extend(self.lm_head.iter().map(|h| ("lm_head".to_string(), h)));
        out
    }

    /// Quantized weights packed for the CPU's loops ([`Linear::pack`]).
    pub fn pack(&mut self) {
        for l in &mut self.layers {
            let (a, m) = (&mut l.self_attn, &mut l.mlp);
            for layer in [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj] {
                layer.pack();
            }
            for layer in [&mut m.gate_proj, &mut m.up_proj, &mut m.down_proj] {
                layer.pack();
            }
        }
        if let Some(h) = &mut self.lm_head {
            h.pack();
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// RoPE frequencies (`head_dim / 2`), for moving cached keys to other positions.
    pub fn inv_freq(&self) -> &[f32] {
        &self.shape.inv_freq
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Token ids `[b, l]` → embeddings `[b, l, hidden]`.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.embed_tokens.forward(ids)
    }

    /// Run the decoder over `x: [b, l, hidden]` at absolute `positions: [b, l]`,
    /// appending to `cache`; returns the final-normed hidden states.
    pub fn forward(
        &self,
        x: Tensor<3>,
        positions: Tensor<2, Int>,
        layout: &AttentionLayout,
        cache: &mut KvCache,
    ) -> Tensor<3> {
        let [b, l, _] = x.dims();
        // RoPE tables in f32, applied in the model's float type (as transformers does).
        let dtype = x.dtype();
        let (cos, sin) = self.rope(positions);
        let (cos, sin) = (cos.cast(dtype), sin.cast(dtype));
        // One rule for every layer: the fused kernel's integers, or the dense mask built once.
        let rule = layout.key_rule().prepare(&x.device(), b, l, cache.len() + l, self.shape.head_dim);
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&layer.input_layernorm, x.clone());
            let h = layer.self_attn.forward(h, &self.shape, &cos, &sin, &rule, cache, i);
            x = x + h;
            let h = rms_norm(&layer.post_attention_layernorm, x.clone());
            x = x + layer.mlp.forward(h);
        }
        cache.advance(l);
        rms_norm(&self.norm, x)
    }

    /// Hidden states `[b, l, hidden]` → logits `[b, l, vocab]`, in f32 whatever the model computes in.
    pub fn logits(&self, h: Tensor<3>) -> Tensor<3> {
        let logits = match &self.lm_head {
            Some(head) => linear(head, h),
            None => {
                let [b, l, d] = h.dims();
                let w = self.embed_tokens.weight.val(); // [vocab, hidden]
                let vocab = w.dims()[0];
                h.reshape([b * l, d]).matmul(w.transpose()).reshape([b, l, vocab])
            }
        };
        logits.cast(FloatDType::F32)
    }

    /// HF's rotary tables for `positions: [b, l]`: cos and sin `[b, 1, l, head_dim]`.
    fn rope(&self, positions: Tensor<2, Int>) -> (Tensor<4>, Tensor<4>) {
        let [b, l] = positions.dims();
        let half = self.shape.inv_freq.len();
        let device = positions.device();
        let inv =
            Tensor::<1>::from_data(TensorData::new(self.shape.inv_freq.clone(), [half]), &device).reshape([1, 1, half]);
        let freqs = positions.float().reshape([b, l, 1]) * inv; // [b, l, d/2]
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1);
        (emb.clone().cos(), emb.sin())
    }
}

/// HF's `LlamaRMSNorm`: the root mean square in f32, the normalised values
/// back in the input's float type, then the weight.
fn rms_norm(norm: &RmsNorm, x: Tensor<3>) -> Tensor<3> {
    let dtype = x.dtype();
    let x = x.cast(FloatDType::F32);
    let rms = (x.clone().square().mean_dim(2) + norm.epsilon).sqrt();
    (x / rms).cast(dtype) * norm.gamma.val().unsqueeze()
}

impl LlamaAttention {
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: Tensor<3>,
        s: &Shape,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        rule: &PreparedRule,
        cache: &mut KvCache,
        layer: usize,
    ) -> Tensor<3> {
        let [b, l, _] = x.dims();
        let split = |t: Tensor<3>, heads: usize| t.reshape([b, l, heads, s.head_dim]).swap_dims(1, 2);
        let q = apply_rope(split(linear(&self.q_proj, x.clone()), s.heads), cos.clone(), sin.clone());
        let k = apply_rope(split(linear(&self.k_proj, x.clone()), s.kv_heads), cos.clone(), sin.clone());
        let v = split(linear(&self.v_proj, x), s.kv_heads);
        let (k, v) = cache.write(layer, k, v);
        let o = attention(q, k, v, rule);
        linear(&self.o_proj, o.swap_dims(1, 2).reshape([b, l, s.heads * s.head_dim]))
    }
}

impl LlamaMlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = in_f32(linear(&self.gate_proj, x.clone()), silu);
        linear(&self.down_proj, gate * linear(&self.up_proj, x))
    }
}
