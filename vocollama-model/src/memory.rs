//! Host memory, where the OS tells it: the process's peak resident memory
//! (Linux's `VmHWM`, which can be reset so one stage's peak is measured
//! alone) and the memory available to new allocations.

/// Peak resident bytes since the start (or the last [`reset_peak`]).
pub fn peak_resident() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Start the peak over from the current resident size (Linux ≥ 4.0; a no-op elsewhere).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Bytes the host can give a new allocation without swapping (Linux's `MemAvailable`).
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
