//! The slabs a heap owns, and the slow path shared by both kinds of heap:
//! walk a class queue, park exhausted pages, drain the blocks other threads
//! handed back, carve a fresh slab, adopt abandoned segments, map a new
//! segment, retire empty slabs, purge, and give everything up at thread
//! exit.
//!
//! What differs between the default heap (`heap`) and the hardened heap
//! (`hardened::heap`) is how a slab keeps its free blocks: a heap says it
//! through `SlabOwner`, and this module never looks at a block itself.
//! Neither heap imports the other; both stand on this module, on
//! `segment` and `page`, and on `os`.
//!
//! Ownership: a heap's `Slabs` and every page in its queues are touched
//! only by the heap's thread, except a page's `thread_free` and a
//! segment's `delayed_free`/`owner`, which are atomics.

use crate::os;
use crate::page::Page;
use crate::segment::{PAGE_SIZE, PAGES, SEGMENT_SIZE, Segment};
use crate::size_class::CLASSES;
use crate::stats::{Counter, STATS};
use crate::sync::Ordering;
use core::ptr;

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

/// The pages and segments a heap owns.
///
/// Invariants: a page with a class is in `queues[class]` unless `in_full`,
/// and then in `full`; every segment in `segments` is owned by this heap
/// (its `owner` is the heap); `purge_at` is at most the `purge_at` of every
/// segment of the heap with dirty pages.
#[repr(C)]
pub(crate) struct Slabs {
    /// Pages with (possibly) free blocks, per class.
    pub(crate) queues: [Queue; CLASSES],
    /// Pages found exhausted; each has `in_full` set and, until a remote
    /// free clears it, `NOTIFY_OWNER` in its `thread_free`.
    pub(crate) full: Queue,
    /// Segments this heap owns, linked through `heap_next/heap_prev`.
    segments: *mut Segment,
    /// Earliest `purge_at` of a segment with dirty pages (u64::MAX: none).
    purge_at: u64,
    /// When the emptied slabs kept in the queues are retired (coarse ms
    /// clock; u64::MAX: none kept; see `emptied`).
    retire_at: u64,
}

impl Slabs {
    pub(crate) const EMPTY: Slabs = Slabs {
        queues: [Queue::EMPTY; CLASSES],
        full: Queue::EMPTY,
        segments: ptr::null_mut(),
        purge_at: u64::MAX,
        retire_at: u64::MAX,
    };
}

/// What a kind of heap does with its slabs. The functions of this module
/// call these hooks and do the rest themselves.
///
/// # Safety
/// `slabs` must return the heap's own `Slabs`; the hooks uphold the page
/// invariants (`page.rs`) for the heap's kind of slab.
pub(crate) unsafe trait SlabOwner {
    /// The pages of a segment that may hold slabs (bit i: page i).
    const SLAB_PAGES: u64;

    /// Empty slabs stay set up in their queues when the heap's thread
    /// exits and when another heap adopts their segment (they are retired
    /// by the owner's own schedule, `retire_kept`, or by `collect()`): for
    /// a kind whose slabs cost a lot to set up again.
    const KEEP_EMPTY: bool = false;

    /// The heap's slabs.
    fn slabs(this: *mut Self) -> *mut Slabs;

    /// Slab pages in a slab of `class`.
    fn span(class: usize) -> usize;

    /// Makes pages `[idx, idx + span(class))` of `seg`, whose descriptors
    /// `carve` has just set up, a slab of `class`. False if it cannot (the
    /// caller gives the pages back).
    ///
    /// # Safety
    /// The pages were just taken from `this`'s segment `seg`.
    unsafe fn init_slab(this: *mut Self, seg: *mut Segment, page: *mut Page, class: usize) -> bool;

    /// Takes what was freed into `page` (by the owner, and by other
    /// threads) and makes more of the slab usable if it can; true if
    /// `page` can now hand out a block.
    ///
    /// # Safety
    /// `page` is a slab of `this`.
    unsafe fn refill(this: *mut Self, page: *mut Page) -> bool;

    /// Takes back every block other threads freed into `page`.
    ///
    /// # Safety
    /// The caller owns `page` (its heap's, or a segment being adopted or
    /// given up).
    unsafe fn collect_remote(page: *mut Page);

    /// Frees `block`, which another thread handed back through `seg`'s
    /// delayed list, and returns the block after it on that list.
    ///
    /// # Safety
    /// `block` came from the delayed list of `this`'s segment `seg`.
    unsafe fn free_delayed(this: *mut Self, seg: *mut Segment, block: *mut u8) -> *mut u8;

