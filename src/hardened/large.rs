//! Hardened mode's large blocks (those no slab serves: over 128 KiB with
//! their canary, or aligned beyond a page): a mapping of their own that
//! ends at a guard page (`large::alloc_fenced`), with a canary in the few
//! bytes the alignment leaves before it, grown or shrunk with `mremap`,
//! the guard moving along. A freed one is `PROT_NONE` at once, so a read
//! after free faults, and waits a while for reuse (`large::FENCED`) before
//! it is unmapped.

use super::Claim;
use super::bytes::pattern_byte;
use crate::large::{self, Large};

/// A block of `size` bytes aligned to `align`, or null.
pub(super) fn alloc(size: usize, align: usize) -> *mut u8 {
    let p = large::alloc_fenced(size, align);
    if !p.is_null() {
        // SAFETY: a fresh fenced block of `size` bytes.
        unsafe { fill_tail(p, size, large::fenced_extent(crate::segment::segment_of(p).cast()).1) };
    }
    p
}

/// Frees `p`, the block of the fenced mapping `large`, after checking it
/// is that block, its canary and the caller's claim.
///
/// # Safety
/// `large` heads a registered large mapping.
pub(super) unsafe fn free(large: *mut Large, p: *mut u8, claim: Claim) {
    // SAFETY: a registered large mapping's header; once `p` is its block,
    // the block is ours to check and free.
    unsafe {
        checked_size(large, p, claim, b"invalid free");
        large::free(large);
    }
}

/// The size `p` was asked for, after checking `p` is the block of
/// `large`, its canary, and the caller's claim.
///
/// # Safety
/// `large` heads a registered large mapping.
pub(super) unsafe fn checked_size(large: *mut Large, p: *mut u8, claim: Claim, invalid: &[u8]) -> usize {
    // SAFETY: the caller's contract; the tail lies before the guard.
    unsafe {
        if !large::is_block(large, p) {
            super::die(invalid, p as usize);
        }
        let (requested, guard) = large::fenced_extent(large);
        if !tail_intact(p, requested, guard) {
            super::detected(b"overflow", p, claim.at());
        }
        claim.check(p, requested);
        requested
    }
}

/// Resizes fenced block `p` (of mapping `large`, checked by the caller)
/// without copying it, or returns null with the block untouched.
///
/// # Safety
/// `p` is the live block of the fenced mapping `large`.
pub(super) unsafe fn realloc(large: *mut Large, new_size: usize) -> *mut u8 {
    // SAFETY: forwarded; the block's new tail lies before its guard.
    unsafe {
        let q = large::realloc_fenced(large, new_size);
        if !q.is_null() {
            fill_tail(q, new_size, large::fenced_extent(crate::segment::segment_of(q).cast()).1);
        }
        q
    }
}

/// Writes the canary from `p + size` up to the guard page.
///
/// # Safety
/// `[p + size, guard)` lies in the block's mapping.
unsafe fn fill_tail(p: *mut u8, size: usize, guard: *mut u8) {
    let mut at = p as usize + size;
    // SAFETY: the caller's contract.
    unsafe {
        if guard as usize - at >= 8 {
            return super::bytes::fill_canary(p, size, guard as usize - p as usize);
        }
        while at < guard as usize {
            core::ptr::with_exposed_provenance_mut::<u8>(at).write(pattern_byte(at));
            at += 1;
        }
    }
}

/// True if the canary from `p + size` up to the guard page is intact.
///
/// # Safety
/// As `fill_tail`.
unsafe fn tail_intact(p: *mut u8, size: usize, guard: *mut u8) -> bool {
    let mut at = p as usize + size;
    // SAFETY: the caller's contract.
    unsafe {
        if guard as usize - at >= 8 {
            return super::bytes::canary_intact(p, size, guard as usize - p as usize);
        }
        while at < guard as usize {
            if core::ptr::with_exposed_provenance::<u8>(at).read() != pattern_byte(at) {
                return false;
            }
            at += 1;
        }
    }
    true
}
