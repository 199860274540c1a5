//! mimalloc, built by `libmimalloc-sys` with its `secure` feature
//! (`MI_SECURE=4`), exported as the C malloc family so that
//! `LD_PRELOAD=libmimalloc_secure.so` puts any dynamically linked program
//! on it: the `mimalloc-secure` column of `mapalloc-bench`, the peer that
//! mapalloc's hardened mode is measured against.
//!
//! A Rust `cdylib` exports only its own `#[unsafe(no_mangle)]` functions,
//! never the symbols of a C static library linked into it, so each entry
//! point is a one-line wrapper over the `mi_` function. Every way a C or C++
//! program reaches the heap through libc is here (C++'s `operator
//! new`/`delete` in libstdc++ call `malloc`/`free`), so no block of
//! mimalloc's is ever handed to glibc's `free` or the reverse.
//!
//! Check that it is in effect: `LD_PRELOAD=.../libmimalloc_secure.so
//! MIMALLOC_VERBOSE=1 true` prints mimalloc's options, with
//! `secure level: 4`.

use core::ffi::{c_int, c_void};

use libmimalloc_sys as mi;

// Part of mimalloc's C API (its POSIX section) that `libmimalloc-sys` does
// not declare; they are in the static library all the same.
unsafe extern "C" {
    fn mi_memalign(alignment: usize, size: usize) -> *mut c_void;
    fn mi_valloc(size: usize) -> *mut c_void;
    fn mi_pvalloc(size: usize) -> *mut c_void;
    fn mi_reallocarray(p: *mut c_void, count: usize, size: usize) -> *mut c_void;
}

/// `malloc`.
#[unsafe(no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    // SAFETY: mi_malloc takes any size.
    unsafe { mi::mi_malloc(size) }
}

/// `calloc`.
#[unsafe(no_mangle)]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    // SAFETY: mi_calloc takes any count and size (overflow gives NULL).
    unsafe { mi::mi_calloc(count, size) }
}

/// `realloc`.
///
/// # Safety
/// `p` is NULL or a live block of this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the caller passes NULL or a live block of ours.
    unsafe { mi::mi_realloc(p, size) }
}

/// `reallocarray`.
///
/// # Safety
/// As [`realloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, count: usize, size: usize) -> *mut c_void {
    // SAFETY: as in `realloc`; mimalloc checks the product for overflow.
    unsafe { mi_reallocarray(p, count, size) }
}

/// `free`.
///
/// # Safety
/// `p` is NULL or a live block of this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: the caller passes NULL or a live block of ours.
    unsafe { mi::mi_free(p) }
}

/// `posix_memalign`.
///
/// # Safety
/// `out` is valid for one pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: the caller passes a writable `out`; mimalloc checks `align`.
    unsafe { mi::mi_posix_memalign(out, align, size) }
}

/// `aligned_alloc`.
#[unsafe(no_mangle)]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // SAFETY: mimalloc checks `align` and returns NULL for a bad one.
    unsafe { mi::mi_aligned_alloc(align, size) }
}

/// `memalign`.
#[unsafe(no_mangle)]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: as in `aligned_alloc`.
    unsafe { mi_memalign(align, size) }
}

/// `valloc`.
#[unsafe(no_mangle)]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    // SAFETY: takes any size.
    unsafe { mi_valloc(size) }
}

/// `pvalloc`.
#[unsafe(no_mangle)]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    // SAFETY: takes any size.
    unsafe { mi_pvalloc(size) }
}

/// `malloc_usable_size`.
///
/// # Safety
/// `p` is NULL or a live block of this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: the caller passes NULL or a live block of ours.
    unsafe { mi::mi_usable_size(p) }
}

/// mimalloc's version (`major * 10000 + minor * 100 + patch`), for the
/// harness's report (`mi_version` itself stays hidden in the static
/// library, and defining it here would clash with it).
#[unsafe(no_mangle)]
pub extern "C" fn mimalloc_secure_version() -> c_int {
    // SAFETY: takes no arguments and only returns a number.
    unsafe { mi::mi_version() }
}
