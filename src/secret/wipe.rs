//! Wiping values, comparing secrets in constant time, and wiping the heap
//! buffers that secrets are moved out of.

use super::boxed::Zeroable;
use super::pool;
use core::hint::black_box;
use core::mem::size_of;

/// Values that can overwrite every secret byte they hold, so that a secret
/// made of several parts (a struct of key buffers, a `SecretVec` field)
/// can live in a [`SecretBox`](super::SecretBox) and be wiped part by part
/// when it drops.
///
/// Implemented for every [`Zeroable`] type (the bytes are zeroed with
/// volatile stores and a compiler fence), and for [`SecretVec`],
/// [`SecretString`] and [`SecretBox`] (their contents are wiped; their
/// memory goes back to the pool when they drop). For a struct, wipe each
/// field:
///
/// ```
/// use mapalloc::secret::{SecretBox, SecretVec, Wipe};
///
/// struct Keys {
///     enc: [u8; 32],
///     mac: [u8; 32],
///     label: SecretVec<u8>,
/// }
///
/// impl Wipe for Keys {
///     fn wipe(&mut self) {
///         self.enc.wipe();
///         self.mac.wipe();
///         self.label.wipe();
///     }
/// }
///
/// let keys = SecretBox::new(Keys {
///     enc: [1; 32],
///     mac: [2; 32],
///     label: SecretVec::from_slice(b"session 7")?,
/// })?;
/// assert_eq!(keys.expose().mac[0], 2);
/// drop(keys); // Keys::wipe, then Keys's own drop, then the pool wipes its bytes
/// # Ok::<(), mapalloc::secret::SecretError>(())
/// ```
///
/// `wipe` must leave `self` a valid value (zero, or empty): it runs before
/// the value's own `Drop`. A `SecretBox` calls it on drop; nothing else
/// calls it for you.
///
/// [`SecretVec`]: super::SecretVec
/// [`SecretString`]: super::SecretString
/// [`SecretBox`]: super::SecretBox
pub trait Wipe {
    /// Overwrites every secret byte `self` holds, in place or in memory it
    /// owns.
    fn wipe(&mut self);
}

impl<T: Zeroable> Wipe for T {
    fn wipe(&mut self) {
        // SAFETY: `self` is exclusive and writable for its size; all-zero
        // bytes are a valid `T` (`Zeroable`), so `*self` stays valid.
        unsafe { pool::wipe((self as *mut T).cast(), size_of::<T>()) }
    }
}

/// Compares `a` and `b` in time that depends on their lengths only, never
/// on their contents: every byte is read, with no early exit. Lengths are
/// compared first (and openly: they are not treated as secret).
///
/// For byte secrets, the methods `ct_eq` of `SecretBox<[u8; N]>`,
/// `SecretVec<u8>` and `SecretString` expose the secret and call this.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u64;
    let (wa, ta) = (a.chunks_exact(8), a.chunks_exact(8).remainder());
    let tb = b.chunks_exact(8).remainder();
    for (x, y) in wa.zip(b.chunks_exact(8)) {
        let x = u64::from_ne_bytes(x.try_into().unwrap_or([0; 8]));
        let y = u64::from_ne_bytes(y.try_into().unwrap_or([0; 8]));
        // `black_box` keeps the compiler from turning the accumulation
        // into a loop that stops at the first difference.
        diff = black_box(diff | (x ^ y));
    }
    for (x, y) in ta.iter().zip(tb) {
        diff = black_box(diff | u64::from(x ^ y));
    }
    black_box(diff) == 0
}

/// Wipes the whole heap buffer of `v` (its capacity, not only its length)
/// with volatile stores and a compiler fence, then frees it. What
/// `SecretVec::from_vec` and `SecretString::from_string` do to their
/// source.
pub(crate) fn wipe_vec<T: Copy>(mut v: Vec<T>) {
    let bytes = v.capacity() * size_of::<T>();
    // SAFETY: `T: Copy` has no drop glue, so forgetting the elements is
    // fine; with the length 0 no `T` is alive in the buffer, and all
    // `capacity` elements' bytes belong to the vector's allocation.
    unsafe {
        v.set_len(0);
        pool::wipe(v.as_mut_ptr().cast(), bytes);
    }
    drop(v);
}
