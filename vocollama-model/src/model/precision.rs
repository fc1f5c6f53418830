//! How a model's weights are held: the float type they and the activations
//! compute in, and whether the linear layers are quantized. Chosen at load
//! time (`docs/design.md` §13): norms, softmax, RoPE tables and the final
//! logits stay in f32 whatever the choice, as transformers does.

use std::fmt;

use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{DType, Device, FloatDType, Tensor};

use crate::error::{Error, Result};

/// The float type asked for (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum WeightDType {
    /// The checkpoint's own where the backend computes it well, else the nearest that it does.
    #[default]
    Auto,
    F32,
    F16,
    Bf16,
}

/// Weights per quantization block (along a linear layer's input dimension).
pub const BLOCK: usize = 32;

/// Quantization of the linear weights (`--quantize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Quantize {
    #[default]
    None,
    /// 8-bit symmetric, one f16 scale per block of 32 weights.
    Q8,
    /// 4-bit symmetric, one f16 scale per block of 32 weights.
    Q4,
}

impl Quantize {
    /// Burn's block quantization scheme: symmetric values, blocks of 32 along
    /// the input dimension (as GGML's Q8_0 / Q4_0 block them), f16 scales,
    /// packed into u32 where the backend packs (CubeCL; flex keeps one byte a value,
    /// and `vocollama_kernels::linear::pack` two 4-bit values a byte after loading).
    pub fn scheme(self) -> Option<QuantScheme> {
        let value = match self {
            Quantize::None => return None,
            Quantize::Q8 => QuantValue::Q8S,
            Quantize::Q4 => QuantValue::Q4S,
        };
        Some(
            QuantScheme::default()
                .with_value(value)
                .with_store(QuantStore::PackedU32(0))
                .per_block([BLOCK as u8], ScaleDtype::F16),
        )
    }

    /// Bytes per quantized weight, scales included: values packed (two 4-bit values a
    /// byte) on every backend, block scales in f16 on CubeCL devices and in f32 on the
    /// CPU backend (`cpu`, Burn's flex holds them so).
    pub fn bytes_per_weight(self, cpu: bool) -> f64 {
        let scale = if cpu { 4.0 / 32.0 } else { 2.0 / 32.0 };
        match self {
            Quantize::None => 0.0,
            Quantize::Q8 => 1.0 + scale,
            Quantize::Q4 => 0.5 + scale,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Quantize::None => "none",
            Quantize::Q8 => "q8",
            Quantize::Q4 => "q4",
        }
    }

    /// The code `.voco` files record (0 none, 1 q8, 2 q4).
    pub fn code(self) -> u8 {
        match self {
            Quantize::None => 0,
            Quantize::Q8 => 1,
            Quantize::Q4 => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        [Quantize::None, Quantize::Q8, Quantize::Q4].into_iter().find(|q| q.code() == code)
    }
}

/// `f` of `x` computed in f32 and rounded back to `x`'s float type, as
/// PyTorch's half-precision kernels compute activations (a no-op cast in f32).
pub fn in_f32<const D: usize>(x: Tensor<D>, f: impl FnOnce(Tensor<D>) -> Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    f(x.cast(FloatDType::F32)).cast(dtype)
}

/// What a loaded model computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    /// Weights (but quantized ones) and activations.
    pub dtype: FloatDType,
    /// The linear weights of the language model and the projector.
    pub quantize: Quantize,
}

impl Precision {
    /// Everything in f32 (training, parity tests).
    pub const F32: Precision = Precision { dtype: FloatDType::F32, quantize: Quantize::None };

    /// Bytes of one weight that is not quantized.
    pub fn float_bytes(&self) -> usize {
        dtype_bytes(self.dtype)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", dtype_name(self.dtype))?;
        if self.quantize != Quantize::None {
            write!(f, ", {} linear weights", self.quantize.name())?;
        }
        Ok(())
    }
}

pub fn dtype_name(dtype: FloatDType) -> &'static str {
    match dtype {
        FloatDType::F64 => "f64",
        FloatDType::F32 | FloatDType::Flex32 => "f32",
        FloatDType::F16 => "f16",
        FloatDType::BF16 => "bf16",
    }
}

