//! The harness binary: `cargo bench` at the repository root runs it (through
//! `benches/cargo-bench.rs`), as does `cargo run --release -p
//! mapalloc-bench -- [OPTIONS]`; `--help` lists the options. It is also
//! the process of the in-process Rust workloads: the parent re-runs itself
//! as `mapalloc-bench child NAME SIZE THREADS`, with the allocator chosen by
//! the switch below.

#[global_allocator]
static GLOBAL: mapalloc_bench::Switch = mapalloc_bench::Switch::new();

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("pairs") {
        // The callgrind loop through the switch (benches/callgrind.sh).
        mapalloc_bench::pairs::main(&GLOBAL, "mapalloc-bench pairs", &args[1..]);
        return;
    }
    std::process::exit(mapalloc_bench::driver::main(&args));
}
