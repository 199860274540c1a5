//! `SecretVec<T>` and `SecretString`: variable-size secrets.

use super::boxed::{ExposeSecret, ExposeSecretMut, Exposed, ExposedMut, Zeroable};
use super::pool;
use super::sys;
use super::wipe::{self, Wipe};
use super::{SecretError, SecretPool};
use core::fmt;
use core::mem::{align_of, size_of};
use core::ptr::{self, NonNull};

/// A growable secret array (bytes by default) in a [`SecretPool`]. Growing
/// moves the elements to a new secret and wipes the old one; shrinking
/// (`truncate`, `clear`) wipes the elements removed; dropping wipes all.
/// There is no infallible `push`: every allocation returns a
/// [`SecretError`] instead of aborting.
pub struct SecretVec<T: Copy = u8> {
    ptr: NonNull<T>,
    len: usize,
    /// Elements allocated; 0 (and a dangling `ptr`) before the first.
    cap: usize,
    /// Elements from here to `cap` read zero. `len <= clean_from`, equal
    /// except after a `truncate` that could not unseal the buffer to wipe
    /// what it removed: those bytes are wiped by the next call that can
    /// (and the buffer is wiped whole when freed).
    clean_from: usize,
    pool: SecretPool,
    own_pages: bool,
}

// SAFETY: the vector owns its elements (in pool memory) like `Vec<T>`.
unsafe impl<T: Copy + Send> Send for SecretVec<T> {}
// SAFETY: `&SecretVec<T>` gives out only `&[T]`.
unsafe impl<T: Copy + Sync> Sync for SecretVec<T> {}

impl<T: Copy> Default for SecretVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy> SecretVec<T> {
    /// An empty vector of the global pool (allocates nothing).
    pub fn new() -> Self {
        Self::new_in(SecretPool::global())
    }

    /// An empty vector of `pool` (allocates nothing).
    pub fn new_in(pool: &SecretPool) -> Self {
        SecretVec {
            ptr: NonNull::dangling(),
            len: 0,
            cap: if size_of::<T>() == 0 { usize::MAX } else { 0 },
            clean_from: 0,
            pool: pool.clone(),
            own_pages: pool.is_sealed(),
        }
    }

    /// An empty vector of the global pool with room for `cap` elements.
    pub fn with_capacity(cap: usize) -> Result<Self, SecretError> {
        Self::with_capacity_in(cap, SecretPool::global())
    }

    /// As `with_capacity`, in `pool`.
    pub fn with_capacity_in(cap: usize, pool: &SecretPool) -> Result<Self, SecretError> {
        let mut v = Self::new_in(pool);
        v.try_reserve_exact(cap)?;
        Ok(v)
    }

    /// A copy of `items` in the global pool.
    pub fn from_slice(items: &[T]) -> Result<Self, SecretError> {
        Self::from_slice_in(items, SecretPool::global())
    }

    /// As `from_slice`, in `pool`.
    pub fn from_slice_in(items: &[T], pool: &SecretPool) -> Result<Self, SecretError> {
        let mut v = Self::with_capacity_in(items.len(), pool)?;
        v.try_extend_from_slice(items)?;
        Ok(v)
    }

    /// Moves the elements of `src` into the global pool, then wipes the
    /// *whole* heap buffer of `src` (its spare capacity too, where earlier
    /// contents may linger) with volatile stores and frees it. The source
    /// is wiped whether or not the copy succeeded: it was moved in, so on
    /// an error nothing of it is left either.
    pub fn from_vec(src: Vec<T>) -> Result<Self, SecretError> {
        Self::from_vec_in(src, SecretPool::global())
    }

