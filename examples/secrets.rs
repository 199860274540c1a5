//! Keeping a passphrase and a derived key in a secret pool.
//!
//! ```text
//! cargo run --example secrets
//! MAPALLOC_DEMO_PASSPHRASE='my words' cargo run --example secrets < /dev/null
//! ```
//!
//! On a terminal the passphrase is read with echo off, byte by byte
//! straight into secret memory. Otherwise it comes from
//! `MAPALLOC_DEMO_PASSPHRASE`, or a built-in demo passphrase, so the
//! example runs unattended. Keys are derived from it and a random salt
//! with a *demo* key derivation function (an iterated 64-bit mixer written
//! for this example: **not cryptography**, use Argon2/scrypt/PBKDF2 in real
//! code), used to XOR-"encrypt" a message and tag it, the tag checked in
//! constant time and the message decrypted (again **not** a real cipher or
//! MAC), then everything is dropped; the pool's report is printed along
//! the way.
//!
//! What it shows: `SecretString` input (and `from_string` for a heap
//! copy), `SecretVec::random` for the salt, `try_new_with` for a key
//! derivation that can fail (and a refused one leaving nothing behind), a
//! struct of several secrets wiped field by field (`Wipe`), `ct_eq`,
//! decryption in place in a `SecretVec`, `from_vec` for a key that arrived
//! in a heap buffer, and generic code over any secret (`ExposeSecret`).

use mapalloc::secret::{
    self, ExposeSecret, PoolStats, SecretBox, SecretError, SecretPool, SecretString, SecretVec,
    Wipe,
};
use std::io::Write;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

const DEMO_PASSPHRASE: &str = "correct horse battery staple";
const ROUNDS: u32 = 20_000;

/// The session's secrets, several buffers in one `SecretBox`: wiped field
/// by field when the box drops (`Wipe`), then the pool zeroes its bytes.
/// The fields are secrets of their own, so moving `Session` around moves
/// only handles, never key bytes.
struct Session {
    /// 32 bytes of encryption key, then 32 of MAC key (derived).
    keys: SecretBox<[u8; 64]>,
    /// Random per-session salt, in locked memory from the start.
    salt: SecretVec<u8>,
}

impl Wipe for Session {
    fn wipe(&mut self) {
        self.keys.wipe();
        self.salt.wipe();
    }
}

/// Why the demo key derivation refused.
#[derive(Debug)]
enum KdfError {
    Pool(SecretError),
    EmptyPassphrase,
}

impl From<SecretError> for KdfError {
    fn from(e: SecretError) -> Self {
        KdfError::Pool(e)
    }
}

impl std::fmt::Display for KdfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KdfError::Pool(e) => write!(f, "secret pool: {e}"),
            KdfError::EmptyPassphrase => f.write_str("empty passphrase"),
        }
    }
}

impl std::error::Error for KdfError {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = SecretPool::global();
    println!("secret pool backing: {:?}", pool.backing());
    match secret::memlock_limit() {
        Some(l) => println!("RLIMIT_MEMLOCK: {l} bytes"),
        None => println!("RLIMIT_MEMLOCK: unlimited"),
    }

    let passphrase = read_passphrase()?;
    println!("passphrase: {passphrase:?} ({} bytes)", passphrase.len());

    // A failed derivation leaves nothing behind: the half-built key is
    // wiped and freed before the error comes back.
    let live = pool.stats().secrets_live;
    match demo_kdf(&SecretString::new(), &SecretVec::random(16)?, ROUNDS) {
        Err(KdfError::EmptyPassphrase) => {}
        other => return Err(format!("expected a refusal, got {:?}", other.map(drop)).into()),
    }
    assert_eq!(
        pool.stats().secrets_live,
        live,
        "a refused derivation left a secret"
    );
    println!("empty passphrase refused, nothing left behind");

    let salt = SecretVec::random(16)?; // getrandom, straight into locked memory
    let keys = demo_kdf(&passphrase, &salt, ROUNDS)?;
    let session = SecretBox::new(Session { keys, salt })?;
    println!("session: {session:?}");
    describe("derived keys", &session.expose().keys);
    describe("salt", &session.expose().salt);
    describe("passphrase", &passphrase);
    drop(passphrase); // wiped now: only the keys are needed from here on
    report("with the session", pool.stats());

