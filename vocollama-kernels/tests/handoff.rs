//! The VoCo cache handoff: keys moved by a position delta equal keys computed
//! at the new positions (RoPE applied on the host, in f64, from its
//! definition), on every device; the kernel against the tensor-op reference on
//! CubeCL devices; and rotations compose.

mod common;

use burn::tensor::{Distribution, Tensor, TensorData};
use common::{devices, max_rel};
use vocollama_kernels::handoff::{handoff_reference, voco_handoff};

fn inv_freq(d: usize) -> Vec<f32> {
    (0..d / 2).map(|i| 1.0 / 10000f32.powf((2 * i) as f32 / d as f32)).collect()
}

/// RoPE from its definition, one element at a time: `x: [b, h, l, d]` (row
/// `r` at position `positions[r]`), dimension `i < d/2` paired with `i + d/2`.
fn rope_on_host(x: &[f32], dims: [usize; 4], positions: &[i64], inv_freq: &[f32]) -> Vec<f32> {
    let [b, h, l, d] = dims;
    let half = d / 2;
    let mut out = vec![0f32; x.len()];
    for row in 0..b * h * l {
        let p = positions[row % l] as f64;
        let at = row * d;
        for i in 0..half {
            let (c, s) = ((p * inv_freq[i] as f64).cos(), (p * inv_freq[i] as f64).sin());
            let (a, z) = (x[at + i] as f64, x[at + i + half] as f64);
            out[at + i] = (a * c - z * s) as f32;
            out[at + i + half] = (z * c + a * s) as f32;
        }
    }
    out
}

#[test]
fn moved_keys_equal_keys_computed_at_the_new_positions() {
    for (name, device) in devices() {
        for (kv, l, d) in [(2, 45, 16), (4, 600, 128), (1, 7, 64)] {
            let f = inv_freq(d);
            // Unrotated keys; the cache holds them rotated to their stage-1 positions 0..l.
            let raw = Tensor::<4>::random([2, kv, l, d], Distribution::Normal(0.0, 1.0), &device);
            let raw_host = raw.to_data().convert::<f32>().try_into_vec::<f32>().unwrap();
            let at = |shift: i64| {
                let positions: Vec<i64> = (0..l as i64).map(|p| p + shift).collect();
                let data = TensorData::new(rope_on_host(&raw_host, [2, kv, l, d], &positions, &f), [2, kv, l, d]);
                Tensor::<4>::from_data(data, &device)
            };
            let (k, v) = (at(0), raw.clone());
            for n in [1, 2, 5, 16.min(l - 3)] {
                let first = l - n - 2;
                let rows = |t: Tensor<4>| t.slice([0..2, 0..kv, first..first + n, 0..d]);
                for delta in [0i64, 7, -3, 1500] {
                    let (gk, gv) = voco_handoff(k.clone(), v.clone(), first, n, delta, &f);
                    assert_eq!(gk.dims(), [2, kv, n, d]);
                    let (ek, ev) = (max_rel(gk, rows(at(delta))), max_rel(gv, rows(v.clone())));
                    assert!(
                        ek <= 2e-5 && ev == 0.0,
                        "[{name}] kv{kv} l{l} d{d} n{n} Δ{delta}: keys {ek:e}, values {ev:e}"
                    );
                }
            }
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn the_kernel_equals_the_tensor_op_reference() {
    let device = common::cube_device();
    for (kv, l, d) in [(2, 45, 16), (4, 600, 128), (1, 7, 64)] {
        let k = Tensor::<4>::random([2, kv, l, d], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<4>::random([2, kv, l, d], Distribution::Normal(0.0, 1.0), &device);
        for n in [1, 2, 5, 16.min(l - 3)] {
            let first = l - n - 2;
            for delta in [0i64, 7, -3, 1500] {
                let f = inv_freq(d);
                let (gk, gv) = voco_handoff(k.clone(), v.clone(), first, n, delta, &f);
                let (wk, wv) = handoff_reference(k.clone(), v.clone(), first, n, delta, &f);
                let (ek, ev) = (max_rel(gk, wk), max_rel(gv, wv));
                assert!(ek <= 1e-6 && ev == 0.0, "kv{kv} l{l} d{d} n{n} Δ{delta}: keys {ek:e}, values {ev:e}");
            }
        }
    }
}

#[test]
fn rotations_compose() {
    for (name, device) in devices() {
        let f = inv_freq(32);
        let k = Tensor::<4>::random([1, 2, 9, 32], Distribution::Normal(0.0, 1.0), &device);
        let v = k.clone();
        let (a, _) = voco_handoff(k.clone(), v.clone(), 3, 4, 250, &f);
        let (ab, _) = voco_handoff(a, v.clone().slice([0..1, 0..2, 3..7, 0..32]), 0, 4, -40, &f);
        let (direct, _) = voco_handoff(k, v, 3, 4, 210, &f);
        let e = max_rel(ab, direct);
        assert!(e <= 1e-5, "[{name}] rotate 250 then -40 vs 210: {e:e}");
    }
}
