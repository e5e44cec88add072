//! `voice.forget.<namespace>`: forgetting everywhere, request/reply (queue group). The replica
//! that takes a request
//! 1. publishes a forget marker into the memory stream (`voice.memory.<namespace>._forget`, header
//!    `Voicerag-Forget`), so every replica's durable consumer applies it in stream order;
//! 2. removes what it forgets from the stream, but only messages older than the marker (the marker
//!    stays until the stream's limits drop it): a conversation or namespace by a filtered purge
//!    below the marker's sequence, an id by deleting the messages that decode to it;
//! 3. waits (up to `request_timeout_ms`) for its own consumer to apply the marker and replies with
//!    how many memories it forgot and how many stream messages it removed.
//!
//! A replica built later from the stream never sees a forgotten memory; a marker whose data is
//! gone already forgets nothing. Sharded, the stream's transform puts the marker in its
//! namespace's partition with the memories, so the owners of that partition apply it; the replica
//! that took the request owns it too (the server mapped the request to the same partition).

use async_nats::HeaderMap;
use async_nats::jetstream::stream::DeleteMessageErrorKind;
use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

use super::BusError;
use super::config::NatsConfig;
use super::receive::receive_until_stopped;
use super::state::BusState;
use super::subjects::Subjects;
use super::wire::{
    FORGET_CONVERSATION, FORGET_HEADER, Forget, ForgetScope, MemoryOrigin, WIRE_VERSION, WireError,
    decode_forget, decode_memory,
};

/// Markers applied by this replica's consumer, and requests waiting for theirs.
#[derive(Debug, Default)]
pub(crate) struct ForgetLedger {
    inner: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    waiting: HashMap<u64, oneshot::Sender<u64>>,
    /// Recently applied markers (stream sequence, memories forgotten), for a request whose
    /// marker was applied before it started waiting.
    applied: VecDeque<(u64, u64)>,
}

const LEDGER_KEEP: usize = 1024;

impl ForgetLedger {
    /// The consumer applied the marker at `seq`, forgetting `count` memories.
    pub(crate) fn applied(&self, seq: u64, count: u64) {
        let Ok(mut ledger) = self.inner.lock() else {
            return;
        };
        if let Some(tx) = ledger.waiting.remove(&seq) {
            let _ = tx.send(count);
            return;
        }
        if ledger.applied.len() >= LEDGER_KEEP {
            ledger.applied.pop_front();
        }
        ledger.applied.push_back((seq, count));
    }

    /// Resolves with the count once the marker at `seq` is applied.
    fn wait(&self, seq: u64) -> oneshot::Receiver<u64> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut ledger) = self.inner.lock() {
            if let Some(&(_, count)) = ledger.applied.iter().find(|(s, _)| *s == seq) {
                let _ = tx.send(count);
            } else {
                ledger.waiting.insert(seq, tx);
            }
        }
        rx
    }

    fn abandon(&self, seq: u64) {
        if let Ok(mut ledger) = self.inner.lock() {
            ledger.waiting.remove(&seq);
        }
    }
}

/// Whether a memory-stream message is a forget marker.
pub(crate) fn is_marker(headers: Option<&HeaderMap>) -> bool {
    headers.is_some_and(|h| h.get(FORGET_HEADER).is_some())
}

pub(super) async fn forget_loop(
    sub: async_nats::Subscriber,
    state: Arc<BusState>,
    stop: watch::Receiver<bool>,
) {
    let timeout = state.config.drain_timeout();
    receive_until_stopped(sub, stop, timeout, |message| {
        let state = state.clone();
        async move {
            // One at a time: forgets are rare, and their markers keep request order.
            let _guard = state.inflight.enter();
            answer_forget(&state, message).await;
        }
    })
    .await;
}

async fn answer_forget(state: &BusState, message: async_nats::Message) {
    let subject = message.subject.as_str();
    let namespace = state.subjects.namespace_of_forget(subject);
    let decoded = match namespace {
        Some(ns) => decode_forget(ns, &message.payload, &state.defaults()),
        None => Err(WireError::Invalid {
            field: "subject",
            reason: format!(
                "{subject} names no namespace: send forgets to {}",
                state.subjects.forget("<namespace>")
            ),
        }),
    };
    let answer = match decoded {
        Err(e) => {
            state.stats.forgets_rejected.fetch_add(1, Ordering::Relaxed);
            state
                .errors
                .publish(subject, namespace, e.to_string(), None)
                .await;
            json!({"v": WIRE_VERSION, "error": e.to_string()})
        }
        Ok(forget) => match forget_everywhere(state, &forget).await {
            Ok(answer) => {
                state.stats.forgets_applied.fetch_add(1, Ordering::Relaxed);
                answer
            }
            Err(e) => {
                state.stats.forgets_rejected.fetch_add(1, Ordering::Relaxed);
                state
                    .errors
                    .publish(subject, Some(&forget.namespace), e.clone(), None)
                    .await;
                json!({"v": WIRE_VERSION, "namespace": forget.namespace, "error": e})
            }
        },
    };
    match message.reply {
        Some(reply) => state.publish_json(reply.to_string(), &answer).await,
        None => tracing::debug!(
            subject,
            "forget without a reply subject: applied, not answered"
        ),
    }
}

