//! glibc malloc tuning for a long-running host. Both functions do nothing
//! with other C libraries.

/// glibc gives threads that allocate at the same time their own arenas, up
/// to eight per core, and memory freed in one arena is not reused by another.
/// In the load runs that fragmentation was a fifth of the host's peak RSS;
/// one arena per core kept the peak at 100 concurrent chats 17 MB lower at
/// no CPU cost (loadtest/RESULTS.md). `MALLOC_ARENA_MAX`, when set and not blank, wins.
/// Call it first in `main`, before any other thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_malloc_arenas() {
    if std::env::var_os(crate::config::MALLOC_ARENA_MAX)
        .is_some_and(|v| !v.as_encoded_bytes().trim_ascii().is_empty())
    {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    // SAFETY: runs before any other thread exists; mallopt only sets a
    // malloc tunable and reports failure by its return value.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, cores.min(64) as libc::c_int);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_malloc_arenas() {}

/// Hands the free pages of every malloc arena back to the kernel. Compiling
/// plugins with Cranelift allocates several MB that are freed when it ends,
/// but glibc keeps freed memory below the top of a heap mapped: without this
/// the host kept about 10 MB it no longer used after every (re)load. It walks
/// every arena under its lock, so it runs only after a compile.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}
