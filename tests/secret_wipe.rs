//! What is wiped, and when, checked from outside the pool (no test hooks):
//!
//! - freed secrets read zero: a freed block in a slab that a neighbour
//!   keeps mapped is read through its old pointer; memory the pool unmaps
//!   on free is read in a child where a seccomp filter refuses that
//!   `munmap` (so the wipe before it can be seen, and the refused call is
//!   shown to be handled);
//! - `SecretBox::from_mut` leaves no copy of the secret on the stack;
//! - a write into a free slab block is caught when the block is handed
//!   out again, so `zeroed()` never returns non-zero bytes;
//! - a `truncate` that cannot unseal (its `mprotect` refused) does not
//!   let `try_resize_zeroed` hand the removed bytes back as zeros.

use mapalloc::secret::{
    Backing, PoolOptions, SecretBox, SecretError, SecretPool, SecretString, SecretVec,
};
use std::ptr;
use std::time::Duration;

mod common;

use common::child::{self, Ended};
use common::seccomp::{self, Refuse};
use common::serial;
use common::smaps::mapping_of;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

const TIMEOUT: Duration = Duration::from_secs(60);

fn backings() -> Vec<Backing> {
    let mut v = vec![Backing::Anonymous];
    if mapalloc::secret::memfd_secret_available() {
        v.push(Backing::MemfdSecret);
    }
    v
}

/// Every kind of pool: each backing, unsealed and sealed.
fn pool_options() -> Vec<PoolOptions> {
    let mut v = Vec::new();
    for b in backings() {
        v.push(PoolOptions::new().backing(b));
        v.push(PoolOptions::new().backing(b).sealed(true));
    }
    v
}

/// Reads `len` bytes at `p` (memory the test knows is mapped).
fn read(p: usize, len: usize) -> Vec<u8> {
    (0..len)
        // SAFETY: the callers pass ranges that are still mapped.
        .map(|i| unsafe { ptr::read_volatile((p + i) as *const u8) })
        .collect()
}

fn all_zero(p: usize, len: usize) -> bool {
    read(p, len).iter().all(|&b| b == 0)
}

#[test]
fn a_freed_block_reads_zero_while_its_slab_lives() {
    let _s = serial();
    for backing in backings() {
        let pool = SecretPool::with_backing(backing).unwrap();
        let a = SecretBox::<[u8; 100]>::new_with_in(&pool, |k| k.fill(0xAA)).unwrap();
        let b = SecretBox::<[u8; 100]>::new_with_in(&pool, |k| k.fill(0xBB)).unwrap();
        let s = SecretString::try_from_str_in("a passphrase to forget", &pool).unwrap();
        let t = SecretString::try_from_str_in("and its neighbour", &pool).unwrap();
        let (pa, ps) = (a.expose().as_ptr() as usize, s.expose().as_ptr() as usize);
        drop(a);
        drop(s);
        // 100 bytes + canary: a 128-byte block; 22 bytes: a 32-byte block.
        assert!(
            all_zero(pa, 128),
            "{backing:?}: small secret and canary wiped"
        );
        assert!(all_zero(ps, 32), "{backing:?}: string wiped");
        assert_eq!(*b.expose(), [0xBB; 100], "the neighbour is untouched");
        assert_eq!(&*t.expose(), "and its neighbour");
    }
}

/// In a child, refuses (`EPERM`) every `munmap` of a range holding one of
/// `keep`: the pool's unmap fails, so what it left in the memory can be
/// read afterwards.
fn refuse_munmap_of(keep: &[usize]) {
    let rules: Vec<Refuse> = keep
        .iter()
        .map(|&a| Refuse::range(libc::SYS_munmap, a, libc::EPERM))
        .collect();
    seccomp::refuse(&rules).expect("seccomp filter");
}

#[test]
fn memory_the_pool_unmaps_is_wiped_first() {
    let _s = serial();
    for options in pool_options() {
        // The secrets are made in the child: a child's inherited secrets
        // are not its own to wipe (secret_fork.rs).
        let out = child::in_child("munmap refused", TIMEOUT, || {
            let pool = SecretPool::with_options(options).unwrap();
            // A lone small key (its slab empties), a large vector, a string.
            let key = SecretBox::<[u8; 32]>::new_with_in(&pool, |k| k.fill(0xAA)).unwrap();
            let big = SecretVec::from_slice_in(&[0xDDu8; 9000], &pool).unwrap();
            let s = SecretString::try_from_str_in("a passphrase to forget", &pool).unwrap();
            let pk = key.expose().as_ptr() as usize;
            let pb = big.expose().as_ptr() as usize;
            let ps = s.expose().as_ptr() as usize;
            refuse_munmap_of(&[pk, pb, ps]);
            drop((key, big, s));
            // Sealed or not, the pool made the pages read-write to wipe
            // them; the munmap after it was refused.
            if !all_zero(pk, 32) || !all_zero(pb, 9000) || !all_zero(ps, 22) {
                return 2;
            }
            // The refused unmaps cost nothing but address space: nothing
            // counted, and the pool goes on.
            let st = pool.stats();
            if (
                st.secrets_live,
                st.slabs,
                st.large_mappings,
                st.bytes_locked,
            ) != (0, 0, 0, 0)
            {
                return 3;
            }
            let again = SecretVec::from_slice_in(&[1u8; 9000], &pool).unwrap();
            if again.expose().iter().any(|&b| b != 1) {
                return 4;
            }
            0
        });
        assert_eq!(out, Ended::Exited(0), "{options:?}");
    }
}

