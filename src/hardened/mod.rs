//! Hardened mode: one switch (`MapAlloc::hardened()`, or
//! `MAPALLOC_HARDENED=1` for a binary built with `MapAlloc::new()`),
//! fixed before the first allocation. Each measure, and the attack it
//! stops (see `docs/security.md`):
//!
//! * **Out-of-line free lists, no links in freed memory**: a slab's free
//!   slots are chained in a slot table in the segment's table pages,
//!   behind a guard page, so there is no free-list pointer for an overflow
//!   or a use-after-free write to forge.
//! * **Sealed links on cross-thread lists**: a block freed by another
//!   thread waits on a list until its owner takes it back; its link is
//!   sealed with a process secret and its own address, and checked to be
//!   a slot of the right page before it is followed.
//! * **Randomised slab order** (per-heap generator seeded from
//!   `getrandom`): a fresh slab's slots are chained in a random order, so
//!   the addresses handed out cannot be predicted from the slab's start.
//! * **Zero on free**: freed blocks are zeroed at once, so freed secrets do
//!   not linger and a dangling read sees zeros.
//! * **Write-after-free check**: a slot must still be zero when handed out
//!   again; a write through a dangling pointer (what corrupting a free-list
//!   link would take) aborts.
//! * **Pointer validation before any header is trusted**: the registry,
//!   the segment kind and owner, the page's class and the exact slot
//!   offset (or, for a page the heap already knows, its cached entry and
//!   the exact slot); a wild, foreign, stack or interior pointer aborts as
//!   an invalid free.
//! * **Double-free detection**: the slot's table entry must say `LIVE`.
//! * **Guard pages** (`PROT_NONE`) after every slab, before a segment's
//!   first slab (ending the slot tables), and after every large block,
//!   which ends right at its guard: a linear overflow faults.
//!
//! In the default mode none of this runs. `MapAlloc::hardened()` states
//! its mode with a constant, so its calls come straight here (the test
//! folds away for `MapAlloc::new()`); under `MAPALLOC_HARDENED=1` an
//! allocation is routed here by the hardened heap's empty `current` table
//! (no test on the fast path), a free by one test of `enabled()`.

use crate::global::Mode;
use crate::heap::{self, Heap, Want, Zero};
use crate::os::{self, OS_PAGE};
use crate::page::Page;
use crate::segment::{Kind, PAGE_SHIFT, PAGE_SIZE, Segment, segment_of};
use crate::size_class::class_size;
use crate::stats::{Counter, STATS};
use crate::sync::{AtomicU8, Ordering};
use crate::{registry, thread};
use core::ptr;

mod known;
mod links;
mod slots;

pub(crate) use known::KnownPages;
pub(crate) use links::{follow, link_of};
use links::Sealed;
pub(crate) use slots::{NO_SLOT, TABLE_PAGES, fence_tables, purge_tables};
use slots::{LIVE, Slot, segment_of_page, table, zero_block};

/// The process's mode: undecided until the first heap or large block is
/// made, or until hardened mode is asked for, then fixed for good. One
/// mode for the whole process means every block, heap and segment is of
/// one kind, so no path ever meets a block of the other mode.
static MODE: AtomicU8 = AtomicU8::new(UNDECIDED);
const UNDECIDED: u8 = 0;
const DEFAULT: u8 = 1;
const HARDENED: u8 = 2;

/// True if the process runs in hardened mode. Blocks exist only once the
/// mode is fixed, so any path that holds one can ask this.
#[inline(always)]
pub(crate) fn enabled() -> bool {
    MODE.load(Ordering::Relaxed) == HARDENED
}

/// Asks for hardened mode (`MapAlloc::hardened()`, `MAPALLOC_HARDENED=1`):
/// true if the process is now hardened, false if its mode was already
/// fixed as the default.
pub(crate) fn request() -> bool {
    fix(HARDENED)
}

/// Fixes the mode as it stands, before the first heap or large block is
/// made (the default unless hardened mode was asked for), and returns
/// whether it is hardened.
pub(crate) fn settle() -> bool {
    fix(DEFAULT)
}

