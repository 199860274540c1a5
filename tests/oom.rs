//! Out of memory and impossible requests.
//!
//! Every case runs in a forked child, most of them under
//! `setrlimit(RLIMIT_AS)` set to the child's current address-space size plus
//! 64 MiB, so that `mmap` really fails. The parent checks how the child
//! ended (exit status or signal) and what it wrote to stderr (captured
//! through a pipe).
//!
//! What must hold: a failed allocation returns null (so `try_reserve` gives
//! `Err`), the allocator stays usable and keeps every live block intact, an
//! infallible allocation that fails goes to Rust's alloc error handler
//! (message "memory allocation of N bytes failed", then SIGABRT), and
//! absurd sizes or alignments give null or a correct block, never a crash.
//!
//! Requests go through `std::alloc::{alloc, alloc_zeroed, realloc}`, the
//! route every collection takes. The allocator must never panic; if it
//! does, the child's panic hook reports where.
//!
//! Every pointer whose only use is a null check goes through `black_box`:
//! LLVM may otherwise delete an unused allocation and assume it succeeded
//! (seen in release builds: `alloc_zeroed(isize::MAX - 7).is_null()`
//! folded to false).

use std::alloc::Layout;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

mod common;

use common::child::{self, AS_HEADROOM, Ended, Output, limit_address_space, vm_size};
use common::{KIB, MIB};

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

const GIB: usize = 1024 * MIB;

// ---------------------------------------------------------------------------
// Fill patterns: byte `off` of block `id` comes from `tests/common`'s table
// of random bytes with a prime period.

/// Block `id`'s pattern (from `tests/common`) over all of `buf`.
fn fill(buf: &mut [u8], id: u64) {
    common::fill(buf, id, 0);
}

#[track_caller]
fn check(buf: &[u8], id: u64, what: &str) {
    common::assert_pattern(buf, id, 0, what);
}

/// Runs `body` in a forked child (see `tests/common/child.rs`) whose
/// stderr is captured. The child exits 0 if `body` returns and 101 if it
/// panics; it may also die of a signal, which is what some cases expect.
fn in_child(what: &str, body: impl FnOnce()) -> Output {
    child::in_child_with_stderr(what, Duration::from_secs(60), || {
        body();
        0
    })
}

// ---------------------------------------------------------------------------
// (a) A single request far over the limit.

#[test]
fn try_reserve_over_limit_fails_cleanly() {
    in_child("try_reserve 1 GiB", || {
        limit_address_space();
        let mut v: Vec<u8> = Vec::new();
        let r = v.try_reserve(GIB);
        black_box(&mut v);
        assert!(r.is_err(), "1 GiB fits in 64 MiB of headroom?");
        let r = v.try_reserve_exact(GIB);
        black_box(&mut v);
        assert!(r.is_err(), "try_reserve_exact(1 GiB)");
        assert_eq!(v.capacity(), 0);
        // A Vec that already holds data keeps it when growth fails.
        let mut w = vec![0u8; 64 * KIB];
        fill(&mut w, 1);
        let r = w.try_reserve(GIB);
        black_box(&mut w);
        assert!(r.is_err(), "growing a 64 KiB Vec by 1 GiB");
        check(&w, 1, "Vec after failed growth");
        // And the allocator still works, small and large.
        let s: Vec<String> = (0..1000).map(|i| format!("still alive {i}")).collect();
        assert_eq!(s[999], "still alive 999");
        let mut big = vec![0u8; 8 * MIB];
        fill(&mut big, 2);
        check(&big, 2, "8 MiB after the failure");
    })
    .assert_success("(a)");
}

// ---------------------------------------------------------------------------
// (b) Fill the address space with 4 MiB blocks, free half, fill again.

const CHUNK: usize = 4 * MIB;

fn try_chunk(id: u64) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(CHUNK).ok()?;
    v.resize(CHUNK, 0);
    fill(&mut v, id);
    Some(v)
}

