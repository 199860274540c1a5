//! mapalloc-bench: one harness for every benchmark of mapalloc. See
//! `benches/README.md`.
//!
//! - [`catalog`]: every workload, written once (C/C++ in `benches/c/`,
//!   Rust in [`workloads`]);
//! - [`peers`]: the columns (mapalloc, hardened, glibc, jemalloc,
//!   tcmalloc, mimalloc, mimalloc secure) and the probe that checks them;
//! - [`setup`]: building and finding the libraries and programs;
//! - [`runner`]: the round-robin measurement loop and its checks;
//! - [`proc`]: one measured process (`wait4`);
//! - [`report`]: tables, ratios, targets, CSV;
//! - [`driver`]: the command line;
//! - [`switch`]: the per-process global allocator of the Rust workloads;
//! - [`pairs`]: the loop that `callgrind.sh` counts;
//! - [`rng`], [`fmt`]: the generator and the formatting.

pub mod catalog;
pub mod driver;
pub mod fmt;
pub mod pairs;
pub mod peers;
pub mod proc;
pub mod report;
pub mod rng;
pub mod runner;
pub mod setup;
pub mod switch;
pub mod workloads;

pub use switch::Switch;
