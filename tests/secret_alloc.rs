//! `SecretPool` as a collection allocator: the `allocator_api2` trait on
//! stable (driven by a small generic vector of the test's own, and by
//! `allocator_api2`'s own `Vec` and `Box`, which the dev-dependency
//! enables), `std::vec::Vec<_, &SecretPool>` with the `nightly` feature,
//! and what happens to blocks still out when the pool's last handle goes.

#![cfg_attr(feature = "nightly", feature(allocator_api))]

use allocator_api2::alloc::{AllocError, Allocator};
use mapalloc::secret::{Backing, SecretPool};
use std::alloc::Layout;
use std::ptr::{self, NonNull};
use std::time::Duration;

mod common;

use common::child::{self, Ended};
use common::seccomp::{self, Refuse};

/// A minimal growable array over any `allocator_api2` allocator (the way
/// `allocator_api2::vec::Vec` and hashbrown use the trait: allocate, grow,
/// shrink, deallocate with the same layout).
struct TinyVec<T: Copy, A: Allocator> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
    alloc: A,
}

impl<T: Copy, A: Allocator> TinyVec<T, A> {
    fn new_in(alloc: A) -> Self {
        TinyVec {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
            alloc,
        }
    }

    fn layout(cap: usize) -> Layout {
        Layout::array::<T>(cap).unwrap()
    }

    fn push(&mut self, v: T) -> Result<(), AllocError> {
        if self.len == self.cap {
            let new_cap = (self.cap * 2).max(4);
            let new = if self.cap == 0 {
                self.alloc.allocate(Self::layout(new_cap))?
            } else {
                // SAFETY: `ptr` was allocated by `alloc` with `layout(cap)`.
                unsafe {
                    self.alloc.grow(
                        self.ptr.cast(),
                        Self::layout(self.cap),
                        Self::layout(new_cap),
                    )?
                }
            };
            assert!(new.len() >= Self::layout(new_cap).size());
            self.ptr = new.cast();
            self.cap = new_cap;
        }
        // SAFETY: `len < cap`.
        unsafe { self.ptr.as_ptr().add(self.len).write(v) };
        self.len += 1;
        Ok(())
    }

    fn shrink_to_fit(&mut self) -> Result<(), AllocError> {
        if self.len < self.cap && self.len > 0 {
            // SAFETY: as in `push`; the new size is smaller.
            let new = unsafe {
                self.alloc.shrink(
                    self.ptr.cast(),
                    Self::layout(self.cap),
                    Self::layout(self.len),
                )?
            };
            self.ptr = new.cast();
            self.cap = self.len;
        }
        Ok(())
    }

    fn as_slice(&self) -> &[T] {
        // SAFETY: `len` initialised elements.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy, A: Allocator> Drop for TinyVec<T, A> {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: allocated by `alloc` with this layout.
            unsafe {
                self.alloc
                    .deallocate(self.ptr.cast(), Self::layout(self.cap))
            };
        }
    }
}

fn pools() -> Vec<SecretPool> {
    let mut v = vec![SecretPool::with_backing(Backing::Anonymous).unwrap()];
    if mapalloc::secret::memfd_secret_available() {
        v.push(SecretPool::with_backing(Backing::MemfdSecret).unwrap());
    }
    // A sealed pool seals its own secrets; allocator blocks stay open.
    v.push(SecretPool::sealed().unwrap());
    v
}

#[test]
fn a_generic_vector_grows_and_shrinks_in_the_pool() {
    for pool in pools() {
        {
            let mut v = TinyVec::<u64, &SecretPool>::new_in(&pool);
            for i in 0..20_000u64 {
                v.push(i * 3).unwrap();
            }
            assert!(
                v.as_slice()
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == i as u64 * 3)
            );
            let st = pool.stats();
            assert_eq!(st.secrets_live, 1);
            assert!(st.bytes_locked >= 20_000 * 8);
            v.shrink_to_fit().unwrap();
            assert_eq!(v.as_slice().len(), 20_000);
            assert_eq!(v.as_slice()[19_999], 19_999 * 3);
        }
        // By value: the vector owns a handle of the pool.
        let mut w = TinyVec::<u8, SecretPool>::new_in(pool.clone());
        for i in 0..100u8 {
            w.push(i).unwrap();
        }
        assert_eq!(w.as_slice()[99], 99);
        drop(w);
        let st = pool.stats();
        assert_eq!((st.secrets_live, st.bytes_locked), (0, 0));
    }
}

