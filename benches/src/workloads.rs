//! The workloads. Each one allocates through the global allocator (the
//! [`crate::Switch`] in the benchmark binary), frees everything it made
//! before it returns, and returns an allocator-independent checksum so the
//! parent can check that every allocator did the same work.
//!
//! Operation counts are fixed (divided by [`Params::div`] in smoke-test
//! mode). Unless a workload says otherwise, an "op" is one allocation
//! together with its eventual free.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::mpsc::{channel, sync_channel};
use std::thread;

use crate::harness::{Outcome, Rng, note, read_rss};

/// What a run is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// All op counts are divided by this (1 for real runs).
    pub div: u64,
    /// Thread count, for the workloads that take one.
    pub threads: usize,
}

/// One workload of the table.
pub struct Workload {
    /// Name on the command line, in tables and in the CSV.
    pub name: &'static str,
    /// Group for plots: `"single"`, `"threads"` or `"scaling"`.
    pub group: &'static str,
    /// One-line description.
    pub about: &'static str,
    /// Timed runs per child (median reported).
    pub reps: usize,
    /// Threads (0 for the workloads that do not take a count).
    pub threads: usize,
    /// Runs the workload once.
    pub run: fn(Params) -> Outcome,
}

/// Thread counts of the scaling workload.
pub const SCALING_THREADS: [usize; 5] = [1, 2, 4, 8, 16];

/// Every workload, in the order they run and print.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "small-fixed",
        group: "single",
        about: "Box<[u8; 32]> new + drop in a tight loop, 1 thread (fast path)",
        reps: 5,
        threads: 0,
        run: small_fixed,
    },
    Workload {
        name: "small-random",
        group: "single",
        about: "alloc + free right away, random sizes 8-1024 B, 1 thread",
        reps: 5,
        threads: 0,
        run: small_random,
    },
    Workload {
        name: "small-batch",
        group: "single",
        about: "alloc 1000 blocks of 8-1024 B, free them in random order, repeat",
        reps: 3,
        threads: 0,
        run: small_batch,
    },
    Workload {
        name: "larson",
        group: "threads",
        about: "2 threads x 1000 slots of 16-1024 B, replace a random slot; 1 in 8 evicted blocks freed by the other thread",
        reps: 3,
        threads: 2,
        run: larson,
    },
    Workload {
        name: "producer-consumer",
        group: "threads",
        about: "2 producer threads -> channels -> 2 consumer threads free (every free cross-thread)",
        reps: 3,
        threads: 4,
        run: producer_consumer,
    },
    Workload {
        name: "scaling-1t",
        group: "scaling",
        about: "12M ops split over N threads; each: 512-slot window of 16-512 B blocks, replace a random slot",
        reps: 3,
        threads: 1,
        run: scaling,
    },
    Workload {
        name: "scaling-2t",
        group: "scaling",
        about: "same, 2 threads",
        reps: 3,
        threads: 2,
        run: scaling,
    },
    Workload {
        name: "scaling-4t",
        group: "scaling",
        about: "same, 4 threads",
        reps: 3,
        threads: 4,
        run: scaling,
    },
    Workload {
        name: "scaling-8t",
        group: "scaling",
        about: "same, 8 threads",
        reps: 3,
        threads: 8,
        run: scaling,
    },
    Workload {
        name: "scaling-16t",
        group: "scaling",
        about: "same, 16 threads",
        reps: 3,
        threads: 16,
        run: scaling,
    },
    Workload {
        name: "realloc-growth",
        group: "single",
        about: "Vec<u8> push to 64 MiB (x2) + raw realloc doubling 4 KiB -> 256 MiB; op = one realloc",
        reps: 3,
        threads: 0,
        run: realloc_growth,
    },
    Workload {
        name: "large-churn",
        group: "single",
        about: "8 slots, random slot gets a new vec![0u8; n], n log-uniform 1-64 MiB, 1 write per 4 KiB",
        reps: 3,
        threads: 0,
        run: large_churn,
    },
    Workload {
        name: "fragmentation",
        group: "single",
        about: "1M blocks of 16-1024 B, free a random 90%, then 1.2-12 KiB blocks worth 30% of phase 1",
        reps: 3,
        threads: 0,
        run: fragmentation,
    },
    Workload {
        name: "btree-strings",
        group: "single",
        about: "BTreeMap<String,String> of 200k random records, append to half, HashMap<String,Vec<String>> index, remove 1/3, drop",
        reps: 3,
        threads: 0,
        run: btree_strings,
    },
];

