//! Where a hardened slab keeps its state, out of the slab: per page
//! index, a slot bitmap (a bit per block, set while the block is handed
//! out) and a cache of free slots to hand out next, both in the segment
//! header page; and how a pointer maps to its slot.

use super::die;
use crate::page::Page;
use crate::segment::{PAGE_SHIFT, PAGE_SIZE, SEGMENT_SIZE, Segment};
use crate::size_class::{CLASSES, class_size};
use crate::sync::{AtomicU64, Ordering};
use core::ptr;
use static_assertions::const_assert;

/// Slot bitmaps live in the segment header page, after the descriptors:
/// 64 words (4096 slots, the most a slab can hold) per page index.
const BITMAP_OFFSET: usize = 32 << 10;
pub(super) const BITMAP_WORDS: usize = 64;
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

/// Page `idx`'s slot bitmap. Only the owner writes it; atomics (relaxed,
/// plain moves on x86) because a remote free reads it to catch a double
/// free early.
pub(super) fn bitmap(seg: *mut Segment, idx: usize) -> *const AtomicU64 {
    (seg as usize + BITMAP_OFFSET + idx * BITMAP_WORDS * 8) as *const AtomicU64
}

/// Sets (`used`) or clears `bit` in `word`: the owner's write.
pub(super) fn set_bit(word: &AtomicU64, bit: u64, used: bool) {
    let w = word.load(Ordering::Relaxed);
    word.store(if used { w | bit } else { w & !bit }, Ordering::Relaxed);
}

/// Free slots waiting to be handed out, per slab page, in the segment
/// header after the descriptors: a random pick from up to 63 free slots
/// gathered at once from the bitmap, so most allocations skip the bitmap
/// scan. A cached slot keeps its bit clear: a free of it is still seen as
/// the double free it is. Refilled only when empty, so a slot freed
/// meanwhile (bit cleared) cannot be cached twice.
#[repr(C)]
pub(super) struct SlotCache {
    pub(super) len: u16,
    pub(super) slots: [u16; 63],
}

const CACHE_OFFSET: usize = 16 << 10;
const_assert!(core::mem::size_of::<Segment>() <= CACHE_OFFSET);
const_assert!(CACHE_OFFSET + 64 * core::mem::size_of::<SlotCache>() <= BITMAP_OFFSET);

pub(super) fn cache_of(seg: *mut Segment, idx: usize) -> *mut SlotCache {
    (seg as usize + CACHE_OFFSET + idx * core::mem::size_of::<SlotCache>()) as *mut SlotCache
}

pub(super) fn segment_of_page(page: *mut Page) -> *mut Segment {
    (page as usize & !(SEGMENT_SIZE - 1)) as *mut Segment
}

/// Where a small block lives: its slab's head descriptor and index, and
/// its slot.
pub(super) struct Slot {
    pub(super) page: *mut Page,
    pub(super) idx: usize,
    pub(super) slot: usize,
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
    pub(super) fn of(seg: *mut Segment, p: *mut u8) -> Slot {
        // SAFETY: the caller checked `seg`; `p` masks to it.
        match unsafe { Slot::find(seg, p) } {
            Some(s) => s,
            None => die(b"invalid free", p as usize),
        }
    }

    /// The bitmap word holding this slot's bit, and the bit.
    pub(super) fn bit(&self) -> (&AtomicU64, u64) {
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
    pub(super) unsafe fn release(&self, p: *mut u8) {
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
pub(super) unsafe fn zero_block(p: *mut u8, size: usize) {
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
}
