//! `voicerag bench soak`: C conversations, each sending partials then a final every T ms for M
//! minutes (or `--seconds`), and an agent reply after every final that becomes a memory; in
//! process, or over NATS with `--bus` (a private `nats-server`, as `bench nats` starts). Reports
//! total p50/p99 against the budget, degraded share by reason, rerank outcomes, deadline misses,
//! the final's embed p99, and RSS and thread count at the start and the end of the load.
//!
//! `--shared-session` makes the memory writer embed on the query embedder's session (the "before"
//! of issue 11 item 2); `--embed-batch-max 1` turns micro-batching off (the "before" of item 3).

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use voicerag_actors::{AgentReply, ContextResult, Memory, PipelineHandle, Transcript, memory_id};

use super::answer_log::AnswerLog;
use super::usage::{Usage, process_usage, threads_by_name};
use super::{synthetic_memory, synthetic_utterance};
use crate::bus::BusConnection;
use crate::bus::server::LocalNatsServer;
use crate::config::Config;
use crate::engines::{Engines, StoreAccess};
use crate::ingest;

#[derive(Debug, Args)]
pub struct BenchSoakArgs {
    #[arg(long, default_value_t = 16)]
    pub conversations: usize,
    /// Each conversation sends one utterance (partials, then the final) every this many ms.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// How long to send (default 10 minutes).
    #[arg(long, conflicts_with = "seconds")]
    pub minutes: Option<u64>,
    /// How long to send, for short smoke runs.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Partials sent before each final.
    #[arg(long, default_value_t = 2)]
    pub partials: usize,
    /// Through NATS (a private nats-server) instead of in process.
    #[arg(long)]
    pub bus: bool,
    /// End with one summary JSON line.
    #[arg(long)]
    pub json: bool,
    /// Cross-encoder directory (overrides reranker.model_dir).
    #[arg(long, conflicts_with = "no_reranker")]
    pub reranker: Option<PathBuf>,
    #[arg(long)]
    pub no_reranker: bool,
    /// Overrides pipeline.budget_ms.
    #[arg(long)]
    pub budget_ms: Option<u64>,
    /// Overrides pipeline.embed_batch_max (1: micro-batching off).
    #[arg(long)]
    pub embed_batch_max: Option<usize>,
    /// The memory writer embeds on the query embedder's session (no separate session).
    #[arg(long)]
    pub shared_session: bool,
    /// Sentences in each agent reply: longer replies make the memory writer's embedding runs
    /// longer (a busier writer for the queries to contend with).
    #[arg(long, default_value_t = 1)]
    pub reply_sentences: usize,
    /// Memories stored before the load, so retrieval does real work.
    #[arg(long, default_value_t = 2000)]
    pub memories: usize,
    /// Every conversation belongs to one user (one namespace that holds every memory of the run),
    /// instead of each conversation being a user of its own, as in a deployment.
    #[arg(long)]
    pub one_namespace: bool,
    /// Seconds between samples of RSS, threads and the store while the load runs.
    #[arg(long, default_value_t = 30)]
    pub sample_s: u64,
    /// Seconds of load counted as warm-up (pools starting, caches filling) when reading growth.
    #[arg(long, default_value_t = 60)]
    pub warm_s: u64,
}

/// The namespace a conversation's user has: `--one-namespace` puts them all in one.
fn namespace_of(args: &BenchSoakArgs, conversation: usize) -> String {
    if args.one_namespace {
        "soak".to_string()
    } else {
        format!("soak-user{conversation}")
    }
}

