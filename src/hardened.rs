//! Hardened mode: one switch (`MapAlloc::hardened()`, or
//! `MAPALLOC_HARDENED=1` for a binary built with `MapAlloc::new()`),
//! fixed before the first allocation. Each measure, and the attack it
//! stops (see `docs/security.md`):
//!
//! * **Out-of-line slot bitmaps, no free lists in freed memory**: a slab's
//!   free slots are bits in the segment header, so there is no free-list
//!   pointer for an overflow or a use-after-free write to forge.
//! * **Randomised slot choice** (per-heap generator seeded from
//!   `getrandom`): the next block's address cannot be predicted from the
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
use crate::segment::{Kind, PAGE_SIZE, SEGMENT_SIZE, Segment, segment_of};
use crate::size_class::{CLASSES, class_size};
use crate::stats::{Counter, STATS};
use crate::sync::{AtomicBool, Ordering};
use crate::{registry, thread};
use core::ptr;
use static_assertions::const_assert;

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

/// Slot bitmaps live in the segment header page, after the descriptors:
/// 64 words (4096 slots, the most a slab can hold) per page index.
const BITMAP_OFFSET: usize = 32 << 10;
const BITMAP_WORDS: usize = 64;
const_assert!(core::mem::size_of::<Segment>() <= BITMAP_OFFSET);
const_assert!(BITMAP_OFFSET + 64 * BITMAP_WORDS * 8 <= PAGE_SIZE);

/// `2^40 / size`, rounded up, per class: slot index = offset * r >> 40,
/// exact for offsets below 2^20 (checked by multiplying back).
static RECIPROCAL: [u64; CLASSES] = {
    let mut r = [0u64; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        r[c] = (1u64 << 40).div_ceil(class_size(c) as u64);
        c += 1;
    }
    r
};

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

