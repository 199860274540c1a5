//! Large blocks (above `SMALL_MAX`, or aligned beyond a slab's reach): each
//! gets its own mapping, starting at a segment-aligned header page so that
//! `free` finds it with the same mask as a small block.
//!
//! A freed mapping is kept whole and populated in a small cache, bounded in
//! bytes (`MAPALLOC_LARGE_CACHE_BYTES`) and time (`MAPALLOC_LARGE_CACHE_MS`),
//! and reused by the next large request that fits: faulting in and zeroing
//! fresh pages is what makes a mapping per buffer slow, not the system
//! call. After the delay it is unmapped.
//!
//! A *fenced* block (hardened mode's, see `hardened::large`) ends at a
//! guard page instead, is never cached, and records the size asked for.

use crate::fixed::FixedVec;
use crate::mode::Zero;
use crate::os::{self, OS_PAGE};
use crate::registry;
use crate::segment::{Header, Kind, SEGMENT_SIZE};
use crate::stats::{Counter, STATS};
use crate::sync::{AtomicPtr, AtomicU64, Ordering, SpinLock};
use core::ptr;

#[repr(C)]
pub(crate) struct Large {
    header: Header,
    /// Length of the whole mapping, header page included.
    map_len: usize,
    /// Distance from the mapping's start to the block.
    offset: usize,
    /// Bytes of the trailing guard page (a fenced block), else 0.
    guard: usize,
    /// A fenced block: the size asked for.
    requested: usize,
}

/// Where the block starts in its mapping: one header page, or the
/// alignment if larger. Above one segment the header sits one segment
/// below the block (see `segment_of`).
fn block_offset(align: usize) -> usize {
    align.clamp(OS_PAGE, SEGMENT_SIZE)
}

fn mapping_len(offset: usize, size: usize) -> Option<usize> {
    let len = offset
        .checked_add(size)?
        .checked_next_multiple_of(OS_PAGE)?;
    (len <= isize::MAX as usize).then_some(len)
}

/// # Safety
/// None beyond Rust's: returns null or a block of `size` bytes aligned to
/// `align` (a power of two).
pub(crate) unsafe fn alloc(size: usize, align: usize, zero: Zero) -> *mut u8 {
    let offset = block_offset(align);
    let Some(len) = mapping_len(offset, size) else {
        return ptr::null_mut();
    };
    purge_expired(os::now_ms());
    if align <= SEGMENT_SIZE
        && let Some((base, map_len)) = CACHE.take(len)
    {
        // SAFETY: a cached mapping is ours, at least `len` bytes long.
        unsafe {
            let block = base.add(offset);
            if zero == Zero::Yes {
                ptr::write_bytes(block, 0, size);
            }
            return finish(base, map_len, offset);
        }
    }
    match map_block(len, align, offset) {
        // Fresh anonymous memory is already zero: no memset for Zero::Yes.
        // SAFETY: a fresh mapping of `len` bytes.
        Some(base) => unsafe {
            os::advise_huge(base.as_ptr(), len);
            if crate::options::prefault() {
                os::prefault(base.as_ptr(), len);
            }
            finish(base.as_ptr(), len, offset)
        },
        None => ptr::null_mut(),
    }
}

/// A fresh mapping of `len` bytes for a block at `offset` aligned to
/// `align`. If the OS refuses (an address-space limit, the map count), the
/// mappings the caches keep are unmapped and it is asked once more: they
/// hold address space, and neither the fenced cache's quarantined ones nor
/// empty segments could have served the request.
fn map_block(len: usize, align: usize, offset: usize) -> Option<core::ptr::NonNull<u8>> {
    let map = || {
        if align <= SEGMENT_SIZE {
            os::map_aligned(len, SEGMENT_SIZE, 0)
        } else {
            os::map_aligned(len, align, offset)
        }
    };
    retry_after_release(map)
}

/// `map()`, and if the OS refuses, `map()` again once the caches have
/// given their address space back (when they held any).
pub(crate) fn retry_after_release<T>(map: impl Fn() -> Option<T>) -> Option<T> {
    map().or_else(|| release_cached().then(map).flatten())
}

