//! The dispatching global allocator, [`Switch`], and what the harness needs
//! to know about each allocator under comparison ([`Alloc`]).
//!
//! `#[global_allocator]` is fixed at compile time, so a binary that wants to
//! run the same workload on five allocators declares
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: mapalloc_bench::Switch = mapalloc_bench::Switch::new();
//! ```
//!
//! and picks the allocator per *process*: on its very first allocation the
//! switch reads [`ENV_VAR`] with `libc::getenv` (which does not allocate) and
//! fixes the choice in a static for the rest of the process. The choice never
//! changes afterwards, so every block is freed by the allocator that made it.
//! An unset or unknown value means glibc (`std::alloc::System`); the parent
//! of the benchmark runs that way and re-executes itself with the variable
//! set for each measurement.
//!
//! Every allocator pays the same dispatch: one relaxed load of the table
//! pointer and an indirect jump (`bench/callgrind.sh` measures the pairs
//! with and without the switch).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::{CStr, c_char, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use mapalloc::MapAlloc;
use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

/// Environment variable selecting the allocator of a child process.
pub const ENV_VAR: &str = "MAPALLOC_BENCH_ALLOC";
const ENV_VAR_C: &CStr = c"MAPALLOC_BENCH_ALLOC";

const UNRESOLVED: u8 = 0;
const USE_MAPALLOC: u8 = 1;
const USE_HARDENED: u8 = 2;
const USE_SYSTEM: u8 = 3;
const USE_MIMALLOC: u8 = 4;
const USE_JEMALLOC: u8 = 5;

/// Which allocator this process uses; written once, on the first allocation.
static CHOICE: AtomicU8 = AtomicU8::new(UNRESOLVED);

/// The allocators under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alloc {
    /// `MapAlloc::new()`.
    MapAlloc,
    /// `MapAlloc::hardened()`.
    Hardened,
    /// glibc malloc, through `std::alloc::System`.
    System,
    /// mimalloc (crate `mimalloc`).
    Mimalloc,
    /// jemalloc (crate `tikv-jemallocator`).
    Jemalloc,
}

impl Alloc {
    /// All allocators, in the order children are run and columns printed.
    /// The first one is the reference of every ratio.
    pub const ALL: [Alloc; 5] = [
        Alloc::MapAlloc,
        Alloc::Hardened,
        Alloc::System,
        Alloc::Mimalloc,
        Alloc::Jemalloc,
    ];

    /// Value of [`ENV_VAR`] selecting this allocator.
    pub fn env_value(self) -> &'static str {
        match self {
            Alloc::MapAlloc => "mapalloc",
            Alloc::Hardened => "hardened",
            Alloc::System => "system",
            Alloc::Mimalloc => "mimalloc",
            Alloc::Jemalloc => "jemalloc",
        }
    }

    /// Name for tables and CSV files.
    pub fn label(self) -> &'static str {
        match self {
            Alloc::MapAlloc => "mapalloc",
            Alloc::Hardened => "mapalloc-hardened",
            Alloc::System => "glibc",
            Alloc::Mimalloc => "mimalloc",
            Alloc::Jemalloc => "jemalloc",
        }
    }

    /// Short name for narrow table columns.
    pub fn short(self) -> &'static str {
        match self {
            Alloc::MapAlloc => "mapalloc",
            Alloc::Hardened => "hardened",
            Alloc::System => "glibc",
            Alloc::Mimalloc => "mimalloc",
            Alloc::Jemalloc => "jemalloc",
        }
    }

    /// Parses an [`ENV_VAR`] value or a label.
    pub fn parse(s: &str) -> Option<Alloc> {
        Alloc::ALL
            .into_iter()
            .find(|a| a.env_value() == s || a.label() == s || a.short() == s)
    }

    /// `true` for the two mapalloc modes (whose `mapalloc::stats()` mean
    /// something).
    pub fn is_mapalloc(self) -> bool {
        matches!(self, Alloc::MapAlloc | Alloc::Hardened)
    }

    fn code(self) -> u8 {
        match self {
            Alloc::MapAlloc => USE_MAPALLOC,
            Alloc::Hardened => USE_HARDENED,
            Alloc::System => USE_SYSTEM,
            Alloc::Mimalloc => USE_MIMALLOC,
            Alloc::Jemalloc => USE_JEMALLOC,
        }
    }

    fn from_code(c: u8) -> Alloc {
        match c {
            USE_MAPALLOC => Alloc::MapAlloc,
            USE_HARDENED => Alloc::Hardened,
            USE_MIMALLOC => Alloc::Mimalloc,
            USE_JEMALLOC => Alloc::Jemalloc,
            _ => Alloc::System,
        }
    }
}

