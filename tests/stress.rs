//! Seeded multi-thread stress test.
//!
//! Producer/consumer pairs pass blocks of random sizes (mostly small, some
//! up to 2 MiB, random alignments) over channels; both sides reallocate
//! and free them, consumers send some back, and a churn thread keeps
//! spawning short-lived threads that pick blocks from a shared pool. The
//! whole cast of threads is replaced every generation, and the blocks
//! still alive are handed to the next generation, so blocks routinely
//! outlive the thread (and the heap) that allocated them.
//!
//! Every block is filled with a pattern derived from (block id, offset) and
//! checked in full before every realloc and free, and after every move.
//! At the end, after `collect()`, the allocator's statistics must be back
//! near where they started.
//!
//! Environment:
//! * `MAPALLOC_STRESS_SEED`: the seed (decimal or 0x-hex);
//! * `MAPALLOC_STRESS_OPS`: total number of operations;
//! * `MAPALLOC_STRESS_LONG=1`: 100 times the operations (as the ignored
//!   `stress_long` test does).
//!
//! `cargo test --test stress -- --nocapture` shows the seed and counts.

use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Instant;

mod common;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const DEFAULT_SEED: u64 = 0x5EED_57E5_5000;
/// About 5-10 s in a debug build on two cores (a release build is some
/// three times faster); the long run does 100 times as many.
const DEFAULT_OPS: usize = 3_000_000;
const PAIRS: usize = 2;
const GENERATIONS: usize = 12;
/// Most blocks one thread keeps at a time.
const MAX_HELD: usize = 96;

// ---------------------------------------------------------------------------
// Random numbers and fill patterns.

/// SplitMix64.
#[derive(Clone)]
struct Rng(u64);

use common::{fill, mix64};

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(mix64(
            seed ^ mix64(stream.wrapping_add(0x51_7CC1_B727_220A)),
        ))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self) -> usize {
        self.below(100)
    }
}

// Fill patterns come from `tests/common` (a prime-period table, so a
// block copied to a shifted offset or swapped with another does not match).

// ---------------------------------------------------------------------------
// Blocks.

struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    id: u64,
}

// SAFETY: a `Block` owns its allocation; sending it to another thread
// (which then reallocates or frees it) is exactly what is under test.
unsafe impl Send for Block {}

impl Block {
    fn layout(&self) -> Layout {
        Layout::from_size_align(self.size, self.align).unwrap()
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the block is live and all `size` bytes were written.
        unsafe { std::slice::from_raw_parts(self.ptr, self.size) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the block is live, `size` bytes long, and ours alone.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.size) }
    }

    #[track_caller]
    fn check(&self, ctx: &Ctx, what: &str) {
        if let Some(off) = common::check(self.bytes(), self.id, 0) {
            ctx.fail(format_args!(
                "{what}: block {:#x} ({} B, align {}) at {:?} corrupted at byte {off}: {:#04x}, want {:#04x}",
                self.id,
                self.size,
                self.align,
                self.ptr,
                self.bytes()[off],
                common::pattern_byte(self.id, off)
            ));
        }
    }
}

/// Size of a new block: mostly small, some medium, a few large.
fn random_size(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=699 => rng.range(1, 256),
        700..=919 => rng.range(257, 8 * KIB),
        920..=984 => rng.range(8 * KIB, 128 * KIB),
        _ => rng.range(128 * KIB, 2 * MIB),
    }
}

fn random_align(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=79 => 8,
        80..=89 => 16,
        90..=96 => 1 << rng.range(5, 12),
        97..=98 => 1 << rng.range(13, 16),
        _ => 1 << rng.range(17, 21),
    }
}

/// Per-run state shared by all threads.
struct Ctx {
    seed: u64,
    /// Operations left to hand out.
    budget: AtomicUsize,
    next_id: AtomicUsize,
    allocs: AtomicUsize,
    reallocs: AtomicUsize,
    frees: AtomicUsize,
    sends: AtomicUsize,
    threads: AtomicUsize,
    bytes: AtomicUsize,
}

impl Ctx {
    #[track_caller]
    fn fail(&self, msg: std::fmt::Arguments<'_>) -> ! {
        panic!("stress (seed {:#x}): {msg}", self.seed);
    }

    /// Takes one operation from the budget; false when it is spent.
    fn take_op(&self) -> bool {
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok()
    }

