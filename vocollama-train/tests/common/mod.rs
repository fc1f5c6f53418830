//! What the training tests share: fixtures and the devices under test.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::Device;

pub fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets")
}

pub fn fixture(name: &str) -> PathBuf {
    assets().join("fixtures").join(name)
}

/// The backends under test in this build: flex always, wgpu when compiled in.
/// A compiled-in backend whose device cannot start fails the test: never skipped.
#[allow(clippy::vec_init_then_push)] // the pushes depend on the features compiled in
pub fn devices() -> Vec<(&'static str, Device)> {
    let mut v = vec![];
    #[cfg(feature = "flex")]
    v.push(("flex", Device::flex()));
    #[cfg(feature = "wgpu")]
    v.push(("wgpu", Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)));
    assert!(!v.is_empty(), "no backend compiled in");
    v
}
