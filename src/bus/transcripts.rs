//! `voice.transcript.<namespace>.<conversation>`: decoding transcripts, submitting them to the
//! engine, republishing finals to the memory stream, and an immediate shed answer when the engine
//! refuses one. A transcript on a wire v1 subject gets an error naming the v2 subject.

use async_nats::Subscriber;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::watch;
use voicerag_actors::{ContextResult, Memory, RerankOutcome, Transcript, memory_id};

use super::ContextService;
use super::receive::receive_until_stopped;
use super::state::BusState;
use super::wire::{WireError, decode_transcript};
use super::writer::JetStreamWriter;

/// The `utterance` of a payload that failed to decode, when it has one, for the error message.
fn utterance_hint(payload: &[u8], limit: usize) -> Option<String> {
    if payload.len() > limit {
        return None;
    }
    let value: Value = serde_json::from_slice(payload).ok()?;
    value
        .get("utterance")?
        .as_str()
        .map(|s| s.chars().take(256).collect())
}

pub(super) async fn transcript_loop<E: ContextService>(
    sub: Subscriber,
    state: Arc<BusState>,
    engine: Arc<E>,
    writer: Arc<JetStreamWriter>,
    stop: watch::Receiver<bool>,
) {
    let timeout = state.config.drain_timeout();
    receive_until_stopped(sub, stop, timeout, |message| {
        let state = state.clone();
        let engine = engine.clone();
        let writer = writer.clone();
        async move { handle_transcript(&state, &*engine, &writer, message).await }
    })
    .await;
}

async fn handle_transcript<E: ContextService>(
    state: &Arc<BusState>,
    engine: &E,
    writer: &Arc<JetStreamWriter>,
    message: async_nats::Message,
) {
    let received_at = Instant::now();
    state
        .stats
        .transcripts_received
        .fetch_add(1, Ordering::Relaxed);
    let subject = message.subject.as_str();
    let defaults = state.defaults();
    let names = state.subjects.names_of_transcript(subject);
    let decoded = match names {
        Some((namespace, conversation)) => decode_transcript(
            namespace,
            conversation,
            &message.payload,
            &defaults,
            received_at,
        ),
        None => Err(WireError::Invalid {
            field: "subject",
            reason: format!(
                "{subject} is a wire v1 subject: voicerag speaks v2, publish transcripts on \
                 {}",
                state.subjects.transcript("<namespace>", "<conversation>")
            ),
        }),
    };
    let transcript = match decoded {
        Ok(t) => t,
        Err(e) => {
            state
                .stats
                .transcripts_rejected
                .fetch_add(1, Ordering::Relaxed);
            let hint = utterance_hint(&message.payload, defaults.max_payload_bytes);
            let namespace = names.map(|(ns, _)| ns);
            state
                .errors
                .publish(subject, namespace, e.to_string(), hint)
                .await;
            return;
        }
    };
    if transcript.is_final && state.config.republish_finals {
        republish_final(state, writer, &transcript);
    }
    let is_final = transcript.is_final;
    if is_final {
        state.inflight.add();
    }
    if let Err(e) = engine.submit(transcript.clone()).await {
        // The engine refused it: the sender still gets an answer, empty and marked shed.
        if is_final {
            state.inflight.done();
        }
        state.stats.transcripts_shed.fetch_add(1, Ordering::Relaxed);
        state
            .publish_context(&shed_result(&transcript, &e.to_string()))
            .await;
    }
}

/// Sends a final user transcript to the memory stream, off the transcript path.
fn republish_final(state: &Arc<BusState>, writer: &Arc<JetStreamWriter>, t: &Transcript) {
    let memory = Memory {
        id: memory_id(&t.conversation, &t.utterance),
        namespace: t.namespace.clone(),
        conversation: t.conversation.clone(),
        speaker: t.speaker.clone(),
        text: t.text.clone(),
        ts_ms: chrono::Utc::now().timestamp_millis(),
        supersedes: Vec::new(),
        expires_at_ms: None,
    };
    let guard = state.inflight.enter();
    let state = state.clone();
    let writer = writer.clone();
    tokio::spawn(async move {
        let _guard = guard;
        if let Err(e) = writer.publish(std::slice::from_ref(&memory)).await {
            state
                .stats
                .republish_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, id = %memory.id, "final transcript not stored");
            let subject = state
                .subjects
                .memory(&memory.namespace, &memory.conversation);
            let reason = format!("final transcript {} not stored: {e}", memory.id);
            let utterance = memory.id.rsplit_once('/').map(|(_, u)| u.to_string());
            state
                .errors
                .publish(&subject, Some(&memory.namespace), reason, utterance)
                .await;
        }
    });
}

fn shed_result(t: &Transcript, reason: &str) -> ContextResult {
    let now = Instant::now();
    ContextResult::without_hits(
        t,
        RerankOutcome::Skipped("shed".into()),
        format!("shed: {reason}"),
        now,
        now,
    )
}