    let message = b"Meet me at the usual place at 10:30.";
    let nonce = 0x6E6F_6E63_655F_3031; // demo only: never reuse with one key
    let (ciphertext, tag) = {
        let s = session.expose();
        let k = s.keys.expose();
        let ct = xor_stream(&k[..32], nonce, message);
        let tag = demo_mac(&k[32..], &ct);
        (ct, tag)
    };
    println!("ciphertext: {}", hex(&ciphertext));

    // The receiving side: the tag is checked in constant time before
    // anything is decrypted. The decrypted message is a secret too: it is
    // decrypted in place in a SecretVec, never in a heap Vec.
    let plaintext = {
        let s = session.expose();
        let k = s.keys.expose();
        let expected = SecretBox::<[u8; 8]>::new_with(|t| *t = demo_mac(&k[32..], &ciphertext))?;
        if !expected.ct_eq(&tag) {
            return Err("MAC check failed".into());
        }
        println!("MAC verified (constant-time comparison)");
        let mut plaintext = SecretVec::<u8>::with_capacity(ciphertext.len())?;
        plaintext.try_extend_from_slice(&ciphertext)?;
        apply_stream(&k[..32], nonce, &mut plaintext.expose_mut());
        plaintext
    };
    assert!(plaintext.ct_eq(message), "decryption failed");
    println!(
        "decrypted: {}",
        String::from_utf8_lossy(&plaintext.expose())
    );
    report("with session and plaintext", pool.stats());

    // Secrets that arrive in ordinary heap buffers (a key file read with
    // std::fs::read, say) move in with from_vec, which wipes the whole
    // source buffer, spare capacity included.
    let mut wire = Vec::with_capacity(64);
    wire.extend_from_slice(&[0x42; 32]);
    let imported = SecretVec::from_vec(wire)?;
    describe("imported key", &imported);

    drop((plaintext, imported, session));
    report("after drop", pool.stats());
    Ok(())
}

/// Generic over any secret type (`ExposeSecret`): says how many bytes it
/// holds, never what they are.
fn describe<S: ExposeSecret>(name: &str, secret: &S)
where
    S::Secret: AsRef<[u8]>,
{
    println!(
        "{name}: {} secret bytes",
        secret.expose_secret().as_ref().len()
    );
}

fn report(when: &str, s: PoolStats) {
    println!(
        "pool {when}: backing {:?}, {} bytes locked, {} slab(s), {} large mapping(s), \
         {} secret(s) live ({} bytes), {} guard page(s); process total locked {} bytes",
        s.backing,
        s.bytes_locked,
        s.slabs,
        s.large_mappings,
        s.secrets_live,
        s.bytes_live,
        s.guard_pages,
        secret::locked_bytes(),
    );
}

/// The passphrase: from the terminal (echo off), else the environment or
/// the demo default.
fn read_passphrase() -> Result<SecretString, SecretError> {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(0) } == 1 {
        return read_from_terminal();
    }
    match std::env::var("MAPALLOC_DEMO_PASSPHRASE") {
        Ok(p) if !p.is_empty() => {
            println!("passphrase from MAPALLOC_DEMO_PASSPHRASE");
            // `p` is our heap copy: from_string moves it in and wipes it.
            // (The environment's own copy is not ours to wipe.)
            SecretString::from_string(p)
        }
        _ => {
            println!("stdin is not a terminal: using the built-in demo passphrase");
            SecretString::try_from_str(DEMO_PASSPHRASE)
        }
    }
}

/// Reads a line from the terminal with echo off, one byte at a time with
/// `read(2)` (no stdio buffer holds a copy), decoding UTF-8 into the
/// secret string; backspace removes the last character.
fn read_from_terminal() -> Result<SecretString, SecretError> {
    eprint!("passphrase (not echoed): ");
    let _ = std::io::stderr().flush();
    let echo = EchoOff::new();
    let mut s = SecretString::with_capacity(64)?;
    let mut pending = [0u8; 4];
    let mut n = 0;
    loop {
        let mut b = 0u8;
        // SAFETY: reads at most one byte into `b`.
        let r = unsafe { libc::read(0, (&raw mut b).cast(), 1) };
        if r <= 0 || b == b'\n' || b == b'\r' {
            break;
        }
        if b == 0x7f || b == 0x08 {
            s.pop();
            n = 0;
            continue;
        }
        pending[n] = b;
        n += 1;
        match std::str::from_utf8(&pending[..n]) {
            Ok(c) => {
                s.try_push_str(c)?;
                n = 0;
            }
            Err(e) if e.error_len().is_some() || n == 4 => n = 0, // invalid: drop it
            Err(_) => {}                                          // incomplete: read on
        }
        b = 0;
        std::hint::black_box(b);
    }
    pending.fill(0);
    std::hint::black_box(&pending);
    drop(echo);
    eprintln!();
    if s.is_empty() {
        println!("empty passphrase: using the built-in demo passphrase");
        return SecretString::try_from_str(DEMO_PASSPHRASE);
    }
    Ok(s)
}

