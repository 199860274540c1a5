//! Prefaulting (`MAPALLOC_PREFAULT=1`): what it buys and what it costs.
//!
//! Run:                   `cargo bench --bench first_touch`
//! More rounds:           `cargo bench --bench first_touch -- --rounds 9`
//! Scaled-down smoke run: `cargo bench --bench first_touch -- --quick`
//!
//! The parent re-executes itself once per scenario and setting, with and
//! without `MAPALLOC_PREFAULT=1`, the two interleaved (their order swaps
//! every round), so both see the same machine load. Scenarios:
//!
//! - `touch`: allocate a 64 MiB block and write one byte to each of its
//!   4 KiB pages; free it before the next. Alloc time, touch time and
//!   page faults per block; p50/p99 over every block of every round. With
//!   `MAPALLOC_LARGE_CACHE_BYTES=0` every block is a fresh mapping; with
//!   the cache on (256 MiB here: the default 64 MiB cannot hold a 64 MiB
//!   block and its header page) every block after the first is the
//!   previous one, warm.
//! - `churn`: a large-block workload, 4 live zeroed buffers of 5-25 MiB,
//!   one replaced at random per step and every page of it written (the
//!   default cache). Total time, page faults, peak RSS; median of rounds.
//! - `sparse`: allocate-and-barely-touch: a 64 MiB block of which one page
//!   is written, held while RSS is read. Time per block and RSS.
//!
//! Without `--bench` on the command line (as under `cargo test --benches`)
//! it does the smoke run. std only, plus mapalloc as the global allocator
//! and `libc` for `getrusage`.

use std::alloc::{Layout, alloc, dealloc};
use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

/// Set (to the scenario) in a child.
const CHILD: &str = "FIRST_TOUCH_CHILD";
const MIB: usize = 1 << 20;
const PAGE: usize = 4096;
const BLOCK: usize = 64 * MIB;

/// Work per child; the smoke run divides by `quick`.
struct Size {
    touch_blocks: usize,
    churn_steps: usize,
    sparse_blocks: usize,
}

const FULL: Size = Size {
    touch_blocks: 40,
    churn_steps: 300,
    sparse_blocks: 40,
};
const QUICK: Size = Size {
    touch_blocks: 2,
    churn_steps: 8,
    sparse_blocks: 2,
};

fn minflt() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer; RUSAGE_SELF cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_minflt as u64
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

// ---------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------

fn child(scenario: &str, size: &Size) {
    match scenario {
        "touch" => touch(size.touch_blocks),
        "churn" => churn(size.churn_steps),
        "sparse" => sparse(size.sparse_blocks),
        other => panic!("unknown scenario {other}"),
    }
}

/// `RESULT alloc_ns=.. touch_ns=.. alloc_faults=.. touch_faults=..`, one
/// number per block. (Faults that `MADV_POPULATE_WRITE` takes in the
/// kernel count as the task's minor faults too, in the allocation.)
fn touch(blocks: usize) {
    let layout = Layout::from_size_align(BLOCK, 16).unwrap();
    let [mut a, mut t, mut fa, mut ft] = [(); 4].map(|()| Vec::with_capacity(blocks));
    for _ in 0..blocks {
        let f0 = minflt();
        let start = Instant::now();
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout) };
        assert!(!p.is_null());
        let mapped = Instant::now();
        let f1 = minflt();
        let resumed = Instant::now();
        for off in (0..BLOCK).step_by(PAGE) {
            // SAFETY: inside the block.
            unsafe { p.add(off).write_volatile(off as u8 | 1) };
        }
        let touched = Instant::now();
        fa.push(f1 - f0);
        ft.push(minflt() - f1);
        a.push((mapped - start).as_nanos() as u64);
        t.push((touched - resumed).as_nanos() as u64);
        // SAFETY: allocated above with `layout`.
        unsafe { dealloc(p, layout) };
    }
    println!(
        "RESULT alloc_ns={} touch_ns={} alloc_faults={} touch_faults={}",
        join(&a),
        join(&t),
        join(&fa),
        join(&ft)
    );
}

