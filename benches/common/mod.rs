//! Shared harness for `benches/compare.rs` and `examples/compare.rs`.
//!
//! Comparing allocators on the *whole program* in one run is awkward in Rust
//! because `#[global_allocator]` is fixed at compile time. We work around it
//! with a tiny dispatching allocator, [`Switch`], which is this binary's global
//! allocator. On its very first allocation it reads `MAPALLOC_BENCH_ALLOC`
//! (`mapalloc` or `system`) with `libc::getenv` -- which does not allocate --
//! and caches the answer in a static for the rest of the process. The choice
//! never changes afterwards, so every block is freed by the allocator that
//! made it.
//!
//! The parent process (variable unset, so it runs on the system allocator)
//! re-executes `std::env::current_exe()` once per allocator per workload with
//! the variable set and the workload name as argument ([`run_child`]). The
//! child times the workload a few times ([`measure`]), reads its RSS from
//! `/proc/self/status` ([`read_rss`]) and prints one `RESULT` line
//! ([`Measurement::emit`]) plus optional tagged lines (e.g. `STATS`); the
//! parent parses them and prints a table ([`print_table`]).
//!
//! This file is included by the example with
//! `#[path = "../benches/common/mod.rs"] mod common;`, so not every item is
//! used by both targets.
//!
//! What does not depend on the allocator lives in the files beside this one
//! (`measure`, `rss`, `child`, `table`, `fmt`, `rng`), which the `bench/`
//! peer suite includes too; this file cannot be, as it owns the allocator.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CStr;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};

use mapalloc::MapAlloc;

/// Environment variable selecting the allocator of a child process.
pub const ENV_VAR: &str = "MAPALLOC_BENCH_ALLOC";
const ENV_VAR_C: &CStr = c"MAPALLOC_BENCH_ALLOC";

// ---------------------------------------------------------------------------
// The dispatching global allocator
// ---------------------------------------------------------------------------

const UNRESOLVED: u8 = 0;
const USE_MAPALLOC: u8 = 1;
const USE_SYSTEM: u8 = 2;

/// Which allocator this process uses; written once, on the first allocation.
static CHOICE: AtomicU8 = AtomicU8::new(UNRESOLVED);

/// The allocators under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alloc {
    MapAlloc,
    System,
}

impl Alloc {
    /// Both allocators, in the order children are run and columns printed.
    pub const ALL: [Alloc; 2] = [Alloc::MapAlloc, Alloc::System];

    /// Value of [`ENV_VAR`] selecting this allocator.
    pub fn env_value(self) -> &'static str {
        match self {
            Alloc::MapAlloc => "mapalloc",
            Alloc::System => "system",
        }
    }

    /// Human-readable name for tables.
    pub fn label(self) -> &'static str {
        match self {
            Alloc::MapAlloc => "mapalloc",
            Alloc::System => "glibc",
        }
    }

    fn from_env_value(s: &str) -> Option<Alloc> {
        Alloc::ALL.into_iter().find(|a| a.env_value() == s)
    }
}

/// Global allocator forwarding to [`MapAlloc`] or [`System`], chosen once per
/// process from [`ENV_VAR`].
///
/// Both allocators pay exactly the same dispatch cost on every call: one
/// relaxed atomic load of `CHOICE` and one well-predicted branch. That
/// overhead (well under a nanosecond) is therefore identical in both columns
/// of every table and does not bias the comparison.
pub struct Switch {
    map: MapAlloc,
}

impl Switch {
    pub const fn new() -> Self {
        Switch {
            map: MapAlloc::new(),
        }
    }
}

#[global_allocator]
static GLOBAL: Switch = Switch::new();

/// `true` if this process allocates with MapAlloc.
#[inline(always)]
fn use_mapalloc() -> bool {
    match CHOICE.load(Ordering::Relaxed) {
        USE_MAPALLOC => true,
        USE_SYSTEM => false,
        _ => resolve_choice() == USE_MAPALLOC,
    }
}

/// Reads [`ENV_VAR`] without allocating and fixes the choice for the rest of
/// the process. An unset or unknown value means the system allocator; the
/// child entry point ([`child_mode`]) rejects unknown values loudly.
#[cold]
#[inline(never)]
fn resolve_choice() -> u8 {
    // SAFETY: `ENV_VAR_C` is a NUL-terminated C string. `getenv` only reads
    // the environment and does not allocate. Nobody calls `setenv` while the
    // first allocation of the process is in progress.
    let value = unsafe { libc::getenv(ENV_VAR_C.as_ptr()) };
    let wanted = if value.is_null() {
        USE_SYSTEM
    } else {
        // SAFETY: a non-null `getenv` result points to a NUL-terminated
        // string inside the environment block, which lives for the process.
        let bytes = unsafe { CStr::from_ptr(value) }.to_bytes();
        if bytes == b"mapalloc" {
            USE_MAPALLOC
        } else {
            USE_SYSTEM
        }
    };
    // If two threads race on the very first allocation, the first writer
    // wins and both use its value, so the choice can never change.
    match CHOICE.compare_exchange(UNRESOLVED, wanted, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => wanted,
        Err(existing) => existing,
    }
}

