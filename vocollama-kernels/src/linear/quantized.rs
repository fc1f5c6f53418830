//! `x · w` on flex with `w` quantized in blocks: flex holds one signed byte a
//! value (q8 and q4 alike) and one f32 scale a block, in the block grid of the
//! tensor's logical shape (`scale(k, o) = scales[(k / bk) · nbo + o / bo]`).

use burn::backend::TensorMetadata;
use burn::backend::quantization::{QuantScheme, global_scale_dtype};
use burn::tensor::{DType, TensorData, bf16, f16};
use burn_flex::{FlexQTensor, FlexTensor};
use rayon::prelude::*;

use super::int8;
use crate::cpu::{Elem, dot, madd, prefetch};

/// The most f32 rows multiplied with the quantized bytes directly (half-precision rows
/// take [`int8::MAX_ROWS`]); a longer block goes to the tiles of [`super::gemm`], which
/// dequantize each block of the weight in cache (AVX-512), or dequantizes the whole
/// weight once and runs the float matmul, whose blocking wins there.
pub const MAX_FUSED_ROWS: usize = 16;

/// Output columns per strip (a multiple of 16, for whole vectors); tasks are multiples of it.
const COLUMNS: usize = 64;

/// The weight as the kernels read it: `value(k, o) = data[start + k·sk + o·so]`.
pub(super) struct Weight<'a> {
    pub data: &'a [i8],
    pub start: usize,
    pub sk: usize,
    pub so: usize,
    pub d_in: usize,
    pub d_out: usize,
    pub scales: &'a [f32],
    /// Block extent along k and o, and the number of blocks along o.
    pub bk: usize,
    pub bo: usize,
    pub nbo: usize,
}

impl Weight<'_> {
    pub fn scale(&self, k: usize, o: usize) -> f32 {
        self.scales[(k / self.bk) * self.nbo + o / self.bo]
    }
}

/// The block extents of a one-level block scheme over a 2-D tensor; `None` for a
/// per-tensor or two-level scheme (the caller then dequantizes with Burn).
fn blocks(scheme: &QuantScheme, d_in: usize, d_out: usize) -> Option<(usize, usize, usize)> {
    if global_scale_dtype(scheme).is_some() {
        return None;
    }
    let size = scheme.block_size()?;
    let b = size.to_dim_vec(2);
    let (bk, bo) = (b[0] as usize, b[1] as usize);
    (bk > 0 && bo > 0 && d_in.is_multiple_of(bk) && d_out.is_multiple_of(bo)).then_some((bk, bo, d_out / bo))
}

/// `[out, in]` blocked along `in` → its `[in, out]` view: the same bytes behind
/// swapped strides, the block grid transposed with them (scales reordered from
/// `[out, in / bk]` to `[in / bk, out]`, as Burn's block layout reads a logical shape).
pub fn transpose(w: FlexQTensor) -> FlexQTensor {
    use burn::backend::ops::QTensorOps;
    let DType::QFloat(scheme) = w.dtype() else { unreachable!("a quantized tensor") };
    let shape = w.tensor().layout().shape().to_vec();
    let grid = (shape.len() == 2).then(|| blocks(&scheme, shape[0], shape[1])).flatten();
    let Some((1, _, nb)) = grid else {
        return <burn_flex::Flex as QTensorOps<burn_flex::Flex>>::q_swap_dims(w, 0, 1);
    };
    let out = shape[0];
    let old = w.scales();
    let mut scales = vec![0f32; old.len()];
    for o in 0..out {
        for b in 0..nb {
            scales[b * out + o] = old[o * nb + b];
        }
    }
    let mut swapped = scheme;
    swapped.swap_block_dims(2, 0, 1);
    FlexQTensor::new(w.tensor().transpose(0, 1), swapped, scales, None)
}

