//! Cross-thread allocation and freeing, and thread churn.
//!
//! Blocks are allocated on one thread and freed on another (remote frees),
//! every block carries a pattern derived from (sender, sequence number) that
//! the receiver checks in full, and thousands of short-lived threads must
//! not make the allocator's footprint or heap count grow without bound.

mod common;

use common::{KIB, MIB, Rng, assert_pattern, fill};
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

/// A payload travelling between threads; both variants are freed by the
/// receiver.
enum Payload {
    Boxed(Box<[u8]>),
    Vector(Vec<u8>),
}

struct Msg {
    from: usize,
    seq: u64,
    data: Payload,
}

/// Block id for pattern purposes.
fn block_id(from: usize, to: usize, seq: u64) -> u64 {
    ((from as u64) << 56) ^ ((to as u64) << 48) ^ seq
}

/// Size of message `seq` from `from` to `to`: mostly small, sometimes a
/// slab-sized medium block, rarely a large mapping.
fn msg_len(id: u64) -> usize {
    let h = common::mix64(id ^ 0x7412_EAD5);
    let r = (h >> 16) as usize;
    match h % 512 {
        0 => 512 * KIB + r % (2 * MIB), // large mapping
        1..=8 => r % (128 * KIB),       // biggest slab classes
        _ => 1 + r % (4 * KIB),
    }
}

fn make_payload(id: u64) -> Payload {
    let len = msg_len(id);
    if id.is_multiple_of(2) {
        let mut v = vec![0u8; len].into_boxed_slice();
        fill(&mut v, id, 0);
        Payload::Boxed(v)
    } else {
        // Built by pushing so that the Vec goes through several reallocs on
        // the sending thread before being freed on the receiving one.
        let mut v = Vec::new();
        for i in 0..len.min(300) {
            v.push(common::pattern_byte(id, i));
        }
        if len > 300 {
            v.resize(len, 0);
            fill(&mut v[300..], id, 300);
        }
        Payload::Vector(v)
    }
}

fn check_payload(p: &Payload, id: u64) {
    let bytes: &[u8] = match p {
        Payload::Boxed(b) => b,
        Payload::Vector(v) => v,
    };
    assert_eq!(bytes.len(), msg_len(id), "length of block {id:#x}");
    assert_pattern(bytes, id, 0, "received block");
}

/// All-to-all exchange: every thread sends `PER_PEER` blocks to each of the
/// other threads and frees everything it receives.
#[test]
fn all_to_all_exchange() {
    let _g = common::serial();
    const THREADS: usize = 8;
    const PER_PEER: u64 = if cfg!(debug_assertions) { 400 } else { 2_000 };

    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..THREADS).map(|_| mpsc::channel::<Msg>()).unzip();
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(me, rx)| {
            let senders = senders.clone();
            thread::spawn(move || {
                let mut next_seq = [0u64; THREADS]; // per-sender FIFO check
                let mut received = 0u64;
                let expected = PER_PEER * (THREADS as u64 - 1);
                let handle = |m: Msg, next_seq: &mut [u64; THREADS]| {
                    assert_eq!(
                        m.seq, next_seq[m.from],
                        "thread {me}: out-of-order message from {}",
                        m.from
                    );
                    next_seq[m.from] += 1;
                    check_payload(&m.data, block_id(m.from, me, m.seq));
                    drop(m); // freed here, on a thread other than the allocating one
                };
                for seq in 0..PER_PEER {
                    for to in (0..THREADS).filter(|&t| t != me) {
                        let id = block_id(me, to, seq);
                        senders[to]
                            .send(Msg {
                                from: me,
                                seq,
                                data: make_payload(id),
                            })
                            .unwrap();
                    }
                    // Interleave receiving with sending so frees happen while
                    // the owners are still allocating.
                    while let Ok(m) = rx.try_recv() {
                        handle(m, &mut next_seq);
                        received += 1;
                    }
                }
                drop(senders);
                while received < expected {
                    let m = rx.recv().expect("all senders alive until done");
                    handle(m, &mut next_seq);
                    received += 1;
                }
                assert!(
                    rx.try_recv().is_err(),
                    "thread {me}: unexpected extra message"
                );
                received
            })
        })
        .collect();
    drop(senders);
    let total: u64 = handles
        .into_iter()
        .map(|h| h.join().expect("exchange thread panicked"))
        .sum();
    assert_eq!(total, PER_PEER * (THREADS as u64) * (THREADS as u64 - 1));
}

