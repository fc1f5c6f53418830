//! What the kernel tests share: the devices under test and the error measure.
#![allow(dead_code)]

use burn::tensor::{Device, Tensor};

/// The backends compiled into this build. A compiled-in backend whose device
/// cannot start fails the test, and an empty list fails too: nothing is skipped.
#[allow(clippy::vec_init_then_push)] // the pushes depend on the features compiled in
pub fn devices() -> Vec<(&'static str, Device)> {
    let mut v = vec![];
    #[cfg(feature = "flex")]
    v.push(("flex", Device::flex()));
    #[cfg(feature = "wgpu")]
    {
        let d = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        assert!(
            vocollama_kernels::fused::available(&d),
            "wgpu is compiled in but its device does not take the kernels"
        );
        v.push(("wgpu", d));
    }
    #[cfg(feature = "cuda")]
    {
        let d = Device::cuda(0);
        assert!(
            vocollama_kernels::fused::available(&d),
            "cuda is compiled in but its device does not take the kernels"
        );
        v.push(("cuda", d));
    }
    assert!(!v.is_empty(), "no backend to test: build with --features flex, wgpu or cuda");
    v
}

/// The CubeCL device of this build (the kernels' own), or a failure when none is compiled in.
pub fn cube_device() -> Device {
    devices()
        .into_iter()
        .map(|(_, d)| d)
        .find(vocollama_kernels::device::is_cubecl)
        .expect("no CubeCL backend compiled in: build with --features wgpu to test the kernels")
}

/// max|got − want| / max|want|, with equal lengths and a reference that is not all zeros.
pub fn max_rel<const D: usize>(got: Tensor<D>, want: Tensor<D>) -> f32 {
    let g = got.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    let w = want.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    assert_eq!(g.len(), w.len());
    let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "the reference is all zeros: the comparison could not fail");
    assert!(g.iter().all(|x| x.is_finite()), "non-finite output");
    g.iter().zip(&w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}
