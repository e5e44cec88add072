//! `voicerag bench nats`: C conversations each send a final transcript every T ms for S seconds
//! over NATS on loopback; the report gives throughput, context latency p50/p99 as the sender sees
//! it (publish to context received), answers lost (must be 0), hits from a foreign namespace (must
//! be 0), shed and degraded counts. `--replicas N --partitions P` runs N replicas sharded into P
//! namespace partitions, each owned by two replicas (round robin).

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use voicerag_actors::{Memory, memory_id};

use super::stats::{latency_histogram, percentile_ms};
use super::synthetic_memory;
use super::usage::process_cpu_ms;
use crate::bus::server::LocalNatsServer;
use crate::bus::{
    BusConnection, ContextService, JetStreamWriter, MemorySink, NatsConfig, Subjects,
};
use crate::config::Config;
use crate::engines::{Engines, StoreAccess};

/// What the load generator sends.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub conversations: usize,
    pub interval: Duration,
    pub duration: Duration,
    /// How long to wait for the last answers after sending stopped.
    pub grace: Duration,
    /// Conversation `c` belongs to namespace `c % len`. Every memory a namespace has is in a
    /// conversation named `...-<namespace>-...`: a hit of another is foreign.
    pub namespaces: Vec<String>,
}

/// Whether a hit of `conversation` belongs to `namespace` under the benchmark's naming.
fn owned_by(conversation: &str, namespace: &str) -> bool {
    conversation.contains(&format!("-{namespace}-"))
}

/// What the sender saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub conversations: usize,
    pub interval_ms: u64,
    pub seconds: f64,
    pub sent: u64,
    pub answered: u64,
    /// Sent and never answered: must be 0.
    pub lost: u64,
    /// Answered more than once: must be 0.
    pub duplicates: u64,
    /// Hits in all answers (what `foreign` is out of).
    pub hits: u64,
    /// Hits from another namespace than the transcript's: must be 0.
    pub foreign: u64,
    pub namespaces: usize,
    pub replicas: usize,
    /// Namespace partitions (0: not sharded).
    pub partitions: u32,
    pub shed: u64,
    /// Degraded for any reason (shed included).
    pub degraded: u64,
    pub deadline_missed: u64,
    /// Degraded answers by reason.
    pub degraded_reasons: std::collections::BTreeMap<String, u64>,
    /// Answers per second over the sending period.
    pub throughput_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// The service's own wall time per stage, from the answers' `timings_ms`: where the context
    /// latency goes (embed includes the wait for the embedder, search the wait for the retriever).
    pub embed_ms_p50: f64,
    pub embed_ms_p99: f64,
    pub search_ms_p50: f64,
    pub search_ms_p99: f64,
    /// CPU time of this process (service and load generator) from the first transcript sent to
    /// the last answer received, in ms.
    pub cpu_ms: f64,
    /// `cpu_ms` per answer: what a final costs, comparable between builds on a loaded machine.
    pub cpu_ms_per_answer: f64,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bench nats: {} replica(s), {} partition(s); {} conversations in {} namespace(s) x 1 \
             transcript/{} ms for {:.1} s: sent {}, answered {}, lost {}, duplicates {}, foreign \
             hits {} of {}, shed {}, degraded {} {:?}, deadline missed {}; {:.1} answers/s; context \
             latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (embed p50 {:.2}, p99 {:.2}; search p50 \
             {:.2}, p99 {:.2}); CPU {:.0} ms, {:.2} ms per answer",
            self.replicas,
            self.partitions,
            self.conversations,
            self.namespaces,
            self.interval_ms,
            self.seconds,
            self.sent,
            self.answered,
            self.lost,
            self.duplicates,
            self.foreign,
            self.hits,
            self.shed,
            self.degraded,
            self.degraded_reasons,
            self.deadline_missed,
            self.throughput_per_s,
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.latency_max_ms,
            self.embed_ms_p50,
            self.embed_ms_p99,
            self.search_ms_p50,
            self.search_ms_p99,
            self.cpu_ms,
            self.cpu_ms_per_answer
        )
    }
}

/// Things a user says to a voice agent: enough variety that retrieval does real work.
const UTTERANCES: &[&str] = &[
    "what did I tell you about my sister's wedding",
    "remind me what time the dentist appointment is",
    "which restaurant did we pick for friday",
    "how is my daughter getting on with her piano lessons",
    "what was the name of that book you recommended",
    "did I mention which flight I am taking to lisbon",
    "what do I usually order at the coffee place",
    "what did we decide about the garden fence",
    "when is my mother's birthday again",
    "which medication do I take in the evening",
    "what is the wifi password at the cabin",
    "remind me what my manager said about the review",
];

