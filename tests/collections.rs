//! Standard collections and strings under heavy churn on `MapAlloc`.
//!
//! Every structure is checked against values that can be recomputed from
//! the key (or against a simple model), so any corruption — a block handed
//! out twice, a realloc that lost bytes, a free that scribbled on a
//! neighbour — shows up as a content mismatch.

mod common;

use common::{Rng, assert_pattern, fill};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

/// Length of the value stored under key `k` (mostly small, some up to 64 KiB,
/// a few up to 300 KiB so that large mappings are exercised too).
fn value_len(k: u64) -> usize {
    let h = common::mix64(k ^ 0xC011_EC71);
    match h % 100 {
        0 => 128 * 1024 + (h >> 8) as usize % (172 * 1024),
        1..=5 => (h >> 8) as usize % (64 * 1024),
        _ => (h >> 8) as usize % 512,
    }
}

fn value_for(k: u64, generation: u64) -> Vec<u8> {
    let mut v = vec![0u8; value_len(k)];
    fill(&mut v, k * 1_000 + generation, 0);
    v
}

#[test]
fn vec_of_vecs_churn() {
    let mut rng = Rng::new(1);
    // Model: each slot holds (id, len); the vector holds the pattern of `id`.
    let mut slots: Vec<Option<(u64, Vec<u8>)>> = (0..2_000).map(|_| None).collect();
    let mut next_id = 0u64;
    for round in 0..40_000 {
        let i = rng.below(slots.len());
        match &mut slots[i] {
            Some((id, v)) => {
                assert_pattern(v, *id, 0, "vec slot");
                match rng.below(4) {
                    // Grow by pushing (exercises Vec's amortised realloc).
                    0 => {
                        let old = v.len();
                        let extra = rng.range(1, 300);
                        for j in 0..extra {
                            v.push(common::pattern_byte(*id, old + j));
                        }
                    }
                    // Shrink and release capacity.
                    1 => {
                        let keep = rng.below(v.len() + 1);
                        v.truncate(keep);
                        v.shrink_to_fit();
                        assert!(v.capacity() >= v.len());
                    }
                    // Free.
                    _ => slots[i] = None,
                }
            }
            None => {
                let len = if round % 97 == 0 {
                    rng.range(100_000, 400_000)
                } else {
                    rng.range(0, 2_000)
                };
                let mut v = vec![0; len];
                fill(&mut v, next_id, 0);
                slots[i] = Some((next_id, v));
                next_id += 1;
            }
        }
    }
    for (id, v) in slots.iter().flatten() {
        assert_pattern(v, *id, 0, "vec slot at end");
    }
}

#[test]
fn string_churn() {
    let mut rng = Rng::new(2);
    let mut strings: Vec<(u64, String)> = Vec::new();
    let expected = |n: u64, reps: usize| -> String {
        let mut s = String::new();
        for r in 0..reps {
            s.push_str(&format!("<{n}:{r}:é✓>"));
        }
        s
    };
    let mut reps_of: HashMap<u64, usize> = HashMap::new();
    for n in 0..30_000u64 {
        let reps = rng.range(1, 20);
        let mut s = String::new();
        for r in 0..reps {
            // `write!` into a growing String: many small reallocs.
            use std::fmt::Write;
            write!(s, "<{n}:{r}:é✓>").unwrap();
        }
        strings.push((n, s));
        reps_of.insert(n, reps);
        if rng.one_in(3) && !strings.is_empty() {
            let i = rng.below(strings.len());
            let (k, s) = strings.swap_remove(i);
            assert_eq!(s, expected(k, reps_of[&k]), "string {k}");
        }
    }
    // Concatenate everything into one big string and split it back.
    let big: String = strings
        .iter()
        .map(|(_, s)| s.as_str())
        .collect::<Vec<_>>()
        .join("|");
    let parts: Vec<&str> = big.split('|').collect();
    assert_eq!(parts.len(), strings.len());
    for ((k, s), p) in strings.iter().zip(&parts) {
        assert_eq!(s, p);
        assert_eq!(*s, expected(*k, reps_of[k]));
    }
    // Uppercasing allocates a fresh string of (possibly) different length.
    let upper = big.to_uppercase();
    assert_eq!(upper.chars().count(), big.chars().count());
    assert!(upper.contains("É✓"));
}

