//! Backend choice at run time, and waiting for a device. Cargo features
//! decide which backends are compiled in; a name picks the device, and Burn's
//! `Tensor` dispatches to whichever backend owns it.

use std::time::{Duration, Instant};

use burn::tensor::Device;
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
use burn::tensor::DeviceKind;

use crate::error::{Error, Result};

#[cfg(not(any(feature = "flex", feature = "wgpu", feature = "vulkan", feature = "metal", feature = "cuda")))]
compile_error!(
    "vocollama needs at least one backend: build with one or more of the features flex, wgpu, vulkan, metal, cuda"
);

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

/// The backend commands use unless told otherwise: the first compiled in.
pub const DEFAULT: &str = if cfg!(feature = "flex") {
    "flex"
} else if cfg!(feature = "wgpu") {
    "wgpu"
} else if cfg!(feature = "vulkan") {
    "vulkan"
} else if cfg!(feature = "metal") {
    "metal"
} else {
    "cuda"
};

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

/// Threads the CPU backend (flex) runs its matmuls and elementwise ops on.
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

/// Wait until `device` has finished the work queued so far: lazy backends
/// return from an op, even from reading its data, before the work is done.
pub fn sync(device: &Device) -> Result<()> {
    device.sync().map_err(|e| Error::Invalid(format!("the device failed: {e:?}")))
}

/// `f`, and how long it took to complete on `device`.
pub fn timed<T>(device: &Device, f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let out = f()?;
    sync(device)?;
    Ok((out, start.elapsed()))
}