/// Runs the load against whatever serves `subjects` on `client`'s server.
pub async fn run_load(
    client: &async_nats::Client,
    subjects: &Subjects,
    spec: &LoadSpec,
) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(!spec.namespaces.is_empty(), "the load needs a namespace");
    let run = format!("bench{}", std::process::id());
    let mut contexts = client
        .subscribe(subjects.context("*", "*"))
        .await
        .context("subscribe to contexts")?;
    client.flush().await.context("flush")?;

    let pending: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    let cpu_at_start = process_cpu_ms();
    let mut senders = Vec::new();
    for c in 0..spec.conversations {
        let client = client.clone();
        let pending = pending.clone();
        let namespace = &spec.namespaces[c % spec.namespaces.len()];
        let conversation = format!("{run}-{namespace}-c{c}");
        let subject = subjects.transcript(namespace, &conversation);
        let spec = spec.clone();
        // Stagger the conversations over one interval, as independent callers would be.
        let offset = spec
            .interval
            .mul_f64(c as f64 / spec.conversations.max(1) as f64);
        senders.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(spec.interval);
            let until = started + spec.duration;
            let mut n = 0usize;
            while Instant::now() < until {
                tick.tick().await;
                let utterance = format!("u{n}");
                let payload = serde_json::json!({
                    "v": 2,
                    "utterance": utterance,
                    "text": UTTERANCES[(c + n) % UTTERANCES.len()],
                    "final": true,
                });
                let Ok(payload) = serde_json::to_vec(&payload) else {
                    continue;
                };
                let key = memory_id(&conversation, &utterance);
                if let Ok(mut p) = pending.lock() {
                    p.insert(key, Instant::now());
                }
                if let Err(e) = client.publish(subject.clone(), payload.into()).await {
                    tracing::warn!(error = %e, "bench publish failed");
                }
                n += 1;
            }
            n as u64
        }));
    }

    let mut report = LoadReport {
        conversations: spec.conversations,
        namespaces: spec.namespaces.len(),
        interval_ms: spec.interval.as_millis() as u64,
        ..Default::default()
    };
    let mut latencies = latency_histogram().context("histogram")?;
    let mut embed_times = latency_histogram().context("histogram")?;
    let mut search_times = latency_histogram().context("histogram")?;
    let mut answered_keys = HashSet::new();
    let mut senders_done = false;
    let mut sent = 0u64;
    let mut last_answer_by = None;
    loop {
        if !senders_done && senders.iter().all(|s| s.is_finished()) {
            for s in senders.drain(..) {
                sent += s.await.unwrap_or(0);
            }
            senders_done = true;
            report.seconds = started.elapsed().as_secs_f64();
            last_answer_by = Some(Instant::now() + spec.grace);
        }
        let outstanding = pending.lock().map(|p| p.len()).unwrap_or(0);
        if senders_done && outstanding == 0 {
            break;
        }
        if last_answer_by.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let message = match tokio::time::timeout(Duration::from_millis(50), contexts.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => anyhow::bail!("context subscription closed"),
            Err(_) => continue,
        };
        let received = Instant::now();
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&message.payload) else {
            continue;
        };
        let Some(key) = v["id"].as_str().filter(|k| k.starts_with(&run)) else {
            continue;
        };
        let namespace = v["namespace"].as_str().unwrap_or_default();
        if let Some(hits) = v["hits"].as_array() {
            report.hits += hits.len() as u64;
            report.foreign += hits
                .iter()
                .filter(|h| !owned_by(h["conversation"].as_str().unwrap_or_default(), namespace))
                .count() as u64;
        }
        let sent_at = pending.lock().ok().and_then(|mut p| p.remove(key));
        match sent_at {
            Some(at) => {
                answered_keys.insert(key.to_string());
                report.answered += 1;
                latencies.saturating_record(received.duration_since(at).as_micros().max(1) as u64);
                let stage_us =
                    |stage: &str| (v["timings_ms"][stage].as_f64().unwrap_or(0.0) * 1000.0) as u64;
                embed_times.saturating_record(stage_us("embed").max(1));
                search_times.saturating_record(stage_us("search").max(1));
            }
            None if answered_keys.contains(key) => report.duplicates += 1,
            None => continue,
        }
        if let Some(reason) = v["degraded"].as_str() {
            report.degraded += 1;
            *report
                .degraded_reasons
                .entry(reason.to_string())
                .or_default() += 1;
            if reason.starts_with("shed") {
                report.shed += 1;
            }
        }
        if v["deadline_met"] == serde_json::Value::Bool(false) {
            report.deadline_missed += 1;
        }
    }
    report.cpu_ms = process_cpu_ms() - cpu_at_start;
    report.cpu_ms_per_answer = report.cpu_ms / report.answered.max(1) as f64;
    report.sent = sent;
    report.lost = sent.saturating_sub(report.answered);
    report.throughput_per_s = report.answered as f64 / report.seconds.max(f64::EPSILON);
    report.latency_p50_ms = percentile_ms(&latencies, 0.5);
    report.latency_p99_ms = percentile_ms(&latencies, 0.99);
    report.latency_max_ms = latencies.max() as f64 / 1000.0;
    report.embed_ms_p50 = percentile_ms(&embed_times, 0.5);
    report.embed_ms_p99 = percentile_ms(&embed_times, 0.99);
    report.search_ms_p50 = percentile_ms(&search_times, 0.5);
    report.search_ms_p99 = percentile_ms(&search_times, 0.99);
    Ok(report)
}

