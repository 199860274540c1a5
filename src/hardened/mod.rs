//! Hardened mode: a heap of its own (`heap`), beside the default one and
//! on the same segment, page and OS layers, reached from one routing point
//! (`global`): `MapAlloc::hardened()`, or `MAPALLOC_HARDENED=1` for a
//! binary built with `MapAlloc::new()` and for the C ABI. Each measure,
//! and the attack it stops (see `docs/security.md`):
//!
//! * **Pointer validation before any header is trusted**: the registry,
//!   the segment kind and owner, the page's class and the exact slot
//!   offset (or, for a page the heap already knows, its cached entry and
//!   the exact slot); a wild, foreign, stack or interior pointer aborts as
//!   an invalid free.
//! * **Double-free detection**: the slot's table entry must say the block
//!   is handed out (not free, not in quarantine).
//! * **Sized frees checked**: C++ sized and aligned `delete`, C23
//!   `free_sized`/`free_aligned_sized` and Rust's `Layout` must name the
//!   size the block was asked for (kept out of line, in its slot entry or
//!   mapping header) and an alignment it has.
//! * **Canaries**: every byte from the size asked for to the end of its
//!   slot (at least 8) holds a per-process random pattern, checked at free
//!   and `realloc`: an overflow of the block aborts there. A large block
//!   ends at its guard page, with at most the alignment's few bytes of
//!   canary before it.
//! * **Underflow check**: a free also checks the last word of the slot
//!   before (a canary if handed out, else zero).
//! * **Zero on free, whole-slot check on reuse**: a freed block is zeroed
//!   at once; a slot must still be all zero when handed out again, so a
//!   write through a dangling pointer at any offset aborts.
//! * **Quarantine**: a freed block waits in a random ring before its slot
//!   is reused, so the same block is not handed back at once; what waits
//!   is checked at thread and process exit.
//! * **Out-of-line free lists, no links in freed memory**: a slab's free
//!   slots are chained in a slot table in the segment's table pages,
//!   behind a guard page, so there is no free-list pointer to forge.
//! * **Sealed links on cross-thread lists**: a block freed by another
//!   thread waits on a list until its owner takes it back; its link is
//!   sealed with a process secret and its own address, and checked to be
//!   a slot of the right page before it is followed.
//! * **Randomised slab order** (per-heap generator seeded from
//!   `getrandom`).
//! * **Guard pages** (`PROT_NONE`) after every slab, before a segment's
//!   first slab (ending the slot tables), and after every large block.
//! * **`malloc(0)`** returns a unique address in a `PROT_NONE` region.
//! * **Freed large blocks are unmapped** at once: a read after free faults.

mod bytes;
mod heap;
mod known;
mod large;
mod links;
mod quarantine;
mod slots;
mod zero;

use crate::mode::Mode;
use crate::os;
use crate::segment::{Kind, Segment, segment_of};
use crate::size_class::{MIN_ALIGN, SLAB_MAX, class_of};
use crate::{registry, thread};
use core::ptr;
use slots::Slot;

/// What the caller of a free or `realloc` says about the block: the size
/// it was asked for and an alignment it has, where the interface carries
/// them (C++ sized and aligned `delete`, C23 `free_sized`, Rust's
/// `Layout`). Two words, so that it travels in registers: the default
/// mode's free receives one too, and must not pay to build it.
#[derive(Clone, Copy)]
pub(crate) struct Claim {
    /// The size claimed, or `NO_SIZE`.
    size: usize,
    /// The alignment claimed (a power of two below `REALLOC`), and the
    /// `CXX` and `REALLOC` flags: what the caller passes, stored as it is.
    bits: usize,
}

const NO_SIZE: usize = usize::MAX;
/// The size is what C++'s `operator new` was asked for, which is not
/// always what it asked `malloc` for (see `check`).
const CXX: usize = 1 << 63;
/// The claim comes with a `realloc` (for the report).
const REALLOC: usize = 1 << 62;
const ALIGN_BITS: usize = REALLOC - 1;

