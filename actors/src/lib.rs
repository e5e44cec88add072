//! The supervised pipeline of voicerag.
//!
//! ASR transcripts stream in; for each final one a [`ContextResult`] leaves by its deadline
//! (`received_at + budget`), whatever the stages do. This crate defines the stage traits
//! ([`Embedder`], [`Retriever`], [`Reranker`], [`MemoryWriter`]) and knows nothing of ONNX or LMDB:
//! the `voicerag` crate implements the traits with the real engines, and tests put fakes in their
//! place.
//!
//! - Stages run as `ractor` actors, their blocking calls on tokio's blocking pool, under a
//!   supervisor that restarts a stage that panics or hangs (with backoff, up to a limit per window)
//!   and otherwise leaves it down while the pipeline runs degraded: embedder down gives BM25-only
//!   results, reranker down hybrid order, retriever down no hits; results, logs and
//!   [`PipelineHandle::health`] say so.
//! - The coordinator owns each request and its deadline. Requests waiting for the embedder at the
//!   same moment share one run (finals and queries before partials). The reranker is deadline-aware: it is
//!   timed at start, keeps learning its cost per pair token, and reranks only the top candidates
//!   that fit in the time left.
//! - Final user transcripts and agent replies become memories, written in batches after the result
//!   has left, retried on failure and flushed by [`PipelineHandle::shutdown`].
//!
//! # Modules
//!
//! - [`pipeline`]: [`Pipeline::start`], [`PipelineHandle`], [`Stages`]; [`stages`]: the stage traits;
//!   [`messages`]: what flows through; [`config`]: [`PipelineConfig`]; [`error`]: [`PipelineError`].
//! - `coordinator`: owns every transcript from the queue to its result; `request`: serving one
//!   request by its deadline; `embed_batch`: micro-batching of embeddings (finals and queries
//!   first); `speculation`: what a partial's early retrieval leaves its final;
//!   `state`: `PipelineState`, what the coordinator, the request tasks and
//!   the handle share.
//! - [`rerank`]: the deadline-aware cost model; [`results`]: the result stream; [`health`]:
//!   counters and stage health; [`cancel`]: [`CancelToken`].
//! - `supervisor`: the supervisor actor; `restart`: restart tracking (backoff, the limit per
//!   window); `registry`: the stage registry, each stage's slot; `stage_actor`: the actor that runs a
//!   stage; `abandoned`: hung calls given up on, counted until their threads return; `engines`:
//!   each stage's current engine instance, renewed after a hang; `writer`: the memory writer actor.
//!
//! # What results say
//!
//! `degraded` is `None` or a comma-separated list of: `shed` (overloaded, answered at once),
//! `embedder down|failed|timeout` (BM25-only search), `retriever down|failed|timeout` (no hits),
//! `reranker down` (hybrid order), `internal` (a bug in the pipeline, logged). `rerank` is `Off` (no
//! reranker), `Full`, `Partial(n)`, `Skipped("budget"|"timeout"|"busy"|"down"|"no candidates"|"partial"|
//! "shed"|"empty")` or `Failed(error)`; skipped and failed results keep the hybrid order.
//! "timeout": the run began and was still going at the deadline; "busy": it never began, waiting
//! behind other reranks.
//!
//! # Timing
//!
//! A request's deadline is `received_at + budget_ms`. Stages are awaited until `deadline_guard_ms`
//! before it (the embedder until `search_reserve_ms` before that, leaving time for a BM25-only
//! search). The pipeline reads time through tokio, so tests can run it on a paused clock.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use futures::StreamExt;
//! use voicerag_actors::*;
//!
//! struct Embed;
//! impl Embedder for Embed {
//!     fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StageError> {
//!         Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
//!     }
//! }
//! struct Search;
//! impl Retriever for Search {
//!     fn search(&self, _: &SearchRequest) -> Result<Vec<Hit>, StageError> {
//!         Ok(Vec::new())
//!     }
//! }
//! struct Store;
//! impl MemoryWriter for Store {
//!     fn write(&self, _: &[Memory]) -> Result<(), StageError> {
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), PipelineError> {
//! let stages = Stages {
//!     embedder: Arc::new(Embed),
//!     retriever: Arc::new(Search),
//!     reranker: None,
//!     writer: Arc::new(Store),
//! };
//! let pipeline = Pipeline::start(stages, PipelineConfig::default()).await?;
//! let mut results = pipeline.results();
//! pipeline.submit(Transcript {
//!     namespace: "user-1".into(),
//!     conversation: "c1".into(),
//!     utterance: "u1".into(),
//!     speaker: "user".into(),
//!     text: "what did I say about my sister?".into(),
//!     is_final: true,
//!     received_at: Instant::now(),
//! })?;
//! let result = results.next().await.expect("one result per final");
//! assert_eq!(result.utterance, "u1");
//! assert_eq!(result.rerank, RerankOutcome::Off);
//! pipeline.shutdown().await?; // writes "c1/u1" as a memory
//! # Ok(()) }
//! ```

mod abandoned;
pub mod cancel;
pub mod config;
mod coordinator;
mod embed_batch;
mod engines;
pub mod error;
pub mod health;
pub mod messages;
pub mod pipeline;
mod registry;
mod request;
pub mod rerank;
mod restart;
pub mod results;
mod speculation;
mod stage_actor;
pub mod stages;
mod state;
mod supervisor;
mod wake_lag;
mod writer;

pub use cancel::CancelToken;
pub use config::{PipelineConfig, RestartPolicy};
pub use error::PipelineError;
pub use health::{Counters, Health, StageHealth, StageState};
pub use messages::*;
pub use pipeline::{Pipeline, PipelineHandle, QueryRequest, Stages};
pub use results::ResultStream;
pub use stages::*;
