//! Number formatting shared by the benchmark programs: `benches/` (the
//! root crate's compare bench and example, through `common/mod.rs`) and the
//! `bench/` peer suite (through a `#[path]` include). No allocator here.

/// `1.234 s`, `56.7 ms`, `890.1 µs`.
pub fn fmt_ns(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// `12.3 M/s`, `456.7 K/s`, `89 /s`.
pub fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 1e9 {
        format!("{:.2} G/s", per_sec / 1e9)
    } else if per_sec >= 1e6 {
        format!("{:.1} M/s", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1} K/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.0} /s")
    }
}

/// Human-readable byte count: `512 B`, `3.2 KiB`, `45.6 MiB`, `1.23 GiB`.
pub fn fmt_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// `12,345,678`.
pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        let digits_left = (s.len() - i) % 3;
        if i > 0 && digits_left == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
