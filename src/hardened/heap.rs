//! The hardened thread heap: slabs whose free slots are chained in
//! out-of-line slot tables, a quarantine between a free and the slot's
//! reuse, and a cache of the heap's own slab pages for validating frees.
//! It stands on the shared slow path (`slabs`), as the default heap does,
//! and shares no code path with it.

use super::bytes::{self, canary_intact, fill_canary};
use super::known::KnownPages;
use super::links::{Sealed, follow, link_of};
use super::quarantine::{Quarantine, Waiting};
use super::slots::{self, From, LIVE_BIT, MAX_SLACK, QUARANTINED, Slot, TABLE_PAGES, table};
use super::{Claim, die};
use crate::mode::Mode;
use crate::os::{self, OS_PAGE};
use crate::page::{NO_SLOT, Page};
use crate::segment::{ALL_SLAB_PAGES, PAGE_SHIFT, PAGE_SIZE, Segment};
use crate::size_class::{class_size, class_span};
use crate::slabs::{self, SlabOwner, Slabs, Want, queue, segment_of_page};
use crate::sync::Ordering;
use crate::thread::{self, Exit, ThreadHeap, Threads};
use core::ptr;

#[repr(C)]
pub(crate) struct HardenedHeap {
    slabs: Slabs,
    /// The heap's own slab pages, for `free` (see `known`).
    known: KnownPages,
    quarantine: Quarantine,
    /// State of the heap's random generator (slab order, quarantine).
    rng: u64,
    pool_next: *mut HardenedHeap,
}

static THREADS: Threads<HardenedHeap> = Threads::new();

crate::tls::tls_word! {
    /// The thread's hardened heap (see `thread`).
    fn heap_word = "mapalloc_tls_hardened_heap"
}

// SAFETY: the statics are this kind's own; `exit` empties the quarantine
// and gives every segment up.
unsafe impl ThreadHeap for HardenedHeap {
    const INIT: HardenedHeap = HardenedHeap {
        slabs: Slabs::EMPTY,
        known: KnownPages::EMPTY,
        quarantine: Quarantine::EMPTY,
        rng: 0,
        pool_next: ptr::null_mut(),
    };

    fn threads() -> &'static Threads<HardenedHeap> {
        &THREADS
    }

    fn tls() -> *mut usize {
        heap_word()
    }

    fn pool_next(this: *mut HardenedHeap) -> *mut *mut HardenedHeap {
        // SAFETY: only the field's address is computed.
        unsafe { &raw mut (*this).pool_next }
    }

    unsafe fn start(this: *mut HardenedHeap) {
        bytes::init_canary();
        // SAFETY: the caller's contract: the heap is ours to set up.
        unsafe { (*this).rng = heap_seed() };
    }

    /// Registers the process-exit check of the quarantine (once): a
    /// program that ends by returning from `main` runs no thread-exit
    /// destructor for its main thread.
    fn installed() {
        use crate::sync::{AtomicBool, Ordering};
        static REGISTERED: AtomicBool = AtomicBool::new(false);
        extern "C" fn at_exit() {
            drain_current();
        }
        if !REGISTERED.swap(true, Ordering::Relaxed) {
            // SAFETY: registers an `extern "C"` function that never unwinds.
            unsafe { libc::atexit(at_exit) };
        }
    }

    unsafe fn exit(this: *mut HardenedHeap, how: Exit) {
        // SAFETY: the exiting thread's heap, used by nothing else.
        unsafe {
            drain_quarantine(this);
            match how {
                Exit::Keep => slabs::collect(this, slabs::Collect::ForExit),
                Exit::GiveUp => {
                    slabs::abandon(this);
                    *this = HardenedHeap::INIT;
                }
            }
        }
    }
}

/// The calling thread's hardened heap (a sentinel until it allocates).
#[inline(always)]
pub(crate) fn current() -> *mut HardenedHeap {
    thread::current::<HardenedHeap>()
}

/// Slab pages of a hardened slab of `class`: room for the blocks plus a
/// trailing guard page.
pub(super) fn slab_span(class: usize) -> usize {
    let normal = class_span(class);
    if normal * PAGE_SIZE - OS_PAGE >= class_size(class) {
        normal
    } else {
        (class_size(class) + OS_PAGE).div_ceil(PAGE_SIZE)
    }
}