/// Global allocator forwarding to one of the five [`Alloc`]s, chosen once
/// per process from [`ENV_VAR`].
///
/// The dispatch is a table of four function pointers per allocator: every
/// call loads the process's table and jumps through it (a few instructions,
/// no branch on the allocator, so the same for all five). Each table entry
/// has its allocator's `GlobalAlloc` method inlined into it.
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
vtable!(MIMALLOC_VT, MiMalloc);
vtable!(JEMALLOC_VT, Jemalloc);

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
        USE_MIMALLOC => &MIMALLOC_VT,
        USE_JEMALLOC => &JEMALLOC_VT,
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
/// the process. An unset or unknown value means the system allocator; the
/// child entry point ([`child_mode`]) rejects unknown values loudly.
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
        Alloc::ALL
            .into_iter()
            .find(|a| a.env_value().as_bytes() == bytes)
            .map_or(USE_SYSTEM, Alloc::code)
    };
    // If two threads race on the very first allocation, the first writer
    // wins and both use its value, so the choice can never change.
    match CHOICE.compare_exchange(UNRESOLVED, wanted, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => wanted,
        Err(existing) => existing,
    }
}

/// The allocator this process is running on (resolving the choice if no
/// allocation has done it yet).
pub fn active() -> Alloc {
    match CHOICE.load(Ordering::Relaxed) {
        UNRESOLVED => Alloc::from_code(resolve_choice()),
        c => Alloc::from_code(c),
    }
}

// SAFETY: every method forwards to exactly one of five valid allocators, and
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

/// If this process is a child (i.e. [`ENV_VAR`] is set), returns the
/// allocator it runs on and its arguments. Exits with an error if the
/// variable holds an unknown value or if the switch resolved differently.
pub fn child_mode() -> Option<(Alloc, Vec<String>)> {
    let value = std::env::var(ENV_VAR).ok()?;
    let Some(wanted) = Alloc::ALL.into_iter().find(|a| a.env_value() == value) else {
        eprintln!(
            "error: {ENV_VAR}={value:?}; expected one of mapalloc, hardened, system, mimalloc, jemalloc (unset it to run the comparison)"
        );
        std::process::exit(2);
    };
    assert_eq!(
        active(),
        wanted,
        "global allocator choice does not match {ENV_VAR} (is the binary's global allocator the Switch?)"
    );
    Some((wanted, std::env::args().skip(1).collect()))
}

/// jemalloc's `MALLCTL_ARENAS_ALL`: `arena.<i>.purge` on all arenas.
const JEMALLOC_PURGE_ALL: &CStr = c"arena.4096.purge";

/// Hands the calling allocator's cached free memory back to the OS:
/// `mapalloc::collect()`, glibc `malloc_trim(0)`, mimalloc
/// `mi_collect(true)`, jemalloc tcache flush + `arena.<all>.purge`.
pub fn release_memory(alloc: Alloc) {
    match alloc {
        Alloc::MapAlloc | Alloc::Hardened => mapalloc::collect(),
        Alloc::System => {
            // SAFETY: `malloc_trim` only releases free memory held by glibc
            // malloc; it is safe to call at any time.
            unsafe { libc::malloc_trim(0) };
        }
        Alloc::Mimalloc => {
            // SAFETY: `mi_collect` only frees mimalloc's own free memory; it
            // may be called at any time from any thread.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
        Alloc::Jemalloc => {
            // SAFETY: both controls take no input and write no output (all
            // pointers null, lengths 0), which is how jemalloc documents
            // them; the names are NUL-terminated.
            unsafe {
                let null = std::ptr::null_mut();
                tikv_jemalloc_sys::mallctl(
                    c"thread.tcache.flush".as_ptr(),
                    null,
                    null.cast(),
                    null,
                    0,
                );
                tikv_jemalloc_sys::mallctl(JEMALLOC_PURGE_ALL.as_ptr(), null, null.cast(), null, 0);
            }
        }
    }
}

/// Version strings of the peers: glibc, mimalloc, jemalloc. Calling this
/// initialises mimalloc and jemalloc in the calling process (harmless).
pub fn versions() -> Vec<(Alloc, String)> {
    // SAFETY: `gnu_get_libc_version` takes no arguments and returns a pointer
    // to a static NUL-terminated string.
    let glibc = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: `mi_version` takes no arguments and only returns a number.
    let mi = unsafe { libmimalloc_sys::mi_version() };
    let mut je: *const c_char = std::ptr::null();
    let mut len = std::mem::size_of::<*const c_char>();
    // SAFETY: "version" is a read-only `const char *` control; `je` and `len`
    // are valid for writes of one pointer, as declared by `len`.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"version".as_ptr(),
            (&raw mut je).cast::<c_void>(),
            &raw mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    let je = if rc == 0 && !je.is_null() {
        // SAFETY: on success jemalloc stored a pointer to its static,
        // NUL-terminated version string.
        unsafe { CStr::from_ptr(je) }.to_string_lossy().into_owned()
    } else {
        "?".to_string()
    };
    vec![
        (
            Alloc::MapAlloc,
            "path dependency (this repository)".to_string(),
        ),
        (Alloc::System, glibc),
        (
            Alloc::Mimalloc,
            format!("{}.{}.{}", mi / 10000, mi / 100 % 100, mi % 100),
        ),
        (Alloc::Jemalloc, je),
    ]
}
