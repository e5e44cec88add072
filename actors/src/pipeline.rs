//! The pipeline's API: [`Pipeline::start`] and the [`PipelineHandle`] a voice agent (or the NATS bus,
//! or the CLI) calls.

use ractor::{Actor, ActorRef};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::config::PipelineConfig;
use crate::coordinator::{Control, Coordinator, serve_guarded};
use crate::embed_batch::EmbedQueue;
use crate::error::PipelineError;
use crate::health::{Health, ResultKind, StageState, Stats};
use crate::messages::{
    AgentReply, ContextResult, Memory, SearchFilter, SearchMode, Transcript, memory_id,
};
use crate::registry::Registry;
use crate::request::Request;
use crate::rerank::{RerankCost, calibration_runs};
use crate::results::{ResultHub, ResultStream};
use crate::stages::{Embedder, MemoryWriter, Reranker, Retriever};
use crate::state::{PipelineState, becomes_memory, now, unix_ms};
use crate::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
use crate::wake_lag::WakeLag;
use crate::writer::{MemoryQueue, WriterArgs, flush_all};

/// The stage implementations the pipeline runs. No reranker: results say `rerank: Off`.
#[derive(Clone)]
pub struct Stages {
    pub embedder: Arc<dyn Embedder>,
    pub retriever: Arc<dyn Retriever>,
    pub reranker: Option<Arc<dyn Reranker>>,
    pub writer: Arc<dyn MemoryWriter>,
}

/// A one-off query: served like a final transcript, but never remembered, and answered to the
/// caller rather than on the results stream. `None` fields take the pipeline's settings.
#[derive(Debug, Clone, Default)]
pub struct QueryRequest {
    pub namespace: String,
    /// Reported back in the result; confine the search with `filter.conversation`.
    pub conversation: Option<String>,
    pub text: String,
    pub top_k: Option<usize>,
    pub mode: Option<SearchMode>,
    pub budget: Option<Duration>,
    pub filter: SearchFilter,
}

/// Starts pipelines.
pub struct Pipeline;

impl Pipeline {
    /// Validates `config`, starts the supervised stage actors and the coordinator. Must be called
    /// inside a tokio runtime.
    pub async fn start(
        stages: Stages,
        config: PipelineConfig,
    ) -> Result<PipelineHandle, PipelineError> {
        config.validate().map_err(PipelineError::Config)?;
        let registry = Arc::new(Registry::new(&stages));
        let stats = Arc::new(Stats::default());
        let memories = Arc::new(MemoryQueue::new(config.memory_queue_max));
        let writer = WriterArgs {
            writer: Arc::clone(&registry.engines.writer),
            queue: Arc::clone(&memories),
            stats: Arc::clone(&stats),
            batch_size: config.writer_batch_size,
            batch_limit: crate::writer::BatchLimit {
                memories: config.writer_batch_max,
                bytes: config.writer_batch_max_bytes,
            },
            flush_after: config.writer_flush(),
            retry_initial: config.writer_retry(),
            retry_max: Duration::from_millis(config.restart.backoff_max_ms),
            unresponsive: Duration::from_millis(config.writer_unresponsive_ms),
            abandoned: Arc::clone(&registry.writer.abandoned),
        };
        let args = SupervisorArgs {
            registry: Arc::clone(&registry),
            policy: config.restart.clone(),
            writer: writer.clone(),
            search_parallel: config.search_parallel,
            embed_parallel: config.embed_parallel,
            rerank_nice: config.rerank_nice,
        };
        let (supervisor, _) =
            Actor::spawn(None, Supervisor, args)
                .await
                .map_err(|e| PipelineError::Spawn {
                    stage: "supervisor",
                    message: e.to_string(),
                })?;
        let cost = calibrated_cost(&stages, &config).await;
        let embeds = EmbedQueue::start(
            Arc::clone(&registry),
            Arc::clone(&stats),
            config.embed_batch_max,
            config.embed_parallel,
        );
        let state = Arc::new(PipelineState {
            cost: Arc::new(Mutex::new(cost)),
            embeds,
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            utterances_tracked: Default::default(),
            wake_lag: WakeLag::new(config.deadline_guard(), config.budget() / 4),
            hub: ResultHub::default(),
            stats,
            memories,
            registry,
            stages,
            config,
        });
        let (intake_tx, intake_rx) = mpsc::channel(state.config.queue_capacity);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        tokio::spawn(Coordinator::new(Arc::clone(&state)).run(intake_rx, control_rx));
        Ok(PipelineHandle {
            inner: Arc::new(Inner {
                state,
                intake: intake_tx,
                control: control_tx,
                supervisor,
                writer,
                closing: AtomicBool::new(false),
                shutdown: tokio::sync::Mutex::new(None),
            }),
        })
    }
}

