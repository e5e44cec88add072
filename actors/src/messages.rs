//! Messages in and out of the pipeline.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// An ASR transcript as voicerag received it. Several partials per utterance, then one final.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub namespace: String,
    pub conversation: String,
    pub utterance: String,
    pub speaker: String,
    pub text: String,
    pub is_final: bool,
    /// When voicerag received it: deadlines count from here, never from a sender's clock.
    pub received_at: Instant,
}

/// What the agent said, to remember.
#[derive(Debug, Clone)]
pub struct AgentReply {
    pub namespace: String,
    pub conversation: String,
    pub utterance: String,
    pub text: String,
}

/// Longest namespace, conversation, utterance, memory id or speaker, in bytes: one limit from the
/// wire to the store (it keeps every LMDB key of the store under LMDB's 511-byte limit).
pub const MAX_NAME_BYTES: usize = 120;

/// The id of the memory a transcript becomes: `<conversation>/<utterance>`. The one place that
/// format is built.
pub fn memory_id(conversation: &str, utterance: &str) -> String {
    format!("{conversation}/{utterance}")
}

/// A memory to store. `id` is the caller's, [`memory_id`] for transcripts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub id: String,
    pub namespace: String,
    pub conversation: String,
    pub speaker: String,
    pub text: String,
    /// Unix milliseconds, UTC.
    pub ts_ms: i64,
    /// Ids of earlier memories of the same namespace this one replaces ("the vet moved the
    /// appointment to Friday"): they leave default results but stay stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<String>,
    /// Unix milliseconds after which this memory leaves default results (it stays stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
}

/// Which lists a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    #[default]
    Hybrid,
    Vector,
    Bm25,
}

impl SearchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Vector => "vector",
            SearchMode::Bm25 => "bm25",
        }
    }
}

impl std::str::FromStr for SearchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hybrid" => Ok(Self::Hybrid),
            "vector" => Ok(Self::Vector),
            "bm25" => Ok(Self::Bm25),
            other => Err(format!(
                "unknown mode {other:?}: expected hybrid, vector or bm25"
            )),
        }
    }
}

/// Filters applied inside each list's search (before top-N, not after).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    pub conversation: Option<String>,
    pub speaker: Option<String>,
    /// Inclusive lower bound, unix ms.
    pub since_ms: Option<i64>,
    /// Exclusive upper bound, unix ms.
    pub until_ms: Option<i64>,
    /// Exclude the most recent n turns of this conversation (already in the agent's prompt).
    pub exclude_recent: Option<(String, usize)>,
    /// Also return memories that were superseded or have expired (default: left out).
    pub include_superseded: bool,
    /// How time expressions in the query ("yesterday", "last week") are read.
    pub time: TimeReading,
}

/// How a query's time expressions are read; every field falls back to the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimeReading {
    /// Read them at all (`None`: the configured `retrieval.time_windows`).
    pub enabled: Option<bool>,
    /// IANA time zone of the user ("Europe/Berlin"); `None`: the namespace's configured zone.
    pub time_zone: Option<String>,
    /// "Now" for relative expressions, unix ms; `None`: the clock.
    pub now_ms: Option<i64>,
}

/// How a time window read from the query was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeWindowUse {
    /// Only memories inside the window were searched.
    Filter,
    /// Too few memories inside it: memories inside the window were ranked up.
    Boost,
    /// The question asks only about time ("what did I say this morning?"): the window's
    /// memories are the answer, newest first, and the relevance floor does not apply to them.
    Only,
}

/// The time window a search applied, from an expression in the query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimeWindow {
    /// The expression as it appears in the query ("last week").
    pub phrase: String,
    /// Inclusive start, unix ms.
    pub start_ms: i64,
    /// Exclusive end, unix ms.
    pub end_ms: i64,
    /// The time zone it was read in.
    pub time_zone: String,
    #[serde(rename = "use")]
    pub applied_as: TimeWindowUse,
}

/// What a search found, and the time window it applied, if any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retrieved {
    pub hits: Vec<Hit>,
    pub time_window: Option<TimeWindow>,
}

/// One search over the memory of one namespace.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub namespace: String,
    pub text: String,
    /// The query embedding; `None` means vector search is impossible (embedder down): BM25 only.
    pub embedding: Option<Vec<f32>>,
    pub mode: SearchMode,
    /// How many hits to return (after fusion).
    pub top_n: usize,
    pub filter: SearchFilter,
}

