//! `N` alloc+free pairs of a 32-byte block with mapalloc as the global
//! allocator; see `mapalloc_bench::pairs` and `bench/callgrind.sh`.

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

fn main() {
    mapalloc_bench::pairs::main(&GLOBAL, "pairs-mapalloc");
}
