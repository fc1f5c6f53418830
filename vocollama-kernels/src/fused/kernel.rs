//! The fused attention kernel, flash-style. A cube takes `tile_q` consecutive
//! query rows of one (batch, head); it walks key tiles of `tile_k` rows
//! through shared memory, loaded once for all its rows, with an online
//! softmax per row in f32. Each row sees a contiguous key range given by the
//! layout's integers; a cube's rows together see `[lo of its first row, hi of
//! its last row)`, so key tiles outside that span — the image, for text rows
//! after the VoCo tokens — are never loaded, and no mask exists anywhere.

use cubecl::prelude::*;

/// The keys `[lo, hi)` query row `i` (key index `lk - lq + i`) may see.
#[cube]
pub(super) fn visible<I: Int>(
    rules: &Tensor<I>,
    b: usize,
    i: usize,
    lq: usize,
    lk: usize,
    causal: u32,
) -> (usize, usize) {
    let q_abs = lk - lq + i;
    // After the padding; after the first VoCo token for rows past the last one.
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
    (lo, hi)
}

/// `q: [b, heads, lq, d]`, `k, v: [b, kv_heads, k_rows, d]` (the first `lk` rows read), all contiguous;
/// `rules: [b, 4]` (integers) = (left padding, has VoCo, first VoCo, last VoCo)
/// per sample. Cubes: `(ceil(lq / tile_q), b * heads)`, `tile_q` units each.
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
    k_rows: u32,
    causal: u32,
    scale: f32,
    #[comptime] head_dim: usize,
    #[comptime] tile_q: usize,
    #[comptime] tile_k: usize,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let lq = lq as usize;
    let lk = lk as usize;
    let heads = heads as usize;
    let kv_heads = kv_heads as usize;
    let bh = CUBE_POS_Y as usize;
    let h = bh % heads;
    let b = bh / heads;
    let kvh = h / (heads / kv_heads);
    let row0 = CUBE_POS_X as usize * tile_q;
    let i = row0 + UNIT_POS_X as usize;
    let active = i < lq;

    // Ranges are monotone in the row: the cube's span is first row's lo to last row's hi.
    let mut last = row0 + tile_q - 1;
    if last >= lq {
        last = lq - 1;
    }
    let (span_lo, _) = visible::<I>(rules, b, row0, lq, lk, causal);
    let (_, span_hi) = visible::<I>(rules, b, last, lq, lk, causal);
    let (lo, hi) = visible::<I>(rules, b, i, lq, lk, causal);

    let q_base = (bh * lq + i) * head_dim;
    // Keys and values may be a cache buffer with rows to spare: `k_rows` apart per head.
    let kv_base = (b * kv_heads + kvh) * (k_rows as usize) * head_dim;
    // The head-dimension loops are unrolled (the dim is a compile-time constant): the row's
    // query and sums can then live in registers, and a row that walks hundreds of keys stays
    // under lavapipe's limit of 65,535 loop iterations per invocation, past which its
    // shaders stop looping (measured: head dim 64 wrong from 500 keys before unrolling).
    let mut qv = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    #[unroll]
    for x in 0..head_dim {
        acc[x] = f32::new(0.0);
        qv[x] = f32::new(0.0);
        if active {
            qv[x] = f32::cast_from(q[q_base + x]) * scale;
        }
    }
    let mut ks = Shared::<[f32]>::new_slice(tile_k * head_dim);
    let mut vs = Shared::<[f32]>::new_slice(tile_k * head_dim);
    // Literals are `f32::new` so that they are runtime values the loops update.
    let mut m = f32::new(-1.0e30);
    let mut l = f32::new(0.0);

    let mut t = span_lo;
    while t < span_hi {
        let mut rows = span_hi - t;
        if rows > tile_k {
            rows = tile_k;
        }
        // The cube loads the tile together, one element per unit in turn.
        let mut e = UNIT_POS_X as usize;
        while e < rows * head_dim {
            ks[e] = f32::cast_from(k[kv_base + t * head_dim + e]);
            vs[e] = f32::cast_from(v[kv_base + t * head_dim + e]);
            e += tile_q;
        }
        sync_cube();
        if active {
            for r in 0..rows {
                let j = t + r;
                if j >= lo && j < hi {
                    let mut s = f32::new(0.0);
                    #[unroll]
                    for x in 0..head_dim {
                        s += qv[x] * ks[r * head_dim + x];
                    }
                    let m_new = f32::max(m, s);
                    let correction = f32::exp(m - m_new);
                    let p = f32::exp(s - m_new);
                    l = l * correction + p;
                    #[unroll]
                    for x in 0..head_dim {
                        acc[x] = acc[x] * correction + p * vs[r * head_dim + x];
                    }
                    m = m_new;
                }
            }
        }
        sync_cube();
        t += tile_k;
    }
    if active {
        // A row that sees no key at all (a padding row, never read) outputs zeros; Burn's
        // masked attention on wgpu weighs every key equally there instead.
        let mut inv = f32::new(0.0);
        if l > f32::new(0.0) {
            inv = f32::new(1.0) / l;
        }
        #[unroll]
        for x in 0..head_dim {
            out[q_base + x] = F::cast_from(acc[x] * inv);
        }
    }
}
