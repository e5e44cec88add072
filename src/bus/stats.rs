//! [`BusStats`]: the counters of one running bus, and the [`ErrorPublisher`] that reports unusable
//! input on `voice.errors` and counts it there.

use async_nats::Client;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::subjects::Subjects;
use super::wire::{ErrorMsg, validate_token};

/// Counters of one running bus, also reported in health messages.
#[derive(Debug)]
pub struct BusStats {
    pub transcripts_received: AtomicU64,
    pub transcripts_rejected: AtomicU64,
    pub contexts_published: AtomicU64,
    /// Transcripts the engine refused (overload, shutdown): answered with an empty shed context.
    pub transcripts_shed: AtomicU64,
    pub queries_answered: AtomicU64,
    pub queries_rejected: AtomicU64,
    pub memories_committed: AtomicU64,
    /// Memories that could not be decoded: reported on `voice.errors` and terminated.
    pub memories_rejected: AtomicU64,
    /// Memories the store refused (over a limit, empty): reported on `voice.errors` and
    /// terminated, never acked as stored.
    pub memories_refused: AtomicU64,
    /// Memory publishes the stream acked as duplicates (`Nats-Msg-Id` seen in the window): the
    /// memory was already in the stream.
    pub memories_duplicate: AtomicU64,
    pub sink_failures: AtomicU64,
    /// Forget requests this replica carried out (marker published, stream purged).
    pub forgets_applied: AtomicU64,
    /// Forget requests refused (bad input) or failed (stream trouble).
    pub forgets_rejected: AtomicU64,
    /// Forget markers this replica's consumer applied to its store.
    pub forget_markers_applied: AtomicU64,
    pub republish_failures: AtomicU64,
    pub errors_published: AtomicU64,
    /// Context latency (receipt to result), microseconds.
    latency_us: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
}

impl Default for BusStats {
    fn default() -> Self {
        let histogram = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
            .unwrap_or_else(|_| hdrhistogram::Histogram::new(3).expect("3 sigfig is valid"));
        Self {
            transcripts_received: AtomicU64::new(0),
            transcripts_rejected: AtomicU64::new(0),
            contexts_published: AtomicU64::new(0),
            transcripts_shed: AtomicU64::new(0),
            queries_answered: AtomicU64::new(0),
            queries_rejected: AtomicU64::new(0),
            memories_committed: AtomicU64::new(0),
            memories_rejected: AtomicU64::new(0),
            memories_refused: AtomicU64::new(0),
            memories_duplicate: AtomicU64::new(0),
            sink_failures: AtomicU64::new(0),
            forgets_applied: AtomicU64::new(0),
            forgets_rejected: AtomicU64::new(0),
            forget_markers_applied: AtomicU64::new(0),
            republish_failures: AtomicU64::new(0),
            errors_published: AtomicU64::new(0),
            latency_us: std::sync::Mutex::new(histogram),
        }
    }
}

impl BusStats {
    pub(crate) fn record_latency(&self, d: Duration) {
        if let Ok(mut h) = self.latency_us.lock() {
            h.saturating_record(d.as_micros().max(1) as u64);
        }
    }

    /// Counters and context latency percentiles as JSON.
    pub fn snapshot(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (p50, p99) = self
            .latency_us
            .lock()
            .map(|h| {
                (
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0,
                )
            })
            .unwrap_or((0.0, 0.0));
        json!({
            "transcripts_received": get(&self.transcripts_received),
            "transcripts_rejected": get(&self.transcripts_rejected),
            "transcripts_shed": get(&self.transcripts_shed),
            "contexts_published": get(&self.contexts_published),
            "queries_answered": get(&self.queries_answered),
            "queries_rejected": get(&self.queries_rejected),
            "memories_committed": get(&self.memories_committed),
            "memories_rejected": get(&self.memories_rejected),
            "memories_refused": get(&self.memories_refused),
            "memories_duplicate": get(&self.memories_duplicate),
            "sink_failures": get(&self.sink_failures),
            "forgets_applied": get(&self.forgets_applied),
            "forgets_rejected": get(&self.forgets_rejected),
            "forget_markers_applied": get(&self.forget_markers_applied),
            "republish_failures": get(&self.republish_failures),
            "errors_published": get(&self.errors_published),
            "context_latency_ms": {"p50": p50, "p99": p99},
        })
    }
}

/// Publishes `{"v":2,"subject","namespace"?,"reason","utterance"?}` on `voice.errors.<namespace>`,
/// or on `voice.errors` when the namespace is unknown or not a valid subject token.
#[derive(Clone)]
pub(crate) struct ErrorPublisher {
    pub(crate) client: Client,
    pub(crate) subjects: Subjects,
    pub(crate) stats: Arc<BusStats>,
}

impl ErrorPublisher {
    pub async fn publish(
        &self,
        subject: &str,
        namespace: Option<&str>,
        reason: String,
        utterance: Option<String>,
    ) {
        tracing::debug!(subject, reason = %reason, "unusable input");
        self.stats.errors_published.fetch_add(1, Ordering::Relaxed);
        let namespace = namespace.filter(|ns| validate_token("namespace", ns).is_ok());
        let msg = ErrorMsg::new(subject, namespace, reason, utterance);
        let Ok(payload) = serde_json::to_vec(&msg) else {
            return;
        };
        if let Err(e) = self
            .client
            .publish(self.subjects.errors(namespace), payload.into())
            .await
        {
            tracing::warn!(error = %e, "cannot publish on the errors subject");
        }
    }
}
