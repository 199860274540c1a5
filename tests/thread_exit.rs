//! Heaps and segments of exited threads, seen through `mapalloc::stats()`.
//!
//! Alone in its binary on purpose: the numbers are process-wide, and in a
//! binary with other tests the harness thread (starting the next test) may
//! adopt an abandoned segment mid-test, so that blocks freed here land in
//! its heap and stay counted until it next allocates.

mod common;

use common::stats::{assert_calls_monotonic, assert_consistent};
use common::{MIB, serial};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

#[test]
fn heaps_follow_live_threads_and_abandoned_segments_drain() {
    let _g = serial();
    mapalloc::collect();
    const THREADS: usize = 8;
    let s0 = mapalloc::stats();
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let (tx, rx) = mpsc::channel::<(usize, Vec<Box<[u8]>>)>();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = Arc::clone(&barrier);
            let tx = tx.clone();
            thread::spawn(move || {
                // Enough small blocks to need segments of this thread's own.
                let blocks: Vec<Box<[u8]>> = (0..6_000)
                    .map(|i| vec![(t + i) as u8; 700].into_boxed_slice())
                    .collect();
                barrier.wait(); // all threads alive and allocated
                barrier.wait(); // main thread has looked at the stats
                tx.send((t, blocks)).unwrap();
            })
        })
        .collect();
    drop(tx);
    barrier.wait();
    let s1 = mapalloc::stats();
    assert!(
        s1.heaps > THREADS,
        "{} threads with live allocations but heaps = {}: {s1:?}",
        THREADS + 1,
        s1.heaps
    );
    barrier.wait();
    for h in handles {
        h.join().unwrap();
    }
    // The threads are gone; their blocks are still alive.
    let survivors: Vec<(usize, Vec<Box<[u8]>>)> = rx.iter().collect();
    assert_eq!(survivors.len(), THREADS);
    let s2 = mapalloc::stats();
    assert!(
        s2.heaps + THREADS <= s1.heaps,
        "heaps of exited threads still counted: {s1:?} -> {s2:?}"
    );
    assert!(
        s2.heaps <= s0.heaps + 1,
        "heaps did not fall back after threads exited: {s0:?} -> {s2:?}"
    );
    assert!(
        s2.segments >= 1 && s2.slab_bytes >= THREADS * 6_000 * 700,
        "{s2:?}"
    );
    assert_consistent(&s2, "threads exited, blocks live");
    for (t, blocks) in &survivors {
        let t = *t;
        for (i, b) in blocks.iter().enumerate() {
            assert!(b[0] == (t + i) as u8 && b[699] == (t + i) as u8);
        }
    }
    drop(survivors);
    mapalloc::collect();
    let s3 = mapalloc::stats();
    assert!(
        s3.abandoned_segments <= s0.abandoned_segments,
        "segments of exited threads remain abandoned after all their blocks were freed: {s0:?} -> {s3:?}"
    );
    assert!(
        s3.slab_bytes <= s0.slab_bytes + MIB,
        "slab memory of exited threads not released after all their blocks were freed: {s0:?} -> {s3:?}"
    );
    assert_consistent(&s3, "after freeing survivors");
    assert_calls_monotonic(&s0, &s3, "thread test");
}
