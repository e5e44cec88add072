//! ONNX Runtime model engines: runtime loading, sentence embedder, cross-encoder.

pub mod cross_encoder;
pub mod embedder;
pub mod error;
mod model_dir;
pub mod query_embedder;
pub mod runtime;
mod session;

pub use cross_encoder::CrossEncoder;
pub use embedder::SentenceEmbedder;
pub use error::ModelError;
pub use query_embedder::QueryEmbedder;

use serde::Deserialize;

/// `[runtime]`: how ONNX Runtime is loaded and how sessions run.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Path of libonnxruntime.so (env `ORT_DYLIB_PATH` overrides). A relative path is looked up in
    /// the current directory, then in the crate root.
    pub library: String,
    /// Intra-op threads per session (1 runs on the calling thread).
    pub threads: usize,
    /// Execution providers in preference order, e.g. ["cpu"] or ["xnnpack", "cpu"]. Names match the
    /// loaded runtime's providers case-insensitively, with or without the `ExecutionProvider`
    /// suffix (`cuda` = `CUDAExecutionProvider`); CPU is always the last resort.
    pub execution_providers: Vec<String>,
    /// Fall back to CPU (logged) when a named provider is missing, instead of failing.
    pub allow_cpu_fallback: bool,
    /// Embedding sessions working side by side on bulk work (ingest, reindex, eval), each with
    /// `threads` threads; 0: one per core. Live serving is not affected.
    pub bulk_sessions: usize,
    /// Embedding sessions for live queries: texts that queued for the embedder together are
    /// split over them, side by side, one thread each (default 2; 1: one session).
    pub query_sessions: usize,
    /// Fewest texts a query session is given when a micro-batch is split: a batch runs on as many
    /// sessions as give each at least this many (at least one). Batched texts cost less CPU each
    /// (about a quarter less at 8 than one by one), so small batches stay whole and only a backlog
    /// spreads over the cores (default 4; 1 splits every batch of two or more).
    pub query_split_min: usize,
    /// Most glibc malloc arenas in the `voicerag` process (0: glibc's default, 8 per core;
    /// glibc's `MALLOC_ARENA_MAX`, when set, wins). Few arenas keep freed memory reusable by every
    /// thread instead of held per arena (default 2).
    pub malloc_arenas: usize,
    /// Threads of tokio's blocking pool (stage calls, store writes and stats), all started when
    /// `serve` or a load bench starts and kept, so the thread count stays flat; a task finding all
    /// busy waits. Must exceed what hung calls can hold: 4 x `pipeline.restart.max_abandoned_calls`
    /// plus `pipeline.search_parallel` plus `pipeline.embed_parallel` plus 3 (default 32).
    pub blocking_threads: usize,
    /// ONNX Runtime's CPU memory arena per session. It grows in steps (powers of two) to the
    /// largest batch seen and never gives memory back; off, tensors come from malloc and are
    /// returned after each run (default true).
    pub cpu_arena: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            library: "runtime/libonnxruntime.so".into(),
            threads: 1,
            execution_providers: vec!["cpu".into()],
            allow_cpu_fallback: false,
            bulk_sessions: 0,
            query_sessions: 2,
            query_split_min: 4,
            malloc_arenas: 2,
            blocking_threads: 32,
            cpu_arena: true,
        }
    }
}

/// `[embedder]`: the sentence embedding model.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// HF-layout model directory (model.onnx, tokenizer.json, config.json).
    pub model_dir: String,
    /// Max tokens per input (truncation), all-MiniLM-L6-v2's own is 256.
    pub max_length: usize,
    /// Max texts per ONNX run when embedding in bulk.
    pub batch_size: usize,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        Self {
            model_dir: "models/all-MiniLM-L6-v2".into(),
            max_length: 256,
            batch_size: 32,
        }
    }
}

/// `[reranker]`: the cross-encoder; off unless `model_dir` is set.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RerankerConfig {
    /// HF-layout cross-encoder directory; empty means no reranker ("off").
    pub model_dir: String,
    /// Max tokens per (query, passage) pair; the passage is truncated, never the query.
    pub max_length: usize,
    /// Max pairs per ONNX run.
    pub batch_size: usize,
}

impl Default for RerankerConfig {
    fn default() -> Self {
        Self {
            model_dir: String::new(),
            max_length: 256,
            batch_size: 16,
        }
    }
}

/// Checks that an HF model directory has a usable model.onnx, tokenizer.json and config.json
/// (what `voicerag config check` runs, without loading the model).
pub fn check_model_dir(dir: &str, setting: &'static str) -> Result<(), ModelError> {
    model_dir::ModelDir::open(dir, setting).map(|_| ())
}
