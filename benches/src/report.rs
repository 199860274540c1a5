//! The report: markdown tables of times, peak RSS and ratios, the issue's
//! targets checked against them, thread scaling, page faults and the Rust
//! workloads' notes; and the CSV files `plot.py` draws from.

use std::fmt::Write as _;

use crate::fmt::{fmt_bytes, fmt_count, table};
use crate::peers::DEFAULT_PEERS;
use crate::runner::{Cell, Results};

/// The median of `v` (0 if empty).
pub fn median(v: &[u64]) -> u64 {
    let mut t = v.to_vec();
    t.sort_unstable();
    match t.len() {
        0 => 0,
        n if n % 2 == 1 => t[n / 2],
        n => (t[n / 2 - 1] + t[n / 2]) / 2,
    }
}

/// Geometric mean of positive ratios (`None` if there are none).
pub fn geomean(v: &[f64]) -> Option<f64> {
    let logs: Vec<f64> = v.iter().filter(|r| **r > 0.0).map(|r| r.ln()).collect();
    (!logs.is_empty()).then(|| (logs.iter().sum::<f64>() / logs.len() as f64).exp())
}

impl Cell {
    fn values(&self, f: impl Fn(&crate::proc::Run) -> u64) -> Vec<u64> {
        self.samples.iter().map(|s| f(&s.run)).collect()
    }

    /// Median wall time, if any run succeeded and none failed.
    pub fn time(&self) -> Option<u64> {
        (self.failures.is_empty() && !self.samples.is_empty())
            .then(|| median(&self.values(|r| r.wall_ns)))
    }

    /// Median peak RSS in KiB, under the same condition.
    pub fn rss(&self) -> Option<u64> {
        self.time().map(|_| median(&self.values(|r| r.max_rss_kib)))
    }

    /// Median CPU time (user + system).
    pub fn cpu(&self) -> Option<u64> {
        self.time()
            .map(|_| median(&self.values(|r| r.user_ns + r.sys_ns)))
    }

    /// Median minor page faults.
    pub fn faults(&self) -> Option<u64> {
        self.time().map(|_| median(&self.values(|r| r.minflt)))
    }

    /// Half the range of the wall times as a fraction of the median.
    pub fn spread(&self) -> Option<f64> {
        let t = self.values(|r| r.wall_ns);
        let (lo, hi) = (t.iter().min()?, t.iter().max()?);
        self.time()
            .map(|m| (hi - lo) as f64 / 2.0 / m.max(1) as f64)
    }
}

/// The ratios of one case, where both sides were measured.
#[derive(Clone, Debug, Default)]
pub struct Ratios {
    /// mapalloc / the fastest of glibc, jemalloc, tcmalloc, mimalloc.
    pub vs_best: Option<(f64, &'static str)>,
    /// mapalloc / glibc.
    pub vs_glibc: Option<f64>,
    /// mapalloc-hardened / mimalloc-secure.
    pub hardened_vs_secure: Option<f64>,
    /// mapalloc-hardened / mapalloc.
    pub hardened_vs_default: Option<f64>,
    /// Peak RSS: mapalloc / mimalloc.
    pub rss_vs_mimalloc: Option<f64>,
}

fn ratio(a: Option<u64>, b: Option<u64>) -> Option<f64> {
    Some(a? as f64 / b?.max(1) as f64)
}

/// What a ratio compares: [`Cell::time`] (wall) or [`Cell::cpu`].
type Metric = fn(&Cell) -> Option<u64>;

impl Results {
    fn time(&self, case: usize, alloc: &str) -> Option<u64> {
        self.cell(case, alloc)?.time()
    }

    fn rss(&self, case: usize, alloc: &str) -> Option<u64> {
        self.cell(case, alloc)?.rss()
    }

    /// The ratios of case `c`, of `metric`.
    pub fn ratios(&self, c: usize, metric: Metric) -> Ratios {
        let t = |alloc: &str| self.cell(c, alloc).and_then(metric);
        let best = DEFAULT_PEERS
            .iter()
            .filter_map(|p| Some((t(p)?, *p)))
            .min_by_key(|(t, _)| *t);
        let m = t("mapalloc");
        let h = t("mapalloc-hardened");
        Ratios {
            vs_best: best.and_then(|(t, p)| Some((ratio(m, Some(t))?, p))),
            vs_glibc: ratio(m, t("glibc")),
            hardened_vs_secure: ratio(h, t("mimalloc-secure")),
            hardened_vs_default: ratio(h, m),
            rss_vs_mimalloc: ratio(self.rss(c, "mapalloc"), self.rss(c, "mimalloc")),
        }
    }
}

fn ms(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms:.1}")
    }
}

