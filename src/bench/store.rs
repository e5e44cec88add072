//! `voicerag bench store`: the memory store at scale, embedding excluded.
//!
//! For each size: synthetic utterance-length memories (words and 384-dim unit vectors drawn
//! around shared topics, so both lists have structure to find) in one namespace (the worst
//! case: every search sees the whole corpus). Measures ingest records/s (the `add` calls only;
//! trees build in the background meanwhile), the time until BM25 and every tree caught up,
//! search-only latency p50/p99 per mode (after the build), vector recall@10 against an exact
//! scan, disk size and reopen time. One line per measurement on stdout, then one JSON line.
//!
//! Issue 14's other capabilities, each as hybrid latency with it on and off on the same queries:
//! memories are spread over 60 days; every 10th supersedes the one before it and every 50th
//! has expired (default searches leave them out; `include_superseded` is the "off" run); queries
//! with a time phrase ("last week", "yesterday", ...) run with time windows on and off, and the
//! phrase reading alone is timed too; the phonetic capability (third ranking and sound-alike
//! words) runs on and off on the queries as drawn (every word known: only the check for unknown
//! words runs) and misheard (each query's first word respelt with its first vowel doubled, a
//! word no memory has that sounds the same: the correction and the phonetic search run); the
//! recency prior runs on (the configured half-life, else a week) and off. On and off alternate
//! query by query (interleaved), on one open store, so the difference holds on a machine whose
//! load varies; which of the two runs first alternates too (the second finds warm caches).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::stats::percentile_ms;
use crate::actors::messages::{Memory, SearchFilter, SearchMode, SearchRequest};
use crate::config::Config;
use crate::store::{ChunkInput, MemoryStore, ModelInfo, NewMemory, RetrievalConfig};

const DIM: usize = 384;
const TOPICS: usize = 256;
const VOCAB: usize = 5000;
const BATCH: usize = 256;
const QUERIES: usize = 500;
const WARMUP: usize = 50;
const RECALL_QUERIES: usize = 50;
const NAMESPACE: &str = "bench";
const MIB: f64 = 1024.0 * 1024.0;
/// Memories span this long, ending at `BASE_MS + SPAN_MS` ("now" of the time-phrase queries).
const BASE_MS: i64 = 1_700_000_000_000;
const SPAN_MS: i64 = 60 * 86_400_000;
const TIME_PHRASES: [&str; 6] = [
    "last week",
    "yesterday",
    "two days ago",
    "on Monday",
    "in the last 3 hours",
    "this morning",
];

struct Corpus {
    centers: Vec<Vec<f32>>,
    rng: StdRng,
}

impl Corpus {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let centers = (0..TOPICS).map(|_| unit(&mut rng, None, 0.0)).collect();
        Self { centers, rng }
    }

    /// A topic's vector: its center plus as much random direction again.
    fn vector(&mut self, topic: usize) -> Vec<f32> {
        unit(&mut self.rng, Some(&self.centers[topic]), 1.0)
    }

    /// 8-20 words, half from the topic's own slice of the vocabulary.
    fn text(&mut self, topic: usize) -> String {
        let n = self.rng.random_range(8..=20);
        let words: Vec<String> = (0..n)
            .map(|_| {
                let w = if self.rng.random_bool(0.5) {
                    topic * (VOCAB / TOPICS) + self.rng.random_range(0..VOCAB / TOPICS)
                } else {
                    self.rng.random_range(0..VOCAB)
                };
                word(w)
            })
            .collect();
        words.join(" ")
    }
}

/// A pronounceable word per index (so the English analyser treats it as a word).
fn word(i: usize) -> String {
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "ta", "vi", "so", "pe", "da", "fu", "gi", "ho", "ja", "we",
        "zu",
    ];
    let mut s = String::new();
    let mut x = i + 16;
    while x > 0 {
        s.push_str(SYL[x % 16]);
        x /= 16;
    }
    s
}

