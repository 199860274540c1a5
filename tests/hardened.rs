//! Hardened mode: each misuse runs in a forked child, and the test asserts
//! how the child died (signal) and what it printed (one line on stderr).

use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::hardened();

mod common;

use common::child::{Ended, in_child_with_stderr};
use std::time::Duration;

/// How a child ended.
#[derive(Debug)]
struct Death {
    signal: Option<i32>,
    stderr: String,
}

/// Runs `body` in a forked child with stderr captured.
fn in_child(body: impl FnOnce()) -> Death {
    let out = in_child_with_stderr("hardened misuse", Duration::from_secs(60), || {
        body();
        0
    });
    Death {
        signal: match out.ended {
            Ended::Signaled(sig) => Some(sig),
            Ended::Exited(_) => None,
        },
        stderr: out.stderr,
    }
}

/// The child aborted with one line naming `what` at some address.
fn assert_aborted_naming(d: &Death, what: &str) {
    assert_eq!(d.signal, Some(libc::SIGABRT), "{d:?}");
    let prefix = format!("mapalloc: {what} of 0x");
    assert!(d.stderr.starts_with(&prefix), "{d:?}");
}

fn assert_aborted_with(d: &Death, what: &str, addr: usize) {
    assert_eq!(d.signal, Some(libc::SIGABRT), "{d:?}");
    let line = format!("mapalloc: {what} of {addr:#x}\n");
    assert_eq!(d.stderr, line, "{d:?}");
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Allocates `size` bytes, then in a child frees them and runs `misuse`
/// on the freed block; asserts the child aborted naming `what` and the
/// block's address.
fn misuse_after_free_aborts(size: usize, what: &str, misuse: impl FnOnce(*mut u8, Layout)) {
    let l = layout(size);
    // SAFETY: allocated through our global allocator.
    let p = unsafe { GLOBAL.alloc(l) };
    assert!(!p.is_null());
    let d = in_child(|| {
        // SAFETY: a valid free; what `misuse` does next is the misuse.
        unsafe { GLOBAL.dealloc(p, l) };
        misuse(p, l);
    });
    assert_aborted_with(&d, what, p as usize);
    // SAFETY: the parent still owns `p`.
    unsafe { GLOBAL.dealloc(p, l) };
}

#[test]
fn double_free_aborts_with_its_address() {
    for size in [24, 4000, 100_000, 2 << 20] {
        // Large blocks are unmapped at the first free, so the second is a
        // free of memory we no longer have.
        let what = if size > 1 << 20 {
            "invalid free"
        } else {
            "double free"
        };
        // SAFETY: the second free is the misuse.
        misuse_after_free_aborts(size, what, |p, l| unsafe { GLOBAL.dealloc(p, l) });
    }
}

/// C's `realloc` (`mapalloc::raw`) checks the block once, before it reads
/// the old size from the block's headers.
#[test]
fn raw_realloc_of_a_freed_block_aborts() {
    for (size, what) in [(24, "use after free"), (2 << 20, "invalid pointer")] {
        // SAFETY: the realloc of the freed block is the misuse.
        misuse_after_free_aborts(size, what, |p, l| unsafe {
            mapalloc::raw::realloc(p, l.align(), 4 * size);
        });
    }
}

#[test]
fn realloc_of_a_freed_block_aborts() {
    // Small (a size that the default would resize in place) and large.
    for (size, what) in [(24, "use after free"), (2 << 20, "invalid pointer")] {
        // SAFETY: the realloc of the freed block is the misuse.
        misuse_after_free_aborts(size, what, |p, l| unsafe {
            GLOBAL.realloc(p, l, size);
        });
    }
}

#[test]
fn invalid_frees_abort() {
    let on_stack = [0u64; 4];
    let stack_ptr = on_stack.as_ptr() as *mut u8;
    let d = in_child(|| {
        // SAFETY: deliberately freeing a stack address.
        unsafe { GLOBAL.dealloc(stack_ptr, layout(32)) };
    });
    assert_aborted_with(&d, "invalid free", stack_ptr as usize);

    // SAFETY: allocated through our global allocator.
    let block = unsafe { GLOBAL.alloc(layout(256)) };
    let interior = block.wrapping_add(16);
    let d = in_child(|| {
        // SAFETY: deliberately freeing an interior pointer.
        unsafe { GLOBAL.dealloc(interior, layout(16)) };
    });
    assert_aborted_with(&d, "invalid free", interior as usize);

    // The same in a page the heap knows (a free there taught it the page,
    // so the check starts from the heap's cache of its own pages).
    // SAFETY: plain allocations, freed below.
    let blocks: Vec<*mut u8> = (0..64)
        .map(|_| unsafe { GLOBAL.alloc(layout(256)) })
        .collect();
    let (a, b) = blocks
        .iter()
        .flat_map(|&a| blocks.iter().map(move |&b| (a, b)))
        .find(|&(a, b)| a != b && a as usize >> 16 == b as usize >> 16)
        .expect("two blocks in one page");
    let d = in_child(|| {
        // SAFETY: `a` is freed once; then an interior pointer of `b`.
        unsafe {
            GLOBAL.dealloc(a, layout(256));
            GLOBAL.dealloc(b.wrapping_add(16), layout(16));
        }
    });
    assert_aborted_with(&d, "invalid free", b as usize + 16);
    for p in blocks {
        // SAFETY: each block freed once (in this process).
        unsafe { GLOBAL.dealloc(p, layout(256)) };
    }

    // SAFETY: a block of glibc's heap, not ours.
    let foreign = unsafe { libc::malloc(64) } as *mut u8;
    let d = in_child(|| {
        // SAFETY: deliberately freeing a foreign pointer.
        unsafe { GLOBAL.dealloc(foreign, layout(64)) };
    });
    assert_aborted_with(&d, "invalid free", foreign as usize);

    let large = 3 << 20;
    // SAFETY: allocated through our global allocator.
    let big = unsafe { GLOBAL.alloc(layout(large)) };
    let d = in_child(|| {
        // SAFETY: deliberately freeing inside a large block.
        unsafe { GLOBAL.dealloc(big.wrapping_add(4096), layout(16)) };
    });
    assert_aborted_with(&d, "invalid free", big as usize + 4096);
    // SAFETY: ours, freed once.
    unsafe {
        GLOBAL.dealloc(block, layout(256));
        GLOBAL.dealloc(big, layout(large));
        libc::free(foreign.cast());
    }
}

/// The heap's cache of its own slab pages also holds each slab's layout
/// (its block size, as a divisor): a retired slab must leave it, or a new
/// slab in the same page is checked against the old layout. Page P first
/// holds 2560-byte slots (2 KiB asked for, with their canary), is
/// retired, then holds only live 128-byte slots; `q`, 2560 bytes into P,
/// is slot 1 in the old layout and slot 20 in the new. Freed twice, it
/// must be reported as a double free: with P's old entry still cached,
/// the free would be checked against the old layout and go wrong.
#[test]
fn a_retired_slab_leaves_the_known_pages() {
    let d = in_child(|| {
        // SAFETY: plain allocations; `q` is freed twice on purpose.
        unsafe {
            let hold = GLOBAL.alloc(layout(48)); // keeps the segment alive
            let a = GLOBAL.alloc(layout(2048));
            let page = a as usize & !0xffff;
            GLOBAL.dealloc(a, layout(2048)); // the heap learns P
            mapalloc::collect(); // the quarantine empties; P is retired
            // Every slot of the new slab handed out (480 slots of 128 bytes
            // in 60 KiB), so each table entry says it is live.
            let in_page = (0..100_000)
                .map(|_| GLOBAL.alloc(layout(120)))
                .filter(|&p| p as usize & !0xffff == page)
                .take(480)
                .count();
            assert_eq!(in_page, 480, "P reused for 128-byte slots");
            let q = (page + 2560) as *mut u8;
            GLOBAL.dealloc(q, layout(120));
            GLOBAL.dealloc(q, layout(120));
            let _ = hold;
        }
    });
    assert_aborted_naming(&d, "double free");
}

/// Frees start from the heap's cache of its own slab pages, which reads the
/// page's descriptor: an entry must not outlive its segment. Here 16
/// segments' worth of 2 KiB blocks are freed and `collect()` empties the
/// quarantine, so the segments that held only these blocks are released
/// and unmapped; the last block freed, whose page the heap knew, is then
/// freed again. It must be reported as an invalid free; with the entry
/// still cached the free would read the unmapped descriptor (SIGSEGV).
#[test]
fn a_released_segment_leaves_the_known_pages() {
    let d = in_child(|| {
        // 24 slots of 2560 bytes a slab, 55 slabs a hardened segment.
        const N: usize = 16 * 55 * 24;
        let mut blocks = [std::ptr::null_mut::<u8>(); N];
        // SAFETY: plain allocations, each freed once, then the last one a
        // second time on purpose.
        unsafe {
            for b in blocks.iter_mut() {
                *b = GLOBAL.alloc(layout(2048));
            }
            // Segments in the order they were filled (no allocation here:
            // it could land in one of them); those after the first two
            // hold only these blocks.
            let mut segments = [0usize; 32];
            let mut n = 0;
            for &p in &blocks {
                let seg = p as usize >> 22;
                if n == 0 || segments[n - 1] != seg {
                    segments[n] = seg;
                    n += 1;
                }
            }
            let fresh = &segments[2..n];
            let mut last = std::ptr::null_mut();
            for &p in blocks.iter().rev() {
                if fresh.contains(&(p as usize >> 22)) {
                    GLOBAL.dealloc(p, layout(2048));
                    last = p;
                }
            }
            mapalloc::collect();
            GLOBAL.dealloc(last, layout(2048));
        }
    });
    assert_aborted_naming(&d, "invalid free");
}

#[test]
fn corrupted_remote_free_link_is_detected() {
    // A class the test harness does not use, so nothing collects the
    // remote frees before the child does.
    let l = layout(3000);
    // SAFETY: plain allocations; another thread frees them (remote frees
    // onto this thread's page, linked through their first words).
    let (a, b) = unsafe { (GLOBAL.alloc(l) as usize, GLOBAL.alloc(l) as usize) };
    std::thread::spawn(move || {
        // SAFETY: each block freed once, by another thread.
        unsafe {
            GLOBAL.dealloc(a as *mut u8, l);
            GLOBAL.dealloc(b as *mut u8, l);
        }
    })
    .join()
    .unwrap();
    // SAFETY: a live block of the same page: an unsealed link to it would
    // pass every address check and hand it out twice.
    let live = unsafe { GLOBAL.alloc(l) } as u64;
    for forged in [0x4141_4141_4141_4141, live] {
        let d = in_child(|| {
            // SAFETY: deliberately overwriting the list link in freed block
            // `b` (the list's head), then allocating until the owner
            // collects the list.
            unsafe {
                (b as *mut u64).write(forged);
                for _ in 0..1000 {
                    GLOBAL.alloc(l);
                }
            }
        });
        assert_aborted_with(&d, "corrupted free-list link", b);
    }
}

#[test]
fn double_free_from_another_thread_is_detected() {
    // A class the test harness does not use, as above. `a` twice in a row,
    // then `b`, `c`, `b`: the repeat must be reported as a double free when
    // the owner takes the blocks back.
    let l = layout(2500);
    // SAFETY: plain allocations.
    let [a, b, c] = [(); 3].map(|()| unsafe { GLOBAL.alloc(l) } as usize);
    for (order, twice) in [(vec![a, a], a), (vec![b, c, b], b)] {
        let d = in_child(|| {
            free_on_another_thread(&order, l);
            for _ in 0..1000 {
                // SAFETY: plain allocations, until the owner collects.
                unsafe { GLOBAL.alloc(l) };
            }
        });
        assert_aborted_with(&d, "double free", twice);
    }
}

/// Frees `blocks` in order on a new thread, and waits for it. A raw
/// pthread: this runs in a forked child, where `std::thread::spawn` can
/// wait forever on a lock another thread of the parent held at the fork.
fn free_on_another_thread(blocks: &[usize], l: Layout) {
    extern "C" fn run(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is `job` below, alive until the join.
        let job = unsafe { &*arg.cast::<(Vec<usize>, Layout)>() };
        for &p in &job.0 {
            // SAFETY: the repeated free is the misuse under test.
            unsafe { GLOBAL.dealloc(p as *mut u8, job.1) };
        }
        std::ptr::null_mut()
    }
    let mut job = (blocks.to_vec(), l);
    let mut t: libc::pthread_t = 0;
    // SAFETY: `job` outlives the thread, which is joined before returning.
    unsafe {
        let arg = (&raw mut job).cast();
        assert_eq!(libc::pthread_create(&mut t, std::ptr::null(), run, arg), 0);
        assert_eq!(libc::pthread_join(t, std::ptr::null_mut()), 0);
    }
}

#[test]
fn freed_memory_reads_zero() {
    for size in [16, 48, 1000, 64 << 10, 120 << 10] {
        let l = layout(size);
        // SAFETY: allocate, fill, free, then read the freed block: hardened
        // mode keeps slab memory mapped and zeroes it on free.
        unsafe {
            let p = GLOBAL.alloc(l);
            p.write_bytes(0xAA, size);
            GLOBAL.dealloc(p, l);
            let freed = std::slice::from_raw_parts(p, size);
            assert!(
                freed.iter().all(|&b| b == 0),
                "size {size}: freed block not zeroed"
            );
        }
    }
}

/// Frees that change their slab (into a slab parked as full, or emptying
/// one that is not the first of its class) take another way through the
/// free path than the alloc/free pair above; they zero too.
#[test]
fn freed_memory_reads_zero_when_its_slab_changes() {
    let size = 1000;
    let l = layout(size);
    // SAFETY: every block is ours until freed, and read once right after
    // its free while `keep` holds its segment (one slab stays in use, so
    // the segment is not released and its memory stays mapped).
    unsafe {
        let keep = GLOBAL.alloc(l);
        // Several slabs' worth: the earlier slabs fill up and are parked.
        let blocks: Vec<*mut u8> = (0..300).map(|_| GLOBAL.alloc(l)).collect();
        for &p in &blocks {
            assert!(!p.is_null());
            p.write_bytes(0xAA, size);
        }
        for &p in &blocks {
            GLOBAL.dealloc(p, l);
            let freed = std::slice::from_raw_parts(p, size);
            assert!(freed.iter().all(|&b| b == 0), "{p:?} not zeroed");
        }
        GLOBAL.dealloc(keep, l);
    }
}

/// A block of 4 KiB has a 5120-byte slot (4 KiB and at least 8 bytes of
/// canary); the last slot of a slab ends at its guard page.
#[test]
fn overflow_past_a_slab_hits_its_guard_page() {
    let l = layout(4096);
    let d = in_child(|| {
        // SAFETY: fill slabs of the 5120-byte class, then write one byte
        // past the slot that ends where its slab's guard page starts.
        unsafe {
            let blocks: Vec<*mut u8> = (0..64).map(|_| GLOBAL.alloc(l)).collect();
            let last = blocks
                .iter()
                .find(|&&p| (p as usize + 5120) % (64 << 10) == (60 << 10))
                .expect("a block adjacent to a guard page");
            last.add(5120).write_volatile(1);
        }
    });
    assert_eq!(d.signal, Some(libc::SIGSEGV), "{d:?}");
}

#[test]
fn underflow_before_the_first_slab_hits_the_slot_tables_guard() {
    let l = layout(4096);
    let d = in_child(|| {
        // SAFETY: 4 KiB blocks (kept, in this child) fill segments until a
        // fresh one's first slab starts at its page 9, right after the slot
        // tables and their guard page; write one byte before that block.
        unsafe {
            let first = (0..1 << 15)
                .map(|_| GLOBAL.alloc(l))
                .find(|&p| p as usize % (4 << 20) == 9 * (64 << 10))
                .expect("a block at the start of a segment's first slab");
            first.sub(1).write_volatile(1);
        }
    });
    assert_eq!(d.signal, Some(libc::SIGSEGV), "{d:?}");
}

#[test]
fn overflow_past_a_large_block_hits_its_guard_page() {
    for size in [(2 << 20) + 16, 5 << 20] {
        let d = in_child(|| {
            // SAFETY: deliberately writing one byte past the block.
            unsafe {
                let p = GLOBAL.alloc(layout(size));
                p.add(size - 1).write_volatile(1);
                p.add(size).write_volatile(1);
            }
        });
        assert_eq!(d.signal, Some(libc::SIGSEGV), "size {size}: {d:?}");
    }
}

#[test]
fn blocks_come_in_unpredictable_order() {
    let l = layout(64);
    // SAFETY: plain allocations, freed below.
    let blocks: Vec<*mut u8> = (0..200).map(|_| unsafe { GLOBAL.alloc(l) }).collect();
    let ascending = blocks
        .windows(2)
        .filter(|w| w[1] as usize == w[0] as usize + 64)
        .count();
    assert!(
        ascending < 40,
        "{ascending} of 199 neighbours were consecutive slots"
    );
    for p in blocks {
        // SAFETY: each block freed once.
        unsafe { GLOBAL.dealloc(p, l) };
    }
}

#[test]
fn hardened_blocks_still_work_across_threads() {
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                (0..2000)
                    .map(|i| vec![t as u8; 1 + (i * 37) % 3000])
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        let vs = h.join().unwrap();
        for v in &vs {
            assert!(v.iter().all(|&b| b == t as u8));
        }
    }
}

