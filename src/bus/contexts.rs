//! `voice.context.<namespace>.<conversation>`: the engine's results published as context, and the loop that publishes them.

use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::watch;
use voicerag_actors::ContextResult;

use super::receive::stopped;
use super::state::BusState;
use super::wire::transcript_context_json;

impl BusState {
    pub(super) async fn publish_context(&self, result: &ContextResult) {
        self.stats.record_latency(result.timings.total);
        if result.degraded.is_some() {
            tracing::debug!(degraded = ?result.degraded, "degraded context");
        }
        let subject = self
            .subjects
            .context(&result.namespace, &result.conversation);
        self.publish_json(subject, &transcript_context_json(result))
            .await;
        self.stats
            .contexts_published
            .fetch_add(1, Ordering::Relaxed);
    }
}

pub(super) async fn results_loop(
    state: Arc<BusState>,
    mut results: futures::stream::BoxStream<'static, ContextResult>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let result = tokio::select! {
            biased;
            r = results.next() => r,
            _ = stopped(&mut stop) => return,
        };
        let Some(result) = result else { return };
        state.publish_context(&result).await;
        if result.is_final {
            state.inflight.done();
        }
    }
}