    /// As `from_vec`, in `pool`.
    pub fn from_vec_in(src: Vec<T>, pool: &SecretPool) -> Result<Self, SecretError> {
        let r = Self::from_slice_in(&src, pool);
        wipe::wipe_vec(src);
        r
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The pool holding the elements.
    pub fn pool(&self) -> &SecretPool {
        &self.pool
    }

    /// True if the elements are sealed (`PROT_NONE`) while not exposed.
    pub fn is_sealed(&self) -> bool {
        self.sealed_at().is_some()
    }

    fn sealed_at(&self) -> Option<NonNull<u8>> {
        (self.own_pages && self.bytes(self.cap) != 0).then(|| self.ptr.cast())
    }

    fn bytes(&self, n: usize) -> usize {
        // Never overflows for an allocated capacity (checked on reserve).
        n.wrapping_mul(size_of::<T>())
    }

    /// True if the buffer was inherited through `fork`: not this
    /// process's memory to read or write (see [`SecretError::Inherited`]).
    fn inherited(&self) -> bool {
        let bytes = self.bytes(self.cap);
        // SAFETY: a non-empty buffer is our live allocation, made with
        // these arguments.
        bytes != 0
            && unsafe {
                self.pool
                    .inner()
                    .inherited(self.ptr.cast(), bytes, align_of::<T>(), self.own_pages)
            }
    }

    /// Room for at least `additional` more elements (amortised growth).
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), SecretError> {
        let need = self
            .len
            .checked_add(additional)
            .ok_or(SecretError::CapacityOverflow)?;
        if need <= self.cap {
            return Ok(());
        }
        self.grow_to(need.max(self.cap.saturating_mul(2)).max(4))
    }

    /// Room for exactly `additional` more elements.
    pub fn try_reserve_exact(&mut self, additional: usize) -> Result<(), SecretError> {
        let need = self
            .len
            .checked_add(additional)
            .ok_or(SecretError::CapacityOverflow)?;
        if need <= self.cap {
            return Ok(());
        }
        self.grow_to(need)
    }

    /// Moves the elements to a new secret of `cap` elements and wipes the
    /// old one.
    fn grow_to(&mut self, cap: usize) -> Result<(), SecretError> {
        if self.inherited() {
            return Err(SecretError::Inherited);
        }
        let bytes = cap
            .checked_mul(size_of::<T>())
            .ok_or(SecretError::CapacityOverflow)?;
        if bytes > isize::MAX as usize {
            return Err(SecretError::CapacityOverflow);
        }
        let new = self
            .pool
            .inner()
            .alloc(bytes, align_of::<T>(), self.own_pages, self.own_pages)?
            .cast::<T>();
        let new_sealed = self.own_pages.then(|| new.cast::<u8>());
        if self.len > 0 {
            // SAFETY: both are live allocations of ours, the old one holding
            // `len` elements and the new one room for `cap >= len`;
            // exposures (typed as bytes) keep them accessible meanwhile.
            let copied = unsafe {
                Exposed::new(self.ptr.cast::<u8>(), self.sealed_at()).and_then(|src| {
                    ExposedMut::new(new.cast::<u8>(), new_sealed).map(|dst| {
                        ptr::copy_nonoverlapping(self.ptr.as_ptr(), new.as_ptr(), self.len);
                        drop(dst);
                        drop(src);
                    })
                })
            };
            if let Err(e) = copied {
                // SAFETY: the new allocation, unused.
                unsafe {
                    self.pool
                        .inner()
                        .free(new.cast(), bytes, align_of::<T>(), self.own_pages)
                };
                return Err(e);
            }
        }
        self.free_buffer();
        self.ptr = new;
        self.cap = cap;
        // Fresh memory past the elements copied.
        self.clean_from = self.len;
        Ok(())
    }

    /// Wipes and frees the buffer (not `len`).
    fn free_buffer(&mut self) {
        let bytes = self.bytes(self.cap);
        if bytes != 0 {
            // SAFETY: our live allocation of `bytes`, with these arguments;
            // no guard is alive (guards borrow the vector).
            unsafe {
                self.pool
                    .inner()
                    .free(self.ptr.cast(), bytes, align_of::<T>(), self.own_pages)
            };
        }
    }

    /// Appends `value`.
    pub fn try_push(&mut self, value: T) -> Result<(), SecretError> {
        self.try_extend_from_slice(core::slice::from_ref(&value))
    }

