//! Size classes: 16-byte steps up to 128 bytes, then four classes per
//! doubling up to `SMALL_MAX` (128 KiB), so no block wastes more than 25%
//! of its size. `class_of` is O(1) with no loop and no division.

use static_assertions::const_assert;

/// Every block is at least this aligned.
pub(crate) const MIN_ALIGN: usize = 16;
/// Largest size served from slabs; above it a request gets its own mapping.
pub(crate) const SMALL_MAX: usize = 128 << 10;
/// Number of size classes.
pub(crate) const CLASSES: usize = 8 + 4 * 10;

/// Size in bytes of the blocks of class `c`.
pub(crate) const fn class_size(c: usize) -> usize {
    if c < 8 {
        (c + 1) * 16
    } else {
        let b = 7 + (c - 8) / 4; // the doubling: sizes in (2^b, 2^(b+1)]
        let k = (c - 8) % 4 + 1;
        (4 + k) << (b - 2)
    }
}

/// The smallest class whose blocks hold `size` bytes (1..=SMALL_MAX).
#[inline]
pub(crate) const fn class_of(size: usize) -> usize {
    debug_assert!(size <= SMALL_MAX);
    if size <= 128 {
        // Size 0 shares class 0 with 1..=16.
        (size + 15) / 16 - (size != 0) as usize
    } else {
        let w = size - 1;
        let b = (usize::BITS - 1 - w.leading_zeros()) as usize; // floor(log2 w) >= 7
        8 + (b - 7) * 4 + ((w >> (b - 2)) - 4)
    }
}

/// Slab pages (64 KiB each) given to one slab of class `c`: enough for at
/// least eight blocks, a power of two so slabs pack in a segment like
/// buddies.
pub(crate) const fn class_span(c: usize) -> usize {
    let s = class_size(c);
    let pages = (s * 8).div_ceil(crate::segment::PAGE_SIZE);
    pages.next_power_of_two()
}

const_assert!(class_size(CLASSES - 1) == SMALL_MAX);
const_assert!(class_of(SMALL_MAX) == CLASSES - 1);
const_assert!(class_span(CLASSES - 1) == 16);
const_assert!(SMALL_MAX % MIN_ALIGN == 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_size_with_bounded_waste() {
        for size in 1..=SMALL_MAX {
            let c = class_of(size);
            let s = class_size(c);
            assert!(s >= size, "size {size} class {c} holds {s}");
            assert!(c == 0 || class_size(c - 1) < size, "size {size} not in smallest class");
            assert!(s - size <= s / 4 || s <= 128, "size {size} wastes too much in {s}");
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
            assert!(span.is_power_of_two() && span <= 16);
            assert!(span * crate::segment::PAGE_SIZE / class_size(c) >= 8);
        }
    }

    #[test]
    fn powers_of_two_are_classes() {
        // Over-aligned requests round their size up to a multiple of the
        // alignment; the class they land in must keep that alignment.
        let mut p = 16;
        while p <= SMALL_MAX {
            assert_eq!(class_size(class_of(p)), p);
            p *= 2;
        }
        for align in [32usize, 64, 128, 256, 1024, 4096, 65536] {
            let mut size = align;
            while size <= SMALL_MAX {
                assert_eq!(class_size(class_of(size)) % align, 0, "size {size} align {align}");
                size += align;
            }
        }
    }
}
