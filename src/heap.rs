//! The default thread-local heap: the fast paths (`alloc_small`, `free`)
//! and what a default slab does on the shared slow path (`slabs`).
//!
//! A default slab keeps its free blocks in the blocks themselves, sharded
//! three ways (see `page`). Hardened mode has a heap of its own
//! (`hardened::heap`); a process in hardened mode never makes one of these,
//! so its default thread pointer stays a sentinel, whose empty pages send
//! every allocation to the slow path and on to `global`'s routing.

use crate::lockfree::Pushed;
use crate::mode::Zero;
use crate::page::{Block, Page};
use crate::segment::{ALL_SLAB_PAGES, Kind, PAGE_SIZE, Segment, segment_of};
use crate::size_class::{CLASSES, class_size, class_span};
use crate::slabs::{self, Collect, SlabOwner, Slabs, Want};
use crate::sync::Ordering;
use crate::thread::{self, Exit, Own, Shared, ThreadHeap, Threads};
use core::ptr;

#[repr(C)]
pub(crate) struct Heap {
    /// Per class: the page to allocate from, or `EMPTY_PAGE` (whose free
    /// list is always empty, so the fast path needs no null check).
    /// Invariant: `current[c]` is `slabs.queues[c].first`, or `EMPTY_PAGE`
    /// if the queue is empty.
    current: [*mut Page; CLASSES],
    slabs: Slabs,
    /// Link in the pool of unused heaps.
    pool_next: *mut Heap,
}

static EMPTY_PAGE: Shared<Page> = Shared::new(Page::EMPTY);

static THREADS: Threads<Heap> = Threads::new();

crate::tls::tls_word! {
    /// The thread's default heap (see `thread`).
    fn heap_word = "mapalloc_tls_default_heap"
}

// SAFETY: the statics are this kind's own; `exit` gives every segment up.
unsafe impl ThreadHeap for Heap {
    const INIT: Heap = Heap {
        current: [EMPTY_PAGE.get(); CLASSES],
        slabs: Slabs::EMPTY,
        pool_next: ptr::null_mut(),
    };

    fn threads() -> &'static Threads<Heap> {
        &THREADS
    }

    fn tls() -> *mut usize {
        heap_word()
    }

    fn pool_next(this: *mut Heap) -> *mut *mut Heap {
        // SAFETY: only the field's address is computed.
        unsafe { &raw mut (*this).pool_next }
    }

    unsafe fn exit(this: *mut Heap, how: Exit) {
        // SAFETY: forwarded; a heap that gives up is then reset.
        unsafe {
            match how {
                Exit::Keep => slabs::collect(this, Collect::ForExit),
                Exit::GiveUp => {
                    slabs::abandon(this);
                    *this = Heap::INIT;
                }
            }
        }
    }
}

/// True for the sentinels a thread's pointer holds before its heap is set
/// up and after it is given up.
pub(crate) fn is_sentinel(heap: *mut Heap) -> bool {
    THREADS.is_sentinel(heap)
}

/// The calling thread's heap (a sentinel until its first allocation).
#[inline(always)]
pub(crate) fn current_heap() -> *mut Heap {
    thread::current::<Heap>()
}

/// The `current` slot of `class`, without a bounds check (and so without a
/// panic path in the allocator).
///
/// # Safety
/// `heap` is valid and `class < CLASSES`.
#[inline(always)]
unsafe fn current(heap: *mut Heap, class: usize) -> *mut *mut Page {
    debug_assert!(class < CLASSES);
    // SAFETY: `class < CLASSES` (caller's contract), so inside the array.
    unsafe { (&raw mut (*heap).current).cast::<*mut Page>().add(class) }
}

/// Pops a block from the heap's current page of `class`, or null if it has
/// none: the caller then takes the slow path (`global::alloc_slow`).
///
/// # Safety
/// `heap` is the calling thread's heap (or a sentinel); `class < CLASSES`.
#[inline(always)]
pub(crate) unsafe fn try_alloc(heap: *mut Heap, class: usize, zero: Zero) -> *mut u8 {
    // SAFETY: `current[class]` is always a valid page (EMPTY_PAGE at worst)
    // owned by this thread; a non-null `free` is a block of that page.
    unsafe {
        let page = *current(heap, class);
        // When `free` runs dry the owner's own frees (`local_free`) are
        // next. Chosen with selects, not a branch: with random sizes a
        // class runs dry every few allocations at no predictable time, and
        // the mispredicted branch cost `small-random` 14% (1.1 mispredicts
        // an operation in cachegrind's model).
        let free = (*page).free;
        let local = (*page).local_free;
        let swap = free.is_null();
        let block = core::hint::select_unpredictable(swap, local, free);
        if block.is_null() {
            return ptr::null_mut();
        }
        (*page).local_free = core::hint::select_unpredictable(swap, ptr::null_mut(), local);
        hand_out(page, block, zero)
    }
}