/// Copies `len` bytes of the dead stack below `sp` into `out` in one
/// `memcpy`, so that no further call overwrites them first.
#[inline(always)]
fn snapshot_below(sp: usize, out: &mut [u8]) {
    let len = out.len();
    // SAFETY: the `len` bytes below a live stack address of this thread
    // are part of its stack mapping (the test thread's stack is far larger
    // than `len`); reading dead stack is what the test is about.
    unsafe { ptr::copy_nonoverlapping((sp - len) as *const u8, out.as_mut_ptr(), len) };
}

#[test]
fn from_mut_leaves_no_copy_of_the_secret_on_the_stack() {
    let _s = serial();
    const N: usize = 256;
    const DEPTH: usize = 32 * 1024;
    let pool = SecretPool::new().unwrap();
    let mut seen = vec![0u8; DEPTH];
    let mut src = [0u8; N];
    // A pattern no other memory holds: built in place, byte by byte.
    for (i, b) in src.iter_mut().enumerate() {
        *b = (common::mix64(i as u64 ^ 0x005E_C2E7) >> 56) as u8 | 1;
    }
    let probe = 0u8;
    let sp = ptr::addr_of!(probe) as usize;
    let key = SecretBox::from_mut_in(&mut src, &pool).unwrap();
    snapshot_below(sp, &mut seen);
    assert_eq!(src, [0u8; N], "the source is wiped");
    assert!(key.expose().iter().all(|&b| b != 0), "the secret moved in");
    let pattern = key.expose()[..32].to_vec();
    let found = seen.windows(32).position(|w| w == &pattern[..]);
    assert_eq!(
        found,
        None,
        "a copy of the secret's first 32 bytes is left {} bytes below the caller's frame",
        found.map_or(0, |i| DEPTH - i)
    );
}

#[test]
fn a_write_into_a_free_block_is_caught_before_it_is_reused() {
    let _s = serial();
    for backing in backings() {
        let out = child::in_child_with_stderr("free block written", TIMEOUT, || {
            let pool = SecretPool::with_backing(backing).unwrap();
            let a = SecretBox::<[u8; 32]>::new_with_in(&pool, |k| k.fill(1)).unwrap();
            let b = SecretBox::<[u8; 32]>::new_with_in(&pool, |k| k.fill(2)).unwrap();
            let (pa, pb) = (a.expose().as_ptr() as usize, b.expose().as_ptr() as usize);
            // 32-byte keys live in 48-byte blocks, one after the other.
            if pb != pa + 48 {
                return 2;
            }
            drop(b);
            // A 48-byte overflow out of `a`: its canary, then 32 bytes of
            // the free block after it.
            for i in 32..80 {
                // SAFETY: mapped slab memory; the overflow is the point.
                unsafe { ptr::write_volatile((pa + i) as *mut u8, 0x41) };
            }
            let z = SecretBox::<[u8; 32]>::zeroed_in(&pool).unwrap();
            let dirty = *z.expose() != [0; 32];
            // Not dropped: the canary of `a` would abort on its own.
            std::mem::forget((a, z));
            if dirty { 3 } else { 0 }
        });
        assert_eq!(
            out.ended,
            Ended::Signaled(libc::SIGABRT),
            "{backing:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains("mapalloc: secret memory written while free"),
            "{backing:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_truncate_that_cannot_unseal_does_not_resurface_as_zeros() {
    let _s = serial();
    for backing in backings() {
        let out = child::in_child("unseal refused", TIMEOUT, || {
            let options = PoolOptions::new().backing(backing).sealed(true);
            let pool = SecretPool::with_options(options).unwrap();
            let mut v = SecretVec::from_slice_in(&[0x5Au8; 100], &pool).unwrap();
            let data = mapping_of(v.expose().as_ptr() as usize).start;
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            seccomp::refuse(&[Refuse::protect(data, rw, libc::ENOMEM)]).expect("seccomp");
            v.truncate(10);
            if v.len() != 10 {
                return 2;
            }
            match v.try_resize_zeroed(100) {
                // The removed bytes could not be wiped, so they must not
                // come back as "zeros".
                Err(SecretError::Protect {
                    errno: libc::ENOMEM,
                }) => {}
                Err(e) => {
                    eprintln!("{e:?}");
                    return 3;
                }
                Ok(()) => {
                    let g = v.expose();
                    return if g[10..].iter().all(|&b| b == 0) {
                        4
                    } else {
                        5
                    };
                }
            }
            if v.len() != 10 || *v.expose() != [0x5A; 10] {
                return 6;
            }
            0
        });
        assert_eq!(out, Ended::Exited(0), "{backing:?}");
    }
}
