//! The command line of `mapalloc-bench` (`--help`), and the child side of
//! the Rust workloads.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::catalog::{self, Kind, WORKLOADS};
use crate::peers::{self, NAMES};
use crate::report::{self, Header};
use crate::runner::{self, Case, Check};
use crate::setup;
use crate::switch;
use crate::workloads::Params;

const USAGE: &str = "\
usage: mapalloc-bench [OPTIONS] [-- PROGRAM ARGS...]
       (or `cargo bench [-- OPTIONS]` at the repository root)

Runs the workloads (or PROGRAM) on every allocator, each run a fresh
process, round-robin, and prints and writes the report.

  --only W1,W2      only these workloads (default: all; --list names them)
  --allocs A1,A2    only these columns (default: all that are present)
  --rounds N        rounds per case (default 5; 1 with --quick)
  --threads 1,2,4   thread counts of the workloads that take one (default:
                    1, 2, then powers of two up to the CPU count, and it)
  --quick           smoke run: small sizes, 1 round, nothing written
                    unless --out is given
  --scale X         multiply every workload's SIZE by X
  --cmd 'LINE'      run LINE (with sh -c) as the only workload; with
                    -- PROGRAM ARGS, run PROGRAM directly; the whole stdout
                    must be equal on every allocator
  --env K=V         set K=V in every run (repeatable)
  --timeout S       kill a run after S seconds (default 600)
  --deadline S      start no case after S seconds (the rest are left out
                    and named in the report)
  --out DIR         write report.md, summary.csv, runs.csv and the plots
                    into DIR (default: $MAPALLOC_BENCH_RESULTS, else
                    benches/results)
  --no-write        write nothing
  --prebuilt DIR    use what `mapalloc-bench prepare DIR` made, build nothing
  --list            list the workloads and columns, then exit

  mapalloc-bench prepare DIR   build everything into DIR for a machine
                               without a toolchain (benches/device/)
";

/// Parsed options.
#[derive(Debug, Default)]
struct Opts {
    only: Option<Vec<String>>,
    allocs: Option<Vec<String>>,
    rounds: Option<usize>,
    threads: Option<Vec<usize>>,
    quick: bool,
    scale: Option<f64>,
    cmd: Option<Vec<String>>,
    shell: bool,
    env: Vec<(String, String)>,
    timeout: Option<u64>,
    deadline: Option<u64>,
    out: Option<PathBuf>,
    no_write: bool,
    prebuilt: Option<PathBuf>,
    list: bool,
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") && f != "--env" => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{flag} needs a value"))
        };
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag {
            "--bench" => {} // what `cargo bench` adds
            "--only" => o.only = Some(list(&value()?)),
            "--allocs" => o.allocs = Some(list(&value()?)),
            "--rounds" => o.rounds = Some(number(value()?)?.max(1) as usize),
            "--threads" => {
                let t: Result<Vec<usize>, String> = list(&value()?)
                    .iter()
                    .map(|s| match s.parse::<usize>() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(format!("--threads: {s:?} is not a thread count")),
                    })
                    .collect();
                o.threads = Some(t?);
            }
            "--quick" => o.quick = true,
            "--scale" => {
                let v = value()?;
                o.scale = Some(
                    v.parse()
                        .ok()
                        .filter(|x: &f64| *x > 0.0)
                        .ok_or(format!("--scale: {v:?}"))?,
                );
            }
            "--cmd" => {
                o.cmd = Some(vec![value()?]);
                o.shell = true;
            }
            "--env" => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or(format!("--env {v:?}: expected K=V"))?;
                o.env.push((k.to_string(), val.to_string()));
            }
            "--timeout" => o.timeout = Some(number(value()?)?),
            "--deadline" => o.deadline = Some(number(value()?)?),
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--no-write" => o.no_write = true,
            "--prebuilt" => o.prebuilt = Some(PathBuf::from(value()?)),
            "--list" => o.list = true,
            "--" => {
                let rest: Vec<String> = it.by_ref().cloned().collect();
                if rest.is_empty() {
                    return Err("-- needs a program".into());
                }
                o.cmd = Some(rest);
                o.shell = false;
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(o)
}

