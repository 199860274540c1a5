//! mapalloc vs glibc malloc, mimalloc and jemalloc on whole-program
//! workloads; see `bench/README.md` and `mapalloc_bench::runner`.
//!
//! Run all workloads:        `cargo bench -p mapalloc-bench`
//! Run some of them:         `cargo bench -p mapalloc-bench --bench peers -- larson fragmentation`
//! Some allocators only:     `cargo bench -p mapalloc-bench --bench peers -- --allocs=glibc,mimalloc`
//! Scaled-down smoke run:    `cargo bench -p mapalloc-bench --bench peers -- --quick`

#[global_allocator]
static GLOBAL: mapalloc_bench::Switch = mapalloc_bench::Switch::new();

fn main() {
    mapalloc_bench::runner::main("cargo bench -p mapalloc-bench");
}
