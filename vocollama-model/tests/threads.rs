//! The CPU backend runs on every core: a large matmul on flex takes more CPU
//! time than wall time on a multi-core machine. (Alone in its test binary, so
//! no other test's threads are counted.)
#![cfg(all(feature = "flex", unix))]

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

/// User + system CPU time of this process (all its threads), in seconds.
fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for the call to fill.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[test]
fn a_large_matmul_runs_on_more_than_one_thread() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = vocollama_model::backend::cpu_threads();
    eprintln!("{cores} cores, flex's pool: {threads} threads");
    let device = Device::flex();
    let a = Tensor::<2>::random([1536, 1536], Distribution::Normal(0.0, 1.0), &device);
    let b = Tensor::<2>::random([1536, 1536], Distribution::Normal(0.0, 1.0), &device);
    let _ = a.clone().matmul(b.clone()).into_data(); // warm-up: pool started, kernels picked
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    for _ in 0..4 {
        let _ = a.clone().matmul(b.clone()).into_data();
    }
    let (cpu, wall) = (cpu_seconds() - cpu, wall.elapsed().as_secs_f64());
    let ratio = cpu / wall;
    eprintln!("4 matmuls 1536³: {wall:.2} s wall, {cpu:.2} s CPU: {ratio:.2} cores busy");
    if cores >= 2 {
        assert!(ratio > 1.3, "the matmul kept only {ratio:.2} cores busy of {cores}");
    } else {
        assert!(ratio <= 1.2, "one core cannot be {ratio:.2} cores busy");
    }
}
