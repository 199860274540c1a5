//! What the kernel sees of secret memory, and what happens to code that
//! misuses it.
//!
//! `/proc/self/smaps` shows each secret's mapping locked (`Locked:`), left
//! out of core dumps (`dd`), wiped in forked children (`wf`, anonymous
//! backing) or not copied to them at all (`dc`, memfd_secret backing, whose
//! mapping is named `secretmem`), with `PROT_NONE` guard pages on both
//! sides, and sealed secrets `PROT_NONE` while not exposed.
//!
//! Misuse runs in a forked child, and the parent asserts how it ended:
//! SIGSEGV for a write past either end of a large secret or a slab, for a
//! read of a sealed secret without `expose()`, and (memfd_secret) for a
//! forked child reading its parent's secret; SIGABRT for an overwritten
//! canary or a double free; a clean exit with the expected error value for
//! `RLIMIT_MEMLOCK` and `mmap` failures.
//!
//! The tests of this file run one at a time (`serial()`), so no other
//! thread holds a pool lock when a test forks.

use allocator_api2::alloc::Allocator;
use mapalloc::secret::{Backing, PoolOptions, SecretBox, SecretError, SecretPool, SecretVec};
use std::alloc::Layout;
use std::ptr;
use std::time::Duration;

mod common;

use common::child::{self, Ended};
use common::serial;
use common::smaps::mapping_of;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

const PAGE: usize = 4096;

/// Runs `test` once for every backing this kernel offers, under
/// `serial()`: tests that fork must not find another test's thread inside
/// a pool lock.
fn for_each_backing(test: impl FnMut(Backing)) {
    let _s = serial();
    let mut backings = vec![Backing::Anonymous];
    if mapalloc::secret::memfd_secret_available() {
        backings.push(Backing::MemfdSecret);
    }
    backings.into_iter().for_each(test);
}

/// A pool of `backing` whose secrets are `PROT_NONE` while not exposed.
fn sealed_pool(backing: Backing) -> SecretPool {
    SecretPool::with_options(PoolOptions::new().backing(backing).sealed(true)).unwrap()
}

/// A 32-byte key with every byte `byte`.
fn key_in(pool: &SecretPool, byte: u8) -> SecretBox<[u8; 32]> {
    SecretBox::<[u8; 32]>::new_with_in(pool, |k| k.fill(byte)).unwrap()
}

// ---------------------------------------------------------------------
// /proc/self/smaps
// ---------------------------------------------------------------------

/// Checks the data mapping `[start, end)` of a secret and its guards.
fn check_secret_mapping(backing: Backing, start: usize, end: usize, what: &str) {
    let m = mapping_of(start);
    assert!(
        m.start <= start && end <= m.end,
        "{what}: data spans one mapping: {m:?}"
    );
    assert!(m.locked_kb > 0, "{what}: not locked: {m:?}");
    assert!(m.has("dd"), "{what}: dumpable: {m:?}");
    assert!(m.perms.starts_with("rw"), "{what}: {m:?}");
    match backing {
        Backing::Anonymous => {
            assert!(m.has("wf"), "{what}: no MADV_WIPEONFORK: {m:?}");
            assert!(m.has("lo"), "{what}: no VM_LOCKED: {m:?}");
            assert_eq!(
                m.locked_kb * 1024,
                m.end - m.start,
                "{what}: all of it locked"
            );
        }
        Backing::MemfdSecret => {
            assert!(
                m.path.contains("secretmem"),
                "{what}: not secret memory: {m:?}"
            );
            assert!(
                m.perms.ends_with('s'),
                "{what}: secret memory is shared: {m:?}"
            );
            assert!(m.has("dc"), "{what}: no MADV_DONTFORK: {m:?}");
        }
    }
    let before = mapping_of(start - 1);
    assert!(
        before.perms.starts_with("---"),
        "{what}: no guard page in front: {before:?}"
    );
    let after = mapping_of(end);
    assert!(
        after.perms.starts_with("---"),
        "{what}: no guard page behind: {after:?}"
    );
}

