//! Helpers shared by the integration tests (not a test target itself).
//!
//! Every test binary pulls this in with `mod common;` and uses only part of
//! it, so unused-item warnings are silenced for this module.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

pub mod child;
pub mod seccomp;
pub mod smaps;
pub mod stats;

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

/// SplitMix64: tiny, seedable, good enough for test workloads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo <= hi);
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// The SplitMix64 finaliser: a bijective 64-bit mixer.
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Period of the fill pattern: a prime, so that a block copied with a
/// shifted offset (or swapped with another block's contents) is caught.
pub const PERIOD: usize = 65_521;
const TABLE_LEN: usize = 2 * PERIOD;

const fn build_table() -> [u8; TABLE_LEN] {
    let mut t = [0u8; TABLE_LEN];
    let mut i = 0;
    while i < PERIOD {
        let b = (mix64(i as u64 ^ 0x05EE_D0F7_AB1E) >> 56) as u8;
        t[i] = b;
        t[i + PERIOD] = b;
        i += 1;
    }
    t
}

/// Random bytes, repeated twice, so any `PERIOD`-long window can be copied
/// out with one `memcpy` (fast even in debug builds).
static TABLE: [u8; TABLE_LEN] = build_table();

fn phase(id: u64, offset: usize) -> usize {
    ((mix64(id) % PERIOD as u64) as usize + offset % PERIOD) % PERIOD
}

/// The expected byte at `offset` of the block identified by `id`.
pub fn pattern_byte(id: u64, offset: usize) -> u8 {
    TABLE[phase(id, offset)]
}

/// Writes the pattern of block `id` into `len` bytes at `ptr`, where `ptr`
/// is at byte `start_off` of that block.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
pub unsafe fn fill_raw(ptr: *mut u8, len: usize, id: u64, start_off: usize) {
    let mut done = 0;
    while done < len {
        let p = phase(id, start_off + done);
        let n = (len - done).min(PERIOD);
        // SAFETY: `p + n <= 2 * PERIOD == TABLE_LEN`, and the caller
        // guarantees `ptr..ptr + len` is writable; `done + n <= len`.
        // The table is a static, so it cannot overlap a heap block.
        unsafe { core::ptr::copy_nonoverlapping(TABLE.as_ptr().add(p), ptr.add(done), n) };
        done += n;
    }
}

/// Fills a slice with the pattern of block `id` starting at `start_off`.
pub fn fill(buf: &mut [u8], id: u64, start_off: usize) {
    // SAFETY: a `&mut [u8]` is valid for writes of its whole length.
    unsafe { fill_raw(buf.as_mut_ptr(), buf.len(), id, start_off) }
}

/// Returns the offset (relative to `buf`) of the first byte that differs
/// from the pattern of block `id` starting at `start_off`.
pub fn check(buf: &[u8], id: u64, start_off: usize) -> Option<usize> {
    let mut done = 0;
    while done < buf.len() {
        let p = phase(id, start_off + done);
        let n = (buf.len() - done).min(PERIOD);
        let want = &TABLE[p..p + n];
        let got = &buf[done..done + n];
        if got != want {
            let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
            return Some(done + i);
        }
        done += n;
    }
    None
}

/// Panics with a readable message if `buf` does not hold block `id`'s pattern.
#[track_caller]
pub fn assert_pattern(buf: &[u8], id: u64, start_off: usize, what: &str) {
    if let Some(i) = check(buf, id, start_off) {
        panic!(
            "{what}: pattern mismatch at byte {} of {} (block id {id}): got {:#04x}, want {:#04x}",
            start_off + i,
            buf.len(),
            buf[i],
            pattern_byte(id, start_off + i)
        );
    }
}

static ZEROS: [u8; 64 * KIB] = [0; 64 * KIB];

/// Offset of the first non-zero byte, compared with `memcmp` in chunks.
pub fn first_nonzero(buf: &[u8]) -> Option<usize> {
    for (ci, chunk) in buf.chunks(ZEROS.len()).enumerate() {
        if chunk != &ZEROS[..chunk.len()] {
            let i = chunk.iter().position(|&b| b != 0).unwrap();
            return Some(ci * ZEROS.len() + i);
        }
    }
    None
}

/// Resident set size in bytes: second field of `/proc/self/statm` times the
/// page size.
pub fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = s
        .split_whitespace()
        .nth(1)
        .expect("statm has a resident field")
        .parse()
        .expect("statm resident field is a number");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert!(page > 0, "sysconf(_SC_PAGESIZE) failed");
    pages * page as usize
}

/// Reads a `usize` from the environment, falling back to `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Tests whose assertions look at process-wide state (`stats()`, RSS, glibc
/// counters) take this lock so that the other tests of the same binary,
/// which libtest runs on parallel threads, do not disturb the numbers.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Formats a byte count for messages.
pub fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}