pub fn dtype_bytes(dtype: FloatDType) -> usize {
    match dtype {
        FloatDType::F64 => 8,
        FloatDType::F32 | FloatDType::Flex32 => 4,
        FloatDType::F16 | FloatDType::BF16 => 2,
    }
}

/// The float type of a checkpoint's tensors, from the dtype that holds most of its elements.
pub fn float_dtype_of(dtype: DType) -> Option<FloatDType> {
    match dtype {
        DType::F32 => Some(FloatDType::F32),
        DType::F16 => Some(FloatDType::F16),
        DType::BF16 => Some(FloatDType::BF16),
        DType::F64 => Some(FloatDType::F32),
        _ => None,
    }
}

/// The precision to load at, and why: the asked float type, or for `auto`
/// the checkpoint's where the backend computes it well, else the nearest
/// that it does. `on_disk` is the checkpoint's float type; `cpu` says the
/// device is the CPU backend (flex); `autodiff` devices train in f32.
pub fn resolve(
    asked: WeightDType,
    quantize: Quantize,
    on_disk: FloatDType,
    device: &Device,
    cpu: bool,
) -> Result<(Precision, String)> {
    let has = |d: FloatDType| device.supports_dtype(DType::from(d));
    let disk = dtype_name(on_disk);
    let (dtype, why) = match asked {
        WeightDType::F32 => (FloatDType::F32, "asked".to_string()),
        WeightDType::F16 | WeightDType::Bf16 => {
            let d = if asked == WeightDType::F16 { FloatDType::F16 } else { FloatDType::BF16 };
            if !has(d) {
                return Err(Error::Invalid(format!(
                    "--dtype {}: this device has no {} arithmetic (choose f32{})",
                    dtype_name(d),
                    dtype_name(d),
                    if has(FloatDType::F16) { " or f16" } else { "" }
                )));
            }
            (d, "asked".to_string())
        }
        WeightDType::Auto if device.is_autodiff() => (FloatDType::F32, "training computes in f32".to_string()),
        WeightDType::Auto => match on_disk {
            FloatDType::F16 if has(FloatDType::F16) => (FloatDType::F16, format!("auto: {disk} on disk")),
            FloatDType::BF16 if !cpu && has(FloatDType::BF16) => (FloatDType::BF16, format!("auto: {disk} on disk")),
            FloatDType::BF16 if has(FloatDType::F16) => (
                FloatDType::F16,
                format!(
                    "auto: {disk} on disk; {}, so the nearest half precision it computes natively",
                    if cpu {
                        "the CPU backend converts bf16 operands to f32 on every matmul"
                    } else {
                        "this device has no bf16 arithmetic"
                    }
                ),
            ),
            FloatDType::F16 | FloatDType::BF16 => {
                (FloatDType::F32, format!("auto: {disk} on disk; this device has no half-precision arithmetic"))
            }
            _ => (FloatDType::F32, format!("auto: {disk} on disk")),
        },
    };
    if quantize != Quantize::None && device.is_autodiff() {
        return Err(Error::Invalid("--quantize: training needs unquantized weights".into()));
    }
    Ok((Precision { dtype, quantize }, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_checkpoint_where_the_cpu_computes_it_well() {
        let flex = Device::flex();
        let pick = |disk| resolve(WeightDType::Auto, Quantize::None, disk, &flex, true).unwrap();
        assert_eq!(pick(FloatDType::F32).0.dtype, FloatDType::F32);
        assert_eq!(pick(FloatDType::F16).0.dtype, FloatDType::F16);
        let (p, why) = pick(FloatDType::BF16);
        assert_eq!(p.dtype, FloatDType::F16, "{why}");
        assert!(why.contains("bf16 on disk") && why.contains("converts bf16"), "{why}");
        let training = Device::autodiff(flex.clone());
        assert_eq!(
            resolve(WeightDType::Auto, Quantize::None, FloatDType::F16, &training, true).unwrap().0,
            Precision::F32
        );
        assert!(resolve(WeightDType::Auto, Quantize::Q8, FloatDType::F16, &training, true).is_err());
        assert_eq!(Precision { dtype: FloatDType::F16, quantize: Quantize::Q4 }.to_string(), "f16, q4 linear weights");
    }
}
