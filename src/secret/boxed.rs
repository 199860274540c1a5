//! `SecretBox<T>`: one fixed-size secret; the exposure guards, and the
//! `ExposeSecret` traits every secret type implements.

use super::pool;
use super::sys;
use super::wipe::{self, Wipe};
use super::{SecretError, SecretPool};
use core::fmt;
use core::marker::PhantomData;
use core::mem::{MaybeUninit, align_of, needs_drop, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};

/// Types for which all-zero bytes are a valid value, so a secret of them
/// can be handed to an initialiser in place (`SecretBox::new_with`) and
/// wiped back to a valid value. Every `Zeroable` type is [`Wipe`] (its
/// bytes are zeroed).
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

/// Access to a secret through exposure guards, implemented by every secret
/// type ([`SecretBox`], [`SecretVec`](super::SecretVec),
/// [`SecretString`](super::SecretString)), so generic code can take "any
/// secret":
///
/// ```
/// use mapalloc::secret::{ExposeSecret, SecretBox, SecretString};
///
/// fn fingerprint<S: ExposeSecret>(s: &S) -> u8
/// where
///     S::Secret: AsRef<[u8]>,
/// {
///     s.expose_secret().as_ref().iter().fold(0, |a, b| a ^ b)
/// }
///
/// let key = SecretBox::<[u8; 4]>::new_with(|k| *k = [1, 2, 4, 8])?;
/// let pass = SecretString::try_from_str("pq")?;
/// assert_eq!(fingerprint(&key), 15);
/// assert_eq!(fingerprint(&pass), b'p' ^ b'q');
/// # Ok::<(), mapalloc::secret::SecretError>(())
/// ```
pub trait ExposeSecret {
    /// What the guard dereferences to (`T`, `[T]`, `str`).
    type Secret: ?Sized;

    /// Read access while the guard lives, or why not: a sealed secret that
    /// could not be unsealed, or one inherited through `fork`.
    fn try_expose_secret(&self) -> Result<Exposed<'_, Self::Secret>, SecretError>;

    /// Read access while the guard lives.
    ///
    /// # Panics
    /// Where `try_expose_secret` returns an error.
    fn expose_secret(&self) -> Exposed<'_, Self::Secret> {
        match self.try_expose_secret() {
            Ok(g) => g,
            Err(e) => panic!("cannot expose a secret: {e}"),
        }
    }
}

/// Read and write access to a secret through a guard ([`SecretBox`],
/// [`SecretVec`](super::SecretVec)).
pub trait ExposeSecretMut: ExposeSecret {
    /// Read and write access while the guard lives, or why not.
    fn try_expose_secret_mut(&mut self) -> Result<ExposedMut<'_, Self::Secret>, SecretError>;

    /// Read and write access while the guard lives.
    ///
    /// # Panics
    /// Where `try_expose_secret_mut` returns an error.
    fn expose_secret_mut(&mut self) -> ExposedMut<'_, Self::Secret> {
        match self.try_expose_secret_mut() {
            Ok(g) => g,
            Err(e) => panic!("cannot expose a secret: {e}"),
        }
    }
}

/// One fixed-size secret in a [`SecretPool`]: locked, undumped, guarded,
/// wiped on drop, never printed.
///
/// `T: Wipe` so that dropping the secret leaves nothing behind: the box
/// calls `T::wipe`, then `T`'s own drop, then the pool zeroes the bytes.
/// Plain data ([`Zeroable`]: byte arrays, numbers) is wiped by zeroing; a
/// struct of several key buffers implements [`Wipe`] field by field (a
/// `String` inside would leave its heap buffer behind: use a
/// [`SecretVec`](super::SecretVec) field instead).
///
/// Build one in place with [`SecretBox::new_with`] or
/// [`SecretBox::try_new_with`] (no copy of the secret on the stack), fill
/// it from the kernel's random source with [`SecretBox::random`], or move a
/// value in with [`SecretBox::new`] (the caller's copy is the caller's to
/// wipe) or [`SecretBox::from_mut`] (which wipes it).
pub struct SecretBox<T: Wipe> {
    ptr: NonNull<T>,
    pool: SecretPool,
    /// The secret has (sealed) pages of its own.
    own_pages: bool,
    _owns: PhantomData<T>,
}

// SAFETY: the box owns its `T` (in pool memory) like `Box<T>`; the pool
// handle is `Send` and `Sync`.
unsafe impl<T: Wipe + Send> Send for SecretBox<T> {}
// SAFETY: as above; `&SecretBox<T>` gives out only `&T`.
unsafe impl<T: Wipe + Sync> Sync for SecretBox<T> {}

