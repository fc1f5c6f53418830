//! The VoCo cache handoff kernel: one unit per output element copies a VoCo
//! row's value and writes its key rotated by a RoPE position delta.

use cubecl::prelude::*;

/// `k, v: [b, kv, l, d]` contiguous → `k_out, v_out: [b, kv, n, d]` = rows
/// `first..first + n`; keys rotated in HF's rotate-half form by the angles whose
/// `cos`/`sin` (length `d / 2`) the host computed for the delta.
#[cube(launch)]
pub fn handoff_kernel<F: Float>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    k_out: &mut Tensor<F>,
    v_out: &mut Tensor<F>,
    l: u32,
    first: u32,
    n: u32,
    #[comptime] head_dim: usize,
    #[define(F)] _dtype: ElemType,
) {
    if ABSOLUTE_POS >= k_out.len() {
        terminate!();
    }
    let n = n as usize;
    let x = ABSOLUTE_POS % head_dim;
    let row = (ABSOLUTE_POS / head_dim) % n;
    let head = ABSOLUTE_POS / (head_dim * n);
    let src = (head * (l as usize) + (first as usize) + row) * head_dim;
    v_out[ABSOLUTE_POS] = v[src + x];

    let half = head_dim / 2;
    let a = f32::cast_from(k[src + x]);
    if x < half {
        // rotate_half(k)[x] = -k[x + half]
        let r = a * cos[x] - f32::cast_from(k[src + x + half]) * sin[x];
        k_out[ABSOLUTE_POS] = F::cast_from(r);
    } else {
        // rotate_half(k)[x] = k[x - half]
        let r = a * cos[x - half] + f32::cast_from(k[src + x - half]) * sin[x - half];
        k_out[ABSOLUTE_POS] = F::cast_from(r);
    }
}
