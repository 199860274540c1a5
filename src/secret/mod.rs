//! Secret pools: memory for keys, passwords and other secrets, kept apart
//! from the global heap.
//!
//! ```
//! use mapalloc::secret::{SecretBox, SecretPool};
//!
//! let key = SecretBox::<[u8; 32]>::new_with(|k| k.copy_from_slice(&[7; 32]))?;
//! assert_eq!(key.expose()[0], 7);
//! println!("{:?}", key); // SecretBox<[REDACTED]>
//! println!("backing: {:?}", SecretPool::global().backing());
//! # Ok::<(), mapalloc::secret::SecretError>(())
//! ```
//!
//! What a pool gives every secret's memory:
//!
//! - **Locked in RAM**: `mlock`ed (anonymous backing) or secret memory
//!   (`memfd_secret(2)`, which the kernel locks itself and also removes
//!   from its own direct map). Never unlocked memory: a secret is handed
//!   out locked or not at all.
//! - **`RLIMIT_MEMLOCK` as an error value**: the pools count the bytes
//!   *they* lock, in all pools of the process, and check that count plus
//!   the request against the soft limit *before* locking: going over is
//!   [`SecretError::MemlockLimit`], never an abort. The count covers only
//!   the pools' own memory, not what other code of the process locks
//!   (`mlockall`, another library); if that leaves the kernel short, it
//!   refuses and the error is [`SecretError::Lock`], the memory given
//!   back. (The pools enforce the soft limit even for a process with
//!   `CAP_IPC_LOCK`, which the kernel would let through.)
//! - **Out of core dumps** (`MADV_DONTDUMP`).
//! - **Not in forked children**: anonymous pages are `MADV_WIPEONFORK`
//!   (the child reads zeros); secret-memory pages cannot be, so they are
//!   `MADV_DONTFORK` (the child has no mapping there and faults).
//! - **Guard pages** (`PROT_NONE`) on both sides of every mapping: of a
//!   *slab* of small secrets, or of a large secret's own mapping (which
//!   puts the secret's end against the trailing guard page).
//! - **Wiped** with volatile stores and a compiler fence when freed, before
//!   the memory is reused, unlocked or unmapped; never printed
//!   (`Debug` shows `[REDACTED]`, there is no `Display`). A free block is
//!   checked to still read zero when it is handed out again (a stray write
//!   into it aborts), so `zeroed()` is zero. A secret made of several
//!   parts implements [`Wipe`] and is wiped part by part.
//! - **Canaries** after every small secret (and around a large one, in its
//!   page's slack), checked on free: an overwrite aborts the process with
//!   a one-line message.
//! - Optional **sealing** ([`SecretPool::sealed`]): every secret gets pages
//!   of its own, `PROT_NONE` except while an exposure guard is alive:
//!   read-only under [`Exposed`] guards (`expose()`), read-write under an
//!   [`ExposedMut`] (`expose_mut()`). Only a secret that owns whole pages
//!   can be sealed, so a sealed pool spends at least one locked page (and
//!   four pages of address space) per secret.
//!
//! Small secrets (up to 2040 bytes) share *slabs*: a guard page, one to
//! four locked data pages cut into blocks of one size class (16 to 2048
//! bytes), a guard page. The guard pages fence the slab, not each secret:
//! an overflow inside a slab can reach a neighbouring secret (the canary
//! catches it when the overflowing secret is freed). Larger secrets, and
//! every secret of a sealed pool, get their own guarded mapping.
//!
//! The pool's own bookkeeping never touches the global allocator: explicit
//! pools keep their state in a private mapping, the global pool in a
//! static, slabs and mappings their metadata in a meta page in front of
//! the guard page. The `SecretBox`/`SecretVec` handles themselves (a
//! pointer, a length and a pool handle) live wherever their owner puts
//! them; the secret bytes live only in pool memory.
//!
//! Beyond the guards: [`SecretBox::random`] / [`SecretVec::random`] fill a
//! secret from `getrandom(2)` in place; [`SecretBox::try_new_with`] is an
//! initialiser that can fail without leaving anything behind;
//! [`SecretVec::from_vec`] and [`SecretString::from_string`] take a heap
//! buffer and wipe all of it; `ct_eq` compares byte secrets in constant
//! time ([`ct_eq`]); [`ExposeSecret`] / [`ExposeSecretMut`] let generic code
//! take any secret.
//!
//! A forked child forgets the secrets it inherited. It tells itself apart
//! by a fork generation (a `MADV_WIPEONFORK` marker page, which reads zero
//! in any child), not by its pid, which PID namespaces repeat. It cannot
//! read what it inherited (exposing it is [`SecretError::Inherited`]),
//! never allocates from inherited slabs, counts none of it, and dropping
//! an inherited secret never unmaps, protects or writes a range the child
//! did not inherit: memfd_secret data is absent in a child (the kernel
//! may put the child's next mapping there), so the child unmaps only the
//! meta and guard pages around it. (Like any lock, the pool's lock must
//! not be held by another thread at the `fork` if the child will use the
//! pool.)