impl Claim {
    /// A plain `free(p)`: nothing claimed.
    pub(crate) const NONE: Claim = Claim {
        size: NO_SIZE,
        bits: 1,
    };

    /// A free that names the block's size (if any: exactly the size it
    /// was asked for) and an alignment it has (a power of two).
    #[inline(always)]
    pub(crate) fn sized(size: Option<usize>, align: usize) -> Claim {
        Claim {
            size: size.unwrap_or(NO_SIZE),
            bits: align & ALIGN_BITS,
        }
    }

    /// A C++ sized or aligned `operator delete`.
    #[inline(always)]
    pub(crate) fn cxx(size: Option<usize>, align: usize) -> Claim {
        let c = Claim::sized(size, align);
        Claim {
            bits: c.bits | CXX,
            ..c
        }
    }

    fn realloc(size: Option<usize>, align: usize) -> Claim {
        let c = Claim::sized(size, align);
        Claim {
            bits: c.bits | REALLOC,
            ..c
        }
    }

    #[inline(always)]
    fn align(&self) -> usize {
        (self.bits & ALIGN_BITS).max(1)
    }

    /// Where a check of this claim runs, for the report.
    fn at(&self) -> &'static [u8] {
        if self.bits & REALLOC != 0 {
            b"realloc"
        } else {
            b"free"
        }
    }

    /// Aborts unless the claim fits block `p`, asked for `requested` bytes.
    /// A claimed size is the size asked for; for C++, also what `operator
    /// new` asked `malloc` for it: at least 1 byte, and for an alignment
    /// rounded up to a multiple of it (libstdc++ does both).
    #[inline(always)]
    fn check(&self, p: *mut u8, requested: usize) {
        let size = self.size;
        if size != NO_SIZE && size != requested && !self.cxx_matches(requested) {
            self.wrong_size(p, requested);
        }
        // A power of two: a mask, not a division.
        if p as usize & (self.align() - 1) != 0 {
            self.wrong_alignment(p);
        }
    }

    fn cxx_matches(&self, requested: usize) -> bool {
        let asked = self.size.max(1);
        self.bits & CXX != 0
            && (asked == requested || asked.checked_next_multiple_of(self.align()) == Some(requested))
    }

    #[cold]
    #[inline(never)]
    fn wrong_size(&self, p: *mut u8, requested: usize) -> ! {
        os::Line::new()
            .text(self.at())
            .text(b" of ")
            .hex(p as usize)
            .text(b" with size ")
            .dec(self.size)
            .text(b", block holds ")
            .dec(requested)
            .abort()
    }

    #[cold]
    #[inline(never)]
    fn wrong_alignment(&self, p: *mut u8) -> ! {
        os::Line::new()
            .text(self.at())
            .text(b" of ")
            .hex(p as usize)
            .text(b" with alignment ")
            .dec(self.align())
            .text(b", block is aligned to ")
            .dec(1 << (p as usize).trailing_zeros().min(63))
            .abort()
    }
}

/// Allocates `size` bytes aligned to `align` (a power of two). Blocks
/// always read as zero apart from their canary, so `zero` asks nothing.
#[inline(always)]
pub(crate) fn alloc(size: usize, align: usize) -> *mut u8 {
    if align <= MIN_ALIGN && size.wrapping_sub(1) < SLAB_MAX - 8 {
        // SAFETY: the thread's own hardened heap (or a sentinel); the
        // class of `size + 8` holds it with its canary, and little enough
        // slack for its entry (checked for every size in `heap` tests).
        return unsafe { heap::alloc(heap::current(), class_of(size + 8), size) };
    }
    alloc_other(size, align)
}

