//! Segments: 4 MiB chunks aligned to their size, cut into 64 slab pages of
//! 64 KiB. Page 0 holds the header (owner, page bitmaps, the 64 page
//! descriptors), so `ptr -> segment` is a mask and `ptr -> page` a shift.
//!
//! Large mappings start with the same `Header`, so `free` tells the two
//! apart with one load after the mask. `segment_of` masks `p - 1` rather
//! than `p`: every small block and every large block starts past its
//! header, and for a large block aligned to 4 MiB or more the header sits
//! exactly one segment below the block.

use crate::fixed::FixedVec;
use crate::lockfree::{Link, SlotCache, TakeAllStack};
use crate::os;
use crate::page::{Block, Page};
use crate::registry;
use crate::stats::{Counter, STATS};
use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use core::ptr;
use static_assertions::const_assert;

pub(crate) const SEGMENT_SHIFT: usize = 22;
pub(crate) const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
pub(crate) const PAGE_SHIFT: usize = 16;
pub(crate) const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
pub(crate) const PAGES: usize = SEGMENT_SIZE / PAGE_SIZE;
/// Bits of every page but the header in `free_mask`: the slab pages of a
/// default segment (a hardened one keeps some for its slot tables).
pub(crate) const ALL_SLAB_PAGES: u64 = !1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub(crate) enum Kind {
    Small = 0x5e6_0001,
    Large = 0x5e6_0002,
    /// Hardened mode's zero-size blocks (`hardened::zero`).
    Zero = 0x5e6_0003,
}

/// The words every segment, large mapping and zero chunk starts with.
#[repr(C)]
pub(crate) struct Header {
    /// The heap (of either kind) whose thread frees here without atomics;
    /// null for large mappings and abandoned segments.
    pub(crate) owner: AtomicPtr<u8>,
    pub(crate) kind: Kind,
}

#[repr(C)]
pub(crate) struct Segment {
    pub(crate) header: Header,
    /// Blocks freed remotely into pages the owner had parked full; the
    /// owner drains it on its slow path.
    pub(crate) delayed_free: TakeAllStack,
    /// Link in the global abandoned list.
    pub(crate) abandoned_next: *mut Segment,
    /// Links in the owner heap's segment list. Owner only.
    pub(crate) heap_next: *mut Segment,
    pub(crate) heap_prev: *mut Segment,
    /// Bit i: page i may hold a slab (fixed when the segment is mapped).
    pub(crate) slab_pages: u64,
    /// Bit i: page i is not part of a slab.
    pub(crate) free_mask: u64,
    /// Bit i: page i is free but still holds physical memory.
    pub(crate) dirty_mask: u64,
    /// Bit i: page i is known to read as zero.
    pub(crate) zero_mask: u64,
    /// For the kind of slab that uses it (hardened mode: bit i, the last OS
    /// page of page i is `PROT_NONE`, a slab's guard). Kept across the
    /// segment cache, since the pages keep their protection.
    pub(crate) kind_mask: u64,
    /// When the dirty pages should be purged (coarse ms clock).
    pub(crate) purge_at: u64,
    pub(crate) pages: [Page; PAGES],
}

const_assert!(core::mem::size_of::<Segment>() <= PAGE_SIZE);
const_assert!(core::mem::offset_of!(Segment, header) == 0);

/// First byte of the slab that `page` (a head descriptor) describes.
pub(crate) fn slab_start(page: *const Page) -> *mut u8 {
    let seg = (page as usize & !(SEGMENT_SIZE - 1)) as *mut Segment;
    (seg as usize + Segment::page_index(seg, page) * PAGE_SIZE) as *mut u8
}

/// The segment (or large mapping) header governing pointer `p`.
#[inline(always)]
pub(crate) fn segment_of(p: *mut u8) -> *mut Segment {
    ((p as usize).wrapping_sub(1) & !(SEGMENT_SIZE - 1)) as *mut Segment
}

impl Segment {
    /// The slab page holding block `p` (which must lie in this segment).
    ///
    /// # Safety
    /// `p` points into a slab of this (live, small) segment.
    #[inline(always)]
    pub(crate) unsafe fn page_of(this: *mut Segment, p: *mut u8) -> *mut Page {
        let idx = (p as usize - this as usize) >> PAGE_SHIFT;
        let d = Self::page_ptr(this, idx);
        // SAFETY: the head delta never points before page 1.
        unsafe { d.sub((*d).head_delta as usize) }
    }

