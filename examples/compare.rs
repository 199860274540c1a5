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
//! The binary's global allocator is `common::Switch` (see
//! `benches/common/mod.rs`): the parent re-executes itself once with
//! `MAPALLOC_BENCH_ALLOC=mapalloc` and once with `MAPALLOC_BENCH_ALLOC=system`,
//! each child runs the job 3 times, and the parent prints the median times,
//! peak RSS, RSS after freeing everything, checks that both children computed
//! the same checksum (exiting with an error if not), and finally prints
//! `mapalloc::stats()` from the MapAlloc child.

#[path = "../benches/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::thread;

use common::{Alloc, Outcome, Rng};

const WORKLOAD: &str = "word-index";
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

/// Runs the whole job once; returns the outcome and a one-line summary.
fn word_index() -> (Outcome, String) {
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

    let mut checksum = common::fnv1a(0, report.as_bytes());
    checksum = common::fnv1a(checksum, records.as_bytes());
    for (w, n) in &merged.counts {
        checksum = common::fnv1a(checksum, w.as_bytes()) ^ n;
    }
    let summary = format!(
        "{} words, {} distinct, {} distinct bigrams, most frequent {:?} x {}, report {}, records {}",
        common::fmt_count(merged.words),
        common::fmt_count(sorted.len() as u64),
        common::fmt_count(merged.bigrams.len() as u64),
        top[0].0,
        common::fmt_count(top[0].1),
        common::fmt_bytes(report.len() as u64),
        common::fmt_bytes(records.len() as u64),
    );
    (
        Outcome {
            ops: merged.words,
            checksum,
        },
        summary,
    )
}

// ---------------------------------------------------------------------------
// Child and parent
// ---------------------------------------------------------------------------

fn child(alloc: Alloc, args: &[String]) {
    if args.first().map(String::as_str) != Some(WORKLOAD) {
        eprintln!("error: expected workload `{WORKLOAD}`, got {args:?}");
        std::process::exit(2);
    }
    let mut summary = String::new();
    let (times, out) = common::measure(RUNS, || {
        let (out, s) = word_index();
        summary = s;
        out
    });
    // Everything the job allocated has been freed by now (except `summary`).
    let stats = (alloc == Alloc::MapAlloc).then(mapalloc::stats);
    common::Measurement::finish(WORKLOAD, times, out).emit();
    println!("SUMMARY {summary}");
    if let Some(stats) = stats {
        for line in common::stats_lines(&stats) {
            println!("STATS {line}");
        }
        for line in format!("{stats:#?}").lines() {
            println!("STATS {line}");
        }
    }
}

fn main() {
    if let Some((alloc, args)) = common::child_mode() {
        child(alloc, &args);
        return;
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; timings are meaningless. Use `cargo run --release --example compare`."
        );
    }
    println!(
        "mapalloc example: word index over a synthetic corpus ({} words, {THREADS} threads)",
        common::fmt_count(WORDS_PER_THREAD as u64 * u64::from(THREADS))
    );
    println!("reproduce with: cargo run --release --example compare");
    println!("{}", common::machine_line());
    println!(
        "each allocator runs the job {RUNS} times in its own process (MAPALLOC_BENCH_ALLOC=mapalloc|system)"
    );
    println!();

    let mut outs = Vec::new();
    for alloc in Alloc::ALL {
        eprint!("running on {:<9}... ", alloc.label());
        match common::run_child(alloc, &[WORKLOAD]) {
            Ok(o) => {
                eprintln!("median {}", common::fmt_ns(o.result.median_ns()));
                outs.push(o);
            }
            Err(e) => {
                eprintln!("FAILED\n{e}");
                std::process::exit(1);
            }
        }
    }
    let (m, s) = (&outs[0].result, &outs[1].result);

    let kib = |k: u64| common::fmt_bytes(k * 1024);
    let rows: Vec<Vec<String>> = Alloc::ALL
        .iter()
        .zip(&outs)
        .map(|(a, o)| {
            let r = &o.result;
            vec![
                a.label().to_string(),
                common::fmt_ns(r.median_ns()),
                common::fmt_ns(r.best_ns()),
                common::fmt_rate(r.ops_per_sec()).replace("/s", " words/s"),
                kib(r.peak_rss_kib),
                kib(r.end_rss_kib),
                kib(r.trimmed_rss_kib),
                format!("{:016x}", r.checksum),
            ]
        })
        .collect();
    common::print_table(
        &[
            "allocator",
            "median",
            "best",
            "throughput",
            "peak RSS",
            "RSS after free",
            "after collect/trim",
            "checksum",
        ],
        &rows,
    );
    println!();
    println!(
        "mapalloc vs glibc: {} (glibc median / mapalloc median)",
        common::fmt_ratio(m.median_ns(), s.median_ns())
    );

    if m.checksum != s.checksum || m.ops != s.ops {
        eprintln!(
            "\nERROR: the two allocators computed different results! mapalloc: {} words, checksum {:016x}; glibc: {} words, checksum {:016x}",
            m.ops, m.checksum, s.ops, s.checksum
        );
        std::process::exit(1);
    }
    println!(
        "results identical on both allocators (checksum {:016x}):",
        m.checksum
    );
    for l in outs[0].tagged("SUMMARY") {
        println!("  {l}");
    }
    println!();
    println!("RSS after free: VmRSS once the job has dropped everything;");
    println!("after collect/trim: VmRSS after then calling mapalloc::collect() / malloc_trim(0)");

    println!();
    println!(
        "mapalloc::stats() at the end of the MapAlloc run (everything freed, before collect()):"
    );
    for l in outs[0].tagged("STATS") {
        println!("{l}");
    }
}