/// How the benchmark's replicas share the namespaces: `partitions` = 0 is one full replica;
/// otherwise partition `p` is owned by replicas `p % replicas` and `(p + 1) % replicas` (two
/// owners, round robin; one when there is one replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub replicas: usize,
    pub partitions: u32,
}

impl Topology {
    /// Checks that the topology can serve: several replicas need partitions (full replicas
    /// would each answer every transcript), and every replica must own one.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.replicas >= 1, "--replicas must be at least 1");
        anyhow::ensure!(
            self.replicas == 1 || self.partitions >= 1,
            "--replicas {} needs --partitions: unsharded replicas would each answer every \
             transcript",
            self.replicas
        );
        for i in 0..self.replicas {
            anyhow::ensure!(
                self.partitions == 0 || !self.owned(i).is_empty(),
                "with --partitions {} and two owners each, replica {i} of {} owns none: use at \
                 least {} partitions",
                self.partitions,
                self.replicas,
                self.replicas.div_ceil(2)
            );
        }
        Ok(())
    }

    /// The partitions replica `i` owns (empty when not sharded).
    pub fn owned(&self, i: usize) -> Vec<u32> {
        let n = self.replicas;
        (0..self.partitions)
            .filter(|p| {
                let p = *p as usize;
                p % n == i || (n > 1 && (p + 1) % n == i)
            })
            .collect()
    }

    /// Replica `i`'s `[nats]` settings.
    pub fn replica_config(&self, base: &NatsConfig, i: usize) -> NatsConfig {
        NatsConfig {
            replica_id: format!("{}-r{i}", base.replica_id),
            partition_count: self.partitions,
            partitions: self.owned(i),
            ..base.clone()
        }
    }
}

