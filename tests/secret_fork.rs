//! What a forked child does with the secrets it inherited.
//!
//! A child has its parent's secret *handles* but not their memory:
//! memfd_secret data is `MADV_DONTFORK` (an empty gap in the child, which
//! the kernel may hand to the child's next mapping), anonymous data is
//! `MADV_WIPEONFORK` (zeros). Dropping or exposing an inherited secret
//! must not unmap, protect or write a range the child did not inherit:
//! the tests map a page of the child's own exactly where an inherited
//! secret's data was (`MAP_FIXED_NOREPLACE`), drop or expose the secret,
//! and check the page. And a child is told from its parent by a fork
//! generation, not by its pid: one test forks a pid 1 from a pid 1 (PID
//! namespaces).
//!
//! Every test runs under `serial()`, so no other thread of this binary
//! holds a pool lock when it forks.

use mapalloc::secret::{Backing, PoolOptions, SecretBox, SecretError, SecretPool, SecretVec};
use std::ptr;
use std::time::Duration;

mod common;

use common::child::{self, Ended};
use common::serial;
use common::smaps::mapping_of;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

const PAGE: usize = 4096;
const TIMEOUT: Duration = Duration::from_secs(60);

fn backings() -> Vec<Backing> {
    let mut v = vec![Backing::Anonymous];
    if mapalloc::secret::memfd_secret_available() {
        v.push(Backing::MemfdSecret);
    }
    v
}

/// The secrets the tests inherit: one in a slab, one with a mapping of its
/// own, one sealed (a mapping of its own, `PROT_NONE` while not exposed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Small,
    Large,
    Sealed,
}

const KINDS: [Kind; 3] = [Kind::Small, Kind::Large, Kind::Sealed];

fn pool_for(backing: Backing, kind: Kind) -> SecretPool {
    let sealed = kind == Kind::Sealed;
    SecretPool::with_options(PoolOptions::new().backing(backing).sealed(sealed)).unwrap()
}

fn secret_of(kind: Kind, pool: &SecretPool) -> SecretVec<u8> {
    let len = if kind == Kind::Large { 20_000 } else { 32 };
    SecretVec::from_slice_in(&vec![0x5Au8; len], pool).unwrap()
}

/// Maps a private read-write page at exactly `addr`, or `None` if
/// something is mapped there already.
fn map_page_at(addr: usize) -> Option<usize> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error().raw_os_error();
        assert_eq!(e, Some(libc::EEXIST), "mmap at {addr:#x}");
        return None;
    }
    assert_eq!(p as usize, addr, "MAP_FIXED_NOREPLACE moved the page");
    Some(addr)
}

/// Maps a private read-write page wherever the kernel likes.
fn map_page() -> usize {
    // SAFETY: a new anonymous mapping replaces nothing.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p as usize
}

fn fill_page(page: usize, byte: u8) {
    for i in 0..PAGE {
        // SAFETY: a read-write page of ours.
        unsafe { ptr::write_volatile((page + i) as *mut u8, byte) };
    }
}

/// True if the page still reads `byte` everywhere (faults if it was
/// unmapped or protected behind the test's back).
fn page_holds(page: usize, byte: u8) -> bool {
    // SAFETY: a page of ours, mapped unless the code under test unmapped it
    // (then the read faults, which is what the test looks for).
    (0..PAGE).all(|i| unsafe { ptr::read_volatile((page + i) as *const u8) } == byte)
}

/// The exit status a nested child's end maps to (signals as 128 + n, the
/// shell's way).
fn code(e: Ended) -> i32 {
    match e {
        Ended::Exited(n) => n,
        Ended::Signaled(s) => 128 + s,
    }
}

#[test]
fn dropping_an_inherited_secret_leaves_the_childs_own_mappings_alone() {
    let _s = serial();
    for backing in backings() {
        for kind in KINDS {
            let pool = pool_for(backing, kind);
            let v = secret_of(kind, &pool);
            let data = mapping_of(v.expose().as_ptr() as usize);
            let out = child::in_child("drop inherited", TIMEOUT, || {
                // memfd_secret: the data is a gap in the child, so the page
                // lands where the secret was. Anonymous: the (wiped) data
                // is the child's, so the page goes elsewhere.
                let page = match map_page_at(data.start) {
                    Some(p) => p,
                    None if backing == Backing::Anonymous => map_page(),
                    None => return 2,
                };
                fill_page(page, 0xC3);
                drop(v);
                if !page_holds(page, 0xC3) {
                    return 3;
                }
                // The page is still the child's own mapping.
                let m = mapping_of(page);
                if m.path.contains("secretmem") || !m.perms.starts_with("rw") {
                    return 4;
                }
                // And the child's pools work around it.
                let fresh = SecretPool::with_backing(backing).unwrap();
                let k = SecretBox::<[u8; 32]>::new_with_in(&fresh, |k| k.fill(7)).unwrap();
                if *k.expose() != [7; 32] || fresh.stats().secrets_live != 1 {
                    return 5;
                }
                if fresh.stats().bytes_locked == 0 {
                    return 6;
                }
                0
            });
            assert_eq!(out, Ended::Exited(0), "{backing:?} {kind:?}");
        }
    }
}

