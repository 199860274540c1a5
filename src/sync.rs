//! The one place that names atomics, locks and one-time set-up: `core`
//! atomics with `spin`'s `SpinMutex` and `Once` normally, `loom`'s types
//! under `cfg(loom)`, so every lock-free structure can be model-checked
//! with the same source.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU16, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU16, AtomicU64, AtomicUsize, Ordering,
};

#[cfg(loom)]
use loom::cell::UnsafeCell;

/// How a waiter on a `SpinLock` or a `Once` backs off: `SPIN_LIMIT`
/// `spin_loop` hints, then `sched_yield` on every later try. These
/// machines have 2 cores: a waiter that kept spinning on a preempted
/// holder would burn its whole time slice before the holder could run.
///
/// `spin`'s `RelaxStrategy::relax` carries no state, so the count lives in
/// a thread-local `Cell` (const-initialised, no destructor: reading it
/// never allocates or registers anything, like the heap pointer in
/// `thread`), reset by the facade when a wait begins.
#[cfg(not(loom))]
pub(crate) struct Backoff;

/// Spins before the first `sched_yield` of a wait (about 2 µs of `pause`
/// on the development machine; the locks guard a few dozen instructions).
#[cfg(not(loom))]
const SPIN_LIMIT: u32 = 64;

#[cfg(not(loom))]
std::thread_local! {
    static SPINS: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

#[cfg(not(loom))]
impl Backoff {
    /// Starts a wait: the next `SPIN_LIMIT` relaxes spin.
    #[cold]
    fn begin() {
        SPINS.set(0);
    }
}

#[cfg(not(loom))]
impl spin::RelaxStrategy for Backoff {
    #[inline]
    fn relax() {
        let n = SPINS.get();
        if n < SPIN_LIMIT {
            SPINS.set(n + 1);
            core::hint::spin_loop();
        } else {
            yield_now();
        }
    }
}

/// One-time initialisation that never allocates (process set-up):
/// `spin::Once` with `Backoff`. A second caller during the initialiser
/// waits with the same back-off until it has finished; the initialiser
/// must not call `call_once` on the same `Once`, and must not panic
/// (spin poisons a `Once` whose initialiser unwound, and a later caller
/// would panic: the one initialiser, `thread::process_init`, has no panic
/// path). `spin::Once` is an atomic byte and the value: it allocates
/// nothing.
#[cfg(not(loom))]
pub(crate) struct Once<T>(spin::once::Once<T, Backoff>);

#[cfg(not(loom))]
impl<T: Copy> Once<T> {
    pub(crate) const fn new() -> Self {
        Self(spin::once::Once::new())
    }

    #[inline]
    pub(crate) fn call_once(&self, init: impl FnOnce() -> T) -> T {
        if let Some(v) = self.0.get() {
            return *v;
        }
        Backoff::begin();
        *self.0.call_once(init)
    }
}

/// Under loom: the same protocol as `spin::Once` (CAS from new to running,
/// waiters yield until done) on loom's atomics and cell, so the model sees
/// each step. `spin`'s own code uses `core` atomics that loom cannot see.
#[cfg(loom)]
pub(crate) struct Once<T> {
    state: AtomicU8,
    value: UnsafeCell<core::mem::MaybeUninit<T>>,
}

#[cfg(loom)]
const ONCE_NEW: u8 = 0;
#[cfg(loom)]
const ONCE_RUNNING: u8 = 1;
#[cfg(loom)]
const ONCE_DONE: u8 = 2;

// SAFETY: `value` is written once, by the thread that moved `state` from
// NEW to RUNNING, and read only after `state` is DONE (Release/Acquire).
#[cfg(loom)]
unsafe impl<T: Send + Sync> Sync for Once<T> {}

#[cfg(loom)]
impl<T: Copy> Once<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU8::new(ONCE_NEW),
            value: UnsafeCell::new(core::mem::MaybeUninit::uninit()),
        }
    }

    pub(crate) fn call_once(&self, init: impl FnOnce() -> T) -> T {
        if self.state.load(Ordering::Acquire) != ONCE_DONE {
            if self
                .state
                .compare_exchange(ONCE_NEW, ONCE_RUNNING, Ordering::Acquire, Ordering::Acquire)
                .is_ok()
            {
                let v = init();
                self.value.with_mut(|p| {
                    // SAFETY: we alone moved the state to RUNNING; nobody
                    // reads `value` before DONE.
                    unsafe { (*p).write(v) };
                });
                self.state.store(ONCE_DONE, Ordering::Release);
                return v;
            }
            while self.state.load(Ordering::Acquire) != ONCE_DONE {
                yield_now();
            }
        }
        // SAFETY: DONE was stored (Release) after `value` was written, and we
        // observed it with Acquire.
        self.value.with(|p| unsafe { (*p).assume_init() })
    }
}

