//! `MAPALLOC_HARDENED=1` turns hardened mode on for a binary built with
//! `MapAlloc::new()`, without a rebuild.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

/// Run in a child by the test below (ignored in a normal run) with the
/// variable set: a double free that hardened mode must catch (in the
/// default mode it would be undefined behaviour).
#[test]
#[ignore]
fn child_double_free() {
    assert!(
        std::env::var_os("MAPALLOC_HARDENED_CHILD").is_some(),
        "run by the test below"
    );
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
            "--ignored",
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

/// What the children below do with `MapAlloc::hardened()` in a process
/// whose heaps are default ones (the variable unset): each must abort.
fn hardened_misuse(what: &str) {
    let l = Layout::from_size_align(40, 8).unwrap();
    let hardened = mapalloc::MapAlloc::hardened();
    // SAFETY: a valid layout and a live block of this process's allocator;
    // each call is the misuse under test and does not return.
    unsafe {
        let p = GLOBAL.alloc(l);
        assert!(!p.is_null());
        match what {
            "alloc" => {
                hardened.alloc(l);
            }
            "dealloc" => hardened.dealloc(p, l),
            // Within the block: the default would answer in place.
            "realloc" => {
                hardened.realloc(p, l, 33);
            }
            _ => unreachable!(),
        }
    }
}

/// Run in a child by the test below (ignored in a normal run).
#[test]
#[ignore]
fn child_hardened_misuse() {
    let what = std::env::var("MAPALLOC_HARDENED_MISUSE").expect("run by the test below");
    hardened_misuse(&what);
    unreachable!("MapAlloc::hardened() {what} in a default process was served");
}

#[test]
fn hardened_allocator_in_a_default_process_aborts() {
    for what in ["alloc", "dealloc", "realloc"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_hardened_misuse",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env_remove("MAPALLOC_HARDENED")
            .env("MAPALLOC_HARDENED_MISUSE", what)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{what}: {stderr}");
        assert!(
            stderr.contains(
                "mapalloc: MapAlloc::hardened() used in a process already running in the default mode\n"
            ),
            "{what}: {stderr}"
        );
    }
}
