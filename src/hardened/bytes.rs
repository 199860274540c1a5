//! What hardened mode writes into a block and checks there: zeros (a free
//! slot is all zero, from its free until it is handed out again) and the
//! canary (every byte between the size asked for and the end of the slot).
//!
//! The canary is one random word per process whose bytes lie in
//! 0x80..=0xfe: never NUL, never ASCII, never 0xff, so an overflow by a
//! string copy (its text or its terminating NUL) or by a `memset` of 0 or
//! -1 always changes it, where a random non-zero byte matched the written
//! one once in 255 (a test's 1-byte overflow of 'A' went unnoticed in a
//! full `.ci/run`). It is laid over memory by address: the byte
//! at address `a` is byte `a % 8` of the word. So any stretch of it can be
//! written and checked with unaligned word accesses, wherever the size
//! asked for ends.

use crate::sync::{AtomicU64, Ordering};
use core::ptr;

static CANARY: AtomicU64 = AtomicU64::new(0);

/// Draws the process's canary (once; later calls keep it).
pub(super) fn init_canary() {
    if CANARY.load(Ordering::Relaxed) != 0 {
        return;
    }
    let mut c = crate::os::random_u64().to_le_bytes();
    for b in &mut c {
        *b |= 0x80;
        if *b == 0xff {
            *b = 0xfe;
        }
    }
    let _ = CANARY.compare_exchange(0, u64::from_le_bytes(c), Ordering::Relaxed, Ordering::Relaxed);
}

/// The canary's 8 bytes as they lie from address `at` on.
#[inline(always)]
fn pattern(at: usize) -> u64 {
    pattern_of(CANARY.load(Ordering::Relaxed), at)
}

/// As `pattern`, for canary word `c` (loaded once by the caller).
#[inline(always)]
fn pattern_of(c: u64, at: usize) -> u64 {
    c.rotate_right((at as u32 & 7) * 8)
}

/// The canary's byte at address `at`.
#[inline(always)]
pub(super) fn pattern_byte(at: usize) -> u8 {
    pattern(at) as u8
}

/// Writes the canary over `[p + from, p + to)`, at least 8 bytes, where
/// `p + to` is 8-aligned (the end of a slot): with two overlapping words up
/// to 16 bytes (most slots), else word by word.
///
/// # Safety
/// The range lies in a block of ours.
#[inline(always)]
pub(super) unsafe fn fill_canary(p: *mut u8, from: usize, to: usize) {
    debug_assert!(to - from >= 8 && (p as usize + to).is_multiple_of(8));
    let base = p as usize;
    let c = CANARY.load(Ordering::Relaxed);
    // SAFETY: every store lies inside `[p + from, p + to)`; where two
    // overlap they write the same bytes (the pattern goes by address).
    unsafe {
        p.add(from).cast::<u64>().write_unaligned(pattern_of(c, base + from));
        p.add(to - 8).cast::<u64>().write_unaligned(c);
        if to - from > 16 {
            let mut at = from + 8;
            while at + 8 < to {
                p.add(at).cast::<u64>().write_unaligned(pattern_of(c, base + at));
                at += 8;
            }
        }
    }
}

/// True if `[p + from, p + to)`, at least 8 bytes ending 8-aligned, still
/// holds the canary.
///
/// # Safety
/// The range lies in a block of ours.
#[inline(always)]
pub(super) unsafe fn canary_intact(p: *const u8, from: usize, to: usize) -> bool {
    debug_assert!(to - from >= 8 && (p as usize + to).is_multiple_of(8));
    let base = p as usize;
    let c = CANARY.load(Ordering::Relaxed);
    // SAFETY: every load lies inside `[p + from, p + to)`.
    unsafe {
        let mut diff = (p.add(from).cast::<u64>().read_unaligned() ^ pattern_of(c, base + from))
            | (p.add(to - 8).cast::<u64>().read() ^ c);
        if to - from > 16 {
            let mut at = from + 8;
            while at + 8 < to {
                diff |= p.add(at).cast::<u64>().read_unaligned() ^ pattern_of(c, base + at);
                at += 8;
            }
        }
        diff == 0
    }
}

/// True if `[p + from, p + to)` is all zero.
///
/// # Safety
/// The range lies in a block of ours.
pub(super) unsafe fn is_zero_range(p: *const u8, from: usize, to: usize) -> bool {
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts(p.add(from), to - from) }
        .iter()
        .all(|&b| b == 0)
}

