//! `voicerag bench soak` as a user runs it: a short run through the CLI, in process and over
//! NATS, on the tiny fixture embedder. The summary line must add up: every final sent answered
//! once, none lost, every final and agent reply remembered, usage figures read from /proc.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const SEED: u64 = 20;

/// Runs a 2-second soak and returns its summary line.
fn soak(extra: &[&str]) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voicerag"))
        .current_dir(tmp.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "VOICERAG_EMBEDDER__MODEL_DIR",
            root().join("fixtures/models/tiny-embedder"),
        )
        .env("VOICERAG_STORE__MAP_SIZE_MIB", "64")
        .env(
            "VOICERAG_RUNTIME__LIBRARY",
            root().join("runtime/libonnxruntime.so"),
        )
        // A loaded test machine: the budget is not what this test is about.
        .env("VOICERAG_PIPELINE__BUDGET_MS", "3000")
        .args([
            "bench",
            "soak",
            "--conversations",
            "3",
            "--interval-ms",
            "100",
        ])
        .args(["--seconds", "2", "--memories", &SEED.to_string()])
        .args(["--no-reranker", "--json"])
        .args(extra)
        .output()
        .expect("voicerag runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("summary is JSON ({e}): {last}"))
}

fn check(s: &serde_json::Value, mode: &str) {
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    let f = |k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{k} in {s}"));
    assert_eq!(s["mode"], mode);
    let sent = n("sent");
    // 3 conversations, one final per 100 ms for 2 s: about 60, however slow the machine.
    assert!(sent >= 3, "{s}");
    assert_eq!(n("answered"), sent, "every final answered: {s}");
    assert_eq!(n("lost"), 0, "{s}");
    assert_eq!(n("duplicates"), 0, "{s}");
    assert_eq!(n("replies"), sent, "one agent reply per final: {s}");
    assert_eq!(n("budget_ms"), 3000);
    assert!(n("degraded") <= sent);
    let by_reason: u64 = s["degraded_reasons"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_reason, n("degraded"), "{s}");
    let reranks: u64 = s["rerank"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(reranks, sent, "one rerank outcome per answer: {s}");
    assert_eq!(s["rerank"]["off"].as_u64(), Some(sent), "{s}");
    assert!(
        f("total_ms_p50") > 0.0 && f("total_ms_p50") <= f("total_ms_p99"),
        "{s}"
    );
    assert!(f("total_ms_p99") <= f("total_ms_max"), "{s}");
    assert!(f("rss_mb_start") > 0.0 && f("rss_mb_end") > 0.0, "{s}");
    let store = |at: &str, k: &str| {
        s[at][k]
            .as_f64()
            .unwrap_or_else(|| panic!("{at}.{k} in {s}"))
    };
    for k in [
        "rss_anon_mb_start",
        "rss_anon_mb_end",
        "rss_file_mb_start",
        "rss_file_mb_end",
    ] {
        assert!(
            f(k) > 0.0 && f(k) <= f("rss_mb_end").max(f("rss_mb_start")),
            "{k}: {s}"
        );
    }
    assert!(n("threads_start") > 0 && n("threads_end") > 0, "{s}");
    // Threads by name add up to the count, and RSS less the store's vectors is what is left of
    // anonymous RSS once the exact-search vectors are taken out.
    let named = |k: &str| -> u64 {
        s[k].as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    assert!(
        named("thread_names_start") > 0 && named("thread_names_end") > 0,
        "{s}"
    );
    let samples = s["samples"].as_array().expect("samples");
    assert!(!samples.is_empty(), "{s}");
    for sample in samples {
        let g = |k: &str| {
            sample[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{k} in {sample}"))
        };
        assert!(g("threads") > 0.0 && g("rss_anon_mb") > 0.0, "{sample}");
        assert!(
            (g("anon_non_store_mb") - (g("rss_anon_mb") - g("exact_cache_mb"))).abs() < 1e-6,
            "{sample}"
        );
        assert!(g("memories") >= SEED as f64, "{sample}");
        // glibc's malloc hands out at least the models' weights.
        assert!(g("heap_used_mb") > 0.0, "{sample}");
    }
    let end_cache = store("store_end", "exact_cache_mb");
    assert!(
        (f("anon_non_store_mb_end") - (f("rss_anon_mb_end") - end_cache)).abs() < 64.0,
        "{s}"
    );
    // Every final (the user's) is written as a memory, and in process every agent reply too (over
    // the bus the agent publishes its replies to the memory stream itself).
    let written = if mode == "bus" { sent } else { 2 * sent };
    assert_eq!(n("memories_written"), written, "{s}");
    assert_eq!(n("memories_refused"), 0, "{s}");
    let batches = n("memory_batches");
    assert!(batches >= 1 && batches <= written, "{s}");
    let mean = f("memory_batch_mean");
    assert!((mean - written as f64 / batches as f64).abs() < 1e-6, "{s}");
    assert!(n("memory_queue_peak") <= written, "{s}");
    // Each utterance is remembered for speculative_ttl_ms (10 s) at most: a 2-second run holds
    // at most what it sent (a final and a reply per utterance, partials on the final's).
    assert!(n("utterances_tracked_end") <= sent, "{s}");
    assert_eq!(n("abandoned_calls"), 0, "{s}");
    // The store as the load found it (the seed) and as it left it, to read RSS against.
    assert_eq!(store("store_start", "memories"), SEED as f64, "{s}");
    // Over the bus the stream's consumer may still be committing when the load ends.
    assert!(store("store_end", "memories") >= SEED as f64, "{s}");
    assert!(
        store("store_end", "disk_mb") >= store("store_start", "disk_mb"),
        "{s}"
    );
    assert!(store("store_start", "lmdb_used_mb") > 0.0, "{s}");
    assert!(
        store("store_end", "chunks") >= store("store_end", "memories"),
        "{s}"
    );
}

#[test]
fn a_short_soak_in_process_answers_every_final_and_remembers_every_turn() {
    let s = soak(&[]);
    check(&s, "in-process");
    // In process a memory is committed before its write returns: the load's are in the store
    // when it ends.
    assert!(s["store_end"]["memories"].as_u64().unwrap() > SEED, "{s}");
    // The blocking pool was started whole before the load and the embedder's session threads
    // with the engines: no thread is started for the load, so the count never moves (no
    // reranker, so no niced reranker thread; in process, no NATS client).
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    assert_eq!(n("blocking_threads"), 32, "{s}");
    assert!(n("threads_start") > n("blocking_threads"), "{s}");
    assert_eq!(n("threads_end"), n("threads_start"), "{s}");
    assert_eq!(n("threads_max"), n("threads_start"), "{s}");
    assert!(n("memories_end") > SEED, "{s}");
    // In process the writer commits to the store before shutdown returns.
    assert_eq!(
        s["memories_stored"].as_u64(),
        Some(SEED + 2 * s["sent"].as_u64().unwrap()),
        "{s}"
    );
}

#[test]
fn the_before_settings_run_too() {
    // The "before" of issue 11 items 2 and 3: memories on the query's session, no micro-batching.
    let s = soak(&[
        "--shared-session",
        "--embed-batch-max",
        "1",
        "--one-namespace",
    ]);
    check(&s, "in-process");
    assert_eq!(s["shared_session"], true);
    assert_eq!(s["embed_batch_max"], 1);
    assert_eq!(s["namespaces"], 1);
}

#[test]
fn each_conversation_is_a_user_of_its_own_by_default() {
    let s = soak(&["--bus"]);
    check(&s, "bus");
    assert_eq!(s["namespaces"], s["conversations"], "{s}");
}