/// The data range `[start, end)` of the slab holding the small secret at
/// `p`, as the kernel reports it.
fn slab_data(p: usize) -> (usize, usize) {
    let m = mapping_of(p);
    (m.start, m.end)
}

#[test]
fn smaps_shows_locked_undumped_unforked_guarded_memory() {
    for_each_backing(|backing| {
        let pool = SecretPool::with_backing(backing).unwrap();
        let key = key_in(&pool, 3);
        // The slab's data pages are a mapping of their own (between guard
        // pages, with flags no neighbour has): one page for 48-byte blocks.
        let (start, end) = slab_data(key.expose().as_ptr() as usize);
        assert_eq!(end - start, PAGE, "a slab of 48-byte blocks");
        check_secret_mapping(backing, start, end, "slab");

        let big = SecretVec::from_slice_in(&[5u8; 20_000], &pool).unwrap();
        let p = big.expose().as_ptr() as usize;
        let (start, end) = (p & !(PAGE - 1), (p + 20_000).next_multiple_of(PAGE));
        assert_eq!(p + 20_000, end, "a large secret ends at its guard page");
        check_secret_mapping(backing, start, end, "large secret");
    });
}

#[test]
fn secrets_never_share_pages_with_the_heap() {
    let _s = serial();
    let heap = Box::new([0u8; 32]);
    assert!(mapalloc::raw::owns(heap.as_ptr()));
    let key = SecretBox::<[u8; 32]>::zeroed().unwrap();
    let v = SecretVec::from_slice(&[1u8; 300_000]).unwrap();
    assert!(!mapalloc::raw::owns(key.expose().as_ptr()));
    assert!(!mapalloc::raw::owns(v.expose().as_ptr()));
    let m = mapping_of(key.expose().as_ptr() as usize);
    assert!(m.has("dd"), "{m:?}");
}

#[test]
fn sealed_secrets_are_prot_none_until_exposed() {
    for_each_backing(|backing| {
        let pool = sealed_pool(backing);
        let mut key = key_in(&pool, 9);
        assert!(key.is_sealed());
        let p = key.expose().as_ptr() as usize;
        assert!(
            mapping_of(p).perms.starts_with("---"),
            "{:?}",
            mapping_of(p)
        );
        {
            let g = key.expose();
            let m = mapping_of(p);
            assert!(
                m.perms.starts_with("r--"),
                "shared exposure is read-only: {m:?}"
            );
            assert!(m.locked_kb > 0 && m.has("dd"), "{m:?}");
            let inner = key.expose(); // a second guard keeps it open
            drop(g);
            assert!(mapping_of(p).perms.starts_with("r--"));
            assert_eq!(*inner, [9; 32]);
        }
        assert!(mapping_of(p).perms.starts_with("---"));
        {
            let mut g = key.expose_mut();
            assert!(mapping_of(p).perms.starts_with("rw"), "{:?}", mapping_of(p));
            g[0] = 1;
        }
        assert!(mapping_of(p).perms.starts_with("---"));
    });
}

// ---------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------

/// Runs `f` in a forked child (no core dumps); its return value is the
/// exit status.
fn in_child(f: impl FnOnce() -> i32) -> Ended {
    child::in_child("secret_protection", Duration::from_secs(60), f)
}

fn poke(addr: usize) -> i32 {
    // SAFETY: deliberately wild: the point is to fault.
    unsafe { ptr::write_volatile(addr as *mut u8, 0x41) };
    0
}

/// Changes the byte at `addr` (whatever it held: a canary byte may happen
/// to equal any fixed value).
fn flip(addr: usize) {
    // SAFETY: the callers pass a mapped, writable byte.
    unsafe { ptr::write_volatile(addr as *mut u8, !ptr::read_volatile(addr as *const u8)) };
}

fn peek(addr: usize) -> u8 {
    // SAFETY: deliberately wild where a test expects a fault.
    unsafe { ptr::read_volatile(addr as *const u8) }
}

const SEGV: Ended = Ended::Signaled(libc::SIGSEGV);
const ABRT: Ended = Ended::Signaled(libc::SIGABRT);

