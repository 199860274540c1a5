//! The C test program `tests/c/abi_test.c`, which calls every exported
//! function (alignment and error cases included), run under `LD_PRELOAD`,
//! on plain glibc, and with the library loaded by `dlopen`.

mod common;

use common::{Alloc, Scratch, field, run, stats_reports, with};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

fn build(scratch: &Scratch) -> PathBuf {
    let exe = scratch.path().join("abi_test");
    common::cc(&common::c_source("abi_test.c"), &exe);
    exe
}

/// Under `LD_PRELOAD` with `MAPALLOC_SHOW_STATS=1`: every check passes,
/// `malloc` resolves into libmapalloc.so, the usable sizes are
/// mapalloc's, and stderr has two reports (the program's `malloc_stats()`
/// and the one at exit) showing mapalloc did the work.
#[test]
fn abi_test_under_ld_preload() {
    let scratch = Scratch::new("abi");
    let exe = build(&scratch);
    let out = run(
        with(&mut Command::new(&exe), Alloc::Mapalloc)
            .arg("mapalloc")
            .env("MAPALLOC_SHOW_STATS", "1"),
        TIMEOUT,
    );
    common::expect_success("abi_test mapalloc", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("malloc comes from ") && stdout.contains("libmapalloc.so"),
        "{stdout}"
    );
    assert!(stdout.contains("mapalloc-only: ok"), "{stdout}");
    assert!(stdout.contains("abi_test: ok"), "{stdout}");
    // mapalloc's smallest class, not glibc's smallest chunk (24 bytes).
    assert!(stdout.contains("malloc_usable_size: 1->16 "), "{stdout}");

    let reports = stats_reports(&out.stderr);
    assert_eq!(
        reports.len(),
        2,
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for r in &reports {
        assert_eq!(r.len(), 13, "{r:?}");
        assert!(field(r, "mmap_calls") > 0, "{r:?}");
        assert!(field(r, "mapped_bytes") > 0, "{r:?}");
        assert!(field(r, "segments") >= 1, "{r:?}");
    }
    // At exit only the main thread's heap is left (the producer exited).
    assert_eq!(field(&reports[1], "heaps"), 1, "{:?}", reports[1]);
}

/// Without `MAPALLOC_SHOW_STATS` (or with `0`) nothing is printed at exit:
/// only the program's own `malloc_stats()` report remains.
#[test]
fn no_report_at_exit_by_default() {
    let scratch = Scratch::new("abi-quiet");
    let exe = build(&scratch);
    for value in [None, Some("0")] {
        let mut cmd = Command::new(&exe);
        with(&mut cmd, Alloc::Mapalloc).arg("mapalloc");
        match value {
            Some(v) => cmd.env("MAPALLOC_SHOW_STATS", v),
            None => cmd.env_remove("MAPALLOC_SHOW_STATS"),
        };
        let out = run(&mut cmd, TIMEOUT);
        common::expect_success("abi_test mapalloc", &out);
        assert_eq!(
            stats_reports(&out.stderr).len(),
            1,
            "MAPALLOC_SHOW_STATS={value:?}"
        );
    }
}

/// The same program on glibc passes the checks glibc shares with us (it
/// skips the mapalloc-only group): the expectations are C's, not ours.
#[test]
fn abi_test_on_glibc() {
    let scratch = Scratch::new("abi-glibc");
    let exe = build(&scratch);
    let out = run(
        with(&mut Command::new(&exe), Alloc::Glibc).arg("glibc"),
        TIMEOUT,
    );
    common::expect_success("abi_test glibc", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("abi_test: ok"), "{stdout}");
    assert!(!stdout.contains("libmapalloc"), "{stdout}");
}

/// Loaded with `dlopen(RTLD_LOCAL)` next to glibc's malloc, the library's
/// `free`, `realloc` and `malloc_usable_size` meet glibc's blocks: `free`
/// ignores them, `realloc` copies them, `malloc_usable_size` asks glibc.
#[test]
fn foreign_pointers_when_loaded_with_dlopen() {
    let scratch = Scratch::new("abi-dlopen");
    let exe = build(&scratch);
    let out = run(
        with(&mut Command::new(&exe), Alloc::Glibc)
            .arg("dlopen")
            .arg(common::lib()),
        TIMEOUT,
    );
    common::expect_success("abi_test dlopen", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("dlopen: ok"));
}
