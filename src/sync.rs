//! The one place that names atomics and locks: std/core normally, `loom`
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

#[cfg(not(loom))]
use core::cell::UnsafeCell;
#[cfg(loom)]
use loom::cell::UnsafeCell;

/// One-time initialisation that never allocates (process set-up). A
/// second caller waits, yielding, until the first has finished; the
/// initialiser must not call `call_once` on the same `Once`.
pub(crate) struct Once<T> {
    state: AtomicU8,
    value: UnsafeCell<core::mem::MaybeUninit<T>>,
}

const ONCE_NEW: u8 = 0;
const ONCE_RUNNING: u8 = 1;
const ONCE_DONE: u8 = 2;

// SAFETY: `value` is written once, by the thread that moved `state` from
// NEW to RUNNING, and read only after `state` is DONE (Release/Acquire).
unsafe impl<T: Send + Sync> Sync for Once<T> {}

impl<T: Copy> Once<T> {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Self {
            state: AtomicU8::new(ONCE_NEW),
            value: UnsafeCell::new(core::mem::MaybeUninit::uninit()),
        }
    }
    #[cfg(loom)]
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
                // SAFETY: we alone moved the state to RUNNING; nobody reads
                // `value` before DONE.
                unsafe { self.write(v) };
                self.state.store(ONCE_DONE, Ordering::Release);
                return v;
            }
            while self.state.load(Ordering::Acquire) != ONCE_DONE {
                yield_now();
            }
        }
        // SAFETY: DONE was stored (Release) after `value` was written, and we
        // observed it with Acquire.
        unsafe { self.read() }
    }

    #[cfg(not(loom))]
    unsafe fn write(&self, v: T) {
        // SAFETY: the caller has exclusive access (state RUNNING).
        unsafe { (*self.value.get()).write(v) };
    }
    #[cfg(loom)]
    unsafe fn write(&self, v: T) {
        self.value.with_mut(|p| {
            // SAFETY: the caller has exclusive access (state RUNNING).
            unsafe { (*p).write(v) };
        });
    }
    #[cfg(not(loom))]
    unsafe fn read(&self) -> T {
        // SAFETY: the caller observed DONE.
        unsafe { (*self.value.get()).assume_init() }
    }
    #[cfg(loom)]
    unsafe fn read(&self) -> T {
        // SAFETY: the caller observed DONE.
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

/// A test-and-test-and-set lock for rare slow paths (heap pool, large
/// cache). It yields the CPU after a short spin: on a 2-core machine a
/// preempted holder would otherwise make every waiter burn its time slice.
#[cfg(not(loom))]
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: core::cell::UnsafeCell<T>,
}

// SAFETY: the lock serialises every access to `value`, so sharing the lock
// between threads only ever hands `&mut T` to one thread at a time.
#[cfg(not(loom))]
unsafe impl<T: Send> Sync for SpinLock<T> {}

#[cfg(not(loom))]
impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: core::cell::UnsafeCell::new(value),
        }
    }

    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        let mut spins = 0u32;
        loop {
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return SpinGuard { lock: self };
            }
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// Releases a lock whose guard was forgotten (across `fork`).
    ///
    /// # Safety
    /// No live guard of this lock may be used afterwards.
    pub(crate) unsafe fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

#[cfg(not(loom))]
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

#[cfg(not(loom))]
impl<T> core::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves this thread holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

#[cfg(not(loom))]
impl<T> core::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves this thread holds the lock exclusively.
        unsafe { &mut *self.lock.value.get() }
    }
}

#[cfg(not(loom))]
impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
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
