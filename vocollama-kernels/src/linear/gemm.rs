//! `x · w` on flex for a block of rows too long for the streaming loops (a question,
//! a prompt, the vision tower's patches) with `w` held as the loader holds it:
//! PyTorch's `[out, in]` bytes behind the transposed view, in f32, f16 or bf16
//! ([`Float`]) or quantized in blocks along the inputs ([`Quantized`]). The product
//! is a sum of outer products, as the BLAS libraries compute it: the rows are packed
//! once per call in panels of twelve (the twelve rows' values of one input side by
//! side), each 32 columns' block of `KC` inputs is read from memory once, converted
//! (or dequantized) to f32 and transposed into a panel of its own, and twelve rows ×
//! 32 columns of sums stay in registers while `KC` inputs pass: two weight loads and
//! twelve broadcasts feed 24 multiply-adds, with no sums to reduce across lanes.
//! AVX-512 only; elsewhere the callers keep their paths.

use super::float::vector::Lanes;
use super::quantized::Weight;

/// A weight as the tiles read it: the inputs of one output, sixteen at a time in f32.
pub trait Source: Sync {
    /// Bytes an input takes (for the lines to ask for ahead).
    const BYTES: usize;

    /// Output `o`'s inputs `k..k + 16` in f32.
    ///
    /// # Safety
    /// `o` and `k + 16` are inside the weight, `k` a multiple of 16, and the CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(&self, o: usize, k: usize) -> std::arch::x86_64::__m512;

    /// Where output `o`'s input `k` lies (a hint's address: never read through).
    fn at(&self, o: usize, k: usize) -> *const u8;
}

/// A float weight as the loader holds it: output `o`'s inputs at `data[start + o · so..]`.
pub struct Float<'a, E> {
    data: &'a [E],
    start: usize,
    so: usize,
}

impl<'a, E> Float<'a, E> {
    /// The view of `d_out` outputs of `d_in` inputs; panics where it leaves `data`.
    pub fn new(data: &'a [E], start: usize, so: usize, d_in: usize, d_out: usize) -> Self {
        assert!(d_out == 0 || start + (d_out - 1) * so + d_in <= data.len(), "gemm: weight view");
        Float { data, start, so }
    }
}

impl<E: Lanes> Source for Float<'_, E> {
    const BYTES: usize = size_of::<E>();

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(&self, o: usize, k: usize) -> std::arch::x86_64::__m512 {
        // SAFETY: the caller's promise, inside the view checked by `new`.
        unsafe { E::load16(self.data.as_ptr().add(self.start + o * self.so + k)) }
    }

    fn at(&self, o: usize, k: usize) -> *const u8 {
        self.data.as_ptr().wrapping_add(self.start + o * self.so + k).cast()
    }
}

/// A block-quantized weight, its values a byte each as the loader holds them (each
/// output's inputs one run, blocks of a multiple of 16 along the inputs): dequantized
/// sixteen at a time as the tiles read it.
pub struct Quantized<'a, 'w> {
    w: &'a Weight<'w>,
}

impl<'a, 'w> Quantized<'a, 'w> {
    /// `None` where the values are not one run per output or the blocks split sixteen
    /// inputs.
    pub fn new(w: &'a Weight<'w>) -> Option<Self> {
        let fits = w.d_out == 0 || w.start + (w.d_out - 1) * w.so + w.d_in <= w.data.len();
        (w.sk == 1 && w.bk.is_multiple_of(16) && w.d_in.is_multiple_of(16) && fits).then_some(Quantized { w })
    }
}

impl Source for Quantized<'_, '_> {
    const BYTES: usize = 1;

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(&self, o: usize, k: usize) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let w = self.w;
        // SAFETY: the caller's promise, inside the view checked by `new`.
        let bytes = unsafe { _mm_loadu_si128(w.data.as_ptr().add(w.start + o * w.so + k).cast()) };
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes)), _mm512_set1_ps(w.scale(k, o)))
    }

    fn at(&self, o: usize, k: usize) -> *const u8 {
        self.w.data.as_ptr().wrapping_add(self.w.start + o * self.w.so + k).cast()
    }
}