/// Unmaps every mapping the caches keep (large blocks, fenced blocks,
/// empty segments): address space a refused `mmap` may need, and what
/// `collect()` gives back. False if there was none.
pub(crate) fn release_cached() -> bool {
    let segments = crate::segment::SEGMENT_CACHE.drain();
    if STATS.get(Counter::LargeCachedBytes) == 0 {
        return segments;
    }
    purge_all();
    true
}

/// A fenced block of `size` bytes aligned to `align`: a fresh mapping
/// whose block ends at a `PROT_NONE` guard page, as close as the
/// alignment allows (to the byte for a size that is a multiple of it;
/// alignments above a page leave the block at the start). Fresh memory
/// reads as zero.
pub(crate) fn alloc_fenced(size: usize, align: usize) -> *mut u8 {
    let offset = block_offset(align);
    let Some(body) = size.checked_next_multiple_of(OS_PAGE) else {
        return ptr::null_mut();
    };
    let Some(len) = mapping_len(offset, body).and_then(|l| l.checked_add(OS_PAGE)) else {
        return ptr::null_mut();
    };
    if align <= OS_PAGE
        && let Some(p) = reuse_fenced(size, align, len)
    {
        return p;
    }
    let Some(base) = map_block(len, align, offset) else {
        return ptr::null_mut();
    };
    let base = base.as_ptr();
    os::advise_huge(base, len);
    if crate::options::prefault() {
        os::prefault(base, len - OS_PAGE); // not the guard page
    }
    // SAFETY: the guard is the last page of our fresh mapping.
    if !os::protect_none(unsafe { base.add(len - OS_PAGE) }, OS_PAGE) {
        os::unmap(base, len);
        return ptr::null_mut();
    }
    let a = align.max(crate::size_class::MIN_ALIGN);
    let slack = if a <= OS_PAGE {
        body - size.next_multiple_of(a)
    } else {
        0
    };
    // SAFETY: a fresh mapping of `len` bytes; the header is completed
    // after `finish` wrote it.
    unsafe {
        let p = finish(base, len, offset + slack);
        if !p.is_null() {
            (*base.cast::<Large>()).guard = OS_PAGE;
            (*base.cast::<Large>()).requested = size;
        }
        p
    }
}

/// A fenced block of `size` bytes (aligned to `align`, at most a page) in
/// a freed fenced mapping of at least `len` bytes from `FENCED`, or None.
/// The mapping's guard stays where it is; the block ends at it, and the
/// pages from the block's first to the guard are opened and zeroed (they
/// hold their last owner's bytes: the program sees none of them).
fn reuse_fenced(size: usize, align: usize, len: usize) -> Option<*mut u8> {
    let a = align.max(crate::size_class::MIN_ALIGN);
    let rounded = size.checked_next_multiple_of(a)?;
    // The block must start within the first segment of the mapping, where
    // `segment_of` finds the header: at most `SEGMENT_SIZE` past its base.
    let most = (SEGMENT_SIZE + OS_PAGE).checked_add(rounded)?;
    let (base, map_len) = FENCED.take(len, most)?;
    let guard = map_len - OS_PAGE;
    let offset = guard - rounded;
    let open = offset & !(OS_PAGE - 1);
    // SAFETY: `[open, guard)` lies in the mapping, past its header page
    // (`offset >= OS_PAGE`: the mapping holds a header page and `len`).
    unsafe {
        if !os::protect_rw(base.add(open), guard - open) {
            os::unmap(base, map_len);
            return None;
        }
        ptr::write_bytes(base.add(open), 0, guard - open);
        let p = finish(base, map_len, offset);
        if !p.is_null() {
            (*base.cast::<Large>()).guard = OS_PAGE;
            (*base.cast::<Large>()).requested = size;
        }
        (!p.is_null()).then_some(p)
    }
}