/// Runs `misuse` on a fresh block of `size` bytes in a child; asserts the
/// child aborted with `mapalloc: <what> of 0x…` ending in `rest`. (The
/// block is the child's: its address never reaches the parent.)
fn misuse_aborts(size: usize, what: &str, rest: &str, misuse: impl FnOnce(*mut u8, Layout)) {
    let l = layout(size);
    let d = in_child(|| {
        // SAFETY: a fresh block; what `misuse` does with it is the test.
        let p = unsafe { GLOBAL.alloc(l) };
        misuse(p, l);
    });
    assert_aborted_naming(&d, what);
    assert!(d.stderr.ends_with(&format!("{rest}\n")), "{d:?}");
}

#[test]
fn an_overflow_into_the_canary_is_detected_at_free() {
    for size in [8, 13, 100, 4096, 100_000] {
        for k in [1, 8, 32] {
            // SAFETY: `k` bytes written past the block are the misuse.
            misuse_aborts(size, "overflow", " detected at free", |p, l| unsafe {
                p.add(size).write_bytes(b'A', k);
                GLOBAL.dealloc(p, l);
            });
        }
    }
    // And at `realloc`, before the block is copied.
    // SAFETY: as above.
    misuse_aborts(40, "overflow", " detected at realloc", |p, l| unsafe {
        p.add(40).write(b'A');
        GLOBAL.realloc(p, l, 4000);
    });
}

