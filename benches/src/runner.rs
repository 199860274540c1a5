//! The measurement loop: every case (a workload at a thread count, or a
//! command line) on every column, each run a fresh process, round-robin:
//! round 1 runs each allocator once in a rotated order, then round 2, and
//! so on, so that a slow spell of the machine is spread over the columns
//! instead of landing on one. Each run's exit status and result line are
//! checked against glibc's.

use std::ffi::OsString;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::catalog::Workload;
use crate::fmt::{fmt_bytes, fmt_ns};
use crate::peers::Alloc;
use crate::proc;

/// What of a run's output must be equal on every allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The lines that contain `checksum=` (the workloads' result line).
    ChecksumLine,
    /// All of stdout (a command from the command line).
    Stdout,
}

/// One row of the tables.
#[derive(Clone)]
pub struct Case {
    /// Row name: the workload, `-Nt` appended where it takes threads.
    pub name: String,
    /// The workload (`None` for a command line).
    pub workload: Option<&'static Workload>,
    /// Its thread count, where it takes one.
    pub threads: Option<usize>,
    /// Its SIZE.
    pub size: u64,
    /// Program and arguments.
    pub argv: Vec<OsString>,
    /// A Rust workload child (the switch decides, not the preload, for
    /// the two mapalloc columns).
    pub rust: bool,
    /// What must match.
    pub check: Check,
}

/// One measured run.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Round, from 0.
    pub round: usize,
    /// Its place in the round's order, from 0.
    pub position: usize,
    /// The measurement.
    pub run: proc::Run,
    /// `NOTE key=value` lines of a Rust workload.
    pub notes: Vec<(String, u64)>,
}

/// Everything measured for one case on one column.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    /// The runs that succeeded.
    pub samples: Vec<Sample>,
    /// What went wrong (a crash, a timeout, a wrong result).
    pub failures: Vec<String>,
    /// The checked part of the first successful run's output.
    pub key: Option<String>,
}

/// All results of a run of the harness.
pub struct Results {
    /// The rows.
    pub cases: Vec<Case>,
    /// The columns.
    pub allocs: Vec<Alloc>,
    /// `cells[case][alloc]`.
    pub cells: Vec<Vec<Cell>>,
    /// Rounds asked for.
    pub rounds: usize,
    /// Cases not run because the deadline came first.
    pub cut: Vec<String>,
}

impl Results {
    /// The cell of `case` on the column named `alloc`.
    pub fn cell(&self, case: usize, alloc: &str) -> Option<&Cell> {
        let a = self.allocs.iter().position(|x| x.name == alloc)?;
        Some(&self.cells[case][a])
    }

    /// Every failure, as `case on alloc: what`.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (c, case) in self.cases.iter().enumerate() {
            for (a, alloc) in self.allocs.iter().enumerate() {
                for f in &self.cells[c][a].failures {
                    out.push(format!("{} on {}: {f}", case.name, alloc.name));
                }
            }
        }
        out
    }
}

fn key_of(check: Check, stdout: &str) -> Option<String> {
    match check {
        Check::Stdout => Some(stdout.to_string()),
        Check::ChecksumLine => {
            let lines: Vec<&str> = stdout.lines().filter(|l| l.contains("checksum=")).collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        }
    }
}

fn notes_of(stdout: &str) -> Vec<(String, u64)> {
    stdout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.strip_prefix("NOTE ")?.split_once('=')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Runs every case on every column, `rounds` times, and checks the
/// results. `env` goes into every child; `limit` bounds each run; no case
/// starts after `deadline` (the cases left are dropped, and named in
/// [`Results::cut`]).
pub fn run_all(
    mut cases: Vec<Case>,
    allocs: Vec<Alloc>,
    rounds: usize,
    env: &[(String, String)],
    limit: Duration,
    deadline: Option<Instant>,
) -> Results {
    let n = allocs.len();
    let mut cells: Vec<Vec<Cell>> = cases.iter().map(|_| vec![Cell::default(); n]).collect();
    let mut cut = Vec::new();
    for (ci, case) in cases.iter().enumerate() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            cut = cases[ci..].iter().map(|c| c.name.clone()).collect();
            eprintln!("harness: deadline reached; not run: {}", cut.join(", "));
            cells.truncate(ci);
            break;
        }
        for round in 0..rounds {
            for position in 0..n {
                let ai = (position + round + ci) % n;
                let alloc = &allocs[ai];
                let mut cmd = Command::new(&case.argv[0]);
                cmd.args(&case.argv[1..]);
                alloc.apply(&mut cmd, case.rust, env);
                let cell = &mut cells[ci][ai];
                let tag = format!(
                    "{:<22} round {}/{rounds}  {:<17}",
                    case.name,
                    round + 1,
                    alloc.name
                );
                match proc::run(&mut cmd, limit) {
                    Err(e) => {
                        eprintln!("harness: {tag} cannot start: {e}");
                        cell.failures.push(format!("cannot start: {e}"));
                    }
                    Ok(r) if !r.ok() => {
                        eprintln!(
                            "harness: {tag} FAILED ({})\n{}",
                            r.exit,
                            proc::tail(&r.stderr, 5)
                        );
                        cell.failures.push(format!(
                            "{}; stderr: {}",
                            r.exit,
                            proc::tail(&r.stderr, 3)
                        ));
                    }
                    Ok(r) => {
                        eprintln!(
                            "harness: {tag} {:>10}  peak RSS {:>10}",
                            fmt_ns(r.wall_ns),
                            fmt_bytes(r.max_rss_kib * 1024)
                        );
                        match key_of(case.check, &r.stdout) {
                            None => cell.failures.push("printed no checksum line".into()),
                            Some(k) => {
                                if cell.key.is_none() {
                                    cell.key = Some(k.clone());
                                } else if cell.key.as_ref() != Some(&k) {
                                    cell.failures
                                        .push(format!("result changed between rounds: {k}"));
                                }
                                let notes = notes_of(&r.stdout);
                                cell.samples.push(Sample {
                                    round,
                                    position,
                                    run: r,
                                    notes,
                                });
                            }
                        }
                    }
                }
            }
        }
        // Every column's result must be glibc's (or, without glibc, the
        // first column's that has one).
        let reference = allocs
            .iter()
            .position(|a| a.name == "glibc")
            .and_then(|g| cells[ci][g].key.clone())
            .or_else(|| cells[ci].iter().find_map(|c| c.key.clone()));
        if let Some(want) = reference {
            for (ai, cell) in cells[ci].iter_mut().enumerate() {
                if let Some(got) = cell.key.clone().filter(|k| *k != want) {
                    let what = format!(
                        "result differs from the reference's: got {:?}, want {:?}",
                        proc::tail(&got, 2),
                        proc::tail(&want, 2)
                    );
                    eprintln!("harness: {} on {}: {what}", case.name, allocs[ai].name);
                    cell.failures.push(what);
                    cell.samples.clear();
                }
            }
        }
    }
    cases.truncate(cells.len());
    Results {
        cases,
        allocs,
        cells,
        rounds,
        cut,
    }
}
