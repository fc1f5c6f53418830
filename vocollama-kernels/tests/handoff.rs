//! The VoCo cache handoff: the kernel against the tensor-op reference on wgpu,
//! and the rotation's meaning (rotations by a and b compose to a + b).

use burn::tensor::{Device, Distribution, Tensor};
use vocollama_kernels::handoff::{handoff_reference, voco_handoff};

fn devices() -> Vec<(&'static str, Device)> {
    let mut v = vec![];
    #[cfg(feature = "flex")]
    v.push(("flex", Device::flex()));
    #[cfg(feature = "wgpu")]
    {
        let d = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        assert!(vocollama_kernels::fused::available(&d), "wgpu does not take the kernels");
        v.push(("wgpu", d));
    }
    v
}

fn inv_freq(d: usize) -> Vec<f32> {
    (0..d / 2).map(|i| 1.0 / 10000f32.powf((2 * i) as f32 / d as f32)).collect()
}

fn max_rel(got: Tensor<4>, want: Tensor<4>) -> f32 {
    let g = got.into_data().try_into_vec::<f32>().unwrap();
    let w = want.into_data().try_into_vec::<f32>().unwrap();
    assert_eq!(g.len(), w.len());
    let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    g.iter().zip(&w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

#[test]
fn gathers_voco_rows_and_rotates_keys_like_the_reference() {
    for (name, device) in devices() {
        for (kv, l, d) in [(2, 45, 16), (4, 600, 128), (1, 7, 64)] {
            for n in [1, 2, 5, 16.min(l - 3)] {
                let first = l - n - 2;
                let k = Tensor::<4>::random([2, kv, l, d], Distribution::Normal(0.0, 1.0), &device);
                let v = Tensor::<4>::random([2, kv, l, d], Distribution::Normal(0.0, 1.0), &device);
                for delta in [0i64, 7, -3, 1500] {
                    let f = inv_freq(d);
                    let (gk, gv) = voco_handoff(k.clone(), v.clone(), first, n, delta, &f);
                    let (wk, wv) = handoff_reference(k.clone(), v.clone(), first, n, delta, &f);
                    assert_eq!(gk.dims(), [2, kv, n, d]);
                    let (ek, ev) = (max_rel(gk, wk), max_rel(gv, wv));
                    assert!(
                        ek <= 1e-6 && ev == 0.0,
                        "[{name}] kv{kv} l{l} d{d} n{n} Δ{delta}: keys {ek:e}, values {ev:e}"
                    );
                }
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