    /// As `free_delayed`, for a segment being adopted: the block goes back
    /// to its page, and nothing else about the page changes yet.
    ///
    /// # Safety
    /// `block` came from the delayed list of `seg`, which the caller is
    /// adopting.
    unsafe fn adopt_delayed(seg: *mut Segment, block: *mut u8) -> *mut u8;

    /// `queues[class]` changed.
    ///
    /// # Safety
    /// Exclusive use of `this`.
    unsafe fn queue_changed(this: *mut Self, class: usize);

    /// The slab at pages `[idx, idx + span)` of `seg` is being retired;
    /// false leaves its pages out of use.
    ///
    /// # Safety
    /// The slab is `this`'s, empty and out of its queue.
    unsafe fn retiring(this: *mut Self, seg: *mut Segment, idx: usize, span: usize) -> bool;

    /// Prepares a segment fresh from the OS; false if it cannot be used.
    fn fresh_segment(seg: *mut Segment) -> bool;
}

/// The queue of `class`, without a bounds check (and so without a panic
/// path in the allocator).
///
/// # Safety
/// `slabs` is valid and `class < CLASSES`.
#[inline(always)]
pub(crate) unsafe fn queue(slabs: *mut Slabs, class: usize) -> *mut Queue {
    debug_assert!(class < CLASSES);
    // SAFETY: `class < CLASSES` (caller's contract), so inside the array.
    unsafe { (&raw mut (*slabs).queues).cast::<Queue>().add(class) }
}

#[inline(always)]
fn queue_of<H: SlabOwner>(this: *mut H, class: usize) -> *mut Queue {
    // SAFETY: callers pass their own heap and a class of one of its pages.
    unsafe { queue(H::slabs(this), class) }
}

/// The segment whose header holds descriptor `page`.
pub(crate) fn segment_of_page(page: *mut Page) -> *mut Segment {
    (page as usize & !(SEGMENT_SIZE - 1)) as *mut Segment
}

/// Returns a page of `class` that can hand out a block, first in its
/// queue; null only if the OS refuses memory.
///
/// # Safety
/// Exclusive use of `this`.
pub(crate) unsafe fn find_page<H: SlabOwner>(this: *mut H, class: usize) -> *mut Page {
    // SAFETY: exclusive use of `this` and its pages.
    unsafe {
        if let Some(p) = scan_queue(this, class) {
            return p;
        }
        if drain_delayed(this)
            && let Some(p) = scan_queue(this, class)
        {
            return p;
        }
        let now = os::now_ms();
        retire_kept(this, now);
        maybe_purge(this, now);
        if let Some(p) = fresh_page(this, class) {
            return p;
        }
        if reclaim_abandoned(this, Want::One) {
            if let Some(p) = scan_queue(this, class) {
                return p;
            }
            if let Some(p) = fresh_page(this, class) {
                return p;
            }
        }
        new_segment_page(this, class)
    }
}

/// Walks the class queue: the first page that can hand out a block moves
/// to the front; exhausted pages are parked in the full list, so each
/// page is passed over at most once per fill.
unsafe fn scan_queue<H: SlabOwner>(this: *mut H, class: usize) -> Option<*mut Page> {
    // SAFETY: exclusive use of `this` and its pages.
    unsafe {
        let q = queue_of(this, class);
        let mut page = (*q).first;
        while !page.is_null() {
            if H::refill(this, page) {
                if (*q).first != page {
                    (*q).remove(page);
                    (*q).push_front(page);
                }
                H::queue_changed(this, class);
                return Some(page);
            }
            if !(*page).try_park_full() {
                continue; // remote frees arrived meanwhile: take them
            }
            let next = (*page).next;
            (*q).remove(page);
            (*page).in_full = true;
            (*H::slabs(this)).full.push_back(page);
            page = next;
        }
        H::queue_changed(this, class);
        None
    }
}

/// Sets up the descriptors of pages `[idx, idx+span)` of `seg` as one
/// slab headed by the first, and returns it.
///
/// # Safety
/// The pages were just taken from the caller's segment `seg`.
unsafe fn carve(seg: *mut Segment, idx: usize, span: usize) -> *mut Page {
    // SAFETY: the descriptors of pages the caller owns.
    unsafe {
        for i in 1..span {
            let d = Segment::page_ptr(seg, idx + i);
            *d = Page::EMPTY;
            (*d).head_delta = i as u8;
        }
        let page = Segment::page_ptr(seg, idx);
        *page = Page::EMPTY;
        (*page).span = span as u8;
        page
    }
}

