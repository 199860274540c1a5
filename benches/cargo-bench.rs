//! `cargo bench` at the repository root: hands its arguments to the
//! harness, `cargo run --release -p mapalloc-bench -- ARGS` (see
//! `benches/README.md`). A root bench target rather than the harness
//! itself, so that the root crate's `cargo test` builds neither the peers
//! nor the C workloads.
//!
//! `cargo test --benches` runs bench targets without `--bench`: then this
//! does nothing, so a test run never starts a full benchmark.

use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "benches/cargo-bench.rs: run `cargo bench` for the harness (see benches/README.md)"
        );
        return;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let status = Command::new(cargo)
        .args(["run", "--release", "--quiet", "-p", "mapalloc-bench", "--"])
        .args(args.iter().filter(|a| *a != "--bench"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR")))
        .status();
    match status {
        Ok(s) => std::process::exit(s.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("benches/cargo-bench.rs: cannot run cargo: {e}");
            std::process::exit(1);
        }
    }
}