/// Zero-size, over-aligned and large requests.
#[inline(never)]
fn alloc_other(size: usize, align: usize) -> *mut u8 {
    thread::process_init();
    Mode::Hardened.apply();
    if size == 0 {
        let p = zero::alloc();
        if !p.is_null() {
            return p;
        }
        return alloc(1, align);
    }
    if align <= heap::MAX_SLAB_ALIGN
        && let Some(class) = heap::slab_class(size, align.max(MIN_ALIGN))
    {
        // SAFETY: as in `alloc`.
        return unsafe { heap::alloc(heap::current(), class, size) };
    }
    large::alloc(size, align)
}

/// Frees `p`, which may be anything: it is validated before anything is
/// read through it.
///
/// # Safety
/// None beyond the process being sane; a bad `p` aborts.
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8, claim: Claim) {
    // Our mapping's provenance: the block is zeroed in full, past the
    // caller's layout (see `heap::block_at`).
    let p = crate::heap::block_at(p).cast::<u8>();
    // SAFETY: forwarded.
    unsafe { heap::free(p, claim) }
}

/// `free`, out of line: the `MAPALLOC_HARDENED=1` route from the default
/// allocator's free, which keeps its own fast path small.
///
/// # Safety
/// As for `free`.
#[inline(never)]
pub(crate) unsafe fn free_outlined(p: *mut u8, claim: Claim) {
    // SAFETY: forwarded.
    unsafe { free(p, claim) }
}

/// What a pointer given to `free`, `realloc` or `usable_size` is, once
/// checked.
enum Block {
    /// A slot of a slab (live or not: the caller checks).
    Small(*mut Segment, Slot),
    /// The start of a large mapping's block (not yet checked).
    Large(*mut crate::large::Large),
    /// In a zero chunk (not yet checked).
    Zero,
}

/// Validates `p` as far as its address goes (aborting with `invalid` and
/// its address if it is not ours, or not a slot's start).
fn classify(p: *mut u8, invalid: &[u8]) -> Block {
    // `MapAlloc::hardened()` in a process that runs in the default mode:
    // its blocks have no slot tables to check against.
    Mode::Hardened.apply();
    let seg = segment_of(p);
    // Null masks to a chunk past the address space, so it is reported
    // here like any wild pointer.
    if !registry::contains(seg as usize) {
        die(invalid, p as usize);
    }
    // SAFETY: registered, so `seg` heads a live mapping of ours.
    match unsafe { (*seg).header.kind } {
        Kind::Large => Block::Large(seg.cast()),
        Kind::Zero => Block::Zero,
        // SAFETY: a registered small segment; `p` masks to it.
        Kind::Small => match unsafe { Slot::find(seg, p) } {
            Some(slot) => Block::Small(seg, slot),
            None => die(invalid, p as usize),
        },
    }
}

/// The slow half of `free`: a pointer the heap's known pages do not
/// vouch for. Frees large and zero-size blocks here; for a slot of a slab
/// returns it, validated.
///
/// # Safety
/// None beyond the process being sane.
unsafe fn locate(p: *mut u8, claim: Claim, invalid: &[u8]) -> Option<(*mut Segment, Slot)> {
    match classify(p, invalid) {
        Block::Small(seg, slot) => Some((seg, slot)),
        // SAFETY: a registered large mapping.
        Block::Large(l) => unsafe {
            large::free(l, p, claim);
            None
        },
        // SAFETY: a registered zero chunk.
        Block::Zero => unsafe {
            zero::free(p);
            None
        },
    }
}

