//! The two sides of `cargo bench -p mapalloc-bench`: the parent, which runs
//! every workload on every allocator in a child process and prints the
//! tables, and the child, which runs one workload on one allocator.
//!
//! Command line (after `cargo bench -p mapalloc-bench --bench peers --`):
//!
//! - workload names: run only those (default: all);
//! - `--allocs=mapalloc,glibc,...`: only those allocators (mapalloc is
//!   always added, as the reference of the ratios);
//! - `--quick`: scaled-down single runs (the default without `--bench`, as
//!   under `cargo test --all-targets`); writes no CSV.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::harness::{self, ChildOutput, Measurement, fmt_count, fmt_kib, fmt_ns, fmt_rate, table};
use crate::switch::{self, Alloc};
use crate::workloads::{self, Params, WORKLOADS, Workload};

/// Op counts are divided by this in smoke-test mode.
pub const QUICK_DIVISOR: u64 = 20;

/// Where the CSV and text report go (`bench/results`).
pub const RESULTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results");

/// Overrides [`RESULTS_DIR`]: that path is fixed at compile time, so a
/// binary copied to another machine (`bench/device/`) writes elsewhere.
pub const RESULTS_ENV: &str = "MAPALLOC_BENCH_RESULTS";

/// Entry point of the benchmark binary, whose global allocator must be
/// [`crate::Switch`]. `reproduce` is the command that runs it.
pub fn main(reproduce: &str) {
    if let Some((alloc, args)) = switch::child_mode() {
        child(alloc, &args);
    } else {
        parent(reproduce);
    }
}

fn child(alloc: Alloc, args: &[String]) {
    let quick = args.iter().any(|a| a == "--quick");
    let Some(name) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!(
            "error: child needs a workload name (unset {} to run the comparison)",
            switch::ENV_VAR
        );
        std::process::exit(2);
    };
    let Some(w) = workloads::find(name) else {
        eprintln!("error: unknown workload {name:?}");
        std::process::exit(2);
    };
    let (div, reps) = if quick {
        (QUICK_DIVISOR, 1)
    } else {
        (1, w.reps)
    };
    let params = Params {
        div,
        threads: w.threads,
    };
    let (times, out) = harness::measure(reps, || (w.run)(params));
    // Everything the workload allocated has been freed by now.
    let stats = alloc.is_mapalloc().then(mapalloc::stats);
    Measurement::finish(w.name, alloc, times, out).emit();
    for (k, v) in harness::notes() {
        println!("NOTE {k}={v}");
    }
    if let Some(s) = stats {
        println!(
            "SYSCALLS mmap={} munmap={} mremap={} madvise={}",
            s.mmap_calls, s.munmap_calls, s.mremap_calls, s.madvise_calls
        );
        println!("STATS {}", harness::stats_line(&s));
    }
}

/// One workload's results, one entry per allocator (in run order).
struct Row {
    w: &'static Workload,
    by_alloc: Vec<(Alloc, ChildOutput)>,
}

impl Row {
    fn get(&self, a: Alloc) -> Option<&ChildOutput> {
        self.by_alloc.iter().find(|(b, _)| *b == a).map(|(_, o)| o)
    }

    fn reference(&self) -> &Measurement {
        &self.by_alloc[0].1.result
    }
}

fn parse_allocs(arg: &str) -> Vec<Alloc> {
    let mut allocs = vec![Alloc::MapAlloc];
    for name in arg.split(',').filter(|s| !s.is_empty()) {
        let Some(a) = Alloc::parse(name) else {
            eprintln!(
                "error: unknown allocator {name:?}; choose from mapalloc, hardened, glibc, mimalloc, jemalloc"
            );
            std::process::exit(2);
        };
        if !allocs.contains(&a) {
            allocs.push(a);
        }
    }
    allocs.sort_by_key(|a| Alloc::ALL.iter().position(|b| b == a));
    allocs
}

