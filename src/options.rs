//! The `MAPALLOC_*` options: one table, read once at start-up with
//! `getenv` (which does not allocate), then plain relaxed loads.

use crate::os;
use crate::sync::{AtomicUsize, Ordering};

pub(crate) struct Opt {
    env: &'static core::ffi::CStr,
    value: AtomicUsize,
}

impl Opt {
    const fn new(env: &'static core::ffi::CStr, default: usize) -> Self {
        Self {
            env,
            value: AtomicUsize::new(default),
        }
    }

    #[inline]
    pub(crate) fn get(&self) -> usize {
        self.value.load(Ordering::Relaxed)
    }

    /// Sets the option from code (after `init`, which would overwrite it).
    pub(crate) fn set(&self, v: usize) {
        self.value.store(v, Ordering::Relaxed);
    }
}

/// Bytes of freed large mappings kept for reuse (0 disables the cache).
pub(crate) static LARGE_CACHE_BYTES: Opt = Opt::new(c"MAPALLOC_LARGE_CACHE_BYTES", 64 << 20);
/// How long a freed large mapping may wait for reuse before it is unmapped.
pub(crate) static LARGE_CACHE_MS: Opt = Opt::new(c"MAPALLOC_LARGE_CACHE_MS", 250);
/// How long an emptied slab page keeps its physical memory before it is
/// `madvise`d away (0: at once).
pub(crate) static PURGE_DELAY_MS: Opt = Opt::new(c"MAPALLOC_PURGE_DELAY_MS", 10);
/// Empty segments kept for reuse (their pages purged after the delay)
/// before they are unmapped.
pub(crate) static SEGMENT_CACHE: Opt = Opt::new(c"MAPALLOC_SEGMENT_CACHE", 8);

/// Non-zero: new segments and large mappings have their pages faulted in
/// when they are mapped (`os::prefault`), not at the program's first
/// touch; `mapalloc::set_prefault` in code. Off by default: it makes RSS
/// the whole mapping at once (see `docs/benchmarks.md`).
pub(crate) static PREFAULT: Opt = Opt::new(c"MAPALLOC_PREFAULT", 0);

/// Non-zero: hardened mode (see `hardened`), for binaries built with
/// `MapAlloc::new()`.
pub(crate) static HARDENED: Opt = Opt::new(c"MAPALLOC_HARDENED", 0);

static ALL: [&Opt; 6] = [
    &LARGE_CACHE_BYTES,
    &LARGE_CACHE_MS,
    &PURGE_DELAY_MS,
    &SEGMENT_CACHE,
    &PREFAULT,
    &HARDENED,
];

/// `MAPALLOC_PREFAULT` (or `set_prefault`) is on.
#[inline]
pub(crate) fn prefault() -> bool {
    PREFAULT.get() != 0
}

/// Reads the environment. Called once, before the first heap is set up.
pub(crate) fn init() {
    for opt in ALL {
        if let Some(v) = os::env_usize(opt.env) {
            opt.value.store(v, Ordering::Relaxed);
        }
    }
}
