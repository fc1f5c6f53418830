//! Backend choice at run time. Cargo features decide which backends are
//! compiled in; a name picks the device, and Burn's `Tensor` dispatches to
//! whichever backend owns it.

use burn::tensor::Device;
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
use burn::tensor::DeviceKind;

use crate::error::{Error, Result};

/// Names of the backends compiled into this build, the default first.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "vulkan") {
        v.push("vulkan");
    }
    if cfg!(feature = "metal") {
        v.push("metal");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

/// The device for a backend name (`flex`, `wgpu`, `vulkan`, `metal`, `cuda`).
pub fn device(name: &str) -> Result<Device> {
    match name {
        #[cfg(feature = "flex")]
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(DeviceKind::DefaultDevice)),
        #[cfg(feature = "vulkan")]
        "vulkan" => Ok(Device::vulkan(DeviceKind::DefaultDevice)),
        #[cfg(feature = "metal")]
        "metal" => Ok(Device::metal(DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        other => Err(Error::Invalid(format!(
            "backend `{other}` is not compiled into this build (compiled: {}; rebuild with `--features {other}`)",
            compiled_backends().join(", ")
        ))),
    }
}

/// The device for a backend name with Burn's automatic differentiation on top (for training).
pub fn autodiff_device(name: &str) -> Result<Device> {
    Ok(Device::autodiff(device(name)?))
}