/// Marker, stream purge, local result.
async fn forget_everywhere(state: &BusState, forget: &Forget) -> Result<Value, String> {
    let payload = serde_json::to_vec(&forget.to_msg()).map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    headers.insert(FORGET_HEADER, forget.scope_name());
    let marker_subject = state
        .subjects
        .memory(&forget.namespace, FORGET_CONVERSATION);
    let ack = state
        .js
        .publish_with_headers(marker_subject, headers, payload.into())
        .await
        .map_err(|e| format!("cannot publish the forget marker: {e}"))?
        .await
        .map_err(|e| format!("forget marker not acknowledged by the stream: {e}"))?;
    let marker = ack.sequence;
    let waiting = state.ledger.wait(marker);
    let purged = purge_before(state, forget, marker).await.map_err(|e| {
        format!(
            "forget marker {marker} published (every replica applies it), but the stream still \
             holds the memories: {e}; send the forget again"
        )
    })?;
    let within = Duration::from_millis(state.config.request_timeout_ms);
    let forgotten = match tokio::time::timeout(within, waiting).await {
        Ok(Ok(count)) => Some(count),
        _ => {
            state.ledger.abandon(marker);
            None
        }
    };
    let mut answer = json!({
        "v": WIRE_VERSION,
        "namespace": forget.namespace,
        "scope": forget.scope_name(),
        "marker_seq": marker,
        "stream_purged": purged,
        "applied_locally": forgotten.is_some(),
        "forgotten": forgotten,
        "replica": state.config.replica_id,
    });
    match &forget.scope {
        ForgetScope::Id(id) => answer["id"] = json!(id),
        ForgetScope::Conversation(c) => answer["conversation"] = json!(c),
        ForgetScope::Namespace => {}
    }
    Ok(answer)
}

/// Removes from the stream every message of the forget's scope older than the marker; returns
/// how many.
async fn purge_before(state: &BusState, forget: &Forget, marker: u64) -> Result<u64, String> {
    let stream = state
        .js
        .get_stream(&state.config.stream)
        .await
        .map_err(|e| format!("stream {}: {e}", state.config.stream))?;
    let filter = match &forget.scope {
        ForgetScope::Id(id) => return delete_id(state, &stream, forget, id, marker).await,
        // As the stream stores them: behind the partition token when sharded.
        ForgetScope::Conversation(c) => state.subjects.stored_memory(&forget.namespace, c),
        ForgetScope::Namespace => state.subjects.stored_memory_namespace(&forget.namespace),
    };
    let response = stream
        .purge()
        .filter(filter)
        .sequence(marker)
        .await
        .map_err(|e| format!("purge: {e}"))?;
    Ok(response.purged)
}

/// Deletes the namespace's messages below `marker` that decode to memory `id` (the same decoding
/// every consumer applies, so the same ids).
async fn delete_id(
    state: &BusState,
    stream: &stream::Stream,
    forget: &Forget,
    id: &str,
    marker: u64,
) -> Result<u64, String> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: state.subjects.stored_memory_namespace(&forget.namespace),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("scan: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("scan: {e}"))?;
    let mut found = Vec::new();
    let within = Duration::from_millis(state.config.request_timeout_ms);
    // The marker itself matches the filter: the scan ends there.
    loop {
        let message = match tokio::time::timeout(within, messages.next()).await {
            Err(_) => return Err("scan: no message within the request timeout".into()),
            Ok(None) => return Err("scan: the stream ended".into()),
            Ok(Some(Err(e))) => return Err(format!("scan: {e}")),
            Ok(Some(Ok(m))) => m,
        };
        let info = message.info().map_err(|e| format!("scan: {e}"))?;
        let seq = info.stream_sequence;
        if seq >= marker {
            break;
        }
        if is_marker(message.headers.as_ref()) {
            continue;
        }
        let Some((ns, conversation)) = state.subjects.names_of_memory(message.subject.as_str())
        else {
            continue;
        };
        let origin = MemoryOrigin::of(message.headers.as_ref(), Some(seq));
        let decoded = decode_memory(
            ns,
            conversation,
            &message.payload,
            &origin,
            &state.defaults(),
            0,
        );
        if decoded.is_ok_and(|m| m.id == id) {
            found.push(seq);
        }
    }
    let mut deleted = 0;
    for seq in found {
        match stream.delete_message(seq).await {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            // Gone already (a concurrent purge, the stream's limits): nothing to remove.
            Err(e)
                if matches!(e.kind(), DeleteMessageErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND) => {}
            Err(e) => return Err(format!("delete message {seq}: {e}")),
        }
    }
    Ok(deleted)
}

/// Sends a forget to a running deployment (`voicerag forget --nats-url`) and returns its reply:
/// what the replica that took it forgot and purged, or `{"error"}`.
pub async fn request_forget(config: &NatsConfig, forget: &Forget) -> Result<Value, BusError> {
    config.validate()?;
    let client = config
        .connect_options()
        .await?
        .connect(config.urls.clone())
        .await
        .map_err(|e| BusError::Connect(e.to_string()))?;
    let subject = Subjects::new(&config.subject_prefix).forget(&forget.namespace);
    let payload = serde_json::to_vec(&forget.to_msg())
        .map_err(|e| BusError::Nats(format!("cannot encode the forget: {e}")))?;
    // The replica waits up to request_timeout_ms for its own consumer, after the stream work.
    let within = Duration::from_millis(config.request_timeout_ms.saturating_mul(3));
    let reply = tokio::time::timeout(within, client.request(subject.clone(), payload.into()))
        .await
        .map_err(|_| BusError::Nats(format!("no answer on {subject} within {within:?}")))?
        .map_err(|e| BusError::Nats(format!("{subject}: {e}")))?;
    let _ = client.drain().await;
    serde_json::from_slice(&reply.payload)
        .map_err(|e| BusError::Nats(format!("{subject}: the reply is not JSON: {e}")))
}
