//! The C malloc family on mapalloc, built as `libmapalloc.so` for
//! `LD_PRELOAD` (see `capi/README.md`).
//!
//! The exports below are one-line wrappers: the C semantics live in `c`
//! (unit-tested), foreign pointers in `foreign`, the statistics report in
//! `report`, `mallinfo` and `malloc_info` in `info`. In the unit-test binary the exports keep mangled names, so the
//! tests do not replace the test harness's own malloc.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod c;
mod foreign;
mod info;
mod report;

use core::ffi::{c_char, c_int, c_void};
use core::ptr;

/// Rust code in this library (there should be none that allocates) uses
/// mapalloc directly rather than going back through the exported `malloc`.
#[cfg(not(test))]
#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

/// Null with `errno` set, or the block.
#[inline(always)]
fn ret(r: c::Alloc) -> *mut c_void {
    match r {
        Ok(p) => p.as_ptr().cast(),
        Err(e) => fail(e),
    }
}

/// As `ret`, for results that may be a null without error.
#[inline(always)]
fn ret_ptr(r: Result<*mut u8, c_int>) -> *mut c_void {
    match r {
        Ok(p) => p.cast(),
        Err(e) => fail(e),
    }
}

#[cold]
fn fail(e: c_int) -> *mut c_void {
    set_errno(e);
    ptr::null_mut()
}

fn set_errno(e: c_int) {
    // SAFETY: glibc's errno location is valid for the calling thread.
    unsafe { *libc::__errno_location() = e };
}

fn errno() -> c_int {
    // SAFETY: glibc's errno location is valid for the calling thread.
    unsafe { *libc::__errno_location() }
}

/// `malloc(3)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    ret(c::malloc(size))
}

/// `free(3)`.
///
/// # Safety
/// `p` is null, a live block from this library, or a foreign pointer.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: the caller's contract.
    unsafe { c::free(p.cast()) }
}

/// `calloc(3)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    ret(c::calloc(n, size))
}

/// `realloc(3)`.
///
/// # Safety
/// As `free`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the caller's contract.
    ret_ptr(unsafe { c::realloc(p.cast(), size) })
}

/// `reallocarray(3)`.
///
/// # Safety
/// As `free`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    // SAFETY: the caller's contract.
    ret_ptr(unsafe { c::reallocarray(p.cast(), n, size) })
}

/// `posix_memalign(3)`: returns the error code and leaves `errno` alone.
///
/// # Safety
/// `memptr` is valid for a pointer write.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn posix_memalign(
    memptr: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    let saved = errno();
    match c::posix_memalign(align, size) {
        Ok(p) => {
            // SAFETY: the caller's contract.
            unsafe { memptr.write(p.as_ptr().cast()) };
            0
        }
        Err(e) => {
            // The allocator's system calls may have set errno.
            set_errno(saved);
            e
        }
    }
}

/// `aligned_alloc(3)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    ret(c::aligned_alloc(align, size))
}

/// `memalign(3)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    ret(c::memalign(align, size))
}

/// `valloc(3)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    ret(c::valloc(size))
}

/// `pvalloc(3)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    ret(c::pvalloc(size))
}

/// `malloc_usable_size(3)`.
///
/// # Safety
/// As `free`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: the caller's contract.
    unsafe { c::usable_size(p.cast()) }
}

/// C23 `free_sized`: `free`, with the size checked in hardened mode
/// (glibc 2.43 has it; exported so that a program built against it never
/// hands our blocks to glibc).
///
/// # Safety
/// As `free`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    // SAFETY: the caller's contract.
    unsafe { c::free_sized(p.cast(), Some(size), 1) }
}

/// C23 `free_aligned_sized`: `free`, with the size and alignment checked
/// in hardened mode.
///
/// # Safety
/// As `free`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    // SAFETY: the caller's contract.
    unsafe { c::free_sized(p.cast(), Some(size), align) }
}

