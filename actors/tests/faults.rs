//! Fault injection: thousands of transcripts while fake stages panic, hang, fail or slow down, the
//! faults chosen by a seeded hash of (stage, request id). Runs on the real clock (stage calls are
//! blocking threads), so assertions are about invariants that hold however the machine is loaded.
//! A failure prints its seed; rerun it with `VOICERAG_FAULT_SEED=<seed>`.

mod common;

use common::*;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;
use voicerag_actors::*;

const FINALS: u64 = 2_000;
const WAVE: u64 = 25;

fn stage_salt(stage: &str) -> u64 {
    stage.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn plan(seed: u64) -> Plan {
    Arc::new(move |stage, id| {
        let r = mix(seed ^ stage_salt(stage) ^ mix(id)) % 1000;
        let slow = Duration::from_micros(mix(r ^ seed) % 2_000);
        match (stage, r) {
            ("embed", 0..5) | ("search", 0..3) | ("rerank", 0..5) => Fault::Panic,
            ("embed", 5..15) | ("search", 3..10) | ("rerank", 5..15) => Fault::Error,
            ("embed", 15..18) | ("search", 10..12) => Fault::Hang(Duration::from_millis(400)),
            ("rerank", 15..20) => Fault::Hang(Duration::from_secs(2)), // until cancelled
            ("write", 0..50) => Fault::Error,
            ("write", 50..60) => Fault::Panic,
            (_, 0..100) => Fault::Slow(slow),
            _ => Fault::None,
        }
    })
}

fn seed() -> u64 {
    std::env::var("VOICERAG_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_126)
}

fn is_fault(f: Fault) -> bool {
    matches!(f, Fault::Panic | Fault::Error | Fault::Hang(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_final_gets_one_correctly_marked_result_under_random_faults() {
    let seed = seed();
    eprintln!("fault-injection seed = {seed} (rerun with VOICERAG_FAULT_SEED={seed})");
    let plan = plan(seed);
    quiet_injected_panics();
    let f = Fakes::new(plan.clone());
    let config = PipelineConfig {
        budget_ms: 250,
        max_in_flight: 16,
        queue_capacity: 4096,
        writer_batch_size: 16,
        writer_flush_ms: 20,
        writer_retry_ms: 5,
        rerank_initial_ns_per_token: 1,
        restart: RestartPolicy {
            max_restarts: 100_000,
            window_ms: 60_000,
            backoff_initial_ms: 1,
            backoff_max_ms: 5,
            unresponsive_ms: 150,
            retry_down_after_ms: 100,
            ..Default::default()
        },
        ..Default::default()
    };
    let parallel = config.search_parallel.max(1);
    let p = Pipeline::start(f.stages(true), config).await.unwrap();
    let mut results = p.results();
    let mut got: HashMap<String, Vec<ContextResult>> = HashMap::new();
    let mut remembered = HashSet::new();
    let text_of = |id: u64| format!("q{id} final words {}", id % 7);
    for wave in 0..FINALS / WAVE {
        for id in wave * WAVE..(wave + 1) * WAVE {
            let conv = format!("c{}", id % 5);
            let utt = format!("u{id}");
            match mix(seed ^ id) % 10 {
                0 | 1 => {
                    p.submit(transcript(&conv, &utt, &format!("q{id} final"), false))
                        .unwrap();
                    p.submit(transcript(&conv, &utt, &text_of(id), false))
                        .unwrap();
                }
                2 => p
                    .submit(transcript(
                        &conv,
                        &utt,
                        &format!("q{id} something else"),
                        false,
                    ))
                    .unwrap(),
                _ => {}
            }
            p.submit(transcript(&conv, &utt, &text_of(id), true))
                .unwrap();
            remembered.insert(format!("{conv}/{utt}"));
            if id % 7 == 0 {
                let r = AgentReply {
                    namespace: "ns".into(),
                    conversation: conv.clone(),
                    utterance: format!("r{id}"),
                    text: "ok".into(),
                };
                p.reply(r).unwrap();
                remembered.insert(format!("{conv}/r{id}"));
            }
        }
        for _ in 0..WAVE {
            let r = tokio::time::timeout(Duration::from_secs(20), results.next())
                .await
                .unwrap_or_else(|_| panic!("seed {seed}: a result is missing in wave {wave}"))
                .expect("stream open");
            got.entry(r.utterance.clone()).or_default().push(r);
        }
    }

    let (mut shed, mut full) = (0, 0);
    let bm25 = f.retriever.bm25_texts.lock().unwrap().clone();
    for id in 0..FINALS {
        let utt = format!("u{id}");
        let rs = got
            .get(&utt)
            .unwrap_or_else(|| panic!("seed {seed}: no result for {utt}"));
        assert_eq!(rs.len(), 1, "seed {seed}: {utt} got {} results", rs.len());
        let r = &rs[0];
        let ctx = format!("seed {seed} {utt}: {:?} {:?}", r.degraded, r.rerank);
        assert!(r.is_final, "{ctx}");
        assert_eq!(r.text, text_of(id), "{ctx}");
        let degraded = r.degraded.clone().unwrap_or_default();
        if degraded == "shed" {
            shed += 1;
            continue;
        }
        // Hits belong to this request only.
        assert!(
            r.hits.iter().all(|h| h.id.starts_with(&format!("q{id}-"))),
            "{ctx}"
        );
        // A search fault shows, unless the request never got as far as searching (its speculative
        // work was still embedding at the deadline).
        let stuck_embedding = degraded == "embedder timeout" && r.hits.is_empty();
        if is_fault(plan("search", id)) {
            assert!(degraded.contains("retriever") || stuck_embedding, "{ctx}");
        }
        if degraded.contains("retriever") || stuck_embedding {
            assert!(r.hits.is_empty(), "{ctx}");
            continue;
        }
        assert!(!r.hits.is_empty(), "{ctx}");
        // Embedder marking matches what the retriever was actually asked.
        if is_fault(plan("embed", id)) {
            assert!(degraded.contains("embedder"), "{ctx}");
        }
        assert_eq!(
            degraded.contains("embedder"),
            bm25.contains(&r.text),
            "{ctx}"
        );
        // Rerank marking matches the scores carried.
        match &r.rerank {
            RerankOutcome::Full | RerankOutcome::Partial(_) => {
                assert!(!is_fault(plan("rerank", id)), "{ctx}");
                let n = match r.rerank {
                    RerankOutcome::Partial(n) => n.min(r.hits.len()),
                    _ => r.hits.len(),
                };
                for (i, h) in r.hits.iter().enumerate() {
                    if i < n {
                        assert_eq!(
                            h.rerank_score,
                            Some(expected_score(&r.text, &h.text)),
                            "{ctx}"
                        );
                    } else {
                        assert_eq!(h.rerank_score, None, "{ctx}");
                    }
                }
                full += matches!(r.rerank, RerankOutcome::Full) as usize;
            }
            RerankOutcome::Off => panic!("{ctx}: a reranker is configured"),
            _ => assert!(r.hits.iter().all(|h| h.rerank_score.is_none()), "{ctx}"),
        }
    }
    assert_eq!(
        got.len() as u64,
        FINALS,
        "seed {seed}: results for unknown utterances"
    );
    assert!(shed < FINALS as usize / 10, "seed {seed}: {shed} shed");
    assert!(
        full > FINALS as usize / 2,
        "seed {seed}: only {full} fully reranked"
    );

    // Every executed panic or hang of the embedder is one restart. The retriever runs
    // `search_parallel` searches at once, and faults of searches in flight together end in one
    // restart: between faults / search_parallel and faults restarts. A hung reranker is either
    // cancelled by its deadline or restarted.
    let expected = |c: &Counts| c.panics.load(SeqCst) + c.hangs.load(SeqCst);
    let retriever_settled = |restarts: usize| {
        let faults = expected(&f.retriever.counts);
        restarts <= faults && restarts * parallel >= faults
    };
    let settled = until(
        || {
            let h = p.health();
            h.stages[0].restarts as usize == expected(&f.embedder.counts)
                && retriever_settled(h.stages[1].restarts as usize)
                && h.stages[3].restarts as usize == f.writer.counts.panics.load(SeqCst)
                && h.stages.iter().all(|s| s.state == StageState::Up)
        },
        25_000,
    )
    .await;
    let h = p.health();
    eprintln!(
        "seed {seed}: shed {shed}, fully reranked {full}, {:?}, {:?}",
        h.counters, h.stages
    );
    assert!(
        settled,
        "seed {seed}: restarts {:?} vs embedder {} retriever {} (search_parallel {parallel}) writer {}",
        h.stages,
        expected(&f.embedder.counts),
        expected(&f.retriever.counts),
        f.writer.counts.panics.load(SeqCst)
    );
    let rr = h.stages[2].restarts as usize;
    let (rp, rh) = (
        f.reranker.counts.panics.load(SeqCst),
        f.reranker.counts.hangs.load(SeqCst),
    );
    assert!(
        rr >= rp && rr <= rp + rh,
        "seed {seed}: reranker restarts {rr}, panics {rp}, hangs {rh}"
    );
    assert!(
        f.embedder.counts.panics.load(SeqCst) > 0 && rp > 0,
        "seed {seed}: faults were injected"
    );
    assert_eq!(h.counters.final_results, FINALS);
    assert_eq!(h.counters.results, FINALS);

    p.shutdown().await.unwrap();
    let stored = f.writer.ids();
    let lost: Vec<_> = remembered.difference(&stored).collect();
    assert!(lost.is_empty(), "seed {seed}: memories lost: {lost:?}");
    assert_eq!(stored.len(), remembered.len());
    assert!(
        f.writer.counts.panics.load(SeqCst) + h.counters.memory_write_failures as usize > 0,
        "seed {seed}: writer faults injected"
    );
    assert!(
        results.next().await.is_none(),
        "seed {seed}: no extra results"
    );
}

/// The same faults on tokio's paused clock, driven forward 1 ms at a time: stage calls run in real
/// time on blocking threads while virtual time moves on, so however slow the machine, a result
/// must leave by its (virtual) deadline. This is the deadline guarantee, independent of load.
#[tokio::test(start_paused = true)]
async fn every_result_meets_its_deadline_on_the_paused_clock_under_random_faults() {
    let seed = seed();
    eprintln!("fault-injection seed = {seed} (rerun with VOICERAG_FAULT_SEED={seed})");
    let plan = plan(seed);
    quiet_injected_panics();
    let f = Fakes::new(plan.clone());
    let config = PipelineConfig {
        max_in_flight: 8,
        writer_flush_ms: 20,
        writer_retry_ms: 5,
        restart: RestartPolicy {
            max_restarts: 100_000,
            backoff_initial_ms: 1,
            backoff_max_ms: 5,
            unresponsive_ms: 150,
            retry_down_after_ms: 100,
            ..Default::default()
        },
        ..Default::default()
    };
    let p = Pipeline::start(f.stages(true), config).await.unwrap();
    let mut results = p.results();
    let driving = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let driver = {
        let driving = driving.clone();
        tokio::spawn(async move {
            while driving.load(SeqCst) {
                tokio::time::advance(Duration::from_millis(1)).await;
                tokio::task::yield_now().await;
                // Roughly 1 virtual ms per 100 real µs, so fault-free calls usually finish in time.
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };
    const N: u64 = 400;
    let mut got: HashMap<String, usize> = HashMap::new();
    for wave in 0..N / 20 {
        for id in wave * 20..(wave + 1) * 20 {
            let text = format!("q{id} words");
            if id % 4 == 0 {
                p.submit(transcript("c", &format!("u{id}"), &text, false))
                    .unwrap();
            }
            p.submit(transcript("c", &format!("u{id}"), &text, true))
                .unwrap();
        }
        for _ in 0..20 {
            let r = tokio::time::timeout(Duration::from_secs(60), results.next())
                .await
                .unwrap_or_else(|_| panic!("seed {seed}: a result is missing in wave {wave}"))
                .expect("stream open");
            let ctx = format!(
                "seed {seed} {}: {:?} {:?}",
                r.utterance, r.degraded, r.rerank
            );
            assert!(
                r.deadline_met(),
                "{ctx}: {:?} late",
                r.finished_at - r.deadline
            );
            let id = id_of(&r.text);
            if is_fault(plan("rerank", id)) {
                assert!(
                    !matches!(r.rerank, RerankOutcome::Full | RerankOutcome::Partial(_)),
                    "{ctx}"
                );
            }
            if is_fault(plan("embed", id)) && r.degraded.as_deref() != Some("shed") {
                assert!(
                    r.degraded.as_deref().unwrap_or("").contains("embedder"),
                    "{ctx}"
                );
            }
            *got.entry(r.utterance).or_default() += 1;
        }
    }
    assert_eq!(got.len() as u64, N, "seed {seed}: one result per final");
    assert!(got.values().all(|&n| n == 1), "seed {seed}: duplicates");
    let h = p.health();
    eprintln!(
        "seed {seed}: {:?}, restarts {:?}",
        h.counters,
        h.stages.iter().map(|s| s.restarts).collect::<Vec<_>>()
    );
    assert!(
        h.counters.degraded > 0 && h.stages.iter().any(|s| s.restarts > 0),
        "seed {seed}: faults were injected"
    );
    p.shutdown().await.unwrap();
    assert_eq!(f.writer.ids().len() as u64, N, "seed {seed}: memories lost");
    driving.store(false, SeqCst);
    driver.await.unwrap();
}