    pub(crate) fn page_index(this: *mut Segment, page: *const Page) -> usize {
        // SAFETY: only the address of the field is computed.
        let base = unsafe { (&raw const (*this).pages).cast::<Page>() };
        (page as usize - base as usize) / core::mem::size_of::<Page>()
    }

    /// Takes a segment from the cache, or maps a fresh one (prepared with
    /// `fresh`) with slabs in `slab_pages`; its header is initialised with
    /// `owner`. Null if the OS refuses memory. (The process has one mode,
    /// so a cached segment was made with the same `slab_pages`.)
    pub(crate) fn acquire(owner: *mut u8, slab_pages: u64, fresh: fn(*mut Segment) -> bool) -> *mut Segment {
        let (seg, dirty, zero, kind) = match SEGMENT_CACHE.take() {
            // SAFETY: a cached segment is ours alone; its header is intact.
            Some(s) => unsafe { (s, (*s).dirty_mask, (*s).zero_mask, (*s).kind_mask) },
            // A refused mapping may fit once the caches let go of their
            // address space.
            None => match crate::large::retry_after_release(|| os::map_aligned(SEGMENT_SIZE, SEGMENT_SIZE, 0)) {
                Some(p) if fresh(p.as_ptr().cast()) && registry::insert(p.as_ptr() as usize) => {
                    STATS.add(Counter::Segments, 1);
                    (p.as_ptr().cast::<Segment>(), 0, ALL_SLAB_PAGES, 0)
                }
                Some(p) => {
                    os::unmap(p.as_ptr(), SEGMENT_SIZE);
                    return ptr::null_mut();
                }
                None => return ptr::null_mut(),
            },
        };
        // SAFETY: `seg` is a mapped, exclusively owned segment whose first
        // page is large enough for the header (const-asserted above).
        unsafe {
            let purge_at = if dirty != 0 { (*seg).purge_at } else { 0 };
            seg.write(Segment {
                header: Header {
                    owner: AtomicPtr::new(owner),
                    kind: Kind::Small,
                },
                delayed_free: TakeAllStack::new(),
                abandoned_next: ptr::null_mut(),
                heap_next: ptr::null_mut(),
                heap_prev: ptr::null_mut(),
                slab_pages,
                free_mask: slab_pages,
                dirty_mask: dirty,
                zero_mask: zero,
                kind_mask: kind,
                purge_at,
                pages: [Page::EMPTY; PAGES],
            });
        }
        seg
    }

    /// Gives an empty segment back: to the cache, whose dirty pages are
    /// purged after the same delay as a live segment's, or to the OS.
    ///
    /// # Safety
    /// The segment is empty, in no list, and nobody refers to it any more.
    pub(crate) unsafe fn release(seg: *mut Segment) {
        // SAFETY: forwarded; read before the cache makes it visible.
        let purge_at = unsafe {
            debug_assert!((*seg).is_empty());
            if (*seg).dirty_mask != 0 && DIRTY_CACHED.load(Ordering::Relaxed) >= MAX_DIRTY_CACHED {
                (*seg).purge_dirty();
            }
            if (*seg).dirty_mask != 0 {
                (*seg).purge_at
            } else {
                u64::MAX
            }
        };
        if SEGMENT_CACHE.put(seg.cast()) {
            NEXT_CACHE_PURGE.fetch_min(purge_at, Ordering::Relaxed);
            return;
        }
        unmap_segment(seg);
    }

    /// Finds `span` contiguous free pages (first fit) and marks them used.
    /// Returns the index of the first, or None.
    ///
    /// Pages that are free but still hold memory (dirty) go first: they
    /// are faulted in already, where a purged or fresh page costs a page
    /// fault per 4 KiB on first touch.
    pub(crate) fn take_pages(&mut self, span: usize) -> Option<usize> {
        debug_assert!((1..PAGES).contains(&span));
        let idx = first_run(self.dirty_mask, span).or_else(|| first_run(self.free_mask, span))?;
        let m = ((1u64 << span) - 1) << idx;
        self.free_mask &= !m;
        self.dirty_mask &= !m;
        Some(idx)
    }

