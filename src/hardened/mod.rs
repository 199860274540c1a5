//! Hardened mode: one switch (`MapAlloc::hardened()`, or
//! `MAPALLOC_HARDENED=1` for a binary built with `MapAlloc::new()`),
//! fixed before the first allocation. Each measure, and the attack it
//! stops (see `docs/security.md`):
//!
//! * **Out-of-line slot bitmaps, no free lists in freed memory**: a slab's
//!   free slots are bits in the segment header, so there is no free-list
//!   pointer for an overflow or a use-after-free write to forge.
//! * **Sealed links on cross-thread lists**: a block freed by another
//!   thread waits on a list until its owner takes it back; its link is
//!   sealed with a process secret and its own address, and checked to be
//!   a slot of the right page before it is followed.
//! * **Randomised slot choice** (per-heap generator seeded from
//!   `getrandom`): each allocation takes a random one of up to 63 cached
//!   free slots, so the next block's address cannot be predicted from the
//!   last one, which breaks heap feng shui.
//! * **Zero on free**: freed blocks are zeroed at once, so freed secrets do
//!   not linger and a dangling read sees zeros.
//! * **Write-after-free check**: a slot must still be zero when handed out
//!   again; a write through a dangling pointer (what corrupting a free-list
//!   link would take) aborts.
//! * **Pointer validation before any header is trusted**: the registry,
//!   the segment kind, the page's class and the exact slot offset; a wild,
//!   foreign, stack or interior pointer aborts as an invalid free.
//! * **Double-free detection**: the slot's bit must be set.
//! * **Guard pages** (`PROT_NONE`) after every slab and every large block,
//!   which ends right at its guard: a linear overflow faults.
//!
//! In the default mode none of this runs: allocation is routed here by the
//! hardened heap's empty `current` table (no test on the fast path), free
//! by one test of `enabled()`.

use crate::heap::{self, Heap, Want};
use crate::os::{self, OS_PAGE};
use crate::page::Page;
use crate::segment::{Kind, PAGE_SHIFT, PAGE_SIZE, Segment, segment_of};
use crate::size_class::class_size;
use crate::stats::{Counter, STATS};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::{registry, thread};
use core::ptr;

mod links;
mod slots;

pub(crate) use links::{follow, link_of};
use links::Sealed;
use slots::{BITMAP_WORDS, Slot, bitmap, cache_of, segment_of_page, set_bit, zero_block};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// True once hardened mode is on (it never turns off).
#[inline(always)]
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns hardened mode on. Only effective before the first heap exists;
/// called by `MapAlloc::hardened()` on first use and by option parsing.
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
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

/// Sets up a hardened slab: guard page, zeroed memory, empty bitmap.
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
    // SAFETY: the pages and their descriptors and bitmap are ours.
    unsafe {
        let start = (seg as usize + idx * PAGE_SIZE) as *mut u8;
        if !os::protect_none(guard_of(seg, idx, span), OS_PAGE) {
            (*seg).give_pages(idx, span, os::now_ms());
            return ptr::null_mut();
        }
        if !(*seg).take_zero(idx, span) {
            ptr::write_bytes(start, 0, span * PAGE_SIZE - OS_PAGE);
        }
        for w in 0..BITMAP_WORDS {
            (*bitmap(seg, idx).add(w)).store(0, Ordering::Relaxed);
        }
        (*cache_of(seg, idx)).len = 0;
        for i in 1..span {
            let d = Segment::page_ptr(seg, idx + i);
            *d = Page::EMPTY;
            (*d).head_delta = i as u8;
        }
        let page = Segment::page_ptr(seg, idx);
        (*page).init_slab(
            class,
            size,
            (span * PAGE_SIZE - OS_PAGE) / size.max(1),
            true,
        );
        (*page).span = span as u8;
        (*page).head_delta = 0;
        STATS.add(Counter::SlabBytes, span * PAGE_SIZE);
        (*heap::queue(heap, class)).push_front(page);
        page
    }
}

/// Makes a retired hardened slab's guard page usable again.
pub(crate) fn remove_guard(seg: *mut Segment, idx: usize, span: usize) -> bool {
    os::protect_rw(guard_of(seg, idx, span), OS_PAGE)
}