/// A recalled memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// The memory's id.
    pub id: String,
    /// The memory's text (its best chunk for long memories).
    pub text: String,
    /// Fused (reciprocal-rank) score, or the single list's score in vector / bm25 mode.
    pub score: f32,
    /// Cross-encoder score when this hit was reranked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
    /// 1-based rank in the vector list, if it appeared there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_rank: Option<usize>,
    /// 1-based rank in the BM25 list, if it appeared there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bm25_rank: Option<usize>,
    /// Cosine similarity of the query and this memory's best chunk, when the query was embedded:
    /// the evidence the relevance floor (`pipeline.min_similarity`) looks at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    pub conversation: String,
    pub speaker: String,
    pub ts_ms: i64,
}

/// What the reranker did for a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RerankOutcome {
    /// No reranker configured.
    Off,
    /// Every candidate was reranked.
    Full,
    /// The top n candidates were reranked; the rest keep hybrid order below them.
    Partial(usize),
    /// Not run, or not finished ("budget", "timeout": began and overran, "busy": never began,
    /// "down", ...): hybrid order.
    Skipped(String),
    /// The run failed: hybrid order.
    Failed(String),
}

impl RerankOutcome {
    /// The wire name: "off" | "full" | "partial" | "skipped" | "failed".
    pub fn kind(&self) -> &'static str {
        match self {
            RerankOutcome::Off => "off",
            RerankOutcome::Full => "full",
            RerankOutcome::Partial(_) => "partial",
            RerankOutcome::Skipped(_) => "skipped",
            RerankOutcome::Failed(_) => "failed",
        }
    }

    /// Reranked count or skip/failure reason, as JSON.
    pub fn detail(&self) -> serde_json::Value {
        match self {
            RerankOutcome::Off => serde_json::Value::Null,
            RerankOutcome::Full => serde_json::Value::Null,
            RerankOutcome::Partial(n) => serde_json::json!(n),
            RerankOutcome::Skipped(r) | RerankOutcome::Failed(r) => serde_json::json!(r),
        }
    }
}

/// Wall time spent per stage for one result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimings {
    pub embed: Duration,
    pub search: Duration,
    pub rerank: Duration,
    /// From `received_at` to `finished_at`.
    pub total: Duration,
}

/// The context for one transcript (or one-off query).
#[derive(Debug, Clone)]
pub struct ContextResult {
    pub namespace: String,
    pub conversation: String,
    pub utterance: String,
    pub is_final: bool,
    /// The text that was searched.
    pub text: String,
    pub hits: Vec<Hit>,
    /// Hits within `top_k` that `max_context_chars` cut (context results only).
    pub capped: usize,
    /// How many hits fewer than `top_k` this result has because of the relevance floor
    /// (`min_similarity`).
    pub floored: usize,
    pub rerank: RerankOutcome,
    /// The time window read from the query and applied to the search, if any.
    pub time_window: Option<TimeWindow>,
    /// Why this result is degraded ("shed", "embedder down", ...), if it is.
    pub degraded: Option<String>,
    pub timings: StageTimings,
    pub deadline: Instant,
    pub finished_at: Instant,
}

impl ContextResult {
    /// A result with no hits for `t` (shed, refused): only the outcome, the reason and the time
    /// from receipt to `finished_at` are filled in.
    pub fn without_hits(
        t: &Transcript,
        rerank: RerankOutcome,
        degraded: String,
        deadline: Instant,
        finished_at: Instant,
    ) -> Self {
        ContextResult {
            namespace: t.namespace.clone(),
            conversation: t.conversation.clone(),
            utterance: t.utterance.clone(),
            is_final: t.is_final,
            text: t.text.clone(),
            hits: Vec::new(),
            capped: 0,
            floored: 0,
            rerank,
            time_window: None,
            degraded: Some(degraded),
            timings: StageTimings {
                total: finished_at.saturating_duration_since(t.received_at),
                ..Default::default()
            },
            deadline,
            finished_at,
        }
    }

    pub fn deadline_met(&self) -> bool {
        self.finished_at <= self.deadline
    }
}