    /// True iff pages `[idx, idx+span)` all read as zero; clears that fact.
    pub(crate) fn take_zero(&mut self, idx: usize, span: usize) -> bool {
        let m = ((1u64 << span) - 1) << idx;
        let zero = self.zero_mask & m == m;
        self.zero_mask &= !m;
        zero
    }

    /// Returns pages `[idx, idx+span)` to the free pool, dirty.
    ///
    /// The purge waits until the segment has given back no page for the
    /// purge delay: a segment whose pages are taken and given back all the
    /// time (threads that come and go, a class whose use dips and comes
    /// back) keeps them faulted in, where a purge the delay after the first
    /// free page made them fault in again at once (`larson` with thread
    /// turnover: 21k page faults for 800 threads, 4k with the delay
    /// lengthened).
    pub(crate) fn give_pages(&mut self, idx: usize, span: usize, now: u64) {
        let m = ((1u64 << span) - 1) << idx;
        self.free_mask |= m;
        self.purge_at = now + crate::options::PURGE_DELAY_MS.get() as u64;
        self.dirty_mask |= m;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.free_mask == self.slab_pages
    }

    /// `madvise`s every dirty free page away, one call per run of pages.
    pub(crate) fn purge_dirty(&mut self) {
        let mut mask = self.dirty_mask;
        let base = self as *mut Segment as usize;
        while mask != 0 {
            let start = mask.trailing_zeros() as usize;
            let len = (mask >> start).trailing_ones() as usize;
            if os::purge((base + start * PAGE_SIZE) as *mut u8, len * PAGE_SIZE) {
                let m = if len == 64 {
                    u64::MAX
                } else {
                    ((1u64 << len) - 1) << start
                };
                self.zero_mask |= m;
            }
            mask &= !(if len == 64 {
                u64::MAX
            } else {
                ((1u64 << len) - 1) << start
            });
        }
        self.dirty_mask = 0;
    }

    /// Raw pointer to descriptor `idx` (no reference to the array is made:
    /// other threads may be touching their pages' atomics).
    #[inline(always)]
    pub(crate) fn page_ptr(this: *mut Segment, idx: usize) -> *mut Page {
        debug_assert!(idx < PAGES);
        // SAFETY: only an address inside the header is computed.
        unsafe { (&raw mut (*this).pages).cast::<Page>().add(idx) }
    }

    /// Hands `block` to the owner (see `Page::push_thread_free`).
    ///
    /// # Safety
    /// `block` is a block of this segment that the caller owns.
    pub(crate) unsafe fn push_delayed(&self, block: *mut Block) {
        // SAFETY: forwarded.
        unsafe { self.delayed_free.push(block) }
    }

    /// Takes every delayed block (a chain through `Block::next`).
    pub(crate) fn take_delayed(&self) -> *mut Block {
        self.delayed_free.take_all()
    }

    /// Pushes an abandoned segment on the global list.
    ///
    /// # Safety
    /// `seg` is live, owned by nobody, and in no other list.
    pub(crate) unsafe fn abandon(seg: *mut Segment) {
        STATS.add(Counter::AbandonedSegments, 1);
        // SAFETY: forwarded.
        unsafe { ABANDONED.push(seg) };
    }

    /// Puts back a segment taken from the abandoned list but not adopted.
    ///
    /// # Safety
    /// `seg` came from `take_abandoned` and was not touched.
    pub(crate) unsafe fn abandon_again(seg: *mut Segment) {
        // SAFETY: forwarded.
        unsafe { ABANDONED.push(seg) };
    }

    /// Takes every abandoned segment at once (a chain through
    /// `abandoned_next`).
    pub(crate) fn take_abandoned() -> *mut Segment {
        ABANDONED.take_all()
    }
}

impl Link for Segment {
    unsafe fn set_next(node: *mut Self, next: *mut Self) {
        // SAFETY: the caller owns `node`.
        unsafe { (*node).abandoned_next = next }
    }
}

/// The first run of `span` set bits in `mask` (bit 0, the header, never),
/// first fit.
fn first_run(mask: u64, span: usize) -> Option<usize> {
    let run = (1u64 << span) - 1;
    let mut idx = 1;
    while idx + span <= PAGES {
        let m = run << idx;
        if mask & m == m {
            return Some(idx);
        }
        // Skip past the last unset bit in the window.
        let unset = !mask & m;
        idx = (63 - unset.leading_zeros() as usize) + 1;
    }
    None
}

