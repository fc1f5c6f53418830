//! Linear layers as one 2-D matrix product over every row, whatever the
//! weight holds: f32, half precision, or quantized blocks. (Burn's batched
//! form reshapes the weight, and a quantized weight held as a transposed view
//! would be dequantized and quantized again by that reshape on every call.)
//! On the CPU backend, quantized and float weights go through
//! `vocollama_kernels::linear`, and a quantized weight is packed for it once
//! after loading ([`Linear::pack`]).

use burn::module::{Module, Param};
use burn::nn::{Initializer, LinearConfig};
use burn::tensor::{DType, Device, Tensor};
use vocollama_kernels::linear::Packed;

/// HF's `nn.Linear` (`weight` `[d_in, d_out]` as Burn holds it, optional `bias`), and the
/// weight packed for the CPU's loops where it is quantized there.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    /// Set by [`Linear::pack`]; the parameter is then rebuilt from it only if read.
    #[module(skip)]
    packed: Option<Packed>,
}

/// A `d_in → d_out` layer whose weights are loaded next (zeros, never materialised before).
pub fn zeros(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    let l = LinearConfig::new(d_in, d_out).with_bias(bias).with_initializer(Initializer::Zeros).init(device);
    Linear { weight: l.weight, bias: l.bias, packed: None }
}

impl Linear {
    /// A quantized weight on the CPU backend held once as its loops read it (Burn gives a
    /// parameter only by value, and a clone of flex's quantized tensor copies its block
    /// scales; its 4-bit values take a byte each). The parameter becomes a lazy view that
    /// rebuilds Burn's tensor from the packed bytes if something reads it (saving does not:
    /// it quantizes from the checkpoint), so the weight is in memory once. Elsewhere a no-op.
    pub fn pack(&mut self) {
        if self.packed.is_some() || !self.weight.is_initialized() {
            return;
        }
        let Some(packed) = vocollama_kernels::linear::pack(&self.weight) else { return };
        let (id, shape, device) = (self.weight.id, self.weight.lazy_shape(), self.weight.lazy_device());
        let source = packed.clone();
        self.weight = Param::uninitialized(
            id,
            move |device, _| {
                let t = source.tensor();
                if t.device() == *device { t } else { t.to_device(device) }
            },
            device,
            false,
            shape,
        );
        self.packed = Some(packed);
    }

    /// Whether the weight is held quantized (packed, or as Burn's quantized tensor).
    pub fn is_quantized(&self) -> bool {
        self.packed.is_some() || (self.weight.is_initialized() && matches!(self.weight.dtype(), DType::QFloat(_)))
    }

    /// Whether the weight is held packed (its parameter not materialised).
    pub fn is_packed(&self) -> bool {
        self.packed.is_some() && !self.weight.is_initialized()
    }
}

/// `x · W + b` over `x: [.., d_in]`.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = match &layer.packed {
        Some(packed) => {
            let [d_in, d_out] = packed.dims();
            let mut out = dims;
            out[D - 1] = d_out;
            vocollama_kernels::linear::packed_matmul(x.reshape([rows, d_in]), packed).reshape(out)
        }
        None => {
            let weight = layer.weight.val();
            let [d_in, d_out] = weight.dims();
            let mut out = dims;
            out[D - 1] = d_out;
            let x = x.reshape([rows, d_in]);
            match vocollama_kernels::linear::takes(&x.device(), weight.dtype()) {
                // The CPU's quantized and float weights (`vocollama_kernels::linear`).
                true => vocollama_kernels::linear::matmul(x, weight).expect("taken on this device"),
                false => x.matmul(weight),
            }
            .reshape(out)
        }
    };
    match &layer.bias {
        Some(b) => y + b.val().unsqueeze(),
        None => y,
    }
}