/// Allocates a block of `class`: a random cached slot of the first page
/// of its queue. Blocks are always zero (zeroed on free, or fresh).
///
/// # Safety
/// Exclusive use of the hardened `heap`.
#[inline]
pub(crate) unsafe fn alloc(heap: *mut Heap, class: usize) -> *mut u8 {
    // SAFETY: exclusive use of `heap` and its pages.
    unsafe {
        let page = (*heap::queue(heap, class)).first;
        if !page.is_null() {
            let block = pop(heap, page);
            if !block.is_null() {
                return block;
            }
        }
        alloc_refill(heap, class)
    }
}

/// A block from a random slot of `page`'s cache; null if it is empty.
#[inline(always)]
unsafe fn pop(heap: *mut Heap, page: *mut Page) -> *mut u8 {
    // SAFETY: owner-only page; its cache holds `len` free slots of it.
    unsafe {
        let seg = segment_of_page(page);
        let idx = Segment::page_index(seg, page);
        let cache = cache_of(seg, idx);
        let len = (*cache).len as usize;
        if len == 0 {
            return ptr::null_mut();
        }
        let pick = (((next_random(heap) >> 32) * len as u64) >> 32) as usize;
        let slots = (&raw mut (*cache).slots).cast::<u16>();
        let slot = *slots.add(pick) as usize;
        *slots.add(pick) = *slots.add(len - 1);
        (*cache).len = (len - 1) as u16;
        hand_out(
            page,
            bitmap(seg, idx),
            seg as usize + (idx << PAGE_SHIFT),
            slot,
        )
    }
}

/// Marks `slot` used and returns its block, which must still be zero.
///
/// # Safety
/// `slot` is a free slot of `page`, whose bitmap is `map` and slab `start`.
#[inline(always)]
unsafe fn hand_out(page: *mut Page, map: *const AtomicU64, start: usize, slot: usize) -> *mut u8 {
    // SAFETY: owner-only bitmap and counters of a live page; the block
    // lies in the slab.
    unsafe {
        set_bit(&*map.add(slot / 64), 1 << (slot % 64), true);
        (*page).used += 1;
        let block = (start + slot * (*page).block_size as usize) as *mut u8;
        if block.cast::<u64>().read() != 0 {
            die(b"write after free", block as usize);
        }
        block
    }
}

/// The first page's cache is empty: refill it, or find another page.
#[cold]
#[inline(never)]
unsafe fn alloc_refill(heap: *mut Heap, class: usize) -> *mut u8 {
    // SAFETY: exclusive use of `heap` and its pages.
    unsafe {
        let mut page = (*heap::queue(heap, class)).first;
        if page.is_null() || !refill(heap, page) {
            page = find_page(heap, class);
            if page.is_null() || !refill(heap, page) {
                return ptr::null_mut();
            }
        }
        pop(heap, page)
    }
}