/// The whole benchmark: a private `nats-server` (unless `nats_url` names one; sharded, it starts
/// with the partition mappings), one bus per replica serving the engine that `build` makes for
/// replica `i` from its [`JetStreamWriter`], the seed memories published to the stream and
/// consumed by their partitions' owners, the load, a graceful stop.
pub async fn run_replicas<E, S, F, Fut>(
    mut nats: NatsConfig,
    nats_url: Option<&str>,
    topology: Topology,
    seed: &[Memory],
    spec: &LoadSpec,
    mut build: F,
) -> anyhow::Result<LoadReport>
where
    E: ContextService,
    S: MemorySink,
    F: FnMut(usize, JetStreamWriter) -> Fut,
    Fut: Future<Output = anyhow::Result<(Arc<E>, Arc<S>)>>,
{
    topology.validate()?;
    let store_dir =
        std::env::temp_dir().join(format!("voicerag-bench-nats-{}", std::process::id()));
    let subjects = Subjects::new(&nats.subject_prefix);
    let server = match nats_url {
        Some(urls) => {
            nats.urls = urls.split(',').map(|u| u.trim().to_string()).collect();
            None
        }
        None => {
            std::fs::create_dir_all(&store_dir)
                .with_context(|| format!("create {}", store_dir.display()))?;
            let mappings =
                (topology.partitions > 0).then(|| subjects.server_mappings(topology.partitions));
            let server = LocalNatsServer::start_with_config(&store_dir, mappings.as_deref())?;
            nats.urls = vec![server.url()];
            Some(server)
        }
    };
    // The load (and the seeding) come from their own connection, as an agent's would.
    let client = async_nats::connect(nats.urls.clone())
        .await
        .context("load client")?;
    let mut beats = client
        .subscribe(subjects.heartbeat("*"))
        .await
        .context("subscribe to heartbeats")?;
    let mut buses = Vec::new();
    for i in 0..topology.replicas {
        let config = topology.replica_config(&nats, i);
        let connection = BusConnection::connect(config, Duration::from_secs(30)).await?;
        let (engine, sink) = build(i, connection.writer()).await?;
        buses.push(connection.start(engine, sink).await?);
    }
    let report = async {
        seed_stream(&client, &subjects, seed).await?;
        caught_up(&mut beats, topology.replicas, nats.heartbeat()).await?;
        let mut report = run_load(&client, &subjects, spec).await?;
        report.replicas = topology.replicas;
        report.partitions = topology.partitions;
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    for bus in buses {
        bus.stop().await?;
    }
    // Close the load connection before the server goes, or it logs reconnect attempts.
    let _ = client.drain().await;
    drop(client);
    drop(server);
    if nats_url.is_none() {
        let _ = std::fs::remove_dir_all(&store_dir);
    }
    report
}

/// Publishes the seed memories to the stream, as agents do, and waits for every ack.
async fn seed_stream(
    client: &async_nats::Client,
    subjects: &Subjects,
    seed: &[Memory],
) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    for chunk in seed.chunks(256) {
        let mut acks = Vec::with_capacity(chunk.len());
        for m in chunk {
            let payload = serde_json::to_vec(&serde_json::json!({
                "v": 2,
                "id": m.id,
                "text": m.text,
                "speaker": m.speaker,
                "ts": m.ts_ms as f64 / 1000.0,
            }))?;
            acks.push(
                js.send_publish(
                    subjects.memory(&m.namespace, &m.conversation),
                    async_nats::jetstream::message::PublishMessage::build()
                        .payload(payload.into())
                        .message_id(format!("{}.{}", m.namespace, m.id)),
                )
                .await
                .context("seed publish")?,
            );
        }
        for ack in futures::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack.context("seed memory not acknowledged")?;
        }
    }
    Ok(())
}

