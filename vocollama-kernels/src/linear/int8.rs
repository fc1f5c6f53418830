//! Block-quantized weights against half-precision activations in integer
//! arithmetic, as GGML multiplies Q8_0 (and Q4_0) by Q8_0: each row is quantized
//! to 8 bits in blocks of 32 (one f32 scale a block, symmetric, round to
//! nearest), each block's 32 byte products are summed exactly in i32 — 64
//! products an instruction where the CPU has AVX-512 VNNI — and the sums are
//! scaled by both blocks' scales as they are added in f32. Converting every
//! weight byte to f32 (the exact path) costs more instructions than reading it;
//! this path reads a token's weights at memory speed. Longer blocks of rows
//! multiply the values the 8-bit blocks stand for ([`Rows8::values`]), so every
//! row count sees the same layer. Taken for f16 and bf16 activations (a
//! quantized model's default), whose own rounding is of the order of the rows'
//! 8-bit rounding; f32 activations keep the exact path.

use super::quantized::{Scratch, Weight, by_columns};
#[cfg(target_arch = "x86_64")]
use crate::cpu::prefetch;

/// The block size of the rows (and of the weights this path reads).
pub const BLOCK: usize = 32;

/// The most rows this path multiplies. A block of rows reads each weight vector once
/// for up to four rows and again for the next four, from cache; the alternative
/// dequantizes the whole weight into f32 and runs the matmul library. One 4096 → 11008
/// q8 projection (`cargo bench -p vocollama-benches --bench linear`): 6.5 against 27.5 ms
/// at 17 rows, 22.8 against 44.5 at 64, 53.5 against 62.2 at 128, 104 against 92 at 256.
pub const MAX_ROWS: usize = 128;

/// Rows quantized in blocks of [`BLOCK`]: value `q[r · stride + k]`, scale `d[r · nb + b]`,
/// each row's bytes padded with zeros to whole pairs of blocks (64 bytes, one vector).
pub struct Rows8 {
    q: Vec<i8>,
    d: Vec<f32>,
    rows: usize,
    nb: usize,
    stride: usize,
}

impl Rows8 {
    /// `x: [rows, d_in]` (row-major f32, `d_in` a multiple of [`BLOCK`]) in 8 bits a value.
    pub fn quantize(x: &[f32], rows: usize, d_in: usize) -> Self {
        let nb = d_in / BLOCK;
        let stride = nb.div_ceil(2) * 2 * BLOCK;
        let mut q = vec![0i8; rows * stride];
        let mut d = vec![0f32; rows * nb];
        for r in 0..rows {
            for b in 0..nb {
                let block = &x[r * d_in + b * BLOCK..r * d_in + (b + 1) * BLOCK];
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = amax / 127.0;
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                d[r * nb + b] = scale;
                for (o, v) in q[r * stride + b * BLOCK..].iter_mut().zip(block) {
                    *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
                }
            }
        }
        Rows8 { q, d, rows, nb, stride }
    }

    /// The value row `r`'s 8-bit block stands for at `k`.
    pub fn value(&self, r: usize, k: usize) -> f32 {
        self.q[r * self.stride + k] as f32 * self.d[r * self.nb + k / BLOCK]
    }

    /// Every value the blocks stand for, `[rows, d_in]` row-major (for the float loops).
    pub fn values(&self) -> Vec<f32> {
        let d_in = self.nb * BLOCK;
        (0..self.rows).flat_map(|r| (0..d_in).map(move |k| self.value(r, k))).collect()
    }
}

/// `x · w` for the quantized rows `x` and a weight of k-contiguous signed bytes in blocks
/// of [`BLOCK`] along k (flex's, see [`takes`]), `[rows, d_out]` in f32, on any CPU.
pub fn matmul(w: &Weight, x: &Rows8) -> Vec<f32> {
    assert_eq!(x.nb * BLOCK, w.d_in, "int8 matmul: rows of {} values against {} inputs", x.nb * BLOCK, w.d_in);
    by_columns(w.d_out, x.rows, |o0, y| portable(w, x, o0, y))
}