/// Rows of a panel (the tile's height).
const MR: usize = 12;

/// Columns of a panel (the tile's width: two vectors).
const NR: usize = 32;

/// The inputs a panel covers: a weight panel (32 KiB in f32) stays in L1 and L2 while
/// the rows' panels pass over it.
const KC: usize = 256;

/// The rows a pass covers (54 panels, an image's prompt in one pass): their `KC` inputs
/// (648 KiB) stay in L2 while the task's columns pass over them.
const MB: usize = 54 * MR;

/// The fewest columns a task of [`columns`] takes: eight panels over each block of the
/// rows while it is in L2 (a 1024 → 1024 projection of 577 rows: 4.2 ms in tasks of 256
/// columns, 5.1 in tasks of 64).
const LEAST_COLUMNS: usize = 8 * NR;

/// The rows of `x: [rows, d_in]` in panels: for each block of `KC` inputs, for each
/// twelve rows (the last padded with zeros), the twelve values of each input in turn.
struct Rows {
    data: Vec<f32>,
    rows: usize,
    d_in: usize,
}

impl Rows {
    fn pack(x: &[f32], rows: usize, d_in: usize) -> Self {
        let padded = rows.next_multiple_of(MR);
        let mut data = vec![0f32; padded * d_in];
        for k0 in (0..d_in).step_by(KC) {
            let kc = KC.min(d_in - k0);
            let block = &mut data[k0 * padded..(k0 + kc) * padded];
            for (r, row) in x.chunks_exact(d_in).enumerate() {
                let panel = &mut block[r / MR * kc * MR..][..kc * MR];
                for (k, v) in row[k0..k0 + kc].iter().enumerate() {
                    panel[k * MR + r % MR] = *v;
                }
            }
        }
        Rows { data, rows, d_in }
    }

    /// Panel `p`'s values in the block of inputs from `k0` (`kc` of them).
    fn panel(&self, k0: usize, kc: usize, p: usize) -> &[f32] {
        let padded = self.rows.next_multiple_of(MR);
        &self.data[k0 * padded + p * kc * MR..][..kc * MR]
    }
}

/// `x: [rows, d_in]` (f32, row-major) · `w`'s `d_out` outputs, in tasks of columns over
/// every core.
///
/// # Safety
/// `w` has `d_out` outputs of `d_in` inputs, `d_in` a multiple of 16, and the CPU has
/// AVX-512F and AVX-512VL.
#[cfg(target_arch = "x86_64")]
pub unsafe fn multiply<S: Source>(w: &S, x: &[f32], rows: usize, d_in: usize, d_out: usize) -> Vec<f32> {
    let packed = Rows::pack(x, rows, d_in);
    // SAFETY: the caller's promise.
    super::quantized::by_columns_of(d_out, rows, LEAST_COLUMNS, |o0, y| unsafe { columns(w, o0, &packed, y) })
}

