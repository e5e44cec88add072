//! Reranking is optional work: it runs on a thread of its own at `rerank_nice`, so embedding and
//! search (at the process's priority) take the cores first. With `rerank_nice = 0` it shares the
//! blocking pool at the hot path's priority, as before.

#![cfg(target_os = "linux")]

mod common;

use common::*;
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use voicerag_actors::*;

/// The calling thread's nice value and name.
fn this_thread() -> (i32, String) {
    // SAFETY: getpriority only reads; who = 0 is the calling thread on Linux.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let name = std::thread::current().name().unwrap_or("").to_string();
    (nice, name)
}

/// Wraps a stage and records the priority and name of every thread that called it.
struct Seen<T: ?Sized> {
    inner: Arc<T>,
    threads: Mutex<Vec<(i32, String)>>,
}

impl<T: ?Sized> Seen<T> {
    fn new(inner: Arc<T>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            threads: Mutex::default(),
        })
    }
    fn note(&self) {
        self.threads.lock().unwrap().push(this_thread());
    }
    fn threads(&self) -> Vec<(i32, String)> {
        self.threads.lock().unwrap().clone()
    }
}

impl Embedder for Seen<FakeEmbedder> {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StageError> {
        self.note();
        self.inner.embed(texts)
    }
}

impl Retriever for Seen<FakeRetriever> {
    fn search(&self, request: &SearchRequest) -> Result<Vec<Hit>, StageError> {
        self.note();
        self.inner.search(request)
    }
}

impl Reranker for Seen<FakeReranker> {
    fn pair_tokens(&self, query: &str, passages: &[&str]) -> Vec<usize> {
        self.inner.pair_tokens(query, passages)
    }
    fn score(
        &self,
        query: &str,
        passages: &[&str],
        cancel: &CancelToken,
    ) -> Result<Vec<f32>, StageError> {
        self.note();
        self.inner.score(query, passages, cancel)
    }
}

struct Run {
    embedder: Vec<(i32, String)>,
    retriever: Vec<(i32, String)>,
    reranker: Vec<(i32, String)>,
    results: Vec<ContextResult>,
}

/// Serves `n` finals with a reranker at `rerank_nice` and records who ran each stage.
async fn serve(rerank_nice: i32, n: usize) -> Run {
    let f = Fakes::new(no_faults());
    let embedder = Seen::new(f.embedder.clone());
    let retriever = Seen::new(f.retriever.clone());
    let reranker = Seen::new(f.reranker.clone());
    let stages = Stages {
        embedder: embedder.clone(),
        retriever: retriever.clone(),
        reranker: Some(reranker.clone()),
        writer: f.writer.clone(),
    };
    let config = PipelineConfig {
        rerank_nice,
        rerank_calibration_ms: 0,
        // Generous: the test is about where work runs, not how fast, on a loaded machine.
        budget_ms: 2_000,
        ..Default::default()
    };
    let p = Pipeline::start(stages, config).await.unwrap();
    let mut stream = p.results();
    let mut results = Vec::new();
    for i in 0..n {
        p.submit(transcript(
            "c",
            &format!("u{i}"),
            &format!("q{i} where did I park"),
            true,
        ))
        .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a result")
            .expect("stream open");
        results.push(r);
    }
    p.shutdown().await.unwrap();
    Run {
        embedder: embedder.threads(),
        retriever: retriever.threads(),
        reranker: reranker.threads(),
        results,
    }
}

fn process_nice() -> i32 {
    this_thread().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reranker_runs_below_the_hot_path_on_a_thread_of_its_own() {
    let base = process_nice();
    let run = serve(10, 8).await;
    let reranked = run
        .results
        .iter()
        .filter(|r| matches!(r.rerank, RerankOutcome::Full | RerankOutcome::Partial(_)))
        .count();
    assert!(reranked >= 1, "{:?}", run.results);
    assert!(!run.reranker.is_empty());
    let want = (base + 10).min(19);
    for (nice, name) in &run.reranker {
        assert_eq!(*nice, want, "reranker thread {name}");
        assert_eq!(name, "voicerag-reranker");
    }
    // The hot path keeps the process's priority, though the blocking pool relayed the reranks.
    assert!(!run.embedder.is_empty() && !run.retriever.is_empty());
    for (nice, name) in run.embedder.iter().chain(&run.retriever) {
        assert_eq!(*nice, base, "hot path thread {name}");
    }
    assert!(run.results.iter().all(|r| r.degraded.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_nice_zero_the_reranker_shares_the_blocking_pool() {
    let base = process_nice();
    let run = serve(0, 4).await;
    assert!(!run.reranker.is_empty());
    for (nice, name) in &run.reranker {
        assert_eq!(*nice, base, "reranker thread {name}");
        assert_ne!(name, "voicerag-reranker");
    }
}