fn guard_of(seg: *mut Segment, idx: usize, span: usize) -> *mut u8 {
    (seg as usize + (idx + span) * PAGE_SIZE - OS_PAGE) as *mut u8
}

/// Makes the last OS page of pages `[idx, idx+span)` of `seg` the slab's
/// guard, and opens the guards of earlier slabs that lie inside the run;
/// `kind_mask` (bit i: page i ends in a guard) says what is there. False
/// if the kernel refuses (the pages are then as they were, or opened).
///
/// # Safety
/// The pages were just taken by the caller's heap.
unsafe fn place_guard(seg: *mut Segment, idx: usize, span: usize) -> bool {
    // SAFETY: the segment header is ours; the pages are ours and hold no
    // block.
    unsafe {
        let last = idx + span - 1;
        let inside = (*seg).kind_mask & (((1u64 << span) - 1) << idx) & !(1 << last);
        let mut open = inside;
        while open != 0 {
            let i = open.trailing_zeros() as usize;
            open &= open - 1;
            if !os::protect_rw(guard_of(seg, i, 1), OS_PAGE) {
                return false;
            }
            (*seg).kind_mask &= !(1 << i);
        }
        if (*seg).kind_mask & (1 << last) == 0 {
            if !os::protect_none(guard_of(seg, last, 1), OS_PAGE) {
                return false;
            }
            (*seg).kind_mask |= 1 << last;
        }
    }
    true
}

/// A random place in the quarantine: the top bits of a linear
/// congruential step of the heap's generator, three instructions where
/// the slab shuffle's xorshift takes eight (its low bits are weak, the
/// top ones are what the ring uses).
#[inline(always)]
unsafe fn next_place(heap: *mut HardenedHeap) -> u64 {
    // SAFETY: our own heap.
    unsafe {
        let x = (*heap)
            .rng
            .wrapping_mul(0x5851_f42d_4c95_7f2d)
            .wrapping_add(0x1405_7b7e_f767_814f);
        (*heap).rng = x;
        x >> 58
    }
}