/// Looks a workload up by name.
pub fn find(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// Writes `v`'s first and last byte, so its memory is touched like a real
/// object's would be, and hides it from the optimiser.
#[inline]
fn touch(mut v: Vec<u8>, tag: u8) -> Vec<u8> {
    let n = v.capacity();
    v.spare_capacity_mut()[n - 1].write(tag);
    v.push(tag);
    black_box(v)
}

// ---------------------------------------------------------------------------
// Single-thread small blocks
// ---------------------------------------------------------------------------

/// small-fixed: 40,000,000 pairs.
const SMALL_FIXED_PAIRS: u64 = 40_000_000;

fn small_fixed(p: Params) -> Outcome {
    let n = SMALL_FIXED_PAIRS / p.div;
    let mut sum = 0u64;
    for i in 0..n {
        let b = black_box(Box::new([i as u8; 32]));
        sum += u64::from(b[31]);
    }
    Outcome {
        ops: n,
        checksum: sum,
    }
}

/// small-random: 20,000,000 pairs; sizes come from a precomputed table so
/// the generator is out of the loop.
const SMALL_RANDOM_PAIRS: u64 = 20_000_000;

fn small_random(p: Params) -> Outcome {
    let n = SMALL_RANDOM_PAIRS / p.div;
    let mut rng = Rng::new(11);
    let sizes: Vec<usize> = (0..4096).map(|_| rng.range(8, 1024)).collect();
    let mut sum = 0u64;
    for i in 0..n as usize {
        let v = touch(Vec::with_capacity(sizes[i & 4095]), i as u8);
        sum += v.capacity() as u64 + u64::from(v[0]);
    }
    Outcome {
        ops: n,
        checksum: sum,
    }
}

/// small-batch: 10,000 rounds x 1000 blocks = 10,000,000 pairs.
const SMALL_BATCH_ROUNDS: u64 = 10_000;
const SMALL_BATCH_SIZE: usize = 1000;

fn small_batch(p: Params) -> Outcome {
    let rounds = SMALL_BATCH_ROUNDS / p.div;
    let mut rng = Rng::new(1);
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(SMALL_BATCH_SIZE);
    let mut sum = 0u64;
    for r in 0..rounds {
        for _ in 0..SMALL_BATCH_SIZE {
            blocks.push(touch(Vec::with_capacity(rng.range(8, 1024)), r as u8));
        }
        rng.shuffle(&mut blocks);
        for v in blocks.drain(..) {
            sum += u64::from(v[0]) + v.capacity() as u64;
        }
    }
    Outcome {
        ops: rounds * SMALL_BATCH_SIZE as u64,
        checksum: sum,
    }
}

// ---------------------------------------------------------------------------
// Multi-thread
// ---------------------------------------------------------------------------

/// larson: per thread 3,000,000 slot replacements (ops), over 1000 slots.
const LARSON_ROUNDS: u64 = 3_000_000;
const LARSON_SLOTS: usize = 1000;
/// Every this many replacements, the evicted block goes to the next thread.
const LARSON_PASS_EVERY: u64 = 8;
/// Blocks travel in batches of this many.
const LARSON_BATCH: usize = 64;

fn larson(p: Params) -> Outcome {
    let threads = p.threads.max(1);
    let rounds = LARSON_ROUNDS / p.div;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads).map(|_| channel::<Vec<Vec<u8>>>()).unzip();
    let sum = thread::scope(|s| {
        let handles: Vec<_> = rxs
            .into_iter()
            .enumerate()
            .map(|(t, rx)| {
                // Thread t sends to thread t + 1.
                let tx = txs[(t + 1) % threads].clone();
                s.spawn(move || {
                    let mut rng = Rng::new(1000 + t as u64);
                    let mut sum = 0u64;
                    let mut slots: Vec<Vec<u8>> = (0..LARSON_SLOTS)
                        .map(|_| touch(Vec::with_capacity(rng.range(16, 1024)), 0))
                        .collect();
                    let mut out: Vec<Vec<u8>> = Vec::with_capacity(LARSON_BATCH);
                    for r in 0..rounds {
                        let slot = rng.below(LARSON_SLOTS);
                        let v = touch(Vec::with_capacity(rng.range(16, 1024)), r as u8);
                        let old = std::mem::replace(&mut slots[slot], v);
                        sum += old.capacity() as u64;
                        if r % LARSON_PASS_EVERY == 0 {
                            out.push(old);
                            if out.len() == LARSON_BATCH {
                                let batch =
                                    std::mem::replace(&mut out, Vec::with_capacity(LARSON_BATCH));
                                let _ = tx.send(batch);
                            }
                        } else {
                            drop(old);
                        }
                        if r % 1024 == 0 {
                            while let Ok(batch) = rx.try_recv() {
                                drop(batch);
                            }
                        }
                    }
                    sum += slots.iter().map(|v| v.capacity() as u64).sum::<u64>();
                    drop(slots);
                    let _ = tx.send(out);
                    drop(tx);
                    // Ends once the previous thread has dropped its sender.
                    for batch in rx {
                        drop(batch);
                    }
                    sum
                })
            })
            .collect();
        drop(txs);
        handles
            .into_iter()
            .map(|h| h.join().expect("larson thread panicked"))
            .sum::<u64>()
    });
    Outcome {
        ops: threads as u64 * rounds,
        checksum: sum,
    }
}

