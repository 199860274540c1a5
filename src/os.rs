//! The operating-system contract: the only module that calls `mmap`,
//! `munmap`, `mremap`, `madvise` and the clock. Every call reports failure
//! as `None`/`false`; nothing here allocates, panics or retries forever.
//! Memory is always mapped read-write, never executable.

use crate::fixed::FixedVec;
use crate::stats::{Counter, STATS};
use crate::sync::{AtomicUsize, Ordering};
use core::ptr::{self, NonNull};

/// The kernel page size on x86_64 Linux.
pub(crate) const OS_PAGE: usize = 4096;

const PROT_RW: libc::c_int = libc::PROT_READ | libc::PROT_WRITE;
#[cfg(not(miri))]
const MAP_ANON_PRIVATE: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
/// Miri supports exactly private anonymous mappings, whole `munmap`s, and
/// none of `mremap`-in-place, `madvise` or `mprotect`: under `cfg(miri)`
/// the calls it cannot run become what they mean to the allocator's logic
/// (unmap: keep the memory; purge: zero it; remap: refuse; protect: no-op),
/// so the allocator's own code can run under Miri.
#[cfg(miri)]
const MAP_ANON_PRIVATE: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

/// Where the next aligned mapping is asked for. Asking at an address that
/// is already aligned lets the kernel give us an aligned block in one
/// `mmap`, instead of over-mapping and trimming (three system calls).
static ALIGNED_HINT: AtomicUsize = AtomicUsize::new(0);
/// Start of the hint area (2 TiB) plus a random slide chosen at start-up.
const HINT_BASE: usize = 2 << 40;
/// The hint area ends here (32 TiB); after that the kernel chooses.
const HINT_END: usize = 32 << 40;

pub(crate) fn init_hint(random: u64) {
    // Slide by up to 1 TiB in 4 MiB steps so the layout is not the same in
    // every process.
    let slide = (random as usize % (1 << 18)) << 22;
    ALIGNED_HINT.store(HINT_BASE + slide, Ordering::Relaxed);
}

/// Maps `len` bytes of fresh, zeroed, read-write memory anywhere.
pub(crate) fn map(len: usize) -> Option<NonNull<u8>> {
    map_at(ptr::null_mut(), len)
}

fn map_at(hint: *mut u8, len: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping without MAP_FIXED never
    // replaces an existing mapping; the result is checked for MAP_FAILED.
    let p = unsafe { libc::mmap(hint.cast(), len, PROT_RW, MAP_ANON_PRIVATE, -1, 0) };
    STATS.add(Counter::MmapCalls, 1);
    if p == libc::MAP_FAILED {
        return None;
    }
    STATS.add(Counter::MappedBytes, len);
    // Blocks are later reached from bare addresses (see `heap::block_at`).
    let _ = p.expose_provenance();
    NonNull::new(p.cast())
}

/// Runs a system call that may fail on a `free` path, keeping `errno` as
/// it was: POSIX (2024) says `free` does not change `errno`, and the C ABI
/// reports its own errors.
fn keeping_errno<T>(call: impl FnOnce() -> T) -> T {
    // SAFETY: `__errno_location` returns this thread's errno slot.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: the slot is valid for the thread's life.
    let saved = unsafe { *slot };
    let r = call();
    // SAFETY: as above.
    unsafe { *slot = saved };
    r
}

/// Unmaps `[p, p+len)`. Returns false (and leaves the memory mapped) if the
/// kernel refused, which only happens when a split would exceed the map
/// count limit; the caller then keeps the memory as it is.
pub(crate) fn unmap(p: *mut u8, len: usize) -> bool {
    if len == 0 || cfg!(miri) {
        return true;
    }
    // SAFETY: callers pass a range they mapped and no longer use.
    let rc = keeping_errno(|| unsafe { libc::munmap(p.cast(), len) });
    STATS.add(Counter::MunmapCalls, 1);
    if rc == 0 {
        STATS.sub(Counter::MappedBytes, len);
    }
    rc == 0
}

