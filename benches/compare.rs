//! mapalloc vs glibc malloc (`std::alloc::System`) on whole-program workloads.
//!
//! Run all workloads:        `cargo bench --bench compare`
//! Run some of them:         `cargo bench --bench compare -- small-pairs large-churn`
//! Scaled-down smoke run:    `cargo bench --bench compare -- --quick`
//!
//! The binary's global allocator is `common::Switch`, which forwards to
//! MapAlloc or to the system allocator depending on `MAPALLOC_BENCH_ALLOC`,
//! read once per process. The parent (variable unset) re-executes itself once
//! per workload per allocator, so each measurement gets a fresh process: a
//! clean heap, its own peak RSS (`VmHWM`), and no cross-talk between
//! allocators. Each child runs its workload several times and reports every
//! run's wall time; the tables show the median.
//!
//! Without `--bench` on the command line (as under `cargo test --benches` or
//! `cargo test --all-targets`) the binary does a scaled-down single-run smoke
//! test of every workload on both allocators instead of the full benchmark.
//!
//! Operation counts below are fixed; an "op" is one allocation together with
//! its eventual free, except in `realloc-growth` where it is one reallocation.

mod common;

use std::alloc::Layout;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::mpsc::sync_channel;
use std::thread;

use common::{Alloc, Outcome, Rng};

/// Ops are divided by this in smoke-test mode.
const QUICK_DIVISOR: u64 = 25;

struct Workload {
    name: &'static str,
    about: &'static str,
    /// Timed runs per child (median reported).
    reps: usize,
    /// Runs the workload once, with all op counts divided by the argument.
    run: fn(u64) -> Outcome,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "small-pairs",
        about: "Box::new/drop of 16/32/48/64-byte objects in a tight loop, 1 thread",
        reps: 7,
        run: small_pairs,
    },
    Workload {
        name: "small-batch",
        about: "alloc 1000 blocks of 8-512 B, free them in random order, repeat",
        reps: 7,
        run: small_batch,
    },
    Workload {
        name: "mixed-sizes",
        about: "log-uniform 8 B-256 KiB, rolling window of live blocks, touch first+last byte",
        reps: 7,
        run: mixed_sizes,
    },
    Workload {
        name: "producer-consumer",
        about: "2 producer threads -> bounded channels -> 2 consumer threads free (cross-thread)",
        reps: 7,
        run: producer_consumer,
    },
    Workload {
        name: "realloc-growth",
        about: "Vec<u8> push to 64 MiB (x4) + raw realloc doubling 4 KiB -> 256 MiB (x2)",
        reps: 5,
        run: realloc_growth,
    },
    Workload {
        name: "large-churn",
        about: "20 slots, random slot gets a new zeroed 5-25 MiB buffer, 1 write per 4 KiB",
        reps: 3,
        run: large_churn,
    },
    Workload {
        name: "thread-churn",
        about: "1000 short threads, 2 at a time, each 1000 small allocs; 10 freed by main",
        reps: 7,
        run: thread_churn,
    },
];

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

/// small-pairs: 40,000,000 alloc+free pairs.
const SMALL_PAIRS: u64 = 40_000_000;

fn small_pairs(div: u64) -> Outcome {
    let iters = SMALL_PAIRS / 4 / div;
    let mut sum = 0u64;
    for i in 0..iters {
        let b = i as u8;
        let a = black_box(Box::new([b; 16]));
        sum += u64::from(a[15]);
        drop(a);
        let a = black_box(Box::new([b; 32]));
        sum += u64::from(a[31]);
        drop(a);
        let a = black_box(Box::new([b; 48]));
        sum += u64::from(a[47]);
        drop(a);
        let a = black_box(Box::new([b; 64]));
        sum += u64::from(a[63]);
        drop(a);
    }
    Outcome {
        ops: iters * 4,
        checksum: sum,
    }
}

/// small-batch: 20,000 rounds x 1000 blocks = 20,000,000 alloc+free pairs.
const SMALL_BATCH_ROUNDS: u64 = 20_000;
const SMALL_BATCH_SIZE: usize = 1000;

