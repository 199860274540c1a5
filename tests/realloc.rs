//! `realloc` across the small/large boundary, Vec growth to 64 MiB, and
//! large (mremap-backed) growth from 1 MiB to 256 MiB, with contents
//! checked at every step.

mod common;

use common::{KIB, MIB, assert_pattern, fill_raw};
use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

/// # Safety
/// `p..p + len` must be live and initialised.
unsafe fn bytes<'a>(p: *const u8, len: usize) -> &'a [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(p, len) }
}

/// Reallocates a block through `sizes`, checking that the common prefix
/// survives each step and refilling the new tail. Returns the number of
/// steps at which the block moved.
fn walk_sizes(align: usize, sizes: &[usize], id: u64) -> usize {
    let mut cur = sizes[0];
    let layout = Layout::from_size_align(cur, align).unwrap();
    // SAFETY: non-zero size.
    let mut p = unsafe { GLOBAL.alloc(layout) };
    assert!(!p.is_null());
    // SAFETY: fresh block of `cur` bytes.
    unsafe { fill_raw(p, cur, id, 0) };
    let mut moves = 0;
    for &new in &sizes[1..] {
        // SAFETY: `p` was allocated with (cur, align); `new` > 0.
        let q = unsafe { GLOBAL.realloc(p, Layout::from_size_align(cur, align).unwrap(), new) };
        assert!(!q.is_null(), "realloc {cur} -> {new} failed");
        assert_eq!(
            q as usize % align,
            0,
            "realloc {cur} -> {new} lost alignment {align}"
        );
        if q != p {
            moves += 1;
        }
        let keep = cur.min(new);
        // SAFETY: the first `keep` bytes were initialised.
        assert_pattern(
            unsafe { bytes(q, keep) },
            id,
            0,
            &format!("realloc {cur} -> {new} (align {align})"),
        );
        if new > keep {
            // SAFETY: `q` is valid for `new` bytes.
            unsafe { fill_raw(q.add(keep), new - keep, id, keep) };
        }
        p = q;
        cur = new;
    }
    // SAFETY: `p` holds (cur, align) and is live.
    unsafe { GLOBAL.dealloc(p, Layout::from_size_align(cur, align).unwrap()) };
    moves
}

/// Sizes from 8 B up to `max` growing by ~1.4x (with odd offsets so that
/// size-class boundaries are hit from both sides), then back down.
fn up_and_down(max: usize) -> Vec<usize> {
    let mut up = vec![8usize];
    while *up.last().unwrap() < max {
        let s = *up.last().unwrap();
        up.push((s + s / 3 + 5).min(max));
    }
    // Exact boundary neighbours of the 128 KiB slab limit.
    for s in [128 * KIB - 1, 128 * KIB, 128 * KIB + 1] {
        up.push(s);
    }
    up.sort_unstable();
    up.dedup();
    let mut all = up.clone();
    all.extend(up.iter().rev().skip(1).map(|&s| s.saturating_sub(3).max(1)));
    all
}

#[test]
fn grow_and_shrink_across_boundary() {
    let sizes = up_and_down(32 * MIB);
    assert!(sizes.contains(&(128 * KIB + 1)) && sizes.contains(&(32 * MIB)));
    for (i, align) in [1, 8, 16, 64, 4096, 64 * KIB].into_iter().enumerate() {
        walk_sizes(align, &sizes, 100 + i as u64);
    }
}

#[test]
fn small_steps_around_slab_limit() {
    // One byte at a time across the 128 KiB limit and back.
    let mut sizes: Vec<usize> = (128 * KIB - 40..128 * KIB + 40).collect();
    sizes.extend((128 * KIB - 40..128 * KIB + 40).rev());
    walk_sizes(8, &sizes, 7);
    // Alternating small and large.
    let alt: Vec<usize> = (0..60)
        .map(|i| {
            if i % 2 == 0 {
                100 + i
            } else {
                200 * KIB + i * 4096
            }
        })
        .collect();
    walk_sizes(16, &alt, 8);
    // Same-size realloc and tiny changes on a large block.
    walk_sizes(
        8,
        &[
            3 * MIB,
            3 * MIB,
            3 * MIB + 1,
            3 * MIB - 1,
            3 * MIB - 4096,
            3 * MIB,
        ],
        9,
    );
}

