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
//! example runs unattended. A key is derived from it with a *demo* key
//! derivation function (an iterated 64-bit mixer written for this example:
//! **not cryptography**, use Argon2/scrypt/PBKDF2 in real code), used to
//! XOR-"encrypt" and decrypt a message (again **not** a real cipher), then
//! dropped; the pool's report is printed along the way.

use mapalloc::secret::{
    self, PoolStats, SecretBox, SecretError, SecretPool, SecretString, SecretVec,
};
use std::io::Write;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc::new();

const DEMO_PASSPHRASE: &str = "correct horse battery staple";
const SALT: &[u8; 16] = b"mapalloc-demo-v1";
const ROUNDS: u32 = 20_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = SecretPool::global();
    println!("secret pool backing: {:?}", pool.backing());
    match secret::memlock_limit() {
        Some(l) => println!("RLIMIT_MEMLOCK: {l} bytes"),
        None => println!("RLIMIT_MEMLOCK: unlimited"),
    }

    let passphrase = read_passphrase()?;
    println!("passphrase: {passphrase:?} ({} bytes)", passphrase.len());

    let key = demo_kdf(&passphrase.expose(), SALT, ROUNDS)?;
    println!("derived key: {key:?}");
    drop(passphrase); // wiped now: only the key is needed from here on
    report("with the key", pool.stats());

    let message = b"Meet me at the usual place at 10:30.";
    let nonce = 0x6E6F_6E63_655F_3031; // demo only: never reuse with one key
    let ciphertext = xor_stream(&key, nonce, message);
    println!("ciphertext: {}", hex(&ciphertext));

    // The decrypted message is a secret too: it goes to a SecretVec.
    let mut plaintext = SecretVec::<u8>::with_capacity(ciphertext.len())?;
    plaintext.try_extend_from_slice(&ciphertext)?;
    apply_stream(&key, nonce, &mut plaintext.expose_mut());
    assert_eq!(&*plaintext.expose(), message, "decryption failed");
    println!(
        "decrypted: {}",
        String::from_utf8_lossy(&plaintext.expose())
    );
    report("with key and plaintext", pool.stats());

    drop(plaintext);
    drop(key);
    report("after drop", pool.stats());
    Ok(())
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
            // The environment copy is not ours to wipe.
            SecretString::try_from_str(&p)
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
/// into four 64-bit lanes and stirs them `rounds` times. Its working state
/// lives in the secret pool, and the key is written in place into a
/// `SecretBox` (no copy of it on the stack).
fn demo_kdf(pass: &str, salt: &[u8; 16], rounds: u32) -> Result<SecretBox<[u8; 32]>, SecretError> {
    let mut state = SecretBox::<[u64; 4]>::new_with(|s| {
        *s = [
            0x6A09_E667_F3BC_C908,
            0xBB67_AE85_84CA_A73B,
            0x3C6E_F372_FE94_F82B,
            0xA54F_F53A_5F1D_36F1,
        ];
    })?;
    {
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
    SecretBox::new_with(|key: &mut [u8; 32]| {
        let s = state.expose();
        for (lane, chunk) in key.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&mix(s[lane] ^ s[(lane + 2) % 4]).to_le_bytes());
        }
    })
    // `state` is wiped here, when it drops.
}

/// DEMO stream "cipher", NOT cryptography: XORs `data` with a keystream of
/// `mix(key lane, nonce, counter)` words.
fn apply_stream(key: &SecretBox<[u8; 32]>, nonce: u64, data: &mut [u8]) {
    let k = key.expose();
    for (block, chunk) in data.chunks_mut(8).enumerate() {
        let lane = u64::from_le_bytes(k[(block % 4) * 8..][..8].try_into().unwrap());
        let ks = mix(lane ^ mix(nonce ^ block as u64)).to_le_bytes();
        for (d, s) in chunk.iter_mut().zip(ks) {
            *d ^= s;
        }
    }
}

fn xor_stream(key: &SecretBox<[u8; 32]>, nonce: u64, msg: &[u8]) -> Vec<u8> {
    let mut out = msg.to_vec();
    apply_stream(key, nonce, &mut out);
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
