//! RSS from `/proc/self/status`, shared with `bench/` (`#[path]`): it is allocator-independent.

use std::io::Read as _;

/// Resident set size of this process, in KiB, from `/proc/self/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    /// `VmHWM`: peak resident set size since the process started.
    pub peak_kib: u64,
    /// `VmRSS`: current resident set size.
    pub current_kib: u64,
}

/// Reads `VmHWM` and `VmRSS` via a stack buffer: allocating here would
/// change the very RSS being measured.
pub fn read_rss() -> Rss {
    let mut buf = [0u8; 8192];
    let mut len = 0;
    if let Ok(mut f) = std::fs::File::open("/proc/self/status") {
        while len < buf.len() {
            match f.read(&mut buf[len..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
    }
    let text = std::str::from_utf8(&buf[..len]).unwrap_or("");
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Rss {
        peak_kib: field("VmHWM:"),
        current_kib: field("VmRSS:"),
    }
}
