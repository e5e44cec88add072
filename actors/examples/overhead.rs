//! Benchmark: the pipeline's own overhead per final transcript, with zero-cost fake stages, and how
//! late a result leaves when the reranker hangs (deadline slack).
//!
//! `cargo run --release -p voicerag-actors --example overhead [finals] [slack_runs]`

use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use voicerag_actors::*;

struct Embed;
impl Embedder for Embed {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StageError> {
        Ok(texts.iter().map(|_| vec![0.0; 384]).collect())
    }
}

struct Search(Vec<Hit>);
impl Retriever for Search {
    fn search(&self, r: &SearchRequest) -> Result<Vec<Hit>, StageError> {
        Ok(self.0.iter().take(r.top_n).cloned().collect())
    }
}

/// Scores instantly, or (`hang`) blocks until cancelled, like a hung ONNX run.
struct Rerank {
    hang: bool,
}
impl Reranker for Rerank {
    fn pair_tokens(&self, _q: &str, passages: &[&str]) -> Vec<usize> {
        // The hung variant claims to cost nothing, so the cost model never learns to skip it and
        // every run exercises the deadline.
        vec![if self.hang { 0 } else { 64 }; passages.len()]
    }
    fn score(
        &self,
        _q: &str,
        passages: &[&str],
        cancel: &CancelToken,
    ) -> Result<Vec<f32>, StageError> {
        while self.hang && !cancel.is_cancelled() {
            std::thread::sleep(Duration::from_micros(200));
        }
        if cancel.is_cancelled() {
            return Err(StageError::new("cancelled"));
        }
        Ok(passages.iter().enumerate().map(|(i, _)| i as f32).collect())
    }
}

struct Discard;
impl MemoryWriter for Discard {
    fn write(&self, _: &[Memory]) -> Result<(), StageError> {
        Ok(())
    }
}

fn stages(hang: bool) -> Stages {
    let hits = (0..20)
        .map(|i| Hit {
            id: format!("m{i}"),
            text: format!("memory number {i} with a few words of text"),
            score: 1.0 / (i as f32 + 1.0),
            rerank_score: None,
            vector_rank: Some(i + 1),
            bm25_rank: Some(i + 1),
            similarity: None,
            conversation: "c".into(),
            speaker: "user".into(),
            ts_ms: 0,
        })
        .collect();
    Stages {
        embedder: Arc::new(Embed),
        retriever: Arc::new(Search(hits)),
        reranker: Some(Arc::new(Rerank { hang })),
        writer: Arc::new(Discard),
    }
}

fn transcript(i: usize) -> Transcript {
    Transcript {
        namespace: "bench".into(),
        conversation: format!("c{}", i % 10),
        utterance: format!("u{i}"),
        speaker: "user".into(),
        text: format!("what did I say about item {i}"),
        is_final: true,
        received_at: Instant::now(),
    }
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), PipelineError> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let finals = args.first().copied().unwrap_or(20_000);
    let slack_runs = args.get(1).copied().unwrap_or(300);

    // 1. Overhead: one final at a time through zero-cost stages (embed, search, rerank all run).
    let p = Pipeline::start(stages(false), PipelineConfig::default()).await?;
    let mut results = p.results();
    let (mut total, mut seen, mut not_full) = (Vec::new(), Vec::new(), 0);
    for i in 0..finals + 1_000 {
        let t = transcript(i);
        let sent = t.received_at;
        p.submit(t)?;
        let r = results.next().await.ok_or(PipelineError::Stopped)?;
        not_full += (r.rerank != RerankOutcome::Full) as usize;
        if i >= 1_000 {
            total.push(r.timings.total.as_secs_f64() * 1e3);
            seen.push(sent.elapsed().as_secs_f64() * 1e3);
        }
    }
    p.shutdown().await?;
    println!(
        "overhead, {finals} finals, zero-cost stages, reranker on: received->finished p50 {:.3} ms p99 {:.3} ms; submit->consumer p50 {:.3} ms p99 {:.3} ms; not fully reranked {not_full}",
        pct(&mut total, 0.5),
        pct(&mut total, 0.99),
        pct(&mut seen, 0.5),
        pct(&mut seen, 0.99)
    );

    // 2. Throughput: bursts of 16 finals in flight at once.
    let p = Pipeline::start(stages(false), PipelineConfig::default()).await?;
    let mut results = p.results();
    let (mut lat, started) = (Vec::new(), Instant::now());
    for burst in 0..finals / 16 {
        for i in 0..16 {
            p.submit(transcript(burst * 16 + i))?;
        }
        for _ in 0..16 {
            let r = results.next().await.ok_or(PipelineError::Stopped)?;
            lat.push(r.timings.total.as_secs_f64() * 1e3);
        }
    }
    let rate = lat.len() as f64 / started.elapsed().as_secs_f64();
    let shed = p.health().counters.shed;
    p.shutdown().await?;
    println!(
        "throughput, bursts of 16, zero-cost stages: {rate:.0} finals/s, received->finished p50 {:.3} ms p99 {:.3} ms, shed {shed}",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );

    // 3. Deadline slack: the reranker hangs until cancelled; every result must leave by its deadline.
    let config = PipelineConfig {
        budget_ms: 20,
        search_reserve_ms: 5,
        ..Default::default()
    };
    let p = Pipeline::start(stages(true), config).await?;
    let mut results = p.results();
    let (mut late, mut late_seen, mut missed, mut other) = (Vec::new(), Vec::new(), 0, 0);
    for i in 0..slack_runs {
        p.submit(transcript(i))?;
        let r = results.next().await.ok_or(PipelineError::Stopped)?;
        let arrived = Instant::now();
        other += (r.rerank != RerankOutcome::Skipped("timeout".into())) as usize;
        let signed = |a: Instant| {
            if a >= r.deadline {
                (a - r.deadline).as_secs_f64()
            } else {
                -(r.deadline - a).as_secs_f64()
            }
        };
        late.push(signed(r.finished_at) * 1e3);
        late_seen.push(signed(arrived) * 1e3);
        missed += (!r.deadline_met()) as usize;
    }
    p.shutdown().await?;
    println!(
        "slack, {slack_runs} finals, 20 ms budget, hung reranker: finished-deadline p50 {:+.3} ms p99 {:+.3} ms max {:+.3} ms; consumer-deadline p50 {:+.3} ms p99 {:+.3} ms; deadline missed {missed}; not a rerank timeout {other}",
        pct(&mut late, 0.5),
        pct(&mut late, 0.99),
        pct(&mut late, 1.0),
        pct(&mut late_seen, 0.5),
        pct(&mut late_seen, 0.99),
    );
    Ok(())
}
