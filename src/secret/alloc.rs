//! The pool as the allocator of standard-shaped collections:
//! `allocator_api2::alloc::Allocator` on stable, `core::alloc::Allocator`
//! with the `nightly` feature. Both are implemented for `SecretPool`, and
//! so (by the traits' blanket impls) for `&SecretPool`.
//!
//! Blocks are secrets like any other (locked, undumped, guarded,
//! canaried, wiped on free) but never sealed: a collection reads its
//! memory whenever it likes. The slice handed back is exactly
//! `layout.size()` long, so a block is always freed with the size it was
//! asked with, which is what the canary check needs. `grow`/`shrink` use
//! the traits' defaults (allocate, copy, free: the old block is wiped).
//!
//! If some other crate in the build turns on `allocator-api2`'s own
//! `nightly` feature, its trait becomes a re-export of core's and the two
//! impls below collide; use this crate's `nightly` feature alone then.

use super::SecretPool;
use core::alloc::Layout;
use core::ptr::NonNull;

fn allocate(pool: &SecretPool, layout: Layout) -> Option<NonNull<[u8]>> {
    if layout.size() == 0 {
        // A dangling pointer aligned to the layout: nothing to allocate.
        let p = NonNull::new(core::ptr::without_provenance_mut::<u8>(layout.align()))?;
        return Some(NonNull::slice_from_raw_parts(p, 0));
    }
    let p = pool
        .inner()
        .alloc(layout.size(), layout.align(), false, false)
        .ok()?;
    Some(NonNull::slice_from_raw_parts(p, layout.size()))
}

/// # Safety
/// `ptr` was allocated by `pool` through `allocate` with `layout`.
unsafe fn deallocate(pool: &SecretPool, ptr: NonNull<u8>, layout: Layout) {
    if layout.size() != 0 {
        // SAFETY: the caller's contract, which is the `Allocator` one.
        unsafe { pool.inner().free(ptr, layout.size(), layout.align(), false) };
    }
}

// SAFETY: blocks stay valid until freed or until the pool's last handle
// is gone (and a block's allocator borrows or owns a handle); clones share
// one pool, so a block may be freed through any of them; `allocate`
// returns memory that fits the layout (exactly its size, its alignment).
unsafe impl allocator_api2::alloc::Allocator for SecretPool {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        allocate(self, layout).ok_or(allocator_api2::alloc::AllocError)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the trait's contract.
        unsafe { deallocate(self, ptr, layout) }
    }
}

// SAFETY: as for the `allocator_api2` impl.
#[cfg(feature = "nightly")]
unsafe impl core::alloc::Allocator for SecretPool {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, core::alloc::AllocError> {
        allocate(self, layout).ok_or(core::alloc::AllocError)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the trait's contract.
        unsafe { deallocate(self, ptr, layout) }
    }
}
