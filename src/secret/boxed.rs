//! `SecretBox<T>`: one fixed-size secret, and the exposure guards.

use super::pool;
use super::{SecretError, SecretPool};
use core::fmt;
use core::marker::PhantomData;
use core::mem::{MaybeUninit, align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};

/// Types for which all-zero bytes are a valid value, so a secret of them
/// can be handed to an initialiser in place (`SecretBox::new_with`) and
/// wiped back to a valid value.
///
/// # Safety
/// The all-zero bit pattern must be a valid `Self`, and `Self` must hold no
/// pointer to other memory that zeroing would leave behind (hence `Copy`:
/// a secret's bytes are all there is to wipe).
pub unsafe trait Zeroable: Copy {}

macro_rules! zeroable {
    ($($t:ty),*) => { $(
        // SAFETY: zero is a valid value of every primitive number, `bool`
        // (false), `char` ('\0') and `()`.
        unsafe impl Zeroable for $t {}
    )* };
}
zeroable!(
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    bool,
    char,
    ()
);

// SAFETY: an array of zeroable values is zeroable.
unsafe impl<T: Zeroable, const N: usize> Zeroable for [T; N] {}
// SAFETY: any bytes, zeros included, are a valid `MaybeUninit`.
unsafe impl<T: Copy> Zeroable for MaybeUninit<T> {}
// SAFETY: tuples of zeroable values are zeroable (padding may be zero).
unsafe impl<A: Zeroable, B: Zeroable> Zeroable for (A, B) {}
// SAFETY: as above.
unsafe impl<A: Zeroable, B: Zeroable, C: Zeroable> Zeroable for (A, B, C) {}
// SAFETY: as above.
unsafe impl<A: Zeroable, B: Zeroable, C: Zeroable, D: Zeroable> Zeroable for (A, B, C, D) {}

/// Read access to a secret, while it lasts. A sealed secret's pages are
/// read-only while shared guards are alive (and `PROT_NONE` otherwise).
pub struct Exposed<'a, T: ?Sized> {
    ptr: NonNull<T>,
    /// The secret's start, if it is sealed (to seal it again on drop).
    sealed_at: Option<NonNull<u8>>,
    _borrow: PhantomData<&'a T>,
}

/// Read and write access to a secret, while it lasts. A sealed secret's
/// pages are read-write while the guard is alive.
pub struct ExposedMut<'a, T: ?Sized> {
    ptr: NonNull<T>,
    sealed_at: Option<NonNull<u8>>,
    _borrow: PhantomData<&'a mut T>,
}

impl<'a, T: ?Sized> Exposed<'a, T> {
    /// Unseals (if `sealed_at`) and wraps `ptr`.
    ///
    /// # Safety
    /// `ptr` is a valid `T` for `'a` once unsealed, in the secret starting
    /// at `sealed_at` (if any; a live sealed secret), and nothing writes
    /// it during `'a`.
    pub(crate) unsafe fn new(
        ptr: NonNull<T>,
        sealed_at: Option<NonNull<u8>>,
    ) -> Result<Self, SecretError> {
        if let Some(p) = sealed_at {
            // SAFETY: the caller's contract.
            unsafe { pool::unseal(p, false)? };
        }
        Ok(Exposed {
            ptr,
            sealed_at,
            _borrow: PhantomData,
        })
    }
}

impl<'a, T: ?Sized> ExposedMut<'a, T> {
    /// As `Exposed::new`, with exclusive access during `'a`.
    ///
    /// # Safety
    /// As `Exposed::new`, and nothing else reads or writes `ptr` during
    /// `'a`.
    pub(crate) unsafe fn new(
        ptr: NonNull<T>,
        sealed_at: Option<NonNull<u8>>,
    ) -> Result<Self, SecretError> {
        if let Some(p) = sealed_at {
            // SAFETY: the caller's contract.
            unsafe { pool::unseal(p, true)? };
        }
        Ok(ExposedMut {
            ptr,
            sealed_at,
            _borrow: PhantomData,
        })
    }
}

impl<T: ?Sized> Deref for Exposed<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: valid and unsealed while the guard lives (`new`).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized> Deref for ExposedMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: valid and unsealed while the guard lives (`new`).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for ExposedMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: valid, unsealed and exclusive while the guard lives.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized> Drop for Exposed<'_, T> {
    fn drop(&mut self) {
        if let Some(p) = self.sealed_at {
            // SAFETY: our exposure began in `new`; the references `deref`
            // handed out cannot outlive the guard.
            unsafe { pool::reseal(p) };
        }
    }
}

impl<T: ?Sized> Drop for ExposedMut<'_, T> {
    fn drop(&mut self) {
        if let Some(p) = self.sealed_at {
            // SAFETY: as for `Exposed`.
            unsafe { pool::reseal(p) };
        }
    }
}