/// Whether [`matmul`] reads `w`: each output's bytes contiguous, blocks of [`BLOCK`] along k.
pub fn takes(w: &Weight) -> bool {
    w.sk == 1 && w.bo == 1 && w.bk == BLOCK && w.d_in.is_multiple_of(BLOCK)
}

/// Any CPU: each block's products summed in i32, scaled and added in f32.
fn portable(w: &Weight, x: &Rows8, o0: usize, y: &mut [f32]) {
    let (nb, rows) = (x.nb, x.rows);
    let n = y.len() / rows.max(1);
    for c in 0..n {
        let o = o0 + c;
        let at = w.start + o * w.so;
        let col = &w.data[at..at + w.d_in];
        for r in 0..rows {
            let mut sum = 0f32;
            for b in 0..nb {
                let qw = &col[b * BLOCK..(b + 1) * BLOCK];
                let qx = &x.q[r * x.stride + b * BLOCK..];
                let dot: i32 = qw.iter().zip(qx).map(|(a, b)| i32::from(*a) * i32::from(*b)).sum();
                sum += dot as f32 * (w.scales[b * w.nbo + o] * x.d[r * nb + b]);
            }
            y[r * n + c] = sum;
        }
    }
}

/// A packed weight's columns as [`matmul_packed`] streams them: column `o`'s values at
/// `data[o · stride..]`, unsigned (`q + 128`, a byte each; or `q4`: `q + 8`, a nibble
/// each, per pair of blocks 32 bytes, value `j` of the pair in byte `j % 32`, the low
/// nibble for `j < 32`), whole pairs of blocks (a missing block's values are zeros);
/// block `b`'s scale at `scales[o · nb + b]`.
pub struct Packed<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub scales: &'a [f32],
    pub nb: usize,
    pub d_out: usize,
    pub q4: bool,
}

impl Packed<'_> {
    /// What a value is held as, over its signed value.
    pub fn offset(&self) -> i32 {
        if self.q4 { 8 } else { 128 }
    }

    /// Bytes of a column.
    pub fn span(&self) -> usize {
        column_bytes(self.nb, self.q4)
    }
}

/// Bytes of a packed column of `nb` blocks (whole pairs of blocks, see [`Packed`]).
pub fn column_bytes(nb: usize, q4: bool) -> usize {
    nb.div_ceil(2) * if q4 { 32 } else { 64 }
}

/// `x · w` for the quantized rows `x` and a packed weight, `[rows, d_out]` in f32; `None`
/// on a CPU without AVX-512 VNNI (the caller unpacks the values and takes [`matmul`]).
pub fn matmul_packed(w: &Packed, x: &Rows8) -> Option<Vec<f32>> {
    assert_eq!(x.nb, w.nb, "int8 matmul: rows of {} blocks against {}", x.nb, w.nb);
    assert!(w.stride >= w.span() && w.data.len() >= w.d_out * w.stride && w.scales.len() >= w.d_out * w.nb);
    #[cfg(target_arch = "x86_64")]
    if packed_loop() {
        // SAFETY: the CPU has AVX-512 F, BW and VNNI (`packed_loop`).
        return Some(by_columns(w.d_out, x.rows, |o0, y| unsafe { vnni::columns(w, x, o0, y) }));
    }
    None
}