/// The summary (the `--json` line).
#[derive(Debug, Default, Serialize)]
pub struct SoakReport {
    pub mode: &'static str,
    pub conversations: usize,
    /// Users (namespaces) the conversations belong to: one each, or one for all.
    pub namespaces: usize,
    pub interval_ms: u64,
    pub seconds: f64,
    pub reranker: bool,
    pub shared_session: bool,
    pub embed_batch_max: usize,
    /// Finals sent.
    pub sent: u64,
    /// Finals answered (once each).
    pub answered: u64,
    /// Finals never answered: must be 0.
    pub lost: u64,
    /// Finals answered more than once: must be 0.
    pub duplicates: u64,
    pub degraded: u64,
    pub degraded_share: f64,
    pub degraded_reasons: BTreeMap<String, u64>,
    /// Rerank outcome of each answer: "full", "partial", "skipped:budget", "failed", "off", ...
    pub rerank: BTreeMap<String, u64>,
    pub deadline_missed: u64,
    pub budget_ms: u64,
    /// From receipt to result (the pipeline's own clock).
    pub total_ms_p50: f64,
    pub total_ms_p99: f64,
    pub total_ms_max: f64,
    /// The final's embedding wait and run (0 for finals that reused a partial's embedding).
    pub embed_ms_p50: f64,
    pub embed_ms_p99: f64,
    /// Agent replies sent to be remembered, and sentences in each.
    pub replies: u64,
    pub reply_sentences: usize,
    /// Memories the pipeline wrote (in process: committed; over the bus: published to the stream).
    pub memories_written: u64,
    /// Memories in the store after the pipeline stopped (the seed memories included).
    pub memories_stored: u64,
    /// Agent replies and finals refused because `pipeline.memory_queue_max` memories waited for
    /// the writer (a refused final is never answered: it is also in `lost`). Must be 0.
    pub memories_refused: u64,
    /// Writes that made the memories durable, and the mean memories per write (it grows with
    /// the writer's backlog).
    pub memory_batches: u64,
    pub memory_batch_mean: f64,
    /// Most memories waiting for the writer, sampled while the load ran.
    pub memory_queue_peak: usize,
    /// Utterances the pipeline held state for when the load ended: bounded by what arrived
    /// within `pipeline.speculative_ttl_ms`, however long the soak runs.
    pub utterances_tracked_end: usize,
    /// Stage calls given up on whose threads still ran at the end.
    pub abandoned_calls: usize,
    pub rss_mb_start: f64,
    pub rss_mb_end: f64,
    /// RSS split: heap and other anonymous memory (a leak shows here) ...
    pub rss_anon_mb_start: f64,
    pub rss_anon_mb_end: f64,
    /// ... and mapped file pages (LMDB's map, tantivy's segments: they grow with the store).
    pub rss_file_mb_start: f64,
    pub rss_file_mb_end: f64,
    pub threads_start: u64,
    pub threads_end: u64,
    /// `runtime.malloc_arenas`, and glibc's `MALLOC_ARENA_MAX` if set (it wins).
    pub malloc_arenas: usize,
    pub malloc_arena_max_env: Option<String>,
    /// Threads by name at the start and the end (digits folded to `#`).
    pub thread_names_start: BTreeMap<String, u64>,
    pub thread_names_end: BTreeMap<String, u64>,
    /// Anonymous RSS less the vectors the store keeps in RAM for exact search, at the start, at
    /// the first sample after warm-up (`warm_s`) and at the end: what must stay flat while the
    /// store grows.
    pub anon_non_store_mb_start: f64,
    pub anon_non_store_mb_warm: f64,
    pub anon_non_store_mb_end: f64,
    /// What malloc holds free (fragmentation) at the end, and hands out.
    pub heap_free_mb_end: f64,
    pub heap_used_mb_end: f64,
    /// Threads at the first sample after warm-up.
    pub threads_warm: u64,
    /// Most threads at any sample (a pool that grew and shrank back shows here).
    pub threads_max: u64,
    /// `runtime.blocking_threads`: the blocking pool started whole before the load.
    pub blocking_threads: usize,
    /// Memories in the store at the warm-up sample and at the end.
    pub memories_warm: u64,
    pub memories_end: u64,
    /// Growth of `anon_non_store_mb` from warm-up to the end per 100,000 memories stored in that
    /// time: what is not the store must not grow with it (0 when flat).
    pub anon_non_store_mb_per_100k_memories: f64,
    /// The same growth as the slope of a least-squares line through every sample from warm-up
    /// on: one sample taken while malloc holds more free memory than usual (it swings by 20 MiB
    /// as batches come and go) moves the two-point figure; the fitted one barely.
    pub anon_non_store_mb_per_100k_memories_fit: f64,
    /// Seconds of load counted as warm-up.
    pub warm_s: f64,
    /// Usage sampled every `--sample-s` seconds while the load ran.
    pub samples: Vec<SoakSample>,
    /// The store when the load started and when it ended, to read RSS against.
    pub store_start: StoreUsage,
    pub store_end: StoreUsage,
}