/// producer-consumer: 2 producers x 2,048,000 objects of 16-1024 B =
/// 4,096,000 pairs, every free on another thread. Objects travel in
/// batches of 256 (the batch `Vec`s themselves are not counted).
const PC_OBJECTS_PER_PRODUCER: u64 = 2_048_000;
const PC_BATCH: usize = 256;
const PC_CHANNEL_BATCHES: usize = 16;

fn producer_consumer(p: Params) -> Outcome {
    let batches = PC_OBJECTS_PER_PRODUCER / p.div / PC_BATCH as u64;
    let (tx0, rx0) = sync_channel::<Vec<Vec<u8>>>(PC_CHANNEL_BATCHES);
    let (tx1, rx1) = sync_channel::<Vec<Vec<u8>>>(PC_CHANNEL_BATCHES);
    let sum = thread::scope(|s| {
        for p in 0..2u64 {
            let txs = [tx0.clone(), tx1.clone()];
            s.spawn(move || {
                let mut rng = Rng::new(100 + p);
                for b in 0..batches {
                    let mut batch = Vec::with_capacity(PC_BATCH);
                    for _ in 0..PC_BATCH {
                        batch.push(touch(Vec::with_capacity(rng.range(16, 1024)), b as u8));
                    }
                    // Alternate consumers so each frees blocks of both producers.
                    txs[((b + p) % 2) as usize]
                        .send(batch)
                        .expect("consumer hung up");
                }
            });
        }
        drop((tx0, tx1));
        let consumers: Vec<_> = [rx0, rx1]
            .into_iter()
            .map(|rx| {
                s.spawn(move || {
                    let mut sum = 0u64;
                    for batch in rx {
                        for v in batch {
                            sum += u64::from(v[0]) + v.capacity() as u64;
                        }
                    }
                    sum
                })
            })
            .collect();
        consumers
            .into_iter()
            .map(|h| h.join().expect("consumer panicked"))
            .sum::<u64>()
    });
    Outcome {
        ops: 2 * batches * PC_BATCH as u64,
        checksum: sum,
    }
}

/// scaling: 12,000,000 ops in all, split evenly over the threads, so the
/// ideal is time / min(threads, CPUs).
const SCALING_TOTAL_OPS: u64 = 12_000_000;
const SCALING_WINDOW: usize = 512;

fn scaling(p: Params) -> Outcome {
    let threads = p.threads.max(1);
    let per_thread = SCALING_TOTAL_OPS / p.div / threads as u64;
    let sum = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = Rng::new(5000 + t as u64);
                    let mut window: Vec<Vec<u8>> = (0..SCALING_WINDOW)
                        .map(|_| touch(Vec::with_capacity(rng.range(16, 512)), 0))
                        .collect();
                    let mut sum = 0u64;
                    for i in SCALING_WINDOW as u64..per_thread {
                        let slot = rng.below(SCALING_WINDOW);
                        let v = touch(Vec::with_capacity(rng.range(16, 512)), i as u8);
                        sum += std::mem::replace(&mut window[slot], v).capacity() as u64;
                    }
                    sum + window.iter().map(|v| v.capacity() as u64).sum::<u64>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scaling thread panicked"))
            .sum::<u64>()
    });
    Outcome {
        ops: per_thread * threads as u64,
        checksum: sum,
    }
}

