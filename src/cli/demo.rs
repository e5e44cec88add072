//! `voicerag demo`: a scripted voice session through the in-process pipeline, with timings.
//!
//! Seeds a temporary store with an earlier conversation of the same user (and one of another user,
//! who must never show up), then replays partials, finals and agent replies at real-time pace.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde::Deserialize;
use voicerag_actors::{AgentReply, ContextResult, Transcript, memory_id};

use super::UsageError;
use super::args::DemoArgs;
use super::output::print_human;
use voicerag::bench::stats::percentile;
use voicerag::config::Config;
use voicerag::engines::{Engines, StoreAccess};
use voicerag::ingest;

/// The user whose session is replayed.
const DEMO_NAMESPACE: &str = "alice";
const DEMO_CONVERSATION: &str = "demo-session";

/// One event of the scripted session.
#[derive(Debug, Deserialize)]
struct Event {
    at_ms: u64,
    kind: EventKind,
    utterance: String,
    text: String,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum EventKind {
    Partial,
    Final,
    Reply,
}

pub async fn run(config: &Config, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let events = read_session(&args.session)?;
    let finals = events.iter().filter(|e| e.kind == EventKind::Final).count();
    let data = tempfile::tempdir().context("creating the demo's temporary store")?;
    let mut config = config.clone();
    config.store.data_dir = data.path().display().to_string();

    // Off unless `metrics.listen` is set: the demo then shows the same Prometheus endpoint as serve.
    let metrics = super::logging::init_metrics(&config.metrics)?;
    let load_started = Instant::now();
    let engines = Engines::load_off_runtime(&config, StoreAccess::ReadWrite, true).await?;
    if metrics.is_some() {
        super::logging::spawn_store_gauges(engines.store.clone());
    }
    let seeded = seed(&engines, &config, &args.seed)?;
    eprintln!(
        "demo: models loaded and {seeded} earlier memories seeded in {:.0} ms (embedder {}, reranker {})",
        load_started.elapsed().as_secs_f64() * 1000.0,
        engines.embedder.model_name(),
        if config.reranker.model_dir.is_empty() {
            "off: add --reranker MODEL_DIR to turn it on".to_string()
        } else {
            config.reranker.model_dir.clone()
        },
    );

    let handle = engines.start(&config, engines.store_writer()).await?;
    let mut results = handle.results();
    let json = args.json;
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut finals_seen = 0usize;
        while finals_seen < finals {
            let Some(result) = results.next().await else {
                break;
            };
            finals_seen += usize::from(result.is_final);
            let id = memory_id(&result.conversation, &result.utterance);
            let mut out = std::io::stdout().lock();
            let written = if json {
                writeln!(
                    out,
                    "{}",
                    voicerag::bus::wire::transcript_context_json(&result)
                )
            } else {
                print_human(&mut out, &id, &result)
            };
            if written.is_err() {
                break;
            }
            seen.push(result);
        }
        seen
    });

    let started = tokio::time::Instant::now();
    let mut spoken: HashMap<String, String> = HashMap::new();
    for event in &events {
        if !args.fast {
            tokio::time::sleep_until(started + Duration::from_millis(event.at_ms)).await;
        }
        match event.kind {
            EventKind::Reply => {
                if !json {
                    println!("agent> {}", event.text);
                }
                handle.reply(AgentReply {
                    namespace: DEMO_NAMESPACE.into(),
                    conversation: DEMO_CONVERSATION.into(),
                    utterance: event.utterance.clone(),
                    text: event.text.clone(),
                })?;
            }
            EventKind::Partial | EventKind::Final => {
                let is_final = event.kind == EventKind::Final;
                if is_final && !json {
                    println!("\nuser>  {}", event.text);
                }
                spoken.insert(event.utterance.clone(), event.text.clone());
                handle.submit(Transcript {
                    namespace: DEMO_NAMESPACE.into(),
                    conversation: DEMO_CONVERSATION.into(),
                    utterance: event.utterance.clone(),
                    speaker: "user".into(),
                    text: event.text.clone(),
                    is_final,
                    received_at: Instant::now(),
                })?;
            }
        }
        if args.fast && event.kind == EventKind::Final {
            // Without sleeps, let the memory writer catch up so "what did you just tell me" can work.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), collector)
        .await
        .context("the pipeline did not answer every final utterance within 30 s")?
        .context("result collector failed")?;
    handle
        .shutdown()
        .await
        .map_err(|e| anyhow::anyhow!("shutdown: {e}"))?;

    let summary = Summary::of(&seen, finals);
    if json {
        println!("{}", serde_json::json!({ "summary": summary.to_json() }));
    } else {
        summary.print();
    }
    Ok(if summary.answered == finals {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read_session(path: &std::path::Path) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError(format!(
            "cannot read the demo session {}: {e}",
            path.display()
        ))
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| UsageError(format!("{} line {}: {e}", path.display(), i + 1)).into())
        })
        .collect()
}

