//! `voice.query.<namespace>`: explicit queries, request/reply, with a bound on how many run at
//! once. A query on the wire v1 subject `voice.query` is answered with an error naming v2.

use async_nats::Subscriber;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Semaphore, watch};

use super::ContextService;
use super::receive::receive_until_stopped;
use super::state::BusState;
use super::wire::{WIRE_VERSION, WireError, context_json, decode_query};

pub(super) async fn query_loop<E: ContextService>(
    sub: Subscriber,
    state: Arc<BusState>,
    engine: Arc<E>,
    stop: watch::Receiver<bool>,
) {
    let timeout = state.config.drain_timeout();
    let limit = Arc::new(Semaphore::new(state.config.max_concurrent_queries));
    let counter = Arc::new(AtomicU64::new(0));
    receive_until_stopped(sub, stop, timeout, |message| {
        let state = state.clone();
        let engine = engine.clone();
        let limit = limit.clone();
        let counter = counter.clone();
        async move {
            // Waiting for a permit here is the backpressure: the subscription buffers the rest.
            let Ok(permit) = limit.acquire_owned().await else {
                return;
            };
            let guard = state.inflight.enter();
            tokio::spawn(async move {
                let _permit = permit;
                let _guard = guard;
                let n = counter.fetch_add(1, Ordering::Relaxed);
                answer_query(&state, &*engine, message, n).await;
            });
        }
    })
    .await;
}

async fn answer_query<E: ContextService>(
    state: &BusState,
    engine: &E,
    message: async_nats::Message,
    n: u64,
) {
    let subject = message.subject.as_str();
    let namespace = state.subjects.namespace_of_query(subject);
    let Some(reply) = message.reply.clone() else {
        state.stats.queries_rejected.fetch_add(1, Ordering::Relaxed);
        state
            .errors
            .publish(
                subject,
                namespace,
                "query without a reply subject".into(),
                None,
            )
            .await;
        return;
    };
    let fallback = || {
        format!(
            "{}-{}-{n}",
            state.config.replica_id,
            state.started.elapsed().as_micros()
        )
    };
    let decoded = match namespace {
        Some(ns) => decode_query(ns, &message.payload, &state.defaults(), fallback),
        None => Err(WireError::Invalid {
            field: "subject",
            reason: format!(
                "{subject} is the wire v1 query subject: voicerag speaks v2, send queries to {}",
                state.subjects.query("<namespace>")
            ),
        }),
    };
    let answer = match decoded {
        Err(e) => {
            state.stats.queries_rejected.fetch_add(1, Ordering::Relaxed);
            state
                .errors
                .publish(subject, namespace, e.to_string(), None)
                .await;
            json!({"v": WIRE_VERSION, "error": e.to_string()})
        }
        Ok(query) => {
            let id = query.id.clone();
            match engine.query(query).await {
                Ok(result) => {
                    state.stats.queries_answered.fetch_add(1, Ordering::Relaxed);
                    context_json(&result, &id)
                }
                Err(e) => {
                    state.stats.queries_rejected.fetch_add(1, Ordering::Relaxed);
                    json!({"v": WIRE_VERSION, "id": id, "error": e.to_string()})
                }
            }
        }
    };
    state.publish_json(reply.to_string(), &answer).await;
}
