//! `MapAlloc`: the `GlobalAlloc` front door. It only routes: small sizes to
//! the thread heap's fast path, the rest to `large`.

use crate::heap::{self, Zero};
use crate::segment::{Kind, PAGE_SIZE, Segment, segment_of};
use crate::size_class::{MIN_ALIGN, SMALL_MAX};
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

/// The mode an allocation asks for. `MapAlloc::hardened()` asks for
/// hardened mode on every slow path (every first allocation of a thread,
/// every large or over-aligned one, every `realloc`) and on a free the
/// heap does not know; the first such request of the process, made before
/// any heap or mapping exists, fixes the mode, and one that comes after
/// the process settled as default aborts (`Mode::apply`). The fast path
/// carries no test of it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Hardened if `MAPALLOC_HARDENED=1` (or a hardened allocator ran first).
    AsConfigured,
    Hardened,
}

impl Mode {
    /// Switches hardened mode on if asked. Aborts if the process already
    /// runs in the default mode (a heap or large block was made first, by
    /// a `MapAlloc::new()` or the raw API): its blocks cannot be served or
    /// freed as hardened ones, and quietly serving the default would break
    /// the promise `MapAlloc::hardened()` makes.
    pub(crate) fn apply(self) {
        if self == Mode::Hardened && !crate::hardened::request() {
            crate::os::fatal(
                &[b"MapAlloc::hardened() used in a process already running in the default mode"],
                None,
            );
        }
    }
}

/// Allocates `size` bytes aligned to `align` (a power of two).
#[inline(always)]
pub(crate) fn alloc(size: usize, align: usize, zero: Zero, mode: Mode) -> *mut u8 {
    if align <= MIN_ALIGN && size <= SMALL_MAX {
        // SAFETY: the thread's own heap, a size the slabs serve.
        return unsafe { heap::alloc_small(crate::thread::current_heap(), size, zero, mode) };
    }
    alloc_aligned(size, align, zero, mode)
}

/// Over-aligned or large requests. A size rounded up to a multiple of the
/// alignment lands in a class whose blocks all have that alignment (slab
/// pages are 64 KiB-aligned and class sizes keep the power-of-two factor;
/// see `size_class` tests), so alignments up to a slab page stay in slabs.
#[inline(never)]
fn alloc_aligned(size: usize, align: usize, zero: Zero, mode: Mode) -> *mut u8 {
    mode.apply();
    if align <= PAGE_SIZE {
        // `max(1)`: a zero size would round to zero and land in the
        // 16-byte class, whatever the alignment.
        if let Some(rounded) = size.max(1).checked_next_multiple_of(align)
            && rounded <= SMALL_MAX
        {
            // SAFETY: as in `alloc`.
            return unsafe {
                heap::alloc_small(crate::thread::current_heap(), rounded, zero, mode)
            };
        }
    }
    // SAFETY: `align` is a power of two (Layout's guarantee).
    unsafe { crate::large::alloc(size, align, zero) }
}

/// Bytes usable at `p`, a live block of ours.
///
/// # Safety
/// `p` is a live block returned by this allocator.
pub(crate) unsafe fn usable_size(p: *mut u8) -> usize {
    if crate::hardened::enabled() {
        crate::hardened::check_live(p);
    }
    // SAFETY: forwarded, and checked in hardened mode.
    unsafe { block_size(p) }
}

/// The usable size of `p`, read from its headers without a check.
///
/// # Safety
/// `p` is a live block of ours (checked first in hardened mode).
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
    mode.apply();
    if crate::hardened::enabled() {
        crate::hardened::check_live(p);
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
            heap::free(p, mode);
        }
        q
    }
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
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: GlobalAlloc's contract: `ptr` is a live block of ours.
        unsafe { heap::free(ptr, self.mode()) }
    }

    #[inline(always)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract: `ptr` is live with `layout`.
        unsafe { realloc(ptr, layout.align(), Some(layout.size()), new_size, self.mode()) }
    }
}