#[test]
fn hashmap_string_to_bytes() {
    let mut rng = Rng::new(3);
    let mut map: HashMap<String, Vec<u8>> = HashMap::new();
    // Model of what should be in the map: key number -> generation.
    let mut model: BTreeMap<u64, u64> = BTreeMap::new();
    const KEYS: u64 = 12_000;
    for step in 0..60_000u64 {
        let k = rng.below(KEYS as usize) as u64;
        let key = format!("key-{k:08}-{}", "x".repeat((k % 7) as usize));
        match rng.below(3) {
            0 | 1 => {
                let generation = step;
                let old = map.insert(key, value_for(k, generation));
                let old_gen = model.insert(k, generation);
                assert_eq!(old.is_some(), old_gen.is_some());
                if let (Some(v), Some(g)) = (old, old_gen) {
                    assert_eq!(v.len(), value_len(k));
                    assert_pattern(&v, k * 1_000 + g, 0, "replaced hashmap value");
                }
            }
            _ => {
                let old = map.remove(&key);
                let old_gen = model.remove(&k);
                assert_eq!(old.is_some(), old_gen.is_some(), "key {key}");
                if let (Some(v), Some(g)) = (old, old_gen) {
                    assert_pattern(&v, k * 1_000 + g, 0, "removed hashmap value");
                }
            }
        }
        if step % 20_000 == 19_999 {
            map.shrink_to_fit();
        }
    }
    assert_eq!(map.len(), model.len());
    for (&k, &g) in &model {
        let key = format!("key-{k:08}-{}", "x".repeat((k % 7) as usize));
        let v = map.get(&key).unwrap_or_else(|| panic!("missing {key}"));
        assert_eq!(v.len(), value_len(k));
        assert_pattern(v, k * 1_000 + g, 0, "hashmap value at end");
    }
    map.clear();
    map.shrink_to_fit();
    assert_eq!(map.capacity(), 0);
}

#[test]
fn btreemap_against_sorted_model() {
    let mut rng = Rng::new(4);
    let mut map: BTreeMap<u64, String> = BTreeMap::new();
    let mut present: HashSet<u64> = HashSet::new();
    for _ in 0..80_000 {
        let k = rng.below(20_000) as u64;
        if rng.below(5) < 3 {
            map.insert(k, format!("v{k}-{}", k * 31));
            present.insert(k);
        } else {
            let removed = map.remove(&k);
            assert_eq!(removed.is_some(), present.remove(&k));
            if let Some(v) = removed {
                assert_eq!(v, format!("v{k}-{}", k * 31));
            }
        }
    }
    let mut model: Vec<u64> = present.into_iter().collect();
    model.sort_unstable();
    let keys: Vec<u64> = map.keys().copied().collect();
    assert_eq!(keys, model);
    for (k, v) in &map {
        assert_eq!(*v, format!("v{k}-{}", k * 31));
    }
    // Range queries and split_off/append move nodes around.
    let mut upper = map.split_off(&10_000);
    assert!(map.keys().all(|&k| k < 10_000));
    assert!(upper.keys().all(|&k| k >= 10_000));
    map.append(&mut upper);
    assert!(upper.is_empty());
    assert_eq!(map.keys().copied().collect::<Vec<_>>(), model);
}

#[test]
fn vecdeque_fifo_churn() {
    let mut rng = Rng::new(5);
    let mut q: VecDeque<Box<[u8]>> = VecDeque::new();
    let mut head = 0u64; // id of the element at the front
    let mut tail = 0u64; // id the next pushed element gets
    for _ in 0..50_000 {
        if rng.below(100) < 55 {
            let len = common::mix64(tail) as usize % 700;
            let mut b = vec![0u8; len].into_boxed_slice();
            fill(&mut b, tail, 0);
            q.push_back(b);
            tail += 1;
        } else if let Some(b) = q.pop_front() {
            assert_eq!(b.len(), common::mix64(head) as usize % 700);
            assert_pattern(&b, head, 0, "vecdeque element");
            head += 1;
        }
        if rng.one_in(5_000) {
            q.shrink_to_fit();
        }
    }
    assert_eq!(q.len() as u64, tail - head);
    for (i, b) in q.iter().enumerate() {
        assert_pattern(b, head + i as u64, 0, "vecdeque element at end");
    }
}

trait Shape {
    fn area(&self) -> u64;
    fn check(&self);
}
struct Small(u8);
struct Medium([u64; 16], u64);
struct Huge(Box<[u64; 32 * 1024]>, u64); // 256 KiB: a large mapping
struct Wide(Vec<String>);
impl Shape for Small {
    fn area(&self) -> u64 {
        self.0 as u64
    }
    fn check(&self) {}
}
impl Shape for Medium {
    fn area(&self) -> u64 {
        self.0.iter().sum()
    }
    fn check(&self) {
        assert!(self.0.iter().all(|&x| x == self.1));
    }
}
impl Shape for Huge {
    fn area(&self) -> u64 {
        self.1 * 32 * 1024
    }
    fn check(&self) {
        assert!(self.0.iter().all(|&x| x == self.1));
    }
}
impl Shape for Wide {
    fn area(&self) -> u64 {
        self.0.iter().map(|s| s.len() as u64).sum()
    }
    fn check(&self) {
        for (i, s) in self.0.iter().enumerate() {
            assert_eq!(*s, "w".repeat(i));
        }
    }
}

