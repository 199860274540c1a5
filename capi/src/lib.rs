//! C ABI (placeholder until the C ABI lands).
