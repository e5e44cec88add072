//! The memory stream and this replica's durable pull consumer: memories are acked only after the
//! sink's commit returned, so a crash or a server restart redelivers instead of losing. A memory
//! that can never be stored (undecodable, or refused by the store) is never acked: it is reported
//! on `voice.errors.<namespace>` with the reason and terminated, and counted. A forget marker
//! (header `Voicerag-Forget`) is applied to the sink in stream order: what came before it is
//! committed first, what comes after waits for it.

use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use futures::{FutureExt, StreamExt};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

use super::config::{NatsConfig, reconnect_delay};
use super::forget::{ForgetLedger, is_marker};
use super::stats::{BusStats, ErrorPublisher};
use super::subjects::Subjects;
use super::wire::{MemoryOrigin, WireDefaults, WireError, decode_forget, decode_memory};
use super::{BusError, MemorySink};

/// Gets the memory stream, creating it when missing (sharded: with the subject transform that puts
/// each memory's namespace partition in its subject); an existing stream is never recreated or
/// reconfigured (its messages are the durable memory), and must be sharded as configured.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
    subjects: &Subjects,
) -> Result<stream::Stream, BusError> {
    let unlimited = |v: i64| if v == 0 { -1 } else { v };
    let wanted = subjects.memory_wildcard();
    let transform =
        subjects
            .memory_transform()
            .map(|(source, destination)| stream::SubjectTransform {
                source,
                destination,
            });
    let stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![subjects.memory_wildcard()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(config.stream_max_age_s),
            max_bytes: unlimited(config.stream_max_bytes),
            max_messages: -1,
            duplicate_window: Duration::from_secs(config.duplicate_window_s),
            num_replicas: config.stream_replicas,
            description: Some("voicerag memories".into()),
            subject_transform: transform.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::JetStream(format!("stream {}: {e}", config.stream)))?;
    // An existing stream is kept as it is, but it must capture our memory subjects.
    let existing = &stream.cached_info().config.subjects;
    if !existing.iter().any(|s| subject_covers(s, &wanted)) {
        return Err(BusError::Config(format!(
            "stream {} exists with subjects {existing:?}, which do not capture {wanted} (the \
             wire v2 memory subjects): fix nats.stream or nats.subject_prefix, or see \
             \"Migrating from wire v1\" in the README",
            config.stream
        )));
    }
    let existing = stream.cached_info().config.subject_transform.as_ref();
    let shown = |t: Option<&stream::SubjectTransform>| match t {
        Some(t) => format!("{} -> {}", t.source, t.destination),
        None => "none".to_string(),
    };
    let same = match (existing, transform.as_ref()) {
        (None, None) => true,
        (Some(a), Some(b)) => a.source == b.source && a.destination == b.destination,
        _ => false,
    };
    if !same {
        return Err(BusError::Config(format!(
            "stream {} has the subject transform {}, but nats.partition_count = {} needs {}: \
             every replica must agree with the stream on the partitions (a sharded deployment \
             starts on a new stream; see README \"Scale-out\")",
            config.stream,
            shown(existing),
            config.partition_count,
            shown(transform.as_ref()),
        )));
    }
    Ok(stream)
}

/// What is wrong, if anything, with a memory stream that keeps messages for `stream_max_age`
/// (zero: for ever) while the store forgets memories older than `retention_max_age_s` (0: never):
/// a stream that keeps them longer hands forgotten memories to a replica built later.
pub fn retention_mismatch(
    stream_max_age: Duration,
    retention_max_age_s: u64,
    stream: &str,
) -> Option<String> {
    if retention_max_age_s == 0 {
        return None;
    }
    let kept = if stream_max_age.is_zero() {
        "for ever".to_string()
    } else if stream_max_age.as_secs() > retention_max_age_s {
        format!("for {} s", stream_max_age.as_secs())
    } else {
        return None;
    };
    Some(format!(
        "store.retention_max_age_s is {retention_max_age_s} s, but the memory stream {stream} \
         keeps memories {kept}: a replica built later from it replays memories retention already \
         forgot; set the stream's max age to the retention (`nats stream edit {stream} --max-age \
         {retention_max_age_s}s`; voicerag never reconfigures an existing stream)"
    ))
}