#[test]
fn exposing_an_inherited_sealed_secret_touches_nothing_of_the_child() {
    let _s = serial();
    if !mapalloc::secret::memfd_secret_available() {
        // Anonymous sealed secrets are the child's own (zeroed) pages; the
        // control in secret_protection exposes one.
        eprintln!("memfd_secret unavailable: nothing inherited is absent");
        return;
    }
    let pool = pool_for(Backing::MemfdSecret, Kind::Sealed);
    let v = secret_of(Kind::Sealed, &pool);
    let data = mapping_of(v.expose().as_ptr() as usize);
    let out = child::in_child("expose inherited", TIMEOUT, || {
        let Some(page) = map_page_at(data.start) else {
            return 2;
        };
        fill_page(page, 0xC3);
        // The secret is not in this process: an error, and the page keeps
        // its protection (a write after the guard would fault if the
        // exposure had unsealed and resealed the child's page).
        let refused = matches!(v.try_expose(), Err(SecretError::Inherited));
        fill_page(page, 0x3C);
        if !page_holds(page, 0x3C) {
            return 3;
        }
        if !refused {
            return 4;
        }
        0
    });
    assert_eq!(out, Ended::Exited(0));
}

/// Moves the caller into new PID namespace for its next child (as root;
/// else in a new user namespace too). False if neither is allowed here.
fn new_pid_namespace() -> bool {
    // SAFETY: unshare changes only the calling process's namespaces.
    unsafe {
        libc::unshare(libc::CLONE_NEWPID) == 0
            || libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID) == 0
    }
}

/// The pool of a pid-1 process, inherited by a child that is pid 1 too.
/// The child must count nothing inherited and, dropping its inherited
/// secrets, touch none of their memory.
fn pid_one_forks_pid_one(backing: Backing) -> i32 {
    if !new_pid_namespace() {
        return 77;
    }
    let init = child::in_child("pid 1", TIMEOUT, || {
        // SAFETY: getpid has no preconditions.
        if unsafe { libc::getpid() } != 1 {
            return 78;
        }
        let pool = SecretPool::with_backing(backing).unwrap();
        let key = SecretBox::<[u8; 32]>::new_with_in(&pool, |k| k.fill(1)).unwrap();
        let big = SecretVec::from_slice_in(&[1u8; 20_000], &pool).unwrap();
        if !new_pid_namespace() {
            return 77;
        }
        let forked = child::in_child("pid 1's pid 1", TIMEOUT, || {
            // SAFETY: as above.
            if unsafe { libc::getpid() } != 1 {
                return 78;
            }
            let st = pool.stats();
            let locked = mapalloc::secret::locked_bytes();
            drop(key);
            drop(big);
            if st.secrets_live != 0 || st.bytes_locked != 0 || locked != 0 {
                return 2;
            }
            if pool.stats().secrets_live != 0 {
                return 3;
            }
            0
        });
        code(forked)
    });
    code(init)
}

#[test]
fn a_child_with_its_parents_pid_is_still_a_child() {
    let _s = serial();
    for backing in backings() {
        let out = child::in_child("pid namespaces", TIMEOUT, || pid_one_forks_pid_one(backing));
        if out == Ended::Exited(77) {
            eprintln!("no PID namespaces here: only the plain fork is checked");
        } else {
            assert_eq!(out, Ended::Exited(0), "{backing:?}");
        }
        // The same check across a plain fork (different pids).
        let pool = SecretPool::with_backing(backing).unwrap();
        let key = SecretBox::<[u8; 32]>::new_with_in(&pool, |k| k.fill(1)).unwrap();
        let out = child::in_child("plain fork", TIMEOUT, || {
            let st = pool.stats();
            drop(key);
            if st.secrets_live != 0 || mapalloc::secret::locked_bytes() != 0 {
                return 2;
            }
            0
        });
        assert_eq!(out, Ended::Exited(0), "{backing:?}");
    }
}

#[test]
fn an_inherited_secret_is_not_written_by_the_pool() {
    let _s = serial();
    for backing in backings() {
        for kind in KINDS {
            let pool = pool_for(backing, kind);
            let mut v = secret_of(kind, &pool);
            let key = SecretBox::<[u8; 32]>::new_with_in(&pool, |k| k.fill(9)).unwrap();
            let data = mapping_of(v.expose().as_ptr() as usize);
            let out = child::in_child("use inherited", TIMEOUT, || {
                let page = map_page_at(data.start).unwrap_or_else(map_page);
                fill_page(page, 0xC3);
                // Growing copies from the buffer, pushing writes into it,
                // cloning reads it: none of it is this process's memory.
                if v.try_push(1) != Err(SecretError::Inherited)
                    || v.try_resize_zeroed(v.len() + 64) != Err(SecretError::Inherited)
                    || !matches!(key.try_clone(), Err(SecretError::Inherited))
                {
                    return 2;
                }
                // Nothing of this process's to wipe, so nothing written.
                v.truncate(0);
                if !v.is_empty() || !page_holds(page, 0xC3) {
                    return 3;
                }
                drop((v, key));
                if !page_holds(page, 0xC3) { 4 } else { 0 }
            });
            assert_eq!(out, Ended::Exited(0), "{backing:?} {kind:?}");
        }
    }
}
