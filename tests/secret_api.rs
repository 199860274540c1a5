//! The secret API that users of `secrecy`, `secrets` and `zeroize` look
//! for: `Wipe` (secrets made of several parts, wiped part by part), `ct_eq`,
//! conversions that wipe their source (`from_vec`, `from_string`),
//! `expose_str`, a fallible initialiser (`try_new_with`), random secrets
//! filled in place (`random`), and the `ExposeSecret` traits.
//!
//! The global allocator here is `System` with one addition: when the block
//! a test is watching is freed, it records whether every byte of it (the
//! whole allocation, spare capacity included) was zero. That is how the
//! tests see that `from_vec`/`from_string` wiped their source.

use mapalloc::secret::{
    self, Backing, ExposeSecret, ExposeSecretMut, PoolOptions, SecretBox, SecretError, SecretPool,
    SecretString, SecretVec, Wipe,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

mod common;

use common::child::{self, Ended};
use common::seccomp::{self, Refuse};
use common::serial;

struct Inspecting;

/// The block being watched (0: none), and what its free found.
static WATCH: AtomicUsize = AtomicUsize::new(0);
static SEEN: AtomicU8 = AtomicU8::new(NOT_FREED);
const NOT_FREED: u8 = 0;
const FREED_ZERO: u8 = 1;
const FREED_DIRTY: u8 = 2;
const MOVED: u8 = 3;

// SAFETY: forwards to `System`; the inspection reads the block being freed
// (all `layout.size()` bytes of it are ours until `dealloc` returns).
unsafe impl GlobalAlloc for Inspecting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if p as usize == WATCH.load(Ordering::Relaxed) {
            // SAFETY: the block is live and `layout.size()` bytes long.
            let zero = (0..layout.size()).all(|i| unsafe { ptr::read_volatile(p.add(i)) } == 0);
            SEEN.store(
                if zero { FREED_ZERO } else { FREED_DIRTY },
                Ordering::Relaxed,
            );
            WATCH.store(0, Ordering::Relaxed);
        }
        // SAFETY: forwarded.
        unsafe { System.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        if p as usize == WATCH.load(Ordering::Relaxed) {
            SEEN.store(MOVED, Ordering::Relaxed);
        }
        // SAFETY: forwarded.
        unsafe { System.realloc(p, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Inspecting = Inspecting;

/// Watches the heap block at `p` (the caller holds `serial()`).
fn watch(p: *const u8) {
    SEEN.store(NOT_FREED, Ordering::Relaxed);
    WATCH.store(p as usize, Ordering::Relaxed);
}

fn pools() -> Vec<SecretPool> {
    let mut v = vec![SecretPool::with_backing(Backing::Anonymous).unwrap()];
    if secret::memfd_secret_available() {
        v.push(SecretPool::with_backing(Backing::MemfdSecret).unwrap());
    }
    v.push(SecretPool::with_options(PoolOptions::new().sealed(true)).unwrap());
    v
}

fn read(p: usize, len: usize) -> Vec<u8> {
    // SAFETY: the callers pass memory that is still mapped.
    (0..len)
        .map(|i| unsafe { ptr::read_volatile((p + i) as *const u8) })
        .collect()
}

// ---------------------------------------------------------------------
// Wipe
// ---------------------------------------------------------------------

/// Order stamps: when `Probe` was wiped and when it was dropped, and the
/// value it held at its drop.
static STEP: AtomicUsize = AtomicUsize::new(0);
static WIPED_AT: AtomicUsize = AtomicUsize::new(0);
static DROPPED_AT: AtomicUsize = AtomicUsize::new(0);
static VALUE_AT_DROP: AtomicU64 = AtomicU64::new(u64::MAX);

fn stamp() -> usize {
    STEP.fetch_add(1, Ordering::Relaxed) + 1
}

/// A field that says when it is wiped and dropped.
struct Probe(u64);

impl Wipe for Probe {
    fn wipe(&mut self) {
        self.0.wipe();
        WIPED_AT.store(stamp(), Ordering::Relaxed);
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        VALUE_AT_DROP.store(self.0, Ordering::Relaxed);
        DROPPED_AT.store(stamp(), Ordering::Relaxed);
    }
}

/// Several key buffers in one secret, wiped field by field.
struct Keys {
    enc: [u8; 32],
    mac: [u8; 32],
    label: SecretVec<u8>,
    probe: Probe,
}

impl Wipe for Keys {
    fn wipe(&mut self) {
        self.enc.wipe();
        self.mac.wipe();
        self.label.wipe();
        self.probe.wipe();
    }
}

#[test]
fn a_struct_of_key_buffers_lives_in_the_pool_and_is_wiped_field_by_field() {
    let _s = serial();
    for pool in pools() {
        // A neighbour of the same size keeps the slab mapped after the drop.
        let neighbour = SecretBox::new_in(
            Keys {
                enc: [0; 32],
                mac: [0; 32],
                label: SecretVec::new_in(&pool),
                probe: Probe(0),
            },
            &pool,
        )
        .unwrap();
        let keys = SecretBox::new_in(
            Keys {
                enc: [0xE0; 32],
                mac: [0x3A; 32],
                label: SecretVec::from_slice_in(b"session 7", &pool).unwrap(),
                probe: Probe(0xFEED),
            },
            &pool,
        )
        .unwrap();
        let at = {
            let g = keys.expose();
            &*g as *const Keys as usize
        };
        {
            let k = keys.expose();
            assert_eq!((k.enc[0], k.mac[31], k.probe.0), (0xE0, 0x3A, 0xFEED));
            assert_eq!(&*k.label.expose(), b"session 7");
        }
        // The box and the label's buffer: two secrets (plus the neighbour).
        assert_eq!(pool.stats().secrets_live, 3);
        drop(keys);
        let (wiped, dropped) = (
            WIPED_AT.load(Ordering::Relaxed),
            DROPPED_AT.load(Ordering::Relaxed),
        );
        assert!(wiped != 0 && wiped < dropped, "wiped, then dropped");
        assert_eq!(
            VALUE_AT_DROP.load(Ordering::Relaxed),
            0,
            "wiped before drop"
        );
        assert_eq!(pool.stats().secrets_live, 1, "the label's buffer went too");
        if !pool.is_sealed() {
            let size = std::mem::size_of::<Keys>();
            assert!(read(at, size).iter().all(|&b| b == 0), "the box's bytes");
        }
        drop(neighbour);
    }
}

#[test]
fn wipe_zeroes_plain_data_and_empties_secret_collections() {
    let mut a = [7u8; 33];
    a.wipe();
    assert_eq!(a, [0; 33]);
    let mut t = (1u64, [2u16; 3], true, 'x');
    t.wipe();
    assert_eq!(t, (0, [0; 3], false, '\0'));

    for pool in pools() {
        let mut v = SecretVec::from_slice_in(&[9u8; 300], &pool).unwrap();
        let (p, cap) = (v.expose().as_ptr() as usize, v.capacity());
        v.wipe();
        assert!(v.is_empty());
        assert_eq!(v.capacity(), cap);
        {
            let _g = v.expose(); // unseals a sealed buffer for the raw read
            assert!(read(p, 300).iter().all(|&b| b == 0));
        }
        let mut s = SecretString::try_from_str_in("hunter2", &pool).unwrap();
        s.wipe();
        assert!(s.is_empty());
        let mut b = SecretBox::<[u64; 4]>::new_with_in(&pool, |k| k.fill(5)).unwrap();
        b.wipe();
        assert_eq!(*b.expose(), [0; 4]);
    }
}

// ---------------------------------------------------------------------
// ct_eq
// ---------------------------------------------------------------------

#[test]
fn ct_eq_is_byte_equality() {
    let base: Vec<u8> = (0..100u8).collect();
    assert!(secret::ct_eq(&base, &base.clone()));
    assert!(secret::ct_eq(b"", b""));
    assert!(!secret::ct_eq(&base, &base[..99]), "lengths differ");
    assert!(!secret::ct_eq(b"", b"a"));
    // A difference at every position, and in every bit, is seen (the word
    // loop and the tail loop both).
    for len in [1, 7, 8, 9, 16, 100] {
        let a = &base[..len];
        for i in 0..len {
            for bit in 0..8 {
                let mut b = a.to_vec();
                b[i] ^= 1 << bit;
                assert!(!secret::ct_eq(a, &b), "len {len}, byte {i}, bit {bit}");
            }
        }
    }
    for pool in pools() {
        let v = SecretVec::from_slice_in(b"correct horse", &pool).unwrap();
        assert!(v.ct_eq(b"correct horse"));
        assert!(!v.ct_eq(b"correct horsf"));
        assert!(!v.ct_eq(b"correct hors"));
        let s = SecretString::try_from_str_in("battery staple", &pool).unwrap();
        assert!(s.ct_eq("battery staple"));
        assert!(!s.ct_eq("battery stapl€"));
        let k = SecretBox::<[u8; 32]>::new_with_in(&pool, |k| k.fill(3)).unwrap();
        let same = SecretBox::<[u8; 32]>::new_with_in(&pool, |k| k.fill(3)).unwrap();
        let other = SecretBox::<[u8; 32]>::new_with_in(&pool, |k| k[31] = 3).unwrap();
        assert!(k.ct_eq(&*same.expose()), "secret against secret");
        assert!(!k.ct_eq(&*other.expose()));
        assert!(!k.ct_eq(&[3u8; 31]));
    }
}

// ---------------------------------------------------------------------
// Conversions that wipe their source
// ---------------------------------------------------------------------

#[test]
fn from_string_and_from_vec_wipe_the_whole_source_buffer() {
    let _s = serial();
    for pool in pools() {
        // Spare capacity still holds the end of an earlier passphrase.
        let mut src = String::with_capacity(64);
        src.push_str("correct horse battery staple, and some more words");
        src.truncate(16);
        watch(src.as_ptr());
        let s = SecretString::from_string_in(src, &pool).unwrap();
        assert_eq!(SEEN.load(Ordering::Relaxed), FREED_ZERO, "all 64 bytes");
        assert_eq!(&*s.expose_str(), "correct horse ba");

        let mut words: Vec<u32> = Vec::with_capacity(16);
        words.extend_from_slice(&[0xDEAD_BEEF; 16]);
        words.truncate(5);
        watch(words.as_ptr().cast());
        let v = SecretVec::from_vec_in(words, &pool).unwrap();
        assert_eq!(SEEN.load(Ordering::Relaxed), FREED_ZERO, "all 64 bytes");
        assert_eq!(&*v.expose(), &[0xDEAD_BEEF; 5]);
    }
}

#[test]
fn a_conversion_that_fails_still_wipes_its_source() {
    let _s = serial();
    let out = child::in_child("from_vec over the limit", Duration::from_secs(60), || {
        child::set_rlimit(libc::RLIMIT_MEMLOCK, 64 * 1024).expect("RLIMIT_MEMLOCK");
        let pool = SecretPool::new().unwrap();
        let src = vec![0x77u8; 1 << 20];
        watch(src.as_ptr());
        match SecretVec::from_vec_in(src, &pool) {
            Err(SecretError::MemlockLimit { .. }) => {}
            _ => return 2,
        }
        if SEEN.load(Ordering::Relaxed) != FREED_ZERO {
            return 3;
        }
        0
    });
    assert_eq!(out, Ended::Exited(0));
}

#[test]
fn expose_str_gives_a_str() {
    fn takes_str(s: &str) -> usize {
        s.chars().count()
    }
    let s = SecretString::try_from_str("naïve passphrase").unwrap();
    let g = s.expose_str();
    let as_str: &str = &g;
    assert_eq!(as_str, "naïve passphrase");
    assert_eq!(takes_str(&g), 16, "the guard coerces to &str");
}

// ---------------------------------------------------------------------
// try_new_with
// ---------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum DeriveError {
    Pool(SecretError),
    BadSalt,
}

impl From<SecretError> for DeriveError {
    fn from(e: SecretError) -> Self {
        DeriveError::Pool(e)
    }
}

#[test]
fn a_failed_derivation_leaves_nothing_behind() {
    for pool in pools() {
        let neighbour = SecretBox::<[u8; 32]>::zeroed_in(&pool).unwrap();
        let mut at = 0;
        let r = SecretBox::<[u8; 32]>::try_new_with_in(&pool, |k| {
            at = k.as_ptr() as usize;
            k[..16].fill(0xAB); // half a key, then the derivation fails
            Err(DeriveError::BadSalt)
        });
        assert_eq!(r.err(), Some(DeriveError::BadSalt));
        assert_eq!(pool.stats().secrets_live, 1, "only the neighbour");
        if !pool.is_sealed() {
            // The slab lives on (the neighbour): the block reads zero, and
            // is handed out again as a clean zeroed secret.
            assert!(read(at, 48).iter().all(|&b| b == 0));
            let again = SecretBox::<[u8; 32]>::zeroed_in(&pool).unwrap();
            assert_eq!(again.expose().as_ptr() as usize, at);
            assert_eq!(*again.expose(), [0; 32]);
        }
        let ok = SecretBox::<[u8; 32]>::try_new_with_in(&pool, |k| {
            k.fill(1);
            Ok::<(), DeriveError>(())
        })
        .unwrap();
        assert_eq!(*ok.expose(), [1; 32]);
        // A panicking initialiser leaves nothing either.
        let live = pool.stats().secrets_live;
        let p = std::panic::catch_unwind(|| {
            SecretBox::<[u8; 32]>::try_new_with_in(&pool, |_| -> Result<(), SecretError> {
                panic!("derivation bug")
            })
        });
        assert!(p.is_err());
        assert_eq!(pool.stats().secrets_live, live);
        drop(neighbour);
    }
}

#[test]
fn pool_errors_reach_a_fallible_initialiser_as_its_error_type() {
    let _s = serial();
    let out = child::in_child(
        "try_new_with over the limit",
        Duration::from_secs(60),
        || {
            child::set_rlimit(libc::RLIMIT_MEMLOCK, 4096).expect("RLIMIT_MEMLOCK");
            let pool = SecretPool::new().unwrap();
            let mut ran = false;
            let r = SecretBox::<[u8; 8192]>::try_new_with_in(&pool, |_| {
                ran = true;
                Ok::<(), DeriveError>(())
            });
            match r {
                Err(DeriveError::Pool(SecretError::MemlockLimit { limit: 4096, .. })) if !ran => 0,
                _ => 2,
            }
        },
    );
    assert_eq!(out, Ended::Exited(0));
}

// ---------------------------------------------------------------------
// random
// ---------------------------------------------------------------------

#[test]
fn random_secrets_are_filled_in_place() {
    for pool in pools() {
        let a = SecretBox::<[u8; 32]>::random_in(&pool).unwrap();
        let b = SecretBox::<[u8; 32]>::random_in(&pool).unwrap();
        // Equal, or all zero, with probability 2^-256.
        assert!(!a.ct_eq(&*b.expose()));
        assert!(a.expose().iter().any(|&x| x != 0));
        let v = SecretVec::random_in(100_000, &pool).unwrap();
        assert_eq!(v.len(), 100_000);
        let g = v.expose();
        assert_ne!(&g[..50_000], &g[50_000..]);
        // Every byte value turns up in 100 kB of random bytes.
        let mut seen = [false; 256];
        g.iter().for_each(|&x| seen[x as usize] = true);
        assert!(seen.iter().all(|&s| s));
        assert_eq!(pool.stats().secrets_live, 3);
    }
    assert_eq!(SecretVec::random(0).unwrap().len(), 0);
    assert!(SecretBox::<[u8; 16]>::random().is_ok());
}

#[test]
fn a_random_source_that_fails_is_an_error_and_leaves_nothing() {
    let _s = serial();
    for backing in [Backing::Anonymous, Backing::MemfdSecret] {
        if backing == Backing::MemfdSecret && !secret::memfd_secret_available() {
            continue;
        }
        let out = child::in_child("getrandom refused", Duration::from_secs(60), || {
            let pool = SecretPool::with_backing(backing).unwrap();
            seccomp::refuse(&[Refuse::all(libc::SYS_getrandom, libc::EIO)]).expect("seccomp");
            let random_error = Err(SecretError::Random { errno: libc::EIO });
            if SecretBox::<[u8; 32]>::random_in(&pool).map(drop) != random_error {
                return 2;
            }
            if SecretVec::random_in(10_000, &pool).map(drop) != random_error {
                return 3;
            }
            let st = pool.stats();
            if st.secrets_live != 0 || st.bytes_locked != 0 || secret::locked_bytes() != 0 {
                return 4;
            }
            0
        });
        assert_eq!(out, Ended::Exited(0), "{backing:?}");
    }
}

// ---------------------------------------------------------------------
// ExposeSecret
// ---------------------------------------------------------------------

/// Generic code over "any secret whose contents are bytes".
fn xor_all<S: ExposeSecret>(s: &S) -> u8
where
    S::Secret: AsRef<[u8]>,
{
    s.expose_secret().as_ref().iter().fold(0, |a, b| a ^ b)
}

/// Generic code that writes any byte secret.
fn fill<S: ExposeSecretMut>(s: &mut S, byte: u8)
where
    S::Secret: AsMut<[u8]>,
{
    s.expose_secret_mut().as_mut().fill(byte);
}

#[test]
fn generic_code_takes_any_secret() {
    for pool in pools() {
        let mut k = SecretBox::<[u8; 4]>::new_with_in(&pool, |k| *k = [1, 2, 4, 8]).unwrap();
        let mut v = SecretVec::from_slice_in(&[16u8, 32], &pool).unwrap();
        let s = SecretString::try_from_str_in("@", &pool).unwrap();
        assert_eq!((xor_all(&k), xor_all(&v), xor_all(&s)), (15, 48, b'@'));
        fill(&mut k, 0xFF);
        fill(&mut v, 0x0F);
        assert_eq!((*k.expose(), &*v.expose()), ([0xFF; 4], &[0x0F, 0x0F][..]));
        assert!(k.try_expose_secret().is_ok() && s.try_expose_secret().is_ok());
    }
}

#[test]
fn a_child_cannot_expose_what_it_inherited() {
    let _s = serial();
    for pool in pools() {
        let k = SecretBox::<[u8; 32]>::random_in(&pool).unwrap();
        let v = SecretVec::random_in(5000, &pool).unwrap();
        let s = SecretString::try_from_str_in("inherited", &pool).unwrap();
        let out = child::in_child("expose inherited", Duration::from_secs(60), || {
            let inherited = Err(SecretError::Inherited);
            if k.try_expose_secret().map(drop) != inherited
                || v.try_expose_secret().map(drop) != inherited
                || s.try_expose_secret().map(drop) != inherited
            {
                return 2;
            }
            drop((k, v, s));
            0
        });
        assert_eq!(out, Ended::Exited(0), "{:?}", pool.backing());
    }
}
