//! The secret pool's API: boxes, vectors, strings, statistics, threads,
//! redacted `Debug`, error values, and that none of it allocates through
//! the global allocator. (Zeroing after free: `secret_wipe.rs`.)
//!
//! The global allocator here is `System` wrapped in a per-thread counter,
//! so a test can assert that secret operations make no heap allocation.

use mapalloc::secret::{
    Backing, ExposeSecret, SecretBox, SecretError, SecretPool, SecretString, SecretVec, Wipe,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to `System`; the counter is a const-initialised
// thread-local without a destructor, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { System.dealloc(p, layout) }
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded.
        unsafe { System.realloc(p, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations the calling thread makes while running `f`.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCS.with(|c| c.get());
    let r = f();
    (r, ALLOCS.with(|c| c.get()) - before)
}

/// Reads `len` bytes at `p` (memory the test knows is mapped).
fn read(p: usize, len: usize) -> Vec<u8> {
    (0..len)
        // SAFETY: the callers pass ranges of kept (mapped) pool memory.
        .map(|i| unsafe { ptr::read_volatile((p + i) as *const u8) })
        .collect()
}

fn pools() -> Vec<SecretPool> {
    let mut v = vec![SecretPool::with_backing(Backing::Anonymous).unwrap()];
    if mapalloc::secret::memfd_secret_available() {
        v.push(SecretPool::with_backing(Backing::MemfdSecret).unwrap());
    }
    v.push(SecretPool::sealed().unwrap());
    v
}

#[test]
fn backing_matches_the_kernel() {
    let g = SecretPool::global();
    let want = if mapalloc::secret::memfd_secret_available() {
        Backing::MemfdSecret
    } else {
        Backing::Anonymous
    };
    assert_eq!(g.backing(), want);
    assert_eq!(SecretPool::new().unwrap().backing(), want);
    assert_eq!(
        SecretPool::with_backing(Backing::Anonymous)
            .unwrap()
            .backing(),
        Backing::Anonymous
    );
    match SecretPool::with_backing(Backing::MemfdSecret) {
        Ok(p) => assert_eq!(p.backing(), Backing::MemfdSecret),
        Err(e) => assert_eq!(e, SecretError::Unsupported),
    }
    println!("backing here: {:?}", g.backing());
}

#[test]
fn box_in_place_expose_and_redacted_debug() {
    for pool in pools() {
        let mut key = SecretBox::<[u8; 32]>::new_with_in(&pool, |k| {
            for (i, b) in k.iter_mut().enumerate() {
                *b = 0xA0 + i as u8;
            }
        })
        .unwrap();
        assert_eq!(key.expose()[31], 0xA0 + 31);
        {
            let a = key.expose();
            let b = key.expose(); // nested shared exposures
            assert_eq!(a[0], b[0]);
        }
        key.expose_mut()[0] = 1;
        assert_eq!(key.expose()[0], 1);
        assert_eq!(key.is_sealed(), pool.is_sealed());
        let dbg = format!("{key:?} {:?}", key.expose());
        assert_eq!(dbg, "SecretBox<[REDACTED]> Exposed<[REDACTED]>");
        let copy = key.try_clone().unwrap();
        assert_eq!(*copy.expose(), *key.expose());
        let n = SecretBox::new_in(0x1234_5678u32, &pool).unwrap();
        assert_eq!(*n.expose(), 0x1234_5678);
        let mut src = [9u64; 4];
        let moved = SecretBox::from_mut_in(&mut src, &pool).unwrap();
        assert_eq!(src, [0; 4], "from_mut wipes the source");
        assert_eq!(*moved.expose(), [9; 4]);
        let z = SecretBox::<(u64, [u16; 3])>::zeroed_in(&pool).unwrap();
        assert_eq!(*z.expose(), (0, [0; 3]));
        let unit = SecretBox::new_in((), &pool).unwrap();
        assert_eq!(*unit.expose(), ());
    }
}

#[test]
fn vec_and_string_grow_shrink_and_wipe() {
    for pool in pools() {
        let mut v: SecretVec = SecretVec::new_in(&pool);
        assert!(v.is_empty() && v.capacity() == 0);
        for i in 0..10_000u32 {
            v.try_push(i as u8).unwrap(); // through slab classes into pages
        }
        assert_eq!(v.len(), 10_000);
        assert!(v.expose().iter().enumerate().all(|(i, &b)| b == i as u8));
        v.try_extend_from_slice(&[7; 100]).unwrap();
        let base = v.expose().as_ptr() as usize;
        v.truncate(10);
        assert_eq!(v.len(), 10);
        {
            let g = v.expose(); // unseals for the raw read below
            assert_eq!(&g[..], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
            assert!(
                read(base + 10, 10_090).iter().all(|&b| b == 0),
                "truncate wipes"
            );
        }
        v.expose_mut()[0] = 42;
        assert_eq!(v.expose()[0], 42);
        v.clear();
        assert!(v.is_empty());
        assert_eq!(format!("{v:?}"), "SecretVec<[REDACTED]>");

        let words = SecretVec::<u64>::from_slice_in(&[1, 2, 3], &pool).unwrap();
        assert_eq!(&*words.expose(), &[1, 2, 3]);
        let mut z = SecretVec::<u32>::zeroed_in(5, &pool).unwrap();
        assert_eq!(&*z.expose(), &[0; 5]);
        z.try_resize_zeroed(2).unwrap();
        z.try_resize_zeroed(6).unwrap();
        assert_eq!(&*z.expose(), &[0; 6]);

        let mut s = SecretString::try_from_str_in("correct horse", &pool).unwrap();
        s.try_push(' ').unwrap();
        s.try_push_str("battery staple ✓").unwrap();
        assert_eq!(&*s.expose(), "correct horse battery staple ✓");
        assert!(s.pop());
        assert!(s.pop());
        assert_eq!(&*s.expose(), "correct horse battery staple");
        assert_eq!(format!("{s:?}"), "SecretString<[REDACTED]>");
        s.clear();
        assert!(!s.pop());
    }
}

/// A secret of two parts, wiped part by part.
struct TwoKeys {
    a: [u8; 32],
    b: SecretVec<u8>,
}

impl Wipe for TwoKeys {
    fn wipe(&mut self) {
        self.a.wipe();
        self.b.wipe();
    }
}

#[test]
fn secret_operations_do_not_allocate_on_the_heap() {
    let pool = SecretPool::new().unwrap();
    let global = SecretPool::global();
    // Heap buffers to convert, made before counting (freeing them is not
    // an allocation).
    let mut sources: Vec<(Vec<u8>, String)> = (0..3)
        .map(|_| (vec![5u8; 100], String::from("from the heap")))
        .collect();
    let ((), n) = allocations_in(|| {
        let sealed = SecretPool::sealed().unwrap();
        for p in [&pool, global, &sealed] {
            let k = SecretBox::<[u8; 32]>::new_with_in(p, |k| k.fill(1)).unwrap();
            let mut v = SecretVec::<u8>::new_in(p);
            for i in 0..5000 {
                v.try_push(i as u8).unwrap();
            }
            let mut s = SecretString::new_in(p);
            s.try_push_str("hunter2").unwrap();
            assert_eq!(k.expose()[0], 1);
            assert_eq!(v.expose().len(), 5000);
            // The API of issue 16: random fills, a fallible initialiser,
            // constant-time equality, conversions, a secret of two parts.
            let r = SecretBox::<[u8; 32]>::random_in(p).unwrap();
            let rv = SecretVec::random_in(3000, p).unwrap();
            let t = SecretBox::<[u8; 32]>::try_new_with_in(p, |k| {
                k.fill(1);
                Ok::<(), SecretError>(())
            })
            .unwrap();
            assert!(t.ct_eq(&*k.expose()) && !r.ct_eq(&*k.expose()));
            assert!(s.ct_eq("hunter2") && rv.len() == 3000);
            let (hv, hs) = sources.pop().unwrap();
            let fv = SecretVec::from_vec_in(hv, p).unwrap();
            let fs = SecretString::from_string_in(hs, p).unwrap();
            assert!(fv.ct_eq(&[5u8; 100]) && &*fs.expose_str() == "from the heap");
            let two = SecretBox::new_in(
                TwoKeys {
                    a: [2; 32],
                    b: SecretVec::from_slice_in(b"second", p).unwrap(),
                },
                p,
            )
            .unwrap();
            assert!(two.expose_secret().b.ct_eq(b"second"));
            drop((k, v, s, r, rv, t, fv, fs, two));
            let _ = p.stats();
        }
    });
    assert_eq!(n, 0, "the secret pool allocated on the global heap");
}

#[test]
fn stats_count_slabs_mappings_and_guards() {
    let pool = SecretPool::with_backing(Backing::Anonymous).unwrap();
    let s0 = pool.stats();
    assert_eq!(
        (
            s0.slabs,
            s0.large_mappings,
            s0.secrets_live,
            s0.bytes_locked
        ),
        (0, 0, 0, 0)
    );

    // 32-byte keys share 4 KiB slabs (48-byte blocks: 85 per page).
    let keys: Vec<_> = (0..100)
        .map(|i| SecretBox::<[u8; 32]>::new_with_in(&pool, |k| k.fill(i)).unwrap())
        .collect();
    let s = pool.stats();
    assert_eq!(s.slabs, 2);
    assert_eq!(s.secrets_live, 100);
    assert_eq!(s.bytes_live, 3200);
    assert_eq!(s.bytes_locked, 2 * 4096);
    assert_eq!(s.guard_pages, 2 * 5);
    // Other tests lock secrets concurrently: the process-wide figure is at
    // least this pool's.
    assert!(mapalloc::secret::locked_bytes() >= s.bytes_locked);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(*k.expose(), [i as u8; 32]);
    }

    let big = SecretVec::<u8>::with_capacity_in(10_000, &pool).unwrap();
    let s = pool.stats();
    assert_eq!(s.large_mappings, 1);
    assert_eq!(s.bytes_locked, 2 * 4096 + 12_288);
    assert_eq!(s.guard_pages, 2 * 5 + 2);
    drop(big);
    drop(keys);
    let s = pool.stats();
    assert_eq!(
        (s.slabs, s.large_mappings, s.secrets_live, s.bytes_locked),
        (0, 0, 0, 0)
    );
    assert_eq!(s.guard_pages, 0);
}

#[test]
fn errors_name_their_figures() {
    let e = SecretError::MemlockLimit {
        limit: 65536,
        locked: 61440,
        requested: 8192,
    };
    let msg = e.to_string();
    assert!(
        msg.contains("RLIMIT_MEMLOCK")
            && msg.contains("65536")
            && msg.contains("61440")
            && msg.contains("8192")
    );
    let e = SecretError::Map {
        errno: libc::ENOMEM,
    };
    assert_eq!(e.errno(), Some(libc::ENOMEM));
    assert!(e.to_string().contains("map"));
    let _: &dyn std::error::Error = &e;
}

#[test]
fn threads_share_a_pool() {
    let pool = SecretPool::new().unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let pool = &pool;
            s.spawn(move || {
                let mut live = Vec::new();
                for i in 0..2000usize {
                    let len = [8, 32, 100, 700, 2000, 5000][i % 6];
                    let tag = t.wrapping_mul(31).wrapping_add(i as u8);
                    let v = SecretVec::from_slice_in(&vec![tag; len], pool).unwrap();
                    live.push((v, tag, len));
                    if i % 3 == 0 {
                        let (v, tag, len) = live.swap_remove(i % live.len());
                        assert!(v.expose().iter().all(|&b| b == tag));
                        assert_eq!(v.len(), len);
                    }
                }
                for (v, tag, _) in &live {
                    assert!(v.expose().iter().all(|b| b == tag));
                }
            });
        }
    });
    let st = pool.stats();
    assert_eq!(
        (
            st.secrets_live,
            st.slabs,
            st.large_mappings,
            st.bytes_locked
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn secrets_keep_their_pool_alive() {
    let pool = SecretPool::with_backing(Backing::Anonymous).unwrap();
    let key = SecretBox::new_in([5u8; 16], &pool).unwrap();
    let other = pool.clone();
    assert!(other.same_pool(key.pool()));
    drop(pool);
    drop(other);
    assert_eq!(*key.expose(), [5; 16]);
    assert_eq!(key.pool().stats().secrets_live, 1);
}
