//! A hardened heap's cache of its own slab pages, by page index: what a
//! free needs to validate a pointer into one of them without the registry,
//! the segment header or the page descriptors.
//!
//! An entry whose `start` equals a pointer's 64 KiB page is proof that the
//! pointer lies in the first page of a live slab owned by this heap: an
//! entry is written only by the owner, after a free fully validated as
//! local (`learn`), and cleared when the slab is retired (`forget`) or
//! the heap gives up its segments (the heap is reset). The slot itself is
//! still checked exactly (offset, capacity, `LIVE`) on every free, against
//! the layout the entry recorded, so what `forget` guards against is an
//! entry outliving its slab: a free through it would check against a
//! layout that is gone, and write a table and descriptor that are unmapped
//! or another heap's.
//! (`tests/hardened.rs`: a_released_segment_leaves_the_known_pages.)

use super::slots::{DIVISORS, Divisor, Slot, table};
use crate::page::Page;
use crate::segment::{PAGE_SHIFT, PAGE_SIZE, SEGMENT_SIZE, Segment};
use crate::sync::AtomicU16;

const ENTRIES: usize = 64;

/// 32 bytes, so an entry's offset is a shift of the page index.
#[derive(Clone, Copy)]
#[repr(C)]
struct Known {
    /// The slab's first byte (64 KiB-aligned), or `NONE`.
    start: usize,
    page: *mut Page,
    table: *const AtomicU16,
    /// The class's `Divisor`, and the slab's capacity (fixed for its life),
    /// so the slot check needs nothing from the descriptor.
    inverse: u32,
    twos: u8,
    capacity: u16,
}
static_assertions::const_assert!(core::mem::size_of::<Known>() == 32);

/// Never a page start (those are 64 KiB-aligned).
const NONE: usize = usize::MAX;

#[repr(C)]
pub(crate) struct KnownPages([Known; ENTRIES]);

impl KnownPages {
    pub(crate) const EMPTY: KnownPages = KnownPages(
        [Known {
            start: NONE,
            page: core::ptr::null_mut(),
            table: core::ptr::null(),
            inverse: 0,
            twos: 0,
            capacity: 0,
        }; ENTRIES],
    );

    fn index(start: usize) -> usize {
        (start >> PAGE_SHIFT) % ENTRIES
    }

    /// The slot of `p` if `p` lies in a known page and is exactly the start
    /// of a block that is handed out; None sends the caller to the full
    /// check (which also reports what is wrong). Reads only: a thread
    /// without a heap reads a shared sentinel's (empty) cache.
    #[inline(always)]
    pub(super) fn slot(&self, p: *mut u8) -> Option<Slot> {
        let start = p as usize & !(PAGE_SIZE - 1);
        let k = self.0[Self::index(start)];
        if k.start != start {
            return None;
        }
        let divisor = Divisor {
            inverse: k.inverse,
            twos: k.twos as u32,
        };
        let slot = divisor.slot(p as usize - start);
        if slot >= k.capacity as usize {
            return None;
        }
        // SAFETY: a known page is a live slab of ours (see the module doc),
        // and `slot < capacity` (which also means `p` is a slot's start)
        // keeps the entry inside its table.
        let s = Slot::from_parts(k.page, unsafe { k.table.add(slot) }, slot);
        s.is_live().then_some(s)
    }

    /// Remembers `page`, a slab of ours that starts at `start`.
    ///
    /// # Safety
    /// `page` is a live hardened slab of the caller's heap (its head
    /// descriptor), whose first byte is `start`.
    pub(super) unsafe fn learn(&mut self, page: *mut Page, start: usize) {
        let seg = (page as usize & !(SEGMENT_SIZE - 1)) as *mut Segment;
        // SAFETY: forwarded: a live slab's descriptor.
        let (class, capacity) = unsafe { ((*page).class as usize, (*page).capacity) };
        let divisor = DIVISORS[class];
        self.0[Self::index(start)] = Known {
            start,
            page,
            table: table(seg, Segment::page_index(seg, page)),
            inverse: divisor.inverse,
            twos: divisor.twos as u8,
            capacity: capacity as u16,
        };
    }

    /// Forgets the slab that starts at `start` (it is being retired).
    pub(super) fn forget(&mut self, start: usize) {
        let k = &mut self.0[Self::index(start)];
        if k.start == start {
            k.start = NONE;
        }
    }
}
