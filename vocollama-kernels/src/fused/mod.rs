//! Fused attention as a Burn backend extension, reached through `Dispatch`:
//! one kernel for every CubeCL runtime (wgpu, Vulkan, Metal, CUDA), and its
//! CPU counterpart on flex for short query blocks (`cpu`). Other devices
//! (autodiff) and flex's long blocks use the tensor-op reference in
//! [`crate::attention`].

#[cfg(feature = "flex")]
mod cpu;
mod kernel;
mod split;

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Dispatch, DispatchDevice, backend_extension};
use burn::tensor::{Int, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::{CubeBackend, tensor::CubeTensor};
use cubecl::{CubeCount, CubeDim};

use crate::attention::KeyRule;

#[backend_extension(Cube, Fusion, Flex)]
pub trait FusedAttention: Backend {
    /// Attention of `q` over the first `lk` rows of `k, v` (grouped heads
    /// allowed; the rows beyond are a cache's spare capacity, never read) under
    /// the per-sample `rules` (`[b, 4]` integers: left padding, has VoCo, first, last).
    /// `split_keys`: keys per chunk of the split-K path on CubeCL devices
    /// ([`split_keys`]), 0 for the row kernel; the CPU has one path and ignores it.
    #[fusion(dtype = q, shape = q)]
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        rules: IntTensor<Self>,
        lk: usize,
        causal: bool,
        split_keys: usize,
    ) -> FloatTensor<Self>;
}

/// Query rows per cube.
const TILE_Q: usize = 32;
/// Shared memory for the key and value tiles, in f32s (12 KiB, under WebGPU's 16 KiB floor).
const TILE_FLOATS: usize = 3072;

/// Keys per shared-memory tile at head dim `d`.
pub fn key_tile_rows(d: usize) -> usize {
    (TILE_FLOATS / 2 / d).max(1)
}

/// Query rows up to which the split-K path runs (a decoded token has one; a
/// speculative or chunked step a few). Above, the row kernel's cubes are full.
pub const SPLIT_MAX_ROWS: usize = 4;
/// Units of a split-K cube: one key each when scoring, a slice of the head dimension when summing.
const SPLIT_UNITS: usize = 32;
/// Cubes the split-K path aims for, so that a GPU's multiprocessors all get work.
const SPLIT_TARGET_CUBES: usize = 256;

/// Keys per chunk of the split-K path for `rows` (batch × heads × query rows) over `lk`
/// keys, or 0 (the row kernel) above [`SPLIT_MAX_ROWS`] query rows: chunks of whole tiles,
/// as many as bring the cubes to about [`SPLIT_TARGET_CUBES`].
pub fn split_keys(lq: usize, rows: usize, lk: usize) -> usize {
    if lq > SPLIT_MAX_ROWS {
        return 0;
    }
    let splits = (SPLIT_TARGET_CUBES / rows.max(1)).max(1);
    lk.div_ceil(splits).next_multiple_of(SPLIT_UNITS).max(SPLIT_UNITS)
}

impl FusedAttention for CubeBackend {
    fn fused_attention(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        rules: CubeTensor,
        lk: usize,
        causal: bool,
        split_keys: usize,
    ) -> CubeTensor {
        // A KV cache buffer is contiguous already: no copy of it is made here.
        let (q, k, v, rules) = (into_contiguous(q), into_contiguous(k), into_contiguous(v), into_contiguous(rules));
        let (qs, ks) = (q.meta.shape().clone(), k.meta.shape().clone());
        let (b, heads, lq, d) = (qs[0], qs[1], qs[2], qs[3]);
        let (kv_heads, k_rows) = (ks[1], ks[2]);
        let out = empty_device_dtype(q.client.clone(), q.device.clone(), qs.clone(), q.dtype);
        if split_keys > 0 {
            launch_split(q, k, v, rules, out.clone(), lk, causal, split_keys);
            return out;
        }
        let tile_k = key_tile_rows(d);
        let count = CubeCount::Static(lq.div_ceil(TILE_Q) as u32, (b * heads) as u32, 1);
        let dtypes = [dtype_to_storage_type(q.dtype), dtype_to_storage_type(rules.dtype)];
        kernel::fused_attention_kernel::launch(
            &out.client,
            count,
            CubeDim::new_1d(TILE_Q as u32),
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            rules.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            heads as u32,
            kv_heads as u32,
            lq as u32,
            lk as u32,
            k_rows as u32,
            u32::from(causal),
            1.0 / (d as f32).sqrt(),
            d,
            TILE_Q,
            tile_k,
            dtypes,
        );
        out
    }
}

