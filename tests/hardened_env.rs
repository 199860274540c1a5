//! `MAPALLOC_HARDENED=1` turns hardened mode on for a binary built with
//! `MapAlloc::new()`, without a rebuild.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

/// Run by the test below in a child process with the variable set: a
/// double free that hardened mode must catch (without the variable it is
/// not run at all: in the default mode it would be undefined behaviour).
#[test]
fn child_double_free() {
    if std::env::var_os("MAPALLOC_HARDENED_CHILD").is_none() {
        return;
    }
    let l = Layout::from_size_align(40, 8).unwrap();
    // SAFETY: the second free is the deliberate misuse.
    unsafe {
        let p = GLOBAL.alloc(l);
        eprintln!("block {:#x}", p as usize);
        GLOBAL.dealloc(p, l);
        GLOBAL.dealloc(p, l);
    }
    unreachable!("hardened mode let a double free through");
}

#[test]
fn environment_variable_turns_hardened_mode_on() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_double_free",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MAPALLOC_HARDENED", "1")
        .env("MAPALLOC_HARDENED_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
    let block = stderr
        .lines()
        .find_map(|l| l.strip_prefix("block "))
        .expect("child printed its block");
    assert!(
        stderr.contains(&format!("mapalloc: double free of {block}\n")),
        "{stderr}"
    );
}

/// Run by the test below in a child process without the variable: this
/// process's heaps are default ones, so a `MapAlloc::hardened()` request
/// cannot be honoured.
#[test]
fn child_hardened_request() {
    if std::env::var_os("MAPALLOC_HARDENED_REQUEST_CHILD").is_none() {
        return;
    }
    let l = Layout::from_size_align(40, 8).unwrap();
    // SAFETY: a valid layout; the block is never used.
    unsafe {
        let p = GLOBAL.alloc(l);
        assert!(!p.is_null());
        mapalloc::MapAlloc::hardened().alloc(l);
    }
    unreachable!("a hardened request in a default process was served");
}

#[test]
fn hardened_request_in_a_default_process_aborts() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_hardened_request",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("MAPALLOC_HARDENED")
        .env("MAPALLOC_HARDENED_REQUEST_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
    assert!(
        stderr.contains(
            "mapalloc: MapAlloc::hardened() used in a process already running in the default mode\n"
        ),
        "{stderr}"
    );
}
