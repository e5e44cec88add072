//! `voice.health`: health reports on request and the replica's heartbeat.

use async_nats::Subscriber;
use futures::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::watch;

use super::ContextService;
use super::receive::stopped;
use super::state::BusState;
use super::wire::WIRE_VERSION;

async fn health_report<E: ContextService>(state: &BusState, engine: &E, status: &str) -> Value {
    let stream = stream_report(state).await;
    // Store stats walk the data directory: off the runtime's threads.
    let stats = Arc::clone(&state.store_stats);
    let store = tokio::task::spawn_blocking(move || stats())
        .await
        .unwrap_or_else(|e| json!({"error": format!("store stats: {e}")}));
    json!({
        "v": WIRE_VERSION,
        "replica": state.config.replica_id,
        "status": status,
        "uptime_s": state.started.elapsed().as_secs(),
        "connection": format!("{:?}", state.client.connection_state()).to_lowercase(),
        "partitions": state.config.partitions,
        "partition_count": state.config.partition_count,
        "engine": engine.health(),
        "store": store,
        "stream": stream,
        "bus": state.stats.snapshot(),
    })
}

/// The memory stream as this replica consumes it: `lag` (messages not yet delivered) and
/// `ack_pending` summed over its consumers, and each consumer's own (per owned partition when
/// sharded).
async fn stream_report(state: &BusState) -> Value {
    let consumers = state.consumers.lock().await.clone();
    let name = &state.config.stream;
    if consumers.is_empty() {
        return json!({"name": name, "error": "consumer not ready"});
    }
    let (mut lag, mut ack_pending) = (0u64, 0u64);
    let mut each = Vec::new();
    let mut failed = None;
    for (partition, consumer) in consumers {
        match consumer.get_info().await {
            Ok(info) => {
                lag += info.num_pending;
                ack_pending += info.num_ack_pending as u64;
                each.push(json!({
                    "partition": partition,
                    "consumer": info.name,
                    "lag": info.num_pending,
                    "ack_pending": info.num_ack_pending,
                }));
            }
            Err(e) => {
                failed = Some(e.to_string());
                each.push(json!({"partition": partition, "error": e.to_string()}));
            }
        }
    }
    let mut report = json!({
        "name": name,
        "lag": lag,
        "ack_pending": ack_pending,
        "consumers": each,
    });
    if state.config.sharding().is_none() {
        // One consumer: its name where it always was.
        report["consumer"] = json!(state.config.durable_name(None));
    }
    if let Some(e) = failed {
        report["error"] = json!(e);
    }
    report
}

pub(super) async fn health_loop<E: ContextService>(
    mut sub: Subscriber,
    state: Arc<BusState>,
    engine: Arc<E>,
    mut stop: watch::Receiver<bool>,
) {
    let mut beat = tokio::time::interval(state.config.heartbeat());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let heartbeat = state.subjects.heartbeat(&state.config.replica_id);
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            m = sub.next() => match m {
                Some(m) => {
                    if let Some(reply) = m.reply {
                        let report = health_report(&state, &*engine, "up").await;
                        state.publish_json(reply.to_string(), &report).await;
                    }
                }
                None => return,
            },
            _ = beat.tick() => {
                let report = health_report(&state, &*engine, "up").await;
                state.publish_json(heartbeat.clone(), &report).await;
            }
        }
    }
    // Tell watchers this replica is leaving on purpose, not crashing.
    let report =
        json!({"v": WIRE_VERSION, "replica": state.config.replica_id, "status": "stopping"});
    state.publish_json(heartbeat, &report).await;
}
