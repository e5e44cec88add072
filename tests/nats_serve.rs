//! The real `voicerag serve` binary (tiny fixture embedder, real store) on a private nats-server:
//! killed with SIGKILL mid-ingest and restarted, every acknowledged memory is in its store exactly
//! once; two processes on partitioned transcripts answer every transcript once; SIGTERM exits 0;
//! `voicerag forget --nats-url` forgets in the stream too, so a replica built later never sees the
//! memory; retention gives a new memory stream its max age.

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use voicerag::bus::server::LocalNatsServer;

mod serve_support;
use serve_support::Serve;

const MAPPING: &str = r#"mappings = { "voice.transcript.*.*": "voice.transcript.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(2,1,2)}}" }"#;

/// The next heartbeat of `replica` (proves it is serving), as JSON.
async fn heartbeat(nc: &async_nats::Client, replica: &str) -> Value {
    let mut beats = nc
        .subscribe(format!("voice.health.{replica}"))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(60), beats.next())
        .await
        .unwrap_or_else(|_| panic!("no heartbeat from {replica}"))
        .unwrap();
    serde_json::from_slice(&m.payload).unwrap()
}

/// A `voice.health` answer (one replica serving).
async fn health(nc: &async_nats::Client) -> Value {
    let reply = nc
        .request("voice.health", "".into())
        .await
        .expect("health answered");
    serde_json::from_slice(&reply.payload).unwrap()
}

/// Publishes memory `i` and waits for JetStream's ack: from then on it must not be lost.
async fn publish(js: &jetstream::Context, i: usize) {
    let id = format!("note-{i:04}");
    let payload =
        json!({"v": 2, "id": id, "text": format!("remember fact number {i} about the garden")});
    js.send_publish(
        format!("voice.memory.default.c{}", i % 5),
        PublishMessage::build()
            .payload(serde_json::to_vec(&payload).unwrap().into())
            .message_id(format!("default.{id}")),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

fn stored(beat: &Value) -> u64 {
    beat["store"]["memories"]
        .as_u64()
        .unwrap_or_else(|| panic!("no store size in {beat}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sigkill_mid_ingest_then_restart_keeps_every_acknowledged_memory_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(dir.path()).unwrap();
    let data = dir.path().join("data");
    let nc = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(nc.clone());
    let mut serve = Serve::start(&server.url(), &data, "k1", "[]");
    assert_eq!(stored(&heartbeat(&nc, "k1").await), 0);

    let total = 2000;
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for i in 0..total / 2 {
                publish(&js, i).await;
            }
        })
    };
    // Kill as soon as part of it is committed.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let n = stored(&health(&nc).await);
        if n >= 10 {
            assert!(
                n < (total / 2) as u64,
                "ingest finished before the kill: nothing to test"
            );
            break;
        }
        assert!(Instant::now() < until, "ingest never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    serve.sigkill();
    publisher.await.unwrap();
    for i in total / 2..total {
        publish(&js, i).await;
    }
    let mut serve = Serve::start(&server.url(), &data, "k1", "[]");
    heartbeat(&nc, "k1").await;
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = stored(&health(&nc).await);
        assert!(
            n <= total as u64,
            "{n} memories stored for {total} published: duplicates"
        );
        if n == total as u64 {
            break;
        }
        assert!(
            Instant::now() < until,
            "only {n} of {total} memories after the restart"
        );
    }
    // Redeliveries of what was committed but not acked land as no-ops.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(stored(&health(&nc).await), total as u64);
    serve.sigterm_exits_0().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_partitioned_no_duplicate_no_lost_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start_with_config(dir.path(), Some(MAPPING)).unwrap();
    let nc = async_nats::connect(server.url()).await.unwrap();
    let mut a = Serve::start(&server.url(), &dir.path().join("a"), "a", "[0]");
    let mut b = Serve::start(&server.url(), &dir.path().join("b"), "b", "[1]");
    heartbeat(&nc, "a").await;
    heartbeat(&nc, "b").await;

    let mut contexts = nc.subscribe("voice.context.default.*").await.unwrap();
    nc.flush().await.unwrap();
    let conversations = 20;
    for u in 0..3 {
        for c in 0..conversations {
            let payload = json!({"v": 2, "utterance": format!("u{u}"), "text": format!("question {u} about the trip"), "final": true});
            nc.publish(
                format!("voice.transcript.default.conv{c}"),
                serde_json::to_vec(&payload).unwrap().into(),
            )
            .await
            .unwrap();
        }
    }
    nc.flush().await.unwrap();
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for n in 0..conversations * 3 {
        let m = tokio::time::timeout(Duration::from_secs(60), contexts.next())
            .await
            .unwrap_or_else(|_| panic!("answers lost: {n} of {}", conversations * 3))
            .unwrap();
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["final"], true);
        seen.entry(v["conversation"].as_str().unwrap().to_string())
            .or_default()
            .push(v["utterance"].as_str().unwrap().to_string());
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(1), contexts.next())
            .await
            .is_err(),
        "a duplicate answer"
    );
    assert_eq!(seen.len(), conversations);
    // Exactly once each. (Their order is the pipeline's: it serves finals concurrently.)
    for (conv, utterances) in seen.iter_mut() {
        utterances.sort();
        assert_eq!(utterances, &["u0", "u1", "u2"], "{conv}");
    }
    // Both served, and each keeps a full memory replica of all 60 finals.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (ba, bb) = (heartbeat(&nc, "a").await, heartbeat(&nc, "b").await);
        let served = |beat: &Value| beat["bus"]["contexts_published"].as_u64().unwrap();
        if stored(&ba) == 60 && stored(&bb) == 60 {
            assert!(
                served(&ba) > 0 && served(&bb) > 0,
                "one replica served everything"
            );
            assert_eq!(served(&ba) + served(&bb), 60);
            break;
        }
        assert!(
            Instant::now() < until,
            "replicas never converged: {} and {}",
            stored(&ba),
            stored(&bb)
        );
    }
    a.sigterm_exits_0().await;
    b.sigterm_exits_0().await;
}