pub fn quantized_matmul(x: FlexTensor, w: &FlexQTensor) -> FlexTensor {
    let dtype = x.dtype();
    let xs = x.layout().shape().to_vec();
    let ws = w.tensor().layout().shape().to_vec();
    assert!(xs.len() == 2 && ws.len() == 2 && xs[1] == ws[0], "quantized matmul: [r, k] · [k, n], got {xs:?} · {ws:?}");
    let Some(weight) = view(w) else {
        // Not a layout these loops read: Burn's own dequantization, then the float matmul.
        let w = <burn_flex::Flex as burn::backend::ops::QTensorOps<burn_flex::Flex>>::dequantize(
            w.clone(),
            float_of(dtype),
        );
        return burn_flex::ops::matmul::matmul(x, w);
    };
    let rows = xs[0];
    let rows8 = rows8(&x, weight.d_in);
    // Half-precision activations meet the weight as 8-bit blocks at every row count (GGML's
    // Q8_0 · Q8_0): up to `int8::MAX_ROWS` rows (decoding, a question) in integer products
    // (`int8`), longer blocks as the values those blocks stand for, so a prompt and its
    // decoded tokens see the same layer.
    if let Some(q) = &rows8
        && rows <= int8::MAX_ROWS
        && int8::takes(&weight)
    {
        // The packed loop where the CPU has it (this weight packed for the call: the model's
        // weights are packed once, after loading), else the portable one.
        let DType::QFloat(scheme) = w.dtype() else { unreachable!("a quantized tensor") };
        if int8::packed_loop() {
            let packed = super::packed::PackedWeight::from_view(&weight, false, scheme);
            let y = int8::matmul_packed(&packed.stream(), q).expect("the packed loop runs on this CPU");
            return float_tensor(TensorData::new(y, [rows, weight.d_out]), dtype);
        }
    }
    unpacked_rows(x, rows8, &weight)
}

/// `x · w` against flex's signed bytes by the loops every CPU has: half-precision rows as
/// 8-bit blocks in integer products up to `int8::MAX_ROWS` rows (where [`int8::takes`]
/// `w`), else [`float_rows`].
pub(super) fn unpacked_rows(x: FlexTensor, rows8: Option<int8::Rows8>, weight: &Weight) -> FlexTensor {
    let (dtype, rows) = (x.dtype(), x.layout().shape()[0]);
    match rows8 {
        Some(q) if rows <= int8::MAX_ROWS && int8::takes(weight) => {
            float_tensor(TensorData::new(int8::matmul(weight, &q), [rows, weight.d_out]), dtype)
        }
        rows8 => float_rows(x, rows8, weight),
    }
}

/// The loops' view of a quantized `[d_in, d_out]` tensor; `None` for a layout or block
/// scheme they do not read.
pub(super) fn view(w: &FlexQTensor) -> Option<Weight<'_>> {
    let DType::QFloat(scheme) = w.dtype() else { unreachable!("a quantized tensor") };
    let layout = w.tensor().layout();
    let (shape, strides) = (layout.shape(), layout.strides());
    if shape.len() != 2 || strides.iter().any(|&s| s < 0) {
        return None;
    }
    let (d_in, d_out) = (shape[0], shape[1]);
    let (bk, bo, nbo) = blocks(&scheme, d_in, d_out)?;
    Some(Weight {
        data: w.tensor().storage::<i8>(),
        start: layout.start_offset(),
        sk: strides[0] as usize,
        so: strides[1] as usize,
        d_in,
        d_out,
        scales: w.scales(),
        bk,
        bo,
        nbo,
    })
}

/// Half-precision rows `x: [rows, d_in]` quantized to 8 bits in blocks (see `int8`); `None`
/// for f32 rows (the exact loops) or an input not a whole number of blocks.
pub(super) fn rows8(x: &FlexTensor, d_in: usize) -> Option<int8::Rows8> {
    (x.dtype() != DType::F32 && d_in.is_multiple_of(int8::BLOCK)).then(|| {
        let rows = x.layout().shape()[0];
        int8::Rows8::quantize(&rows_f32(x.clone()), rows, d_in)
    })
}