    /// Appends a copy of `items`.
    pub fn try_extend_from_slice(&mut self, items: &[T]) -> Result<(), SecretError> {
        if items.is_empty() {
            return Ok(());
        }
        if self.inherited() {
            return Err(SecretError::Inherited);
        }
        self.try_reserve(items.len())?;
        // SAFETY: room for `items.len()` more elements after `len`; the
        // exposure keeps the pages writable; `items` cannot overlap our
        // buffer (no `&[T]` into it outlives a guard borrowing `self`).
        unsafe {
            let _g = ExposedMut::new(self.ptr.cast::<u8>(), self.sealed_at())?;
            ptr::copy_nonoverlapping(items.as_ptr(), self.ptr.as_ptr().add(self.len), items.len());
        }
        self.len += items.len();
        self.clean_from = self.clean_from.max(self.len);
        Ok(())
    }

    /// Wipes elements `from..clean_from` (unsealing a sealed buffer for
    /// it) and marks everything from `from` on clean.
    fn wipe_from(&mut self, from: usize) -> Result<(), SecretError> {
        if from >= self.clean_from {
            return Ok(());
        }
        // SAFETY: elements `from..clean_from` lie in our buffer and no
        // reference into it is alive (`&mut self`); the exposure keeps
        // them writable while they are wiped.
        unsafe {
            let _g = ExposedMut::new(self.ptr.cast::<u8>(), self.sealed_at())?;
            pool::wipe(
                self.ptr.as_ptr().add(from).cast(),
                self.bytes(self.clean_from - from),
            );
        }
        self.clean_from = from;
        Ok(())
    }

    /// Shortens to `len` elements, wiping the rest now.
    ///
    /// If a sealed buffer cannot be unsealed to be wiped (`mprotect`
    /// refused), the elements removed stay in its (`PROT_NONE`) pages,
    /// out of reach of the API, until the next call that can unseal it
    /// wipes them: a later `truncate`, a `try_resize_zeroed` (which returns
    /// the error rather than hand them back as zeros) or the drop. (A
    /// buffer inherited through `fork` has nothing of this process's to
    /// wipe.)
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        self.len = len;
        if !self.inherited() {
            let _ = self.wipe_from(len);
        }
    }

    /// Removes (and wipes) every element; keeps the capacity.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Read access to the elements while the guard lives.
    ///
    /// # Panics
    /// If a sealed secret cannot be unsealed, or the secret was inherited
    /// through `fork`; see `try_expose`.
    pub fn expose(&self) -> Exposed<'_, [T]> {
        match self.try_expose() {
            Ok(g) => g,
            Err(e) => panic!("cannot expose a secret: {e}"),
        }
    }

    /// Read access, or why the secret could not be unsealed
    /// ([`SecretError::Protect`]) or is not this process's
    /// ([`SecretError::Inherited`]).
    pub fn try_expose(&self) -> Result<Exposed<'_, [T]>, SecretError> {
        if self.inherited() {
            return Err(SecretError::Inherited);
        }
        // SAFETY: `len` initialised elements; `&self` excludes writers.
        unsafe { Exposed::new(self.slice_ptr(), self.sealed_at()) }
    }

    /// Read and write access to the elements while the guard lives.
    ///
    /// # Panics
    /// As `expose`.
    pub fn expose_mut(&mut self) -> ExposedMut<'_, [T]> {
        match self.try_expose_mut() {
            Ok(g) => g,
            Err(e) => panic!("cannot expose a secret: {e}"),
        }
    }

    /// As `expose_mut`, or why the secret could not be exposed.
    pub fn try_expose_mut(&mut self) -> Result<ExposedMut<'_, [T]>, SecretError> {
        if self.inherited() {
            return Err(SecretError::Inherited);
        }
        // SAFETY: as `try_expose`; `&mut self` makes it exclusive.
        unsafe { ExposedMut::new(self.slice_ptr(), self.sealed_at()) }
    }

    fn slice_ptr(&self) -> NonNull<[T]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

impl<T: Zeroable> SecretVec<T> {
    /// `len` zero elements in the global pool.
    pub fn zeroed(len: usize) -> Result<Self, SecretError> {
        Self::zeroed_in(len, SecretPool::global())
    }

    /// `len` zero elements in `pool`.
    pub fn zeroed_in(len: usize, pool: &SecretPool) -> Result<Self, SecretError> {
        let mut v = Self::with_capacity_in(len, pool)?;
        // Pool memory reads as zero, a valid `T`.
        v.len = len;
        v.clean_from = len;
        Ok(v)
    }

