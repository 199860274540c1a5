//! Sealed links: how a block freed by another thread waits on a list
//! (a page's `thread_free`, a segment's delayed list) without a forgeable
//! pointer in it.

use super::die;
use super::slots::Slot;
use crate::page::Page;
use crate::segment::{SEGMENT_SIZE, Segment};
use crate::sync::{AtomicU64, Ordering};
use crate::os;
use core::ptr;

/// A freed block on a remote or delayed list. Its link is sealed: stored
/// XORed with a process secret and the block's own address, so a link
/// forged or overwritten through a dangling pointer unseals to a wild
/// address, which `follow` catches before it is followed.
#[repr(C)]
pub(super) struct Sealed {
    link: usize,
}

impl crate::lockfree::Link for Sealed {
    unsafe fn set_next(node: *mut Self, next: *mut Self) {
        // SAFETY: the caller owns `node`.
        unsafe { (*node).link = seal(node as usize, next as usize) }
    }
}

static LINK_KEY: AtomicU64 = AtomicU64::new(0);

/// The process's link secret, drawn from getrandom on first use (the
/// compare-exchange makes every thread agree on one).
fn link_key() -> usize {
    let k = LINK_KEY.load(Ordering::Relaxed);
    if k != 0 {
        return k as usize;
    }
    let fresh = os::random_u64() | 1;
    match LINK_KEY.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => fresh as usize,
        Err(won) => won as usize,
    }
}

/// Seals (or unseals: it is its own inverse) the link stored at `at`.
fn seal(at: usize, link: usize) -> usize {
    link ^ link_key() ^ at.rotate_left(29)
}

/// The sealed link in the first word of listed block `block`.
///
/// # Safety
/// `block` is a listed block, owned by the caller.
pub(crate) unsafe fn link_of(block: *mut u8) -> usize {
    // SAFETY: the caller owns the block; its first word is the link.
    unsafe { block.cast::<Sealed>().read().link }
}

/// The block after `block` on a list of `seg`'s blocks, from the `link`
/// it held: checked to be a slot of `page` (or, with `page` null, of any
/// slab of `seg`) before anyone reads it.
pub(crate) fn follow(seg: *mut Segment, block: *mut u8, link: usize, page: *mut Page) -> *mut u8 {
    let next = seal(block as usize, link);
    if next == 0 {
        return ptr::null_mut();
    }
    // SAFETY: `next` lies in `seg`, a live segment (its listed blocks still
    // count as used), so `find` reads only its header.
    let ok = next & !(SEGMENT_SIZE - 1) == seg as usize
        && unsafe { Slot::find(seg, next as *mut u8) }
            .is_some_and(|s| page.is_null() || s.page == page);
    if !ok {
        die(b"corrupted free-list link", block as usize);
    }
    ptr::with_exposed_provenance_mut(next)
}
