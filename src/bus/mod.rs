//! The NATS edge: transcripts in, context out, memories through JetStream.
//!
//! - [`wire`]: the JSON payloads and [`wire::context_json`] (shared with `voicerag query --json`).
//! - [`subjects`]: subject names under the configurable prefix.
//! - [`config`]: the `[nats]` section and connection options.
//! - [`writer`]: [`JetStreamWriter`], the pipeline's `MemoryWriter` in bus mode.
//! - [`memory_consumer`]: the memory stream and the durable pull consumers that feed a
//!   [`MemorySink`]: one for the whole stream, or one per owned partition when sharded
//!   (`nats.partition_count`, README "Scale-out").
//! - [`context_service`]: [`ContextService`] for the pipeline's `PipelineHandle`.
//! - [`service`]: [`serve`], [`BusConnection`], [`RunningBus`]: the connection lifecycle and the
//!   graceful stop.
//! - `state`: `BusState`, what every task of one running bus shares, and the work in flight;
//!   `receive`: receiving on a subscription until the graceful stop.
//! - One handler per subject: `transcripts` (`voice.transcript`), `contexts` (results published on
//!   `voice.context`), `queries` (`voice.query`), `health` (`voice.health` and the heartbeat).
//! - `forget` (`voice.forget`): forgetting everywhere, a marker in the memory stream that every
//!   replica applies in stream order, and the purge of the stream.
//! - [`stats`]: [`BusStats`], and the publisher of `voice.errors` that counts into them.
//! - [`server`]: starts a local `nats-server` (tests, benchmarks, demos).
//!
//! The bus depends on the engine only through [`ContextService`] and on the store only through
//! [`MemorySink`], so it is tested against a real NATS server with fakes.

pub mod config;
pub mod context_service;
mod contexts;
mod forget;
mod health;
pub mod memory_consumer;
mod queries;
mod receive;
pub mod server;
pub mod service;
mod state;
pub mod stats;
pub mod subjects;
mod transcripts;
pub mod wire;
pub mod writer;

use futures::stream::BoxStream;
use std::future::Future;
use voicerag_actors::{ContextResult, Memory, Transcript};

pub use config::NatsConfig;
pub use forget::request_forget;
pub use service::{BusConnection, RunningBus, serve, serve_connected};
pub use stats::BusStats;
pub use subjects::Subjects;
pub use wire::{ContextQuery, Forget, ForgetScope, context_json};
pub use writer::JetStreamWriter;

/// A failure of the bus itself (not of one message: those go to `voice.errors`).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("nats-server: {0}")]
    Server(String),
    /// The graceful stop finished, but the engine did not: memories it held may not be durable.
    #[error("graceful stop incomplete: {0}")]
    Unflushed(String),
}

/// The engine failed a request (it is down, overloaded, or shutting down).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

/// What the bus needs from the context engine (the pipeline in production, a fake in tests).
pub trait ContextService: Send + Sync + 'static {
    /// Queues a transcript. Every final gets exactly one result on [`ContextService::results`]
    /// (partials may get one, or be dropped): the graceful stop waits for the finals'.
    fn submit(
        &self,
        transcript: Transcript,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Every result of a submitted transcript, in completion order. Called once per serve.
    fn results(&self) -> BoxStream<'static, ContextResult>;
    /// One explicit query.
    fn query(
        &self,
        query: ContextQuery,
    ) -> impl Future<Output = Result<ContextResult, EngineError>> + Send;
    /// The engine's part of the health report: stages up or degraded, restarts, model names,
    /// latency percentiles.
    fn health(&self) -> serde_json::Value;
    /// Serves what it has queued, flushes its memories (through the [`JetStreamWriter`] while the
    /// connection is still open) and ends the results stream. Called once by the graceful stop,
    /// after intake stopped.
    fn shutdown(&self) -> impl Future<Output = Result<(), EngineError>> + Send;
}

/// The store could not commit a batch: the bus does not ack it, so JetStream redelivers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// A memory of a batch that can never be stored (over a limit, empty text, ...): the bus reports it
/// on `voice.errors.<namespace>` and terminates it instead of acking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its index in the batch.
    pub index: usize,
    pub reason: String,
}

/// Where consumed memories go (the memory store in production).
pub trait MemorySink: Send + Sync + 'static {
    /// Commits the batch durably and returns after the commit; re-adding an id is a no-op.
    /// Returns the memories it refused (nothing of them was written); the rest are committed.
    /// Blocking: the bus calls it on a blocking thread.
    fn store(&self, batch: &[Memory]) -> Result<Vec<Refused>, SinkError>;
    /// Forgets what `forget` names (a forget marker from the stream), durably, and returns how
    /// many memories it removed; forgetting what is not there removes 0. Blocking.
    fn forget(&self, forget: &Forget) -> Result<u64, SinkError>;
    /// Store figures for health reports (size, ...).
    fn stats(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}
