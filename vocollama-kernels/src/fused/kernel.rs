//! The fused attention kernel. One unit per query row: it walks only the keys
//! its row may see — a contiguous range given by the layout's integers — with
//! an online softmax in f32, so hidden keys (the image, for text rows after
//! the VoCo tokens) are never loaded, and no mask exists anywhere.

use cubecl::prelude::*;

/// `q: [b, heads, lq, d]`, `k, v: [b, kv_heads, lk, d]`, all contiguous;
/// `rules: [b, 4]` (integers) = (left padding, has VoCo, first VoCo, last VoCo) per sample.
/// Query row `i` sits at key index `lk - lq + i`.
#[cube(launch)]
pub fn fused_attention_kernel<F: Float, I: Int>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    rules: &Tensor<I>,
    out: &mut Tensor<F>,
    heads: u32,
    kv_heads: u32,
    lq: u32,
    lk: u32,
    causal: u32,
    scale: f32,
    #[comptime] head_dim: usize,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let rows = out.len() / head_dim;
    if ABSOLUTE_POS >= rows {
        terminate!();
    }
    let lq = lq as usize;
    let lk = lk as usize;
    let heads = heads as usize;
    let kv_heads = kv_heads as usize;
    let i = ABSOLUTE_POS % lq;
    let bh = ABSOLUTE_POS / lq;
    let h = bh % heads;
    let b = bh / heads;
    let kvh = h / (heads / kv_heads);
    let q_abs = lk - lq + i;

    // The visible keys are [lo, hi): after the padding, after the first VoCo
    // token for rows past the last one, up to the row itself when causal.
    let mut lo = u32::cast_from(rules[b * 4]) as usize;
    if u32::cast_from(rules[b * 4 + 1]) != 0 && q_abs > u32::cast_from(rules[b * 4 + 3]) as usize {
        let first = u32::cast_from(rules[b * 4 + 2]) as usize;
        if first > lo {
            lo = first;
        }
    }
    let mut hi = lk;
    if causal != 0 {
        hi = q_abs + 1;
    }

    let q_base = ABSOLUTE_POS * head_dim;
    let kv_base = (b * kv_heads + kvh) * lk * head_dim;
    let mut qv = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    for x in 0..head_dim {
        qv[x] = f32::cast_from(q[q_base + x]) * scale;
        acc[x] = f32::new(0.0);
    }
    let mut m = f32::new(-1.0e30);
    let mut l = f32::new(0.0);
    let mut j = lo;
    while j < hi {
        let kb = kv_base + j * head_dim;
        let mut s = f32::new(0.0);
        for x in 0..head_dim {
            s += qv[x] * f32::cast_from(k[kb + x]);
        }
        let m_new = f32::max(m, s);
        let correction = f32::exp(m - m_new);
        let p = f32::exp(s - m_new);
        l = l * correction + p;
        for x in 0..head_dim {
            acc[x] = acc[x] * correction + p * f32::cast_from(v[kb + x]);
        }
        m = m_new;
        j += 1;
    }
    // Literals are `f32::new` so that they are runtime values the loops can update.
    // A row that sees no key at all outputs zeros, as Burn's attention does.
    let mut inv = f32::new(0.0);
    if l > f32::new(0.0) {
        inv = f32::new(1.0) / l;
    }
    for x in 0..head_dim {
        out[q_base + x] = F::cast_from(acc[x] * inv);
    }
}