mod alloc;
mod boxed;
mod fork;
mod pool;
mod sys;
mod vec;
mod wipe;

pub use boxed::{ExposeSecret, ExposeSecretMut, Exposed, ExposedMut, SecretBox, Zeroable};
pub use vec::{SecretString, SecretVec};
pub use wipe::{Wipe, ct_eq};

use core::fmt;
use core::ptr::NonNull;
use pool::Inner;
use std::sync::{Once, OnceLock};

/// What a pool's memory is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backing {
    /// `memfd_secret(2)` secret memory: locked and left out of dumps by the
    /// kernel, and taken out of the kernel's direct map, so not even the
    /// kernel reads it by accident. Mapped shared (the only way it can be)
    /// and `MADV_DONTFORK`.
    MemfdSecret,
    /// Private anonymous memory, `mlock`ed, `MADV_DONTDUMP` and
    /// `MADV_WIPEONFORK`.
    Anonymous,
}

/// Why a secret could not be allocated (or a pool created).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretError {
    /// Locking `requested` more bytes would take the process's secret
    /// memory (`locked` bytes now, in all secret pools) over the soft
    /// `RLIMIT_MEMLOCK` (`limit` bytes).
    MemlockLimit {
        limit: u64,
        locked: usize,
        requested: usize,
    },
    /// `mmap` failed (`ENOMEM`: out of memory or address space, or the map
    /// count limit).
    Map { errno: i32 },
    /// `mprotect` failed (guard pages, sealing).
    Protect { errno: i32 },
    /// The kernel refused to lock the memory (`mlock`, or a secret-memory
    /// mapping): `EAGAIN`/`ENOMEM`/`EPERM` usually mean `RLIMIT_MEMLOCK`
    /// counted memory this crate did not lock.
    Lock { errno: i32 },
    /// `madvise` (`MADV_DONTDUMP`, `MADV_WIPEONFORK`, `MADV_DONTFORK`)
    /// failed: the memory would not have had its protections.
    Advise { errno: i32 },
    /// `memfd_secret(2)` or sizing its file failed.
    MemfdSecret { errno: i32 },
    /// The backing asked for is not available on this kernel
    /// (`memfd_secret` needs Linux 5.14+, and on some kernels the
    /// `secretmem.enable=1` boot parameter).
    Unsupported,
    /// The size does not fit the address space.
    CapacityOverflow,
    /// `getrandom(2)` failed (`ENOSYS`: a kernel before 3.17, or a
    /// seccomp filter), so a random secret could not be filled.
    Random { errno: i32 },
    /// The secret was inherited through `fork` and its memory is not this
    /// process's: secret memory (`memfd_secret`) is not mapped in a child
    /// at all, and its range may hold a mapping of the child's own. A
    /// child can only drop what it inherited.
    Inherited,
}