/// Makes pages `[idx, idx+span)` of `seg` a slab of `class`, first in its
/// queue; None (pages given back) if the heap cannot set it up.
unsafe fn make_slab<H: SlabOwner>(this: *mut H, seg: *mut Segment, idx: usize, class: usize) -> Option<*mut Page> {
    let span = H::span(class);
    // SAFETY: the pages were just taken from our segment.
    unsafe {
        let page = carve(seg, idx, span);
        if !H::init_slab(this, seg, page, class) {
            for i in 0..span {
                *Segment::page_ptr(seg, idx + i) = Page::EMPTY;
            }
            (*seg).give_pages(idx, span, os::now_ms());
            return None;
        }
        STATS.add(Counter::SlabBytes, span * PAGE_SIZE);
        (*queue_of(this, class)).push_front(page);
        H::queue_changed(this, class);
        Some(page)
    }
}

/// Carves a new slab for `class` from a segment the heap already owns.
unsafe fn fresh_page<H: SlabOwner>(this: *mut H, class: usize) -> Option<*mut Page> {
    let span = H::span(class);
    // SAFETY: the heap's segments are owned by the calling thread.
    unsafe {
        let mut seg = (*H::slabs(this)).segments;
        while !seg.is_null() {
            if let Some(idx) = (*seg).take_pages(span) {
                return make_slab(this, seg, idx, class);
            }
            seg = (*seg).heap_next;
        }
    }
    None
}

/// A slab of `class` in a segment taken from the cache or mapped fresh.
unsafe fn new_segment_page<H: SlabOwner>(this: *mut H, class: usize) -> *mut Page {
    let seg = Segment::acquire(this.cast(), H::SLAB_PAGES, H::fresh_segment);
    if seg.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: the segment was just acquired for this heap.
    unsafe {
        link_segment(this, seg);
        match (*seg).take_pages(H::span(class)) {
            Some(idx) => make_slab(this, seg, idx, class).unwrap_or(ptr::null_mut()),
            None => ptr::null_mut(),
        }
    }
}

unsafe fn link_segment<H: SlabOwner>(this: *mut H, seg: *mut Segment) {
    // SAFETY: owner-only list links.
    unsafe {
        let slabs = H::slabs(this);
        (*seg).heap_prev = ptr::null_mut();
        (*seg).heap_next = (*slabs).segments;
        if !(*slabs).segments.is_null() {
            (*(*slabs).segments).heap_prev = seg;
        }
        (*slabs).segments = seg;
    }
}

unsafe fn unlink_segment<H: SlabOwner>(this: *mut H, seg: *mut Segment) {
    // SAFETY: owner-only list links.
    unsafe {
        let (prev, next) = ((*seg).heap_prev, (*seg).heap_next);
        if prev.is_null() {
            (*H::slabs(this)).segments = next;
        } else {
            (*prev).heap_next = next;
        }
        if !next.is_null() {
            (*next).heap_prev = prev;
        }
    }
}

/// Moves a parked page back to its class queue.
///
/// # Safety
/// `page` is in `this`'s full list.
pub(crate) unsafe fn unfull<H: SlabOwner>(this: *mut H, page: *mut Page) {
    // SAFETY: owner-only queues of the caller's heap.
    unsafe {
        (*page).unpark();
        (*page).in_full = false;
        (*H::slabs(this)).full.remove(page);
        let class = (*page).class as usize;
        (*queue_of(this, class)).push_back(page);
        H::queue_changed(this, class);
    }
}

/// Frees an empty slab back to its segment (and the segment, if that
/// empties it: touch nothing of the segment after).
///
/// # Safety
/// `page` heads an empty slab of `this`, in its class queue.
pub(crate) unsafe fn retire<H: SlabOwner>(this: *mut H, page: *mut Page) {
    // SAFETY: `page` is an empty slab of the calling thread's heap; its
    // descriptor lives in the segment header, so masking finds the segment.
    unsafe {
        debug_assert!((*page).used == 0 && !(*page).in_full);
        let class = (*page).class as usize;
        (*queue_of(this, class)).remove(page);
        H::queue_changed(this, class);
        let seg = segment_of_page(page);
        let span = (*page).span as usize;
        let idx = Segment::page_index(seg, page);
        if !H::retiring(this, seg, idx, span) {
            return;
        }
        for i in 0..span {
            *Segment::page_ptr(seg, idx + i) = Page::EMPTY;
        }
        STATS.sub(Counter::SlabBytes, span * PAGE_SIZE);
        let now = os::now_ms();
        (*seg).give_pages(idx, span, now);
        if (*seg).is_empty() {
            unlink_segment(this, seg);
            Segment::release(seg);
        } else {
            let slabs = H::slabs(this);
            (*slabs).purge_at = (*slabs).purge_at.min((*seg).purge_at);
            maybe_purge(this, now);
        }
    }
}

