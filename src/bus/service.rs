//! The running service: transcripts in, context out, queries, health, memory consumption, and
//! the graceful stop that drains all of it.

use async_nats::{Client, Subscriber, jetstream};
use futures::StreamExt;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinHandle;
use voicerag_actors::{ContextResult, Memory, RerankOutcome, Transcript};

use super::config::{NatsConfig, reconnect_delay};
use super::memory_consumer::{MemoryConsumer, ensure_stream};
use super::stats::{BusStats, ErrorPublisher};
use super::subjects::Subjects;
use super::wire::{
    WireDefaults, WireError, context_json, decode_query, decode_transcript, transcript_context_json,
};
use super::writer::JetStreamWriter;
use super::{BusError, ContextService, EngineError, MemorySink};

/// Work the graceful stop waits for: queries being answered, final transcripts awaiting their
/// result, memories being republished.
#[derive(Debug, Default)]
struct InFlight(AtomicUsize);

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }
    fn add(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn done(&self) {
        // Saturating: results of transcripts submitted by someone else must not underflow.
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    async fn wait_idle(&self, timeout: Duration) -> bool {
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

struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.done();
    }
}

/// A connected bus, before serving: hands out the [`JetStreamWriter`] the pipeline needs.
pub struct BusConnection {
    client: Client,
    js: jetstream::Context,
    config: NatsConfig,
    subjects: Subjects,
}

impl BusConnection {
    /// Validates the config, connects (retrying with backoff while no server answers, up to
    /// `startup_timeout`), and makes sure the memory stream exists.
    pub async fn connect(config: NatsConfig, startup_timeout: Duration) -> Result<Self, BusError> {
        config.validate()?;
        tracing::info!(config = ?config, "connecting to NATS");
        let client = config
            .connect_options()
            .await?
            .connect(config.urls.clone())
            .await
            .map_err(|e| BusError::Connect(e.to_string()))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .build(client.clone());
        let subjects = Subjects::new(&config.subject_prefix);
        let until = Instant::now() + startup_timeout;
        let ceiling = Duration::from_millis(config.reconnect_max_delay_ms);
        let mut attempts = 1;
        loop {
            match ensure_stream(&js, &config, &subjects).await {
                Ok(_) => break,
                // A stream that exists but does not fit will not fit later either.
                Err(e @ BusError::Config(_)) => return Err(e),
                Err(e) if Instant::now() >= until => {
                    return Err(BusError::Connect(format!(
                        "no JetStream within {startup_timeout:?}: {e}"
                    )));
                }
                Err(e) => {
                    attempts += 1;
                    tracing::warn!(error = %e, "memory stream not ready: retrying");
                    tokio::time::sleep(reconnect_delay(attempts, ceiling)).await;
                }
            }
        }
        Ok(Self {
            client,
            js,
            config,
            subjects,
        })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The pipeline's `MemoryWriter` in bus mode.
    pub fn writer(&self) -> JetStreamWriter {
        JetStreamWriter::new(
            self.js.clone(),
            self.subjects.clone(),
            tokio::runtime::Handle::current(),
            Duration::from_millis(self.config.request_timeout_ms * 3),
        )
    }

    /// Subscribes and starts every task; returns once the subscriptions are registered.
    pub async fn start<E: ContextService, S: MemorySink>(
        self,
        engine: Arc<E>,
        sink: Arc<S>,
    ) -> Result<RunningBus, BusError> {
        let stats = Arc::new(BusStats::default());
        let inflight = Arc::new(InFlight::default());
        let (stop_intake, intake) = watch::channel(false);
        let (stop_output, output) = watch::channel(false);
        let errors = ErrorPublisher {
            client: self.client.clone(),
            subject: self.subjects.errors(),
            stats: stats.clone(),
        };
        let writer = Arc::new(self.writer());
        let consumer_slot = Arc::new(Mutex::new(None));
        let shared = Arc::new(Shared {
            config: self.config.clone(),
            subjects: self.subjects.clone(),
            client: self.client.clone(),
            stats: stats.clone(),
            errors: errors.clone(),
            inflight: inflight.clone(),
            started: Instant::now(),
            consumer: consumer_slot.clone(),
            store_stats: {
                let sink = sink.clone();
                Arc::new(move || sink.stats())
            },
        });
        let nats = |e: async_nats::SubscribeError| BusError::Nats(e.to_string());

        let mut intake_tasks = Vec::new();
        let partitions: Vec<Option<u32>> = if self.config.partitions.is_empty() {
            vec![None]
        } else {
            self.config.partitions.iter().copied().map(Some).collect()
        };
        for partition in partitions {
            let subject = self.subjects.transcript_subscription(partition);
            let sub = self.client.subscribe(subject).await.map_err(nats)?;
            intake_tasks.push(tokio::spawn(transcript_loop(
                sub,
                shared.clone(),
                engine.clone(),
                writer.clone(),
                intake.clone(),
            )));
        }
        let queries = self
            .client
            .queue_subscribe(self.subjects.query(), self.config.query_group.clone())
            .await
            .map_err(nats)?;
        intake_tasks.push(tokio::spawn(query_loop(
            queries,
            shared.clone(),
            engine.clone(),
            intake.clone(),
        )));
        let health = self
            .client
            .subscribe(self.subjects.health())
            .await
            .map_err(nats)?;
        let health_task = tokio::spawn(health_loop(
            health,
            shared.clone(),
            engine.clone(),
            output.clone(),
        ));
        let results_task = tokio::spawn(results_loop(
            shared.clone(),
            engine.results(),
            output.clone(),
        ));
        let memory_task = tokio::spawn(
            MemoryConsumer {
                js: self.js.clone(),
                config: self.config.clone(),
                subjects: self.subjects.clone(),
                sink,
                stats: stats.clone(),
                errors,
                current: consumer_slot,
            }
            .run(output),
        );
        // Make sure the server has the subscriptions before callers start publishing.
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Nats(e.to_string()))?;
        tracing::info!(replica = %self.config.replica_id, "bus serving");
        Ok(RunningBus {
            client: self.client,
            config: self.config,
            stats,
            inflight,
            stop_intake,
            stop_output,
            intake_tasks,
            output_tasks: vec![health_task, results_task, memory_task],
            engine_shutdown: Box::pin(async move { engine.shutdown().await }),
        })
    }
}

/// What every task of one bus shares.
struct Shared {
    config: NatsConfig,
    subjects: Subjects,
    client: Client,
    stats: Arc<BusStats>,
    errors: ErrorPublisher,
    inflight: Arc<InFlight>,
    started: Instant,
    consumer: Arc<Mutex<Option<jetstream::consumer::PullConsumer>>>,
    store_stats: Arc<dyn Fn() -> Value + Send + Sync>,
}

impl Shared {
    fn defaults(&self) -> WireDefaults {
        WireDefaults {
            namespace: self.config.default_namespace.clone(),
            max_payload_bytes: self.config.max_payload_bytes,
        }
    }

    async fn publish_json(&self, subject: String, value: &Value) {
        match serde_json::to_vec(value) {
            Ok(payload) => {
                if let Err(e) = self.client.publish(subject, payload.into()).await {
                    tracing::warn!(error = %e, "publish failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode JSON"),
        }
    }

    async fn publish_context(&self, result: &ContextResult) {
        self.stats.record_latency(result.timings.total);
        if result.degraded.is_some() {
            tracing::debug!(degraded = ?result.degraded, "degraded context");
        }
        let subject = self.subjects.context(&result.conversation);
        self.publish_json(subject, &transcript_context_json(result))
            .await;
        self.stats
            .contexts_published
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// A running bus. [`RunningBus::stop`] is the graceful stop.
pub struct RunningBus {
    client: Client,
    config: NatsConfig,
    stats: Arc<BusStats>,
    inflight: Arc<InFlight>,
    stop_intake: watch::Sender<bool>,
    stop_output: watch::Sender<bool>,
    intake_tasks: Vec<JoinHandle<()>>,
    output_tasks: Vec<JoinHandle<()>>,
    engine_shutdown: futures::future::BoxFuture<'static, Result<(), EngineError>>,
}

impl RunningBus {
    pub fn stats(&self) -> Arc<BusStats> {
        self.stats.clone()
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Stops taking transcripts and queries, answers what is in flight, commits and acks the
    /// memories already pulled, then drains the connection.
    pub async fn stop(self) -> Result<(), BusError> {
        let timeout = self.config.drain_timeout();
        tracing::info!(replica = %self.config.replica_id, "graceful stop: draining");
        let _ = self.stop_intake.send(true);
        for task in self.intake_tasks {
            if tokio::time::timeout(timeout, task).await.is_err() {
                tracing::warn!("an intake task did not stop in time");
            }
        }
        if !self.inflight.wait_idle(timeout).await {
            tracing::warn!(
                pending = self.inflight.count(),
                "drain timed out with work in flight"
            );
        }
        // The engine flushes its memories while the connection is still open.
        if let Err(e) = self.engine_shutdown.await {
            tracing::error!(error = %e, "engine shutdown incomplete");
        }
        let _ = self.stop_output.send(true);
        for task in self.output_tasks {
            if tokio::time::timeout(timeout, task).await.is_err() {
                tracing::warn!("an output task did not stop in time");
            }
        }
        // Acks and last contexts are buffered in the client: push them out before closing.
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Nats(e.to_string()))?;
        self.client
            .drain()
            .await
            .map_err(|e| BusError::Nats(e.to_string()))?;
        tracing::info!(stats = %self.stats.snapshot(), "bus stopped");
        Ok(())
    }
}

/// Connects, serves until `shutdown` completes, then stops gracefully. The CLI's entry point
/// (`voicerag serve`) when the pipeline does not need the [`JetStreamWriter`]; otherwise use
/// [`BusConnection`] and [`serve_connected`].
pub async fn serve<E: ContextService, S: MemorySink>(
    config: NatsConfig,
    engine: Arc<E>,
    sink: Arc<S>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    let connection = BusConnection::connect(config, Duration::from_secs(30)).await?;
    serve_connected(connection, engine, sink, shutdown).await
}

/// Serves on an existing connection until `shutdown` completes, then stops gracefully.
pub async fn serve_connected<E: ContextService, S: MemorySink>(
    connection: BusConnection,
    engine: Arc<E>,
    sink: Arc<S>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    let bus = connection.start(engine, sink).await?;
    shutdown.await;
    bus.stop().await
}

/// Ends when `stop` says so or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Receives until stopped; then unsubscribes and handles what was already delivered, so nothing
/// accepted by this replica is dropped.
async fn receive_until_stopped<F, Fut>(
    mut sub: Subscriber,
    mut stop: watch::Receiver<bool>,
    drain_timeout: Duration,
    mut handle: F,
) where
    F: FnMut(async_nats::Message) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let message = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            m = sub.next() => m,
        };
        match message {
            Some(m) => handle(m).await,
            None => return,
        }
    }
    if let Err(e) = sub.drain().await {
        tracing::warn!(error = %e, "unsubscribe failed");
    }
    let _ = tokio::time::timeout(drain_timeout, async {
        while let Some(m) = sub.next().await {
            handle(m).await;
        }
    })
    .await;
}

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

async fn transcript_loop<E: ContextService>(
    sub: Subscriber,
    shared: Arc<Shared>,
    engine: Arc<E>,
    writer: Arc<JetStreamWriter>,
    stop: watch::Receiver<bool>,
) {
    let timeout = shared.config.drain_timeout();
    receive_until_stopped(sub, stop, timeout, |message| {
        let shared = shared.clone();
        let engine = engine.clone();
        let writer = writer.clone();
        async move { handle_transcript(&shared, &*engine, &writer, message).await }
    })
    .await;
}

async fn handle_transcript<E: ContextService>(
    shared: &Arc<Shared>,
    engine: &E,
    writer: &Arc<JetStreamWriter>,
    message: async_nats::Message,
) {
    let received_at = Instant::now();
    shared
        .stats
        .transcripts_received
        .fetch_add(1, Ordering::Relaxed);
    let subject = message.subject.as_str();
    let defaults = shared.defaults();
    let decoded = shared
        .subjects
        .conversation_of_transcript(subject)
        .ok_or_else(|| WireError::Invalid {
            field: "subject",
            reason: "no conversation token".into(),
        })
        .and_then(|c| decode_transcript(c, &message.payload, &defaults, received_at));
    let transcript = match decoded {
        Ok(t) => t,
        Err(e) => {
            shared
                .stats
                .transcripts_rejected
                .fetch_add(1, Ordering::Relaxed);
            let hint = utterance_hint(&message.payload, defaults.max_payload_bytes);
            shared.errors.publish(subject, e.to_string(), hint).await;
            return;
        }
    };
    if transcript.is_final && shared.config.republish_finals {
        republish_final(shared, writer, &transcript);
    }
    let is_final = transcript.is_final;
    if is_final {
        shared.inflight.add();
    }
    if let Err(e) = engine.submit(transcript.clone()).await {
        // The engine refused it: the sender still gets an answer, empty and marked shed.
        if is_final {
            shared.inflight.done();
        }
        shared
            .stats
            .transcripts_shed
            .fetch_add(1, Ordering::Relaxed);
        shared
            .publish_context(&shed_result(&transcript, &e.to_string()))
            .await;
    }
}

/// Sends a final user transcript to the memory stream, off the transcript path.
fn republish_final(shared: &Arc<Shared>, writer: &Arc<JetStreamWriter>, t: &Transcript) {
    let memory = Memory {
        id: format!("{}/{}", t.conversation, t.utterance),
        namespace: t.namespace.clone(),
        conversation: t.conversation.clone(),
        speaker: t.speaker.clone(),
        text: t.text.clone(),
        ts_ms: chrono::Utc::now().timestamp_millis(),
    };
    let guard = shared.inflight.enter();
    let shared = shared.clone();
    let writer = writer.clone();
    tokio::spawn(async move {
        let _guard = guard;
        if let Err(e) = writer.publish(std::slice::from_ref(&memory)).await {
            shared
                .stats
                .republish_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, id = %memory.id, "final transcript not stored");
            let subject = shared.subjects.memory(&memory.conversation);
            let reason = format!("final transcript {} not stored: {e}", memory.id);
            let utterance = memory.id.rsplit_once('/').map(|(_, u)| u.to_string());
            shared.errors.publish(&subject, reason, utterance).await;
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

async fn results_loop(
    shared: Arc<Shared>,
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
        shared.publish_context(&result).await;
        if result.is_final {
            shared.inflight.done();
        }
    }
}

async fn query_loop<E: ContextService>(
    sub: Subscriber,
    shared: Arc<Shared>,
    engine: Arc<E>,
    stop: watch::Receiver<bool>,
) {
    let timeout = shared.config.drain_timeout();
    let limit = Arc::new(Semaphore::new(shared.config.max_concurrent_queries));
    let counter = Arc::new(AtomicU64::new(0));
    receive_until_stopped(sub, stop, timeout, |message| {
        let shared = shared.clone();
        let engine = engine.clone();
        let limit = limit.clone();
        let counter = counter.clone();
        async move {
            // Waiting for a permit here is the backpressure: the subscription buffers the rest.
            let Ok(permit) = limit.acquire_owned().await else {
                return;
            };
            let guard = shared.inflight.enter();
            tokio::spawn(async move {
                let _permit = permit;
                let _guard = guard;
                let n = counter.fetch_add(1, Ordering::Relaxed);
                answer_query(&shared, &*engine, message, n).await;
            });
        }
    })
    .await;
}

async fn answer_query<E: ContextService>(
    shared: &Shared,
    engine: &E,
    message: async_nats::Message,
    n: u64,
) {
    let subject = message.subject.as_str();
    let Some(reply) = message.reply.clone() else {
        shared
            .stats
            .queries_rejected
            .fetch_add(1, Ordering::Relaxed);
        shared
            .errors
            .publish(subject, "query without a reply subject".into(), None)
            .await;
        return;
    };
    let fallback = || {
        format!(
            "{}-{}-{n}",
            shared.config.replica_id,
            shared.started.elapsed().as_micros()
        )
    };
    let answer = match decode_query(&message.payload, &shared.defaults(), fallback) {
        Err(e) => {
            shared
                .stats
                .queries_rejected
                .fetch_add(1, Ordering::Relaxed);
            shared.errors.publish(subject, e.to_string(), None).await;
            json!({"v": 1, "error": e.to_string()})
        }
        Ok(query) => {
            let id = query.id.clone();
            match engine.query(query).await {
                Ok(result) => {
                    shared
                        .stats
                        .queries_answered
                        .fetch_add(1, Ordering::Relaxed);
                    context_json(&result, &id)
                }
                Err(e) => {
                    shared
                        .stats
                        .queries_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    json!({"v": 1, "id": id, "error": e.to_string()})
                }
            }
        }
    };
    shared.publish_json(reply.to_string(), &answer).await;
}

async fn health_report<E: ContextService>(shared: &Shared, engine: &E, status: &str) -> Value {
    let consumer = shared.consumer.lock().await.clone();
    let stream = match consumer {
        Some(c) => match c.get_info().await {
            Ok(info) => json!({
                "name": shared.config.stream,
                "consumer": info.name,
                "lag": info.num_pending,
                "ack_pending": info.num_ack_pending,
            }),
            Err(e) => json!({"name": shared.config.stream, "error": e.to_string()}),
        },
        None => json!({"name": shared.config.stream, "error": "consumer not ready"}),
    };
    json!({
        "v": 1,
        "replica": shared.config.replica_id,
        "status": status,
        "uptime_s": shared.started.elapsed().as_secs(),
        "connection": format!("{:?}", shared.client.connection_state()).to_lowercase(),
        "partitions": shared.config.partitions,
        "engine": engine.health(),
        "store": (shared.store_stats)(),
        "stream": stream,
        "bus": shared.stats.snapshot(),
    })
}

async fn health_loop<E: ContextService>(
    mut sub: Subscriber,
    shared: Arc<Shared>,
    engine: Arc<E>,
    mut stop: watch::Receiver<bool>,
) {
    let mut beat = tokio::time::interval(shared.config.heartbeat());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let heartbeat = shared.subjects.heartbeat(&shared.config.replica_id);
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            m = sub.next() => match m {
                Some(m) => {
                    if let Some(reply) = m.reply {
                        let report = health_report(&shared, &*engine, "up").await;
                        shared.publish_json(reply.to_string(), &report).await;
                    }
                }
                None => return,
            },
            _ = beat.tick() => {
                let report = health_report(&shared, &*engine, "up").await;
                shared.publish_json(heartbeat.clone(), &report).await;
            }
        }
    }
    // Tell watchers this replica is leaving on purpose, not crashing.
    let report = json!({"v": 1, "replica": shared.config.replica_id, "status": "stopping"});
    shared.publish_json(heartbeat, &report).await;
}
