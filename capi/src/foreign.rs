//! Pointers mapalloc did not hand out ("foreign" pointers): blocks that
//! glibc's malloc returned before this library took over, or that code
//! got from glibc directly (`__libc_malloc`, a copy of the library loaded
//! with `dlopen`). `raw::owns` tells them apart with a registry lookup, so
//! we never read or write a header through them.
//!
//! What we do with one:
//! - `free`: nothing. We do not hand it to glibc's `free`: a pointer that
//!   is not ours may also come from the dynamic loader's early allocator
//!   or be garbage, and glibc's `free` would abort or corrupt its heap on
//!   those. The leak is bounded by what was allocated before we took over.
//! - `realloc`: a new block of ours, holding
//!   `min(new size, glibc's malloc_usable_size(p))` bytes copied from `p`;
//!   `p` is left alone (leaked) as by `free`.
//! - `malloc_usable_size`: glibc's answer.
//!
//! glibc's `malloc_usable_size` is found with `dlsym(RTLD_NEXT, ...)` in
//! the library constructor (`lib.rs`), before the program runs, so no
//! malloc call has to wait for the loader. `dlsym` may itself call
//! `malloc`, which is ours and never comes back here, so resolving cannot
//! recurse. If a foreign pointer shows up before the constructor ran, it
//! is resolved then; while a resolution is in progress (or if `dlsym`
//! finds nothing), `malloc_usable_size` answers 0 and `realloc` copies
//! only the bytes up to the end of `p`'s page, the only bytes known to be
//! readable.

use crate::c::{self, Alloc, OS_PAGE};
use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

type UsableSizeFn = unsafe extern "C" fn(*mut c_void) -> usize;

/// `GLIBC_USABLE_SIZE` before anyone looked it up.
const UNRESOLVED: usize = 0;
/// `GLIBC_USABLE_SIZE` while a thread is looking it up.
const RESOLVING: usize = 1;
/// `GLIBC_USABLE_SIZE` when `dlsym` found nothing.
const MISSING: usize = 2;

/// glibc's `malloc_usable_size`, or one of the states above.
static GLIBC_USABLE_SIZE: AtomicUsize = AtomicUsize::new(UNRESOLVED);

/// Looks up glibc's `malloc_usable_size` if nobody has yet. Called from the
/// library constructor; safe to call any time after.
pub fn resolve() {
    if GLIBC_USABLE_SIZE
        .compare_exchange(UNRESOLVED, RESOLVING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    // SAFETY: a NUL-terminated name; RTLD_NEXT searches the objects after
    // this one in the lookup scope, so it finds glibc's function (or that
    // of an allocator loaded later), never our own export.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"malloc_usable_size".as_ptr()) };
    // (Not compared with our own export: taking its address from here
    // goes through the GOT, which may well point at glibc's function.)
    let value = if f.is_null() { MISSING } else { f as usize };
    GLIBC_USABLE_SIZE.store(value, Ordering::Release);
}

/// glibc's function, if resolved (resolving it now if nobody has).
fn glibc_usable_size() -> Option<UsableSizeFn> {
    if GLIBC_USABLE_SIZE.load(Ordering::Acquire) == UNRESOLVED {
        resolve();
    }
    match GLIBC_USABLE_SIZE.load(Ordering::Acquire) {
        UNRESOLVED | RESOLVING | MISSING => None,
        // SAFETY: any other value was stored by `resolve` from a non-null
        // `dlsym` result for `malloc_usable_size`, whose C type this is.
        f => Some(unsafe { core::mem::transmute::<usize, UsableSizeFn>(f) }),
    }
}

/// glibc's `malloc_usable_size(p)`, or `None` if it cannot be called.
///
/// # Safety
/// `p` is a live block of glibc's malloc.
pub unsafe fn usable_size(p: *mut u8) -> Option<usize> {
    let f = glibc_usable_size()?;
    // SAFETY: glibc's function on a live block of its own.
    Some(unsafe { f(p.cast()) })
}

/// Moves a foreign block into a new block of ours of `size` bytes; `p` is
/// left as it is (see the module comment).
///
/// # Safety
/// `p` is a live block of glibc's malloc (or, at least, readable for
/// `min(size, malloc_usable_size(p))` bytes).
pub unsafe fn realloc(p: *mut u8, size: usize) -> Alloc {
    let q = c::malloc(size)?;
    // SAFETY: forwarded.
    let old = unsafe { usable_size(p) }.unwrap_or(OS_PAGE - p as usize % OS_PAGE);
    // SAFETY: `old` bytes are readable at `p`; `q` is a fresh block of
    // `size` bytes, so the two do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(p, q.as_ptr(), old.min(size)) };
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc's function once resolved. The tests run on several threads
    /// and each may call `resolve`; one that finds another thread's
    /// resolution in progress (`RESOLVING`) waits for it instead of taking
    /// the "cannot call it now" answer that the allocator itself takes.
    fn resolved() -> UsableSizeFn {
        resolve();
        while GLIBC_USABLE_SIZE.load(Ordering::Acquire) == RESOLVING {
            core::hint::spin_loop();
        }
        glibc_usable_size().expect("dlsym finds glibc's malloc_usable_size")
    }

    // In the unit-test binary the exports are not `no_mangle`, so
    // `libc::malloc` is glibc's: a genuine foreign pointer.
    #[test]
    fn glibc_blocks_are_recognised_and_left_alone() {
        // SAFETY: glibc's malloc; every use below stays in bounds.
        unsafe {
            let p = libc::malloc(1000).cast::<u8>();
            assert!(!p.is_null());
            assert!(!mapalloc::raw::owns(p));
            for i in 0..1000 {
                *p.add(i) = i as u8;
            }
            resolved();
            let glibc = usable_size(p).expect("glibc's malloc_usable_size");
            assert!(glibc >= 1000);
            assert_eq!(c::usable_size(p), glibc);
            // free ignores it: the block stays readable and intact.
            c::free(p);
            assert_eq!(*p.add(999), (999 % 256) as u8);
            // realloc copies it into a block of ours.
            let q = c::realloc(p, 5000).unwrap();
            assert!(mapalloc::raw::owns(q));
            for i in 0..1000 {
                assert_eq!(*q.add(i), i as u8);
            }
            let r = c::realloc(p, 10).unwrap();
            for i in 0..10 {
                assert_eq!(*r.add(i), i as u8);
            }
            c::free(q);
            c::free(r);
            // realloc(foreign, 0): null, p untouched.
            assert_eq!(c::realloc(p, 0), Ok(core::ptr::null_mut()));
            assert_eq!(*p.add(5), 5);
            libc::free(p.cast());
        }
    }

    #[test]
    fn resolve_is_idempotent() {
        let first = resolved();
        resolve();
        assert_eq!(resolved() as usize, first as usize);
    }
}