/// Gathers up to 63 free slots of `page` into its (empty) cache, from a
/// random word of the bitmap on; false if the page has none.
unsafe fn refill(heap: *mut Heap, page: *mut Page) -> bool {
    // SAFETY: owner-only page; its bitmap has `capacity.div_ceil(64)` words.
    unsafe {
        collect_remote(page);
        let capacity = (*page).capacity as usize;
        if (*page).used as usize >= capacity {
            return false;
        }
        let seg = segment_of_page(page);
        let idx = Segment::page_index(seg, page);
        let (map, cache) = (bitmap(seg, idx), cache_of(seg, idx));
        let slots = (&raw mut (*cache).slots).cast::<u16>();
        let words = capacity.div_ceil(64);
        let mut w = (((next_random(heap) & 0xffff_ffff) * words as u64) >> 32) as usize;
        let mut len = 0;
        for _ in 0..words {
            let valid = if (w + 1) * 64 <= capacity {
                u64::MAX
            } else {
                (1u64 << (capacity % 64)) - 1
            };
            let mut free = !(*map.add(w)).load(Ordering::Relaxed) & valid;
            while free != 0 && len < 63 {
                *slots.add(len) = (w * 64 + free.trailing_zeros() as usize) as u16;
                free &= free - 1;
                len += 1;
            }
            if len == 63 {
                break;
            }
            w = if w + 1 == words { 0 } else { w + 1 };
        }
        if len == 0 {
            die(b"corrupted slot bitmap", map as usize);
        }
        (*cache).len = len as u16;
        true
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
                if (*page).used < (*page).capacity {
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
        heap::maybe_purge(heap, os::now_ms());
        if let Some(p) = heap::fresh_page(heap, class) {
            return p;
        }
        if heap::reclaim_abandoned(heap, Want::One) {
            let first = (*heap::queue(heap, class)).first;
            if !first.is_null() {
                collect_remote(first);
                if (*first).used < (*first).capacity {
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

/// Frees `p`, which may be anything: it is validated first.
///
/// # Safety
/// None beyond the process being sane; a bad `p` aborts.
pub(crate) unsafe fn free(p: *mut u8) {
    // Our mapping's provenance: the block is zeroed in full, past the
    // caller's layout (see `heap::block_at`).
    let p = heap::block_at(p).cast::<u8>();
    let seg = segment_of(p);
    if p.is_null() || !registry::contains(seg as usize) {
        die(b"invalid free", p as usize);
    }
    // SAFETY: registered, so `seg` heads a live segment or large mapping.
    unsafe {
        if (*seg).header.kind == Kind::Large {
            return free_large(seg, p);
        }
        let slot = Slot::of(seg, p);
        let heap = thread::current_heap();
        let owner = (*seg).header.owner.load(Ordering::Relaxed);
        if owner != heap {
            return free_remote(seg, slot, p, heap);
        }
        slot.release(p);
        zero_block(p, (*slot.page).block_size as usize);
        after_local_free(heap, slot.page);
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
unsafe fn free_remote(seg: *mut Segment, slot: Slot, p: *mut u8, heap: *mut Heap) {
    // SAFETY: `slot` was validated in registered segment `seg`.
    unsafe {
        if (*seg).header.owner.load(Ordering::Relaxed).is_null() && !thread::is_sentinel(heap) {
            heap::reclaim_abandoned(heap, Want::This(seg));
            if (*seg).header.owner.load(Ordering::Relaxed) == heap {
                slot.release(p);
                zero_block(p, (*slot.page).block_size as usize);
                return after_local_free(heap, slot.page);
            }
        }
        // The owner's bitmap is not ours to write: catch what a racy read
        // can (a second free of a block still marked free), and leave the
        // exact check to the owner when it takes the block back.
        let (word, bit) = slot.bit();
        if word.load(Ordering::Relaxed) & bit == 0 {
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
    // SAFETY: owner-only page of our heap.
    unsafe {
        // An emptied first page of its class stays (see `page_changed`):
        // alloc/free of one block empties it every time.
        if (*page).in_full
            || ((*page).used == 0 && (*heap::queue(heap, (*page).class as usize)).first != page)
        {
            page_changed(heap, page);
        }
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
        // Keep the first page of its class even when empty (any span): it
        // spares a guard-page `mprotect` pair per refill, and a second free
        // of its blocks is still reported as the double free it is.
        let keep = (*heap::queue(heap, (*page).class as usize)).first == page;
        if (*page).used == 0 && !keep {
            heap::retire(heap, page);
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
        let slot = Slot::of(seg, p);
        let (word, bit) = slot.bit();
        if word.load(Ordering::Relaxed) & bit == 0 {
            die(b"use after free", p as usize);
        }
    }
}

/// Aborts with `mapalloc: <what> of 0x<addr>`.
#[cold]
pub(crate) fn die(what: &[u8], addr: usize) -> ! {
    os::fatal(&[what, b" of"], addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::CLASSES;

    #[test]
    fn hardened_slabs_fit_a_guard() {
        for c in 0..CLASSES {
            let span = slab_span(c);
            assert!(span * PAGE_SIZE - OS_PAGE >= class_size(c));
            assert!(span < crate::segment::PAGES);
            assert!((span * PAGE_SIZE - OS_PAGE) / class_size(c) <= BITMAP_WORDS * 64);
        }
    }
}