/// Resizes `p`, whose first `old_size` bytes (or all it holds, for `None`)
/// are the caller's; null (the block untouched) on failure.
///
/// # Safety
/// None beyond the process being sane; a bad `p` aborts.
pub(crate) unsafe fn realloc(p: *mut u8, align: usize, old_size: Option<usize>, new_size: usize) -> *mut u8 {
    let p = crate::heap::block_at(p).cast::<u8>();
    let claim = Claim::realloc(old_size, align);
    // SAFETY: each arm validates `p` before using it.
    unsafe {
        let held = match classify(p, b"invalid pointer") {
            Block::Zero => {
                if !zero::is_live(p) {
                    die(b"use after free", p as usize);
                }
                let q = alloc(new_size, align);
                if !q.is_null() {
                    zero::free(p);
                }
                return q;
            }
            Block::Large(l) => {
                let held = large::checked_size(l, p, claim, b"invalid pointer");
                let stays_large = align > heap::MAX_SLAB_ALIGN || heap::slab_class(new_size, align).is_none();
                if stays_large {
                    let q = large::realloc(l, new_size);
                    if !q.is_null() {
                        return q;
                    }
                }
                held
            }
            Block::Small(seg, slot) => {
                if !slot.is_live() {
                    die(b"use after free", p as usize);
                }
                let held = heap::checked_size(&slot, p, claim);
                if in_place(seg, &slot, p, held, new_size, align) {
                    return p;
                }
                held
            }
        };
        let q = alloc(new_size, align);
        if !q.is_null() {
            ptr::copy_nonoverlapping(p, q, held.min(new_size));
            free(p, Claim::sized(Some(held), 1));
        }
        q
    }
}

/// Resizes live slot `slot` (block `p`, asked for `held` bytes) where it
/// is, if the new size has the same class and the slab is this thread's:
/// the bytes past the old size read zero (not canary), the canary moves.
///
/// # Safety
/// `slot` is a live slot of registered segment `seg`, `p` its block.
unsafe fn in_place(seg: *mut Segment, slot: &Slot, p: *mut u8, held: usize, new_size: usize, align: usize) -> bool {
    // SAFETY: a live slot; its entry is written only by its owner, which
    // is checked to be this thread.
    unsafe {
        let same_class = align <= heap::MAX_SLAB_ALIGN
            && heap::slab_class(new_size, align.max(MIN_ALIGN)) == Some((*slot.page).class as usize);
        let ours = (*seg).header.owner.load(crate::sync::Ordering::Relaxed) == heap::current().cast();
        if !same_class || !ours {
            return false;
        }
        if new_size > held {
            ptr::write_bytes(p.add(held), 0, new_size - held);
        }
        slot.set_live(new_size);
        bytes::fill_canary(p, new_size, slot.size());
    }
    true
}

/// The size `p` was asked for, after checking it is a live block.
///
/// # Safety
/// None beyond the process being sane; a bad `p` aborts.
pub(crate) unsafe fn usable_size(p: *mut u8) -> usize {
    // SAFETY: each arm validates `p` before using it.
    unsafe {
        match classify(p, b"invalid pointer") {
            Block::Zero => {
                if !zero::is_live(p) {
                    die(b"use after free", p as usize);
                }
                0
            }
            Block::Large(l) => large::checked_size(l, p, Claim::NONE, b"invalid pointer"),
            Block::Small(_, slot) => {
                if !slot.is_live() {
                    die(b"use after free", p as usize);
                }
                heap::checked_size(&slot, p, Claim::NONE)
            }
        }
    }
}

/// The `collect()` API in hardened mode.
pub(crate) fn collect() {
    heap::collect_current();
}

/// At process exit: empties the calling thread's quarantine, checking that
/// what waited there was not written to.
pub(crate) fn at_exit() {
    heap::drain_current();
}

/// Aborts with `mapalloc: <what> of 0x<addr>`.
#[cold]
#[inline(never)]
pub(crate) fn die(what: &[u8], addr: usize) -> ! {
    os::fatal(&[what, b" of"], Some(addr))
}

/// Aborts with `mapalloc: <what> of 0x<addr> detected at <at>`.
#[cold]
#[inline(never)]
fn detected(what: &[u8], p: *mut u8, at: &[u8]) -> ! {
    os::Line::new()
        .text(what)
        .text(b" of ")
        .hex(p as usize)
        .text(b" detected at ")
        .text(at)
        .abort()
}
