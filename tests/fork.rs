//! Fork safety: `fork` while other threads are inside the allocator.
//!
//! mapalloc registers `pthread_atfork` handlers that take its locks (heap
//! pool, fallback heap, large cache) before the fork and release them in
//! both processes after it. These tests fork repeatedly while worker threads
//! hammer exactly those paths (small and large alloc/free, large-cache
//! reuse, thread creation and exit), and make the child allocate through
//! every layer: small blocks, a `HashMap`, a 10 MiB buffer, a new thread,
//! and frees of blocks that other (now non-existent) threads allocated.
//! A child that deadlocks is killed after a timeout and fails the test.
//!
//! The child deliberately does far more than async-signal-safe work: the
//! allocator claims to be usable after `fork`, and this is what checks it.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

mod common;

use common::child::{self, Ended};
use common::{KIB, MIB, Rng};

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

/// How long a child may take before it counts as hung.
const CHILD_TIMEOUT: Duration = Duration::from_secs(10);

/// A heap block that knows what it must contain: every byte is `tag`, and
/// the first and last eight bytes hold `id` (so two live blocks never look
/// alike even when their tags collide).
struct Tagged {
    buf: Vec<u8>,
    id: u64,
}

impl Tagged {
    fn new(id: u64, len: usize) -> Self {
        let len = len.max(16);
        let mut buf = vec![tag_of(id); len];
        buf[..8].copy_from_slice(&id.to_le_bytes());
        buf[len - 8..].copy_from_slice(&id.to_le_bytes());
        Tagged { buf, id }
    }

    /// Panics unless the block still holds its pattern.
    fn check(&self, what: &str) {
        let len = self.buf.len();
        let id = self.id;
        assert_eq!(
            self.buf[..8],
            id.to_le_bytes(),
            "{what}: head of block {id} ({len} B)"
        );
        assert_eq!(
            self.buf[len - 8..],
            id.to_le_bytes(),
            "{what}: tail of block {id} ({len} B)"
        );
        if let Some(i) = first_not(&self.buf[8..len - 8], tag_of(id)) {
            panic!("{what}: block {id} ({len} B) corrupted at byte {}", i + 8);
        }
    }
}

fn tag_of(id: u64) -> u8 {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 | 1
}

/// Index of the first byte of `buf` that is not `b`; compares in 4 KiB
/// chunks with `memcmp` so that multi-MiB blocks are cheap to check even
/// in a debug build.
fn first_not(buf: &[u8], b: u8) -> Option<usize> {
    let tmpl = [b; 4 * KIB];
    for (ci, chunk) in buf.chunks(tmpl.len()).enumerate() {
        if chunk != &tmpl[..chunk.len()] {
            let i = chunk.iter().position(|&x| x != b).unwrap();
            return Some(ci * tmpl.len() + i);
        }
    }
    None
}

/// Mostly small blocks, some from the biggest slab classes, some large
/// mappings (over 1 MiB: they go through the large cache and its lock).
fn random_len(rng: &mut Rng) -> usize {
    match rng.below(64) {
        0..=2 => 256 * KIB + rng.below(4 * MIB),
        3..=8 => 8 * KIB + rng.below(120 * KIB),
        _ => 16 + rng.below(2 * KIB),
    }
}

struct Workers {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    handles: Vec<thread::JoinHandle<()>>,
    /// Blocks allocated by the workers and handed to the forking thread.
    gifts: mpsc::Receiver<Tagged>,
}

/// Starts `n` threads that allocate, check and free in a tight loop until
/// stopped. Worker 0 also churns short-lived threads (heap set-up and
/// abandonment take the heap-pool lock), and every worker sends a block to
/// the forking thread now and then (so the child frees blocks whose owner
/// thread does not exist in it).
fn start_workers(n: usize, seed: u64) -> Workers {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let (tx, gifts) = mpsc::sync_channel::<Tagged>(64);
    let handles = (0..n)
        .map(|w| {
            let stop = Arc::clone(&stop);
            let ops = Arc::clone(&ops);
            let tx = tx.clone();
            thread::spawn(move || worker(w, seed, &stop, &ops, &tx))
        })
        .collect();
    Workers {
        stop,
        ops,
        handles,
        gifts,
    }
}

