//! Linear layers on the CPU backend (flex), as a Burn backend extension: the
//! product `x · w` where the matmul library is not the right tool.
//!
//! - **Quantized weights** (`--quantize q8|q4`, [`quantized`]): Burn's flex
//!   dequantizes the whole weight, one element at a time on one core, before a
//!   float matmul, at every call — seconds per decoded token for a 7B model.
//!   Here a short block of rows (decoding, streamed tokens, a question) is
//!   multiplied with the 8-bit values where they lie, so a token reads each
//!   weight byte once: with half-precision activations (a quantized model's
//!   default) the rows are quantized to 8 bits too, at every row count, and up
//!   to 128 rows' products summed in integers ([`int8`], GGML's Q8_0 · Q8_0);
//!   with f32 activations, up to 16 rows, each block's products are summed in f32
//!   and scaled. A longer block (an image's prompt) goes to the tiles of
//!   [`gemm`], which dequantize each block of the weight in cache (AVX-512), or
//!   dequantizes the weight on every core into a contiguous f32 buffer kept
//!   between calls and runs the float matmul ([`prefill`]).
//!   [`transpose`] gives the loader's `[in, out]` view of PyTorch's `[out, in]`
//!   bytes without moving them. After loading, [`pack`] holds each such weight
//!   once for these loops ([`Packed`]): a call then copies nothing, and 4-bit
//!   values take half a byte each (flex holds one a byte).
//! - **Float weights, short blocks** (up to 16 rows, [`float`]): the matmul
//!   library treats a decoded row like a large product (an f32 or f16 weight
//!   read at half the memory bandwidth or less, two to sixteen rows ~20x slower,
//!   bf16 operands converted to f32 first); here four columns are read at a
//!   time, converted in registers and multiplied in f32, the next columns asked
//!   for ahead.
//! - **Float weights, long blocks** ([`gemm`], with AVX-512): the matmul library
//!   multiplies by the transposed view 1.2–4x slower than by a contiguous weight
//!   and converts f16 and bf16 operands to f32 in fresh buffers; here the product
//!   is tiled as the BLAS libraries tile it, each block of the weight transposed
//!   and converted to f32 once, in cache. Without AVX-512, past 64 rows, the
//!   weight is copied into a contiguous buffer kept between calls and the matmul
//!   library multiplies ([`prefill`]).
//!
//! CubeCL devices keep Burn's own kernels (their quantized matmul included).
//! The tensor-op reference is Burn's `x.matmul(w)`; `tests/linear.rs` compares.

#[cfg(feature = "flex")]
mod float;
#[cfg(feature = "flex")]
mod gemm;
#[cfg(feature = "flex")]
mod int8;
#[cfg(feature = "flex")]
mod packed;
#[cfg(feature = "flex")]
mod prefill;
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

        /// `x · w` for `x: [rows, d_in]` and a float `w: [d_in, d_out]`, in `x`'s type.
        fn float_matmul(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    impl CpuLinear for burn_flex::Flex {
        fn quantized_matmul(x: burn_flex::FlexTensor, w: burn_flex::FlexQTensor) -> burn_flex::FlexTensor {
            super::quantized::quantized_matmul(x, &w)
        }

        fn quantized_transpose(w: burn_flex::FlexQTensor) -> burn_flex::FlexQTensor {
            super::quantized::transpose(w)
        }

        fn float_matmul(x: burn_flex::FlexTensor, w: burn_flex::FlexTensor) -> burn_flex::FlexTensor {
            let rows = x.layout().shape()[0];
            if super::float::reads(&w) {
                if rows <= super::float::MAX_ROWS || super::float::any_rows(&w) {
                    return super::float::matmul_rows(x, w);
                }
                if let Some(y) = super::prefill::matmul(x.clone(), &w) {
                    return y;
                }
            }
            let w = if w.dtype() == x.dtype() {
                w
            } else {
                burn_flex::FlexTensor::from_data(w.into_data().convert_dtype(x.dtype()))
            };
            burn_flex::ops::matmul::matmul(x, w)
        }
    }
}

