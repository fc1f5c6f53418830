//! Attention as the model calls it (the rule prepared once, then the fused
//! kernel or Burn's attention with a mask) and the tensor-op reference on
//! every device, against a plain loop written from the definition.

mod common;

use burn::tensor::{Distribution, Tensor};
use common::devices;
use vocollama_kernels::attention::reference;
use vocollama_kernels::{KeyRule, SampleRule, attention};

/// softmax(q·k/√d) v, one query row at a time, skipping hidden keys.
fn naive(q: &[f32], k: &[f32], v: &[f32], dims: [usize; 6], rule: &KeyRule) -> Vec<f32> {
    let [b, h, kvh, lq, lk, d] = dims;
    let g = h / kvh;
    let mut out = vec![0f32; b * h * lq * d];
    for bi in 0..b {
        for hi in 0..h {
            let kh = hi / g;
            for i in 0..lq {
                let qrow = &q[((bi * h + hi) * lq + i) * d..][..d];
                let scores: Vec<Option<f32>> = (0..lk)
                    .map(|j| {
                        rule.visible(bi, i, j, lq, lk).then(|| {
                            let krow = &k[((bi * kvh + kh) * lk + j) * d..][..d];
                            qrow.iter().zip(krow).map(|(a, b)| a * b).sum::<f32>() / (d as f32).sqrt()
                        })
                    })
                    .collect();
                let m = scores.iter().flatten().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let w: Vec<f32> = scores.iter().map(|s| s.map_or(0.0, |s| (s - m).exp())).collect();
                let z: f32 = w.iter().sum();
                for (j, wj) in w.iter().enumerate() {
                    let vrow = &v[((bi * kvh + kh) * lk + j) * d..][..d];
                    for t in 0..d {
                        out[((bi * h + hi) * lq + i) * d + t] += wj / z * vrow[t];
                    }
                }
            }
        }
    }
    out
}

fn check(rule: KeyRule, b: usize, h: usize, kvh: usize, lq: usize, lk: usize, d: usize) {
    for (name, device) in devices() {
        let q = Tensor::<4>::random([b, h, lq, d], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<4>::random([b, kvh, lk, d], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<4>::random([b, kvh, lk, d], Distribution::Normal(0.0, 1.0), &device);
        let vec = |t: &Tensor<4>| t.to_data().try_into_vec::<f32>().unwrap();
        let want = naive(&vec(&q), &vec(&k), &vec(&v), [b, h, kvh, lq, lk, d], &rule);
        let prepared = rule.prepare(&device, b, lq, lk, d);
        let paths = [
            ("prepared", attention(q.clone(), k.clone(), v.clone(), &prepared)),
            ("reference", reference(q, k, v, &rule)),
        ];
        for (path, out) in paths {
            let got = vec(&out);
            let diff = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            // CUDA's tensor-op path multiplies on TF32 tensor cores (~6e-4 relative on an H200).
            let tol = match (name, path) {
                ("flex", _) => 1e-5,
                ("cuda", "reference") => 1e-3,
                _ => 1e-4,
            };
            assert!(diff < tol, "[{name}] {path} {rule:?} b{b} h{h}/{kvh} lq{lq} lk{lk}: max|Δ| {diff}");
        }
    }
}

#[test]
fn causal_prefill_and_chunk_against_a_cache() {
    check(KeyRule::causal(), 1, 4, 4, 7, 7, 8);
    // Queries are the last rows of the keys: causal is aligned bottom-right.
    check(KeyRule::causal(), 2, 4, 2, 3, 9, 8);
    check(KeyRule::causal(), 1, 4, 1, 1, 9, 16);
}

#[test]
fn full_attention() {
    check(KeyRule::full(), 2, 3, 3, 5, 5, 4);
}

#[test]
fn voco_and_padding_rules() {
    let voco = KeyRule { causal: true, samples: vec![SampleRule { left_padding: 0, voco: Some((6, 7)) }] };
    check(voco.clone(), 1, 4, 2, 12, 12, 8);
    check(voco, 1, 4, 2, 2, 12, 8);
    let mixed = KeyRule {
        causal: true,
        samples: vec![
            SampleRule { left_padding: 3, voco: Some((8, 9)) },
            SampleRule { left_padding: 0, voco: Some((5, 6)) },
        ],
    };
    check(mixed, 2, 4, 4, 12, 12, 8);
}