/// Turns terminal echo off until dropped.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> Self {
        // SAFETY: an all-zero termios is a valid out-buffer for tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid termios out-pointer.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return EchoOff(None);
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        // SAFETY: `t` is a valid termios.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        EchoOff(Some(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

/// The SplitMix64 finaliser: a bijective 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// DEMO key derivation, NOT cryptography: absorbs the passphrase and salt
/// into four 64-bit lanes and stirs them `rounds` times, then squeezes 64
/// bytes of key. Its working state lives in the secret pool, and the keys
/// are written in place (`try_new_with`: no copy of them on the stack, and
/// nothing left behind if it fails).
fn demo_kdf(
    pass: &SecretString,
    salt: &SecretVec<u8>,
    rounds: u32,
) -> Result<SecretBox<[u8; 64]>, KdfError> {
    let mut state = SecretBox::<[u64; 4]>::new_with(|s| {
        *s = [
            0x6A09_E667_F3BC_C908,
            0xBB67_AE85_84CA_A73B,
            0x3C6E_F372_FE94_F82B,
            0xA54F_F53A_5F1D_36F1,
        ];
    })?;
    let pass = pass.expose_str();
    {
        let salt = salt.expose();
        let mut s = state.expose_mut();
        for (i, &b) in salt.iter().chain(pass.as_bytes()).enumerate() {
            let lane = i % 4;
            s[lane] = mix(s[lane] ^ u64::from(b) ^ ((i as u64) << 8));
        }
        s[0] ^= pass.len() as u64;
        for r in 0..rounds {
            for lane in 0..4 {
                let next = s[(lane + 1) % 4];
                s[lane] = mix(s[lane].wrapping_add(next.rotate_left(17)) ^ u64::from(r));
            }
        }
    }
    SecretBox::try_new_with(|key: &mut [u8; 64]| {
        let s = state.expose();
        for (i, chunk) in key.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&mix(s[i % 4] ^ s[(i + 2) % 4] ^ i as u64).to_le_bytes());
        }
        // A real KDF would refuse earlier; refusing here shows that the
        // half-written key does not survive the error.
        if pass.is_empty() {
            return Err(KdfError::EmptyPassphrase);
        }
        Ok(())
    })
    // `state` is wiped here, when it drops.
}

/// DEMO message authentication, NOT cryptography: a keyed 64-bit mix of
/// the data.
fn demo_mac(key: &[u8], data: &[u8]) -> [u8; 8] {
    let mut h = key.chunks_exact(8).fold(0x243F_6A88_85A3_08D3, |h, c| {
        mix(h ^ u64::from_le_bytes(c.try_into().unwrap()))
    });
    for &b in data {
        h = mix(h ^ u64::from(b));
    }
    h.to_le_bytes()
}

/// DEMO stream "cipher", NOT cryptography: XORs `data` with a keystream of
/// `mix(key lane, nonce, counter)` words.
fn apply_stream(key: &[u8], nonce: u64, data: &mut [u8]) {
    for (block, chunk) in data.chunks_mut(8).enumerate() {
        let lane = u64::from_le_bytes(key[(block % 4) * 8..][..8].try_into().unwrap());
        let ks = mix(lane ^ mix(nonce ^ block as u64)).to_le_bytes();
        for (d, s) in chunk.iter_mut().zip(ks) {
            *d ^= s;
        }
    }
}

fn xor_stream(key: &[u8], nonce: u64, msg: &[u8]) -> Vec<u8> {
    let mut out = msg.to_vec();
    apply_stream(key, nonce, &mut out);
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
