//! The allocator's lock-free structures, generic over their nodes so each
//! can be model-checked with loom in isolation (`cargo test` with
//! `RUSTFLAGS="--cfg loom"`; see the models at the bottom).
//!
//! Nodes are linked through their first word (`Link`): free blocks, or
//! segments through a field. Every pop here is "take everything" with one
//! swap: that cannot suffer ABA and never reads a node that another thread
//! may already have taken and reused.

use crate::sync::{AtomicUsize, Ordering};

/// Access to the `next` link of a node.
pub(crate) trait Link {
    /// # Safety
    /// `node` is valid and owned by the caller.
    unsafe fn set_next(node: *mut Self, next: *mut Self);
}

/// A multi-producer stack whose consumer takes everything at once.
pub(crate) struct TakeAllStack {
    head: AtomicUsize,
}

impl TakeAllStack {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Self {
            head: AtomicUsize::new(0),
        }
    }
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Self {
            head: AtomicUsize::new(0),
        }
    }

    /// # Safety
    /// The caller owns `node`, which is in no list.
    pub(crate) unsafe fn push<T: Link>(&self, node: *mut T) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `node` is ours until the CAS publishes it.
            unsafe { T::set_next(node, head as *mut T) };
            match self.head.compare_exchange_weak(
                head,
                node as usize,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(cur) => head = cur,
            }
        }
    }

    /// Takes the whole stack: a chain through `Link::next`, null if empty.
    pub(crate) fn take_all<T: Link>(&self) -> *mut T {
        if self.head.load(Ordering::Relaxed) == 0 {
            return core::ptr::null_mut();
        }
        self.head.swap(0, Ordering::Acquire) as *mut T
    }
}

/// Low bit of a `RemoteFreeList`: the owner parked the page and wants to
/// hear about the next remote free.
const NOTIFY_OWNER: usize = 1;

/// The top 16 bits of a `RemoteFreeList` count its nodes, so the owner
/// learns how many blocks came back without walking the chain (each link
/// is a cache miss on a line another core wrote). Nodes live below 2^47
/// (the registry refuses segments above), and a page holds at most 4096
/// blocks, so neither part can spill into the other.
const COUNT_SHIFT: usize = 48;
const NODE_BITS: usize = ((1 << COUNT_SHIFT) - 1) & !NOTIFY_OWNER;

/// What `RemoteFreeList::push` did with the node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Pushed {
    /// The node is on the list.
    Listed,
    /// The owner had parked the list: the flag is now cleared and the node
    /// was *not* pushed; the caller must hand it to the owner another way.
    NotifyOwner,
}

/// A page's `thread_free`: a `TakeAllStack` plus the owner's
/// `NOTIFY_OWNER` flag in the low bit (nodes are at least 2-aligned) and
/// the node count in the top bits.
///
/// Invariant: the flag is set only while the pointer part is null (the
/// owner sets it with a CAS from 0), and exactly one party clears it: the
/// first pusher (who then reports `NotifyOwner`) or the owner (`unpark`).
pub(crate) struct RemoteFreeList {
    word: AtomicUsize,
}