/// Runs `f` in a child on a pool made there (a memfd_secret pool's data is
/// not mapped in a forked child at all, so it must come from the child).
fn in_child_with_pool(backing: Backing, f: impl FnOnce(&SecretPool) -> i32) -> Ended {
    in_child(|| f(&SecretPool::with_backing(backing).unwrap()))
}

#[test]
fn writes_past_either_end_of_a_large_secret_fault() {
    for_each_backing(|backing| {
        // `at(p, len)` picks the address to write from the secret's start
        // and length.
        let run = |len: usize, at: fn(usize, usize) -> usize| {
            in_child_with_pool(backing, |pool| {
                let mut v = SecretVec::from_slice_in(&vec![1u8; len], pool).unwrap();
                let p = v.expose_mut().as_mut_ptr() as usize;
                poke(at(p, len));
                0
            })
        };
        // In bounds: fine.
        assert_eq!(run(10_000, |p, len| p + len - 1), Ended::Exited(0));
        assert_eq!(run(10_000, |p, _| p), Ended::Exited(0));
        // One byte past the end is the guard page.
        assert_eq!(run(10_000, |p, len| p + len), SEGV, "{backing:?} overflow");
        // Before the start: the slack (canary) up to the page, then the guard.
        assert_eq!(
            run(10_000, |p, _| (p & !(PAGE - 1)) - 1),
            SEGV,
            "{backing:?} underflow"
        );
        // A page-sized secret has no slack: one byte before it faults.
        assert_eq!(run(2 * PAGE, |p, _| p - 1), SEGV, "{backing:?} underflow");
        assert_eq!(
            run(2 * PAGE, |p, len| p + len),
            SEGV,
            "{backing:?} overflow"
        );
    });
}

#[test]
fn writes_past_either_end_of_a_slab_fault() {
    for_each_backing(|backing| {
        // Fill one 2048-byte-class slab (8 blocks in 4 pages): the first
        // block starts the slab's data, the last ends it.
        let run = |at: fn(usize, usize) -> usize| {
            in_child_with_pool(backing, |pool| {
                let keys: Vec<_> = (0..8)
                    .map(|i| SecretBox::<[u8; 2000]>::new_with_in(pool, |k| k.fill(i)).unwrap())
                    .collect();
                let ptrs: Vec<usize> = keys.iter().map(|k| k.expose().as_ptr() as usize).collect();
                let (start, end) = slab_data(ptrs[0]);
                if end - start != 4 * PAGE
                    || !ptrs.contains(&start)
                    || !ptrs.contains(&(end - 2048))
                {
                    return 2;
                }
                poke(at(start, end));
                0
            })
        };
        // The last key's last byte (the block's last 48 bytes are canary).
        assert_eq!(run(|_, end| end - 2048 + 1999), Ended::Exited(0));
        assert_eq!(run(|start, _| start), Ended::Exited(0));
        assert_eq!(run(|_, end| end), SEGV, "{backing:?} slab overflow");
        assert_eq!(
            run(|start, _| start - 1),
            SEGV,
            "{backing:?} slab underflow"
        );
    });
}

#[test]
fn an_overwritten_canary_aborts_on_free() {
    for_each_backing(|backing| {
        let pool = SecretPool::with_backing(backing).unwrap();
        // Small: one byte past a 32-byte key, inside its block.
        let out = in_child(|| {
            let mut key = SecretBox::<[u8; 32]>::zeroed_in(&pool).unwrap();
            let p = key.expose_mut().as_mut_ptr() as usize;
            flip(p + 32);
            drop(key);
            0
        });
        assert_eq!(out, ABRT, "{backing:?} small");
        // Large: one byte before the secret, in its page's slack.
        let out = in_child(|| {
            let v = SecretVec::from_slice_in(&[1u8; 10_000], &pool).unwrap();
            let p = v.expose().as_ptr() as usize;
            flip(p - 1);
            drop(v);
            0
        });
        assert_eq!(out, ABRT, "{backing:?} large");
        // Untouched: a clean exit.
        let out = in_child(|| {
            let key = SecretBox::<[u8; 32]>::zeroed_in(&pool).unwrap();
            let v = SecretVec::from_slice_in(&[1u8; 10_000], &pool).unwrap();
            drop((key, v));
            0
        });
        assert_eq!(out, Ended::Exited(0));
    });
}

