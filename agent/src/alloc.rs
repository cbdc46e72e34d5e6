//! Allocator tuning.
//!
//! glibc raises its mmap threshold each time a large block is freed, after which pack-sized
//! and chunk-sized buffers are carved from per-thread arenas and stay resident after use.
//! Measured on the 2 GiB benchmark corpus, a fixed threshold took the backup's peak from 137 MiB
//! to 79 MiB at the same wall time. The same setting is available as the environment variable
//! MALLOC_MMAP_THRESHOLD_, but an agent must not depend on how it was started.

/// Fixes glibc's mmap threshold at 1 MiB. Call once, in `main`, before any thread exists.
#[allow(unsafe_code)]
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called before any other
        // thread exists, and M_MMAP_THRESHOLD with a value below the 32 MiB maximum is valid.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        }
    }
}
