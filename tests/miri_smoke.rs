//! A short workload small enough for Miri: the real allocator (its `os`
//! layer in its `cfg(miri)` form) under Miri's aliasing and data-race
//! checks. Also an ordinary test.
//!
//! `MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-ignore-leaks" cargo +nightly miri test --test miri_smoke`

use std::collections::HashMap;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

#[test]
fn small_large_and_cross_thread_blocks() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..3000 {
        v.push(i);
    }
    assert_eq!(v.iter().sum::<u64>(), 3000 * 2999 / 2);
    let s: String = (0..200)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert_eq!(s.len(), 200);
    let m: HashMap<u32, String> = (0..100).map(|i| (i, i.to_string())).collect();
    assert_eq!(m[&42], "42");
    // Across the small/large boundary and back.
    let mut big = vec![7u8; 1000];
    big.resize(1_500_000, 9);
    assert_eq!((big[999], big[1_499_999]), (7, 9));
    big.truncate(10);
    big.shrink_to_fit();
    assert_eq!(big, vec![7u8; 10]);
    let zeroed = vec![0u32; 70_000];
    assert!(zeroed.iter().all(|&x| x == 0));
    // Blocks freed by another thread.
    let boxes: Vec<Box<[u8; 48]>> = (0..64).map(|i| Box::new([i as u8; 48])).collect();
    let t = std::thread::spawn(move || boxes.iter().map(|b| b[47] as u32).sum::<u32>());
    assert_eq!(t.join().unwrap(), (0..64).sum());
}