/// Freed fenced mappings, all but their header page `PROT_NONE` (a read
/// or write after free still faults), kept a while for the next fenced
/// block that fits: mapping each block afresh faulted its pages in every
/// time (hardened `prodcons`, whose blocks of 128-256 KiB are fenced: 311k
/// page faults and 1.3 s in the kernel, against 5k for the default).
/// Reuse costs an `mprotect` and a `memset` of the block instead. Bounded
/// like the large cache: `MAPALLOC_LARGE_CACHE_BYTES`, 16 entries,
/// `MAPALLOC_LARGE_CACHE_MS`. The last `FENCED_QUARANTINE` mappings freed
/// are not reused: `free(p); q = malloc(n)` must not hand `p`'s pages to
/// `q`, where a dangling `p` would read and write them.
static FENCED: Fenced = Fenced(SpinLock::new(FencedState {
    entries: FixedVec::new(NO_ENTRY),
    bytes: 0,
    recent: [ptr::null_mut(); FENCED_QUARANTINE],
    next_recent: 0,
}));

/// Fenced frees a freed fenced mapping waits through before its reuse.
const FENCED_QUARANTINE: usize = 4;

struct Fenced(SpinLock<FencedState>);

struct FencedState {
    entries: FixedVec<Entry, CACHE_ENTRIES>,
    bytes: usize,
    /// The bases of the last `FENCED_QUARANTINE` mappings put (a ring).
    recent: [*mut u8; FENCED_QUARANTINE],
    next_recent: usize,
}

// SAFETY: the entries are mappings owned by the cache, used under its lock.
unsafe impl Send for FencedState {}

impl Fenced {
    /// Keeps freed fenced mapping `[base, base+len)`, closed; false if it
    /// cannot (the caller unmaps it).
    fn put(&self, base: *mut u8, len: usize) -> bool {
        let limit = crate::options::LARGE_CACHE_BYTES.get();
        // SAFETY: the data part of our mapping (between its header page and
        // its guard), which no block uses any more.
        if len > limit || !os::protect_none(unsafe { base.add(OS_PAGE) }, len - 2 * OS_PAGE) {
            return false;
        }
        let mut victims = Victims::new();
        {
            let mut st = self.0.lock();
            while st.entries.len() > 0 && (st.entries.is_full() || st.bytes + len > limit) {
                let i = oldest(st.entries.as_slice());
                if let Some(e) = st.entries.swap_remove(i) {
                    st.bytes -= e.len;
                    STATS.sub(Counter::LargeCachedBytes, e.len);
                    victims.push(e);
                }
            }
            let e = Entry {
                base,
                len,
                freed_at: os::now_ms(),
            };
            if st.entries.push(e).is_ok() {
                st.bytes += len;
                STATS.add(Counter::LargeCachedBytes, len);
                let delay = crate::options::LARGE_CACHE_MS.get() as u64;
                NEXT_EXPIRY.fetch_min(e.freed_at.saturating_add(delay), Ordering::Relaxed);
                let at = st.next_recent % FENCED_QUARANTINE;
                st.recent[at] = base;
                st.next_recent = at + 1;
            } else {
                victims.push(e);
            }
        }
        victims.unmap();
        true
    }

    /// The smallest kept mapping of at least `len` bytes and at most twice
    /// that (and at most `most`), out of quarantine, taken out of the cache.
    fn take(&self, len: usize, most: usize) -> Option<(*mut u8, usize)> {
        let mut st = self.0.lock();
        let recent = st.recent;
        let i = st
            .entries
            .as_slice()
            .iter()
            .enumerate()
            .filter(|(_, e)| e.len >= len && e.len / 2 <= len && e.len <= most)
            .filter(|(_, e)| !recent.contains(&e.base))
            .min_by_key(|(_, e)| e.len)?
            .0;
        let e = st.entries.swap_remove(i)?;
        st.bytes -= e.len;
        STATS.sub(Counter::LargeCachedBytes, e.len);
        Some((e.base, e.len))
    }

    /// Unmaps the kept mappings older than the delay (all, with `All`),
    /// and lowers the next expiry to its oldest left.
    fn evict(&self, now: u64, which: Evict) {
        let delay = crate::options::LARGE_CACHE_MS.get() as u64;
        let mut victims = Victims::new();
        {
            let mut st = self.0.lock();
            let mut i = 0;
            while let Some(&e) = st.entries.as_slice().get(i) {
                if which == Evict::All || now.saturating_sub(e.freed_at) >= delay {
                    let _ = st.entries.swap_remove(i);
                    st.bytes -= e.len;
                    STATS.sub(Counter::LargeCachedBytes, e.len);
                    victims.push(e);
                } else {
                    i += 1;
                }
            }
            if let Some(oldest) = st.entries.as_slice().iter().map(|e| e.freed_at).min() {
                NEXT_EXPIRY.fetch_min(oldest.saturating_add(delay), Ordering::Relaxed);
            }
        }
        victims.unmap();
    }
}

