//! Freed memory is given back to the OS: after a large working set is
//! dropped and `mapalloc::collect()` runs, the resident set size (from
//! /proc/self/statm) returns close to where it was, and
//! `stats().in_use_bytes` rises and falls with the working set.
//!
//! All tests take the `serial()` lock: RSS and stats are process-wide.

mod common;

use common::{KIB, MIB, Rng, mib, rss_bytes, serial};
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

const WORKING_SET: usize = if cfg!(debug_assertions) {
    256 * MIB
} else {
    512 * MIB
};
/// How far above the starting RSS we may end up after freeing everything.
const SLACK: usize = 64 * MIB;

/// Builds `bytes` worth of 1..4 KiB boxes, each filled (so every page is
/// touched) with a non-zero byte derived from its index.
fn small_boxes(bytes: usize, seed: u64) -> (Vec<Box<[u8]>>, usize) {
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(bytes / (2 * KIB) + 16);
    let mut total = 0;
    while total < bytes {
        let len = rng.range(KIB, 4 * KIB);
        v.push(vec![(v.len() as u8) | 1; len].into_boxed_slice());
        total += len;
    }
    (v, total)
}

fn check_boxes(v: &[Box<[u8]>]) {
    for (i, b) in v.iter().enumerate() {
        let want = (i as u8) | 1;
        assert!(
            b[0] == want && b[b.len() - 1] == want && b[b.len() / 2] == want,
            "box {i} corrupted"
        );
    }
}

#[track_caller]
fn assert_rss_returned(before: usize, peak: usize, what: &str) {
    mapalloc::collect();
    let after = rss_bytes();
    // The peak check makes sure we measured something real.
    assert!(
        peak >= before + WORKING_SET / 2,
        "{what}: RSS did not grow while the working set was live (before {}, peak {})",
        mib(before),
        mib(peak)
    );
    assert!(
        after <= before + SLACK,
        "{what}: RSS after free+collect is {} but was {} before the {} working set (peak {}); stats: {:?}",
        mib(after),
        mib(before),
        mib(WORKING_SET),
        mib(peak),
        mapalloc::stats()
    );
}

/// A thread that only frees, and never calls `collect()`, gives memory
/// back as it goes: emptied slabs are retired (and their segments
/// released) by the frees themselves once the purge delay has passed.
/// (What the last burst of frees, shorter than the delay, emptied waits
/// for the thread's next slow path, its exit or `collect()`.)
#[test]
fn a_thread_that_only_frees_gives_memory_back_without_collect() {
    // Hardened mode retires kept slabs on its slow path only (its frees
    // release quarantined blocks, also inside its drains).
    if std::env::var("MAPALLOC_HARDENED").is_ok_and(|v| v != "0") {
        eprintln!("hardened mode: not the default heap's free path; skipped");
        return;
    }
    let _g = serial();
    mapalloc::collect();
    let before = rss_bytes();
    let (mut v, _) = small_boxes(WORKING_SET, 7);
    check_boxes(&v);
    let peak = rss_bytes();
    // Free half, wait past the purge delay (10 ms), free the rest.
    v.truncate(v.len() / 2);
    thread::sleep(std::time::Duration::from_millis(30));
    drop(v);
    let after = rss_bytes();
    assert!(
        peak >= before + WORKING_SET / 2,
        "peak {} before {}",
        mib(peak),
        mib(before)
    );
    assert!(
        after + WORKING_SET / 4 <= peak,
        "RSS after the frees is {} (before {}, peak {}): the half freed before the pause was kept; stats: {:?}",
        mib(after),
        mib(before),
        mib(peak),
        mapalloc::stats()
    );
    // The rest waits for this thread: give it back before the next test.
    mapalloc::collect();
}

#[test]
fn small_boxes_are_returned() {
    let _g = serial();
    mapalloc::collect();
    let before = rss_bytes();
    let (boxes, total) = small_boxes(WORKING_SET, 1);
    assert!(total >= WORKING_SET);
    check_boxes(&boxes);
    let peak = rss_bytes();
    drop(boxes);
    assert_rss_returned(before, peak, "1..4 KiB boxes");
}

#[test]
fn small_boxes_freed_in_random_order_are_returned() {
    let _g = serial();
    mapalloc::collect();
    let before = rss_bytes();
    let (mut boxes, _) = small_boxes(WORKING_SET, 2);
    let peak = rss_bytes();
    // Free in a scattered order so that pages empty out late and unevenly.
    let mut rng = Rng::new(3);
    while !boxes.is_empty() {
        let i = rng.below(boxes.len());
        let b = boxes.swap_remove(i);
        assert_eq!(b[0] & 1, 1);
    }
    drop(boxes);
    assert_rss_returned(before, peak, "1..4 KiB boxes, random free order");
}

