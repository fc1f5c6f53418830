//! Linear layers as one 2-D matrix product over every row, whatever the
//! weight holds: f32, half precision, or quantized blocks. (Burn's batched
//! form reshapes the weight, and a quantized weight held as a transposed view
//! would be dequantized and quantized again by that reshape on every call.)
//! On the CPU backend, quantized and float weights go through
//! `vocollama_kernels::linear`.

use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

/// A `d_in → d_out` layer whose weights are loaded next (zeros, never materialised before).
pub fn zeros(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out).with_bias(bias).with_initializer(Initializer::Zeros).init(device)
}

/// `x · W + b` over `x: [.., d_in]`.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let dims = x.dims();
    let weight = layer.weight.val();
    let [d_in, d_out] = weight.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut out = dims;
    out[D - 1] = d_out;
    let x = x.reshape([rows, d_in]);
    let y = match vocollama_kernels::linear::takes(&x.device(), weight.dtype()) {
        // The CPU's quantized and float weights (`vocollama_kernels::linear`).
        true => vocollama_kernels::linear::matmul(x, weight).expect("taken on this device"),
        false => x.matmul(weight),
    }
    .reshape(out);
    match &layer.bias {
        Some(b) => y + b.val().unsqueeze(),
        None => y,
    }
}
