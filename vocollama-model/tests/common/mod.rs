//! Shared helpers for the parity tests: fixtures, references, devices, tolerances.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::store::{ModuleStore, SafetensorsStore, bridge};
use burn::tensor::{Device, TensorData};

pub fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets")
}

pub fn fixture(name: &str) -> PathBuf {
    assets().join("fixtures").join(name)
}

/// Every tensor of a safetensors file written by `tools/make_fixtures.py`.
pub fn read_tensors(path: PathBuf) -> HashMap<String, TensorData> {
    let mut store = SafetensorsStore::from_file(&path);
    let all = store.get_all_tensors().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    all.iter().map(|(k, t)| (k.clone(), bridge::to_data(t).expect("readable tensor"))).collect()
}

pub fn reference(name: &str) -> HashMap<String, TensorData> {
    read_tensors(fixture(name).join("reference.safetensors"))
}

pub fn ids(data: &TensorData) -> Vec<i64> {
    data.clone().convert::<i64>().try_into_vec::<i64>().expect("integer ids")
}

/// The backends under test in this build: flex always, wgpu when compiled in.
/// A compiled-in backend whose device cannot start fails the test: never skipped.
pub fn devices() -> Vec<(&'static str, Device, f32)> {
    let mut v = vec![];
    #[cfg(feature = "flex")]
    v.push(("flex", Device::flex(), 1e-4));
    #[cfg(feature = "wgpu")]
    v.push(("wgpu", Device::wgpu(burn::tensor::DeviceKind::DefaultDevice), 1e-3));
    assert!(!v.is_empty(), "no backend compiled in");
    v
}

/// max|got − want| / max|want| ≤ tol, with equal shapes.
pub fn assert_close(label: &str, got: TensorData, want: &TensorData, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{label}: shape");
    let g = got.convert::<f32>().try_into_vec::<f32>().unwrap();
    let w = want.clone().convert::<f32>().try_into_vec::<f32>().unwrap();
    let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = g.iter().zip(&w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 0.0, "{label}: the reference is all zeros, the test could not fail");
    assert!(g.iter().all(|x| x.is_finite()), "{label}: non-finite output");
    let rel = diff / scale;
    eprintln!("{label}: max|Δ|/max|ref| = {rel:.3e}");
    assert!(rel <= tol, "{label}: max|Δ|/max|ref| = {rel:.3e} > {tol:e} (max|Δ| {diff:e}, max|ref| {scale:e})");
}