/// A free emptied `page` (in its class queue). It stays there, every block
/// free, until `retire_at` (the purge delay after the first such event;
/// checked on the slow path, `retire_kept`): retiring it at once and
/// carving it again cost page faults (the pages are purged in between)
/// and, for hardened slabs, a guard page and a shuffle, each time a
/// program's use of the class dips and comes back (a producer's ring
/// empties a 16-page slab of a big class and fills it again). That holds
/// for a segment whose slabs all empty too: releasing it then (as the
/// default did) made a ring that drains and fills again release and
/// purge its segments at every turn (hardened `prodcons`: 186k page
/// faults). The kept slabs are retired on the slow path and, when the
/// program frees (`FreedBy::Program`), by the free that empties a slab
/// once `retire_at` has passed: a thread that drops a large structure
/// and allocates no more gives the memory back as it goes (a 512 MiB
/// working set freed in two bursts 30 ms apart: 289 MiB of RSS after,
/// 569 MiB when only the slow path retired; `tests/rss.rs`). What the
/// last burst, shorter than the delay, emptied waits for the slow path.
///
/// # Safety
/// `page` is an empty slab of `this`, in its class queue. With
/// `FreedBy::Program`, nothing up the stack is walking `this`'s queues or
/// segments (retiring may release segments).
pub(crate) unsafe fn emptied<H: SlabOwner>(this: *mut H, page: *mut Page, by: FreedBy) {
    debug_assert!(!page.is_null());
    // SAFETY: the caller's heap; with `Program` no walk is under way.
    unsafe {
        let slabs = H::slabs(this);
        if (*slabs).retire_at == u64::MAX {
            (*slabs).retire_at = os::now_ms() + crate::options::PURGE_DELAY_MS.get() as u64;
        } else if by == FreedBy::Program {
            let now = os::now_ms();
            if now >= (*slabs).retire_at {
                retire_kept(this, now);
                maybe_purge(this, now);
            }
        }
    }
}

/// Who freed the block that emptied a slab (see `emptied`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FreedBy {
    /// The program, through `free`: nothing walks the heap's lists.
    Program,
    /// A drain of delayed or quarantined blocks, inside a walk.
    Drain,
}

/// Retires the emptied slabs kept in the queues (see `emptied`), except
/// the first of each class, once `retire_at` has passed.
///
/// # Safety
/// Exclusive use of `this`, at a point where no caller is walking its
/// queues or segments (retiring may release segments).
unsafe fn retire_kept<H: SlabOwner>(this: *mut H, now: u64) {
    // SAFETY: exclusive use of `this` and its pages; `next` is read before
    // `page` leaves the queue.
    unsafe {
        let slabs = H::slabs(this);
        if now < (*slabs).retire_at {
            return;
        }
        (*slabs).retire_at = u64::MAX;
        for class in 0..CLASSES {
            let first = (*queue_of(this, class)).first;
            let mut page = if first.is_null() { first } else { (*first).next };
            while !page.is_null() {
                let next = (*page).next;
                if (*page).used == 0 {
                    retire(this, page);
                }
                page = next;
            }
        }
    }
}

/// Frees the blocks other threads handed back through the heap's
/// segments' delayed lists. True if any page came back from the full list.
///
/// # Safety
/// Exclusive use of `this`.
pub(crate) unsafe fn drain_delayed<H: SlabOwner>(this: *mut H) -> bool {
    let mut revived = false;
    // SAFETY: the heap's segments are ours; drained blocks are blocks of
    // our pages that their freeing threads gave up. Freeing the last one
    // may release its segment, so the next segment is read first.
    unsafe {
        let mut seg = (*H::slabs(this)).segments;
        while !seg.is_null() {
            let next_seg = (*seg).heap_next;
            let mut block = (*seg).take_delayed().cast::<u8>();
            while !block.is_null() {
                revived |= (*Segment::page_of(seg, block)).in_full;
                block = H::free_delayed(this, seg, block);
            }
            seg = next_seg;
        }
    }
    revived
}

