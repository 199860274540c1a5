//! `MapAlloc`: the `GlobalAlloc` front door. It only routes: this is the
//! one place that chooses between the default heap (`heap`, `large`) and
//! hardened mode (`hardened`), which never call each other.

use crate::hardened::{self, Claim};
use crate::heap;
use crate::mode::{self, Mode, Zero};
use crate::segment::{Kind, PAGE_SIZE, Segment, segment_of};
use crate::size_class::{MIN_ALIGN, SMALL_MAX, class_of};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

/// The mapalloc global allocator.
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct MapAlloc {
    hardened: bool,
}

impl MapAlloc {
    /// The allocator; everything is set up lazily on first use.
    /// `MAPALLOC_HARDENED=1` in the environment turns on hardened mode.
    pub const fn new() -> Self {
        Self { hardened: false }
    }

    /// The allocator in hardened mode, whatever the environment says.
    /// The mode is the process's, fixed by its first allocation: use this
    /// as the `#[global_allocator]`. In a process that already runs in the
    /// default mode (a `MapAlloc::new()` or the raw API allocated first),
    /// its first call aborts with one line saying so, rather than hand out
    /// or free blocks without the protections it promises.
    pub const fn hardened() -> Self {
        Self { hardened: true }
    }

    /// The mode this allocator asks for. `self` is a constant static, so
    /// this folds to a constant.
    #[inline(always)]
    fn mode(&self) -> Mode {
        if self.hardened {
            Mode::Hardened
        } else {
            Mode::AsConfigured
        }
    }
}

/// Allocates `size` bytes aligned to `align` (a power of two).
///
/// `MapAlloc::hardened()` goes to hardened mode with a constant. Otherwise
/// the default fast path runs first, test-free: a hardened process never
/// makes a default heap, so its thread pointer stays a sentinel whose
/// pages are empty, and every allocation lands in `alloc_slow`, which
/// routes it.
#[inline(always)]
pub(crate) fn alloc(size: usize, align: usize, zero: Zero, mode: Mode) -> *mut u8 {
    if mode == Mode::Hardened {
        return hardened::alloc(size, align);
    }
    if align <= MIN_ALIGN && size <= SMALL_MAX {
        let heap = heap::current_heap();
        let class = class_of(size);
        // SAFETY: the thread's own heap (or a sentinel), a slab class.
        let p = unsafe { heap::try_alloc(heap, class, zero) };
        if !p.is_null() {
            return p;
        }
        return alloc_slow(heap, class, size, align, zero);
    }
    alloc_aligned(size, align, zero)
}

/// The default fast path found nothing: the first allocation of a thread
/// (or of a hardened process, every allocation), or a page to refill.
#[cold]
#[inline(never)]
fn alloc_slow(heap: *mut heap::Heap, class: usize, size: usize, align: usize, zero: Zero) -> *mut u8 {
    if heap::is_sentinel(heap) && settle_mode() {
        return hardened::alloc(size, align);
    }
    // SAFETY: the thread's own heap or a sentinel.
    unsafe { heap::alloc_slow(heap, class, zero) }
}

/// Fixes the process's mode before its first heap or large block (the
/// options are read first); true if it is hardened.
fn settle_mode() -> bool {
    crate::thread::process_init();
    mode::settle()
}

/// Over-aligned or large requests. A size rounded up to a multiple of the
/// alignment lands in a class whose blocks all have that alignment (slab
/// pages are 64 KiB-aligned and class sizes keep the power-of-two factor;
/// see `size_class` tests), so alignments up to a slab page stay in slabs.
#[inline(never)]
fn alloc_aligned(size: usize, align: usize, zero: Zero) -> *mut u8 {
    if settle_mode() {
        return hardened::alloc(size, align);
    }
    if align <= PAGE_SIZE {
        // `max(1)`: a zero size would round to zero and land in the
        // 16-byte class, whatever the alignment.
        if let Some(rounded) = size.max(1).checked_next_multiple_of(align)
            && rounded <= SMALL_MAX
        {
            let heap = heap::current_heap();
            let class = class_of(rounded);
            // SAFETY: as in `alloc`.
            let p = unsafe { heap::try_alloc(heap, class, zero) };
            if !p.is_null() {
                return p;
            }
            // SAFETY: the thread's own heap or a sentinel.
            return unsafe { heap::alloc_slow(heap, class, zero) };
        }
    }
    // SAFETY: `align` is a power of two (Layout's guarantee).
    unsafe { crate::large::alloc(size, align, zero) }
}