/// Fixes the mode as `mode` if it is undecided; true if it is hardened.
/// A plain load first: every large allocation asks, and a decided mode
/// needs no write to a shared line.
fn fix(mode: u8) -> bool {
    let now = match MODE.load(Ordering::Relaxed) {
        UNDECIDED => match MODE.compare_exchange(UNDECIDED, mode, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => mode,
            Err(now) => now,
        },
        now => now,
    };
    now == HARDENED
}

/// Slab pages of a hardened slab of `class`: room for the blocks plus a
/// trailing guard page.
pub(crate) fn slab_span(class: usize) -> usize {
    let normal = crate::size_class::class_span(class);
    if normal * PAGE_SIZE - OS_PAGE >= class_size(class) {
        normal
    } else {
        (class_size(class) + OS_PAGE).div_ceil(PAGE_SIZE)
    }
}

fn guard_of(seg: *mut Segment, idx: usize, span: usize) -> *mut u8 {
    (seg as usize + (idx + span) * PAGE_SIZE - OS_PAGE) as *mut u8
}

/// Sets up a hardened slab: guard page, zeroed memory, every slot free
/// and linked in random order.
///
/// # Safety
/// Pages `[idx, idx+span)` were just taken from `heap`'s segment `seg`.
pub(crate) unsafe fn init_slab(
    heap: *mut Heap,
    seg: *mut Segment,
    idx: usize,
    class: usize,
) -> *mut Page {
    let span = slab_span(class);
    let size = class_size(class);
    // SAFETY: the pages, their descriptors and table are ours.
    unsafe {
        let start = (seg as usize + idx * PAGE_SIZE) as *mut u8;
        if !os::protect_none(guard_of(seg, idx, span), OS_PAGE) {
            (*seg).give_pages(idx, span, os::now_ms());
            return ptr::null_mut();
        }
        if !(*seg).take_zero(idx, span) {
            ptr::write_bytes(start, 0, span * PAGE_SIZE - OS_PAGE);
        }
        for i in 1..span {
            let d = Segment::page_ptr(seg, idx + i);
            *d = Page::EMPTY;
            (*d).head_delta = i as u8;
        }
        let page = Segment::page_ptr(seg, idx);
        let cap = (span * PAGE_SIZE - OS_PAGE) / size.max(1);
        (*page).init_slab(class, size, cap, true);
        (*page).span = span as u8;
        (*page).head_delta = 0;
        let first = slots::link_all(table(seg, idx), start, cap, || next_random(heap));
        slots::set_first(page, start as usize, first);
        STATS.add(Counter::SlabBytes, span * PAGE_SIZE);
        (*heap::queue(heap, class)).push_front(page);
        page
    }
}

/// Forgets a hardened slab being retired and makes its guard page usable
/// again (false if it cannot be).
///
/// # Safety
/// The slab at page `idx` of `seg` is `heap`'s, empty and out of its queue.
pub(crate) unsafe fn retire_slab(heap: *mut Heap, seg: *mut Segment, idx: usize, span: usize) -> bool {
    // SAFETY: our own heap.
    unsafe { (*heap).known.forget(seg as usize + (idx << PAGE_SHIFT)) };
    os::protect_rw(guard_of(seg, idx, span), OS_PAGE)
}

/// Allocates a block of `class`: the first free slot of the first page
/// of its queue. Blocks are always zero (zeroed on free, or fresh).
///
/// `MapAlloc::hardened()` calls this straight from its fast path,
/// whatever the heap, without testing whether the heap is hardened: a heap
/// that is not (a sentinel, or the heap of a process already in the
/// default mode) has no page here with a free slot (its queues are empty,
/// or its slabs' `first_free` is `NO_SLOT`), so it reaches
/// `alloc_refill`, which sends it to `heap::alloc_slow`: there a
/// sentinel's thread gets its (hardened) heap, and a default process
/// aborts (see `Mode::apply`). `zero` matters only on that way.
///
/// # Safety
/// Exclusive use of `heap`: the calling thread's heap, a sentinel, or the
/// fallback heap under its lock.
#[inline(always)]
pub(crate) unsafe fn alloc(heap: *mut Heap, class: usize, zero: Zero) -> *mut u8 {
    // SAFETY: exclusive use of `heap` and its pages.
    unsafe {
        let page = (*heap::queue(heap, class)).first;
        if page.is_null() || (*page).first_free == NO_SLOT {
            return alloc_refill(heap, class, zero);
        }
        take(page)
    }
}

