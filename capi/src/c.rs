//! The C semantics of the malloc family, one layer below the exports.
//!
//! Each function here is what one C entry point means, written as a Rust
//! function that returns the block or the `errno` value to set, so it can
//! be unit-tested without going through the C ABI (the exports in `lib.rs`
//! are one-line wrappers). The semantics follow glibc on x86_64: 16-byte
//! default alignment, `malloc(0)` returns a unique block,
//! `realloc(p, 0)` frees `p` and returns null, `memalign` rounds a
//! non-power-of-two alignment up, `aligned_alloc` rejects one (glibc 2.38).
//!
//! Nothing here allocates through Rust's global allocator, formats, or
//! panics.

use crate::foreign;
use core::ffi::c_int;
use core::ptr::{self, NonNull};
use mapalloc::raw;

/// The alignment every `malloc` block has (glibc's `MALLOC_ALIGNMENT` on
/// x86_64: `2 * sizeof(size_t)`).
pub const MALLOC_ALIGN: usize = 16;

/// The OS page size on Linux x86_64 (`valloc`, `pvalloc`).
pub const OS_PAGE: usize = 4096;

/// A block, or the `errno` value that explains why there is none.
pub type Alloc = Result<NonNull<u8>, c_int>;

#[inline(always)]
fn block(p: *mut u8) -> Alloc {
    NonNull::new(p).ok_or(libc::ENOMEM)
}

/// `malloc(size)`: 16-byte aligned; `malloc(0)` is a unique block.
#[inline(always)]
pub fn malloc(size: usize) -> Alloc {
    block(raw::alloc(size, MALLOC_ALIGN))
}

/// `calloc(n, size)`: zeroed; `ENOMEM` if `n * size` overflows.
#[inline]
pub fn calloc(n: usize, size: usize) -> Alloc {
    let total = n.checked_mul(size).ok_or(libc::ENOMEM)?;
    block(raw::alloc_zeroed(total, MALLOC_ALIGN))
}

/// `free(p)`: null is a no-op; a pointer mapalloc did not hand out
/// (`!raw::owns(p)`, for instance a block glibc's malloc returned before
/// the library took over) is left alone in the default mode, and in
/// hardened mode aborts (`mapalloc: invalid free of 0x…`).
///
/// # Safety
/// `p` is null, a live block from this library, or a pointer of another
/// origin (which is ignored, or reported).
#[inline(always)]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: `raw::free` takes any pointer (see there).
    unsafe { raw::free(p) }
}

/// True if `realloc` and `malloc_usable_size` hand `p` to mapalloc: it is
/// ours, or hardened mode checks every pointer (and reports the foreign
/// ones).
#[inline(always)]
fn takes(p: *mut u8) -> bool {
    raw::owns(p) || (!p.is_null() && raw::validates_pointers())
}

/// `free_sized(p, size)` and `free_aligned_sized(p, align, size)` (C23):
/// `free(p)`, where hardened mode also checks the size (`None`: not given)
/// and alignment (1: not given) against the block and aborts on a
/// mismatch.
///
/// # Safety
/// As `free`.
#[inline(always)]
pub unsafe fn free_sized(p: *mut u8, size: Option<usize>, align: usize) {
    // SAFETY: as in `free`.
    unsafe { raw::free_sized(p, size, align) }
}

/// C++'s `operator delete` in all its forms: as `free_sized`, with the
/// size that of the object (see `raw::free_cxx`).
///
/// # Safety
/// As `free`.
#[inline(always)]
pub unsafe fn delete(p: *mut u8, size: Option<usize>, align: usize) {
    // SAFETY: as in `free`.
    unsafe { raw::free_cxx(p, size, align) }
}

/// `realloc(p, size)`. `Ok(null)` only for `realloc(p, 0)` with `p`
/// non-null: glibc frees `p` and returns null without setting `errno`.
/// On `Err` the block is untouched.
///
/// # Safety
/// `p` is null, a live block from this library, or a live block of
/// another allocator (see `foreign::realloc`).
#[inline]
pub unsafe fn realloc(p: *mut u8, size: usize) -> Result<*mut u8, c_int> {
    if p.is_null() {
        return malloc(size).map(NonNull::as_ptr);
    }
    if size == 0 {
        // SAFETY: the caller's contract.
        unsafe { free(p) };
        return Ok(ptr::null_mut());
    }
    if takes(p) {
        // SAFETY: a live block of ours (or validated). C does not ask
        // realloc to keep an over-alignment, so a new block needs only the
        // default one.
        return block(unsafe { raw::realloc(p, MALLOC_ALIGN, size) }).map(NonNull::as_ptr);
    }
    // SAFETY: the caller's contract for a pointer that is not ours.
    unsafe { foreign::realloc(p, size) }.map(NonNull::as_ptr)
}

/// `reallocarray(p, n, size)`: `realloc(p, n * size)`, or `ENOMEM` (the
/// block untouched) if the product overflows.
///
/// # Safety
/// As `realloc`.
#[inline]
pub unsafe fn reallocarray(p: *mut u8, n: usize, size: usize) -> Result<*mut u8, c_int> {
    let total = n.checked_mul(size).ok_or(libc::ENOMEM)?;
    // SAFETY: forwarded.
    unsafe { realloc(p, total) }
}

