//! Untyped entry points for the C ABI crate (`capi/`), which exports the
//! malloc family. Not a stable API for Rust users: use `MapAlloc`.
//!
//! The C semantics themselves (errno, `calloc` overflow, `realloc(p, 0)`)
//! live in `capi`; these functions only allocate, free and answer
//! questions about pointers.

use crate::global;
use crate::heap::{self, Zero};
use crate::segment::{Kind, segment_of};

/// `size` bytes aligned to `align` (a power of two), or null.
#[inline]
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    global::alloc(size, align, Zero::No, global::Mode::AsConfigured)
}

/// As `alloc`, reading as zero.
#[inline]
pub fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    global::alloc(size, align, Zero::Yes, global::Mode::AsConfigured)
}

/// True if `p` lies in a segment of ours, or is the block of a large
/// mapping of ours. A pointer for which this is false was not handed out by
/// mapalloc. (A large mapping does not cover its whole 4 MiB chunk, so for
/// those the block address itself is checked: another mapping may sit in
/// the rest of the chunk.)
#[inline]
pub fn owns(p: *const u8) -> bool {
    let seg = segment_of(p.cast_mut());
    if p.is_null() || !crate::registry::contains(seg as usize) {
        return false;
    }
    // SAFETY: a registered chunk heads a live segment or large mapping, so
    // its header is mapped.
    unsafe { (*seg).header.kind != Kind::Large || crate::large::is_block(seg.cast(), p.cast_mut()) }
}

/// Frees a block.
///
/// # Safety
/// `p` is a live block of ours (`owns(p)` and not yet freed).
#[inline]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: forwarded.
    unsafe { heap::free(p, global::Mode::AsConfigured) }
}

/// Resizes a block keeping `align`; null (block untouched) on failure.
///
/// # Safety
/// `p` is a live block of ours allocated with `align`.
pub unsafe fn realloc(p: *mut u8, align: usize, new_size: usize) -> *mut u8 {
    // SAFETY: forwarded; the caller may have written all the usable size.
    unsafe { global::realloc(p, align, None, new_size, global::Mode::AsConfigured) }
}

/// Bytes usable at `p`.
///
/// # Safety
/// `p` is a live block of ours.
pub unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: forwarded.
    unsafe { global::usable_size(p.cast_mut()) }
}
