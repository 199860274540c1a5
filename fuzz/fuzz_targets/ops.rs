//! Fuzz target: the input bytes are a program of `GlobalAlloc` calls on
//! mapalloc (alloc, alloc_zeroed, realloc, dealloc) with sizes up to 4 MiB
//! and alignments from 1 B to 1 MiB, checked against a model of the live
//! blocks: every block is filled with its own byte, and checked in full
//! before every realloc and free and at the end; realloc must keep the
//! prefix; alloc_zeroed must give zeros; no two live blocks may overlap;
//! pointers must be aligned and `usable_size` at least the size.
//!
//! `MAPALLOC_FUZZ_HUGE=1` adds requests of absurd size (2^47 B up to
//! isize::MAX), which must return null.
//!
//! Run: `cargo +nightly fuzz run ops -- -max_total_time=180`.
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

use libfuzzer_sys::fuzz_target;
use std::alloc::Layout;
use std::collections::BTreeMap;
use std::sync::OnceLock;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const MAX_LIVE: usize = 512;
const MAX_LIVE_BYTES: usize = 96 * MIB;

/// Reads the program; runs out gracefully (zeros) at the end of input.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn u8(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    fn u16(&mut self) -> usize {
        usize::from(self.u8()) | usize::from(self.u8()) << 8
    }

    fn u24(&mut self) -> usize {
        self.u16() | usize::from(self.u8()) << 16
    }

    /// Mostly small sizes; every range up to 4 MiB is reachable.
    fn size(&mut self) -> usize {
        let sel = self.u8();
        let size = match sel >> 5 {
            0..=3 => 1 + usize::from(sel & 31) * 8 + usize::from(self.u8() & 7), // 1..=255
            4 => 1 + self.u16() % (16 * KIB),
            5 => 1 + self.u24() % (256 * KIB),
            6 => 1 + self.u24() % (1536 * KIB),
            _ => 1 + (self.u24() << 2) % (4 * MIB),
        };
        size.max(1)
    }

    /// 1 B to 1 MiB, small ones most often.
    fn align(&mut self) -> usize {
        let b = self.u8();
        if b < 160 {
            1 << (b % 5) // 1..=16
        } else {
            1 << (b % 21) // 1..=1 MiB
        }
    }
}

struct Block {
    ptr: *mut u8,
    layout: Layout,
    fill: u8,
}

struct Model {
    live: Vec<Block>,
    /// start -> end of every live block, for the overlap check.
    ranges: BTreeMap<usize, usize>,
    bytes: usize,
    next_fill: u8,
}

/// First offset in `p..p+len` that is not `b` (compared with memcmp).
///
/// # Safety
/// `p` is valid for reads of `len` bytes.
unsafe fn first_not(p: *const u8, len: usize, b: u8) -> Option<usize> {
    let tmpl = [b; 4096];
    // SAFETY: the caller's contract.
    let buf = unsafe { std::slice::from_raw_parts(p, len) };
    for (ci, c) in buf.chunks(tmpl.len()).enumerate() {
        if c != &tmpl[..c.len()] {
            return Some(ci * tmpl.len() + c.iter().position(|&x| x != b).unwrap());
        }
    }
    None
}

impl Model {
    fn check(&self, i: usize, what: &str) {
        let b = &self.live[i];
        // SAFETY: a live block of `layout.size()` bytes, all written.
        if let Some(off) = unsafe { first_not(b.ptr, b.layout.size(), b.fill) } {
            panic!(
                "{what}: block {:?} {:?} corrupted at byte {off} (fill {:#04x})",
                b.ptr, b.layout, b.fill
            );
        }
    }

    fn insert_range(&mut self, p: *mut u8, size: usize) {
        let (start, end) = (p as usize, p as usize + size);
        if let Some((&s, &e)) = self.ranges.range(..end).next_back() {
            assert!(
                e <= start || s >= end,
                "[{start:#x}, {end:#x}) overlaps live [{s:#x}, {e:#x})"
            );
        }
        self.ranges.insert(start, end);
    }

    fn remove_range(&mut self, p: *mut u8) {
        assert!(
            self.ranges.remove(&(p as usize)).is_some(),
            "{p:?} not in the model"
        );
    }