/// The allocator this process is running on.
pub fn active() -> Alloc {
    if use_mapalloc() {
        Alloc::MapAlloc
    } else {
        Alloc::System
    }
}

// SAFETY: every method forwards to exactly one of two valid allocators, and the
// choice between them is fixed before the first block is handed out, so each
// block is always freed/reallocated by the allocator that allocated it.
unsafe impl GlobalAlloc for Switch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if use_mapalloc() {
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
            unsafe { self.map.alloc(layout) }
        } else {
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
            unsafe { System.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if use_mapalloc() {
            // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
            unsafe { self.map.alloc_zeroed(layout) }
        } else {
            // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if use_mapalloc() {
            // SAFETY: the choice is fixed, so `ptr` came from `self.map` with
            // `layout`; the caller upholds the rest of the contract.
            unsafe { self.map.dealloc(ptr, layout) }
        } else {
            // SAFETY: the choice is fixed, so `ptr` came from `System` with
            // `layout`; the caller upholds the rest of the contract.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if use_mapalloc() {
            // SAFETY: `ptr` came from `self.map` (the choice is fixed); the
            // caller upholds `GlobalAlloc::realloc`'s contract.
            unsafe { self.map.realloc(ptr, layout, new_size) }
        } else {
            // SAFETY: `ptr` came from `System` (the choice is fixed); the
            // caller upholds `GlobalAlloc::realloc`'s contract.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

/// If this process is a child (i.e. [`ENV_VAR`] is set), returns the
/// allocator it runs on and its arguments. Exits with an error if the
/// variable holds an unknown value.
pub fn child_mode() -> Option<(Alloc, Vec<String>)> {
    let value = std::env::var(ENV_VAR).ok()?;
    let Some(wanted) = Alloc::from_env_value(&value) else {
        eprintln!(
            "error: {ENV_VAR}={value:?}; expected `mapalloc` or `system` (unset it to run the comparison)"
        );
        std::process::exit(2);
    };
    assert_eq!(
        active(),
        wanted,
        "global allocator choice does not match {ENV_VAR}"
    );
    Some((wanted, std::env::args().skip(1).collect()))
}

// ---------------------------------------------------------------------------
// Deterministic PRNG (splitmix64)
// ---------------------------------------------------------------------------

mod rng;
pub use rng::Rng;

/// FNV-1a, for result checksums.
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    if h == 0 {
        h = 0xCBF2_9CE4_8422_2325;
    }
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

// ---------------------------------------------------------------------------
// Measurement (child side)
// ---------------------------------------------------------------------------

mod measure;
pub use measure::{Outcome, Times, measure, median};

mod rss;
pub use rss::read_rss;

/// Hands cached free memory back to the OS: `mapalloc::collect()` on
/// MapAlloc, `malloc_trim(0)` on glibc.
pub fn release_memory() {
    match active() {
        Alloc::MapAlloc => mapalloc::collect(),
        Alloc::System => {
            // SAFETY: `malloc_trim` only releases free memory held by glibc
            // malloc; it is safe to call at any time.
            unsafe { libc::malloc_trim(0) };
        }
    }
}

/// One child's result, sent to the parent as a single `RESULT k=v ...` line.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub workload: String,
    pub alloc: String,
    pub ops: u64,
    pub checksum: u64,
    /// Wall time of each run, in nanoseconds.
    pub times_ns: Vec<u64>,
    pub peak_rss_kib: u64,
    /// RSS after the workload freed everything.
    pub end_rss_kib: u64,
    /// RSS after that plus [`release_memory`].
    pub trimmed_rss_kib: u64,
}

impl Measurement {
    /// Call once the workload has freed everything: reads the peak and
    /// current RSS, then calls [`release_memory`] and reads the RSS again.
    pub fn finish(workload: &str, times: Times, out: Outcome) -> Self {
        let end = read_rss();
        release_memory();
        let trimmed = read_rss();
        Measurement {
            workload: workload.to_string(),
            alloc: active().env_value().to_string(),
            ops: out.ops,
            checksum: out.checksum,
            times_ns: times.wall_ns,
            peak_rss_kib: end.peak_kib,
            end_rss_kib: end.current_kib,
            trimmed_rss_kib: trimmed.current_kib,
        }
    }

    /// Prints the `RESULT` line on stdout.
    pub fn emit(&self) {
        let times: Vec<String> = self.times_ns.iter().map(u64::to_string).collect();
        println!(
            "RESULT workload={} alloc={} ops={} checksum={:#018x} times_ns={} peak_rss_kib={} end_rss_kib={} trimmed_rss_kib={}",
            self.workload,
            self.alloc,
            self.ops,
            self.checksum,
            times.join(","),
            self.peak_rss_kib,
            self.end_rss_kib,
            self.trimmed_rss_kib
        );
    }

    fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("RESULT ")?;
        let mut m = Measurement {
            workload: String::new(),
            alloc: String::new(),
            ops: 0,
            checksum: 0,
            times_ns: Vec::new(),
            peak_rss_kib: 0,
            end_rss_kib: 0,
            trimmed_rss_kib: 0,
        };
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "workload" => m.workload = v.to_string(),
                "alloc" => m.alloc = v.to_string(),
                "ops" => m.ops = v.parse().ok()?,
                "checksum" => {
                    m.checksum = u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()?
                }
                "times_ns" => m.times_ns = child::parse_list(v)?,
                "peak_rss_kib" => m.peak_rss_kib = v.parse().ok()?,
                "end_rss_kib" => m.end_rss_kib = v.parse().ok()?,
                "trimmed_rss_kib" => m.trimmed_rss_kib = v.parse().ok()?,
                _ => {}
            }
        }
        (!m.times_ns.is_empty()).then_some(m)
    }

    /// Median wall time in nanoseconds (runs are odd in number by default).
    pub fn median_ns(&self) -> u64 {
        median(&self.times_ns)
    }

    /// Fastest wall time in nanoseconds.
    pub fn best_ns(&self) -> u64 {
        self.times_ns.iter().copied().min().unwrap_or(0)
    }

    /// Operations per second, from the median time.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / (self.median_ns().max(1) as f64 / 1e9)
    }
}

