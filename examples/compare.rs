//! mapalloc vs the system allocator (glibc malloc) on a realistic,
//! allocation-heavy program:
//!
//! ```text
//! cargo run --release --example compare
//! ```
//!
//! The job builds a word index over a synthetic corpus, on 2 threads:
//!
//! 1. each thread generates its half of a deterministic corpus (2,000,000
//!    words drawn from a Zipf-like 40,000-word vocabulary, in lines of 4-24
//!    words with capitals and punctuation) with a seeded PRNG;
//! 2. it tokenizes and normalizes every word (one `String` each), builds a
//!    `HashMap<String, Vec<u32>>` of positions and a `BTreeMap<String, u64>`
//!    of counts, formats every adjacent word pair into a bigram `String`, sorts
//!    and counts them, and renders one JSON-like line per corpus line with
//!    `format!`;
//! 3. the main thread merges both halves (freeing the other threads' blocks),
//!    sorts the vocabulary and the top words, builds a JSON-like report, joins
//!    the per-line records, checksums everything and drops it all.
//!
//! The binary's global allocator is the benchmark harness's `Switch`
//! (`benches/src/switch.rs`, included below with the harness's generator,
//! formatting and process measurement): the parent re-executes itself with
//! `MAPALLOC_BENCH_ALLOC=mapalloc` and with `MAPALLOC_BENCH_ALLOC=system`,
//! alternating, 3 times each, one job per process; it prints the median
//! times, peak RSS and RSS after freeing everything, checks that every child
//! computed the same checksum (exiting with an error if not), and finally
//! prints `mapalloc::stats()` from a MapAlloc child. The full comparison,
//! with jemalloc, tcmalloc, mimalloc and the hardened modes, is `cargo
//! bench` (`benches/README.md`).

#[allow(dead_code)] // shared with the harness, which uses all of it
#[path = "../benches/src/fmt.rs"]
mod fmt;
#[allow(dead_code)] // shared with the harness, which uses all of it
#[path = "../benches/src/proc.rs"]
mod proc;
#[allow(dead_code)] // shared with the harness, which uses all of it
#[path = "../benches/src/rng.rs"]
mod rng;
#[allow(dead_code)] // shared with the harness, which uses all of it
#[path = "../benches/src/switch.rs"]
mod switch;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::process::Command;
use std::thread;
use std::time::Duration;

use fmt::{fmt_bytes, fmt_count, fmt_ns, table};
use rng::{Rng, fnv1a};
use switch::Choice;

#[global_allocator]
static GLOBAL: switch::Switch = switch::Switch::new();

const THREADS: u32 = 2;
const WORDS_PER_THREAD: usize = 1_000_000;
const VOCABULARY: usize = 40_000;
const RUNS: usize = 3;
/// Positions are `line * 32 + word-in-line` (lines have at most 24 words).
const POS_SHIFT: u32 = 5;

// ---------------------------------------------------------------------------
// The job
// ---------------------------------------------------------------------------

fn vocabulary() -> Vec<String> {
    const SYLLABLES: &[&str] = &[
        "ka", "to", "ri", "an", "el", "mo", "su", "ne", "lo", "pa", "vi", "de", "or", "qu", "is",
        "ba", "ze", "un", "ti", "ar", "go", "me", "sh", "ly", "po", "ra", "ion", "ent", "ste",
        "ch", "wa", "fi",
    ];
    let mut rng = Rng::new(0x5EED);
    (0..VOCABULARY)
        .map(|i| {
            let mut w = String::new();
            for _ in 0..rng.range(1, 4) {
                w.push_str(SYLLABLES[rng.below(SYLLABLES.len())]);
            }
            // Make every word unique while keeping it word-like.
            let mut n = i;
            while n > 0 {
                w.push(char::from(b'a' + (n % 26) as u8));
                n /= 26;
            }
            w
        })
        .collect()
}

