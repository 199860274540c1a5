//! Every workload of the harness, written once: the C and C++ programs of
//! `benches/c/` (run under `LD_PRELOAD` of each allocator, like the
//! private suite runs its programs) and the in-process Rust workloads of
//! [`crate::workloads`]. `benches/README.md` has the same list with the
//! suite pattern each one stands for.

use crate::workloads::{self, Outcome, Params};

/// The language of a program workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Built with `gcc -O2 -pthread`.
    C,
    /// Built with `g++ -O2 -pthread`.
    Cxx,
}

/// How a workload runs.
#[derive(Clone, Copy)]
pub enum Kind {
    /// A program of `benches/c/`, run as `PROGRAM SIZE [THREADS] EXTRA...`.
    Program {
        /// Its source file in `benches/c/` (the program is named after it,
        /// without the extension).
        source: &'static str,
        /// C or C++.
        lang: Lang,
        /// Arguments after SIZE and THREADS.
        extra: &'static [&'static str],
        /// Libraries to link (`-lm`).
        libs: &'static [&'static str],
    },
    /// A Rust workload, run in a child of the harness binary.
    Rust(fn(Params) -> Outcome),
}

/// One workload.
pub struct Workload {
    /// Name on the command line, in the tables and in the CSV files.
    pub name: &'static str,
    /// What it does, in one line.
    pub about: &'static str,
    /// How it runs.
    pub kind: Kind,
    /// What SIZE counts.
    pub unit: &'static str,
    /// SIZE of a real run (about 0.3-2 s on glibc on one core of the
    /// 2-core development machine).
    pub size: u64,
    /// SIZE under `--quick` (a smoke run: tens of milliseconds).
    pub quick: u64,
    /// Whether it takes a thread count (it then runs at each `--threads`).
    pub threads: bool,
}

impl Workload {
    /// `"C"`, `"C++"` or `"Rust"`.
    pub fn language(&self) -> &'static str {
        match self.kind {
            Kind::Program { lang: Lang::C, .. } => "C",
            Kind::Program {
                lang: Lang::Cxx, ..
            } => "C++",
            Kind::Rust(_) => "Rust",
        }
    }
}

const fn c(source: &'static str, extra: &'static [&'static str]) -> Kind {
    Kind::Program {
        source,
        lang: Lang::C,
        extra,
        libs: &[],
    }
}

const fn larson(extra: &'static [&'static str]) -> Kind {
    Kind::Program {
        source: "larson.cc",
        lang: Lang::Cxx,
        extra,
        libs: &[],
    }
}

