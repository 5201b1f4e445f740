//! The host's memory allocator: mimalloc, set up for a small resident set.
//!
//! The `agent-host` binary makes [`Allocator`] its global allocator. Under
//! load, glibc's malloc and free were about a sixth of the host's CPU; with
//! mimalloc a chat costs about a tenth less host CPU at 100 concurrent
//! chats, and with the two options below its peak RSS is no higher than
//! glibc's was (loadtest/RESULTS.md). The library itself does not choose an
//! allocator, so tests and embedders keep their own.

/// The allocator the binary installs with `#[global_allocator]`.
pub type Allocator = mimalloc::MiMalloc;

/// mimalloc option numbers of the bundled version (libmimalloc-sys 0.1.49,
/// mimalloc v3's `mi_option_e`); the crate names only some of them.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_PAGE_FULL_RETAIN: libmimalloc_sys::mi_option_t = 36;

/// By default mimalloc keeps freed memory for 10 ms and two full pages per
/// size class before it hands them back; under load that kept the host's
/// RSS 12 MB higher than glibc's. Both are set to 0 (return at once) unless
/// the option's own variable (`MIMALLOC_PURGE_DELAY`,
/// `MIMALLOC_PAGE_FULL_RETAIN`) is set. Transparent huge pages are not
/// requested (the crate's `no_thp` feature). Call it first in `main`.
pub fn tune() {
    for (env, option) in [
        ("MIMALLOC_PURGE_DELAY", MI_OPTION_PURGE_DELAY),
        ("MIMALLOC_PAGE_FULL_RETAIN", MI_OPTION_PAGE_FULL_RETAIN),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: sets the value of one of mimalloc's own options.
            unsafe { libmimalloc_sys::mi_option_set(option, 0) };
        }
    }
}

/// Hands memory freed by an inline plugin compile (several MB) back to the
/// kernel: mimalloc's, and glibc's for a process that allocates with it.
/// Blocking; it runs only after a compile.
pub fn release_free_memory() {
    // SAFETY: asks mimalloc to return the free memory it holds.
    unsafe { libmimalloc_sys::mi_collect(true) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