/// `x · w` by the float loops: f32 rows (or the values 8-bit rows stand for) against the
/// weight's bytes, up to [`MAX_FUSED_ROWS`] rows; a longer block through the dequantized
/// weight and the matmul library.
fn float_rows(x: FlexTensor, rows8: Option<int8::Rows8>, weight: &Weight) -> FlexTensor {
    let dtype = x.dtype();
    let rows = x.layout().shape()[0];
    let xf = match rows8 {
        Some(q) => q.values(),
        None => rows_f32(x),
    };
    if rows > MAX_FUSED_ROWS {
        // A prompt: tiles dequantizing the weight block by block in cache (AVX-512), or the
        // weight dequantized into a contiguous buffer and the matmul library.
        #[cfg(target_arch = "x86_64")]
        if let Some(w) = super::gemm::Quantized::new(weight)
            && super::float::avx512()
        {
            // SAFETY: `Quantized::new` checked the view and that `d_in` is a multiple of 16;
            // the CPU has AVX-512F and VL, checked just above.
            let y = unsafe { super::gemm::multiply(&w, &xf, rows, weight.d_in, weight.d_out) };
            return float_tensor(TensorData::new(y, [rows, weight.d_out]), dtype);
        }
        return super::prefill::quantized(&xf, weight, dtype);
    }
    let y = if weight.so == 1 || weight.d_out == 1 {
        Kernel::pick().columns(weight, &xf, rows)
    } else {
        Kernel::pick().dots(weight, &xf, rows)
    };
    float_tensor(TensorData::new(y, [rows, weight.d_out]), dtype)
}

/// f32 results as a tensor of the activations' float type.
pub(crate) fn float_tensor(data: TensorData, dtype: DType) -> FlexTensor {
    FlexTensor::from_data(match dtype {
        DType::F32 => data,
        DType::F16 => data.convert::<f16>(),
        DType::BF16 => data.convert::<bf16>(),
        other => panic!("linear: unsupported float type {other:?}"),
    })
}

fn float_of(dtype: DType) -> burn::tensor::FloatDType {
    match dtype {
        DType::F16 => burn::tensor::FloatDType::F16,
        DType::BF16 => burn::tensor::FloatDType::BF16,
        _ => burn::tensor::FloatDType::F32,
    }
}

/// `x`'s rows in f32, row-major.
pub(crate) fn rows_f32(x: FlexTensor) -> Vec<f32> {
    fn read<E: Elem>(x: &FlexTensor) -> Vec<f32> {
        let s = x.storage::<E>();
        let mut out = vec![0f32; s.len()];
        E::load(s, &mut out);
        out
    }
    let x = x.to_contiguous();
    match x.dtype() {
        DType::F32 => read::<f32>(&x),
        DType::F16 => read::<f16>(&x),
        DType::BF16 => read::<bf16>(&x),
        other => panic!("linear: unsupported float type {other:?}"),
    }
}

/// One task's columns `[o0, o0 + n)` of every row, written to `y: [rows, n]`.
type Task = fn(&Weight, &[f32], usize, usize, &mut [f32]);

/// The two loops compiled for the widest vector instructions the CPU has (the
/// byte-to-float conversions and multiply-adds are the work), picked per call;
/// the parallel loop calls them per task (a closure would not inherit the features).
struct Kernel {
    columns: Task,
    dots: Task,
}

impl Kernel {
    fn pick() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
                // SAFETY: the CPU has AVX-512F and BW, checked just above.
                return Self {
                    columns: |w, x, r, o, y| unsafe { columns_avx512(w, x, r, o, y) },
                    dots: |w, x, r, o, y| unsafe { dots_avx512(w, x, r, o, y) },
                };
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA, checked just above.
                return Self {
                    columns: |w, x, r, o, y| unsafe { columns_avx2(w, x, r, o, y) },
                    dots: |w, x, r, o, y| unsafe { dots_avx2(w, x, r, o, y) },
                };
            }
        }
        Self { columns: columns::<false>, dots: dots::<false> }
    }

    fn columns(&self, w: &Weight, x: &[f32], rows: usize) -> Vec<f32> {
        split(w, x, rows, self.columns)
    }

    fn dots(&self, w: &Weight, x: &[f32], rows: usize) -> Vec<f32> {
        split(w, x, rows, self.dots)
    }
}

/// The output columns split into tasks over every core, and the tasks' columns joined.
fn split(w: &Weight, x: &[f32], rows: usize, task: Task) -> Vec<f32> {
    by_columns(w.d_out, rows, |o0, y| task(w, x, rows, o0, y))
}