/// Maps `len` bytes at an address `a` such that `a + offset` is a multiple
/// of `align` (a power of two, at least the OS page).
pub(crate) fn map_aligned(len: usize, align: usize, offset: usize) -> Option<NonNull<u8>> {
    debug_assert!(align.is_power_of_two() && align >= OS_PAGE && offset.is_multiple_of(OS_PAGE));
    // First try: ask at the next hint address, which is aligned for offset 0.
    // Requests too large for the hint area (a failing huge request among
    // them) skip it, so they cannot push the hint out of range.
    let span = len.checked_add(align - 1)? & !(align - 1);
    if offset == 0 && span <= HINT_END - HINT_BASE {
        let hint = ALIGNED_HINT.fetch_add(span, Ordering::Relaxed);
        let misaligned = |a: usize| a & align.wrapping_sub(1) != 0;
        if hint != 0
            && !misaligned(hint)
            && hint.checked_add(span).is_some_and(|end| end <= HINT_END)
        {
            let p = map_at(hint as *mut u8, len)?;
            if !misaligned(p.as_ptr() as usize) {
                return Some(p);
            }
            unmap(p.as_ptr(), len);
        }
    }
    // Fallback: over-map by `align` and trim both ends.
    let over = len.checked_add(align)?;
    let raw = map(over)?.as_ptr() as usize;
    // Round up with a mask (`align` is a power of two): `next_multiple_of`
    // would bring a panic path into the allocator.
    let start = ((raw + offset + align - 1) & !(align - 1)) - offset;
    let start = if start < raw { start + align } else { start };
    let head = start - raw;
    let tail = over - head - len;
    // A failed trim only leaves unused address space mapped; it is counted
    // in `mapped_bytes` and reclaimed when the process exits.
    unmap(raw as *mut u8, head);
    unmap((start + len) as *mut u8, tail);
    NonNull::new(start as *mut u8)
}

/// Grows or shrinks a mapping where it stands. False if it cannot.
pub(crate) fn remap_in_place(p: *mut u8, old: usize, new: usize) -> bool {
    if cfg!(miri) {
        return false;
    }
    // SAFETY: without MREMAP_MAYMOVE the mapping either keeps its address
    // or the call fails; `p` is a mapping of `old` bytes we own.
    let r = keeping_errno(|| unsafe { libc::mremap(p.cast(), old, new, 0) });
    STATS.add(Counter::MremapCalls, 1);
    if r == libc::MAP_FAILED {
        return false;
    }
    adjust_mapped(old, new);
    true
}

/// Moves the pages of a mapping to `target` (a reservation of at least
/// `new` bytes that we own) without copying them.
pub(crate) fn remap_to(p: *mut u8, old: usize, new: usize, target: *mut u8) -> bool {
    if cfg!(miri) {
        return false;
    }
    // SAFETY: MREMAP_FIXED replaces only `[target, target+new)`, which the
    // caller reserved for this purpose; `p` is a mapping of `old` bytes.
    let r = unsafe {
        libc::mremap(
            p.cast(),
            old,
            new,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target,
        )
    };
    STATS.add(Counter::MremapCalls, 1);
    if r == libc::MAP_FAILED {
        return false;
    }
    // The reservation's `new` bytes were already counted; the old mapping
    // is gone.
    STATS.sub(Counter::MappedBytes, old);
    true
}

fn adjust_mapped(old: usize, new: usize) {
    if new > old {
        STATS.add(Counter::MappedBytes, new - old);
    } else {
        STATS.sub(Counter::MappedBytes, old - new);
    }
}

/// Gives the physical pages behind `[p, p+len)` back to the kernel; the
/// range stays mapped and reads as zero afterwards.
pub(crate) fn purge(p: *mut u8, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    if cfg!(miri) {
        // SAFETY: callers hold no data in the range; it must read as zero.
        unsafe { p.write_bytes(0, len) };
        return true;
    }
    // SAFETY: MADV_DONTNEED on a private anonymous range we own only drops
    // its contents (it reads back as zero); callers hold no data there.
    let rc = keeping_errno(|| unsafe { libc::madvise(p.cast(), len, libc::MADV_DONTNEED) });
    STATS.add(Counter::MadviseCalls, 1);
    rc == 0
}

/// Asks for transparent huge pages behind `[p, p+len)`: a large block is
/// then faulted in 2 MiB at a time instead of 4 KiB. A hint: failure
/// (THP off, old kernel) changes nothing.
pub(crate) fn advise_huge(p: *mut u8, len: usize) {
    // Under 2 MiB no aligned huge page fits: spare the system call.
    if cfg!(miri) || len < 2 << 20 {
        return;
    }
    // SAFETY: MADV_HUGEPAGE on our own private anonymous range changes only
    // how the kernel backs it, never its contents.
    keeping_errno(|| unsafe { libc::madvise(p.cast(), len, libc::MADV_HUGEPAGE) });
    STATS.add(Counter::MadviseCalls, 1);
}