impl SecretError {
    /// The `errno` behind the error, if a system call failed.
    pub fn errno(&self) -> Option<i32> {
        match *self {
            SecretError::Map { errno }
            | SecretError::Protect { errno }
            | SecretError::Lock { errno }
            | SecretError::Advise { errno }
            | SecretError::MemfdSecret { errno }
            | SecretError::Random { errno } => Some(errno),
            _ => None,
        }
    }
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = |e: i32| std::io::Error::from_raw_os_error(e);
        match *self {
            SecretError::MemlockLimit {
                limit,
                locked,
                requested,
            } => write!(
                f,
                "locking {requested} more bytes of secret memory would exceed RLIMIT_MEMLOCK \
                 ({limit} bytes; {locked} bytes already locked by secret pools)"
            ),
            SecretError::Map { errno } => write!(f, "cannot map secret memory: {}", os(errno)),
            SecretError::Protect { errno } => {
                write!(
                    f,
                    "cannot change the protection of secret memory: {}",
                    os(errno)
                )
            }
            SecretError::Lock { errno } => write!(
                f,
                "the kernel refused to lock secret memory (RLIMIT_MEMLOCK?): {}",
                os(errno)
            ),
            SecretError::Advise { errno } => write!(
                f,
                "cannot exclude secret memory from core dumps or forked children: {}",
                os(errno)
            ),
            SecretError::MemfdSecret { errno } => {
                write!(f, "memfd_secret(2) failed: {}", os(errno))
            }
            SecretError::Random { errno } => {
                write!(f, "cannot read the kernel's random source: {}", os(errno))
            }
            SecretError::Unsupported => {
                f.write_str("memfd_secret(2) is not available on this kernel")
            }
            SecretError::CapacityOverflow => f.write_str("secret size overflows the address space"),
            SecretError::Inherited => f.write_str(
                "the secret was inherited through fork: its memory is not mapped in this process",
            ),
        }
    }
}

impl std::error::Error for SecretError {}

/// What a pool holds now ([`SecretPool::stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    pub backing: Backing,
    /// Secrets get their own pages, `PROT_NONE` while not exposed.
    pub sealed: bool,
    /// Bytes of locked data pages (slabs and large mappings).
    pub bytes_locked: usize,
    /// Slabs of small secrets.
    pub slabs: usize,
    /// Mappings of one secret each.
    pub large_mappings: usize,
    /// Live secrets (including blocks handed out through `Allocator`).
    pub secrets_live: usize,
    /// Bytes asked for by the live secrets.
    pub bytes_live: usize,
    /// `PROT_NONE` guard pages around the pool's slabs and mappings.
    pub guard_pages: usize,
}

/// How to build a pool ([`SecretPool::with_options`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolOptions {
    /// `None`: `memfd_secret` where it works, else anonymous memory.
    pub backing: Option<Backing>,
    /// Give every secret its own pages and keep them `PROT_NONE` while
    /// not exposed.
    pub sealed: bool,
}

impl PoolOptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn backing(mut self, backing: Backing) -> Self {
        self.backing = Some(backing);
        self
    }

    pub fn sealed(mut self, sealed: bool) -> Self {
        self.sealed = sealed;
        self
    }
}

/// A pool of secret memory. A handle: clones share the pool, which goes
/// away (its memory wiped and unmapped) when the last handle and the last
/// secret allocated from it are gone. (`SecretBox`/`SecretVec`/
/// `SecretString` hold a handle each. Blocks handed out through
/// `Allocator` do not: the trait's contract ends with the allocator, so
/// blocks still out when the last handle goes, small or large, are wiped,
/// unlocked and unmapped with the pool.)
///
/// `&SecretPool` (and `SecretPool`) is an `allocator_api2` allocator, and a
/// `core::alloc::Allocator` with the `nightly` feature, so standard-shaped
/// collections can keep their elements in it:
/// `allocator_api2::vec::Vec::<u8, _>::new_in(&pool)`. Such blocks are
/// locked, undumped, guarded, canaried and wiped on free like any secret,
/// but never sealed, and the collection's own `Debug` is not redacted.
pub struct SecretPool {
    inner: NonNull<Inner>,
}

