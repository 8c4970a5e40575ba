//! Handing freed memory back to the operating system.
//!
//! A decoded 49-megapixel image is a few hundred MB of short-lived buffers.
//! glibc's malloc raises its mmap threshold after such buffers are freed
//! (up to 32 MiB), so later ones come from the heap and stay mapped after
//! being freed: the server kept 800 MB after one large PNG. Fixing the
//! threshold makes every buffer of 1 MiB or more its own mapping, returned on
//! free; small allocations are unaffected.

/// Buffers at least this large are mapped individually and unmapped on free.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// Sets glibc's mmap threshold (see the module docs); a no-op elsewhere.
/// Process-wide and idempotent.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, (4 * MMAP_THRESHOLD) as libc::c_int);
    }
}

/// This process's resident memory in bytes, from `/proc/self/statm`; `None`
/// off Linux.
#[cfg(target_os = "linux")]
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// This process's resident memory in bytes; `None` off Linux.
#[cfg(not(target_os = "linux"))]
pub fn resident_bytes() -> Option<u64> {
    None
}