    fn fresh(&mut self, p: *mut u8, layout: Layout, zeroed: bool) {
        assert!(
            !p.is_null(),
            "{} returned null for {layout:?}",
            if zeroed { "alloc_zeroed" } else { "alloc" }
        );
        assert_eq!(
            p as usize % layout.align(),
            0,
            "{p:?} misaligned for {layout:?}"
        );
        // SAFETY: `p` is a live block of ours.
        let usable = unsafe { mapalloc::usable_size(p) };
        assert!(usable >= layout.size(), "usable_size {usable} < {layout:?}");
        if zeroed {
            // SAFETY: `p` is valid for `layout.size()` bytes.
            if let Some(off) = unsafe { first_not(p, layout.size(), 0) } {
                panic!("alloc_zeroed({layout:?}) = {p:?}: byte {off} is not zero");
            }
        }
        self.insert_range(p, layout.size());
        self.next_fill = self.next_fill.wrapping_add(0x3B) | 1;
        let fill = self.next_fill;
        // SAFETY: `p` is valid for writes of `layout.size()` bytes.
        unsafe { p.write_bytes(fill, layout.size()) };
        self.bytes += layout.size();
        self.live.push(Block {
            ptr: p,
            layout,
            fill,
        });
    }

    fn free(&mut self, i: usize) {
        self.check(i, "before free");
        let b = self.live.swap_remove(i);
        self.remove_range(b.ptr);
        self.bytes -= b.layout.size();
        // SAFETY: `b` is a live block of `b.layout`, forgotten by the model.
        unsafe { std::alloc::dealloc(b.ptr, b.layout) };
    }
}

fn huge_enabled() -> bool {
    static HUGE: OnceLock<bool> = OnceLock::new();
    *HUGE.get_or_init(|| std::env::var_os("MAPALLOC_FUZZ_HUGE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { data };
    let mut m = Model {
        live: Vec::with_capacity(MAX_LIVE),
        ranges: BTreeMap::new(),
        bytes: 0,
        next_fill: 0,
    };
    while let Some(op) = input.byte() {
        match op % 8 {
            0..=2 => {
                let (size, align) = (input.size(), input.align());
                if m.live.len() >= MAX_LIVE || m.bytes + size > MAX_LIVE_BYTES {
                    continue;
                }
                let layout = Layout::from_size_align(size, align).unwrap();
                let zeroed = op % 8 == 2;
                // SAFETY: `size >= 1`.
                let p = unsafe {
                    if zeroed {
                        std::alloc::alloc_zeroed(layout)
                    } else {
                        std::alloc::alloc(layout)
                    }
                };
                m.fresh(p, layout, zeroed);
            }
            3 | 4 if !m.live.is_empty() => {
                let i = input.u16() % m.live.len();
                let new_size = input.size();
                if m.bytes + new_size > MAX_LIVE_BYTES {
                    continue;
                }
                m.check(i, "before realloc");
                let b = m.live.swap_remove(i);
                m.remove_range(b.ptr);
                m.bytes -= b.layout.size();
                // SAFETY: `b` is a live block of `b.layout`; `new_size` is
                // at least 1 and at most 4 MiB.
                let q = unsafe { std::alloc::realloc(b.ptr, b.layout, new_size) };
                assert!(
                    !q.is_null(),
                    "realloc({:?} -> {new_size}) returned null",
                    b.layout
                );
                let keep = b.layout.size().min(new_size);
                // SAFETY: `q` is valid for `new_size >= keep` bytes.
                if let Some(off) = unsafe { first_not(q, keep, b.fill) } {
                    panic!(
                        "realloc({:?} -> {new_size}) = {q:?} lost byte {off} of the prefix",
                        b.layout
                    );
                }
                let layout = Layout::from_size_align(new_size, b.layout.align()).unwrap();
                m.fresh(q, layout, false);
            }
            5 | 6 if !m.live.is_empty() => {
                let i = input.u16() % m.live.len();
                m.free(i);
            }
            7 if huge_enabled() => {
                // Sizes no address space holds: 2^47 up to isize::MAX.
                let align = input.align();
                let raw = (input.u24() << 40) | (input.u24() << 16) | input.u16();
                let size = (1usize << 47) + raw % (isize::MAX as usize + 1 - align - (1 << 47));
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size.
                let p = std::hint::black_box(unsafe { std::alloc::alloc(layout) });
                assert!(p.is_null(), "alloc({layout:?}) = {p:?}");
                if let Some(b) = m.live.last() {
                    // SAFETY: a live block; the new size rounded up to its
                    // alignment fits isize.
                    let q = std::hint::black_box(unsafe {
                        std::alloc::realloc(
                            b.ptr,
                            b.layout,
                            size.min(isize::MAX as usize + 1 - b.layout.align()),
                        )
                    });
                    assert!(q.is_null(), "realloc to {size:#x} = {q:?}");
                    m.check(m.live.len() - 1, "after failed realloc");
                }
            }
            _ => {
                // Check everything now and then.
                for i in 0..m.live.len() {
                    m.check(i, "sweep");
                }
            }
        }
    }
    while !m.live.is_empty() {
        m.free(m.live.len() - 1);
    }
    assert!(m.ranges.is_empty());
});
