//! mapalloc: a memory allocator for Rust programs on Linux x86_64 that
//! takes all its memory from anonymous private `mmap`.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();
//! ```
//!
//! Small requests come from size-class slabs in 4 MiB segments through a
//! thread-local heap (no lock, no system call on the fast path); large ones
//! get their own mapping. See `docs/design.md`.

#![cfg_attr(feature = "nightly", feature(allocator_api))]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
// Under loom only the lock-free structures and their models are built.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

mod lockfree;
mod sync;

/// Everything but the lock-free structures: loom's types cannot run inside
/// a global allocator, so under `cfg(loom)` none of this is built.
macro_rules! allocator {
    ($($item:item)*) => { $( #[cfg(not(loom))] $item )* };
}

allocator! {
    mod fixed;
    mod global;
    mod hardened;
    mod heap;
    mod large;
    mod mode;
    mod options;
    mod os;
    mod page;
    #[doc(hidden)]
    pub mod raw;
    mod registry;
    pub mod secret;
    mod segment;
    mod size_class;
    mod slabs;
    mod stats;
    mod thread;
    mod tls;

    pub use global::MapAlloc;
    pub use stats::{Stats, stats};

    /// Returns free memory to the OS now: the calling thread's empty slab
    /// pages, the shared fallback heap's, the large-mapping cache and the
    /// segment cache. Other threads' heaps are left alone (they are theirs).
    pub fn collect() {
        global::collect();
    }

    /// Turns prefaulting on or off, as `MAPALLOC_PREFAULT=1` does: new
    /// 4 MiB segments and new large mappings then have their pages faulted
    /// in when they are mapped, so the program's first writes to them take
    /// no page fault. Pays where first-touch latency matters more than
    /// memory: every such mapping is resident in full at once, touched or
    /// not (figures in `docs/benchmarks.md`). Applies to mappings made
    /// after the call; reused (cached) memory is not faulted in again.
    /// Overrides the environment variable; any time is allowed, but call
    /// it before the allocations it should cover.
    pub fn set_prefault(on: bool) {
        // Reads the environment first, so that it cannot undo this call.
        thread::process_init();
        options::PREFAULT.set(usize::from(on));
    }

    /// Bytes usable at `ptr`, which may exceed the size asked for (the
    /// block's size class, or the large mapping's page-rounded length).
    ///
    /// # Safety
    /// `ptr` is a live block returned by this allocator.
    pub unsafe fn usable_size(ptr: *const u8) -> usize {
        // SAFETY: forwarded.
        unsafe { global::usable_size(ptr.cast_mut()) }
    }
}