impl RemoteFreeList {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Self {
            word: AtomicUsize::new(0),
        }
    }
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicUsize::new(0),
        }
    }

    /// Pushes `node` from any thread.
    ///
    /// # Safety
    /// The caller owns `node`, which is in no list and 2-aligned.
    pub(crate) unsafe fn push<T: Link>(&self, node: *mut T) -> Pushed {
        let mut old = self.word.load(Ordering::Relaxed);
        loop {
            if old == NOTIFY_OWNER {
                match self
                    .word
                    .compare_exchange_weak(old, 0, Ordering::AcqRel, Ordering::Relaxed)
                {
                    Ok(_) => return Pushed::NotifyOwner,
                    Err(cur) => old = cur,
                }
                continue;
            }
            // SAFETY: `node` is ours until the CAS publishes it.
            unsafe { T::set_next(node, (old & NODE_BITS) as *mut T) };
            let count = (old >> COUNT_SHIFT) + 1;
            match self.word.compare_exchange_weak(
                old,
                node as usize | count << COUNT_SHIFT,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Pushed::Listed,
                Err(cur) => old = cur,
            }
        }
    }

    /// True if nodes are waiting (ignoring the flag).
    pub(crate) fn has_nodes(&self) -> bool {
        self.word.load(Ordering::Relaxed) & !NOTIFY_OWNER != 0
    }

    /// Takes every node and clears the flag. Owner only.
    pub(crate) fn take_all<T: Link>(&self) -> *mut T {
        self.take_all_counted().0
    }

    /// Takes every node, and says how many, and clears the flag. Owner only.
    pub(crate) fn take_all_counted<T: Link>(&self) -> (*mut T, u32) {
        let word = self.word.swap(0, Ordering::Acquire);
        ((word & NODE_BITS) as *mut T, (word >> COUNT_SHIFT) as u32)
    }

    /// Parks an empty list: the next push reports `NotifyOwner`. Fails if
    /// nodes arrived; the owner then takes them instead. Owner only.
    pub(crate) fn try_park(&self) -> bool {
        self.word
            .compare_exchange(0, NOTIFY_OWNER, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Clears the flag if no pusher has yet. Owner only.
    pub(crate) fn unpark(&self) {
        let _ = self
            .word
            .compare_exchange(NOTIFY_OWNER, 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Resets an unused list (no node, no pusher can exist). Owner only.
    pub(crate) fn reset(&self) {
        self.word.store(0, Ordering::Relaxed);
    }
}

/// A fixed set of slots holding non-zero words (cached segments). A slot
/// is claimed with one swap, so a value has exactly one taker, and there
/// are no links to read.
pub(crate) struct SlotCache<const N: usize> {
    slots: [AtomicUsize; N],
}

impl<const N: usize> SlotCache<N> {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Self {
            slots: [const { AtomicUsize::new(0) }; N],
        }
    }
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| AtomicUsize::new(0)),
        }
    }

    pub(crate) fn take(&self) -> Option<usize> {
        for slot in &self.slots {
            if slot.load(Ordering::Relaxed) != 0 {
                let v = slot.swap(0, Ordering::Acquire);
                if v != 0 {
                    return Some(v);
                }
            }
        }
        None
    }

    /// Stores `value` (non-zero) in one of the first `limit` slots; false
    /// if they are all taken.
    pub(crate) fn put(&self, value: usize, limit: usize) -> bool {
        debug_assert!(value != 0);
        for slot in self.slots.iter().take(limit) {
            if slot.load(Ordering::Relaxed) == 0
                && slot
                    .compare_exchange(0, value, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            {
                return true;
            }
        }
        false
    }
}

#[cfg(all(test, loom))]
mod models {
    //! loom models: each asserts what must hold, over every interleaving
    //! loom explores (bounded by LOOM_MAX_PREEMPTIONS).
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    /// A test node: its link lives in loom's `UnsafeCell`, so loom reports a
    /// data race where the raw pointer writes of the real blocks would hide
    /// one.
    #[repr(C, align(16))]
    struct Node {
        next: UnsafeCell<*mut Node>,
        id: usize,
    }

    // SAFETY: nodes move between threads only through the structures under
    // test, which is what the models check.
    unsafe impl Send for Node {}
    // SAFETY: as above.
    unsafe impl Sync for Node {}

    impl Link for Node {
        unsafe fn set_next(node: *mut Self, next: *mut Self) {
            // SAFETY: the caller owns `node`.
            unsafe { (*node).next.with_mut(|p| *p = next) }
        }
    }

    fn node(id: usize) -> *mut Node {
        Box::into_raw(Box::new(Node {
            next: UnsafeCell::new(core::ptr::null_mut()),
            id,
        }))
    }

    /// Walks a taken chain, freeing the nodes, and returns their ids as bits.
    fn drain(mut n: *mut Node) -> usize {
        let mut seen = 0;
        while !n.is_null() {
            // SAFETY: a taken chain belongs to the taker.
            let b = unsafe { Box::from_raw(n) };
            assert_eq!(seen & (1 << b.id), 0, "node {} taken twice", b.id);
            seen |= 1 << b.id;
            n = b.next.with(|p| unsafe { *p });
        }
        seen
    }

    struct SendPtr(*mut Node);
    // SAFETY: see `Node`.
    unsafe impl Send for SendPtr {}