/// The size asked for of a fenced block, and where its guard page starts.
///
/// # Safety
/// `large` heads a live fenced mapping.
pub(crate) unsafe fn fenced_extent(large: *mut Large) -> (usize, *mut u8) {
    // SAFETY: the caller's contract.
    unsafe {
        let guard_at = large.cast::<u8>().add((*large).map_len - (*large).guard);
        ((*large).requested, guard_at)
    }
}

/// Resizes a fenced block without copying it: its start stays, the
/// mapping grows (with `mremap`, moving the pages if it must) or shrinks,
/// and the guard page moves to the page after its new end. Returns the
/// block (possibly moved), or null with the block untouched.
///
/// # Safety
/// `large` heads a live fenced mapping whose block the caller owns.
pub(crate) unsafe fn realloc_fenced(large: *mut Large, new_size: usize) -> *mut u8 {
    // SAFETY: the caller's contract; the header moves with the pages.
    unsafe {
        let (base, len, offset) = (large.cast::<u8>(), (*large).map_len, (*large).offset);
        let Some(end) = offset
            .checked_add(new_size)
            .and_then(|e| e.checked_next_multiple_of(OS_PAGE))
            .filter(|&e| e <= isize::MAX as usize - OS_PAGE)
        else {
            return ptr::null_mut();
        };
        let old_end = len - OS_PAGE;
        if end == old_end {
            (*large).requested = new_size;
            return base.add(offset);
        }
        if end < old_end {
            // Shrink: a new guard, and the pages past it go.
            if !os::protect_none(base.add(end), OS_PAGE) {
                return ptr::null_mut();
            }
            if os::unmap(base.add(end + OS_PAGE), len - end - OS_PAGE) {
                (*large).map_len = end + OS_PAGE;
                STATS.sub(Counter::LargeBytes, len - end - OS_PAGE);
            } else {
                // The tail stays mapped (counted) behind the new guard.
                os::protect_none(base.add(end + OS_PAGE), len - end - OS_PAGE);
            }
            (*large).requested = new_size;
            return base.add(offset);
        }
        // Grow. `mremap` moves one mapping, so the old guard is opened
        // first and the whole becomes one read-write range.
        let new_len = end + OS_PAGE;
        if !os::protect_rw(base.add(old_end), OS_PAGE) {
            return ptr::null_mut();
        }
        let moved = if os::remap_in_place(base, len, new_len) {
            base
        } else {
            match remap_moving(base, len, new_len, offset) {
                Some(target) => target,
                None => {
                    os::protect_none(base.add(old_end), OS_PAGE);
                    return ptr::null_mut();
                }
            }
        };
        // Should the new guard be refused (the map-count limit), the block
        // is still whole and ours; it only goes unfenced.
        os::protect_none(moved.add(end), OS_PAGE);
        let header = moved.cast::<Large>();
        (*header).map_len = new_len;
        (*header).requested = new_size;
        STATS.add(Counter::LargeBytes, new_len - len);
        moved.add(offset)
    }
}

/// Moves mapping `[base, base+len)` to a fresh segment-aligned reservation
/// of `new_len` bytes with `mremap` (its pages moved, not copied) and
/// registers it there; None (nothing changed) if it cannot.
fn remap_moving(base: *mut u8, len: usize, new_len: usize, offset: usize) -> Option<*mut u8> {
    if offset > SEGMENT_SIZE {
        return None;
    }
    let target = os::map_aligned(new_len, SEGMENT_SIZE, 0)?.as_ptr();
    if !os::remap_to(base, len, new_len, target) {
        os::unmap(target, new_len);
        return None;
    }
    registry::remove(base as usize);
    // The target was mapped in the 47-bit space like every mapping of
    // ours, so setting its bit cannot fail.
    registry::insert(target as usize);
    Some(target)
}

