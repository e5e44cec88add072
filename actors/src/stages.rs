//! The stage traits the pipeline needs. They are blocking: the pipeline runs them off the async
//! runtime's worker threads, so a model run never blocks other actors.

use std::sync::Arc;

use crate::cancel::CancelToken;
use crate::messages::{Hit, Memory, Retrieved, SearchRequest};

/// What a stage runs next after one of its calls hung (was abandoned past the unresponsive limit).
/// The hung call's thread cannot be killed and may hold the instance's lock (a model session runs
/// one call at a time), so calling the same instance again would only wait behind it.
pub enum AfterHang<T: ?Sized> {
    /// A new instance (a fresh model session); the hung call keeps the old one.
    Fresh(Arc<T>),
    /// Calls do not serialise on anything a hung call holds: keep this instance.
    Reuse,
    /// No fresh instance: the stage stays down until the hung call returns.
    Wait,
}

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
    /// Called (off the async runtime) after a call hung. Blocking; may load a model.
    fn after_hang(&self) -> Result<AfterHang<dyn Embedder>, StageError> {
        Ok(AfterHang::Wait)
    }
    /// Calls it serves at the same time without one waiting on another's session (its session
    /// count). The pipeline never runs more at once: a call queued on a busy session's lock gains
    /// nothing, and if that call hangs, the one behind it is stuck too.
    fn parallel_runs(&self) -> usize {
        1
    }
}

/// Searches the memory store (hybrid, vector or BM25), confined to the request's namespace.
pub trait Retriever: Send + Sync + 'static {
    fn search(&self, request: &SearchRequest) -> Result<Vec<Hit>, StageError>;

    /// The hits and what else the search applied (a time window read from the query). The
    /// default knows only the hits.
    fn retrieve(&self, request: &SearchRequest) -> Result<Retrieved, StageError> {
        Ok(Retrieved {
            hits: self.search(request)?,
            time_window: None,
        })
    }

    /// Called (off the async runtime) after a call hung. Blocking.
    fn after_hang(&self) -> Result<AfterHang<dyn Retriever>, StageError> {
        Ok(AfterHang::Wait)
    }
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
    /// Called (off the async runtime) after a call hung. Blocking; may load a model.
    fn after_hang(&self) -> Result<AfterHang<dyn Reranker>, StageError> {
        Ok(AfterHang::Wait)
    }
}

/// Stores memories durably (the store directly, or a durable bus such as JetStream).
pub trait MemoryWriter: Send + Sync + 'static {
    /// Returns once the batch is durable. Re-writing the same id is idempotent.
    fn write(&self, batch: &[Memory]) -> Result<(), StageError>;
    /// The query embedding of a final that will be queued as memory `id` of `namespace` with
    /// exactly `text`, offered before it is queued: a writer that embeds memories with the same
    /// model may store this vector instead of embedding the same text again. Called on the async
    /// runtime: must not block. Default: ignored (the memory is embedded as usual).
    fn offer_embedding(&self, _namespace: &str, _id: &str, _text: &str, _vector: &[f32]) {}
    /// Called (off the async runtime) after a write hung. Blocking. Memories wait in the queue
    /// while the writer is down; nothing is lost.
    fn after_hang(&self) -> Result<AfterHang<dyn MemoryWriter>, StageError> {
        Ok(AfterHang::Wait)
    }
}
