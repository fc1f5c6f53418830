//! `x · w` on flex for a short block of rows (decoding) with `w` in f32, f16 or
//! bf16 held as the loader holds it: PyTorch's `[out, in]` bytes behind the
//! transposed view, so each output's inputs are one contiguous run. The matmul
//! library treats one row like a large product (and flex's bf16 matmul converts
//! both operands to f32 first); here each weight is read once, converted a
//! column at a time in L1, and multiplied in f32.

use super::quantized::{by_columns, float_tensor, rows_f32};
use crate::cpu::Elem;
use burn::tensor::{DType, TensorData, bf16, f16};
use burn_flex::FlexTensor;

/// Whether this path reads `w` (`[d_in, d_out]`): a float type it converts, with each
/// column's inputs contiguous (the loader's view of `[out, in]`). Anything else (an
/// `[in, out]` weight as Burn initialises one, which flex's matmul streams well) goes
/// to flex's matmul.
pub fn reads(w: &FlexTensor) -> bool {
    let layout = w.layout();
    let s = layout.strides();
    matches!(w.dtype(), DType::F32 | DType::F16 | DType::BF16)
        && layout.shape().num_dims() == 2
        && s[0] == 1
        && s[1] >= 0
}

/// `x: [rows, d_in]` · `w: [d_in, d_out]` (see [`reads`]), in `x`'s float type.
pub fn matmul_rows(x: FlexTensor, w: FlexTensor) -> FlexTensor {
    let dtype = x.dtype();
    let rows = x.layout().shape()[0];
    let xf = rows_f32(x);
    let y = match w.dtype() {
        DType::F32 => run::<f32>(&w, &xf, rows),
        DType::F16 => run::<f16>(&w, &xf, rows),
        DType::BF16 => run::<bf16>(&w, &xf, rows),
        other => panic!("linear: unsupported weight type {other:?}"),
    };
    float_tensor(TensorData::new(y, [rows, w.layout().shape()[1]]), dtype)
}

fn run<E: Elem>(w: &FlexTensor, x: &[f32], rows: usize) -> Vec<f32> {
    let layout = w.layout();
    let (d_in, d_out) = (layout.shape()[0], layout.shape()[1]);
    let (start, so) = (layout.start_offset(), layout.strides()[1] as usize);
    let data = w.storage::<E>();
    let dot = super::quantized::dot_kernel();
    by_columns(d_out, rows, |o0, y| {
        let n = y.len() / rows.max(1);
        let mut col = vec![0f32; d_in];
        for c in 0..n {
            let at = start + (o0 + c) * so;
            E::load(&data[at..at + d_in], &mut col);
            for r in 0..rows {
                y[r * n + c] = dot(&x[r * d_in..(r + 1) * d_in], &col);
            }
        }
    })
}
