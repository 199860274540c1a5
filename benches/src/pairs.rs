//! The loop of the `pairs-*` binaries: `N` alloc+free pairs of a 32-byte
//! block, for counting instructions per pair with callgrind
//! (`benches/callgrind.sh`); [`boxed`] is also the `small-fixed` workload.
//!
//! Each `pairs-<allocator>` binary has that allocator as its
//! `#[global_allocator]` and calls [`main`] with it (`pairs-system` is
//! glibc, or under `LD_PRELOAD` any peer); `mapalloc-bench pairs` runs the
//! same loop through the harness's [`crate::Switch`] (allocator from
//! `MAPALLOC_BENCH_ALLOC`).
//!
//! ```text
//! pairs-mapalloc N [box|box-lone|direct|direct-lone]
//! ```
//!
//! - `box` (default): `Box::new([i as u8; 32])` + drop, as any Rust program
//!   does: through `__rust_alloc`/`__rust_dealloc` into the global
//!   allocator, which the loop cannot inline.
//! - `direct`: the allocator's `GlobalAlloc::alloc`/`dealloc` called
//!   straight from a loop monomorphised for it (mapalloc's fast path is
//!   then inlined into the loop; the C allocators are still calls).
//! - Without `-lone`, one other block of the same size stays live during
//!   the loop, so a free never empties the block's page (the usual state in
//!   a real program); with `-lone` the pair's block is alone in its page
//!   and every free empties it.
//!
//! Everything before and after the loop costs the same for any `N`, so
//! `(Ir(N2) - Ir(N1)) / (N2 - N1)` is the cost of one warm pair. The
//! printed line ends with the loop's wall time (`ms=`).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

/// `n` pairs of `Box<[u8; 32]>` through the global allocator.
#[inline(never)]
pub fn boxed(n: u64) -> u64 {
    let mut sum = 0u64;
    for i in 0..n {
        let b = black_box(Box::new([i as u8; 32]));
        sum += u64::from(b[31]);
    }
    sum
}

/// `n` pairs straight on `a`, with the layout of `[u8; 32]`.
#[inline(never)]
pub fn direct<A: GlobalAlloc>(a: &A, n: u64) {
    let layout = Layout::new::<[u8; 32]>();
    for i in 0..n {
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null(), "allocation failed");
        // SAFETY: `p` is a live block of 32 bytes; we write its first byte,
        // then give it back to the allocator that made it, with its layout.
        unsafe {
            p.write_volatile(i as u8);
            a.dealloc(p, layout);
        }
    }
}

/// Runs the mode named in `args` (`N [MODE]`) with `a`, the binary's
/// global allocator, and prints one line.
pub fn main<A: GlobalAlloc>(a: &A, name: &str, args: &[String]) {
    let n: u64 = match args.first().map(|s| s.replace('_', "").parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: {name} N [box|box-lone|direct|direct-lone]");
            std::process::exit(2);
        }
    };
    let mode = args.get(1).map_or("box", String::as_str);
    let (lone, direct_mode) = match mode {
        "box" => (false, false),
        "box-lone" => (true, false),
        "direct" => (false, true),
        "direct-lone" => (true, true),
        _ => {
            eprintln!("error: unknown mode {mode:?}; use box, box-lone, direct or direct-lone");
            std::process::exit(2);
        }
    };
    // Another block of the class, live during the loop unless `-lone`.
    let keeper = (!lone).then(|| black_box(Box::new([1u8; 32])));
    // Wall time of the loop alone, for comparing code layouts
    // (docs/benchmarks.md#hardened-mode); callgrind counts ignore it.
    let start = std::time::Instant::now();
    if direct_mode {
        direct(a, n);
    } else {
        black_box(boxed(n));
    }
    let ms = start.elapsed().as_millis();
    drop(keeper);
    println!("{name} pairs={n} mode={mode} ms={ms}");
}
