//! What every task of one running bus shares: settings, the client, counters, the error publisher
//! and the work in flight that the graceful stop waits for.

use async_nats::{Client, jetstream};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::config::NatsConfig;
use super::forget::ForgetLedger;
use super::memory_consumer::LiveConsumers;
use super::stats::{BusStats, ErrorPublisher};
use super::subjects::Subjects;
use super::wire::WireDefaults;

/// Work the graceful stop waits for: queries being answered, final transcripts awaiting their
/// result, memories being republished.
#[derive(Debug, Default)]
pub(super) struct InFlight(AtomicUsize);

impl InFlight {
    pub(super) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }
    pub(super) fn add(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    pub(super) fn done(&self) {
        // Saturating: results of transcripts submitted by someone else must not underflow.
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
    pub(super) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    pub(super) async fn wait_idle(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while self.count() > 0 {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

pub(super) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.done();
    }
}

/// What every task of one bus shares.
pub(super) struct BusState {
    pub(super) config: NatsConfig,
    pub(super) subjects: Subjects,
    pub(super) client: Client,
    pub(super) js: jetstream::Context,
    /// Forget markers this replica's consumer applied (the forget handler waits on them).
    pub(super) ledger: Arc<ForgetLedger>,
    pub(super) stats: Arc<BusStats>,
    pub(super) errors: ErrorPublisher,
    pub(super) inflight: Arc<InFlight>,
    pub(super) started: Instant,
    pub(super) consumers: LiveConsumers,
    pub(super) store_stats: Arc<dyn Fn() -> Value + Send + Sync>,
}

impl BusState {
    pub(super) fn defaults(&self) -> WireDefaults {
        WireDefaults {
            max_payload_bytes: self.config.max_payload_bytes,
        }
    }

    pub(super) async fn publish_json(&self, subject: String, value: &Value) {
        match serde_json::to_vec(value) {
            Ok(payload) => {
                if let Err(e) = self.client.publish(subject, payload.into()).await {
                    tracing::warn!(error = %e, "publish failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode JSON"),
        }
    }
}
