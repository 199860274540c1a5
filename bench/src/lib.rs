//! Peer benchmarks (placeholder).