#[cfg(not(loom))]
fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe { libc::sched_yield() };
}
#[cfg(loom)]
fn yield_now() {
    loom::thread::yield_now();
}

/// Runs a loom model and reports how many interleavings it explored.
#[cfg(all(test, loom))]
pub(crate) fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::Arc as StdArc;
    use std::sync::atomic::{AtomicUsize as StdUsize, Ordering as StdOrdering};
    let runs = StdArc::new(StdUsize::new(0));
    let r = runs.clone();
    loom::model(move || {
        r.fetch_add(1, StdOrdering::Relaxed);
        f();
    });
    println!(
        "loom model {name}: {} interleavings explored",
        runs.load(StdOrdering::Relaxed)
    );
}

#[cfg(all(test, loom))]
mod models {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn once_runs_the_initialiser_exactly_once() {
        model("once", || {
            let once = Arc::new(Once::<usize>::new());
            let runs = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..2)
                .map(|i| {
                    let (once, runs) = (once.clone(), runs.clone());
                    loom::thread::spawn(move || {
                        once.call_once(|| {
                            runs.fetch_add(1, Ordering::Relaxed);
                            10 + i
                        })
                    })
                })
                .collect();
            let got: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(runs.load(Ordering::Relaxed), 1, "initialiser ran once");
            assert_eq!(got[0], got[1], "both callers see the one value");
            assert_eq!(once.call_once(|| 99), got[0]);
        });
    }
}

/// The lock of the rare slow paths (heap pool, large cache, fallback
/// heap): `spin`'s test-and-test-and-set `SpinMutex`, waiting with
/// `Backoff`. A newtype, so that modules can add methods to their own
/// locks (`thread`'s `SpinLock<HeapPool>`).
#[cfg(not(loom))]
pub(crate) struct SpinLock<T>(spin::mutex::SpinMutex<T, Backoff>);

#[cfg(not(loom))]
pub(crate) use spin::mutex::SpinMutexGuard as SpinGuard;

#[cfg(not(loom))]
impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(spin::mutex::SpinMutex::new(value))
    }

    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        if let Some(guard) = self.0.try_lock() {
            return guard;
        }
        Backoff::begin();
        self.0.lock()
    }

    /// Releases a lock whose guard was forgotten (across `fork`).
    ///
    /// # Safety
    /// No live guard of this lock may be used afterwards.
    pub(crate) unsafe fn force_unlock(&self) {
        // SAFETY: forwarded.
        unsafe { self.0.force_unlock() };
    }
}

#[cfg(loom)]
pub(crate) use loom::sync::{Mutex as SpinLockInner, MutexGuard as SpinGuard};

/// Under loom the lock is loom's mutex, so the model sees every hand-over.
#[cfg(loom)]
pub(crate) struct SpinLock<T>(SpinLockInner<T>);

#[cfg(loom)]
impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(SpinLockInner::new(value))
    }
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        self.0.lock().unwrap()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn spin_lock_serialises_its_holders() {
        // More threads than cores, so waiters reach the yield phase.
        let lock = Arc::new(SpinLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let mut g = lock.lock();
                        // A read-modify-write that loses updates unless the
                        // lock excludes the other threads.
                        let v = *g;
                        core::hint::black_box(&mut *g);
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 80_000);
    }

    #[test]
    fn force_unlock_releases_a_forgotten_guard() {
        let lock = SpinLock::new(7);
        core::mem::forget(lock.lock());
        assert!(lock.0.is_locked());
        // SAFETY: the only guard was forgotten and is never used.
        unsafe { lock.force_unlock() };
        assert_eq!(*lock.lock(), 7);
    }

    #[test]
    fn backoff_spins_then_yields() {
        use spin::RelaxStrategy;
        Backoff::begin();
        for _ in 0..SPIN_LIMIT {
            Backoff::relax();
        }
        assert_eq!(SPINS.get(), SPIN_LIMIT);
        Backoff::relax(); // yields, count stays at the limit
        assert_eq!(SPINS.get(), SPIN_LIMIT);
        Backoff::begin();
        assert_eq!(SPINS.get(), 0);
    }

    #[test]
    fn once_runs_the_initialiser_exactly_once() {
        static ONCE: Once<usize> = Once::new();
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let threads: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    ONCE.call_once(|| {
                        RUNS.fetch_add(1, Ordering::Relaxed);
                        // Hold the others in the waiting loop for a while.
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        10 + i
                    })
                })
            })
            .collect();
        let got: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(RUNS.load(Ordering::Relaxed), 1);
        assert!(got.iter().all(|&v| v == got[0]), "{got:?}");
        assert_eq!(ONCE.call_once(|| 99), got[0]);
    }
}