// ---------------------------------------------------------------------------
// Large blocks
// ---------------------------------------------------------------------------

/// realloc-growth: 2 times, push bytes one by one into a `Vec<u8>` up to
/// 64 MiB; then once, raw `realloc` doubling from 4 KiB to 256 MiB, writing
/// one byte per 4 KiB page of each new half. Ops = reallocations (Vec
/// capacity changes + raw doublings).
const GROW_VEC_ROUNDS: u64 = 2;
const GROW_VEC_BYTES: usize = 64 << 20;
const GROW_RAW_FROM: usize = 4 << 10;
const GROW_RAW_TO: usize = 256 << 20;

fn realloc_growth(p: Params) -> Outcome {
    let (vec_bytes, raw_to) = if p.div > 1 {
        (GROW_VEC_BYTES / 16, GROW_RAW_TO / 16)
    } else {
        (GROW_VEC_BYTES, GROW_RAW_TO)
    };
    let mut ops = 0u64;
    let mut sum = 0u64;
    for _ in 0..GROW_VEC_ROUNDS {
        let mut v: Vec<u8> = Vec::new();
        let mut cap = 0;
        for i in 0..vec_bytes {
            v.push(i as u8);
            if v.capacity() != cap {
                cap = v.capacity();
                ops += 1;
            }
        }
        let v = black_box(v);
        sum += v.len() as u64 + u64::from(v[v.len() - 1]);
    }
    let mut size = GROW_RAW_FROM;
    let mut layout = std::alloc::Layout::from_size_align(size, 16).expect("layout");
    // SAFETY: `layout` has non-zero size.
    let mut ptr = unsafe { std::alloc::alloc(layout) };
    assert!(!ptr.is_null(), "allocation failed");
    touch_pages(ptr, 0, size);
    while size < raw_to {
        let new_size = size * 2;
        // SAFETY: `ptr` was allocated by the global allocator with `layout`,
        // and `new_size` is non-zero and does not overflow `isize`.
        ptr = unsafe { std::alloc::realloc(ptr, layout, new_size) };
        assert!(!ptr.is_null(), "reallocation failed");
        touch_pages(ptr, size, new_size);
        layout = std::alloc::Layout::from_size_align(new_size, 16).expect("layout");
        size = new_size;
        ops += 1;
    }
    // SAFETY: `ptr` is live and `size` bytes long; its first byte was
    // written by `touch_pages`.
    sum += u64::from(unsafe { ptr.read() });
    // SAFETY: `ptr` was allocated by the global allocator with `layout`.
    unsafe { std::alloc::dealloc(ptr, layout) };
    Outcome { ops, checksum: sum }
}

/// Writes one byte at the start of every 4 KiB page of `p[from..to]`.
fn touch_pages(p: *mut u8, from: usize, to: usize) {
    for off in (from..to).step_by(4096) {
        // SAFETY: callers pass a live allocation of at least `to` bytes.
        unsafe { p.add(off).write_volatile(off as u8) };
    }
}

/// large-churn: 8 slots, 240 iterations; each replaces a random slot's
/// buffer with a new zeroed one of 1-64 MiB (log-uniform) and writes one
/// byte per 4 KiB. Ops = 240.
const LARGE_SLOTS: usize = 8;
const LARGE_ITERS: u64 = 240;