fn r2(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

/// Context lines at the top of the report.
pub struct Header {
    /// The command that reproduces this report.
    pub command: String,
    /// Machine, date, commit, load, versions, notes: one per line.
    pub lines: Vec<String>,
}

/// The whole report, in markdown.
pub fn render(res: &Results, header: &Header) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# mapalloc-bench report\n");
    let _ = writeln!(r, "Reproduce: `{}`\n", header.command);
    for l in &header.lines {
        let _ = writeln!(r, "- {l}");
    }
    let names: Vec<&str> = res.allocs.iter().map(|a| a.name).collect();

    // Times.
    let _ = writeln!(
        r,
        "\n## Time\n\nWall time of the whole process, median of {} rounds, in ms; `±` is half the range of the rounds as a percentage of the median. `FAIL`: a run crashed, timed out or printed another result than glibc (listed at the end).\n",
        res.rounds
    );
    let mut headers = vec!["workload"];
    headers.extend(&names);
    let rounds = res.rounds;
    r.push_str(&cell_table(res, &headers, |cell| {
        match (cell.time(), cell.spread()) {
            (Some(t), Some(s)) if rounds > 1 => format!("{} ±{:.0}%", ms(t), s * 100.0),
            (Some(t), _) => ms(t),
            _ if !cell.failures.is_empty() => "FAIL".into(),
            _ => "-".into(),
        }
    }));

    // Peak RSS.
    let _ = writeln!(
        r,
        "\n## Peak RSS\n\n`ru_maxrss` of the process (`wait4`), median of the rounds.\n"
    );
    r.push_str(&cell_table(res, &headers, |cell| {
        cell.rss().map_or("-".into(), |k| fmt_bytes(k * 1024))
    }));

    ratio_section(
        &mut r,
        res,
        Cell::time,
        "Ratios",
        "Median wall time over median wall time (below 1: the first is faster)",
    );
    ratio_section(
        &mut r,
        res,
        Cell::cpu,
        "Ratios of CPU time",
        "The same from the median CPU time (user + system, all threads) of each run: on a shared machine a process that waits for a CPU gains wall time but not CPU time, so these move less with the load; spinning and page-fault work count",
    );
    let _ = writeln!(
        r,
        "\n## CPU time\n\nMedian user + system time of the rounds, in ms.\n"
    );
    r.push_str(&cell_table(res, &headers, |cell| {
        cell.cpu().map_or("-".into(), ms)
    }));

    scaling(&mut r, res, &headers);
    faults(&mut r, res, &headers);
    notes(&mut r, res, &headers);

    let failures = res.failures();
    if !failures.is_empty() {
        let _ = writeln!(r, "\n## Failures\n");
        for f in failures {
            let _ = writeln!(r, "- {}", f.replace('\n', " / "));
        }
    }
    r
}

