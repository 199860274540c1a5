//! The harness's smoke run, as CI runs it (`cargo test -p mapalloc-bench`):
//! every workload at its quick size on every column that is present, one
//! round. It checks behaviour only: every run exits 0 and prints the same
//! result line as on glibc; times are not looked at.
//!
//! The harness binary here is the test profile's (debug) build, so the
//! in-process Rust workloads run mapalloc with its debug assertions on; it
//! builds `libmapalloc.so` and `libmimalloc_secure.so` in release mode
//! itself, and compiles the C workloads.

use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mapalloc-bench"))
        .args(args)
        .output()
        .expect("the harness runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn every_workload_on_every_allocator() {
    let o = harness(&["--quick", "--no-write", "--threads", "1,2"]);
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "the smoke run failed:\n{}\n{out}",
        err.lines()
            .filter(|l| !l.contains(" round "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for w in mapalloc_bench::catalog::WORKLOADS {
        assert!(
            out.contains(&format!("| {}", w.name)),
            "{} is not in the report",
            w.name
        );
    }
    for a in ["mapalloc", "mapalloc-hardened", "glibc"] {
        assert!(out.contains(&format!(" {a} |")), "column {a} is missing");
    }
    assert!(
        !out.contains("FAIL |") && !out.contains("| FAIL"),
        "a cell failed:\n{out}"
    );
}

/// Runs the shell command `cmd` on glibc and mapalloc: the run must fail
/// (exit 1) and the report say `why`.
fn fails(cmd: &str, why: &str) {
    let o = harness(&[
        "--allocs",
        "glibc,mapalloc",
        "--rounds",
        "1",
        "--no-write",
        "--cmd",
        cmd,
    ]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains(why), "{out}");
}

#[test]
fn a_result_that_differs_from_glibc_fails_the_run() {
    // The preload differs per column, so the output does too.
    fails("echo \"$LD_PRELOAD\"", "result differs");
}

#[test]
fn a_crash_fails_the_run() {
    fails("kill -SEGV $$", "signal 11");
}

#[test]
fn any_program_runs_the_same_way() {
    let o = harness(&[
        "--allocs",
        "glibc,mapalloc,mapalloc-hardened",
        "--rounds",
        "2",
        "--no-write",
        "--",
        "sort",
        "/etc/passwd",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}\n{out}");
    assert!(out.contains("| sort "), "{out}");
}