/// Hands out `block`, the head of `page`'s `free` list.
///
/// # Safety
/// Owner only; `block` is `page.free`, not null.
#[inline(always)]
unsafe fn hand_out(page: *mut Page, block: *mut Block, zero: Zero) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe {
        (*page).free = (*block).next;
        (*page).used += 1;
        if zero == Zero::Yes {
            zero_block(page, block);
        }
    }
    block.cast()
}

/// # Safety
/// `block` was just popped from `page`'s free list.
#[inline(always)]
unsafe fn zero_block(page: *mut Page, block: *mut Block) {
    // SAFETY: the block is ours, `block_size` bytes long.
    unsafe {
        if (*page).free_is_zero {
            (*block).next = ptr::null_mut();
        } else {
            ptr::write_bytes(block.cast::<u8>(), 0, (*page).block_size as usize);
        }
    }
}

/// Finds a page with a free block for `class` and pops one; the thread's
/// first allocation sets up its heap here.
///
/// # Safety
/// `heap` is the calling thread's heap or a sentinel.
#[cold]
#[inline(never)]
pub(crate) unsafe fn alloc_slow(heap: *mut Heap, class: usize, zero: Zero) -> *mut u8 {
    // SAFETY: a sentinel is never written; a real heap is ours.
    unsafe {
        if THREADS.is_sentinel(heap) {
            return thread::alloc_without_heap(heap, |h| alloc_from(h, class, zero));
        }
        alloc_from(heap, class, zero)
    }
}

/// # Safety
/// The caller has exclusive use of `heap` (its thread's, or the fallback
/// heap under its lock).
unsafe fn alloc_from(heap: *mut Heap, class: usize, zero: Zero) -> *mut u8 {
    // SAFETY: exclusive use of `heap`.
    unsafe {
        let page = slabs::find_page(heap, class);
        if page.is_null() {
            return ptr::null_mut();
        }
        hand_out(page, (*page).free, zero)
    }
}

/// Frees a small or large block.
///
/// # Safety
/// `p` was returned by this allocator (in the default mode) and is not
/// used again.
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8) {
    // SAFETY: forwarded.
    unsafe { free_in(segment_of(p), p) }
}

/// `free` of `p`, which lies in the registered chunk `seg` (`segment_of`);
/// a pointer in a large mapping's chunk that is not its block (another
/// mapping may share the chunk) is left alone.
///
/// # Safety
/// `seg` heads a live segment or large mapping of ours, and `p` in it is
/// a block not used again (or, in a large mapping's chunk, not ours).
#[inline(always)]
pub(crate) unsafe fn free_in(seg: *mut Segment, p: *mut u8) {
    let heap = current_heap();
    // SAFETY: `p` came from us, so `seg` is a live segment or large mapping
    // header; if its owner is our heap, the page is ours to touch.
    unsafe {
        if (*seg).header.owner.load(Ordering::Relaxed) == heap.cast() {
            free_local(heap, Segment::page_of(seg, p), block_at(p), slabs::FreedBy::Program);
        } else {
            free_generic(seg, p);
        }
    }
}

/// The block at `p`, as a pointer with the provenance of our mapping
/// rather than the caller's: the caller's pointer may only cover its
/// `Layout` (one byte for a `Box<u8>`), and the free-list link (or, in
/// hardened mode, the zeroing) is written over more of the block. Casting
/// through the address picks up the segment mapping's provenance, exposed
/// when it was mapped. The caller's own provenance is exposed too, so that
/// a write through the result is also one through the caller's pointer:
/// a `Box` freed inside the function it was passed to is still protected
/// there, and only its own pointer may write under it (Miri's hardened
/// smoke test found a remote free zeroing such a `Box`). Compiles to
/// nothing.
#[inline(always)]
pub(crate) fn block_at(p: *mut u8) -> *mut Block {
    core::ptr::with_exposed_provenance_mut(p.expose_provenance())
}

/// # Safety
/// `page` is owned by `heap`'s thread and `block` is one of its blocks.
#[inline(always)]
unsafe fn free_local(heap: *mut Heap, page: *mut Page, block: *mut Block, by: slabs::FreedBy) {
    // SAFETY: owner-only fields of our own page.
    unsafe {
        Page::push_local(page, block);
        if (*page).used == 0 || (*page).in_full {
            // Emptying the current single-page slab is the common case of
            // alloc/free of one block: keep the page (no call, no purge).
            let keep = !(*page).in_full
                && (*page).span == 1
                && *current(heap, (*page).class as usize) == page;
            if !keep {
                page_changed(heap, page, by);
            }
        }
    }
}

