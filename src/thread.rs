//! A thread's heap and its life cycle, for either kind of heap (the
//! default `heap::Heap`, the hardened `hardened::heap::HardenedHeap`).
//!
//! Each kind keeps its own thread-local pointer: a word of initial-exec
//! TLS (`tls`), zero in a new thread and without a destructor, so reading
//! it never allocates or registers anything. It holds the heap XORed with
//! the kind's `uninit` sentinel, a static heap with nothing in it, so a
//! new thread's pointer is that sentinel and its first allocation falls
//! into the slow path, which sets up a real heap from our own memory. Thread exit is caught by a
//! `pthread_key_create` destructor (allocation-free for the first 32
//! keys), which gives the heap up and points the thread at the `dead`
//! sentinel; allocations after that (other destructors) are served from a
//! shared fallback heap under a lock.

use crate::os;
use crate::stats::{Counter, STATS};
use crate::sync::{Once, SpinLock};
use core::cell::UnsafeCell;
use core::ptr;

/// A `Sync` wrapper for the few static pages and heaps.
#[repr(transparent)]
pub(crate) struct Shared<T>(pub(crate) UnsafeCell<T>);
// SAFETY: the static pages and sentinel heaps are never written (their
// free lists are empty, so no path writes them); a fallback heap is
// written only under its lock.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub(crate) const fn new(value: T) -> Self {
        Shared(UnsafeCell::new(value))
    }

    pub(crate) const fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// A kind of thread heap.
///
/// # Safety
/// `threads` and `tls` return the kind's own statics; `exit` leaves the
/// heap with nothing in use, ready to be pooled.
pub(crate) unsafe trait ThreadHeap: Sized + 'static {
    /// An empty heap.
    const INIT: Self;
    fn threads() -> &'static Threads<Self>;
    /// The thread's word (`tls::tls_word`) that holds its heap.
    fn tls() -> *mut usize;
    /// The heap's link in the pool of unused heaps.
    fn pool_next(this: *mut Self) -> *mut *mut Self;
    /// Sets up a heap for the thread (or fallback) that will use it.
    ///
    /// # Safety
    /// `this` is an `INIT` heap no thread uses yet.
    unsafe fn start(_this: *mut Self) {}
    /// Runs once a thread's new heap is in place, when the allocator may
    /// be called again (as registering with libc may).
    fn installed() {}
    /// The heap's thread exits: with `Exit::Keep` the heap keeps its
    /// segments for the next new thread (it only settles what can be
    /// settled now), with `Exit::GiveUp` it gives them up and is reset.
    ///
    /// # Safety
    /// `this` was the exiting thread's heap and nothing else uses it.
    unsafe fn exit(this: *mut Self, how: Exit);
}

/// What an exiting thread's heap does with its memory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Keeps its segments, pages and slabs, owned, for a new thread.
    Keep,
    /// Gives them up (abandoned for other threads to adopt) and is reset.
    GiveUp,
}

/// Heaps of exited threads kept whole, segments and all, for new threads:
/// a new thread then starts with its pages set up and faulted in, where
/// adopting abandoned segments and carving fresh slabs cost it page faults
/// and (hardened) system calls. Remote frees into a kept heap's pages wait
/// on their lists until a thread takes the heap. Past this many, an
/// exiting heap gives its memory up.
const WARM_HEAPS: usize = 8;

/// The statics of one kind of thread heap.
pub(crate) struct Threads<H> {
    uninit: Shared<H>,
    dead: Shared<H>,
    /// Serves threads whose own heap is gone; used only under
    /// `fallback_lock`, which says whether it was started.
    fallback: Shared<H>,
    fallback_lock: SpinLock<bool>,
    pool: SpinLock<Pool<H>>,
    key: Once<libc::pthread_key_t>,
}

impl<H: ThreadHeap> Threads<H> {
    pub(crate) const fn new() -> Self {
        Threads {
            uninit: Shared::new(H::INIT),
            dead: Shared::new(H::INIT),
            fallback: Shared::new(H::INIT),
            fallback_lock: SpinLock::new(false),
            pool: SpinLock::new(Pool {
                cold: ptr::null_mut(),
                warm: ptr::null_mut(),
                warm_count: 0,
                bump: 0,
                end: 0,
            }),
            key: Once::new(),
        }
    }

    pub(crate) fn is_sentinel(&'static self, heap: *mut H) -> bool {
        heap == self.uninit.get() || heap == self.dead.get()
    }
}

/// The calling thread's heap of kind `H` (a sentinel if it has none).
#[inline(always)]
pub(crate) fn current<H: ThreadHeap>() -> *mut H {
    // SAFETY: the thread's own word, which only it reads and writes.
    let word = unsafe { *H::tls() };
    (word ^ H::threads().uninit.get() as usize) as *mut H
}

