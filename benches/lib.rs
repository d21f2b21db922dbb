//! Shared corpus for the benches.
