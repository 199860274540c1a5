//! The in-process Rust workloads: each runs in a child process of the
//! harness (`mapalloc-bench child NAME SIZE THREADS`) whose global
//! allocator is the [`crate::Switch`], allocates through it, frees
//! everything it made before it returns, and returns an
//! allocator-independent checksum. Their table entries (size, what they
//! do) are in [`crate::catalog`]; the patterns that the private suite
//! shares with the C workloads are written in C only (`benches/c/`).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::thread;

use crate::proc::rss_kib;
use crate::rng::Rng;

/// What a run is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// The workload's size (what it counts is in its table entry).
    pub size: u64,
    /// Thread count, for the workloads that take one.
    pub threads: usize,
}

/// What a run reports.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Allocator-independent digest of the work.
    pub checksum: u64,
    /// Extra figures (`rss_live_kib`, ...), printed as `NOTE key=value`.
    pub notes: Vec<(&'static str, u64)>,
}

impl Outcome {
    fn sum(checksum: u64) -> Self {
        Outcome {
            checksum,
            notes: Vec::new(),
        }
    }
}

/// Writes `v`'s first and last byte, so its memory is touched like a real
/// object's would be, and hides it from the optimiser.
#[inline]
fn touch(mut v: Vec<u8>, tag: u8) -> Vec<u8> {
    let n = v.capacity();
    v.spare_capacity_mut()[n - 1].write(tag);
    v.push(tag);
    black_box(v)
}

// ---------------------------------------------------------------------------
// Single-thread small blocks
// ---------------------------------------------------------------------------

/// small-fixed: `size` pairs of `Box<[u8; 32]>` new + drop: the loop of
/// `benches/callgrind.sh`'s `pairs-*` binaries ([`crate::pairs::boxed`]),
/// timed here through the switch.
pub fn small_fixed(p: Params) -> Outcome {
    Outcome::sum(crate::pairs::boxed(p.size))
}

/// small-batch: `size` rounds of 1000 blocks of 8-1024 B, each round
/// freed in shuffled order.
const SMALL_BATCH_SIZE: usize = 1000;

pub fn small_batch(p: Params) -> Outcome {
    let rounds = p.size;
    let mut rng = Rng::new(1);
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(SMALL_BATCH_SIZE);
    let mut sum = 0u64;
    for r in 0..rounds {
        for _ in 0..SMALL_BATCH_SIZE {
            blocks.push(touch(Vec::with_capacity(rng.range(8, 1024)), r as u8));
        }
        rng.shuffle(&mut blocks);
        for v in blocks.drain(..) {
            sum += u64::from(v[0]) + v.capacity() as u64;
        }
    }
    Outcome::sum(sum)
}

// ---------------------------------------------------------------------------
// Multi-thread
// ---------------------------------------------------------------------------

/// window: each thread replaces a random one of its 512 live blocks of
/// 16-512 B, `size` times; the threads share nothing, so up to the number
/// of CPUs the ideal time does not depend on the thread count.
const WINDOW: usize = 512;

pub fn window(p: Params) -> Outcome {
    let threads = p.threads.max(1);
    let per_thread = p.size;
    let sum = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = Rng::new(5000 + t as u64);
                    let mut window: Vec<Vec<u8>> = (0..WINDOW)
                        .map(|_| touch(Vec::with_capacity(rng.range(16, 512)), 0))
                        .collect();
                    let mut sum = 0u64;
                    for i in WINDOW as u64..per_thread {
                        let slot = rng.below(WINDOW);
                        let v = touch(Vec::with_capacity(rng.range(16, 512)), i as u8);
                        sum += std::mem::replace(&mut window[slot], v).capacity() as u64;
                    }
                    sum + window.iter().map(|v| v.capacity() as u64).sum::<u64>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("window thread panicked"))
            .sum::<u64>()
    });
    Outcome::sum(sum)
}

// ---------------------------------------------------------------------------
// Large blocks
// ---------------------------------------------------------------------------

/// realloc-growth: 2 times, push bytes one by one into a `Vec<u8>` up to
/// `size` MiB; then once, raw `realloc` doubling from 4 KiB to 4 x `size`
/// MiB, writing one byte per 4 KiB page of each new half.
const GROW_VEC_ROUNDS: u64 = 2;
const GROW_RAW_FROM: usize = 4 << 10;

pub fn realloc_growth(p: Params) -> Outcome {
    let vec_bytes = (p.size as usize) << 20;
    let raw_to = vec_bytes * 4;
    let mut sum = 0u64;
    for _ in 0..GROW_VEC_ROUNDS {
        let mut v: Vec<u8> = Vec::new();
        for i in 0..vec_bytes {
            v.push(i as u8);
        }
        let v = black_box(v);
        sum += v.len() as u64 + u64::from(v[v.len() - 1]);
    }
    let mut size = GROW_RAW_FROM;
    let mut layout = std::alloc::Layout::from_size_align(size, 16).expect("layout");
    // SAFETY: `layout` has non-zero size.
    let mut ptr = unsafe { std::alloc::alloc(layout) };
    assert!(!ptr.is_null(), "allocation failed");
    touch_pages(ptr, 0, size);
    while size < raw_to {
        let new_size = size * 2;
        // SAFETY: `ptr` was allocated by the global allocator with `layout`,
        // and `new_size` is non-zero and does not overflow `isize`.
        ptr = unsafe { std::alloc::realloc(ptr, layout, new_size) };
        assert!(!ptr.is_null(), "reallocation failed");
        touch_pages(ptr, size, new_size);
        layout = std::alloc::Layout::from_size_align(new_size, 16).expect("layout");
        size = new_size;
    }
    // SAFETY: `ptr` is live and `size` bytes long; its first byte was
    // written by `touch_pages`.
    sum += u64::from(unsafe { ptr.read() });
    // SAFETY: `ptr` was allocated by the global allocator with `layout`.
    unsafe { std::alloc::dealloc(ptr, layout) };
    Outcome::sum(sum)
}

