//! The `[pipeline]` section of `config.toml`: budgets, limits and the supervision policy.
//!
//! Durations are integer milliseconds in the file (`budget_ms = 100`); the accessors turn them into
//! [`Duration`]s.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::messages::SearchMode;

/// Default relevance floor (cosine), calibrated on the dev sets for all-MiniLM-L6-v2.
pub const MIN_SIMILARITY: f32 = 0.24;

/// How the pipeline serves transcripts. Every field has a documented default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Time from a transcript's arrival to its result's deadline (default 100).
    pub budget_ms: u64,
    /// Most hits in a result (default 5).
    pub top_k: usize,
    /// Most characters of hit text in a result for a transcript, so a context result never floods
    /// a prompt; the result's `capped` counts the hits it cut. One-off queries are not capped:
    /// they return up to `top_k` hits (default 2000).
    pub max_context_chars: usize,
    /// Relevance floor: hits whose cosine similarity to the query is below this are dropped (the
    /// result's `floored`: how many fewer than `top_k` it has for it). Applies when the query was
    /// embedded; calibrated for
    /// all-MiniLM-L6-v2, so set it again for another model (-1 turns it off).
    pub min_similarity: f32,
    /// Hits asked of the retriever and offered to the reranker (default 20).
    pub candidates: usize,
    /// Search mode for transcripts (default "hybrid").
    pub mode: SearchMode,
    /// Leave out the most recent n turns of the transcript's own conversation (default 0).
    pub exclude_recent_turns: usize,
    /// Emit results for partial transcripts too (default false: partials only warm the cache).
    pub emit_partials: bool,
    /// Speculative state of an utterance that never gets a final is dropped after this (default 10000).
    pub speculative_ttl_ms: u64,
    /// Transcripts waiting to be served; a full queue answers finals at once with "shed" (default 256).
    pub queue_capacity: usize,
    /// Requests served at the same time; more wait in the queue (default 32).
    pub max_in_flight: usize,
    /// Most texts embedded in one run: finals and queries waiting for the embedder at the same
    /// moment are embedded together (partials' speculative ones in runs of their own, after them);
    /// an idle embedder takes the first request at once (default 16).
    pub embed_batch_max: usize,
    /// Embedder runs at the same time (up to `runtime.query_sessions` use a session each): while
    /// one run is busy, requests that arrive start the next on a free session instead of waiting
    /// for it; once all are busy, they batch. 2 halves p50 below the knee (bench nats, 56
    /// conversations: 14 against 24 ms) but past it the smaller runs cost more CPU a text and more
    /// finals degrade (64 conversations: 78% against 32%), so the default is 1.
    pub embed_parallel: usize,
    /// Searches run at the same time: the store serves concurrent readers, so one slow search (a
    /// large namespace) need not hold up every other, and searches use more than one core
    /// (default 2).
    pub search_parallel: usize,
    /// Memories queued that start a write at once; fewer wait up to `writer_flush_ms` for
    /// company (default 32).
    pub writer_batch_size: usize,
    /// Most memories in one write: a backlog is written in batches as large as it is, up to
    /// this, so one embedding pass and one commit serve many memories (default 128).
    pub writer_batch_max: usize,
    /// Most text bytes in one write (a single longer memory is written alone), so a backlog of
    /// long memories still makes writes of bounded duration, well inside
    /// `writer_unresponsive_ms` (default 262144).
    pub writer_batch_max_bytes: usize,
    /// Most memories waiting in RAM for the writer (in bus mode: for the stream's ack). When
    /// full, new agent replies and new finals are refused with `PipelineError::MemoryBacklog`
    /// instead of waiting in RAM without bound; finals already accepted are still queued, so the
    /// queue can hold up to `queue_capacity + max_in_flight` more (default 10000).
    pub memory_queue_max: usize,
    /// Memories waiting for the writer at which optional work stops: partials start no
    /// speculation and finals are not reranked (outcome `skipped: backlog`) until the writer has
    /// caught up, so the cores go to making memories durable before the queue refuses any
    /// (default 1000; 0: never).
    pub shed_optional_at: usize,
    /// A partial batch is written after this long (default 50).
    pub writer_flush_ms: u64,
    /// A memory write running longer than this counts as a hung writer and is restarted; longer than
    /// `restart.unresponsive_ms`, since a durable publish can wait out a JetStream leader change
    /// (default 30000).
    pub writer_unresponsive_ms: u64,
    /// First retry delay of a failed memory write; doubles up to `restart.backoff_max_ms` (default 100).
    pub writer_retry_ms: u64,
    /// Time kept free before the deadline when choosing how many candidates to rerank (default 5).
    pub rerank_safety_margin_ms: u64,
    /// Reranker cost per pair token assumed before the first run is measured, in ns (default 20000).
    /// Calibration at start replaces it.
    pub rerank_initial_ns_per_token: u64,
    /// At start the reranker is timed on a few synthetic pairs for at most this long, and its cost
    /// estimate seeded from them, so the first requests neither time out nor skip reranking
    /// (default 500; 0 turns calibration off).
    pub rerank_calibration_ms: u64,
    /// How many nice steps below the rest of the process the reranker's own thread runs (Linux;
    /// 1..=19, more yields more): reranking is optional work, so embedding and search take the
    /// cores first and the reranker runs on what they leave (a starved run stops at its deadline
    /// like any other). 0: the reranker runs on the shared blocking pool at the hot path's
    /// priority (default 10).
    pub rerank_nice: i32,
    /// Time kept before the deadline for a BM25-only search when the embedder is late (default 20).
    pub search_reserve_ms: u64,
    /// The coordinator stops waiting for stages this long before the deadline, so the result it
    /// then builds still leaves by the deadline; tokio's timers have 1 ms granularity. On saturated
    /// cores it stops as much earlier again as recent wake-ups at a stop point ran late (at most a
    /// quarter of the budget, fading by half every 2 s) (default 2).
    pub deadline_guard_ms: u64,
    /// `shutdown()` gives up flushing memories after this long (default 10000).
    pub shutdown_timeout_ms: u64,
    /// When and how failed stages are restarted.
    pub restart: RestartPolicy,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            budget_ms: 100,
            top_k: 5,
            max_context_chars: 2000,
            min_similarity: MIN_SIMILARITY,
            candidates: 20,
            mode: SearchMode::Hybrid,
            exclude_recent_turns: 0,
            emit_partials: false,
            speculative_ttl_ms: 10_000,
            queue_capacity: 256,
            max_in_flight: 32,
            embed_batch_max: 16,
            embed_parallel: 1,
            search_parallel: 2,
            writer_batch_size: 32,
            writer_batch_max: 128,
            writer_batch_max_bytes: 256 * 1024,
            memory_queue_max: 10_000,
            shed_optional_at: 1_000,
            writer_flush_ms: 50,
            writer_unresponsive_ms: 30_000,
            writer_retry_ms: 100,
            rerank_safety_margin_ms: 5,
            rerank_initial_ns_per_token: 20_000,
            rerank_calibration_ms: 500,
            rerank_nice: 10,
            search_reserve_ms: 20,
            deadline_guard_ms: 2,
            shutdown_timeout_ms: 10_000,
            restart: RestartPolicy::default(),
        }
    }
}

