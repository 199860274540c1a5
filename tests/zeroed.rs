//! `alloc_zeroed` must return all-zero memory for every size, in particular
//! when it reuses memory that was just dirtied and freed (slab slots,
//! madvised pages, cached large mappings).

mod common;

use common::{KIB, MIB, Rng, first_nonzero};
use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

fn sizes() -> Vec<usize> {
    let mut v = Vec::new();
    let mut s = 16;
    while s <= 64 * MIB {
        v.extend([s - 1, s, s + 1, s + s / 2]);
        s *= 2;
    }
    v.retain(|&s| (16..=64 * MIB).contains(&s));
    v
}

#[track_caller]
fn assert_zero(p: *const u8, size: usize, what: &str) {
    // SAFETY: callers pass a live block of `size` bytes from alloc_zeroed
    // (or otherwise initialised).
    let b = unsafe { std::slice::from_raw_parts(p, size) };
    if let Some(i) = first_nonzero(b) {
        panic!("{what}: size {size}: byte {i} is {:#04x}, want 0", b[i]);
    }
}

#[test]
fn zeroed_fresh_and_after_dirty_free() {
    for size in sizes() {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // Fresh.
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc_zeroed(layout) };
        assert!(!p.is_null());
        assert_zero(p, size, "fresh alloc_zeroed");
        // Dirty it and free it; the same size is requested again right
        // away, so a recycling allocator will hand the same memory back.
        // SAFETY: `p` is a block of `size` bytes.
        unsafe { std::ptr::write_bytes(p, 0xAA, size) };
        // SAFETY: allocated with `layout`.
        unsafe { GLOBAL.dealloc(p, layout) };
        for round in 0..3 {
            // SAFETY: non-zero size.
            let q = unsafe { GLOBAL.alloc_zeroed(layout) };
            assert!(!q.is_null());
            assert_zero(
                q,
                size,
                &format!("alloc_zeroed after dirty free (round {round})"),
            );
            // SAFETY: block of `size` bytes.
            unsafe { std::ptr::write_bytes(q, 0xAA, size) };
            // SAFETY: allocated with `layout`.
            unsafe { GLOBAL.dealloc(q, layout) };
        }
    }
}

#[test]
fn zeroed_after_dirty_alloc_of_same_size() {
    // Dirty through plain `alloc` (not alloc_zeroed), many blocks of one
    // size class at once so that whole slab pages are recycled.
    for size in [
        16,
        24,
        48,
        100,
        256,
        1000,
        4096,
        10_000,
        65_536,
        128 * KIB,
        128 * KIB + 1,
        MIB,
        3 * MIB + 5,
    ] {
        let layout = Layout::from_size_align(size, 16).unwrap();
        let n = (8 * MIB / size).clamp(4, 2000);
        let dirty: Vec<*mut u8> = (0..n)
            .map(|_| {
                // SAFETY: non-zero size.
                let p = unsafe { GLOBAL.alloc(layout) };
                assert!(!p.is_null());
                // SAFETY: block of `size` bytes.
                unsafe { std::ptr::write_bytes(p, 0xAA, size) };
                p
            })
            .collect();
        for p in dirty {
            // SAFETY: allocated with `layout`.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
        let clean: Vec<*mut u8> = (0..n)
            .map(|_| {
                // SAFETY: non-zero size.
                let p = unsafe { GLOBAL.alloc_zeroed(layout) };
                assert!(!p.is_null());
                assert_zero(p, size, "alloc_zeroed reusing dirty slots");
                // SAFETY: block of `size` bytes; marks it so two live blocks
                // handed out for the same memory would be noticed below.
                unsafe { std::ptr::write_bytes(p, 0x55, size) };
                p
            })
            .collect();
        for p in clean {
            // SAFETY: still live, fully written with 0x55.
            let b = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(
                b.iter().step_by(61).all(|&x| x == 0x55),
                "size {size}: overlapping blocks"
            );
            // SAFETY: allocated with `layout`.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    }
}

#[test]
fn vec_zero_macro() {
    for n in [
        1,
        7,
        64,
        1000,
        4095,
        4096,
        70_000,
        128 * KIB,
        128 * KIB + 1,
        2 * MIB,
        33 * MIB,
    ] {
        // Dirty vectors of the same size first.
        for _ in 0..2 {
            let d = vec![0xAAu8; n];
            assert_eq!(d[n - 1], 0xAA);
            drop(d);
            let z = vec![0u8; n];
            assert_eq!(first_nonzero(&z), None, "vec![0u8; {n}]");
            let w = vec![0u64; n / 8 + 1];
            assert!(w.iter().all(|&x| x == 0), "vec![0u64; {}]", n / 8 + 1);
        }
    }
}

#[test]
fn calloc_like_after_churn() {
    let mut rng = Rng::new(0x2E60);
    let mut live: Vec<(*mut u8, Layout)> = Vec::new();
    let rounds = if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    };
    for _ in 0..rounds {
        let size = match rng.below(100) {
            0 => rng.range(128 * KIB, 4 * MIB),
            1..=10 => rng.range(1, 64 * KIB),
            _ => rng.range(1, 1024),
        };
        let align = 1 << rng.below(8);
        let layout = Layout::from_size_align(size, align).unwrap();
        if rng.one_in(2) {
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc_zeroed(layout) };
            assert!(!p.is_null());
            assert_zero(p, size, "alloc_zeroed during churn");
            // SAFETY: block of `size` bytes.
            unsafe { std::ptr::write_bytes(p, 0xAA, size) };
            live.push((p, layout));
        } else {
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: block of `size` bytes.
            unsafe { std::ptr::write_bytes(p, 0xAA, size) };
            live.push((p, layout));
        }
        while live.len() > 1500 || (!live.is_empty() && rng.below(100) < 45) {
            let (p, l) = live.swap_remove(rng.below(live.len()));
            // SAFETY: allocated with `l`, not yet freed.
            unsafe { GLOBAL.dealloc(p, l) };
        }
    }
    for (p, l) in live {
        // SAFETY: allocated with `l`, not yet freed.
        unsafe { GLOBAL.dealloc(p, l) };
    }
    // After churn, big calloc-style requests (count * elem size).
    for (count, elem) in [(1000, 8), (100_000, 4), (1 << 20, 16), (3, 40 * MIB / 3)] {
        let layout = Layout::from_size_align(count * elem, 8).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc_zeroed(layout) };
        assert!(!p.is_null());
        assert_zero(p, layout.size(), "calloc-like after churn");
        // SAFETY: allocated with `layout`.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
}

#[test]
fn zeroed_large_after_collect_and_cache() {
    // Large blocks go through the mapping cache; `collect()` drops it.
    // Zeroing must hold whichever way the memory comes back.
    for size in [200 * KIB, 4 * MIB, 17 * MIB + 3, 64 * MIB] {
        let layout = Layout::from_size_align(size, 4096).unwrap();
        for step in 0..4 {
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc_zeroed(layout) };
            assert!(!p.is_null());
            assert_zero(p, size, &format!("large alloc_zeroed step {step}"));
            // SAFETY: block of `size` bytes.
            unsafe { std::ptr::write_bytes(p, 0xAA, size) };
            // SAFETY: allocated with `layout`.
            unsafe { GLOBAL.dealloc(p, layout) };
            if step == 2 {
                mapalloc::collect();
            }
        }
    }
}
