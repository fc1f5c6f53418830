//! `x · w` on flex for a long block of rows (a prompt, the vision tower's 577
//! patches) with `w` in f32, f16 or bf16 held as the loader holds it: PyTorch's
//! `[out, in]` bytes behind the transposed view. The matmul library multiplies
//! by that view 2.5x slower at 64 rows than by a contiguous `[in, out]` (1.2x at
//! 643, more below 64: its packing reads the view across pages), and converts
//! bf16 operands to f32 in fresh buffers at every call. Here the weight is copied
//! once per call, tile by tile on every core, into a contiguous `[in, out]`
//! buffer kept between calls (a fresh one would be fresh pages, zeroed by the
//! kernel at first touch: as long as the copy), converted to the type the
//! library multiplies (bf16 to f32), and the library multiplies by that. The
//! buffer grows to the largest weight multiplied so and stays.

use std::sync::Mutex;

use burn::tensor::{DType, TensorData, bf16, f16};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::quantized::{Weight, float_tensor, rows_f32};

/// The contiguous copy of the weight, reused between calls.
static BUFFER: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Side of the square tiles the copy moves (a tile's rows and columns stay in L1).
const TILE: usize = 64;

/// `x: [rows, d_in]` · `w: [d_in, d_out]` (the view [`super::float::reads`] describes),
/// in `x`'s float type; `None` where the types differ (the caller converts).
pub fn matmul(x: FlexTensor, w: &FlexTensor) -> Option<FlexTensor> {
    let dtype = x.dtype();
    let rows = x.layout().shape()[0];
    let d_out = w.layout().shape()[1];
    let out = match (dtype, w.dtype()) {
        (DType::F32, DType::F32) => {
            let x = x.to_contiguous();
            let y = run::<f32, f32, _>(x.storage::<f32>(), w, |v| v);
            FlexTensor::from_data(TensorData::new(y, [rows, d_out]))
        }
        (DType::F16, DType::F16) => {
            let x = x.to_contiguous();
            let y = run::<f16, f16, _>(x.storage::<f16>(), w, |v| v);
            FlexTensor::from_data(TensorData::new(y, [rows, d_out]))
        }
        (DType::BF16, DType::BF16) => {
            // The library has no bf16 product: both operands in f32, the result back in bf16.
            let xf = rows_f32(x);
            let y = run::<bf16, f32, _>(&xf, w, |v: bf16| f32::from_bits(u32::from(v.to_bits()) << 16));
            float_tensor(TensorData::new(y, [rows, d_out]), dtype)
        }
        _ => return None,
    };
    Some(out)
}

/// `x · w` with `w`'s `S` values copied into a contiguous `[d_in, d_out]` of `T`.
fn run<S, T, F>(x: &[T], w: &FlexTensor, convert: F) -> Vec<T>
where
    F: Fn(S) -> T + Sync,
    S: bytemuck::Pod + Send + Sync + burn::tensor::Element,
    T: bytemuck::Pod + Send + Sync + Gemm,
{
    let layout = w.layout();
    let (d_in, d_out) = (layout.shape()[0], layout.shape()[1]);
    let (start, so) = (layout.start_offset(), layout.strides()[1] as usize);
    let src = w.storage::<S>();
    assert!(d_in == 0 || d_out == 0 || start + (d_out - 1) * so + d_in <= src.len(), "prefill: weight view");
    product(x, d_in, d_out, |k0, o, run: &mut [T]| {
        let (at, n) = (start + o * so + k0, run.len());
        for (v, s) in run.iter_mut().zip(&src[at..at + n]) {
            *v = convert(*s);
        }
    })
}

/// `x: [rows, d_in]` (8-bit rows as the values they stand for, or f32 activations) ·
/// a block-quantized `w`, dequantized into the contiguous buffer in f32 (exact: an f16
/// copy would round the products' operands, and converting to f16 costs more than the
/// wider copy), the result in `dtype`.
pub fn quantized(x: &[f32], w: &Weight, dtype: DType) -> FlexTensor {
    let (d_in, d_out) = (w.d_in, w.d_out);
    let rows = x.len() / d_in.max(1);
    let dequantize = |k0: usize, o: usize, run: &mut [f32]| {
        // A block's scale looked up once for its run of inputs.
        let mut i = 0;
        while i < run.len() {
            let k = k0 + i;
            let (s, end) = (w.scale(k, o), (i + w.bk - k % w.bk).min(run.len()));
            let at = w.start + k * w.sk + o * w.so;
            if w.sk == 1 {
                // The loader's layout: the block's bytes one run.
                for (v, b) in run[i..end].iter_mut().zip(&w.data[at..at + end - i]) {
                    *v = *b as f32 * s;
                }
            } else {
                for (j, v) in run[i..end].iter_mut().enumerate() {
                    *v = w.data[at + j * w.sk] as f32 * s;
                }
            }
            i = end;
        }
    };
    let y = product(x, d_in, d_out, dequantize);
    float_tensor(TensorData::new(y, [rows, d_out]), dtype)
}

/// `x: [rows, d_in]` · the weight that `fill(k0, o, run)` writes, a run of inputs
/// `[k0, k0 + run.len())` of output `o` at a time, into the contiguous buffer.
fn product<T, F>(x: &[T], d_in: usize, d_out: usize, fill: F) -> Vec<T>
where
    F: Fn(usize, usize, &mut [T]) + Sync,
    T: bytemuck::Pod + Send + Sync + Gemm,
{
    let rows = x.len() / d_in.max(1);
    let words = (d_in * d_out * size_of::<T>()).div_ceil(4);
    // Another thread multiplying at the same moment gets a buffer of its own.
    let mut own = Vec::new();
    let mut shared = BUFFER.try_lock();
    let buffer: &mut Vec<u32> = match shared.as_mut() {
        Ok(b) => b,
        Err(_) => &mut own,
    };
    if buffer.len() < words {
        buffer.resize(words, 0);
    }
    let dense: &mut [T] = &mut bytemuck::cast_slice_mut::<u32, T>(&mut buffer[..words])[..d_in * d_out];
    // A slab of TILE input rows per task, moved a TILE x TILE tile at a time through a
    // buffer in L1: TILE runs of TILE inputs read (one per output), TILE runs of TILE
    // outputs written (one per input), so each page visited yields a run, not one value.
    dense.par_chunks_mut(TILE * d_out).enumerate().for_each(|(t, slab)| {
        let k0 = t * TILE;
        let kn = slab.len() / d_out;
        let mut tile = [[T::zeroed(); TILE]; TILE];
        for o0 in (0..d_out).step_by(TILE) {
            let on = TILE.min(d_out - o0);
            for (c, column) in tile[..on].iter_mut().enumerate() {
                fill(k0, o0 + c, &mut column[..kn]);
            }
            for i in 0..kn {
                let row = &mut slab[i * d_out + o0..i * d_out + o0 + on];
                for (c, v) in row.iter_mut().enumerate() {
                    *v = tile[c][i];
                }
            }
        }
    });
    let mut y = vec![T::zeroed(); rows * d_out];
    // SAFETY: `x` is `[rows, d_in]`, `dense` `[d_in, d_out]` and `y` `[rows, d_out]`, all
    // contiguous row-major, and none overlaps another.
    unsafe { T::gemm(rows, d_out, d_in, y.as_mut_ptr(), x.as_ptr(), dense.as_ptr()) };
    y
}

/// The types the matmul library multiplies.
trait Gemm: Sized {
    /// `dst[m, n] = lhs[m, k] · rhs[k, n]`, all contiguous row-major, on every core.
    ///
    /// # Safety
    /// The pointers hold those shapes and do not overlap.
    unsafe fn gemm(m: usize, n: usize, k: usize, dst: *mut Self, lhs: *const Self, rhs: *const Self);
}

macro_rules! gemm_for {
    ($t:ty, $zero:expr, $one:expr) => {
        impl Gemm for $t {
            unsafe fn gemm(m: usize, n: usize, k: usize, dst: *mut Self, lhs: *const Self, rhs: *const Self) {
                let (n_, k_) = (n as isize, k as isize);
                // SAFETY: the caller's promise; strides of contiguous row-major matrices.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        dst,
                        1,
                        n_,
                        false,
                        lhs,
                        1,
                        k_,
                        rhs,
                        1,
                        n_,
                        $zero,
                        $one,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(0),
                    )
                }
            }
        }
    };
}

gemm_for!(f32, 0.0, 1.0);
gemm_for!(f16, f16::ZERO, f16::ONE);