/// Hands out the first free slot of `page`, whose block must still be
/// zero.
///
/// # Safety
/// Owner only; `page` is a slab with a free slot.
#[inline(always)]
unsafe fn take(page: *mut Page) -> *mut u8 {
    // SAFETY: owner-only page; `first_free` is a free slot of it and
    // `free` its block, so the table entry and blocks lie inside the table
    // and the slab.
    unsafe {
        let block = (*page).free.cast::<u8>();
        let (start, table) = slots::slab_and_table(page);
        let entry = &*table.add((*page).first_free as usize);
        let next = entry.load(Ordering::Relaxed);
        entry.store(LIVE, Ordering::Relaxed);
        slots::set_first(page, start, next);
        (*page).used += 1;
        if block.cast::<u64>().read() != 0 {
            die(b"write after free", block as usize);
        }
        block
    }
}

/// The first page has no free slot: collect its remote frees, or find
/// another page. A heap that is not hardened comes here too (see
/// `alloc`) and goes on to the general slow path.
#[cold]
#[inline(never)]
unsafe fn alloc_refill(heap: *mut Heap, class: usize, zero: Zero) -> *mut u8 {
    // SAFETY: exclusive use of `heap` and its pages.
    unsafe {
        if !(*heap).hardened {
            return heap::alloc_slow(heap, class, zero, Mode::Hardened);
        }
        let mut page = (*heap::queue(heap, class)).first;
        if !page.is_null() {
            collect_remote(page);
        }
        if page.is_null() || (*page).first_free == NO_SLOT {
            page = find_page(heap, class);
            if page.is_null() {
                return ptr::null_mut();
            }
        }
        take(page)
    }
}

/// A page of `class` with a free slot; parks full ones like the default.
unsafe fn find_page(heap: *mut Heap, class: usize) -> *mut Page {
    // SAFETY: exclusive use of `heap` and its pages.
    unsafe {
        for round in 0..2 {
            let mut page = (*heap::queue(heap, class)).first;
            while !page.is_null() {
                collect_remote(page);
                if (*page).first_free != NO_SLOT {
                    return page;
                }
                if !(*page).try_park_full() {
                    continue;
                }
                let next = (*page).next;
                (*heap::queue(heap, class)).remove(page);
                (*page).in_full = true;
                (*heap).full.push_back(page);
                page = next;
            }
            if round == 0 && !heap::drain_delayed(heap) {
                break;
            }
        }
        let now = os::now_ms();
        retire_kept(heap, now);
        heap::maybe_purge(heap, now);
        if let Some(p) = heap::fresh_page(heap, class) {
            return p;
        }
        if heap::reclaim_abandoned(heap, Want::One) {
            let first = (*heap::queue(heap, class)).first;
            if !first.is_null() {
                collect_remote(first);
                if (*first).first_free != NO_SLOT {
                    return first;
                }
            }
            if let Some(p) = heap::fresh_page(heap, class) {
                return p;
            }
        }
        heap::new_segment_page(heap, class)
    }
}