#[test]
fn vec_push_to_64_mib() {
    const TOTAL: usize = 64 * MIB;
    const P: usize = 251; // prime period of the pushed values
    let mut v: Vec<u8> = Vec::new();
    let mut caps = 0;
    let mut last_cap = 0;
    for i in 0..TOTAL {
        v.push((i % P) as u8);
        if v.capacity() != last_cap {
            last_cap = v.capacity();
            caps += 1;
        }
    }
    assert!(caps > 10, "Vec grew only {caps} times");
    // Compare with a reference block whose length is a multiple of P.
    let reference: Vec<u8> = (0..P * 256).map(|i| (i % P) as u8).collect();
    let check = |v: &[u8]| {
        for (c, chunk) in v.chunks(reference.len()).enumerate() {
            if chunk != &reference[..chunk.len()] {
                let i = chunk
                    .iter()
                    .zip(&reference)
                    .position(|(a, b)| a != b)
                    .unwrap();
                panic!(
                    "byte {} is {} (want {})",
                    c * reference.len() + i,
                    chunk[i],
                    reference[i]
                );
            }
        }
    };
    check(&v);
    // Shrink in stages through large sizes into slab sizes.
    for keep in [
        40 * MIB + 3,
        5 * MIB,
        200 * KIB,
        128 * KIB + 1,
        128 * KIB,
        60 * KIB,
        1000,
        1,
    ] {
        v.truncate(keep);
        v.shrink_to_fit();
        assert_eq!(v.len(), keep);
        assert!(v.capacity() >= keep);
        check(&v);
    }
    // Grow again from one byte.
    for i in 1..3 * MIB {
        v.push((i % P) as u8);
    }
    check(&v);
}

#[test]
fn large_growth_1_mib_to_256_mib() {
    const MAX: usize = 256 * MIB;
    let mut sizes = vec![MIB];
    while *sizes.last().unwrap() < MAX {
        let s = *sizes.last().unwrap();
        // Mix of page-multiple and odd steps, ~1.3x each.
        sizes.push((s + s / 4 + if sizes.len() % 2 == 0 { 4096 } else { 12345 }).min(MAX));
    }
    // And back down, ending in a slab-sized block.
    let down: Vec<usize> = [
        192 * MIB,
        100 * MIB + 1,
        17 * MIB,
        2 * MIB,
        MIB,
        200 * KIB,
        100 * KIB,
        10,
    ]
    .to_vec();
    sizes.extend(down);
    for align in [8, 4096] {
        walk_sizes(align, &sizes, 42 + align as u64);
    }
}

#[test]
fn realloc_vec_of_vecs() {
    // Many blocks realloc'ed in lock-step so the allocator cannot always
    // grow in place: neighbours must not be clobbered.
    let mut blocks: Vec<(u64, Vec<u8>)> = (0..64u64).map(|i| (i, Vec::new())).collect();
    let mut target = 1usize;
    while target <= 2 * MIB {
        for (id, v) in blocks.iter_mut() {
            let old = v.len();
            v.resize(target + *id as usize, 0);
            common::fill(&mut v[old..], *id, old);
        }
        for (id, v) in &blocks {
            assert_pattern(v, *id, 0, "lock-step vec");
        }
        target = target * 2 + 1;
    }
    for (id, v) in blocks.iter_mut() {
        v.truncate(*id as usize + 10);
        v.shrink_to_fit();
        assert_pattern(v, *id, 0, "lock-step vec after shrink");
    }
}

/// `mapalloc::raw::realloc` (C's `realloc`) keeps every usable byte, not
/// only what was asked for: a C program may write up to
/// `malloc_usable_size`.
#[test]
fn raw_realloc_keeps_the_whole_usable_size() {
    for (size, grown) in [(20, 3000), (5000, 300 * KIB), (2 * MIB, 8 * MIB)] {
        let p = mapalloc::raw::alloc(size, 8);
        assert!(!p.is_null());
        // SAFETY: a fresh block, written only within its usable size, then
        // resized and freed once.
        unsafe {
            let usable = mapalloc::raw::usable_size(p);
            assert!(usable >= size);
            fill_raw(p, usable, 7, 0);
            let q = mapalloc::raw::realloc(p, 8, grown);
            assert!(!q.is_null());
            assert_pattern(bytes(q, usable), 7, 0, "after raw::realloc");
            mapalloc::raw::free(q);
        }
    }
}
