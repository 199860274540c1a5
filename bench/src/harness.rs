//! Measurement plumbing shared by the child and parent sides of the peer
//! benchmark: a deterministic PRNG, timing, RSS from `/proc/self/status`,
//! the `RESULT`/`NOTE`/`STATS` line protocol, re-executing children, and
//! table formatting.
//!
//! The allocator-independent pieces are `#[path]` includes of the files
//! next to `benches/common/mod.rs`, which itself cannot be included here:
//! it declares its own two-way global allocator.

use std::fmt::Write as _;
use std::sync::Mutex;

use crate::switch::{Alloc, ENV_VAR};

// ---------------------------------------------------------------------------
// Deterministic PRNG (splitmix64)
// ---------------------------------------------------------------------------

#[path = "../../benches/common/rng.rs"]
mod rng;
pub use rng::Rng;

// ---------------------------------------------------------------------------
// Measurement (child side)
// ---------------------------------------------------------------------------

#[path = "../../benches/common/measure.rs"]
mod measure;
pub use measure::{Outcome, Times, cpu_time_ns, measure, median, page_faults};

#[path = "../../benches/common/rss.rs"]
mod rss;
pub use rss::{Rss, read_rss};

/// Extra numbers a workload reports (e.g. RSS at a point of interest).
static NOTES: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

/// Records `key = value` for this child's report. The first value recorded
/// for a key wins, so a workload run several times reports its first run
/// (the one that started from a fresh process).
pub fn note(key: &'static str, value: u64) {
    let mut notes = NOTES.lock().unwrap_or_else(|e| e.into_inner());
    if !notes.iter().any(|(k, _)| *k == key) {
        notes.push((key, value));
    }
}

/// The notes recorded so far.
pub fn notes() -> Vec<(&'static str, u64)> {
    NOTES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// One child's result, sent to the parent as a single `RESULT k=v ...` line.
#[derive(Clone, Debug, Default)]
pub struct Measurement {
    /// Workload name.
    pub workload: String,
    /// [`Alloc::env_value`] of the child.
    pub alloc: String,
    /// Operations per run.
    pub ops: u64,
    /// Result digest (equal across allocators).
    pub checksum: u64,
    /// Wall time of each run, in nanoseconds.
    pub times_ns: Vec<u64>,
    /// Process CPU time (user + system, all threads) of each run, in
    /// nanoseconds.
    pub cpu_ns: Vec<u64>,
    /// Page faults of each run.
    pub faults: Vec<u64>,
    /// `VmHWM` at the end: the peak over all runs.
    pub peak_rss_kib: u64,
    /// RSS after the workload freed everything.
    pub end_rss_kib: u64,
    /// RSS after that plus [`crate::switch::release_memory`].
    pub released_rss_kib: u64,
}

impl Measurement {
    /// Call once the workload has freed everything: reads the peak and
    /// current RSS, then releases free memory and reads the RSS again.
    pub fn finish(workload: &str, alloc: Alloc, times: Times, out: Outcome) -> Self {
        let end = read_rss();
        crate::switch::release_memory(alloc);
        let released = read_rss();
        Measurement {
            workload: workload.to_string(),
            alloc: alloc.env_value().to_string(),
            ops: out.ops,
            checksum: out.checksum,
            times_ns: times.wall_ns,
            cpu_ns: times.cpu_ns,
            faults: times.faults,
            peak_rss_kib: end.peak_kib,
            end_rss_kib: end.current_kib,
            released_rss_kib: released.current_kib,
        }
    }

    /// Prints the `RESULT` line on stdout.
    pub fn emit(&self) {
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        println!(
            "RESULT workload={} alloc={} ops={} checksum={:#018x} times_ns={} cpu_ns={} faults={} peak_rss_kib={} end_rss_kib={} released_rss_kib={}",
            self.workload,
            self.alloc,
            self.ops,
            self.checksum,
            list(&self.times_ns),
            list(&self.cpu_ns),
            list(&self.faults),
            self.peak_rss_kib,
            self.end_rss_kib,
            self.released_rss_kib
        );
    }

    fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("RESULT ")?;
        let mut m = Measurement::default();
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
                "cpu_ns" => m.cpu_ns = child::parse_list(v)?,
                "faults" => m.faults = child::parse_list(v)?,
                "peak_rss_kib" => m.peak_rss_kib = v.parse().ok()?,
                "end_rss_kib" => m.end_rss_kib = v.parse().ok()?,
                "released_rss_kib" => m.released_rss_kib = v.parse().ok()?,
                _ => {}
            }
        }
        (!m.times_ns.is_empty()).then_some(m)
    }

    /// Median wall time in nanoseconds.
    pub fn median_ns(&self) -> u64 {
        median(&self.times_ns)
    }

    /// Median process CPU time in nanoseconds.
    pub fn median_cpu_ns(&self) -> u64 {
        median(&self.cpu_ns)
    }

    /// Median page faults per run.
    pub fn median_faults(&self) -> u64 {
        median(&self.faults)
    }

    /// Page faults of the first run.
    pub fn first_faults(&self) -> u64 {
        self.faults.first().copied().unwrap_or(0)
    }

    /// Wall time of the first run (the one in a fresh process).
    pub fn first_ns(&self) -> u64 {
        self.times_ns.first().copied().unwrap_or(0)
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

#[path = "../../benches/common/child.rs"]
mod child;

/// What [`run_child`] returns.
pub type ChildOutput = child::ChildOutput<Measurement>;

impl ChildOutput {
    /// The value of note `key` (`NOTE key=value`), if the child sent one.
    pub fn note(&self, key: &str) -> Option<u64> {
        self.tagged("NOTE").find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k == key).then(|| v.parse().ok()).flatten()
        })
    }
}

