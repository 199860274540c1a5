//! The pool proper: guarded, locked slabs for small secrets, a guarded
//! mapping of its own for every other one, the process-wide
//! `RLIMIT_MEMLOCK` account, canaries, wiping and sealing.
//!
//! # Layout
//!
//! A **slab** is a reservation of `SLAB_SPAN` (32 KiB) aligned to its size:
//!
//! ```text
//! | meta | guard | data (1, 2 or 4 pages) | guard ... up to 32 KiB |
//! ```
//!
//! The meta page is plain private memory (no secret lives there: sizes,
//! links, the block bitmap); the data pages are locked and never dumped,
//! and hold blocks of one size class (16 to 2048 bytes). A block's slab is
//! found by masking its address.
//!
//! A **large** secret (or any secret of a sealed pool) gets:
//!
//! ```text
//! | meta | guard | data (whole pages) | guard |
//! ```
//!
//! with the secret placed at the *end* of the data pages (as far as its
//! alignment allows), so that writing one byte past it faults on the
//! guard page; the slack in front of it (under a page) holds a canary.
//!
//! # Invariants
//!
//! - A data byte that is not part of a live secret is zero, except the
//!   canary bytes in the slack of a live secret's block or mapping.
//! - Every slab and large mapping counted in the pool's statistics is
//!   counted, by its data length, in the process-wide `LOCKED` account;
//!   data pages are locked (`mlock`, or memfd_secret's own locking)
//!   before any secret byte is written to them.
//! - Slab metadata (links, bitmap, `used`) changes only under the pool
//!   lock; the other meta fields are written once before the slab or
//!   mapping is published and never again.
//! - A free slab block reads zero, canary slack included; `alloc_small`
//!   checks this before handing the block out again (a stray write into a
//!   free block aborts rather than reaching `zeroed()`).
//! - Every large mapping of this process is in the pool's `large` list
//!   until freed, so a pool that goes away with blocks still out (leaked
//!   `Allocator` blocks) wipes and unmaps them like its slabs.
//! - A slab or mapping whose `generation` is not the calling process's
//!   (`fork::current`) was inherited through `fork`: its data
//!   is zero and unlocked (`MADV_WIPEONFORK`, `InChild::Zeroed`) or not
//!   mapped at all (`MADV_DONTFORK`, `InChild::Absent`: a gap the kernel
//!   may fill with the child's own next mapping). It is never allocated
//!   from, counted, protected or wiped; once its last block is freed the
//!   child unmaps what it inherited of it: the whole reservation if
//!   `Zeroed`, only the meta and guard pages around the gap if `Absent`.

use super::fork;
use super::sys::{self, Advice, PAGE, SecretFd};
use super::{Backing, PoolStats, SecretError};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering, compiler_fence};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Bytes of address space a slab occupies (and its alignment).
pub(crate) const SLAB_SPAN: usize = 8 * PAGE;
/// From the start of a slab or large mapping to its data: the meta page
/// and the front guard page.
const DATA_OFFSET: usize = 2 * PAGE;
/// The block sizes of the slabs. Every class size `c` has `c`'s largest
/// power-of-two factor as its alignment (blocks start at `k * c` from a
/// page-aligned data start).
pub(crate) const CLASSES: [usize; 14] = [
    16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
];
const NCLASSES: usize = CLASSES.len();
/// Largest block, and so largest alignment, a slab serves.
pub(crate) const MAX_SMALL: usize = 2048;
/// Bytes of canary every slab block keeps after its secret, at least.
pub(crate) const CANARY_MIN: usize = 8;
/// Most blocks in a slab (16-byte blocks in one data page).
const MAX_BLOCKS: usize = PAGE / 16;
const WORDS: usize = MAX_BLOCKS / 64;

const SLAB_MAGIC: u64 = 0x5EC2_E751_AB00_0001;
const LARGE_MAGIC: u64 = 0x5EC2_E71A_26E0_0002;

/// Data pages of a slab of block size `class`: small classes share one
/// page (a 32-byte key costs 48 bytes of a locked page, not pages of its
/// own), bigger ones get enough pages for at least eight blocks.
const fn data_pages(class: usize) -> usize {
    if class <= 256 {
        1
    } else if class <= 768 {
        2
    } else {
        4
    }
}

/// Guard pages of one slab: the front one and everything after the data
/// up to the end of the span.
const fn slab_guard_pages(class: usize) -> usize {
    SLAB_SPAN / PAGE - 2 - data_pages(class)
}

static_assertions::const_assert!(MAX_SMALL <= PAGE);
static_assertions::const_assert!(MAX_BLOCKS.is_multiple_of(64));
static_assertions::const_assert!(DATA_OFFSET + 4 * PAGE < SLAB_SPAN);
static_assertions::const_assert!(core::mem::size_of::<SlabMeta>() <= PAGE);
static_assertions::const_assert!(core::mem::size_of::<LargeMeta>() <= PAGE);
static_assertions::const_assert!(SLAB_SPAN.is_power_of_two());

/// The slab class for a secret of `size` bytes aligned to `align`, if a
/// slab can hold it with at least `CANARY_MIN` bytes of canary after it.
pub(crate) fn slab_class(size: usize, align: usize) -> Option<usize> {
    if align > MAX_SMALL {
        return None;
    }
    let a = align.max(16);
    let need = size.checked_add(CANARY_MIN)?.checked_next_multiple_of(a)?;
    CLASSES.iter().position(|&c| c >= need && c % a == 0)
}

