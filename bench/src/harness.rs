//! Measurement plumbing shared by the child and parent sides of the peer
//! benchmark: a deterministic PRNG, timing, RSS from `/proc/self/status`,
//! the `RESULT`/`NOTE`/`STATS` line protocol, re-executing children, and
//! table formatting.
//!
//! Adapted from `benches/common/mod.rs` (which cannot be included here: it
//! declares its own two-way global allocator).

use std::fmt::Write as _;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

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

/// What one run of a workload reports: how many operations it did and a
/// checksum of its results (must be identical across runs and allocators).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Operations done (what "op" means is in the workload's description).
    pub ops: u64,
    /// Allocator-independent digest of the results.
    pub checksum: u64,
}

/// Wall and CPU time of each run of a workload, in nanoseconds.
#[derive(Clone, Debug, Default)]
pub struct Times {
    /// Wall-clock time of each run.
    pub wall_ns: Vec<u64>,
    /// User + system CPU time of the whole process (all threads) during
    /// each run: unlike the wall time, it does not grow while the process
    /// waits for a CPU that other programs hold.
    pub cpu_ns: Vec<u64>,
    /// Page faults (minor + major) of the process during each run.
    pub faults: Vec<u64>,
}

/// Page faults (minor + major) this process has taken so far.
#[path = "../../benches/common/fmt.rs"]
mod fmt;
pub use fmt::{fmt_bytes, fmt_count, fmt_ns, fmt_rate};

pub fn page_faults() -> u64 {
    // SAFETY: `rusage` is plain old data; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0;
    }
    (ru.ru_minflt + ru.ru_majflt) as u64
}

/// User + system CPU time this process has used so far, in nanoseconds.
pub fn cpu_time_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `f` `reps` times and returns each run's wall and CPU time and the
/// (identical) outcome. Panics if runs disagree.
pub fn measure(reps: usize, mut f: impl FnMut() -> Outcome) -> (Times, Outcome) {
    let mut times = Times {
        wall_ns: Vec::with_capacity(reps),
        cpu_ns: Vec::with_capacity(reps),
        faults: Vec::with_capacity(reps),
    };
    let mut first: Option<Outcome> = None;
    for _ in 0..reps.max(1) {
        let faults = page_faults();
        let cpu = cpu_time_ns();
        let t = Instant::now();
        let out = std::hint::black_box(f());
        times.wall_ns.push(t.elapsed().as_nanos() as u64);
        times.cpu_ns.push(cpu_time_ns().saturating_sub(cpu));
        times.faults.push(page_faults().saturating_sub(faults));
        match first {
            None => first = Some(out),
            Some(o) => assert_eq!(o, out, "workload is not deterministic across runs"),
        }
    }
    (times, first.expect("at least one run"))
}

/// The median of `v` (0 if empty).
pub fn median(v: &[u64]) -> u64 {
    let mut t = v.to_vec();
    t.sort_unstable();
    let n = t.len();
    if n == 0 {
        0
    } else if n % 2 == 1 {
        t[n / 2]
    } else {
        (t[n / 2 - 1] + t[n / 2]) / 2
    }
}

/// Resident set size of this process, in KiB, from `/proc/self/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    /// `VmHWM`: peak resident set size since the process started.
    pub peak_kib: u64,
    /// `VmRSS`: current resident set size.
    pub current_kib: u64,
}

/// Reads `VmHWM` and `VmRSS` via a stack buffer (no heap allocation).
pub fn read_rss() -> Rss {
    let mut buf = [0u8; 8192];
    let mut len = 0;
    if let Ok(mut f) = std::fs::File::open("/proc/self/status") {
        while len < buf.len() {
            match f.read(&mut buf[len..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
    }
    let text = std::str::from_utf8(&buf[..len]).unwrap_or("");
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Rss {
        peak_kib: field("VmHWM:"),
        current_kib: field("VmRSS:"),
    }
}

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
                "times_ns" => {
                    m.times_ns = v
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .ok()?;
                }
                "cpu_ns" => {
                    m.cpu_ns = v
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .ok()?;
                }
                "faults" => {
                    m.faults = v
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .ok()?;
                }
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

/// Everything a child printed: its `RESULT` and any other tagged lines
/// (`TAG rest of line`).
pub struct ChildOutput {
    /// The parsed `RESULT` line.
    pub result: Measurement,
    /// Every other line of its stdout.
    pub lines: Vec<String>,
}

impl ChildOutput {
    /// The lines tagged `tag`, with the tag and one space removed.
    pub fn tagged<'a>(&'a self, tag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines.iter().filter_map(move |l| {
            let rest = l.strip_prefix(tag)?;
            if rest.is_empty() {
                Some(rest)
            } else {
                rest.strip_prefix(' ')
            }
        })
    }

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
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(&exe)
        .env(ENV_VAR, alloc.env_value())
        .env_remove("MAPALLOC_HARDENED")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("spawning {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "child `{ENV_VAR}={} {} {}` failed ({}); stdout:\n{stdout}",
            alloc.env_value(),
            exe.display(),
            args.join(" "),
            out.status
        ));
    }
    let mut result = None;
    let mut lines = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("RESULT ") {
            result = Measurement::parse(line);
        } else {
            lines.push(line.to_string());
        }
    }
    let result =
        result.ok_or_else(|| format!("child printed no valid RESULT line; stdout:\n{stdout}"))?;
    Ok(ChildOutput { result, lines })
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

/// [`fmt_bytes`] of a KiB count.
pub fn fmt_kib(kib: u64) -> String {
    fmt_bytes(kib * 1024)
}

/// Renders a table (header, rule, rows; first column left-aligned, the
/// others right-aligned), each line ending in a newline.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, cell) in cells.take(cols).enumerate() {
            let pad = width[i].saturating_sub(cell.chars().count());
            if i == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    };
    render(&mut headers.iter().copied());
    let total: usize = width.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
    render(&mut std::iter::once("-".repeat(total).as_str()));
    for row in rows {
        render(&mut row.iter().map(String::as_str));
    }
    text
}

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
