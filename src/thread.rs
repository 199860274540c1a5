//! Which heap a thread uses, and its life cycle.
//!
//! The thread-local is a `const`-initialised `Cell` with no destructor, so
//! reading it never allocates or registers anything. It starts at
//! `UNINIT_HEAP`, a sentinel whose pages are all empty: the first
//! allocation falls into the slow path, which sets up a real heap from our
//! own memory. Thread exit is caught by a `pthread_key_create` destructor
//! (allocation-free for the first 32 keys), which abandons the heap and
//! points the thread at `DEAD_HEAP`; allocations after that (other
//! destructors) are served from a shared fallback heap under a lock.

use crate::heap::{self, Collect, Heap, Shared, Zero};
use crate::os;
use crate::stats::{Counter, STATS};
use crate::sync::{Once, SpinLock};
use core::cell::{Cell, UnsafeCell};
use core::ptr;

static UNINIT_HEAP: Shared<Heap> = Shared(UnsafeCell::new(Heap::INIT));
static DEAD_HEAP: Shared<Heap> = Shared(UnsafeCell::new(Heap::INIT));
/// Serves threads whose own heap is gone; used only under `FALLBACK_LOCK`.
static FALLBACK_HEAP: Shared<Heap> = Shared(UnsafeCell::new(Heap::INIT));
static FALLBACK_LOCK: SpinLock<()> = SpinLock::new(());

thread_local! {
    static HEAP: Cell<*mut Heap> = const { Cell::new(UNINIT_HEAP.get()) };
}

#[inline(always)]
pub(crate) fn current_heap() -> *mut Heap {
    HEAP.with(Cell::get)
}

pub(crate) fn is_sentinel(heap: *mut Heap) -> bool {
    heap == UNINIT_HEAP.get() || heap == DEAD_HEAP.get()
}

/// The slow path of a thread without a usable heap: set one up, or use the
/// fallback heap if this thread's heap is already gone.
///
/// # Safety
/// `heap` is the calling thread's current (sentinel) heap.
pub(crate) unsafe fn alloc_without_heap(heap: *mut Heap, size: usize, zero: Zero) -> *mut u8 {
    let class = crate::size_class::class_of(size);
    if heap == UNINIT_HEAP.get() {
        let fresh = init_thread();
        if !fresh.is_null() {
            // SAFETY: `fresh` is this thread's new heap.
            return unsafe { heap::alloc_from(fresh, class, zero) };
        }
    }
    let _guard = FALLBACK_LOCK.lock();
    let fallback = FALLBACK_HEAP.get();
    // SAFETY: the lock gives exclusive use of the fallback heap.
    unsafe {
        if crate::hardened::settle() && !(*fallback).hardened {
            crate::hardened::seed(fallback);
        }
        heap::alloc_from(fallback, class, zero)
    }
}

/// The `collect()` API: returns the calling thread's free memory to the OS.
pub(crate) fn collect_current() {
    let heap = current_heap();
    if !is_sentinel(heap) {
        // SAFETY: a non-sentinel heap in our TLS is ours alone.
        unsafe { heap::collect(heap, Collect::Everything) };
    }
    {
        let _guard = FALLBACK_LOCK.lock();
        // SAFETY: the lock gives exclusive use of the fallback heap.
        unsafe { heap::collect(FALLBACK_HEAP.get(), Collect::ForExit) };
    }
    crate::large::purge_all();
    crate::segment::SEGMENT_CACHE.drain();
}

static PROCESS_INIT: Once<libc::pthread_key_t> = Once::new();
const NO_KEY: libc::pthread_key_t = libc::pthread_key_t::MAX;

/// Reads the options and creates the thread-exit key, once per process.
pub(crate) fn process_init() -> libc::pthread_key_t {
    PROCESS_INIT.call_once(|| {
        crate::options::init();
        if crate::options::HARDENED.get() != 0 {
            // Nothing is made before this runs, so the request holds.
            crate::hardened::request();
        }
        os::init_hint(os::random_u64());
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer; the destructor is an
        // `extern "C"` function that never unwinds.
        if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } == 0 {
            key
        } else {
            NO_KEY
        }
    })
}

