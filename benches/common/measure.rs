//! Timing of workload runs, shared with `bench/` (`#[path]`): none of it depends on the allocator.

use std::time::Instant;

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
/// (identical) outcome. Panics if runs disagree: a checksum that moves
/// means the workload is not what the allocators are being compared on.
pub fn measure(reps: usize, mut f: impl FnMut() -> Outcome) -> (Times, Outcome) {
    let mut times = Times {
        wall_ns: Vec::with_capacity(reps),
        cpu_ns: Vec::with_capacity(reps),
        faults: Vec::with_capacity(reps),
    };
    let mut first: Option<Outcome> = None;
    for _ in 0..reps.max(1) {
        // The counters are read outside the wall-clock window, so they do
        // not add to the time measured.
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

/// The median of `v` (0 if empty): the tables report it rather than the
/// mean so that one run disturbed by another program does not move them.
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
