//! The system calls of the secret pools, and nothing else.
//!
//! The crate's rule is that only an `os` layer names libc memory calls. The
//! heap's layer is `crate::os`; the secret pools need calls the heap never
//! makes (`mprotect` for sealing, `mlock`/`munlock`, `madvise` with
//! `MADV_DONTDUMP`/`MADV_WIPEONFORK`/`MADV_DONTFORK`, `memfd_secret(2)`,
//! `ftruncate`, `MAP_SHARED|MAP_FIXED` over a reservation, `getrlimit`),
//! and nothing else uses them, so they live in this small layer of their
//! own instead of widening `os`. `getrandom` and the one-line fatal-error
//! writer are here for the same reason.
//!
//! Every function reports failure as an `errno` value (`Result`) or an
//! `Option`; nothing here allocates, panics or retries. Memory is never
//! mapped executable.

use core::ptr::{self, NonNull};

/// The kernel page size on x86_64 Linux.
pub(crate) const PAGE: usize = 4096;

/// An `errno` value.
pub(crate) type Errno = i32;

fn errno() -> Errno {
    // SAFETY: glibc's errno location is valid for the calling thread.
    unsafe { *libc::__errno_location() }
}

/// Reserves `len` bytes of address space: private, anonymous, `PROT_NONE`,
/// `MAP_NORESERVE`. Pages of it become usable only through `protect_rw`
/// or `map_secret_fixed`; the rest are guard pages.
pub(crate) fn reserve(len: usize) -> Result<NonNull<u8>, Errno> {
    // SAFETY: a new anonymous mapping without MAP_FIXED never replaces an
    // existing one; the result is checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(errno());
    }
    NonNull::new(p.cast()).ok_or(libc::ENOMEM)
}

/// Reserves `len` bytes (as `reserve`) at an address `a` such that
/// `a + offset` is a multiple of `align` (a power of two, at least a
/// page; `offset` a multiple of the page): over-reserves and trims.
pub(crate) fn reserve_aligned(
    len: usize,
    align: usize,
    offset: usize,
) -> Result<NonNull<u8>, Errno> {
    debug_assert!(align.is_power_of_two() && align >= PAGE && offset.is_multiple_of(PAGE));
    if align == PAGE {
        return reserve(len);
    }
    let over = len.checked_add(align).ok_or(libc::ENOMEM)?;
    let raw = reserve(over)?.as_ptr() as usize;
    let mut start = (raw + offset).next_multiple_of(align) - offset;
    if start < raw {
        start += align;
    }
    let head = start - raw;
    let tail = over - head - len;
    // A failed trim leaves only unused PROT_NONE address space behind.
    // SAFETY: both ranges are parts of the reservation above that the
    // result does not cover.
    unsafe {
        let _ = unmap(raw as *mut u8, head);
        let _ = unmap((start + len) as *mut u8, tail);
    }
    NonNull::new(start as *mut u8).ok_or(libc::ENOMEM)
}

/// Unmaps `[p, p+len)`.
///
/// # Safety
/// The range belongs to a mapping of the caller's that nothing uses any
/// more.
pub(crate) unsafe fn unmap(p: *mut u8, len: usize) -> Result<(), Errno> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract.
    let rc = unsafe { libc::munmap(p.cast(), len) };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

