//! [`JetStreamWriter`]: in bus mode every memory takes one durable path, a JetStream publish with
//! `Nats-Msg-Id` = `<namespace>.<id>` (so retries dedupe, and two users' equal ids do not),
//! acknowledged by the server before `write` returns. The store gets it back through the
//! replica's durable consumer.

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use voicerag_actors::{AfterHang, Memory, MemoryWriter, StageError};

use super::BusError;
use super::stats::BusStats;
use super::subjects::Subjects;
use super::wire::{MemoryMsg, dedupe_id, validate_token};

/// Publishes memories to `voice.memory.<namespace>.<conversation>` and waits for the stream's ack.
#[derive(Clone)]
pub struct JetStreamWriter {
    js: jetstream::Context,
    subjects: Subjects,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    /// Counts the acks that say "duplicate".
    stats: Arc<BusStats>,
}

impl JetStreamWriter {
    /// `runtime` runs the publishes when [`MemoryWriter::write`] is called from a blocking thread.
    pub fn new(
        js: jetstream::Context,
        subjects: Subjects,
        runtime: tokio::runtime::Handle,
        timeout: Duration,
        stats: Arc<BusStats>,
    ) -> Self {
        Self {
            js,
            subjects,
            runtime,
            timeout,
            stats,
        }
    }

    /// Publishes the batch (pipelined) and returns once the server acked every memory.
    pub async fn publish(&self, batch: &[Memory]) -> Result<(), BusError> {
        let mut acks = Vec::with_capacity(batch.len());
        for memory in batch {
            validate_token("namespace", &memory.namespace)
                .and_then(|()| validate_token("conversation", &memory.conversation))
                .map_err(|e| BusError::JetStream(format!("memory {}: {e}", memory.id)))?;
            let payload = serde_json::to_vec(&MemoryMsg::from_memory(memory))
                .map_err(|e| BusError::JetStream(format!("memory {}: {e}", memory.id)))?;
            let message = PublishMessage::build()
                .payload(payload.into())
                .message_id(dedupe_id(&memory.namespace, &memory.id));
            let subject = self
                .subjects
                .memory(&memory.namespace, &memory.conversation);
            let ack =
                self.js.send_publish(subject, message).await.map_err(|e| {
                    BusError::JetStream(format!("publish memory {}: {e}", memory.id))
                })?;
            acks.push((memory.id.as_str(), ack));
        }
        for (id, ack) in acks {
            let ack = ack
                .await
                .map_err(|e| BusError::JetStream(format!("memory {id} not acked: {e}")))?;
            if ack.duplicate {
                // Already in the stream (a retry, or both memory paths of one final): counted.
                self.stats
                    .memories_duplicate
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(id, "memory publish was a duplicate");
            }
        }
        Ok(())
    }
}

impl MemoryWriter for JetStreamWriter {
    fn write(&self, batch: &[Memory]) -> Result<(), StageError> {
        // Run on the runtime and wait on a plain channel: works from any non-async thread without
        // the panics of `Handle::block_on` inside a runtime context.
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = self.clone();
        let batch = batch.to_vec();
        self.runtime.spawn(async move {
            let _ = tx.send(writer.publish(&batch).await);
        });
        match rx.recv_timeout(self.timeout) {
            Ok(result) => result.map_err(|e| StageError::new(e.to_string())),
            Err(_) => Err(StageError::new(format!(
                "JetStream publish not acknowledged within {:?}",
                self.timeout
            ))),
        }
    }
    /// A publish holds no lock a later one needs (it waits on its own ack).
    fn after_hang(&self) -> Result<AfterHang<dyn MemoryWriter>, StageError> {
        Ok(AfterHang::Reuse)
    }
}