/// Frees `p`, of whose size and alignment `claim` says what the caller
/// knows (hardened mode checks it).
///
/// # Safety
/// `p` was returned by this allocator and is not used again (in hardened
/// mode a bad `p` aborts).
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8, claim: Claim, mode: Mode) {
    // SAFETY: hardened free validates `p` before trusting it. Inlined for
    // `MapAlloc::hardened()`; out of line behind the one predictable test
    // that `MAPALLOC_HARDENED=1` costs the default.
    unsafe {
        if mode == Mode::Hardened {
            return hardened::free(p, claim);
        }
        if mode::hardened() {
            return hardened::free_outlined(p, claim);
        }
        heap::free(p)
    }
}

/// Bytes usable at `p`, a live block of ours (hardened mode: the size it
/// was asked for, so that no caller writes over its canary).
///
/// # Safety
/// `p` is a live block returned by this allocator.
pub(crate) unsafe fn usable_size(p: *mut u8) -> usize {
    // SAFETY: forwarded; hardened mode checks `p` first.
    unsafe {
        if mode::hardened() {
            return hardened::usable_size(p);
        }
        block_size(p)
    }
}

/// The usable size of a default block `p`, read from its headers.
///
/// # Safety
/// `p` is a live block of ours, in the default mode.
unsafe fn block_size(p: *mut u8) -> usize {
    let seg = segment_of(p);
    // SAFETY: `p` is live, so its header is.
    unsafe {
        if (*seg).header.kind == Kind::Large {
            return crate::large::usable_size(seg.cast());
        }
        (*Segment::page_of(seg, p)).block_size as usize
    }
}

/// Resizes `p`, of whose bytes the first `old_size` are the caller's, or
/// all it can use (C's `realloc`) for `None`.
///
/// # Safety
/// `p` is a live block of ours with alignment `align`; not used again
/// unless null is returned. (In hardened mode a `p` that is not a live
/// block aborts, before any header is read through it.)
pub(crate) unsafe fn realloc(
    p: *mut u8,
    align: usize,
    old_size: Option<usize>,
    new_size: usize,
    mode: Mode,
) -> *mut u8 {
    if mode.is_hardened() {
        // SAFETY: hardened mode validates `p` first.
        return unsafe { hardened::realloc(p, align, old_size, new_size) };
    }
    let seg = segment_of(p);
    // SAFETY: `p` is live, so its header is; a large block's header heads
    // its mapping.
    unsafe {
        if (*seg).header.kind == Kind::Large {
            if new_size > SMALL_MAX || align > PAGE_SIZE {
                let q = crate::large::realloc(seg.cast(), new_size);
                if !q.is_null() {
                    return q;
                }
            }
        } else {
            let block = (*Segment::page_of(seg, p)).block_size as usize;
            // Stay in place if the block fits and is not more than twice
            // the request (the alignment is already the block's).
            if new_size <= block && new_size >= block / 2 {
                return p;
            }
        }
        let q = alloc(new_size, align, Zero::No, mode);
        if !q.is_null() {
            let old_size = old_size.unwrap_or_else(|| block_size(p));
            ptr::copy_nonoverlapping(p, q, old_size.min(new_size));
            heap::free(p);
        }
        q
    }
}

/// The `collect()` API, in the process's mode.
pub(crate) fn collect() {
    if mode::hardened() {
        hardened::collect();
    } else {
        crate::thread::cool_warm_heaps::<heap::Heap>();
        heap::collect_current();
    }
    crate::large::release_cached();
}

// SAFETY: every method upholds GlobalAlloc's contract: blocks are at least
// `layout.size()` bytes, aligned to `layout.align()`, never overlap while
// live, and failures return null without unwinding.
//
// The entry points are always inlined: each call site (`__rust_alloc`, or
// a caller's own) then knows `self`, so the mode folds to a constant and
// only one mode's fast path is compiled there.
unsafe impl GlobalAlloc for MapAlloc {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        alloc(layout.size(), layout.align(), Zero::No, self.mode())
    }

    #[inline(always)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        alloc(layout.size(), layout.align(), Zero::Yes, self.mode())
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let claim = Claim::sized(Some(layout.size()), layout.align());
        // SAFETY: GlobalAlloc's contract: `ptr` is a live block of ours.
        unsafe { free(ptr, claim, self.mode()) }
    }

    #[inline(always)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract: `ptr` is live with `layout`.
        unsafe { realloc(ptr, layout.align(), Some(layout.size()), new_size, self.mode()) }
    }
}