/// True if `p` is the block of the large mapping `large` heads.
///
/// # Safety
/// `large` heads a registered large mapping.
pub(crate) unsafe fn is_block(large: *mut Large, p: *mut u8) -> bool {
    // SAFETY: the caller's contract.
    unsafe { large as usize + (*large).offset == p as usize }
}

/// Writes the header, registers and counts a live large block; null (the
/// mapping given back) if the registry cannot hold its address.
unsafe fn finish(base: *mut u8, map_len: usize, offset: usize) -> *mut u8 {
    if !registry::insert(base as usize) {
        os::unmap(base, map_len);
        return ptr::null_mut();
    }
    // SAFETY: `base` starts a mapping of ours at least one page long.
    unsafe {
        base.cast::<Large>().write(Large {
            header: Header {
                owner: AtomicPtr::new(ptr::null_mut()),
                kind: Kind::Large,
            },
            map_len,
            offset,
            guard: 0,
            requested: 0,
        });
        STATS.add(Counter::LargeMappings, 1);
        STATS.add(Counter::LargeBytes, map_len);
        base.add(offset)
    }
}

/// # Safety
/// `large` heads a live large mapping whose block is not used again.
pub(crate) unsafe fn free(large: *mut Large) {
    // SAFETY: the caller's contract.
    let (base, len, offset, guard) = unsafe {
        (
            large.cast::<u8>(),
            (*large).map_len,
            (*large).offset,
            (*large).guard,
        )
    };
    registry::remove(base as usize);
    STATS.sub(Counter::LargeMappings, 1);
    STATS.sub(Counter::LargeBytes, len);
    // Mappings placed for alignments above a segment do not fit the
    // caches' segment-aligned reuse; they go straight back.
    let kept = if guard != 0 {
        offset <= SEGMENT_SIZE && FENCED.put(base, len)
    } else {
        offset <= SEGMENT_SIZE && CACHE.put(base, len)
    };
    if !kept {
        // A refused munmap (map-count limit) leaves the range mapped and
        // unregistered: leaked address space, counted in `mapped_bytes`,
        // never handed out again.
        os::unmap(base, len);
    }
}

/// Usable bytes of the large block at `p`: up to the end of its mapping,
/// or for a fenced block the size asked for.
///
/// # Safety
/// `large` heads a live large mapping.
pub(crate) unsafe fn usable_size(large: *mut Large) -> usize {
    // SAFETY: the caller's contract.
    unsafe {
        if (*large).guard != 0 {
            (*large).requested
        } else {
            (*large).map_len - (*large).offset
        }
    }
}

/// Resizes a large block, moving its pages with `mremap` rather than
/// copying them. Returns null (the block untouched) if that is impossible;
/// the caller then falls back to allocate-copy-free.
///
/// # Safety
/// `large` heads a live large mapping whose block the caller owns.
pub(crate) unsafe fn realloc(large: *mut Large, new_size: usize) -> *mut u8 {
    // SAFETY: the caller's contract; the header moves with the pages.
    unsafe {
        let (old_len, offset) = ((*large).map_len, (*large).offset);
        debug_assert!((*large).guard == 0, "fenced blocks resize with realloc_fenced");
        let base = large.cast::<u8>();
        let Some(new_len) = mapping_len(offset, new_size) else {
            return ptr::null_mut();
        };
        if new_len <= old_len {
            // Shrinking in place cannot move; release the tail if it is
            // worth a system call (a quarter or more).
            if new_len < old_len - old_len / 4 && os::remap_in_place(base, old_len, new_len) {
                (*large).map_len = new_len;
                STATS.sub(Counter::LargeBytes, old_len - new_len);
            }
            return base.add(offset);
        }
        if os::remap_in_place(base, old_len, new_len) {
            (*large).map_len = new_len;
            STATS.add(Counter::LargeBytes, new_len - old_len);
            return base.add(offset);
        }
        let Some(target) = remap_moving(base, old_len, new_len, offset) else {
            return ptr::null_mut();
        };
        let moved = target.cast::<Large>();
        (*moved).map_len = new_len;
        STATS.add(Counter::LargeBytes, new_len - old_len);
        target.add(offset)
    }
}