/// Makes `[p, p+len)` read-write (never executable).
///
/// # Safety
/// The range is page-aligned and lies in a mapping of the caller's.
pub(crate) unsafe fn protect_rw(p: *mut u8, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller's contract; adding access invalidates nothing.
    let rc = unsafe { libc::mprotect(p.cast(), len, libc::PROT_READ | libc::PROT_WRITE) };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

/// Makes `[p, p+len)` read-only: a sealed secret while only shared
/// exposures are alive.
///
/// # Safety
/// The range is page-aligned, lies in a mapping of the caller's, and
/// nothing writes it while it stays read-only.
pub(crate) unsafe fn protect_ro(p: *mut u8, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller's contract.
    let rc = unsafe { libc::mprotect(p.cast(), len, libc::PROT_READ) };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

/// Makes `[p, p+len)` inaccessible (`PROT_NONE`): guard pages, or sealed
/// secret pages.
///
/// # Safety
/// The range is page-aligned, lies in a mapping of the caller's, and no
/// reference into it is alive.
pub(crate) unsafe fn protect_none(p: *mut u8, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller's contract.
    let rc = unsafe { libc::mprotect(p.cast(), len, libc::PROT_NONE) };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

/// Locks `[p, p+len)` in RAM (and faults it in).
///
/// # Safety
/// The range is page-aligned and lies in a mapping of the caller's.
pub(crate) unsafe fn lock(p: *mut u8, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller's contract; mlock does not change contents.
    let rc = unsafe { libc::mlock(p.cast(), len) };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

/// Unlocks `[p, p+len)`.
///
/// # Safety
/// As `lock`.
pub(crate) unsafe fn unlock(p: *mut u8, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller's contract; munlock does not change contents.
    let rc = unsafe { libc::munlock(p.cast(), len) };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

/// The `madvise` flags the secret pools use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Advice {
    /// `MADV_DONTDUMP`: left out of core dumps.
    DontDump,
    /// `MADV_WIPEONFORK`: a forked child sees zeros (private anonymous
    /// mappings only).
    WipeOnFork,
    /// `MADV_DONTFORK`: the range is not mapped in a forked child at all.
    DontFork,
}

/// Applies `advice` to `[p, p+len)`.
///
/// # Safety
/// The range is page-aligned and lies in a mapping of the caller's.
pub(crate) unsafe fn advise(p: *mut u8, len: usize, advice: Advice) -> Result<(), Errno> {
    let flag = match advice {
        Advice::DontDump => libc::MADV_DONTDUMP,
        Advice::WipeOnFork => libc::MADV_WIPEONFORK,
        Advice::DontFork => libc::MADV_DONTFORK,
    };
    // SAFETY: the caller's contract; none of these flags discards data of
    // the calling process.
    let rc = unsafe { libc::madvise(p.cast(), len, flag) };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

/// A `memfd_secret(2)` file descriptor, closed on drop.
pub(crate) struct SecretFd(libc::c_int);

impl SecretFd {
    /// A new secret memory file (`O_CLOEXEC`).
    pub(crate) fn new() -> Result<SecretFd, Errno> {
        // SAFETY: memfd_secret takes one flags argument and returns a new
        // descriptor or -1; no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC as libc::c_ulong) };
        if fd < 0 {
            return Err(errno());
        }
        Ok(SecretFd(fd as libc::c_int))
    }

    /// Sets the file's size (`ftruncate`).
    pub(crate) fn set_len(&self, len: usize) -> Result<(), Errno> {
        let len = libc::off_t::try_from(len).map_err(|_| libc::EFBIG)?;
        // SAFETY: `self.0` is an open descriptor of ours.
        let rc = unsafe { libc::ftruncate(self.0, len) };
        if rc == 0 { Ok(()) } else { Err(errno()) }
    }

    /// Maps the first `len` bytes of the file read-write and shared (the
    /// only way the kernel maps secret memory) over `[p, p+len)`, which
    /// must be part of a reservation of the caller's (`MAP_FIXED` replaces
    /// it).
    ///
    /// # Safety
    /// `[p, p+len)` is page-aligned, lies in the caller's reservation and
    /// holds nothing anyone uses.
    pub(crate) unsafe fn map_fixed(&self, p: *mut u8, len: usize) -> Result<(), Errno> {
        // SAFETY: MAP_FIXED over a range the caller owns (its contract);
        // the result is checked.
        let r = unsafe {
            libc::mmap(
                p.cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                self.0,
                0,
            )
        };
        if r == libc::MAP_FAILED {
            return Err(errno());
        }
        if r.cast::<u8>() != p {
            // Cannot happen with MAP_FIXED; do not leave a stray mapping.
            // SAFETY: `r` is the mapping just made.
            let _ = unsafe { unmap(r.cast(), len) };
            return Err(libc::EINVAL);
        }
        Ok(())
    }
}

impl Drop for SecretFd {
    fn drop(&mut self) {
        // SAFETY: `self.0` is an open descriptor of ours, closed once; the
        // mappings made from it stay valid after the close.
        unsafe { libc::close(self.0) };
    }
}

/// The soft `RLIMIT_MEMLOCK` in bytes; `None` when unlimited.
pub(crate) fn memlock_limit() -> Result<Option<u64>, Errno> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out-pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    if rc != 0 {
        return Err(errno());
    }
    Ok(if r.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(r.rlim_cur)
    })
}

/// Fills `[p, p+len)` from the kernel's random source (`getrandom(2)`,
/// blocking only until the source is first initialised at boot), in place:
/// no byte passes through a buffer of ours.
///
/// # Safety
/// `[p, p+len)` is writable and no reference into it is alive.
pub(crate) unsafe fn fill_random(p: *mut u8, len: usize) -> Result<(), Errno> {
    fill_with(p, len, |at, n| {
        // SAFETY: `[at, at+n)` lies inside the caller's writable range.
        let r = unsafe { libc::getrandom(at.cast(), n, 0) };
        if r < 0 { Err(errno()) } else { Ok(r as usize) }
    })
}

/// The loop of `fill_random`, over any `getrandom`-shaped call: short
/// reads go on where they stopped, `EINTR` is retried, other errors are
/// returned. A call that returns 0 bytes for a non-empty request (which
/// `getrandom` never does) is `EIO`, so the loop always ends.
fn fill_with(
    p: *mut u8,
    len: usize,
    mut call: impl FnMut(*mut u8, usize) -> Result<usize, Errno>,
) -> Result<(), Errno> {
    let mut done = 0;
    while done < len {
        match call(p.wrapping_add(done), len - done) {
            Ok(0) => return Err(libc::EIO),
            Ok(n) => done += n.min(len - done),
            Err(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// 64 random bits (the pools' canary keys), from the allocator's `os`.
pub(crate) use crate::os::random_u64;

/// Aborts with `mapalloc: <what> 0x<addr>`: for memory-safety violations
/// found on the secret path (an overwritten canary, a double or invalid
/// free), where continuing would be worse.
#[cold]
pub(crate) fn fatal(what: &str, addr: usize) -> ! {
    crate::os::fatal(&[what.as_bytes()], Some(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_with_goes_on_after_short_reads_and_eintr() {
        let mut buf = [0u8; 100];
        let mut calls = Vec::new();
        // 30 bytes, EINTR, 1 byte, EINTR, then whatever is asked.
        let script = [Ok(30), Err(libc::EINTR), Ok(1), Err(libc::EINTR)];
        let mut next = script.iter();
        let base = buf.as_mut_ptr();
        let r = fill_with(base, 100, |at, n| {
            let off = at as usize - base as usize;
            calls.push((off, n));
            let got = *next.next().unwrap_or(&Ok(n));
            if let Ok(k) = got {
                // SAFETY: inside `buf`, as `fill_with` asks.
                unsafe { ptr::write_bytes(at, 0xA5, k) };
            }
            got
        });
        assert_eq!(r, Ok(()));
        assert_eq!(buf, [0xA5; 100]);
        assert_eq!(calls, [(0, 100), (30, 70), (30, 70), (31, 69), (31, 69)]);
    }

    #[test]
    fn fill_with_returns_other_errors_and_never_spins_on_zero() {
        let mut buf = [0u8; 16];
        let p = buf.as_mut_ptr();
        assert_eq!(fill_with(p, 16, |_, _| Err(libc::ENOSYS)), Err(libc::ENOSYS));
        assert_eq!(fill_with(p, 16, |_, _| Ok(0)), Err(libc::EIO));
        let mut n = 0;
        assert_eq!(
            fill_with(p, 0, |_, _| {
                n += 1;
                Ok(0)
            }),
            Ok(())
        );
        assert_eq!(n, 0, "nothing to fill: no call");
    }

    #[test]
    fn fill_random_fills_in_place() {
        let mut buf = [0u8; 4096];
        // SAFETY: a writable local buffer.
        unsafe { fill_random(buf.as_mut_ptr(), buf.len()) }.unwrap();
        // All 4096 bytes zero has probability 2^-32768.
        assert!(buf.iter().any(|&b| b != 0));
        let (a, b) = buf.split_at(2048);
        assert_ne!(a, b);
    }
}
