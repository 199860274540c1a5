//! Number formatting and markdown tables for the reports. Allocator-free
//! and self-contained, so `examples/compare.rs` includes this file with
//! `#[path]` as well.

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
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A markdown table: the first column left-aligned (names), the others
/// right-aligned (numbers), cells padded so that it also reads as plain
/// text. Each line ends in a newline.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count().max(3)).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let mut l = String::from("|");
        for (i, cell) in cells.take(cols).enumerate() {
            let pad = " ".repeat(width[i].saturating_sub(cell.chars().count()));
            if i == 0 {
                l.push_str(&format!(" {cell}{pad} |"));
            } else {
                l.push_str(&format!(" {pad}{cell} |"));
            }
        }
        l.push('\n');
        l
    };
    let mut text = line(&mut headers.iter().map(|h| h.to_string()));
    text.push_str(&line(&mut (0..cols).map(|i| {
        if i == 0 {
            "-".repeat(width[0])
        } else {
            format!("{}:", "-".repeat(width[i] - 1))
        }
    })));
    for row in rows {
        text.push_str(&line(
            &mut row.iter().cloned().chain(std::iter::repeat(String::new())),
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_markdown() {
        let t = table(&["name", "n"], &[vec!["a".into(), "12".into()]]);
        assert_eq!(t, "| name |   n |\n| ---- | --: |\n| a    |  12 |\n");
    }

    #[test]
    fn counts_and_sizes() {
        assert_eq!(fmt_count(1234567), "1,234,567");
        assert_eq!(fmt_count(12), "12");
        assert_eq!(fmt_bytes(3 << 20), "3.0 MiB");
        assert_eq!(fmt_ns(1_500_000), "1.5 ms");
    }
}