/// The process and the store at one moment of the load.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SoakSample {
    /// Seconds since the load started.
    pub t_s: f64,
    #[serde(flatten)]
    pub usage: Usage,
    pub memories: u64,
    pub exact_cache_mb: f64,
    /// `rss_anon_mb` less `exact_cache_mb`.
    pub anon_non_store_mb: f64,
}

impl SoakSample {
    async fn take(t_s: f64, store: &Arc<crate::store::MemoryStore>) -> Self {
        let store = StoreUsage::read(store).await;
        let usage = process_usage();
        Self {
            t_s,
            usage,
            memories: store.memories,
            exact_cache_mb: store.exact_cache_mb,
            anon_non_store_mb: usage.rss_anon_mb - store.exact_cache_mb,
        }
    }
}

/// How big the store is: what RSS grows with when nothing leaks.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct StoreUsage {
    pub memories: u64,
    pub chunks: u64,
    /// Bytes on disk under the data directory, in MiB.
    pub disk_mb: f64,
    /// LMDB pages in use, in MiB.
    pub lmdb_used_mb: f64,
    /// The BM25 index on disk, in MiB.
    pub bm25_mb: f64,
    /// Vectors held in RAM for exact search, and the MiB the cache holds for them (its blocks,
    /// filled or not, chunk ids and row maps).
    pub exact_cached_vectors: u64,
    pub exact_cache_mb: f64,
}

impl StoreUsage {
    fn of(store: &crate::store::MemoryStore) -> Self {
        const MIB: f64 = 1024.0 * 1024.0;
        match store.stats() {
            Ok(s) => Self {
                memories: s.memories,
                chunks: s.chunks,
                disk_mb: s.disk_bytes as f64 / MIB,
                lmdb_used_mb: s.lmdb_used_bytes as f64 / MIB,
                bm25_mb: s.bm25_bytes as f64 / MIB,
                exact_cached_vectors: s.exact_cached_vectors,
                exact_cache_mb: s.exact_cache_bytes as f64 / MIB,
            },
            Err(e) => {
                tracing::warn!(error = %e, "soak: store stats unreadable");
                Self::default()
            }
        }
    }

    /// Read on the blocking pool: stats walk the data directory.
    async fn read(store: &Arc<crate::store::MemoryStore>) -> Self {
        let store = Arc::clone(store);
        tokio::task::spawn_blocking(move || Self::of(&store))
            .await
            .unwrap_or_default()
    }
}

/// One answer as the soak sees it, from either path.
struct Answer {
    key: String,
    total_ms: f64,
    embed_ms: f64,
    degraded: Option<String>,
    rerank: String,
    deadline_met: bool,
}

impl Answer {
    /// `None` unless it answers a final (partials' results come too with `emit_partials`).
    fn of_result(r: &ContextResult) -> Option<Self> {
        if !r.is_final {
            return None;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Some(Self {
            key: memory_id(&r.conversation, &r.utterance),
            total_ms: ms(r.timings.total),
            embed_ms: ms(r.timings.embed),
            degraded: r.degraded.clone(),
            rerank: rerank_label(r.rerank.kind(), &r.rerank.detail()),
            deadline_met: r.deadline_met(),
        })
    }

    /// A context message from the bus; `None` unless it answers a final.
    fn of_json(v: &serde_json::Value) -> Option<Self> {
        if v["final"] != serde_json::Value::Bool(true) {
            return None;
        }
        Some(Self {
            key: v["id"].as_str()?.to_string(),
            total_ms: v["timings_ms"]["total"].as_f64().unwrap_or(0.0),
            embed_ms: v["timings_ms"]["embed"].as_f64().unwrap_or(0.0),
            degraded: v["degraded"].as_str().map(str::to_string),
            rerank: rerank_label(v["rerank"].as_str().unwrap_or("?"), &v["rerank_detail"]),
            deadline_met: v["deadline_met"] != serde_json::Value::Bool(false),
        })
    }
}

fn rerank_label(kind: &str, detail: &serde_json::Value) -> String {
    match (kind, detail.as_str()) {
        ("skipped", Some(why)) => format!("skipped:{why}"),
        _ => kind.to_string(),
    }
}

/// Where the load goes: the pipeline in process, or the bus.
enum Target {
    InProcess(PipelineHandle),
    Bus {
        client: async_nats::Client,
        subjects: crate::bus::Subjects,
    },
}

impl Target {
    async fn send(
        &self,
        namespace: &str,
        conversation: &str,
        utterance: &str,
        text: &str,
        is_final: bool,
    ) {
        match self {
            Target::InProcess(h) => {
                let t = Transcript {
                    namespace: namespace.into(),
                    conversation: conversation.into(),
                    utterance: utterance.into(),
                    speaker: "user".into(),
                    text: text.into(),
                    is_final,
                    received_at: Instant::now(),
                };
                if let Err(e) = h.submit(t) {
                    tracing::warn!(error = %e, "soak submit failed");
                }
            }
            Target::Bus { client, subjects } => {
                let payload = serde_json::json!({
                    "v": 2, "utterance": utterance, "text": text, "final": is_final,
                });
                let subject = subjects.transcript(namespace, conversation);
                if let Err(e) = client.publish(subject, payload.to_string().into()).await {
                    tracing::warn!(error = %e, "soak publish failed");
                }
            }
        }
    }