/// Takes the blocks other threads freed into `page` (already validated and
/// zeroed by them, their first word holding the sealed list link).
///
/// # Safety
/// Owner only.
pub(crate) unsafe fn collect_remote(page: *mut Page) {
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

#[inline(always)]
unsafe fn next_random(heap: *mut Heap) -> u64 {
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

/// Seeds a new heap's generator.
pub(crate) fn seed(heap: *mut Heap) {
    // SAFETY: the heap is being set up by its thread.
    unsafe {
        (*heap).hardened = true;
        (*heap).rng = os::random_u64() | 1;
    }
}

/// Frees `p`, which may be anything: it is validated first, against the
/// heap's known pages (see `known`) or else all the way.
///
/// # Safety
/// None beyond the process being sane; a bad `p` aborts.
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8) {
    // Our mapping's provenance: the block is zeroed in full, past the
    // caller's layout (see `heap::block_at`).
    let p = heap::block_at(p).cast::<u8>();
    let heap = thread::current_heap();
    // SAFETY: a known page is a live slab of this heap, and `slot` checked
    // `p` is a handed-out block of it (see `known`); anything else goes
    // through every check.
    unsafe {
        let Some(slot) = (*heap).known.slot(p) else {
            return free_checked(p, heap);
        };
        slot.push_free(p);
        let size = (*slot.page).block_size as usize;
        if size > 64 {
            return zero_and_settle(heap, slot.page, p, size);
        }
        zero_block(p, size);
        after_local_free(heap, slot.page);
    }
}

/// `free`, out of line: the `MAPALLOC_HARDENED=1` route from the default
/// allocator's free, which keeps its own fast path small.
///
/// # Safety
/// As for `free`.
#[inline(never)]
pub(crate) unsafe fn free_outlined(p: *mut u8) {
    // SAFETY: forwarded.
    unsafe { free(p) }
}

/// Frees `p`, which is not a live block of a page `heap` knows: checks it
/// all the way, and learns its page if it is the heap's own.
#[inline(never)]
unsafe fn free_checked(p: *mut u8, heap: *mut Heap) {
    // `MapAlloc::hardened()` freeing in a process that runs in the default
    // mode: its blocks have no slot tables to check against.
    Mode::Hardened.apply();
    let seg = segment_of(p);
    // Null masks to a chunk past the address space, so it is reported
    // here like any wild pointer.
    if !registry::contains(seg as usize) {
        die(b"invalid free", p as usize);
    }
    // SAFETY: registered, so `seg` heads a live segment or large mapping;
    // `Slot::of` checked `p` is a slot of one of its slabs.
    unsafe {
        if (*seg).header.kind == Kind::Large {
            return free_large(seg, p);
        }
        let slot = Slot::of(seg, p);
        if (*seg).header.owner.load(Ordering::Relaxed) != heap {
            return free_remote(seg, p, heap);
        }
        slot.release(p);
        let start = p as usize & !(PAGE_SIZE - 1);
        if start == crate::segment::slab_start(slot.page) as usize {
            (*heap).known.learn(slot.page, start);
        }
        zero_block(p, (*slot.page).block_size as usize);
        after_local_free(heap, slot.page);
    }
}

/// The rest of a local free of a block too big to zero inline. The
/// zeroing comes last, so that on the common way it is a tail call to
/// `memset` (no frame to set up, no return through here).
#[inline(never)]
unsafe fn zero_and_settle(heap: *mut Heap, page: *mut Page, p: *mut u8, size: usize) {
    // SAFETY: `p` is a block of `size` bytes of our page `page`, just freed.
    unsafe {
        if !settled(heap, page) {
            return zero_and_change(heap, page, p, size);
        }
        ptr::write_bytes(p, 0, size)
    }
}

/// `zero_and_settle` for a page that changes: zeroed before
/// `page_changed`, which may retire it.
#[cold]
#[inline(never)]
unsafe fn zero_and_change(heap: *mut Heap, page: *mut Page, p: *mut u8, size: usize) {
    // SAFETY: as for `zero_and_settle`.
    unsafe {
        ptr::write_bytes(p, 0, size);
        page_changed(heap, page);
    }
}

/// Frees large block `p` after checking it is one.
#[cold]
#[inline(never)]
unsafe fn free_large(seg: *mut Segment, p: *mut u8) {
    // SAFETY: `seg` is a registered large mapping's header; once `p` is
    // known to be its block, it is ours to free.
    unsafe {
        if !crate::large::is_block(seg.cast(), p) {
            die(b"invalid free", p as usize);
        }
        crate::large::free(seg.cast())
    }
}

/// A free into a segment this thread does not own (or that is abandoned).
#[cold]
#[inline(never)]
unsafe fn free_remote(seg: *mut Segment, p: *mut u8, heap: *mut Heap) {
    // SAFETY: `p` was validated as a slot of registered segment `seg`.
    unsafe {
        let slot = Slot::of(seg, p);
        if (*seg).header.owner.load(Ordering::Relaxed).is_null() && !thread::is_sentinel(heap) {
            heap::reclaim_abandoned(heap, Want::This(seg));
            if (*seg).header.owner.load(Ordering::Relaxed) == heap {
                slot.release(p);
                zero_block(p, (*slot.page).block_size as usize);
                return after_local_free(heap, slot.page);
            }
        }
        // The owner's table is not ours to write: catch what a racy read
        // can (a second free of a block still marked free), and leave the
        // exact check to the owner when it takes the block back.
        if !slot.is_live() {
            die(b"double free", p as usize);
        }
        zero_block(p, (*slot.page).block_size as usize);
        let block = p.cast::<Sealed>();
        if (*slot.page).thread_free.push(block) == crate::lockfree::Pushed::NotifyOwner {
            (*seg).delayed_free.push(block);
        }
    }
}

/// Frees a block the owner received through a delayed list (validated and
/// zeroed by the thread that freed it).
///
/// # Safety
/// `page` is `heap`'s; `p` came from its segment's delayed list.
pub(crate) unsafe fn free_local(heap: *mut Heap, page: *mut Page, p: *mut u8) {
    // SAFETY: forwarded; the link word is the only non-zero part.
    unsafe {
        take_back(page, p);
        after_local_free(heap, page);
    }
}

/// Clears the link word of a block another thread freed (and zeroed) and
/// releases its slot.
///
/// # Safety
/// Owner only; `p` is a block of `page` taken from a remote or delayed list.
pub(crate) unsafe fn take_back(page: *mut Page, p: *mut u8) {
    // SAFETY: the block is ours again; it was validated when freed.
    unsafe {
        p.cast::<u64>().write(0);
        match Slot::find(segment_of_page(page), p) {
            Some(slot) => slot.release(p),
            None => die(b"invalid free", p as usize),
        }
    }
}

#[inline(always)]
unsafe fn after_local_free(heap: *mut Heap, page: *mut Page) {
    // SAFETY: forwarded.
    unsafe {
        if !settled(heap, page) {
            page_changed(heap, page);
        }
    }
}

/// True if a local free into `page` leaves nothing to do: the page is not
/// parked full, and still has blocks in use or is the first of its class
/// (which stays when emptied: alloc/free of one block empties it every
/// time; see `page_changed`).
#[inline(always)]
unsafe fn settled(heap: *mut Heap, page: *mut Page) -> bool {
    // SAFETY: owner-only page of our heap.
    unsafe {
        !(*page).in_full && ((*page).used != 0 || (*heap::queue(heap, (*page).class as usize)).first == page)
    }
}

/// A local free emptied `page` or freed into a parked-full one.
#[cold]
#[inline(never)]
unsafe fn page_changed(heap: *mut Heap, page: *mut Page) {
    // SAFETY: owner-only page of our heap.
    unsafe {
        if (*page).in_full {
            heap::unfull(heap, page);
        }
        if (*page).used != 0 {
            return;
        }
        // An emptied slab stays in its queue, every block free, until
        // `retire_at` (checked on the slow path): retiring it at once would cost a guard-page
        // `mprotect` pair, a reshuffle and a zeroing each time a program's
        // use of the class dips and comes back. A segment whose slabs are
        // all empty goes back at once, though (a thread freeing into
        // segments it adopted may never allocate again).
        let seg = segment_of_page(page);
        if all_slabs_empty(seg) {
            retire_empty_in(heap, seg);
            return;
        }
        if (*heap).retire_at == u64::MAX {
            (*heap).retire_at = os::now_ms() + crate::options::PURGE_DELAY_MS.get() as u64;
        }
    }
}

/// True if every slab of `seg` has all its blocks free.
unsafe fn all_slabs_empty(seg: *mut Segment) -> bool {
    // SAFETY: the descriptors of an owned segment.
    unsafe {
        (1..crate::segment::PAGES).all(|idx| {
            let d = Segment::page_ptr(seg, idx);
            (*d).head_delta != 0 || (*d).class == u8::MAX || (*d).used == 0
        })
    }
}

/// Retires every empty slab of `seg`, a segment of `heap`; releases the
/// segment if that empties it (touch nothing of it after).
unsafe fn retire_empty_in(heap: *mut Heap, seg: *mut Segment) {
    // SAFETY: owner-only; each empty slab is in its class queue (emptied
    // pages leave the full list in `page_changed`).
    unsafe {
        let mut empty = 0u64;
        for idx in 1..crate::segment::PAGES {
            let d = Segment::page_ptr(seg, idx);
            if (*d).head_delta == 0 && (*d).class != u8::MAX && (*d).used == 0 && !(*d).in_full {
                empty |= 1 << idx;
            }
        }
        while empty != 0 {
            let idx = empty.trailing_zeros() as usize;
            empty &= empty - 1;
            heap::retire(heap, Segment::page_ptr(seg, idx));
        }
    }
}

/// Retires the emptied slabs kept in the queues (see `page_changed`),
/// except the first of each class, once `retire_at` has passed.
///
/// # Safety
/// Exclusive use of the hardened `heap`, at a point where no caller is
/// walking its queues or segments (retiring may release segments).
unsafe fn retire_kept(heap: *mut Heap, now: u64) {
    // SAFETY: exclusive use of `heap` and its pages; `next` is read before
    // `page` leaves the queue.
    unsafe {
        if now < (*heap).retire_at {
            return;
        }
        (*heap).retire_at = u64::MAX;
        for class in 0..crate::size_class::CLASSES {
            let first = (*heap::queue(heap, class)).first;
            let mut page = if first.is_null() { first } else { (*first).next };
            while !page.is_null() {
                let next = (*page).next;
                if (*page).used == 0 {
                    heap::retire(heap, page);
                }
                page = next;
            }
        }
    }
}

/// Checks that `p` is a live block before `realloc`/`usable_size` read its
/// metadata; aborts otherwise.
pub(crate) fn check_live(p: *mut u8) {
    let seg = segment_of(p);
    if p.is_null() || !registry::contains(seg as usize) {
        die(b"invalid pointer", p as usize);
    }
    // SAFETY: registered, so the header is mapped.
    unsafe {
        if (*seg).header.kind == Kind::Large {
            if !crate::large::is_block(seg.cast(), p) {
                die(b"invalid pointer", p as usize);
            }
            return;
        }
        if !Slot::of(seg, p).is_live() {
            die(b"use after free", p as usize);
        }
    }
}

/// Aborts with `mapalloc: <what> of 0x<addr>`.
#[cold]
pub(crate) fn die(what: &[u8], addr: usize) -> ! {
    os::fatal(&[what, b" of"], Some(addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::CLASSES;
    use slots::TABLE_SLOTS;

    #[test]
    fn hardened_slabs_fit_a_guard() {
        for c in 0..CLASSES {
            let span = slab_span(c);
            assert!(span * PAGE_SIZE - OS_PAGE >= class_size(c));
            assert!(span < crate::segment::PAGES);
            assert!(span <= crate::segment::PAGES - 9, "fits beside the tables");
            let capacity = (span * PAGE_SIZE - OS_PAGE) / class_size(c);
            assert!(capacity <= TABLE_SLOTS);
            // What `Divisor` refuses lies above every capacity.
            assert!(capacity <= u32::MAX as usize / class_size(c));
        }
    }
}
