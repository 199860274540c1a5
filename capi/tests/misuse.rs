//! Heap misuse through the C ABI, one class of misuse per case
//! (`tests/c/misuse.c`, `tests/c/misuse_cxx.cc`): under `LD_PRELOAD` with
//! `MAPALLOC_HARDENED=1` each case must be stopped before it ends, with
//! the one line naming what was detected and `SIGABRT`, or with `SIGSEGV`
//! on a guard page or a `PROT_NONE` region; without the variable the same
//! program must run to its end.

mod common;

use common::{Alloc, Scratch, run, with};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How hardened mode must stop a case.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// `mapalloc: <what> of 0x…` and `SIGABRT`.
    Abort(&'static str),
    /// `SIGSEGV`: a guard page, an unmapped block, a `PROT_NONE` region.
    Fault,
    /// Either: the block is at random in its slab, and a slab's first slot
    /// has a guard page before it.
    AbortOrFault(&'static str),
    /// Any report or a fault: underflows of every block of a row damage
    /// each block's neighbour too, and whichever check runs first (the
    /// neighbour's canary as an overflow, the block's own as an underflow,
    /// or a guard page) may stop the program.
    Detected,
    /// Not a misuse: runs to the end in hardened mode too.
    Runs,
}

use Stop::{Abort, AbortOrFault, Detected, Fault, Runs};

const C_CASES: &[(&str, Stop)] = &[
    // Pointers mapalloc never handed out.
    ("free_wild_1", Abort("invalid free")),
    ("free_wild_page", Abort("invalid free")),
    ("free_stack", Abort("invalid free")),
    ("free_alloca", Abort("invalid free")),
    ("free_far", Abort("invalid free")),
    ("free_foreign_mmap", Abort("invalid free")),
    ("free_interior", Abort("invalid free")),
    ("free_misaligned", Abort("invalid free")),
    ("free_interior_large", Abort("invalid free")),
    ("realloc_wild", Abort("invalid pointer")),
    // Double frees (a freed large block is unmapped: then it is no
    // block of ours at all).
    ("double_free_24", Abort("double free")),
    ("double_free_4k", Abort("double free")),
    ("double_free_256k", Abort("invalid free")),
    ("double_free_2m", Abort("invalid free")),
    ("double_free_between", Abort("double free")),
    ("double_free_after_malloc", Abort("double free")),
    ("realloc_after_free", Abort("use after free")),
    ("free_after_realloc", Abort("double free")),
    // Overflows: the canary, or the guard page a large block ends at.
    ("overflow_8_1", Abort("overflow")),
    ("overflow_8_8", Abort("overflow")),
    ("overflow_8_32", Abort("overflow")),
    ("overflow_13_1", Abort("overflow")),
    ("overflow_100_1", Abort("overflow")),
    ("overflow_4k_1", Abort("overflow")),
    ("overflow_4k_8", Abort("overflow")),
    ("overflow_4k_32", Abort("overflow")),
    ("overflow_256k_1", Fault),
    ("overflow_256k_32", Fault),
    ("overflow_1m_1", Fault),
    ("overflow_1m_32", Fault),
    ("overflow_1000000_1", Fault),
    ("overflow_at_realloc", Abort("overflow")),
    // Underflows: the end of the slot before.
    ("underflow_8_1", AbortOrFault("underflow")),
    ("underflow_8_32", AbortOrFault("underflow")),
    ("underflow_4k_1", AbortOrFault("underflow")),
    ("underflow_4k_32", AbortOrFault("underflow")),
    ("underflow_live_neighbour", Detected),
    // Writes after free: the zero check, when the slot is handed out or
    // while it waits in the quarantine, or at exit.
    ("uaf_write_0", Abort("write after free")),
    ("uaf_write_8", Abort("write after free")),
    ("uaf_write_63", Abort("write after free")),
    ("uaf_write_4k_2000", Abort("write after free")),
    ("uaf_write_loop", Abort("write after free")),
    ("uaf_write_no_malloc", Abort("write after free")),
    ("uaf_memset", Abort("write after free")),
    ("same_block_again", Runs),
    // Reads after free of large blocks: unmapped.
    ("uaf_read_256k", Fault),
    ("uaf_read_1m", Fault),
    ("uaf_read_8m", Fault),
    ("uaf_read_after_malloc", Fault),
    // malloc(0): a PROT_NONE address.
    ("malloc0_write", Fault),
    ("malloc0_read", Fault),
    ("malloc0_double_free", Abort("double free")),
    // C23 sized frees.
    ("free_sized_wrong", Abort("free")),
    ("free_aligned_sized_wrong", Abort("free")),
    ("valid", Runs),
];

const CXX_CASES: &[(&str, Stop)] = &[
    ("delete_base_smaller", Abort("free")),
    ("delete_array_of_new", Abort("invalid free")),
    ("delete_of_new_array", Abort("free")),
    ("delete_of_new_array_dtor", Abort("invalid free")),
    ("sized_delete_wrong", Abort("free")),
    ("aligned_delete_wrong_alignment", Abort("free")),
    ("double_delete", Abort("double free")),
    ("valid", Runs),
];

/// Cases whose default-mode run may fail: the misuse itself crashes
/// there (C's `realloc` reads through a wild pointer it does not own).
const DEFAULT_MAY_FAIL: &[&str] = &["realloc_wild"];

fn build(scratch: &Scratch, source: &str, cxx: bool) -> std::path::PathBuf {
    let src = common::c_source(source);
    let exe = scratch.path().join(source.split('.').next().unwrap());
    if cxx {
        let out = Command::new("c++")
            .args(["-O1", "-g", "-std=c++17", "-w", "-o"])
            .arg(&exe)
            .arg(&src)
            .env_remove("LD_PRELOAD")
            .output()
            .expect("run c++");
        assert!(
            out.status.success(),
            "c++ failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        common::cc(&src, &exe);
    }
    // Every case is in the table, and the table names no other.
    let listed = Command::new(&exe).arg("--list").output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let cases = if cxx { CXX_CASES } else { C_CASES };
    let mut names: Vec<&str> = listed.lines().collect();
    let mut expected: Vec<&str> = cases.iter().map(|c| c.0).collect();
    names.sort();
    expected.sort();
    assert_eq!(names, expected, "{source}: the cases and the table differ");
    exe
}

fn check(exe: &Path, case: &str, stop: Stop) -> Result<(), String> {
    let timeout = Duration::from_secs(60);
    let hardened = run(
        with(Command::new(exe).arg(case), Alloc::MapallocRelease).env("MAPALLOC_HARDENED", "1"),
        timeout,
    );
    let stderr = String::from_utf8_lossy(&hardened.stderr);
    let ok = match stop {
        Abort(what) => {
            hardened.status.signal() == Some(libc::SIGABRT)
                && stderr.starts_with(&format!("mapalloc: {what} of 0x"))
                && stderr.lines().count() == 1
        }
        Fault => hardened.status.signal() == Some(libc::SIGSEGV),
        Detected => {
            hardened.status.signal() == Some(libc::SIGSEGV)
                || (hardened.status.signal() == Some(libc::SIGABRT)
                    && stderr.starts_with("mapalloc: "))
        }
        AbortOrFault(what) => {
            hardened.status.signal() == Some(libc::SIGSEGV)
                || (hardened.status.signal() == Some(libc::SIGABRT)
                    && stderr.starts_with(&format!("mapalloc: {what} of 0x")))
        }
        Runs => hardened.status.code() == Some(0),
    };
    if !ok {
        return Err(format!(
            "{case}: hardened mode should {stop:?}, got {:?}, stderr {stderr:?}",
            hardened.status
        ));
    }
    let default = run(
        with(Command::new(exe).arg(case), Alloc::MapallocRelease).env_remove("MAPALLOC_HARDENED"),
        timeout,
    );
    if default.status.code() != Some(0) && !DEFAULT_MAY_FAIL.contains(&case) {
        return Err(format!(
            "{case}: the default mode should run it to the end, got {:?}",
            default.status
        ));
    }
    Ok(())
}

fn check_all(source: &str, cxx: bool, cases: &[(&str, Stop)]) {
    let scratch = Scratch::new(source.split('.').next().unwrap());
    let exe = build(&scratch, source, cxx);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|&(case, stop)| check(&exe, case, stop).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn c_misuse_is_stopped_in_hardened_mode() {
    check_all("misuse.c", false, C_CASES);
}

#[test]
fn cxx_misuse_is_stopped_in_hardened_mode() {
    if common::which("c++").is_none() {
        return common::skip("c++");
    }
    check_all("misuse_cxx.cc", true, CXX_CASES);
}
