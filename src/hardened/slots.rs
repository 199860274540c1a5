//! Where a hardened slab keeps its free slots: out of the slab, in a slot
//! table per slab in the segment's table pages; and how a pointer maps to
//! its slot.
//!
//! A slot's table entry says everything about it, out of reach of the
//! program's writes:
//!
//! * `LIVE_BIT | slack` while its block is handed out, where `slack` is
//!   the slot's size less the size asked for (so the requested size, which
//!   frees are checked against and the canary starts at, is known without
//!   trusting the block);
//! * `QUARANTINED` while it waits in its heap's quarantine;
//! * otherwise it is free, and the entry is the next free slot of the slab
//!   (or `NO_SLOT`).
//!
//! The free list, the double-free state and the size are one array, so a
//! free is one compare and a few stores, and no link ever sits in memory
//! the program can write.

use super::die;
use crate::os::OS_PAGE;
use crate::page::{NO_SLOT, Page};
use crate::segment::{PAGE_SHIFT, PAGE_SIZE, PAGES, SEGMENT_SIZE, Segment};
use crate::size_class::class_size;
use crate::sync::{AtomicU16, Ordering};
use core::ptr;
use static_assertions::const_assert;

/// Set in the entry of a handed-out block; the rest is its slack.
pub(super) const LIVE_BIT: u16 = 0x8000;
/// The entry of a block in quarantine.
pub(super) const QUARANTINED: u16 = 0x7fff;
/// The most slack a live entry can record: a block asks for at least its
/// slot less this (see `heap::slab_class`).
pub(super) const MAX_SLACK: usize = 0x7fff;
const_assert!(NO_SLOT < QUARANTINED && QUARANTINED < LIVE_BIT);

/// Slots a table holds: the most blocks a hardened slab has (16-byte
/// blocks in a 64 KiB page less its guard; checked in `mod.rs` tests).
pub(super) const TABLE_SLOTS: usize = 4096;
const TABLE_BYTES: usize = TABLE_SLOTS * 2;
const_assert!(TABLE_SLOTS <= NO_SLOT as usize);

/// Segment pages 1..=8 of a hardened segment hold the tables of the slabs
/// that start at pages 9..=63 (the table of page `idx` is at
/// `(idx - 1) * 8 KiB`, so page 9's starts right after the header). The
/// last OS page of page 8 is a guard: an underflow from the first slab
/// faults rather than rewrite a table.
pub(crate) const TABLE_PAGES: u64 = 0b1_1111_1110;
pub(super) const FIRST_SLAB_PAGE: usize = 9;
const TABLES_END: usize = FIRST_SLAB_PAGE * PAGE_SIZE - OS_PAGE;
const_assert!((FIRST_SLAB_PAGE - 1) * TABLE_BYTES == PAGE_SIZE);
const_assert!((PAGES - 1) * TABLE_BYTES <= TABLES_END);
const_assert!(TABLE_PAGES == ((1 << FIRST_SLAB_PAGE) - 1) & !1);

/// The table of the slab whose head page is `idx` (at least 9).
#[inline(always)]
pub(super) fn table(seg: *mut Segment, idx: usize) -> *const AtomicU16 {
    debug_assert!(idx >= FIRST_SLAB_PAGE);
    (seg as usize + (idx - 1) * TABLE_BYTES) as *const AtomicU16
}

/// The slab start and slot table of the slab headed by descriptor `page`,
/// from the descriptor's address alone: descriptor `i` sits 64 `i` bytes
/// into the header's array, so both are a multiply of that distance (no
/// division by 64, which the compiler cannot fold away).
#[inline(always)]
pub(super) fn slab_and_table(page: *mut Page) -> (usize, *const AtomicU16) {
    let seg = page as usize & !(SEGMENT_SIZE - 1);
    let at = page as usize - seg - core::mem::offset_of!(Segment, pages);
    debug_assert!(at.is_multiple_of(64));
    let table = seg + at * (TABLE_BYTES / 64) - TABLE_BYTES;
    (seg + at * (PAGE_SIZE / 64), table as *const AtomicU16)
}

/// Makes the guard page after the tables of a fresh hardened segment.
pub(crate) fn fence_tables(seg: *mut Segment) -> bool {
    crate::os::protect_none((seg as usize + TABLES_END) as *mut u8, OS_PAGE)
}

/// Links all `cap` slots of a fresh slab into `table` in a random order
/// (a Fisher-Yates shuffle, drawn from `rng`) and returns the first. The
/// shuffle is built in the slab's first `2 * cap` bytes (zero, and ours),
/// which are zeroed again after.
///
/// # Safety
/// `table` and the slab at `start` belong to a slab of `cap` blocks of at
/// least 16 bytes that is being set up by its owner.
pub(super) unsafe fn link_all(
    table: *const AtomicU16,
    start: *mut u8,
    cap: usize,
    mut random: impl FnMut() -> u64,
) -> u16 {
    let order = start.cast::<u16>();
    // SAFETY: `2 * cap` bytes of the slab, and `cap` table entries.
    unsafe {
        for i in 0..cap {
            let j = (((random() >> 32) * (i as u64 + 1)) >> 32) as usize;
            *order.add(i) = *order.add(j);
            *order.add(j) = i as u16;
        }
        for k in 0..cap {
            let next = if k + 1 < cap { *order.add(k + 1) } else { NO_SLOT };
            (*table.add(*order.add(k) as usize)).store(next, Ordering::Relaxed);
        }
        let first = if cap == 0 { NO_SLOT } else { *order };
        ptr::write_bytes(start, 0, cap * 2);
        first
    }
}

