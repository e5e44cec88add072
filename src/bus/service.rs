//! The connection lifecycle: connecting, starting every subject's task, and the graceful stop that
//! drains all of it. The handlers live in `transcripts`, `contexts`, `queries` and `health`.

use async_nats::{Client, jetstream};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{NatsConfig, reconnect_delay};
use super::contexts::results_loop;
use super::forget::{ForgetLedger, forget_loop};
use super::health::health_loop;
use super::memory_consumer::{LiveConsumers, MemoryConsumer, ensure_stream};
use super::queries::query_loop;
use super::state::{BusState, InFlight};
use super::stats::{BusStats, ErrorPublisher};
use super::subjects::Subjects;
use super::transcripts::transcript_loop;
use super::writer::JetStreamWriter;
use super::{BusError, ContextService, EngineError, MemorySink};

/// A connected bus, before serving: hands out the [`JetStreamWriter`] the pipeline needs.
pub struct BusConnection {
    client: Client,
    js: jetstream::Context,
    config: NatsConfig,
    subjects: Subjects,
    /// Created with the connection: the [`JetStreamWriter`]s count into it before serving starts.
    stats: Arc<BusStats>,
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
        let subjects =
            Subjects::new(&config.subject_prefix).with_partition_count(config.sharding());
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
            stats: Arc::new(BusStats::default()),
        })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The memory stream's maximum age as the server has it (zero: for ever).
    pub async fn stream_max_age(&self) -> Result<Duration, BusError> {
        let mut stream = self
            .js
            .get_stream(&self.config.stream)
            .await
            .map_err(|e| BusError::JetStream(format!("stream {}: {e}", self.config.stream)))?;
        let info = stream
            .info()
            .await
            .map_err(|e| BusError::JetStream(format!("stream {}: {e}", self.config.stream)))?;
        Ok(info.config.max_age)
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
            self.stats.clone(),
        )
    }

    /// Subscribes and starts every task; returns once the subscriptions are registered.
    pub async fn start<E: ContextService, S: MemorySink>(
        self,
        engine: Arc<E>,
        sink: Arc<S>,
    ) -> Result<RunningBus, BusError> {
        let stats = self.stats.clone();
        let inflight = Arc::new(InFlight::default());
        let (stop_intake, intake) = watch::channel(false);
        let (stop_output, output) = watch::channel(false);
        let errors = ErrorPublisher {
            client: self.client.clone(),
            subjects: self.subjects.clone(),
            stats: stats.clone(),
        };
        let writer = Arc::new(self.writer());
        let consumers = LiveConsumers::default();
        let ledger = Arc::new(ForgetLedger::default());
        let state = Arc::new(BusState {
            config: self.config.clone(),
            subjects: self.subjects.clone(),
            client: self.client.clone(),
            js: self.js.clone(),
            ledger: ledger.clone(),
            stats: stats.clone(),
            errors: errors.clone(),
            inflight: inflight.clone(),
            started: Instant::now(),
            consumers: consumers.clone(),
            store_stats: {
                let sink = sink.clone();
                Arc::new(move || sink.stats())
            },
        });
        let nats = |e: async_nats::SubscribeError| BusError::Nats(e.to_string());

        let mut intake_tasks = Vec::new();
        let group = self.config.query_group.clone();
        let mut transcript_subs = Vec::new();
        let mut query_subs = Vec::new();
        let mut forget_subs = Vec::new();
        match self.config.sharding() {
            // Full replica: queries and forgets of every namespace in one group; transcripts of
            // every conversation, or of the transcript partitions the server maps to this one.
            None => {
                if self.config.partitions.is_empty() {
                    let subject = self.subjects.transcript_subscription(None);
                    transcript_subs.push(self.client.subscribe(subject).await.map_err(nats)?);
                }
                for p in &self.config.partitions {
                    let subject = self.subjects.transcript_subscription(Some(*p));
                    transcript_subs.push(self.client.subscribe(subject).await.map_err(nats)?);
                }
                let queries = self.subjects.query_subscription(None);
                query_subs.push(
                    self.client
                        .queue_subscribe(queries, group.clone())
                        .await
                        .map_err(nats)?,
                );
                let forgets = self.subjects.forget_subscription(None);
                forget_subs.push(
                    self.client
                        .queue_subscribe(forgets, group.clone())
                        .await
                        .map_err(nats)?,
                );
            }
            // Sharded: only the owned partitions, each in its own queue group, so a partition
            // owned by two replicas is served once per message, and still when one is down.
            Some(_) => {
                for p in &self.config.partitions {
                    let partition_group = self.config.partition_group(*p);
                    for (subject, subs) in [
                        (
                            self.subjects.transcript_subscription(Some(*p)),
                            &mut transcript_subs,
                        ),
                        (self.subjects.query_subscription(Some(*p)), &mut query_subs),
                        (
                            self.subjects.forget_subscription(Some(*p)),
                            &mut forget_subs,
                        ),
                    ] {
                        subs.push(
                            self.client
                                .queue_subscribe(subject, partition_group.clone())
                                .await
                                .map_err(nats)?,
                        );
                    }
                }
            }
        }
        // Wire v1 subjects and a forget without a namespace get an error naming the v2 subject
        // (from one replica of the group).
        transcript_subs.push(
            self.client
                .queue_subscribe(self.subjects.transcript_v1_subscription(), group.clone())
                .await
                .map_err(nats)?,
        );
        query_subs.push(
            self.client
                .queue_subscribe(self.subjects.query_v1(), group.clone())
                .await
                .map_err(nats)?,
        );
        forget_subs.push(
            self.client
                .queue_subscribe(self.subjects.forget_without_namespace(), group.clone())
                .await
                .map_err(nats)?,
        );
        for sub in transcript_subs {
            intake_tasks.push(tokio::spawn(transcript_loop(
                sub,
                state.clone(),
                engine.clone(),
                writer.clone(),
                intake.clone(),
            )));
        }
        for queries in query_subs {
            intake_tasks.push(tokio::spawn(query_loop(
                queries,
                state.clone(),
                engine.clone(),
                intake.clone(),
            )));
        }
        for forgets in forget_subs {
            intake_tasks.push(tokio::spawn(forget_loop(
                forgets,
                state.clone(),
                intake.clone(),
            )));
        }
        let health = self
            .client
            .subscribe(self.subjects.health())
            .await
            .map_err(nats)?;
        let health_task = tokio::spawn(health_loop(
            health,
            state.clone(),
            engine.clone(),
            output.clone(),
        ));
        let results_task = tokio::spawn(results_loop(
            state.clone(),
            engine.results(),
            output.clone(),
        ));
        let mut output_tasks = vec![health_task, results_task];
        for partition in self.config.memory_partitions() {
            output_tasks.push(tokio::spawn(
                MemoryConsumer {
                    js: self.js.clone(),
                    config: self.config.clone(),
                    subjects: self.subjects.clone(),
                    partition,
                    sink: sink.clone(),
                    stats: stats.clone(),
                    errors: errors.clone(),
                    current: consumers.clone(),
                    ledger: ledger.clone(),
                }
                .run(output.clone()),
            ));
        }
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
            output_tasks,
            engine_shutdown: Box::pin(async move { engine.shutdown().await }),
        })
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
        // The engine flushes its memories while the connection is still open. If it cannot,
        // the stop goes on but ends in an error: a clean exit would report them safe.
        let engine_result = self.engine_shutdown.await;
        if let Err(e) = &engine_result {
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
        engine_result.map_err(|e| BusError::Unflushed(e.to_string()))
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