/// Whether stream subject `pattern` captures every subject matching `subject` (both may hold
/// `*` and `>` wildcards).
fn subject_covers(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// This replica's durable consumer of `partition` (`None`: of the whole stream, a full copy;
/// sharded: one per owned partition, filtered to it). A new one starts at the stream's beginning,
/// which is how a replica added later catches up its partitions. An existing one keeps its
/// position; its ack_wait and max_ack_pending follow the configuration, so a shorter ack_wait
/// (faster recovery after a crash) applies to consumers made before.
pub async fn ensure_consumer(
    stream: &stream::Stream,
    config: &NatsConfig,
    subjects: &Subjects,
    partition: Option<u32>,
) -> Result<jetstream::consumer::PullConsumer, BusError> {
    let durable = config.durable_name(partition);
    let filter_subject = partition
        .map(|p| subjects.stored_memory_partition(p))
        .unwrap_or_default();
    let wanted = pull::Config {
        durable_name: Some(durable.clone()),
        filter_subject: filter_subject.clone(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        ack_wait: Duration::from_millis(config.ack_wait_ms),
        max_ack_pending: (config.memory_batch * 4) as i64,
        description: Some(match partition {
            None => format!("memory replica {}", config.replica_id),
            Some(p) => format!("memory replica {}, partition {p}", config.replica_id),
        }),
        ..Default::default()
    };
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(&durable, wanted.clone())
        .await
        .map_err(|e| BusError::JetStream(format!("consumer {durable}: {e}")))?;
    let existing = &consumer.cached_info().config;
    if existing.filter_subject != filter_subject {
        // A durable with this name but another filter would feed this replica other memories.
        return Err(BusError::Config(format!(
            "consumer {durable} exists with filter {:?}, not {filter_subject:?}: delete it \
             (`nats consumer rm {} {durable}`) to rebuild it from the stream",
            existing.filter_subject, config.stream
        )));
    }
    if existing.ack_wait != wanted.ack_wait || existing.max_ack_pending != wanted.max_ack_pending {
        let update = pull::Config {
            // Fields the configuration does not set stay as the consumer has them.
            filter_subject: existing.filter_subject.clone(),
            filter_subjects: existing.filter_subjects.clone(),
            ..wanted
        };
        consumer = stream
            .update_consumer(update)
            .await
            .map_err(|e| BusError::JetStream(format!("consumer {durable}: update: {e}")))?;
    }
    Ok(consumer)
}

/// The live durable consumers of one replica by partition (`None`: the whole stream), for the
/// stream lag in health reports.
pub(crate) type LiveConsumers =
    Arc<tokio::sync::Mutex<BTreeMap<Option<u32>, jetstream::consumer::PullConsumer>>>;

pub(crate) struct MemoryConsumer<S> {
    pub js: jetstream::Context,
    pub config: NatsConfig,
    pub subjects: Subjects,
    /// What this consumer takes from the stream: one partition, or everything (`None`).
    pub partition: Option<u32>,
    pub sink: Arc<S>,
    pub stats: Arc<BusStats>,
    pub errors: ErrorPublisher,
    pub current: LiveConsumers,
    /// Where applied forget markers are reported (to the forget request waiting for one).
    pub ledger: Arc<ForgetLedger>,
}

impl<S: MemorySink> MemoryConsumer<S> {
    /// Consumes until `stop` fires; on any stream or server trouble, starts over with backoff
    /// (the durable consumer keeps the position on the server).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let ceiling = Duration::from_millis(self.config.reconnect_max_delay_ms);
        let mut attempts = 0usize;
        loop {
            if *stop.borrow() {
                return;
            }
            match self.consume(&mut stop).await {
                Ok(()) => return,
                Err(e) => {
                    attempts += 1;
                    tracing::warn!(error = %e, attempts, "memory consumer interrupted: restarting");
                    let delay = reconnect_delay(attempts + 1, ceiling);
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn consume(&self, stop: &mut watch::Receiver<bool>) -> Result<(), BusError> {
        let stream = ensure_stream(&self.js, &self.config, &self.subjects).await?;
        let consumer =
            ensure_consumer(&stream, &self.config, &self.subjects, self.partition).await?;
        self.current
            .lock()
            .await
            .insert(self.partition, consumer.clone());
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.memory_batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| BusError::JetStream(format!("pull: {e}")))?;
        tracing::info!(consumer = %self.config.durable_name(self.partition), "consuming memories");
        // Delivered, not yet in a commit: pulled ahead while the previous commit runs.
        let mut waiting: VecDeque<jetstream::Message> = VecDeque::new();
        loop {
            if waiting.is_empty() {
                let first = tokio::select! {
                    biased;
                    _ = stop.changed() => return Ok(()),
                    next = messages.next() => next,
                };
                waiting.push_back(pulled(first)?);
            }
            // Whatever else is already here goes into the same commit: one LMDB transaction.
            while waiting.len() < self.config.memory_batch {
                match messages.next().now_or_never() {
                    Some(next) => waiting.push_back(pulled(next)?),
                    None => break,
                }
            }
            let take = waiting.len().min(self.config.memory_batch);
            let batch: Vec<_> = waiting.drain(..take).collect();
            let in_commit = batch.clone();
            let commit = self.commit(batch);
            tokio::pin!(commit);
            // While the commit runs, every message this replica holds (in the commit or pulled
            // behind it) is kept from redelivery by in-progress acks, so ack_wait can be short:
            // it only bounds how long a crashed replica's messages wait to come back.
            let mut progress = tokio::time::interval(self.progress_interval());
            progress.tick().await;
            let mut broken = None;
            loop {
                tokio::select! {
                    biased;
                    _ = &mut commit => break,
                    _ = progress.tick() => {
                        for message in in_commit.iter().chain(waiting.iter()) {
                            in_progress(message).await;
                        }
                    }
                    next = messages.next(), if broken.is_none() => match pulled(next) {
                        Ok(message) => waiting.push_back(message),
                        Err(e) => broken = Some(e),
                    },
                }
            }
            if let Some(e) = broken {
                // What was pulled but not committed comes back after ack_wait.
                return Err(e);
            }
        }
    }

    /// How often a held message is marked in progress: three times per ack_wait, so one lost
    /// or late progress ack never lets it expire.
    fn progress_interval(&self) -> Duration {
        Duration::from_millis((self.config.ack_wait_ms / 3).max(50))
    }

    /// Commits a pulled batch in stream order: the memories between forget markers in one sink
    /// call each, every marker after what precedes it. Once something fails, the rest of the
    /// batch is redelivered rather than applied out of order.
    async fn commit(&self, batch: Vec<jetstream::Message>) {
        let mut memories = Vec::new();
        let mut rest = batch.into_iter();
        while let Some(message) = rest.next() {
            if !is_marker(message.headers.as_ref()) {
                memories.push(message);
                continue;
            }
            let ok = self.commit_memories(std::mem::take(&mut memories)).await
                && self.apply_marker(&message).await;
            if !ok {
                let later: Vec<_> = std::iter::once(message).chain(rest).collect();
                self.nak(&later).await;
                return;
            }
        }
        self.commit_memories(memories).await;
    }

    /// Applies one forget marker; false when the sink failed (the marker is redelivered).
    async fn apply_marker(&self, message: &jetstream::Message) -> bool {
        let subject = message.subject.as_str().to_string();
        let defaults = WireDefaults {
            max_payload_bytes: self.config.max_payload_bytes,
        };
        let names = self.subjects.names_of_memory(&subject);
        let forget = names
            .ok_or_else(|| WireError::Invalid {
                field: "subject",
                reason: "no namespace and conversation tokens".into(),
            })
            .and_then(|(ns, _)| decode_forget(ns, &message.payload, &defaults));
        let forget = match forget {
            Ok(forget) => forget,
            Err(e) => {
                self.stats.memories_rejected.fetch_add(1, Ordering::Relaxed);
                let namespace = names.map(|(ns, _)| ns);
                let reason = format!("forget marker not applied: {e}");
                self.errors.publish(&subject, namespace, reason, None).await;
                terminate(message).await;
                return true;
            }
        };
        let sink = self.sink.clone();
        let applied = {
            let forget = forget.clone();
            tokio::task::spawn_blocking(move || sink.forget(&forget)).await
        };
        let count = match applied {
            Ok(Ok(count)) => count,
            Ok(Err(e)) => {
                self.redeliver(format!("forget: {e}"), &[]).await;
                return false;
            }
            Err(e) => {
                self.redeliver(format!("forget panicked: {e}"), &[]).await;
                return false;
            }
        };
        tracing::info!(namespace = %forget.namespace, scope = forget.scope_name(), count, "forget marker applied");
        self.stats
            .forget_markers_applied
            .fetch_add(1, Ordering::Relaxed);
        if let Err(e) = message.ack().await {
            // Redelivered, applied again: forgetting twice is harmless.
            tracing::warn!(error = %e, "forget marker ack failed");
        }
        if let Ok(info) = message.info() {
            self.ledger.applied(info.stream_sequence, count);
        }
        true
    }

    /// Commits memories in one sink call; false when the commit failed (they are redelivered).
    async fn commit_memories(&self, batch: Vec<jetstream::Message>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let defaults = WireDefaults {
            max_payload_bytes: self.config.max_payload_bytes,
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut memories = Vec::with_capacity(batch.len());
        let mut decoded = Vec::with_capacity(batch.len());
        for message in batch {
            let subject = message.subject.as_str().to_string();
            let origin = MemoryOrigin::of(
                message.headers.as_ref(),
                message.info().ok().map(|i| i.stream_sequence),
            );
            let names = self.subjects.names_of_memory(&subject);
            let memory = names
                .ok_or_else(|| WireError::Invalid {
                    field: "subject",
                    reason: "no namespace and conversation tokens".into(),
                })
                .and_then(|(ns, c)| {
                    decode_memory(ns, c, &message.payload, &origin, &defaults, now_ms)
                });
            match memory {
                Ok(memory) => {
                    memories.push(memory);
                    decoded.push(message);
                }
                Err(e) => {
                    // Unusable forever: report and terminate it so it is not redelivered.
                    self.stats.memories_rejected.fetch_add(1, Ordering::Relaxed);
                    let namespace = names.map(|(ns, _)| ns);
                    self.errors
                        .publish(&subject, namespace, e.to_string(), None)
                        .await;
                    terminate(&message).await;
                }
            }
        }
        if memories.is_empty() {
            return true;
        }
        let sink = self.sink.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let result = sink.store(&memories);
            (memories, result)
        })
        .await;
        match stored {
            Ok((memories, Ok(refused))) => {
                let mut refused_at = vec![None; decoded.len()];
                for r in refused {
                    if let Some(slot) = refused_at.get_mut(r.index) {
                        *slot = Some(r.reason);
                    }
                }
                let mut committed = 0u64;
                for ((message, memory), refusal) in decoded.iter().zip(&memories).zip(refused_at) {
                    match refusal {
                        None => {
                            committed += 1;
                            if let Err(e) = message.ack().await {
                                tracing::warn!(error = %e, "ack failed: the memory will be redelivered");
                            }
                        }
                        Some(reason) => {
                            // Stored never: say why, and stop JetStream redelivering it.
                            self.stats.memories_refused.fetch_add(1, Ordering::Relaxed);
                            let reason = format!("memory {} not stored: {reason}", memory.id);
                            self.errors
                                .publish(
                                    message.subject.as_str(),
                                    Some(&memory.namespace),
                                    reason,
                                    None,
                                )
                                .await;
                            terminate(message).await;
                        }
                    }
                }
                self.stats
                    .memories_committed
                    .fetch_add(committed, Ordering::Relaxed);
                true
            }
            Ok((_, Err(e))) => {
                self.redeliver(e.to_string(), &decoded).await;
                false
            }
            Err(e) => {
                self.redeliver(format!("sink panicked: {e}"), &decoded)
                    .await;
                false
            }
        }
    }

    /// The commit failed: nothing is acked, so JetStream delivers the batch again.
    async fn redeliver(&self, reason: String, decoded: &[jetstream::Message]) {
        tracing::error!(error = %reason, count = decoded.len(), "memory commit failed: redelivering");
        self.stats.sink_failures.fetch_add(1, Ordering::Relaxed);
        self.nak(decoded).await;
    }

    async fn nak(&self, messages: &[jetstream::Message]) {
        for message in messages {
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

/// The next message of a pull stream, or why the stream cannot go on.
fn pulled(
    next: Option<Result<jetstream::Message, pull::MessagesError>>,
) -> Result<jetstream::Message, BusError> {
    match next {
        None => Err(BusError::JetStream("pull stream ended".into())),
        Some(Err(e)) => Err(BusError::JetStream(format!("pull: {e}"))),
        Some(Ok(m)) => Ok(m),
    }
}

/// Restarts this message's ack_wait: it is held and will be acked (or nak'ed) by this replica.
async fn in_progress(message: &jetstream::Message) {
    if let Err(e) = message.ack_with(AckKind::Progress).await {
        tracing::debug!(error = %e, "in-progress ack failed: the message may be redelivered");
    }
}

/// Tells JetStream never to deliver this message again.
async fn terminate(message: &jetstream::Message) {
    if let Err(e) = message.ack_with(AckKind::Term).await {
        tracing::warn!(error = %e, "cannot terminate an unusable memory message");
    }
}

#[cfg(test)]
mod tests {
    use super::{retention_mismatch, subject_covers};
    use std::time::Duration;

    #[test]
    fn stream_age_against_retention() {
        let day = 86_400;
        assert!(retention_mismatch(Duration::ZERO, 0, "S").is_none());
        assert!(retention_mismatch(Duration::from_secs(5), 0, "S").is_none());
        assert!(retention_mismatch(Duration::from_secs(day), day, "S").is_none());
        assert!(retention_mismatch(Duration::from_secs(60), day, "S").is_none());
        let forever = retention_mismatch(Duration::ZERO, day, "S").unwrap();
        assert!(forever.contains("for ever") && forever.contains("--max-age 86400s"));
        let longer = retention_mismatch(Duration::from_secs(2 * day), day, "S").unwrap();
        assert!(longer.contains("172800 s"), "{longer}");
    }

    #[test]
    fn stream_subject_coverage() {
        assert!(subject_covers("voice.memory.*.*", "voice.memory.*.*"));
        assert!(!subject_covers("voice.memory.*", "voice.memory.*.*"));
        assert!(subject_covers("voice.memory.>", "voice.memory.*.*"));
        assert!(subject_covers("voice.memory.*", "voice.memory.*"));
        assert!(subject_covers("voice.memory.>", "voice.memory.*"));
        assert!(subject_covers("voice.>", "voice.memory.*"));
        assert!(subject_covers("*.memory.*", "voice.memory.*"));
        assert!(!subject_covers("voice.memory.c1", "voice.memory.*"));
        assert!(!subject_covers("other.memory.*", "voice.memory.*"));
        assert!(!subject_covers("voice.memory", "voice.memory.*"));
        assert!(!subject_covers("voice.memory.*.x", "voice.memory.*"));
    }
}
