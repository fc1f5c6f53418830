//! Models with fresh random weights, from named shapes: what training from
//! scratch starts from, and what the benchmarks measure without files. The
//! tower and LLaMA get HF's initialisation (N(0, 0.02) weights, zero biases,
//! unit norm scales); the projector gets `nn.Linear`'s own, as in LLaVA, which
//! builds `mm_projector` after the language model's weights are initialised.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor, TensorData};

use super::clip::ClipVision;
use super::llama::Llama;
use super::projector::Projector;
use crate::checkpoint::config::{ClipVisionConfig, LlamaConfig, MultimodalConfig, VisionActivation};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// A model shape: the tower's and the language model's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub image_size: usize,
    pub patch_size: usize,
    pub vision_hidden: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub context: usize,
}

pub const PRESETS: [Preset; 2] = [
    // 64 image tokens from a 64 px image; about 1 M language-model parameters.
    // Three tower layers: LLaVA reads the second-to-last, so two of them see
    // (with one, small shapes were told apart in 89 % of quadrants, with two 94 %).
    Preset {
        name: "tiny",
        image_size: 64,
        patch_size: 8,
        vision_hidden: 64,
        vision_layers: 3,
        vision_heads: 4,
        hidden: 128,
        layers: 4,
        heads: 4,
        kv_heads: 2,
        intermediate: 352,
        context: 1024,
    },
    Preset {
        name: "small",
        image_size: 112,
        patch_size: 14,
        vision_hidden: 128,
        vision_layers: 3,
        vision_heads: 4,
        hidden: 256,
        layers: 6,
        heads: 8,
        kv_heads: 4,
        intermediate: 704,
        context: 1024,
    },
];

impl Preset {
    /// The CLIP tower of this shape (QuickGELU, FFN four times as wide, 3 channels).
    pub fn vision_config(&self) -> ClipVisionConfig {
        ClipVisionConfig {
            hidden_size: self.vision_hidden,
            intermediate_size: 4 * self.vision_hidden,
            num_hidden_layers: self.vision_layers,
            num_attention_heads: self.vision_heads,
            num_channels: 3,
            image_size: self.image_size,
            patch_size: self.patch_size,
            hidden_act: VisionActivation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    /// The LLaMA of this shape over a vocabulary of `vocab` ids (RoPE θ 10000,
    /// RMSNorm ε 1e-5, SiLU, an untied head, BOS 1 and EOS 2).
    pub fn llama_config(&self, vocab: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size: vocab,
            hidden_size: self.hidden,
            intermediate_size: self.intermediate,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: self.kv_heads,
            head_dim: self.hidden / self.heads,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: self.context,
            tie_word_embeddings: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        }
    }
}

pub fn preset(name: &str) -> Result<Preset> {
    PRESETS.iter().copied().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        Error::Invalid(format!("unknown model preset `{name}` (expected one of {})", names.join(", ")))
    })
}

/// HF's initialisation: weights N(0, std), biases 0, norm scales 1, norm shifts 0.
struct Randomize {
    rng: SplitMix64,
    std: f64,
    name: String,
}

impl ModuleMapper for Randomize {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.name = name.to_string();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        let shape = value.shape();
        let n = shape.num_elements();
        let data: Vec<f32> = match self.name.as_str() {
            "gamma" => vec![1.0; n],
            "beta" | "bias" => vec![0.0; n],
            _ => (0..n)
                .map(|_| {
                    // Box–Muller.
                    let (u, v) = (self.rng.next_f64().max(1e-300), self.rng.next_f64());
                    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos() * self.std) as f32
                })
                .collect(),
        };
        let t = Tensor::<D>::from_data(TensorData::new(data, shape), &value.device());
        Param::from_mapped_value(id, t, mapper)
    }
}

/// `module` with fresh N(0, `std`) weights drawn from `seed`.
pub fn randomize<M: Module>(module: M, seed: u64, std: f64) -> M {
    module.map(&mut Randomize { rng: SplitMix64::new(seed), std, name: String::new() })
}

/// `nn.Linear`'s initialisation (`kaiming_uniform_(a=√5)` and its bias rule):
/// weights and biases U(−1/√fan_in, 1/√fan_in).
struct LinearDefault {
    rng: SplitMix64,
    /// The last weight's fan-in: a Linear's bias follows its weight.
    fan_in: usize,
}

impl ModuleMapper for LinearDefault {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        let shape = value.shape();
        if D == 2 {
            // Burn stores a Linear's weight as [d_in, d_out].
            self.fan_in = shape[0];
        }
        let bound = 1.0 / (self.fan_in.max(1) as f64).sqrt();
        let data: Vec<f32> =
            (0..shape.num_elements()).map(|_| ((2.0 * self.rng.next_f64() - 1.0) * bound) as f32).collect();
        let t = Tensor::<D>::from_data(TensorData::new(data, shape), &value.device());
        Param::from_mapped_value(id, t, mapper)
    }
}

/// The tower, projector and language model of a shape, drawn from `seed`
/// (one stream per module): N(0, 0.02) weights for the tower and LLaMA,
/// `nn.Linear`'s default for the projector.
pub fn modules(
    vision: &ClipVisionConfig,
    mm: &MultimodalConfig,
    llm: &LlamaConfig,
    seed: u64,
    device: &Device,
) -> Result<(ClipVision, Projector, Llama)> {
    let tower = randomize(ClipVision::init(vision, mm.select_layer, mm.select_feature, device)?, seed ^ 1, 0.02);
    let projector = Projector::init(mm.projector_type, mm.mm_hidden_size, llm.hidden_size, mm.projector_bias, device)
        .map(&mut LinearDefault { rng: SplitMix64::new(seed ^ 3), fan_in: 1 });
    Ok((tower, projector, randomize(Llama::init(llm, device), seed ^ 2, 0.02)))
}
