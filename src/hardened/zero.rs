//! Blocks of size zero (`malloc(0)`): unique addresses in a `PROT_NONE`
//! region, so any read or write through one faults, while `free` of one
//! is valid and a second `free` is a double free.
//!
//! A zero chunk is a 4 MiB segment-aligned mapping, registered like a
//! segment, whose header (`Kind::Zero`) and slot bitmap fill its first
//! 64 KiB; the rest is `PROT_NONE`, one 16-byte slot per bit. Bits are
//! claimed and cleared with atomic operations, so no lock is taken but to
//! map a chunk. `malloc(0)` is rare; when every chunk is full (a million
//! live zero-size blocks) a one-byte block is handed out instead.

use super::die;
use crate::os;
use crate::registry;
use crate::segment::{Header, Kind, SEGMENT_SIZE, segment_of};
use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use core::ptr;

const OPEN: usize = 64 << 10;
const STEP: usize = 16;
const SLOTS: usize = (SEGMENT_SIZE - OPEN) / STEP;
const WORDS: usize = SLOTS / 64;
static_assertions::const_assert!(SLOTS.is_multiple_of(64));

#[repr(C)]
struct Chunk {
    header: Header,
    /// Bit i: slot i is handed out.
    live: [AtomicU64; WORDS],
}
static_assertions::const_assert!(core::mem::size_of::<Chunk>() <= OPEN);

const MAX_CHUNKS: usize = 4;
static CHUNKS: [AtomicUsize; MAX_CHUNKS] = [const { AtomicUsize::new(0) }; MAX_CHUNKS];
/// Where the next search starts (a word index over all chunks).
static CURSOR: AtomicUsize = AtomicUsize::new(0);
/// A `CHUNKS` entry claimed by a thread that is mapping its chunk.
const MAPPING: usize = 1;

/// A fresh zero-size block, or null if none can be had.
pub(super) fn alloc() -> *mut u8 {
    for _ in 0..2 {
        let start = CURSOR.load(Ordering::Relaxed);
        for k in 0..MAX_CHUNKS * WORDS {
            let w = (start + k) % (MAX_CHUNKS * WORDS);
            let chunk = CHUNKS[w / WORDS].load(Ordering::Acquire) as *mut Chunk;
            if (chunk as usize) <= MAPPING {
                continue;
            }
            // SAFETY: a published chunk stays mapped for the process's life.
            let word = unsafe { &(*chunk).live[w % WORDS] };
            let mut bits = word.load(Ordering::Relaxed);
            while bits != u64::MAX {
                let bit = (!bits).trailing_zeros();
                let old = word.fetch_or(1 << bit, Ordering::Relaxed);
                if old & (1 << bit) == 0 {
                    CURSOR.store(w, Ordering::Relaxed);
                    let slot = (w % WORDS) * 64 + bit as usize;
                    return (chunk as usize + OPEN + slot * STEP) as *mut u8;
                }
                bits = old | (1 << bit);
            }
        }
        if !map_chunk() {
            break;
        }
    }
    ptr::null_mut()
}

/// Maps one more chunk (no lock: the entry is claimed first); false if
/// none can be mapped.
#[cold]
fn map_chunk() -> bool {
    let Some(free) = CHUNKS.iter().find(|c| {
        c.compare_exchange(0, MAPPING, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }) else {
        return false;
    };
    let base = match os::map_aligned(SEGMENT_SIZE, SEGMENT_SIZE, 0) {
        Some(p) => p.as_ptr(),
        None => {
            free.store(0, Ordering::Relaxed);
            return false;
        }
    };
    // SAFETY: our fresh mapping; everything past the header is no one's.
    let fenced = unsafe { os::protect_none(base.add(OPEN), SEGMENT_SIZE - OPEN) };
    if !fenced || !registry::insert(base as usize) {
        os::unmap(base, SEGMENT_SIZE);
        free.store(0, Ordering::Relaxed);
        return false;
    }
    // SAFETY: the header fits the open part (const-asserted); the bitmap is
    // zero, as fresh memory is.
    unsafe {
        base.cast::<Header>().write(Header {
            owner: AtomicPtr::new(ptr::null_mut()),
            kind: Kind::Zero,
        })
    };
    free.store(base as usize, Ordering::Release);
    true
}

/// The bit of `p` in the chunk `seg` heads, if `p` is a slot's address.
/// `seg` heads a registered zero chunk.
fn slot_of(seg: *mut crate::segment::Segment, p: *mut u8) -> Option<(&'static AtomicU64, u64)> {
    let off = (p as usize).checked_sub(seg as usize + OPEN)?;
    if !off.is_multiple_of(STEP) || off / STEP >= SLOTS {
        return None;
    }
    let slot = off / STEP;
    // SAFETY: `seg` heads a registered zero chunk, mapped for good.
    let word = unsafe { &(*seg.cast::<Chunk>()).live[slot / 64] };
    Some((word, 1 << (slot % 64)))
}

/// True if `p` is a live zero-size block.
///
/// # Safety
/// `p` masks to a registered chunk of kind `Zero`.
pub(super) unsafe fn is_live(p: *mut u8) -> bool {
    slot_of(segment_of(p), p).is_some_and(|(word, bit)| word.load(Ordering::Relaxed) & bit != 0)
}

/// Frees zero-size block `p`, or aborts.
///
/// # Safety
/// `p` masks to a registered chunk of kind `Zero`.
pub(super) unsafe fn free(p: *mut u8) {
    let Some((word, bit)) = slot_of(segment_of(p), p) else {
        die(b"invalid free", p as usize);
    };
    if word.fetch_and(!bit, Ordering::Relaxed) & bit == 0 {
        die(b"double free", p as usize);
    }
}
