//! The thread-local heap: the fast paths (`alloc_small`, `free`) and the
//! slow path behind them (collect frees, park full pages, take a fresh
//! page, reclaim abandoned segments, map a segment).
//!
//! Ownership: a heap and every page in its queues are touched only by the
//! heap's thread, with two exceptions that are atomics: a page's
//! `thread_free` and a segment's `delayed_free`/`owner`.

use crate::global::Mode;
use crate::lockfree::Pushed;
use crate::os;
use crate::page::{Block, Page};
use crate::segment::{Kind, PAGE_SIZE, Segment, segment_of};
use crate::size_class::{CLASSES, class_of, class_size, class_span};
use crate::stats::{Counter, STATS};
use crate::sync::Ordering;
use crate::thread;
use core::ptr;

/// Whether an allocation must read as zero.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zero {
    No,
    Yes,
}

/// A doubly linked list of pages (through `Page::next/prev`).
#[derive(Clone, Copy)]
pub(crate) struct Queue {
    pub(crate) first: *mut Page,
    pub(crate) last: *mut Page,
}

impl Queue {
    const EMPTY: Queue = Queue {
        first: ptr::null_mut(),
        last: ptr::null_mut(),
    };

    /// # Safety
    /// `page` is in no list and owned by the caller's heap.
    pub(crate) unsafe fn push_front(&mut self, page: *mut Page) {
        // SAFETY: pages in the queue belong to this heap's thread.
        unsafe {
            (*page).prev = ptr::null_mut();
            (*page).next = self.first;
            if self.first.is_null() {
                self.last = page;
            } else {
                (*self.first).prev = page;
            }
        }
        self.first = page;
    }

    /// # Safety
    /// As `push_front`.
    pub(crate) unsafe fn push_back(&mut self, page: *mut Page) {
        // SAFETY: pages in the queue belong to this heap's thread.
        unsafe {
            (*page).next = ptr::null_mut();
            (*page).prev = self.last;
            if self.last.is_null() {
                self.first = page;
            } else {
                (*self.last).next = page;
            }
        }
        self.last = page;
    }

    /// # Safety
    /// `page` is in this queue.
    pub(crate) unsafe fn remove(&mut self, page: *mut Page) {
        // SAFETY: `page` and its neighbours are in this queue.
        unsafe {
            let (prev, next) = ((*page).prev, (*page).next);
            if prev.is_null() {
                self.first = next;
            } else {
                (*prev).next = next;
            }
            if next.is_null() {
                self.last = prev;
            } else {
                (*next).prev = prev;
            }
            (*page).next = ptr::null_mut();
            (*page).prev = ptr::null_mut();
        }
    }
}

#[repr(C)]
pub(crate) struct Heap {
    /// Per class: the page to allocate from, or `EMPTY_PAGE` (whose free
    /// list is always empty, so the fast path needs no null check).
    /// Invariant: `current[c]` is `queues[c].first`, or `EMPTY_PAGE` if the
    /// queue is empty.
    current: [*mut Page; CLASSES],
    /// Pages with (possibly) free blocks, per class.
    pub(crate) queues: [Queue; CLASSES],
    /// Pages found exhausted; each has `in_full` set and, until a remote
    /// free clears it, `NOTIFY_OWNER` in its `thread_free`.
    pub(crate) full: Queue,
    /// Segments this heap owns, linked through `heap_next/heap_prev`.
    segments: *mut Segment,
    /// Earliest `purge_at` of a segment with dirty pages (u64::MAX: none).
    purge_at: u64,
    /// Link in the pool of unused heaps.
    pub(crate) pool_next: *mut Heap,
    /// Hardened mode: allocation and free go through `hardened`.
    pub(crate) hardened: bool,
    /// State of the heap's random generator (hardened slab order).
    pub(crate) rng: u64,
    /// When a hardened heap retires the emptied slabs it keeps (coarse ms
    /// clock; u64::MAX: none kept).
    pub(crate) retire_at: u64,
    /// A hardened heap's cache of its own slab pages, for `free`.
    pub(crate) known: crate::hardened::KnownPages,
}

/// A `Sync` wrapper for the few static pages and heaps.
#[repr(transparent)]
pub(crate) struct Shared<T>(pub(crate) core::cell::UnsafeCell<T>);
// SAFETY: EMPTY_PAGE and the sentinel heaps are never written (their free
// lists are empty, so no path writes them); the fallback heap is written
// only under `FALLBACK_LOCK`.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub(crate) const fn get(&self) -> *mut T {
        self.0.get()
    }
}

