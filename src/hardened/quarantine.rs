//! The quarantine: a heap's freed blocks wait here, zeroed and marked
//! `QUARANTINED` in their slot tables, before their slots go back on a free
//! list. A dangling pointer then meets zeros and not a new owner's data,
//! a second free of a waiting block is a double free, and
//! `malloc(n); free; malloc(n)` does not hand the same block back.
//!
//! Two rings, as hardened_malloc has: a freed block waits first in a queue
//! of `QUEUE` places (so it stays through at least that many frees), then
//! takes a random one of `RANDOM` places and pushes out the block that was
//! there (so when it is reused cannot be predicted). At most `SLOTS`
//! blocks and `MAX_BYTES` bytes wait.
//! What waits is checked to be still zero a few blocks at a time on every
//! refill (`check`), all at once at thread and process exit (`drain`),
//! and when its slot is handed out again (the write-after-free check every
//! allocation makes).

use crate::page::Page;

/// Places in the queue: a block waits through at least this many frees.
const QUEUE: usize = 16;
/// Places in the random ring after it: about this many frees more.
const RANDOM: usize = 16;
/// Places in all.
pub(super) const SLOTS: usize = QUEUE + RANDOM;
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

/// Places `0..QUEUE` are the queue (oldest at `head`), the rest the
/// random ring.
#[repr(C)]
pub(crate) struct Quarantine {
    places: [Waiting; SLOTS],
    /// The sum of the waiting blocks' sizes.
    bytes: usize,
    /// The queue's oldest place, the next to be written.
    head: usize,
    /// The place `check` looks at next.
    cursor: usize,
}

impl Quarantine {
    pub(crate) const EMPTY: Quarantine = Quarantine {
        places: [EMPTY; SLOTS],
        bytes: 0,
        head: 0,
        cursor: 0,
    };

    /// Puts `w` at the queue's tail; the queue's oldest block moves to
    /// place `at` of the random ring (any number: it is taken modulo
    /// `RANDOM`), and `release` is called for the block it pushes out, and
    /// for more if the waiting bytes exceed the bound.
    #[inline(always)]
    pub(super) fn push(&mut self, w: Waiting, at: u64, mut release: impl FnMut(Waiting)) {
        let q = self.head;
        self.head = (q + 1) % QUEUE;
        let oldest = self.places[q];
        self.places[q] = w;
        self.bytes += w.size as usize;
        if oldest.block != 0 {
            let r = QUEUE + (at as usize) % RANDOM;
            let out = self.places[r];
            self.places[r] = oldest;
            if out.block != 0 {
                self.bytes -= out.size as usize;
                release(out);
            }
        }
        if self.bytes > MAX_BYTES {
            self.shed(release);
        }
    }

    /// Pushes out blocks, the random ring's first and then the queue's
    /// oldest, until the bytes are within the bound (the block just queued
    /// last of all).
    #[cold]
    #[inline(never)]
    fn shed(&mut self, mut release: impl FnMut(Waiting)) {
        let order = (QUEUE..SLOTS).chain((0..QUEUE).map(|k| (self.head + k) % QUEUE));
        for j in order {
            if self.bytes <= MAX_BYTES {
                return;
            }
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

    /// Empties the rings, calling `release` for every block in them.
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

    #[test]
    fn a_block_waits_through_the_queue_at_least() {
        let mut q = Quarantine::EMPTY;
        let mut x = 7u64;
        let mut freed_at = std::collections::HashMap::new();
        for p in 1..=5000usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            freed_at.insert(p * 16, p);
            q.push(waiting(p * 16, 16), x, |w| {
                assert!(p - freed_at[&w.block] >= QUEUE, "block {} left after {} frees", w.block, p - freed_at[&w.block]);
            });
        }
    }
}
