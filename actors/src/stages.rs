//! The stage traits the pipeline needs. They are blocking: the pipeline runs them off the async
//! runtime's worker threads, so a model run never blocks other actors.

use crate::cancel::CancelToken;
use crate::messages::{Hit, Memory, SearchRequest};

/// A stage's failure, as the pipeline sees it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct StageError(pub String);

impl StageError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Turns texts into L2-normalised vectors.
pub trait Embedder: Send + Sync + 'static {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StageError>;
}

/// Searches the memory store (hybrid, vector or BM25), confined to the request's namespace.
pub trait Retriever: Send + Sync + 'static {
    fn search(&self, request: &SearchRequest) -> Result<Vec<Hit>, StageError>;
}

/// A cross-encoder that scores (query, passage) pairs.
pub trait Reranker: Send + Sync + 'static {
    /// Token count of each (query, passage) pair as it would be run: what predicts cost.
    fn pair_tokens(&self, query: &str, passages: &[&str]) -> Vec<usize>;
    /// One score per passage, in input order. Must stop early (error) when `cancel` fires.
    fn score(
        &self,
        query: &str,
        passages: &[&str],
        cancel: &CancelToken,
    ) -> Result<Vec<f32>, StageError>;
}

/// Stores memories durably (the store directly, or a durable bus such as JetStream).
pub trait MemoryWriter: Send + Sync + 'static {
    /// Returns once the batch is durable. Re-writing the same id is idempotent.
    fn write(&self, batch: &[Memory]) -> Result<(), StageError>;
}
