//! Keeping the daemon's resident memory near its live heap (docs/BENCHMARKS.md, memory).
//!
//! glibc gives each thread that contends for the allocator an arena of its own, up to eight
//! per core, keeps what each arena once held, and raises its mmap threshold as large blocks
//! are freed, so that page bodies and request bodies end up fragmenting the heap, and resident
//! memory creeps past the live heap over a long backfill. The remedies are glibc settings,
//! made once at start, and a periodic trim; elsewhere these do nothing.

/// Two arenas (one per runtime worker), and a fixed 128 KiB mmap threshold: larger blocks
/// (pages, request bodies) are mapped and unmapped rather than carved from the heap. Call
/// before any other thread exists.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters, before any other thread exists; both
    // take any positive value.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Returns the heap's free pages to the system (the daemon calls it every few seconds).
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
