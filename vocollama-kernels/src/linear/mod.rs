//! Linear layers on the CPU backend (flex), as a Burn backend extension: the
//! product `x · w` where the matmul library is not the right tool.
//!
//! - **Quantized weights** (`--quantize q8|q4`, [`quantized`]): Burn's flex
//!   dequantizes the whole weight, one element at a time on one core, before a
//!   float matmul, at every call — seconds per decoded token for a 7B model.
//!   Here a short block of rows (decoding, a few streamed tokens) is multiplied
//!   with the 8-bit values where they lie, each block's products scaled as they
//!   are summed, so a token reads each weight byte once; a long block (prefill)
//!   dequantizes the weight on every core into the activations' float type and
//!   runs the float matmul. [`transpose`] gives the loader's `[in, out]` view of
//!   PyTorch's `[out, in]` bytes without moving them.
//! - **Float weights, short blocks** ([`float`]): through the matmul library
//!   one decoded row reads an f32 weight at about half the memory bandwidth (an
//!   f16 one near it, so one f16 row stays there), two to sixteen rows (streamed
//!   chunks) read it ~20x slower, and a bf16 matmul converts both operands to f32
//!   first; here each output's contiguous inputs are read once, converted in L1
//!   and multiplied in f32.
//!
//! CubeCL devices keep Burn's own kernels (their quantized matmul included).
//! The tensor-op reference is Burn's `x.matmul(w)`; `tests/linear.rs` compares.

#[cfg(feature = "flex")]
mod float;
#[cfg(feature = "flex")]
mod quantized;

use burn::tensor::{DType, Tensor};

#[cfg(feature = "flex")]
mod extension {
    use burn::backend::tensor::{FloatTensor, QuantizedTensor};
    use burn::backend::{Backend, backend_extension};

    #[backend_extension(Flex)]
    pub trait CpuLinear: Backend {
        /// `x · w` for `x: [rows, d_in]` in a float type and `w: [d_in, d_out]` quantized
        /// in blocks; the result is in `x`'s float type.
        fn quantized_matmul(x: FloatTensor<Self>, w: QuantizedTensor<Self>) -> FloatTensor<Self>;

        /// `w: [out, in]` quantized in blocks along `in`, as the `[in, out]` view.
        fn quantized_transpose(w: QuantizedTensor<Self>) -> QuantizedTensor<Self>;

        /// `x · w` for a short `x: [rows, d_in]` and a float `w: [d_in, d_out]`, in `x`'s type.
        fn float_matmul_rows(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    impl CpuLinear for burn_flex::Flex {
        fn quantized_matmul(x: burn_flex::FlexTensor, w: burn_flex::FlexQTensor) -> burn_flex::FlexTensor {
            super::quantized::quantized_matmul(x, w)
        }

        fn quantized_transpose(w: burn_flex::FlexQTensor) -> burn_flex::FlexQTensor {
            super::quantized::transpose(w)
        }

        fn float_matmul_rows(x: burn_flex::FlexTensor, w: burn_flex::FlexTensor) -> burn_flex::FlexTensor {
            if super::float::reads(&w) {
                super::float::matmul_rows(x, w)
            } else {
                let w = if w.dtype() == x.dtype() {
                    w
                } else {
                    burn_flex::FlexTensor::from_data(w.into_data().convert_dtype(x.dtype()))
                };
                burn_flex::ops::matmul::matmul(x, w)
            }
        }
    }
}

/// The most rows multiplied without the matmul library (float weights) or with the
/// quantized bytes directly (quantized weights).
#[cfg(feature = "flex")]
pub use quantized::MAX_FUSED_ROWS;
#[cfg(not(feature = "flex"))]
pub const MAX_FUSED_ROWS: usize = 16;

/// Whether [`matmul`] takes `x · w` for `rows` rows on this device: on the CPU backend,
/// a quantized weight at any row count, a float one for short blocks.
pub fn takes(device: &burn::tensor::Device, w_dtype: DType, rows: usize) -> bool {
    #[allow(unreachable_patterns)]
    match device.as_dispatch() {
        #[cfg(feature = "flex")]
        burn::backend::DispatchDevice::Flex(_) => match w_dtype {
            DType::QFloat(_) => true,
            DType::F32 | DType::BF16 => rows <= MAX_FUSED_ROWS,
            // One f16 row flex's matmul reads near the bandwidth; a few rows it reads ~20x slower.
            DType::F16 => (2..=MAX_FUSED_ROWS).contains(&rows),
            _ => false,
        },
        _ => false,
    }
}

/// A linear layer's `[out, in]` weight (PyTorch's layout) as Burn's `[in, out]`. On the
/// CPU backend a block-quantized weight keeps its bytes where they are, each output's
/// inputs contiguous (GGML's layout, which [`matmul`] streams), with its block scales
/// reordered (Burn's flex would dequantize, transpose and quantize the whole weight
/// again: minutes for a 7B model). Otherwise the transposed view, `w.transpose()`.
pub fn transpose(w: Tensor<2>) -> Tensor<2> {
    let device = w.device();
    if !takes(&device, w.dtype(), 0) {
        return w.transpose();
    }
    if !matches!(w.dtype(), DType::QFloat(_)) {
        return w.transpose();
    }
    #[cfg(feature = "flex")]
    {
        use burn::backend::Dispatch;
        use extension::CpuLinear;
        Tensor::from_dispatch(<Dispatch as CpuLinear>::quantized_transpose(w.into_dispatch()))
    }
    #[cfg(not(feature = "flex"))]
    w.transpose()
}

/// `x · w` for `x: [rows, d_in]`, `w: [d_in, d_out]` where [`takes`] holds; `None`
/// elsewhere (the caller's `x.matmul(w)` is then the path).
pub fn matmul(x: Tensor<2>, w: Tensor<2>) -> Option<Tensor<2>> {
    if !takes(&x.device(), w.dtype(), x.dims()[0]) {
        return None;
    }
    #[cfg(feature = "flex")]
    {
        use burn::backend::Dispatch;
        use extension::CpuLinear;
        let quantized = matches!(w.dtype(), DType::QFloat(_));
        let (x, w) = (x.into_dispatch(), w.into_dispatch());
        let y = match quantized {
            true => <Dispatch as CpuLinear>::quantized_matmul(x, w),
            false => <Dispatch as CpuLinear>::float_matmul_rows(x, w),
        };
        Some(Tensor::from_dispatch(y))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, w);
        None
    }
}
