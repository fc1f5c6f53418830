//! A quantized linear weight held for the CPU's loops once, after loading
//! ([`super::Packed`]), so that a layer call neither clones it nor reads more
//! bytes than the values need. Burn gives a module's weight only by value, and
//! flex's quantized tensor owns its block scales as a `Vec`: each call copied
//! them (an eighth of an 8-bit weight's bytes). And flex holds a 4-bit value in
//! a byte; here two share one, as GGML's Q4_0 holds them, so decoding reads
//! half the bytes.
//!
//! - **q8**: flex's own tensor, kept (the values stay where the loader put them).
//! - **q4**: each output's values (the loader's k-contiguous columns) in
//!   nibbles, per pair of blocks of 32 inputs 32 bytes: input `j` of the pair
//!   in byte `j % 32`, the low nibble for `j < 32`, the high one above, each
//!   held as `q + 8` (a missing block of an odd count as 8: a zero). The block
//!   scales stay in Burn's grid, `[d_in / 32, d_out]`.

use burn::backend::TensorMetadata;
use burn::backend::quantization::{QuantScheme, QuantValue};
use burn::tensor::{DType, TensorData};
use burn_flex::{FlexQTensor, FlexTensor};
use rayon::prelude::*;

use super::int8;
use super::quantized::{Weight, float_rows, float_tensor, quantized_matmul, rows8, view};

/// Bytes a column of `nb` blocks takes in nibbles.
fn q4_stride(nb: usize) -> usize {
    nb.div_ceil(2) * 32
}

#[derive(Debug)]
pub enum PackedWeight {
    Q8(FlexQTensor),
    Q4 { nibbles: Vec<u8>, scales: Vec<f32>, scheme: QuantScheme, d_in: usize, d_out: usize },
}

impl PackedWeight {
    /// `w: [d_in, d_out]` as the loader holds it (k-contiguous columns, blocks of 32 along
    /// k); `None` for any other layout or scheme (the caller keeps Burn's tensor).
    pub fn pack(w: FlexQTensor) -> Option<Self> {
        let DType::QFloat(scheme) = w.dtype() else { return None };
        let weight = view(&w)?;
        if !int8::takes(&weight) || weight.start != 0 || weight.so != weight.d_in {
            return None;
        }
        match scheme.value {
            QuantValue::Q8S | QuantValue::Q8F => Some(Self::Q8(w)),
            QuantValue::Q4S | QuantValue::Q4F => {
                let (d_in, d_out) = (weight.d_in, weight.d_out);
                let stride = q4_stride(d_in / int8::BLOCK);
                let mut nibbles = vec![0x88u8; d_out * stride];
                nibbles.par_chunks_mut(stride).enumerate().for_each(|(o, column)| {
                    let values = &weight.data[o * d_in..(o + 1) * d_in];
                    let nibble = |k: usize| values.get(k).map_or(8, |v| (*v as i16 + 8) as u8 & 0x0F);
                    for (p, pair) in column.chunks_exact_mut(32).enumerate() {
                        for (j, byte) in pair.iter_mut().enumerate() {
                            *byte = nibble(p * 64 + j) | nibble(p * 64 + j + 32) << 4;
                        }
                    }
                });
                let scales = weight.scales.to_vec();
                Some(Self::Q4 { nibbles, scales, scheme, d_in, d_out })
            }
            _ => None,
        }
    }

    pub fn dims(&self) -> [usize; 2] {
        match self {
            Self::Q8(w) => {
                let s = w.tensor().layout().shape();
                [s[0], s[1]]
            }
            Self::Q4 { d_in, d_out, .. } => [*d_in, *d_out],
        }
    }

    /// Bytes held: values and scales.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Q8(w) => w.tensor().bytes().len() + 4 * w.scales().len(),
            Self::Q4 { nibbles, scales, .. } => nibbles.len() + 4 * scales.len(),
        }
    }

    /// Burn's quantized tensor of these values, as the loader made it.
    pub fn tensor(&self) -> FlexQTensor {
        match self {
            Self::Q8(w) => w.clone(),
            Self::Q4 { scales, scheme, d_in, d_out, .. } => {
                let values = self.unpacked();
                let t = FlexTensor::from_data(TensorData::new(values, [*d_out, *d_in])).transpose(0, 1);
                FlexQTensor::new(t, *scheme, scales.clone(), None)
            }
        }
    }

    /// The 4-bit values one byte each, `[d_out, d_in]` (each output's inputs contiguous).
    fn unpacked(&self) -> Vec<i8> {
        let Self::Q4 { nibbles, d_in, d_out, .. } = self else { unreachable!("4-bit values") };
        let (d_in, stride) = (*d_in, q4_stride(d_in / int8::BLOCK));
        let mut values = vec![0i8; d_out * d_in];
        values.par_chunks_mut(d_in.max(1)).enumerate().for_each(|(o, column)| {
            let bytes = &nibbles[o * stride..(o + 1) * stride];
            for (k, v) in column.iter_mut().enumerate() {
                let (p, j) = (k / 64, k % 64);
                let byte = bytes[p * 32 + j % 32];
                let nibble = if j < 32 { byte & 0x0F } else { byte >> 4 };
                *v = nibble as i8 - 8;
            }
        });
        values
    }

    /// `x: [rows, d_in]` · this weight, in `x`'s float type.
    pub fn matmul(&self, x: FlexTensor) -> FlexTensor {
        let Self::Q4 { nibbles, scales, d_in, d_out, .. } = self else {
            let Self::Q8(w) = self else { unreachable!() };
            return quantized_matmul(x, w);
        };
        let xs = x.layout().shape().to_vec();
        assert!(xs.len() == 2 && xs[1] == *d_in, "quantized matmul: [r, {d_in}] rows, got {xs:?}");
        let (rows, dtype) = (xs[0], x.dtype());
        let rows8 = rows8(&x, *d_in);
        if let Some(q) = &rows8
            && rows <= int8::MAX_ROWS
            && let Some(y) = int8::matmul_q4(nibbles, q4_stride(d_in / int8::BLOCK), scales, *d_out, q)
        {
            return float_tensor(TensorData::new(y, [rows, *d_out]), dtype);
        }
        // Without the integer loop (f32 rows, a prompt, a CPU without VNNI): one byte a value
        // for this call, then the loops that read flex's bytes.
        let values = self.unpacked();
        let weight = Weight {
            data: &values,
            start: 0,
            sk: 1,
            so: *d_in,
            d_in: *d_in,
            d_out: *d_out,
            scales,
            bk: int8::BLOCK,
            bo: 1,
            nbo: *d_out,
        };
        match rows8 {
            Some(q) if rows <= int8::MAX_ROWS => {
                float_tensor(TensorData::new(int8::matmul(&weight, &q), [rows, *d_out]), dtype)
            }
            rows8 => float_rows(x, rows8, &weight),
        }
    }
}