fn small_batch(div: u64) -> Outcome {
    let rounds = SMALL_BATCH_ROUNDS / div;
    let mut rng = Rng::new(1);
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(SMALL_BATCH_SIZE);
    let mut sum = 0u64;
    for r in 0..rounds {
        for _ in 0..SMALL_BATCH_SIZE {
            let mut v = Vec::with_capacity(rng.range(8, 512));
            v.push(r as u8);
            blocks.push(black_box(v));
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

/// mixed-sizes: 1,500,000 allocations (each eventually freed) over a window
/// of 1000 live blocks (~25 MiB live on average).
const MIXED_OPS: u64 = 1_500_000;
const MIXED_WINDOW: usize = 1000;

fn mixed_sizes(div: u64) -> Outcome {
    let ops = MIXED_OPS / div;
    let mut rng = Rng::new(2);
    let mut sum = 0u64;
    let new_block = |rng: &mut Rng, sum: &mut u64| {
        let n = rng.log_uniform(8, 256 << 10);
        let mut b: Box<[MaybeUninit<u8>]> = Box::new_uninit_slice(n);
        b[0].write(n as u8);
        b[n - 1].write((n >> 8) as u8);
        *sum += n as u64;
        black_box(b)
    };
    let mut window: Vec<Box<[MaybeUninit<u8>]>> = (0..MIXED_WINDOW)
        .map(|_| new_block(&mut rng, &mut sum))
        .collect();
    for _ in MIXED_WINDOW as u64..ops {
        let slot = rng.below(MIXED_WINDOW);
        window[slot] = new_block(&mut rng, &mut sum);
    }
    drop(window);
    Outcome { ops, checksum: sum }
}

/// producer-consumer: 2 producers x 2,048,000 objects of 16-1024 B = 4,096,000
/// alloc+free pairs, every free on another thread. Objects travel in batches
/// of 256 (the batch `Vec`s themselves are not counted).
const PC_OBJECTS_PER_PRODUCER: u64 = 2_048_000;
const PC_BATCH: usize = 256;
const PC_CHANNEL_BATCHES: usize = 16;

fn producer_consumer(div: u64) -> Outcome {
    let batches = PC_OBJECTS_PER_PRODUCER / div / PC_BATCH as u64;
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
                        let mut v = Vec::with_capacity(rng.range(16, 1024));
                        v.push(b as u8);
                        batch.push(v);
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

/// realloc-growth: 4 times, push bytes one by one into a `Vec<u8>` up to
/// 64 MiB; then 2 times, raw `realloc` doubling from 4 KiB to 256 MiB,
/// writing one byte per 4 KiB page of each new half. Ops = reallocations
/// (Vec capacity changes + raw doublings: 4 x 24 + 2 x 16 = 128 per run).
const GROW_VEC_ROUNDS: u64 = 4;
const GROW_VEC_BYTES: usize = 64 << 20;
const GROW_RAW_ROUNDS: u64 = 2;
const GROW_RAW_FROM: usize = 4 << 10;
const GROW_RAW_TO: usize = 256 << 20;

fn realloc_growth(div: u64) -> Outcome {
    let (vec_bytes, raw_to) = if div > 1 {
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
    for _ in 0..GROW_RAW_ROUNDS {
        let mut size = GROW_RAW_FROM;
        let mut layout = Layout::from_size_align(size, 16).expect("layout");
        // SAFETY: `layout` has non-zero size.
        let mut p = unsafe { std::alloc::alloc(layout) };
        assert!(!p.is_null(), "allocation failed");
        touch_pages(p, 0, size);
        while size < raw_to {
            let new_size = size * 2;
            // SAFETY: `p` was allocated by the global allocator with `layout`,
            // and `new_size` is non-zero and does not overflow `isize`.
            p = unsafe { std::alloc::realloc(p, layout, new_size) };
            assert!(!p.is_null(), "reallocation failed");
            touch_pages(p, size, new_size);
            layout = Layout::from_size_align(new_size, 16).expect("layout");
            size = new_size;
            ops += 1;
        }
        // SAFETY: `p` is live, `size` bytes long, and all of its pages were
        // written by `touch_pages`; reading the first byte is in bounds.
        sum += u64::from(unsafe { p.read() });
        // SAFETY: `p` was allocated by the global allocator with `layout`.
        unsafe { std::alloc::dealloc(p, layout) };
    }
    Outcome { ops, checksum: sum }
}

/// Writes one byte at the start of every 4 KiB page of `p[from..to]`.
fn touch_pages(p: *mut u8, from: usize, to: usize) {
    for off in (from..to).step_by(4096) {
        // SAFETY: callers pass a live allocation of at least `to` bytes.
        unsafe { p.add(off).write_volatile(off as u8) };
    }
}

/// large-churn (mimalloc-bench `malloc-large` style): 20 slots, 2000
/// iterations, each replaces a random slot's buffer with a new zeroed one of
/// 5-25 MiB (`vec![0u8; n]`) and writes one byte per 4 KiB. Ops = 2000.
const LARGE_SLOTS: usize = 20;
const LARGE_ITERS: u64 = 2000;

fn large_churn(div: u64) -> Outcome {
    let iters = LARGE_ITERS / div;
    let mut rng = Rng::new(3);
    let mut slots: Vec<Vec<u8>> = (0..LARGE_SLOTS).map(|_| Vec::new()).collect();
    let mut sum = 0u64;
    for _ in 0..iters {
        let slot = rng.below(LARGE_SLOTS);
        let n = rng.range(5 << 20, 25 << 20);
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

/// thread-churn: 1000 threads, started 2 at a time; each allocates 1000
/// blocks of 16-256 B, frees 990 of them itself and hands 10 back to the main
/// thread, which frees them after the join (frees into a dead thread's heap).
/// Ops = 1,000,000 alloc+free pairs.
const CHURN_THREADS: u64 = 1000;
const CHURN_ALLOCS: usize = 1000;
const CHURN_RETURNED: usize = 10;

fn thread_churn(div: u64) -> Outcome {
    let threads = CHURN_THREADS / div;
    let mut sum = 0u64;
    for pair in 0..threads / 2 {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                thread::spawn(move || {
                    let mut rng = Rng::new(pair * 2 + t);
                    let mut blocks = Vec::with_capacity(CHURN_ALLOCS);
                    for i in 0..CHURN_ALLOCS {
                        let mut v = Vec::with_capacity(rng.range(16, 256));
                        v.push(i as u8);
                        blocks.push(v);
                    }
                    let kept = blocks.split_off(CHURN_ALLOCS - CHURN_RETURNED);
                    let s: u64 = blocks.iter().map(|v| v.capacity() as u64).sum();
                    drop(black_box(blocks));
                    (s, kept)
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread panicked"))
            .collect();
        for (s, kept) in results {
            sum += s + kept.iter().map(|v| v.capacity() as u64).sum::<u64>();
        }
    }
    Outcome {
        ops: threads / 2 * 2 * CHURN_ALLOCS as u64,
        checksum: sum,
    }
}

// ---------------------------------------------------------------------------
// Child and parent
// ---------------------------------------------------------------------------

fn child(alloc: Alloc, args: &[String]) {
    let quick = args.iter().any(|a| a == "--quick");
    let Some(name) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!(
            "error: child needs a workload name (unset {} to run the comparison)",
            common::ENV_VAR
        );
        std::process::exit(2);
    };
    let Some(w) = WORKLOADS.iter().find(|w| w.name == name) else {
        eprintln!("error: unknown workload {name:?}");
        std::process::exit(2);
    };
    let (div, reps) = if quick {
        (QUICK_DIVISOR, 1)
    } else {
        (1, w.reps)
    };
    let (times, out) = common::measure(reps, || (w.run)(div));
    // Everything the workload allocated has been freed by now.
    let stats = (alloc == Alloc::MapAlloc).then(mapalloc::stats);
    common::Measurement::finish(w.name, times, out).emit();
    for line in stats.iter().flat_map(common::stats_lines) {
        println!("STATS {line}");
    }
}

fn main() {
    if let Some((alloc, args)) = common::child_mode() {
        child(alloc, &args);
        return;
    }

    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; without it we are being run as a test.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let names: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    for n in &names {
        if !WORKLOADS.iter().any(|w| w.name == *n) {
            let all: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
            eprintln!(
                "error: unknown workload {n:?}; choose from: {}",
                all.join(", ")
            );
            std::process::exit(2);
        }
    }
    let selected: Vec<&Workload> = WORKLOADS
        .iter()
        .filter(|w| names.is_empty() || names.contains(&w.name))
        .collect();

    let mut reproduce = String::from("cargo bench --bench compare");
    if !names.is_empty() || quick {
        reproduce.push_str(" --");
        if quick {
            reproduce.push_str(" --quick");
        }
        for n in &names {
            reproduce.push(' ');
            reproduce.push_str(n);
        }
    }
    if quick {
        eprintln!(
            "compare: smoke-test mode (ops / {QUICK_DIVISOR}, 1 run each); use `cargo bench --bench compare` for real numbers"
        );
    }

    let child_args: &[&str] = if quick { &["--quick"] } else { &[] };
    let mut results = Vec::new();
    for w in &selected {
        let mut pair = Vec::new();
        for alloc in Alloc::ALL {
            eprint!("compare: {:<18} on {:<9}... ", w.name, alloc.label());
            let mut a = vec![w.name];
            a.extend_from_slice(child_args);
            match common::run_child(alloc, &a) {
                Ok(out) => {
                    let runs: Vec<String> = out
                        .result
                        .times_ns
                        .iter()
                        .map(|&t| common::fmt_ns(t))
                        .collect();
                    eprintln!(
                        "median {:>9}  (runs: {})",
                        common::fmt_ns(out.result.median_ns()),
                        runs.join(", ")
                    );
                    pair.push(out);
                }
                Err(e) => {
                    eprintln!("FAILED\n{e}");
                    std::process::exit(1);
                }
            }
        }
        let (m, s) = (&pair[0].result, &pair[1].result);
        if m.checksum != s.checksum || m.ops != s.ops {
            eprintln!(
                "error: {}: results differ between allocators (mapalloc ops={} checksum={:#x}, glibc ops={} checksum={:#x})",
                w.name, m.ops, m.checksum, s.ops, s.checksum
            );
            std::process::exit(1);
        }
        results.push((w, pair));
    }

    // Details first, the two tables last (so `| tail -40` shows them whole).
    println!();
    println!("workloads:");
    for w in &selected {
        println!("  {:<18} {}", w.name, w.about);
    }
    println!();
    println!(
        "mapalloc::stats() at the end of each mapalloc child (everything freed, before collect()):"
    );
    for (w, pair) in &results {
        let mut lines = pair[0].tagged("STATS");
        if let Some(first) = lines.next() {
            println!("  {:<18} {first}", w.name);
        }
        for l in lines {
            println!("  {:<18} {l}", "");
        }
    }

    println!();
    println!("=== mapalloc vs glibc malloc -- reproduce with: {reproduce}");
    println!(
        "{}; time = median of the child's runs, ops/s from the median",
        common::machine_line()
    );
    println!(
        "each workload x allocator runs in its own process; ratio = glibc time / mapalloc time"
    );
    println!();
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(w, pair)| {
            let (m, s) = (&pair[0].result, &pair[1].result);
            vec![
                w.name.to_string(),
                common::fmt_count(m.ops),
                format!("{}x", m.times_ns.len()),
                common::fmt_ns(m.median_ns()),
                common::fmt_rate(m.ops_per_sec()),
                common::fmt_ns(s.median_ns()),
                common::fmt_rate(s.ops_per_sec()),
                common::fmt_ratio(m.median_ns(), s.median_ns()),
            ]
        })
        .collect();
    common::print_table(
        &[
            "workload",
            "ops",
            "runs",
            "mapalloc",
            "ops/s",
            "glibc",
            "ops/s",
            "mapalloc vs glibc",
        ],
        &rows,
    );

    println!();
    let kib = |k: u64| common::fmt_bytes(k * 1024);
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(w, pair)| {
            let (m, s) = (&pair[0].result, &pair[1].result);
            vec![
                w.name.to_string(),
                kib(m.peak_rss_kib),
                kib(s.peak_rss_kib),
                kib(m.end_rss_kib),
                kib(s.end_rss_kib),
                kib(m.trimmed_rss_kib),
                kib(s.trimmed_rss_kib),
            ]
        })
        .collect();
    common::print_table(
        &[
            "RSS",
            "peak mapalloc",
            "peak glibc",
            "end mapalloc",
            "end glibc",
            "collect()",
            "malloc_trim",
        ],
        &rows,
    );
    println!("peak = VmHWM of the child; end = VmRSS after the workload freed everything;");
    println!(
        "collect() / malloc_trim = VmRSS after then calling mapalloc::collect() / malloc_trim(0)"
    );
}