/// Whether this CPU runs [`matmul_packed`]'s loop (AVX-512 F, BW and VNNI).
pub fn packed_loop() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::*;
    use std::arch::x86_64::*;

    /// Columns `[o0, o0 + n)`, four at a time (four weight streams in flight, each row's
    /// bytes loaded once for the four), two blocks (64 values) a step: their products
    /// summed by `vpdpbusd` (the weight's unsigned bytes times the row's signed ones; the
    /// offset's share, offset · Σ x, depends on the row only, and starts each sum negated),
    /// each block's eight partial sums scaled by its two scales into 16 f32 lanes. Up to
    /// four rows share each loaded weight vector. The sums are the exact integer products,
    /// as in [`portable`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn columns(w: &Packed, x: &Rows8, o0: usize, y: &mut [f32]) {
        let (nb, rows) = (x.nb, x.rows);
        let n = y.len() / rows.max(1);
        let pairs = nb.div_ceil(2);
        let mut scratch = Scratch::take();
        let buf = &mut scratch.0;
        // Per row and pair of blocks: the row's two scales spread over the lanes they scale,
        // and −offset · (the sum of each lane's four values) as f32 bits, the sums' start.
        buf.clear();
        buf.resize(2 * rows * pairs * 16, 0.0);
        let (dx, start) = buf.split_at_mut(rows * pairs * 16);
        for r in 0..rows {
            for b in 0..nb {
                let at = (r * pairs + b / 2) * 16 + (b % 2) * 8;
                dx[at..at + 8].fill(x.d[r * nb + b]);
            }
            for (lane, s) in start[r * pairs * 16..(r + 1) * pairs * 16].iter_mut().enumerate() {
                let q = &x.q[r * x.stride + 4 * lane..r * x.stride + 4 * lane + 4];
                let sum: i32 = q.iter().map(|v| i32::from(*v)).sum();
                *s = f32::from_bits((-w.offset() * sum) as u32);
            }
        }
        let mut c = 0;
        while c < n {
            let cols = if c + 4 <= n { 4 } else { 1 };
            let o = o0 + c;
            let block = Columns {
                data: &w.data[o * w.stride..(o + cols - 1) * w.stride + w.span()],
                stride: w.stride,
                scales: &w.scales[o * nb..(o + cols) * nb],
                nb,
            };
            let mut r = 0;
            while r < rows {
                let take = (rows - r).min(4);
                let mut out = [[0f32; 4]; 4];
                // SAFETY: the features are this function's; bounds are checked inside.
                unsafe {
                    match (w.q4, cols) {
                        (false, 4) => block.rows::<4, false>(x, dx, start, r, take, &mut out),
                        (false, _) => block.rows::<1, false>(x, dx, start, r, take, &mut out),
                        (true, 4) => block.rows::<4, true>(x, dx, start, r, take, &mut out),
                        (true, _) => block.rows::<1, true>(x, dx, start, r, take, &mut out),
                    }
                }
                for (k, col) in out[..cols].iter().enumerate() {
                    for (i, v) in col[..take].iter().enumerate() {
                        y[(r + i) * n + c + k] = *v;
                    }
                }
                r += take;
            }
            c += cols;
        }
    }

    /// Adjacent columns: column `k`'s values at `data[k · stride..]`, its block `b`'s scale
    /// at `scales[k · nb + b]`.
    struct Columns<'a> {
        data: &'a [u8],
        stride: usize,
        scales: &'a [f32],
        nb: usize,
    }

    impl Columns<'_> {
        /// [`Self::dots`] for `take` (1 to 4) rows from `r0`.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        unsafe fn rows<const C: usize, const Q4: bool>(
            &self,
            x: &Rows8,
            dx: &[f32],
            start: &[f32],
            r0: usize,
            take: usize,
            out: &mut [[f32; 4]; 4],
        ) {
            // SAFETY: the same features; `dots` checks its bounds.
            unsafe {
                match take {
                    4 => self.dots::<C, 4, Q4>(x, dx, start, r0, out),
                    3 => self.dots::<C, 3, Q4>(x, dx, start, r0, out),
                    2 => self.dots::<C, 2, Q4>(x, dx, start, r0, out),
                    _ => self.dots::<C, 1, Q4>(x, dx, start, r0, out),
                }
            }
        }

        /// `C` columns against rows `[r0, r0 + R)`: `out[k][i]` for column k, row r0 + i;
        /// the columns' values a byte each, or a nibble each (`Q4`).
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        unsafe fn dots<const C: usize, const R: usize, const Q4: bool>(
            &self,
            x: &Rows8,
            dx: &[f32],
            start: &[f32],
            r0: usize,
            out: &mut [[f32; 4]; 4],
        ) {
            let nb = self.nb;
            let pairs = nb.div_ceil(2);
            let step = if Q4 { 32 } else { 64 };
            assert!(C <= 4 && R <= 4 && nb > 0 && C * nb <= self.scales.len());
            assert!(self.data.len() >= (C - 1) * self.stride + pairs * step);
            assert!((r0 + R) * pairs * 16 <= dx.len().min(start.len()) && x.stride >= pairs * 64);
            assert!((r0 + R) * x.stride <= x.q.len());
            let low = _mm256_set1_epi8(0x0F);
            let mut acc = [[_mm512_setzero_ps(); R]; C];
            for p in 0..pairs {
                let b = 2 * p;
                let mut qx = [_mm512_setzero_si512(); R];
                let mut d = [_mm512_setzero_ps(); R];
                let mut s = [_mm512_setzero_si512(); R];
                for i in 0..R {
                    // SAFETY: rows are padded to whole pairs and the buffers hold them (asserted above).
                    unsafe {
                        qx[i] = _mm512_loadu_si512(x.q.as_ptr().add((r0 + i) * x.stride + p * 64).cast());
                        let at = ((r0 + i) * pairs + p) * 16;
                        d[i] = _mm512_loadu_ps(dx.as_ptr().add(at));
                        s[i] = _mm512_castps_si512(_mm512_loadu_ps(start.as_ptr().add(at)));
                    }
                }
                for (k, acc) in acc.iter_mut().enumerate() {
                    let at = k * self.stride + p * step;
                    // The next columns' line at this offset (see `prefetch`).
                    prefetch(self.data.as_ptr().wrapping_add(at + C * self.stride));
                    // SAFETY: the loads read only bytes inside the column (asserted above).
                    let qw = unsafe {
                        if Q4 {
                            // The low nibbles are the pair's first 32 values, the high ones the next.
                            let v = _mm256_loadu_si256(self.data.as_ptr().add(at).cast());
                            let lo = _mm256_and_si256(v, low);
                            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                            _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
                        } else {
                            _mm512_loadu_si512(self.data.as_ptr().add(at).cast())
                        }
                    };
                    // A missing second block (an odd count) has zero rows and zero scales.
                    let s0 = _mm512_set1_ps(self.scales[k * nb + b]);
                    let s1 = if b + 1 < nb { _mm512_set1_ps(self.scales[k * nb + b + 1]) } else { s0 };
                    let sw = _mm512_mask_mov_ps(s0, 0xFF00, s1);
                    for i in 0..R {
                        let sums = _mm512_dpbusd_epi32(s[i], qw, qx[i]);
                        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(sw, d[i]), acc[i]);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable loop equals a direct sum in f64 over the rows as quantized, and the
    /// rows' quantization stays within half a step of each block's scale. (The packed loop
    /// is compared with it in `tests/linear.rs`.)
    #[test]
    fn portable_agrees_with_a_direct_sum_of_the_quantized_rows() {
        for (d_in, d_out, rows) in [(96, 80, 1), (128, 40, 3), (64, 17, 6)] {
            let (data, scales, xf) = super::super::quantized::random_case(11 + d_in as u64, d_in, d_out, rows);
            let w = super::super::quantized::test_weight(&data, &scales, d_in, d_out);
            let x = Rows8::quantize(&xf, rows, d_in);
            for r in 0..rows {
                for k in 0..d_in {
                    let step = x.d[r * x.nb + k / BLOCK];
                    assert!((x.value(r, k) - xf[r * d_in + k]).abs() <= 0.5 * step * 1.0001);
                }
            }
            let mut want = vec![0f64; rows * d_out];
            for r in 0..rows {
                for o in 0..d_out {
                    want[r * d_out + o] = (0..d_in)
                        .map(|k| x.value(r, k) as f64 * w.data[o * d_in + k] as f64 * w.scale(k, o) as f64)
                        .sum();
                }
            }
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let got = matmul(&w, &x);
            let err = got.iter().zip(&want).fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
            assert!(err / scale < 1e-5, "{d_in}x{d_out} rows {rows}: {err} / {scale}");
        }
    }
}
