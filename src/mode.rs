//! How an allocation is asked for: in which mode, and whether it must
//! read as zero.
//!
//! The process's mode, default or hardened: undecided until the first heap
//! or large block is made (or until hardened mode is asked for), then fixed
//! for good. One mode for the whole process means every block, heap and
//! segment is of one kind, so no path ever meets a block of the other mode,
//! and the default heap and the hardened heap never share a page.

use crate::sync::{AtomicU8, Ordering};

static MODE: AtomicU8 = AtomicU8::new(UNDECIDED);
const UNDECIDED: u8 = 0;
const DEFAULT: u8 = 1;
const HARDENED: u8 = 2;

/// The mode an allocation asks for. `MapAlloc::hardened()` asks for
/// hardened mode with a constant that travels with each call, so its
/// routing folds away at compile time; `MapAlloc::new()` and the C ABI
/// take the process's mode (`MAPALLOC_HARDENED=1`, or whichever allocator
/// fixed it first).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    AsConfigured,
    Hardened,
}

impl Mode {
    /// Switches hardened mode on if asked. Aborts if the process already
    /// runs in the default mode (a heap or large block was made first, by
    /// a `MapAlloc::new()` or the raw API): its blocks cannot be served or
    /// freed as hardened ones, and quietly serving the default would break
    /// the promise `MapAlloc::hardened()` makes.
    #[inline]
    pub(crate) fn apply(self) {
        if self == Mode::Hardened && !request() {
            crate::os::fatal(
                &[b"MapAlloc::hardened() used in a process already running in the default mode"],
                None,
            );
        }
    }

    /// True if a call in this mode is served by hardened mode: it asks for
    /// it, or the process runs in it.
    #[inline(always)]
    pub(crate) fn is_hardened(self) -> bool {
        self == Mode::Hardened || hardened()
    }
}

/// True if the process runs in hardened mode. Blocks exist only once the
/// mode is fixed, so any path that holds one can ask this.
#[inline(always)]
pub(crate) fn hardened() -> bool {
    MODE.load(Ordering::Relaxed) == HARDENED
}

/// Asks for hardened mode (`MapAlloc::hardened()`, `MAPALLOC_HARDENED=1`):
/// true if the process is now hardened, false if its mode was already
/// fixed as the default.
pub(crate) fn request() -> bool {
    fix(HARDENED)
}

/// Fixes the mode as it stands, before the first heap or large block is
/// made (the default unless hardened mode was asked for), and returns
/// whether it is hardened.
pub(crate) fn settle() -> bool {
    fix(DEFAULT)
}

/// Fixes the mode as `mode` if it is undecided; true if it is hardened.
/// A plain load first: every large allocation asks, and a decided mode
/// needs no write to a shared line.
fn fix(mode: u8) -> bool {
    let now = match MODE.load(Ordering::Relaxed) {
        UNDECIDED => match MODE.compare_exchange(UNDECIDED, mode, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => mode,
            Err(now) => now,
        },
        now => now,
    };
    now == HARDENED
}

/// Whether an allocation must read as zero.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zero {
    No,
    Yes,
}