fn bitmap(seg: *mut Segment, idx: usize) -> *mut u64 {
    (seg as usize + BITMAP_OFFSET + idx * BITMAP_WORDS * 8) as *mut u64
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
        ptr::write_bytes(bitmap(seg, idx), 0, BITMAP_WORDS);
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

/// Allocates a block of `class`: a random free slot of the first page
/// with one. Blocks are always zero (zeroed on free, or fresh).
///
/// # Safety
/// Exclusive use of the hardened `heap`.
pub(crate) unsafe fn alloc(heap: *mut Heap, class: usize) -> *mut u8 {
    // SAFETY: exclusive use of `heap` and its pages.
    unsafe {
        let mut page = (*heap::queue(heap, class)).first;
        if page.is_null() || (*page).used >= (*page).capacity || (*page).thread_free.has_nodes() {
            page = find_page(heap, class);
            if page.is_null() {
                return ptr::null_mut();
            }
        }
        let seg = segment_of_page(page);
        let map = bitmap(seg, Segment::page_index(seg, page));
        let slot = random_free_slot(heap, map, (*page).capacity as usize);
        *map.add(slot / 64) |= 1 << (slot % 64);
        (*page).used += 1;
        let block = crate::segment::slab_start(page).add(slot * (*page).block_size as usize);
        if block.cast::<u64>().read() != 0 {
            die(b"write after free", block as usize);
        }
        block
    }
}

fn segment_of_page(page: *mut Page) -> *mut Segment {
    (page as usize & !(SEGMENT_SIZE - 1)) as *mut Segment
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
/// zeroed by them, their first word holding the list link).
///
/// # Safety
/// Owner only.
pub(crate) unsafe fn collect_remote(page: *mut Page) {
    // SAFETY: owner-only; the taken chain is ours.
    unsafe {
        if !(*page).thread_free.has_nodes() {
            return;
        }
        let mut block = (*page).thread_free.take_all::<crate::page::Block>();
        while !block.is_null() {
            let next = (*block).next;
            take_back(page, block.cast());
            block = next;
        }
    }
}

/// Picks a random clear bit among the first `capacity` of `map`: a
/// random word to start from, a random rotation within the first word
/// that has a clear bit. No division: the start is a multiply-shift.
unsafe fn random_free_slot(heap: *mut Heap, map: *mut u64, capacity: usize) -> usize {
    // SAFETY: `map` has `capacity.div_ceil(64)` words; the caller checked
    // that a slot is free.
    unsafe {
        let r = next_random(heap);
        let words = capacity.div_ceil(64);
        let mut w = (((r & 0xffff_ffff) * words as u64) >> 32) as usize;
        for _ in 0..words {
            let valid = if (w + 1) * 64 <= capacity {
                u64::MAX
            } else {
                (1u64 << (capacity % 64)) - 1
            };
            let free = !*map.add(w) & valid;
            if free != 0 {
                let rot = (r >> 58) as u32;
                let bit = (free.rotate_right(rot).trailing_zeros() + rot) % 64;
                return w * 64 + bit as usize;
            }
            w += 1;
            if w == words {
                w = 0;
            }
        }
        die(b"corrupted slot bitmap", map as usize)
    }
}

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

/// The slot index of `p` in `page`, or None if `p` is not exactly the
/// start of one of its slots.
fn slot_of(page: *mut Page, p: *mut u8) -> Option<usize> {
    // SAFETY: `page` is a descriptor in a registered segment's header.
    let (class, size, cap) = unsafe {
        (
            (*page).class as usize,
            (*page).block_size as usize,
            (*page).capacity as usize,
        )
    };
    if class >= CLASSES {
        return None;
    }
    let start = crate::segment::slab_start(page) as usize;
    let off = (p as usize).checked_sub(start)?;
    let slot = ((off as u64 * RECIPROCAL[class]) >> 40) as usize;
    (slot * size == off && slot < cap).then_some(slot)
}

/// Validates `p` and returns its segment and page, or aborts.
fn check_small(seg: *mut Segment, p: *mut u8) -> (*mut Page, usize) {
    // SAFETY: the caller checked that `seg` is a registered small segment,
    // so its header (and every descriptor) is mapped.
    let page = unsafe { Segment::page_of(seg, p) };
    match slot_of(page, p) {
        Some(slot) => (page, slot),
        None => die(b"invalid free", p as usize),
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
            if !crate::large::is_block(seg.cast(), p) {
                die(b"invalid free", p as usize);
            }
            crate::large::free(seg.cast());
            return;
        }
        let (page, slot) = check_small(seg, p);
        let heap = thread::current_heap();
        let mut owner = (*seg).header.owner.load(Ordering::Relaxed);
        if owner.is_null() && !thread::is_sentinel(heap) {
            heap::reclaim_abandoned(heap, Want::This(seg));
            owner = (*seg).header.owner.load(Ordering::Relaxed);
        }
        let word = bitmap(seg, Segment::page_index(seg, page)).add(slot / 64);
        let bit = 1u64 << (slot % 64);
        if *word & bit == 0 {
            die(b"double free", p as usize);
        }
        ptr::write_bytes(p, 0, (*page).block_size as usize);
        if owner == heap {
            *word &= !bit;
            (*page).used -= 1;
            after_local_free(heap, page);
        } else if (*page).push_thread_free(p.cast()) == crate::lockfree::Pushed::NotifyOwner {
            (*seg).push_delayed(p.cast());
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
    // SAFETY: the block is ours again.
    unsafe {
        p.cast::<u64>().write(0);
        release_slot(page, p);
    }
}

/// Clears `p`'s slot bit (the owner's side of every free).
unsafe fn release_slot(page: *mut Page, p: *mut u8) {
    let seg = segment_of_page(page);
    let Some(slot) = slot_of(page, p) else {
        die(b"invalid free", p as usize)
    };
    // SAFETY: owner-only bitmap and counters of a live page.
    unsafe {
        let word = bitmap(seg, Segment::page_index(seg, page)).add(slot / 64);
        if *word & (1 << (slot % 64)) == 0 {
            die(b"double free", p as usize);
        }
        *word &= !(1 << (slot % 64));
        (*page).used -= 1;
    }
}

unsafe fn after_local_free(heap: *mut Heap, page: *mut Page) {
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
        let (page, slot) = check_small(seg, p);
        if *bitmap(seg, Segment::page_index(seg, page)).add(slot / 64) & (1 << (slot % 64)) == 0 {
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

    #[test]
    fn reciprocal_division_is_exact() {
        for (c, &r) in RECIPROCAL.iter().enumerate() {
            let size = class_size(c) as u64;
            let mut off = 0u64;
            while off < (1 << 20) + size {
                let q = (off * r) >> 40;
                assert_eq!(q, off / size, "class {c} offset {off}");
                off += if size > 4096 { size / 3 } else { 7 };
            }
        }
    }

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
