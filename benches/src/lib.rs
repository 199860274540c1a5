//! Peer benchmarks for mapalloc: the same workloads on mapalloc (default and
//! hardened), glibc malloc, mimalloc and jemalloc, each allocator in its own
//! process. See `bench/README.md`.
//!
//! - [`switch`]: the dispatching global allocator ([`Switch`]) and the list
//!   of allocators ([`Alloc`]);
//! - [`workloads`]: what is measured;
//! - [`harness`]: timing, RSS, the child/parent line protocol, formatting;
//! - [`pairs`]: the loop of the `pairs-*` binaries for `callgrind.sh`;
//! - [`runner`]: the parent and child sides of `cargo bench -p mapalloc-bench`.

pub mod harness;
pub mod pairs;
pub mod runner;
pub mod switch;
pub mod workloads;

pub use switch::{Alloc, Switch};
