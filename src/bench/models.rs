//! `voicerag bench models`: latency of the model engines on the real int8 models.
//!
//! Cases: one short query (~12 tokens), a batch of 32 utterances, and 10 (query, passage) pairs
//! of ~60 tokens through the cross-encoder. Prints p50/p99 per case and one JSON line.

use std::time::Instant;

use anyhow::Context;

use super::stats::percentile;
use crate::config::Config;
use crate::models::{CrossEncoder, RerankerConfig, SentenceEmbedder};

/// Used when `[reranker] model_dir` is empty: the untrained L-12-shaped model `make setup` builds.
const BENCH_CROSS_ENCODER: &str = "models/bench-untrained-ce-L12";

/// Untimed runs before measuring, so allocator arenas and caches are warm.
const WARMUP_RUNS: usize = 3;

const SHORT_QUERY: &str = "what did I tell you about my sister's birthday plans";

const UTTERANCE_PARTS: &[&str] = &[
    "remind me to buy milk",
    "what's the weather like in Lisbon tomorrow",
    "call my sister after lunch",
    "I think the meeting moved to Thursday at ten",
    "play something relaxing",
    "how long does it take to drive to the airport in traffic",
    "book a table for four at the Italian place",
    "no, the other one, near the station",
];

const PASSAGE: &str = "Last week you mentioned that your sister's birthday is on the twelfth of \
    March and that you were planning a surprise dinner at the Italian restaurant near the station, \
    with a chocolate cake from the bakery on the corner and flowers.";

/// One measured case.
struct CaseResult {
    name: &'static str,
    tokens: usize,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
}

/// Runs the benchmark `iterations` times per case and prints the results.
pub fn run(config: &Config, iterations: usize) -> anyhow::Result<()> {
    let iterations = iterations.max(1);
    let embedder = SentenceEmbedder::load(&config.runtime, &config.embedder)
        .context("loading the embedder for the benchmark")?;
    let reranker_config = if config.reranker.model_dir.is_empty() {
        RerankerConfig {
            model_dir: BENCH_CROSS_ENCODER.into(),
            ..config.reranker.clone()
        }
    } else {
        config.reranker.clone()
    };
    let reranker = CrossEncoder::load(&config.runtime, &reranker_config)
        .context("loading the cross-encoder for the benchmark")?;

    let utterances: Vec<String> = (0..32)
        .map(|i| {
            let a = UTTERANCE_PARTS[i % UTTERANCE_PARTS.len()];
            let b = UTTERANCE_PARTS[(i * 3 + 1) % UTTERANCE_PARTS.len()];
            if i % 3 == 0 {
                format!("{a} and {b}")
            } else {
                a.to_string()
            }
        })
        .collect();
    let utterance_refs: Vec<&str> = utterances.iter().map(String::as_str).collect();
    let passages: Vec<String> = (0..10).map(|i| format!("{PASSAGE} ({i})")).collect();
    let passage_refs: Vec<&str> = passages.iter().map(String::as_str).collect();

    let query_tokens = embedder.token_count(SHORT_QUERY);
    let batch_tokens: usize = utterance_refs.iter().map(|u| embedder.token_count(u)).sum();
    let pair_tokens = reranker.pair_tokens(SHORT_QUERY, &passage_refs);
    let mean_pair_tokens = pair_tokens.iter().sum::<usize>() / pair_tokens.len().max(1);

    let results = vec![
        measure("embed_short_query", query_tokens, iterations, || {
            embedder.embed(&[SHORT_QUERY]).map(drop)
        })?,
        measure("embed_batch_32", batch_tokens, iterations, || {
            embedder.embed(&utterance_refs).map(drop)
        })?,
        measure(
            "cross_encode_10_pairs",
            mean_pair_tokens,
            iterations,
            || reranker.score(SHORT_QUERY, &passage_refs, None).map(drop),
        )?,
    ];

    let threads = config.runtime.threads;
    println!(
        "voicerag bench models: {iterations} iterations, {threads} intra-op thread(s), embedder {} (dim {}), cross-encoder {}",
        embedder.model_name(),
        embedder.dimension(),
        reranker.model_name()
    );
    for r in &results {
        println!(
            "  {:<24} tokens {:>4}   p50 {:>8.3} ms   p99 {:>8.3} ms   mean {:>8.3} ms",
            r.name, r.tokens, r.p50_ms, r.p99_ms, r.mean_ms
        );
    }
    let json = serde_json::json!({
        "bench": "models",
        "iterations": iterations,
        "threads": threads,
        "embedder": embedder.model_name(),
        "cross_encoder": reranker.model_name(),
        "results": results.iter().map(|r| serde_json::json!({
            "case": r.name,
            "tokens": r.tokens,
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "mean_ms": r.mean_ms,
        })).collect::<Vec<_>>(),
    });
    println!("{json}");
    Ok(())
}

fn measure<E>(
    name: &'static str,
    tokens: usize,
    iterations: usize,
    mut f: impl FnMut() -> Result<(), E>,
) -> anyhow::Result<CaseResult>
where
    E: std::error::Error + Send + Sync + 'static,
{
    for _ in 0..WARMUP_RUNS {
        f().with_context(|| format!("benchmark case {name}"))?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        f().with_context(|| format!("benchmark case {name}"))?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok(CaseResult {
        name,
        tokens,
        p50_ms: percentile(&samples, 0.50),
        p99_ms: percentile(&samples, 0.99),
        mean_ms: samples.iter().sum::<f64>() / samples.len() as f64,
    })
}