/// Waits until every replica reports its memory consumers caught up (no lag, nothing unacked),
/// in a heartbeat sent well after the seeding ended.
async fn caught_up(
    beats: &mut async_nats::Subscriber,
    replicas: usize,
    heartbeat: Duration,
) -> anyhow::Result<()> {
    let seeded = Instant::now();
    let until = seeded + Duration::from_secs(1800);
    let mut done = HashSet::new();
    while done.len() < replicas {
        let left = until.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, beats.next())
            .await
            .context("replicas never caught up with the seed memories")?
            .context("heartbeat subscription closed")?;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&message.payload) else {
            continue;
        };
        let fresh = seeded.elapsed() > heartbeat * 2;
        if fresh && v["stream"]["lag"] == 0 && v["stream"]["ack_pending"] == 0 {
            done.insert(v["replica"].as_str().unwrap_or_default().to_string());
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct BenchNatsArgs {
    #[arg(long, default_value_t = 8)]
    pub conversations: usize,
    #[arg(long, default_value_t = 250)]
    pub interval_ms: u64,
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Users the conversations belong to (round robin); their memories are seeded too.
    #[arg(long, default_value_t = 12)]
    pub namespaces: usize,
    /// voicerag replicas serving the load (in this process, each with its own store).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Namespace partitions (0: not sharded, one full replica); each owned by two replicas.
    #[arg(long, default_value_t = 0)]
    pub partitions: u32,
    /// Memories seeded through the stream before the load, spread over the namespaces.
    #[arg(long, default_value_t = 2000)]
    pub seed: usize,
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
}

/// `voicerag bench nats`: the real models and fresh stores in a temporary directory, served over
/// a private `nats-server` (or `--nats-url`). Fails (exit 1) if any answer was lost or duplicated,
/// or a hit came from a foreign namespace.
pub async fn run(config: &Config, args: &BenchNatsArgs) -> anyhow::Result<ExitCode> {
    let data =
        std::env::temp_dir().join(format!("voicerag-bench-nats-store-{}", std::process::id()));
    let result = bench(config, args, &data).await;
    let _ = std::fs::remove_dir_all(&data);
    let report = result?;
    println!("{report}");
    println!("{}", serde_json::to_string(&report)?);
    Ok(
        if report.lost == 0 && report.duplicates == 0 && report.foreign == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

async fn bench(config: &Config, args: &BenchNatsArgs, data: &Path) -> anyhow::Result<LoadReport> {
    let topology = Topology {
        replicas: args.replicas,
        partitions: args.partitions,
    };
    topology.validate()?;
    anyhow::ensure!(args.namespaces >= 1, "--namespaces must be at least 1");
    let namespaces: Vec<String> = (0..args.namespaces).map(|i| format!("n{i}")).collect();
    let started = Instant::now();
    let mut engines = Vec::with_capacity(topology.replicas);
    let mut configs = Vec::with_capacity(topology.replicas);
    for i in 0..topology.replicas {
        let mut replica = config.clone();
        replica.store.data_dir = data.join(format!("r{i}")).display().to_string();
        engines.push(Engines::load(&replica, StoreAccess::ReadWrite, true)?);
        configs.push(replica);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let seed: Vec<Memory> = (0..args.seed)
        .map(|i| {
            let namespace = &namespaces[i % namespaces.len()];
            synthetic_memory(
                &mut rng,
                i,
                format!("seed{i}"),
                namespace.clone(),
                format!("earlier-{namespace}-{}", i / 20),
            )
        })
        .collect();
    eprintln!(
        "bench nats: {} replica(s) loaded in {:.1} s, {} partition(s); reranker {}; seeding {} \
         memories through the stream",
        topology.replicas,
        started.elapsed().as_secs_f64(),
        topology.partitions,
        if engines.iter().any(|e| e.reranker.is_some()) {
            "on"
        } else {
            "off"
        },
        seed.len()
    );
    let spec = LoadSpec {
        conversations: args.conversations,
        interval: Duration::from_millis(args.interval_ms),
        duration: Duration::from_secs(args.seconds),
        grace: Duration::from_secs(10),
        namespaces,
    };
    let mut nats = config.nats.clone();
    nats.replica_id = format!("bench-{}", std::process::id());
    nats.heartbeat_ms = 200;
    let (engines, configs) = (&engines, &configs);
    let handles: Arc<Mutex<Vec<Arc<voicerag_actors::PipelineHandle>>>> = Arc::default();
    let started_handles = Arc::clone(&handles);
    let report = run_replicas(
        nats,
        args.nats_url.as_deref(),
        topology,
        &seed,
        &spec,
        move |i, writer| {
            let (engines, config) = (&engines[i], &configs[i]);
            let started_handles = Arc::clone(&started_handles);
            async move {
                let handle = Arc::new(engines.start(config, Arc::new(writer)).await?);
                if let Ok(mut h) = started_handles.lock() {
                    h.push(Arc::clone(&handle));
                }
                Ok((handle, engines.store_writer()))
            }
        },
    )
    .await;
    let (runs, texts) = handles
        .lock()
        .map(|h| {
            h.iter()
                .map(|p| p.health().counters)
                .fold((0, 0), |a, c| (a.0 + c.embed_runs, a.1 + c.embedded_texts))
        })
        .unwrap_or_default();
    eprintln!(
        "bench nats: query embedder runs {runs}, texts {texts}, {:.2} texts per run",
        texts as f64 / runs.max(1) as f64
    );
    let (offered, reused) = engines
        .iter()
        .map(|e| e.final_embeddings.counts())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    eprintln!(
        "bench nats: finals' query embeddings offered {offered}, stored as their memories' vectors {reused}"
    );
    report
}

#[cfg(test)]
mod tests {
    use super::Topology;

    #[test]
    fn every_partition_has_two_owners_round_robin() {
        let t = Topology {
            replicas: 3,
            partitions: 3,
        };
        t.validate().unwrap();
        assert_eq!(t.owned(0), vec![0, 2]);
        assert_eq!(t.owned(1), vec![0, 1]);
        assert_eq!(t.owned(2), vec![1, 2]);
        for p in 0..3 {
            assert_eq!((0..3).filter(|i| t.owned(*i).contains(&p)).count(), 2);
        }
        let one = Topology {
            replicas: 1,
            partitions: 0,
        };
        one.validate().unwrap();
        assert!(one.owned(0).is_empty());
        let alone = Topology {
            replicas: 1,
            partitions: 3,
        };
        assert_eq!(alone.owned(0), vec![0, 1, 2]);
        for bad in [(2, 0), (3, 1), (0, 0)] {
            let t = Topology {
                replicas: bad.0,
                partitions: bad.1,
            };
            assert!(t.validate().is_err(), "{t:?}");
        }
    }
}