/// Points the calling thread at `heap`.
fn set_current<H: ThreadHeap>(heap: *mut H) {
    // SAFETY: the thread's own word.
    unsafe { *H::tls() = heap as usize ^ H::threads().uninit.get() as usize };
}

/// The slow path of a thread whose heap is a sentinel: sets one up (or,
/// if the thread's heap is already gone, takes the fallback heap under its
/// lock) and runs `alloc` on it.
///
/// # Safety
/// `heap` is the calling thread's current heap, a sentinel; `alloc` may
/// use the heap it is given exclusively.
pub(crate) unsafe fn alloc_without_heap<H: ThreadHeap>(
    heap: *mut H,
    alloc: impl FnOnce(*mut H) -> *mut u8,
) -> *mut u8 {
    let threads = H::threads();
    if heap == threads.uninit.get() {
        let fresh = init_thread::<H>();
        if !fresh.is_null() {
            return alloc(fresh);
        }
    }
    let mut started = threads.fallback_lock.lock();
    let fallback = threads.fallback.get();
    if !*started {
        // SAFETY: the lock gives exclusive use of the fallback heap.
        unsafe { H::start(fallback) };
        *started = true;
    }
    alloc(fallback)
}

/// Runs `f` on the calling thread's heap (if it has one) and then on the
/// fallback heap, under its lock: the `collect()` API.
pub(crate) fn with_own_heaps<H: ThreadHeap>(f: impl Fn(*mut H, Own)) {
    let threads = H::threads();
    let heap = current::<H>();
    if !threads.is_sentinel(heap) {
        f(heap, Own::Thread);
    }
    let started = threads.fallback_lock.lock();
    if *started {
        f(threads.fallback.get(), Own::Fallback);
    }
}

/// Makes every warm heap give its memory up (the `collect()` API, before
/// the caller adopts what was abandoned): the warm heaps belong to no
/// thread, so nobody else would return what they hold.
pub(crate) fn cool_warm_heaps<H: ThreadHeap>() {
    let mut warm = {
        let mut pool = H::threads().pool.lock();
        let list = core::mem::replace(&mut pool.warm, ptr::null_mut());
        let mut n = 0;
        let mut h = list;
        while !h.is_null() {
            n += 1;
            // SAFETY: pooled heaps are valid and unused.
            h = unsafe { *H::pool_next(h) };
        }
        pool.warm_count -= n;
        list
    };
    while !warm.is_null() {
        // SAFETY: taken from the pool, so ours alone.
        let next = unsafe { *H::pool_next(warm) };
        // SAFETY: a warm heap no thread uses.
        unsafe { H::exit(warm, Exit::GiveUp) };
        let mut pool = H::threads().pool.lock();
        // SAFETY: the heap is reset and unused.
        unsafe { *H::pool_next(warm) = pool.cold };
        pool.cold = warm;
        drop(pool);
        warm = next;
    }
}

/// Whose heap `with_own_heaps` hands over.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Own {
    Thread,
    Fallback,
}

static PROCESS_INIT: Once<()> = Once::new();

/// Reads the options and settles what they decide, once per process.
pub(crate) fn process_init() {
    PROCESS_INIT.call_once(|| {
        crate::options::init();
        if crate::options::HARDENED.get() != 0 {
            // Nothing is made before this runs, so the request holds.
            crate::mode::request();
        }
        os::init_hint(os::random_u64());
    })
}

const NO_KEY: libc::pthread_key_t = libc::pthread_key_t::MAX;

fn init_thread<H: ThreadHeap>() -> *mut H {
    process_init();
    let threads = H::threads();
    let key = threads.key.call_once(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer; the destructor is an
        // `extern "C"` function that never unwinds.
        if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit::<H>)) } == 0 {
            key
        } else {
            NO_KEY
        }
    });
    let (heap, warm) = take_heap::<H>();
    if heap.is_null() {
        return ptr::null_mut();
    }
    if !warm {
        // SAFETY: a fresh `INIT` heap, this thread's alone.
        unsafe { H::start(heap) };
    }
    set_current(heap);
    // After the heap is in place: `pthread_atfork` may allocate, and under
    // LD_PRELOAD that allocation comes back here and must find a heap.
    register_fork_handlers::<H>();
    H::installed();
    if key != NO_KEY {
        // SAFETY: `key` is a live key. If this fails the heap is simply never
        // given up (its memory stays with the exited thread).
        unsafe { libc::pthread_setspecific(key, heap.cast()) };
    }
    heap
}