#[test]
fn a_double_free_through_the_allocator_aborts() {
    let _s = serial();
    let pool = SecretPool::new().unwrap();
    let out = in_child(|| {
        let layout = Layout::from_size_align(32, 8).unwrap();
        // A neighbour keeps the slab alive (a double free of a slab's last
        // block finds the slab unmapped and faults instead).
        let _neighbour = pool.allocate(layout).unwrap();
        let p = pool.allocate(layout).unwrap().cast::<u8>();
        // SAFETY: deliberately freed twice; the second must abort.
        unsafe {
            pool.deallocate(p, layout);
            pool.deallocate(p, layout);
        }
        0
    });
    assert_eq!(out, ABRT);
}

#[test]
fn a_forked_child_does_not_see_secrets() {
    for_each_backing(|backing| {
        let pool = SecretPool::with_backing(backing).unwrap();
        let key = key_in(&pool, 0x5A);
        let big = SecretVec::from_slice_in(&[0x5Au8; 50_000], &pool).unwrap();
        let pk = key.expose().as_ptr() as usize;
        let pb = big.expose().as_ptr() as usize;
        for (p, len) in [(pk, 32), (pb, 50_000)] {
            let out = in_child(|| {
                let nonzero = (0..len).filter(|&i| peek(p + i) != 0).count();
                if nonzero == 0 { 0 } else { 1 }
            });
            match backing {
                // MADV_WIPEONFORK: the child reads zeros.
                Backing::Anonymous => assert_eq!(out, Ended::Exited(0), "child saw the secret"),
                // MADV_DONTFORK: nothing is mapped there in the child.
                Backing::MemfdSecret => assert_eq!(out, SEGV, "child saw the secret"),
            }
        }
        assert_eq!(*key.expose(), [0x5A; 32], "the parent still has it");
        assert!(big.expose().iter().all(|&b| b == 0x5A));
    });
}

#[test]
fn a_forked_child_can_drop_inherited_secrets_and_make_new_ones() {
    for_each_backing(|backing| {
        let pool = SecretPool::with_backing(backing).unwrap();
        let key = key_in(&pool, 1);
        let big = SecretVec::from_slice_in(&[1u8; 50_000], &pool).unwrap();
        let out = in_child(|| {
            // The child starts from an empty pool...
            if pool.stats().secrets_live != 0 || mapalloc::secret::locked_bytes() != 0 {
                return 2;
            }
            let fresh = key_in(&pool, 7);
            // ...and dropping what it inherited touches nothing.
            drop(key);
            drop(big);
            let more = SecretVec::from_slice_in(&[7u8; 50_000], &pool).unwrap();
            let ok = *fresh.expose() == [7; 32] && more.expose().iter().all(|&b| b == 7);
            let st = pool.stats();
            if !ok || st.secrets_live != 2 || st.slabs != 1 || st.large_mappings != 1 {
                return 3;
            }
            drop((fresh, more));
            if pool.stats().bytes_locked != 0 { 4 } else { 0 }
        });
        assert_eq!(out, Ended::Exited(0), "{backing:?}");
    });
}

#[test]
fn reading_a_sealed_secret_without_expose_faults() {
    for_each_backing(|backing| {
        let pool = sealed_pool(backing);
        let key = key_in(&pool, 0x77);
        let p = key.expose().as_ptr() as usize;
        // In this process: readable only while exposed.
        {
            let _g = key.expose();
            assert_eq!(peek(p), 0x77);
        }
        let out = in_child(|| peek(p) as i32);
        assert_eq!(out, SEGV, "{backing:?}");
        // The pool does not expose what a child inherited.
        let out = in_child(|| {
            if matches!(key.try_expose(), Err(SecretError::Inherited)) {
                0
            } else {
                2
            }
        });
        assert_eq!(out, Ended::Exited(0), "{backing:?}");
        if backing == Backing::Anonymous {
            // Control: the child's page is there (its own zeros,
            // MADV_WIPEONFORK), only sealed: opened by hand it reads zero.
            let out = in_child(|| {
                // SAFETY: the page of the inherited key, in the child's own
                // copy of the mapping; made readable only.
                let rc =
                    unsafe { libc::mprotect((p & !(PAGE - 1)) as *mut _, PAGE, libc::PROT_READ) };
                if rc != 0 {
                    return 3;
                }
                peek(p) as i32
            });
            assert_eq!(out, Ended::Exited(0));
        }
    });
}