/// A ratio table of `metric` (one row per case, geometric means, worst
/// cases) and the targets checked against it.
fn ratio_section(r: &mut String, res: &Results, metric: Metric, title: &str, what: &str) {
    let _ = writeln!(
        r,
        "\n## {title}\n\n{what}. `best peer` is the fastest of glibc, jemalloc, tcmalloc and mimalloc on that row; `RSS / mimalloc` compares peak RSS.\n"
    );
    let all: Vec<Ratios> = (0..res.cases.len())
        .map(|c| res.ratios(c, metric))
        .collect();
    let rheaders = [
        "workload",
        "mapalloc / best peer",
        "mapalloc / glibc",
        "hardened / mimalloc-secure",
        "hardened / mapalloc",
        "RSS mapalloc / mimalloc",
    ];
    let mut body: Vec<Vec<String>> = res
        .cases
        .iter()
        .zip(&all)
        .map(|(case, x)| {
            vec![
                case.name.clone(),
                x.vs_best
                    .map_or("-".into(), |(v, p)| format!("{v:.2} ({p})")),
                r2(x.vs_glibc),
                r2(x.hardened_vs_secure),
                r2(x.hardened_vs_default),
                r2(x.rss_vs_mimalloc),
            ]
        })
        .collect();
    let col =
        |f: &dyn Fn(&Ratios) -> Option<f64>| -> Vec<f64> { all.iter().filter_map(f).collect() };
    let best = col(&|x| x.vs_best.map(|b| b.0));
    let glibc = col(&|x| x.vs_glibc);
    let secure = col(&|x| x.hardened_vs_secure);
    let default = col(&|x| x.hardened_vs_default);
    let rss = col(&|x| x.rss_vs_mimalloc);
    let max = |v: &[f64]| {
        v.iter()
            .copied()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    };
    body.push(
        ["**geometric mean**".to_string()]
            .into_iter()
            .chain([&best, &glibc, &secure, &default, &rss].map(|v| r2(geomean(v))))
            .collect(),
    );
    body.push(
        ["**worst**".to_string()]
            .into_iter()
            .chain([&best, &glibc, &secure, &default, &rss].map(|v| r2(max(v))))
            .collect(),
    );
    r.push_str(&table(&rheaders, &body));

    let _ = writeln!(r, "\n### Targets (issue 17), from these ratios\n");
    let over = |pick: &dyn Fn(&Ratios) -> Option<f64>, limit: f64| -> Vec<String> {
        res.cases
            .iter()
            .zip(&all)
            .filter_map(|(case, x)| {
                pick(x)
                    .filter(|v| *v > limit)
                    .map(|v| format!("{} {v:.2}", case.name))
            })
            .collect()
    };
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let target =
        |r: &mut String, what: &str, value: Option<f64>, limit: f64, misses: Vec<String>| {
            let ok = value.is_some_and(|v| v <= limit) && misses.is_empty();
            let shown = value.map_or("not measured".into(), |v| format!("{v:.2}"));
            let _ = write!(
                r,
                "- {} {what}: {shown}",
                if value.is_some() { verdict(ok) } else { "n/a " }
            );
            if !misses.is_empty() {
                let _ = write!(r, " (over: {})", misses.join(", "));
            }
            r.push('\n');
        };
    target(
        r,
        "default: geomean of mapalloc / best peer <= 1.0",
        geomean(&best),
        1.0,
        vec![],
    );
    target(
        r,
        "default: every mapalloc / best peer <= 1.2",
        max(&best),
        1.2,
        over(&|x| x.vs_best.map(|b| b.0), 1.2),
    );
    target(
        r,
        "default: no workload slower than glibc",
        max(&glibc),
        1.0,
        over(&|x| x.vs_glibc, 1.0),
    );
    target(
        r,
        "default: geomean of peak RSS / mimalloc's <= 1.1",
        geomean(&rss),
        1.1,
        vec![],
    );
    target(
        r,
        "hardened: faster than mimalloc-secure on every workload",
        max(&secure),
        1.0,
        over(&|x| x.hardened_vs_secure, 1.0),
    );
    target(
        r,
        "hardened: at most 2x the default on every workload",
        max(&default),
        2.0,
        over(&|x| x.hardened_vs_default, 2.0),
    );
}

/// A table with one row per case and one cell per allocator, `cell`'s
/// text.
fn cell_table(res: &Results, headers: &[&str], cell: impl Fn(&Cell) -> String) -> String {
    let body: Vec<Vec<String>> = res
        .cases
        .iter()
        .zip(&res.cells)
        .map(|(case, cells)| {
            let mut row = vec![case.name.clone()];
            row.extend(cells.iter().map(&cell));
            row
        })
        .collect();
    table(headers, &body)
}

/// Time at N threads over time at 1 thread, per allocator (the work is
/// per thread: up to the CPU count the ideal is 1.00).
fn scaling(r: &mut String, res: &Results, headers: &[&str]) {
    let mut body = Vec::new();
    for (c, case) in res.cases.iter().enumerate() {
        let (Some(w), Some(t)) = (case.workload, case.threads) else {
            continue;
        };
        if t == 1 {
            continue;
        }
        let Some(one) = res
            .cases
            .iter()
            .position(|x| x.workload.is_some_and(|v| v.name == w.name) && x.threads == Some(1))
        else {
            continue;
        };
        let mut row = vec![case.name.clone()];
        row.extend(
            (0..res.allocs.len())
                .map(|a| r2(ratio(res.cells[c][a].time(), res.cells[one][a].time()))),
        );
        body.push(row);
    }
    if body.is_empty() {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        r,
        "\n## Thread scaling\n\nTime at N threads over the same allocator's time at 1 thread. The work is per thread, so up to the {cpus} CPUs of this machine the ideal is 1.00 (N times the work in the same time); above it, N / {cpus}.\n"
    );
    r.push_str(&table(headers, &body));
}

