//! Hardened mode switched on by `MAPALLOC_HARDENED=1` in a C program under
//! `LD_PRELOAD`, where the first allocation of the process may be large.

mod common;

use common::{Alloc, Scratch, run, with};
use std::process::Command;
use std::time::Duration;

/// The program's first `malloc` is 3 MiB + 16 bytes; one byte past it
/// lies in the mapping's last page unless hardened mode put a guard page
/// there. With the variable set it must fault; without it, it must not.
#[test]
fn first_allocation_large_is_guarded() {
    let scratch = Scratch::new("hardened-first");
    let src = scratch.path().join("first_large.c");
    std::fs::write(
        &src,
        "#include <stdlib.h>\n\
         int main(void) {\n\
         \x20   size_t n = (3u << 20) + 16;\n\
         \x20   volatile char *p = malloc(n);\n\
         \x20   if (!p) return 2;\n\
         \x20   p[n - 1] = 1;\n\
         \x20   p[n] = 1;\n\
         \x20   return 0;\n\
         }\n",
    )
    .expect("write the C source");
    let exe = scratch.path().join("first_large");
    common::cc(&src, &exe);
    let timeout = Duration::from_secs(60);

    let hardened = run(
        with(&mut Command::new(&exe), Alloc::Mapalloc).env("MAPALLOC_HARDENED", "1"),
        timeout,
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        hardened.status.signal(),
        Some(libc::SIGSEGV),
        "{hardened:?}"
    );

    let default = run(
        with(&mut Command::new(&exe), Alloc::Mapalloc).env_remove("MAPALLOC_HARDENED"),
        timeout,
    );
    assert_eq!(default.status.code(), Some(0), "{default:?}");
}
