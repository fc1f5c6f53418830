//! Linear layers whose weights are quantized in blocks (`--quantize q8|q4`),
//! as a Burn backend extension on the CPU backend (flex). Burn's flex
//! dequantizes the whole weight, one element at a time on one core, before a
//! float matmul, at every call — for a 7B model that is seconds per decoded
//! token. Here a short block of rows (decoding, a few streamed tokens) is
//! multiplied with the 8-bit values where they lie, each block's partial sum
//! scaled once, so a token reads each weight byte once; a long block (prefill)
//! dequantizes the weight on every core into the activations' float type and
//! runs the float matmul. CubeCL devices have Burn's own quantized matmul and
//! do not come here; the tensor-op reference is Burn's `x.matmul(w)`.

#[cfg(feature = "flex")]
mod cpu;

use burn::tensor::{DType, Tensor};

#[cfg(feature = "flex")]
mod extension {
    use burn::backend::tensor::{FloatTensor, QuantizedTensor};
    use burn::backend::{Backend, backend_extension};

    #[backend_extension(Flex)]
    pub trait QuantizedLinear: Backend {
        /// `x · w` for `x: [rows, d_in]` in a float type and `w: [d_in, d_out]` quantized
        /// in blocks; the result is in `x`'s float type.
        fn quantized_matmul(x: FloatTensor<Self>, w: QuantizedTensor<Self>) -> FloatTensor<Self>;

        /// `w: [out, in]` quantized in blocks along `in`, as the `[in, out]` view.
        fn quantized_transpose(w: QuantizedTensor<Self>) -> QuantizedTensor<Self>;
    }

    impl QuantizedLinear for burn_flex::Flex {
        fn quantized_matmul(x: burn_flex::FlexTensor, w: burn_flex::FlexQTensor) -> burn_flex::FlexTensor {
            super::cpu::quantized_matmul(x, w)
        }

        fn quantized_transpose(w: burn_flex::FlexQTensor) -> burn_flex::FlexQTensor {
            super::cpu::transpose(w)
        }
    }
}

#[cfg(feature = "flex")]
pub use cpu::MAX_FUSED_ROWS;

/// Whether [`quantized_matmul`] takes `x · w` on this device: a quantized weight on the CPU backend.
pub fn runs(device: &burn::tensor::Device, w_dtype: DType) -> bool {
    #[allow(unreachable_patterns)]
    match device.as_dispatch() {
        #[cfg(feature = "flex")]
        burn::backend::DispatchDevice::Flex(_) => matches!(w_dtype, DType::QFloat(_)),
        _ => false,
    }
}

/// The `[in, out]` view of a linear layer's `[out, in]` weight (PyTorch's layout). A
/// block-quantized weight on the CPU backend keeps its bytes where they are, each
/// output's inputs contiguous (GGML's layout, which [`quantized_matmul`] streams),
/// with its block scales reordered; Burn's flex would dequantize, transpose and
/// quantize the whole weight again (minutes for a 7B model). Elsewhere `w.transpose()`.
pub fn transpose(w: Tensor<2>) -> Tensor<2> {
    if !runs(&w.device(), w.dtype()) {
        return w.transpose();
    }
    #[cfg(feature = "flex")]
    {
        use burn::backend::Dispatch;
        use extension::QuantizedLinear;
        Tensor::from_dispatch(<Dispatch as QuantizedLinear>::quantized_transpose(w.into_dispatch()))
    }
    #[cfg(not(feature = "flex"))]
    w.transpose()
}

/// `x · w` with `w` quantized, on a device where [`runs`] holds; `None` elsewhere
/// (the caller's `x.matmul(w)` is then the path).
pub fn quantized_matmul(x: Tensor<2>, w: Tensor<2>) -> Option<Tensor<2>> {
    if !runs(&x.device(), w.dtype()) {
        return None;
    }
    #[cfg(feature = "flex")]
    {
        use burn::backend::Dispatch;
        use extension::QuantizedLinear;
        Some(Tensor::from_dispatch(<Dispatch as QuantizedLinear>::quantized_matmul(
            x.into_dispatch(),
            w.into_dispatch(),
        )))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, w);
        None
    }
}
