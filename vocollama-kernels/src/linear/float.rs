//! `x · w` on flex with `w` in f32, f16 or bf16 held as the loader holds it: PyTorch's
//! `[out, in]` bytes behind the transposed view, so each output's inputs are one
//! contiguous run. The matmul library treats one row like a large product (and
//! flex's bf16 matmul converts both operands to f32 first), and multiplies by the
//! view slower than by a contiguous weight. Here, with AVX-512, a short block of
//! rows (decoding, the server's batched streams) reads each weight once, converted
//! to f32 in registers, and a longer one (a question, a prompt, the vision tower's
//! patches) goes to [`super::gemm`]'s tiles; elsewhere up to [`MAX_ROWS`] rows read
//! a column at a time converted in L1, and longer blocks go to [`super::prefill`].

use super::quantized::{by_columns, float_tensor, rows_f32};
use crate::cpu::{Elem, dot, madd};
use burn::tensor::{DType, TensorData, bf16, f16};
use burn_flex::FlexTensor;

/// The most rows this path multiplies without AVX-512 (one column at a time, each
/// row's dot product with it), beyond which a contiguous copy of the weight and the
/// matmul library ([`super::prefill`]) are faster.
pub const MAX_ROWS: usize = 64;

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

/// Whether this path multiplies any number of rows by `w` (`[d_in, d_out]`, see
/// [`reads`]): with AVX-512 (F and VL) and `d_in` a multiple of 16.
pub fn any_rows(w: &FlexTensor) -> bool {
    #[cfg(target_arch = "x86_64")]
    return w.layout().shape()[0].is_multiple_of(16) && avx512();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
pub(super) fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl")
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

fn run<E: Elem + vector::Lanes>(w: &FlexTensor, x: &[f32], rows: usize) -> Vec<f32> {
    let layout = w.layout();
    let (d_in, d_out) = (layout.shape()[0], layout.shape()[1]);
    let (start, so) = (layout.start_offset(), layout.strides()[1] as usize);
    let data = w.storage::<E>();
    #[cfg(target_arch = "x86_64")]
    if any_rows(w) {
        if rows <= vector::STREAM_ROWS {
            // SAFETY: the CPU has AVX-512F and VL, checked by `any_rows`.
            return by_columns(d_out, rows, |o0, y| unsafe { vector::columns(data, start + o0 * so, so, d_in, x, y) });
        }
        let w = super::gemm::Float::new(data, start, so, d_in, d_out);
        // SAFETY: `d_in` is a multiple of 16 and the CPU has AVX-512F and VL (`any_rows`).
        return unsafe { super::gemm::multiply(&w, x, rows, d_in, d_out) };
    }
    let dot = dot_kernel();
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

/// [`dot`] (64 lanes) compiled for the widest vector instructions the CPU has.
fn dot_kernel() -> fn(&[f32], &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return |a, b| unsafe { dot_avx512(a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return |a, b| unsafe { dot_avx2(a, b) };
        }
    }
    dot::<false>
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    dot64::<true>(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot64::<true>(a, b)
}

/// Σ a·b over 64 lanes (four vectors' independent chains), then the tail.
#[inline(always)]
fn dot64<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 64];
    let (ca, cb) = (a.chunks_exact(64), b.chunks_exact(64));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        let (x, y): (&[f32; 64], &[f32; 64]) = (x.try_into().expect("64"), y.try_into().expect("64"));
        for i in 0..64 {
            acc[i] = madd::<FMA>(x[i], y[i], acc[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s = madd::<FMA>(*x, *y, s);
    }
    s
}

/// The loops in AVX-512: four columns at a time (four weight streams in flight, the
/// next four asked for ahead), 16 values a step converted in registers, up to four rows
/// sharing each converted vector.
pub(super) mod vector {
    use crate::cpu::Elem;

    /// A float type read as 16 f32 lanes.
    pub trait Lanes: Elem {
        /// # Safety
        /// `p` points at 16 readable values, and the CPU has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
    }

    #[cfg(not(target_arch = "x86_64"))]
    impl<E: Elem> Lanes for E {}

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::Lanes;
        use burn::tensor::{bf16, f16};
        use std::arch::x86_64::*;

        impl Lanes for f32 {
            #[inline]
            #[target_feature(enable = "avx512f")]
            unsafe fn load16(p: *const f32) -> __m512 {
                // SAFETY: the caller's promise.
                unsafe { _mm512_loadu_ps(p) }
            }
        }

        impl Lanes for f16 {
            #[inline]
            #[target_feature(enable = "avx512f")]
            unsafe fn load16(p: *const f16) -> __m512 {
                // SAFETY: the caller's promise.
                unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
            }
        }

        impl Lanes for bf16 {
            #[inline]
            #[target_feature(enable = "avx512f")]
            unsafe fn load16(p: *const bf16) -> __m512 {
                // A bf16 is the top half of an f32.
                // SAFETY: the caller's promise.
                unsafe {
                    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast())), 16))
                }
            }
        }
    }

    /// Columns `c` of `[o0, o0 + n)` at `data[at + c · so..][..d_in]` against the rows of
    /// `x: [rows, d_in]`, into `y: [rows, n]`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl")]
    pub unsafe fn columns<E: Lanes>(data: &[E], at: usize, so: usize, d_in: usize, x: &[f32], y: &mut [f32]) {
        let rows = x.len() / d_in;
        let n = y.len() / rows.max(1);
        let mut c = 0;
        while c < n {
            let cols = if c + 4 <= n { 4 } else { 1 };
            let col = at + c * so;
            assert!(col + (cols - 1) * so + d_in <= data.len());
            let mut r = 0;
            while r < rows {
                let take = (rows - r).min(4);
                let mut out = [[0f32; 4]; 4];
                let xr = &x[r * d_in..(r + take) * d_in];
                // SAFETY: the columns are inside `data` (asserted above), the rows inside `x`.
                unsafe {
                    match (cols, take) {
                        (4, 4) => dots::<E, 4, 4>(data, col, so, d_in, xr, &mut out),
                        (4, 3) => dots::<E, 4, 3>(data, col, so, d_in, xr, &mut out),
                        (4, 2) => dots::<E, 4, 2>(data, col, so, d_in, xr, &mut out),
                        (4, _) => dots::<E, 4, 1>(data, col, so, d_in, xr, &mut out),
                        (_, 4) => dots::<E, 1, 4>(data, col, so, d_in, xr, &mut out),
                        (_, 3) => dots::<E, 1, 3>(data, col, so, d_in, xr, &mut out),
                        (_, 2) => dots::<E, 1, 2>(data, col, so, d_in, xr, &mut out),
                        _ => dots::<E, 1, 1>(data, col, so, d_in, xr, &mut out),
                    }
                }
                for (k, v) in out[..cols].iter().enumerate() {
                    for (i, v) in v[..take].iter().enumerate() {
                        y[(r + i) * n + c + k] = *v;
                    }
                }
                r += take;
            }
            c += cols;
        }
    }

    /// The most rows [`columns`] takes, four a pass over columns it keeps in cache:
    /// a few rows are bound by reading the weight once, which it streams whole; more
    /// are bound by multiply-adds, which [`super::super::gemm`]'s tiles feed from the
    /// caches (one 4096 → 11008 projection in f32: 8 rows 8.5 against 12.1 ms, 17 rows
    /// 14.8 / 15.8, 64 rows 36.1 / 27.1).
    pub const STREAM_ROWS: usize = 16;

    /// `C` columns from `data[col..]` (stride `so`) against the `R` rows of `x`.
    ///
    /// # Safety
    /// The columns lie inside `data`, `x` holds `R · d_in` values, `d_in` is a multiple of
    /// 16, and the CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl")]
    unsafe fn dots<E: Lanes, const C: usize, const R: usize>(
        data: &[E],
        col: usize,
        so: usize,
        d_in: usize,
        x: &[f32],
        out: &mut [[f32; 4]; 4],
    ) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); R]; C];
        let base = data.as_ptr().wrapping_add(col);
        for k in (0..d_in).step_by(16) {
            let mut xs = [_mm512_setzero_ps(); R];
            for (i, v) in xs.iter_mut().enumerate() {
                // SAFETY: row i's values k..k + 16 are inside `x` (the caller's promise).
                *v = unsafe { _mm512_loadu_ps(x.as_ptr().add(i * d_in + k)) };
            }
            for (j, acc) in acc.iter_mut().enumerate() {
                let p = base.wrapping_add(j * so + k);
                // The next columns' line at this offset (see `prefetch`).
                crate::cpu::prefetch(p.wrapping_add(C * so));
                // SAFETY: inside the column (the caller's promise).
                let wv = unsafe { E::load16(p) };
                for (a, xv) in acc.iter_mut().zip(&xs) {
                    *a = _mm512_fmadd_ps(wv, *xv, *a);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            for (v, a) in o.iter_mut().zip(a) {
                *v = _mm512_reduce_add_ps(a);
            }
        }
    }
}