#[test]
fn writing_a_sealed_secret_under_a_shared_exposure_faults() {
    for_each_backing(|backing| {
        let run = |exclusive: bool| {
            in_child(|| {
                let pool = sealed_pool(backing);
                let mut key = SecretBox::<[u8; 32]>::zeroed_in(&pool).unwrap();
                if exclusive {
                    let mut g = key.expose_mut();
                    poke(g.as_mut_ptr() as usize)
                } else {
                    let g = key.expose();
                    poke(g.as_ptr() as usize)
                }
            })
        };
        assert_eq!(run(true), Ended::Exited(0), "{backing:?}");
        assert_eq!(run(false), SEGV, "{backing:?}");
    });
}

#[test]
fn going_over_rlimit_memlock_is_an_error() {
    for_each_backing(|backing| {
        let out = in_child(|| {
            child::set_rlimit(libc::RLIMIT_MEMLOCK, 64 * 1024).expect("lowering RLIMIT_MEMLOCK");
            assert_eq!(mapalloc::secret::memlock_limit(), Some(64 * 1024));
            let pool = SecretPool::with_backing(backing).unwrap();
            // One 1 MiB secret.
            match SecretVec::<u8>::with_capacity_in(1 << 20, &pool) {
                Err(SecretError::MemlockLimit {
                    limit: 65536,
                    locked: 0,
                    requested,
                }) if requested >= 1 << 20 => {}
                other => {
                    eprintln!("1 MiB secret: {other:?}");
                    return 2;
                }
            }
            // 1 MiB of 32-byte keys.
            let mut keys = Vec::new();
            let err = loop {
                match SecretBox::<[u8; 32]>::new_with_in(&pool, |k| k.fill(1)) {
                    Ok(k) => keys.push(k),
                    Err(e) => break e,
                }
                if keys.len() * 32 >= 1 << 20 {
                    return 3;
                }
            };
            let SecretError::MemlockLimit {
                limit,
                locked,
                requested,
            } = err
            else {
                eprintln!("keys: {err:?}");
                return 4;
            };
            eprintln!("{} keys, then: {err}", keys.len());
            let st = pool.stats();
            // Everything handed out is locked, and within the limit.
            if limit != 65536
                || locked + requested <= 65536
                || st.bytes_locked != locked
                || locked > 65536
            {
                return 5;
            }
            if st.secrets_live != keys.len() || keys.len() < 1000 {
                return 6;
            }
            if keys.iter().any(|k| *k.expose() != [1; 32]) {
                return 7;
            }
            0
        });
        assert_eq!(out, Ended::Exited(0), "{backing:?}");
    });
}

#[test]
fn an_mmap_failure_is_an_error() {
    for_each_backing(|backing| {
        let out = in_child(|| {
            // Raising RLIMIT_MEMLOCK needs root (CAP_SYS_RESOURCE); without
            // it, skip the check.
            if child::set_rlimit(libc::RLIMIT_MEMLOCK, libc::RLIM_INFINITY).is_err() {
                return 0;
            }
            let pool = SecretPool::with_backing(backing).unwrap();
            child::limit_address_space();
            match SecretVec::<u8>::with_capacity_in(1 << 30, &pool) {
                Err(SecretError::Map {
                    errno: libc::ENOMEM,
                }) => {}
                other => {
                    eprintln!("{other:?}");
                    return 2;
                }
            }
            // Nothing is left counted, and small secrets still work.
            if mapalloc::secret::locked_bytes() != 0 || pool.stats().bytes_locked != 0 {
                return 3;
            }
            if SecretBox::new_in(1u64, &pool).is_err() {
                return 4;
            }
            0
        });
        assert_eq!(out, Ended::Exited(0), "{backing:?}");
    });
}