/// Writes one byte at the start of every 4 KiB page of `p[from..to]`.
fn touch_pages(p: *mut u8, from: usize, to: usize) {
    for off in (from..to).step_by(4096) {
        // SAFETY: callers pass a live allocation of at least `to` bytes.
        unsafe { p.add(off).write_volatile(off as u8) };
    }
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

/// fragmentation: phase 1 allocates `size` blocks of 16-1024 B
/// (log-uniform; ~230 MiB for a million); phase 2 frees a random 90% of them; phase 3
/// allocates blocks of 1.2-12 KiB (other size classes, so they cannot drop
/// into the holes of phase 1 in a segregated-fit allocator) until they add
/// up to 30% of phase 1's bytes. Notes the RSS with that live set
/// (`rss_live_kib`) and the bytes the program holds (`live_bytes`), then
/// frees everything.
pub fn fragmentation(p: Params) -> Outcome {
    let n = p.size as usize;
    let mut notes = Vec::new();
    let mut rng = Rng::new(9);
    let mut sum = 0u64;
    let mut phase1_bytes = 0usize;
    let mut blocks: Vec<Box<[MaybeUninit<u8>]>> = (0..n)
        .map(|i| {
            let size = rng.log_uniform(16, 1024);
            phase1_bytes += size;
            let mut b = Box::new_uninit_slice(size);
            b[0].write(i as u8);
            b[size - 1].write(i as u8);
            b
        })
        .collect();
    notes.push(("phase1_bytes", phase1_bytes as u64));
    notes.push(("rss_phase1_kib", rss_kib()));

    // Phase 2: free a random 90% (order shuffled, then the tail dropped).
    rng.shuffle(&mut blocks);
    let keep = n / 10;
    for b in blocks.drain(keep..) {
        sum += b.len() as u64;
    }
    let mut live_bytes: usize = blocks.iter().map(|b| b.len()).sum();
    notes.push(("rss_after_free90_kib", rss_kib()));

    // Phase 3: differently-sized blocks.
    let target = phase1_bytes * 3 / 10;
    let mut added = 0usize;
    let mut phase3: Vec<Box<[MaybeUninit<u8>]>> = Vec::new();
    while added < target {
        let size = rng.log_uniform(1200, 12 << 10);
        let mut b = Box::new_uninit_slice(size);
        for off in (0..size).step_by(4096) {
            b[off].write(off as u8);
        }
        b[size - 1].write(1);
        added += size;
        phase3.push(b);
    }
    live_bytes += added;
    notes.push(("live_bytes", live_bytes as u64));
    notes.push(("rss_live_kib", rss_kib()));
    sum += phase3.iter().map(|b| b.len() as u64).sum::<u64>();
    sum += blocks.iter().map(|b| b.len() as u64).sum::<u64>();
    drop(black_box(phase3));
    drop(black_box(blocks));
    Outcome {
        checksum: sum,
        notes,
    }
}

/// btree-strings: a small "real program". `size` records with random
/// keys (8-24 chars) and values (8-120 chars) go into a `BTreeMap`; half
/// of them get a suffix appended (small reallocs); an index
/// `HashMap<prefix, Vec<String>>` clones every key into its bucket; a third
/// of the map is removed; everything is dropped.
pub fn btree_strings(p: Params) -> Outcome {
    let n = p.size as usize;
    let mut rng = Rng::new(21);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let word = |rng: &mut Rng, lo: usize, hi: usize| -> String {
        let len = rng.range(lo, hi);
        (0..len)
            .map(|_| char::from(alphabet[rng.below(alphabet.len())]))
            .collect()
    };
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut keys: Vec<String> = Vec::with_capacity(n);
    for _ in 0..n {
        let k = word(&mut rng, 8, 24);
        let v = word(&mut rng, 8, 120);
        keys.push(k.clone());
        map.insert(k, v);
    }
    for _ in 0..n / 2 {
        let k = &keys[rng.below(keys.len())];
        if let Some(v) = map.get_mut(k) {
            v.push_str("-edited-");
            v.push_str(k);
        }
    }
    let mut index: HashMap<String, Vec<String>, BuildHasherDefault<DefaultHasher>> =
        HashMap::default();
    for k in map.keys() {
        index.entry(k[..3].to_string()).or_default().push(k.clone());
    }
    for k in keys.iter().step_by(3) {
        map.remove(k);
    }
    let mut sum = map.len() as u64 + index.len() as u64;
    sum += map.values().map(|v| v.len() as u64).sum::<u64>();
    sum += index.values().map(|v| v.len() as u64).sum::<u64>();
    drop(black_box(index));
    drop(black_box(map));
    drop(black_box(keys));
    Outcome::sum(sum)
}
