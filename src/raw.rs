//! Untyped entry points for the C ABI crate (`capi/`), which exports the
//! malloc family. Not a stable API for Rust users: use `MapAlloc`.
//!
//! The C semantics themselves (errno, `calloc` overflow, `realloc(p, 0)`)
//! live in `capi`; these functions only allocate, free and answer
//! questions about pointers.

use crate::global;
use crate::hardened::Claim;
use crate::mode::{self, Mode, Zero};
use crate::segment::{Kind, segment_of};

/// `size` bytes aligned to `align` (a power of two), or null.
#[inline]
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    alloc_in_mode(size, align, Zero::No)
}

/// As `alloc`, reading as zero.
#[inline]
pub fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    alloc_in_mode(size, align, Zero::Yes)
}

/// The process's mode tested first: a hardened process then goes straight
/// to hardened mode instead of through the default path's miss. (Until
/// the first allocation fixes the mode, the default path routes.)
#[inline(always)]
fn alloc_in_mode(size: usize, align: usize, zero: Zero) -> *mut u8 {
    if mode::hardened() {
        return alloc_hardened(size, align, zero);
    }
    global::alloc(size, align, zero, Mode::AsConfigured)
}

/// Out of line, so that the default path inlined into `malloc` stays
/// small: inlined together, the hardened path's registers made `malloc`
/// save six of them on every call (15 instructions of a pair).
#[inline(never)]
fn alloc_hardened(size: usize, align: usize, zero: Zero) -> *mut u8 {
    global::alloc(size, align, zero, Mode::Hardened)
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

/// True if `free`, `realloc` and `usable_size` validate every pointer
/// themselves (hardened mode), aborting on one that is not a live block
/// of ours: the C ABI then passes them every non-null pointer, where in
/// the default mode it leaves pointers it does not own alone.
/// (It settles the process's mode, which the options decide, if no
/// allocation has yet.)
#[inline]
pub fn validates_pointers() -> bool {
    crate::thread::process_init();
    mode::settle()
}

/// C's `free(p)`: null does nothing; a live block of ours is freed; a
/// pointer mapalloc did not hand out is left alone in the default mode
/// and reported in hardened mode (`mapalloc: invalid free of 0x…`).
///
/// # Safety
/// `p` is null, a live block of ours, or not ours at all.
#[inline]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: forwarded.
    unsafe { free_claimed(p, Claim::NONE) }
}

/// `free`, with what the caller claims about the block (hardened mode
/// checks it). One registry lookup tells a block of ours from a foreign
/// pointer before any header is read.
///
/// # Safety
/// As `free`.
#[inline(always)]
unsafe fn free_claimed(p: *mut u8, claim: Claim) {
    if p.is_null() {
        return;
    }
    // SAFETY: hardened mode validates `p`; a registered chunk heads a live
    // segment or large mapping of ours.
    unsafe {
        if mode::hardened() {
            return crate::hardened::free_outlined(p, claim);
        }
        let seg = segment_of(p);
        if crate::registry::contains(seg as usize) {
            return crate::heap::free_in(seg, p);
        }
        if validates_pointers() {
            // A hardened process whose first call is this free.
            crate::hardened::free_outlined(p, claim)
        }
    }
}

/// Frees a block whose caller says it was asked for exactly `size` bytes
/// (if known) and has alignment `align` (1 if not known): C23
/// `free_sized` and `free_aligned_sized`. Hardened mode checks what is
/// claimed and aborts on a mismatch.
///
/// # Safety
/// As `free`.
#[inline]
pub unsafe fn free_sized(p: *mut u8, size: Option<usize>, align: usize) {
    // SAFETY: forwarded.
    unsafe { free_claimed(p, Claim::sized(size, align)) }
}

/// As `free_sized`, for C++'s sized and aligned `operator delete`: the
/// size is what `operator new` was asked for, which libstdc++ turns into a
/// `malloc` of at least 1 byte and an `aligned_alloc` of a multiple of the
/// alignment.
///
/// # Safety
/// As `free`.
#[inline]
pub unsafe fn free_cxx(p: *mut u8, size: Option<usize>, align: usize) {
    // SAFETY: forwarded.
    unsafe { free_claimed(p, Claim::cxx(size, align)) }
}

/// Resizes a block keeping `align`; null (block untouched) on failure.
///
/// # Safety
/// `p` is a live block of ours allocated with `align`.
pub unsafe fn realloc(p: *mut u8, align: usize, new_size: usize) -> *mut u8 {
    // SAFETY: forwarded; the caller may have written all the usable size.
    unsafe { global::realloc(p, align, None, new_size, Mode::AsConfigured) }
}

/// Bytes usable at `p`.
///
/// # Safety
/// `p` is a live block of ours.
pub unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: forwarded.
    unsafe { global::usable_size(p.cast_mut()) }
}

/// To run as the process exits (the C ABI's destructor): in hardened mode,
/// checks that the blocks still waiting in the calling thread's quarantine
/// were not written to after they were freed.
pub fn at_exit() {
    if mode::hardened() {
        crate::hardened::at_exit();
    }
}
