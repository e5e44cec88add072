//! What the pipeline reports about itself: health snapshot, counters, latency, and the `metrics`
//! facade calls (the binary installs the exporter).

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::messages::{ContextResult, RerankOutcome};

/// Latencies kept for the p50/p99 in [`Health`].
const LATENCY_WINDOW: usize = 4096;

/// A stage's state as supervision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    Up,
    /// Failed and waiting for its backoff to end.
    Restarting,
    /// Past its restart limit: the pipeline runs degraded until the next retry.
    Down,
    /// Not configured (no reranker).
    Off,
}

/// One stage in [`Health`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageHealth {
    pub name: &'static str,
    pub state: StageState,
    /// Restarts since the pipeline started.
    pub restarts: u64,
    /// Why it last failed.
    pub last_error: Option<String>,
    /// Calls given up on (hung past `restart.unresponsive_ms`) whose threads have not returned:
    /// each holds a blocking thread. Bounded by `restart.max_abandoned_calls`.
    pub abandoned_calls: usize,
    /// Calls given up on since the pipeline started.
    pub abandoned_total: u64,
}

/// Counters since the pipeline started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Results sent (finals, partials if emitted, and queries).
    pub results: u64,
    pub final_results: u64,
    pub partial_results: u64,
    pub query_results: u64,
    /// Results that finished after their deadline.
    pub deadline_missed: u64,
    /// Requests answered at once with "shed" because of overload.
    pub shed: u64,
    /// Results marked degraded (shed included).
    pub degraded: u64,
    pub rerank_off: u64,
    pub rerank_full: u64,
    pub rerank_partial: u64,
    pub rerank_skipped: u64,
    /// Of `rerank_skipped`: nothing fitted in the time left.
    pub rerank_skipped_budget: u64,
    pub rerank_failed: u64,
    /// Partials ignored because their utterance was already final.
    pub partials_ignored: u64,
    pub memories_written: u64,
    /// Writes that made memories durable: `memories_written / memory_batches` is the mean batch,
    /// which grows with the writer's backlog.
    pub memory_batches: u64,
    pub memory_write_failures: u64,
    /// Embedder runs of the micro-batcher (finals, queries and speculations) and the texts they
    /// embedded: `embedded_texts / embed_runs` is the mean batch, which should grow with load.
    pub embed_runs: u64,
    pub embedded_texts: u64,
    /// Agent replies and finals refused because the memory queue was full.
    pub memories_refused_backlog: u64,
}

/// A snapshot of the pipeline's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub stages: Vec<StageHealth>,
    /// True when any configured stage is not up.
    pub degraded: bool,
    pub counters: Counters,
    /// Over the last results (up to 4096), from `received_at` to `finished_at`.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub in_flight: usize,
    pub memories_pending: usize,
    /// Utterances the coordinator holds state for; each leaves `speculative_ttl_ms` after it
    /// was last touched.
    pub utterances_tracked: usize,
    /// Abandoned calls of every stage whose threads still run.
    pub abandoned_calls: usize,
}

#[derive(Default)]
pub(crate) struct Stats {
    results: AtomicU64,
    final_results: AtomicU64,
    partial_results: AtomicU64,
    query_results: AtomicU64,
    deadline_missed: AtomicU64,
    shed: AtomicU64,
    degraded: AtomicU64,
    rerank: [AtomicU64; 5],
    rerank_skipped_budget: AtomicU64,
    partials_ignored: AtomicU64,
    memories_written: AtomicU64,
    memory_batches: AtomicU64,
    memory_write_failures: AtomicU64,
    memories_refused_backlog: AtomicU64,
    embed_runs: AtomicU64,
    embedded_texts: AtomicU64,
    latencies_us: Mutex<VecDeque<u64>>,
}

