//! `mapalloc::stats()` is consistent with what the program does.
//!
//! Every test holds the `serial()` lock (the numbers are process-wide and
//! libtest runs tests in parallel) and ends with `collect()`, so that no
//! test leaves cached memory behind for the next one.

mod common;

use common::stats::{LARGE, assert_calls_monotonic, assert_consistent};
use common::{KIB, MIB, mib, serial};
use std::sync::Arc;
use std::thread;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

/// Only the large-mapping cache makes freed large blocks linger; it can be
/// switched off through the environment.
/// Hardened mode (`MAPALLOC_HARDENED=1`) gives large blocks guard pages
/// and never caches or `mremap`s them.
fn hardened() -> bool {
    std::env::var("MAPALLOC_HARDENED").is_ok_and(|v| v.trim() != "0" && !v.trim().is_empty())
}

fn large_cache_enabled() -> bool {
    !hardened()
        && std::env::var("MAPALLOC_LARGE_CACHE_BYTES")
            .map(|v| v.trim() != "0")
            .unwrap_or(true)
        && std::env::var("MAPALLOC_LARGE_CACHE_MS")
            .map(|v| v.trim() != "0")
            .unwrap_or(true)
}

#[test]
fn stats_allocates_nothing() {
    let _g = serial();
    mapalloc::collect();
    // Two back-to-back snapshots are identical, and a hundred thousand calls
    // change nothing: no allocation, no mapping, no leak. Retried a few
    // times in case the test harness's main thread allocates meanwhile.
    let mut ok = false;
    for _ in 0..20 {
        let a = mapalloc::stats();
        let b = mapalloc::stats();
        let mut last = b;
        for _ in 0..100_000 {
            last = mapalloc::stats();
        }
        if a == b && a == last {
            ok = true;
            break;
        }
        thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        ok,
        "stats() changes the statistics it reports (it allocates?)"
    );
    let s = mapalloc::stats();
    // The harness and this test have allocated, so something is mapped.
    assert!(
        s.mapped_bytes > 0 && s.mmap_calls > 0 && s.heaps >= 1,
        "{s:?}"
    );
    assert_consistent(&s, "idle");
}

#[test]
fn small_allocations_use_segments() {
    let _g = serial();
    mapalloc::collect();
    let s0 = mapalloc::stats();
    const N: usize = 20_000;
    let boxes: Vec<Box<[u8; 64]>> = (0..N).map(|i| Box::new([i as u8; 64])).collect();
    let s1 = mapalloc::stats();
    assert!(s1.segments >= 1, "small allocations but no segment: {s1:?}");
    assert!(
        s1.slab_bytes >= N * 64,
        "slab_bytes {} < {} live small bytes: {s1:?}",
        s1.slab_bytes,
        N * 64
    );
    assert!(
        s1.in_use_bytes >= s0.in_use_bytes + N * 64 - 64 * KIB,
        "in_use did not grow: {s0:?} -> {s1:?}"
    );
    // (In hardened mode the vector of boxes itself, 160 KB, is a large
    // block: above 128 KiB every block gets a mapping of its own there.)
    assert_eq!(
        s1.large_mappings,
        s0.large_mappings + usize::from(hardened()),
        "64-byte boxes must not create large mappings"
    );
    assert_consistent(&s1, "with small boxes live");
    assert_calls_monotonic(&s0, &s1, "small allocations");
    assert!(boxes.iter().enumerate().all(|(i, b)| b[63] == i as u8));
    drop(boxes);
    mapalloc::collect();
    let s2 = mapalloc::stats();
    // Slack: the harness starts the next test's thread meanwhile, and its
    // first allocations take a page or two of its own.
    assert!(
        s2.slab_bytes <= s0.slab_bytes + MIB,
        "slab_bytes did not fall after free+collect: {s0:?} -> {s1:?} -> {s2:?}"
    );
    assert_consistent(&s2, "after freeing small boxes");
    assert_calls_monotonic(&s1, &s2, "free small");
}

#[test]
fn large_blocks_are_counted() {
    let _g = serial();
    mapalloc::collect();
    let s0 = mapalloc::stats();
    assert_eq!(
        s0.large_cached_bytes, 0,
        "collect() must empty the large cache: {s0:?}"
    );
    const N: usize = 6;
    let blocks: Vec<Vec<u8>> = (0..N).map(|i| vec![i as u8; LARGE]).collect();
    let s1 = mapalloc::stats();
    assert!(
        s1.large_mappings >= N,
        "{N} large blocks but large_mappings = {}: {s1:?}",
        s1.large_mappings
    );
    assert!(
        s1.large_mappings >= s0.large_mappings + N,
        "{s0:?} -> {s1:?}"
    );
    assert!(
        s1.large_bytes >= N * LARGE,
        "large_bytes {} < {}: {s1:?}",
        mib(s1.large_bytes),
        mib(N * LARGE)
    );
    assert!(
        s1.large_bytes >= s0.large_bytes + N * LARGE,
        "{s0:?} -> {s1:?}"
    );
    assert!(s1.in_use_bytes >= N * LARGE, "{s1:?}");
    assert!(
        s1.mmap_calls >= s0.mmap_calls + N as u64,
        "fresh large blocks need mmap (cache was empty): {s0:?} -> {s1:?}"
    );
    assert_consistent(&s1, "large blocks live");
    assert_calls_monotonic(&s0, &s1, "large alloc");
    assert!(
        blocks
            .iter()
            .enumerate()
            .all(|(i, b)| b[0] == i as u8 && b[LARGE - 1] == i as u8)
    );

    drop(blocks);
    let s2 = mapalloc::stats();
    assert!(
        s2.large_mappings + N <= s1.large_mappings,
        "freed large blocks still counted as live: {s1:?} -> {s2:?}"
    );
    assert!(
        s2.large_bytes + N * LARGE <= s1.large_bytes,
        "{s1:?} -> {s2:?}"
    );
    if large_cache_enabled() {
        // 6 x 2 MiB fits the 64 MiB cache; the 250 ms delay has not passed.
        assert!(
            s2.large_cached_bytes >= LARGE,
            "freed large mappings were not cached: {s2:?}"
        );
    }
    assert_consistent(&s2, "large blocks freed (cached)");
    assert_calls_monotonic(&s1, &s2, "large free");

    mapalloc::collect();
    let s3 = mapalloc::stats();
    assert_eq!(
        s3.large_cached_bytes, 0,
        "collect() did not drop the large cache: {s3:?}"
    );
    // Another test's thread may start meanwhile and map a segment for its
    // heap (collect() cooled the warm ones): those 4 MiB are not ours.
    let new_segments = s3.segments.saturating_sub(s1.segments) * 4 * MIB;
    assert!(
        s3.mapped_bytes + N * LARGE <= s1.mapped_bytes + new_segments,
        "large mappings were not unmapped: {s1:?} -> {s3:?}"
    );
    if large_cache_enabled() {
        assert!(
            s3.munmap_calls > s2.munmap_calls,
            "collect() dropped the cache without munmap: {s2:?} -> {s3:?}"
        );
    }
    assert_consistent(&s3, "after collect");
    assert_calls_monotonic(&s2, &s3, "collect");
}

