//! The store and query commands: ingest, query, forget, reindex, serve, config check.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde::Deserialize;
use voicerag_actors::{QueryRequest, SearchFilter, SearchMode};

use super::UsageError;
use super::args::{ForgetArgs, IngestArgs, QueryArgs};
use voicerag::bus::BusConnection;
use voicerag::config::Config;
use voicerag::ingest;
use voicerag::models::SentenceEmbedder;
use voicerag::pipeline::{self, Engines, ReadOnlyWriter, StoreAccess};
use voicerag::store::{MemoryStore, ModelInfo};

/// Lines embedded and committed together.
const INGEST_BATCH: usize = 256;

pub async fn ingest(config: &Config, args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn BufRead> = if args.file == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(&args.file)
            .map_err(|e| UsageError(format!("cannot open {}: {e}", args.file.display())))?;
        Box::new(std::io::BufReader::new(file))
    };
    let embedder = Arc::new(SentenceEmbedder::load(&config.runtime, &config.embedder)?);
    let store = pipeline::open_store(config, &embedder, StoreAccess::ReadWrite)?;
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut counts = Counts::default();
    let mut batch: Vec<(usize, voicerag_actors::Memory)> = Vec::new();
    let started = Instant::now();
    let flush = |batch: &mut Vec<(usize, voicerag_actors::Memory)>,
                 counts: &mut Counts|
     -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let lines: Vec<usize> = batch.iter().map(|(n, _)| *n).collect();
        let memories = batch.drain(..).map(|(_, m)| m).collect();
        let prepared = ingest::embed_memories(&embedder, memories).context("embedding failed")?;
        let report = store.add(prepared).context("store failed")?;
        for (index, reason) in &report.rejected {
            let line = lines.get(*index).copied().unwrap_or(0);
            eprintln!("line {line}: {reason}");
        }
        counts.stored += report.stored.len();
        counts.duplicate += report.duplicates.len();
        counts.rejected += report.rejected.len();
        progress.set_message(counts.to_string());
        Ok(())
    };
    for (index, line) in reader.split(b'\n').enumerate() {
        let number = index + 1;
        let bytes = line.context("reading input")?;
        let Ok(text) = std::str::from_utf8(&bytes) else {
            eprintln!("line {number}: not valid UTF-8");
            counts.rejected += 1;
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        match ingest::parse_line(text, config.store.max_text_bytes) {
            Ok(memory) => batch.push((number, memory)),
            Err(e) => {
                eprintln!("line {number}: {e}");
                counts.rejected += 1;
            }
        }
        if batch.len() >= INGEST_BATCH {
            flush(&mut batch, &mut counts)?;
        }
    }
    flush(&mut batch, &mut counts)?;
    store.flush()?;
    progress.finish_and_clear();
    eprintln!(
        "ingest: {counts} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Re-ingesting a file is idempotent: duplicates count as present, not as failures.
    Ok(if counts.stored + counts.duplicate == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Default)]
struct Counts {
    stored: usize,
    duplicate: usize,
    rejected: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} stored, {} duplicate, {} rejected",
            self.stored, self.duplicate, self.rejected
        )
    }
}

/// One line of `voicerag query --batch`.
#[derive(Debug, Deserialize)]
struct BatchQuery {
    id: Option<String>,
    text: String,
    namespace: Option<String>,
    conversation: Option<String>,
    top_k: Option<usize>,
    mode: Option<String>,
}