/// Faults in the pages of `[p, p+len)`, a fresh mapping of ours that
/// holds no data yet, so that the program's first writes find them
/// present (`MAPALLOC_PREFAULT`). After the mapping is made, trimmed and
/// advised, not with `MAP_POPULATE` at `mmap`: that would also populate
/// what an over-map trims off, and, coming before `MADV_HUGEPAGE`, fault
/// a large block in 4 KiB pages (see `docs/benchmarks.md`). Uses
/// `MADV_POPULATE_WRITE` (Linux 5.14); where the kernel lacks it, writes
/// a zero to each page instead (the memory is zero already). A hint:
/// failure (no memory to back it now) leaves the pages to fault later.
pub(crate) fn prefault(p: *mut u8, len: usize) {
    if cfg!(miri) || len == 0 {
        return;
    }
    let err = keeping_errno(|| {
        // SAFETY: MADV_POPULATE_WRITE on our own private read-write range
        // only faults its pages in, as a write would; they stay zero.
        if unsafe { libc::madvise(p.cast(), len, libc::MADV_POPULATE_WRITE) } == 0 {
            return 0;
        }
        // SAFETY: this thread's errno slot, read right after the call.
        unsafe { *libc::__errno_location() }
    });
    STATS.add(Counter::MadviseCalls, 1);
    if err == libc::EINVAL {
        // SAFETY: the caller's contract, forwarded.
        unsafe { touch_pages(p, len) };
    }
}

/// `prefault` without `MADV_POPULATE_WRITE`: a zero written to each page.
///
/// # Safety
/// `[p, p+len)` is a fresh read-write mapping of ours that holds no data.
unsafe fn touch_pages(p: *mut u8, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: `p + off` lies in the caller's fresh read-write range,
        // which reads as zero and holds nothing yet.
        unsafe { p.add(off).write_volatile(0) };
        off += OS_PAGE;
    }
}

/// Makes `[p, p+len)` inaccessible (a guard page). False on failure.
pub(crate) fn protect_none(p: *mut u8, len: usize) -> bool {
    if cfg!(miri) {
        return true;
    }
    // SAFETY: callers pass page-aligned ranges of their own mappings that
    // hold no live data.
    unsafe { libc::mprotect(p.cast(), len, libc::PROT_NONE) == 0 }
}

/// Makes `[p, p+len)` read-write again (never executable).
pub(crate) fn protect_rw(p: *mut u8, len: usize) -> bool {
    if cfg!(miri) {
        return true;
    }
    // SAFETY: callers pass page-aligned ranges of their own mappings.
    keeping_errno(|| unsafe { libc::mprotect(p.cast(), len, PROT_RW) == 0 })
}

/// Writes `bytes` to stderr without allocating.
pub(crate) fn write_stderr(bytes: &[u8]) {
    // SAFETY: writes from a valid buffer; a short or failed write to stderr
    // has nowhere better to be reported.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

/// Writes `mapalloc: <parts…> 0x<addr>` (or, with no address, just the
/// parts) to stderr and aborts: the one way the allocator (hardened
/// checks, secret pools, a misuse of the modes) reports what it cannot go
/// on from. Allocates nothing, formats nothing.
#[cold]
pub(crate) fn fatal(parts: &[&[u8]], addr: Option<usize>) -> ! {
    let mut line = Line::new();
    for &part in parts {
        line = line.text(part);
    }
    if let Some(addr) = addr {
        line = line.text(b" ").hex(addr);
    }
    line.abort()
}

/// One line of report, `mapalloc: ` and then its pieces, built in a stack
/// buffer (no allocation, no formatting machinery; a line that does not
/// fit is cut short), written to stderr with one `write(2)` before the
/// process aborts.
pub(crate) struct Line(FixedVec<u8, 200>);

impl Line {
    pub(crate) fn new() -> Line {
        Line(FixedVec::new(0)).text(b"mapalloc: ")
    }

    pub(crate) fn text(mut self, text: &[u8]) -> Line {
        for &b in text {
            let _ = self.0.push(b);
        }
        self
    }

    /// `0x` and `value` in lower-case hex.
    pub(crate) fn hex(self, value: usize) -> Line {
        let digits = (usize::BITS - value.leading_zeros()).div_ceil(4).max(1);
        self.text(b"0x").digits(value, 16, digits)
    }

    /// `value` in decimal.
    pub(crate) fn dec(self, value: usize) -> Line {
        let mut digits = 1;
        let mut v = value / 10;
        while v != 0 {
            digits += 1;
            v /= 10;
        }
        self.digits(value, 10, digits)
    }

    fn digits(mut self, value: usize, base: usize, digits: u32) -> Line {
        for i in (0..digits).rev() {
            let d = (value / base.wrapping_pow(i)) % base;
            let _ = self.0.push(b"0123456789abcdef".get(d).copied().unwrap_or(b'?'));
        }
        self
    }

    /// Writes the line and aborts.
    #[cold]
    pub(crate) fn abort(self) -> ! {
        let mut line = self.text(b"\n");
        if line.0.is_full() {
            // Cut short: end it with a newline anyway.
            let _ = line.0.swap_remove(line.0.len() - 1);
            let _ = line.0.push(b'\n');
        }
        write_stderr(line.0.as_slice());
        // SAFETY: abort never returns and is always safe to call.
        unsafe { libc::abort() }
    }
}

/// A coarse monotonic clock in milliseconds (vDSO, no system call).
pub(crate) fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the coarse clock cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// 64 random bits from the kernel, or a clock-derived value if `getrandom`
/// is unavailable.
pub(crate) fn random_u64() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: writes at most 8 bytes into `v`; GRND_NONBLOCK never blocks.
    // errno kept: a hardened `free` may draw the link secret here.
    let n = keeping_errno(|| unsafe {
        libc::getrandom((&raw mut v).cast(), 8, libc::GRND_NONBLOCK)
    });
    if n == 8 {
        return v;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_nsec as u64) ^ ((ts.tv_sec as u64) << 32) ^ (&raw const v as u64)
}

