//! What the training tests share: fixtures and the devices under test.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::Device;
use vocollama_model::backend;

pub fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets")
}

pub fn fixture(name: &str) -> PathBuf {
    assets().join("fixtures").join(name)
}

/// Every backend compiled into this build. A compiled-in backend whose
/// device cannot start fails the test: never skipped.
pub fn devices() -> Vec<(&'static str, Device)> {
    let names = backend::compiled_backends();
    names.into_iter().map(|n| (n, backend::device(n).unwrap_or_else(|e| panic!("{n}: {e}")))).collect()
}
