//! Which 4 MiB chunks of the address space start a segment or a large
//! mapping of ours: one bit per chunk of the 47-bit user address space.
//! The 4 MiB bitmap is a zero-initialised static, so it lives in `.bss`:
//! the loader maps it without backing, and only the words we touch cost
//! memory. A pointer from outside (a foreign heap, the stack, a wild
//! value) is recognised before any header is read through it; checking
//! one is a shift, a load and a bit test.

use crate::segment::SEGMENT_SHIFT;
use crate::sync::{AtomicU64, Ordering};

const ADDRESS_BITS: usize = 47;
const CHUNKS: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);
const WORDS: usize = CHUNKS / 64;

static BITMAP: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

fn slot(chunk: usize) -> Option<(&'static AtomicU64, u64)> {
    let i = chunk >> SEGMENT_SHIFT;
    (i < CHUNKS).then(|| (&BITMAP[i / 64], 1u64 << (i % 64)))
}

/// Records that `chunk` (segment-aligned) heads one of our mappings.
/// False for an address past the 47-bit space; the caller then gives the
/// mapping back, so every live segment is registered.
pub(crate) fn insert(chunk: usize) -> bool {
    match slot(chunk) {
        Some((word, bit)) => {
            word.fetch_or(bit, Ordering::Release);
            true
        }
        None => false,
    }
}

pub(crate) fn remove(chunk: usize) {
    if let Some((word, bit)) = slot(chunk) {
        word.fetch_and(!bit, Ordering::Release);
    }
}

/// True if `chunk` heads one of our live mappings.
#[inline(always)]
pub(crate) fn contains(chunk: usize) -> bool {
    slot(chunk).is_some_and(|(word, bit)| word.load(Ordering::Acquire) & bit != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_come_and_go() {
        let chunk = 0x1234_5640_0000usize & !((1 << SEGMENT_SHIFT) - 1);
        assert!(!contains(chunk));
        assert!(insert(chunk));
        assert!(contains(chunk));
        assert!(!contains(chunk + (1 << SEGMENT_SHIFT)));
        remove(chunk);
        assert!(!contains(chunk));
        assert!(!contains(usize::MAX & !((1 << SEGMENT_SHIFT) - 1)));
    }
}