/// Reads an environment variable as an unsigned number without allocating.
pub(crate) fn env_usize(name: &core::ffi::CStr) -> Option<usize> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a pointer to
    // a NUL-terminated string owned by the environment.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null results of getenv are NUL-terminated strings.
    let bytes = unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes();
    parse_usize(bytes)
}

fn parse_usize(bytes: &[u8]) -> Option<usize> {
    if bytes.is_empty() {
        return None;
    }
    let mut v: usize = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((b - b'0') as usize)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers() {
        assert_eq!(parse_usize(b"0"), Some(0));
        assert_eq!(parse_usize(b"123"), Some(123));
        assert_eq!(parse_usize(b""), None);
        assert_eq!(parse_usize(b"12x"), None);
        assert_eq!(parse_usize(b"99999999999999999999999"), None);
    }

    /// How many of the pages of `[p, p+len)` are resident.
    fn resident_pages(p: *mut u8, len: usize) -> usize {
        let mut vec = [0u8; 64];
        assert!(len / OS_PAGE <= vec.len());
        // SAFETY: `p` is page-aligned and mapped for `len` bytes; `vec`
        // has a byte for each page.
        assert_eq!(unsafe { libc::mincore(p.cast(), len, vec.as_mut_ptr()) }, 0);
        vec[..len / OS_PAGE].iter().filter(|&&b| b & 1 != 0).count()
    }

    #[test]
    fn prefault_makes_a_fresh_mapping_resident_and_zero() {
        let len = 32 * OS_PAGE;
        for touch in [false, true] {
            let p = map(len).expect("map").as_ptr();
            assert_eq!(resident_pages(p, len), 0, "fresh pages are not resident");
            if touch {
                // SAFETY: a fresh mapping of `len` bytes.
                unsafe { touch_pages(p, len) }; // the old-kernel fallback
            } else {
                prefault(p, len);
            }
            assert_eq!(resident_pages(p, len), 32, "fallback: {touch}");
            // SAFETY: mapped, read-write, `len` bytes.
            let bytes = unsafe { core::slice::from_raw_parts(p, len) };
            assert!(bytes.iter().all(|&b| b == 0));
            assert!(unmap(p, len));
        }
    }

    #[test]
    fn lines_format_numbers() {
        let l = Line::new().text(b"x ").hex(0xbeef).text(b" ").dec(0).text(b" ").dec(1234);
        assert_eq!(l.0.as_slice(), b"mapalloc: x 0xbeef 0 1234");
        assert_eq!(Line::new().hex(0).0.as_slice(), b"mapalloc: 0x0");
        assert_eq!(Line::new().dec(usize::MAX).0.as_slice(), b"mapalloc: 18446744073709551615");
    }

    #[test]
    fn aligned_mapping_is_aligned() {
        for &(len, align, offset) in &[
            (4096, 1 << 22, 0),
            (1 << 20, 1 << 22, 4096),
            (8192, 1 << 23, 1 << 22),
        ] {
            let p = map_aligned(len, align, offset).expect("map");
            assert_eq!((p.as_ptr() as usize + offset) % align, 0);
            // SAFETY: freshly mapped, read-write, `len` bytes.
            unsafe { p.as_ptr().write_bytes(7, len) };
            assert!(unmap(p.as_ptr(), len));
        }
    }
}