/// Re-executes this binary with [`ENV_VAR`]`=alloc` and `args`, waits for it
/// and parses its output. The child's stderr goes straight to ours.
/// `MAPALLOC_HARDENED` is removed from the child's environment so that
/// "mapalloc" really is the default mode.
pub fn run_child(alloc: Alloc, args: &[&str]) -> Result<ChildOutput, String> {
    child::run(
        (ENV_VAR, alloc.env_value()),
        &["MAPALLOC_HARDENED"],
        args,
        Measurement::parse,
    )
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

#[path = "../../benches/common/fmt.rs"]
mod fmt;
pub use fmt::{fmt_bytes, fmt_count, fmt_ns, fmt_rate};

/// [`fmt_bytes`] of a KiB count.
pub fn fmt_kib(kib: u64) -> String {
    fmt_bytes(kib * 1024)
}

#[path = "../../benches/common/table.rs"]
mod table;
pub use table::table;

/// One line of [`mapalloc::Stats`]: what is mapped and the system calls.
pub fn stats_line(s: &mapalloc::Stats) -> String {
    let b = |n: usize| fmt_bytes(n as u64);
    let mut l = String::new();
    let _ = write!(
        l,
        "mmap {} munmap {} mremap {} madvise {} | mapped {} in use {} segments {} large cached {}",
        s.mmap_calls,
        s.munmap_calls,
        s.mremap_calls,
        s.madvise_calls,
        b(s.mapped_bytes),
        b(s.in_use_bytes),
        s.segments,
        b(s.large_cached_bytes)
    );
    l
}

/// The 1-minute load average (`/proc/loadavg`), if readable.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine, in a few lines: CPUs, model, kernel, memory.
pub fn machine_lines() -> Vec<String> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|r| r.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("?".to_string(), |s| s.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    vec![format!(
        "{cpus} CPUs ({model}), {} RAM, Linux {kernel}, {} {}",
        fmt_kib(mem_kib),
        std::env::consts::OS,
        std::env::consts::ARCH
    )]
}