#[test]
fn every_size_and_alignment_fits_its_layout() {
    let pool = SecretPool::new().unwrap();
    let mut live = Vec::new();
    for align_log in 0..=14 {
        let align = 1usize << align_log;
        for size in [
            0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 40, 100, 1000, 2040, 2041, 4096, 5000, 70_000,
        ] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let block = pool.allocate(layout).unwrap();
            assert_eq!(block.len(), size, "exact length for {layout:?}");
            let p = block.cast::<u8>().as_ptr();
            assert_eq!(p as usize % align, 0, "{layout:?}");
            // SAFETY: a fresh block of `size` bytes.
            unsafe {
                assert!((0..size).all(|i| *p.add(i) == 0), "fresh memory is zero");
                ptr::write_bytes(p, 0xEE, size);
            }
            live.push((block.cast::<u8>(), layout));
        }
    }
    for (i, &(p, layout)) in live.iter().enumerate() {
        // SAFETY: live blocks of ours, each written whole above.
        unsafe {
            assert!(
                (0..layout.size()).all(|j| *p.as_ptr().add(j) == 0xEE),
                "block {i} {layout:?} was overwritten"
            );
        }
    }
    for (p, layout) in live {
        // SAFETY: allocated above with this layout.
        unsafe { pool.deallocate(p, layout) };
    }
    assert_eq!(pool.stats().secrets_live, 0);
}

#[test]
fn zeroed_allocation_and_error_on_the_limit() {
    let pool = SecretPool::new().unwrap();
    let layout = Layout::from_size_align(300, 16).unwrap();
    let b = pool.allocate_zeroed(layout).unwrap();
    // SAFETY: 300 fresh bytes.
    unsafe {
        assert!((0..300).all(|i| *b.cast::<u8>().as_ptr().add(i) == 0));
        pool.deallocate(b.cast(), layout);
    }
    // Far beyond any address space: an error, not an abort.
    let huge = Layout::from_size_align(isize::MAX as usize - 4096, 8).unwrap();
    assert!(pool.allocate(huge).is_err());
}

#[cfg(feature = "nightly")]
#[test]
fn std_vec_and_box_in_the_pool() {
    for pool in pools() {
        let mut v: Vec<u8, &SecretPool> = Vec::new_in(&pool);
        v.extend_from_slice(b"a key that lives in locked memory");
        for i in 0..10_000 {
            v.push(i as u8);
        }
        assert_eq!(&v[..5], b"a key");
        let b = Box::new_in([7u64; 8], &pool);
        assert_eq!(b[7], 7);
        assert_eq!(pool.stats().secrets_live, 2);
        drop((v, b));
        assert_eq!(pool.stats().secrets_live, 0);
    }
}

/// The collection types of `allocator_api2` itself (what hashbrown and
/// bumpalo build on) on a secret pool, on stable Rust.
#[test]
fn allocator_api2_vec_and_box_in_the_pool() {
    for pool in pools() {
        let mut v: allocator_api2::vec::Vec<u8, &SecretPool> =
            allocator_api2::vec::Vec::new_in(&pool);
        for i in 0..10_000u32 {
            v.push(i as u8);
        }
        assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
        let live = pool.stats().bytes_live;
        assert!(
            live >= 10_000,
            "the vector's buffer is not in the pool: {live}"
        );
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(&v[..], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let key = allocator_api2::boxed::Box::new_in([7u8; 32], &pool);
        assert_eq!(*key, [7u8; 32]);
        drop((v, key));
        assert_eq!(
            pool.stats().secrets_live,
            0,
            "everything went back to the pool"
        );
    }
}

/// True if the page holding `addr` is mapped: `mincore` fails with
/// `ENOMEM` on an unmapped range (and allocates nothing, so nothing new
/// lands there while the test looks).
fn is_mapped(addr: usize) -> bool {
    let mut v = 0u8;
    // SAFETY: one page, one result byte into `v`.
    let rc = unsafe { libc::mincore((addr & !4095) as *mut libc::c_void, 1, &mut v) };
    if rc == 0 {
        return true;
    }
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOMEM)
    );
    false
}

