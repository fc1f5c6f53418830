//! The fused attention on the CPU backend (flex), for short query blocks
//! (decoding, a few streamed tokens): keys and values are read where they
//! lie — a KV cache buffer with spare rows, in its own float type — with
//! scores and sums in f32. Burn's CPU attention would first copy the cache
//! view into a contiguous f32 tensor (and repeat grouped heads) at every
//! layer and token; for long query blocks that copy is small beside the
//! work, so prefill keeps Burn's matrix-product attention.

use burn::tensor::{DType, TensorData, bf16, f16};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::cpu::{Elem, dot, madd};

/// The longest query block this path takes; longer ones go through Burn's attention.
pub const MAX_QUERY_ROWS: usize = 16;

/// A 4-D view `[b, heads, rows, d]` into a tensor's storage, rows of `d` contiguous.
struct View<'a, E> {
    data: &'a [E],
    start: usize,
    strides: [usize; 3],
    d: usize,
}

impl<'a, E: Elem> View<'a, E> {
    /// The view of `t`, which must already have a contiguous last dimension and non-negative strides.
    fn of(t: &'a FlexTensor) -> Self {
        let layout = t.layout();
        let s = layout.strides();
        let d = layout.shape()[3];
        Self {
            data: t.storage::<E>(),
            start: layout.start_offset(),
            strides: [s[0] as usize, s[1] as usize, s[2] as usize],
            d,
        }
    }

    fn row(&self, b: usize, h: usize, r: usize) -> &'a [E] {
        let at = self.start + b * self.strides[0] + h * self.strides[1] + r * self.strides[2];
        &self.data[at..at + self.d]
    }
}

/// A tensor whose rows (last dimension) are contiguous and strides non-negative, copied only when it is not so.
fn rows_in_place(t: FlexTensor) -> FlexTensor {
    let layout = t.layout();
    let ok = layout.has_positive_strides() && (layout.shape()[3] <= 1 || layout.strides()[3] == 1);
    if ok { t } else { t.to_contiguous() }
}

/// The keys `[lo, hi)` query row `i` (key index `lk - lq + i`) may see, from the rule's integers
/// `(left padding, has VoCo, first VoCo, last VoCo)` (as [`super::kernel`] reads them).
fn visible(rule: [i64; 4], i: usize, lq: usize, lk: usize, causal: bool) -> (usize, usize) {
    let q_abs = lk - lq + i;
    let mut lo = rule[0].max(0) as usize;
    if rule[1] != 0 && q_abs as i64 > rule[3] {
        lo = lo.max(rule[2].max(0) as usize);
    }
    let hi = if causal { q_abs + 1 } else { lk };
    (lo, hi.min(lk))
}

/// Attention of `q: [b, heads, lq, d]` over the first `lk` rows of `k, v: [b, kv_heads, rows, d]`
/// under `rules: [b, 4]`; the output is `[b, heads, lq, d]` in `q`'s float type.
pub fn fused_attention(
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    rules: FlexTensor,
    lk: usize,
    causal: bool,
) -> FlexTensor {
    let dtype = q.dtype();
    assert!(k.dtype() == dtype && v.dtype() == dtype, "attention: q, k and v must share a float type");
    let rules: Vec<i64> = rules.into_data().convert::<i64>().try_into_vec::<i64>().expect("integer rules");
    let (q, k, v) = (rows_in_place(q), rows_in_place(k), rows_in_place(v));
    match dtype {
        DType::F32 => run::<f32>(&q, &k, &v, &rules, lk, causal),
        DType::F16 => run::<f16>(&q, &k, &v, &rules, lk, causal),
        DType::BF16 => run::<bf16>(&q, &k, &v, &rules, lk, causal),
        other => panic!("attention: unsupported float type {other:?}"),
    }
}

fn run<E: Elem>(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, rules: &[i64], lk: usize, causal: bool) -> FlexTensor {
    let qs = q.layout().shape();
    let (b, heads, lq, d) = (qs[0], qs[1], qs[2], qs[3]);
    let kv_heads = k.layout().shape()[1];
    let groups = heads / kv_heads;
    let (qv, kv, vv) = (View::<E>::of(q), View::<E>::of(k), View::<E>::of(v));
    let scale = 1.0 / (d as f32).sqrt();
    let block = groups * lq * d;
    let mut out = vec![E::store(0.0); b * heads * lq * d];
    // One task per (sample, key/value head): its query heads' rows together read each
    // key and value row once. Output heads of a group are consecutive, so a task owns one block.
    let kernel = Kernel::<E>::pick();
    out.par_chunks_mut(block).enumerate().for_each(|(task, out)| {
        let (bi, g) = (task / kv_heads, task % kv_heads);
        let rule = [rules[bi * 4], rules[bi * 4 + 1], rules[bi * 4 + 2], rules[bi * 4 + 3]];
        let args = Group { qv: &qv, kv: &kv, vv: &vv, bi, g, groups, lq, lk, causal, scale, rule };
        kernel.run(&args, out);
    });
    FlexTensor::from_data(TensorData::new(out, [b, heads, lq, d]))
}

/// One task: the `groups * lq` query rows of key/value head `g` of sample `bi`.
struct Group<'a, 'b, E> {
    qv: &'a View<'b, E>,
    kv: &'a View<'b, E>,
    vv: &'a View<'b, E>,
    bi: usize,
    g: usize,
    groups: usize,
    lq: usize,
    lk: usize,
    causal: bool,
    scale: f32,
    rule: [i64; 4],
}