/// Segments whose thread exited, waiting to be adopted.
static ABANDONED: TakeAllStack = TakeAllStack::new();

const CACHE_SLOTS: usize = 16;

/// Returns a segment's memory to the OS and forgets it.
fn unmap_segment(seg: *mut Segment) {
    registry::remove(seg as usize);
    if os::unmap(seg.cast(), SEGMENT_SIZE) {
        STATS.sub(Counter::Segments, 1);
    } else {
        // The kernel refused (map count limit): the memory stays mapped,
        // unused and unregistered, counted in `mapped_bytes`.
    }
}

/// Empty segments kept for reuse.
pub(crate) struct SegmentCache(SlotCache<CACHE_SLOTS>);

/// Cached segments that still hold dirty pages. Purges wait for a later
/// slow path, which an idle program never reaches; so at most
/// `MAX_DIRTY_CACHED` segments (16 MiB) stay dirty in the cache, enough
/// for threads that exit to hand their pages to the next ones warm. (With
/// 2, two lanes of short-lived threads in `larson` purged segments on
/// their way into the cache and faulted them in again on the way out:
/// 17k page faults and 0.29 s for 2 M replacements; 8.9k and 0.15 s with
/// 4, 5-7k and 0.14 s with 8.)
static DIRTY_CACHED: AtomicUsize = AtomicUsize::new(0);
const MAX_DIRTY_CACHED: usize = 4;

/// When the next cached segment's dirty pages are due for purging.
static NEXT_CACHE_PURGE: AtomicU64 = AtomicU64::new(u64::MAX);

impl SegmentCache {
    pub(crate) fn take(&self) -> Option<*mut Segment> {
        let seg = self.0.take()? as *mut Segment;
        // SAFETY: taken from the cache, so ours alone.
        if unsafe { (*seg).dirty_mask } != 0 {
            DIRTY_CACHED.fetch_sub(1, Ordering::Relaxed);
        }
        Some(seg)
    }

    pub(crate) fn put(&self, seg: *mut u8) -> bool {
        // SAFETY: the caller owns `seg` until the slot publishes it.
        let dirty = unsafe { (*seg.cast::<Segment>()).dirty_mask } != 0;
        // Counted before it is visible, so a taker's decrement never comes
        // first.
        if dirty {
            DIRTY_CACHED.fetch_add(1, Ordering::Relaxed);
        }
        let done = self.0.put(seg as usize, crate::options::SEGMENT_CACHE.get());
        if dirty && !done {
            DIRTY_CACHED.fetch_sub(1, Ordering::Relaxed);
        }
        done
    }

    /// Purges the dirty pages of cached segments whose delay has passed.
    pub(crate) fn purge_expired(&self, now: u64) {
        if now < NEXT_CACHE_PURGE.load(Ordering::Relaxed) {
            return;
        }
        NEXT_CACHE_PURGE.store(u64::MAX, Ordering::Relaxed);
        let mut held = FixedVec::<*mut Segment, CACHE_SLOTS>::new(ptr::null_mut());
        while !held.is_full() {
            match self.take() {
                Some(seg) => {
                    let _ = held.push(seg);
                }
                None => break,
            }
        }
        for &seg in held.as_slice() {
            // SAFETY: taken from the cache, so ours alone until put back.
            let next = unsafe {
                if (*seg).dirty_mask != 0 && now >= (*seg).purge_at {
                    (*seg).purge_dirty();
                }
                if (*seg).dirty_mask != 0 {
                    (*seg).purge_at
                } else {
                    u64::MAX
                }
            };
            if self.put(seg.cast()) {
                NEXT_CACHE_PURGE.fetch_min(next, Ordering::Relaxed);
            } else {
                unmap_segment(seg);
            }
        }
    }

    /// Unmaps every cached segment; false if there was none.
    pub(crate) fn drain(&self) -> bool {
        let mut any = false;
        while let Some(s) = self.take() {
            unmap_segment(s);
            any = true;
        }
        any
    }
}

pub(crate) static SEGMENT_CACHE: SegmentCache = SegmentCache(SlotCache::new());
