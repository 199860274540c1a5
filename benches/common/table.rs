//! Text tables, shared with `bench/` (`#[path]`) so that both benchmarks lay out reports alike.

/// Renders a table (header, rule, rows; first column left-aligned, the
/// others right-aligned, as names and numbers read best), each line
/// ending in a newline. Returns the text so that a report can be both
/// printed and saved.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, cell) in cells.take(cols).enumerate() {
            let pad = width[i].saturating_sub(cell.chars().count());
            if i == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    };
    render(&mut headers.iter().copied());
    let total: usize = width.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
    render(&mut std::iter::once("-".repeat(total).as_str()));
    for row in rows {
        render(&mut row.iter().map(String::as_str));
    }
    text
}
