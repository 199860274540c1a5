//! `N` alloc+free pairs of a 32-byte block with jemalloc as the global
//! allocator; see `mapalloc_bench::pairs` and `bench/callgrind.sh`.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    mapalloc_bench::pairs::main(&GLOBAL, "pairs-jemalloc");
}