#[test]
fn exhaust_free_half_and_reuse() {
    in_child("exhaust", || {
        // Everything the test itself needs is allocated before the limit.
        let mut chunks: Vec<(u64, Vec<u8>)> = Vec::with_capacity(1024);
        let mut small: Vec<Vec<u8>> = Vec::with_capacity(1 << 18);
        let limit = limit_address_space();

        // Phase 1: 4 MiB blocks until the first failure.
        let mut next_id = 1u64;
        let mut first_failure = None;
        for _ in 0..1024 {
            match try_chunk(next_id) {
                Some(v) => chunks.push((next_id, v)),
                None => {
                    first_failure = Some(chunks.len());
                    break;
                }
            }
            next_id += 1;
        }
        let n = first_failure.expect("4 GiB of 4 MiB blocks under a 64 MiB headroom?");
        assert!(
            (4..=AS_HEADROOM / CHUNK).contains(&n),
            "{n} blocks of 4 MiB fit in {} MiB of headroom",
            AS_HEADROOM / MIB
        );
        assert!(vm_size() <= limit);
        for (id, v) in &chunks {
            check(v, *id, "phase 1");
        }

        // Small blocks at the limit: succeed or fail cleanly (the current
        // segments have room, a new segment may not fit).
        let mut small_ok = 0;
        for i in 0..(1 << 18) {
            let mut v = Vec::new();
            if v.try_reserve_exact(1 + i % 2000).is_err() {
                break;
            }
            v.push(i as u8);
            small.push(v);
            small_ok += 1;
        }
        // 2^18 blocks of ~1 KiB are far more than the headroom left: the
        // slab path itself must have run out and returned null.
        assert!(
            small_ok < 1 << 18,
            "small allocations never failed at the limit"
        );
        for (i, v) in small.iter().enumerate() {
            assert_eq!(v, &[i as u8], "small block {i} at the limit");
        }
        small.clear();

        // Phase 2: free every other block; as many must fit again.
        let mut kept = Vec::new();
        for (k, c) in chunks.drain(..).enumerate() {
            if k % 2 == 0 {
                check(&c.1, c.0, "before free");
            } else {
                kept.push(c);
            }
        }
        let freed = n - kept.len();
        for _ in 0..freed {
            let v = try_chunk(next_id).unwrap_or_else(|| {
                panic!("after freeing {freed} blocks of 4 MiB, block {next_id} does not fit")
            });
            kept.push((next_id, v));
            next_id += 1;
        }
        for (id, v) in &kept {
            check(v, *id, "phase 2");
        }

        // Phase 3: back under the limit, everything works again.
        let survivors = kept.split_off(kept.len() / 2);
        drop(kept);
        let words: HashMap<usize, String> = (0..5000).map(|i| (i, format!("word {i}"))).collect();
        assert_eq!(words[&4321], "word 4321");
        let extra = try_chunk(next_id).expect("a 4 MiB block after freeing half");
        check(&extra, next_id, "phase 3");
        for (id, v) in &survivors {
            check(v, *id, "phase 3 survivors");
        }
        println!("(b): {n} blocks of 4 MiB before failure, {small_ok} small blocks at the limit");
    })
    .assert_success("(b)");
}

// ---------------------------------------------------------------------------
// (c) An infallible allocation that fails: Rust's handler, then SIGABRT.

