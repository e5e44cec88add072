//! `voicerag bench pipeline`: end-to-end latency per final transcript with the real models over a
//! synthetic store, reranker off and on at several budgets, and the pipeline's own overhead.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::SeedableRng;
use rand::rngs::StdRng;
use voicerag_actors::{QueryRequest, RerankOutcome, SearchFilter};

use super::stats::percentile;
use super::{synthetic_memory, synthetic_utterance};
use crate::config::Config;
use crate::engines::{Engines, StoreAccess};
use crate::ingest;

#[derive(Debug, Args)]
pub struct BenchPipelineArgs {
    /// Memories in the store.
    #[arg(long, default_value_t = 10_000)]
    pub memories: usize,
    /// Final transcripts measured per configuration.
    #[arg(long, default_value_t = 300)]
    pub queries: usize,
    /// Budgets (ms) to run the reranker at.
    #[arg(long, value_delimiter = ',', default_value = "50,100,200")]
    pub budgets: Vec<u64>,
    /// Cross-encoder to benchmark.
    #[arg(long, default_value = "models/bench-untrained-ce-L12")]
    pub reranker: PathBuf,
}

pub async fn run(config: &Config, args: &BenchPipelineArgs) -> anyhow::Result<ExitCode> {
    let data = tempfile::tempdir()?;
    let mut config = config.clone();
    config.store.data_dir = data.path().display().to_string();
    config.reranker.model_dir = args.reranker.display().to_string();
    let engines = Engines::load(&config, StoreAccess::ReadWrite, true)?;
    let mut rng = StdRng::seed_from_u64(7);

    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..args.memories {
        pending.push(synthetic_memory(
            &mut rng,
            i,
            format!("m{i}"),
            "bench".into(),
            format!("c{}", i / 20),
        ));
        if pending.len() == 512 || i + 1 == args.memories {
            let prepared = ingest::embed_memories(&engines.embedder, std::mem::take(&mut pending))?;
            engines.store.add(prepared)?;
        }
    }
    engines.store.flush()?;
    eprintln!(
        "bench: {} memories embedded and stored in {:.1} s",
        args.memories,
        started.elapsed().as_secs_f64()
    );

    let queries: Vec<String> = (0..args.queries)
        .map(|_| synthetic_utterance(&mut rng))
        .collect();
    let mut runs: Vec<(String, Option<u64>)> = vec![("reranker off".into(), None)];
    for b in &args.budgets {
        runs.push((format!("L-12 untrained CE, budget {b} ms"), Some(*b)));
    }
    let threads = config.runtime.threads;
    println!(
        "machine: {} cores; onnx threads per session: {threads}; store: {} memories; queries per run: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        args.memories,
        args.queries
    );
    for (label, budget) in runs {
        let mut run_config = config.clone();
        if let Some(b) = budget {
            run_config.pipeline.budget_ms = b;
        }
        let reranker = if budget.is_some() {
            engines.reranker.clone()
        } else {
            None
        };
        let run_engines = Engines {
            embedder: engines.embedder.clone(),
            query_embedder: engines.query_embedder.clone(),
            memory_embedder: engines.memory_embedder.clone(),
            reranker,
            store: engines.store.clone(),
            max_text_bytes: engines.max_text_bytes,
            final_embeddings: engines.final_embeddings.clone(),
        };
        let handle = run_engines
            .start(&run_config, Arc::new(crate::engines::ReadOnlyWriter))
            .await?;
        let mut stats = RunStats::default();
        for (i, text) in queries.iter().enumerate() {
            let request = QueryRequest {
                namespace: "bench".into(),
                conversation: None,
                text: text.clone(),
                top_k: None,
                mode: None,
                budget: None,
                filter: SearchFilter::default(),
            };
            let result = handle
                .query(request)
                .await
                .with_context(|| format!("query {i}"))?;
            stats.add(&result);
        }
        handle.shutdown().await.ok();
        stats.print(&label);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Default)]
struct RunStats {
    total: Vec<f64>,
    overhead: Vec<f64>,
    slack: Vec<f64>,
    rerank: Vec<f64>,
    met: usize,
    full: usize,
    partial: usize,
    skipped: usize,
    /// Skipped because the run was still going at the deadline (a subset of `skipped`).
    timeouts: usize,
    /// Skipped because the run had not begun by the deadline, waiting behind other reranks (a
    /// subset of `skipped`; counted as timeouts before the two were told apart).
    busy: usize,
    /// Skips by reason ("budget", "timeout", "no candidates", ...).
    skip_reasons: std::collections::BTreeMap<String, usize>,
    failed: usize,
}

impl RunStats {
    fn add(&mut self, r: &voicerag_actors::ContextResult) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let t = r.timings;
        self.total.push(ms(t.total));
        self.overhead
            .push((ms(t.total) - ms(t.embed) - ms(t.search) - ms(t.rerank)).max(0.0));
        self.rerank.push(ms(t.rerank));
        let late = r.finished_at.saturating_duration_since(r.deadline);
        self.slack.push(ms(late));
        self.met += usize::from(r.deadline_met());
        match r.rerank {
            RerankOutcome::Full => self.full += 1,
            RerankOutcome::Partial(_) => self.partial += 1,
            RerankOutcome::Skipped(ref why) => {
                self.skipped += 1;
                self.timeouts += usize::from(why == "timeout");
                self.busy += usize::from(why == "busy");
                *self.skip_reasons.entry(why.clone()).or_default() += 1;
            }
            RerankOutcome::Failed(_) => self.failed += 1,
            RerankOutcome::Off => {}
        }
    }

    fn print(&mut self, label: &str) {
        let n = self.total.len();
        let p = |xs: &mut Vec<f64>, q: f64| {
            xs.sort_by(f64::total_cmp);
            percentile(xs, q)
        };
        let (t50, t99) = (p(&mut self.total, 0.5), p(&mut self.total, 0.99));
        let (o50, o99) = (p(&mut self.overhead, 0.5), p(&mut self.overhead, 0.99));
        let (r50, r99) = (p(&mut self.rerank, 0.5), p(&mut self.rerank, 0.99));
        let s99 = p(&mut self.slack, 0.99);
        println!(
            "{label:<36} total p50 {t50:>7.2} p99 {t99:>7.2} ms | rerank p50 {r50:>6.2} p99 {r99:>6.2} ms | overhead p50 {o50:.3} p99 {o99:.3} ms | late p99 {s99:.2} ms | deadline met {}/{n} | rerank full {} partial {} skipped {} (timeout {}, busy {}) failed {}",
            self.met, self.full, self.partial, self.skipped, self.timeouts, self.busy, self.failed
        );
        if !self.skip_reasons.is_empty() {
            println!("{:<36} skipped by reason: {:?}", "", self.skip_reasons);
        }
        println!(
            "{}",
            serde_json::json!({"run": label, "n": n, "total_p50_ms": t50, "total_p99_ms": t99, "rerank_p50_ms": r50, "rerank_p99_ms": r99,
                "overhead_p50_ms": o50, "overhead_p99_ms": o99, "late_p99_ms": s99, "deadline_met": self.met,
                "rerank_full": self.full, "rerank_partial": self.partial, "rerank_skipped": self.skipped, "rerank_timeouts": self.timeouts, "rerank_busy": self.busy, "rerank_skip_reasons": self.skip_reasons, "rerank_failed": self.failed})
        );
    }
}