/// A seed for a new heap's generator: a process secret from `getrandom`
/// (drawn once: a `getrandom` per thread was a system call in every
/// thread's first allocation) mixed with a count of heaps (splitmix64).
fn heap_seed() -> u64 {
    use crate::sync::{AtomicU64, Ordering};
    static SECRET: AtomicU64 = AtomicU64::new(0);
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut secret = SECRET.load(Ordering::Relaxed);
    if secret == 0 {
        let fresh = os::random_u64() | 1;
        secret = match SECRET.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => fresh,
            Err(won) => won,
        };
    }
    let mut z = secret.wrapping_add(COUNT.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

#[inline(always)]
unsafe fn next_random(heap: *mut HardenedHeap) -> u64 {
    // SAFETY: our own heap. xorshift64*: fast, and seeded from getrandom.
    unsafe {
        let mut x = (*heap).rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (*heap).rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Allocates `size` bytes from a slab of `class`, which holds `size` and
/// its canary: the first free slot of the first page of the class queue.
///
/// # Safety
/// `heap` is the calling thread's hardened heap or a sentinel; `class`
/// is a slab class whose blocks hold `size + 8` bytes and at most
/// `size + MAX_SLACK`.
#[inline(always)]
pub(super) unsafe fn alloc(heap: *mut HardenedHeap, class: usize, size: usize) -> *mut u8 {
    // SAFETY: exclusive use of `heap` and its pages; a sentinel's queues
    // are empty.
    unsafe {
        let page = (*queue(&raw mut (*heap).slabs, class)).first;
        if page.is_null() || (*page).first_free == NO_SLOT {
            return alloc_refill(heap, class, size);
        }
        take(page, size)
    }
}

/// Hands out the first free slot of `page` for `size` bytes: checks the
/// slot is still all zero (the write-after-free check), records the size
/// in its table entry and writes the canary after it.
///
/// # Safety
/// Owner only; `page` is a slab with a free slot, whose blocks hold
/// `size + 8` bytes.
#[inline(always)]
unsafe fn take(page: *mut Page, size: usize) -> *mut u8 {
    // SAFETY: owner-only page; `first_free` is a free slot of it and
    // `free` its block, so the table entry and the block lie inside the
    // table and the slab.
    unsafe {
        let block = (*page).free.cast::<u8>();
        let (start, table) = slots::slab_and_table(page);
        let entry = &*table.add((*page).first_free as usize);
        let next = entry.load(Ordering::Relaxed);
        let bsize = (*page).block_size as usize;
        if !bytes::is_zero(block, bsize) {
            die(b"write after free", block as usize);
        }
        entry.store(LIVE_BIT | (bsize - size) as u16, Ordering::Relaxed);
        slots::set_first(page, start, next);
        (*page).used += 1;
        fill_canary(block, size, bsize);
        block
    }
}

/// The first page has no free slot: take its remote frees, or find
/// another page; a thread's first allocation sets up its heap here.
#[cold]
#[inline(never)]
unsafe fn alloc_refill(heap: *mut HardenedHeap, class: usize, size: usize) -> *mut u8 {
    // SAFETY: a sentinel is never written; a real heap is ours.
    unsafe {
        if THREADS.is_sentinel(heap) {
            thread::process_init();
            // Aborts if a `MapAlloc::hardened()` comes to a process that
            // already runs in the default mode.
            Mode::Hardened.apply();
            return thread::alloc_without_heap(heap, |h| alloc_from(h, class, size));
        }
        alloc_from(heap, class, size)
    }
}

/// # Safety
/// Exclusive use of `heap` (its thread's, or the fallback under its lock).
unsafe fn alloc_from(heap: *mut HardenedHeap, class: usize, size: usize) -> *mut u8 {
    // SAFETY: exclusive use of `heap` and its pages.
    unsafe {
        check_quarantine(heap);
        let mut page = (*queue(&raw mut (*heap).slabs, class)).first;
        if !page.is_null() {
            collect_remote(page);
        }
        if page.is_null() || (*page).first_free == NO_SLOT {
            page = slabs::find_page(heap, class);
            if page.is_null() {
                return ptr::null_mut();
            }
        }
        take(page, size)
    }
}

/// Frees `p`, which may be anything: it is validated first, against the
/// heap's known pages or else all the way.
///
/// # Safety
/// None beyond the process being sane; a bad `p` aborts.
#[inline(always)]
pub(super) unsafe fn free(p: *mut u8, claim: Claim) {
    let heap = current();
    // SAFETY: a known page is a live slab of this heap, and `slot` checked
    // `p` is a handed-out block of it (see `known`); anything else goes
    // through every check.
    unsafe {
        match (*heap).known.slot(p) {
            Some(slot) => free_local(heap, &slot, p, claim),
            None => free_checked(heap, p, claim),
        }
    }
}

/// Frees `p`, which is not a live block of a page `heap` knows: checks it
/// all the way, and learns its page if it is the heap's own.
#[inline(never)]
unsafe fn free_checked(heap: *mut HardenedHeap, p: *mut u8, claim: Claim) {
    // SAFETY: `super::locate` validated `p` as a slot of a live slab of
    // registered segment `seg`.
    unsafe {
        let Some((seg, slot)) = super::locate(p, claim, b"invalid free") else {
            return; // a large or zero-size block, freed there
        };
        if (*seg).header.owner.load(Ordering::Relaxed) != heap.cast() {
            return free_remote(heap, seg, &slot, p, claim);
        }
        if !slot.is_live() {
            die(b"double free", p as usize);
        }
        let start = p as usize & !(PAGE_SIZE - 1);
        if start == crate::segment::slab_start(slot.page) as usize {
            (*heap).known.learn(slot.page, start);
        }
        free_local(heap, &slot, p, claim);
    }
}

/// The size `slot` (live) was asked for, after checking its canary and
/// the caller's claim; aborts naming what is wrong.
///
/// # Safety
/// `slot` is a live slot whose block is `p`.
#[inline(always)]
pub(super) unsafe fn checked_size(slot: &Slot, p: *mut u8, claim: Claim) -> usize {
    let size = slot.size();
    let requested = size - (slot.state() & !LIVE_BIT) as usize;
    // SAFETY: `[requested, size)` lies in the block.
    if !unsafe { canary_intact(p, requested, size) } {
        // A zeroed canary: the block was freed by another thread already
        // and waits for its owner to take it back.
        // SAFETY: as above.
        if unsafe { bytes::is_zero_range(p, requested, size) } {
            die(b"double free", p as usize);
        }
        super::detected(b"overflow", p, claim.at());
    }
    claim.check(p, requested);
    requested
}

/// A free of a live block of one of the heap's own slabs: checks, zeroes
/// it, and puts it in the quarantine (from which another block leaves).
///
/// # Safety
/// `slot` is a live slot of a slab of `heap`, and `p` its block.
#[inline(always)]
unsafe fn free_local(heap: *mut HardenedHeap, slot: &Slot, p: *mut u8, claim: Claim) {
    // SAFETY: the slot and its slab are ours.
    unsafe {
        checked_size(slot, p, claim);
        check_before(slot, p);
        slot.entry().store(QUARANTINED, Ordering::Relaxed);
        let size = slot.size();
        bytes::zero(p, size);
        let waiting = Waiting {
            block: p as usize,
            page: slot.page,
            slot: slot.index() as u16,
            size: size as u32,
        };
        let at = next_place(heap);
        (*heap).quarantine.push(waiting, at, |w| release(heap, w));
    }
}

/// The underflow check: the last word before `p` is the end of the slot
/// before it, which holds a canary while that block is handed out (or, if
/// another thread freed it and its owner has not taken it back yet, zero)
/// and zero while it is free. Before a slab's first slot lies the guard
/// page of the slab before, the guard page of the slot tables, or a free
/// page, which reads zero (fresh, purged, or a retired slab's zeroed
/// slots and opened guard).
///
/// # Safety
/// `slot` is a live slot of the caller's heap, `p` its block.
#[inline(always)]
unsafe fn check_before(slot: &Slot, p: *mut u8) {
    if slot.index() == 0 {
        // SAFETY: forwarded.
        return unsafe { check_before_slab(slot) };
    }
    // SAFETY: the slot before is in the same slab and table, and its last
    // word is 8-aligned. That word may be written at this moment by
    // another thread freeing that block (zeroing it): an aligned 8-byte
    // atomic load sees the word before or after, and both are accepted.
    let (live, word) = unsafe {
        let before = &*slot.entry_ptr().sub(1);
        let word = crate::sync::AtomicU64::from_ptr(p.cast::<u64>().sub(1)).load(Ordering::Relaxed);
        (before.load(Ordering::Relaxed) & LIVE_BIT != 0, word)
    };
    let ok = word == 0 || (live && word == bytes::canary_word(p as usize - 8));
    if !ok {
        super::detected(b"underflow", p, b"free");
    }
}

/// `check_before` for a slab's first slot: if the page before is free
/// (not a slab, nor the tables) and its last OS page is not a guard left
/// there, its last word must still be zero.
#[cold]
#[inline(never)]
unsafe fn check_before_slab(slot: &Slot) {
    let seg = segment_of_page(slot.page);
    let idx = Segment::page_index(seg, slot.page);
    if idx <= slots::FIRST_SLAB_PAGE {
        return;
    }
    // SAFETY: a descriptor of our segment; a free page of a hardened
    // segment is read-write and ours alone.
    unsafe {
        let d = Segment::page_ptr(seg, idx - 1);
        let guarded = (*seg).kind_mask & (1 << (idx - 1)) != 0;
        if (*d).class != u8::MAX || (*d).head_delta != 0 || guarded {
            return; // a slab, or a page that still ends in a guard
        }
        let start = crate::segment::slab_start(slot.page);
        if start.cast::<u64>().sub(1).read() != 0 {
            super::detected(b"underflow", start, b"free");
        }
    }
}

/// Puts quarantined block `w` of the heap back on its slab's free list.
///
/// # Safety
/// `w` left `heap`'s quarantine.
#[inline(always)]
unsafe fn release(heap: *mut HardenedHeap, w: Waiting) {
    // SAFETY: a quarantined block is a validated slot of a live slab of
    // ours (its `used` count keeps the slab).
    unsafe {
        let slot = Slot::at(w.page, w.slot);
        slot.release(w.block as *mut u8, From::Quarantine);
        after_release(heap, w.page);
    }
}

/// Checks that blocks waiting in the quarantine are still all zero, some
/// 8 KiB of them (all of them, if they are small): on every refill, so a
/// write through a dangling pointer is caught while the block still
/// waits, in a program that goes on allocating.
///
/// # Safety
/// Exclusive use of `heap`.
unsafe fn check_quarantine(heap: *mut HardenedHeap) {
    // SAFETY: the quarantine's blocks are ours, of the sizes it records.
    unsafe {
        (*heap).quarantine.check(8 << 10, |w| {
            if !bytes::is_zero(w.block as *const u8, w.size as usize) {
                die(b"write after free", w.block);
            }
        })
    }
}

/// Empties the quarantine, checking each block is still all zero: at
/// thread exit, process exit and `collect()`, when the blocks would leave
/// without a later allocation checking them.
///
/// # Safety
/// Exclusive use of `heap`.
pub(super) unsafe fn drain_quarantine(heap: *mut HardenedHeap) {
    // SAFETY: exclusive use of `heap`; the blocks are its quarantined ones.
    unsafe {
        let mut q = core::mem::replace(&mut (*heap).quarantine, Quarantine::EMPTY);
        q.drain(|w| {
            if !bytes::is_zero(w.block as *const u8, w.size as usize) {
                die(b"write after free", w.block);
            }
            release(heap, w);
        });
    }
}

/// A free into a segment this thread does not own (or that is abandoned).
#[cold]
#[inline(never)]
unsafe fn free_remote(heap: *mut HardenedHeap, seg: *mut Segment, slot: &Slot, p: *mut u8, claim: Claim) {
    // SAFETY: `p` was validated as a slot of registered segment `seg`.
    unsafe {
        if (*seg).header.owner.load(Ordering::Relaxed).is_null() && !THREADS.is_sentinel(heap) {
            slabs::reclaim_abandoned(heap, Want::This(seg));
            if (*seg).header.owner.load(Ordering::Relaxed) == heap.cast() {
                if !slot.is_live() {
                    die(b"double free", p as usize);
                }
                return free_local(heap, slot, p, claim);
            }
        }
        // The owner's table is not ours to write: catch what a racy read
        // can (a second free of a block no longer handed out), and leave
        // the exact check to the owner when it takes the block back. A
        // live block's entry does not change until it is freed, so its
        // size is safe to read. (No underflow check: the slot before may
        // be changing under its owner.)
        if !slot.is_live() {
            die(b"double free", p as usize);
        }
        checked_size(slot, p, claim);
        bytes::zero(p, slot.size());
        let block = p.cast::<Sealed>();
        if (*slot.page).thread_free.push(block) == crate::lockfree::Pushed::NotifyOwner {
            (*seg).delayed_free.push(block);
        }
    }
}

/// Takes the blocks other threads freed into `page` (already validated and
/// zeroed by them, their first word holding the sealed list link).
///
/// # Safety
/// The caller owns `page`.
unsafe fn collect_remote(page: *mut Page) {
    // SAFETY: owner-only; the taken chain is ours, and each link is
    // validated before it is followed.
    unsafe {
        if !(*page).thread_free.has_nodes() {
            return;
        }
        let seg = segment_of_page(page);
        let mut block = (*page).thread_free.take_all::<Sealed>().cast::<u8>();
        while !block.is_null() {
            // Link read first, followed last: taking the block back checks
            // its slot (a block listed twice is a double free) and zeroes
            // the link.
            let link = link_of(block);
            take_back(page, block);
            block = follow(seg, block, link, page);
        }
    }
}

/// Clears the link word of a block another thread freed (and zeroed) and
/// puts its slot back on the free list.
///
/// # Safety
/// The caller owns `page`; `p` is a block of it taken from a remote or
/// delayed list.
unsafe fn take_back(page: *mut Page, p: *mut u8) {
    // SAFETY: the block is ours again; it was validated when freed.
    unsafe {
        p.cast::<u64>().write(0);
        match Slot::find(segment_of_page(page), p) {
            Some(slot) if slot.page == page => slot.release(p, From::Live),
            _ => die(b"invalid free", p as usize),
        }
    }
}

#[inline(always)]
unsafe fn after_release(heap: *mut HardenedHeap, page: *mut Page) {
    // SAFETY: forwarded.
    unsafe {
        if !settled(heap, page) {
            page_changed(heap, page);
        }
    }
}

/// True if a release into `page` leaves nothing to do: the page is not
/// parked full, and still has blocks in use or is the first of its class
/// (which stays when emptied: alloc/free of one block empties it every
/// time; see `page_changed`).
#[inline(always)]
unsafe fn settled(heap: *mut HardenedHeap, page: *mut Page) -> bool {
    // SAFETY: owner-only page of our heap.
    unsafe {
        !(*page).in_full
            && ((*page).used != 0 || (*queue(&raw mut (*heap).slabs, (*page).class as usize)).first == page)
    }
}

/// A release emptied `page` or went into a parked-full one.
#[cold]
#[inline(never)]
unsafe fn page_changed(heap: *mut HardenedHeap, page: *mut Page) {
    // SAFETY: owner-only page of our heap.
    unsafe {
        if (*page).in_full {
            slabs::unfull(heap, page);
        }
        if (*page).used != 0 {
            return;
        }
        // Quarantine releases also run inside drains and collects.
        slabs::emptied(heap, page, slabs::FreedBy::Drain);
    }
}

/// The `collect()` API for the calling thread's hardened heap and the
/// fallback heap: the quarantine empties (checked), then as the default.
pub(super) fn collect_current() {
    thread::cool_warm_heaps::<HardenedHeap>();
    thread::with_own_heaps::<HardenedHeap>(|heap, own| {
        let how = match own {
            thread::Own::Thread => slabs::Collect::Everything,
            thread::Own::Fallback => slabs::Collect::ForExit,
        };
        // SAFETY: the thread's own heap, or the fallback under its lock.
        unsafe {
            drain_quarantine(heap);
            slabs::collect(heap, how);
        }
    });
}

/// Empties the calling thread's quarantine, checked (process exit).
pub(super) fn drain_current() {
    let heap = current();
    if !THREADS.is_sentinel(heap) {
        // SAFETY: the thread's own heap.
        unsafe { drain_quarantine(heap) };
    }
}

// SAFETY: `slabs` is the heap's own; the hooks keep the hardened slab
// invariants (`design.md`, Hardened mode).
unsafe impl SlabOwner for HardenedHeap {
    const SLAB_PAGES: u64 = ALL_SLAB_PAGES & !TABLE_PAGES;
    /// A fresh slab costs a shuffle of its slots (and, where its guard
    /// page is not in place yet, an `mprotect`): with threads that come and
    /// go (a server's), setting up and retiring slabs at every thread exit
    /// was 13 `mprotect`s and 5 `madvise`s a thread, and the kernel's time
    /// made `larson` 10x the default.
    const KEEP_EMPTY: bool = true;

    fn slabs(this: *mut HardenedHeap) -> *mut Slabs {
        // SAFETY: only the field's address is computed.
        unsafe { &raw mut (*this).slabs }
    }

    fn span(class: usize) -> usize {
        slab_span(class)
    }

    /// Guard page, every slot free and linked in random order. The memory
    /// is zero already: every free page of a hardened segment is (fresh,
    /// purged, or a retired slab's zeroed slots and its guard page, never
    /// written). Guard pages stay when a slab is retired (the segment's
    /// `kind_mask` says where they are), so a slab set up again where one
    /// was costs no system call; one that lies across an old guard opens
    /// it.
    unsafe fn init_slab(this: *mut HardenedHeap, seg: *mut Segment, page: *mut Page, class: usize) -> bool {
        let size = class_size(class);
        // SAFETY: the pages, their descriptors and table are ours.
        unsafe {
            let idx = Segment::page_index(seg, page);
            let span = (*page).span as usize;
            let start = (seg as usize + idx * PAGE_SIZE) as *mut u8;
            if !place_guard(seg, idx, span) {
                return false;
            }
            (*seg).take_zero(idx, span);
            let cap = (span * PAGE_SIZE - OS_PAGE) / size.max(1);
            (*page).init_slab(class, size, cap, true);
            let first = slots::link_all(table(seg, idx), start, cap, || next_random(this));
            slots::set_first(page, start as usize, first);
        }
        true
    }

    unsafe fn refill(_this: *mut HardenedHeap, page: *mut Page) -> bool {
        // SAFETY: a slab of our heap.
        unsafe {
            collect_remote(page);
            (*page).first_free != NO_SLOT
        }
    }

    unsafe fn collect_remote(page: *mut Page) {
        // SAFETY: forwarded.
        unsafe { collect_remote(page) }
    }

    unsafe fn free_delayed(this: *mut HardenedHeap, seg: *mut Segment, block: *mut u8) -> *mut u8 {
        // SAFETY: a block of our segment, validated and zeroed by the
        // thread that freed it; followed only once it is back.
        unsafe {
            let link = link_of(block);
            let page = Segment::page_of(seg, block);
            take_back(page, block);
            after_release(this, page);
            follow(seg, block, link, ptr::null_mut())
        }
    }

    unsafe fn adopt_delayed(seg: *mut Segment, block: *mut u8) -> *mut u8 {
        // SAFETY: as for `free_delayed`.
        unsafe {
            let link = link_of(block);
            take_back(Segment::page_of(seg, block), block);
            follow(seg, block, link, ptr::null_mut())
        }
    }

    unsafe fn queue_changed(_this: *mut HardenedHeap, _class: usize) {}

    /// Forgets the slab's page. Its guard page stays (see `init_slab`);
    /// its slot table is written whole by the next slab there.
    unsafe fn retiring(this: *mut HardenedHeap, seg: *mut Segment, idx: usize, _span: usize) -> bool {
        // SAFETY: our own heap.
        unsafe { (*this).known.forget(seg as usize + (idx << PAGE_SHIFT)) };
        true
    }

    fn fresh_segment(seg: *mut Segment) -> bool {
        slots::fence_tables(seg)
    }
}

/// The slab class for a block of `size` bytes aligned to `align` (at most
/// `MAX_SLAB_ALIGN`): room for at least 8 bytes of canary after it, a
/// multiple of the alignment (so the class's blocks have it), and little
/// enough slack for a slot entry to record. None: not a slab size.
#[inline(always)]
pub(super) fn slab_class(size: usize, align: usize) -> Option<usize> {
    let need = size.checked_add(8)?.checked_next_multiple_of(align)?;
    if need > crate::size_class::SLAB_MAX {
        return None;
    }
    let class = crate::size_class::class_of(need);
    (class_size(class) - size <= MAX_SLACK).then_some(class)
}

/// Alignments the slabs serve; above, a block gets a mapping of its own.
pub(super) const MAX_SLAB_ALIGN: usize = OS_PAGE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::PAGES;
    use crate::size_class::CLASSES;

    #[test]
    fn hardened_slabs_fit_a_guard() {
        for c in 0..CLASSES {
            let span = slab_span(c);
            assert!(span * PAGE_SIZE - OS_PAGE >= class_size(c));
            assert!(span < PAGES);
            assert!(span <= PAGES - 9, "fits beside the tables");
            let capacity = (span * PAGE_SIZE - OS_PAGE) / class_size(c);
            assert!(capacity <= slots::TABLE_SLOTS);
            // What `Divisor` refuses lies above every capacity.
            assert!(capacity <= u32::MAX as usize / class_size(c));
        }
    }

    #[test]
    fn every_slab_size_and_alignment_fits_its_entry() {
        let mut align = 16;
        while align <= MAX_SLAB_ALIGN {
            for size in 1..=crate::size_class::SLAB_MAX {
                if let Some(c) = slab_class(size, align) {
                    assert!(class_size(c) >= size + 8, "{size} {align}");
                    assert!(class_size(c) - size <= MAX_SLACK, "{size} {align}");
                    assert_eq!(class_size(c) % align, 0, "{size} {align}");
                } else {
                    assert!(size + 8 > crate::size_class::SLAB_MAX - align, "{size} {align}");
                }
            }
            align *= 4;
        }
    }
}