/// Runs `voicerag forget --nats-url` with `args`; returns its exit code and stdout.
fn forget_cli(url: &str, dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_voicerag"))
        .args(["forget", "--nats-url", url])
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VOICERAG_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .expect("voicerag binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Waits for a heartbeat of `replica` that satisfies `done`.
async fn heartbeat_until(nc: &async_nats::Client, replica: &str, done: impl Fn(&Value) -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let beat = heartbeat(nc, replica).await;
        if done(&beat) {
            return;
        }
        assert!(Instant::now() < until, "{replica} never got there: {beat}");
    }
}

async fn query_hits(nc: &async_nats::Client, namespace: &str, text: &str) -> Vec<Value> {
    let payload = json!({"v": 2, "text": text, "top_k": 10});
    let reply = nc
        .request(
            format!("voice.query.{namespace}"),
            serde_json::to_vec(&payload).unwrap().into(),
        )
        .await
        .expect("query answered");
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    v["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits in {v}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_from_the_cli_reaches_the_stream_and_a_replica_built_later() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(dir.path()).unwrap();
    let url = server.url();
    let nc = async_nats::connect(url.clone()).await.unwrap();
    let js = jetstream::new(nc.clone());
    let mut first = Serve::start(&url, &dir.path().join("first"), "first", "[]");
    heartbeat(&nc, "first").await;
    // Two users, the same conversation and memory ids.
    for ns in ["alice", "bob"] {
        for (conversation, id) in [("c1", "c1/u1"), ("c1", "c1/u2"), ("c2", "c2/u1")] {
            let payload = json!({"v": 2, "id": id, "text": format!("{ns} planted tomatoes in the garden {id}")});
            js.send_publish(
                format!("voice.memory.{ns}.{conversation}"),
                PublishMessage::build()
                    .payload(serde_json::to_vec(&payload).unwrap().into())
                    .message_id(format!("{ns}.{id}")),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    }
    heartbeat_until(&nc, "first", |b| stored(b) == 6).await;

    let (code, out) = forget_cli(
        &url,
        dir.path(),
        &["--namespace", "alice", "--conversation", "c1"],
    );
    assert_eq!(code, 0, "{out}");
    let reply: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(reply["forgotten"], 2, "{reply}");
    assert_eq!(reply["stream_purged"], 2, "{reply}");
    let (code, out) = forget_cli(&url, dir.path(), &["--namespace", "alice", "--id", "c2/u1"]);
    assert_eq!(code, 0, "{out}");
    let reply: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(reply["forgotten"], 1, "{reply}");
    // Both scopes at once is a usage error; a bad name is the service's clear error.
    let (code, _) = forget_cli(
        &url,
        dir.path(),
        &["--namespace", "alice", "--id", "x", "--conversation", "c1"],
    );
    assert_eq!(code, 2);
    let (code, out) = forget_cli(&url, dir.path(), &["--namespace", "a*", "--id", "x"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error"), "{out}");
    assert_eq!(stored(&health(&nc).await), 3);
    assert!(query_hits(&nc, "alice", "tomatoes garden").await.is_empty());
    first.sigterm_exits_0().await;

    // A replica built later (new data directory, new durable consumer) from the stream.
    let mut later = Serve::start(&url, &dir.path().join("later"), "later", "[]");
    heartbeat_until(&nc, "later", |b| {
        b["bus"]["forget_markers_applied"].as_u64() == Some(2)
    })
    .await;
    assert_eq!(stored(&health(&nc).await), 3);
    assert!(query_hits(&nc, "alice", "tomatoes garden").await.is_empty());
    let bob: Vec<String> = query_hits(&nc, "bob", "tomatoes garden")
        .await
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bob.len(), 3, "{bob:?}");
    later.sigterm_exits_0().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_gives_a_new_memory_stream_its_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(dir.path()).unwrap();
    let nc = async_nats::connect(server.url()).await.unwrap();
    let mut serve = Serve::start_with(
        &server.url(),
        &dir.path().join("data"),
        "ret",
        "[]",
        &[("VOICERAG_STORE__RETENTION_MAX_AGE_S", "3600")],
    );
    heartbeat(&nc, "ret").await;
    let mut stream = jetstream::new(nc.clone())
        .get_stream("VOICE_MEMORY")
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    serve.sigterm_exits_0().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_facts_and_time_windows_over_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(dir.path()).unwrap();
    let url = server.url();
    let nc = async_nats::connect(url.clone()).await.unwrap();
    let js = jetstream::new(nc.clone());
    let mut serve = Serve::start(&url, &dir.path().join("data"), "r1", "[]");
    heartbeat(&nc, "r1").await;
    let yesterday = chrono::Utc::now().timestamp() as f64 - 86_400.0;
    let memories = [
        (
            "alice",
            json!({"v": 2, "id": "c1/u1", "text": "the vet appointment is on Tuesday", "ts": yesterday}),
        ),
        (
            "alice",
            json!({"v": 2, "id": "c1/u2", "text": "the vet moved the appointment to Friday", "ts": yesterday + 60.0, "supersedes": ["c1/u1"]}),
        ),
        (
            "bob",
            json!({"v": 2, "id": "c1/u1", "text": "the vet appointment is on Monday", "ts": yesterday}),
        ),
        // Names an id bob does not have: nothing of alice's (who has it) changes.
        (
            "bob",
            json!({"v": 2, "id": "c1/u5", "text": "the garden needs water", "ts": yesterday, "supersedes": ["c1/u2"]}),
        ),
    ];
    for (ns, payload) in &memories {
        let id = payload["id"].as_str().unwrap();
        js.send_publish(
            format!("voice.memory.{ns}.c1"),
            PublishMessage::build()
                .payload(serde_json::to_vec(payload).unwrap().into())
                .message_id(format!("{ns}.{id}")),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    heartbeat_until(&nc, "r1", |b| stored(b) == 4).await;
    let ask = |ns: &'static str, extra: Value| {
        let nc = nc.clone();
        async move {
            let mut payload =
                json!({"v": 2, "text": "vet appointment yesterday", "top_k": 10, "mode": "bm25"});
            for (k, v) in extra.as_object().unwrap() {
                payload[k] = v.clone();
            }
            let reply = nc
                .request(
                    format!("voice.query.{ns}"),
                    serde_json::to_vec(&payload).unwrap().into(),
                )
                .await
                .expect("query answered");
            let v: Value = serde_json::from_slice(&reply.payload).unwrap();
            let mut ids: Vec<String> = v["hits"]
                .as_array()
                .unwrap_or_else(|| panic!("no hits in {v}"))
                .iter()
                .map(|h| h["id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            (ids, v)
        }
    };
    // BM25 finds what was stored after its next commit.
    let until = Instant::now() + Duration::from_secs(30);
    let (ids, v) = loop {
        let (ids, v) = ask("alice", json!({"time_zone": "UTC"})).await;
        if !ids.is_empty() || Instant::now() > until {
            break (ids, v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ids, vec!["c1/u2"], "{v}");
    assert_eq!(v["time_window"]["phrase"], "yesterday", "{v}");
    let (ids, _) = ask("alice", json!({"include_superseded": true})).await;
    assert_eq!(ids, vec!["c1/u1", "c1/u2"]);
    let (ids, v) = ask("bob", json!({"time_windows": false})).await;
    assert_eq!(ids, vec!["c1/u1"], "{v}");
    assert!(v.get("time_window").is_none(), "{v}");
    serve.sigterm_exits_0().await;
}