/// Columns `[o0, o0 + n)` of `x · w` into `y: [rows, n]` (which starts at zero), `d_in`
/// a multiple of 16.
///
/// # Safety
/// The columns are outputs of `w`, and the CPU has AVX-512F and AVX-512VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn columns<S: Source>(w: &S, o0: usize, x: &Rows, y: &mut [f32]) {
    let (rows, d_in) = (x.rows, x.d_in);
    let n = y.len() / rows.max(1);
    let mut wb = vec![0f32; KC * NR];
    let mut tile = [[0f32; NR]; MR];
    for m0 in (0..rows).step_by(MB) {
        let m1 = (m0 + MB).min(rows);
        for k0 in (0..d_in).step_by(KC) {
            let kc = KC.min(d_in - k0);
            for c in (0..n).step_by(NR) {
                let cols = (n - c).min(NR);
                // SAFETY: the columns are outputs of `w`; the CPU's features are the caller's
                // promise.
                unsafe { pack_columns(w, o0 + c, cols, k0, kc, &mut wb) };
                // The next panel's lines, a share per row panel (see `prefetch`): memory is
                // read while the rows multiply.
                let (next, next_kc) = match (c + NR < n, k0 + KC < d_in) {
                    (true, _) => (Some((o0 + c + NR, k0)), kc),
                    (false, true) => (Some((o0, k0 + KC)), KC.min(d_in - k0 - KC)),
                    (false, false) => (None, 0),
                };
                let per_line = 64 / S::BYTES;
                let per_col = next_kc.div_ceil(per_line);
                let next_cols = if c + NR < n { (n - c - NR).min(NR) } else { n.min(NR) };
                let lines = next.map_or(0, |_| next_cols * per_col);
                let panels = (m1 - m0).div_ceil(MR);
                let share = lines.div_ceil(panels);
                // The next line to ask for: column `ahead.0`, line `ahead.1` of it.
                let mut ahead = (0, 0);
                for p in 0..panels {
                    if let Some((o, k)) = next {
                        for _ in 0..share {
                            if ahead.0 == next_cols {
                                break;
                            }
                            crate::cpu::prefetch(w.at(o + ahead.0, k + ahead.1 * per_line));
                            ahead = if ahead.1 + 1 == per_col { (ahead.0 + 1, 0) } else { (ahead.0, ahead.1 + 1) };
                        }
                    }
                    let r0 = m0 + p * MR;
                    // The tile's sums in `y` (rows far apart, out of the caches since the
                    // last block of inputs), asked for while the kernel runs.
                    for i in 0..MR.min(rows - r0) {
                        let at = y.as_ptr().wrapping_add((r0 + i) * n + c);
                        crate::cpu::prefetch(at);
                        crate::cpu::prefetch(at.wrapping_add(16));
                    }
                    let xp = x.panel(k0, kc, r0 / MR);
                    // SAFETY: `xp` holds `kc` · 12 values, `wb` `kc` · 32; the CPU's features
                    // are the caller's promise.
                    unsafe { kernel(xp, &wb, kc, &mut tile) };
                    for (i, t) in tile.iter().enumerate().take(rows - r0) {
                        let out = &mut y[(r0 + i) * n + c..][..cols];
                        for (o, v) in out.iter_mut().zip(t) {
                            *o += *v;
                        }
                    }
                }
            }
        }
    }
}

/// Outputs `o..o + cols`' inputs `k0..k0 + kc` in f32, as `wb[k][j]` (`NR` a row, missing
/// columns zero): sixteen outputs' sixteen inputs are read as sixteen vectors and
/// transposed in registers.
///
/// # Safety
/// The outputs are `w`'s, `kc` is a multiple of 16, and the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn pack_columns<S: Source>(w: &S, o: usize, cols: usize, k0: usize, kc: usize, wb: &mut [f32]) {
    use std::arch::x86_64::*;
    for j0 in (0..NR).step_by(16) {
        for k in (0..kc).step_by(16) {
            let mut r = [_mm512_setzero_ps(); 16];
            for (j, v) in r.iter_mut().enumerate() {
                if j0 + j < cols {
                    // SAFETY: output o + j0 + j and its inputs are `w`'s (the caller's promise).
                    *v = unsafe { w.load16(o + j0 + j, k0 + k) };
                }
            }
            let t = transpose16(r);
            for (i, v) in t.iter().enumerate() {
                // SAFETY: row k + i of `wb` holds NR values.
                unsafe { _mm512_storeu_ps(wb.as_mut_ptr().add((k + i) * NR + j0), *v) };
            }
        }
    }
}