fn worker(w: usize, seed: u64, stop: &AtomicBool, ops: &AtomicU64, tx: &mpsc::SyncSender<Tagged>) {
    let mut rng = Rng::new(seed ^ (w as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut live: Vec<Tagged> = Vec::new();
    let mut next_id = (w as u64) << 48;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        next_id += 1;
        let block = Tagged::new(next_id, random_len(&mut rng));
        if live.len() < 64 {
            live.push(block);
        } else {
            let i = rng.below(live.len());
            let old = std::mem::replace(&mut live[i], block);
            old.check("worker free");
        }
        if rng.below(32) == 0 {
            let i = rng.below(live.len());
            let b = live.swap_remove(i);
            b.check("worker gift");
            // The receiver drains gifts between forks; if it is busy the
            // block is simply freed here.
            if let Err(mpsc::TrySendError::Full(b) | mpsc::TrySendError::Disconnected(b)) =
                tx.try_send(b)
            {
                drop(b);
            }
        }
        // Large blocks that are never touched: each is a lock round trip
        // through the large cache and back, so the workers spend much of
        // their time holding that lock. (Without the atfork handlers this
        // makes children hang within a few dozen forks.)
        for _ in 0..8 {
            let untouched: Vec<u8> = Vec::with_capacity(3 * MIB / 2 + rng.below(5 * MIB / 2));
            black_box(&untouched);
        }
        if w == 0 && rng.below(16) == 0 {
            let id = next_id;
            let t = thread::spawn(move || {
                let v: Vec<Tagged> = (0..32)
                    .map(|k| Tagged::new(id ^ (k << 40), 64 + k as usize * 8))
                    .collect();
                v.iter().for_each(|b| b.check("churn thread"));
                v
            });
            // Its blocks replace random ones of ours (freed here, remote
            // frees to the exited thread's abandoned heap).
            for b in t.join().expect("churn thread panicked") {
                let i = rng.below(live.len());
                std::mem::replace(&mut live[i], b).check("worker free");
            }
        }
        n += 1;
    }
    for b in &live {
        b.check("worker exit");
    }
    ops.fetch_add(n, Ordering::Relaxed);
}

impl Workers {
    fn stop_and_join(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.gifts);
        for h in self.handles {
            h.join().expect("allocating worker panicked");
        }
        self.ops.load(Ordering::Relaxed)
    }
}

/// What the child does: allocate through every layer, check, free.
fn child_work(gifts: Vec<Tagged>, held: &[Tagged]) {
    // Blocks of the parent are intact in the child.
    for b in held {
        b.check("child: block allocated before fork");
    }
    // Blocks allocated by threads that do not exist in the child: freeing
    // them is a remote free to an orphaned heap.
    for b in &gifts {
        b.check("child: gift");
    }
    drop(gifts);

    let strings: Vec<String> = (0..2_000)
        .map(|i| format!("child string {i:>8} {}", "x".repeat(i % 97)))
        .collect();
    let mut map: HashMap<u64, Vec<u8>> = HashMap::new();
    for (i, s) in strings.iter().enumerate() {
        map.insert(i as u64, s.as_bytes().to_vec());
    }
    for (i, s) in strings.iter().enumerate() {
        assert_eq!(map[&(i as u64)], s.as_bytes());
    }
    drop(map);

    let mut big = vec![0u8; 10 * MIB];
    assert_eq!(
        first_not(&big, 0),
        None,
        "child: vec![0; 10 MiB] is not zero"
    );
    big.fill(0x5A);
    big.resize(13 * MIB, 0x5A); // a large realloc (mremap)
    assert_eq!(first_not(&big, 0x5A), None, "child: 13 MiB block corrupted");
    drop(big);

    // A new thread in the child: it needs a heap from the pool (its lock
    // was held across the fork) and abandons it when it exits.
    let made = on_raw_thread(|| {
        let v: Vec<Tagged> = (0..500)
            .map(|i| Tagged::new(0xC41D_0000 + i, 16 + i as usize * 37))
            .collect();
        let large = Tagged::new(0xC41D_FFFF, 2 * MIB);
        v.iter().for_each(|b| b.check("child thread"));
        large.check("child thread large");
        v.len()
    });
    assert_eq!(made, 500);

    for (i, s) in strings.iter().enumerate() {
        assert!(s.starts_with(&format!("child string {i:>8} ")));
    }
    drop(strings);
    mapalloc::collect();
    black_box(Tagged::new(0xC41D_EEEE, 300 * KIB)).check("child after collect");
}

