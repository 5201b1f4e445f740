//! The host's memory allocator: mimalloc, set up for a small resident set.
//!
//! The `agent-host` binary makes [`Allocator`] its global allocator. Under
//! load, glibc's malloc and free were about a seventh of the host's CPU; with
//! mimalloc a chat costs about a tenth less host CPU at 100 concurrent
//! chats, and with the two options below its peak RSS is no higher than
//! glibc's was (loadtest/RESULTS.md). The library itself does not choose an
//! allocator, so tests and embedders keep their own.

/// The allocator the binary installs with `#[global_allocator]`.
pub type Allocator = mimalloc::MiMalloc;

/// mimalloc option numbers of the bundled version (libmimalloc-sys 0.1.49,
/// mimalloc v3's `mi_option_e`; its `v2` feature would renumber them); the
/// crate names only some of them.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_PAGE_FULL_RETAIN: libmimalloc_sys::mi_option_t = 36;

/// By default mimalloc keeps freed memory for a second and two full pages
/// per size class before it hands them back; with those defaults the host's
/// peak RSS at 100 concurrent chats was 178 MB. Both are set to 0 (return
/// at once) unless the option's own variable (`MIMALLOC_PURGE_DELAY`,
/// `MIMALLOC_PAGE_FULL_RETAIN`, upper case) is set and not blank; mimalloc
/// would read a blank one as 1. Transparent huge pages are not
/// requested (the crate's `no_thp` feature). Call it first in `main`: the
/// purge delay is read whenever memory is freed, but the retained pages are
/// copied into a thread's heap when the thread first allocates, so threads
/// started before this call (the main one) keep the default.
pub fn tune() {
    for (env, option) in [
        ("MIMALLOC_PURGE_DELAY", MI_OPTION_PURGE_DELAY),
        ("MIMALLOC_PAGE_FULL_RETAIN", MI_OPTION_PAGE_FULL_RETAIN),
    ] {
        let set =
            std::env::var_os(env).is_some_and(|v| !v.as_encoded_bytes().trim_ascii().is_empty());
        if !set {
            // SAFETY: sets the value of one of mimalloc's own options.
            unsafe { libmimalloc_sys::mi_option_set(option, 0) };
        }
    }
}

/// After an inline plugin compile (several MB freed): asks mimalloc to
/// return what it can (the calling thread's free pages and abandoned ones;
/// with the purge delay at 0 the rest went back when it was freed), and
/// glibc to trim its heap for a process that allocates with it. Blocking;
/// it runs only after a compile.
pub fn release_free_memory() {
    // SAFETY: asks mimalloc to return free memory it holds.
    unsafe { libmimalloc_sys::mi_collect(true) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