fn parent(reproduce_base: &str) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; without it we are being run as a test.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let allocs = args
        .iter()
        .find_map(|a| a.strip_prefix("--allocs="))
        .map_or_else(|| Alloc::ALL.to_vec(), parse_allocs);
    let names: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    for n in &names {
        if workloads::find(n).is_none() {
            let all: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
            eprintln!(
                "error: unknown workload {n:?}; choose from: {}",
                all.join(", ")
            );
            std::process::exit(2);
        }
    }
    let selected: Vec<&'static Workload> = WORKLOADS
        .iter()
        .filter(|w| names.is_empty() || names.contains(&w.name))
        .collect();

    let mut reproduce = reproduce_base.to_string();
    let extra: Vec<String> = args.iter().filter(|a| *a != "--bench").cloned().collect();
    if !extra.is_empty() {
        reproduce.push_str(" -- ");
        reproduce.push_str(&extra.join(" "));
    }
    if quick {
        eprintln!(
            "peers: smoke-test mode (ops / {QUICK_DIVISOR}, 1 run each, no CSV); use `{reproduce_base}` for real numbers"
        );
    }

    let load_before = harness::loadavg();
    let child_args: &[&str] = if quick { &["--quick"] } else { &[] };
    let mut rows: Vec<Row> = Vec::new();
    for w in &selected {
        let mut by_alloc = Vec::new();
        for &alloc in &allocs {
            eprint!("peers: {:<18} on {:<17}... ", w.name, alloc.label());
            let mut a = vec![w.name];
            a.extend_from_slice(child_args);
            match harness::run_child(alloc, &a) {
                Ok(out) => {
                    let runs: Vec<String> =
                        out.result.times_ns.iter().map(|&t| fmt_ns(t)).collect();
                    eprintln!(
                        "median {:>9}, CPU {:>9}  (runs: {})",
                        fmt_ns(out.result.median_ns()),
                        fmt_ns(out.result.median_cpu_ns()),
                        runs.join(", ")
                    );
                    by_alloc.push((alloc, out));
                }
                Err(e) => {
                    eprintln!("FAILED\n{e}");
                    std::process::exit(1);
                }
            }
        }
        let first = &by_alloc[0].1.result;
        for (a, o) in &by_alloc[1..] {
            if o.result.checksum != first.checksum || o.result.ops != first.ops {
                eprintln!(
                    "error: {}: results differ between allocators (mapalloc ops={} checksum={:#x}, {} ops={} checksum={:#x})",
                    w.name,
                    first.ops,
                    first.checksum,
                    a.label(),
                    o.result.ops,
                    o.result.checksum
                );
                std::process::exit(1);
            }
        }
        rows.push(Row { w, by_alloc });
    }

    let load = (load_before, harness::loadavg());
    let report = render(&rows, &allocs, &reproduce, quick, load);
    print!("{report}");
    if !quick {
        let dir = std::env::var_os(RESULTS_ENV)
            .map_or_else(|| std::path::PathBuf::from(RESULTS_DIR), Into::into);
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("peers.csv"), csv(&rows)))
            .and_then(|()| std::fs::write(dir.join("peers.txt"), &report));
        match written {
            Ok(()) => println!(
                "\nwrote {0}/peers.csv and {0}/peers.txt; plots: python3 bench/plot.py",
                dir.display()
            ),
            Err(e) => eprintln!("warning: could not write {}: {e}", dir.display()),
        }
    }
}

/// Median time of `a` / median time of mapalloc: above 1, mapalloc is
/// faster.
fn ratio(row: &Row, a: Alloc) -> Option<f64> {
    ratio_by(row, a, Measurement::median_ns)
}

/// `time(a) / time(mapalloc)` with `time` one of the [`Measurement`] views.
fn ratio_by(row: &Row, a: Alloc, time: fn(&Measurement) -> u64) -> Option<f64> {
    let m = time(row.reference()).max(1) as f64;
    row.get(a).map(|o| time(&o.result) as f64 / m)
}

