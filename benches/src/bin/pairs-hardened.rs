//! `N` alloc+free pairs of a 32-byte block with hardened as the global
//! allocator; see `mapalloc_bench::pairs` and `benches/callgrind.sh`.

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::hardened();

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    mapalloc_bench::pairs::main(&GLOBAL, "pairs-hardened", &args);
}