/// Runs `f` on a new thread created with `pthread_create` and returns its
/// result (re-raising its panic).
///
/// Children use this instead of `std::thread::spawn` because std itself is
/// not fork-safe there: a new std thread registers its stack-overflow guard
/// in a map behind a global `std::sync::Mutex`
/// (`sys::pal::unix::stack_overflow::thread_info::LOCK`), and a thread of the
/// parent that was starting or exiting at the moment of the fork leaves it
/// locked forever in the child (seen here as a child blocked in
/// `set_current_info`). A raw pthread still exercises everything of the
/// allocator's: a heap from the pool, allocation, and abandonment by the
/// pthread-key destructor at exit.
fn on_raw_thread<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    struct Job<F, R> {
        f: Option<F>,
        out: Option<std::thread::Result<R>>,
    }
    extern "C" fn start<F: FnOnce() -> R, R>(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the `Job` that `on_raw_thread` keeps alive and
        // does not touch until `pthread_join` returns.
        let job = unsafe { &mut *arg.cast::<Job<F, R>>() };
        let f = job.f.take().expect("job runs once");
        job.out = Some(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        std::ptr::null_mut()
    }
    let mut job = Box::new(Job {
        f: Some(f),
        out: None,
    });
    let arg: *mut Job<F, R> = &mut *job;
    let mut tid: libc::pthread_t = 0;
    // SAFETY: `start` matches the signature pthread_create expects and
    // never unwinds (it catches panics); `arg` stays valid until the join.
    let rc = unsafe { libc::pthread_create(&mut tid, std::ptr::null(), start::<F, R>, arg.cast()) };
    assert_eq!(rc, 0, "pthread_create failed");
    // SAFETY: `tid` is a joinable thread we created and join once.
    let rc = unsafe { libc::pthread_join(tid, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "pthread_join failed");
    match job.out.take().expect("raw thread produced no result") {
        Ok(r) => r,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// Forks; the child runs `body` (it fails if `body` panics), and the
/// parent waits up to `CHILD_TIMEOUT` (a hang after `fork` fails the test).
fn fork_and_wait(what: &str, body: impl FnOnce()) -> Ended {
    child::in_child(what, CHILD_TIMEOUT, || {
        body();
        0
    })
}

/// The main thread forks 20 times while four threads allocate and free.
#[test]
fn fork_while_threads_allocate() {
    const FORKS: usize = 20;
    let workers = start_workers(4, 0xF0_4C);
    // Blocks the parent holds across every fork (small, medium and large).
    let held: Vec<Tagged> = [24, 100, 4 * KIB, 100 * KIB, 700 * KIB, 5 * MIB]
        .iter()
        .enumerate()
        .map(|(i, &len)| Tagged::new(0xAB_0000 + i as u64, len))
        .collect();
    let mut rng = Rng::new(7);
    let mut gifts_seen = 0;
    for round in 0..FORKS {
        // Let the workers get going (and land somewhere inside the allocator).
        thread::sleep(Duration::from_millis(5 + rng.below(20) as u64));
        let gifts: Vec<Tagged> = workers.gifts.try_iter().collect();
        gifts_seen += gifts.len();
        let what = format!("fork {round}");
        let ended = fork_and_wait(&what, || child_work(gifts, &held));
        ended.assert_success(&what);
        // The parent goes on allocating after the fork, in every layer.
        let after: Vec<Tagged> = (0..200)
            .map(|i| Tagged::new(0xAF_0000 + i, random_len(&mut rng)))
            .collect();
        after.iter().for_each(|b| b.check("parent after fork"));
    }
    for b in &held {
        b.check("parent: block held across forks");
    }
    let ops = workers.stop_and_join();
    println!(
        "{FORKS} forks; workers did {ops} alloc/free cycles; {gifts_seen} cross-thread gifts freed in children"
    );
    assert!(ops > 0, "the workers never ran");
    // The parent is still healthy: a thread of its own, a large block.
    let t = thread::spawn(|| Tagged::new(0xE2D, 9 * MIB));
    t.join().unwrap().check("parent after joining workers");
}

/// Many quick forks whose children need exactly the locks the workers keep
/// taking: the large cache (a large block) and the heap pool (a thread).
#[test]
fn fork_storm() {
    const FORKS: usize = 200;
    let workers = start_workers(4, 0x5707);
    for round in 0..FORKS {
        let what = format!("storm fork {round}");
        let ended = fork_and_wait(&what, || {
            let v: Vec<u8> = vec![0x11; 2 * MIB];
            assert_eq!(first_not(&v, 0x11), None);
            on_raw_thread(|| Tagged::new(0x57, 200 * KIB)).check("storm child's thread");
        });
        ended.assert_success(&what);
    }
    let ops = workers.stop_and_join();
    assert!(ops > 0, "the workers never ran");
}

/// Several threads fork at the same time (the prepare handlers take the
/// locks in a fixed order, so concurrent forks must not deadlock), while
/// two more allocate. Children fork once more (a grandchild).
#[test]
fn concurrent_forks_from_several_threads() {
    const FORKERS: usize = 3;
    const FORKS_EACH: usize = 8;
    let workers = start_workers(2, 0xC0_4C);
    let forkers: Vec<_> = (0..FORKERS)
        .map(|f| {
            thread::spawn(move || {
                let mut rng = Rng::new(f as u64 * 1000 + 3);
                for round in 0..FORKS_EACH {
                    let mine: Vec<Tagged> = (0..50)
                        .map(|i| Tagged::new(((f as u64) << 32) + i, random_len(&mut rng)))
                        .collect();
                    let what = format!("forker {f} round {round}");
                    let ended = fork_and_wait(&what, || {
                        mine.iter().for_each(|b| b.check("child: forker's block"));
                        let v: Vec<Tagged> = (0..300)
                            .map(|i| Tagged::new(i, 8 + i as usize * 13))
                            .collect();
                        let big = Tagged::new(0xB16, 10 * MIB);
                        // And the child forks again: it is single-threaded
                        // now, with handlers that must still work.
                        let inner = fork_and_wait("grandchild", || {
                            let w = Tagged::new(0x6C, 3 * MIB);
                            w.check("grandchild");
                            on_raw_thread(|| Tagged::new(0x6D, 1000)).check("grandchild's thread");
                        });
                        inner.assert_success("grandchild");
                        v.iter().for_each(|b| b.check("child"));
                        big.check("child big");
                    });
                    ended.assert_success(&what);
                    mine.iter().for_each(|b| b.check("forker after fork"));
                }
            })
        })
        .collect();
    for h in forkers {
        h.join().expect("forking thread failed");
    }
    let ops = workers.stop_and_join();
    assert!(ops > 0, "the workers never ran");
}
