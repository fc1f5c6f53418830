//! What the CPU backend's kernels share ([`crate::fused`]'s attention and
//! [`crate::linear`]'s layers): the float types a tensor may hold, read into
//! f32 a run at a time, and the multiply-add and dot product their loops are
//! built from (compiled per instruction set by each caller).

use burn::tensor::{bf16, f16};
use half::slice::HalfFloatSliceExt;

/// A float type a tensor may hold, read into f32 a run at a time and written back.
pub(crate) trait Elem: bytemuck::Pod + Send + Sync + burn::tensor::Element {
    fn load(src: &[Self], dst: &mut [f32]);
    fn store(x: f32) -> Self;
}

impl Elem for f32 {
    fn load(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn store(x: f32) -> f32 {
        x
    }
}

impl Elem for f16 {
    fn load(src: &[f16], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn store(x: f32) -> f16 {
        f16::from_f32(x)
    }
}

impl Elem for bf16 {
    fn load(src: &[bf16], dst: &mut [f32]) {
        // A bf16 is the top half of an f32: a shift the compiler vectorizes.
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(s.to_bits()) << 16);
        }
    }
    fn store(x: f32) -> bf16 {
        bf16::from_f32(x)
    }
}

/// x·y + z: one instruction where the CPU fuses it (without FMA, `mul_add` would call libm).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(x: f32, y: f32, z: f32) -> f32 {
    if FMA { x.mul_add(y, z) } else { x * y + z }
}

/// Σ a·b with independent partial sums, so the compiler keeps several vector lanes busy.
#[inline(always)]
pub(crate) fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (ac, at) = a.split_at(a.len() / LANES * LANES);
    let (bc, bt) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(LANES).zip(bc.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] = madd::<FMA>(x[l], y[l], acc[l]);
        }
    }
    acc.iter().sum::<f32>() + at.iter().zip(bt).map(|(x, y)| x * y).sum::<f32>()
}

/// Ask for the cache line at `p` in L2 ahead of its use. A hint: it never faults or
/// reads, so any address will do (`wrapping_add` past a slice's end is fine). The
/// hardware prefetcher stops at every 4 KiB page, and a column of weights is a page or
/// two, so the decode loops ask for the next columns' lines while they read these.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch neither reads memory nor faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