#[test]
fn every_byte_past_the_size_asked_for_is_canary() {
    // A 13-byte block has a 32-byte slot: each of its 19 bytes of slack
    // is checked, not only the first 8 after the block.
    for off in 13..32 {
        // SAFETY: one byte in the slack is the misuse.
        misuse_aborts(13, "overflow", " detected at free", |p, l| unsafe {
            p.add(off).write(0);
            GLOBAL.dealloc(p, l);
        });
    }
}

#[test]
fn an_underflow_is_detected_at_free() {
    for size in [8, 48, 4096] {
        for k in [1, 8, 32] {
            let l = layout(size);
            let d = in_child(|| {
                // SAFETY: `k` bytes written before `p` are the misuse; the
                // blocks before it are live or freed.
                unsafe {
                    let blocks: Vec<*mut u8> = (0..20).map(|_| GLOBAL.alloc(l)).collect();
                    for &b in blocks.iter().step_by(2) {
                        GLOBAL.dealloc(b, l);
                    }
                    for &p in blocks.iter().skip(1).step_by(2) {
                        p.sub(k).write_bytes(b'A', k);
                        GLOBAL.dealloc(p, l);
                    }
                }
            });
            // The first slot of a slab has a guard page before it.
            let ok = d.signal == Some(libc::SIGSEGV)
                || (d.signal == Some(libc::SIGABRT)
                    && d.stderr.starts_with("mapalloc: underflow of 0x")
                    && d.stderr.ends_with(" detected at free\n"));
            assert!(ok, "size {size}, {k} bytes: {d:?}");
        }
    }
}