/// When the oldest cached mapping expires (u64::MAX: cache empty). Lets
/// the frequent callers skip the lock.
static NEXT_EXPIRY: AtomicU64 = AtomicU64::new(u64::MAX);

/// Takes the cache lock across `fork` (see `thread::fork_prepare`).
pub(crate) fn fork_lock() {
    core::mem::forget(CACHE.0.lock());
    core::mem::forget(FENCED.0.lock());
}

/// # Safety
/// `fork_lock` was called and its guards forgotten.
pub(crate) unsafe fn fork_unlock() {
    // SAFETY: forwarded.
    unsafe {
        FENCED.0.force_unlock();
        CACHE.0.force_unlock();
    }
}

/// Unmaps cached mappings older than the delay.
pub(crate) fn purge_expired(now: u64) {
    if now >= NEXT_EXPIRY.load(Ordering::Relaxed) {
        // The plain cache sets the next expiry from its entries; the fenced
        // one then lowers it to its own oldest.
        CACHE.evict(now, Evict::Expired);
        FENCED.evict(now, Evict::Expired);
    }
}

/// Unmaps every cached mapping.
pub(crate) fn purge_all() {
    CACHE.evict(os::now_ms(), Evict::All);
    FENCED.evict(os::now_ms(), Evict::All);
}

const CACHE_ENTRIES: usize = 16;

/// The cache holds `MAPALLOC_LARGE_CACHE_BYTES`, or half the bytes of live
/// large blocks if that is more: a program that holds many large buffers
/// churns them at that scale (measured: with 300 MiB of 5-25 MiB buffers
/// live, a 64 MiB cache left mapalloc 1.3x behind glibc, a 128 MiB one put
/// it 1.2x ahead). So the cache costs at most half the program's own large
/// footprint, for at most `MAPALLOC_LARGE_CACHE_MS`. 0 disables it.
fn cache_limit() -> usize {
    let floor = crate::options::LARGE_CACHE_BYTES.get();
    if floor == 0 {
        return 0;
    }
    floor.max(crate::stats::STATS.get(Counter::LargeBytes) / 2)
}

#[derive(Clone, Copy)]
struct Entry {
    base: *mut u8,
    len: usize,
    freed_at: u64,
}

struct CacheState {
    entries: FixedVec<Entry, CACHE_ENTRIES>,
    bytes: usize,
}

// SAFETY: the entries are mappings owned by the cache, used under its lock.
unsafe impl Send for CacheState {}

struct Cache(SpinLock<CacheState>);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Evict {
    Expired,
    All,
}

/// The index of the entry freed longest ago (0 if there is none).
fn oldest(entries: &[Entry]) -> usize {
    entries
        .iter()
        .enumerate()
        .min_by_key(|(_, e)| e.freed_at)
        .map_or(0, |(i, _)| i)
}

const NO_ENTRY: Entry = Entry {
    base: ptr::null_mut(),
    len: 0,
    freed_at: 0,
};

static CACHE: Cache = Cache(SpinLock::new(CacheState {
    entries: FixedVec::new(NO_ENTRY),
    bytes: 0,
}));

/// Mappings pushed out of the cache, unmapped after its lock is dropped.
struct Victims(FixedVec<Entry, { CACHE_ENTRIES + 1 }>);

impl Victims {
    fn new() -> Self {
        Self(FixedVec::new(NO_ENTRY))
    }

    fn push(&mut self, e: Entry) {
        if let Err(e) = self.0.push(e) {
            os::unmap(e.base, e.len);
        }
    }

    fn unmap(&self) {
        for v in self.0.as_slice() {
            os::unmap(v.base, v.len);
        }
    }
}

