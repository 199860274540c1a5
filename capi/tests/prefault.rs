//! `MAPALLOC_PREFAULT` read from the environment and applied through the
//! C ABI (`tests/c/prefault_test.c`): with it, fresh large blocks and
//! fresh segments are resident before their first write; without it they
//! are not.

mod common;

use common::{Alloc, Scratch, run, with};
use std::process::Command;
use std::time::Duration;

#[test]
fn prefault_follows_the_option() {
    let scratch = Scratch::new("prefault");
    let exe = scratch.path().join("prefault_test");
    common::cc(&common::c_source("prefault_test.c"), &exe);
    for (value, arg) in [(Some("1"), "on"), (Some("0"), "off"), (None, "off")] {
        let mut cmd = Command::new(&exe);
        with(&mut cmd, Alloc::Mapalloc).arg(arg);
        match value {
            Some(v) => cmd.env("MAPALLOC_PREFAULT", v),
            None => cmd.env_remove("MAPALLOC_PREFAULT"),
        };
        let out = run(&mut cmd, Duration::from_secs(60));
        common::expect_success(&format!("prefault_test MAPALLOC_PREFAULT={value:?}"), &out);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("prefault_test: ok"),
            "{value:?}"
        );
    }
}