/// What an attacker corrupting a free-list link needs is a write into a
/// freed block. Hardened mode keeps no links in blocks the owner freed
/// (blocks waiting on a cross-thread list hold a sealed one, tested below)
/// and checks that a slot is still zero while it waits in the quarantine
/// and when it is handed out again, at any offset.
#[test]
fn a_write_after_free_at_any_offset_is_detected() {
    for (size, off) in [
        (64, 8),
        (64, 63),
        (1000, 500),
        (4000, 0),
        (4000, 8),
        (4000, 3999),
    ] {
        let l = layout(size);
        let d = in_child(|| {
            // SAFETY: the write through the dangling pointer is the misuse.
            unsafe {
                let p = GLOBAL.alloc(l);
                GLOBAL.dealloc(p, l);
                p.add(off).write(0x41);
                for _ in 0..10_000 {
                    GLOBAL.alloc(l);
                }
            }
        });
        assert_aborted_naming(&d, "write after free");
    }
}

#[test]
fn a_freed_block_is_not_handed_out_again_at_once() {
    // The quarantine: `alloc; free; alloc` of one size gives a new block,
    // over and over (a slot waits through about 32 frees).
    let l = layout(48);
    let mut again = 0;
    for _ in 0..1000 {
        // SAFETY: plain allocations and frees.
        unsafe {
            let p = GLOBAL.alloc(l);
            GLOBAL.dealloc(p, l);
            let q = GLOBAL.alloc(l);
            again += usize::from(p == q);
            GLOBAL.dealloc(q, l);
        }
    }
    assert_eq!(again, 0, "the block just freed came back {again} times");
}

