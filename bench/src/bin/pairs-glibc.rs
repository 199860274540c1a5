//! `N` alloc+free pairs of a 32-byte block with glibc as the global
//! allocator; see `mapalloc_bench::pairs` and `bench/callgrind.sh`.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    mapalloc_bench::pairs::main(&GLOBAL, "pairs-glibc");
}