pub(crate) static EMPTY_PAGE: Shared<Page> = Shared(core::cell::UnsafeCell::new(Page::EMPTY));

impl Heap {
    pub(crate) const INIT: Heap = Heap {
        current: [EMPTY_PAGE.get(); CLASSES],
        queues: [Queue::EMPTY; CLASSES],
        full: Queue::EMPTY,
        segments: ptr::null_mut(),
        purge_at: u64::MAX,
        pool_next: ptr::null_mut(),
        hardened: false,
        rng: 0,
        retire_at: u64::MAX,
        known: crate::hardened::KnownPages::EMPTY,
    };
}

/// The queue of `class`, without a bounds check (and so without a panic
/// path in the allocator).
///
/// # Safety
/// `heap` is valid and `class < CLASSES`.
#[inline(always)]
pub(crate) unsafe fn queue(heap: *mut Heap, class: usize) -> *mut Queue {
    debug_assert!(class < CLASSES);
    // SAFETY: `class < CLASSES` (caller's contract), so inside the array.
    unsafe { (&raw mut (*heap).queues).cast::<Queue>().add(class) }
}

/// The `current` slot of `class`, without a bounds check.
///
/// # Safety
/// As `queue`.
#[inline(always)]
unsafe fn current(heap: *mut Heap, class: usize) -> *mut *mut Page {
    debug_assert!(class < CLASSES);
    // SAFETY: `class < CLASSES` (caller's contract), so inside the array.
    unsafe { (&raw mut (*heap).current).cast::<*mut Page>().add(class) }
}

/// Re-establishes `current[class]` after its queue changed. A hardened
/// heap keeps every `current` at `EMPTY_PAGE`, so an allocation that
/// reaches the default fast path (through `MapAlloc::new()` with
/// `MAPALLOC_HARDENED=1`) misses it and goes to `hardened::alloc` through
/// `alloc_slow`: the fast path needs no mode test, and never pops from a
/// hardened page.
#[inline]
unsafe fn refresh_current(heap: *mut Heap, class: usize) {
    // SAFETY: the caller has exclusive use of `heap`.
    unsafe {
        let first = (*queue(heap, class)).first;
        *current(heap, class) = if first.is_null() || (*heap).hardened {
            EMPTY_PAGE.get()
        } else {
            first
        };
    }
}

/// Pops a block from the heap's current page of `size`'s class.
///
/// # Safety
/// `heap` is the calling thread's heap (or a sentinel); `size <= SMALL_MAX`.
#[inline(always)]
pub(crate) unsafe fn alloc_small(heap: *mut Heap, size: usize, zero: Zero, mode: Mode) -> *mut u8 {
    let class = class_of(size);
    // SAFETY: `current[class]` is always a valid page (EMPTY_PAGE at worst)
    // owned by this thread; a non-null `free` is a block of that page.
    unsafe {
        // A constant: `MapAlloc::hardened()` goes straight to hardened
        // mode, whatever the heap (see `hardened::alloc`); for
        // `MapAlloc::new()` this folds away.
        if mode == Mode::Hardened {
            return crate::hardened::alloc(heap, class, zero);
        }
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
            return alloc_slow(heap, class, zero, mode);
        }
        (*page).local_free = core::hint::select_unpredictable(swap, ptr::null_mut(), local);
        (*page).free = (*block).next;
        (*page).used += 1;
        if zero == Zero::Yes {
            zero_block(page, block);
        }
        block.cast()
    }
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

/// Frees a small or large block (`mode`: as for `alloc_small`). A
/// hardened request in a process that runs in the default mode reaches
/// `hardened::free_checked` (a default heap knows no pages), which aborts.
///
/// # Safety
/// `p` was returned by this allocator and is not used again.
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8, mode: Mode) {
    // SAFETY: hardened free validates `p` before trusting it. Inlined for
    // `MapAlloc::hardened()`; out of line behind the one predictable test
    // that `MAPALLOC_HARDENED=1` costs the default.
    unsafe {
        if mode == Mode::Hardened {
            return crate::hardened::free(p);
        }
        if crate::hardened::enabled() {
            return crate::hardened::free_outlined(p);
        }
    }
    let seg = segment_of(p);
    let heap = thread::current_heap();
    // SAFETY: `p` came from us, so `seg` is a live segment or large mapping
    // header; if its owner is our heap, the page is ours to touch.
    unsafe {
        if (*seg).header.owner.load(Ordering::Relaxed) == heap {
            free_local(heap, Segment::page_of(seg, p), block_at(p));
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
unsafe fn free_local(heap: *mut Heap, page: *mut Page, block: *mut Block) {
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
                page_changed(heap, page);
            }
        }
    }
}