/// `RESULT total_ns=.. faults=.. hwm_kib=..`.
fn churn(steps: usize) {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let faults = minflt();
    let start = Instant::now();
    let mut live: Vec<Vec<u8>> = (0..4).map(|_| Vec::new()).collect();
    let mut sum = 0u64;
    for _ in 0..steps {
        let slot = (next() % 4) as usize;
        let len = 5 * MIB + (next() as usize % (20 * MIB));
        let mut v = vec![0u8; len];
        for off in (0..len).step_by(PAGE) {
            v[off] = off as u8 | 1;
        }
        sum += u64::from(v[len / 2]);
        live[slot] = v;
    }
    drop(black_box(live));
    let total = start.elapsed().as_nanos() as u64;
    black_box(sum);
    println!(
        "RESULT total_ns={total} faults={} hwm_kib={}",
        minflt() - faults,
        status_kib("VmHWM")
    );
}

/// `RESULT ns=.. rss_start_kib=.. rss_held_kib=..`.
fn sparse(blocks: usize) {
    let rss_start = status_kib("VmRSS");
    let layout = Layout::from_size_align(BLOCK, 16).unwrap();
    let mut ns = Vec::with_capacity(blocks);
    let mut rss_held = 0;
    for i in 0..blocks {
        let start = Instant::now();
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: inside the block.
        unsafe { p.write_volatile(1) };
        ns.push(start.elapsed().as_nanos() as u64);
        if i == 0 {
            rss_held = status_kib("VmRSS");
        }
        // SAFETY: allocated above with `layout`.
        unsafe { dealloc(p, layout) };
    }
    println!(
        "RESULT ns={} rss_start_kib={rss_start} rss_held_kib={rss_held}",
        join(&ns)
    );
}

// ---------------------------------------------------------------------------
// Parent
// ---------------------------------------------------------------------------

/// One child run's `RESULT`, as named lists of numbers.
type Fields = Vec<(String, Vec<u64>)>;

fn run_child(scenario: &str, prefault: bool, cache: Option<usize>, quick: bool) -> Fields {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.env(CHILD, scenario)
        .env("MAPALLOC_PREFAULT", if prefault { "1" } else { "0" })
        .env_remove("MAPALLOC_LARGE_CACHE_BYTES");
    if let Some(c) = cache {
        cmd.env("MAPALLOC_LARGE_CACHE_BYTES", c.to_string());
    }
    // The child reads the same flags as the parent to size its work.
    cmd.arg(if quick { "--quick" } else { "--bench" });
    let out = cmd.output().expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {scenario} failed: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT from {scenario}:\n{stdout}"));
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("name=value");
            let nums = v.split(',').map(|n| n.parse().expect("number")).collect();
            (k.to_string(), nums)
        })
        .collect()
}

fn field<'a>(f: &'a Fields, name: &str) -> &'a [u64] {
    &f.iter().find(|(k, _)| k == name).expect("field").1
}

/// Nearest-rank percentile of `v` (sorted here).
fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

struct Setting {
    scenario: &'static str,
    label: &'static str,
    cache: Option<usize>,
}

