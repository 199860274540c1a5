//! `N` alloc+free pairs of a 32-byte block through the benchmark's
//! dispatching [`mapalloc_bench::Switch`] (allocator chosen by
//! `MAPALLOC_BENCH_ALLOC`, as in `cargo bench -p mapalloc-bench`); see
//! `mapalloc_bench::pairs` and `bench/callgrind.sh`.

#[global_allocator]
static GLOBAL: mapalloc_bench::Switch = mapalloc_bench::Switch::new();

fn main() {
    if mapalloc_bench::switch::child_mode().is_none() {
        eprintln!(
            "usage: {}=<mapalloc|hardened|system|mimalloc|jemalloc> pairs-switch N [box|box-lone|direct|direct-lone]",
            mapalloc_bench::switch::ENV_VAR
        );
        std::process::exit(2);
    }
    mapalloc_bench::pairs::main(&GLOBAL, "pairs-switch");
}