/// A block of `size` bytes aligned to `align` (a power of two).
fn aligned(size: usize, align: usize) -> Alloc {
    debug_assert!(align.is_power_of_two());
    // A zero-size request still gets a real block: with a size of one it
    // lands in a class whose blocks have the alignment.
    block(raw::alloc(size.max(1), align.max(MALLOC_ALIGN)))
}

/// `memalign(align, size)` as glibc: an alignment up to 16 is plain
/// `malloc`, any other is rounded up to a power of two; `EINVAL` when no
/// power of two is that large.
pub fn memalign(align: usize, size: usize) -> Alloc {
    if align <= MALLOC_ALIGN {
        return malloc(size);
    }
    let align = align.checked_next_power_of_two().ok_or(libc::EINVAL)?;
    aligned(size, align)
}

/// `aligned_alloc(align, size)`: like `memalign`, but `EINVAL` unless
/// `align` is a power of two (glibc 2.38 and C17; the size need not be a
/// multiple of it).
pub fn aligned_alloc(align: usize, size: usize) -> Alloc {
    if !align.is_power_of_two() {
        return Err(libc::EINVAL);
    }
    aligned(size, align)
}

/// `posix_memalign`: `EINVAL` unless `align` is a power of two and a
/// multiple of `sizeof(void *)`. The export returns the code and leaves
/// `errno` alone, as POSIX says.
pub fn posix_memalign(align: usize, size: usize) -> Alloc {
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut u8>()) {
        return Err(libc::EINVAL);
    }
    aligned(size, align)
}

/// `valloc(size)`: page-aligned.
pub fn valloc(size: usize) -> Alloc {
    aligned(size, OS_PAGE)
}

/// `pvalloc(size)`: page-aligned, the size rounded up to whole pages (at
/// least one); `ENOMEM` if rounding overflows.
pub fn pvalloc(size: usize) -> Alloc {
    let rounded = size.checked_next_multiple_of(OS_PAGE).ok_or(libc::ENOMEM)?;
    aligned(rounded.max(OS_PAGE), OS_PAGE)
}

/// `malloc_usable_size(p)`: 0 for null; glibc's answer for a block of
/// glibc's (0 if its function could not be found).
///
/// # Safety
/// `p` is null, a live block of ours, or a live block of another
/// allocator.
pub unsafe fn usable_size(p: *mut u8) -> usize {
    if p.is_null() {
        0
    } else if takes(p) {
        // SAFETY: a live block of ours (or validated).
        unsafe { raw::usable_size(p) }
    } else {
        // SAFETY: the caller's contract.
        unsafe { foreign::usable_size(p) }.unwrap_or(0)
    }
}