#[test]
fn a_double_free_of_a_quarantined_block_is_detected() {
    // SAFETY: the second free is the misuse.
    misuse_aborts(64, "double free", "", |p, l| unsafe {
        GLOBAL.dealloc(p, l);
        let other = GLOBAL.alloc(l);
        GLOBAL.dealloc(p, l);
        let _ = other;
    });
}

/// A read after free of a large block faults, also after a block of the
/// same size was allocated: a freed fenced mapping is not handed to the
/// next block, so a dangling pointer never reaches the new block's bytes.
#[test]
fn a_read_after_free_of_a_large_block_faults() {
    for size in [200 << 10, 1 << 20, 8 << 20] {
        for alloc_between in [false, true] {
            let l = layout(size);
            let d = in_child(|| {
                // SAFETY: the read of the freed block is the misuse.
                unsafe {
                    let p = GLOBAL.alloc(l);
                    p.write_bytes(1, size);
                    GLOBAL.dealloc(p, l);
                    if alloc_between {
                        let q = GLOBAL.alloc(l);
                        q.write_bytes(2, size);
                        assert_ne!(p, q, "a freed large block came straight back");
                    }
                    std::hint::black_box(p.add(size / 2).read_volatile());
                }
            });
            assert_eq!(
                d.signal,
                Some(libc::SIGSEGV),
                "size {size}, {alloc_between}: {d:?}"
            );
        }
    }
}