/// Supervision policy: ractor reports failures, this decides what happens next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    /// Restarts allowed per window; one more failure and the stage stays down (default 5).
    pub max_restarts: u32,
    /// The window restarts are counted in (default 60000).
    pub window_ms: u64,
    /// Delay before the first restart; doubles with each restart in the window (default 50).
    pub backoff_initial_ms: u64,
    /// Longest restart delay (default 5000).
    pub backoff_max_ms: u64,
    /// A stage call running longer than this counts as a hung stage: it is killed and restarted
    /// (default 2000).
    pub unresponsive_ms: u64,
    /// A stage that is down is started again after this long (default 30000).
    pub retry_down_after_ms: u64,
    /// Calls given up on (hung) whose threads still run, per stage, before the stage stays down
    /// rather than start another (default 4). Each holds a blocking thread and, when the engine
    /// was renewed, a model session.
    pub max_abandoned_calls: usize,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window_ms: 60_000,
            backoff_initial_ms: 50,
            backoff_max_ms: 5_000,
            unresponsive_ms: 2_000,
            retry_down_after_ms: 30_000,
            max_abandoned_calls: 4,
        }
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl PipelineConfig {
    pub fn budget(&self) -> Duration {
        ms(self.budget_ms)
    }
    pub fn speculative_ttl(&self) -> Duration {
        ms(self.speculative_ttl_ms)
    }
    pub fn writer_flush(&self) -> Duration {
        ms(self.writer_flush_ms)
    }
    pub fn writer_retry(&self) -> Duration {
        ms(self.writer_retry_ms)
    }
    pub fn rerank_safety_margin(&self) -> Duration {
        ms(self.rerank_safety_margin_ms)
    }
    pub fn rerank_calibration(&self) -> Duration {
        ms(self.rerank_calibration_ms)
    }
    pub fn search_reserve(&self) -> Duration {
        ms(self.search_reserve_ms)
    }
    pub fn deadline_guard(&self) -> Duration {
        ms(self.deadline_guard_ms)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        ms(self.shutdown_timeout_ms)
    }

    /// Rejects impossible values; the message names the key (`pipeline.budget_ms: must be > 0`).
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("budget_ms", self.budget_ms),
            ("top_k", self.top_k as u64),
            ("max_context_chars", self.max_context_chars as u64),
            ("candidates", self.candidates as u64),
            ("speculative_ttl_ms", self.speculative_ttl_ms),
            ("queue_capacity", self.queue_capacity as u64),
            ("max_in_flight", self.max_in_flight as u64),
            ("embed_batch_max", self.embed_batch_max as u64),
            ("embed_parallel", self.embed_parallel as u64),
            ("search_parallel", self.search_parallel as u64),
            ("writer_batch_size", self.writer_batch_size as u64),
            ("writer_batch_max", self.writer_batch_max as u64),
            ("writer_batch_max_bytes", self.writer_batch_max_bytes as u64),
            ("memory_queue_max", self.memory_queue_max as u64),
            ("writer_flush_ms", self.writer_flush_ms),
            ("writer_retry_ms", self.writer_retry_ms),
            ("writer_unresponsive_ms", self.writer_unresponsive_ms),
            (
                "rerank_initial_ns_per_token",
                self.rerank_initial_ns_per_token,
            ),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
            ("restart.window_ms", self.restart.window_ms),
            (
                "restart.backoff_initial_ms",
                self.restart.backoff_initial_ms,
            ),
            ("restart.unresponsive_ms", self.restart.unresponsive_ms),
            (
                "restart.retry_down_after_ms",
                self.restart.retry_down_after_ms,
            ),
            (
                "restart.max_abandoned_calls",
                self.restart.max_abandoned_calls as u64,
            ),
        ];
        if !(-1.0..=1.0).contains(&self.min_similarity) {
            return Err(format!(
                "pipeline.min_similarity: {} is not a cosine similarity (-1 to 1; -1 turns the floor off)",
                self.min_similarity
            ));
        }
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("pipeline.{key}: must be > 0"));
            }
        }
        if self.candidates < self.top_k {
            return Err(format!(
                "pipeline.candidates: must be >= pipeline.top_k ({})",
                self.top_k
            ));
        }
        if self.writer_batch_max < self.writer_batch_size {
            return Err(format!(
                "pipeline.writer_batch_max: must be >= pipeline.writer_batch_size ({})",
                self.writer_batch_size
            ));
        }
        if self.restart.backoff_max_ms < self.restart.backoff_initial_ms {
            return Err(
                "pipeline.restart.backoff_max_ms: must be >= restart.backoff_initial_ms".into(),
            );
        }
        if !(0..=19).contains(&self.rerank_nice) {
            return Err("pipeline.rerank_nice: must be 0 to 19".into());
        }
        // The margins are carved out of the budget: each must leave some of it.
        for (key, value) in [
            ("deadline_guard_ms", self.deadline_guard_ms),
            ("search_reserve_ms", self.search_reserve_ms),
            ("rerank_safety_margin_ms", self.rerank_safety_margin_ms),
        ] {
            if value >= self.budget_ms {
                return Err(format!(
                    "pipeline.{key}: must be < pipeline.budget_ms ({})",
                    self.budget_ms
                ));
            }
        }
        // And together: margins that each fit can still leave no time for the work.
        let margins = self
            .deadline_guard_ms
            .saturating_add(self.search_reserve_ms)
            .saturating_add(self.rerank_safety_margin_ms);
        if margins >= self.budget_ms {
            return Err(format!(
                "pipeline.budget_ms: must be > deadline_guard_ms + search_reserve_ms + rerank_safety_margin_ms ({margins})"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(PipelineConfig::default().validate(), Ok(()));
    }

    #[test]
    fn zero_budget_names_the_key() {
        let c = PipelineConfig {
            budget_ms: 0,
            ..Default::default()
        };
        assert_eq!(
            c.validate(),
            Err("pipeline.budget_ms: must be > 0".to_string())
        );
    }

    #[test]
    fn margins_must_fit_in_the_budget() {
        let c = PipelineConfig {
            budget_ms: 10,
            search_reserve_ms: 10,
            ..Default::default()
        };
        let err = c.validate().unwrap_err();
        assert!(err.starts_with("pipeline.search_reserve_ms"), "{err}");
    }

    #[test]
    fn margins_must_fit_in_the_budget_together() {
        let c = PipelineConfig {
            budget_ms: 25,
            deadline_guard_ms: 2,
            search_reserve_ms: 20,
            rerank_safety_margin_ms: 5,
            ..Default::default()
        };
        assert_eq!(
            c.validate(),
            Err("pipeline.budget_ms: must be > deadline_guard_ms + search_reserve_ms + rerank_safety_margin_ms (27)".to_string())
        );
        let c = PipelineConfig { budget_ms: 28, ..c };
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn deserialises_partial_table_with_defaults_and_rejects_unknown_keys() {
        let c: PipelineConfig = serde_json::from_str(
            r#"{"budget_ms": 80, "mode": "bm25", "restart": {"max_restarts": 2}}"#,
        )
        .unwrap();
        assert_eq!(c.budget_ms, 80);
        assert_eq!(c.mode, SearchMode::Bm25);
        assert_eq!(c.restart.max_restarts, 2);
        assert_eq!(c.restart.window_ms, RestartPolicy::default().window_ms);
        assert_eq!(c.top_k, 5);
        assert!(serde_json::from_str::<PipelineConfig>(r#"{"budget": 80}"#).is_err());
    }
}
