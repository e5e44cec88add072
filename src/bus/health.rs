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
    let consumer = state.consumer.lock().await.clone();
    let stream = match consumer {
        Some(c) => match c.get_info().await {
            Ok(info) => json!({
                "name": state.config.stream,
                "consumer": info.name,
                "lag": info.num_pending,
                "ack_pending": info.num_ack_pending,
            }),
            Err(e) => json!({"name": state.config.stream, "error": e.to_string()}),
        },
        None => json!({"name": state.config.stream, "error": "consumer not ready"}),
    };
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
        "engine": engine.health(),
        "store": store,
        "stream": stream,
        "bus": state.stats.snapshot(),
    })
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
