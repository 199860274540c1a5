//! The quarantine: a heap's freed blocks wait here, zeroed and marked
//! `QUARANTINED` in their slot tables, before their slots go back on a free
//! list. A dangling pointer then meets zeros and not a new owner's data,
//! a second free of a waiting block is a double free, and
//! `malloc(n); free; malloc(n)` does not hand the same block back.
//!
//! A random ring: each freed block takes a random one of `SLOTS` places and
//! pushes out the block that was there, so when a block is reused cannot
//! be predicted, and at most `SLOTS` blocks and `MAX_BYTES` bytes wait.
//! What waits is checked to be still zero a few blocks at a time on every
//! refill (`check`), all at once at thread and process exit (`drain`),
//! and when its slot is handed out again (the write-after-free check every
//! allocation makes).

use crate::page::Page;

/// Places in the ring. The blocks wait through about this many frees.
pub(super) const SLOTS: usize = 32;
/// The most bytes of blocks that wait at once: big blocks pass through
/// sooner, so a heap of big blocks does not keep megabytes of zeros.
const MAX_BYTES: usize = 512 << 10;

/// A block waiting in the quarantine, with where its slot is (so that
/// releasing it reads nothing but its descriptor and table).
#[derive(Clone, Copy)]
pub(super) struct Waiting {
    /// The block's address (0: an empty place).
    pub(super) block: usize,
    /// Its slab's head descriptor.
    pub(super) page: *mut Page,
    /// Its slot number in the slab.
    pub(super) slot: u16,
    /// Its size in bytes.
    pub(super) size: u32,
}

const EMPTY: Waiting = Waiting {
    block: 0,
    page: core::ptr::null_mut(),
    slot: 0,
    size: 0,
};

#[repr(C)]
pub(crate) struct Quarantine {
    places: [Waiting; SLOTS],
    /// The sum of the waiting blocks' sizes.
    bytes: usize,
    /// The place `check` looks at next.
    cursor: usize,
}

impl Quarantine {
    pub(crate) const EMPTY: Quarantine = Quarantine {
        places: [EMPTY; SLOTS],
        bytes: 0,
        cursor: 0,
    };

    /// Puts `w` in place `at` (any number: it is taken modulo `SLOTS`), and
    /// calls `release` for the block it pushes out, and for more if the
    /// waiting bytes exceed the bound.
    #[inline(always)]
    pub(super) fn push(&mut self, w: Waiting, at: u64, mut release: impl FnMut(Waiting)) {
        let i = (at as usize) % SLOTS;
        let old = self.places[i];
        self.places[i] = w;
        self.bytes = self.bytes + w.size as usize - old.size as usize;
        if old.block != 0 {
            release(old);
        }
        if self.bytes > MAX_BYTES {
            self.shed(i, release);
        }
    }

    /// Pushes out blocks after place `keep` (not it) until the bytes are
    /// within the bound.
    #[cold]
    #[inline(never)]
    fn shed(&mut self, keep: usize, mut release: impl FnMut(Waiting)) {
        for k in 1..SLOTS {
            if self.bytes <= MAX_BYTES {
                return;
            }
            let j = (keep + k) % SLOTS;
            let old = self.places[j];
            if old.block != 0 {
                self.bytes -= old.size as usize;
                self.places[j] = EMPTY;
                release(old);
            }
        }
    }

    /// Calls `check` with the blocks of the next places round the ring,
    /// until about `bytes` bytes are covered (at least one block, at most
    /// the whole ring).
    pub(super) fn check(&mut self, bytes: usize, mut check: impl FnMut(Waiting)) {
        let mut covered = 0;
        for _ in 0..SLOTS {
            let i = self.cursor % SLOTS;
            self.cursor = i + 1;
            let w = self.places[i];
            if w.block != 0 {
                check(w);
                covered += w.size as usize;
                if covered >= bytes {
                    return;
                }
            }
        }
    }

    /// Empties the ring, calling `release` for every block in it.
    pub(super) fn drain(&mut self, mut release: impl FnMut(Waiting)) {
        for i in 0..SLOTS {
            let old = self.places[i];
            if old.block != 0 {
                self.places[i] = EMPTY;
                release(old);
            }
        }
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(block: usize, size: u32) -> Waiting {
        Waiting { block, size, ..EMPTY }
    }

    #[test]
    fn blocks_wait_and_bytes_stay_bounded() {
        let mut q = Quarantine::EMPTY;
        let mut out = Vec::new();
        let mut x = 1u64;
        for p in 1..=1000usize {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            q.push(waiting(p * 16, 16), x >> 33, |w| out.push(w.block));
            assert!(!out.contains(&(p * 16)), "a block is not released as it goes in");
        }
        assert!(out.len() >= 1000 - SLOTS);
        let mut rest = Vec::new();
        q.drain(|w| rest.push(w.block));
        out.extend(rest);
        out.sort();
        assert_eq!(out, (1..=1000).map(|p| p * 16).collect::<Vec<_>>(), "each block leaves once");

        let mut big = Vec::new();
        for p in 1..=20usize {
            q.push(waiting(p << 20, 100 << 10), p as u64, |w| big.push(w.block));
            assert!(q.bytes <= MAX_BYTES);
        }
    }
}
