//! voicerag: a memory-and-context pipeline for voice agents.
//!
//! - [`models`]: the ONNX Runtime engines (sentence embedder, cross-encoder) on `ort` + `tokenizers`.
//! - [`store`]: the durable hybrid memory (LMDB via `heed`, vectors via `arroy`, BM25 via `tantivy`).
//! - [`ingest`]: chunking and embedding of memories before they are stored.
//! - [`fusion`]: reciprocal-rank fusion of the vector and BM25 rankings.
//! - [`engines`]: the real stages behind the `voicerag-actors` traits, and
//!   [`engines::Engines::start_pipeline`], the in-process entry point.
//! - [`bus`]: the NATS edge.
//! - [`bench`]: the benchmarks behind `voicerag bench` (models, store, pipeline, NATS load).
//! - [`final_embeddings`]: finals' query embeddings handed to the memory writer (embedded once).
//! - [`eval`]: retrieval quality of a memory set (`voicerag eval`).
//! - [`time_expr`]: English time expressions in a query ("last week") read as a time window.
//! - [`config`]: one configuration, one precedence rule (flag, then environment, then file, then default).

pub mod bench;
pub mod bus;
pub mod config;
pub mod engines;
pub mod eval;
pub mod final_embeddings;
pub mod fusion;
pub mod ingest;
pub mod models;
pub mod store;
pub mod time_expr;

pub use voicerag_actors as actors;