/// C++'s deallocation functions (the Itanium ABI names libstdc++ exports),
/// so that a sized or aligned `delete` reaches mapalloc with what it
/// claims about the block, which hardened mode checks. Allocation stays
/// with libstdc++'s `operator new`, which calls our `malloc` (and
/// `aligned_alloc` for over-aligned types). Every variant, `delete[]` and
/// `nothrow` included, is `free` with its size and alignment.
pub mod cxx {
    use super::*;

    macro_rules! delete {
        ($( $(#[$doc:meta])* $name:ident = $symbol:literal ($($arg:ident: $ty:ty),*) => ($size:expr, $align:expr); )*) => {$(
            $(#[$doc])*
            ///
            /// # Safety
            /// As `free`.
            #[cfg_attr(not(test), unsafe(export_name = $symbol))]
            pub unsafe extern "C" fn $name(p: *mut c_void, $($arg: $ty),*) {
                // SAFETY: the caller's contract.
                unsafe { c::delete(p.cast(), $size, $align) }
            }
        )*};
    }

    /// `std::align_val_t` and `const std::nothrow_t&` as they are passed.
    pub type Align = usize;
    pub type Nothrow = *const c_void;

    delete! {
        /// `operator delete(void*)`.
        delete = "_ZdlPv" () => (None, 1);
        /// `operator delete[](void*)`.
        delete_array = "_ZdaPv" () => (None, 1);
        /// `operator delete(void*, std::size_t)`.
        delete_sized = "_ZdlPvm" (size: usize) => (Some(size), 1);
        /// `operator delete[](void*, std::size_t)`.
        delete_array_sized = "_ZdaPvm" (size: usize) => (Some(size), 1);
        /// `operator delete(void*, std::align_val_t)`.
        delete_aligned = "_ZdlPvSt11align_val_t" (align: Align) => (None, align);
        /// `operator delete[](void*, std::align_val_t)`.
        delete_array_aligned = "_ZdaPvSt11align_val_t" (align: Align) => (None, align);
        /// `operator delete(void*, std::size_t, std::align_val_t)`.
        delete_sized_aligned = "_ZdlPvmSt11align_val_t" (size: usize, align: Align) => (Some(size), align);
        /// `operator delete[](void*, std::size_t, std::align_val_t)`.
        delete_array_sized_aligned = "_ZdaPvmSt11align_val_t" (size: usize, align: Align) => (Some(size), align);
        /// `operator delete(void*, const std::nothrow_t&)`.
        delete_nothrow = "_ZdlPvRKSt9nothrow_t" (_nothrow: Nothrow) => (None, 1);
        /// `operator delete[](void*, const std::nothrow_t&)`.
        delete_array_nothrow = "_ZdaPvRKSt9nothrow_t" (_nothrow: Nothrow) => (None, 1);
        /// `operator delete(void*, std::align_val_t, const std::nothrow_t&)`.
        delete_aligned_nothrow = "_ZdlPvSt11align_val_tRKSt9nothrow_t" (align: Align, _nothrow: Nothrow) => (None, align);
        /// `operator delete[](void*, std::align_val_t, const std::nothrow_t&)`.
        delete_array_aligned_nothrow = "_ZdaPvSt11align_val_tRKSt9nothrow_t" (align: Align, _nothrow: Nothrow) => (None, align);
    }
}

/// `malloc_trim(3)`: returns free memory to the OS; 1 if some was.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    c::trim()
}

/// `mallopt(3)`: accepted and ignored (mapalloc's options are the
/// `MAPALLOC_*` environment variables).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn mallopt(_param: c_int, _value: c_int) -> c_int {
    1
}

/// `malloc_stats(3)`: mapalloc's counters on stderr.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn malloc_stats() {
    report::write_to(2);
}

/// `mallinfo(3)`: mapalloc's counters in glibc's `int` fields, clamped to
/// `INT_MAX` (see `info` for which figure is in which field).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn mallinfo() -> libc::mallinfo {
    info::mallinfo(&mapalloc::stats())
}

