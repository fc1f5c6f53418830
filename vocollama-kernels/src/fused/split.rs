//! Split-K attention for a few query rows (decoding), flash-decoding style.
//! The row kernel gives one unit a query row, so a decoded token's row walks
//! every key of its head alone while the other units of its cube idle. Here a
//! cube takes one query row and one chunk of keys, its units score one key
//! each and then share the head dimension for the value sum; each cube writes
//! its unnormalized partial (sum, running max, softmax denominator), and a
//! second kernel merges a row's chunks. Same key rule, same f32 online softmax.

use cubecl::prelude::*;

use super::kernel::visible;

/// `q: [b, heads, lq, d]`, `k, v: [b, kv_heads, k_rows, d]` (the first `lk` rows read), all contiguous;
/// `partials: [b * heads * lq, splits, d + 2]` f32 = (unnormalized sum, max, denominator).
/// Cubes: `(splits, b * heads * lq)`, `units` each; cube `(s, row)` takes keys `[s * chunk, (s + 1) * chunk)`.
#[cube(launch)]
pub fn split_partials_kernel<F: Float, I: Int>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    rules: &Tensor<I>,
    partials: &mut Tensor<f32>,
    heads: u32,
    kv_heads: u32,
    lq: u32,
    lk: u32,
    k_rows: u32,
    causal: u32,
    scale: f32,
    chunk: u32,
    #[comptime] head_dim: usize,
    #[comptime] units: usize,
    #[comptime] dims_per_unit: usize,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let lq = lq as usize;
    let heads = heads as usize;
    let kv_heads = kv_heads as usize;
    let split = CUBE_POS_X as usize;
    let splits = CUBE_COUNT_X as usize;
    let row = CUBE_POS_Y as usize;
    let i = row % lq;
    let bh = row / lq;
    let b = bh / heads;
    let kvh = (bh % heads) / (heads / kv_heads);
    let u = UNIT_POS_X as usize;

    // This cube's keys: its chunk, within what the row may see.
    let (lo, hi) = visible::<I>(rules, b, i, lq, lk as usize, causal);
    let mut start = split * (chunk as usize);
    let mut end = start + chunk as usize;
    if start < lo {
        start = lo;
    }
    if end > hi {
        end = hi;
    }

    let kv_base = (b * kv_heads + kvh) * (k_rows as usize) * head_dim;
    let mut qs = Shared::<[f32]>::new_slice(head_dim);
    let mut scores = Shared::<[f32]>::new_slice(units);
    let mut weights = Shared::<[f32]>::new_slice(units);
    let mut x = u;
    while x < head_dim {
        qs[x] = f32::cast_from(q[row * head_dim + x]) * scale;
        x += units;
    }
    sync_cube();

    let mut acc = Array::<f32>::new(dims_per_unit);
    #[unroll]
    for c in 0..dims_per_unit {
        acc[c] = f32::new(0.0);
    }
    // Literals are `f32::new` so that they are runtime values the loop updates.
    let mut m = f32::new(-1.0e30);
    let mut l = f32::new(0.0);
    // `start..end` is the same for every unit, so all of them take each barrier.
    let mut t = start;
    while t < end {
        let mut rows = end - t;
        if rows > units {
            rows = units;
        }
        // Unit u scores key t + u.
        if u < rows {
            let key = kv_base + (t + u) * head_dim;
            let mut s = f32::new(0.0);
            #[unroll]
            for d in 0..head_dim {
                s += qs[d] * f32::cast_from(k[key + d]);
            }
            scores[u] = s;
        }
        sync_cube();
        let mut m_new = m;
        for r in 0..rows {
            m_new = f32::max(m_new, scores[r]);
        }
        if u < rows {
            weights[u] = f32::exp(scores[u] - m_new);
        }
        sync_cube();
        let correction = f32::exp(m - m_new);
        let mut sum = f32::new(0.0);
        for r in 0..rows {
            sum += weights[r];
        }
        l = l * correction + sum;
        // Unit u sums dims u, u + units, …: consecutive units read consecutive values.
        #[unroll]
        for c in 0..dims_per_unit {
            let x = u + c * units;
            if x < head_dim {
                let mut a = acc[c] * correction;
                for r in 0..rows {
                    a += weights[r] * f32::cast_from(v[kv_base + (t + r) * head_dim + x]);
                }
                acc[c] = a;
            }
        }
        m = m_new;
        // The next tile overwrites the scores and weights.
        sync_cube();
        t += units;
    }

    let base = (row * splits + split) * (head_dim + 2);
    #[unroll]
    for c in 0..dims_per_unit {
        let x = u + c * units;
        if x < head_dim {
            partials[base + x] = acc[c];
        }
    }
    if u == 0 {
        partials[base + head_dim] = m;
        partials[base + head_dim + 1] = l;
    }
}

/// `out[row] = Σ_s e^(m_s − M) acc_s / Σ_s e^(m_s − M) l_s` over a row's chunks that saw a key
/// (`l_s > 0`); a row that saw none (a padding row, never read) outputs zeros. Cubes: one per row.
#[cube(launch)]
pub fn split_combine_kernel<F: Float>(
    partials: &Tensor<f32>,
    out: &mut Tensor<F>,
    splits: u32,
    #[comptime] head_dim: usize,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    let splits = splits as usize;
    let row = CUBE_POS_X as usize;
    let width = head_dim + 2;
    let base = row * splits * width;
    let mut big = f32::new(-1.0e30);
    for s in 0..splits {
        if partials[base + s * width + head_dim + 1] > f32::new(0.0) {
            big = f32::max(big, partials[base + s * width + head_dim]);
        }
    }
    let mut l = f32::new(0.0);
    for s in 0..splits {
        let p = base + s * width;
        if partials[p + head_dim + 1] > f32::new(0.0) {
            l += f32::exp(partials[p + head_dim] - big) * partials[p + head_dim + 1];
        }
    }
    let mut inv = f32::new(0.0);
    if l > f32::new(0.0) {
        inv = f32::new(1.0) / l;
    }
    let mut x = UNIT_POS_X as usize;
    while x < head_dim {
        let mut a = f32::new(0.0);
        for s in 0..splits {
            let p = base + s * width;
            if partials[p + head_dim + 1] > f32::new(0.0) {
                a += f32::exp(partials[p + head_dim] - big) * partials[p + x];
            }
        }
        out[row * head_dim + x] = F::cast_from(a * inv);
        x += units;
    }
}
