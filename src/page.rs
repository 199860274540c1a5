//! A slab: one size class in a run of 64 KiB pages of a segment, with its
//! free list sharded three ways (mimalloc's design):
//!
//! * `free`: blocks the owner allocates from (no atomics);
//! * `local_free`: blocks the owner freed (no atomics);
//! * `thread_free`: blocks other threads freed, pushed with a CAS and taken
//!   whole by the owner.
//!
//! Invariant: `used == capacity - |free| - |local_free|`, where `capacity`
//! counts the blocks carved so far; blocks in `thread_free` still count as
//! used until the owner collects them.

use crate::lockfree::{Link, Pushed, RemoteFreeList};
use core::ptr;
use static_assertions::const_assert;

/// A free block; its first word links to the next free block.
#[repr(C)]
pub(crate) struct Block {
    pub(crate) next: *mut Block,
}

impl Link for Block {
    unsafe fn set_next(node: *mut Self, next: *mut Self) {
        // SAFETY: the caller owns `node`.
        unsafe { (*node).next = next }
    }
}

/// One cache line per descriptor: the owner's fields and the remote
/// `thread_free` share it (as in mimalloc), neighbours' pages do not.
#[repr(C, align(64))]
pub(crate) struct Page {
    /// Blocks ready to hand out. Owner only. In a hardened slab, only the
    /// first (the block of `first_free`, meaningless when that is
    /// `NO_SLOT`): its link is in the slot table, not in the block.
    pub(crate) free: *mut Block,
    /// Blocks freed by the owner. Owner only.
    pub(crate) local_free: *mut Block,
    /// Blocks freed by other threads; parked while `in_full`.
    pub(crate) thread_free: RemoteFreeList,
    /// Links in the owner heap's page queue or full list.
    pub(crate) next: *mut Page,
    pub(crate) prev: *mut Page,
    /// Blocks handed out and not yet seen freed by the owner. Owner only.
    pub(crate) used: u32,
    pub(crate) block_size: u32,
    /// Blocks carved onto the free lists so far; the rest of the slab is
    /// untouched memory.
    pub(crate) carved: u32,
    /// Blocks the slab holds.
    pub(crate) capacity: u32,
    /// The page sits in its heap's full list. Owner only.
    pub(crate) in_full: bool,
    /// Every block on `free` is zero apart from its link word.
    pub(crate) free_is_zero: bool,
    /// Size class; `u8::MAX` while the page is not a slab.
    pub(crate) class: u8,
    /// Slab pages in this slab (on the head descriptor).
    pub(crate) span: u8,
    /// Index distance to the slab's head descriptor (0 on the head).
    pub(crate) head_delta: u8,
    /// Slabs that keep their free list out of line (hardened ones, see
    /// `hardened::slots`): the slot of `free`, or `NO_SLOT`. Unused by
    /// default slabs.
    pub(crate) first_free: u16,
}

/// `Page::first_free` when no slot is free (below `0x8000`: hardened slot
/// tables keep their other states above it, see `hardened::slots`).
pub(crate) const NO_SLOT: u16 = 0x7ffe;

// A power-of-two size makes `ptr -> page` a shift, not a multiply.
const_assert!(core::mem::size_of::<Page>() == 64);

impl Page {
    /// A descriptor that is not a slab. Used to (re)initialise descriptors
    /// in place and for `EMPTY_PAGE`; every use is a fresh copy, which is
    /// what we want of its atomic.
    #[allow(clippy::declare_interior_mutable_const)]
    pub(crate) const EMPTY: Page = Page {
        free: ptr::null_mut(),
        used: 0,
        in_full: false,
        free_is_zero: false,
        class: u8::MAX,
        span: 0,
        head_delta: 0,
        first_free: NO_SLOT,
        local_free: ptr::null_mut(),
        thread_free: RemoteFreeList::new(),
        block_size: 0,
        carved: 0,
        capacity: 0,
        next: ptr::null_mut(),
        prev: ptr::null_mut(),
    };

    /// Makes this descriptor a fresh slab of `capacity` blocks of `class`.
    pub(crate) fn init_slab(
        &mut self,
        class: usize,
        block_size: usize,
        capacity: usize,
        zero: bool,
    ) {
        self.free = ptr::null_mut();
        self.used = 0;
        self.in_full = false;
        self.free_is_zero = zero;
        self.class = class as u8;
        self.local_free = ptr::null_mut();
        self.thread_free.reset();
        self.block_size = block_size as u32;
        self.carved = 0;
        self.capacity = capacity as u32;
        self.first_free = NO_SLOT;
        self.next = ptr::null_mut();
        self.prev = ptr::null_mut();
    }