/// A free from a thread that does not own the segment, or of a large block.
#[inline(never)]
unsafe fn free_generic(seg: *mut Segment, p: *mut u8) {
    // SAFETY: `seg` is the live header of the block `p` (caller's contract).
    unsafe {
        if (*seg).header.kind == Kind::Large {
            if crate::large::is_block(seg.cast(), p) {
                crate::large::free(seg.cast());
            }
            return;
        }
        let owner = (*seg).header.owner.load(Ordering::Relaxed);
        if owner.is_null() {
            // The segment's thread exited. Adopt it, so this and later
            // frees into it are local and its emptied pages go back to the
            // OS, even if no thread allocates again.
            let heap = current_heap();
            if !THREADS.is_sentinel(heap) {
                slabs::reclaim_abandoned(heap, Want::This(seg));
                if (*seg).header.owner.load(Ordering::Relaxed) == heap.cast() {
                    free_local(heap, Segment::page_of(seg, p), block_at(p), slabs::FreedBy::Program);
                    return;
                }
            }
        }
        let page = Segment::page_of(seg, p);
        let block = block_at(p);
        if (*page).push_thread_free(block) == Pushed::NotifyOwner {
            // The owner parked this page full: tell it through the segment,
            // carrying the block so the page stays in use until it looks.
            (*seg).push_delayed(block);
        }
    }
}

/// A local free emptied the page or freed into a parked-full page.
#[cold]
#[inline(never)]
unsafe fn page_changed(heap: *mut Heap, page: *mut Page, by: slabs::FreedBy) {
    // SAFETY: `page` belongs to `heap`, the calling thread's heap.
    unsafe {
        if (*page).in_full {
            slabs::unfull(heap, page);
        }
        if (*page).used == 0 {
            slabs::emptied(heap, page, by);
        }
    }
}

// SAFETY: `slabs` is the heap's own; the hooks keep the default page
// invariants (`page.rs`): blocks are linked through their first word.
unsafe impl SlabOwner for Heap {
    const SLAB_PAGES: u64 = ALL_SLAB_PAGES;

    fn slabs(this: *mut Heap) -> *mut Slabs {
        // SAFETY: only the field's address is computed.
        unsafe { &raw mut (*this).slabs }
    }

    fn span(class: usize) -> usize {
        class_span(class)
    }

    unsafe fn init_slab(_this: *mut Heap, seg: *mut Segment, page: *mut Page, class: usize) -> bool {
        // SAFETY: the slab's pages were just taken from our segment.
        unsafe {
            let idx = Segment::page_index(seg, page);
            let span = (*page).span as usize;
            let zero = (*seg).take_zero(idx, span);
            let size = class_size(class);
            // `max(1)`: no division-by-zero panic path in the allocator.
            (*page).init_slab(class, size, span * PAGE_SIZE / size.max(1), zero);
            (*page).extend();
        }
        true
    }

    unsafe fn refill(_this: *mut Heap, page: *mut Page) -> bool {
        // SAFETY: a slab of our heap.
        unsafe {
            if (*page).free.is_null() {
                (*page).collect();
                if (*page).free.is_null() {
                    (*page).extend();
                }
            }
            !(*page).free.is_null()
        }
    }

    unsafe fn collect_remote(page: *mut Page) {
        // SAFETY: the caller owns the page.
        unsafe { (*page).collect_thread_free() }
    }

    unsafe fn free_delayed(this: *mut Heap, seg: *mut Segment, block: *mut u8) -> *mut u8 {
        // SAFETY: a block of our segment, handed back; its link is read
        // before the free reuses it.
        unsafe {
            let block = block.cast::<Block>();
            let next = (*block).next;
            free_local(this, Segment::page_of(seg, block.cast()), block, slabs::FreedBy::Drain);
            next.cast()
        }
    }

    unsafe fn adopt_delayed(seg: *mut Segment, block: *mut u8) -> *mut u8 {
        // SAFETY: as for `free_delayed`.
        unsafe {
            let block = block.cast::<Block>();
            let next = (*block).next;
            Page::push_local(Segment::page_of(seg, block.cast()), block);
            next.cast()
        }
    }

    unsafe fn queue_changed(this: *mut Heap, class: usize) {
        // SAFETY: the caller has exclusive use of `this`.
        unsafe {
            let first = (*slabs::queue(&raw mut (*this).slabs, class)).first;
            *current(this, class) = if first.is_null() { EMPTY_PAGE.get() } else { first };
        }
    }

    unsafe fn retiring(_this: *mut Heap, _seg: *mut Segment, _idx: usize, _span: usize) -> bool {
        true
    }

    /// With `MAPALLOC_PREFAULT`, a fresh segment is faulted in whole now.
    /// (Not hardened segments: their slot tables are metadata and their
    /// slabs get guard pages later.)
    fn fresh_segment(seg: *mut Segment) -> bool {
        if crate::options::prefault() {
            crate::os::prefault(seg.cast(), crate::segment::SEGMENT_SIZE);
        }
        true
    }
}

/// The `collect()` API for the default heap of the calling thread and the
/// fallback heap.
pub(crate) fn collect_current() {
    thread::with_own_heaps::<Heap>(|heap, own| {
        let how = match own {
            Own::Thread => Collect::Everything,
            Own::Fallback => Collect::ForExit,
        };
        // SAFETY: the thread's own heap, or the fallback under its lock.
        unsafe { slabs::collect(heap, how) }
    });
}