#[test]
fn one_mib_vectors_are_returned() {
    let _g = serial();
    mapalloc::collect();
    let before = rss_bytes();
    let vecs: Vec<Vec<u8>> = (0..WORKING_SET / MIB)
        .map(|i| vec![(i as u8) | 1; MIB])
        .collect();
    for (i, v) in vecs.iter().enumerate() {
        assert!(v[0] == (i as u8) | 1 && v[MIB - 1] == (i as u8) | 1);
    }
    let peak = rss_bytes();
    drop(vecs);
    assert_rss_returned(before, peak, "1 MiB vectors");
}

#[test]
fn memory_freed_by_another_thread_is_returned() {
    let _g = serial();
    const THREADS: usize = 4;
    mapalloc::collect();
    let before = rss_bytes();
    let (tx, rx) = mpsc::channel::<Vec<Box<[u8]>>>();
    let mut done_txs = Vec::new();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = tx.clone();
            let (done_tx, done_rx) = mpsc::channel::<()>();
            done_txs.push(done_tx);
            thread::spawn(move || {
                let (boxes, _) = small_boxes(WORKING_SET / THREADS, 10 + t as u64);
                tx.send(boxes).unwrap();
                // Stay alive until the main thread has freed everything,
                // then give this heap's empty pages back and exit.
                done_rx.recv().unwrap();
                mapalloc::collect();
            })
        })
        .collect();
    drop(tx);
    // The workers keep their senders until they exit, so take exactly one
    // message from each rather than waiting for the channel to close.
    let all: Vec<Vec<Box<[u8]>>> = (0..THREADS).map(|_| rx.recv().unwrap()).collect();
    assert_eq!(all.len(), THREADS);
    let peak = rss_bytes();
    for v in &all {
        check_boxes(v);
    }
    drop(all); // remote frees: every block belongs to another thread's heap
    for d in done_txs {
        d.send(()).unwrap();
    }
    for h in handles {
        h.join().unwrap();
    }
    assert_rss_returned(
        before,
        peak,
        "boxes allocated on worker threads, freed on the test thread",
    );
}

#[test]
fn in_use_bytes_rises_and_falls() {
    let _g = serial();
    // Slack for allocations made concurrently by the test harness.
    const NOISE: usize = MIB;
    mapalloc::collect();
    let s0 = mapalloc::stats();
    let (boxes, small_total) = small_boxes(64 * MIB, 4);
    let vecs: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; MIB]).collect();
    let s1 = mapalloc::stats();
    let total = small_total + 64 * MIB;
    assert!(
        s1.in_use_bytes + NOISE >= s0.in_use_bytes + total,
        "in_use_bytes grew by {} but {} were allocated: before {s0:?} after {s1:?}",
        mib(s1.in_use_bytes.saturating_sub(s0.in_use_bytes)),
        mib(total)
    );
    assert!(s1.mapped_bytes >= s1.in_use_bytes, "{s1:?}");
    check_boxes(&boxes);
    drop(boxes);
    drop(vecs);
    mapalloc::collect();
    let s2 = mapalloc::stats();
    assert!(
        s2.in_use_bytes <= s0.in_use_bytes + NOISE,
        "in_use_bytes did not fall back after freeing: before {s0:?}, live {s1:?}, after {s2:?}"
    );
    assert!(
        s2.mapped_bytes <= s1.mapped_bytes.saturating_sub(total / 2),
        "mapped_bytes did not fall after free+collect: live {s1:?}, after {s2:?}"
    );
}

#[test]
fn large_blocks_ask_for_transparent_huge_pages() {
    let _g = serial();
    if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
        eprintln!("skipped: this kernel has no transparent huge pages");
        return;
    }
    for size in [2 * MIB + 1, 40 * MIB] {
        let v = vec![1u8; size];
        // `hg`: the mapping was madvise(MADV_HUGEPAGE)d, so the kernel
        // may back it (and fault it in) 2 MiB at a time.
        let m = common::smaps::mapping_of(v.as_ptr() as usize);
        assert!(m.has("hg"), "{size} bytes: {m:?}");
        assert_eq!(v[size - 1], 1);
    }
}
