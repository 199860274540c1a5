//! Invariants of `mapalloc::stats()` shared by the stats test binaries.

use super::MIB;
use mapalloc::Stats;

pub const SEGMENT: usize = 4 * MIB;
/// Comfortably above every small/medium size class, so always a dedicated
/// large mapping.
pub const LARGE: usize = 2 * MIB + 123;

/// Invariants that hold whenever no other thread is allocating.
#[track_caller]
pub fn assert_consistent(s: &Stats, when: &str) {
    assert!(
        s.mapped_bytes >= s.in_use_bytes,
        "{when}: mapped_bytes < in_use_bytes: {s:?}"
    );
    assert_eq!(
        s.in_use_bytes,
        s.slab_bytes + s.large_bytes,
        "{when}: in_use_bytes != slab_bytes + large_bytes: {s:?}"
    );
    assert!(
        s.mapped_bytes >= s.segments * SEGMENT + s.large_bytes + s.large_cached_bytes,
        "{when}: mapped_bytes does not cover segments + large + cached: {s:?}"
    );
    assert!(
        s.large_bytes >= s.large_mappings * LARGE.min(4096),
        "{when}: {s:?}"
    );
    assert!(
        s.abandoned_segments <= s.segments,
        "{when}: more abandoned segments than segments: {s:?}"
    );
}

/// The `*_calls` counters never go down.
#[track_caller]
pub fn assert_calls_monotonic(a: &Stats, b: &Stats, when: &str) {
    assert!(
        b.mmap_calls >= a.mmap_calls,
        "{when}: mmap_calls went down: {a:?} -> {b:?}"
    );
    assert!(
        b.munmap_calls >= a.munmap_calls,
        "{when}: munmap_calls went down: {a:?} -> {b:?}"
    );
    assert!(
        b.mremap_calls >= a.mremap_calls,
        "{when}: mremap_calls went down: {a:?} -> {b:?}"
    );
    assert!(
        b.madvise_calls >= a.madvise_calls,
        "{when}: madvise_calls went down: {a:?} -> {b:?}"
    );
}
