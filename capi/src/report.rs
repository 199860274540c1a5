//! The statistics report of `malloc_stats()` and `MAPALLOC_SHOW_STATS=1`:
//! formatted by hand into a stack buffer and written with `write(2)`, so
//! printing it allocates nothing and takes no lock (it runs at exit, when
//! other threads may still hold anything).

use core::ffi::c_int;
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use mapalloc::Stats;

/// Set by the constructor when `MAPALLOC_SHOW_STATS` is set to anything
/// but empty or `0`.
static SHOW_AT_EXIT: AtomicBool = AtomicBool::new(false);

/// Room for the whole report (about 400 bytes).
const REPORT_LEN: usize = 1024;

/// A byte buffer that ignores what does not fit (shared with `info`).
pub(crate) struct Buf<'a> {
    bytes: &'a mut [u8],
    len: usize,
}

impl<'a> Buf<'a> {
    pub(crate) fn new(bytes: &'a mut [u8]) -> Self {
        Buf { bytes, len: 0 }
    }

    /// Bytes written (at most the buffer's length).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// True if everything pushed so far fitted.
    pub(crate) fn fitted(&self) -> bool {
        self.len < self.bytes.len()
    }

    pub(crate) fn push(&mut self, s: &[u8]) {
        for &b in s {
            if let Some(slot) = self.bytes.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    pub(crate) fn number(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn line(&mut self, name: &[u8], v: u64) {
        self.push(b"  ");
        self.push(name);
        for _ in name.len()..20 {
            self.push(b" ");
        }
        self.number(v);
        self.push(b"\n");
    }
}

/// Writes the report for `s` (of process `pid`) into `out`; returns its
/// length (truncated to `out.len()`).
pub fn format(s: &Stats, pid: u32, out: &mut [u8]) -> usize {
    let mut b = Buf::new(out);
    b.push(b"mapalloc stats (pid ");
    b.number(u64::from(pid));
    b.push(b"):\n");
    let rows: [(&[u8], u64); 13] = [
        (b"mapped_bytes", s.mapped_bytes as u64),
        (b"in_use_bytes", s.in_use_bytes as u64),
        (b"slab_bytes", s.slab_bytes as u64),
        (b"large_bytes", s.large_bytes as u64),
        (b"large_cached_bytes", s.large_cached_bytes as u64),
        (b"segments", s.segments as u64),
        (b"large_mappings", s.large_mappings as u64),
        (b"abandoned_segments", s.abandoned_segments as u64),
        (b"heaps", s.heaps as u64),
        (b"mmap_calls", s.mmap_calls),
        (b"munmap_calls", s.munmap_calls),
        (b"mremap_calls", s.mremap_calls),
        (b"madvise_calls", s.madvise_calls),
    ];
    for (name, v) in rows {
        b.line(name, v);
    }
    b.len
}

/// Writes the current report to `fd`; false if nothing could be written.
pub fn write_to(fd: c_int) -> bool {
    let mut buf = [0u8; REPORT_LEN];
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let len = format(&mapalloc::stats(), pid, &mut buf);
    write_all(fd, &buf[..len])
}

/// Writes `bytes` to `fd`; false if the first write fails (a closed fd).
fn write_all(fd: c_int, bytes: &[u8]) -> bool {
    let mut rest = bytes;
    let mut wrote = false;
    while !rest.is_empty() {
        // SAFETY: `rest` is a live byte slice; write reads at most its length.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            wrote = true;
            rest = rest.get(n as usize..).unwrap_or(&[]);
        } else if n < 0 && errno() == libc::EINTR {
            continue;
        } else {
            return wrote;
        }
    }
    true
}

fn errno() -> c_int {
    // SAFETY: glibc's errno location is valid for the calling thread.
    unsafe { *libc::__errno_location() }
}

/// Reads `MAPALLOC_SHOW_STATS` (from the constructor). When it is on,
/// also keeps a duplicate of stderr, close-on-exec and numbered 100 or
/// more, for programs that close stderr before they exit (coreutils
/// does): the report goes to fd 2 if it is open, else to the duplicate.
pub fn init() {
    // SAFETY: a NUL-terminated name; getenv allocates nothing and returns
    // null or a NUL-terminated string.
    let v = unsafe { libc::getenv(c"MAPALLOC_SHOW_STATS".as_ptr()) };
    // SAFETY: non-null getenv results are NUL-terminated strings.
    let on = !v.is_null() && enabled(unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes());
    if on && SAVED_STDERR.load(Ordering::Relaxed) < 0 {
        // SAFETY: F_DUPFD_CLOEXEC on fd 2 only creates a new descriptor
        // (or fails with -1, which we store as "none").
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 100) };
        SAVED_STDERR.store(fd, Ordering::Relaxed);
    }
    SHOW_AT_EXIT.store(on, Ordering::Relaxed);
}

/// A duplicate of the stderr the process started with, or -1.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);

/// Whether an option value turns the report on.
fn enabled(value: &[u8]) -> bool {
    !value.is_empty() && value != b"0"
}

/// The exit hook (from the destructor).
pub fn at_exit() {
    if SHOW_AT_EXIT.load(Ordering::Relaxed) && !write_to(2) {
        let saved = SAVED_STDERR.load(Ordering::Relaxed);
        if saved >= 0 {
            write_to(saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_every_counter() {
        let s = Stats {
            mapped_bytes: 4194304,
            in_use_bytes: 123,
            slab_bytes: 0,
            large_bytes: 18446744073709551615,
            madvise_calls: 7,
            ..Stats::default()
        };
        let mut out = [0u8; REPORT_LEN];
        let n = format(&s, 4321, &mut out);
        let text = core::str::from_utf8(&out[..n]).unwrap();
        assert!(text.starts_with("mapalloc stats (pid 4321):\n"));
        assert!(text.contains("\n  mapped_bytes        4194304\n"));
        assert!(text.contains("\n  in_use_bytes        123\n"));
        assert!(text.contains("\n  slab_bytes          0\n"));
        assert!(text.contains("\n  large_bytes         18446744073709551615\n"));
        assert!(text.contains("\n  madvise_calls       7\n"));
        assert_eq!(text.lines().count(), 14);
    }

    #[test]
    fn truncates_instead_of_overflowing() {
        let mut out = [0u8; 30];
        assert_eq!(format(&Stats::default(), 1, &mut out), 30);
    }

    #[test]
    fn option_values() {
        assert!(enabled(b"1"));
        assert!(enabled(b"yes"));
        assert!(!enabled(b"0"));
        assert!(!enabled(b""));
    }
}