/// `mallinfo2(3)`: as `mallinfo`, in `size_t` fields.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn mallinfo2() -> libc::mallinfo2 {
    info::mallinfo2(&mapalloc::stats())
}

/// `malloc_info(3)`: glibc-shaped XML of the same figures on `fp`; -1 with
/// `EINVAL` unless `options` is 0.
///
/// # Safety
/// `fp` is null or an open `FILE *`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn malloc_info(options: c_int, fp: *mut libc::FILE) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { info::malloc_info(options, fp) }.map_or_else(fail_int, |()| 0)
}

#[cold]
fn fail_int(e: c_int) -> c_int {
    set_errno(e);
    -1
}

/// Runs when the library is loaded, before the program's own
/// constructors: reads `MAPALLOC_SHOW_STATS` and looks up glibc's
/// `malloc_usable_size` for foreign pointers (see `foreign`).
extern "C" fn init(_argc: c_int, _argv: *const *const c_char, _envp: *const *const c_char) {
    report::init();
    foreign::resolve();
}

/// Runs at `exit` (after `atexit` handlers and the program's destructors):
/// the last check of hardened mode's quarantine, then the report.
extern "C" fn fini() {
    mapalloc::raw::at_exit();
    report::at_exit();
}

#[cfg(not(test))]
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = init;

#[cfg(not(test))]
#[used]
#[unsafe(link_section = ".fini_array")]
static FINI: extern "C" fn() = fini;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_set_errno() {
        set_errno(0);
        assert!(malloc(usize::MAX).is_null());
        assert_eq!(errno(), libc::ENOMEM);
        set_errno(0);
        assert!(aligned_alloc(24, 24).is_null());
        assert_eq!(errno(), libc::EINVAL);
        set_errno(0);
        assert!(calloc(usize::MAX, usize::MAX).is_null());
        assert_eq!(errno(), libc::ENOMEM);
    }

    #[test]
    fn posix_memalign_keeps_errno() {
        let mut p: *mut c_void = ptr::null_mut();
        set_errno(1234);
        // SAFETY: `p` is a valid out-pointer.
        unsafe {
            assert_eq!(posix_memalign(&mut p, 3, 8), libc::EINVAL);
            assert_eq!(posix_memalign(&mut p, 64, usize::MAX), libc::ENOMEM);
            assert!(p.is_null());
            assert_eq!(errno(), 1234);
            assert_eq!(posix_memalign(&mut p, 64, 100), 0);
            assert_eq!(p as usize % 64, 0);
            free(p);
        }
    }

    #[test]
    fn realloc_zero_frees_without_errno() {
        set_errno(0);
        let p = malloc(10);
        // SAFETY: `p` is a live block of ours.
        unsafe { assert!(realloc(p, 0).is_null()) };
        assert_eq!(errno(), 0);
    }

    #[test]
    fn mallinfo_exports_see_a_held_block() {
        // Held across the reads, so the figures cannot drop below it
        // whatever the other tests do meanwhile.
        let p = malloc(3 << 20);
        assert!(!p.is_null());
        let m2 = mallinfo2();
        assert!(m2.hblks >= 1 && m2.hblkhd >= 3 << 20, "{}", m2.hblkhd);
        assert!(m2.uordblks >= 3 << 20 && m2.arena >= m2.uordblks);
        assert!(mallinfo().hblkhd >= 3 << 20);
        // SAFETY: `p` is a live block of ours.
        unsafe { free(p) };
        set_errno(0);
        // SAFETY: a null stream is rejected before use.
        assert_eq!(unsafe { malloc_info(7, ptr::null_mut()) }, -1);
        assert_eq!(errno(), libc::EINVAL);
    }

    #[test]
    fn init_and_fini_run() {
        init(0, ptr::null(), ptr::null());
        fini();
        assert_eq!(mallopt(1, 2), 1);
    }
}
