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

#[cfg(not(loom))]
mod fixed;
#[cfg(not(loom))]
mod global;
#[cfg(not(loom))]
mod hardened;
#[cfg(not(loom))]
mod heap;
#[cfg(not(loom))]
mod large;
#[cfg(not(loom))]
mod options;
#[cfg(not(loom))]
mod os;
#[cfg(not(loom))]
mod page;
#[doc(hidden)]
#[cfg(not(loom))]
pub mod raw;
#[cfg(not(loom))]
mod registry;
#[cfg(not(loom))]
pub mod secret;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod size_class;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod thread;

#[cfg(not(loom))]
pub use global::MapAlloc;
#[cfg(not(loom))]
pub use stats::{Stats, stats};

/// Returns free memory to the OS now: the calling thread's empty slab
/// pages, the shared fallback heap's, the large-mapping cache and the
/// segment cache. Other threads' heaps are left alone (they are theirs).
#[cfg(not(loom))]
pub fn collect() {
    thread::collect_current();
}

/// Bytes usable at `ptr`, which may exceed the size asked for (the block's
/// size class, or the large mapping's page-rounded length).
///
/// # Safety
/// `ptr` is a live block returned by this allocator.
#[cfg(not(loom))]
pub unsafe fn usable_size(ptr: *const u8) -> usize {
    // SAFETY: forwarded.
    unsafe { global::usable_size(ptr.cast_mut()) }
}
