//! `voicerag bench nats`: C conversations each send a final transcript every T ms for S seconds
//! over NATS on loopback; the report gives throughput, context latency p50/p99 as the sender sees
//! it (publish to context received), answers lost (must be 0), shed and degraded counts.

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use voicerag_actors::{Memory, memory_id};

use super::stats::percentile_ms;
use super::synthetic_utterance;
use crate::bus::server::LocalNatsServer;
use crate::bus::{
    BusConnection, ContextService, JetStreamWriter, MemorySink, NatsConfig, Subjects,
};
use crate::config::Config;
use crate::engines::{Engines, StoreAccess};
use crate::ingest;

/// What the load generator sends.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub conversations: usize,
    pub interval: Duration,
    pub duration: Duration,
    /// How long to wait for the last answers after sending stopped.
    pub grace: Duration,
    pub namespace: String,
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
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bench nats: {} conversations x 1 transcript/{} ms for {:.1} s: sent {}, answered {}, \
             lost {}, duplicates {}, shed {}, degraded {} {:?}, deadline missed {}; {:.1} answers/s; \
             context latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.conversations,
            self.interval_ms,
            self.seconds,
            self.sent,
            self.answered,
            self.lost,
            self.duplicates,
            self.shed,
            self.degraded,
            self.degraded_reasons,
            self.deadline_missed,
            self.throughput_per_s,
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.latency_max_ms
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
    let run = format!("bench{}", std::process::id());
    let mut contexts = client
        .subscribe(subjects.context(&spec.namespace, "*"))
        .await
        .context("subscribe to contexts")?;
    client.flush().await.context("flush")?;

    let pending: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    let mut senders = Vec::new();
    for c in 0..spec.conversations {
        let client = client.clone();
        let pending = pending.clone();
        let conversation = format!("{run}-c{c}");
        let subject = subjects.transcript(&spec.namespace, &conversation);
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
        interval_ms: spec.interval.as_millis() as u64,
        ..Default::default()
    };
    let mut latencies =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?;
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
        let sent_at = pending.lock().ok().and_then(|mut p| p.remove(key));
        match sent_at {
            Some(at) => {
                answered_keys.insert(key.to_string());
                report.answered += 1;
                latencies.saturating_record(received.duration_since(at).as_micros().max(1) as u64);
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
    report.sent = sent;
    report.lost = sent.saturating_sub(report.answered);
    report.throughput_per_s = report.answered as f64 / report.seconds.max(f64::EPSILON);
    report.latency_p50_ms = percentile_ms(&latencies, 0.5);
    report.latency_p99_ms = percentile_ms(&latencies, 0.99);
    report.latency_max_ms = latencies.max() as f64 / 1000.0;
    Ok(report)
}

/// The whole benchmark: a private `nats-server` (unless `nats_url` names one), the bus serving
/// the engine that `build` makes from the bus's [`JetStreamWriter`], the load, a graceful stop.
pub async fn run_with<E, S, F, Fut>(
    mut nats: NatsConfig,
    nats_url: Option<&str>,
    spec: &LoadSpec,
    build: F,
) -> anyhow::Result<LoadReport>
where
    E: ContextService,
    S: MemorySink,
    F: FnOnce(JetStreamWriter) -> Fut,
    Fut: Future<Output = anyhow::Result<(Arc<E>, Arc<S>)>>,
{
    let store_dir =
        std::env::temp_dir().join(format!("voicerag-bench-nats-{}", std::process::id()));
    let server = match nats_url {
        Some(urls) => {
            nats.urls = urls.split(',').map(|u| u.trim().to_string()).collect();
            None
        }
        None => {
            std::fs::create_dir_all(&store_dir)
                .with_context(|| format!("create {}", store_dir.display()))?;
            let server = LocalNatsServer::start(&store_dir)?;
            nats.urls = vec![server.url()];
            Some(server)
        }
    };
    let connection = BusConnection::connect(nats.clone(), Duration::from_secs(30)).await?;
    let subjects = connection.subjects().clone();
    let (engine, sink) = build(connection.writer()).await?;
    let bus = connection.start(engine, sink).await?;
    // The load comes from its own connection, as an agent's would.
    let client = async_nats::connect(nats.urls.clone())
        .await
        .context("load client")?;
    let report = run_load(&client, &subjects, spec).await;
    bus.stop().await?;
    // Close the load connection before the server goes, or it logs reconnect attempts.
    let _ = client.drain().await;
    drop(client);
    drop(server);
    if nats_url.is_none() {
        let _ = std::fs::remove_dir_all(&store_dir);
    }
    report
}

#[derive(Debug, Args)]
pub struct BenchNatsArgs {
    #[arg(long, default_value_t = 8)]
    pub conversations: usize,
    #[arg(long, default_value_t = 250)]
    pub interval_ms: u64,
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
}

/// Memories in the benchmark's store, so that retrieval does real work.
const SEED_MEMORIES: usize = 2000;
const NAMESPACE: &str = "bench";

/// `voicerag bench nats`: the real models and a fresh store in a temporary directory, served over
/// a private `nats-server` (or `--nats-url`). Fails (exit 1) if any answer was lost or duplicated.
pub async fn run(config: &Config, args: &BenchNatsArgs) -> anyhow::Result<ExitCode> {
    let data =
        std::env::temp_dir().join(format!("voicerag-bench-nats-store-{}", std::process::id()));
    let mut config = config.clone();
    config.store.data_dir = data.display().to_string();
    let result = bench(&config, args).await;
    let _ = std::fs::remove_dir_all(&data);
    let report = result?;
    println!("{report}");
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.lost == 0 && report.duplicates == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn bench(config: &Config, args: &BenchNatsArgs) -> anyhow::Result<LoadReport> {
    let engines = Engines::load(config, StoreAccess::ReadWrite, true)?;
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let seed: Vec<Memory> = (0..SEED_MEMORIES)
        .map(|i| Memory {
            id: format!("seed{i}"),
            namespace: NAMESPACE.into(),
            conversation: format!("earlier{}", i / 20),
            speaker: if i % 2 == 0 {
                "user".into()
            } else {
                "agent".into()
            },
            text: synthetic_utterance(&mut rng),
            ts_ms: 1_700_000_000_000 + i as i64 * 1000,
            supersedes: Vec::new(),
            expires_at_ms: None,
        })
        .collect();
    for chunk in seed.chunks(512) {
        let prepared = ingest::embed_memories(&engines.embedder, chunk.to_vec())?;
        engines.store.add(prepared)?;
    }
    engines.store.flush()?;
    eprintln!(
        "bench nats: {SEED_MEMORIES} memories stored in {:.1} s; reranker {}",
        started.elapsed().as_secs_f64(),
        if engines.reranker.is_some() {
            "on"
        } else {
            "off"
        }
    );
    let spec = LoadSpec {
        conversations: args.conversations,
        interval: Duration::from_millis(args.interval_ms),
        duration: Duration::from_secs(args.seconds),
        grace: Duration::from_secs(10),
        namespace: NAMESPACE.into(),
    };
    let mut nats = config.nats.clone();
    nats.replica_id = format!("bench-{}", std::process::id());
    let engines = &engines;
    run_with(nats, args.nats_url.as_deref(), &spec, |writer| async move {
        let handle = engines.start(config, Arc::new(writer)).await?;
        Ok((Arc::new(handle), engines.store_writer()))
    })
    .await
}