/// Ring: each thread passes on what it receives (after checking it) and
/// frees it only when it has gone all the way round, so every block is
/// touched by every thread and freed by a thread that did not allocate it.
#[test]
fn ring_relay() {
    let _g = common::serial();
    const THREADS: usize = 8;
    const PER_THREAD: u64 = if cfg!(debug_assertions) { 300 } else { 1_500 };

    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| mpsc::channel::<(Msg, usize)>())
        .unzip();
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(me, rx)| {
            let next = senders[(me + 1) % THREADS].clone();
            thread::spawn(move || {
                let mut freed = 0u64;
                let mut sent = 0u64;
                // A block visits every thread except its originator, so
                // each thread sees PER_THREAD * (THREADS - 1) messages.
                let mut seen = 0u64;
                let total = PER_THREAD * (THREADS as u64 - 1);
                while seen < total || sent < PER_THREAD {
                    if sent < PER_THREAD {
                        let id = block_id(me, me, sent);
                        next.send((
                            Msg {
                                from: me,
                                seq: sent,
                                data: make_payload(id),
                            },
                            1,
                        ))
                        .unwrap();
                        sent += 1;
                    }
                    let m = if sent < PER_THREAD || seen == total {
                        rx.try_recv().ok()
                    } else {
                        Some(rx.recv().unwrap())
                    };
                    if let Some((m, hops)) = m {
                        seen += 1;
                        check_payload(&m.data, block_id(m.from, m.from, m.seq));
                        if hops == THREADS - 1 {
                            assert_eq!((m.from + hops) % THREADS, me);
                            drop(m); // last hop frees
                            freed += 1;
                        } else {
                            next.send((m, hops + 1)).unwrap();
                        }
                    }
                }
                freed
            })
        })
        .collect();
    drop(senders);
    let freed: u64 = handles
        .into_iter()
        .map(|h| h.join().expect("ring thread panicked"))
        .sum();
    assert_eq!(freed, PER_THREAD * THREADS as u64);
}

/// Producer allocates, consumer frees; the consumer also sends some blocks
/// (allocated by itself) back for the producer to free.
#[test]
fn producer_consumer() {
    let _g = common::serial();
    const N: u64 = if cfg!(debug_assertions) {
        40_000
    } else {
        200_000
    };
    let (tx, rx) = mpsc::sync_channel::<(u64, Vec<u8>, String)>(256);
    let (back_tx, back_rx) = mpsc::channel::<(u64, Box<[u8]>)>();

    let consumer = thread::spawn(move || {
        let mut count = 0u64;
        let mut bytes = 0usize;
        for (i, v, s) in rx {
            assert_eq!(i, count, "messages in order");
            assert_eq!(v.len(), msg_len(i));
            assert_pattern(&v, i, 0, "producer block");
            assert_eq!(s, format!("msg #{i}"));
            bytes += v.len();
            if i % 16 == 0 {
                let mut b = vec![0u8; (i % 3000) as usize + 1].into_boxed_slice();
                fill(&mut b, !i, 0);
                back_tx.send((i, b)).unwrap();
            }
            count += 1;
        }
        (count, bytes)
    });

    let mut expect_bytes = 0usize;
    let mut returned = 0u64;
    for i in 0..N {
        let len = msg_len(i);
        expect_bytes += len;
        let mut v = vec![0u8; len];
        fill(&mut v, i, 0);
        tx.send((i, v, format!("msg #{i}"))).unwrap();
        while let Ok((j, b)) = back_rx.try_recv() {
            assert_eq!(b.len(), (j % 3000) as usize + 1);
            assert_pattern(&b, !j, 0, "returned block");
            returned += 1;
        }
    }
    drop(tx);
    let (count, bytes) = consumer.join().expect("consumer panicked");
    for (j, b) in back_rx {
        assert_pattern(&b, !j, 0, "returned block");
        returned += 1;
    }
    assert_eq!(count, N);
    assert_eq!(bytes, expect_bytes);
    assert_eq!(returned, N.div_ceil(16));
}