/// [`group`] compiled for the widest vector instructions the CPU has, picked once per call:
/// the dot products and sums are most of the work, and a build for the baseline x86-64 has
/// only 4-wide vectors and no fused multiply-add.
struct Kernel<E> {
    run: fn(&Group<E>, &mut [E]),
}

impl<E: Elem> Kernel<E> {
    fn pick() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, checked just above.
                return Self { run: |a, o| unsafe { group_avx512(a, o) } };
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA, checked just above.
                return Self { run: |a, o| unsafe { group_avx2(a, o) } };
            }
        }
        Self { run: |a, o| group::<E, false>(a, o) }
    }

    fn run(&self, args: &Group<E>, out: &mut [E]) {
        (self.run)(args, out)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn group_avx512<E: Elem>(args: &Group<E>, out: &mut [E]) {
    group::<E, true>(args, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_avx2<E: Elem>(args: &Group<E>, out: &mut [E]) {
    group::<E, true>(args, out)
}

/// The task's rows written to `out`; `FMA` says fused multiply-adds are native here.
#[inline(always)]
fn group<E: Elem, const FMA: bool>(args: &Group<E>, out: &mut [E]) {
    let Group { qv, kv, vv, bi, g, groups, lq, lk, causal, scale, rule } = *args;
    let d = qv.d;
    let rows = groups * lq;
    // Query rows in f32, pre-scaled; row r = (head h = g * groups + r / lq, query r % lq).
    let mut qf = vec![0f32; rows * d];
    let ranges: Vec<(usize, usize)> = (0..rows).map(|r| visible(rule, r % lq, lq, lk, causal)).collect();
    for r in 0..rows {
        let dst = &mut qf[r * d..(r + 1) * d];
        E::load(qv.row(bi, g * groups + r / lq, r % lq), dst);
        dst.iter_mut().for_each(|x| *x *= scale);
    }
    let lo = ranges.iter().map(|r| r.0).min().unwrap_or(0);
    let hi = ranges.iter().map(|r| r.1).max().unwrap_or(0);
    if lo >= hi {
        out.iter_mut().for_each(|x| *x = E::store(0.0));
        return;
    }
    let span = hi - lo;
    // Scores of every row over the span; keys a row may not see stay at -inf.
    let mut scores = vec![f32::NEG_INFINITY; rows * span];
    let mut buf = vec![0f32; d];
    for j in lo..hi {
        E::load(kv.row(bi, g, j), &mut buf);
        for (r, &(rlo, rhi)) in ranges.iter().enumerate() {
            if j >= rlo && j < rhi {
                scores[r * span + j - lo] = dot::<FMA>(&qf[r * d..(r + 1) * d], &buf);
            }
        }
    }
    // Softmax per row, in place; a row that sees nothing keeps weights of zero.
    let mut sums = vec![0f32; rows];
    for (r, row) in scores.chunks_mut(span).enumerate() {
        let m = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        if m == f32::NEG_INFINITY {
            row.iter_mut().for_each(|s| *s = 0.0);
            continue;
        }
        let mut sum = 0.0;
        for s in row.iter_mut() {
            *s = (*s - m).exp();
            sum += *s;
        }
        sums[r] = sum;
    }
    let mut acc = vec![0f32; rows * d];
    for j in lo..hi {
        E::load(vv.row(bi, g, j), &mut buf);
        for r in 0..rows {
            let p = scores[r * span + j - lo];
            if p != 0.0 {
                axpy::<FMA>(p, &buf, &mut acc[r * d..(r + 1) * d]);
            }
        }
    }
    for r in 0..rows {
        let inv = if sums[r] > 0.0 { 1.0 / sums[r] } else { 0.0 };
        for (o, a) in out[r * d..(r + 1) * d].iter_mut().zip(&acc[r * d..(r + 1) * d]) {
            *o = E::store(a * inv);
        }
    }
}

/// y += a·x
#[inline(always)]
fn axpy<const FMA: bool>(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = madd::<FMA>(a, *x, *y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant this CPU can run gives the same rows as the plain one (the plain one
    /// is what a CPU without AVX2 runs; `tests/fused.rs` checks the picked one against
    /// the tensor-op reference).
    #[test]
    fn vector_variants_agree_with_the_plain_one() {
        let (heads, kv_heads, lq, lk, d) = (4, 2, 3, 300, 64);
        let mut seed = 7u64;
        let mut rand = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect()
        };
        let t = |v: Vec<f32>, shape: [usize; 4]| FlexTensor::from_data(TensorData::new(v, shape));
        let q = t(rand(heads * lq * d), [1, heads, lq, d]);
        let k = t(rand(kv_heads * lk * d), [1, kv_heads, lk, d]);
        let v = t(rand(kv_heads * lk * d), [1, kv_heads, lk, d]);
        let (qv, kv, vv) = (View::<f32>::of(&q), View::<f32>::of(&k), View::<f32>::of(&v));
        let rule = [0, 1, 100, 101];
        let args =
            Group { qv: &qv, kv: &kv, vv: &vv, bi: 0, g: 1, groups: 2, lq, lk, causal: true, scale: 0.125, rule };
        let mut plain = vec![0f32; 2 * lq * d];
        group::<f32, false>(&args, &mut plain);
        assert!(plain.iter().any(|x| *x != 0.0));
        let mut picked = vec![0f32; 2 * lq * d];
        Kernel::<f32>::pick().run(&args, &mut picked);
        let worst = plain.iter().zip(&picked).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-5, "the vector variant differs by {worst}");
    }
}
