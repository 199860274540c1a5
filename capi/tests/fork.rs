//! `fork` from a multi-threaded program under `LD_PRELOAD`
//! (`tests/c/fork_test.c`): every child, forked while other threads are
//! allocating, can free inherited blocks, allocate (on a new thread too)
//! and exit 0. A lock left held across the fork would hang a child: the
//! child's `alarm` and this test's timeout turn that into a failure.

mod common;

use common::{Alloc, Scratch, run, with};
use std::process::Command;
use std::time::Duration;

#[test]
fn fork_from_threaded_program() {
    let scratch = Scratch::new("fork");
    let exe = scratch.path().join("fork_test");
    common::cc(&common::c_source("fork_test.c"), &exe);
    let out = run(
        with(&mut Command::new(&exe), Alloc::Mapalloc).arg("60"),
        Duration::from_secs(180),
    );
    common::expect_success("fork_test under LD_PRELOAD", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("fork_test: 60 forks, 0 failures"),
        "{stdout}"
    );
}