/// The reranker's cost model, seeded by timing it on synthetic pairs unless calibration is off.
async fn calibrated_cost(stages: &Stages, config: &PipelineConfig) -> RerankCost {
    let mut cost = RerankCost::new(config.rerank_initial_ns_per_token);
    let Some(reranker) = stages.reranker.clone() else {
        return cost;
    };
    if config.rerank_calibration_ms == 0 {
        return cost;
    }
    let limit = config.rerank_calibration();
    match tokio::task::spawn_blocking(move || calibration_runs(reranker.as_ref(), limit)).await {
        Ok(calibration) => {
            if cost.calibrate(&calibration) {
                tracing::info!(
                    ns_per_token = cost.ns_per_token() as u64,
                    spread = format!("{:.3}", cost.spread()),
                    runs = calibration.runs.len(),
                    "reranker calibrated"
                );
            } else {
                tracing::warn!("reranker calibration measured nothing; using the configured cost");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reranker calibration failed; using the configured cost")
        }
    }
    cost
}

struct Inner {
    state: Arc<PipelineState>,
    intake: mpsc::Sender<Transcript>,
    control: mpsc::UnboundedSender<Control>,
    supervisor: ActorRef<SupervisorMsg>,
    writer: WriterArgs,
    closing: AtomicBool,
    /// The outcome of the one shutdown, for every caller.
    shutdown: tokio::sync::Mutex<Option<Result<(), PipelineError>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let shut_down = self
            .shutdown
            .try_lock()
            .map(|d| d.is_some())
            .unwrap_or(true);
        if !shut_down {
            // Without shutdown() nothing drains: say what is lost, and stop the actors.
            let pending = self.state.memories.len();
            if pending > 0 {
                tracing::error!(
                    pending,
                    "pipeline dropped without shutdown(): memories not written"
                );
            }
            let (tx, _) = oneshot::channel();
            let _ = self.supervisor.send_message(SupervisorMsg::Shutdown(tx));
        }
    }
}

/// A running pipeline. Cheap to clone; every clone drives the same pipeline.
#[derive(Clone)]
pub struct PipelineHandle {
    inner: Arc<Inner>,
}

fn check_ids(namespace: &str, conversation: &str, utterance: &str) -> Result<(), PipelineError> {
    for (name, v) in [
        ("namespace", namespace),
        ("conversation", conversation),
        ("utterance", utterance),
    ] {
        if v.is_empty() {
            return Err(PipelineError::InvalidRequest(format!("{name} is empty")));
        }
    }
    Ok(())
}