/// `[rows, d_out]` computed in tasks of output columns over every core: `task(o0, y)` fills
/// `y: [rows, n]` for columns `[o0, o0 + n)`. Tasks are wide (each column or row of weights
/// one long run) but several per thread.
pub(crate) fn by_columns(d_out: usize, rows: usize, task: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    by_columns_of(d_out, rows, COLUMNS, task)
}

/// [`by_columns`] with tasks of at least `least` columns (a multiple of [`COLUMNS`]).
pub(crate) fn by_columns_of(
    d_out: usize,
    rows: usize,
    least: usize,
    task: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let per = d_out.div_ceil(8 * rayon::current_num_threads()).next_multiple_of(COLUMNS).clamp(least, 1024.max(least));
    let tasks: Vec<(usize, Vec<f32>)> = (0..d_out.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let o0 = t * per;
            let mut y = vec![0f32; rows * per.min(d_out - o0)];
            task(o0, &mut y);
            (o0, y)
        })
        .collect();
    let mut out = vec![0f32; rows * d_out];
    for (o0, y) in tasks {
        let n = y.len() / rows.max(1);
        for r in 0..rows {
            out[r * d_out + o0..r * d_out + o0 + n].copy_from_slice(&y[r * n..(r + 1) * n]);
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn columns_avx512(w: &Weight, x: &[f32], rows: usize, o0: usize, y: &mut [f32]) {
    columns::<true>(w, x, rows, o0, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn columns_avx2(w: &Weight, x: &[f32], rows: usize, o0: usize, y: &mut [f32]) {
    columns::<true>(w, x, rows, o0, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn dots_avx512(w: &Weight, x: &[f32], rows: usize, o0: usize, y: &mut [f32]) {
    dots::<true>(w, x, rows, o0, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(w: &Weight, x: &[f32], rows: usize, o0: usize, y: &mut [f32]) {
    dots::<true>(w, x, rows, o0, y)
}

/// o-contiguous bytes, columns `[o0, o0 + n)`: block by block along k, strips of
/// `COLUMNS` columns whose sums stay in registers over the block's k (each row of the
/// block's bytes read once per output row, from L1), each block's sums scaled once.
#[inline(always)]
fn columns<const FMA: bool>(w: &Weight, x: &[f32], rows: usize, o0: usize, y: &mut [f32]) {
    let d_in = w.d_in;
    let n = y.len() / rows.max(1);
    let mut scale = vec![0f32; n];
    for kb in (0..d_in).step_by(w.bk) {
        if w.bo == 1 {
            let at = (kb / w.bk) * w.nbo + o0;
            scale.copy_from_slice(&w.scales[at..at + n]);
        } else {
            for (c, s) in scale.iter_mut().enumerate() {
                *s = w.scale(kb, o0 + c);
            }
        }
        let mut c0 = 0;
        while c0 < n {
            let width = COLUMNS.min(n - c0);
            for r in 0..rows {
                let xr = &x[r * d_in + kb..r * d_in + kb + w.bk];
                let mut acc = [0f32; COLUMNS];
                for (i, &xv) in xr.iter().enumerate() {
                    let at = w.start + (kb + i) * w.sk + (o0 + c0) * w.so;
                    if width == COLUMNS {
                        let bytes: &[i8; COLUMNS] = w.data[at..at + COLUMNS].try_into().expect("a strip");
                        for c in 0..COLUMNS {
                            acc[c] = madd::<FMA>(xv, bytes[c] as f32, acc[c]);
                        }
                    } else {
                        for (a, b) in acc.iter_mut().zip(&w.data[at..at + width]) {
                            *a = madd::<FMA>(xv, *b as f32, *a);
                        }
                    }
                }
                let out = &mut y[r * n + c0..r * n + c0 + width];
                for ((yv, a), s) in out.iter_mut().zip(&acc).zip(&scale[c0..c0 + width]) {
                    *yv = madd::<FMA>(*a, *s, *yv);
                }
            }
            c0 += width;
        }
    }
}

/// Columns whose block scales are gathered together (one contiguous run per block).
const GROUP: usize = 16;

/// The task's block scales regrouped (`sc[g][b][j]` for column `g · GROUP + j`): the
/// scale grid is read a block row at a time, a group's scales read back from one run.
fn regroup(w: &Weight, o0: usize, n: usize, sc: &mut Vec<f32>) {
    let nb = w.d_in / w.bk;
    let groups = n.div_ceil(GROUP);
    sc.clear();
    sc.resize(groups * nb * GROUP, 0.0);
    for b in 0..nb {
        let row = &w.scales[b * w.nbo + o0..b * w.nbo + o0 + n];
        let (whole, tail) = row.split_at(n / GROUP * GROUP);
        for (g, run) in whole.chunks_exact(GROUP).enumerate() {
            let run: &[f32; GROUP] = run.try_into().expect("a group");
            let at = (g * nb + b) * GROUP;
            let dst: &mut [f32; GROUP] = (&mut sc[at..at + GROUP]).try_into().expect("a group");
            *dst = *run;
        }
        if !tail.is_empty() {
            let at = ((n / GROUP) * nb + b) * GROUP;
            sc[at..at + tail.len()].copy_from_slice(tail);
        }
    }
}

/// A buffer of this thread kept between calls (taken, and put back on drop): a fresh
/// large buffer per task would be fresh pages, zeroed by the kernel at first touch, at
/// every token. No closure: one would not carry its caller's target features.
pub(super) struct Scratch(pub Vec<f32>);

thread_local! {
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Scratch {
    pub fn take() -> Self {
        Scratch(SCRATCH.take())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        SCRATCH.set(std::mem::take(&mut self.0));
    }
}

/// k-contiguous bytes in blocks of 32 (GGML's layout), columns `[o0, o0 + n)`: per column
/// and row one dot product over a contiguous run of bytes, each block's products scaled as
/// they are summed (64 lanes, reduced once per column). Other layouts: block by block.
#[inline(always)]
fn dots<const FMA: bool>(w: &Weight, x: &[f32], rows: usize, o0: usize, y: &mut [f32]) {
    let d_in = w.d_in;
    let n = y.len() / rows.max(1);
    if w.sk != 1 || w.bo != 1 || w.bk != 32 {
        return dots_any::<FMA>(w, x, rows, o0, y);
    }
    let nb = d_in / w.bk;
    let mut scratch = Scratch::take();
    regroup(w, o0, n, &mut scratch.0);
    let sc = &scratch.0;
    for g0 in (0..n).step_by(GROUP) {
        let gn = GROUP.min(n - g0);
        for j in 0..gn {
            let at = w.start + (o0 + g0 + j) * w.so;
            let col = &w.data[at..at + d_in];
            let sg = &sc[(g0 / GROUP) * nb * GROUP..(g0 / GROUP + 1) * nb * GROUP];
            for r in 0..rows {
                let xr = &x[r * d_in..(r + 1) * d_in];
                // 64 lanes: four independent chains of multiply-adds, two blocks at a time.
                let mut acc = [0f32; 64];
                for p in 0..nb / 2 {
                    let c = p * 64;
                    // The next column's line at this offset (see `prefetch`).
                    prefetch(w.data.as_ptr().wrapping_add(at + w.so + c));
                    let (s0, s1) = (sg[2 * p * GROUP + j], sg[(2 * p + 1) * GROUP + j]);
                    let q: &[i8; 64] = col[c..c + 64].try_into().expect("64 bytes");
                    let xs: &[f32; 64] = xr[c..c + 64].try_into().expect("64 values");
                    for l in 0..32 {
                        acc[l] = madd::<FMA>(xs[l] * s0, q[l] as f32, acc[l]);
                    }
                    for l in 32..64 {
                        acc[l] = madd::<FMA>(xs[l] * s1, q[l] as f32, acc[l]);
                    }
                }
                if nb % 2 == 1 {
                    let c = (nb - 1) * 32;
                    let s0 = sg[(nb - 1) * GROUP + j];
                    let q: &[i8; 32] = col[c..c + 32].try_into().expect("32 bytes");
                    let xs: &[f32; 32] = xr[c..c + 32].try_into().expect("32 values");
                    for l in 0..32 {
                        acc[l] = madd::<FMA>(xs[l] * s0, q[l] as f32, acc[l]);
                    }
                }
                y[r * n + g0 + j] = acc.iter().sum();
            }
        }
    }
}

/// Any layout and block shape: each column's values gathered, then block by block.
fn dots_any<const FMA: bool>(w: &Weight, x: &[f32], rows: usize, o0: usize, y: &mut [f32]) {
    let d_in = w.d_in;
    let n = y.len() / rows.max(1);
    let mut q = vec![0f32; d_in];
    for c in 0..n {
        let o = o0 + c;
        let at = w.start + o * w.so;
        for (k, v) in q.iter_mut().enumerate() {
            *v = w.data[at + k * w.sk] as f32;
        }
        for r in 0..rows {
            let xr = &x[r * d_in..(r + 1) * d_in];
            let mut sum = 0f32;
            for kb in (0..d_in).step_by(w.bk) {
                let block = dot::<FMA>(&xr[kb..kb + w.bk], &q[kb..kb + w.bk]);
                sum = madd::<FMA>(block, w.scale(kb, o), sum);
            }
            y[r * n + c] = sum;
        }
    }
}

/// `[out, in]` bytes (each output's inputs contiguous) with `[in / 32, out]` scales, as the
/// loader's view holds them, for tests.
#[cfg(test)]
pub(super) fn test_weight(data: &[i8], scales: &[f32], d_in: usize, d_out: usize) -> Weight<'static> {
    tests::weight(data, scales, d_in, d_out, true)
}

/// Random bytes `[d_out, d_in]`, block scales `[d_in / 32, d_out]` and rows `[rows, d_in]`
/// in `[-1, 1)`, from `seed`, for tests.
#[cfg(test)]
pub(super) fn random_case(seed: u64, d_in: usize, d_out: usize, rows: usize) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let data: Vec<i8> = (0..d_in * d_out).map(|_| (next() % 256) as u8 as i8).collect();
    let scales: Vec<f32> = (0..d_in / 32 * d_out).map(|_| (next() % 1000) as f32 / 5e4).collect();
    let x: Vec<f32> = (0..rows * d_in).map(|_| (next() % 2000) as f32 / 1000.0 - 1.0).collect();
    (data, scales, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weight of random bytes in o-contiguous and k-contiguous storage, blocks of 32 along k.
    pub(super) fn weight(
        data: &[i8],
        scales: &[f32],
        d_in: usize,
        d_out: usize,
        k_contiguous: bool,
    ) -> Weight<'static> {
        let data: &'static [i8] = Box::leak(data.to_vec().into_boxed_slice());
        let scales: &'static [f32] = Box::leak(scales.to_vec().into_boxed_slice());
        let (sk, so) = if k_contiguous { (1, d_in) } else { (d_out, 1) };
        Weight { data, start: 0, sk, so, d_in, d_out, scales, bk: 32, bo: 1, nbo: d_out }
    }

    /// Every compiled variant of both loops equals the plain one and a direct sum in f64.
    #[test]
    fn variants_agree_with_a_direct_sum() {
        let (d_in, d_out, rows) = (96, 80, 3);
        let (data, scales, x) = random_case(7, d_in, d_out, rows);
        for k_contiguous in [false, true] {
            let w = weight(&data, &scales, d_in, d_out, k_contiguous);
            let mut want = vec![0f64; rows * d_out];
            for r in 0..rows {
                for o in 0..d_out {
                    want[r * d_out + o] = (0..d_in)
                        .map(|k| x[r * d_in + k] as f64 * w.data[k * w.sk + o * w.so] as f64 * w.scale(k, o) as f64)
                        .sum();
                }
            }
            let k = Kernel::pick();
            // The column loop reads o-contiguous bytes only; the dot loop reads any layout.
            let plain = Kernel { columns: columns::<false>, dots: dots::<false> };
            let mut outputs = vec![plain.dots(&w, &x, rows), k.dots(&w, &x, rows)];
            if !k_contiguous {
                outputs.extend([plain.columns(&w, &x, rows), k.columns(&w, &x, rows)]);
            }
            for got in outputs {
                let err = got.iter().zip(&want).fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
                let scale = want.iter().fold(0f64, |m, w| m.max(w.abs()));
                assert!(err / scale < 1e-5, "{k_contiguous}: {err} / {scale}");
            }
        }
    }
}