// SAFETY: `Inner` is `Sync` (atomics and a mutex); the handle only shares
// it, and its reference count is atomic.
unsafe impl Send for SecretPool {}
// SAFETY: as above.
unsafe impl Sync for SecretPool {}

static GLOBAL_INNER: Inner = Inner::new_static(false);
static GLOBAL: SecretPool = SecretPool {
    // SAFETY: the address of a static is never null.
    inner: unsafe { NonNull::new_unchecked(core::ptr::addr_of!(GLOBAL_INNER).cast_mut()) },
};
static GLOBAL_INIT: Once = Once::new();

impl SecretPool {
    /// The process-wide default pool (the backing is chosen on first use).
    pub fn global() -> &'static SecretPool {
        GLOBAL_INIT.call_once(|| GLOBAL_INNER.init(default_backing()));
        &GLOBAL
    }

    /// A new pool with the default backing, unsealed. Fails only if the
    /// page holding the pool's state cannot be mapped.
    pub fn new() -> Result<SecretPool, SecretError> {
        Self::with_options(PoolOptions::default())
    }

    /// A new sealed pool: every secret gets pages of its own, which are
    /// `PROT_NONE` except while an exposure guard is alive.
    pub fn sealed() -> Result<SecretPool, SecretError> {
        Self::with_options(PoolOptions::default().sealed(true))
    }

    /// A new pool with the given backing (e.g. anonymous memory even where
    /// `memfd_secret` works); [`SecretError::Unsupported`] if it is
    /// `MemfdSecret` and the kernel does not offer it.
    pub fn with_backing(backing: Backing) -> Result<SecretPool, SecretError> {
        Self::with_options(PoolOptions::default().backing(backing))
    }

    pub fn with_options(options: PoolOptions) -> Result<SecretPool, SecretError> {
        let backing = match options.backing {
            None => default_backing(),
            Some(Backing::MemfdSecret) if !memfd_secret_available() => {
                return Err(SecretError::Unsupported);
            }
            Some(b) => b,
        };
        Ok(SecretPool {
            inner: Inner::create(backing, options.sealed)?,
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        // SAFETY: the pool state lives as long as any handle.
        unsafe { self.inner.as_ref() }
    }

    /// What this pool's memory is made of.
    pub fn backing(&self) -> Backing {
        self.inner().backing()
    }

    /// True if secrets of this pool are sealed while not exposed.
    pub fn is_sealed(&self) -> bool {
        self.inner().is_sealed()
    }

    /// What the pool holds now (this process's view: after `fork` a child
    /// starts from an empty pool).
    pub fn stats(&self) -> PoolStats {
        self.inner().stats()
    }

    /// True if both handles are the same pool.
    pub fn same_pool(&self, other: &SecretPool) -> bool {
        self.inner == other.inner
    }
}

impl Clone for SecretPool {
    fn clone(&self) -> Self {
        self.inner().acquire();
        SecretPool { inner: self.inner }
    }
}

impl Drop for SecretPool {
    fn drop(&mut self) {
        if self.inner().release() {
            // SAFETY: the last handle (the global pool's static handle is
            // never dropped, so this is an explicit pool from `create`).
            unsafe { Inner::destroy(self.inner) };
        }
    }
}

impl fmt::Debug for SecretPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretPool")
            .field("stats", &self.stats())
            .finish()
    }
}

/// True if this kernel offers `memfd_secret(2)` (probed once: the call,
/// sizing the file and mapping it).
pub fn memfd_secret_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(pool::probe_memfd_secret)
}

fn default_backing() -> Backing {
    if memfd_secret_available() {
        Backing::MemfdSecret
    } else {
        Backing::Anonymous
    }
}

/// The soft `RLIMIT_MEMLOCK` in bytes, `None` if unlimited (or unreadable).
pub fn memlock_limit() -> Option<u64> {
    sys::memlock_limit().ok().flatten()
}

/// Bytes of secret memory all pools of this process hold locked now: what
/// the pools count against `RLIMIT_MEMLOCK`. Memory other code of the
/// process locks is not in it (see the module docs).
pub fn locked_bytes() -> usize {
    pool::locked_bytes()
}