/// Takes the blocks other threads freed into `page`, in the heap's mode.
unsafe fn collect_remote(heap: *mut Heap, page: *mut Page) {
    // SAFETY: owner-only (caller's contract).
    unsafe {
        if (*heap).hardened {
            crate::hardened::collect_remote(page);
        } else {
            (*page).collect_thread_free();
        }
    }
}

/// Frees a block of a page the heap owns, in the heap's mode.
///
/// # Safety
/// `page` is owned by `heap`'s thread and `block` is a live block of it.
pub(crate) unsafe fn free_owned(heap: *mut Heap, page: *mut Page, block: *mut Block) {
    // SAFETY: forwarded.
    unsafe {
        if (*heap).hardened {
            crate::hardened::free_local(heap, page, block.cast());
        } else {
            free_local(heap, page, block);
        }
    }
}

/// A free from a thread that does not own the segment, or of a large block.
#[inline(never)]
unsafe fn free_generic(seg: *mut Segment, p: *mut u8) {
    // SAFETY: `seg` is the live header of the block `p` (caller's contract).
    unsafe {
        if (*seg).header.kind == Kind::Large {
            crate::large::free(seg.cast());
            return;
        }
        let owner = (*seg).header.owner.load(Ordering::Relaxed);
        if owner.is_null() {
            // The segment's thread exited. Adopt it, so this and later
            // frees into it are local and its emptied pages go back to the
            // OS, even if no thread allocates again.
            let heap = thread::current_heap();
            if !thread::is_sentinel(heap) {
                reclaim_abandoned(heap, Want::This(seg));
                if (*seg).header.owner.load(Ordering::Relaxed) == heap {
                    free_local(heap, Segment::page_of(seg, p), block_at(p));
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
unsafe fn page_changed(heap: *mut Heap, page: *mut Page) {
    // SAFETY: `page` belongs to `heap`, the calling thread's heap.
    unsafe {
        if (*page).in_full {
            unfull(heap, page);
        }
        if (*page).used == 0 {
            retire(heap, page);
        }
    }
}

/// Moves a parked page back to its class queue.
pub(crate) unsafe fn unfull(heap: *mut Heap, page: *mut Page) {
    // SAFETY: owner-only queues of the caller's heap.
    unsafe {
        (*page).unpark();
        (*page).in_full = false;
        (*heap).full.remove(page);
        let class = (*page).class as usize;
        (*queue(heap, class)).push_back(page);
        refresh_current(heap, class);
    }
}

/// Frees an empty page back to its segment (and the segment, if empty).
pub(crate) unsafe fn retire(heap: *mut Heap, page: *mut Page) {
    // SAFETY: `page` is an empty slab of the calling thread's heap; its
    // descriptor lives in the segment header, so masking finds the segment.
    unsafe {
        debug_assert!((*page).used == 0 && !(*page).in_full);
        let class = (*page).class as usize;
        (*queue(heap, class)).remove(page);
        refresh_current(heap, class);
        let seg = ((page as usize) & !(crate::segment::SEGMENT_SIZE - 1)) as *mut Segment;
        let span = (*page).span as usize;
        let idx = Segment::page_index(seg, page);
        if (*heap).hardened && !crate::hardened::retire_slab(heap, seg, idx, span) {
            // The guard page could not be made writable again: leave the
            // pages out of use rather than hand out a slab with a hole.
            return;
        }
        for i in 0..span {
            *Segment::page_ptr(seg, idx + i) = Page::EMPTY;
        }
        STATS.sub(Counter::SlabBytes, span * PAGE_SIZE);
        let now = os::now_ms();
        (*seg).give_pages(idx, span, now);
        if (*seg).is_empty() {
            unlink_segment(heap, seg);
            Segment::release(seg);
        } else {
            (*heap).purge_at = (*heap).purge_at.min((*seg).purge_at);
            maybe_purge(heap, now);
        }
    }
}

/// Finds a page with a free block for `class` and pops one.
///
/// # Safety
/// `heap` is the calling thread's heap or a sentinel.
#[cold]
#[inline(never)]
pub(crate) unsafe fn alloc_slow(heap: *mut Heap, class: usize, zero: Zero, mode: Mode) -> *mut u8 {
    // SAFETY: `heap` is the calling thread's heap or a sentinel; the
    // sentinels are dispatched before any field is written (their
    // `hardened` is false). Under `MAPALLOC_HARDENED=1` a hardened heap
    // comes here on every allocation, so it goes first.
    unsafe {
        if (*heap).hardened {
            return crate::hardened::alloc(heap, class, zero);
        }
        // Before the thread's heap is made, the mode can still be fixed;
        // after, a hardened request aborts (see `Mode::apply`).
        mode.apply();
        if thread::is_sentinel(heap) {
            return thread::alloc_without_heap(heap, class_size(class), zero);
        }
        alloc_from(heap, class, zero)
    }
}

/// # Safety
/// The caller has exclusive use of `heap` (its thread's, or the fallback
/// heap under its lock).
pub(crate) unsafe fn alloc_from(heap: *mut Heap, class: usize, zero: Zero) -> *mut u8 {
    // SAFETY: exclusive use of `heap` (caller's contract).
    unsafe {
        if (*heap).hardened {
            return crate::hardened::alloc(heap, class, zero);
        }
        let page = find_page(heap, class);
        if page.is_null() {
            return ptr::null_mut();
        }
        let block = (*page).free;
        (*page).free = (*block).next;
        (*page).used += 1;
        if zero == Zero::Yes {
            zero_block(page, block);
        }
        block.cast()
    }
}

/// Returns a page of `class` whose `free` list is non-empty, made current;
/// null only if the OS refuses memory.
unsafe fn find_page(heap: *mut Heap, class: usize) -> *mut Page {
    // SAFETY: exclusive use of `heap` and its pages.
    unsafe {
        if let Some(p) = scan_queue(heap, class) {
            return p;
        }
        if drain_delayed(heap)
            && let Some(p) = scan_queue(heap, class)
        {
            return p;
        }
        maybe_purge(heap, os::now_ms());
        if let Some(p) = fresh_page(heap, class) {
            return p;
        }
        if reclaim_abandoned(heap, Want::One) {
            if let Some(p) = scan_queue(heap, class) {
                return p;
            }
            if let Some(p) = fresh_page(heap, class) {
                return p;
            }
        }
        new_segment_page(heap, class)
    }
}

/// Walks the class queue: the first page that has (or can collect or
/// carve) a free block becomes current; exhausted pages are parked in the
/// full list, so each page is passed over at most once per fill.
unsafe fn scan_queue(heap: *mut Heap, class: usize) -> Option<*mut Page> {
    // SAFETY: exclusive use of `heap` and its pages.
    unsafe {
        let mut page = (*queue(heap, class)).first;
        while !page.is_null() {
            if (*page).free.is_null() {
                (*page).collect();
                if (*page).free.is_null() {
                    (*page).extend();
                }
            }
            if !(*page).free.is_null() {
                let q = &mut (*queue(heap, class));
                if q.first != page {
                    q.remove(page);
                    q.push_front(page);
                }
                *current(heap, class) = page;
                return Some(page);
            }
            if !(*page).try_park_full() {
                continue; // remote frees arrived meanwhile: collect them
            }
            let next = (*page).next;
            (*queue(heap, class)).remove(page);
            (*page).in_full = true;
            (*heap).full.push_back(page);
            page = next;
        }
        *current(heap, class) = EMPTY_PAGE.get();
        None
    }
}

/// Carves a new slab for `class` from a segment the heap already owns.
pub(crate) unsafe fn fresh_page(heap: *mut Heap, class: usize) -> Option<*mut Page> {
    // SAFETY: reading our own heap's mode.
    let span = unsafe { slab_span(heap, class) };
    // SAFETY: the heap's segments are owned by the calling thread.
    unsafe {
        let mut seg = (*heap).segments;
        while !seg.is_null() {
            if let Some(idx) = (*seg).take_pages(span) {
                return Some(init_slab(heap, seg, idx, class));
            }
            seg = (*seg).heap_next;
        }
    }
    None
}

/// Slab pages for `class` in this heap's mode (hardened slabs end with a
/// guard page, so they may need one page more).
unsafe fn slab_span(heap: *mut Heap, class: usize) -> usize {
    // SAFETY: reading our own heap's mode.
    if unsafe { (*heap).hardened } {
        crate::hardened::slab_span(class)
    } else {
        class_span(class)
    }
}

pub(crate) unsafe fn new_segment_page(heap: *mut Heap, class: usize) -> *mut Page {
    let seg = Segment::acquire(heap);
    if seg.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: the segment was just acquired for this heap.
    unsafe {
        link_segment(heap, seg);
        match (*seg).take_pages(slab_span(heap, class)) {
            Some(idx) => init_slab(heap, seg, idx, class),
            None => ptr::null_mut(),
        }
    }
}

unsafe fn init_slab(heap: *mut Heap, seg: *mut Segment, idx: usize, class: usize) -> *mut Page {
    let span = class_span(class);
    // SAFETY: pages `[idx, idx+span)` were just taken from our segment.
    unsafe {
        if (*heap).hardened {
            return crate::hardened::init_slab(heap, seg, idx, class);
        }
        let zero = (*seg).take_zero(idx, span);
        for i in 1..span {
            let d = Segment::page_ptr(seg, idx + i);
            *d = Page::EMPTY;
            (*d).head_delta = i as u8;
        }
        let page = Segment::page_ptr(seg, idx);
        let size = class_size(class);
        // `max(1)`: no division-by-zero panic path in the allocator.
        (*page).init_slab(class, size, span * PAGE_SIZE / size.max(1), zero);
        (*page).span = span as u8;
        (*page).head_delta = 0;
        (*page).extend();
        STATS.add(Counter::SlabBytes, span * PAGE_SIZE);
        (*queue(heap, class)).push_front(page);
        refresh_current(heap, class);
        page
    }
}

unsafe fn link_segment(heap: *mut Heap, seg: *mut Segment) {
    // SAFETY: owner-only list links.
    unsafe {
        (*seg).heap_prev = ptr::null_mut();
        (*seg).heap_next = (*heap).segments;
        if !(*heap).segments.is_null() {
            (*(*heap).segments).heap_prev = seg;
        }
        (*heap).segments = seg;
    }
}

unsafe fn unlink_segment(heap: *mut Heap, seg: *mut Segment) {
    // SAFETY: owner-only list links.
    unsafe {
        let (prev, next) = ((*seg).heap_prev, (*seg).heap_next);
        if prev.is_null() {
            (*heap).segments = next;
        } else {
            (*prev).heap_next = next;
        }
        if !next.is_null() {
            (*next).heap_prev = prev;
        }
    }
}

/// Frees the blocks other threads handed back through segments'
/// delayed lists. True if any page came back from the full list.
pub(crate) unsafe fn drain_delayed(heap: *mut Heap) -> bool {
    let mut revived = false;
    // SAFETY: the heap's segments are ours; drained blocks are blocks of
    // our pages that their freeing threads gave up.
    unsafe {
        let mut seg = (*heap).segments;
        while !seg.is_null() {
            let next_seg = (*seg).heap_next;
            let mut block = (*seg).take_delayed();
            while !block.is_null() {
                let page = Segment::page_of(seg, block.cast());
                revived |= (*page).in_full;
                if (*heap).hardened {
                    // Followed only once the block is back (see
                    // `hardened::collect_remote`).
                    let link = crate::hardened::link_of(block.cast());
                    free_owned(heap, page, block);
                    block = crate::hardened::follow(seg, block.cast(), link, ptr::null_mut()).cast();
                } else {
                    let next = (*block).next;
                    free_owned(heap, page, block);
                    block = next;
                }
            }
            seg = next_seg;
        }
    }
    revived
}

/// Purges the dirty pages of segments whose delay has passed.
pub(crate) unsafe fn maybe_purge(heap: *mut Heap, now: u64) {
    crate::large::purge_expired(now);
    crate::segment::SEGMENT_CACHE.purge_expired(now);
    // SAFETY: the heap's segments are ours.
    unsafe {
        if now < (*heap).purge_at {
            return;
        }
        let mut next_at = u64::MAX;
        let mut seg = (*heap).segments;
        while !seg.is_null() {
            if (*seg).dirty_mask != 0 {
                if now >= (*seg).purge_at {
                    (*seg).purge_dirty();
                } else {
                    next_at = next_at.min((*seg).purge_at);
                }
            }
            seg = (*seg).heap_next;
        }
        (*heap).purge_at = next_at;
    }
}

/// How many abandoned segments a heap adopts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// One, for a heap that needs pages: the rest stay for other threads,
    /// so concurrent new threads share abandoned segments instead of each
    /// mapping its own.
    One,
    /// The one a thread frees into, so its frees there become local.
    This(*mut Segment),
    /// All, for `collect()`.
    All,
}

/// Adopts abandoned segments. True if any page joined a queue.
pub(crate) unsafe fn reclaim_abandoned(heap: *mut Heap, want: Want) -> bool {
    let mut seg = Segment::take_abandoned();
    let mut any = false;
    let mut adopted = 0;
    while !seg.is_null() {
        // SAFETY: taking the list gave us exclusive ownership of each
        // segment; the Acquire in `take_all` made the abandoning thread's
        // writes to it visible. Remote threads touch only the atomics.
        unsafe {
            let next = (*seg).abandoned_next;
            let skip = match want {
                Want::One => adopted == 1,
                Want::This(target) => seg != target,
                Want::All => false,
            };
            if skip {
                Segment::abandon_again(seg);
                seg = next;
                continue;
            }
            adopted += 1;
            STATS.sub(Counter::AbandonedSegments, 1);
            (*seg).header.owner.store(heap, Ordering::Release);
            link_segment(heap, seg);
            // Delayed blocks go straight back to their pages.
            let mut block = (*seg).take_delayed();
            while !block.is_null() {
                let next_block = (*block).next;
                let page = Segment::page_of(seg, block.cast());
                if (*heap).hardened {
                    crate::hardened::take_back(page, block.cast());
                } else {
                    Page::push_local(page, block);
                }
                block = next_block;
            }
            let mut empty = 0u64;
            for idx in 1..crate::segment::PAGES {
                let page = Segment::page_ptr(seg, idx);
                if (*page).head_delta != 0 || (*page).class == u8::MAX {
                    continue;
                }
                collect_remote(heap, page);
                (*page).in_full = false;
                (*queue(heap, (*page).class as usize)).push_back(page);
                if (*page).used == 0 {
                    empty |= 1 << idx;
                } else {
                    any = true;
                }
            }
            // Retiring the last empty page may release the segment: touch
            // nothing of it after this loop.
            while empty != 0 {
                let idx = empty.trailing_zeros() as usize;
                empty &= empty - 1;
                retire(heap, Segment::page_ptr(seg, idx));
            }
            seg = next;
        }
    }
    // SAFETY: our own heap.
    unsafe {
        for class in 0..CLASSES {
            refresh_current(heap, class);
        }
    }
    any
}

/// What `collect` does beyond freeing empty pages: the `collect()` API
/// adopts abandoned segments and purges at once; thread exit does neither
/// (a purge now would only make the next thread fault the pages in again).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collect {
    Everything,
    ForExit,
}

/// Frees every empty page now and purges dirty pages (the `collect()` API
/// and thread exit).
pub(crate) unsafe fn collect(heap: *mut Heap, how: Collect) {
    // SAFETY: exclusive use of `heap` (caller's contract).
    unsafe {
        if how == Collect::Everything {
            reclaim_abandoned(heap, Want::All);
        }
        drain_delayed(heap);
        for class in 0..CLASSES {
            let mut page = (*queue(heap, class)).first;
            while !page.is_null() {
                let next = (*page).next;
                collect_remote(heap, page);
                if (*page).used == 0 {
                    retire(heap, page);
                }
                page = next;
            }
        }
        if how == Collect::Everything {
            let mut seg = (*heap).segments;
            while !seg.is_null() {
                (*seg).purge_dirty();
                seg = (*seg).heap_next;
            }
            (*heap).purge_at = u64::MAX;
        }
    }
}

/// Gives up every segment of an exiting thread's heap: empty ones are
/// released, the rest go to the abandoned list for live threads to adopt.
pub(crate) unsafe fn abandon(heap: *mut Heap) {
    // SAFETY: called by the heap's own thread as it exits.
    unsafe {
        // Bring parked pages back so every page is in a class queue.
        while !(*heap).full.first.is_null() {
            unfull(heap, (*heap).full.first);
        }
        collect(heap, Collect::ForExit);
        let mut seg = (*heap).segments;
        while !seg.is_null() {
            let next = (*seg).heap_next;
            for idx in 1..crate::segment::PAGES {
                let page = Segment::page_ptr(seg, idx);
                (*page).next = ptr::null_mut();
                (*page).prev = ptr::null_mut();
            }
            (*seg).heap_next = ptr::null_mut();
            (*seg).heap_prev = ptr::null_mut();
            (*seg)
                .header
                .owner
                .store(ptr::null_mut(), Ordering::Release);
            Segment::abandon(seg);
            seg = next;
        }
        *heap = Heap::INIT;
    }
}