// ---------------------------------------------------------------------
// The process-wide RLIMIT_MEMLOCK account.
// ---------------------------------------------------------------------

/// Bytes locked by all secret pools of the process, packed with the fork
/// generation that counted them (`tag << 42 | bytes`, the tag being the
/// generation's low 22 bits), so a forked child (which inherits no locks)
/// starts from zero without a lock that a fork could leave held.
static LOCKED: AtomicU64 = AtomicU64::new(0);
const BYTES_BITS: u32 = 42;
const BYTES_MASK: u64 = (1 << BYTES_BITS) - 1;

/// The tag of the calling process's generation in `LOCKED`. Generations
/// grow by one per forked descendant that uses a pool, so two processes
/// of one line of descent share a tag only 2^22 generations apart.
fn locked_tag() -> u64 {
    fork::current() & ((1 << (64 - BYTES_BITS)) - 1)
}

fn unpack(v: u64, tag: u64) -> usize {
    if v >> BYTES_BITS == tag {
        (v & BYTES_MASK) as usize
    } else {
        0
    }
}

/// Bytes of secret memory the process holds locked right now.
pub(crate) fn locked_bytes() -> usize {
    unpack(LOCKED.load(Ordering::Acquire), locked_tag())
}

/// Counts `n` more locked bytes, or says why not.
fn reserve_locked(n: usize) -> Result<(), SecretError> {
    let limit = sys::memlock_limit().map_err(|errno| SecretError::Lock { errno })?;
    let tag = locked_tag();
    let mut cur = LOCKED.load(Ordering::Acquire);
    loop {
        let locked = unpack(cur, tag);
        let new = locked.checked_add(n).filter(|&b| b as u64 <= BYTES_MASK);
        let new = match (new, limit) {
            (Some(b), Some(l)) if b as u64 <= l => b,
            (Some(b), None) => b,
            _ => {
                return Err(SecretError::MemlockLimit {
                    limit: limit.unwrap_or(u64::MAX),
                    locked,
                    requested: n,
                });
            }
        };
        let packed = (tag << BYTES_BITS) | new as u64;
        match LOCKED.compare_exchange_weak(cur, packed, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(seen) => cur = seen,
        }
    }
}

