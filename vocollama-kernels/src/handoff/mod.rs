//! The VoCo cache handoff: the N VoCo rows of a layer's stage-1 keys and
//! values, gathered into the compact cache on the device, the keys optionally
//! moved by a RoPE position delta in the same pass (joining video frames).
//! A Burn backend extension on CubeCL devices; tensor ops elsewhere.

mod kernel;

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::{Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::{CubeBackend, tensor::CubeTensor};
use cubecl::{CubeCount, CubeDim};

fn handoff_meta(
    k: &TensorSpec,
    v: &TensorSpec,
    _cos: &TensorSpec,
    _sin: &TensorSpec,
    _first: &usize,
    n: &usize,
) -> (TensorSpec, TensorSpec) {
    let rows = |t: &TensorSpec| {
        let mut shape = t.shape.clone();
        shape[2] = *n;
        TensorSpec::new(shape, t.dtype)
    };
    (rows(k), rows(v))
}

#[backend_extension(Cube, Fusion)]
pub trait VocoHandoff: Backend {
    /// Rows `first..first + n` of `k` and `v`; keys rotated by the angles of `cos`/`sin`.
    #[fusion(meta = handoff_meta)]
    fn voco_handoff(
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        first: usize,
        n: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl VocoHandoff for CubeBackend {
    fn voco_handoff(
        k: CubeTensor,
        v: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        first: usize,
        n: usize,
    ) -> (CubeTensor, CubeTensor) {
        let (k, v, cos, sin) = (into_contiguous(k), into_contiguous(v), into_contiguous(cos), into_contiguous(sin));
        let shape = k.meta.shape().clone();
        let (l, d) = (shape[2], shape[3]);
        let mut out_shape = shape.clone();
        out_shape[2] = n;
        let k_out = empty_device_dtype(k.client.clone(), k.device.clone(), out_shape.clone(), k.dtype);
        let v_out = empty_device_dtype(v.client.clone(), v.device.clone(), out_shape.clone(), v.dtype);
        let total = out_shape.num_elements() as u32;
        let dtype = dtype_to_storage_type(k.dtype);
        kernel::handoff_kernel::launch(
            &k_out.client,
            CubeCount::Static(total.div_ceil(128), 1, 1),
            CubeDim::new_1d(128),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            k_out.clone().into_tensor_arg(),
            v_out.clone().into_tensor_arg(),
            l as u32,
            first as u32,
            n as u32,
            d,
            dtype,
        );
        (k_out, v_out)
    }
}

/// cos and sin of `delta × inv_freq`, in f64 on the host so that a large
/// delta loses nothing before the f32 rounding.
fn rotation(delta: i64, inv_freq: &[f32]) -> (Vec<f32>, Vec<f32>) {
    inv_freq.iter().map(|&f| delta as f64 * f as f64).map(|t| (t.cos() as f32, t.sin() as f32)).unzip()
}

/// Rows `first..first + n` of `k, v: [b, kv, l, d]`, the keys rotated by
/// `delta` positions of rotate-half RoPE with frequencies `inv_freq` (`d / 2`).
pub fn voco_handoff(
    k: Tensor<4>,
    v: Tensor<4>,
    first: usize,
    n: usize,
    delta: i64,
    inv_freq: &[f32],
) -> (Tensor<4>, Tensor<4>) {
    let [_, _, l, d] = k.dims();
    assert!(first + n <= l && d == 2 * inv_freq.len(), "handoff of rows {first}+{n} of {l}, head dim {d}");
    if !crate::device::is_cubecl(&k.device()) {
        return handoff_reference(k, v, first, n, delta, inv_freq);
    }
    let device = k.device();
    let (cos, sin) = rotation(delta, inv_freq);
    let half = inv_freq.len();
    let table = |t: Vec<f32>| Tensor::<1>::from_data(TensorData::new(t, [half]), &device).into_dispatch();
    let (k, v) =
        <Dispatch as VocoHandoff>::voco_handoff(k.into_dispatch(), v.into_dispatch(), table(cos), table(sin), first, n);
    (Tensor::from_dispatch(k), Tensor::from_dispatch(v))
}

/// The tensor-op definition of [`voco_handoff`].
pub fn handoff_reference(
    k: Tensor<4>,
    v: Tensor<4>,
    first: usize,
    n: usize,
    delta: i64,
    inv_freq: &[f32],
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, _, d] = k.dims();
    let rows = |t: Tensor<4>| t.slice([0..b, 0..h, first..first + n, 0..d]);
    let (k, v) = (rows(k), rows(v));
    if delta == 0 {
        return (k, v);
    }
    let device = k.device();
    let (cos, sin) = rotation(delta, inv_freq);
    let half = inv_freq.len();
    let full = |t: Vec<f32>| {
        let t = Tensor::<1>::from_data(TensorData::new(t, [half]), &device);
        Tensor::cat(vec![t.clone(), t], 0).reshape([1, 1, 1, d])
    };
    (crate::rope::apply_rope(k, full(cos), full(sin)), v)
}