fn faults(r: &mut String, res: &Results, headers: &[&str]) {
    let _ = writeln!(
        r,
        "\n## Minor page faults\n\nMedian per run, in thousands.\n"
    );
    r.push_str(&cell_table(res, headers, |cell| {
        cell.faults()
            .map_or("-".into(), |f| fmt_count(f.div_ceil(1000)))
    }));
}

/// The Rust workloads' `NOTE`s (fragmentation's RSS at each phase).
fn notes(r: &mut String, res: &Results, headers: &[&str]) {
    let mut body = Vec::new();
    for (c, case) in res.cases.iter().enumerate() {
        let mut keys: Vec<String> = Vec::new();
        for cell in &res.cells[c] {
            for s in &cell.samples {
                for (k, _) in &s.notes {
                    if !keys.contains(k) {
                        keys.push(k.clone());
                    }
                }
            }
        }
        for k in keys {
            let mut row = vec![format!("{} {k}", case.name)];
            row.extend(res.cells[c].iter().map(|cell| {
                let v: Vec<u64> = cell
                    .samples
                    .iter()
                    .filter_map(|s| s.notes.iter().find(|(n, _)| *n == k).map(|(_, v)| *v))
                    .collect();
                if v.is_empty() {
                    "-".into()
                } else if k.ends_with("_kib") {
                    fmt_bytes(median(&v) * 1024)
                } else if k.ends_with("_bytes") {
                    fmt_bytes(median(&v))
                } else {
                    fmt_count(median(&v))
                }
            }));
            body.push(row);
        }
    }
    if body.is_empty() {
        return;
    }
    let _ = writeln!(
        r,
        "\n## Notes from the Rust workloads\n\nMedian of the rounds (`rss_*`: the process's RSS at that point of the workload).\n"
    );
    r.push_str(&table(headers, &body));
}

/// The first columns of both CSV files: what was run, and on what.
fn key_columns(case: &crate::runner::Case, alloc: &str) -> String {
    format!(
        "{},{},{},{},{},{alloc}",
        case.name,
        case.workload.map_or("cmd", |w| w.name),
        case.workload.map_or("", |w| w.language()),
        case.threads.unwrap_or(1),
        case.size,
    )
}

/// `runs.csv`: one line per run.
pub fn runs_csv(res: &Results) -> String {
    let mut s = String::from(
        "case,workload,language,threads,size,alloc,round,position,wall_ns,user_ns,sys_ns,max_rss_kib,minflt,majflt\n",
    );
    for (c, case) in res.cases.iter().enumerate() {
        for (a, alloc) in res.allocs.iter().enumerate() {
            for x in &res.cells[c][a].samples {
                let _ = writeln!(
                    s,
                    "{},{},{},{},{},{},{},{},{}",
                    key_columns(case, alloc.name),
                    x.round,
                    x.position,
                    x.run.wall_ns,
                    x.run.user_ns,
                    x.run.sys_ns,
                    x.run.max_rss_kib,
                    x.run.minflt,
                    x.run.majflt
                );
            }
        }
    }
    s
}

/// `summary.csv`: one line per case x allocator, the medians and the
/// ratio to glibc.
pub fn summary_csv(res: &Results) -> String {
    let mut s = String::from(
        "case,workload,language,threads,size,alloc,runs,failed,median_ns,min_ns,max_ns,median_cpu_ns,median_rss_kib,median_minflt,time_vs_glibc,rss_vs_glibc\n",
    );
    for (c, case) in res.cases.iter().enumerate() {
        for (a, alloc) in res.allocs.iter().enumerate() {
            let cell = &res.cells[c][a];
            let t: Vec<u64> = cell.samples.iter().map(|x| x.run.wall_ns).collect();
            let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
            let optf = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{}",
                key_columns(case, alloc.name),
                cell.samples.len(),
                cell.failures.len(),
                opt(cell.time()),
                opt(t.iter().min().copied().filter(|_| cell.time().is_some())),
                opt(t.iter().max().copied().filter(|_| cell.time().is_some())),
                opt(cell.cpu()),
                opt(cell.rss()),
                opt(cell.faults()),
                optf(ratio(cell.time(), res.time(c, "glibc"))),
                optf(ratio(cell.rss(), res.rss(c, "glibc"))),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_means() {
        assert_eq!(median(&[3, 1, 2]), 2);
        assert_eq!(median(&[4, 1, 2, 3]), 2);
        assert_eq!(median(&[]), 0);
        let g = geomean(&[0.5, 2.0]).expect("two ratios");
        assert!((g - 1.0).abs() < 1e-12);
        assert_eq!(geomean(&[]), None);
    }
}
