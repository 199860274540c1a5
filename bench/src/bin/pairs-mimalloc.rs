//! `N` alloc+free pairs of a 32-byte block with mimalloc as the global
//! allocator; see `mapalloc_bench::pairs` and `bench/callgrind.sh`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    mapalloc_bench::pairs::main(&GLOBAL, "pairs-mimalloc");
}