impl<T: ?Sized> fmt::Debug for Exposed<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Exposed<[REDACTED]>")
    }
}

impl<T: ?Sized> fmt::Debug for ExposedMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExposedMut<[REDACTED]>")
    }
}

// SAFETY: a guard is a `&T` plus the right to reseal, which any thread may
// do (the exposure count is under a lock).
unsafe impl<T: ?Sized + Sync> Send for Exposed<'_, T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Sync> Sync for Exposed<'_, T> {}
// SAFETY: a guard is a `&mut T` plus the right to reseal.
unsafe impl<T: ?Sized + Send> Send for ExposedMut<'_, T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Sync> Sync for ExposedMut<'_, T> {}

/// One fixed-size secret in a [`SecretPool`]: locked, undumped, guarded,
/// wiped on drop, never printed.
///
/// `T: Copy` because wiping a secret means zeroing its bytes: a type that
/// owns other memory (a `String`) would leave that memory behind. Build
/// one in place with [`SecretBox::new_with`] (no copy of the secret on the
/// stack) for [`Zeroable`] types, or move a value in with
/// [`SecretBox::new`] (the caller's copy is the caller's to wipe) or
/// [`SecretBox::from_mut`] (which wipes it).
pub struct SecretBox<T: Copy> {
    ptr: NonNull<T>,
    pool: SecretPool,
    /// The secret has (sealed) pages of its own.
    own_pages: bool,
    _owns: PhantomData<T>,
}

// SAFETY: the box owns its `T` (in pool memory) like `Box<T>`; the pool
// handle is `Send` and `Sync`.
unsafe impl<T: Copy + Send> Send for SecretBox<T> {}
// SAFETY: as above; `&SecretBox<T>` gives out only `&T`.
unsafe impl<T: Copy + Sync> Sync for SecretBox<T> {}

impl<T: Zeroable> SecretBox<T> {
    /// An all-zero secret in the global pool.
    pub fn zeroed() -> Result<Self, SecretError> {
        Self::zeroed_in(SecretPool::global())
    }

    /// An all-zero secret in `pool`.
    pub fn zeroed_in(pool: &SecretPool) -> Result<Self, SecretError> {
        // SAFETY: pool memory reads as zero, a valid `T`.
        unsafe { Self::alloc_in(pool) }
    }

    /// A secret in the global pool, initialised in place by `init` (which
    /// gets it zeroed). If `init` panics the secret is wiped and freed.
    pub fn new_with(init: impl FnOnce(&mut T)) -> Result<Self, SecretError> {
        Self::new_with_in(SecretPool::global(), init)
    }

    /// As `new_with`, in `pool`.
    pub fn new_with_in(pool: &SecretPool, init: impl FnOnce(&mut T)) -> Result<Self, SecretError> {
        let mut b = Self::zeroed_in(pool)?;
        init(&mut *b.try_expose_mut()?);
        Ok(b)
    }

    /// Moves `*src` into a new secret in the global pool and wipes `*src`
    /// (to zero) with volatile stores.
    pub fn from_mut(src: &mut T) -> Result<Self, SecretError> {
        Self::from_mut_in(src, SecretPool::global())
    }

    /// As `from_mut`, in `pool`.
    ///
    /// The bytes go straight from `*src` to pool memory (no `T` is ever
    /// made on the stack in between); `*src` is wiped once they are there.
    /// If the pool cannot allocate, `*src` is left as it was (the caller
    /// still has its secret, and the error).
    pub fn from_mut_in(src: &mut T, pool: &SecretPool) -> Result<Self, SecretError> {
        // SAFETY: filled from `*src` below before it is handed out.
        let b = unsafe { Self::alloc_in(pool)? };
        let src = (src as *mut T).cast::<u8>();
        // SAFETY: the allocation is ours, sized for `T` and distinct from
        // `*src`; while the exposure (typed as bytes) lasts it is writable.
        // `src` is a valid, exclusive `T`, and all-zero is a valid `T`.
        unsafe {
            let g = ExposedMut::new(b.ptr.cast::<u8>(), b.sealed_at())?;
            ptr::copy_nonoverlapping(src, b.ptr.as_ptr().cast::<u8>(), size_of::<T>());
            drop(g);
            pool::wipe(src, size_of::<T>());
        }
        Ok(b)
    }
}

impl<T: Copy> SecretBox<T> {
    /// A secret in the global pool holding `value`. The caller's copy of
    /// `value` (on its stack) is not wiped: prefer `new_with`.
    pub fn new(value: T) -> Result<Self, SecretError> {
        Self::new_in(value, SecretPool::global())
    }