fn unit(rng: &mut StdRng, center: Option<&[f32]>, noise: f32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    if let Some(c) = center {
        v.iter_mut().zip(c).for_each(|(x, c)| *x = c + noise * *x);
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One side of an on/off comparison: the request's time reading and superseded filter, and
/// the retrieval settings it runs with.
struct Variant<'a> {
    name: &'a str,
    windows: Option<bool>,
    include_superseded: bool,
    retrieval: &'a RetrievalConfig,
}

fn bench_dir(n: usize) -> PathBuf {
    std::env::temp_dir().join(format!("voicerag-bench-store-{}-{n}", std::process::id()))
}

/// `text` with its first word's first vowel doubled: unknown to the store, same sound.
fn misheard(text: &str) -> String {
    let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
    let respelt = match first.find(['a', 'e', 'i', 'o', 'u']) {
        Some(i) => format!("{}{}", &first[..=i], &first[i..]),
        None => format!("{first}h"),
    };
    format!("{respelt} {rest}")
}

/// Runs the benchmark for each corpus size in `sizes`.
pub fn run(config: &Config, sizes: &[usize]) -> anyhow::Result<()> {
    for &n in sizes {
        let dir = bench_dir(n);
        let result = run_one(config, n, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        result?;
    }
    Ok(())
}

fn run_one(config: &Config, n: usize, dir: &Path) -> anyhow::Result<()> {
    let model = ModelInfo {
        name: "synthetic-384".into(),
        dimension: DIM,
    };
    let _ = std::fs::remove_dir_all(dir);
    let mut corpus = Corpus::new(42);
    eprintln!("bench store: generating {n} memories");
    let mut vectors = Vec::with_capacity(n);
    let mut memories = Vec::with_capacity(n);
    for i in 0..n {
        let topic = corpus.rng.random_range(0..TOPICS);
        let text = corpus.text(topic);
        let v = corpus.vector(topic);
        vectors.push(v.clone());
        memories.push(NewMemory {
            memory: Memory {
                id: format!("c{}/{}", i / 50, i % 50),
                namespace: NAMESPACE.into(),
                conversation: format!("c{}", i / 50),
                speaker: if i % 2 == 0 {
                    "user".into()
                } else {
                    "agent".into()
                },
                text: text.clone(),
                ts_ms: BASE_MS + i as i64 * (SPAN_MS / n.max(1) as i64),
                supersedes: if i % 10 == 9 {
                    vec![format!("c{}/{}", (i - 1) / 50, (i - 1) % 50)]
                } else {
                    Vec::new()
                },
                expires_at_ms: (i % 50 == 49).then_some(BASE_MS),
            },
            chunks: vec![ChunkInput { text, embedding: v }],
        });
    }

    let store = MemoryStore::open(dir, &config.store, &config.retrieval, &model)
        .with_context(|| format!("open bench store in {}", dir.display()))?;
    eprintln!("bench store: ingesting in batches of {BATCH}");
    let mut add_time = 0.0f64;
    let mut batch_ms = Histogram::<u64>::new(3)?;
    let ingest_start = Instant::now();
    let mut it = memories.into_iter().peekable();
    while it.peek().is_some() {
        let batch: Vec<_> = it.by_ref().take(BATCH).collect();
        let t = Instant::now();
        let report = store.add(batch)?;
        let dt = t.elapsed();
        add_time += dt.as_secs_f64();
        batch_ms.record(dt.as_micros() as u64)?;
        anyhow::ensure!(
            report.rejected.is_empty(),
            "bench records rejected: {:?}",
            report.rejected.first()
        );
    }
    let ingest_wall = ingest_start.elapsed().as_secs_f64();
    let backlog = store.stats()?.pending_vectors;
    let t = Instant::now();
    store.flush()?;
    let catch_up = t.elapsed().as_secs_f64();
    let stats = store.stats()?;

    // Queries drawn like the memories.
    let mut queries = Vec::with_capacity(QUERIES + WARMUP);
    for _ in 0..QUERIES + WARMUP {
        let topic = corpus.rng.random_range(0..TOPICS);
        let words: Vec<String> = corpus
            .text(topic)
            .split(' ')
            .take(8)
            .map(String::from)
            .collect();
        queries.push((words.join(" "), corpus.vector(topic)));
    }
    let request = |q: &(String, Vec<f32>), mode: SearchMode, top_n: usize| SearchRequest {
        namespace: NAMESPACE.into(),
        text: q.0.clone(),
        embedding: Some(q.1.clone()),
        mode,
        top_n,
        filter: SearchFilter::default(),
    };
    let mut lines = Vec::new();
    let mut json = serde_json::json!({
        "bench": "store", "memories": n, "dim": DIM,
        "ingest_records_per_s": n as f64 / add_time,
        "ingest_wall_records_per_s": n as f64 / ingest_wall,
        "add_batch_p50_ms": percentile_ms(&batch_ms, 0.5),
        "add_batch_p99_ms": percentile_ms(&batch_ms, 0.99),
        "pending_after_ingest": backlog,
        "catch_up_s": catch_up,
        "disk_mib": stats.disk_bytes as f64 / MIB,
        "lmdb_used_mib": stats.lmdb_used_bytes as f64 / MIB,
        "bm25_mib": stats.bm25_bytes as f64 / MIB,
    });
    lines.push(format!(
        "n={n} ingest (add only, excl. embedding): {:.0} records/s; wall {:.0} records/s; add({BATCH}) p50 {:.2} ms p99 {:.2} ms",
        n as f64 / add_time,
        n as f64 / ingest_wall,
        percentile_ms(&batch_ms, 0.5),
        percentile_ms(&batch_ms, 0.99)
    ));
    lines.push(format!(
        "n={n} after ingest: {backlog} vectors pending; BM25 + trees caught up in {catch_up:.2} s"
    ));
    lines.push(format!(
        "n={n} disk {:.1} MiB (LMDB pages in use {:.1} MiB, BM25 {:.1} MiB)",
        stats.disk_bytes as f64 / MIB,
        stats.lmdb_used_bytes as f64 / MIB,
        stats.bm25_bytes as f64 / MIB
    ));
    for mode in [SearchMode::Hybrid, SearchMode::Vector, SearchMode::Bm25] {
        let mut h = Histogram::<u64>::new(3)?;
        for (i, q) in queries.iter().enumerate() {
            let req = request(q, mode, 10);
            let t = Instant::now();
            let hits = store.search(&req)?;
            let dt = t.elapsed();
            std::hint::black_box(hits);
            if i >= WARMUP {
                h.record(dt.as_micros().max(1) as u64)?;
            }
        }
        lines.push(format!(
            "n={n} search {:<6} top-10 (candidates {}): p50 {:.3} ms p99 {:.3} ms",
            mode.as_str(),
            config.retrieval.candidates,
            percentile_ms(&h, 0.5),
            percentile_ms(&h, 0.99)
        ));
        json[format!("{}_p50_ms", mode.as_str())] = percentile_ms(&h, 0.5).into();
        json[format!("{}_p99_ms", mode.as_str())] = percentile_ms(&h, 0.99).into();
    }
    // Time windows: the same queries with a time phrase, read (on) and not read (off).
    let now = BASE_MS + SPAN_MS;
    let timed: Vec<(String, Vec<f32>)> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let phrase = TIME_PHRASES[i % TIME_PHRASES.len()];
            (format!("{} {phrase}", q.0), q.1.clone())
        })
        .collect();
    let mut parse = Histogram::<u64>::new(3)?;
    for (i, q) in timed.iter().enumerate() {
        let t = Instant::now();
        std::hint::black_box(crate::time_expr::find(&q.0, now, chrono_tz::UTC));
        if i >= WARMUP {
            parse.record(t.elapsed().as_nanos().max(1) as u64)?;
        }
    }
    let parse_p50_us = parse.value_at_quantile(0.5) as f64 / 1000.0;
    lines.push(format!(
        "n={n} time phrase reading alone: p50 {parse_p50_us:.2} µs p99 {:.2} µs",
        parse.value_at_quantile(0.99) as f64 / 1000.0
    ));
    json["time_parse_p50_us"] = parse_p50_us.into();
    // Each capability on and off, the two requests of a query one after the other, so a load
    // that comes and goes weighs on both sides alike.
    let misheard_queries: Vec<(String, Vec<f32>)> = queries
        .iter()
        .map(|(text, v)| (misheard(text), v.clone()))
        .collect();
    let base = &config.retrieval;
    // The phonetic capability on (the configured weight, or the default one when the
    // configuration turns it off; sound-alike words on) and off (neither).
    let phonetic_on = RetrievalConfig {
        phonetic_weight: if base.phonetic_weight > 0.0 {
            base.phonetic_weight
        } else {
            RetrievalConfig::default().phonetic_weight
        },
        sound_alike_words: true,
        ..base.clone()
    };
    let phonetic_off = RetrievalConfig {
        phonetic_weight: 0.0,
        sound_alike_words: false,
        ..base.clone()
    };
    // The recency prior on (the configured half-life, or a week when it is off) and off.
    let recency_on = RetrievalConfig {
        recency_half_life_s: if base.recency_half_life_s > 0 {
            base.recency_half_life_s
        } else {
            7 * 86_400
        },
        ..base.clone()
    };
    let recency_off = RetrievalConfig {
        recency_half_life_s: 0,
        ..base.clone()
    };
    let variant = |name, windows, include, retrieval| Variant {
        name,
        windows,
        include_superseded: include,
        retrieval,
    };
    type Queries<'a> = &'a [(String, Vec<f32>)];
    let pairs: [(Queries, Variant, Variant); 5] = [
        (
            &timed,
            variant("time_windows_on", Some(true), false, base),
            variant("time_windows_off", Some(false), false, base),
        ),
        (
            &queries,
            variant("superseded_left_out", Some(false), false, base),
            variant("superseded_included", Some(false), true, base),
        ),
        (
            &queries,
            variant("phonetic_on", Some(false), false, &phonetic_on),
            variant("phonetic_off", Some(false), false, &phonetic_off),
        ),
        (
            &misheard_queries,
            variant("phonetic_on_misheard", Some(false), false, &phonetic_on),
            variant("phonetic_off_misheard", Some(false), false, &phonetic_off),
        ),
        (
            &queries,
            variant("recency_on", Some(false), false, &recency_on),
            variant("recency_off", Some(false), false, &recency_off),
        ),
    ];
    for (set, a, b) in pairs {
        let mut h = [Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?];
        for (i, q) in set.iter().enumerate() {
            // The second run of a query finds its postings, records and vectors in the caches
            // the first one warmed: which side goes first alternates, query by query.
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let v = [&a, &b][side];
                let mut req = request(q, SearchMode::Hybrid, 10);
                req.filter.time.enabled = v.windows;
                req.filter.time.now_ms = Some(now);
                req.filter.include_superseded = v.include_superseded;
                let t = Instant::now();
                std::hint::black_box(store.retrieve_with(&req, v.retrieval)?);
                let dt = t.elapsed();
                if i >= WARMUP {
                    h[side].record(dt.as_micros().max(1) as u64)?;
                }
            }
        }
        for (v, h) in [&a, &b].into_iter().zip(&h) {
            lines.push(format!(
                "n={n} hybrid top-10, {}: p50 {:.3} ms p99 {:.3} ms",
                v.name,
                percentile_ms(h, 0.5),
                percentile_ms(h, 0.99)
            ));
            json[format!("hybrid_{}_p50_ms", v.name)] = percentile_ms(h, 0.5).into();
            json[format!("hybrid_{}_p99_ms", v.name)] = percentile_ms(h, 0.99).into();
        }
        let added = percentile_ms(&h[0], 0.5) - percentile_ms(&h[1], 0.5);
        lines.push(format!(
            "n={n} {} adds p50 {added:.3} ms (against {})",
            a.name, b.name
        ));
        json[format!("{}_added_p50_ms", a.name)] = added.into();
    }
    // Vector recall@10 against an exact scan of the same vectors.
    let mut found = 0usize;
    for q in queries.iter().take(RECALL_QUERIES) {
        let mut exact: Vec<(usize, f32)> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i, dot(&q.1, v)))
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        let want: Vec<String> = exact
            .iter()
            .take(10)
            .map(|(i, _)| format!("c{}/{}", i / 50, i % 50))
            .collect();
        // The exact scan sees superseded and expired memories too.
        let mut req = request(q, SearchMode::Vector, 10);
        req.filter.include_superseded = true;
        let got = store.search(&req)?;
        found += got.iter().filter(|h| want.contains(&h.id)).count();
    }
    let recall = found as f64 / (RECALL_QUERIES * 10) as f64;
    lines.push(format!("n={n} vector recall@10 vs exact scan: {recall:.3}"));
    json["vector_recall_at_10"] = recall.into();

    drop(store);
    let t = Instant::now();
    let store = MemoryStore::open(dir, &config.store, &config.retrieval, &model)?;
    let reopen = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    store.search(&request(&queries[0], SearchMode::Hybrid, 10))?;
    let first = t.elapsed().as_secs_f64() * 1000.0;
    lines.push(format!(
        "n={n} reopen {reopen:.1} ms; first hybrid search after reopen {first:.2} ms"
    ));
    json["reopen_ms"] = reopen.into();
    json["first_search_after_reopen_ms"] = first.into();
    drop(store);
    for l in lines {
        println!("{l}");
    }
    println!("{json}");
    Ok(())
}