/// One row per workload, one ratio column per peer, and their geometric
/// mean.
fn ratio_table(
    rows: &[Row],
    peers: &[Alloc],
    title: &str,
    time: fn(&Measurement) -> u64,
    name_cell: &dyn Fn(&Row) -> String,
) -> String {
    let mut headers: Vec<&str> = vec![title];
    headers.extend(peers.iter().map(|a| a.short()));
    let mut body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![name_cell(row)];
            cells.extend(
                peers
                    .iter()
                    .map(|&a| ratio_by(row, a, time).map_or("-".into(), fmt_ratio)),
            );
            cells
        })
        .collect();
    let mut geo = vec!["geometric mean".to_string()];
    for &a in peers {
        let logs: Vec<f64> = rows
            .iter()
            .filter_map(|row| ratio_by(row, a, time))
            .map(f64::ln)
            .collect();
        geo.push(if logs.is_empty() {
            "-".into()
        } else {
            fmt_ratio((logs.iter().sum::<f64>() / logs.len() as f64).exp())
        });
    }
    body.push(geo);
    table(&headers, &body)
}

fn fmt_ratio(r: f64) -> String {
    format!("{r:.2}")
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn render(
    rows: &[Row],
    allocs: &[Alloc],
    reproduce: &str,
    quick: bool,
    load: (Option<f64>, Option<f64>),
) -> String {
    let mut r = String::new();
    let ncpu = cpus();
    let peers: Vec<Alloc> = allocs[1..].to_vec();

    let _ = writeln!(r);
    let _ = writeln!(r, "workloads:");
    for row in rows {
        let _ = writeln!(r, "  {:<18} {}", row.w.name, row.w.about);
    }
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "mapalloc::stats() at the end of each mapalloc child (all runs, everything freed, before collect()):"
    );
    for row in rows {
        for &a in allocs.iter().filter(|a| a.is_mapalloc()) {
            if let Some(o) = row.get(a) {
                for l in o.tagged("STATS") {
                    let _ = writeln!(r, "  {:<18} {:<8} {l}", row.w.name, a.short());
                }
            }
        }
    }

    let _ = writeln!(r);
    let _ = writeln!(r, "=== mapalloc vs peers -- reproduce with: {reproduce}");
    for l in harness::machine_lines() {
        let _ = writeln!(r, "machine: {l}");
    }
    for (a, v) in switch::versions() {
        if allocs.contains(&a) {
            let _ = writeln!(r, "{:<9} {v}", format!("{}:", a.short()));
        }
    }
    if let (Some(before), Some(after)) = load {
        let busy = before > 0.5 * ncpu as f64;
        let _ = writeln!(
            r,
            "1-min load average before the runs: {before:.2}{} (after: {after:.2}, this benchmark included)",
            if busy {
                " -- other programs were using the CPUs: times are noisy, rerun on a quiet machine"
            } else {
                ""
            }
        );
    }
    if quick {
        let _ = writeln!(
            r,
            "SMOKE TEST: ops / {QUICK_DIVISOR}, 1 run each -- these numbers mean nothing"
        );
    }
    let _ = writeln!(
        r,
        "each workload x allocator runs in its own process; time = median of that child's runs"
    );
    let _ = writeln!(
        r,
        "workloads with more threads than the {ncpu} CPUs are oversubscribed (marked *)"
    );

    let name_cell = |row: &Row| {
        let t = row.w.threads;
        if t > ncpu {
            format!("{} *", row.w.name)
        } else {
            row.w.name.to_string()
        }
    };

    // Times.
    let _ = writeln!(r);
    let mut headers: Vec<&str> = vec!["median time", "ops", "runs"];
    headers.extend(allocs.iter().map(|a| a.short()));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let m = row.reference();
            let mut cells = vec![
                name_cell(row),
                fmt_count(m.ops),
                format!("{}x", m.times_ns.len()),
            ];
            cells.extend(allocs.iter().map(|&a| {
                row.get(a)
                    .map_or("-".into(), |o| fmt_ns(o.result.median_ns()))
            }));
            cells
        })
        .collect();
    r.push_str(&table(&headers, &body));

    // Throughput.
    let _ = writeln!(r);
    let mut headers: Vec<&str> = vec!["throughput (ops/s)"];
    headers.extend(allocs.iter().map(|a| a.short()));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![name_cell(row)];
            cells.extend(allocs.iter().map(|&a| {
                row.get(a)
                    .map_or("-".into(), |o| fmt_rate(o.result.ops_per_sec()))
            }));
            cells
        })
        .collect();
    r.push_str(&table(&headers, &body));

    // Ratios.
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "ratio = allocator's time / mapalloc's time: above 1.00 mapalloc is faster, below 1.00 it is slower"
    );
    r.push_str(&ratio_table(
        rows,
        &peers,
        "median vs mapalloc",
        Measurement::median_ns,
        &name_cell,
    ));
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "the same from each child's first run only (fresh process: nothing cached, every page faulted in)"
    );
    r.push_str(&ratio_table(
        rows,
        &peers,
        "first run vs mapalloc",
        Measurement::first_ns,
        &name_cell,
    ));
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "the same from the median process CPU time (user + system, all threads): insensitive to other programs holding the CPUs; counts spinning and page-fault work"
    );
    r.push_str(&ratio_table(
        rows,
        &peers,
        "CPU time vs mapalloc",
        Measurement::median_cpu_ns,
        &name_cell,
    ));

    // Page faults.
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "page faults per run: first run / median run (a fault costs ~0.25-1 µs of kernel time, zeroing the page included)"
    );
    let mut headers: Vec<&str> = vec!["page faults"];
    headers.extend(allocs.iter().map(|a| a.short()));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![name_cell(row)];
            cells.extend(allocs.iter().map(|&a| {
                row.get(a).map_or("-".into(), |o| {
                    format!(
                        "{} / {}",
                        fmt_count(o.result.first_faults()),
                        fmt_count(o.result.median_faults())
                    )
                })
            }));
            cells
        })
        .collect();
    r.push_str(&table(&headers, &body));

    // Memory.
    let kib_table = |title: &str, f: &dyn Fn(&ChildOutput) -> Option<u64>| -> String {
        let mut headers: Vec<&str> = vec![title];
        headers.extend(allocs.iter().map(|a| a.short()));
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                let mut cells = vec![name_cell(row)];
                cells.extend(
                    allocs
                        .iter()
                        .map(|&a| row.get(a).and_then(f).map_or("-".into(), fmt_kib)),
                );
                cells
            })
            .collect();
        table(&headers, &body)
    };
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "peak RSS = VmHWM of the child (max over its runs; includes the binary, ~2-4 MiB)"
    );
    r.push_str(&kib_table("peak RSS", &|o| Some(o.result.peak_rss_kib)));
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "RSS after free = VmRSS once the workload freed everything (what the allocator keeps cached)"
    );
    r.push_str(&kib_table("RSS after free", &|o| {
        Some(o.result.end_rss_kib)
    }));
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "RSS released = VmRSS after collect() / malloc_trim(0) / mi_collect(true) / jemalloc tcache flush + arena purge"
    );
    r.push_str(&kib_table("RSS released", &|o| {
        Some(o.result.released_rss_kib)
    }));

    // Fragmentation.
    if let Some(row) = rows.iter().find(|row| row.w.name == "fragmentation") {
        let _ = writeln!(r);
        let _ = writeln!(
            r,
            "fragmentation: RSS at each phase (first run of the child); overhead = RSS with live set / live bytes"
        );
        let live = row.reference_note("live_bytes");
        let mut body = Vec::new();
        for &a in allocs {
            let Some(o) = row.get(a) else { continue };
            let n = |k: &str| o.note(k).map_or("-".into(), fmt_kib);
            let overhead = match (o.note("rss_live_kib"), o.note("live_bytes")) {
                (Some(rss), Some(b)) if b > 0 => format!("{:.2}", rss as f64 * 1024.0 / b as f64),
                _ => "-".into(),
            };
            body.push(vec![
                a.short().to_string(),
                n("rss_phase1_kib"),
                n("rss_after_free90_kib"),
                n("rss_live_kib"),
                overhead,
                fmt_kib(o.result.peak_rss_kib),
                fmt_kib(o.result.end_rss_kib),
                fmt_kib(o.result.released_rss_kib),
            ]);
        }
        if let Some(b) = live {
            let _ = writeln!(
                r,
                "live bytes at the end of phase 3: {}",
                harness::fmt_bytes(b)
            );
        }
        r.push_str(&table(
            &[
                "allocator",
                "phase 1",
                "freed 90%",
                "phase 3 (live)",
                "overhead",
                "peak",
                "after free",
                "released",
            ],
            &body,
        ));
    }

    // Scaling.
    let scaling: Vec<&Row> = rows.iter().filter(|row| row.w.group == "scaling").collect();
    if !scaling.is_empty() {
        let _ = writeln!(r);
        let _ = writeln!(
            r,
            "thread scaling: fixed total work split over N threads (throughput, and speed-up over 1 thread); only {ncpu} CPUs, so N > {ncpu} is oversubscribed and the ideal curve is flat from N = {ncpu}"
        );
        let mut headers: Vec<String> = vec!["threads".into()];
        for a in allocs {
            headers.push(a.short().to_string());
            headers.push("x1t".into());
        }
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let base: HashMap<Alloc, f64> = allocs
            .iter()
            .filter_map(|&a| {
                let one = scaling.iter().find(|row| row.w.threads == 1)?;
                Some((a, one.get(a)?.result.ops_per_sec()))
            })
            .collect();
        let body: Vec<Vec<String>> = scaling
            .iter()
            .map(|row| {
                let t = row.w.threads;
                let mut cells = vec![if t > ncpu {
                    format!("{t} (oversubscribed)")
                } else {
                    t.to_string()
                }];
                for &a in allocs {
                    match row.get(a) {
                        Some(o) => {
                            let ops = o.result.ops_per_sec();
                            cells.push(fmt_rate(ops));
                            cells.push(
                                base.get(&a)
                                    .map_or("-".into(), |b| format!("{:.2}", ops / b)),
                            );
                        }
                        None => {
                            cells.push("-".into());
                            cells.push("-".into());
                        }
                    }
                }
                cells
            })
            .collect();
        r.push_str(&table(&headers, &body));
    }
    r
}