fn init_thread() -> *mut Heap {
    let key = process_init();
    let heap = HEAP_POOL.take();
    if heap.is_null() {
        return ptr::null_mut();
    }
    if crate::hardened::settle() {
        crate::hardened::seed(heap);
    }
    HEAP.with(|h| h.set(heap));
    // After the heap is in place: `pthread_atfork` may allocate, and under
    // LD_PRELOAD that allocation comes back here and must find a heap.
    register_fork_handlers();
    if key != NO_KEY {
        // SAFETY: `key` is a live key. If this fails the heap is simply never
        // abandoned (its memory stays with the exited thread).
        unsafe { libc::pthread_setspecific(key, heap.cast()) };
    }
    heap
}

/// The pthread key destructor: runs once per thread that set up a heap.
extern "C" fn thread_exit(arg: *mut libc::c_void) {
    let heap = arg.cast::<Heap>();
    HEAP.with(|h| h.set(DEAD_HEAP.get()));
    // SAFETY: `heap` was this thread's heap; no one else uses it, and the
    // thread-local now points elsewhere, so nothing reaches it again.
    unsafe { heap::abandon(heap) };
    HEAP_POOL.put(heap);
}

/// Heaps of exited threads are kept for new ones; they are carved from
/// 64 KiB chunks we map ourselves and never unmapped.
struct HeapPool {
    free: *mut Heap,
    bump: usize,
    end: usize,
}

// SAFETY: the pool's raw pointers are only used under its lock.
unsafe impl Send for HeapPool {}

static HEAP_POOL: SpinLock<HeapPool> = SpinLock::new(HeapPool {
    free: ptr::null_mut(),
    bump: 0,
    end: 0,
});

const HEAP_CHUNK: usize = 64 << 10;

impl SpinLock<HeapPool> {
    fn take(&self) -> *mut Heap {
        let mut pool = self.lock();
        let heap = if !pool.free.is_null() {
            let h = pool.free;
            // SAFETY: pooled heaps are valid and unused.
            pool.free = unsafe { (*h).pool_next };
            h
        } else {
            let size = core::mem::size_of::<Heap>().next_multiple_of(64);
            if pool.end - pool.bump < size {
                match os::map(HEAP_CHUNK) {
                    Some(p) => {
                        pool.bump = p.as_ptr() as usize;
                        pool.end = pool.bump + HEAP_CHUNK;
                    }
                    None => return ptr::null_mut(),
                }
            }
            let h = pool.bump as *mut Heap;
            pool.bump += size;
            h
        };
        // SAFETY: `heap` points to unused, suitably aligned memory of ours.
        unsafe { heap.write(Heap::INIT) };
        STATS.add(Counter::Heaps, 1);
        heap
    }

    fn put(&self, heap: *mut Heap) {
        STATS.sub(Counter::Heaps, 1);
        let mut pool = self.lock();
        // SAFETY: the heap is no longer used by any thread.
        unsafe { (*heap).pool_next = pool.free };
        pool.free = heap;
    }
}

/// `fork` in a multi-threaded program: a lock held by another thread at
/// the fork would stay held forever in the child. So the fork takes every
/// allocator lock first and both processes release them after.
fn register_fork_handlers() {
    use crate::sync::{AtomicBool, Ordering};
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: the handlers are `extern "C"` functions that never unwind.
        let rc = unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_release), Some(fork_release)) };
        if rc != 0 {
            // ENOMEM: try again when the next thread sets up its heap.
            REGISTERED.store(false, Ordering::Release);
        }
    }
}

extern "C" fn fork_prepare() {
    // Always in this order, so no two forking threads deadlock.
    core::mem::forget(HEAP_POOL.lock());
    core::mem::forget(FALLBACK_LOCK.lock());
    crate::large::fork_lock();
}

extern "C" fn fork_release() {
    // SAFETY: `fork_prepare` took these locks on this thread (or, in the
    // child, on the thread that became the child) and forgot the guards.
    unsafe {
        crate::large::fork_unlock();
        FALLBACK_LOCK.force_unlock();
        HEAP_POOL.force_unlock();
    }
}