fn all_zero(p: NonNull<u8>, len: usize) -> bool {
    // SAFETY: the callers pass blocks that are still mapped.
    (0..len).all(|i| unsafe { ptr::read_volatile(p.as_ptr().add(i)) } == 0)
}

fn backings() -> Vec<Backing> {
    let mut v = vec![Backing::Anonymous];
    if mapalloc::secret::memfd_secret_available() {
        v.push(Backing::MemfdSecret);
    }
    v
}

const SMALL: Layout = match Layout::from_size_align(32, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};
const LARGE: Layout = match Layout::from_size_align(100_000, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};

/// Allocates a small and a large block of `pool`, both filled with 0x77.
fn two_blocks(pool: &SecretPool) -> (NonNull<u8>, NonNull<u8>) {
    let s = pool.allocate(SMALL).unwrap().cast::<u8>();
    let l = pool.allocate(LARGE).unwrap().cast::<u8>();
    // SAFETY: fresh blocks of these sizes.
    unsafe {
        ptr::write_bytes(s.as_ptr(), 0x77, SMALL.size());
        ptr::write_bytes(l.as_ptr(), 0x77, LARGE.size());
    }
    (s, l)
}

/// Blocks handed out through `Allocator` and never freed cannot outlive
/// their allocator (the trait's contract ends with the last clone): when
/// the pool's last handle goes, they are wiped, unlocked and unmapped like
/// the rest of it, in either order. Each case runs in a child, where the
/// process-wide locked count is this test's alone.
#[test]
fn blocks_still_out_go_with_the_pool() {
    for backing in backings() {
        for blocks_freed_first in [true, false] {
            let out = child::in_child("pool dropped", Duration::from_secs(60), || {
                let pool = SecretPool::with_backing(backing).unwrap();
                let (s, l) = two_blocks(&pool);
                if mapalloc::secret::locked_bytes() < LARGE.size() {
                    return 2;
                }
                if blocks_freed_first {
                    // SAFETY: allocated above with these layouts.
                    unsafe {
                        pool.deallocate(s, SMALL);
                        pool.deallocate(l, LARGE);
                    }
                }
                drop(pool);
                if mapalloc::secret::locked_bytes() != 0 {
                    return 3;
                }
                if is_mapped(s.as_ptr() as usize) || is_mapped(l.as_ptr() as usize) {
                    return 4;
                }
                0
            });
            assert_eq!(
                out,
                Ended::Exited(0),
                "{backing:?}, blocks freed first: {blocks_freed_first}"
            );
        }
        // Wiped before the unmap: with that munmap refused, the blocks of a
        // dropped pool stay readable, and read zero.
        let out = child::in_child(
            "pool dropped, unmap refused",
            Duration::from_secs(60),
            || {
                let pool = SecretPool::with_backing(backing).unwrap();
                let (s, l) = two_blocks(&pool);
                let rules = [s, l]
                    .map(|p| Refuse::range(libc::SYS_munmap, p.as_ptr() as usize, libc::EPERM));
                seccomp::refuse(&rules).expect("seccomp filter");
                drop(pool);
                if !all_zero(s, SMALL.size()) || !all_zero(l, LARGE.size()) {
                    return 5;
                }
                0
            },
        );
        assert_eq!(out, Ended::Exited(0), "{backing:?}: wiped");
    }
}