const SETTINGS: &[Setting] = &[
    Setting {
        scenario: "touch",
        label: "touch, cache off",
        cache: Some(0),
    },
    Setting {
        scenario: "touch",
        label: "touch, cache on (256 MiB)",
        cache: Some(256 * MIB),
    },
    Setting {
        scenario: "churn",
        label: "churn, default cache",
        cache: None,
    },
    Setting {
        scenario: "sparse",
        label: "sparse, cache off",
        cache: Some(0),
    },
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; without it we are being run as a test.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    if let Ok(scenario) = std::env::var(CHILD) {
        child(&scenario, if quick { &QUICK } else { &FULL });
        return;
    }
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "first_touch: {rounds} rounds{}, load average before: {}",
        if quick { " (smoke run)" } else { "" },
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    // results[setting][prefault] = every round's fields
    let mut results: Vec<[Vec<Fields>; 2]> = SETTINGS.iter().map(|_| [vec![], vec![]]).collect();
    for round in 0..rounds {
        for (i, s) in SETTINGS.iter().enumerate() {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for prefault in order {
                let f = run_child(s.scenario, prefault, s.cache, quick);
                results[i][usize::from(prefault)].push(f);
            }
        }
        eprintln!("first_touch: round {} of {rounds} done", round + 1);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    println!(
        "\n64 MiB block: allocate, then write one byte to each 4 KiB page; \
         p50 / p99 over every block"
    );
    println!(
        "{:<28} {:<9} {:>21} {:>21} {:>21} {:>15}",
        "setting",
        "prefault",
        "alloc p50 / p99",
        "touch p50 / p99",
        "total p50 / p99",
        "faults a / t"
    );
    for (i, s) in SETTINGS.iter().enumerate() {
        if s.scenario != "touch" {
            continue;
        }
        for prefault in [false, true] {
            let runs = &results[i][usize::from(prefault)];
            let all = |name: &str| -> Vec<u64> {
                runs.iter().flat_map(|f| field(f, name).to_vec()).collect()
            };
            let (mut a, mut t) = (all("alloc_ns"), all("touch_ns"));
            let (mut fa, mut ft) = (all("alloc_faults"), all("touch_faults"));
            let mut total: Vec<u64> = a.iter().zip(&t).map(|(x, y)| x + y).collect();
            let pair = |v: &mut Vec<u64>| format!("{} / {}", ms(pct(v, 0.5)), ms(pct(v, 0.99)));
            println!(
                "{:<28} {:<9} {:>21} {:>21} {:>21} {:>15}",
                s.label,
                if prefault { "on" } else { "off" },
                pair(&mut a),
                pair(&mut t),
                pair(&mut total),
                format!("{} / {}", pct(&mut fa, 0.5), pct(&mut ft, 0.5))
            );
        }
    }
    let blocks: usize = results[0][0]
        .iter()
        .map(|f| field(f, "alloc_ns").len())
        .sum();
    println!("blocks per line: {blocks}; faults a / t: p50 page faults in alloc / in touch");

    println!(
        "\nchurn: 4 live zeroed buffers of 5-25 MiB, one replaced per step, every page \
         written; median of rounds (min-max)"
    );
    println!(
        "{:<28} {:<9} {:>24} {:>12} {:>12}",
        "setting", "prefault", "time", "faults", "peak RSS"
    );
    for (i, s) in SETTINGS.iter().enumerate() {
        if s.scenario != "churn" {
            continue;
        }
        for prefault in [false, true] {
            let runs = &results[i][usize::from(prefault)];
            let one = |name: &str| -> Vec<u64> { runs.iter().map(|f| field(f, name)[0]).collect() };
            let (mut t, mut fl, mut hwm) = (one("total_ns"), one("faults"), one("hwm_kib"));
            let spread = format!(
                "{} ({}-{})",
                ms(pct(&mut t, 0.5)),
                ms(t[0]),
                ms(t[t.len() - 1])
            );
            println!(
                "{:<28} {:<9} {:>24} {:>12} {:>12}",
                s.label,
                if prefault { "on" } else { "off" },
                spread,
                pct(&mut fl, 0.5),
                mib(pct(&mut hwm, 0.5))
            );
        }
    }

    println!("\nsparse: allocate a 64 MiB block, write one page; p50 / p99 over every block");
    println!(
        "{:<28} {:<9} {:>21} {:>14} {:>14}",
        "setting", "prefault", "alloc+write", "RSS at start", "RSS held"
    );
    for (i, s) in SETTINGS.iter().enumerate() {
        if s.scenario != "sparse" {
            continue;
        }
        for prefault in [false, true] {
            let runs = &results[i][usize::from(prefault)];
            let mut ns: Vec<u64> = runs.iter().flat_map(|f| field(f, "ns").to_vec()).collect();
            let one = |name: &str| -> Vec<u64> { runs.iter().map(|f| field(f, name)[0]).collect() };
            let (mut start, mut held) = (one("rss_start_kib"), one("rss_held_kib"));
            println!(
                "{:<28} {:<9} {:>21} {:>14} {:>14}",
                s.label,
                if prefault { "on" } else { "off" },
                format!("{} / {}", ms(pct(&mut ns, 0.5)), ms(pct(&mut ns, 0.99))),
                mib(pct(&mut start, 0.5)),
                mib(pct(&mut held, 0.5))
            );
        }
    }
    println!(
        "\nload average after: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