    /// As `new`, in `pool`.
    pub fn new_in(value: T, pool: &SecretPool) -> Result<Self, SecretError> {
        // SAFETY: the bytes are overwritten with a valid `T` below, before
        // anyone can read them as one (the box is not handed out before).
        let b = unsafe { Self::alloc_in(pool)? };
        // SAFETY: the allocation is ours, sized and aligned for `T`; while
        // the exposure lasts it is writable. No `&T` to it exists yet.
        unsafe {
            let _g = ExposedMut::new(b.ptr.cast::<u8>(), b.sealed_at())?;
            b.ptr.as_ptr().write(value);
        }
        Ok(b)
    }

    /// Allocates a secret for `T` (zero bytes).
    ///
    /// # Safety
    /// The box holds zero bytes: until they are a valid `T`, it must not be
    /// exposed (nor handed out).
    unsafe fn alloc_in(pool: &SecretPool) -> Result<Self, SecretError> {
        let own_pages = pool.is_sealed();
        let ptr = if size_of::<T>() == 0 {
            NonNull::dangling()
        } else {
            pool.inner()
                .alloc(size_of::<T>(), align_of::<T>(), own_pages, own_pages)?
                .cast()
        };
        Ok(SecretBox {
            ptr,
            pool: pool.clone(),
            own_pages,
            _owns: PhantomData,
        })
    }

    fn sealed_at(&self) -> Option<NonNull<u8>> {
        (self.own_pages && size_of::<T>() != 0).then(|| self.ptr.cast())
    }

    /// True if the secret was inherited through `fork`: not this
    /// process's memory to read or write (see [`SecretError::Inherited`]).
    fn inherited(&self) -> bool {
        // SAFETY: a sized secret is our live allocation, made with these
        // arguments.
        size_of::<T>() != 0
            && unsafe {
                self.pool.inner().inherited(
                    self.ptr.cast(),
                    size_of::<T>(),
                    align_of::<T>(),
                    self.own_pages,
                )
            }
    }

    /// Read access while the guard lives.
    ///
    /// # Panics
    /// If a sealed secret cannot be unsealed (`mprotect` failed); see
    /// `try_expose`.
    pub fn expose(&self) -> Exposed<'_, T> {
        match self.try_expose() {
            Ok(g) => g,
            Err(e) => panic!("cannot expose a sealed secret: {e}"),
        }
    }

    /// Read access while the guard lives, or why the secret could not be
    /// unsealed.
    pub fn try_expose(&self) -> Result<Exposed<'_, T>, SecretError> {
        // SAFETY: the box holds a valid `T` for as long as it is borrowed;
        // `&self` excludes writers.
        unsafe { Exposed::new(self.ptr, self.sealed_at()) }
    }

    /// Read and write access while the guard lives.
    ///
    /// # Panics
    /// As `expose`.
    pub fn expose_mut(&mut self) -> ExposedMut<'_, T> {
        match self.try_expose_mut() {
            Ok(g) => g,
            Err(e) => panic!("cannot expose a sealed secret: {e}"),
        }
    }

    /// As `expose_mut`, or why the secret could not be unsealed.
    pub fn try_expose_mut(&mut self) -> Result<ExposedMut<'_, T>, SecretError> {
        // SAFETY: as `try_expose`; `&mut self` makes the access exclusive.
        unsafe { ExposedMut::new(self.ptr, self.sealed_at()) }
    }

    /// A second secret with the same value, in the same pool, copied pool
    /// memory to pool memory.
    pub fn try_clone(&self) -> Result<Self, SecretError> {
        if self.inherited() {
            return Err(SecretError::Inherited);
        }
        // SAFETY: filled with a valid `T` below before it is handed out.
        let b = unsafe { Self::alloc_in(&self.pool)? };
        // SAFETY: two distinct live allocations of one `T` each, readable
        // and writable while the guards (raw, typed as bytes so no `&T` to
        // the fresh zeros is made) are alive.
        unsafe {
            let src = Exposed::new(self.ptr.cast::<u8>(), self.sealed_at())?;
            let dst = ExposedMut::new(b.ptr.cast::<u8>(), b.sealed_at())?;
            ptr::copy_nonoverlapping(self.ptr.as_ptr(), b.ptr.as_ptr(), 1);
            drop(dst);
            drop(src);
        }
        Ok(b)
    }

    /// The pool holding the secret.
    pub fn pool(&self) -> &SecretPool {
        &self.pool
    }

    /// True if the secret is sealed (`PROT_NONE`) while not exposed.
    pub fn is_sealed(&self) -> bool {
        self.sealed_at().is_some()
    }
}

impl<T: Copy> Drop for SecretBox<T> {
    fn drop(&mut self) {
        if size_of::<T>() != 0 {
            // SAFETY: our live allocation, made with these arguments; no
            // guard is alive (they borrow the box).
            unsafe {
                self.pool.inner().free(
                    self.ptr.cast(),
                    size_of::<T>(),
                    align_of::<T>(),
                    self.own_pages,
                )
            };
        }
    }
}

impl<T: Copy> fmt::Debug for SecretBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox<[REDACTED]>")
    }
}