impl<T: Zeroable> SecretBox<T> {
    /// An all-zero secret in the global pool.
    pub fn zeroed() -> Result<Self, SecretError> {
        Self::zeroed_in(SecretPool::global())
    }

    /// An all-zero secret in `pool`.
    pub fn zeroed_in(pool: &SecretPool) -> Result<Self, SecretError> {
        // SAFETY: pool memory reads as zero (free blocks are checked to),
        // a valid `T`.
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

    /// A secret in the global pool, initialised in place by a fallible
    /// `init` (a key derivation that can fail): if `init` returns an error
    /// (or panics), the secret is wiped and freed and the error returned,
    /// so a failed derivation leaves nothing behind. Pool errors reach the
    /// caller as `E` (`From<SecretError>`; `SecretError` itself and
    /// `Box<dyn Error>` qualify).
    ///
    /// ```
    /// use mapalloc::secret::{SecretBox, SecretError};
    ///
    /// let r = SecretBox::<[u8; 32]>::try_new_with(|k| {
    ///     k[..4].copy_from_slice(b"half");
    ///     Err(SecretError::CapacityOverflow) // the derivation failed
    /// });
    /// assert!(r.is_err()); // and the half-written key is wiped
    /// ```
    pub fn try_new_with<E: From<SecretError>>(
        init: impl FnOnce(&mut T) -> Result<(), E>,
    ) -> Result<Self, E> {
        Self::try_new_with_in(SecretPool::global(), init)
    }

    /// As `try_new_with`, in `pool`.
    pub fn try_new_with_in<E: From<SecretError>>(
        pool: &SecretPool,
        init: impl FnOnce(&mut T) -> Result<(), E>,
    ) -> Result<Self, E> {
        let mut b = Self::zeroed_in(pool)?;
        init(&mut *b.try_expose_mut()?)?;
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

impl<const N: usize> SecretBox<[u8; N]> {
    /// `N` bytes from the kernel's random source (`getrandom(2)`), written
    /// straight into the secret's locked memory, in the global pool. An
    /// error ([`SecretError::Random`]) leaves nothing behind.
    pub fn random() -> Result<Self, SecretError> {
        Self::random_in(SecretPool::global())
    }

    /// As `random`, in `pool`.
    pub fn random_in(pool: &SecretPool) -> Result<Self, SecretError> {
        Self::try_new_with_in(pool, |k: &mut [u8; N]| {
            // SAFETY: `k` is an exclusive, writable `[u8; N]`.
            unsafe { sys::fill_random(k.as_mut_ptr(), N) }
                .map_err(|errno| SecretError::Random { errno })
        })
    }

    /// Compares the secret with `other` in constant time (see
    /// [`ct_eq`](super::ct_eq)).
    ///
    /// # Panics
    /// As `expose`.
    pub fn ct_eq<B: AsRef<[u8]> + ?Sized>(&self, other: &B) -> bool {
        wipe::ct_eq(&self.expose()[..], other.as_ref())
    }
}

impl<T: Wipe> SecretBox<T> {
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
        let opened = unsafe { ExposedMut::new(b.ptr.cast::<u8>(), b.sealed_at()) };
        match opened {
            Ok(g) => {
                // SAFETY: as above.
                unsafe { b.ptr.as_ptr().write(value) };
                drop(g);
                Ok(b)
            }
            Err(e) => {
                // The zero bytes are not a `T`: free them without dropping
                // one (`value` is dropped here, normally).
                b.free_raw();
                Err(e)
            }
        }
    }

    /// Allocates a secret for `T` (zero bytes).
    ///
    /// # Safety
    /// The box holds zero bytes: until they are a valid `T`, it must not be
    /// exposed, handed out or dropped other than by `free_raw` (unless
    /// zeros are a valid `T`).
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

    /// Gives the memory back without treating it as a `T` (the pool
    /// still wipes it).
    fn free_raw(self) {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: our live allocation, made with these arguments, freed
        // once (the box is not dropped); the pool handle is moved out once.
        unsafe {
            this.free_memory();
            drop(ptr::read(&this.pool));
        }
    }

    /// # Safety
    /// Frees the secret's memory: called once, with no guard alive, and
    /// the `T` in it (if any) already dropped or never made.
    unsafe fn free_memory(&self) {
        if size_of::<T>() != 0 {
            // SAFETY: the caller's contract; the arguments are the ones the
            // allocation was made with.
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
    /// If a sealed secret cannot be unsealed (`mprotect` failed), or the
    /// secret was inherited through `fork`; see `try_expose`.
    pub fn expose(&self) -> Exposed<'_, T> {
        match self.try_expose() {
            Ok(g) => g,
            Err(e) => panic!("cannot expose a secret: {e}"),
        }
    }

    /// Read access while the guard lives, or why the secret could not be
    /// unsealed ([`SecretError::Protect`]) or is not this process's
    /// ([`SecretError::Inherited`]: a forked child can only drop what it
    /// inherited).
    pub fn try_expose(&self) -> Result<Exposed<'_, T>, SecretError> {
        if self.inherited() {
            return Err(SecretError::Inherited);
        }
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
            Err(e) => panic!("cannot expose a secret: {e}"),
        }
    }

    /// As `expose_mut`, or why the secret could not be exposed.
    pub fn try_expose_mut(&mut self) -> Result<ExposedMut<'_, T>, SecretError> {
        if self.inherited() {
            return Err(SecretError::Inherited);
        }
        // SAFETY: as `try_expose`; `&mut self` makes the access exclusive.
        unsafe { ExposedMut::new(self.ptr, self.sealed_at()) }
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

impl<T: Wipe + Copy> SecretBox<T> {
    /// A second secret with the same value, in the same pool, copied pool
    /// memory to pool memory.
    pub fn try_clone(&self) -> Result<Self, SecretError> {
        if self.inherited() {
            return Err(SecretError::Inherited);
        }
        // SAFETY: filled with a valid `T` below before it is handed out
        // (on an error it is freed raw).
        let b = unsafe { Self::alloc_in(&self.pool)? };
        // SAFETY: two distinct live allocations of one `T` each, readable
        // and writable while the guards (raw, typed as bytes so no `&T` to
        // the fresh zeros is made) are alive.
        let copied = unsafe {
            Exposed::new(self.ptr.cast::<u8>(), self.sealed_at()).and_then(|src| {
                ExposedMut::new(b.ptr.cast::<u8>(), b.sealed_at()).map(|dst| {
                    ptr::copy_nonoverlapping(self.ptr.as_ptr(), b.ptr.as_ptr(), 1);
                    drop(dst);
                    drop(src);
                })
            })
        };
        match copied {
            Ok(()) => Ok(b),
            Err(e) => {
                b.free_raw();
                Err(e)
            }
        }
    }
}

impl<T: Wipe> Drop for SecretBox<T> {
    fn drop(&mut self) {
        /// Frees the memory even if `T::wipe` or `T`'s drop panics.
        struct Free<'a, T: Wipe>(&'a SecretBox<T>);
        impl<T: Wipe> Drop for Free<'_, T> {
            fn drop(&mut self) {
                // SAFETY: the box is being dropped: no guard is alive, and
                // the `T` has been dropped (or is forgotten).
                unsafe { self.0.free_memory() };
            }
        }
        let ptr = self.ptr.as_ptr();
        let free = Free(self);
        // An inherited secret is not this process's: its `T` is forgotten
        // (its bytes are zeros or not mapped), only the memory goes back.
        if free.0.inherited() {
            return;
        }
        // A sealed secret is opened (and left open: it is freed next); if
        // that fails its `T` is forgotten unwiped, and the pool unmaps the
        // pages (an owned `SecretVec` field's buffer then stays in the pool
        // until the pool goes away).
        let open = match free.0.sealed_at() {
            // SAFETY: a live sealed secret of this process; no guard is
            // alive (guards borrow the box), so this exposure is the only
            // one.
            Some(p) => unsafe { pool::unseal(p, true) }.is_ok(),
            None => true,
        };
        if open {
            // SAFETY: a valid, exclusive `T`, dropped exactly once here.
            unsafe {
                (*ptr).wipe();
                if needs_drop::<T>() {
                    ptr::drop_in_place(ptr);
                }
            }
        }
    }
}

impl<T: Wipe> Wipe for SecretBox<T> {
    /// Wipes the secret in place (`T::wipe`); the box stays usable. If a
    /// sealed secret cannot be unsealed, or was inherited through `fork`,
    /// nothing is written (it is wiped when it drops).
    fn wipe(&mut self) {
        if let Ok(mut g) = self.try_expose_mut() {
            T::wipe(&mut g);
        }
    }
}

impl<T: Wipe> ExposeSecret for SecretBox<T> {
    type Secret = T;

    fn try_expose_secret(&self) -> Result<Exposed<'_, T>, SecretError> {
        self.try_expose()
    }
}

impl<T: Wipe> ExposeSecretMut for SecretBox<T> {
    fn try_expose_secret_mut(&mut self) -> Result<ExposedMut<'_, T>, SecretError> {
        self.try_expose_mut()
    }
}

impl<T: Wipe> fmt::Debug for SecretBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox<[REDACTED]>")
    }
}
