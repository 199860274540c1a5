//! Seeded random sequences of raw `GlobalAlloc` calls on `GLOBAL`:
//! alloc / alloc_zeroed / realloc / dealloc with skewed sizes and random
//! alignments. Every block carries a pattern derived from (id, offset) that
//! is checked in full before each realloc and free; realloc must keep the
//! first min(old, new) bytes; live blocks must never overlap.
//!
//! Environment:
//! * `MAPALLOC_TEST_SEED`: seed (decimal) instead of the fixed default;
//! * `MAPALLOC_TEST_OPS`: number of operations (per thread in the threaded
//!   test is a quarter of it).
//!
//! The seed is printed at the start (libtest shows it for a failing test)
//! and is part of every failure message.

mod common;

use common::{KIB, MIB, Rng, check, env_usize, fill_raw, first_nonzero, pattern_byte};
use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

const DEFAULT_SEED: u64 = 0x00C0_FFEE_D00D;
const DEFAULT_OPS: usize = if cfg!(debug_assertions) {
    400_000
} else {
    1_000_000
};
const MAX_LIVE: usize = 3_000;

struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    id: u64,
}

// SAFETY: a `Block` owns its allocation exclusively; moving it to another
// thread (which then frees it) is exactly the remote-free case under test.
unsafe impl Send for Block {}

impl Block {
    fn layout(&self) -> Layout {
        Layout::from_size_align(self.size, self.align).unwrap()
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the block is live and its `size` bytes are initialised
        // (filled at allocation, and every realloc fills the new tail).
        unsafe { std::slice::from_raw_parts(self.ptr, self.size) }
    }
}

struct Run {
    seed: u64,
    op: usize,
    rng: Rng,
    next_id: u64,
    live: Vec<Block>,
    /// start address -> (end address, block id)
    ranges: BTreeMap<usize, (usize, u64)>,
    peak_live: usize,
}

impl Run {
    fn new(seed: u64) -> Self {
        Run {
            seed,
            op: 0,
            rng: Rng::new(seed),
            next_id: 1,
            live: Vec::new(),
            ranges: BTreeMap::new(),
            peak_live: 0,
        }
    }

    #[track_caller]
    fn fail(&self, msg: std::fmt::Arguments<'_>) -> ! {
        panic!(
            "random_ops failure (seed {} = {:#x}, op {}): {msg}\nrerun with MAPALLOC_TEST_SEED={}",
            self.seed, self.seed, self.op, self.seed
        )
    }

    /// Mostly <= 1 KiB, some up to 1 MiB, rarely up to 16 MiB.
    fn random_size(&mut self) -> usize {
        let r = self.rng.below(10_000);
        if r < 5_000 {
            self.rng.range(1, 64)
        } else if r < 9_000 {
            self.rng.range(65, KIB)
        } else if r < 9_900 {
            self.rng.range(KIB + 1, 64 * KIB)
        } else if r < 9_997 {
            self.rng.range(64 * KIB + 1, MIB)
        } else {
            self.rng.range(MIB + 1, 16 * MIB)
        }
    }

    fn random_align(&mut self) -> usize {
        if self.rng.below(10) < 7 {
            1 << self.rng.below(5)
        } else {
            1 << self.rng.range(5, 12)
        }
    }

    fn verify(&self, b: &Block, what: &str) {
        if let Some(i) = check(b.bytes(), b.id, 0) {
            self.fail(format_args!(
                "{what}: block id {} ({} bytes, align {}, at {:p}) byte {i} is {:#04x}, want {:#04x}",
                b.id,
                b.size,
                b.align,
                b.ptr,
                b.bytes()[i],
                pattern_byte(b.id, i)
            ));
        }
    }

    fn add_range(&mut self, b: &Block) {
        let (start, end) = (b.ptr as usize, b.ptr as usize + b.size);
        if b.ptr.is_null() {
            self.fail(format_args!(
                "allocation of {} bytes (align {}) returned null",
                b.size, b.align
            ));
        }
        if start % b.align != 0 {
            self.fail(format_args!("{:p} is not aligned to {}", b.ptr, b.align));
        }
        if let Some((&s, &(e, id))) = self.ranges.range(..=start).next_back()
            && e > start
        {
            self.fail(format_args!(
                "block id {} [{start:#x}, {end:#x}) overlaps live block id {id} [{s:#x}, {e:#x})",
                b.id
            ));
        }
        if let Some((&s, &(e, id))) = self.ranges.range(start..).next()
            && s < end
        {
            self.fail(format_args!(
                "block id {} [{start:#x}, {end:#x}) overlaps live block id {id} [{s:#x}, {e:#x})",
                b.id
            ));
        }
        self.ranges.insert(start, (end, b.id));
    }

    fn remove_range(&mut self, b: &Block) {
        match self.ranges.remove(&(b.ptr as usize)) {
            Some((_, id)) if id == b.id => {}
            other => self.fail(format_args!(
                "range map out of sync for block id {}: {other:?}",
                b.id
            )),
        }
    }

    fn alloc(&mut self, zeroed: bool) {
        let size = self.random_size();
        let align = self.random_align();
        let layout = Layout::from_size_align(size, align).unwrap();
        let ptr = if zeroed {
            // SAFETY: size > 0.
            unsafe { GLOBAL.alloc_zeroed(layout) }
        } else {
            // SAFETY: size > 0.
            unsafe { GLOBAL.alloc(layout) }
        };
        let b = Block {
            ptr,
            size,
            align,
            id: self.next_id,
        };
        self.next_id += 1;
        self.add_range(&b);
        if zeroed && let Some(i) = first_nonzero(b.bytes()) {
            self.fail(format_args!(
                "alloc_zeroed({size}, {align}) byte {i} is not zero"
            ));
        }
        // SAFETY: fresh block of `size` bytes.
        unsafe { fill_raw(b.ptr, size, b.id, 0) };
        self.live.push(b);
    }