/// Makes `slot` the first free slot of `page` (slab at `start`): its
/// number in `first_free`, and its block in `free`, so that allocation
/// hands the block out without waiting on the table or a multiply. With
/// `NO_SLOT`, `free` is left pointing past the slab: unused, since
/// allocation tests `first_free`.
///
/// # Safety
/// Owner only; `slot` is a free slot of the slab, or `NO_SLOT`.
#[inline(always)]
pub(super) unsafe fn set_first(page: *mut Page, start: usize, slot: u16) {
    // SAFETY: owner-only fields of a live page.
    unsafe {
        (*page).first_free = slot;
        (*page).free = (start + slot as usize * (*page).block_size as usize) as *mut _;
    }
}

/// Exact division by a class's block size, and the test that it is exact,
/// in one multiply and one rotate (Hacker's Delight, 10-16): with `size =
/// odd << twos` and `inverse` the inverse of `odd` modulo 2^32,
/// `(off * inverse).rotate_right(twos)` (in 32 bits) is `off / size` when
/// `size` divides `off`, and above `u32::MAX / size` (so above every
/// slab's capacity; checked in `mod.rs` tests) when it does not. A slot
/// check is then `slot < capacity`. Offsets are below 2^32: a slab is
/// smaller than its 4 MiB segment.
#[derive(Clone, Copy)]
pub(super) struct Divisor {
    pub(super) inverse: u32,
    pub(super) twos: u32,
}

impl Divisor {
    /// `off / size` if `size` divides `off`, else a value above any
    /// capacity. The divisor of a descriptor that heads no slab (class
    /// `u8::MAX`) maps everything to 0, which its capacity 0 refuses.
    #[inline(always)]
    pub(super) fn slot(self, off: usize) -> usize {
        (off as u32).wrapping_mul(self.inverse).rotate_right(self.twos) as usize
    }

    const fn of(size: u32) -> Divisor {
        let twos = size.trailing_zeros();
        let odd = size >> twos;
        // Newton's iteration: an odd number is its own inverse to 3 bits,
        // and each step doubles the bits that are right.
        let mut inverse = odd;
        let mut i = 0;
        while i < 4 {
            inverse = inverse.wrapping_mul(2u32.wrapping_sub(odd.wrapping_mul(inverse)));
            i += 1;
        }
        Divisor { inverse, twos }
    }
}

/// Per class (past the last: zero, for descriptors that head no slab).
pub(super) static DIVISORS: [Divisor; 256] = {
    let mut d = [Divisor { inverse: 0, twos: 0 }; 256];
    let mut c = 0;
    while c < crate::size_class::CLASSES {
        d[c] = Divisor::of(class_size(c) as u32);
        c += 1;
    }
    d
};

/// Where a small block lives: its slab's head descriptor, its slot, and
/// the slot's table entry.
pub(super) struct Slot {
    pub(super) page: *mut Page,
    entry: *const AtomicU16,
    slot: u16,
}

impl Slot {
    /// Locates `p` in `seg`, or None if `p` is not exactly the start of a
    /// slot of a slab.
    ///
    /// # Safety
    /// `seg` is a registered small segment (its header is mapped) and `p`
    /// lies in it.
    #[inline(always)]
    pub(super) unsafe fn find(seg: *mut Segment, p: *mut u8) -> Option<Slot> {
        let rel = p as usize - seg as usize;
        // SAFETY: the descriptors are in the mapped header; a head delta
        // never points before page 1. A descriptor that heads no slab has
        // class `u8::MAX` and capacity 0, so nothing in it passes the
        // check below.
        let (page, idx, class, cap) = unsafe {
            let at = rel >> PAGE_SHIFT;
            let idx = at - (*Segment::page_ptr(seg, at)).head_delta as usize;
            let page = Segment::page_ptr(seg, idx);
            (
                page,
                idx,
                (*page).class as usize,
                (*page).capacity as usize,
            )
        };
        let slot = DIVISORS[class].slot(rel - (idx << PAGE_SHIFT));
        if slot >= cap {
            return None;
        }
        Some(Slot {
            page,
            // SAFETY: `slot < capacity <= TABLE_SLOTS`: inside the table.
            entry: unsafe { table(seg, idx).add(slot) },
            slot: slot as u16,
        })
    }