/// One thread's share of the corpus: lines of words separated by spaces,
/// lines separated by '\n'.
fn generate_corpus(thread: u32, vocab: &[String]) -> String {
    let mut rng = Rng::new(0xC0FFEE + u64::from(thread));
    let mut text = String::new();
    let mut words = 0;
    while words < WORDS_PER_THREAD {
        let n = rng.range(4, 24).min(WORDS_PER_THREAD - words);
        for i in 0..n {
            // Zipf-like: P(rank k) ~ 1/k.
            let w = &vocab[rng.log_uniform(1, vocab.len()) - 1];
            if i == 0 {
                let mut c = w.chars();
                if let Some(first) = c.next() {
                    text.push(first.to_ascii_uppercase());
                    text.push_str(c.as_str());
                }
            } else {
                text.push(' ');
                text.push_str(w);
            }
            if i + 1 < n && rng.below(8) == 0 {
                text.push(',');
            }
        }
        text.push_str(".\n");
        words += n;
    }
    text
}

/// What one thread hands back to the main thread.
struct Partial {
    index: HashMap<String, Vec<u32>>,
    counts: BTreeMap<String, u64>,
    /// Sorted, deduplicated `"first second"` pairs with their counts.
    bigrams: Vec<(String, u32)>,
    /// One JSON-like record per line.
    records: Vec<String>,
    words: u64,
}

fn index_half(thread: u32, vocab: &[String]) -> Partial {
    let corpus = generate_corpus(thread, vocab);
    let mut index: HashMap<String, Vec<u32>> = HashMap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut pairs: Vec<String> = Vec::new();
    let mut records = Vec::new();
    let mut words = 0u64;
    let first_line = thread * (WORDS_PER_THREAD as u32); // > lines per thread
    for (line_no, line) in corpus.lines().enumerate() {
        let line_no = first_line + line_no as u32;
        let tokens: Vec<String> = line
            .split_whitespace()
            .map(|t| {
                t.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            })
            .filter(|t| !t.is_empty())
            .collect();
        for (i, w) in tokens.iter().enumerate() {
            index
                .entry(w.clone())
                .or_default()
                .push((line_no << POS_SHIFT) | i as u32);
            *counts.entry(w.clone()).or_default() += 1;
            if i > 0 {
                pairs.push(format!("{} {w}", tokens[i - 1]));
            }
        }
        words += tokens.len() as u64;
        let longest = tokens
            .iter()
            .max_by_key(|t| t.len())
            .map_or("", String::as_str);
        records.push(format!(
            "{{\"line\":{line_no},\"words\":{},\"first\":\"{}\",\"longest\":\"{longest}\",\"chars\":{}}}",
            tokens.len(),
            tokens.first().map_or("", String::as_str),
            line.len()
        ));
    }
    drop(corpus);
    pairs.sort_unstable();
    let mut bigrams: Vec<(String, u32)> = Vec::new();
    for p in pairs {
        match bigrams.last_mut() {
            Some((last, n)) if *last == p => *n += 1,
            _ => bigrams.push((p, 1)),
        }
    }
    Partial {
        index,
        counts,
        bigrams,
        records,
        words,
    }
}

