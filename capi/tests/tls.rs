//! Thread-local storage after `dlopen` under `LD_PRELOAD`
//! (`tests/c/tls_test.c`): 24 libraries with 4 KiB of TLS each outgrow
//! the DTV glibc gave a running thread; the thread must go on allocating
//! on mapalloc, whose heap pointer is itself a dynamic TLS access.

mod common;

use common::{Alloc, Scratch, run, with};
use std::process::Command;
use std::time::Duration;

const LIBS: usize = 24;

#[test]
fn allocation_after_dlopen_of_tls_libraries() {
    let scratch = Scratch::new("tls");
    for i in 1..=LIBS {
        let src = scratch.path().join(format!("tls{i}.c"));
        std::fs::write(
            &src,
            format!("__thread char buf{i}[4096];\nchar *get{i}(void) {{ return buf{i}; }}\n"),
        )
        .unwrap();
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(scratch.path().join(format!("libtls{i}.so")))
            .arg(&src)
            .env_remove("LD_PRELOAD")
            .status()
            .expect("run cc");
        assert!(status.success());
    }
    let exe = scratch.path().join("tls_test");
    common::cc(&common::c_source("tls_test.c"), &exe);
    let out = run(
        with(&mut Command::new(&exe), Alloc::Mapalloc)
            .arg(scratch.path())
            .arg(LIBS.to_string()),
        Duration::from_secs(60),
    );
    common::expect_success("tls_test under LD_PRELOAD", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("thread tls ok").count(), 2, "{stdout}");
    assert!(stdout.contains("tls_test: ok"), "{stdout}");
}
