//! Every power-of-two alignment from 1 B to 1 MiB, through `alloc`,
//! `alloc_zeroed` and `realloc`, with sizes around the alignment and a few
//! large sizes (so both slab and dedicated-mapping paths are covered,
//! including small sizes with an alignment above the 64 KiB slab limit).

mod common;

use common::{KIB, MIB, assert_pattern, fill_raw, first_nonzero};
use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

const MAX_ALIGN: usize = MIB;

fn alignments() -> impl Iterator<Item = usize> {
    (0..=MAX_ALIGN.trailing_zeros()).map(|s| 1usize << s)
}

fn sizes_for(align: usize) -> Vec<usize> {
    let mut v = vec![
        1,
        align.saturating_sub(1),
        align,
        align + 1,
        3 * align,
        128 * KIB,
        128 * KIB + 1,
        MIB + 7,
        5 * MIB,
    ];
    v.retain(|&s| s > 0);
    v.sort_unstable();
    v.dedup();
    v
}

fn id_of(size: usize, align: usize, extra: u64) -> u64 {
    (size as u64) << 24 ^ (align as u64) ^ extra << 56
}

/// Views an initialised block as a slice.
///
/// # Safety
/// `p..p + len` must be a live, fully initialised allocation.
unsafe fn bytes<'a>(p: *mut u8, len: usize) -> &'a [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(p, len) }
}

#[track_caller]
fn assert_aligned(p: *mut u8, layout: Layout, what: &str) {
    assert!(!p.is_null(), "{what}: null for {layout:?}");
    assert_eq!(
        p as usize % layout.align(),
        0,
        "{what}: {p:p} not aligned for {layout:?}"
    );
}

#[test]
fn alloc_every_alignment() {
    for align in alignments() {
        let mut live = Vec::new();
        for size in sizes_for(align) {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            assert_aligned(p, layout, "alloc");
            let id = id_of(size, align, 0);
            // SAFETY: `p` is a fresh block of `size` bytes.
            unsafe { fill_raw(p, size, id, 0) };
            live.push((p, layout, id));
        }
        // Check only after all blocks of this alignment exist, so overlapping
        // blocks would have clobbered each other.
        for &(p, layout, id) in &live {
            // SAFETY: fully written above and still live.
            assert_pattern(
                unsafe { bytes(p, layout.size()) },
                id,
                0,
                &format!("{layout:?}"),
            );
        }
        for (p, layout, _) in live {
            // SAFETY: allocated with this layout and not yet freed.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    }
}

#[test]
fn many_blocks_same_alignment() {
    // Many neighbours in the same size class must all be aligned, not just
    // the first one of a slab page.
    for align in [8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16 * KIB, 64 * KIB] {
        for size in [1, align / 2 + 1, align + 1] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let n = (4 * MIB / layout.pad_to_align().size()).clamp(8, 300);
            let blocks: Vec<(*mut u8, u64)> = (0..n)
                .map(|i| {
                    // SAFETY: non-zero size.
                    let p = unsafe { GLOBAL.alloc(layout) };
                    assert_aligned(p, layout, "alloc (many)");
                    let id = id_of(size, align, i as u64 + 1);
                    // SAFETY: fresh block of `size` bytes.
                    unsafe { fill_raw(p, size, id, 0) };
                    (p, id)
                })
                .collect();
            for &(p, id) in &blocks {
                // SAFETY: written above, still live.
                assert_pattern(unsafe { bytes(p, size) }, id, 0, &format!("{layout:?}"));
            }
            for (p, _) in blocks {
                // SAFETY: allocated with `layout`.
                unsafe { GLOBAL.dealloc(p, layout) };
            }
        }
    }
}

#[test]
fn alloc_zeroed_every_alignment() {
    for align in alignments() {
        for size in sizes_for(align) {
            let layout = Layout::from_size_align(size, align).unwrap();
            // Dirty a block of this layout first so that a reused block
            // would show up as non-zero.
            // SAFETY: non-zero size.
            let d = unsafe { GLOBAL.alloc(layout) };
            assert_aligned(d, layout, "alloc");
            // SAFETY: `d` is a block of `size` bytes.
            unsafe { std::ptr::write_bytes(d, 0xAA, size) };
            // SAFETY: allocated with `layout`.
            unsafe { GLOBAL.dealloc(d, layout) };

            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc_zeroed(layout) };
            assert_aligned(p, layout, "alloc_zeroed");
            // SAFETY: alloc_zeroed returns initialised (zero) memory.
            let b = unsafe { bytes(p, size) };
            if let Some(i) = first_nonzero(b) {
                panic!("alloc_zeroed({layout:?}) byte {i} is {:#04x}", b[i]);
            }
            // SAFETY: `p` is a block of `size` bytes.
            unsafe { fill_raw(p, size, 1, 0) };
            // SAFETY: allocated with `layout`.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    }
}

#[test]
fn realloc_keeps_alignment_and_contents() {
    for align in alignments() {
        for size in sizes_for(align) {
            let layout = Layout::from_size_align(size, align).unwrap();
            let id = id_of(size, align, 7);
            // SAFETY: non-zero size.
            let mut p = unsafe { GLOBAL.alloc(layout) };
            assert_aligned(p, layout, "alloc");
            // SAFETY: fresh block of `size` bytes.
            unsafe { fill_raw(p, size, id, 0) };
            let mut cur = size;
            // Grow past the slab limit, shrink to tiny, grow again.
            for new in [
                2 * size + align,
                size + 1,
                300 * KIB + 3,
                size / 2 + 1,
                3,
                2 * MIB + 1,
                1,
            ] {
                let old_layout = Layout::from_size_align(cur, align).unwrap();
                // SAFETY: `p` was allocated with `old_layout`; `new` > 0 and
                // rounding it up to `align` cannot overflow.
                let q = unsafe { GLOBAL.realloc(p, old_layout, new) };
                let new_layout = Layout::from_size_align(new, align).unwrap();
                assert_aligned(q, new_layout, &format!("realloc {cur} -> {new}"));
                let keep = cur.min(new);
                // SAFETY: the first `keep` bytes were initialised before.
                assert_pattern(
                    unsafe { bytes(q, keep) },
                    id,
                    0,
                    &format!("realloc {cur} -> {new} align {align}"),
                );
                if new > keep {
                    // SAFETY: `q` is valid for `new` bytes.
                    unsafe { fill_raw(q.add(keep), new - keep, id, keep) };
                }
                p = q;
                cur = new;
            }
            // SAFETY: `p` holds `cur` bytes with alignment `align`.
            unsafe { GLOBAL.dealloc(p, Layout::from_size_align(cur, align).unwrap()) };
        }
    }
}

#[test]
fn over_aligned_types() {
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    #[repr(align(65536))]
    struct Big(u64);
    #[repr(align(131072))]
    struct Huge(u32);

    let pages: Vec<Box<Page>> = (0..200).map(|i| Box::new(Page([i as u8; 4096]))).collect();
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(&**p as *const Page as usize % 4096, 0);
        assert!(p.0.iter().all(|&b| b == i as u8));
    }
    let mut v: Vec<Big> = Vec::new();
    for i in 0..100u64 {
        v.push(Big(i));
        assert_eq!(v.as_ptr() as usize % 65536, 0);
    }
    assert!(v.iter().enumerate().all(|(i, b)| b.0 == i as u64));
    let h: Vec<Box<Huge>> = (0..20).map(|i| Box::new(Huge(i))).collect();
    for (i, b) in h.iter().enumerate() {
        assert_eq!(&**b as *const Huge as usize % 131072, 0);
        assert_eq!(b.0, i as u32);
    }
}
