//! CLIP vision transformer (HF `CLIPVisionTransformer`), run only up to the
//! hidden state LLaVA selects: layers after `mm_vision_select_layer` are
//! neither built nor loaded.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::module::{conv2d as burn_conv2d, layer_norm as burn_layer_norm};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, FloatDType, Int, Tensor};
use vocollama_kernels::{KeyRule, PreparedRule, attention};

use super::linear::{Linear, linear, zeros};
use super::precision::in_f32;
use crate::checkpoint::config::{ClipVisionConfig, SelectFeature, VisionActivation};
use crate::error::{Error, Result};

#[derive(Module, Debug)]
pub struct ClipEmbeddings {
    pub class_embedding: Param<Tensor<1>>,
    pub patch_embedding: Conv2d,
    pub position_embedding: Embedding,
}

#[derive(Module, Debug)]
pub struct ClipAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    #[module(skip)]
    num_heads: usize,
}

#[derive(Module, Debug)]
pub struct ClipMlp {
    pub fc1: Linear,
    pub fc2: Linear,
    #[module(skip)]
    act: VisionActivation,
}

#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    pub self_attn: ClipAttention,
    pub layer_norm1: LayerNorm,
    pub mlp: ClipMlp,
    pub layer_norm2: LayerNorm,
}

#[derive(Module, Debug)]
pub struct ClipEncoder {
    pub layers: Vec<ClipEncoderLayer>,
}

/// Mirrors HF's `vision_model.*` tree, minus `post_layernorm` (LLaVA never uses it).
#[derive(Module, Debug)]
pub struct ClipVision {
    pub embeddings: ClipEmbeddings,
    pub pre_layrnorm: LayerNorm,
    pub encoder: ClipEncoder,
    #[module(skip)]
    select_feature: SelectFeature,
    #[module(skip)]
    image_size: usize,
    #[module(skip)]
    layer_norm_eps: f64,
}

/// How many encoder layers produce `hidden_states[select_layer]` (index 0 is the embeddings).
pub fn layers_to_run(num_layers: usize, select_layer: i64) -> Result<usize> {
    let n = num_layers as i64;
    let idx = if select_layer < 0 { n + 1 + select_layer } else { select_layer };
    if !(0..=n).contains(&idx) {
        return Err(Error::Invalid(format!(
            "mm_vision_select_layer {select_layer} is out of range for a tower with {num_layers} layers (expected -{} ..= {num_layers})",
            n + 1
        )));
    }
    Ok(idx as usize)
}

impl ClipVision {
    /// A tower with the layers needed for `select_layer`, zero-initialised (weights are loaded next).
    pub fn init(
        c: &ClipVisionConfig,
        select_layer: i64,
        select_feature: SelectFeature,
        device: &Device,
    ) -> Result<Self> {
        let run = layers_to_run(c.num_hidden_layers, select_layer)?;
        let d = c.hidden_size;
        let norm = || LayerNormConfig::new(d).with_epsilon(c.layer_norm_eps).init(device);
        let layers = (0..run)
            .map(|_| ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: zeros(d, d, true, device),
                    k_proj: zeros(d, d, true, device),
                    v_proj: zeros(d, d, true, device),
                    out_proj: zeros(d, d, true, device),
                    num_heads: c.num_attention_heads,
                },
                layer_norm1: norm(),
                mlp: ClipMlp {
                    fc1: zeros(d, c.intermediate_size, true, device),
                    fc2: zeros(c.intermediate_size, d, true, device),
                    act: c.hidden_act,
                },
                layer_norm2: norm(),
            })
            .collect();
        Ok(Self {
            embeddings: ClipEmbeddings {
                class_embedding: Initializer::Zeros.init([d], device),
                patch_embedding: Conv2dConfig::new([c.num_channels, d], [c.patch_size, c.patch_size])
                    .with_stride([c.patch_size, c.patch_size])
                    .with_bias(false)
                    .with_initializer(Initializer::Zeros)
                    .init(device),
                position_embedding: EmbeddingConfig::new(c.num_patches() + 1, d)
                    .with_initializer(Initializer::Zeros)
                    .init(device),
            },
            pre_layrnorm: norm(),
            encoder: ClipEncoder { layers },
            select_feature,
            image_size: c.image_size,
            layer_norm_eps: c.layer_norm_eps,
        })
    }

    pub fn select_feature(&self) -> SelectFeature {
        self.select_feature
    }

    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Pixels `[b, 3, H, W]` → selected features `[b, patches (+1 with CLS), hidden]`.
    pub fn forward(&self, pixels: Tensor<4>) -> Tensor<3> {
        let [b, _, h, w] = pixels.dims();
        assert!(
            h == self.image_size && w == self.image_size,
            "pixels are {h}x{w}, the tower expects {0}x{0}",
            self.image_size
        );
        let eps = self.layer_norm_eps;
        let mut x = layer_norm(&self.pre_layrnorm, eps, self.embed(pixels));
        let [_, l, d] = x.dims();
        let head_dim = self.encoder.layers.first().map_or(d, |layer| d / layer.self_attn.num_heads);
        // Every patch sees every patch; the rule is prepared once for all layers.
        let rule = KeyRule::full().prepare(&x.device(), b, l, l, head_dim);
        for layer in &self.encoder.layers {
            x = layer.forward(x, eps, &rule);
        }
        match self.select_feature {
            SelectFeature::Patch => x.slice([0..b, 1..l, 0..d]),
            SelectFeature::ClsPatch => x,
        }
    }

    /// HF's `embeddings`: the class embedding, then one embedding per patch,
    /// plus the position embeddings: `[b, 1 + patches, hidden]`.
    pub fn embed(&self, pixels: Tensor<4>) -> Tensor<3> {
        let b = pixels.dims()[0];
        let e = &self.embeddings;
        let patches = patch_embed(&e.patch_embedding, pixels).flatten::<3>(2, 3).swap_dims(1, 2); // [b, P, d]
        let [_, p, d] = patches.dims();
        let cls = e.class_embedding.val().reshape([1, 1, d]).expand([b, 1, d]);
        let ids = Tensor::<1, Int>::arange(0..(p as i64 + 1), &patches.device()).unsqueeze::<2>();
        Tensor::cat(vec![cls, patches], 1) + e.position_embedding.forward(ids)
    }

    /// The epsilon of every layer norm of the tower.
    pub fn layer_norm_eps(&self) -> f64 {
        self.layer_norm_eps
    }
}