    #[test]
    fn take_all_stack_loses_and_duplicates_nothing() {
        crate::sync::model("take_all_stack", || {
            let stack = Arc::new(TakeAllStack::new());
            let pushers: Vec<_> = (0..2)
                .map(|id| {
                    let stack = stack.clone();
                    let n = SendPtr(node(id));
                    thread::spawn(move || {
                        let n = n;
                        // SAFETY: a fresh node we own.
                        unsafe { stack.push(n.0) }
                    })
                })
                .collect();
            let mut seen = drain(stack.take_all());
            for p in pushers {
                p.join().unwrap();
            }
            let rest = drain(stack.take_all());
            assert_eq!(seen & rest, 0);
            seen |= rest;
            assert_eq!(seen, 0b11, "every pushed node is taken exactly once");
        });
    }

    #[test]
    fn remote_free_list_notifies_exactly_once() {
        crate::sync::model("remote_free_notify", || {
            let list = Arc::new(RemoteFreeList::new());
            // The owner parks the (empty) list, as for a full page.
            assert!(list.try_park());
            let pushers: Vec<_> = (0..2)
                .map(|id| {
                    let list = list.clone();
                    let n = SendPtr(node(id));
                    thread::spawn(move || {
                        let n = n;
                        // SAFETY: a fresh node we own.
                        match unsafe { list.push(n.0) } {
                            Pushed::Listed => 0,
                            Pushed::NotifyOwner => {
                                // The real caller hands the block on; here
                                // it comes back to the test.
                                // SAFETY: not listed, still ours.
                                drop(unsafe { Box::from_raw(n.0) });
                                1usize << id
                            }
                        }
                    })
                })
                .collect();
            // The owner meanwhile may take its page back itself.
            list.unpark();
            let notified: Vec<usize> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
            let (head, count) = list.take_all_counted();
            let taken = drain(head);
            assert_eq!(count, taken.count_ones(), "count disagrees with the chain");
            let notified_bits = notified.iter().fold(0, |a, b| a | b);
            assert!(
                notified.iter().filter(|&&b| b != 0).count() <= 1,
                "flag cleared twice"
            );
            assert_eq!(taken & notified_bits, 0);
            assert_eq!(taken | notified_bits, 0b11, "a block was lost");
        });
    }

    #[test]
    fn remote_free_list_park_fails_when_nodes_wait() {
        crate::sync::model("remote_free_park", || {
            let list = Arc::new(RemoteFreeList::new());
            let l2 = list.clone();
            let n = SendPtr(node(0));
            let t = thread::spawn(move || {
                let n = n;
                // SAFETY: a fresh node we own.
                unsafe { l2.push(n.0) }
            });
            let parked = list.try_park();
            let pushed = t.join().unwrap();
            if parked {
                // Parked before the push: the pusher must have been told.
                assert_eq!(
                    pushed,
                    Pushed::NotifyOwner,
                    "pushed onto a parked list without notifying"
                );
                assert!(list.take_all::<Node>().is_null());
                return;
            }
            assert_eq!(pushed, Pushed::Listed);
            assert_eq!(drain(list.take_all()), 0b1);
        });
    }

    #[test]
    fn slot_cache_hands_each_value_to_one_taker() {
        crate::sync::model("slot_cache", || {
            let cache = Arc::new(SlotCache::<2>::new());
            assert!(cache.put(0x1000, 2));
            let takers: Vec<_> = (0..2)
                .map(|i| {
                    let cache = cache.clone();
                    thread::spawn(move || {
                        let got = cache.take();
                        if i == 0 {
                            assert!(cache.put(0x2000, 2));
                        }
                        got
                    })
                })
                .collect();
            let mut got: Vec<usize> = takers
                .into_iter()
                .filter_map(|t| t.join().unwrap())
                .collect();
            while let Some(v) = cache.take() {
                got.push(v);
            }
            got.sort();
            assert_eq!(got, vec![0x1000, 0x2000], "each value taken exactly once");
        });
    }
}

#[cfg(all(test, loom))]
mod abandon_model {
    //! Abandonment racing with remote frees and adoption, as the heap does
    //! it: the owner takes its page's remote frees, clears the segment's
    //! owner and pushes it on the abandoned list; another thread frees a
    //! block into the page meanwhile; a third adopts whatever it finds
    //! abandoned and takes the page's remote frees. Every freed block must
    //! be seen exactly once, by the owner or the adopter, and the segment
    //! adopted exactly once.
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize as Owner;
    use loom::thread;

