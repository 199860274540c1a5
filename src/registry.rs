//! Which 4 MiB chunks of the address space start a segment or a large
//! mapping of ours: one bit per chunk of the 47-bit user address space
//! (4 MiB of bitmap, mapped lazily with `MAP_NORESERVE`, so only the words
//! we touch cost memory). A pointer from outside (a foreign heap, the
//! stack, a wild value) is recognised before any header is read through it.

use crate::os;
use crate::segment::SEGMENT_SHIFT;
use crate::sync::{AtomicPtr, AtomicU64, Ordering};
use core::ptr;

const ADDRESS_BITS: usize = 47;
const CHUNKS: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);
const WORDS: usize = CHUNKS / 64;

static BITMAP: AtomicPtr<AtomicU64> = AtomicPtr::new(ptr::null_mut());

fn bitmap() -> *mut AtomicU64 {
    let b = BITMAP.load(Ordering::Acquire);
    if !b.is_null() {
        return b;
    }
    let Some(fresh) = os::map(WORDS * 8) else {
        return ptr::null_mut();
    };
    let fresh = fresh.as_ptr().cast::<AtomicU64>();
    match BITMAP.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fresh,
        Err(winner) => {
            os::unmap(fresh.cast(), WORDS * 8);
            winner
        }
    }
}

fn slot(chunk: usize) -> Option<(usize, u64)> {
    let i = chunk >> SEGMENT_SHIFT;
    (i < CHUNKS).then_some((i / 64, 1u64 << (i % 64)))
}

/// Records that `chunk` (segment-aligned) heads one of our mappings.
/// False if the bitmap cannot be mapped; the caller then gives the
/// mapping back, so every live segment is registered.
pub(crate) fn insert(chunk: usize) -> bool {
    let map = bitmap();
    match slot(chunk) {
        Some((w, bit)) if !map.is_null() => {
            // SAFETY: `w < WORDS`, inside the bitmap mapping.
            unsafe { (*map.add(w)).fetch_or(bit, Ordering::Release) };
            true
        }
        _ => false,
    }
}

pub(crate) fn remove(chunk: usize) {
    let map = BITMAP.load(Ordering::Acquire);
    if let Some((w, bit)) = slot(chunk)
        && !map.is_null()
    {
        // SAFETY: `w < WORDS`, inside the bitmap mapping.
        unsafe { (*map.add(w)).fetch_and(!bit, Ordering::Release) };
    }
}

/// True if `chunk` heads one of our live mappings.
#[inline]
pub(crate) fn contains(chunk: usize) -> bool {
    let map = BITMAP.load(Ordering::Acquire);
    match slot(chunk) {
        // SAFETY: `w < WORDS`, inside the bitmap mapping.
        Some((w, bit)) if !map.is_null() => unsafe {
            (*map.add(w)).load(Ordering::Acquire) & bit != 0
        },
        _ => false,
    }
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
