//! The dispatching global allocator, [`Switch`], of the in-process Rust
//! workloads (and of `examples/compare.rs`, which includes this file with
//! `#[path]`: it depends on nothing but `mapalloc` and `libc`).
//!
//! `#[global_allocator]` is fixed at compile time, so a binary that runs
//! the same workload on several allocators declares
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: Switch = Switch::new();
//! ```
//!
//! and picks the allocator per *process*: on its very first allocation the
//! switch reads [`ENV_VAR`] with `libc::getenv` (which does not allocate) and
//! fixes the choice in a static for the rest of the process, so every block
//! is freed by the allocator that made it. The choices are `mapalloc`
//! (`MapAlloc::new()`), `hardened` (`MapAlloc::hardened()`) and `system`
//! (`std::alloc::System`, i.e. the C `malloc`: glibc's, or under
//! `LD_PRELOAD` the preloaded library's, which is how jemalloc, tcmalloc,
//! mimalloc and mimalloc secure become the binary's global allocator). An
//! unset or unknown value means `system`.
//!
//! Every choice pays the same dispatch: one relaxed load of the table
//! pointer and an indirect call (`benches/callgrind.sh` counts the pairs
//! with and without the switch).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CStr;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use mapalloc::MapAlloc;

/// Environment variable selecting the allocator of a child process.
pub const ENV_VAR: &str = "MAPALLOC_BENCH_ALLOC";
const ENV_VAR_C: &CStr = c"MAPALLOC_BENCH_ALLOC";

const UNRESOLVED: u8 = 0;
const USE_MAPALLOC: u8 = 1;
const USE_HARDENED: u8 = 2;
const USE_SYSTEM: u8 = 3;

/// Which allocator this process uses; written once, on the first allocation.
static CHOICE: AtomicU8 = AtomicU8::new(UNRESOLVED);

/// What the [`Switch`] can forward to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Choice {
    /// `MapAlloc::new()`.
    MapAlloc,
    /// `MapAlloc::hardened()`.
    Hardened,
    /// `std::alloc::System`: the C `malloc` (glibc's, or a preloaded one).
    System,
}

impl Choice {
    /// All choices.
    pub const ALL: [Choice; 3] = [Choice::MapAlloc, Choice::Hardened, Choice::System];

    /// Value of [`ENV_VAR`] selecting this choice.
    pub fn env_value(self) -> &'static str {
        match self {
            Choice::MapAlloc => "mapalloc",
            Choice::Hardened => "hardened",
            Choice::System => "system",
        }
    }

    fn code(self) -> u8 {
        match self {
            Choice::MapAlloc => USE_MAPALLOC,
            Choice::Hardened => USE_HARDENED,
            Choice::System => USE_SYSTEM,
        }
    }

    fn from_code(c: u8) -> Choice {
        match c {
            USE_MAPALLOC => Choice::MapAlloc,
            USE_HARDENED => Choice::Hardened,
            _ => Choice::System,
        }
    }
}

/// Global allocator forwarding to one [`Choice`], fixed once per process
/// from [`ENV_VAR`].
///
/// The dispatch is a table of four function pointers per choice: every
/// call loads the process's table and jumps through it (a few instructions,
/// no branch on the allocator, so the same for all). Each table entry has
/// its allocator's `GlobalAlloc` method inlined into it.
pub struct Switch;

impl Switch {
    /// The switch; nothing is decided until the first allocation.
    pub const fn new() -> Self {
        Switch
    }
}

impl Default for Switch {
    fn default() -> Self {
        Self::new()
    }
}

/// One allocator's `GlobalAlloc` methods.
struct VTable {
    alloc: unsafe fn(Layout) -> *mut u8,
    alloc_zeroed: unsafe fn(Layout) -> *mut u8,
    dealloc: unsafe fn(*mut u8, Layout),
    realloc: unsafe fn(*mut u8, Layout, usize) -> *mut u8,
}

/// A [`VTable`] static whose entries forward to the allocator `$a` (a
/// constant expression).
macro_rules! vtable {
    ($name:ident, $a:expr) => {
        static $name: VTable = {
            unsafe fn alloc(layout: Layout) -> *mut u8 {
                // SAFETY: forwarded; the caller upholds `GlobalAlloc::alloc`'s
                // contract, which is all this allocator needs.
                unsafe { $a.alloc(layout) }
            }
            unsafe fn alloc_zeroed(layout: Layout) -> *mut u8 {
                // SAFETY: as in `alloc`.
                unsafe { $a.alloc_zeroed(layout) }
            }
            unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
                // SAFETY: the choice never changes once made, so `ptr` came
                // from this allocator with `layout`; the caller upholds the
                // rest of `GlobalAlloc::dealloc`'s contract.
                unsafe { $a.dealloc(ptr, layout) }
            }
            unsafe fn realloc(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                // SAFETY: as in `dealloc`, for `GlobalAlloc::realloc`.
                unsafe { $a.realloc(ptr, layout, new_size) }
            }
            VTable {
                alloc,
                alloc_zeroed,
                dealloc,
                realloc,
            }
        };
    };
}