/// The canary word that lies at the 8-aligned address `at`.
#[inline(always)]
pub(super) fn canary_word(at: usize) -> u64 {
    debug_assert!(at.is_multiple_of(8));
    CANARY.load(Ordering::Relaxed)
}

/// Zeroes the `size` bytes of block `p` (a multiple of 16, 16-aligned),
/// inline for the small sizes that dominate.
///
/// # Safety
/// `p` is a block of `size` bytes.
#[inline(always)]
pub(super) unsafe fn zero(p: *mut u8, size: usize) {
    // SAFETY: every store lies inside the block; 16-byte aligned.
    unsafe {
        if size <= 64 {
            let q = p.cast::<u128>();
            q.write(0);
            q.byte_add(size - 16).write(0);
            if size > 32 {
                q.add(1).write(0);
                q.byte_add(size - 32).write(0);
            }
        } else {
            ptr::write_bytes(p, 0, size);
        }
    }
}

/// True if the `size` bytes of block `p` (a multiple of 16, 16-aligned)
/// are all zero: the write-after-free check of a slot being handed out.
///
/// # Safety
/// `p` is a block of `size` bytes.
#[inline(always)]
pub(super) unsafe fn is_zero(p: *const u8, size: usize) -> bool {
    // SAFETY: every load lies inside the block; 16-byte aligned.
    unsafe {
        if size <= 64 {
            let q = p.cast::<u128>();
            let mut any = q.read() | q.byte_add(size - 16).read();
            if size > 32 {
                any |= q.add(1).read() | q.byte_add(size - 32).read();
            }
            return any == 0;
        }
        is_zero_long(p, size)
    }
}

/// `is_zero` for blocks over 64 bytes: 64 bytes a step, which the
/// compiler turns into vector loads.
///
/// # Safety
/// As `is_zero`.
#[inline(never)]
unsafe fn is_zero_long(p: *const u8, size: usize) -> bool {
    let words = p.cast::<u128>();
    let mut at = 0;
    // SAFETY: `size` is a multiple of 16: every load lies in the block.
    unsafe {
        while at + 4 <= size / 16 {
            let w = words.add(at);
            if (w.read() | w.add(1).read() | w.add(2).read() | w.add(3).read()) != 0 {
                return false;
            }
            at += 4;
        }
        while at < size / 16 {
            if words.add(at).read() != 0 {
                return false;
            }
            at += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_bytes_are_never_nul_ascii_or_all_ones() {
        init_canary();
        for at in 0..8 {
            let b = pattern_byte(at);
            assert!((0x80..=0xfe).contains(&b), "byte {at} is {b:#04x}");
        }
    }

    #[test]
    fn the_canary_covers_any_stretch_and_notices_any_byte() {
        init_canary();
        let mut block = [0u128; 8];
        let p = block.as_mut_ptr().cast::<u8>();
        for from in 0..40 {
            for to in ((from + 8_usize).next_multiple_of(8)..=128).step_by(8) {
                // SAFETY: inside the 128-byte block.
                unsafe {
                    p.write_bytes(0, 128);
                    fill_canary(p, from, to);
                    assert!(canary_intact(p, from, to), "{from}..{to}");
                    for i in 0..128 {
                        let b = *p.add(i);
                        assert_eq!(b != 0, (from..to).contains(&i), "byte {i} of {from}..{to}");
                    }
                    for i in [from, to - 1, (from + to) / 2] {
                        let old = *p.add(i);
                        *p.add(i) ^= 0x10;
                        assert!(!canary_intact(p, from, to), "byte {i} of {from}..{to}");
                        *p.add(i) = old;
                    }
                }
            }
        }
    }

    #[test]
    fn zero_checks_see_every_byte() {
        for size in (16..=1024).step_by(16) {
            let mut block = vec![0u128; size / 16];
            let p = block.as_mut_ptr().cast::<u8>();
            // SAFETY: inside the block.
            unsafe {
                assert!(is_zero(p, size));
                for i in 0..size {
                    *p.add(i) = 1;
                    assert!(!is_zero(p, size), "size {size} byte {i}");
                    zero(p, size);
                    assert!(is_zero(p, size));
                }
            }
        }
    }
}