/// The default thread counts: 1, 2, the powers of two up to the CPU
/// count, and the CPU count.
fn default_threads() -> Vec<usize> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut t = vec![1, 2];
    let mut n = 4;
    while n <= cpus {
        t.push(n);
        n *= 2;
    }
    if !t.contains(&cpus) {
        t.push(cpus);
    }
    t
}

/// The entry point; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("child") => return child(&args[1..]),
        Some("prepare") => {
            let Some(dir) = args.get(1) else {
                eprintln!("usage: mapalloc-bench prepare DIR");
                return 2;
            };
            return match setup::prepare(Path::new(dir)) {
                Ok(()) => {
                    eprintln!(
                        "harness: prepared {dir}; run it with {dir}/mapalloc-bench --prebuilt {dir}"
                    );
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            };
        }
        Some("--help" | "-h" | "help") => {
            print!("{USAGE}");
            return 0;
        }
        _ => {}
    }
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return 2;
        }
    };
    if opts.list {
        print_list();
        return 0;
    }
    match run(args, &opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn print_list() {
    println!("workloads (name, language, SIZE = what, default size, quick size, threads):");
    for w in WORKLOADS {
        println!(
            "  {:<15} {:<5} {:>11} {:>9}  {}{}\n  {:<15} {}",
            w.name,
            w.language(),
            w.size,
            w.quick,
            w.unit,
            if w.threads { ", takes THREADS" } else { "" },
            "",
            w.about
        );
    }
    println!("columns: {}", NAMES.join(", "));
}

fn run(args: &[String], o: &Opts) -> Result<i32, String> {
    if let Some(only) = &o.only {
        for n in only {
            if catalog::find(n).is_none() {
                let all: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
                return Err(format!(
                    "unknown workload {n:?}; choose from {}",
                    all.join(", ")
                ));
            }
        }
    }
    if let Some(allocs) = &o.allocs {
        for a in allocs {
            if !NAMES.contains(&a.as_str()) {
                return Err(format!(
                    "unknown allocator {a:?}; choose from {}",
                    NAMES.join(", ")
                ));
            }
        }
    }
    let start = std::time::Instant::now();
    let load_before = loadavg();
    let built = setup::build(o.prebuilt.as_deref())?;
    let mut notes = built.notes.clone();
    let probe = built
        .program("probe.c")
        .ok_or("the probe was not built (no C compiler?)")?;
    let columns = peers::columns(&built.libs, &mut notes);
    let mut allocs = peers::probe(columns, &probe, &mut notes);
    if let Some(want) = &o.allocs {
        allocs.retain(|a| want.iter().any(|w| w == a.name));
    }
    if allocs.is_empty() {
        return Err("no allocator left to run".into());
    }
    for n in &notes {
        eprintln!("harness: {n}");
    }

    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let threads = o.threads.clone().unwrap_or_else(default_threads);
    let mut cases = Vec::new();
    if let Some(cmd) = &o.cmd {
        let argv: Vec<OsString> = if o.shell {
            ["sh", "-c", &cmd[0]].map(OsString::from).to_vec()
        } else {
            cmd.iter().map(OsString::from).collect()
        };
        let name = if o.shell {
            "cmd".to_string()
        } else {
            Path::new(&cmd[0])
                .file_name()
                .map_or("cmd".into(), |f| f.to_string_lossy().into_owned())
        };
        cases.push(Case {
            name,
            workload: None,
            threads: None,
            size: 0,
            argv,
            rust: false,
            check: Check::Stdout,
        });
    }
    if o.cmd.is_none() || o.only.is_some() {
        for w in WORKLOADS {
            if o.only
                .as_ref()
                .is_some_and(|only| !only.iter().any(|n| n == w.name))
            {
                continue;
            }
            let base = if o.quick { w.quick } else { w.size };
            let size = o
                .scale
                .map_or(base, |s| ((base as f64 * s).round() as u64).max(1));
            let counts: Vec<Option<usize>> = if w.threads {
                threads.iter().map(|&t| Some(t)).collect()
            } else {
                vec![None]
            };
            for t in counts {
                let name = t.map_or_else(|| w.name.to_string(), |t| format!("{}-{t}t", w.name));
                let argv: Vec<OsString> = match w.kind {
                    Kind::Program { source, extra, .. } => {
                        let Some(p) = built.program(source) else {
                            notes.push(format!("{name}: {source} was not built; skipped"));
                            continue;
                        };
                        let mut v = vec![p.into_os_string(), size.to_string().into()];
                        v.extend(t.map(|t| t.to_string().into()));
                        v.extend(extra.iter().map(OsString::from));
                        v
                    }
                    Kind::Rust(_) => vec![
                        exe.clone().into_os_string(),
                        "child".into(),
                        w.name.into(),
                        size.to_string().into(),
                        t.unwrap_or(1).to_string().into(),
                    ],
                };
                cases.push(Case {
                    name,
                    workload: Some(w),
                    threads: t,
                    size,
                    argv,
                    rust: matches!(w.kind, Kind::Rust(_)),
                    check: Check::ChecksumLine,
                });
            }
        }
    }
    let rounds = o.rounds.unwrap_or(if o.quick { 1 } else { 5 });
    let limit = Duration::from_secs(o.timeout.unwrap_or(600));
    eprintln!(
        "harness: {} cases x {} allocators x {rounds} rounds = {} runs",
        cases.len(),
        allocs.len(),
        cases.len() * allocs.len() * rounds
    );
    // Read before the runs: the commit is the one built, whatever is
    // edited while they go on.
    let mut lines = machine_lines();
    let deadline = o.deadline.map(|s| start + Duration::from_secs(s));
    let results = runner::run_all(cases, allocs, rounds, &o.env, limit, deadline);

    lines.push(format!(
        "1-minute load average: {} before, {} after{}",
        load_before.map_or("?".into(), |l| format!("{l:.2}")),
        loadavg().map_or("?".into(), |l| format!("{l:.2}")),
        if load_before.is_some_and(|l| l > 0.5 * cpus() as f64) {
            " (other programs were running: times are noisy)"
        } else {
            ""
        }
    ));
    lines.push(format!(
        "{} round{}; each run a fresh process; sizes: {}{}",
        rounds,
        if rounds == 1 { "" } else { "s" },
        if o.quick {
            "quick (smoke run: these times mean nothing)"
        } else {
            "default"
        },
        o.scale.map_or(String::new(), |s| format!(" x {s}"))
    ));
    for a in &results.allocs {
        lines.push(format!("`{}`: {}", a.name, a.version));
    }
    for n in &notes {
        lines.push(format!("note: {n}"));
    }
    if !results.cut.is_empty() {
        lines.push(format!(
            "CUT by --deadline, not run: {}",
            results.cut.join(", ")
        ));
    }
    let command = reproduce(args, o);
    let text = report::render(&results, &Header { command, lines });
    print!("\n{text}");
    let failures = results.failures();

    let out = o
        .out
        .clone()
        .or_else(|| {
            (!o.quick)
                .then(|| std::env::var_os("MAPALLOC_BENCH_RESULTS").map(PathBuf::from))
                .flatten()
        })
        .or_else(|| (!o.quick).then(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results")))
        .filter(|_| !o.no_write);
    if let Some(dir) = out {
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("report.md"), &text))
            .and_then(|()| std::fs::write(dir.join("summary.csv"), report::summary_csv(&results)))
            .and_then(|()| std::fs::write(dir.join("runs.csv"), report::runs_csv(&results)));
        match written {
            Ok(()) => {
                eprintln!(
                    "harness: wrote {0}/report.md, summary.csv, runs.csv",
                    dir.display()
                );
                plot(&dir);
            }
            Err(e) => eprintln!("harness: could not write {}: {e}", dir.display()),
        }
    }
    if failures.is_empty() {
        Ok(0)
    } else {
        eprintln!("harness: {} failures:", failures.len());
        for f in &failures {
            eprintln!("  {}", f.replace('\n', " / "));
        }
        Ok(1)
    }
}

/// Draws the plots with `benches/plot.py`, if python3 and the script are
/// there (the prebuilt folder of another machine has neither, or the
/// script without matplotlib: it then writes plain SVG).
fn plot(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("plot.py");
    if !script.is_file() {
        return;
    }
    match Command::new("python3")
        .arg(&script)
        .arg("--results")
        .arg(dir)
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("harness: plot.py failed ({s})"),
        Err(e) => eprintln!("harness: no plots (python3: {e})"),
    }
}