/// `malloc_trim(pad)`: returns free memory to the OS (`mapalloc::collect`
/// for the calling thread, the shared caches); 1 if the mapped total went
/// down, as glibc returns 1 when it released memory. `pad` is ignored.
pub fn trim() -> c_int {
    let before = mapalloc::stats().mapped_bytes;
    mapalloc::collect();
    c_int::from(mapalloc::stats().mapped_bytes < before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(r: Alloc) -> usize {
        r.expect("allocation").as_ptr() as usize
    }

    fn release(p: *mut u8) {
        // SAFETY: every pointer passed here came from this module.
        unsafe { free(p) }
    }

    #[test]
    fn malloc_zero_is_unique_and_freeable() {
        let a = malloc(0).unwrap();
        let b = malloc(0).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_ptr() as usize % MALLOC_ALIGN, 0);
        release(a.as_ptr());
        release(b.as_ptr());
    }

    #[test]
    fn malloc_is_16_aligned_and_usable() {
        for size in [1, 7, 16, 17, 100, 1000, 4096, 70_000, 200_000, 3 << 20] {
            let p = malloc(size).unwrap().as_ptr();
            assert_eq!(p as usize % 16, 0, "size {size}");
            // SAFETY: a live block of at least `size` bytes.
            unsafe {
                assert!(usable_size(p) >= size);
                p.write_bytes(0xa5, size);
            }
            release(p);
        }
    }

    #[test]
    fn impossible_sizes_are_enomem() {
        assert_eq!(malloc(usize::MAX), Err(libc::ENOMEM));
        assert_eq!(malloc(isize::MAX as usize), Err(libc::ENOMEM));
        assert_eq!(calloc(usize::MAX, 2), Err(libc::ENOMEM));
        assert_eq!(calloc(1 << 33, 1 << 33), Err(libc::ENOMEM));
        assert_eq!(memalign(64, usize::MAX - 10), Err(libc::ENOMEM));
        assert_eq!(pvalloc(usize::MAX - 10), Err(libc::ENOMEM));
        assert_eq!(valloc(usize::MAX), Err(libc::ENOMEM));
    }

    #[test]
    fn calloc_is_zero_even_on_reuse() {
        for _ in 0..4 {
            let p = malloc(1000).unwrap().as_ptr();
            // SAFETY: 1000 bytes of ours.
            unsafe { p.write_bytes(0xff, 1000) };
            release(p);
            let q = calloc(10, 100).unwrap().as_ptr();
            // SAFETY: 1000 bytes of ours.
            let s = unsafe { core::slice::from_raw_parts(q, 1000) };
            assert!(s.iter().all(|&b| b == 0));
            release(q);
        }
        let z = calloc(0, 5).unwrap();
        release(z.as_ptr());
    }

    #[test]
    fn realloc_semantics() {
        // SAFETY: every pointer is null or a live block of ours.
        unsafe {
            let p = realloc(ptr::null_mut(), 10).unwrap();
            assert!(!p.is_null());
            for i in 0..10 {
                *p.add(i) = i as u8;
            }
            let q = realloc(p, 100_000).unwrap();
            for i in 0..10 {
                assert_eq!(*q.add(i), i as u8);
            }
            let r = realloc(q, 5).unwrap();
            for i in 0..5 {
                assert_eq!(*r.add(i), i as u8);
            }
            // Failure leaves the block alone.
            assert_eq!(realloc(r, usize::MAX), Err(libc::ENOMEM));
            assert_eq!(*r.add(4), 4);
            assert_eq!(reallocarray(r, usize::MAX, 2), Err(libc::ENOMEM));
            assert_eq!(*r.add(4), 4);
            let s = reallocarray(r, 3, 7).unwrap();
            assert_eq!(*s.add(4), 4);
            // realloc(p, 0) frees and returns null.
            assert_eq!(realloc(s, 0), Ok(ptr::null_mut()));
            // realloc(NULL, 0) is malloc(0).
            let t = realloc(ptr::null_mut(), 0).unwrap();
            assert!(!t.is_null());
            release(t);
        }
    }

    #[test]
    fn memalign_rounds_alignment_up() {
        for (asked, got) in [
            (0, 16),
            (1, 16),
            (3, 16),
            (24, 32),
            (100, 128),
            (4096, 4096),
            (5000, 8192),
        ] {
            for size in [0, 1, 100, 5000, 300_000] {
                let p = addr(memalign(asked, size));
                assert_eq!(p % got, 0, "memalign({asked}, {size})");
                release(p as *mut u8);
            }
        }
        assert_eq!(memalign(usize::MAX / 2 + 2, 1), Err(libc::EINVAL));
        assert_eq!(memalign(usize::MAX, 1), Err(libc::EINVAL));
    }

    #[test]
    fn aligned_alloc_and_posix_memalign_check_alignment() {
        assert_eq!(aligned_alloc(0, 8), Err(libc::EINVAL));
        assert_eq!(aligned_alloc(24, 48), Err(libc::EINVAL));
        assert_eq!(posix_memalign(0, 8), Err(libc::EINVAL));
        assert_eq!(posix_memalign(4, 8), Err(libc::EINVAL));
        assert_eq!(posix_memalign(24, 8), Err(libc::EINVAL));
        assert_eq!(posix_memalign(1 << 62, 8), Err(libc::ENOMEM));
        let mut align = 1;
        while align <= 16 << 20 {
            for size in [0, 1, align, 3 * align + 5] {
                let p = addr(aligned_alloc(align, size));
                assert_eq!(p % align.max(16), 0, "aligned_alloc({align}, {size})");
                release(p as *mut u8);
                if align >= 8 {
                    let p = addr(posix_memalign(align, size));
                    assert_eq!(p % align.max(16), 0, "posix_memalign({align}, {size})");
                    release(p as *mut u8);
                }
            }
            align *= 4;
        }
    }

    #[test]
    fn page_aligned_variants() {
        for size in [0, 1, 4095, 4096, 4097, 1 << 20] {
            let p = valloc(size).unwrap().as_ptr();
            assert_eq!(p as usize % OS_PAGE, 0);
            release(p);
            let p = pvalloc(size).unwrap().as_ptr();
            assert_eq!(p as usize % OS_PAGE, 0);
            // SAFETY: a live block of ours.
            let usable = unsafe { usable_size(p) };
            assert!(usable >= size.next_multiple_of(OS_PAGE).max(OS_PAGE));
            // SAFETY: pvalloc promises whole pages.
            unsafe { p.write_bytes(1, usable) };
            release(p);
        }
    }

    #[test]
    fn null_is_harmless() {
        // SAFETY: null is always allowed.
        unsafe {
            free(ptr::null_mut());
            assert_eq!(usable_size(ptr::null_mut()), 0);
        }
    }

    #[test]
    fn trim_reports_released_memory() {
        // A freed large block waits in the large cache; trimming unmaps it.
        // Other tests map memory concurrently, so allow a few tries.
        let released = (0..20).any(|_| {
            let p = malloc(32 << 20).unwrap().as_ptr();
            release(p);
            trim() == 1
        });
        assert!(released);
        assert!(trim() <= 1);
    }
}