/// Frees of fenced blocks of about 200 KiB, enough to take a freed fenced
/// mapping out of its quarantine (4 such frees), none of them fitting a
/// block of 5 MiB or more.
fn fenced_frees() {
    for i in 0..4 {
        let l = layout((200 << 10) + i * 4096);
        // SAFETY: a block of our own, freed at once.
        unsafe { GLOBAL.dealloc(GLOBAL.alloc(l), l) };
    }
}

/// Out of quarantine, freed fenced mappings are reused; a reused one must
/// serve any size it fits (here down to half of it, across several
/// segments), read zero, and still end at its guard page.
#[test]
fn a_reused_fenced_mapping_serves_smaller_blocks() {
    let d = in_child(|| {
        for (first, then) in [
            (9 << 20, 5 << 20),
            (25 << 20, 13 << 20),
            (300 << 10, 160 << 10),
        ] {
            // SAFETY: blocks of our own, used within their sizes.
            unsafe {
                let p = GLOBAL.alloc(layout(first));
                assert!(!p.is_null());
                p.write_bytes(0xa5, first);
                GLOBAL.dealloc(p, layout(first));
                fenced_frees();
                let q = GLOBAL.alloc(layout(then));
                assert!(!q.is_null());
                let reused =
                    (q as usize) >= (p as usize) & !4095 && (q as usize) < p as usize + first;
                assert!(reused, "{then} bytes not placed in the freed {first}");
                let s = std::slice::from_raw_parts(q, then);
                assert!(s.iter().all(|&b| b == 0), "reused block not zero");
                q.write_bytes(1, then);
                GLOBAL.dealloc(q, layout(then));
            }
        }
    });
    assert_eq!(d.signal, None, "{d:?}");
    let d = in_child(|| {
        let (first, then) = (9 << 20, 5 << 20);
        // SAFETY: one byte past the reused block is the misuse.
        unsafe {
            GLOBAL.dealloc(GLOBAL.alloc(layout(first)), layout(first));
            fenced_frees();
            let q = GLOBAL.alloc(layout(then));
            q.add(then - 1).write_volatile(1);
            q.add(then).write_volatile(1);
        }
    });
    assert_eq!(d.signal, Some(libc::SIGSEGV), "{d:?}");
}