/// The command that reproduces this report.
fn reproduce(args: &[String], o: &Opts) -> String {
    let rest: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    if o.prebuilt.is_some() {
        return format!("mapalloc-bench {}", rest.join(" "));
    }
    if rest.is_empty() {
        "cargo bench".into()
    } else {
        format!("cargo bench -- {}", rest.join(" "))
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd)
        .args(args)
        .current_dir(setup::workspace_root())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Date, commit, machine.
fn machine_lines() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|r| r.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("?".to_string(), |s| s.trim().to_string());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let commit = output("git", &["rev-parse", "--short", "HEAD"]).map_or("unknown".into(), |c| {
        let dirty = output("git", &["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty());
        if dirty {
            format!("{c} + uncommitted changes")
        } else {
            c
        }
    });
    vec![
        format!(
            "date: {}",
            output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default()
        ),
        format!("commit: {commit}"),
        format!(
            "machine: {} CPUs ({model}), {} RAM, Linux {kernel}",
            cpus(),
            crate::fmt::fmt_bytes(mem_kib * 1024)
        ),
    ]
}

/// `mapalloc-bench child NAME SIZE THREADS`: one run of a Rust workload
/// on the allocator the switch was told to use.
fn child(args: &[String]) -> i32 {
    let (Some(name), Some(size), Some(threads)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!(
            "usage: {}=mapalloc|hardened|system mapalloc-bench child NAME SIZE THREADS",
            switch::ENV_VAR
        );
        return 2;
    };
    let Some(w) = catalog::find(name) else {
        eprintln!("error: unknown workload {name:?}");
        return 2;
    };
    let Kind::Rust(f) = w.kind else {
        eprintln!("error: {name} is not a Rust workload");
        return 2;
    };
    let (Ok(size), Ok(threads)) = (size.parse(), threads.parse()) else {
        eprintln!("error: SIZE and THREADS are numbers");
        return 2;
    };
    match switch::requested() {
        Some(Ok(c)) if c == switch::active() => {}
        Some(Ok(c)) => {
            eprintln!(
                "error: the switch runs on {:?}, not {c:?} (is the global allocator the Switch?)",
                switch::active()
            );
            return 2;
        }
        Some(Err(v)) => {
            eprintln!(
                "error: {}={v:?} is not mapalloc, hardened or system",
                switch::ENV_VAR
            );
            return 2;
        }
        None => {}
    }
    let out = f(Params { size, threads });
    println!(
        "{name} size={size} threads={threads} checksum={:016x}",
        out.checksum
    );
    for (k, v) in out.notes {
        println!("NOTE {k}={v}");
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_the_options() {
        let o = parse(&args(
            "--only tight,bignum --rounds=5 --threads 1,4 --quick --env A=b=c --bench",
        ))
        .expect("valid");
        assert_eq!(
            o.only,
            Some(vec!["tight".to_string(), "bignum".to_string()])
        );
        assert_eq!(o.rounds, Some(5));
        assert_eq!(o.threads, Some(vec![1, 4]));
        assert!(o.quick);
        assert_eq!(o.env, vec![("A".to_string(), "b=c".to_string())]);
        let o = parse(&args("--allocs glibc -- python3 -c pass")).expect("valid");
        assert_eq!(o.cmd, Some(args("python3 -c pass")));
        assert!(!o.shell);
        assert!(parse(&args("--threads 0")).is_err());
        assert!(parse(&args("--frobnicate")).is_err());
    }

    #[test]
    fn default_threads_start_at_one_and_two() {
        let t = default_threads();
        assert_eq!(&t[..2], &[1, 2]);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }
}