/// Stores the earlier conversations, committed and searchable before the session starts.
fn seed(engines: &Engines, config: &Config, path: &std::path::Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read the demo seed {}: {e}", path.display())))?;
    let mut memories = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let memory = ingest::parse_line(line, config.store.max_text_bytes)
            .map_err(|e| UsageError(format!("{} line {}: {e}", path.display(), i + 1)))?;
        memories.push(memory);
    }
    let prepared = ingest::embed_memories(&engines.embedder, memories)?;
    let report = engines.store.add(prepared)?;
    engines.store.flush()?;
    Ok(report.stored.len())
}

/// Reads one stage's time off a result.
type StageTime = fn(&ContextResult) -> Duration;

/// Latency summary over the results of final utterances.
struct Summary {
    finals: usize,
    answered: usize,
    deadline_met: usize,
    degraded: usize,
    partial_results: usize,
    stages: Vec<(&'static str, f64, f64)>,
}

impl Summary {
    fn of(results: &[ContextResult], finals: usize) -> Self {
        let final_results: Vec<&ContextResult> = results.iter().filter(|r| r.is_final).collect();
        let pick: [(&'static str, StageTime); 4] = [
            ("embed", |r| r.timings.embed),
            ("search", |r| r.timings.search),
            ("rerank", |r| r.timings.rerank),
            ("total", |r| r.timings.total),
        ];
        let stages = pick
            .iter()
            .map(|(name, f)| {
                let mut ms: Vec<f64> = final_results
                    .iter()
                    .map(|r| f(r).as_secs_f64() * 1000.0)
                    .collect();
                ms.sort_by(f64::total_cmp);
                (*name, percentile(&ms, 0.5), percentile(&ms, 0.99))
            })
            .collect();
        Self {
            finals,
            answered: final_results.len(),
            deadline_met: final_results.iter().filter(|r| r.deadline_met()).count(),
            degraded: final_results
                .iter()
                .filter(|r| r.degraded.is_some())
                .count(),
            partial_results: results.len() - final_results.len(),
            stages,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let mut stages = serde_json::Map::new();
        for (name, p50, p99) in &self.stages {
            stages.insert(
                (*name).into(),
                serde_json::json!({ "p50_ms": round3(*p50), "p99_ms": round3(*p99) }),
            );
        }
        serde_json::json!({
            "finals": self.finals,
            "answered": self.answered,
            "deadline_met": self.deadline_met,
            "degraded": self.degraded,
            "partial_results": self.partial_results,
            "stages_ms": stages,
        })
    }

    fn print(&self) {
        println!("\n── summary ──────────────────────────────────────────");
        println!(
            "final utterances: {}  answered: {}  deadline met: {}  degraded: {}",
            self.finals, self.answered, self.deadline_met, self.degraded
        );
        for (name, p50, p99) in &self.stages {
            println!("  {name:<7} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms");
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