/// Runs the whole job once; returns its checksum and a one-line summary.
fn word_index() -> (u64, String) {
    let vocab = vocabulary();
    let mut parts: Vec<Partial> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn({
                    let vocab = &vocab;
                    move || index_half(t, vocab)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("indexer panicked"))
            .collect()
    });

    // Merge everything into the first part; the other thread's keys and
    // vectors are freed here, on the main thread.
    let mut merged = parts.remove(0);
    for p in parts {
        for (k, mut v) in p.index {
            merged.index.entry(k).or_default().append(&mut v);
        }
        for (k, n) in p.counts {
            *merged.counts.entry(k).or_default() += n;
        }
        let mut bigrams = Vec::with_capacity(merged.bigrams.len() + p.bigrams.len());
        let (mut a, mut b) = (
            merged.bigrams.into_iter().peekable(),
            p.bigrams.into_iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    let (k, n) = a.next().expect("peeked");
                    (k, n + b.next().expect("peeked").1)
                }
                (Some(x), Some(y)) => if x.0 < y.0 { a.next() } else { b.next() }.expect("peeked"),
                (Some(_), None) => a.next().expect("peeked"),
                (None, Some(_)) => b.next().expect("peeked"),
                (None, None) => break,
            };
            bigrams.push(next);
        }
        merged.bigrams = bigrams;
        merged.records.extend(p.records);
        merged.words += p.words;
    }

    // Sorted vocabulary (owned copies, as an API returning it would).
    let mut sorted: Vec<String> = merged.index.keys().cloned().collect();
    sorted.sort_unstable();
    let mut top: Vec<(&String, u64)> = merged.counts.iter().map(|(k, &n)| (k, n)).collect();
    top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut top_pairs: Vec<&(String, u32)> = merged.bigrams.iter().collect();
    top_pairs.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    // JSON-like report.
    let mut report = String::new();
    let _ = write!(
        report,
        "{{\"words\":{},\"unique\":{},\"bigrams\":{},\"top\":[",
        merged.words,
        sorted.len(),
        merged.bigrams.len()
    );
    for (i, (w, n)) in top.iter().take(100).enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(report, "{sep}{{\"word\":\"{w}\",\"count\":{n}}}");
    }
    report.push_str("],\"top_bigrams\":[");
    for (i, (p, n)) in top_pairs.iter().take(100).enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(report, "{sep}{{\"pair\":\"{p}\",\"count\":{n}}}");
    }
    report.push_str("],\"index\":{");
    for (i, w) in sorted.iter().enumerate() {
        let positions = &merged.index[w];
        let first: Vec<String> = positions.iter().take(3).map(u32::to_string).collect();
        let sep = if i == 0 { "" } else { "," };
        let entry = format!(
            "{sep}\"{w}\":{{\"n\":{},\"first\":[{}]}}",
            positions.len(),
            first.join(",")
        );
        report.push_str(&entry);
    }
    report.push_str("}}");

    let mut records = merged.records.join("\n");
    records.push('\n');

    let mut checksum = fnv1a(0, report.as_bytes());
    checksum = fnv1a(checksum, records.as_bytes());
    for (w, n) in &merged.counts {
        checksum = fnv1a(checksum, w.as_bytes()) ^ n;
    }
    let summary = format!(
        "{} words, {} distinct, {} distinct bigrams, most frequent {:?} x {}, report {}, records {}",
        fmt_count(merged.words),
        fmt_count(sorted.len() as u64),
        fmt_count(merged.bigrams.len() as u64),
        top[0].0,
        fmt_count(top[0].1),
        fmt_bytes(report.len() as u64),
        fmt_bytes(records.len() as u64),
    );
    (checksum, summary)
}

// ---------------------------------------------------------------------------
// Child and parent
// ---------------------------------------------------------------------------

/// One job on the allocator the switch was told to use; prints the
/// checksum, the summary, the RSS once everything is freed and after
/// handing free memory back, and (on mapalloc) the stats.
fn child() {
    let (checksum, summary) = word_index();
    let end = proc::rss_kib();
    let on_mapalloc = switch::active() == Choice::MapAlloc;
    let stats = on_mapalloc.then(mapalloc::stats);
    if on_mapalloc {
        mapalloc::collect();
    } else {
        // SAFETY: malloc_trim only releases free memory held by glibc
        // malloc; it is safe to call at any time.
        unsafe { libc::malloc_trim(0) };
    }
    println!("checksum={checksum:016x}");
    println!("SUMMARY {summary}");
    println!("RSS {end} {}", proc::rss_kib());
    if let Some(stats) = stats {
        for line in format!("{stats:#?}").lines() {
            println!("STATS {line}");
        }
    }
}