    /// Slot `slot` of the slab headed by `page` (a slot the caller knows
    /// to be in it: the quarantine's).
    #[inline(always)]
    pub(super) fn at(page: *mut Page, slot: u16) -> Slot {
        let (_, table) = slab_and_table(page);
        Slot {
            page,
            // SAFETY: the caller's slot is below the slab's capacity, so
            // inside its table.
            entry: unsafe { table.add(slot as usize) },
            slot,
        }
    }

    /// A slot from its parts (see `known`).
    pub(super) fn from_parts(page: *mut Page, entry: *const AtomicU16, slot: usize) -> Slot {
        Slot {
            page,
            entry,
            slot: slot as u16,
        }
    }

    /// The slot's number in its slab.
    #[inline(always)]
    pub(super) fn index(&self) -> usize {
        self.slot as usize
    }

    /// The slot's table entry, as a pointer into the table.
    #[inline(always)]
    pub(super) fn entry_ptr(&self) -> *const AtomicU16 {
        self.entry
    }

    /// The slot's table entry.
    #[inline(always)]
    pub(super) fn entry(&self) -> &AtomicU16 {
        // SAFETY: inside the table of a live slab (see `find`).
        unsafe { &*self.entry }
    }

    /// The entry's state. Other threads may read it (a racy early check,
    /// or the size of a live block they free); only the owner writes.
    #[inline(always)]
    pub(super) fn state(&self) -> u16 {
        self.entry().load(Ordering::Relaxed)
    }

    /// True while the block is handed out.
    #[inline(always)]
    pub(super) fn is_live(&self) -> bool {
        self.state() & LIVE_BIT != 0
    }

    /// The slot's block size.
    #[inline(always)]
    pub(super) fn size(&self) -> usize {
        // SAFETY: the descriptor of a live slab.
        unsafe { (*self.page).block_size as usize }
    }

    /// Marks the slot handed out for a request of `requested` bytes.
    ///
    /// # Safety
    /// Owner only; `requested + MAX_SLACK >= size`, `requested <= size`.
    #[inline(always)]
    pub(super) unsafe fn set_live(&self, requested: usize) {
        debug_assert!(requested <= self.size() && self.size() - requested <= MAX_SLACK);
        self.entry()
            .store(LIVE_BIT | (self.size() - requested) as u16, Ordering::Relaxed);
    }

    /// Puts the slot back on its slab's free list, or aborts if it is
    /// not in the state `from` says.
    ///
    /// # Safety
    /// Owner only.
    #[inline(always)]
    pub(super) unsafe fn release(&self, p: *mut u8, from: From) {
        let ok = match from {
            From::Live => self.is_live(),
            From::Quarantine => self.state() == QUARANTINED,
        };
        if !ok {
            die(b"double free", p as usize);
        }
        // SAFETY: owner-only fields of a live page.
        unsafe {
            self.entry().store((*self.page).first_free, Ordering::Relaxed);
            (*self.page).first_free = self.slot;
            (*self.page).free = p.cast();
            (*self.page).used -= 1;
        }
    }
}

/// Which state a slot is released from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum From {
    /// Handed out (a block another thread freed, taken back).
    Live,
    /// Waiting in the quarantine.
    Quarantine,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisors_divide_exactly_and_refuse_the_rest() {
        for (c, &d) in DIVISORS[..crate::size_class::CLASSES].iter().enumerate() {
            let size = class_size(c);
            let step = if size > 4096 { size / 3 } else { 7 };
            let mut off = 0;
            // Past the largest slab: 17 pages of 64 KiB.
            while off < 17 * PAGE_SIZE + size {
                let slot = d.slot(off);
                if off % size == 0 {
                    assert_eq!(slot, off / size, "class {c} offset {off}");
                } else {
                    assert!(slot > u32::MAX as usize / size, "class {c} offset {off}: {slot}");
                }
                off += step;
            }
            for k in [0, 1, 2, 100, TABLE_SLOTS - 1] {
                assert_eq!(d.slot(k * size), k, "class {c} slot {k}");
            }
        }
        assert_eq!(DIVISORS[255].slot(12345), 0);
    }

    #[test]
    fn link_all_chains_every_slot_once() {
        let cap = 300;
        let table: Vec<AtomicU16> = (0..cap).map(|_| AtomicU16::new(LIVE_BIT)).collect();
        let mut slab = vec![0u128; cap];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        // SAFETY: a table of `cap` entries and a slab of `cap` 16-byte blocks.
        let first = unsafe {
            link_all(table.as_ptr(), slab.as_mut_ptr().cast(), cap, || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
        };
        let mut seen = vec![false; cap];
        let mut at = first;
        let mut order = Vec::new();
        while at != NO_SLOT {
            assert!(!seen[at as usize], "slot {at} linked twice");
            seen[at as usize] = true;
            order.push(at);
            at = table[at as usize].load(Ordering::Relaxed);
        }
        assert!(seen.iter().all(|&s| s), "every slot is linked");
        assert!(slab.iter().all(|&w| w == 0), "the scratch is zeroed again");
        let in_order = order.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(in_order < cap / 10, "shuffled: {in_order} of {cap} in order");
    }
}