/// The patch embedding (a convolution with stride = kernel) with its sums in
/// f32 whatever the model's float type, as PyTorch's half-precision convolutions
/// accumulate: CubeCL's f16 convolution sums a patch's 588 products in f16
/// (7.9e-3 of the largest output off on wgpu, against 3.9e-4 rounding the f32 result).
fn patch_embed(conv: &Conv2d, pixels: Tensor<4>) -> Tensor<4> {
    let weight = conv.weight.val().cast(FloatDType::F32);
    let bias = conv.bias.as_ref().map(|b| b.val().cast(FloatDType::F32));
    // The tower's patch embedding is unpadded (`Conv2dConfig`'s default, `Valid`).
    let options = ConvOptions::new(conv.stride, [0, 0], conv.dilation, conv.groups);
    in_f32(pixels, |p| burn_conv2d(p, weight, bias, options))
}

/// Layer normalisation computed in f32 whatever the model's float type (as
/// PyTorch's kernels accumulate), the result back in that type.
pub fn layer_norm(norm: &LayerNorm, eps: f64, x: Tensor<3>) -> Tensor<3> {
    let dtype = x.dtype();
    let f32 = |t: Tensor<1>| t.cast(FloatDType::F32);
    let beta = norm.beta.as_ref().map(|b| f32(b.val()));
    burn_layer_norm(x.cast(FloatDType::F32), f32(norm.gamma.val()), beta, eps).cast(dtype)
}

impl ClipEncoderLayer {
    pub fn forward(&self, x: Tensor<3>, eps: f64, rule: &PreparedRule) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(layer_norm(&self.layer_norm1, eps, x), rule);
        x.clone() + self.mlp.forward(layer_norm(&self.layer_norm2, eps, x))
    }
}

impl ClipAttention {
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    pub fn forward(&self, x: Tensor<3>, rule: &PreparedRule) -> Tensor<3> {
        let [b, l, d] = x.dims();
        let heads = |t: Tensor<3>| t.reshape([b, l, self.num_heads, d / self.num_heads]).swap_dims(1, 2);
        let q = heads(linear(&self.q_proj, x.clone()));
        let k = heads(linear(&self.k_proj, x.clone()));
        let v = heads(linear(&self.v_proj, x));
        let o = attention(q, k, v, rule);
        linear(&self.out_proj, o.swap_dims(1, 2).reshape([b, l, d]))
    }
}

impl ClipMlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = linear(&self.fc1, x);
        let h = match self.act {
            // CLIP's quick_gelu: x * sigmoid(1.702 x); Burn has no built-in for it.
            VisionActivation::QuickGelu => in_f32(h, |h| h.clone() * sigmoid(h * 1.702)),
            VisionActivation::Gelu => in_f32(h, gelu),
        };
        linear(&self.fc2, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_layer_counts() {
        assert_eq!(layers_to_run(24, -2).unwrap(), 23);
        assert_eq!(layers_to_run(24, -1).unwrap(), 24);
        assert_eq!(layers_to_run(24, 0).unwrap(), 0);
        assert_eq!(layers_to_run(24, 5).unwrap(), 5);
        assert!(layers_to_run(24, -26).is_err());
        assert!(layers_to_run(24, 25).is_err());
    }
}
