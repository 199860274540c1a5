//! A hardened heap's cache of its own slab pages, by page index: what a
//! free needs to validate a pointer into one of them without the registry,
//! the segment header or the page descriptors.
//!
//! An entry whose `start` equals a pointer's 64 KiB page is proof that the
//! pointer lies in the first page of a live slab owned by this heap: an
//! entry is written only by the owner, after a free fully validated as
//! local (`learn`), and cleared when the slab is retired (`forget`) or
//! the heap gives up its segments (the heap is reset). The slot itself is
//! still checked exactly (offset, capacity, `LIVE`) on every free, with
//! the capacity read from the descriptor, so what `forget` guards against
//! is an entry outliving its slab: a free through it would check against
//! another slab's layout, or read a descriptor that is unmapped, or
//! another heap's.
//! (`tests/hardened.rs`: a_released_segment_leaves_the_known_pages.)

use super::slots::{DIVISORS, Divisor, Slot, table};
use crate::page::Page;
use crate::segment::{PAGE_SHIFT, PAGE_SIZE, SEGMENT_SIZE, Segment};
use crate::sync::AtomicU16;

const ENTRIES: usize = 64;

#[derive(Clone, Copy)]
#[repr(C)]
struct Known {
    /// The slab's first byte (64 KiB-aligned), or `NONE`.
    start: usize,
    page: *mut Page,
    table: *const AtomicU16,
    divisor: Divisor,
}

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
            divisor: Divisor {
                inverse: 0,
                twos: 0,
            },
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
        let slot = k.divisor.slot(p as usize - start);
        // SAFETY: a known page is a live slab of ours (see the module doc):
        // its descriptor is mapped, and `slot < capacity` (which also
        // means `p` is a slot's start) keeps the entry inside its table.
        unsafe {
            if slot >= (*k.page).capacity as usize {
                return None;
            }
            let s = Slot::from_parts(k.page, k.table.add(slot), slot);
            s.is_live().then_some(s)
        }
    }

    /// Remembers `page`, a slab of ours that starts at `start`.
    ///
    /// # Safety
    /// `page` is a live hardened slab of the caller's heap (its head
    /// descriptor), whose first byte is `start`.
    pub(super) unsafe fn learn(&mut self, page: *mut Page, start: usize) {
        let seg = (page as usize & !(SEGMENT_SIZE - 1)) as *mut Segment;
        // SAFETY: forwarded: a live slab's descriptor.
        let class = unsafe { (*page).class } as usize;
        self.0[Self::index(start)] = Known {
            start,
            page,
            table: table(seg, Segment::page_index(seg, page)),
            divisor: DIVISORS[class],
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