fn large_churn(p: Params) -> Outcome {
    let iters = LARGE_ITERS / p.div;
    let mut rng = Rng::new(3);
    let mut slots: Vec<Vec<u8>> = (0..LARGE_SLOTS).map(|_| Vec::new()).collect();
    let mut sum = 0u64;
    for _ in 0..iters {
        let slot = rng.below(LARGE_SLOTS);
        let n = rng.log_uniform(1 << 20, 64 << 20);
        let mut buf = vec![0u8; n];
        for off in (0..n).step_by(4096) {
            buf[off] = off as u8 | 1;
        }
        sum += u64::from(buf[n - 1]) + n as u64;
        slots[slot] = black_box(buf);
    }
    drop(slots);
    Outcome {
        ops: iters,
        checksum: sum,
    }
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

/// fragmentation: phase 1 allocates 1,000,000 blocks of 16-1024 B
/// (log-uniform, ~230 MiB); phase 2 frees a random 90% of them; phase 3
/// allocates blocks of 1.2-12 KiB (other size classes, so they cannot drop
/// into the holes of phase 1 in a segregated-fit allocator) until they add
/// up to 30% of phase 1's bytes. Notes the RSS with that live set
/// (`rss_live_kib`) and the bytes the program holds (`live_bytes`), then
/// frees everything. Ops = blocks allocated in phases 1 and 3.
const FRAG_BLOCKS: usize = 1_000_000;

fn fragmentation(p: Params) -> Outcome {
    let n = FRAG_BLOCKS / p.div as usize;
    let mut rng = Rng::new(9);
    let mut sum = 0u64;
    let mut phase1_bytes = 0usize;
    let mut blocks: Vec<Box<[MaybeUninit<u8>]>> = (0..n)
        .map(|i| {
            let size = rng.log_uniform(16, 1024);
            phase1_bytes += size;
            let mut b = Box::new_uninit_slice(size);
            b[0].write(i as u8);
            b[size - 1].write(i as u8);
            b
        })
        .collect();
    note("phase1_bytes", phase1_bytes as u64);
    note("rss_phase1_kib", read_rss().current_kib);

    // Phase 2: free a random 90% (order shuffled, then the tail dropped).
    rng.shuffle(&mut blocks);
    let keep = n / 10;
    for b in blocks.drain(keep..) {
        sum += b.len() as u64;
    }
    let mut live_bytes: usize = blocks.iter().map(|b| b.len()).sum();
    note("rss_after_free90_kib", read_rss().current_kib);

    // Phase 3: differently-sized blocks.
    let target = phase1_bytes * 3 / 10;
    let mut added = 0usize;
    let mut phase3: Vec<Box<[MaybeUninit<u8>]>> = Vec::new();
    while added < target {
        let size = rng.log_uniform(1200, 12 << 10);
        let mut b = Box::new_uninit_slice(size);
        for off in (0..size).step_by(4096) {
            b[off].write(off as u8);
        }
        b[size - 1].write(1);
        added += size;
        phase3.push(b);
    }
    live_bytes += added;
    note("live_bytes", live_bytes as u64);
    note("rss_live_kib", read_rss().current_kib);
    let ops = (n + phase3.len()) as u64;
    sum += phase3.iter().map(|b| b.len() as u64).sum::<u64>();
    sum += blocks.iter().map(|b| b.len() as u64).sum::<u64>();
    drop(black_box(phase3));
    drop(black_box(blocks));
    Outcome { ops, checksum: sum }
}

/// btree-strings: a small "real program". 200,000 records with random
/// keys (8-24 chars) and values (8-120 chars) go into a `BTreeMap`; half
/// of them get a suffix appended (small reallocs); an index
/// `HashMap<prefix, Vec<String>>` clones every key into its bucket; a third
/// of the map is removed; everything is dropped. Ops = records.
const BTREE_RECORDS: usize = 200_000;

fn btree_strings(p: Params) -> Outcome {
    let n = BTREE_RECORDS / p.div as usize;
    let mut rng = Rng::new(21);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let word = |rng: &mut Rng, lo: usize, hi: usize| -> String {
        let len = rng.range(lo, hi);
        (0..len)
            .map(|_| char::from(alphabet[rng.below(alphabet.len())]))
            .collect()
    };
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut keys: Vec<String> = Vec::with_capacity(n);
    for _ in 0..n {
        let k = word(&mut rng, 8, 24);
        let v = word(&mut rng, 8, 120);
        keys.push(k.clone());
        map.insert(k, v);
    }
    for _ in 0..n / 2 {
        let k = &keys[rng.below(keys.len())];
        if let Some(v) = map.get_mut(k) {
            v.push_str("-edited-");
            v.push_str(k);
        }
    }
    let mut index: HashMap<String, Vec<String>, BuildHasherDefault<DefaultHasher>> =
        HashMap::default();
    for k in map.keys() {
        index.entry(k[..3].to_string()).or_default().push(k.clone());
    }
    for k in keys.iter().step_by(3) {
        map.remove(k);
    }
    let mut sum = map.len() as u64 + index.len() as u64;
    sum += map.values().map(|v| v.len() as u64).sum::<u64>();
    sum += index.values().map(|v| v.len() as u64).sum::<u64>();
    drop(black_box(index));
    drop(black_box(map));
    drop(black_box(keys));
    Outcome {
        ops: n as u64,
        checksum: sum,
    }
}