#[test]
fn infallible_allocation_failure_aborts() {
    let out = in_child("with_capacity 1 GiB", || {
        limit_address_space();
        let v = Vec::<u8>::with_capacity(GIB);
        std::hint::black_box(&v);
        // Not reached: the alloc error handler aborts.
        // SAFETY: ends the child without unwinding into the harness.
        unsafe { libc::_exit(3) };
    });
    assert!(
        out.ended == Ended::Signaled(libc::SIGABRT),
        "expected SIGABRT, got {}; stderr:\n{}",
        out.ended,
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("memory allocation of {GIB} bytes failed")),
        "stderr lacks Rust's alloc error message:\n{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// (d) Huge single requests: null, every time, limit or not.

/// Sizes no allocator can serve on x86_64 (the user address space is
/// 128 TiB); `Layout` accepts all of them with alignment 8.
fn huge_sizes() -> [usize; 5] {
    let max = isize::MAX as usize;
    [max - 4095, max - 4096, max - 8192 - 7, max / 2, 1 << 47]
}

fn huge_requests_return_null() {
    mapalloc::collect();
    let before = mapalloc::stats();
    for round in 0..3 {
        for size in huge_sizes() {
            for align in [8, 4096, 1 << 16, 1 << 20] {
                // Rounded up to `align`, the size must still fit isize.
                let size = size.min(isize::MAX as usize + 1 - align);
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: `layout` has a non-zero size.
                let p = black_box(unsafe { std::alloc::alloc(layout) });
                assert!(
                    p.is_null(),
                    "round {round}: alloc({size:#x}, align {align}) = {p:?}"
                );
                // SAFETY: as above.
                let p = black_box(unsafe { std::alloc::alloc_zeroed(layout) });
                assert!(
                    p.is_null(),
                    "round {round}: alloc_zeroed({size:#x}, align {align}) = {p:?}"
                );
            }
        }
    }
    // Failed requests leave nothing behind.
    let after = mapalloc::stats();
    assert!(
        after.mapped_bytes <= before.mapped_bytes
            && after.large_mappings == before.large_mappings
            && after.large_bytes == before.large_bytes,
        "failed huge requests changed the books: {before:?} -> {after:?}"
    );
    // The allocator is unharmed: small, large and segment-aligned blocks.
    let mut v = vec![0u8; 3 * MIB];
    fill(&mut v, 9);
    check(&v, 9, "3 MiB after huge requests");
    for align in [8, 1 << 16, 4 * MIB, 16 * MIB] {
        let layout = Layout::from_size_align(5 * MIB, align).unwrap();
        // SAFETY: non-zero size.
        let p = black_box(unsafe { std::alloc::alloc(layout) });
        assert!(!p.is_null(), "5 MiB aligned to {align} after huge requests");
        assert_eq!(p as usize % align, 0);
        // SAFETY: `p` is a live block of `layout`.
        unsafe {
            p.write_bytes(0xEE, layout.size());
            std::alloc::dealloc(p, layout);
        }
    }
}

#[test]
fn huge_requests_without_limit() {
    in_child("huge, no limit", huge_requests_return_null).assert_success("(d) without rlimit");
}

#[test]
fn huge_requests_under_limit() {
    in_child("huge, limited", || {
        limit_address_space();
        huge_requests_return_null();
    })
    .assert_success("(d) under rlimit");
}

// ---------------------------------------------------------------------------
// (e) Absurd alignments; failed alloc_zeroed and realloc leave blocks alone.

fn absurd_alignments() {
    let mut served = Vec::new();
    // From a slab page up to the largest alignment `Layout` accepts for a
    // 64-byte block (the size rounded up to the alignment must fit isize).
    for shift in [17, 20, 22, 23, 26, 30, 34, 40, 44, 46, 47, 50, 62] {
        let align = 1usize << shift;
        let layout = Layout::from_size_align(64, align).unwrap();
        for zeroed in [false, true] {
            // SAFETY: non-zero size.
            let p = black_box(unsafe {
                if zeroed {
                    std::alloc::alloc_zeroed(layout)
                } else {
                    std::alloc::alloc(layout)
                }
            });
            if p.is_null() {
                continue;
            }
            assert_eq!(
                p as usize % align,
                0,
                "alloc(64, align 2^{shift}) = {p:?} is misaligned"
            );
            // SAFETY: `p` is a live block of at least 64 bytes.
            unsafe {
                let bytes = std::slice::from_raw_parts_mut(p, 64);
                if zeroed {
                    assert!(
                        bytes.iter().all(|&b| b == 0),
                        "alloc_zeroed(align 2^{shift}) not zero"
                    );
                }
                fill(bytes, shift);
                check(bytes, shift, "over-aligned block");
                assert!(mapalloc::usable_size(p) >= 64);
                std::alloc::dealloc(p, layout);
            }
            served.push(shift);
        }
    }
    // Anything at or above 2^47 cannot be served in a 47-bit address space.
    assert!(
        served.iter().all(|&s| s < 47),
        "served impossible alignments: {served:?}"
    );
    println!("(e): alignments served: 2^{served:?}");
}

/// A block, its layout and pattern id, for the realloc cases.
struct Held {
    p: *mut u8,
    layout: Layout,
    id: u64,
}

impl Held {
    fn new(size: usize, align: usize, id: u64) -> Held {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: non-zero size.
        let p = black_box(unsafe { std::alloc::alloc(layout) });
        assert!(!p.is_null(), "alloc({size}, {align})");
        let mut h = Held { p, layout, id };
        fill(h.bytes_mut(), id);
        h
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the block is live and `layout.size()` bytes long.
        unsafe { std::slice::from_raw_parts_mut(self.p, self.layout.size()) }
    }

    fn check(&mut self, what: &str) {
        let id = self.id;
        check(self.bytes_mut(), id, what);
    }
}

fn failed_realloc_keeps_block() {
    let max = isize::MAX as usize;
    let mut blocks = vec![
        Held::new(64, 8, 1),
        Held::new(3000, 16, 2),
        Held::new(100 * KIB, 8, 3),
        Held::new(MIB, 8, 4),
        Held::new(6 * MIB, 8, 5),
        Held::new(64, 1 << 16, 6),
        Held::new(256 * KIB, MIB, 7),
        Held::new(300 * KIB, 8 * MIB, 8),
    ];
    let before = mapalloc::stats();
    for round in 0..2 {
        for b in &mut blocks {
            let align = b.layout.align();
            // Largest sizes allowed: rounded up to `align` they fit isize.
            for new_size in [max + 1 - align, max + 1 - 2 * align, max / 2, 1 << 47] {
                // SAFETY: `b` is a live block of `b.layout`; `new_size` is
                // non-zero and does not overflow isize when rounded up.
                let q = black_box(unsafe { std::alloc::realloc(b.p, b.layout, new_size) });
                assert!(
                    q.is_null(),
                    "round {round}: realloc({} B align {align} -> {new_size:#x}) = {q:?}",
                    b.layout.size()
                );
                b.check("block after failed realloc");
            }
            let huge = Layout::from_size_align(max + 1 - align, align).unwrap();
            // SAFETY: non-zero size.
            let z = black_box(unsafe { std::alloc::alloc_zeroed(huge) });
            assert!(
                z.is_null(),
                "round {round}: alloc_zeroed({:#x}, align {align}) = {z:?}; {:?}",
                huge.size(),
                mapalloc::stats()
            );
            b.check("block after failed alloc_zeroed");
        }
    }
    let after = mapalloc::stats();
    assert!(
        after.large_mappings == before.large_mappings && after.large_bytes == before.large_bytes,
        "failed reallocs changed the large blocks: {before:?} -> {after:?}"
    );
    // The blocks are still fully usable: grow them, then free them.
    for b in &mut blocks {
        let old = b.layout.size();
        let new_size = old * 2 + 1000;
        // SAFETY: a live block of `b.layout`; a modest new size.
        let q = black_box(unsafe { std::alloc::realloc(b.p, b.layout, new_size) });
        assert!(!q.is_null(), "realloc({old} -> {new_size}) after failures");
        assert_eq!(q as usize % b.layout.align(), 0);
        b.p = q;
        b.layout = Layout::from_size_align(old, b.layout.align()).unwrap();
        b.check("prefix after growing");
        // SAFETY: `q` is live with `new_size` bytes and the same alignment.
        unsafe {
            std::alloc::dealloc(
                q,
                Layout::from_size_align(new_size, b.layout.align()).unwrap(),
            )
        };
    }
}

#[test]
fn absurd_alignments_without_limit() {
    in_child("align, no limit", absurd_alignments).assert_success("(e) alignments without rlimit");
}

#[test]
fn absurd_alignments_under_limit() {
    in_child("align, limited", || {
        limit_address_space();
        absurd_alignments();
    })
    .assert_success("(e) alignments under rlimit");
}

#[test]
fn failed_realloc_and_alloc_zeroed_keep_the_block() {
    in_child("realloc, no limit", failed_realloc_keeps_block)
        .assert_success("(e) realloc without rlimit");
    in_child("realloc, limited", || {
        limit_address_space();
        failed_realloc_keeps_block();
    })
    .assert_success("(e) realloc under rlimit");
}