// ---------------------------------------------------------------------------
// Running children (parent side)
// ---------------------------------------------------------------------------

mod child;

/// What [`run_child`] returns.
pub type ChildOutput = child::ChildOutput<Measurement>;

/// Re-executes this binary with [`ENV_VAR`]`=alloc` and `args`, waits for it
/// and parses its output. The child's stderr goes straight to ours.
pub fn run_child(alloc: Alloc, args: &[&str]) -> Result<ChildOutput, String> {
    child::run((ENV_VAR, alloc.env_value()), &[], args, Measurement::parse)
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

mod fmt;
pub use fmt::{fmt_bytes, fmt_count, fmt_ns, fmt_rate};

/// Speed of mapalloc relative to glibc from the two median times
/// (glibc time / mapalloc time): `1.62x faster` when mapalloc is faster,
/// `0.91x (slower)` when it is slower, `1.00x (same)` within rounding.
pub fn fmt_ratio(mapalloc_ns: u64, system_ns: u64) -> String {
    let r = system_ns as f64 / mapalloc_ns.max(1) as f64;
    let shown = format!("{r:.2}x");
    if shown == "1.00x" {
        format!("{shown} (same)")
    } else if r > 1.0 {
        format!("{shown} faster")
    } else {
        format!("{shown} (slower)")
    }
}

mod table;
pub use table::table;

/// Prints a [`table`].
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", table(headers, rows));
}

/// A compact, multi-line rendering of [`mapalloc::Stats`].
pub fn stats_lines(s: &mapalloc::Stats) -> Vec<String> {
    let b = |n: usize| fmt_bytes(n as u64);
    let mut lines = Vec::new();
    let mut l = String::new();
    let _ = write!(
        l,
        "mapped {}, in use {}, slab {}, large {}, large cached {}",
        b(s.mapped_bytes),
        b(s.in_use_bytes),
        b(s.slab_bytes),
        b(s.large_bytes),
        b(s.large_cached_bytes)
    );
    lines.push(l);
    lines.push(format!(
        "segments {}, abandoned segments {}, large mappings {}, heaps {}",
        s.segments, s.abandoned_segments, s.large_mappings, s.heaps
    ));
    lines.push(format!(
        "syscalls: mmap {}, munmap {}, mremap {}, madvise {}",
        s.mmap_calls, s.munmap_calls, s.mremap_calls, s.madvise_calls
    ));
    lines
}

/// One line describing the machine: CPUs and glibc version.
pub fn machine_line() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    // SAFETY: `gnu_get_libc_version` takes no arguments and returns a pointer
    // to a static NUL-terminated string.
    let glibc = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) };
    format!(
        "{cpus} CPUs, glibc {}, {} {}",
        glibc.to_string_lossy(),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
