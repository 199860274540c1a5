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
use crate::segment::{Kind, PAGE_SHIFT, PAGE_SIZE, SEGMENT_SIZE, Segment, segment_of};
use crate::size_class::{CLASSES, class_size};
use crate::stats::{Counter, STATS};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
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

/// Page `idx`'s slot bitmap. Only the owner writes it; atomics (relaxed,
/// plain moves on x86) because a remote free reads it to catch a double
/// free early.
fn bitmap(seg: *mut Segment, idx: usize) -> *const AtomicU64 {
    (seg as usize + BITMAP_OFFSET + idx * BITMAP_WORDS * 8) as *const AtomicU64
}

/// Sets (`used`) or clears `bit` in `word`: the owner's write.
fn set_bit(word: &AtomicU64, bit: u64, used: bool) {
    let w = word.load(Ordering::Relaxed);
    word.store(if used { w | bit } else { w & !bit }, Ordering::Relaxed);
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

/// Free slots waiting to be handed out, per slab page, in the segment
/// header after the descriptors: a random pick from up to 63 free slots
/// gathered at once from the bitmap, so most allocations skip the bitmap
/// scan. A cached slot keeps its bit clear: a free of it is still seen as
/// the double free it is. Refilled only when empty, so a slot freed
/// meanwhile (bit cleared) cannot be cached twice.
#[repr(C)]
struct SlotCache {
    len: u16,
    slots: [u16; 63],
}

const CACHE_OFFSET: usize = 16 << 10;
const_assert!(core::mem::size_of::<Segment>() <= CACHE_OFFSET);
const_assert!(CACHE_OFFSET + 64 * core::mem::size_of::<SlotCache>() <= BITMAP_OFFSET);

fn cache_of(seg: *mut Segment, idx: usize) -> *mut SlotCache {
    (seg as usize + CACHE_OFFSET + idx * core::mem::size_of::<SlotCache>()) as *mut SlotCache
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

/// A freed block on a remote or delayed list. Its link is sealed: stored
/// XORed with a process secret and the block's own address, so a link
/// forged or overwritten through a dangling pointer unseals to a wild
/// address, which `next_link` catches before it is followed.
#[repr(C)]
pub(crate) struct Sealed {
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

/// Where a small block lives: its slab's head descriptor and index, and
/// its slot.
struct Slot {
    page: *mut Page,
    idx: usize,
    slot: usize,
}

impl Slot {
    /// Locates `p` in `seg`, or None if `p` is not exactly the start of a
    /// slot of a slab.
    ///
    /// # Safety
    /// `seg` is a registered small segment (its header is mapped) and `p`
    /// lies in it.
    #[inline(always)]
    unsafe fn find(seg: *mut Segment, p: *mut u8) -> Option<Slot> {
        // SAFETY: the descriptors are in the mapped header; a head delta
        // never points before page 1.
        let (page, idx) = unsafe {
            let at = (p as usize - seg as usize) >> PAGE_SHIFT;
            let delta = (*Segment::page_ptr(seg, at)).head_delta as usize;
            (Segment::page_ptr(seg, at - delta), at - delta)
        };
        // SAFETY: as above.
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
        let off = p as usize - (seg as usize + (idx << PAGE_SHIFT));
        let slot = ((off as u64 * RECIPROCAL[class]) >> 40) as usize;
        (slot * size == off && slot < cap).then_some(Slot { page, idx, slot })
    }

    /// Validates `p` (in registered small segment `seg`), or aborts.
    #[inline(always)]
    fn of(seg: *mut Segment, p: *mut u8) -> Slot {
        // SAFETY: the caller checked `seg`; `p` masks to it.
        match unsafe { Slot::find(seg, p) } {
            Some(s) => s,
            None => die(b"invalid free", p as usize),
        }
    }

    /// The bitmap word holding this slot's bit, and the bit.
    fn bit(&self) -> (&AtomicU64, u64) {
        let seg = segment_of_page(self.page);
        // SAFETY: inside the bitmap of page `idx`.
        let word = unsafe { &*bitmap(seg, self.idx).add(self.slot / 64) };
        (word, 1 << (self.slot % 64))
    }

    /// Clears the slot's bit, or aborts if it is already clear.
    ///
    /// # Safety
    /// Owner only.
    #[inline(always)]
    unsafe fn release(&self, p: *mut u8) {
        let (word, bit) = self.bit();
        // SAFETY: owner-only bitmap and counters of a live page.
        unsafe {
            if word.load(Ordering::Relaxed) & bit == 0 {
                die(b"double free", p as usize);
            }
            set_bit(word, bit, false);
            (*self.page).used -= 1;
        }
    }
}

/// Zeroes the `size` bytes of block `p` (a multiple of 16, 16-aligned),
/// inline for the small sizes that dominate.
///
/// # Safety
/// `p` is a block of `size` bytes.
#[inline(always)]
unsafe fn zero_block(p: *mut u8, size: usize) {
    // SAFETY: every store lies inside the block; 16-byte aligned.
    unsafe {
        if size <= 64 {
            let q = p.cast::<u128>();
            q.write(0);
            q.byte_add(size - 16).write(0);
            if size > 32 {
                q.add(1).write(0);
                q.byte_add(size - 32).write(0);
            }
        } else {
            ptr::write_bytes(p, 0, size);
        }
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