impl CacheState {
    /// Adds a free mapping, merged with cached neighbours that touch it,
    /// making room (oldest first) within the byte and entry bounds.
    fn insert(&mut self, mut e: Entry, victims: &mut Victims) {
        let mut i = 0;
        while let Some(&n) = self.entries.as_slice().get(i) {
            if n.base as usize == e.base as usize + e.len {
                self.remove(i);
                e.len += n.len;
            } else if n.base as usize + n.len == e.base as usize {
                self.remove(i);
                e = Entry {
                    base: n.base,
                    len: n.len + e.len,
                    freed_at: e.freed_at.max(n.freed_at),
                };
            } else {
                i += 1;
            }
        }
        let max = cache_limit();
        while self.entries.len() > 0 && (self.entries.is_full() || self.bytes + e.len > max) {
            let i = oldest(self.entries.as_slice());
            if let Some(v) = self.remove(i) {
                victims.push(v);
            }
        }
        if e.len > max || self.entries.push(e).is_err() {
            victims.push(e);
            return;
        }
        self.bytes += e.len;
        STATS.add(Counter::LargeCachedBytes, e.len);
        let delay = crate::options::LARGE_CACHE_MS.get() as u64;
        NEXT_EXPIRY.fetch_min(e.freed_at.saturating_add(delay), Ordering::Relaxed);
    }

    fn remove(&mut self, i: usize) -> Option<Entry> {
        let e = self.entries.swap_remove(i)?;
        self.bytes -= e.len;
        STATS.sub(Counter::LargeCachedBytes, e.len);
        Some(e)
    }
}

impl Cache {
    /// A cached mapping for a request of `len` bytes, populated pages
    /// kept. The smallest one that holds it is used, its tail beyond the
    /// next segment boundary split off and left in the cache (a split
    /// costs no system call: the tail gets its own header page at an
    /// aligned address). If none holds it, the largest smaller one is grown
    /// with `mremap`, its pages moved rather than copied.
    fn take(&self, len: usize) -> Option<(*mut u8, usize)> {
        let mut victims = Victims::new();
        let e = {
            let mut st = self.0.lock();
            let entries = st.entries.as_slice();
            let fit = entries
                .iter()
                .enumerate()
                .filter(|(_, x)| x.len >= len)
                .min_by_key(|(_, x)| x.len);
            let smaller = entries
                .iter()
                .enumerate()
                .filter(|(_, x)| x.len < len)
                .max_by_key(|(_, x)| x.len);
            let i = fit.or(smaller)?.0;
            let mut e = st.remove(i)?;
            let used = len.next_multiple_of(SEGMENT_SIZE);
            if e.len > used {
                let tail = Entry {
                    // SAFETY: `used < e.len`, inside the cached mapping.
                    base: unsafe { e.base.add(used) },
                    len: e.len - used,
                    freed_at: e.freed_at,
                };
                st.insert(tail, &mut victims);
                e.len = used;
            }
            e
        };
        victims.unmap();
        if e.len >= len {
            return Some((e.base, e.len));
        }
        if os::remap_in_place(e.base, e.len, len) {
            return Some((e.base, len));
        }
        if let Some(target) = os::map_aligned(len, SEGMENT_SIZE, 0) {
            if os::remap_to(e.base, e.len, len, target.as_ptr()) {
                return Some((target.as_ptr(), len));
            }
            os::unmap(target.as_ptr(), len);
        }
        // Could not grow it: the caller maps fresh memory; this one goes.
        os::unmap(e.base, e.len);
        None
    }

    fn put(&self, base: *mut u8, len: usize) -> bool {
        if len > cache_limit() {
            return false;
        }
        let mut victims = Victims::new();
        self.0.lock().insert(
            Entry {
                base,
                len,
                freed_at: os::now_ms(),
            },
            &mut victims,
        );
        victims.unmap();
        true
    }

    fn evict(&self, now: u64, which: Evict) {
        let delay = crate::options::LARGE_CACHE_MS.get() as u64;
        let mut victims = Victims::new();
        {
            let mut st = self.0.lock();
            let mut i = 0;
            while let Some(e) = st.entries.as_slice().get(i) {
                if which == Evict::All || now.saturating_sub(e.freed_at) >= delay {
                    if let Some(v) = st.remove(i) {
                        victims.push(v);
                    }
                } else {
                    i += 1;
                }
            }
            let oldest = st.entries.as_slice().iter().map(|e| e.freed_at).min();
            let next = oldest.map_or(u64::MAX, |t| t.saturating_add(delay));
            NEXT_EXPIRY.store(next, Ordering::Relaxed);
        }
        victims.unmap();
    }
}
