//! One file per command: ingest, query, forget, reindex, serve, eval, config check.

pub mod config;
pub mod eval;
pub mod forget;
pub mod ingest;
pub mod query;
pub mod reindex;
pub mod serve;

pub use config::config_check;
pub use eval::eval;
pub use forget::forget;
pub use ingest::ingest;
pub use query::query;
pub use reindex::reindex;
pub use serve::serve;

/// Lines embedded and committed together.
const INGEST_BATCH: usize = 256;