/// The pthread key destructor: runs once per thread that set up a heap.
extern "C" fn thread_exit<H: ThreadHeap>(arg: *mut libc::c_void) {
    let heap = arg.cast::<H>();
    set_current(H::threads().dead.get());
    // A place among the warm heaps is taken before the heap settles, so
    // that it is there when the heap is put back.
    let how = {
        let mut pool = H::threads().pool.lock();
        if pool.warm_count < WARM_HEAPS {
            pool.warm_count += 1;
            Exit::Keep
        } else {
            Exit::GiveUp
        }
    };
    // SAFETY: `heap` was this thread's heap; no one else uses it, and the
    // thread-local now points elsewhere, so nothing reaches it again.
    unsafe { H::exit(heap, how) };
    put_heap(heap, how);
}

/// Heaps no thread uses: warm ones (kept whole, see `WARM_HEAPS`) and cold
/// ones (reset). They are carved from 64 KiB chunks we map ourselves and
/// never unmapped.
pub(crate) struct Pool<H> {
    cold: *mut H,
    warm: *mut H,
    /// Warm heaps, and places taken for heaps on their way in.
    warm_count: usize,
    bump: usize,
    end: usize,
}

// SAFETY: the pool's raw pointers are only used under its lock.
unsafe impl<H> Send for Pool<H> {}

const HEAP_CHUNK: usize = 64 << 10;

/// A heap for a new thread, and whether it is a warm one (its segments
/// and pages as its last thread left them).
fn take_heap<H: ThreadHeap>() -> (*mut H, bool) {
    let mut pool = H::threads().pool.lock();
    if !pool.warm.is_null() {
        let h = pool.warm;
        // SAFETY: pooled heaps are valid and unused.
        pool.warm = unsafe { *H::pool_next(h) };
        pool.warm_count -= 1;
        STATS.add(Counter::Heaps, 1);
        return (h, true);
    }
    let heap = if !pool.cold.is_null() {
        let h = pool.cold;
        // SAFETY: pooled heaps are valid and unused.
        pool.cold = unsafe { *H::pool_next(h) };
        h
    } else {
        let size = core::mem::size_of::<H>().next_multiple_of(64);
        if pool.end - pool.bump < size {
            match os::map(HEAP_CHUNK.max(size)) {
                Some(p) => {
                    pool.bump = p.as_ptr() as usize;
                    pool.end = pool.bump + HEAP_CHUNK.max(size);
                }
                None => return (ptr::null_mut(), false),
            }
        }
        let h = pool.bump as *mut H;
        pool.bump += size;
        h
    };
    // SAFETY: `heap` points to unused, suitably aligned memory of ours.
    unsafe { heap.write(H::INIT) };
    STATS.add(Counter::Heaps, 1);
    (heap, false)
}

/// Puts an exited thread's heap in the pool: warm (its place was taken in
/// `thread_exit`) or cold.
fn put_heap<H: ThreadHeap>(heap: *mut H, how: Exit) {
    STATS.sub(Counter::Heaps, 1);
    let mut pool = H::threads().pool.lock();
    let list = match how {
        Exit::Keep => &mut pool.warm,
        Exit::GiveUp => &mut pool.cold,
    };
    // SAFETY: the heap is no longer used by any thread.
    unsafe { *H::pool_next(heap) = *list };
    *list = heap;
}

/// `fork` in a multi-threaded program: a lock held by another thread at
/// the fork would stay held forever in the child. So the fork takes every
/// allocator lock first and both processes release them after. The
/// process has one mode, so one kind of heap registers.
fn register_fork_handlers<H: ThreadHeap>() {
    use crate::sync::{AtomicBool, Ordering};
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: the handlers are `extern "C"` functions that never unwind.
        let rc = unsafe {
            libc::pthread_atfork(
                Some(fork_prepare::<H>),
                Some(fork_release::<H>),
                Some(fork_release::<H>),
            )
        };
        if rc != 0 {
            // ENOMEM: try again when the next thread sets up its heap.
            REGISTERED.store(false, Ordering::Release);
        }
    }
}

extern "C" fn fork_prepare<H: ThreadHeap>() {
    // Always in this order, so no two forking threads deadlock.
    let threads = H::threads();
    core::mem::forget(threads.pool.lock());
    core::mem::forget(threads.fallback_lock.lock());
    crate::large::fork_lock();
}

extern "C" fn fork_release<H: ThreadHeap>() {
    let threads = H::threads();
    // SAFETY: `fork_prepare` took these locks on this thread (or, in the
    // child, on the thread that became the child) and forgot the guards.
    unsafe {
        crate::large::fork_unlock();
        threads.fallback_lock.force_unlock();
        threads.pool.force_unlock();
    }
}
