//! A quantized linear weight held for the CPU's loops once, after loading
//! ([`super::Packed`]), so that a layer call neither clones it nor reads more
//! bytes than the values need. Burn gives a module's weight only by value, and
//! flex's quantized tensor owns its block scales as a `Vec`: each call copied
//! them (an eighth of an 8-bit weight's bytes). And flex holds a 4-bit value in
//! a byte; here two share one, as GGML's Q4_0 holds them, so decoding reads
//! half the bytes.
//!
//! Each output's values (the loader's k-contiguous columns) are one run, as
//! unsigned bytes `q + 128` (q8), or nibbles `q + 8` (q4: per pair of blocks of
//! 32 inputs 32 bytes, input `j` of the pair in byte `j % 32`, the low nibble
//! for `j < 32`), padded to whole pairs of blocks; its block scales are one run
//! beside them (`[d_out, d_in / 32]`). Unsigned weights meet the rows' signed
//! bytes in `vpdpbusd` directly (see `int8`).

use burn::backend::TensorMetadata;
use burn::backend::quantization::{QuantScheme, QuantValue};
use burn::tensor::{DType, TensorData};
use burn_flex::{FlexQTensor, FlexTensor};
use rayon::prelude::*;

use super::int8;
use super::quantized::{Weight, float_tensor, rows8, unpacked_rows, view};

#[derive(Debug)]
pub struct PackedWeight {
    values: Vec<u8>,
    scales: Vec<f32>,
    q4: bool,
    scheme: QuantScheme,
    d_in: usize,
    d_out: usize,
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
        let q4 = match scheme.value {
            QuantValue::Q8S | QuantValue::Q8F => false,
            QuantValue::Q4S | QuantValue::Q4F => true,
            _ => return None,
        };
        Some(Self::from_view(&weight, q4, scheme))
    }

    /// The values and scales of a weight the `int8` loops read ([`int8::takes`]); `q4`
    /// only for values in `[-8, 7]`.
    pub(super) fn from_view(weight: &Weight, q4: bool, scheme: QuantScheme) -> Self {
        let (d_in, d_out) = (weight.d_in, weight.d_out);
        let nb = d_in / int8::BLOCK;
        let stride = int8::column_bytes(nb, q4);
        let mut values = vec![0u8; d_out * stride];
        values.par_chunks_mut(stride).enumerate().for_each(|(o, column)| {
            let at = weight.start + o * weight.so;
            let q = &weight.data[at..at + d_in];
            if q4 {
                let nibble = |k: usize| q.get(k).map_or(8, |v| (*v as i16 + 8) as u8 & 0x0F);
                for (p, pair) in column.chunks_exact_mut(32).enumerate() {
                    for (j, byte) in pair.iter_mut().enumerate() {
                        *byte = nibble(p * 64 + j) | nibble(p * 64 + j + 32) << 4;
                    }
                }
            } else {
                for (v, q) in column.iter_mut().zip(q) {
                    *v = (*q as u8) ^ 0x80;
                }
            }
        });
        let mut scales = vec![0f32; d_out * nb];
        for (o, run) in scales.chunks_exact_mut(nb.max(1)).enumerate().take(d_out) {
            for (b, s) in run.iter_mut().enumerate() {
                *s = weight.scale(b * int8::BLOCK, o);
            }
        }
        PackedWeight { values, scales, q4, scheme, d_in, d_out }
    }

    pub(super) fn stream(&self) -> int8::Packed<'_> {
        let nb = self.d_in / int8::BLOCK;
        int8::Packed {
            data: &self.values,
            stride: int8::column_bytes(nb, self.q4),
            scales: &self.scales,
            nb,
            d_out: self.d_out,
            q4: self.q4,
        }
    }

    pub fn dims(&self) -> [usize; 2] {
        [self.d_in, self.d_out]
    }

    /// Bytes held: values and scales.
    pub fn bytes(&self) -> usize {
        self.values.len() + 4 * self.scales.len()
    }

    /// Burn's quantized tensor of these values, as the loader made it: `[out, in]` values
    /// behind the transposed view, block scales in Burn's grid.
    pub fn tensor(&self) -> FlexQTensor {
        let (values, scales) = self.unpacked();
        let t = FlexTensor::from_data(TensorData::new(values, [self.d_out, self.d_in])).transpose(0, 1);
        FlexQTensor::new(t, self.scheme, scales, None)
    }

    /// The values a byte each, `[d_out, d_in]`, and the scales in Burn's grid `[nb, d_out]`.
    fn unpacked(&self) -> (Vec<i8>, Vec<f32>) {
        let (d_in, d_out) = (self.d_in, self.d_out);
        let nb = d_in / int8::BLOCK;
        let stride = int8::column_bytes(nb, self.q4);
        let mut values = vec![0i8; d_out * d_in];
        values.par_chunks_mut(d_in.max(1)).enumerate().for_each(|(o, column)| {
            let bytes = &self.values[o * stride..(o + 1) * stride];
            for (k, v) in column.iter_mut().enumerate() {
                *v = if self.q4 {
                    let (p, j) = (k / 64, k % 64);
                    let byte = bytes[p * 32 + j % 32];
                    (if j < 32 { byte & 0x0F } else { byte >> 4 }) as i8 - 8
                } else {
                    (bytes[k] ^ 0x80) as i8
                };
            }
        });
        let mut grid = vec![0f32; nb * d_out];
        for o in 0..d_out {
            for b in 0..nb {
                grid[b * d_out + o] = self.scales[o * nb + b];
            }
        }
        (values, grid)
    }

    /// `x: [rows, d_in]` · this weight, in `x`'s float type.
    pub fn matmul(&self, x: FlexTensor) -> FlexTensor {
        let (d_in, d_out) = (self.d_in, self.d_out);
        let xs = x.layout().shape().to_vec();
        assert!(xs.len() == 2 && xs[1] == d_in, "quantized matmul: [r, {d_in}] rows, got {xs:?}");
        let (rows, dtype) = (xs[0], x.dtype());
        let rows8 = rows8(&x, d_in);
        if let Some(q) = &rows8
            && rows <= int8::MAX_ROWS
            && let Some(y) = int8::matmul_packed(&self.stream(), q)
        {
            return float_tensor(TensorData::new(y, [rows, d_out]), dtype);
        }
        // Without the integer loop (f32 rows, a prompt, a CPU without VNNI): the values a
        // byte each for this call, then the loops that read flex's bytes.
        let (values, scales) = self.unpacked();
        let weight = Weight {
            data: &values,
            start: 0,
            sk: 1,
            so: d_in,
            d_in,
            d_out,
            scales: &scales,
            bk: int8::BLOCK,
            bo: 1,
            nbo: d_out,
        };
        unpacked_rows(x, rows8, &weight)
    }
}
