//! [`PipelineState`]: the running pipeline's settings, stages, registry, counters, result hub, memory
//! queue, rerank cost model and request permits, shared by the coordinator, the request tasks and
//! the handle.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::Stages;
use crate::config::PipelineConfig;
use crate::embed_batch::EmbedQueue;
use crate::health::{ResultKind, Stats};
use crate::messages::{ContextResult, Memory, RerankOutcome, Transcript, memory_id};
use crate::registry::Registry;
use crate::rerank::RerankCost;
use crate::results::ResultHub;
use crate::wake_lag::WakeLag;
use crate::writer::{MemoryQueue, WriterMsg};

/// Speakers whose finals are not remembered as transcripts (agent speech arrives via `reply`).
pub(crate) const AGENT_SPEAKER: &str = "agent";

pub(crate) struct PipelineState {
    pub config: PipelineConfig,
    pub stages: Stages,
    pub registry: Arc<Registry>,
    pub stats: Arc<Stats>,
    pub hub: ResultHub,
    pub memories: Arc<MemoryQueue>,
    pub cost: Arc<Mutex<RerankCost>>,
    /// Where requests ask for embeddings, batched.
    pub embeds: EmbedQueue,
    /// One permit per request being served (`max_in_flight`).
    pub permits: Arc<Semaphore>,
    /// Utterances the coordinator keeps state for (speculation, "already final"), for health:
    /// each is dropped `speculative_ttl_ms` after it was last touched, so conversations that
    /// come and go leave nothing behind.
    pub utterances_tracked: std::sync::atomic::AtomicUsize,
    /// How late wake-ups at a stop point run on busy cores: kept before the deadline too.
    pub wake_lag: WakeLag,
}

/// The pipeline's clock: tokio's, so tests can pause it; the same as `std` outside tests.
pub(crate) fn now() -> Instant {
    Instant::now()
}

impl PipelineState {
    /// When the coordinator stops waiting for a request's stages: the guard, and as much more as
    /// wake-ups have recently run late (see [`WakeLag`]).
    pub(crate) fn stop_by(&self, deadline: Instant) -> Instant {
        let keep = self.config.deadline_guard() + self.wake_lag.allowance(now());
        deadline.checked_sub(keep).unwrap_or(deadline)
    }

    /// A request that stopped waiting at `stop_by` finished its result at `finished`.
    pub(crate) fn observe_stop(&self, stop_by: Instant, finished: std::time::Instant) {
        self.wake_lag.observe(stop_by, Instant::from_std(finished));
    }

    /// Sends a result (finals and partials to the stream) and counts it.
    pub(crate) fn emit(&self, result: ContextResult, kind: ResultKind) {
        self.stats.record_result(&result, kind);
        self.hub.send(result);
    }

    /// The rerank outcome for a result that was not reranked on purpose.
    pub(crate) fn no_rerank(&self, reason: &str) -> RerankOutcome {
        if self.stages.reranker.is_some() {
            RerankOutcome::Skipped(reason.to_string())
        } else {
            RerankOutcome::Off
        }
    }

    /// Whether the memory writer is so far behind that optional work (speculation, reranking)
    /// is skipped (`shed_optional_at`).
    pub(crate) fn memories_backlogged(&self) -> bool {
        let at = self.config.shed_optional_at;
        at > 0 && self.memories.len() >= at
    }

    /// An immediate answer for a request the pipeline had no time or room to serve.
    pub(crate) fn shed_result(&self, t: &Transcript) -> ContextResult {
        ContextResult::without_hits(
            t,
            self.no_rerank("shed"),
            "shed".to_string(),
            t.received_at + self.config.budget(),
            now().into_std(),
        )
    }

    /// Queues a final transcript as a memory, unless it is the agent's or empty. A final that
    /// was accepted is queued even over `memory_queue_max`: refusing happens at submit.
    pub(crate) fn remember_transcript(&self, t: &Transcript) {
        if !becomes_memory(t) {
            return;
        }
        let age = now().into_std().saturating_duration_since(t.received_at);
        self.remember(Memory {
            id: memory_id(&t.conversation, &t.utterance),
            namespace: t.namespace.clone(),
            conversation: t.conversation.clone(),
            speaker: t.speaker.clone(),
            text: t.text.clone(),
            ts_ms: unix_ms(age),
            supersedes: Vec::new(),
            expires_at_ms: None,
        });
    }

    pub(crate) fn remember(&self, m: Memory) {
        self.memories.push(m);
        if let Some(w) = self.registry.writer.current() {
            // If the writer is restarting, its next instance flushes the queue on start.
            let _ = w.send_message(WriterMsg::Wake);
        }
    }
}

/// Whether a transcript is remembered when it is final: the user's, with some text.
pub(crate) fn becomes_memory(t: &Transcript) -> bool {
    t.is_final && t.speaker != AGENT_SPEAKER && !t.text.trim().is_empty()
}

/// Unix milliseconds of the moment `ago` before now.
pub(crate) fn unix_ms(ago: Duration) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(ago).as_millis() as i64
}