/// Every workload, in the order they run and print.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "bignum",
        about: "arbitrary-precision calculator: every add/mul/sub/decimal makes new 16-80 B numbers and frees its operands",
        kind: c("bignum.c", &[]),
        unit: "operations",
        size: 8_000_000,
        quick: 200_000,
        threads: false,
    },
    Workload {
        name: "minimiser",
        about: "logic minimisation (Quine-McCluskey): cubes, list nodes, hash chains and arrays of mixed small sizes",
        kind: c("minimiser.c", &[]),
        unit: "functions",
        size: 600,
        quick: 10,
        threads: false,
    },
    Workload {
        name: "nbody",
        about: "Barnes-Hut simulation of 2000 bodies: one octree of malloc'ed cells per step, mostly arithmetic",
        kind: Kind::Program {
            source: "nbody.c",
            lang: Lang::C,
            extra: &[],
            libs: &["-lm"],
        },
        unit: "steps",
        size: 60,
        quick: 3,
        threads: false,
    },
    Workload {
        name: "larson",
        about: "server simulation in C++: lanes of short-lived threads replace objects of 16-1024 B, 1 in 5 in another lane; unsized delete",
        kind: larson(&["unsized"]),
        unit: "replacements per thread",
        size: 8_000_000,
        quick: 100_000,
        threads: true,
    },
    Workload {
        name: "larson-sized",
        about: "the same with C++14 sized operator delete(void *, size_t)",
        kind: larson(&["sized"]),
        unit: "replacements per thread",
        size: 8_000_000,
        quick: 100_000,
        threads: true,
    },
    Workload {
        name: "handover",
        about: "random alloc / free / hand a block to the next thread, 8-512 B; working set grows and shrinks in phases",
        kind: c("handover.c", &[]),
        unit: "steps per thread",
        size: 12_000_000,
        quick: 300_000,
        threads: true,
    },
    Workload {
        name: "xsizes",
        about: "threads swap blocks of 16 B-16 KiB into random slots of a shared array and free what they take out",
        kind: c("xsizes.c", &[]),
        unit: "steps per thread",
        size: 2_500_000,
        quick: 50_000,
        threads: true,
    },
    Workload {
        name: "live",
        about: "each thread keeps 100,000 live blocks of 16 B-4 KiB and replaces random ones",
        kind: c("live.c", &[]),
        unit: "replacements per thread",
        size: 1_000_000,
        quick: 50_000,
        threads: true,
    },
    Workload {
        name: "prodcons",
        about: "producer/consumer pairs through a ring: the consumer frees every block the producer allocates",
        kind: c("prodcons.c", &[]),
        unit: "blocks per producer",
        size: 8_000_000,
        quick: 200_000,
        threads: true,
    },
    Workload {
        name: "false-share",
        about: "threads free an 8-byte block the main thread allocated next to the others', then allocate, write 500 times, free",
        kind: c("cacheline.c", &["freed"]),
        unit: "objects per thread",
        size: 2_000_000,
        quick: 50_000,
        threads: true,
    },
    Workload {
        name: "line-thrash",
        about: "threads allocate 8-byte objects, write each 500 times, free: objects of two threads must not share a cache line",
        kind: c("cacheline.c", &["active"]),
        unit: "objects per thread",
        size: 2_000_000,
        quick: 50_000,
        threads: true,
    },
    Workload {
        name: "tight",
        about: "each thread its own malloc / one write / free loop over 8-256 B",
        kind: c("tight.c", &[]),
        unit: "pairs per thread",
        size: 60_000_000,
        quick: 1_000_000,
        threads: true,
    },
    Workload {
        name: "large-zeroed",
        about: "8 slots, each step a new calloc'ed 5-25 MiB buffer in a random one, one write per 4 KiB page",
        kind: c("large-zeroed.c", &[]),
        unit: "buffers",
        size: 500,
        quick: 20,
        threads: false,
    },
    Workload {
        name: "thread-churn",
        about: "short-lived threads, THREADS at a time: each callocs a block and frees the one an earlier thread left",
        kind: c("thread-churn.c", &[]),
        unit: "threads in all",
        size: 20_000,
        quick: 500,
        threads: true,
    },
    Workload {
        name: "small-fixed",
        about: "Rust: Box<[u8; 32]> new + drop in a loop through GlobalAlloc (sizes known at free)",
        kind: Kind::Rust(workloads::small_fixed),
        unit: "pairs",
        size: 50_000_000,
        quick: 2_000_000,
        threads: false,
    },
    Workload {
        name: "small-batch",
        about: "Rust: 1000 Vec<u8> of 8-1024 B, freed in shuffled order, repeated",
        kind: Kind::Rust(workloads::small_batch),
        unit: "rounds",
        size: 10_000,
        quick: 300,
        threads: false,
    },
    Workload {
        name: "window",
        about: "Rust: each thread replaces random blocks of its own 512-block window of 16-512 B",
        kind: Kind::Rust(workloads::window),
        unit: "replacements per thread",
        size: 15_000_000,
        quick: 200_000,
        threads: true,
    },
    Workload {
        name: "realloc-growth",
        about: "Rust: Vec<u8> pushed byte by byte to SIZE MiB (twice), then raw realloc doubling 4 KiB -> 4 x SIZE MiB",
        kind: Kind::Rust(workloads::realloc_growth),
        unit: "MiB",
        size: 64,
        quick: 4,
        threads: false,
    },
    Workload {
        name: "fragmentation",
        about: "Rust: SIZE blocks of 16-1024 B, free a random 90%, then 1.2-12 KiB blocks worth 30% of the first phase",
        kind: Kind::Rust(workloads::fragmentation),
        unit: "blocks",
        size: 1_000_000,
        quick: 50_000,
        threads: false,
    },
    Workload {
        name: "btree-strings",
        about: "Rust: BTreeMap<String, String> of SIZE records, edits, a HashMap index of every key, removals, drop",
        kind: Kind::Rust(workloads::btree_strings),
        unit: "records",
        size: 200_000,
        quick: 10_000,
        threads: false,
    },
];

/// Looks a workload up by name.
pub fn find(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// The sources of `benches/c/`, built into the harness so that it can
/// compile them wherever it runs: (file name, text).
pub const SOURCES: &[(&str, &str)] = &[
    ("bench.h", include_str!("../c/bench.h")),
    ("bignum.c", include_str!("../c/bignum.c")),
    ("minimiser.c", include_str!("../c/minimiser.c")),
    ("nbody.c", include_str!("../c/nbody.c")),
    ("larson.cc", include_str!("../c/larson.cc")),
    ("handover.c", include_str!("../c/handover.c")),
    ("xsizes.c", include_str!("../c/xsizes.c")),
    ("live.c", include_str!("../c/live.c")),
    ("prodcons.c", include_str!("../c/prodcons.c")),
    ("cacheline.c", include_str!("../c/cacheline.c")),
    ("tight.c", include_str!("../c/tight.c")),
    ("large-zeroed.c", include_str!("../c/large-zeroed.c")),
    ("thread-churn.c", include_str!("../c/thread-churn.c")),
    ("probe.c", include_str!("../c/probe.c")),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_default_to_the_table_size() {
        // `prog` with no SIZE (by hand) does what the harness runs.
        for w in WORKLOADS {
            let Kind::Program { source, .. } = w.kind else {
                continue;
            };
            let text = SOURCES
                .iter()
                .find(|(f, _)| *f == source)
                .map_or("", |(_, t)| t);
            let default: Option<u64> = text
                .split("arg_u64(argc, argv, 1, ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .and_then(|n| n.parse().ok());
            assert_eq!(default, Some(w.size), "{}: {source}'s default SIZE", w.name);
        }
    }

    #[test]
    fn names_are_unique_and_sources_known() {
        for (i, w) in WORKLOADS.iter().enumerate() {
            assert!(
                WORKLOADS[..i].iter().all(|v| v.name != w.name),
                "{} twice",
                w.name
            );
            assert!(w.quick > 0 && w.quick <= w.size, "{}: sizes", w.name);
            if let Kind::Program { source, .. } = w.kind {
                assert!(
                    SOURCES.iter().any(|(f, _)| *f == source),
                    "{}: {source} is not in SOURCES",
                    w.name
                );
            }
        }
    }
}