    async fn reply(&self, namespace: &str, conversation: &str, utterance: &str, text: &str) {
        match self {
            Target::InProcess(h) => {
                let r = AgentReply {
                    namespace: namespace.into(),
                    conversation: conversation.into(),
                    utterance: utterance.into(),
                    text: text.into(),
                };
                if let Err(e) = h.reply(r) {
                    tracing::warn!(error = %e, "soak reply failed");
                }
            }
            Target::Bus { client, subjects } => {
                let payload = serde_json::json!({
                    "v": 2, "utterance": utterance, "speaker": "agent", "text": text,
                });
                let subject = subjects.memory(namespace, conversation);
                if let Err(e) = client.publish(subject, payload.to_string().into()).await {
                    tracing::warn!(error = %e, "soak reply publish failed");
                }
            }
        }
    }
}

pub async fn run(config: &Config, args: &BenchSoakArgs) -> anyhow::Result<ExitCode> {
    let data = tempfile::tempdir()?;
    let mut config = config.clone();
    config.store.data_dir = data.path().join("store").display().to_string();
    if let Some(dir) = &args.reranker {
        config.reranker.model_dir = dir.display().to_string();
    }
    if args.no_reranker {
        config.reranker.model_dir.clear();
    }
    if let Some(ms) = args.budget_ms {
        config.pipeline.budget_ms = ms;
    }
    if let Some(n) = args.embed_batch_max {
        config.pipeline.embed_batch_max = n;
    }
    config.validate()?;
    let mut engines = Engines::load_off_runtime(&config, StoreAccess::ReadWrite, true).await?;
    if args.shared_session {
        engines.memory_embedder = engines.embedder.clone();
    }
    let engines = Arc::new(engines);
    let namespaces: Vec<String> = (0..args.conversations.max(1))
        .map(|c| namespace_of(args, c))
        .collect();
    seed(&engines, args.memories, namespaces).await?;

    let report = if args.bus {
        let nats_dir = data.path().join("nats");
        std::fs::create_dir_all(&nats_dir)?;
        let server = LocalNatsServer::start(&nats_dir)?;
        let mut nats = config.nats.clone();
        nats.urls = vec![server.url()];
        nats.replica_id = format!("soak-{}", std::process::id());
        let connection = BusConnection::connect(nats.clone(), Duration::from_secs(30)).await?;
        let subjects = connection.subjects().clone();
        let handle = engines
            .start(&config, Arc::new(connection.writer()))
            .await?;
        let pipeline = handle.clone();
        let bus = connection
            .start(Arc::new(handle), engines.store_writer())
            .await?;
        let client = async_nats::connect(nats.urls.clone())
            .await
            .context("load client")?;
        let contexts = client
            .subscribe(subjects.context("*", "*"))
            .await
            .context("subscribe to contexts")?;
        client.flush().await.context("flush")?;
        let answers = contexts.filter_map(|m| async move {
            serde_json::from_slice::<serde_json::Value>(&m.payload)
                .ok()
                .and_then(|v| Answer::of_json(&v))
        });
        let target = Target::Bus { client, subjects };
        let probe = Probe {
            pipeline: &pipeline,
            store: &engines.store,
        };
        let report = soak(&config, args, &target, Box::pin(answers), probe).await;
        bus.stop().await?;
        if let Target::Bus { client, .. } = target {
            let _ = client.drain().await;
        }
        drop(server);
        let mut report = report?;
        report.writer_counters(&pipeline.health());
        report
    } else {
        let handle = engines.start(&config, engines.store_writer()).await?;
        let answers = handle
            .results()
            .filter_map(|r| futures::future::ready(Answer::of_result(&r)));
        let target = Target::InProcess(handle.clone());
        let probe = Probe {
            pipeline: &handle,
            store: &engines.store,
        };
        let report = soak(&config, args, &target, Box::pin(answers), probe).await;
        handle.shutdown().await?;
        let mut report = report?;
        report.writer_counters(&handle.health());
        report
    };
    let mut report = report;
    // Leaves nothing for the store's last commit, which may run after the directory is gone.
    engines.store.flush()?;
    report.memories_stored = engines.store.stats()?.memories;
    println!(
        "bench soak ({}): {} conversations ({} namespaces) x ({} partials + final)/{} ms for {:.0} s, \
         reranker {}, budget {} ms, embed_batch_max {}, {} session for memories",
        report.mode,
        report.conversations,
        report.namespaces,
        args.partials,
        report.interval_ms,
        report.seconds,
        if report.reranker { "on" } else { "off" },
        report.budget_ms,
        report.embed_batch_max,
        if report.shared_session {
            "the query's"
        } else {
            "its own"
        },
    );
    println!(
        "  finals sent {}, answered {}, lost {}, duplicates {}; total p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (budget {} ms); deadline missed {}",
        report.sent,
        report.answered,
        report.lost,
        report.duplicates,
        report.total_ms_p50,
        report.total_ms_p99,
        report.total_ms_max,
        report.budget_ms,
        report.deadline_missed
    );
    println!(
        "  degraded {} ({:.1}%) {:?}; rerank {:?}; final's embed p50 {:.2} ms, p99 {:.2} ms; {} agent replies",
        report.degraded,
        report.degraded_share * 100.0,
        report.degraded_reasons,
        report.rerank,
        report.embed_ms_p50,
        report.embed_ms_p99,
        report.replies
    );
    println!(
        "  memories written {} in {} writes (mean {:.1}), refused {}, queue peak {}, in the store {}; abandoned calls {}; utterances tracked at the end {}",
        report.memories_written,
        report.memory_batches,
        report.memory_batch_mean,
        report.memories_refused,
        report.memory_queue_peak,
        report.memories_stored,
        report.abandoned_calls,
        report.utterances_tracked_end,
    );
    println!(
        "  RSS {:.1} -> {:.1} MiB (anonymous {:.1} -> {:.1}, files {:.1} -> {:.1}), threads {} -> {}",
        report.rss_mb_start,
        report.rss_mb_end,
        report.rss_anon_mb_start,
        report.rss_anon_mb_end,
        report.rss_file_mb_start,
        report.rss_file_mb_end,
        report.threads_start,
        report.threads_end
    );
    println!(
        "  anonymous RSS less the store's vectors in RAM {:.1} -> {:.1} (after {:.0} s warm-up) -> {:.1} MiB; malloc at the end: {:.1} MiB in use, {:.1} MiB held free; threads after warm-up {}",
        report.anon_non_store_mb_start,
        report.anon_non_store_mb_warm,
        report.warm_s,
        report.anon_non_store_mb_end,
        report.heap_used_mb_end,
        report.heap_free_mb_end,
        report.threads_warm,
    );
    println!(
        "  flat? not the store's: {:.1} MiB after warm-up -> {:.1} MiB at the end over {} -> {} memories ({:+.1} MiB per 100k memories; fitted over every sample {:+.1}); threads start {}, warm {}, end {}, most {} (blocking pool {} started up front)",
        report.anon_non_store_mb_warm,
        report.anon_non_store_mb_end,
        report.memories_warm,
        report.memories_end,
        report.anon_non_store_mb_per_100k_memories,
        report.anon_non_store_mb_per_100k_memories_fit,
        report.threads_start,
        report.threads_warm,
        report.threads_end,
        report.threads_max,
        report.blocking_threads,
    );
    println!(
        "  threads by name: start {:?}, end {:?}",
        report.thread_names_start, report.thread_names_end
    );
    for s in &report.samples {
        println!(
            "  t {:>5.0} s: anonymous {:.1} MiB ({:.1} of it not the store's vectors; malloc {:.1} in use, {:.1} free), files {:.1} MiB, threads {}, memories {}",
            s.t_s,
            s.usage.rss_anon_mb,
            s.anon_non_store_mb,
            s.usage.heap_used_mb,
            s.usage.heap_free_mb,
            s.usage.rss_file_mb,
            s.usage.threads,
            s.memories
        );
    }
    let (a, b) = (&report.store_start, &report.store_end);
    println!(
        "  store {} -> {} memories, disk {:.1} -> {:.1} MiB (LMDB used {:.1} -> {:.1}, BM25 {:.1} -> {:.1}), exact-search vectors in RAM {} -> {} ({:.1} -> {:.1} MiB)",
        a.memories,
        b.memories,
        a.disk_mb,
        b.disk_mb,
        a.lmdb_used_mb,
        b.lmdb_used_mb,
        a.bm25_mb,
        b.bm25_mb,
        a.exact_cached_vectors,
        b.exact_cached_vectors,
        a.exact_cache_mb,
        b.exact_cache_mb
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(
        if report.lost == 0 && report.duplicates == 0 && report.memories_refused == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// Growth from `from_mb` to `to_mb` per 100,000 memories added between `from_memories` and
/// `to_memories` (0 when none were added).
fn growth_per_100k(from_mb: f64, to_mb: f64, from_memories: u64, to_memories: u64) -> f64 {
    let added = to_memories.saturating_sub(from_memories);
    if added == 0 {
        return 0.0;
    }
    (to_mb - from_mb) * 100_000.0 / added as f64
}

/// The least-squares slope of MiB over memories through `(memories, mb)` points, per 100,000
/// memories (0 with fewer than two distinct memory counts).
fn fitted_per_100k(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return 0.0;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    sxy / sxx * 100_000.0
}

/// Stores `n` synthetic memories, spread over the users' namespaces (on the blocking pool).
async fn seed(engines: &Arc<Engines>, n: usize, namespaces: Vec<String>) -> anyhow::Result<()> {
    let engines = Arc::clone(engines);
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let memories: Vec<Memory> = (0..n)
            .map(|i| {
                let namespace = namespaces[i % namespaces.len()].clone();
                synthetic_memory(
                    &mut rng,
                    i,
                    format!("seed{i}"),
                    namespace,
                    format!("earlier{}", i / 20),
                )
            })
            .collect();
        for chunk in memories.chunks(512) {
            let prepared = ingest::embed_memories(&engines.embedder, chunk.to_vec())?;
            engines.store.add(prepared)?;
        }
        engines.store.flush()?;
        Ok(())
    })
    .await?
}

type Answers = std::pin::Pin<Box<dyn futures::Stream<Item = Answer> + Send>>;

/// What the soak watches besides the answers: the pipeline's memory queue and the store.
struct Probe<'a> {
    pipeline: &'a PipelineHandle,
    store: &'a Arc<crate::store::MemoryStore>,
}

impl SoakReport {
    /// The memory writer's counters, read once the pipeline has stopped.
    fn writer_counters(&mut self, health: &voicerag_actors::Health) {
        let c = &health.counters;
        self.memories_written = c.memories_written;
        self.memories_refused = c.memories_refused_backlog;
        self.memory_batches = c.memory_batches;
        self.memory_batch_mean = c.memories_written as f64 / c.memory_batches.max(1) as f64;
        self.abandoned_calls = health.abandoned_calls;
    }
}

/// Sends the load through `target` and gathers the finals' answers from `answers`.
async fn soak(
    config: &Config,
    args: &BenchSoakArgs,
    target: &Target,
    mut answers: Answers,
    probe: Probe<'_>,
) -> anyhow::Result<SoakReport> {
    let duration = match (args.seconds, args.minutes) {
        (Some(s), _) => Duration::from_secs(s),
        (None, Some(m)) => Duration::from_secs(m * 60),
        (None, None) => Duration::from_secs(600),
    };
    let usage_start = process_usage();
    let store_start = StoreUsage::read(probe.store).await;
    let run = format!("soak{}", std::process::id());
    let pending: Arc<Mutex<HashSet<String>>> = Arc::default();
    let replies = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let sentences: Vec<String> = (0..256).map(|_| synthetic_utterance(&mut rng)).collect();
    let sentences = Arc::new(sentences);
    let mut report = SoakReport {
        mode: if args.bus { "bus" } else { "in-process" },
        conversations: args.conversations,
        namespaces: if args.one_namespace {
            1
        } else {
            args.conversations
        },
        interval_ms: args.interval_ms,
        reranker: !config.reranker.model_dir.is_empty(),
        shared_session: args.shared_session,
        reply_sentences: args.reply_sentences.max(1),
        embed_batch_max: config.pipeline.embed_batch_max,
        budget_ms: config.pipeline.budget_ms,
        rss_mb_start: usage_start.rss_mb,
        rss_anon_mb_start: usage_start.rss_anon_mb,
        rss_file_mb_start: usage_start.rss_file_mb,
        threads_start: usage_start.threads,
        thread_names_start: threads_by_name(),
        malloc_arenas: config.runtime.malloc_arenas,
        malloc_arena_max_env: std::env::var("MALLOC_ARENA_MAX").ok(),
        anon_non_store_mb_start: usage_start.rss_anon_mb - store_start.exact_cache_mb,
        warm_s: args.warm_s as f64,
        blocking_threads: config.runtime.blocking_threads,
        store_start,
        ..Default::default()
    };
    let samples: Arc<Mutex<Vec<SoakSample>>> = Arc::default();
    let sampler = {
        let (samples, store) = (Arc::clone(&samples), Arc::clone(probe.store));
        let every = Duration::from_secs(args.sample_s.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let sample = SoakSample::take(started.elapsed().as_secs_f64(), &store).await;
                if let Ok(mut s) = samples.lock() {
                    s.push(sample);
                }
            }
        })
    };
    let mut log = AnswerLog::new(&run)?;
    let load = async {
        let senders = (0..args.conversations).map(|c| {
            let conversation = format!("{run}-c{c}");
            let namespace = namespace_of(args, c);
            let pending = pending.clone();
            let replies = replies.clone();
            let sentences = sentences.clone();
            let offset = interval.mul_f64(c as f64 / args.conversations.max(1) as f64);
            async move {
                tokio::time::sleep(offset).await;
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0u64;
                while started.elapsed() < duration {
                    tick.tick().await;
                    let utterance = format!("u{n}");
                    let text = &sentences[(c * 31 + n as usize) % sentences.len()];
                    let words: Vec<&str> = text.split_whitespace().collect();
                    for p in 1..=args.partials {
                        let cut = (words.len() * p / (args.partials + 1)).max(1);
                        target
                            .send(
                                &namespace,
                                &conversation,
                                &utterance,
                                &words[..cut].join(" "),
                                false,
                            )
                            .await;
                    }
                    if let Ok(mut p) = pending.lock() {
                        p.insert(memory_id(&conversation, &utterance));
                    }
                    target
                        .send(&namespace, &conversation, &utterance, text, true)
                        .await;
                    let reply = (0..args.reply_sentences.max(1))
                        .map(|k| sentences[(c * 7 + n as usize + k) % sentences.len()].as_str())
                        .collect::<Vec<_>>()
                        .join(" ");
                    target
                        .reply(&namespace, &conversation, &format!("a{n}"), &reply)
                        .await;
                    replies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    n += 1;
                }
                n
            }
        });
        futures::future::join_all(senders).await
    };
    tokio::pin!(load);
    let mut sent = None;
    let mut answer_by = None;
    loop {
        report.memory_queue_peak = report
            .memory_queue_peak
            .max(probe.pipeline.memories_pending());
        if sent.is_some() && pending.lock().map(|p| p.is_empty()).unwrap_or(true) {
            break;
        }
        if answer_by.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        tokio::select! {
            counts = &mut load, if sent.is_none() => {
                sent = Some(counts.iter().sum::<u64>());
                report.seconds = started.elapsed().as_secs_f64();
                // What was sent last gets its budget and then some to arrive.
                answer_by = Some(Instant::now() + Duration::from_secs(10));
            }
            a = tokio::time::timeout(Duration::from_millis(50), answers.next()) => {
                let a = match a {
                    Ok(Some(a)) => a,
                    Ok(None) => anyhow::bail!("the answer stream ended"),
                    Err(_) => continue,
                };
                if !a.key.starts_with(&run) {
                    continue;
                }
                let was_pending = pending.lock().map(|mut p| p.remove(&a.key)).unwrap_or(false);
                if !was_pending {
                    if log.was_answered(&a.key) {
                        report.duplicates += 1;
                    }
                    continue;
                }
                log.answer(&a.key, a.total_ms, a.embed_ms);
                report.answered += 1;
                if let Some(reason) = a.degraded {
                    report.degraded += 1;
                    *report.degraded_reasons.entry(reason).or_default() += 1;
                }
                *report.rerank.entry(a.rerank).or_default() += 1;
                report.deadline_missed += u64::from(!a.deadline_met);
            }
        }
    }
    sampler.abort();
    let last = SoakSample::take(started.elapsed().as_secs_f64(), probe.store).await;
    let end_cache_mb = last.exact_cache_mb;
    let mut samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    samples.push(last);
    if let Some(warm) = samples
        .iter()
        .find(|s| s.t_s >= args.warm_s as f64)
        .or(samples.last())
    {
        report.anon_non_store_mb_warm = warm.anon_non_store_mb;
        report.threads_warm = warm.usage.threads;
        report.memories_warm = warm.memories;
    }
    let usage_end = process_usage();
    report.anon_non_store_mb_end = usage_end.rss_anon_mb - end_cache_mb;
    report.memories_end = samples.last().map_or(0, |s| s.memories);
    report.anon_non_store_mb_per_100k_memories = growth_per_100k(
        report.anon_non_store_mb_warm,
        report.anon_non_store_mb_end,
        report.memories_warm,
        report.memories_end,
    );
    let after_warm: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t_s >= args.warm_s as f64)
        .map(|s| (s.memories as f64, s.anon_non_store_mb))
        .collect();
    report.anon_non_store_mb_per_100k_memories_fit = fitted_per_100k(&after_warm);
    report.threads_max = samples
        .iter()
        .map(|s| s.usage.threads)
        .chain([usage_end.threads])
        .max()
        .unwrap_or(0);
    report.heap_free_mb_end = usage_end.heap_free_mb;
    report.heap_used_mb_end = usage_end.heap_used_mb;
    report.thread_names_end = threads_by_name();
    report.samples = samples;
    report.utterances_tracked_end = probe.pipeline.health().utterances_tracked;
    report.rss_mb_end = usage_end.rss_mb;
    report.rss_anon_mb_end = usage_end.rss_anon_mb;
    report.rss_file_mb_end = usage_end.rss_file_mb;
    report.threads_end = usage_end.threads;
    report.store_end = StoreUsage::read(probe.store).await;
    report.sent = sent.unwrap_or(0);
    report.lost = report.sent.saturating_sub(report.answered);
    report.replies = replies.load(std::sync::atomic::Ordering::Relaxed);
    report.degraded_share = report.degraded as f64 / report.answered.max(1) as f64;
    report.total_ms_p50 = log.total_ms(0.5);
    report.total_ms_p99 = log.total_ms(0.99);
    report.total_ms_max = log.total_ms_max();
    report.embed_ms_p50 = log.embed_ms(0.5);
    report.embed_ms_p99 = log.embed_ms(0.99);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::{fitted_per_100k, growth_per_100k};

    #[test]
    fn the_fitted_growth_follows_the_trend_not_the_last_sample() {
        // 4 MiB per 100k, with the last sample 15 MiB high (malloc holding free memory then).
        let mut points: Vec<(f64, f64)> = (0..20)
            .map(|i| {
                let m = 20_000.0 + f64::from(i) * 9_000.0;
                (m, 200.0 + m * 4e-5 + if i % 2 == 0 { 1.0 } else { -1.0 })
            })
            .collect();
        points[19].1 += 15.0;
        let fit = fitted_per_100k(&points);
        let two_point = growth_per_100k(points[0].1, points[19].1, 20_000, 191_000);
        assert!((fit - 4.0).abs() < 2.5, "fitted {fit}");
        assert!(two_point > 10.0, "two-point {two_point}");
        assert_eq!(fitted_per_100k(&points[..1]), 0.0);
        assert_eq!(fitted_per_100k(&[(5.0, 1.0), (5.0, 9.0)]), 0.0);
    }

    #[test]
    fn growth_is_scaled_to_100k_memories_added() {
        assert_eq!(growth_per_100k(200.0, 210.0, 10_000, 60_000), 20.0);
        assert_eq!(growth_per_100k(200.0, 190.0, 0, 100_000), -10.0);
        assert_eq!(
            growth_per_100k(200.0, 250.0, 5_000, 5_000),
            0.0,
            "none added"
        );
    }
}
