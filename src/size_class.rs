//! Size classes. Slab classes: 16-byte steps up to 128 bytes, then four
//! classes per doubling up to 128 KiB, so no block wastes more than 20% of
//! its size above 128 bytes. Page-run classes: 192 KiB to 1 MiB in 64 KiB
//! steps, one block per run of slab pages; the unused tail of such a block
//! is never touched, so it costs address space, not memory. `class_of` is
//! O(1) with no loop and no division by a variable.

use crate::segment::PAGE_SIZE;
use static_assertions::const_assert;

/// Every block is at least this aligned.
pub(crate) const MIN_ALIGN: usize = 16;
/// Largest size served by slab classes.
pub(crate) const SLAB_MAX: usize = 128 << 10;
/// Number of slab classes.
const SLAB_CLASSES: usize = 8 + 4 * 10;
/// Largest size served from segments; above it a request gets its own
/// mapping.
pub(crate) const SMALL_MAX: usize = 1 << 20;
/// Page-run classes start at this many slab pages.
const RUN_MIN_PAGES: usize = SLAB_MAX / PAGE_SIZE + 1;
/// Number of size classes.
pub(crate) const CLASSES: usize = SLAB_CLASSES + SMALL_MAX / PAGE_SIZE - RUN_MIN_PAGES + 1;

/// Size in bytes of the blocks of class `c`.
pub(crate) const fn class_size(c: usize) -> usize {
    if c < 8 {
        (c + 1) * 16
    } else if c < SLAB_CLASSES {
        let b = 7 + (c - 8) / 4; // the doubling: sizes in (2^b, 2^(b+1)]
        let k = (c - 8) % 4 + 1;
        (4 + k) << (b - 2)
    } else {
        (c - SLAB_CLASSES + RUN_MIN_PAGES) * PAGE_SIZE
    }
}

/// The class of every size up to 1 KiB, by 16-byte step: one load and no
/// branch on the size for the requests that are most frequent and most
/// varied (the formula below branches on the doubling, which random sizes
/// mispredict).
static SMALL_CLASS: [u8; 65] = {
    let mut t = [0u8; 65];
    let mut i = 0;
    while i < 65 {
        t[i] = class_by_formula(i * 16) as u8;
        i += 1;
    }
    t
};

/// The smallest class whose blocks hold `size` bytes (0..=SMALL_MAX).
#[inline]
pub(crate) fn class_of(size: usize) -> usize {
    if size <= 1024 {
        return SMALL_CLASS[(size + 15) >> 4] as usize;
    }
    class_by_formula(size)
}

const fn class_by_formula(size: usize) -> usize {
    debug_assert!(size <= SMALL_MAX);
    if size <= 128 {
        // Size 0 shares class 0 with 1..=16.
        size.div_ceil(16) - (size != 0) as usize
    } else if size <= SLAB_MAX {
        let w = size - 1;
        let b = (usize::BITS - 1 - w.leading_zeros()) as usize; // floor(log2 w) >= 7
        8 + (b - 7) * 4 + ((w >> (b - 2)) - 4)
    } else {
        SLAB_CLASSES + size.div_ceil(PAGE_SIZE) - RUN_MIN_PAGES
    }
}

/// Slab pages (64 KiB each) in one slab of class `c`. Slab classes get
/// enough for at least eight blocks, a power of two; page-run classes get
/// exactly one block.
pub(crate) const fn class_span(c: usize) -> usize {
    let s = class_size(c);
    if c >= SLAB_CLASSES {
        return s / PAGE_SIZE;
    }
    (s * 8).div_ceil(PAGE_SIZE).next_power_of_two()
}

const_assert!(class_size(SLAB_CLASSES - 1) == SLAB_MAX);
const_assert!(class_by_formula(SLAB_MAX) == SLAB_CLASSES - 1);
const_assert!(class_size(CLASSES - 1) == SMALL_MAX);
const_assert!(class_by_formula(SMALL_MAX) == CLASSES - 1);
const_assert!(class_span(SLAB_CLASSES - 1) == 16);
const_assert!(class_span(CLASSES - 1) == 16);
const_assert!(CLASSES < u8::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_size_with_bounded_waste() {
        for size in 1..=SMALL_MAX {
            let c = class_of(size);
            let s = class_size(c);
            assert!(s >= size, "size {size} class {c} holds {s}");
            assert!(
                c == 0 || class_size(c - 1) < size,
                "size {size} not in smallest class"
            );
            if size > 128 && size <= SLAB_MAX {
                assert!((s - size) * 5 <= s, "size {size} wastes too much in {s}");
            }
            if size > SLAB_MAX {
                assert!(s - size < PAGE_SIZE, "page run for {size} is {s}");
            }
        }
    }

    #[test]
    fn table_and_formula_agree() {
        for size in 0..=1024 {
            assert_eq!(class_of(size), class_by_formula(size), "size {size}");
        }
    }

    #[test]
    fn class_sizes_are_increasing_and_aligned() {
        for c in 0..CLASSES {
            assert_eq!(class_size(c) % MIN_ALIGN, 0);
            if c > 0 {
                assert!(class_size(c) > class_size(c - 1));
            }
            assert_eq!(class_of(class_size(c)), c);
            let span = class_span(c);
            assert!((1..=16).contains(&span));
            let blocks = span * PAGE_SIZE / class_size(c);
            assert!(blocks >= 8 || (c >= SLAB_CLASSES && blocks == 1));
        }
    }

    #[test]
    fn over_aligned_sizes_keep_their_alignment() {
        // Over-aligned requests round their size up to a multiple of the
        // alignment; the class they land in must keep that alignment.
        for align in [32usize, 64, 128, 256, 1024, 4096, 65536] {
            let mut size = align;
            while size <= SMALL_MAX {
                assert_eq!(
                    class_size(class_of(size)) % align,
                    0,
                    "size {size} align {align}"
                );
                size += align;
            }
        }
    }
}