    fn free(&mut self, i: usize) {
        let b = self.live.swap_remove(i);
        self.verify(&b, "before dealloc");
        self.remove_range(&b);
        // SAFETY: allocated with this layout, freed once.
        unsafe { GLOBAL.dealloc(b.ptr, b.layout()) };
    }

    fn realloc(&mut self, i: usize) {
        let new_size = match self.rng.below(4) {
            // Small relative change: exercises in-place growth/shrink.
            0 => {
                let cur = self.live[i].size;
                let delta = self.rng.range(0, cur / 4 + 16);
                if self.rng.one_in(2) {
                    cur + delta
                } else {
                    cur.saturating_sub(delta).max(1)
                }
            }
            _ => self.random_size(),
        };
        let old = &self.live[i];
        self.verify(old, "before realloc");
        let (old_ptr, old_size, align, id) = (old.ptr, old.size, old.align, old.id);
        let old_layout = old.layout();
        let old_block = Block {
            ptr: old_ptr,
            size: old_size,
            align,
            id,
        };
        self.remove_range(&old_block);
        // SAFETY: `old_ptr` was allocated with `old_layout`; `new_size` > 0
        // and rounding it to `align` (<= 4096) does not overflow.
        let ptr = unsafe { GLOBAL.realloc(old_ptr, old_layout, new_size) };
        let nb = Block {
            ptr,
            size: new_size,
            align,
            id,
        };
        self.add_range(&nb);
        let keep = old_size.min(new_size);
        // SAFETY: the first `keep` bytes are initialised (copied or kept).
        let kept = unsafe { std::slice::from_raw_parts(ptr, keep) };
        if let Some(j) = check(kept, id, 0) {
            self.fail(format_args!(
                "realloc {old_size} -> {new_size} (align {align}, {old_ptr:p} -> {ptr:p}) lost byte {j}: {:#04x}, want {:#04x}",
                kept[j],
                pattern_byte(id, j)
            ));
        }
        if new_size > keep {
            // SAFETY: `ptr` is valid for `new_size` bytes.
            unsafe { fill_raw(ptr.add(keep), new_size - keep, id, keep) };
        }
        self.live[i] = nb;
    }

    fn run(&mut self, ops: usize) {
        for op in 0..ops {
            self.op = op;
            // Alternate between growing and shrinking phases so that the
            // live set swings between nearly empty and MAX_LIVE.
            let growing = (op / 20_000) % 2 == 0;
            let r = self.rng.below(100);
            let n = self.live.len();
            if n == 0 || (n < MAX_LIVE && r < if growing { 45 } else { 25 }) {
                let zeroed = self.rng.one_in(4);
                self.alloc(zeroed);
            } else if n >= MAX_LIVE || r >= 75 {
                let i = self.rng.below(n);
                self.free(i);
            } else {
                let i = self.rng.below(n);
                self.realloc(i);
            }
            self.peak_live = self.peak_live.max(self.live.len());
            if self.live.len() != self.ranges.len() {
                self.fail(format_args!(
                    "{} live blocks but {} ranges",
                    self.live.len(),
                    self.ranges.len()
                ));
            }
        }
        // Spot-check everything once more at the end.
        for b in &self.live {
            self.verify(b, "at end of run");
        }
    }

    fn free_all(&mut self) {
        while !self.live.is_empty() {
            self.free(self.live.len() - 1);
        }
        assert!(self.ranges.is_empty());
    }
}

fn seed_and_ops() -> (u64, usize) {
    let seed = env_usize("MAPALLOC_TEST_SEED", DEFAULT_SEED as usize) as u64;
    let ops = env_usize("MAPALLOC_TEST_OPS", DEFAULT_OPS);
    (seed, ops)
}

#[test]
fn random_ops_single_thread() {
    let (seed, ops) = seed_and_ops();
    eprintln!("random_ops_single_thread: seed {seed} ({seed:#x}), {ops} ops");
    let mut run = Run::new(seed);
    run.run(ops);
    assert!(
        run.peak_live >= MAX_LIVE.min(ops / 4),
        "the live set never grew (peak {})",
        run.peak_live
    );
    run.free_all();
}

#[test]
fn random_ops_threads_with_remote_free() {
    const THREADS: usize = 4;
    let (seed, ops) = seed_and_ops();
    eprintln!(
        "random_ops_threads_with_remote_free: seeds {seed}+0..{THREADS}, {} ops per thread",
        ops / 4
    );
    let handles: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut run = Run::new(seed.wrapping_add(t));
                run.run(ops / 4);
                // Hand the survivors to the main thread: they are freed
                // there, after this thread (and its heap) is gone.
                std::mem::take(&mut run.live)
            })
        })
        .collect();
    let mut survivors = Vec::new();
    for (t, h) in handles.into_iter().enumerate() {
        let blocks = h
            .join()
            .unwrap_or_else(|_| panic!("random_ops thread {t} (seed {}) failed", seed + t as u64));
        survivors.push((t as u64, blocks));
    }
    // Re-check (and check for overlaps across threads) then free remotely.
    let mut all = Run::new(seed);
    for (t, blocks) in survivors {
        all.seed = seed + t;
        for b in blocks {
            all.verify(&b, "survivor freed by another thread");
            all.add_range(&b);
            all.live.push(b);
        }
    }
    all.free_all();
}