    #[repr(C, align(16))]
    struct Block {
        next: UnsafeCell<*mut Block>,
        id: usize,
    }

    impl Link for Block {
        unsafe fn set_next(node: *mut Self, next: *mut Self) {
            // SAFETY: the caller owns `node`.
            unsafe { (*node).next.with_mut(|p| *p = next) }
        }
    }

    /// The parts of a segment that threads share.
    #[repr(C, align(16))]
    struct Segment {
        next: UnsafeCell<*mut Segment>,
        owner: Owner,
        thread_free: RemoteFreeList,
    }

    impl Link for Segment {
        unsafe fn set_next(node: *mut Self, next: *mut Self) {
            // SAFETY: the caller owns `node`.
            unsafe { (*node).next.with_mut(|p| *p = next) }
        }
    }

    struct Shared {
        seg: *mut Segment,
        abandoned: TakeAllStack,
    }
    // SAFETY: the segment is shared only through the structures under test.
    unsafe impl Send for Shared {}
    // SAFETY: as above.
    unsafe impl Sync for Shared {}

    fn ids(mut b: *mut Block) -> usize {
        let mut seen = 0;
        while !b.is_null() {
            // SAFETY: a taken chain belongs to the taker.
            let blk = unsafe { Box::from_raw(b) };
            assert_eq!(seen & (1 << blk.id), 0, "block {} seen twice", blk.id);
            seen |= 1 << blk.id;
            b = blk.next.with(|p| unsafe { *p });
        }
        seen
    }

    #[test]
    fn abandon_and_adopt_race_with_remote_frees() {
        crate::sync::model("abandon_adopt", || {
            let seg = Box::into_raw(Box::new(Segment {
                next: UnsafeCell::new(core::ptr::null_mut()),
                owner: Owner::new(1),
                thread_free: RemoteFreeList::new(),
            }));
            let shared = Arc::new(Shared {
                seg,
                abandoned: TakeAllStack::new(),
            });

            let s = shared.clone();
            let freer = thread::spawn(move || {
                let b = Box::into_raw(Box::new(Block {
                    next: UnsafeCell::new(core::ptr::null_mut()),
                    id: 0,
                }));
                // SAFETY: the segment outlives the model; the block is ours.
                let r = unsafe { (*s.seg).thread_free.push(b) };
                assert_eq!(r, Pushed::Listed, "the page was never parked");
            });

            let s = shared.clone();
            let owner = thread::spawn(move || {
                // SAFETY: the owner's view of its own segment.
                unsafe {
                    let mine = ids((*s.seg).thread_free.take_all());
                    (*s.seg).owner.store(0, Ordering::Release);
                    s.abandoned.push(s.seg);
                    mine
                }
            });

            let s = shared.clone();
            let adopter = thread::spawn(move || {
                let seg = s.abandoned.take_all::<Segment>();
                if seg.is_null() {
                    return (0usize, false);
                }
                // SAFETY: taking the list made the segment ours.
                unsafe {
                    assert_eq!(
                        (*seg).owner.load(Ordering::Acquire),
                        0,
                        "adopted a segment still owned"
                    );
                    (*seg).owner.store(2, Ordering::Release);
                    (ids((*seg).thread_free.take_all()), true)
                }
            });

            freer.join().unwrap();
            let by_owner = owner.join().unwrap();
            let (by_adopter, adopted) = adopter.join().unwrap();
            // Whatever nobody took yet is still on the page, or the segment
            // is still on the list for a later adopter.
            // SAFETY: all threads are done.
            let rest = unsafe { ids((*shared.seg).thread_free.take_all()) };
            let later = !shared.abandoned.take_all::<Segment>().is_null();
            assert!(adopted != later, "the segment must be adopted exactly once");
            assert_eq!(by_owner & by_adopter, 0);
            assert_eq!(by_owner | by_adopter | rest, 1, "the remote free was lost");
            // SAFETY: no one refers to the segment any more.
            drop(unsafe { Box::from_raw(shared.seg) });
        });
    }
}
