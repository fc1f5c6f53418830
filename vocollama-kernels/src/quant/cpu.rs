//! `x · w` on flex with `w` quantized in blocks: flex holds one signed byte a
//! value (q8 and q4 alike) and one f32 scale a block, in the block grid of the
//! tensor's logical shape (`scale(k, o) = scales[(k / bk) · nbo + o / bo]`).

use burn::backend::TensorMetadata;
use burn::backend::quantization::{QuantScheme, global_scale_dtype};
use burn::tensor::{DType, TensorData, bf16, f16};
use burn_flex::{FlexQTensor, FlexTensor};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// The most rows multiplied with the quantized bytes directly; a longer block
/// dequantizes the weight once and runs the float matmul, whose blocking wins there.
pub const MAX_FUSED_ROWS: usize = 16;

/// Output columns per task (a multiple of 16, for whole vectors).
const COLUMNS: usize = 64;

/// The weight as the kernels read it: `value(k, o) = data[start + k·sk + o·so]`.
struct Weight<'a> {
    data: &'a [i8],
    start: usize,
    sk: usize,
    so: usize,
    d_in: usize,
    d_out: usize,
    scales: &'a [f32],
    /// Block extent along k and o, and the number of blocks along o.
    bk: usize,
    bo: usize,
    nbo: usize,
}

