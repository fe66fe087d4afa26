//! Criterion micro-benchmarks for `aof-engine`; the code is in `benches/`, see `README.md`.
//!
//! This library is empty: Cargo needs one target besides the benches.