/// The split-K path: partials per (row, chunk of `chunk` keys), then one merge per row into `out`.
#[allow(clippy::too_many_arguments)]
fn launch_split(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    rules: CubeTensor,
    out: CubeTensor,
    lk: usize,
    causal: bool,
    chunk: usize,
) {
    let (qs, ks) = (q.meta.shape().clone(), k.meta.shape().clone());
    let (b, heads, lq, d) = (qs[0], qs[1], qs[2], qs[3]);
    let (kv_heads, k_rows) = (ks[1], ks[2]);
    let rows = b * heads * lq;
    let splits = lk.div_ceil(chunk).max(1);
    let partials =
        empty_device_dtype(q.client.clone(), q.device.clone(), [rows, splits, d + 2].into(), burn::tensor::DType::F32);
    let dtypes = [dtype_to_storage_type(q.dtype), dtype_to_storage_type(rules.dtype)];
    let float = dtypes[0];
    split::split_partials_kernel::launch(
        &out.client,
        CubeCount::Static(splits as u32, rows as u32, 1),
        CubeDim::new_1d(SPLIT_UNITS as u32),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        rules.into_tensor_arg(),
        partials.clone().into_tensor_arg(),
        heads as u32,
        kv_heads as u32,
        lq as u32,
        lk as u32,
        k_rows as u32,
        u32::from(causal),
        1.0 / (d as f32).sqrt(),
        chunk as u32,
        d,
        SPLIT_UNITS,
        d.div_ceil(SPLIT_UNITS),
        dtypes,
    );
    split::split_combine_kernel::launch(
        &out.client,
        CubeCount::Static(rows as u32, 1, 1),
        CubeDim::new_1d(SPLIT_UNITS as u32),
        partials.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        splits as u32,
        d,
        SPLIT_UNITS,
        float,
    );
}

#[cfg(feature = "flex")]
impl FusedAttention for burn_flex::Flex {
    fn fused_attention(
        q: burn_flex::FlexTensor,
        k: burn_flex::FlexTensor,
        v: burn_flex::FlexTensor,
        rules: burn_flex::FlexTensor,
        lk: usize,
        causal: bool,
        _split_keys: usize,
    ) -> burn_flex::FlexTensor {
        cpu::fused_attention(q, k, v, rules, lk, causal)
    }
}

/// Whether `device` runs the fused attention at all: a CubeCL device or the CPU backend (not autodiff).
pub fn available(device: &burn::tensor::Device) -> bool {
    #[allow(unreachable_patterns)]
    match device.as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        _ => crate::device::is_cubecl(device),
    }
}

/// Whether the fused attention runs on `device` at head dim `d`: everywhere it is
/// [`available`], except CUDA at head dims that are not a multiple of 8. There the kernel
/// CubeCL's CUDA C++ path compiles was measured wrong (on an H200: head dim 12 off by more
/// than its largest value, while 8, 16 and 64 match the tensor-op path and the CPU), so
/// those heads take the tensor-op path, measured right at 12 (`tests/backends.rs` of the model).
pub fn supports(device: &burn::tensor::Device, d: usize) -> bool {
    available(device) && (d.is_multiple_of(8) || !crate::device::is_cuda(device))
}

/// Whether the fused attention is the one to run for `lq` query rows of head dim `d` on
/// `device`: always where it is [`supports`]ed on a CubeCL device; on the CPU for short
/// blocks, where it saves the copy of the cached keys and values that Burn's attention
/// makes (a long block's matrix products outweigh that copy).
pub fn runs(device: &burn::tensor::Device, lq: usize, d: usize) -> bool {
    #[allow(unreachable_patterns)]
    match device.as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => lq <= cpu::MAX_QUERY_ROWS,
        _ => supports(device, d),
    }
}

/// The rule's per-sample integers `[b, 4]` as the kernel reads them: left
/// padding, has VoCo, first VoCo, last VoCo.
pub(crate) fn rule_tensor(rule: &KeyRule, batch: usize, device: &burn::tensor::Device) -> Tensor<2, Int> {
    let rules: Vec<i32> = (0..batch)
        .flat_map(|i| {
            let s = rule.samples.get(i).copied().unwrap_or_default();
            let (has, first, last) = s.voco.map_or((0, 0, 0), |(f, l)| (1, f, l));
            [s.left_padding as i32, has, first as i32, last as i32]
        })
        .collect();
    Tensor::<2, Int>::from_data(TensorData::new(rules, [batch, 4]), device)
}

/// The kernel over prepared rule integers (see [`rule_tensor`]) and the first `lk` rows of `k, v`:
/// split-K for a few query rows (see [`split_keys`]), the row kernel otherwise.
pub(crate) fn launch(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    rules: Tensor<2, Int>,
    lk: usize,
    causal: bool,
) -> Tensor<4> {
    let split = auto_split_keys(&q, lk);
    launch_with(q, k, v, rules, lk, causal, split)
}

/// [`split_keys`] for the query block `q` over `lk` keys.
fn auto_split_keys(q: &Tensor<4>, lk: usize) -> usize {
    let [b, heads, lq, _] = q.dims();
    split_keys(lq, b * heads * lq, lk)
}

fn launch_with(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    rules: Tensor<2, Int>,
    lk: usize,
    causal: bool,
    split_keys: usize,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedAttention>::fused_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        rules.into_dispatch(),
        lk,
        causal,
        split_keys,
    ))
}

/// The fused kernel for one call where it is [`supports`]ed; `None` elsewhere.
pub fn fused_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, rule: &KeyRule) -> Option<Tensor<4>> {
    let split = auto_split_keys(&q, k.dims()[2]);
    fused_attention_with(q, k, v, rule, split)
}

/// [`fused_attention`] with the path chosen by the caller: `split_keys` keys per chunk of
/// the split-K path, or 0 for the row kernel (benchmarks and tests compare the two).
pub fn fused_attention_with(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    rule: &KeyRule,
    split_keys: usize,
) -> Option<Tensor<4>> {
    let device = q.device();
    if !supports(&device, q.dims()[3]) {
        return None;
    }
    let rules = rule_tensor(rule, q.dims()[0], &device);
    let lk = k.dims()[2];
    Some(launch_with(q, k, v, rules, lk, rule.causal, split_keys))
}