impl PipelineHandle {
    /// Queues a transcript; never blocks. Every final gets exactly one result on the results stream:
    /// if the queue is full, that result is sent at once, degraded "shed" (a partial is then dropped).
    /// A final that would become a memory while `memory_queue_max` memories wait for the writer
    /// is refused (`MemoryBacklog`, no result): memories never pile up in RAM without bound.
    pub fn submit(&self, t: Transcript) -> Result<(), PipelineError> {
        check_ids(&t.namespace, &t.conversation, &t.utterance)?;
        if self.inner.closing.load(Ordering::SeqCst) {
            return Err(PipelineError::ShuttingDown);
        }
        if becomes_memory(&t) {
            self.check_memory_room()?;
        }
        match self.inner.intake.try_send(t) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(t)) => {
                let state = &self.inner.state;
                if t.is_final {
                    state.emit(state.shed_result(&t), ResultKind::Final);
                    state.remember_transcript(&t);
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PipelineError::ShuttingDown),
        }
    }

    /// `MemoryBacklog` when the memory queue is full (counted).
    fn check_memory_room(&self) -> Result<(), PipelineError> {
        let state = &self.inner.state;
        if state.memories.has_room() {
            return Ok(());
        }
        state.stats.memory_refused_backlog();
        Err(PipelineError::MemoryBacklog {
            pending: state.memories.len(),
        })
    }

    /// Remembers what the agent said (speaker "agent"); never delays a result. Ok means queued
    /// in RAM, not yet durable (see `memories_written` in health); `MemoryBacklog` when
    /// `memory_queue_max` memories are waiting already.
    pub fn reply(&self, r: AgentReply) -> Result<(), PipelineError> {
        check_ids(&r.namespace, &r.conversation, &r.utterance)?;
        if self.inner.closing.load(Ordering::SeqCst) {
            return Err(PipelineError::ShuttingDown);
        }
        if r.text.trim().is_empty() {
            return Ok(());
        }
        self.check_memory_room()?;
        self.inner.state.remember(Memory {
            id: memory_id(&r.conversation, &r.utterance),
            namespace: r.namespace,
            conversation: r.conversation,
            speaker: crate::state::AGENT_SPEAKER.to_string(),
            text: r.text,
            ts_ms: unix_ms(Duration::ZERO),
            supersedes: Vec::new(),
            expires_at_ms: None,
        });
        Ok(())
    }

    /// Remembers a memory as given: the in-process path for a fact with `supersedes` or
    /// `expires_at_ms` (a replaced appointment, a reminder that runs out). Never delays a result;
    /// Ok means queued in RAM, durable once the writer has it (as every transcript and reply);
    /// `MemoryBacklog` when `memory_queue_max` memories are waiting already.
    pub fn remember(&self, m: Memory) -> Result<(), PipelineError> {
        for (name, v) in [("namespace", &m.namespace), ("id", &m.id)] {
            if v.is_empty() {
                return Err(PipelineError::InvalidRequest(format!("{name} is empty")));
            }
        }
        if m.text.trim().is_empty() {
            return Err(PipelineError::InvalidRequest("text is empty".into()));
        }
        if self.inner.closing.load(Ordering::SeqCst) {
            return Err(PipelineError::ShuttingDown);
        }
        self.check_memory_room()?;
        self.inner.state.remember(m);
        Ok(())
    }

    /// A stream of results of finals (and of partials if `emit_partials`). Each stream gets every
    /// result sent while it is open; results sent while no stream is open wait for the next one.
    /// Unbounded: a slow consumer costs memory, never a result. Ends after `shutdown`.
    pub fn results(&self) -> ResultStream {
        self.inner.state.hub.subscribe()
    }

    /// Serves a one-off query through the same stages and deadline logic as a final transcript.
    pub async fn query(&self, q: QueryRequest) -> Result<ContextResult, PipelineError> {
        if q.namespace.is_empty() {
            return Err(PipelineError::InvalidRequest("namespace is empty".into()));
        }
        if q.top_k == Some(0) {
            return Err(PipelineError::InvalidRequest("top_k must be > 0".into()));
        }
        if q.budget == Some(Duration::ZERO) {
            return Err(PipelineError::InvalidRequest("budget must be > 0".into()));
        }
        if self.inner.closing.load(Ordering::SeqCst) {
            return Err(PipelineError::ShuttingDown);
        }
        let state = Arc::clone(&self.inner.state);
        let received = now();
        let req = Request {
            namespace: q.namespace,
            conversation: q.conversation.unwrap_or_default(),
            utterance: String::new(),
            text: q.text,
            is_final: true,
            received_at: received.into_std(),
            deadline: received + q.budget.unwrap_or(state.config.budget()),
            top_k: q.top_k.unwrap_or(state.config.top_k),
            mode: q.mode.unwrap_or(state.config.mode),
            filter: q.filter,
            cap_context: false,
            memory_id: None,
        };
        let stop_by = state.stop_by(req.deadline);
        let permit = match timeout_at(stop_by, Arc::clone(&state.permits).acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            Ok(Err(_)) => return Err(PipelineError::Stopped),
            Err(_) => None,
        };
        let Some(permit) = permit.filter(|_| now() < stop_by) else {
            // No room before the deadline: answer now rather than late.
            let t = Transcript {
                namespace: req.namespace.clone(),
                conversation: req.conversation.clone(),
                utterance: String::new(),
                speaker: String::new(),
                text: req.text.clone(),
                is_final: true,
                received_at: req.received_at,
            };
            let mut r = state.shed_result(&t);
            r.deadline = req.deadline.into_std();
            state.observe_stop(stop_by, r.finished_at);
            state.stats.record_result(&r, ResultKind::Query);
            return Ok(r);
        };
        // Spawned, permit and all, so a caller that stops waiting can neither leave stage calls
        // half-done nor free the request's permit while it is still being served.
        let task_state = Arc::clone(&state);
        tokio::spawn(async move {
            let result = serve_guarded(&task_state, &req, None).await;
            task_state.stats.record_result(&result, ResultKind::Query);
            drop(permit);
            result
        })
        .await
        .map_err(|_| PipelineError::Stopped)
    }

    /// Memories accepted and not yet durable (cheap: `health` also sorts the latency window).
    pub fn memories_pending(&self) -> usize {
        self.inner.state.memories.len()
    }

    /// Stage states, counters and latency.
    pub fn health(&self) -> Health {
        let state = &self.inner.state;
        let stages = state.registry.health();
        let degraded = stages
            .iter()
            .any(|s| !matches!(s.state, StageState::Up | StageState::Off));
        let (p50, p99) = state.stats.latency_ms();
        let abandoned_calls = stages.iter().map(|s| s.abandoned_calls).sum();
        Health {
            stages,
            degraded,
            counters: state.stats.counters(),
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            in_flight: state.config.max_in_flight - state.permits.available_permits(),
            memories_pending: state.memories.len(),
            utterances_tracked: state.utterances_tracked.load(Ordering::Relaxed),
            abandoned_calls,
        }
    }

    /// Stops taking input, serves everything queued and in flight, writes every pending memory
    /// (retrying until `shutdown_timeout_ms`), stops the stages and ends the result streams.
    /// Idempotent: later calls return the first call's outcome.
    pub async fn shutdown(&self) -> Result<(), PipelineError> {
        let mut done = self.inner.shutdown.lock().await;
        if let Some(r) = done.as_ref() {
            return r.clone();
        }
        self.inner.closing.store(true, Ordering::SeqCst);
        let state = &self.inner.state;
        let (tx, rx) = oneshot::channel();
        if self.inner.control.send(Control::Drain(tx)).is_ok() {
            let _ = rx.await;
        }
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .supervisor
            .send_message(SupervisorMsg::Shutdown(tx))
            .is_ok()
        {
            let _ = rx.await;
        }
        let deadline = Instant::now() + state.config.shutdown_timeout();
        let result =
            flush_all(&self.inner.writer, deadline)
                .await
                .map_err(|(pending, last_error)| {
                    tracing::error!(pending, %last_error, "shutdown: memories left unwritten");
                    PipelineError::Flush {
                        pending,
                        last_error,
                    }
                });
        state.hub.close();
        *done = Some(result.clone());
        result
    }
}