    fn alloc(&self, rng: &mut Rng) -> Block {
        let size = random_size(rng);
        let align = if size > 128 * KIB || rng.below(4) > 0 {
            random_align(rng)
        } else {
            8
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u64;
        let layout = Layout::from_size_align(size, align).unwrap();
        let zeroed = rng.below(5) == 0;
        // SAFETY: `size >= 1`.
        let ptr = unsafe {
            if zeroed {
                std::alloc::alloc_zeroed(layout)
            } else {
                std::alloc::alloc(layout)
            }
        };
        if ptr.is_null() {
            self.fail(format_args!("alloc({size}, {align}) returned null"));
        }
        if !(ptr as usize).is_multiple_of(align) {
            self.fail(format_args!(
                "alloc({size}, {align}) = {ptr:?} is misaligned"
            ));
        }
        // SAFETY: `ptr` is a live block of ours.
        let usable = unsafe { mapalloc::usable_size(ptr) };
        if usable < size {
            self.fail(format_args!("usable_size({ptr:?}) = {usable} < {size}"));
        }
        let mut b = Block {
            ptr,
            size,
            align,
            id,
        };
        if zeroed && common::first_nonzero(b.bytes()).is_some() {
            self.fail(format_args!(
                "alloc_zeroed({size}, {align}) = {ptr:?} is not zero"
            ));
        }
        fill(b.bytes_mut(), id, 0);
        self.allocs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        b
    }

    fn realloc(&self, b: &mut Block, rng: &mut Rng, what: &str) {
        b.check(self, what);
        let old = b.size;
        let new = match rng.below(10) {
            0..=3 => old.saturating_mul(rng.range(2, 4)).min(2 * MIB),
            4..=6 => (old / rng.range(1, 4)).max(1),
            7..=8 => random_size(rng),
            _ => old + rng.range(1, 64), // nudges, usually in place
        };
        // SAFETY: `b` is a live block of `b.layout()`; `new >= 1` and at most
        // 2 MiB, so it cannot overflow isize when rounded up.
        let q = unsafe { std::alloc::realloc(b.ptr, b.layout(), new) };
        if q.is_null() {
            self.fail(format_args!(
                "{what}: realloc({old} -> {new}, align {}) returned null",
                b.align
            ));
        }
        if !(q as usize).is_multiple_of(b.align) {
            self.fail(format_args!(
                "{what}: realloc to {new} lost alignment {}: {q:?}",
                b.align
            ));
        }
        b.ptr = q;
        b.size = old.min(new);
        b.check(self, "prefix after realloc");
        b.size = new;
        if new > old {
            let id = b.id;
            fill(&mut b.bytes_mut()[old..], id, old);
        }
        self.reallocs.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(new.saturating_sub(old), Ordering::Relaxed);
    }

    fn free(&self, b: Block, what: &str) {
        b.check(self, what);
        // SAFETY: `b` is a live block of `b.layout()`, not used again.
        unsafe { std::alloc::dealloc(b.ptr, b.layout()) };
        self.frees.fetch_add(1, Ordering::Relaxed);
    }

    /// Frees random blocks of `held` until at most `keep` are left.
    fn trim(&self, held: &mut Vec<Block>, keep: usize, rng: &mut Rng, what: &str) {
        while held.len() > keep {
            let b = held.swap_remove(rng.below(held.len()));
            self.free(b, what);
        }
    }
}

// ---------------------------------------------------------------------------
// Threads.

fn producer(
    ctx: &Ctx,
    mut rng: Rng,
    mut held: Vec<Block>,
    to_consumer: mpsc::SyncSender<Block>,
    returned: mpsc::Receiver<Block>,
    ops: usize,
) -> Vec<Block> {
    for _ in 0..ops {
        if !ctx.take_op() {
            break;
        }
        match rng.percent() {
            0..=44 => {
                let b = ctx.alloc(&mut rng);
                held.push(b);
            }
            45..=64 if !held.is_empty() => {
                let b = held.swap_remove(rng.below(held.len()));
                b.check(ctx, "producer before send");
                ctx.sends.fetch_add(1, Ordering::Relaxed);
                if let Err(mpsc::SendError(b)) = to_consumer.send(b) {
                    ctx.fail(format_args!("consumer gone; block {:#x} not sent", b.id));
                }
            }
            65..=79 if !held.is_empty() => {
                let i = rng.below(held.len());
                ctx.realloc(&mut held[i], &mut rng, "producer realloc");
            }
            80..=94 if !held.is_empty() => {
                let b = held.swap_remove(rng.below(held.len()));
                ctx.free(b, "producer free");
            }
            _ => {
                for b in returned.try_iter() {
                    b.check(ctx, "producer: returned block");
                    held.push(b);
                }
            }
        }
        ctx.trim(&mut held, MAX_HELD, &mut rng, "producer trim");
    }
    drop(to_consumer);
    // The consumer returns blocks until it sees the channel close.
    held.extend(
        returned
            .iter()
            .inspect(|b| b.check(ctx, "producer: late return")),
    );
    held
}

fn consumer(
    ctx: &Ctx,
    mut rng: Rng,
    mut held: Vec<Block>,
    from_producer: mpsc::Receiver<Block>,
    back: mpsc::Sender<Block>,
) -> Vec<Block> {
    for mut b in from_producer.iter() {
        b.check(ctx, "consumer: received block");
        ctx.take_op();
        match rng.percent() {
            0..=29 => ctx.free(b, "consumer free"),
            30..=54 => {
                ctx.realloc(&mut b, &mut rng, "consumer realloc");
                held.push(b);
            }
            55..=74 => held.push(b),
            _ => {
                ctx.realloc(&mut b, &mut rng, "consumer realloc before return");
                ctx.sends.fetch_add(1, Ordering::Relaxed);
                // The producer drains `back` before it exits.
                back.send(b)
                    .expect("producer gone before closing its channel");
            }
        }
        if !held.is_empty() && rng.below(4) == 0 {
            let i = rng.below(held.len());
            ctx.realloc(&mut held[i], &mut rng, "consumer realloc held");
        }
        ctx.trim(&mut held, MAX_HELD, &mut rng, "consumer trim");
    }
    held
}

/// Spawns short-lived threads until `stop`: each takes a few blocks from
/// the shared pool, checks, reallocates and frees some, allocates new ones
/// and puts them in the pool, and exits (abandoning its heap).
fn churner(ctx: &Arc<Ctx>, seed: u64, pool: &Arc<Mutex<Vec<Block>>>, stop: &AtomicBool) {
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let (ctx2, pool2) = (Arc::clone(ctx), Arc::clone(pool));
        let mut rng = Rng::new(seed, k);
        let t = thread::spawn(move || {
            let ctx = &*ctx2;
            let mut mine: Vec<Block> = {
                let mut p = pool2.lock().unwrap();
                let n = rng.below(8).min(p.len());
                let at = p.len() - n;
                p.split_off(at)
            };
            for b in &mut mine {
                b.check(ctx, "churn: pooled block");
                if rng.below(2) == 0 {
                    ctx.realloc(b, &mut rng, "churn realloc");
                }
            }
            for _ in 0..rng.range(2, 16) {
                if !ctx.take_op() {
                    break;
                }
                mine.push(ctx.alloc(&mut rng));
            }
            let keep = mine.len() / 2;
            ctx.trim(&mut mine, keep, &mut rng, "churn free");
            let mut p = pool2.lock().unwrap();
            p.append(&mut mine);
            let excess = p.len().saturating_sub(256);
            let old: Vec<Block> = p.drain(..excess).collect();
            drop(p);
            for b in old {
                ctx.free(b, "churn: pool overflow");
            }
        });
        t.join().expect("churn thread panicked");
        ctx.threads.fetch_add(1, Ordering::Relaxed);
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(parse_u64(&v).unwrap_or_else(|| panic!("{name}={v:?} is not a number")))
}

/// `stress` and `stress_long` compare process-wide statistics: never both
/// at once.
static SERIAL: Mutex<()> = Mutex::new(());

fn run(ops: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = env_u64("MAPALLOC_STRESS_SEED").unwrap_or(DEFAULT_SEED);
    println!(
        "stress: seed {seed:#x}, {ops} operations, {PAIRS} producer/consumer pairs, {GENERATIONS} generations"
    );
    let start = Instant::now();
    mapalloc::collect();
    let s0 = mapalloc::stats();

    let ctx = Arc::new(Ctx {
        seed,
        budget: AtomicUsize::new(ops),
        next_id: AtomicUsize::new(1),
        allocs: AtomicUsize::new(0),
        reallocs: AtomicUsize::new(0),
        frees: AtomicUsize::new(0),
        sends: AtomicUsize::new(0),
        threads: AtomicUsize::new(0),
        bytes: AtomicUsize::new(0),
    });
    let pool: Arc<Mutex<Vec<Block>>> = Arc::new(Mutex::new(Vec::new()));
    // Blocks that outlive a generation, handed to the next one.
    let mut carry: Vec<Vec<Block>> = (0..2 * PAIRS).map(|_| Vec::new()).collect();
    let per_gen = ops.div_ceil(GENERATIONS * PAIRS);
    let mut generation = 0;
    while ctx.budget.load(Ordering::Relaxed) > 0 {
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let (ctx, pool, stop) = (Arc::clone(&ctx), Arc::clone(&pool), Arc::clone(&stop));
            thread::spawn(move || churner(&ctx, seed ^ (generation as u64) << 32, &pool, &stop))
        };
        // Rotate the carried blocks so each lands on a different role.
        carry.rotate_left(1);
        let mut handles = Vec::new();
        for p in 0..PAIRS {
            let (tx, rx) = mpsc::sync_channel::<Block>(32);
            let (back_tx, back_rx) = mpsc::channel::<Block>();
            let stream = ((generation as u64) << 8) | (p as u64) << 1;
            let prod_rng = Rng::new(seed, stream);
            let cons_rng = Rng::new(seed, stream | 1);
            let prod_held = std::mem::take(&mut carry[2 * p]);
            let cons_held = std::mem::take(&mut carry[2 * p + 1]);
            let c1 = Arc::clone(&ctx);
            let prod =
                thread::spawn(move || producer(&c1, prod_rng, prod_held, tx, back_rx, per_gen));
            let c2 = Arc::clone(&ctx);
            let cons = thread::spawn(move || consumer(&c2, cons_rng, cons_held, rx, back_tx));
            handles.push((prod, cons));
        }
        for (p, (prod, cons)) in handles.into_iter().enumerate() {
            carry[2 * p] = prod.join().expect("producer panicked");
            carry[2 * p + 1] = cons.join().expect("consumer panicked");
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().expect("churner panicked");
        ctx.threads.fetch_add(2 * PAIRS + 1, Ordering::Relaxed);
        // Every carried block was allocated or last touched by a thread that
        // has now exited; check them on this thread.
        for b in carry.iter().flatten() {
            b.check(&ctx, "carried across generations");
        }
        generation += 1;
    }

    // Free everything that is left, from this thread.
    for b in carry.into_iter().flatten() {
        ctx.free(b, "final free");
    }
    for b in std::mem::take(&mut *pool.lock().unwrap()) {
        ctx.free(b, "final free (pool)");
    }
    let (allocs, reallocs, frees) = (
        ctx.allocs.load(Ordering::Relaxed),
        ctx.reallocs.load(Ordering::Relaxed),
        ctx.frees.load(Ordering::Relaxed),
    );
    assert_eq!(
        allocs, frees,
        "every block allocated was freed exactly once"
    );
    let total = allocs + reallocs + frees + ctx.sends.load(Ordering::Relaxed);
    println!(
        "stress: seed {seed:#x}: {total} operations ({allocs} allocs, {reallocs} reallocs, {frees} frees, {} sends) \
         over {generation} generations and {} threads, {} MiB allocated, in {:.1?}",
        ctx.sends.load(Ordering::Relaxed),
        ctx.threads.load(Ordering::Relaxed),
        ctx.bytes.load(Ordering::Relaxed) / MIB,
        start.elapsed()
    );
    assert!(
        ctx.threads.load(Ordering::Relaxed) > 2 * PAIRS * generation,
        "no thread churn"
    );

    // Every thread is gone and every block freed: after collect() (which
    // adopts the abandoned segments) the books are back near the start.
    mapalloc::collect();
    let s1 = mapalloc::stats();
    println!("stress: stats before {s0:?}\nstress: stats after  {s1:?}");
    assert_eq!(
        s1.abandoned_segments, 0,
        "abandoned segments left after collect: {s1:?}"
    );
    assert_eq!(
        s1.large_mappings, s0.large_mappings,
        "large blocks leaked: {s0:?} -> {s1:?}"
    );
    assert_eq!(
        s1.large_bytes, s0.large_bytes,
        "large bytes leaked: {s0:?} -> {s1:?}"
    );
    assert_eq!(
        s1.large_cached_bytes, 0,
        "collect() leaves the large cache empty: {s1:?}"
    );
    assert!(
        s1.in_use_bytes <= s0.in_use_bytes + 2 * MIB,
        "in_use_bytes grew from {} to {} with nothing live",
        s0.in_use_bytes,
        s1.in_use_bytes
    );
    assert!(
        s1.heaps <= s0.heaps,
        "heaps of exited threads not returned: {s0:?} -> {s1:?}"
    );
    assert!(
        s1.mapped_bytes <= s0.mapped_bytes + 16 * MIB,
        "mapped_bytes grew from {} to {} MiB with nothing live",
        s0.mapped_bytes / MIB,
        s1.mapped_bytes / MIB
    );
}

fn long_mode() -> bool {
    std::env::var("MAPALLOC_STRESS_LONG").is_ok_and(|v| v == "1")
}

fn ops_from_env() -> usize {
    env_u64("MAPALLOC_STRESS_OPS").map_or(DEFAULT_OPS, |n| n as usize)
}

#[test]
fn stress() {
    let ops = ops_from_env();
    run(if long_mode() { ops * 100 } else { ops });
}

/// The same with 100 times the operations: `cargo test --release --test
/// stress -- --ignored --nocapture`.
#[test]
#[ignore = "long: 100x the operations"]
fn stress_long() {
    run(ops_from_env() * 100);
}