/// Sixteen vectors as the sixteen vectors of their transpose: pairs interleaved, then
/// fours, then 128-bit lanes twice.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
fn transpose16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        // Per 128-bit lane: [a0 b0 a1 b1] and [a2 b2 a3 b3] of rows 2i and 2i + 1.
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        // Per lane, rows 4g..4g + 4 of inputs 0, 1, 2, 3.
        let (a, b) = (4 * g, 4 * g + 2);
        u[4 * g] = _mm512_shuffle_ps::<0x44>(t[a], t[b]);
        u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(t[a], t[b]);
        u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(t[a + 1], t[b + 1]);
        u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(t[a + 1], t[b + 1]);
    }
    // u[4g + i], lane l: rows 4g..4g + 4 of input 4l + i.
    let mut v = [_mm512_setzero_ps(); 16];
    for h in 0..2 {
        for i in 0..4 {
            let (a, b) = (u[8 * h + i], u[8 * h + 4 + i]);
            // Lanes 0, 2 of a, then of b: inputs i and 8 + i of rows 8h..8h + 8.
            v[8 * h + i] = _mm512_shuffle_f32x4::<0x88>(a, b);
            // Lanes 1, 3: inputs 4 + i and 12 + i.
            v[8 * h + 4 + i] = _mm512_shuffle_f32x4::<0xDD>(a, b);
        }
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        // v[i], v[8 + i]: rows 0..8 and 8..16 of inputs i and 8 + i (for i < 4; 4 + i and
        // 12 + i are v[4 + i]'s and v[12 + i]'s, the same shuffles).
        let (a, b) = (v[i], v[8 + i]);
        out[i] = _mm512_shuffle_f32x4::<0x88>(a, b);
        out[8 + i] = _mm512_shuffle_f32x4::<0xDD>(a, b);
    }
    out
}

/// Twelve rows' panel (`xp[k][i]`) times a 32-column panel (`wp[k][j]`) over `kc`
/// inputs, into `tile`: 24 sums in registers, two loads and twelve broadcasts a step.
///
/// # Safety
/// `xp` holds `kc` · 12 values, `wp` `kc` · 32, and the CPU has AVX-512F and AVX-512VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn kernel(xp: &[f32], wp: &[f32], kc: usize, tile: &mut [[f32; NR]; MR]) {
    use std::arch::x86_64::*;
    assert!(xp.len() >= kc * MR && wp.len() >= kc * NR);
    macro_rules! zero {
        ($($a:ident),+) => { $(let mut $a = _mm512_setzero_ps();)+ };
    }
    zero!(a0, b0, a1, b1, a2, b2, a3, b3, a4, b4, a5, b5, a6, b6, a7, b7, a8, b8, a9, b9, a10, b10, a11, b11);
    let (mut x, mut w) = (xp.as_ptr(), wp.as_ptr());
    let mut k = 0;
    while k < kc {
        // SAFETY: step k's twelve row values and 32 column values are inside the panels.
        unsafe {
            let (w0, w1) = (_mm512_loadu_ps(w), _mm512_loadu_ps(w.add(16)));
            macro_rules! row {
                ($i:literal, $a:ident, $b:ident) => {
                    let xv = _mm512_set1_ps(*x.add($i));
                    $a = _mm512_fmadd_ps(w0, xv, $a);
                    $b = _mm512_fmadd_ps(w1, xv, $b);
                };
            }
            row!(0, a0, b0);
            row!(1, a1, b1);
            row!(2, a2, b2);
            row!(3, a3, b3);
            row!(4, a4, b4);
            row!(5, a5, b5);
            row!(6, a6, b6);
            row!(7, a7, b7);
            row!(8, a8, b8);
            row!(9, a9, b9);
            row!(10, a10, b10);
            row!(11, a11, b11);
            x = x.add(MR);
            w = w.add(NR);
        }
        k += 1;
    }
    let sums = [a0, b0, a1, b1, a2, b2, a3, b3, a4, b4, a5, b5, a6, b6, a7, b7, a8, b8, a9, b9, a10, b10, a11, b11];
    for (i, t) in tile.iter_mut().enumerate() {
        // SAFETY: a tile row holds 32 values.
        unsafe {
            _mm512_storeu_ps(t.as_mut_ptr(), sums[2 * i]);
            _mm512_storeu_ps(t.as_mut_ptr().add(16), sums[2 * i + 1]);
        }
    }
}