impl Row {
    fn reference_note(&self, key: &str) -> Option<u64> {
        self.by_alloc[0].1.note(key)
    }
}

/// One line per workload x allocator.
fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "workload,group,threads,cpus,alloc,ops,runs,median_ns,best_ns,first_ns,median_cpu_ns,first_faults,median_faults,ops_per_sec,time_vs_mapalloc,peak_rss_kib,end_rss_kib,released_rss_kib,live_bytes,rss_live_kib,mmap_calls,munmap_calls,mremap_calls,madvise_calls\n",
    );
    for row in rows {
        for (a, o) in &row.by_alloc {
            let m = &o.result;
            let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
            let sys = |k: &str| {
                o.tagged("SYSCALLS")
                    .next()
                    .and_then(|l| {
                        l.split_whitespace()
                            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    })
                    .unwrap_or("")
                    .to_string()
            };
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{:.1},{},{},{},{},{},{},{},{},{},{}",
                row.w.name,
                row.w.group,
                row.w.threads.max(1),
                cpus(),
                a.label(),
                m.ops,
                m.times_ns.len(),
                m.median_ns(),
                m.best_ns(),
                m.first_ns(),
                m.median_cpu_ns(),
                m.first_faults(),
                m.median_faults(),
                m.ops_per_sec(),
                ratio(row, *a).map_or(String::new(), |r| format!("{r:.4}")),
                m.peak_rss_kib,
                m.end_rss_kib,
                m.released_rss_kib,
                opt(o.note("live_bytes")),
                opt(o.note("rss_live_kib")),
                sys("mmap"),
                sys("munmap"),
                sys("mremap"),
                sys("madvise"),
            );
        }
    }
    s
}