    /// Grows (with zeros) or shrinks (wiping) to `len` elements. Growing
    /// over elements an earlier `truncate` could not wipe wipes them first,
    /// or returns that error (the vector unchanged).
    pub fn try_resize_zeroed(&mut self, len: usize) -> Result<(), SecretError> {
        if len <= self.len {
            self.truncate(len);
            return Ok(());
        }
        if self.inherited() {
            return Err(SecretError::Inherited);
        }
        self.try_reserve(len - self.len)?;
        self.wipe_from(self.len)?;
        // Elements from `clean_from == self.len` on are zero.
        self.len = len;
        self.clean_from = len;
        Ok(())
    }
}

impl SecretVec<u8> {
    /// `len` bytes from the kernel's random source (`getrandom(2)`),
    /// written straight into locked memory of the global pool. An error
    /// ([`SecretError::Random`]) leaves nothing behind.
    pub fn random(len: usize) -> Result<Self, SecretError> {
        Self::random_in(len, SecretPool::global())
    }

    /// As `random`, in `pool`.
    pub fn random_in(len: usize, pool: &SecretPool) -> Result<Self, SecretError> {
        let mut v = Self::zeroed_in(len, pool)?;
        {
            let mut g = v.try_expose_mut()?;
            // SAFETY: the guard's `len` bytes are exclusive and writable.
            unsafe { sys::fill_random(g.as_mut_ptr(), len) }
                .map_err(|errno| SecretError::Random { errno })?;
        }
        Ok(v)
    }

    /// Compares the bytes with `other` in constant time (see
    /// [`ct_eq`](super::ct_eq)).
    ///
    /// # Panics
    /// As `expose`.
    pub fn ct_eq<B: AsRef<[u8]> + ?Sized>(&self, other: &B) -> bool {
        wipe::ct_eq(&self.expose(), other.as_ref())
    }
}

impl<T: Copy> Drop for SecretVec<T> {
    fn drop(&mut self) {
        self.free_buffer();
    }
}

impl<T: Copy> Wipe for SecretVec<T> {
    /// Wipes every element and empties the vector (`clear`); the capacity
    /// stays, zeroed.
    fn wipe(&mut self) {
        self.clear();
    }
}

impl<T: Copy> ExposeSecret for SecretVec<T> {
    type Secret = [T];

    fn try_expose_secret(&self) -> Result<Exposed<'_, [T]>, SecretError> {
        self.try_expose()
    }
}

impl<T: Copy> ExposeSecretMut for SecretVec<T> {
    fn try_expose_secret_mut(&mut self) -> Result<ExposedMut<'_, [T]>, SecretError> {
        self.try_expose_mut()
    }
}

impl<T: Copy> fmt::Debug for SecretVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretVec<[REDACTED]>")
    }
}

/// A growable secret UTF-8 string (a passphrase) in a [`SecretPool`].
#[derive(Default)]
pub struct SecretString {
    bytes: SecretVec<u8>,
}

impl SecretString {
    /// An empty string of the global pool (allocates nothing).
    pub fn new() -> Self {
        SecretString {
            bytes: SecretVec::new(),
        }
    }

    /// An empty string of `pool`.
    pub fn new_in(pool: &SecretPool) -> Self {
        SecretString {
            bytes: SecretVec::new_in(pool),
        }
    }

