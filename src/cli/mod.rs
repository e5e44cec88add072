//! The `voicerag` command line: the edge where `anyhow` errors live.

pub mod bench_models;
pub mod bench_nats;
pub mod bench_store;