/// Gives back `n` locked bytes counted by this process.
fn release_locked(n: usize) {
    let tag = locked_tag();
    let mut cur = LOCKED.load(Ordering::Acquire);
    loop {
        if cur >> BYTES_BITS != tag {
            return;
        }
        let left = (cur & BYTES_MASK).saturating_sub(n as u64);
        let packed = (tag << BYTES_BITS) | left;
        match LOCKED.compare_exchange_weak(cur, packed, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

// ---------------------------------------------------------------------
// Wiping and canaries.
// ---------------------------------------------------------------------

/// Overwrites `[p, p+len)` with zeros through volatile stores, then fences
/// the compiler, so the stores happen even though nothing reads the memory
/// afterwards (it is about to be reused, unlocked or unmapped).
///
/// # Safety
/// `[p, p+len)` is writable and no reference into it is alive.
pub(crate) unsafe fn wipe(p: *mut u8, len: usize) {
    let end = p as usize + len;
    let mut a = p as usize;
    // SAFETY: every address written is in `[p, p+len)` (the caller's
    // contract); the word stores are 8-aligned.
    unsafe {
        while a < end && !a.is_multiple_of(8) {
            ptr::write_volatile(a as *mut u8, 0);
            a += 1;
        }
        while a + 8 <= end {
            ptr::write_volatile(a as *mut u64, 0);
            a += 8;
        }
        while a < end {
            ptr::write_volatile(a as *mut u8, 0);
            a += 1;
        }
    }
    compiler_fence(Ordering::SeqCst);
}

/// The first address of `[p, p+len)` that does not read zero (`p` and
/// `len` multiples of 8: a slab block).
///
/// # Safety
/// The range is readable.
unsafe fn first_nonzero(p: usize, len: usize) -> Option<usize> {
    debug_assert!(p.is_multiple_of(8) && len.is_multiple_of(8));
    // SAFETY: the caller's contract; the word loads are 8-aligned.
    let word = (p..p + len)
        .step_by(8)
        .find(|&a| unsafe { ptr::read(a as *const u64) } != 0)?;
    // SAFETY: as above, inside the word just found.
    (word..word + 8).find(|&a| unsafe { ptr::read(a as *const u8) } != 0)
}

/// The SplitMix64 finaliser.
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The canary byte at address `a`: keyed per pool, different at every
/// address, never zero (a zeroing overflow is caught too).
fn canary_byte(key: u64, a: usize) -> u8 {
    let w = mix64(key ^ (a as u64 >> 3));
    (w >> ((a & 7) * 8)) as u8 | 1
}

/// Writes the canary over `[from, to)`.
///
/// # Safety
/// The range is writable and holds no secret.
unsafe fn fill_canary(key: u64, from: usize, to: usize) {
    for a in from..to {
        // SAFETY: the caller's contract.
        unsafe { ptr::write_volatile(a as *mut u8, canary_byte(key, a)) };
    }
}

/// The first address of `[from, to)` whose canary was overwritten.
///
/// # Safety
/// The range is readable.
unsafe fn check_canary(key: u64, from: usize, to: usize) -> Option<usize> {
    // SAFETY: the caller's contract.
    (from..to).find(|&a| unsafe { ptr::read_volatile(a as *const u8) } != canary_byte(key, a))
}

// ---------------------------------------------------------------------
// Metadata.
// ---------------------------------------------------------------------

/// What a forked child has where a slab's or mapping's data pages were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InChild {
    /// Zero pages of its own (`MADV_WIPEONFORK`, anonymous backing): the
    /// whole reservation is the child's to unmap.
    Zeroed,
    /// Nothing (`MADV_DONTFORK`, memfd_secret backing): a gap, which the
    /// kernel may fill with the child's own next mapping. The child may
    /// unmap only the meta and guard pages around it.
    Absent,
}

/// How `map_data` made a secret's data pages.
#[derive(Clone, Copy)]
struct DataPages {
    /// Locked with `mlock` (anonymous backing; secret memory is locked by
    /// the kernel).
    mlocked: bool,
    in_child: InChild,
}

/// The meta page of a slab.
#[repr(C)]
struct SlabMeta {
    magic: u64,
    pool: *const Inner,
    /// The fork generation of the process that created the slab.
    generation: u64,
    /// Index into `CLASSES`.
    class: u32,
    block: usize,
    nblocks: usize,
    data: *mut u8,
    data_len: usize,
    pages: DataPages,
    // Under the pool lock:
    used: usize,
    prev: *mut SlabMeta,
    next: *mut SlabMeta,
    /// One bit per block, set while the block is allocated.
    bits: [u64; WORDS],
}

/// The meta page of a large (or sealed) secret's mapping.
#[repr(C)]
struct LargeMeta {
    magic: u64,
    pool: *const Inner,
    /// The fork generation of the process that created the mapping.
    generation: u64,
    /// PROT_NONE while no exposure guard is alive.
    sealed: bool,
    pages: DataPages,
    base: *mut u8,
    total: usize,
    data: *mut u8,
    data_len: usize,
    ptr: *mut u8,
    size: usize,
    /// Exposure guards alive (sealed secrets).
    exposed: Mutex<usize>,
    // Links in the pool's `large` list, under the pool lock.
    prev: *mut LargeMeta,
    next: *mut LargeMeta,
}

/// The large meta page of the secret at `p`.
fn large_meta(p: *mut u8) -> *mut LargeMeta {
    ((p as usize & !(PAGE - 1)) - DATA_OFFSET) as *mut LargeMeta
}

/// The meta page of the slab holding `p`.
fn slab_meta(p: *mut u8) -> *mut SlabMeta {
    (p as usize & !(SLAB_SPAN - 1)) as *mut SlabMeta
}

/// Unmaps what a forked child inherited of the reservation `[base,
/// base+total)` whose data pages are `[data, data+len)`: everything if the
/// child has zero pages there, else only what lies around the data gap.
///
/// # Safety
/// The reservation was inherited (its generation is not the caller's), its
/// last block is freed, and nothing can reach it any more.
unsafe fn unmap_inherited(base: *mut u8, total: usize, data: *mut u8, len: usize, pages: DataPages) {
    // SAFETY: the caller's contract; an `Absent` child never unmaps the
    // data range, which may hold a mapping of its own now.
    unsafe {
        match pages.in_child {
            InChild::Zeroed => {
                let _ = sys::unmap(base, total);
            }
            InChild::Absent => {
                let end = data.add(len);
                let _ = sys::unmap(base, data as usize - base as usize);
                let _ = sys::unmap(end, base as usize + total - end as usize);
            }
        }
    }
}

// ---------------------------------------------------------------------
// The pool.
// ---------------------------------------------------------------------

const BACKING_UNSET: u8 = 0;
const BACKING_MEMFD: u8 = 1;
const BACKING_ANON: u8 = 2;

/// A pool's shared state: lives in a mapping of its own (explicit pools)
/// or in a static (the global pool), never on the global heap.
pub(crate) struct Inner {
    /// Handles (`SecretPool`, and every secret holds one).
    refs: AtomicUsize,
    backing: AtomicU8,
    sealed: bool,
    /// Canary key.
    key: AtomicU64,
    state: Mutex<State>,
}

/// What the pool lock protects.
struct State {
    /// The fork generation the lists below belong to (0: not yet used).
    generation: u64,
    /// Slabs of each class (move-to-front on free).
    slabs: [*mut SlabMeta; NCLASSES],
    /// Live large mappings.
    large: *mut LargeMeta,
    n_slabs: usize,
    n_large: usize,
    live: usize,
    bytes_live: usize,
    locked: usize,
    guard_pages: usize,
}

// SAFETY: the raw pointers are to meta pages this pool owns; they are
// followed only under the pool lock.
unsafe impl Send for State {}

impl State {
    const fn new() -> Self {
        State {
            generation: 0,
            slabs: [ptr::null_mut(); NCLASSES],
            large: ptr::null_mut(),
            n_slabs: 0,
            n_large: 0,
            live: 0,
            bytes_live: 0,
            locked: 0,
            guard_pages: 0,
        }
    }

    /// Takes a free block of class `c`, moving nothing.
    ///
    /// # Safety
    /// The slab list of `c` holds live slabs of this process.
    unsafe fn take_block(&mut self, c: usize) -> Option<*mut u8> {
        let mut s = self.slabs[c];
        // SAFETY: the list's slabs are live (caller's contract, pool lock).
        unsafe {
            while !s.is_null() {
                if (*s).used < (*s).nblocks {
                    for w in 0..WORDS {
                        let free = !(*s).bits[w];
                        if free == 0 {
                            continue;
                        }
                        let i = w * 64 + free.trailing_zeros() as usize;
                        if i >= (*s).nblocks {
                            break;
                        }
                        (*s).bits[w] |= 1 << (i % 64);
                        (*s).used += 1;
                        return Some((*s).data.add(i * (*s).block));
                    }
                }
                s = (*s).next;
            }
        }
        None
    }

    /// # Safety
    /// `s` is a live slab of class `c`, in no list.
    unsafe fn push_front(&mut self, c: usize, s: *mut SlabMeta) {
        // SAFETY: the caller's contract; list members are live.
        unsafe {
            (*s).prev = ptr::null_mut();
            (*s).next = self.slabs[c];
            if !self.slabs[c].is_null() {
                (*self.slabs[c]).prev = s;
            }
        }
        self.slabs[c] = s;
    }

    /// # Safety
    /// `s` is in the list of class `c`.
    unsafe fn unlink(&mut self, c: usize, s: *mut SlabMeta) {
        // SAFETY: the caller's contract; list members are live.
        unsafe {
            let (prev, next) = ((*s).prev, (*s).next);
            if prev.is_null() {
                self.slabs[c] = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*s).prev = ptr::null_mut();
            (*s).next = ptr::null_mut();
        }
    }

    /// # Safety
    /// `m` is a live large mapping of this process, in no list.
    unsafe fn push_large(&mut self, m: *mut LargeMeta) {
        // SAFETY: the caller's contract; list members are live.
        unsafe {
            (*m).prev = ptr::null_mut();
            (*m).next = self.large;
            if !self.large.is_null() {
                (*self.large).prev = m;
            }
        }
        self.large = m;
    }

    /// # Safety
    /// `m` is in the `large` list.
    unsafe fn unlink_large(&mut self, m: *mut LargeMeta) {
        // SAFETY: the caller's contract; list members are live.
        unsafe {
            let (prev, next) = ((*m).prev, (*m).next);
            if prev.is_null() {
                self.large = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
        }
    }
}

impl Inner {
    /// The state of a pool whose backing and key are set later (`init`).
    pub(crate) const fn new_static(sealed: bool) -> Self {
        Inner {
            refs: AtomicUsize::new(1),
            backing: AtomicU8::new(BACKING_UNSET),
            sealed,
            key: AtomicU64::new(0),
            state: Mutex::new(State::new()),
        }
    }

    /// Sets the backing and canary key; before the pool is shared.
    pub(crate) fn init(&self, backing: Backing) {
        let b = match backing {
            Backing::MemfdSecret => BACKING_MEMFD,
            Backing::Anonymous => BACKING_ANON,
        };
        self.backing.store(b, Ordering::Release);
        self.key.store(sys::random_u64(), Ordering::Release);
    }

    /// A new pool state in a private mapping of its own.
    pub(crate) fn create(backing: Backing, sealed: bool) -> Result<NonNull<Inner>, SecretError> {
        fork::setup()?;
        let len = core::mem::size_of::<Inner>().next_multiple_of(PAGE);
        let p = sys::reserve(len).map_err(|errno| SecretError::Map { errno })?;
        // SAFETY: `p` is our fresh reservation of `len` bytes.
        if let Err(errno) = unsafe { sys::protect_rw(p.as_ptr(), len) } {
            // SAFETY: as above; nothing uses it.
            let _ = unsafe { sys::unmap(p.as_ptr(), len) };
            return Err(SecretError::Protect { errno });
        }
        let inner = p.cast::<Inner>();
        // SAFETY: fresh, writable, page-aligned memory of at least
        // `size_of::<Inner>()` bytes.
        unsafe { inner.as_ptr().write(Inner::new_static(sealed)) };
        // SAFETY: just written.
        unsafe { inner.as_ref().init(backing) };
        Ok(inner)
    }

    pub(crate) fn backing(&self) -> Backing {
        if self.backing.load(Ordering::Acquire) == BACKING_MEMFD {
            Backing::MemfdSecret
        } else {
            Backing::Anonymous
        }
    }

    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed
    }

    fn key(&self) -> u64 {
        self.key.load(Ordering::Relaxed)
    }

    /// One more handle.
    pub(crate) fn acquire(&self) {
        if self.refs.fetch_add(1, Ordering::Relaxed) > isize::MAX as usize {
            sys::fatal(
                "secret pool handle count overflow at",
                self as *const _ as usize,
            );
        }
    }

    /// One handle fewer; true if it was the last (the caller then calls
    /// `destroy`).
    pub(crate) fn release(&self) -> bool {
        self.refs.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Wipes and gives back every slab and large mapping (with the blocks
    /// still out in them: only `Allocator` blocks can be, and they do not
    /// outlive their allocator), then the state's own mapping.
    ///
    /// # Safety
    /// `inner` came from `create`, its last handle is gone (so no
    /// `SecretBox`/`SecretVec` of it is alive, and no `Allocator` block may
    /// be used), and it is not used again.
    pub(crate) unsafe fn destroy(inner: NonNull<Inner>) {
        // SAFETY: the caller's contract: nobody else can reach the pool.
        unsafe {
            let this = inner.as_ref();
            this.release_all();
            let len = core::mem::size_of::<Inner>().next_multiple_of(PAGE);
            ptr::drop_in_place(inner.as_ptr());
            let _ = sys::unmap(inner.as_ptr().cast(), len);
        }
    }

    /// Locks the pool state. In a process forked since the last use, the
    /// inherited lists are forgotten first (their data is gone or zero and
    /// unlocked; see the module invariants).
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = fork::current();
        if st.generation != generation {
            *st = State::new();
            st.generation = generation;
        }
        st
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let st = self.lock();
        PoolStats {
            backing: self.backing(),
            sealed: self.sealed,
            bytes_locked: st.locked,
            slabs: st.n_slabs,
            large_mappings: st.n_large,
            secrets_live: st.live,
            bytes_live: st.bytes_live,
            guard_pages: st.guard_pages,
        }
    }

    /// Maps and protects a secret's data pages at `data` (inside a
    /// reservation of ours): anonymous ones are made read-write, left out
    /// of dumps, wiped in forked children and locked; secret-memory ones
    /// replace the reservation with a `memfd_secret` mapping (locked and
    /// left out of dumps by the kernel) that is not mapped in forked
    /// children at all.
    ///
    /// # Safety
    /// `[data, data+len)` is a page-aligned, unused part of a reservation
    /// of the caller's.
    unsafe fn map_data(&self, data: *mut u8, len: usize) -> Result<DataPages, SecretError> {
        // SAFETY: the caller's contract for every call below.
        unsafe {
            match self.backing() {
                Backing::Anonymous => {
                    sys::protect_rw(data, len).map_err(|errno| SecretError::Protect { errno })?;
                    sys::advise(data, len, Advice::DontDump)
                        .map_err(|errno| SecretError::Advise { errno })?;
                    sys::advise(data, len, Advice::WipeOnFork)
                        .map_err(|errno| SecretError::Advise { errno })?;
                    sys::lock(data, len).map_err(|errno| SecretError::Lock { errno })?;
                    Ok(DataPages {
                        mlocked: true,
                        in_child: InChild::Zeroed,
                    })
                }
                Backing::MemfdSecret => {
                    let fd = SecretFd::new().map_err(|errno| SecretError::MemfdSecret { errno })?;
                    fd.set_len(len)
                        .map_err(|errno| SecretError::MemfdSecret { errno })?;
                    // The kernel charges secret memory to RLIMIT_MEMLOCK at
                    // mmap time: EAGAIN is its "over the limit".
                    fd.map_fixed(data, len).map_err(|errno| {
                        if errno == libc::EAGAIN {
                            SecretError::Lock { errno }
                        } else {
                            SecretError::Map { errno }
                        }
                    })?;
                    sys::advise(data, len, Advice::DontFork)
                        .map_err(|errno| SecretError::Advise { errno })?;
                    Ok(DataPages {
                        mlocked: false,
                        in_child: InChild::Absent,
                    })
                }
            }
        }
    }

    /// Allocates `size > 0` bytes aligned to `align` (a power of two):
    /// from a slab unless `own_pages`, or when no class fits; a secret with
    /// pages of its own is sealed (`PROT_NONE`) at once if `seal`. The
    /// bytes read as zero.
    pub(crate) fn alloc(
        &self,
        size: usize,
        align: usize,
        own_pages: bool,
        seal: bool,
    ) -> Result<NonNull<u8>, SecretError> {
        debug_assert!(size > 0 && align.is_power_of_two());
        // The fork generation must be readable before memory is tagged
        // with it (a no-op once done; explicit pools did it at creation).
        fork::setup()?;
        match slab_class(size, align).filter(|_| !own_pages) {
            Some(c) => self.alloc_small(c, size),
            None => self.alloc_large(size, align, seal),
        }
    }

    /// Frees what `alloc` returned, with the same `size`, `align` and
    /// `own_pages`: checks the canary, wipes, and gives the memory back.
    ///
    /// # Safety
    /// `p` is a live allocation of this pool made with these arguments; no
    /// reference into it is alive and it is not used again.
    pub(crate) unsafe fn free(&self, p: NonNull<u8>, size: usize, align: usize, own_pages: bool) {
        match slab_class(size, align).filter(|_| !own_pages) {
            // SAFETY: forwarded.
            Some(c) => unsafe { self.free_small(p.as_ptr(), size, c) },
            // SAFETY: forwarded.
            None => unsafe { self.free_large(p.as_ptr(), size) },
        }
    }

    fn alloc_small(&self, c: usize, size: usize) -> Result<NonNull<u8>, SecretError> {
        let mut st = self.lock();
        // SAFETY: the lists hold live slabs of this process (`lock`).
        let block = match unsafe { st.take_block(c) } {
            Some(b) => b,
            None => {
                drop(st);
                let slab = self.new_slab(c)?;
                st = self.lock();
                // SAFETY: `slab` is fresh, of class `c`, in no list; after
                // pushing it the class has a free block.
                unsafe {
                    st.push_front(c, slab);
                    st.n_slabs += 1;
                    st.locked += (*slab).data_len;
                    st.guard_pages += slab_guard_pages(CLASSES[c]);
                    match st.take_block(c) {
                        Some(b) => b,
                        None => sys::fatal("secret slab without a free block at", slab as usize),
                    }
                }
            }
        };
        st.live += 1;
        st.bytes_live += size;
        drop(st);
        // A free block reads zero (it was wiped when freed, or is fresh):
        // anything else is a stray write into free memory, an overflow out
        // of a neighbour that has not been freed (and so not had its canary
        // checked) yet. Handing it out would give `zeroed()` whatever was
        // written there.
        // SAFETY: the block is ours alone now, in mapped slab data.
        if let Some(bad) = unsafe { first_nonzero(block as usize, CLASSES[c]) } {
            sys::fatal(
                "secret memory written while free (an overflow into a free block?) at",
                bad,
            );
        }
        // SAFETY: the block is ours alone now, and zero; its slack holds
        // no secret.
        unsafe {
            fill_canary(
                self.key(),
                block as usize + size,
                block as usize + CLASSES[c],
            )
        };
        // SAFETY: `block` points into a slab's data.
        Ok(unsafe { NonNull::new_unchecked(block) })
    }

    /// A fresh slab of class `c`, in no list and not yet counted in the
    /// pool's statistics (it is in the process's locked account).
    fn new_slab(&self, c: usize) -> Result<*mut SlabMeta, SecretError> {
        let block = CLASSES[c];
        let data_len = data_pages(block) * PAGE;
        reserve_locked(data_len)?;
        let base = match sys::reserve_aligned(SLAB_SPAN, SLAB_SPAN, 0) {
            Ok(b) => b.as_ptr(),
            Err(errno) => {
                release_locked(data_len);
                return Err(SecretError::Map { errno });
            }
        };
        // SAFETY: the data pages lie inside the fresh reservation.
        let data = unsafe { base.add(DATA_OFFSET) };
        // SAFETY: the meta page and the data pages are unused parts of our
        // fresh reservation.
        let mapped = unsafe {
            sys::protect_rw(base, PAGE)
                .map_err(|errno| SecretError::Protect { errno })
                .and_then(|()| self.map_data(data, data_len))
        };
        let pages = match mapped {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: our reservation; nothing was written to its data.
                let _ = unsafe { sys::unmap(base, SLAB_SPAN) };
                release_locked(data_len);
                return Err(e);
            }
        };
        let meta = base.cast::<SlabMeta>();
        // SAFETY: the meta page is ours, writable and page-aligned.
        unsafe {
            meta.write(SlabMeta {
                magic: SLAB_MAGIC,
                pool: self,
                generation: fork::current(),
                class: c as u32,
                block,
                nblocks: data_len / block,
                data,
                data_len,
                pages,
                used: 0,
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
                bits: [0; WORDS],
            });
        }
        Ok(meta)
    }

    /// # Safety
    /// As `free`, for a slab block of class `c`.
    unsafe fn free_small(&self, p: *mut u8, size: usize, c: usize) {
        let meta = slab_meta(p);
        // SAFETY: a slab block's span starts with its meta page; its fixed
        // fields were written before the block was handed out.
        let (block, data, nblocks, mine) = unsafe {
            if (*meta).magic != SLAB_MAGIC
                || !ptr::eq((*meta).pool, self)
                || (*meta).class as usize != c
            {
                sys::fatal(
                    "free of a secret not from this pool (or wrong size) at",
                    p as usize,
                );
            }
            (
                (*meta).block,
                (*meta).data as usize,
                (*meta).nblocks,
                (*meta).generation == fork::current(),
            )
        };
        let off = (p as usize).wrapping_sub(data);
        if off % block != 0 || off / block >= nblocks {
            sys::fatal("free of an invalid secret pointer", p as usize);
        }
        let i = off / block;
        let mut st = self.lock();
        // SAFETY: the meta page is live (the block is); its mutable fields
        // are ours under the lock; the block's memory is ours to check and
        // wipe since it is still marked allocated.
        let release = unsafe {
            let bit = 1u64 << (i % 64);
            if (*meta).bits[i / 64] & bit == 0 {
                sys::fatal("double free of a secret at", p as usize);
            }
            if mine {
                if let Some(bad) = check_canary(self.key(), p as usize + size, p as usize + block) {
                    sys::fatal("secret overflow: canary overwritten at", bad);
                }
                wipe(p, block);
                st.live -= 1;
                st.bytes_live -= size;
            }
            (*meta).bits[i / 64] &= !bit;
            (*meta).used -= 1;
            if mine {
                // Slabs with free blocks move to the front of their list.
                st.unlink(c, meta);
                st.push_front(c, meta);
            }
            let release = (*meta).used == 0;
            if release && mine {
                st.unlink(c, meta);
                st.n_slabs -= 1;
                st.locked -= (*meta).data_len;
                st.guard_pages -= slab_guard_pages(block);
            }
            release
        };
        drop(st);
        if release {
            // SAFETY: the slab is empty and unlinked (or inherited through
            // fork and in no list); nobody can reach it any more.
            unsafe {
                if mine {
                    destroy_slab(meta);
                } else {
                    let (data, len, pages) = ((*meta).data, (*meta).data_len, (*meta).pages);
                    unmap_inherited(meta.cast(), SLAB_SPAN, data, len, pages);
                }
            }
        }
    }

    fn alloc_large(
        &self,
        size: usize,
        align: usize,
        seal: bool,
    ) -> Result<NonNull<u8>, SecretError> {
        let data_len = size
            .checked_next_multiple_of(PAGE)
            .ok_or(SecretError::CapacityOverflow)?;
        let total = data_len
            .checked_add(DATA_OFFSET + PAGE)
            .ok_or(SecretError::CapacityOverflow)?;
        reserve_locked(data_len)?;
        let reserved = if align > PAGE {
            sys::reserve_aligned(total, align, DATA_OFFSET)
        } else {
            sys::reserve(total)
        };
        let base = match reserved {
            Ok(b) => b.as_ptr(),
            Err(errno) => {
                release_locked(data_len);
                return Err(SecretError::Map { errno });
            }
        };
        // SAFETY: inside the reservation of `total` bytes.
        let data = unsafe { base.add(DATA_OFFSET) };
        // SAFETY: the meta page and the data pages are unused parts of our
        // fresh reservation.
        let mapped = unsafe {
            sys::protect_rw(base, PAGE)
                .map_err(|errno| SecretError::Protect { errno })
                .and_then(|()| self.map_data(data, data_len))
        };
        let fail = |e: SecretError| {
            // SAFETY: our reservation; no secret was written to it.
            let _ = unsafe { sys::unmap(base, total) };
            release_locked(data_len);
            Err(e)
        };
        let pages = match mapped {
            Ok(m) => m,
            Err(e) => return fail(e),
        };
        // The secret ends where the data pages end (to its alignment), so
        // a linear overflow faults on the guard page at once.
        let offset = if align > PAGE {
            0
        } else {
            data_len - size.next_multiple_of(align)
        };
        let p = data as usize + offset;
        let key = self.key();
        // SAFETY: the data pages are ours, writable, and hold no secret yet.
        unsafe {
            fill_canary(key, data as usize, p);
            fill_canary(key, p + size, data as usize + data_len);
            base.cast::<LargeMeta>().write(LargeMeta {
                magic: LARGE_MAGIC,
                pool: self,
                generation: fork::current(),
                sealed: seal,
                pages,
                base,
                total,
                data,
                data_len,
                ptr: p as *mut u8,
                size,
                exposed: Mutex::new(0),
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
            });
        }
        if seal {
            // SAFETY: our data pages; no reference into them exists.
            if let Err(errno) = unsafe { sys::protect_none(data, data_len) } {
                return fail(SecretError::Protect { errno });
            }
        }
        let mut st = self.lock();
        // SAFETY: the meta page was just written; the mapping is ours and
        // in no list.
        unsafe { st.push_large(base.cast()) };
        st.n_large += 1;
        st.live += 1;
        st.bytes_live += size;
        st.locked += data_len;
        st.guard_pages += 2;
        drop(st);
        // SAFETY: inside the data pages.
        Ok(unsafe { NonNull::new_unchecked(p as *mut u8) })
    }

    /// # Safety
    /// As `free`, for a secret with a mapping of its own.
    unsafe fn free_large(&self, p: *mut u8, size: usize) {
        let meta = large_meta(p);
        // SAFETY: a live large secret's mapping starts with its meta page,
        // written before the secret was handed out.
        let m = unsafe {
            if (*meta).magic != LARGE_MAGIC
                || !ptr::eq((*meta).pool, self)
                || (*meta).ptr != p
                || (*meta).size != size
            {
                sys::fatal(
                    "free of a secret not from this pool (or wrong size) at",
                    p as usize,
                );
            }
            &*meta
        };
        let (base, total, data, data_len) = (m.base, m.total, m.data, m.data_len);
        if m.generation != fork::current() {
            // Inherited through fork: the data is not ours to touch (and
            // not in this process's statistics or lists).
            // SAFETY: inherited, and unreachable once its secret is freed.
            unsafe { unmap_inherited(base, total, data, data_len, m.pages) };
            return;
        }
        // A sealed secret is unsealed to be wiped. If that fails the pages
        // are unmapped unwiped: the kernel frees them (secret memory is
        // zeroed by the kernel when freed).
        // SAFETY: our data pages; no guard is alive (the secret is freed).
        let readable = !m.sealed || unsafe { sys::protect_rw(data, data_len) }.is_ok();
        if readable {
            let key = self.key();
            // SAFETY: our data pages, readable and writable now.
            unsafe {
                let bad = check_canary(key, data as usize, p as usize)
                    .or_else(|| check_canary(key, p as usize + size, data as usize + data_len));
                if let Some(bad) = bad {
                    sys::fatal("secret overflow: canary overwritten at", bad);
                }
                wipe(data, data_len);
            }
        }
        let mut st = self.lock();
        // SAFETY: a live mapping of this process is in the list.
        unsafe { st.unlink_large(meta) };
        st.live -= 1;
        st.bytes_live -= size;
        st.n_large -= 1;
        st.locked -= data_len;
        st.guard_pages -= 2;
        drop(st);
        // SAFETY: wiped (or unreadable) and unreachable.
        unsafe { unmap_large(meta) };
    }

    /// Wipes and gives back every slab and large mapping of this process,
    /// whatever they still hold: the pool is going away.
    fn release_all(&self) {
        let mut st = self.lock();
        let mut large = core::mem::replace(&mut st.large, ptr::null_mut());
        let mut slabs = ptr::null_mut::<SlabMeta>();
        for c in 0..NCLASSES {
            let mut s = core::mem::replace(&mut st.slabs[c], ptr::null_mut());
            while !s.is_null() {
                // SAFETY: live slabs of this process, under the lock; the
                // class list is dropped whole and rebuilt as `slabs`.
                unsafe {
                    let next = (*s).next;
                    (*s).next = slabs;
                    slabs = s;
                    s = next;
                }
            }
        }
        *st = State {
            generation: st.generation,
            ..State::new()
        };
        drop(st);
        while !slabs.is_null() {
            // SAFETY: slabs of this process, out of every list.
            unsafe {
                let next = (*slabs).next;
                destroy_slab(slabs);
                slabs = next;
            }
        }
        while !large.is_null() {
            // SAFETY: mappings of this process, out of the list; nothing
            // may use them (the pool's last handle is gone).
            unsafe {
                let next = (*large).next;
                let m = &*large;
                // A sealed one is opened to be wiped; if that fails it is
                // unmapped unwiped, as in `free_large`.
                if !m.sealed || sys::protect_rw(m.data, m.data_len).is_ok() {
                    wipe(m.data, m.data_len);
                }
                unmap_large(large);
                large = next;
            }
        }
    }

    /// True if the live allocation `p` (made with these arguments) was
    /// inherited through `fork`: its memory is not this process's to read,
    /// write or protect.
    ///
    /// # Safety
    /// `p` is a live allocation of this pool made with these arguments.
    pub(crate) unsafe fn inherited(
        &self,
        p: NonNull<u8>,
        size: usize,
        align: usize,
        own_pages: bool,
    ) -> bool {
        let generation = match slab_class(size, align).filter(|_| !own_pages) {
            // SAFETY: the caller's contract: the meta page is mapped (an
            // inherited one too: only data pages are left out of a child).
            Some(_) => unsafe { (*slab_meta(p.as_ptr())).generation },
            // SAFETY: as above.
            None => unsafe { (*large_meta(p.as_ptr())).generation },
        };
        generation != fork::current()
    }
}

/// Wipes, unlocks and unmaps an unreachable slab of this process.
///
/// # Safety
/// `meta` is a slab of this process, empty (or of a pool that is going
/// away), that nothing can reach.
unsafe fn destroy_slab(meta: *mut SlabMeta) {
    // SAFETY: the caller's contract.
    unsafe {
        let (data, len, pages) = ((*meta).data, (*meta).data_len, (*meta).pages);
        // Free blocks are zero already; this also covers the blocks still
        // out when a pool goes away.
        wipe(data, len);
        if pages.mlocked {
            let _ = sys::unlock(data, len);
        }
        release_locked(len);
        let _ = sys::unmap(meta.cast(), SLAB_SPAN);
    }
}

/// Unlocks and unmaps a wiped large mapping of this process.
///
/// # Safety
/// `meta` heads a large mapping of this process whose data is wiped (or
/// unreadable) and that nothing can reach.
unsafe fn unmap_large(meta: *mut LargeMeta) {
    // SAFETY: the caller's contract.
    unsafe {
        let (base, total, data, len, pages) = (
            (*meta).base,
            (*meta).total,
            (*meta).data,
            (*meta).data_len,
            (*meta).pages,
        );
        if pages.mlocked {
            let _ = sys::unlock(data, len);
        }
        release_locked(len);
        let _ = sys::unmap(base, total);
    }
}

/// Opens a sealed secret's pages for one more exposure guard: read-only
/// for shared exposures, read-write for an exclusive one (the borrow rules
/// of the guards' owners never mix the two).
///
/// A secret inherited through `fork` whose data is absent in this process
/// (memfd_secret) is [`SecretError::Inherited`]: its range may hold a
/// mapping of the child's own now, which must keep its protection. (An
/// inherited anonymous one is the child's own zero pages.)
///
/// # Safety
/// `p` is a live secret with pages of its own (allocated with `seal`); a
/// `writable` exposure is the only one alive.
pub(crate) unsafe fn unseal(p: NonNull<u8>, writable: bool) -> Result<(), SecretError> {
    let meta = large_meta(p.as_ptr());
    // SAFETY: the caller's contract: the meta page is live.
    let m = unsafe { &*meta };
    if m.pages.in_child == InChild::Absent && m.generation != fork::current() {
        return Err(SecretError::Inherited);
    }
    let mut n = m.exposed.lock().unwrap_or_else(PoisonError::into_inner);
    if *n == 0 {
        // SAFETY: our data pages; a read-only exposure writes nothing.
        let r = unsafe {
            if writable {
                sys::protect_rw(m.data, m.data_len)
            } else {
                sys::protect_ro(m.data, m.data_len)
            }
        };
        r.map_err(|errno| SecretError::Protect { errno })?;
    }
    *n += 1;
    Ok(())
}

/// Ends one exposure of a sealed secret; the last one seals it again. If
/// sealing fails the pages stay readable (nothing is lost but the seal).
///
/// # Safety
/// `p` is a live sealed secret with an exposure begun by `unseal`, and no
/// reference from that exposure is alive.
pub(crate) unsafe fn reseal(p: NonNull<u8>) {
    let meta = large_meta(p.as_ptr());
    // SAFETY: the caller's contract: the meta page is live.
    let m = unsafe { &*meta };
    let mut n = m.exposed.lock().unwrap_or_else(PoisonError::into_inner);
    *n = n.saturating_sub(1);
    if *n == 0 {
        // SAFETY: no exposure is alive, so no reference into the pages.
        let _ = unsafe { sys::protect_none(m.data, m.data_len) };
    }
}

/// Whether `memfd_secret(2)` works here: the call succeeds and its memory
/// can be mapped (a mapping refused for the locked-memory limit still
/// counts as "works": the limit applies to either backing).
pub(crate) fn probe_memfd_secret() -> bool {
    let Ok(fd) = SecretFd::new() else {
        return false;
    };
    if fd.set_len(PAGE).is_err() {
        return false;
    }
    let Ok(r) = sys::reserve(PAGE) else {
        return false;
    };
    // SAFETY: maps over our own fresh one-page reservation.
    let ok = match unsafe { fd.map_fixed(r.as_ptr(), PAGE) } {
        Ok(()) => true,
        Err(e) => e == libc::EAGAIN || e == libc::ENOMEM || e == libc::EPERM,
    };
    // SAFETY: our reservation (or mapping), unused.
    let _ = unsafe { sys::unmap(r.as_ptr(), PAGE) };
    ok
}