#[test]
fn boxed_trait_objects() {
    let mut rng = Rng::new(6);
    let mut shapes: Vec<(u64, Box<dyn Shape>)> = Vec::new();
    let mut total = 0u64;
    for i in 0..20_000u64 {
        let (area, s): (u64, Box<dyn Shape>) = match rng.below(100) {
            0 => {
                let v = i % 1000;
                (v * 32 * 1024, Box::new(Huge(Box::new([v; 32 * 1024]), v)))
            }
            1..=30 => {
                let n = (i % 40) as usize;
                (
                    (0..n as u64).sum(),
                    Box::new(Wide((0..n).map(|j| "w".repeat(j)).collect())),
                )
            }
            31..=60 => (16 * i, Box::new(Medium([i; 16], i))),
            _ => ((i % 256), Box::new(Small(i as u8))),
        };
        assert_eq!(s.area(), area);
        total += area;
        shapes.push((area, s));
        if rng.one_in(2) {
            let j = rng.below(shapes.len());
            let (a, s) = shapes.swap_remove(j);
            s.check();
            assert_eq!(s.area(), a);
            total -= a;
        }
    }
    let mut sum = 0;
    for (a, s) in &shapes {
        s.check();
        assert_eq!(s.area(), *a);
        sum += a;
    }
    assert_eq!(sum, total);
}

static DROPS: AtomicUsize = AtomicUsize::new(0);
struct Counted(u64, [u8; 40]);
impl Drop for Counted {
    fn drop(&mut self) {
        assert!(
            self.1.iter().all(|&b| b == self.0 as u8),
            "Counted payload corrupted"
        );
        DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn rc_graph_and_arc_sharing() {
    // Rc: a tree with parent back-pointers (Weak), rebuilt many times.
    struct Node {
        val: u64,
        parent: RefCell<Weak<Node>>,
        children: RefCell<Vec<Rc<Node>>>,
    }
    let mut rng = Rng::new(7);
    for round in 0..40u64 {
        let root = Rc::new(Node {
            val: round,
            parent: RefCell::new(Weak::new()),
            children: RefCell::new(vec![]),
        });
        let mut all = vec![root.clone()];
        for v in 1..1_000u64 {
            let parent = all[rng.below(all.len())].clone();
            let child = Rc::new(Node {
                val: v,
                parent: RefCell::new(Weak::new()),
                children: RefCell::new(vec![]),
            });
            *child.parent.borrow_mut() = Rc::downgrade(&parent);
            parent.children.borrow_mut().push(child.clone());
            all.push(child);
        }
        // Every non-root node's parent is alive and lists it as a child.
        for n in &all[1..] {
            let p = n.parent.borrow().upgrade().expect("parent alive");
            assert!(p.children.borrow().iter().any(|c| Rc::ptr_eq(c, n)));
        }
        // Count the tree by walking it.
        fn count(n: &Rc<Node>) -> usize {
            1 + n.children.borrow().iter().map(count).sum::<usize>()
        }
        assert_eq!(count(&root), 1_000);
        assert_eq!(root.val, round);
        let weak_root = Rc::downgrade(&root);
        drop(all);
        assert_eq!(Rc::strong_count(&root), 1);
        drop(root);
        assert!(weak_root.upgrade().is_none(), "tree must be freed");
    }

    // Arc: shared payloads cloned into threads, dropped everywhere.
    DROPS.store(0, Ordering::SeqCst);
    let items: Vec<Arc<Counted>> = (0..2_000u64)
        .map(|i| Arc::new(Counted(i, [i as u8; 40])))
        .collect();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let mine: Vec<Arc<Counted>> = items.iter().skip(t).step_by(2).cloned().collect();
            std::thread::spawn(move || {
                let s: u64 = mine.iter().map(|c| c.0).sum();
                let strings: Vec<Arc<str>> = mine
                    .iter()
                    .map(|c| Arc::from(format!("s{}", c.0)))
                    .collect();
                for (c, s) in mine.iter().zip(&strings) {
                    assert_eq!(**s, format!("s{}", c.0));
                }
                drop(mine);
                s
            })
        })
        .collect();
    let sums: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let expected: Vec<u64> = (0..4u64).map(|t| (t..2_000).step_by(2).sum()).collect();
    assert_eq!(sums, expected);
    assert!(items.iter().all(|a| Arc::strong_count(a) == 1));
    assert_eq!(DROPS.load(Ordering::SeqCst), 0);
    drop(items);
    assert_eq!(DROPS.load(Ordering::SeqCst), 2_000);
}