#[test]
fn blocks_above_the_slabs_end_at_their_guard_page() {
    for size in [128 << 10, 256 << 10, 1 << 20, 3 << 20] {
        let l = layout(size);
        let d = in_child(|| {
            // SAFETY: one byte past the block is the misuse.
            unsafe {
                let p = GLOBAL.alloc(l);
                p.add(size - 1).write_volatile(1);
                p.add(size).write_volatile(1);
            }
        });
        assert_eq!(d.signal, Some(libc::SIGSEGV), "size {size}: {d:?}");
    }
}

#[test]
fn a_dealloc_with_the_wrong_layout_is_detected() {
    // SAFETY: freeing with another size is the misuse.
    misuse_aborts(
        100,
        "free",
        " with size 50, block holds 100",
        |p, _| unsafe {
            GLOBAL.dealloc(p, layout(50));
        },
    );
    // SAFETY: as above, for a large block.
    misuse_aborts(
        300 << 10,
        "free",
        " with size 1000, block holds 307200",
        |p, _| unsafe {
            GLOBAL.dealloc(p, layout(1000));
        },
    );
    let d = in_child(|| {
        // SAFETY: a block aligned to 16 or so, freed as if aligned more.
        unsafe {
            let p = GLOBAL.alloc(layout(100));
            let align = 2usize << (p as usize).trailing_zeros();
            GLOBAL.dealloc(p, Layout::from_size_align(100, align).unwrap());
        }
    });
    assert_eq!(d.signal, Some(libc::SIGABRT), "{d:?}");
    assert!(d.stderr.contains(" with alignment "), "{d:?}");
}

#[test]
fn usable_size_is_the_size_asked_for() {
    for size in [1, 13, 100, 4096, 200_000, 3 << 20] {
        let l = layout(size);
        // SAFETY: a live block, then freed.
        unsafe {
            let p = GLOBAL.alloc(l);
            assert_eq!(mapalloc::usable_size(p), size);
            GLOBAL.dealloc(p, l);
        }
    }
}

#[test]
fn zero_size_blocks_are_unique_and_fault() {
    let a = mapalloc::raw::alloc(0, 16);
    let b = mapalloc::raw::alloc(0, 16);
    assert!(!a.is_null() && !b.is_null() && a != b);
    // SAFETY: zero-size blocks of ours.
    unsafe {
        assert_eq!(mapalloc::raw::usable_size(a), 0);
        mapalloc::raw::free(a);
    }
    let d = in_child(|| {
        // SAFETY: a write through a zero-size block is the misuse.
        unsafe { b.write_volatile(1) };
    });
    assert_eq!(d.signal, Some(libc::SIGSEGV), "{d:?}");
    let d = in_child(|| {
        // SAFETY: the second free is the misuse.
        unsafe {
            mapalloc::raw::free(b);
            mapalloc::raw::free(b);
        }
    });
    assert_aborted_with(&d, "double free", b as usize);
    // SAFETY: ours, freed once.
    unsafe { mapalloc::raw::free(b) };
}

#[test]
fn large_blocks_grow_and_shrink_with_mremap_behind_their_guard() {
    // From 1 MiB to 256 MiB by doubling, then back: no copy (the mremap
    // count grows), the contents kept, and one byte past the end faults.
    let mut size = 1 << 20;
    let mut l = layout(size);
    // SAFETY: a block resized by `realloc`, each size written at its end.
    unsafe {
        let mut p = GLOBAL.alloc(l);
        p.write(7);
        let before = mapalloc::stats().mremap_calls;
        while size < 256 << 20 {
            let new = size * 2;
            p = GLOBAL.realloc(p, l, new);
            assert!(!p.is_null());
            assert_eq!(p.read(), 7);
            p.add(new - 1).write(9);
            size = new;
            l = layout(size);
        }
        assert!(
            mapalloc::stats().mremap_calls >= before + 8,
            "grown without mremap"
        );
        for shrunk in [(64 << 20) + 100, 200 << 10] {
            p = GLOBAL.realloc(p, l, shrunk);
            assert_eq!(p.read(), 7);
            size = shrunk;
            l = layout(size);
        }
        let end = p.add(size);
        let d = in_child(|| end.write_volatile(1));
        assert_eq!(d.signal, Some(libc::SIGSEGV), "{d:?}");
        GLOBAL.dealloc(p, l);
    }
}