vtable!(MAPALLOC_VT, const { MapAlloc::new() });
vtable!(HARDENED_VT, const { MapAlloc::hardened() });
vtable!(SYSTEM_VT, System);

/// The table of the first allocation: resolves the choice, then forwards.
static RESOLVE_VT: VTable = {
    unsafe fn alloc(layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the chosen allocator.
        unsafe { (resolve().alloc)(layout) }
    }
    unsafe fn alloc_zeroed(layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the chosen allocator.
        unsafe { (resolve().alloc_zeroed)(layout) }
    }
    unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged. (No block exists before the first
        // allocation, which resolves the choice, so this is never reached
        // with a real block.)
        unsafe { (resolve().dealloc)(ptr, layout) }
    }
    unsafe fn realloc(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`.
        unsafe { (resolve().realloc)(ptr, layout, new_size) }
    }
    VTable {
        alloc,
        alloc_zeroed,
        dealloc,
        realloc,
    }
};

/// The table every call goes through.
static ACTIVE: AtomicPtr<VTable> = AtomicPtr::new(ptr::from_ref(&RESOLVE_VT).cast_mut());

fn vtable_of(code: u8) -> &'static VTable {
    match code {
        USE_MAPALLOC => &MAPALLOC_VT,
        USE_HARDENED => &HARDENED_VT,
        _ => &SYSTEM_VT,
    }
}

#[inline(always)]
fn table() -> &'static VTable {
    // SAFETY: `ACTIVE` only ever holds pointers to the static tables above.
    unsafe { &*ACTIVE.load(Ordering::Relaxed) }
}

/// Fixes the choice (if not yet) and installs its table.
#[cold]
#[inline(never)]
fn resolve() -> &'static VTable {
    let code = match CHOICE.load(Ordering::Relaxed) {
        UNRESOLVED => resolve_choice(),
        c => c,
    };
    let vt = vtable_of(code);
    ACTIVE.store(ptr::from_ref(vt).cast_mut(), Ordering::Relaxed);
    vt
}

/// Reads [`ENV_VAR`] without allocating and fixes the choice for the rest of
/// the process. An unset or unknown value means the system allocator
/// ([`requested`] tells the two apart).
fn resolve_choice() -> u8 {
    // SAFETY: `ENV_VAR_C` is a NUL-terminated C string. `getenv` only reads
    // the environment and does not allocate. Nobody calls `setenv` while the
    // first allocation of the process is in progress.
    let value = unsafe { libc::getenv(ENV_VAR_C.as_ptr()) };
    let wanted = if value.is_null() {
        USE_SYSTEM
    } else {
        // SAFETY: a non-null `getenv` result points to a NUL-terminated
        // string inside the environment block, which lives for the process.
        let bytes = unsafe { CStr::from_ptr(value) }.to_bytes();
        Choice::ALL
            .into_iter()
            .find(|a| a.env_value().as_bytes() == bytes)
            .map_or(USE_SYSTEM, Choice::code)
    };
    // If two threads race on the very first allocation, the first writer
    // wins and both use its value, so the choice can never change.
    match CHOICE.compare_exchange(UNRESOLVED, wanted, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => wanted,
        Err(existing) => existing,
    }
}

/// The choice this process runs on (resolving it if no allocation has done
/// it yet).
pub fn active() -> Choice {
    match CHOICE.load(Ordering::Relaxed) {
        UNRESOLVED => Choice::from_code(resolve_choice()),
        c => Choice::from_code(c),
    }
}

/// The choice [`ENV_VAR`] asks for: `None` if it is unset, `Err` with the
/// value if it names no choice.
pub fn requested() -> Option<Result<Choice, String>> {
    let value = std::env::var(ENV_VAR).ok()?;
    Some(
        Choice::ALL
            .into_iter()
            .find(|c| c.env_value() == value)
            .ok_or(value),
    )
}

// SAFETY: every method forwards to exactly one of three valid allocators, and
// the choice between them is fixed before the first block is handed out
// (racing first allocations all install the table of the one choice that
// won), so each block is always freed/reallocated by the allocator that
// allocated it.
unsafe impl GlobalAlloc for Switch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the process's allocator.
        unsafe { (table().alloc)(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the process's allocator.
        unsafe { (table().alloc_zeroed)(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the allocator that made `ptr`.
        unsafe { (table().dealloc)(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the allocator that made `ptr`.
        unsafe { (table().realloc)(ptr, layout, new_size) }
    }
}
