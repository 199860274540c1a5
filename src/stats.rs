//! One table of process-wide counters. They change only on slow paths
//! (system calls, page and segment hand-overs), never on the fast path, so
//! a relaxed atomic add each is cheap enough and needs no per-thread merge.

use crate::sync::{AtomicUsize, Ordering};

#[derive(Clone, Copy)]
#[repr(usize)]
pub(crate) enum Counter {
    MappedBytes,
    SlabBytes,
    LargeBytes,
    LargeCachedBytes,
    Segments,
    LargeMappings,
    AbandonedSegments,
    Heaps,
    MmapCalls,
    MunmapCalls,
    MremapCalls,
    MadviseCalls,
}
const COUNTERS: usize = Counter::MadviseCalls as usize + 1;

pub(crate) struct Counters([AtomicUsize; COUNTERS]);

pub(crate) static STATS: Counters = Counters([const { AtomicUsize::new(0) }; COUNTERS]);

impl Counters {
    #[inline]
    pub(crate) fn add(&self, c: Counter, n: usize) {
        self.0[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn sub(&self, c: Counter, n: usize) {
        self.0[c as usize].fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self, c: Counter) -> usize {
        self.0[c as usize].load(Ordering::Relaxed)
    }
}

/// A snapshot of the allocator's counters. Taking one allocates nothing.
///
/// Byte figures are at the granularity the allocator manages: a slab page
/// counts as in use while any block in it is (so `in_use_bytes` is an upper
/// bound on the bytes the program holds, never below it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Address space currently mapped from the OS (segments, large
    /// mappings, metadata, caches).
    pub mapped_bytes: usize,
    /// `slab_bytes + large_bytes`.
    pub in_use_bytes: usize,
    /// Bytes of slab pages currently handed to a heap.
    pub slab_bytes: usize,
    /// Bytes of live large mappings (header page included).
    pub large_bytes: usize,
    /// Bytes of freed large mappings kept for reuse.
    pub large_cached_bytes: usize,
    /// Live 4 MiB segments (owned, abandoned or cached).
    pub segments: usize,
    /// Live large blocks.
    pub large_mappings: usize,
    /// Segments whose thread exited and that no thread has reclaimed yet.
    pub abandoned_segments: usize,
    /// Thread heaps in use.
    pub heaps: usize,
    /// `mmap` calls made so far.
    pub mmap_calls: u64,
    /// `munmap` calls made so far.
    pub munmap_calls: u64,
    /// `mremap` calls made so far.
    pub mremap_calls: u64,
    /// `madvise` calls made so far.
    pub madvise_calls: u64,
}

/// Reads the counters. Allocates nothing and takes no lock.
pub fn stats() -> Stats {
    let s = &STATS;
    let slab = s.get(Counter::SlabBytes);
    let large = s.get(Counter::LargeBytes);
    Stats {
        mapped_bytes: s.get(Counter::MappedBytes),
        in_use_bytes: slab + large,
        slab_bytes: slab,
        large_bytes: large,
        large_cached_bytes: s.get(Counter::LargeCachedBytes),
        segments: s.get(Counter::Segments),
        large_mappings: s.get(Counter::LargeMappings),
        abandoned_segments: s.get(Counter::AbandonedSegments),
        heaps: s.get(Counter::Heaps),
        mmap_calls: s.get(Counter::MmapCalls) as u64,
        munmap_calls: s.get(Counter::MunmapCalls) as u64,
        mremap_calls: s.get(Counter::MremapCalls) as u64,
        madvise_calls: s.get(Counter::MadviseCalls) as u64,
    }
}
