//! `N` alloc+free pairs of a 32-byte block with `std::alloc::System` (the C
//! `malloc`: glibc's, or under `LD_PRELOAD` the peer's) as the global
//! allocator; see `mapalloc_bench::pairs` and `benches/callgrind.sh`.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    mapalloc_bench::pairs::main(&GLOBAL, "pairs-system", &args);
}