/// Thousands of short-lived threads, 8 at a time. Each allocates and frees
/// a few KiB to a few MiB (and leaves one block to be freed by the spawning
/// thread). Afterwards the allocator must not have accumulated mappings or
/// heaps: exited threads' heaps are recycled.
#[test]
fn thread_churn_is_bounded() {
    let _g = common::serial();
    const THREADS: usize = if cfg!(debug_assertions) { 3_000 } else { 6_000 };
    const BATCH: usize = 8;
    const MAPPED_LIMIT: usize = 256 * MIB;
    const HEAPS_LIMIT: usize = 64;

    let mut max_mapped = 0usize;
    let mut max_heaps = 0usize;
    let mut leftovers: Vec<(u64, Box<[u8]>)> = Vec::new();
    for batch in 0..THREADS / BATCH {
        let handles: Vec<_> = (0..BATCH)
            .map(|k| {
                let tid = (batch * BATCH + k) as u64;
                thread::spawn(move || {
                    let mut rng = Rng::new(tid);
                    let mut blocks: Vec<(u64, Vec<u8>)> = Vec::new();
                    for j in 0..rng.range(4, 24) as u64 {
                        let len = if rng.one_in(6) {
                            rng.range(128 * KIB, 3 * MIB)
                        } else {
                            rng.range(1, 8 * KIB)
                        };
                        let id = tid << 20 | j;
                        let mut v = vec![0u8; len];
                        // Touch sparsely for big blocks to keep the test fast;
                        // fill completely for small ones.
                        if len <= 64 * KIB {
                            fill(&mut v, id, 0);
                        } else {
                            for off in (0..len).step_by(16 * KIB) {
                                let end = (off + 64).min(len);
                                fill(&mut v[off..end], id, off);
                            }
                        }
                        blocks.push((id, v));
                    }
                    for (id, v) in &blocks {
                        if v.len() <= 64 * KIB {
                            assert_pattern(v, *id, 0, "churn block");
                        } else {
                            for off in (0..v.len()).step_by(16 * KIB) {
                                let end = (off + 64).min(v.len());
                                assert_pattern(&v[off..end], *id, off, "churn block");
                            }
                        }
                    }
                    drop(blocks);
                    // One block outlives the thread and is freed elsewhere.
                    let mut keep = vec![0u8; 100 + (tid as usize % 900)].into_boxed_slice();
                    fill(&mut keep, tid, 0);
                    (tid, keep)
                })
            })
            .collect();
        for h in handles {
            leftovers.push(h.join().expect("churn thread panicked"));
        }
        if batch % 16 == 0 {
            for (tid, b) in leftovers.drain(..) {
                assert_eq!(b.len(), 100 + (tid as usize % 900));
                assert_pattern(&b, tid, 0, "block that outlived its thread");
            }
        }
        let s = mapalloc::stats();
        max_mapped = max_mapped.max(s.mapped_bytes);
        max_heaps = max_heaps.max(s.heaps);
        assert!(
            s.mapped_bytes < MAPPED_LIMIT,
            "after {} threads mapped_bytes = {} (limit {}): {s:?}",
            (batch + 1) * BATCH,
            common::mib(s.mapped_bytes),
            common::mib(MAPPED_LIMIT)
        );
        assert!(
            s.heaps <= HEAPS_LIMIT,
            "after {} threads there are {} heaps (limit {HEAPS_LIMIT}): heaps are not recycled; {s:?}",
            (batch + 1) * BATCH,
            s.heaps
        );
    }
    for (tid, b) in leftovers.drain(..) {
        assert_pattern(&b, tid, 0, "block that outlived its thread");
    }
    mapalloc::collect();
    let s = mapalloc::stats();
    // Sanity: the statistics are live (this thread has a heap and memory is
    // mapped), so the bounds above were checked against real numbers.
    assert!(
        max_heaps >= 1 && s.heaps >= 1,
        "stats().heaps is never non-zero: {s:?}"
    );
    assert!(
        max_mapped > 0 && s.mapped_bytes > 0,
        "stats().mapped_bytes is never non-zero: {s:?}"
    );
    assert!(s.mapped_bytes < MAPPED_LIMIT, "{s:?}");
    assert!(s.heaps <= HEAPS_LIMIT, "{s:?}");
}
