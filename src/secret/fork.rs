//! Telling a forked child from its parent: the fork generation.
//!
//! Every slab, large mapping and pool state records the *generation* of
//! the process that made it; memory whose generation is not the caller's
//! was inherited through `fork` and is not the caller's to count, wipe,
//! protect or unmap (see `pool`).
//!
//! Not `getpid()`: pids repeat across PID namespaces (a container's pid 1
//! that forks into a new namespace has a child that is pid 1 too), and a
//! child that took its parent's slabs for its own would wipe memory it
//! does not have.
//!
//! A marker page rather than a `pthread_atfork` child handler: the page is
//! private, anonymous and `MADV_WIPEONFORK`, so the kernel zeroes it in
//! *every* child, however the child was made (`fork`, glibc's `_Fork`, a
//! raw `clone` without `CLONE_VM`), where atfork handlers run only for
//! glibc's `fork()`. It also needs no handler registration (glibc's
//! handler list may allocate) and runs no code at fork time. The pools
//! already depend on `MADV_WIPEONFORK` (Linux 4.14) for anonymous backing.
//!
//! The marker's word holds the process's generation; it reads 0 in a child
//! until the child's first use of a pool takes a new one, `NEXT + 1`.
//! `NEXT` is a plain static, copied into every child, that counts the
//! generations taken in this process and its ancestors: a process's
//! generation is above every generation of its ancestors, so memory a
//! process sees with its own generation is its own. (Siblings may share a
//! generation; neither ever sees the other's memory.)

use super::SecretError;
use super::sys::{self, Advice, PAGE};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// The marker word, in its own `MADV_WIPEONFORK` page; null until `setup`.
static MARKER: AtomicPtr<AtomicU64> = AtomicPtr::new(ptr::null_mut());
/// Generations taken so far by this process and its ancestors.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Maps the marker page if that has not been done; idempotent and
/// thread-safe (a racing loser unmaps its page). Every pool calls it
/// before it hands out memory.
pub(crate) fn setup() -> Result<(), SecretError> {
    if !MARKER.load(Ordering::Acquire).is_null() {
        return Ok(());
    }
    let p = sys::reserve(PAGE).map_err(|errno| SecretError::Map { errno })?;
    // SAFETY: `p` is our fresh one-page reservation.
    let ready = unsafe {
        sys::protect_rw(p.as_ptr(), PAGE)
            .map_err(|errno| SecretError::Protect { errno })
            .and_then(|()| {
                sys::advise(p.as_ptr(), PAGE, Advice::WipeOnFork)
                    .map_err(|errno| SecretError::Advise { errno })
            })
    };
    if let Err(e) = ready {
        // SAFETY: our reservation; nothing uses it.
        let _ = unsafe { sys::unmap(p.as_ptr(), PAGE) };
        return Err(e);
    }
    let word = p.as_ptr().cast::<AtomicU64>();
    if let Err(_other) =
        MARKER.compare_exchange(ptr::null_mut(), word, Ordering::AcqRel, Ordering::Acquire)
    {
        // SAFETY: our page lost the race and was never published.
        let _ = unsafe { sys::unmap(p.as_ptr(), PAGE) };
    }
    current();
    Ok(())
}

/// The calling process's generation (taking a new one in a child's first
/// call); 0 before `setup`, when no pool memory exists yet.
pub(crate) fn current() -> u64 {
    let m = MARKER.load(Ordering::Acquire);
    if m.is_null() {
        return 0;
    }
    // SAFETY: a published marker page is never unmapped; it is zero-filled
    // memory, a valid `AtomicU64`.
    let word = unsafe { &*m };
    match word.load(Ordering::Acquire) {
        0 => renew(word),
        g => g,
    }
}

/// Takes a new generation: the marker was wiped by a fork (or is new).
/// Threads racing here agree on the winner's value.
#[cold]
fn renew(word: &AtomicU64) -> u64 {
    // Taken from NEXT before it is published, so a fork from another
    // thread at any point here leaves the child a NEXT at least this high.
    let new = NEXT.fetch_add(1, Ordering::AcqRel) + 1;
    match word.compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => new,
        Err(seen) => seen,
    }
}