    /// Carves up to about 4 KiB (at least one block) of the slab's fresh
    /// memory onto `free`. Carving lazily keeps untouched memory out of
    /// RSS. Returns false when the slab is fully carved.
    ///
    /// # Safety
    /// Owner only; `free` must be empty.
    pub(crate) unsafe fn extend(&mut self) -> bool {
        debug_assert!(self.free.is_null());
        let size = self.block_size as usize;
        let avail = (self.capacity - self.carved) as usize;
        if avail == 0 {
            return false;
        }
        // `max(1)`: no division-by-zero panic path in the allocator.
        let n = avail.min((4096 / size.max(1)).max(1));
        let start = crate::segment::slab_start(self);
        // SAFETY: blocks `carved .. carved+n` lie inside this slab and were
        // never handed out; blocks are 16-aligned.
        unsafe {
            let first = start.add(self.carved as usize * size);
            for i in 0..n {
                let b = first.add(i * size).cast::<Block>();
                let next = if i + 1 < n {
                    first.add((i + 1) * size).cast()
                } else {
                    ptr::null_mut()
                };
                (*b).next = next;
            }
            self.free = first.cast();
        }
        self.carved += n as u32;
        // Fresh blocks keep `free_is_zero` as the slab memory had it.
        true
    }

    /// Moves the owner's and other threads' frees onto `free`.
    ///
    /// # Safety
    /// Owner only; `free` must be empty.
    pub(crate) unsafe fn collect(&mut self) {
        debug_assert!(self.free.is_null());
        if !self.local_free.is_null() {
            self.free = self.local_free;
            self.local_free = ptr::null_mut();
            self.free_is_zero = false;
        }
        if self.thread_free.has_nodes() {
            // SAFETY: forwarded from the caller: owner only.
            unsafe { self.collect_thread_free() };
        }
    }

    /// Takes the whole remote-free list and puts it on `free`.
    ///
    /// # Safety
    /// Owner only (or the thread abandoning or reclaiming the segment).
    pub(crate) unsafe fn collect_thread_free(&mut self) {
        let (head, count) = self.thread_free.take_all_counted::<Block>();
        if head.is_null() {
            return;
        }
        if !self.free.is_null() {
            // Rare (abandon and reclaim): append `free` to the chain.
            let mut tail = head;
            // SAFETY: the Acquire swap made every pushed block and its link
            // visible; remote frees only push blocks of this page.
            unsafe {
                while !(*tail).next.is_null() {
                    tail = (*tail).next;
                }
                (*tail).next = self.free;
            }
        }
        self.free = head;
        self.free_is_zero = false;
        self.used -= count;
    }

    /// Takes back a block the owner freed (or adopted from a delayed list).
    ///
    /// # Safety
    /// Owner only; `block` is a live block of `page`.
    #[inline(always)]
    pub(crate) unsafe fn push_local(page: *mut Page, block: *mut Block) {
        // SAFETY: owner-only fields of a live page; the block is ours.
        unsafe {
            (*block).next = (*page).local_free;
            (*page).local_free = block;
            // The fast path splices `local_free` onto `free` without
            // looking at this flag, so it must already be false.
            (*page).free_is_zero = false;
            (*page).used -= 1;
        }
    }

    /// Marks an exhausted page as parked in the full list, so the next
    /// remote free tells the owner. Fails if remote frees arrived since the
    /// last collect; the caller collects them instead.
    pub(crate) fn try_park_full(&self) -> bool {
        self.thread_free.try_park()
    }

    /// Clears the notify flag when the owner itself takes the page back.
    pub(crate) fn unpark(&self) {
        self.thread_free.unpark();
    }

    /// Pushes `block` on `thread_free` from a thread that does not own the
    /// page. `NotifyOwner` means the page was parked full: the caller must
    /// hand the block to the owner through the segment's delayed-free list
    /// (the block keeps the page in use until the owner sees it, so the page
    /// cannot be freed meanwhile).
    ///
    /// # Safety
    /// `block` is a block of this page that the caller owns.
    pub(crate) unsafe fn push_thread_free(&self, block: *mut Block) -> Pushed {
        // SAFETY: forwarded; blocks are 16-aligned.
        unsafe { self.thread_free.push(block) }
    }
}