    /// An empty string of the global pool with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Result<Self, SecretError> {
        Self::with_capacity_in(cap, SecretPool::global())
    }

    /// As `with_capacity`, in `pool`.
    pub fn with_capacity_in(cap: usize, pool: &SecretPool) -> Result<Self, SecretError> {
        Ok(SecretString {
            bytes: SecretVec::with_capacity_in(cap, pool)?,
        })
    }

    /// A copy of `s` in the global pool.
    pub fn try_from_str(s: &str) -> Result<Self, SecretError> {
        Self::try_from_str_in(s, SecretPool::global())
    }

    /// As `try_from_str`, in `pool`.
    pub fn try_from_str_in(s: &str, pool: &SecretPool) -> Result<Self, SecretError> {
        Ok(SecretString {
            bytes: SecretVec::from_slice_in(s.as_bytes(), pool)?,
        })
    }

    /// Moves `src` into the global pool, then wipes the *whole* heap buffer
    /// of `src` (spare capacity included) and frees it; wiped on an error
    /// too (see [`SecretVec::from_vec`]).
    pub fn from_string(src: String) -> Result<Self, SecretError> {
        Self::from_string_in(src, SecretPool::global())
    }

    /// As `from_string`, in `pool`.
    pub fn from_string_in(src: String, pool: &SecretPool) -> Result<Self, SecretError> {
        Ok(SecretString {
            bytes: SecretVec::from_vec_in(src.into_bytes(), pool)?,
        })
    }

    /// Bytes (not characters).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    pub fn pool(&self) -> &SecretPool {
        self.bytes.pool()
    }

    pub fn is_sealed(&self) -> bool {
        self.bytes.is_sealed()
    }

    pub fn try_reserve(&mut self, additional: usize) -> Result<(), SecretError> {
        self.bytes.try_reserve(additional)
    }

    /// Appends `s`.
    pub fn try_push_str(&mut self, s: &str) -> Result<(), SecretError> {
        self.bytes.try_extend_from_slice(s.as_bytes())
    }

    /// Appends `c`.
    pub fn try_push(&mut self, c: char) -> Result<(), SecretError> {
        let mut buf = [0u8; 4];
        let r = self.try_push_str(c.encode_utf8(&mut buf));
        // SAFETY: a valid, exclusive local buffer.
        unsafe { pool::wipe(buf.as_mut_ptr(), buf.len()) };
        r
    }

    /// Removes the last character (wiping its bytes); false if empty. (A
    /// backspace for passphrase input; it does not hand the character out.)
    ///
    /// # Panics
    /// As `expose` (it reads the string to find the last character).
    pub fn pop(&mut self) -> bool {
        let cut = {
            let s = self.expose();
            match s.char_indices().next_back() {
                Some((i, _)) => i,
                None => return false,
            }
        };
        self.bytes.truncate(cut);
        true
    }

    /// Removes (and wipes) everything; keeps the capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// Read access to the string while the guard lives.
    ///
    /// # Panics
    /// If a sealed secret cannot be unsealed, or the secret was inherited
    /// through `fork`; see `try_expose`.
    pub fn expose(&self) -> Exposed<'_, str> {
        match self.try_expose() {
            Ok(g) => g,
            Err(e) => panic!("cannot expose a secret: {e}"),
        }
    }

    /// The string as `&str` through a guard (the same as `expose`, under
    /// the name users of `secrecy` look for): `&*s.expose_str()` is a
    /// `&str` for as long as the guard lives, and `&Exposed<str>` coerces
    /// to `&str` where one is expected.
    ///
    /// # Panics
    /// As `expose`.
    pub fn expose_str(&self) -> Exposed<'_, str> {
        self.expose()
    }

    /// Compares the string's bytes with `other` in constant time (see
    /// [`ct_eq`](super::ct_eq)).
    ///
    /// # Panics
    /// As `expose`.
    pub fn ct_eq<B: AsRef<[u8]> + ?Sized>(&self, other: &B) -> bool {
        self.bytes.ct_eq(other)
    }

    /// Read access, or why the secret could not be exposed (see
    /// [`SecretVec::try_expose`]).
    pub fn try_expose(&self) -> Result<Exposed<'_, str>, SecretError> {
        if self.bytes.inherited() {
            return Err(SecretError::Inherited);
        }
        let bytes = self.bytes.slice_ptr();
        // SAFETY: a `[u8]` and a `str` have the same layout.
        let s = unsafe { NonNull::new_unchecked(bytes.as_ptr() as *mut str) };
        // SAFETY: the bytes are valid UTF-8 (only `&str`s are appended and
        // cuts are at character boundaries); `&self` excludes writers.
        unsafe { Exposed::new(s, self.bytes.sealed_at()) }
    }
}

impl Wipe for SecretString {
    /// Wipes every byte and empties the string (`clear`).
    fn wipe(&mut self) {
        self.clear();
    }
}

impl ExposeSecret for SecretString {
    type Secret = str;

    fn try_expose_secret(&self) -> Result<Exposed<'_, str>, SecretError> {
        self.try_expose()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString<[REDACTED]>")
    }
}