/// Which kind of request a result answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResultKind {
    Final,
    Partial,
    Query,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// Counts a result about to be sent, in health and in metrics.
    pub(crate) fn record_result(&self, r: &ContextResult, kind: ResultKind) {
        bump(&self.results);
        metrics::counter!("voicerag_results_total").increment(1);
        match kind {
            ResultKind::Final => bump(&self.final_results),
            ResultKind::Partial => bump(&self.partial_results),
            ResultKind::Query => bump(&self.query_results),
        }
        if !r.deadline_met() {
            bump(&self.deadline_missed);
        }
        if let Some(reason) = &r.degraded {
            bump(&self.degraded);
            metrics::counter!("voicerag_degraded_total", "reason" => reason.clone()).increment(1);
            if reason == "shed" {
                bump(&self.shed);
                metrics::counter!("voicerag_shed_total").increment(1);
            }
        }
        let idx = match &r.rerank {
            RerankOutcome::Off => 0,
            RerankOutcome::Full => 1,
            RerankOutcome::Partial(_) => 2,
            RerankOutcome::Skipped(reason) => {
                if reason == "budget" {
                    bump(&self.rerank_skipped_budget);
                    metrics::counter!("voicerag_rerank_skipped_budget_total").increment(1);
                }
                3
            }
            RerankOutcome::Failed(_) => 4,
        };
        bump(&self.rerank[idx]);
        metrics::counter!("voicerag_rerank_total", "outcome" => r.rerank.kind()).increment(1);
        let total = r.timings.total;
        let mut lat = self.latencies_us.lock().unwrap_or_else(|p| p.into_inner());
        if lat.len() == LATENCY_WINDOW {
            lat.pop_front();
        }
        lat.push_back(total.as_micros() as u64);
    }

    pub(crate) fn partial_ignored(&self) {
        bump(&self.partials_ignored);
    }

    /// One write made `n` memories durable.
    pub(crate) fn memory_batch_written(&self, n: usize) {
        self.memories_written.fetch_add(n as u64, Ordering::Relaxed);
        bump(&self.memory_batches);
        metrics::histogram!("voicerag_memory_batch_size").record(n as f64);
    }

    /// One embedder run of the micro-batcher embedded `n` texts.
    pub(crate) fn embed_run(&self, n: usize) {
        bump(&self.embed_runs);
        self.embedded_texts.fetch_add(n as u64, Ordering::Relaxed);
        metrics::histogram!("voicerag_embed_batch_size").record(n as f64);
    }

    pub(crate) fn memory_write_failed(&self) {
        bump(&self.memory_write_failures);
    }

    pub(crate) fn memory_refused_backlog(&self) {
        bump(&self.memories_refused_backlog);
    }

    pub(crate) fn counters(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            results: get(&self.results),
            final_results: get(&self.final_results),
            partial_results: get(&self.partial_results),
            query_results: get(&self.query_results),
            deadline_missed: get(&self.deadline_missed),
            shed: get(&self.shed),
            degraded: get(&self.degraded),
            rerank_off: get(&self.rerank[0]),
            rerank_full: get(&self.rerank[1]),
            rerank_partial: get(&self.rerank[2]),
            rerank_skipped: get(&self.rerank[3]),
            rerank_skipped_budget: get(&self.rerank_skipped_budget),
            rerank_failed: get(&self.rerank[4]),
            partials_ignored: get(&self.partials_ignored),
            memories_written: get(&self.memories_written),
            memory_batches: get(&self.memory_batches),
            memory_write_failures: get(&self.memory_write_failures),
            embed_runs: get(&self.embed_runs),
            embedded_texts: get(&self.embedded_texts),
            memories_refused_backlog: get(&self.memories_refused_backlog),
        }
    }

    /// (p50, p99) in milliseconds over the latency window; zero when empty.
    pub(crate) fn latency_ms(&self) -> (f64, f64) {
        let mut v: Vec<u64> = self
            .latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        if v.is_empty() {
            return (0.0, 0.0);
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        (at(0.5), at(0.99))
    }
}

/// Records a stage's compute time in `voicerag_stage_seconds{stage}`.
pub(crate) fn record_stage_time(stage: &'static str, elapsed: Duration) {
    metrics::histogram!("voicerag_stage_seconds", "stage" => stage).record(elapsed.as_secs_f64());
}

/// Counts a restart in `voicerag_restarts_total{stage}`.
pub(crate) fn record_restart(stage: &'static str) {
    metrics::counter!("voicerag_restarts_total", "stage" => stage).increment(1);
}
