//! What a device can hold, where its backend says.

use burn::backend::DispatchDevice;
use burn::tensor::Device;

/// The bytes `device` may be asked to hold at once, as its runtime reports
/// them (Vulkan: the largest memory heap; CUDA: the device's memory); `None`
/// for the CPU backend and for runtimes that report nothing.
pub fn memory_capacity(device: &Device) -> Option<u64> {
    #[allow(unreachable_patterns)]
    match device.as_dispatch() {
        #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal", feature = "cuda"))]
        DispatchDevice::Cube(d) => d.client().properties().memory.max_memory(),
        _ => None,
    }
}

/// Whether `device` is a CubeCL runtime's (a GPU, or a software one such as lavapipe);
/// `false` for the CPU backend and for autodiff devices.
pub fn is_cubecl(device: &Device) -> bool {
    #[allow(unreachable_patterns)]
    match device.as_dispatch() {
        #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal", feature = "cuda"))]
        DispatchDevice::Cube(_) => true,
        _ => false,
    }
}

/// Whether `device` is a CUDA device.
pub fn is_cuda(device: &Device) -> bool {
    #[allow(unreachable_patterns)]
    match device.as_dispatch() {
        #[cfg(feature = "cuda")]
        DispatchDevice::Cube(burn_cubecl::CubeDevice::Cuda(_)) => true,
        _ => false,
    }
}