fn tagged<'a>(stdout: &'a str, tag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    stdout
        .lines()
        .filter_map(move |l| l.strip_prefix(tag)?.strip_prefix(' '))
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    if switch::requested().is_some() {
        child();
        return;
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; timings are meaningless. Use `cargo run --release --example compare`."
        );
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "mapalloc example: word index over a synthetic corpus ({} words, {THREADS} threads)",
        fmt_count(WORDS_PER_THREAD as u64 * u64::from(THREADS))
    );
    println!("reproduce with: cargo run --release --example compare");
    println!(
        "{cpus} CPUs, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    println!(
        "each allocator runs the job {RUNS} times, one process each, alternating (MAPALLOC_BENCH_ALLOC=mapalloc|system)"
    );
    println!();

    let exe = std::env::current_exe().expect("current_exe");
    let allocs = [(Choice::MapAlloc, "mapalloc"), (Choice::System, "glibc")];
    let mut runs: Vec<Vec<proc::Run>> = vec![Vec::new(), Vec::new()];
    for round in 0..RUNS {
        for (i, (choice, label)) in allocs.iter().enumerate() {
            eprint!("round {}/{RUNS} on {label:<9}... ", round + 1);
            let mut cmd = Command::new(&exe);
            cmd.env(switch::ENV_VAR, choice.env_value())
                .env_remove("MAPALLOC_HARDENED")
                .env_remove("LD_PRELOAD");
            match proc::run(&mut cmd, Duration::from_secs(600)) {
                Ok(r) if r.ok() => {
                    eprintln!("{}", fmt_ns(r.wall_ns));
                    runs[i].push(r);
                }
                Ok(r) => {
                    eprintln!("FAILED ({})\n{}", r.exit, r.stderr);
                    std::process::exit(1);
                }
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    std::process::exit(1);
                }
            }
        }
    }

    let kib = |k: u64| fmt_bytes(k * 1024);
    let key = |r: &proc::Run| {
        r.stdout
            .lines()
            .find(|l| l.starts_with("checksum="))
            .unwrap_or("")
            .to_string()
    };
    let rss = |r: &proc::Run| -> (u64, u64) {
        let mut it = tagged(&r.stdout, "RSS")
            .next()
            .unwrap_or("0 0")
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    };
    let mut medians = Vec::new();
    let rows: Vec<Vec<String>> = allocs
        .iter()
        .zip(&runs)
        .map(|((_, label), rs)| {
            let mut t: Vec<u64> = rs.iter().map(|r| r.wall_ns).collect();
            let m = median(&mut t);
            medians.push(m);
            let mut peak: Vec<u64> = rs.iter().map(|r| r.max_rss_kib).collect();
            let (end, released) = rss(&rs[0]);
            vec![
                label.to_string(),
                fmt_ns(m),
                fmt_ns(t[0]),
                kib(median(&mut peak)),
                kib(end),
                kib(released),
                key(&rs[0]).trim_start_matches("checksum=").to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "allocator",
                "median",
                "best",
                "peak RSS",
                "RSS after free",
                "after collect/trim",
                "checksum",
            ],
            &rows,
        )
    );
    println!();
    println!(
        "mapalloc / glibc: {:.2} (median time over median time; below 1 mapalloc is faster)",
        medians[0] as f64 / medians[1].max(1) as f64
    );

    let want = key(&runs[0][0]);
    if runs.iter().flatten().any(|r| key(r) != want) {
        eprintln!("\nERROR: the allocators computed different results:");
        for ((_, label), rs) in allocs.iter().zip(&runs) {
            for r in rs {
                eprintln!("  {label}: {}", key(r));
            }
        }
        std::process::exit(1);
    }
    println!("results identical on both allocators ({want}):");
    for l in tagged(&runs[0][0].stdout, "SUMMARY") {
        println!("  {l}");
    }
    println!();
    println!(
        "peak RSS: ru_maxrss of the child; RSS after free: once the job has dropped everything;"
    );
    println!("after collect/trim: after then calling mapalloc::collect() / malloc_trim(0)");

    println!();
    println!(
        "mapalloc::stats() at the end of a MapAlloc run (everything freed, before collect()):"
    );
    for l in tagged(&runs[0][0].stdout, "STATS") {
        println!("{l}");
    }
}