pub async fn query(config: &Config, args: &QueryArgs) -> anyhow::Result<ExitCode> {
    let mut queries = Vec::new();
    if let Some(path) = &args.batch {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<BatchQuery>(line) {
                Ok(q) => queries.push(q),
                Err(e) => eprintln!("line {}: {e}", index + 1),
            }
        }
    } else if let Some(text) = &args.text {
        queries.push(BatchQuery {
            id: None,
            text: text.clone(),
            namespace: None,
            conversation: None,
            top_k: None,
            mode: None,
        });
    }
    let engines = Engines::load(config, StoreAccess::ReadOnly, true)?;
    let handle = engines.start(config, Arc::new(ReadOnlyWriter)).await?;
    let mut failures = 0usize;
    let default_mode: SearchMode = match &args.mode {
        Some(m) => m.parse().map_err(UsageError)?,
        None => config.pipeline.mode,
    };
    let requests: Vec<(String, QueryRequest)> = queries
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            let mode = q
                .mode
                .as_deref()
                .and_then(|m| m.parse().ok())
                .unwrap_or(default_mode);
            let id = q.id.unwrap_or_else(|| format!("q{}", i + 1));
            let request = QueryRequest {
                namespace: q
                    .namespace
                    .or_else(|| args.namespace.clone())
                    .unwrap_or_else(|| "default".into()),
                conversation: q.conversation,
                text: q.text,
                top_k: q.top_k.or(args.top_k),
                mode: Some(mode),
                budget: None,
                filter: SearchFilter::default(),
            };
            (id, request)
        })
        .collect();
    let mut answers = futures::stream::iter(requests)
        .map(|(id, request)| {
            let handle = handle.clone();
            async move { (id, handle.query(request).await) }
        })
        .buffered(args.concurrency.max(1));
    let stdout = std::io::stdout();
    while let Some((id, answer)) = answers.next().await {
        match answer {
            Ok(result) => {
                let mut out = stdout.lock();
                if args.json {
                    writeln!(out, "{}", voicerag::bus::wire::context_json(&result, &id))?;
                } else {
                    print_human(&mut out, &id, &result)?;
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("query {id}: {e}");
            }
        }
    }
    drop(answers);
    handle.shutdown().await.ok();
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A readable rendering of one result, for a terminal.
pub fn print_human(
    out: &mut impl Write,
    id: &str,
    r: &voicerag_actors::ContextResult,
) -> std::io::Result<()> {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    writeln!(
        out,
        "{id}: {} hits  rerank={}  embed {:.1} ms  search {:.1} ms  rerank {:.1} ms  total {:.1} ms{}{}",
        r.hits.len(),
        r.rerank.kind(),
        ms(r.timings.embed),
        ms(r.timings.search),
        ms(r.timings.rerank),
        ms(r.timings.total),
        if r.deadline_met() {
            ""
        } else {
            "  DEADLINE MISSED"
        },
        r.degraded
            .as_deref()
            .map(|d| format!("  degraded: {d}"))
            .unwrap_or_default(),
    )?;
    for (rank, hit) in r.hits.iter().enumerate() {
        writeln!(
            out,
            "  {:>2}. [{:.4}] {}  {}",
            rank + 1,
            hit.score,
            hit.id,
            one_line(&hit.text, 100)
        )?;
    }
    Ok(())
}

/// The first `max` characters of a text on one line.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

pub async fn forget(config: &Config, args: &ForgetArgs) -> anyhow::Result<ExitCode> {
    let embedder = SentenceEmbedder::load(&config.runtime, &config.embedder)?;
    let store = pipeline::open_store(config, &embedder, StoreAccess::ReadWrite)?;
    let ns = args.namespace.clone().unwrap_or_else(|| "default".into());
    let removed = if let Some(id) = &args.id {
        store.delete_ids(&ns, std::slice::from_ref(id))?
    } else if let Some(conversation) = &args.conversation {
        store.delete_conversation(&ns, conversation)?
    } else if let Some(ns) = &args.namespace {
        store.delete_namespace(ns)?
    } else {
        return Err(UsageError("forget needs --id, --conversation or --namespace".into()).into());
    };
    store.flush()?;
    eprintln!("forget: {removed} memories removed");
    Ok(ExitCode::SUCCESS)
}

pub async fn reindex(config: &Config) -> anyhow::Result<ExitCode> {
    let embedder = SentenceEmbedder::load(&config.runtime, &config.embedder)?;
    let model = ModelInfo {
        name: embedder.model_name().to_string(),
        dimension: embedder.dimension(),
    };
    let report = MemoryStore::reindex(
        Path::new(&config.store.data_dir),
        &config.store,
        &config.retrieval,
        &model,
        INGEST_BATCH,
        |memories| {
            let prepared =
                ingest::embed_memories(&embedder, memories.to_vec()).map_err(|e| e.to_string())?;
            Ok(prepared.into_iter().map(|p| p.chunks).collect())
        },
    )?;
    eprintln!(
        "reindex: {} memories ({} chunks) re-embedded, {} -> {}",
        report.memories,
        report.chunks,
        report.from_model.as_deref().unwrap_or("(none)"),
        report.to_model
    );
    Ok(ExitCode::SUCCESS)
}

/// `voicerag serve`: the pipeline behind the NATS bus; memories go through JetStream only.
pub async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let _metrics = super::logging::init_metrics(&config.metrics)?;
    let engines = Engines::load(&config, StoreAccess::ReadWrite, true)?;
    if _metrics.is_some() {
        super::logging::spawn_store_gauges(engines.store.clone());
    }
    let connection = BusConnection::connect(config.nats.clone(), Duration::from_secs(30)).await?;
    let handle = engines
        .start(&config, Arc::new(connection.writer()))
        .await?;
    tracing::info!(
        replica = %config.nats.replica_id,
        embedder = engines.embedder.model_name(),
        reranker = engines.reranker.as_ref().map(|r| r.model_name().to_string()).unwrap_or_else(|| "off".into()),
        "voicerag serving"
    );
    voicerag::bus::service::serve_connected(
        connection,
        Arc::new(handle),
        engines.store_writer(),
        shutdown_signal(),
    )
    .await?;
    engines.store.flush()?;
    tracing::info!("voicerag stopped");
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn config_check(config: &Config) -> anyhow::Result<ExitCode> {
    config.check_files()?;
    let text = config.to_toml_redacted()?;
    print!("{text}");
    eprintln!("config: ok");
    Ok(ExitCode::SUCCESS)
}