/// Purges the dirty pages of segments whose delay has passed, and expires
/// the process's caches.
///
/// # Safety
/// Exclusive use of `this`.
pub(crate) unsafe fn maybe_purge<H: SlabOwner>(this: *mut H, now: u64) {
    crate::large::purge_expired(now);
    crate::segment::SEGMENT_CACHE.purge_expired(now);
    // SAFETY: the heap's segments are ours.
    unsafe {
        let slabs = H::slabs(this);
        if now < (*slabs).purge_at {
            return;
        }
        let mut next_at = u64::MAX;
        let mut seg = (*slabs).segments;
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
        (*slabs).purge_at = next_at;
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

/// Adopts abandoned segments. True if any page with blocks in use joined a
/// queue.
///
/// # Safety
/// Exclusive use of `this`, the calling thread's heap (not a sentinel).
pub(crate) unsafe fn reclaim_abandoned<H: SlabOwner>(this: *mut H, want: Want) -> bool {
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
            (*seg).header.owner.store(this.cast(), Ordering::Release);
            link_segment(this, seg);
            // Its free pages are about to be used: their purge waits the
            // delay from now, not from when the last owner freed them (a
            // segment abandoned for longer than the delay was purged by its
            // adopter and faulted in again page by page).
            if (*seg).dirty_mask != 0 {
                let slabs = H::slabs(this);
                (*seg).purge_at = os::now_ms() + crate::options::PURGE_DELAY_MS.get() as u64;
                (*slabs).purge_at = (*slabs).purge_at.min((*seg).purge_at);
            }
            // Delayed blocks go straight back to their pages.
            let mut block = (*seg).take_delayed().cast::<u8>();
            while !block.is_null() {
                block = H::adopt_delayed(seg, block);
            }
            let mut empty = 0u64;
            for idx in 1..PAGES {
                let page = Segment::page_ptr(seg, idx);
                if (*page).head_delta != 0 || (*page).class == u8::MAX {
                    continue;
                }
                H::collect_remote(page);
                (*page).in_full = false;
                (*queue_of(this, (*page).class as usize)).push_back(page);
                if (*page).used == 0 && !H::KEEP_EMPTY {
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
                retire(this, Segment::page_ptr(seg, idx));
            }
            seg = next;
        }
    }
    for class in 0..CLASSES {
        // SAFETY: our own heap.
        unsafe { H::queue_changed(this, class) };
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

/// Frees every empty slab now (at thread exit, not those of a kind that
/// keeps them: `KEEP_EMPTY`), and with `Collect::Everything` adopts what
/// was abandoned and purges dirty pages (the `collect()` API; thread exit).
///
/// # Safety
/// Exclusive use of `this`, at a point where no caller is walking its
/// queues or segments.
pub(crate) unsafe fn collect<H: SlabOwner>(this: *mut H, how: Collect) {
    // SAFETY: exclusive use of `this` (caller's contract).
    unsafe {
        if how == Collect::Everything {
            reclaim_abandoned(this, Want::All);
        }
        drain_delayed(this);
        for class in 0..CLASSES {
            let mut page = (*queue_of(this, class)).first;
            while !page.is_null() {
                let next = (*page).next;
                H::collect_remote(page);
                let keep = H::KEEP_EMPTY && how == Collect::ForExit;
                if (*page).used == 0 && !keep {
                    retire(this, page);
                }
                page = next;
            }
        }
        if how == Collect::Everything {
            let slabs = H::slabs(this);
            let mut seg = (*slabs).segments;
            while !seg.is_null() {
                (*seg).purge_dirty();
                seg = (*seg).heap_next;
            }
            (*slabs).purge_at = u64::MAX;
        }
    }
}

/// Gives up every segment of an exiting thread's heap: empty ones are
/// released, the rest go to the abandoned list for live threads to adopt.
/// The heap's `Slabs` are empty after.
///
/// # Safety
/// Called by the heap's own thread as it exits, with nothing else of the
/// heap in use.
pub(crate) unsafe fn abandon<H: SlabOwner>(this: *mut H) {
    // SAFETY: called by the heap's own thread as it exits.
    unsafe {
        // Bring parked pages back so every page is in a class queue.
        while !(*H::slabs(this)).full.first.is_null() {
            unfull(this, (*H::slabs(this)).full.first);
        }
        collect(this, Collect::ForExit);
        let mut seg = (*H::slabs(this)).segments;
        while !seg.is_null() {
            let next = (*seg).heap_next;
            for idx in 1..PAGES {
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
        *H::slabs(this) = Slabs::EMPTY;
    }
}
