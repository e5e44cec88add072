//! [`JetStreamWriter`]: in bus mode every memory takes one durable path, a JetStream publish with
//! `Nats-Msg-Id` = the memory id (so retries dedupe), acknowledged by the server before `write`
//! returns. The store gets it back through the replica's durable consumer.

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use std::time::Duration;
use voicerag_actors::{Memory, MemoryWriter, StageError};

use super::BusError;
use super::subjects::Subjects;
use super::wire::{MemoryMsg, validate_token};

/// Publishes memories to `voice.memory.<conversation>` and waits for the stream's ack.
#[derive(Clone)]
pub struct JetStreamWriter {
    js: jetstream::Context,
    subjects: Subjects,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl JetStreamWriter {
    /// `runtime` runs the publishes when [`MemoryWriter::write`] is called from a blocking thread.
    pub fn new(
        js: jetstream::Context,
        subjects: Subjects,
        runtime: tokio::runtime::Handle,
        timeout: Duration,
    ) -> Self {
        Self {
            js,
            subjects,
            runtime,
            timeout,
        }
    }

    /// Publishes the batch (pipelined) and returns once the server acked every memory.
    pub async fn publish(&self, batch: &[Memory]) -> Result<(), BusError> {
        let mut acks = Vec::with_capacity(batch.len());
        for memory in batch {
            validate_token("conversation", &memory.conversation)
                .map_err(|e| BusError::JetStream(format!("memory {}: {e}", memory.id)))?;
            let payload = serde_json::to_vec(&MemoryMsg::from_memory(memory))
                .map_err(|e| BusError::JetStream(format!("memory {}: {e}", memory.id)))?;
            let message = PublishMessage::build()
                .payload(payload.into())
                .message_id(&memory.id);
            let ack = self
                .js
                .send_publish(self.subjects.memory(&memory.conversation), message)
                .await
                .map_err(|e| BusError::JetStream(format!("publish memory {}: {e}", memory.id)))?;
            acks.push((memory.id.as_str(), ack));
        }
        for (id, ack) in acks {
            ack.await
                .map_err(|e| BusError::JetStream(format!("memory {id} not acked: {e}")))?;
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
}