/// Whether [`matmul`] takes `x · w` on this device: on the CPU backend, every quantized
/// and float weight (a float weight held as the transposed view is
/// multiplied by the decode loops or through a contiguous copy; any other goes to flex's
/// matmul there).
pub fn takes(device: &burn::tensor::Device, w_dtype: DType) -> bool {
    #[allow(unreachable_patterns)]
    match device.as_dispatch() {
        #[cfg(feature = "flex")]
        burn::backend::DispatchDevice::Flex(_) => {
            matches!(w_dtype, DType::QFloat(_) | DType::F32 | DType::F16 | DType::BF16)
        }
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
    if !takes(&device, w.dtype()) {
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
    if !takes(&x.device(), w.dtype()) {
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
            false => <Dispatch as CpuLinear>::float_matmul(x, w),
        };
        Some(Tensor::from_dispatch(y))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, w);
        None
    }
}

/// A quantized linear weight `[d_in, d_out]` held for the CPU's loops (see [`pack`]);
/// cloning it shares the bytes.
#[derive(Clone, Debug)]
pub struct Packed {
    #[cfg(feature = "flex")]
    weight: std::sync::Arc<packed::PackedWeight>,
}

impl Packed {
    /// `[d_in, d_out]`.
    pub fn dims(&self) -> [usize; 2] {
        #[cfg(feature = "flex")]
        return self.weight.dims();
        #[cfg(not(feature = "flex"))]
        unreachable!("packed weights exist only on the CPU backend")
    }

    /// Bytes of values and scales held.
    pub fn bytes(&self) -> usize {
        #[cfg(feature = "flex")]
        return self.weight.bytes();
        #[cfg(not(feature = "flex"))]
        0
    }

    /// The weight as the Burn tensor it was packed from (same values, scales and layout).
    pub fn tensor(&self) -> Tensor<2> {
        #[cfg(feature = "flex")]
        return flex::quantized(self.weight.tensor());
        #[cfg(not(feature = "flex"))]
        unreachable!("packed weights exist only on the CPU backend")
    }
}

/// A quantized weight `w: [d_in, d_out]` as the loader holds it on the CPU backend, packed
/// for [`packed_matmul`] (8-bit values kept where they are, 4-bit ones two a byte); `None`
/// on other devices, for float weights, and for layouts the loops do not read.
pub fn pack(w: &Tensor<2>) -> Option<Packed> {
    if !matches!(w.dtype(), DType::QFloat(_)) || !takes(&w.device(), w.dtype()) {
        return None;
    }
    #[cfg(feature = "flex")]
    {
        let weight = packed::PackedWeight::pack(flex::quantized_of(w.clone())?)?;
        Some(Packed { weight: std::sync::Arc::new(weight) })
    }
    #[cfg(not(feature = "flex"))]
    None
}

/// `x · w` for `x: [rows, d_in]` on the device `w` was packed on, in `x`'s float type.
pub fn packed_matmul(x: Tensor<2>, w: &Packed) -> Tensor<2> {
    #[cfg(feature = "flex")]
    {
        let x = flex::float_of(x).expect("rows on the CPU backend, where the weight was packed");
        flex::float(w.weight.matmul(x))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, w);
        unreachable!("packed weights exist only on the CPU backend")
    }
}

/// Flex's primitives in and out of Burn's tensors.
#[cfg(feature = "flex")]
mod flex {
    use burn::backend::{BackendTensor, DispatchTensorKind};
    use burn::tensor::Tensor;
    use burn_flex::{FlexQTensor, FlexTensor};

    pub fn quantized_of(w: Tensor<2>) -> Option<FlexQTensor> {
        match w.into_dispatch().kind {
            DispatchTensorKind::Flex(BackendTensor::Quantized(q)) => Some(q),
            _ => None,
        }
    }

    pub fn float_of(x: Tensor<2>) -> Option<FlexTensor> {
        match x.into_dispatch().kind {
            DispatchTensorKind::Flex(BackendTensor::Float(t)) => Some(t),
            _ => None,
        }
    }

    pub fn quantized(q: FlexQTensor) -> Tensor<2> {
        Tensor::from_dispatch(burn::backend::DispatchTensor {
            kind: DispatchTensorKind::Flex(BackendTensor::Quantized(q)),
            autodiff: Default::default(),
        })
    }

    pub fn float(t: FlexTensor) -> Tensor<2> {
        Tensor::from_dispatch(burn::backend::DispatchTensor {
            kind: DispatchTensorKind::Flex(BackendTensor::Float(t)),
            autodiff: Default::default(),
        })
    }
}