#[test]
fn large_realloc_uses_mremap() {
    let _g = serial();
    mapalloc::collect();
    let s0 = mapalloc::stats();
    let mut v = vec![7u8; 4 * MIB];
    for target in [16 * MIB, 64 * MIB, 100 * MIB] {
        v.resize(target, 7);
    }
    let s1 = mapalloc::stats();
    if hardened() {
        assert_eq!(v.len(), 100 * MIB);
        return;
    }
    assert!(
        s1.mremap_calls > s0.mremap_calls,
        "growing a large Vec to 100 MiB made no mremap call: {s0:?} -> {s1:?}"
    );
    assert!(s1.large_bytes >= 100 * MIB, "{s1:?}");
    assert_consistent(&s1, "after large realloc");
    assert_calls_monotonic(&s0, &s1, "large realloc");
    v.truncate(10 * MIB);
    v.shrink_to_fit();
    let s2 = mapalloc::stats();
    assert!(
        s2.large_bytes < s1.large_bytes,
        "shrinking a large block did not reduce large_bytes: {s1:?} -> {s2:?}"
    );
    assert!(v.iter().step_by(4096).all(|&b| b == 7));
    drop(v);
    mapalloc::collect();
    assert_consistent(&mapalloc::stats(), "after collect");
}

#[test]
fn collect_madvises_empty_pages() {
    let _g = serial();
    mapalloc::collect();
    // 16 MiB of 1 KiB blocks; keep one in every 512 (one per 512 KiB), so no
    // segment becomes entirely empty (those are unmapped, not madvised) but
    // most slab pages do.
    let blocks: Vec<Box<[u8; 1024]>> = (0..16 * 1024).map(|i| Box::new([i as u8; 1024])).collect();
    let s0 = mapalloc::stats();
    let mut keep = Vec::new();
    for (i, b) in blocks.into_iter().enumerate() {
        if i % 512 == 0 {
            keep.push(b);
        }
    }
    mapalloc::collect();
    let s1 = mapalloc::stats();
    assert!(
        s1.madvise_calls > s0.madvise_calls,
        "collect() left emptied slab pages without madvise: {s0:?} -> {s1:?}"
    );
    assert!(
        s1.slab_bytes + 8 * MIB <= s0.slab_bytes,
        "slab_bytes did not fall after freeing 15.9 of 16 MiB and collect(): {s0:?} -> {s1:?}"
    );
    assert_consistent(&s1, "after collect");
    assert_calls_monotonic(&s0, &s1, "collect");
    assert!(
        keep.iter()
            .enumerate()
            .all(|(j, b)| b[1023] == (j * 512) as u8)
    );
    drop(keep);
    mapalloc::collect();
}

#[test]
fn calls_counters_are_monotonic_under_concurrency() {
    let _g = serial();
    // A watcher thread samples stats() while workers churn; each counter it
    // sees must never decrease (counters only ever grow, and successive
    // reads of one counter by one thread cannot go back in time).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut prev = mapalloc::stats();
            let mut samples = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let s = mapalloc::stats();
                assert_calls_monotonic(&prev, &s, "concurrent sample");
                prev = s;
                samples += 1;
            }
            (samples, prev)
        })
    };
    let first = mapalloc::stats();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                for round in 0..30 {
                    let small: Vec<Vec<u8>> = (0..2_000)
                        .map(|i| vec![t as u8; (i * 7 + round) % 3000 + 1])
                        .collect();
                    let mut big = vec![1u8; LARGE + round * 4096];
                    big.resize(3 * LARGE, 2);
                    assert_eq!(big[0], 1);
                    drop(small);
                    drop(big);
                    if round % 10 == 9 {
                        mapalloc::collect();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, last_seen) = watcher.join().unwrap();
    mapalloc::collect();
    let last = mapalloc::stats();
    assert!(samples > 0);
    assert_calls_monotonic(&first, &last_seen, "workers");
    assert_calls_monotonic(&last_seen, &last, "after workers");
    assert!(
        last.mmap_calls > first.mmap_calls,
        "120 large blocks of 2-6 MiB and no mmap call: {first:?} -> {last:?}"
    );
    assert!(
        last.munmap_calls > first.munmap_calls,
        "{first:?} -> {last:?}"
    );
    assert_consistent(&last, "after concurrent churn");
}