impl Weight<'_> {
    fn scale(&self, k: usize, o: usize) -> f32 {
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

pub fn quantized_matmul(x: FlexTensor, w: FlexQTensor) -> FlexTensor {
    let dtype = x.dtype();
    let xs = x.layout().shape().to_vec();
    let ws = w.tensor().layout().shape().to_vec();
    assert!(xs.len() == 2 && ws.len() == 2 && xs[1] == ws[0], "quantized matmul: [r, k] · [k, n], got {xs:?} · {ws:?}");
    let (rows, d_in, d_out) = (xs[0], ws[0], ws[1]);
    let DType::QFloat(scheme) = w.dtype() else { unreachable!("a quantized tensor") };
    let layout = w.tensor().layout();
    let strides = layout.strides();
    let grid = blocks(&scheme, d_in, d_out);
    let (Some((bk, bo, nbo)), true) = (grid, strides.iter().all(|&s| s >= 0)) else {
        // Not a layout these loops read: Burn's own dequantization, then the float matmul.
        let w = <burn_flex::Flex as burn::backend::ops::QTensorOps<burn_flex::Flex>>::dequantize(w, float_of(dtype));
        return burn_flex::ops::matmul::matmul(x, w);
    };
    let weight = Weight {
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
    };
    if rows > MAX_FUSED_ROWS {
        let dense = dequantize(&weight, dtype);
        return burn_flex::ops::matmul::matmul(x, dense);
    }
    let xf = rows_f32(x);
    let y = if weight.so == 1 || d_out == 1 {
        Kernel::pick().columns(&weight, &xf, rows)
    } else {
        Kernel::pick().dots(&weight, &xf, rows)
    };
    let data = TensorData::new(y, [rows, d_out]);
    FlexTensor::from_data(match dtype {
        DType::F32 => data,
        DType::F16 => data.convert::<f16>(),
        DType::BF16 => data.convert::<bf16>(),
        other => panic!("quantized matmul: unsupported float type {other:?}"),
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
fn rows_f32(x: FlexTensor) -> Vec<f32> {
    let x = x.to_contiguous();
    match x.dtype() {
        DType::F32 => x.storage::<f32>().to_vec(),
        DType::F16 => {
            let s = x.storage::<f16>();
            let mut out = vec![0f32; s.len()];
            s.convert_to_f32_slice(&mut out);
            out
        }
        DType::BF16 => {
            let s = x.storage::<bf16>();
            let mut out = vec![0f32; s.len()];
            s.convert_to_f32_slice(&mut out);
            out
        }
        other => panic!("quantized matmul: unsupported float type {other:?}"),
    }
}

/// The weight in `dtype`, `[d_in, d_out]`, laid out as the quantized bytes are
/// (o-contiguous, or a transposed view of k-contiguous rows), dequantized on every core.
fn dequantize(w: &Weight, dtype: DType) -> FlexTensor {
    // Lines along the storage's contiguous dimension: (line count, line length, value at (line, i)).
    let k_lines = w.so != 1 && w.sk == 1;
    let (lines, len) = if k_lines { (w.d_out, w.d_in) } else { (w.d_in, w.d_out) };
    let mut out = vec![0f32; lines * len];
    out.par_chunks_mut(len).enumerate().for_each(|(line, dst)| {
        for (i, d) in dst.iter_mut().enumerate() {
            let (k, o) = if k_lines { (i, line) } else { (line, i) };
            *d = w.data[w.start + k * w.sk + o * w.so] as f32 * w.scale(k, o);
        }
    });
    let shape = if k_lines { [w.d_out, w.d_in] } else { [w.d_in, w.d_out] };
    let data = TensorData::new(out, shape);
    let t = FlexTensor::from_data(match dtype {
        DType::F16 => data.convert::<f16>(),
        DType::BF16 => data.convert::<bf16>(),
        _ => data,
    });
    if k_lines { t.transpose(0, 1) } else { t }
}

/// The two loops compiled for the widest vector instructions the CPU has (the
/// byte-to-float conversions and multiply-adds are the work), picked per call.
struct Kernel {
    columns: fn(&Weight, &[f32], usize) -> Vec<f32>,
    dots: fn(&Weight, &[f32], usize) -> Vec<f32>,
}

impl Kernel {
    fn pick() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, checked just above.
                return Self {
                    columns: |w, x, r| unsafe { columns_avx512(w, x, r) },
                    dots: |w, x, r| unsafe { dots_avx512(w, x, r) },
                };
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA, checked just above.
                return Self {
                    columns: |w, x, r| unsafe { columns_avx2(w, x, r) },
                    dots: |w, x, r| unsafe { dots_avx2(w, x, r) },
                };
            }
        }
        Self { columns: columns::<false>, dots: dots::<false> }
    }

    fn columns(&self, w: &Weight, x: &[f32], rows: usize) -> Vec<f32> {
        (self.columns)(w, x, rows)
    }

    fn dots(&self, w: &Weight, x: &[f32], rows: usize) -> Vec<f32> {
        (self.dots)(w, x, rows)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn columns_avx512(w: &Weight, x: &[f32], rows: usize) -> Vec<f32> {
    columns::<true>(w, x, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn columns_avx2(w: &Weight, x: &[f32], rows: usize) -> Vec<f32> {
    columns::<true>(w, x, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn dots_avx512(w: &Weight, x: &[f32], rows: usize) -> Vec<f32> {
    dots::<true>(w, x, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(w: &Weight, x: &[f32], rows: usize) -> Vec<f32> {
    dots::<true>(w, x, rows)
}

#[inline(always)]
fn mul_add<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// o-contiguous bytes: each task owns `COLUMNS` output columns and walks k, adding
/// `x[r, k] · value(k, o)` over a block along k before scaling it once.
#[inline(always)]
fn columns<const FMA: bool>(w: &Weight, x: &[f32], rows: usize) -> Vec<f32> {
    let (d_in, d_out) = (w.d_in, w.d_out);
    let tasks: Vec<(usize, Vec<f32>)> = (0..d_out.div_ceil(COLUMNS))
        .into_par_iter()
        .map(|t| {
            let o0 = t * COLUMNS;
            let n = COLUMNS.min(d_out - o0);
            let mut y = vec![0f32; rows * n];
            let mut acc = vec![0f32; rows * n];
            let mut q = vec![0f32; n];
            let mut scale = vec![0f32; n];
            for kb in (0..d_in).step_by(w.bk) {
                acc.iter_mut().for_each(|a| *a = 0.0);
                for k in kb..kb + w.bk {
                    let at = w.start + k * w.sk + o0 * w.so;
                    for (v, b) in q.iter_mut().zip(&w.data[at..at + n]) {
                        *v = *b as f32;
                    }
                    for r in 0..rows {
                        let xr = x[r * d_in + k];
                        for (a, v) in acc[r * n..(r + 1) * n].iter_mut().zip(&q) {
                            *a = mul_add::<FMA>(xr, *v, *a);
                        }
                    }
                }
                for (c, s) in scale.iter_mut().enumerate() {
                    *s = w.scale(kb, o0 + c);
                }
                for r in 0..rows {
                    for ((yv, a), s) in y[r * n..(r + 1) * n].iter_mut().zip(&acc[r * n..(r + 1) * n]).zip(&scale) {
                        *yv = mul_add::<FMA>(*a, *s, *yv);
                    }
                }
            }
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

/// k-contiguous bytes: each output column is one dot product per row over a
/// contiguous run of bytes, block by block along k, each block's sum scaled once.
#[inline(always)]
fn dots<const FMA: bool>(w: &Weight, x: &[f32], rows: usize) -> Vec<f32> {
    let (d_in, d_out) = (w.d_in, w.d_out);
    let tasks: Vec<(usize, Vec<f32>)> = (0..d_out.div_ceil(COLUMNS))
        .into_par_iter()
        .map(|t| {
            let o0 = t * COLUMNS;
            let n = COLUMNS.min(d_out - o0);
            let mut y = vec![0f32; rows * n];
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
                        sum = mul_add::<FMA>(block, w.scale(kb, o), sum);
                    }
                    y[r * n + c] = sum;
                }
            }
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

/// Σ a·b with sixteen independent partial sums (one vector's worth of lanes).
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] = mul_add::<FMA>(x[i], y[i], acc[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s = mul_add::<FMA>(*x, *y, s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weight of random bytes in o-contiguous and k-contiguous storage, blocks of 32 along k.
    fn weight(data: &[i8], scales: &[f32], d_in: usize, d_out: usize, k_contiguous: bool) -> Weight<'static> {
        let data: &'static [i8] = Box::leak(data.to_vec().into_boxed_slice());
        let scales: &'static [f32] = Box::leak(scales.to_vec().into_boxed_slice());
        let (sk, so) = if k_contiguous { (1, d_in) } else { (d_out, 1) };
        Weight { data, start: 0, sk, so, d_in, d_out, scales, bk: 32, bo: 1, nbo: d_out }
    }

    /// Every compiled variant of both loops equals the plain one and a direct sum in f64.
    #[test]
    fn variants_agree_with_a_direct_sum() {
        let (d_in, d_out, rows) = (96, 80, 3);
        let mut s = 7u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let data: Vec<i8> = (0..d_in * d_out).map(|_| (next() % 255) as i32 as i8).collect();
        let scales: Vec<f32> = (0..d_in / 32 * d_out).map(|_| (next() % 1000) as f32 / 5e4).collect();
        let x: Vec<f32> = (0..rows * d_in).map(|_| (next() % 2000) as f32 / 1000.0 - 1.0).collect();
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
            let mut outputs = vec![dots::<false>(&w, &x, rows), k.dots(&w, &x, rows)];
            if !k_contiguous {
                outputs.extend([columns::<false>(&w, &x, rows), k.columns(&w, &x, rows)]);
            }
            for got in outputs {
                let err = got.iter().zip(&want).fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
                let scale = want.iter().fold(0f64, |m, w| m.max(w.abs()));
                assert!(err / scale < 1e-5, "{k_contiguous}: {err} / {scale}");
            }
        }
    }
}
