//! The memory a model needs at a chosen precision, estimated from its configs
//! before anything is loaded, and the refusal when the machine has less.

use burn::tensor::Device;

use super::precision::{Precision, Quantize, dtype_name};
use crate::checkpoint::config::{ClipVisionConfig, LlamaConfig, MultimodalConfig};
use crate::checkpoint::info::{clip_params, llama_params, projector_params};
use crate::error::{Error, Result};
use crate::model::clip::layers_to_run;

/// Positions of KV cache the working memory allows for.
const KV_POSITIONS: usize = 1024;
/// Activations and the runtime's own buffers, beyond the largest single weight.
const OVERHEAD: u64 = 256 << 20;

/// Bytes a model needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// The weights as held.
    pub weights: u64,
    /// Beyond them: activations, a KV cache of [`KV_POSITIONS`] positions, and
    /// the largest weight once in f32 (a quantized weight's dequantized copy
    /// or a float weight's contiguous copy for a prompt on the CPU backend, a
    /// tensor converted while loading).
    pub working: u64,
}

impl Footprint {
    pub fn total(&self) -> u64 {
        self.weights + self.working
    }
}

/// The footprint of a LLaMA (and a tower with its projector) at `precision` on the
/// CPU backend (`cpu`: f32 block scales, and a 4-bit weight unpacked to a byte a value
/// beside its dequantized copy for a prompt) or a CubeCL device.
pub fn estimate(
    llm: &LlamaConfig,
    vision: Option<(&ClipVisionConfig, &MultimodalConfig)>,
    precision: Precision,
    cpu: bool,
) -> Result<Footprint> {
    let float = precision.float_bytes() as f64;
    let quant = match precision.quantize {
        Quantize::None => float,
        q => q.bytes_per_weight(cpu),
    };
    let (d, hd) = (llm.hidden_size, llm.head_dim);
    // The linear weights of the decoder layers are quantized; embeddings, norms and lm_head are not.
    let per_layer =
        d * llm.num_attention_heads * hd * 2 + d * llm.num_key_value_heads * hd * 2 + 3 * d * llm.intermediate_size;
    let layer_linear = llm.num_hidden_layers * per_layer;
    let mut quantized = layer_linear as f64;
    let mut plain = (llama_params(llm) - layer_linear) as f64;
    let mut largest = (llm.vocab_size * d).max(d * llm.intermediate_size);
    if let Some((v, mm)) = vision {
        let proj = projector_params(mm.projector_type, mm.mm_hidden_size, d, mm.projector_bias);
        quantized += proj as f64;
        plain += clip_params(v, layers_to_run(v.num_hidden_layers, mm.select_layer)?) as f64;
        largest = largest.max(v.hidden_size * v.intermediate_size);
    }
    let weights = (quantized * quant + plain * float) as u64;
    let kv = llm.kv_bytes_per_token(precision.float_bytes()) * KV_POSITIONS;
    let copies = if cpu && precision.quantize == Quantize::Q4 { 5 } else { 4 };
    Ok(Footprint { weights, working: OVERHEAD + kv as u64 + copies * largest as u64 })
}

/// Refuse, in one line naming the sizes, a footprint larger than what
/// `device` can hold or the host has available; `None` figures are not checked.
pub fn check(footprint: &Footprint, precision: Precision, device: Option<u64>, host: Option<u64>) -> Result<()> {
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    let need = footprint.total();
    let short = [("the device holds", device), ("the host has available", host)]
        .into_iter()
        .find_map(|(what, have)| have.filter(|&h| h < need).map(|h| (what, h)));
    let Some((what, have)) = short else { return Ok(()) };
    let hint = match precision.quantize {
        Quantize::None if precision.dtype != burn::tensor::FloatDType::F16 => {
            "; try --dtype f16, or --quantize q8 or q4"
        }
        Quantize::None => "; try --quantize q8 or q4",
        Quantize::Q8 => "; try --quantize q4",
        Quantize::Q4 => "",
    };
    Err(Error::Invalid(format!(
        "the model needs {} at {} ({} of weights, {} to work in) but {what} {}{hint}",
        gib(need),
        if precision.quantize == Quantize::None {
            dtype_name(precision.dtype).to_string()
        } else {
            precision.to_string()
        },
        gib(footprint.weights),
        gib(footprint.working),
        gib(have)
    )))
}

/// What `device` can hold ([`vocollama_kernels::device::memory_capacity`]).
pub fn device_capacity(device: &Device) -> Option<u64> {
    vocollama_kernels::device::memory_capacity(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_7b_model_needs_what_its_weights_say() {
        let llm = LlamaConfig {
            vocab_size: 32001,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 32,
            head_dim: 128,
            rms_norm_eps: 1e-5,
            rope_theta: 1e4,
            max_position_embeddings: 4096,
            tie_word_embeddings: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        };
        let f16 = Precision { dtype: burn::tensor::FloatDType::F16, quantize: Quantize::None };
        let gb = |p, cpu| estimate(&llm, None, p, cpu).unwrap().weights as f64 / 1e9;
        // Vicuna-7B: 6.74 B parameters, 13.5 GB in f16, 27 GB in f32.
        assert!((gb(f16, false) - 13.48).abs() < 0.05, "{}", gb(f16, false));
        assert!((gb(Precision::F32, false) - 26.95).abs() < 0.1, "{}", gb(Precision::F32, false));
        let q4 = Precision { quantize: Quantize::Q4, ..f16 };
        // Q4 at 7B: 3.5 GB of values; f32 scales (the CPU) take 0.4 GB more than f16 ones.
        assert!(gb(q4, false) < 4.5 && gb(q4, true) > gb(q4, false), "{} {}", gb(q4, true), gb(q4, false));
        let need = estimate(&llm, None, Precision::F32, false).unwrap();
        let e = check(&need, Precision::F32, None, Some(23 << 30)).unwrap_err().to_string();
        assert!(e.contains("needs") && e.contains("23.0 GiB") && e.contains("--quantize"), "{e}");
        assert!(!e.contains('\n'));
        assert!(check(&need, Precision::F32, None, Some(40 << 30)).is_ok());
    }
}
