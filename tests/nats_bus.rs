//! The NATS bus against a real `nats-server` (started here on a free loopback port with JetStream
//! and a temporary store), with a fake engine and an in-memory sink.

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use voicerag::actors::{
    ContextResult, Hit, Memory, MemoryWriter, RerankOutcome, StageTimings, Transcript,
};
use voicerag::bench::nats::{LoadSpec, run_load};
use voicerag::bus::server::LocalNatsServer;
use voicerag::bus::{
    BusConnection, ContextQuery, ContextService, EngineError, Forget, ForgetScope, MemorySink,
    NatsConfig, Refused, RunningBus, SinkError, Subjects,
};

const WAIT: Duration = Duration::from_secs(20);

/// Memories shared by the fake sink (writes) and the fake engine (word-overlap search).
#[derive(Default)]
struct Memories {
    /// Keyed by (namespace, id): two users' equal ids are two memories.
    by_id: Mutex<HashMap<(String, String), Memory>>,
    /// How many times each id was offered to the sink (redelivery shows up here).
    offered: Mutex<HashMap<String, usize>>,
    /// Every (namespace, id) stored.
    stored: Mutex<HashSet<(String, String)>>,
}

impl Memories {
    fn search(&self, namespace: &str, text: &str) -> Vec<Hit> {
        let words: HashSet<String> = text
            .split_whitespace()
            .map(|w| w.to_lowercase())
            .filter(|w| w.len() > 2)
            .collect();
        let by_id = self.by_id.lock().unwrap();
        let mut hits: Vec<Hit> = by_id
            .values()
            .filter(|m| m.namespace == namespace)
            .filter_map(|m| {
                let overlap = m
                    .text
                    .split_whitespace()
                    .filter(|w| words.contains(&w.to_lowercase()))
                    .count();
                (overlap > 0).then(|| Hit {
                    id: m.id.clone(),
                    text: m.text.clone(),
                    score: overlap as f32,
                    rerank_score: None,
                    vector_rank: None,
                    bm25_rank: Some(1),
                    similarity: None,
                    conversation: m.conversation.clone(),
                    speaker: m.speaker.clone(),
                    ts_ms: m.ts_ms,
                })
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits
    }

    fn has(&self, id: &str) -> bool {
        self.by_id.lock().unwrap().keys().any(|(_, i)| i == id)
    }

    fn has_in(&self, namespace: &str, id: &str) -> bool {
        self.by_id
            .lock()
            .unwrap()
            .contains_key(&(namespace.to_string(), id.to_string()))
    }

    fn len(&self) -> usize {
        self.by_id.lock().unwrap().len()
    }
}

struct FakeSink {
    memories: Arc<Memories>,
    /// Longest text it stores (the store's `max_text_bytes`); longer ones are refused.
    max_text: usize,
    /// Fail this many commits first (a full disk, say).
    fail_first: AtomicUsize,
    /// How long a commit takes (a slow disk), holding the writer's lock throughout; readers
    /// are not blocked meanwhile, as LMDB's are not.
    commit_time: Duration,
    writer: Mutex<()>,
}

impl MemorySink for FakeSink {
    fn store(&self, batch: &[Memory]) -> Result<Vec<Refused>, SinkError> {
        {
            let mut offered = self.memories.offered.lock().unwrap();
            for m in batch {
                *offered.entry(m.id.clone()).or_default() += 1;
            }
        }
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError("disk full".into()));
        }
        let _writer = self.writer.lock().unwrap();
        if !self.commit_time.is_zero() {
            std::thread::sleep(self.commit_time);
        }
        let mut by_id = self.memories.by_id.lock().unwrap();
        let mut stored = self.memories.stored.lock().unwrap();
        let mut refused = Vec::new();
        for (index, m) in batch.iter().enumerate() {
            if m.text.len() > self.max_text {
                refused.push(Refused {
                    index,
                    reason: format!("text is {} bytes, over the limit", m.text.len()),
                });
                continue;
            }
            stored.insert((m.namespace.clone(), m.id.clone()));
            by_id
                .entry((m.namespace.clone(), m.id.clone()))
                .or_insert_with(|| m.clone());
        }
        Ok(refused)
    }

    fn forget(&self, forget: &Forget) -> Result<u64, SinkError> {
        let mut by_id = self.memories.by_id.lock().unwrap();
        let before = by_id.len();
        by_id.retain(|_, m| {
            m.namespace != forget.namespace
                || match &forget.scope {
                    ForgetScope::Id(id) => &m.id != id,
                    ForgetScope::Conversation(c) => &m.conversation != c,
                    ForgetScope::Namespace => false,
                }
        });
        Ok((before - by_id.len()) as u64)
    }

    fn stats(&self) -> Value {
        json!({"memories": self.memories.len()})
    }
}

struct FakeEngine {
    memories: Arc<Memories>,
    tx: mpsc::UnboundedSender<ContextResult>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<ContextResult>>>,
    /// Refuse every submit (overload).
    refuse: AtomicBool,
    /// Time each transcript takes before its result leaves.
    delay: Duration,
    submitted: AtomicUsize,
    shut_down: AtomicBool,
    /// Accept transcripts and never answer (a broken engine).
    swallow: AtomicBool,
    /// Shutdown fails as the pipeline's does when its memories cannot be written.
    unflushed: AtomicBool,
}

impl FakeEngine {
    fn new(memories: Arc<Memories>, delay: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            memories,
            tx,
            rx: Mutex::new(Some(rx)),
            refuse: AtomicBool::new(false),
            delay,
            submitted: AtomicUsize::new(0),
            shut_down: AtomicBool::new(false),
            swallow: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
        }
    }

    fn result(&self, t: &Transcript, hits: Vec<Hit>) -> ContextResult {
        let now = Instant::now();
        ContextResult {
            namespace: t.namespace.clone(),
            conversation: t.conversation.clone(),
            utterance: t.utterance.clone(),
            is_final: t.is_final,
            text: t.text.clone(),
            hits,
            capped: 0,
            floored: 0,
            rerank: RerankOutcome::Off,
            time_window: None,
            degraded: None,
            timings: StageTimings {
                total: now - t.received_at,
                ..Default::default()
            },
            deadline: t.received_at + Duration::from_secs(1),
            finished_at: now,
        }
    }
}

impl ContextService for FakeEngine {
    async fn submit(&self, transcript: Transcript) -> Result<(), EngineError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(EngineError("overloaded".into()));
        }
        self.submitted.fetch_add(1, Ordering::SeqCst);
        if self.swallow.load(Ordering::SeqCst) {
            return Ok(());
        }
        let hits = self
            .memories
            .search(&transcript.namespace, &transcript.text);
        let result = self.result(&transcript, hits);
        if self.delay.is_zero() {
            // In submission order, like a pipeline that is keeping up.
            let _ = self.tx.send(result);
            return Ok(());
        }
        let tx = self.tx.clone();
        let delay = self.delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(result);
        });
        Ok(())
    }

    fn results(&self) -> BoxStream<'static, ContextResult> {
        match self.rx.lock().unwrap().take() {
            Some(rx) => tokio_stream_from(rx),
            None => futures::stream::empty().boxed(),
        }
    }

    async fn query(&self, query: ContextQuery) -> Result<ContextResult, EngineError> {
        let t = Transcript {
            namespace: query.namespace.clone(),
            conversation: query.conversation.clone().unwrap_or_default(),
            utterance: query.id.clone(),
            speaker: "user".into(),
            text: query.text.clone(),
            is_final: false,
            received_at: Instant::now(),
        };
        let mut hits = self.memories.search(&query.namespace, &query.text);
        hits.truncate(query.top_k.unwrap_or(5));
        Ok(self.result(&t, hits))
    }

    fn health(&self) -> Value {
        json!({"stages": {"embedder": "up"}})
    }

    async fn shutdown(&self) -> Result<(), EngineError> {
        self.shut_down.store(true, Ordering::SeqCst);
        if self.unflushed.load(Ordering::SeqCst) {
            return Err(EngineError(
                "2 memories were not written before shutdown gave up: stream unreachable".into(),
            ));
        }
        Ok(())
    }
}

fn tokio_stream_from(
    mut rx: mpsc::UnboundedReceiver<ContextResult>,
) -> BoxStream<'static, ContextResult> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

struct Harness {
    server: LocalNatsServer,
    _dir: tempfile::TempDir,
}

fn start_server(config: Option<&str>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start_with_config(dir.path(), config).unwrap();
    Harness { server, _dir: dir }
}

fn bus_config(url: &str, replica: &str) -> NatsConfig {
    NatsConfig {
        urls: vec![url.to_string()],
        replica_id: replica.to_string(),
        heartbeat_ms: 200,
        max_payload_bytes: 1024,
        reconnect_max_delay_ms: 200,
        ack_wait_ms: 2000,
        // The fake engine does not remember finals itself.
        republish_finals: true,
        drain_timeout_ms: 2000,
        ..Default::default()
    }
}

struct Replica {
    bus: RunningBus,
    memories: Arc<Memories>,
    engine: Arc<FakeEngine>,
}

async fn start_replica(
    config: NatsConfig,
    delay: Duration,
    fail_first: usize,
) -> (Replica, BusConnection) {
    start_replica_committing_in(config, delay, fail_first, Duration::ZERO).await
}

async fn start_replica_committing_in(
    config: NatsConfig,
    delay: Duration,
    fail_first: usize,
    commit_time: Duration,
) -> (Replica, BusConnection) {
    let memories = Arc::new(Memories::default());
    let engine = Arc::new(FakeEngine::new(memories.clone(), delay));
    let sink = Arc::new(FakeSink {
        memories: memories.clone(),
        max_text: 200,
        fail_first: AtomicUsize::new(fail_first),
        commit_time,
        writer: Mutex::new(()),
    });
    let connection = BusConnection::connect(config.clone(), WAIT).await.unwrap();
    let writer_connection = BusConnection::connect(config, WAIT).await.unwrap();
    let bus = connection.start(engine.clone(), sink).await.unwrap();
    (
        Replica {
            bus,
            memories,
            engine,
        },
        writer_connection,
    )
}

async fn client(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(url)
        .await
        .unwrap()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_json(sub: &mut async_nats::Subscriber) -> Value {
    let message = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("timed out")
        .expect("closed");
    serde_json::from_slice(&message.payload).unwrap()
}

async fn publish_memory(js: &jetstream::Context, conversation: &str, id: &str, text: &str) {
    publish_memory_in(js, "default", conversation, id, text).await;
}

async fn publish_memory_in(
    js: &jetstream::Context,
    namespace: &str,
    conversation: &str,
    id: &str,
    text: &str,
) {
    let payload =
        serde_json::to_vec(&json!({"v": 2, "id": id, "text": text, "speaker": "agent"})).unwrap();
    js.send_publish(
        format!("voice.memory.{namespace}.{conversation}"),
        PublishMessage::build()
            .payload(payload.into())
            .message_id(format!("{namespace}.{id}")),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

async fn publish_transcript(
    nc: &async_nats::Client,
    conversation: &str,
    utterance: &str,
    text: &str,
    fin: bool,
) {
    publish_transcript_in(nc, "default", conversation, utterance, text, fin).await;
}

async fn publish_transcript_in(
    nc: &async_nats::Client,
    namespace: &str,
    conversation: &str,
    utterance: &str,
    text: &str,
    fin: bool,
) {
    let payload = json!({"v": 2, "utterance": utterance, "text": text, "final": fin});
    nc.publish(
        format!("voice.transcript.{namespace}.{conversation}"),
        serde_json::to_vec(&payload).unwrap().into(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_in_context_out_and_finals_become_memories() {
    let h = start_server(None);
    let url = h.server.url();
    let (replica, _) = start_replica(bus_config(&url, "r1"), Duration::ZERO, 0).await;
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    publish_memory(&js, "c0", "m-cat", "my cat is called Tom").await;
    eventually("memory consumed", || replica.memories.has("m-cat")).await;

    let mut contexts = nc.subscribe("voice.context.default.c1").await.unwrap();
    nc.flush().await.unwrap();
    publish_transcript(&nc, "c1", "u1", "what is my cat", false).await;
    publish_transcript(&nc, "c1", "u1", "what is my cat called", true).await;

    let partial = next_json(&mut contexts).await;
    assert_eq!(partial["utterance"], "u1");
    assert_eq!(partial["final"], false);
    assert_eq!(partial["conversation"], "c1");
    assert_eq!(partial["id"], "c1/u1");
    assert_eq!(partial["hits"][0]["id"], "m-cat");
    assert_eq!(partial["rerank"], "off");
    assert!(partial["timings_ms"]["total"].is_number());
    let fin = next_json(&mut contexts).await;
    assert_eq!(fin["final"], true);

    // The final (only) came back through JetStream as a memory with id <conversation>/<utterance>.
    eventually("final transcript stored", || replica.memories.has("c1/u1")).await;
    let stored = replica.memories.by_id.lock().unwrap()
        [&("default".to_string(), "c1/u1".to_string())]
        .clone();
    assert_eq!(stored.text, "what is my cat called");
    assert_eq!(stored.speaker, "user");
    assert_eq!(
        replica.memories.len(),
        2,
        "the partial must not become a memory"
    );
    replica.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_request_reply_and_health() {
    let h = start_server(None);
    let url = h.server.url();
    let (replica, _) = start_replica(bus_config(&url, "r1"), Duration::ZERO, 0).await;
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    publish_memory(&js, "c0", "m-tea", "I drink green tea every morning").await;
    publish_memory(&js, "c0", "m-bike", "I ride my bike to work").await;
    eventually("memories consumed", || replica.memories.len() == 2).await;

    let reply = nc
        .request(
            "voice.query.default",
            serde_json::to_vec(&json!({"id": "q1", "text": "green tea"}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["id"], "q1");
    assert_eq!(v["hits"].as_array().unwrap().len(), 1);
    assert_eq!(v["hits"][0]["id"], "m-tea");
    assert!(
        v.get("final").is_none(),
        "query replies are not transcript contexts"
    );

    let reply = nc
        .request(
            "voice.query.default",
            br#"{"text":"bike work"}"#.to_vec().into(),
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(
        v["id"].as_str().is_some_and(|s| !s.is_empty()),
        "a generated id: {v}"
    );
    assert_eq!(v["hits"][0]["id"], "m-bike");

    let reply = nc
        .request(
            "voice.query.default",
            br#"{"text":"x","mode":"fuzzy"}"#.to_vec().into(),
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(v["error"].as_str().unwrap().contains("mode"), "{v}");

    let reply = nc.request("voice.health", "".into()).await.unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["replica"], "r1");
    assert_eq!(v["status"], "up");
    assert_eq!(v["store"]["memories"], 2);
    assert_eq!(v["engine"]["stages"]["embedder"], "up");
    assert_eq!(v["stream"]["lag"], 0);
    assert_eq!(v["bus"]["queries_answered"], 2);

    let mut beats = nc.subscribe("voice.health.r1").await.unwrap();
    let beat = next_json(&mut beats).await;
    assert_eq!(beat["replica"], "r1");
    replica.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_payloads_are_reported_and_service_keeps_answering() {
    let h = start_server(None);
    let url = h.server.url();
    let (replica, _) = start_replica(bus_config(&url, "r1"), Duration::ZERO, 0).await;
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    let mut errors = nc.subscribe("voice.errors.>").await.unwrap();
    let mut unknown_errors = nc.subscribe("voice.errors").await.unwrap();
    let mut contexts = nc.subscribe("voice.context.default.*").await.unwrap();
    nc.flush().await.unwrap();

    let ok = br#"{"v":2,"utterance":"u9","text":"hi"}"#.to_vec();
    let long_ns_subject = format!("voice.transcript.{}.c1", "n".repeat(121));
    // (subject, payload, reason, where the error goes: the subject's namespace, when valid)
    let bad: Vec<(&str, Vec<u8>, &str, Option<&str>)> = vec![
        (
            "voice.transcript.default.c1",
            b"\xff\xfe not json".to_vec(),
            "not valid JSON",
            Some("default"),
        ),
        (
            "voice.transcript.default.c1",
            vec![b'{'; 5000],
            "exceeds the limit",
            Some("default"),
        ),
        (
            "voice.transcript.default.c1",
            br#"{"v":3,"utterance":"u9","text":"hi"}"#.to_vec(),
            "version 3",
            Some("default"),
        ),
        (
            "voice.transcript.default.c1",
            br#"{"conversation":"c2","utterance":"u9","text":"hi"}"#.to_vec(),
            "does not match",
            Some("default"),
        ),
        (
            "voice.transcript.default.c1",
            br#"{"v":2,"namespace":"bob","utterance":"u9","text":"hi"}"#.to_vec(),
            "does not match the subject's namespace",
            Some("default"),
        ),
        (
            "voice.transcript.default.c1",
            br#"{"utterance":"u9","text":"   "}"#.to_vec(),
            "text",
            Some("default"),
        ),
        (
            "voice.transcript.default.c1",
            b"[1,2,3]".to_vec(),
            "not valid JSON",
            Some("default"),
        ),
        (
            "voice.transcript.default.c1",
            serde_json::to_vec(&json!({"utterance": "u".repeat(121), "text": "hi"})).unwrap(),
            "longer than 120",
            Some("default"),
        ),
        // A namespace over the limit is not a name: the error cannot go to its namespace. (A token
        // holding `*` never gets here: the server does not deliver it; the decoder refuses it too.)
        (&long_ns_subject, ok.clone(), "namespace", None),
        (
            "voice.transcript.default.c>1",
            ok.clone(),
            "conversation",
            Some("default"),
        ),
        // Wire v1 subjects are refused with a pointer to v2.
        ("voice.transcript.c1", ok.clone(), "wire v1 subject", None),
    ];
    for (subject, payload, _, _) in &bad {
        nc.publish(subject.to_string(), payload.clone().into())
            .await
            .unwrap();
    }
    // Errors without a namespace come from two subscriptions (v2 and v1 subjects): any order.
    let mut unknown: HashMap<String, Value> = HashMap::new();
    for _ in bad.iter().filter(|b| b.3.is_none()) {
        let e = next_json(&mut unknown_errors).await;
        unknown.insert(e["subject"].as_str().unwrap().to_string(), e);
    }
    for (subject, _, reason, namespace) in &bad {
        let e = match namespace {
            Some(_) => next_json(&mut errors).await,
            None => unknown[*subject].clone(),
        };
        assert_eq!(e["v"], 2);
        assert_eq!(e["subject"], *subject);
        assert_eq!(e["namespace"].as_str(), *namespace, "{e}");
        assert!(
            e["reason"].as_str().unwrap().contains(reason),
            "{reason}: {e}"
        );
    }
    // A garbage memory in the stream is reported and terminated; the next one is still stored.
    js.publish("voice.memory.default.c1", "garbage".into())
        .await
        .unwrap()
        .await
        .unwrap();
    publish_memory(&js, "c1", "m-after", "after the garbage").await;
    let e = next_json(&mut errors).await;
    assert_eq!(e["subject"], "voice.memory.default.c1");
    assert_eq!(e["namespace"], "default");
    eventually("memory after garbage", || replica.memories.has("m-after")).await;
    // Garbage queries get an error reply; good ones still work.
    let reply = nc
        .request("voice.query.default", "{{{".into())
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(v["error"].is_string());
    let reply = nc
        .request(
            "voice.query.alice",
            br#"{"namespace":"bob","text":"x"}"#.to_vec().into(),
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("does not match"),
        "{v}"
    );
    let reply = nc
        .request("voice.query", br#"{"text":"after"}"#.to_vec().into())
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("voice.query.<namespace>"),
        "{v}"
    );

    publish_transcript(&nc, "c1", "u1", "after the storm", false).await;
    let v = next_json(&mut contexts).await;
    assert_eq!(
        v["utterance"], "u1",
        "no context for the rejected payloads: {v}"
    );
    assert_eq!(v["hits"][0]["id"], "m-after");
    let stats = replica.bus.stats().snapshot();
    assert_eq!(stats["transcripts_rejected"], bad.len());
    assert_eq!(stats["memories_rejected"], 1);
    assert_eq!(stats["queries_rejected"], 3);
    replica.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_mid_stream() {
    let mut h = start_server(None);
    let url = h.server.url();
    let (replica, writer_connection) =
        start_replica(bus_config(&url, "r1"), Duration::ZERO, 0).await;
    let writer = writer_connection.writer();
    let nc = client(&url).await;
    let mut contexts = nc.subscribe("voice.context.default.c1").await.unwrap();
    nc.flush().await.unwrap();

    // Acknowledged memories before the crash, through the pipeline's writer.
    let batch: Vec<Memory> = (0..20)
        .map(|i| Memory {
            id: format!("before-{i}"),
            namespace: "default".into(),
            conversation: "c1".into(),
            speaker: "agent".into(),
            text: format!("fact number {i}"),
            ts_ms: i,
            supersedes: Vec::new(),
            expires_at_ms: None,
        })
        .collect();
    let w = writer.clone();
    let b = batch.clone();
    tokio::task::spawn_blocking(move || w.write(&b))
        .await
        .unwrap()
        .unwrap();
    publish_transcript(&nc, "c1", "u1", "fact", false).await;
    assert_eq!(next_json(&mut contexts).await["utterance"], "u1");

    h.server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.server.restart().unwrap();

    // The bus reconnects by itself; once the subscription is back, transcripts flow again.
    let until = Instant::now() + WAIT;
    let mut n = 0;
    loop {
        n += 1;
        let _ = publish_transcript(&nc, "c1", &format!("after-{n}"), "fact", false).await;
        match tokio::time::timeout(Duration::from_millis(300), contexts.next()).await {
            Ok(Some(m)) => {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                assert!(v["utterance"].as_str().unwrap().starts_with("after-"));
                break;
            }
            _ => assert!(
                Instant::now() < until,
                "no context after the server restart"
            ),
        }
    }
    let more: Vec<Memory> = (0..5)
        .map(|i| Memory {
            id: format!("after-{i}"),
            text: format!("late fact {i}"),
            ..batch[0].clone()
        })
        .collect();
    let w = writer.clone();
    tokio::task::spawn_blocking(move || w.write(&more))
        .await
        .unwrap()
        .unwrap();
    eventually("all memories stored once", || replica.memories.len() == 25).await;
    for m in &batch {
        assert!(replica.memories.has(&m.id), "{} lost", m.id);
    }
    replica.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commit_is_redelivered_and_duplicates_collapse() {
    let h = start_server(None);
    let url = h.server.url();
    let (replica, writer_connection) =
        start_replica(bus_config(&url, "r1"), Duration::ZERO, 2).await;
    let writer = writer_connection.writer();
    let memory = Memory {
        id: "dup-1".into(),
        namespace: "default".into(),
        conversation: "c1".into(),
        speaker: "agent".into(),
        text: "said twice".into(),
        ts_ms: 1,
        supersedes: Vec::new(),
        expires_at_ms: None,
    };
    // The same id written three times: the server drops the repeats within the duplicate window.
    for _ in 0..3 {
        let w = writer.clone();
        let m = memory.clone();
        tokio::task::spawn_blocking(move || w.write(&[m]))
            .await
            .unwrap()
            .unwrap();
    }
    eventually("stored after two failed commits", || {
        replica.memories.has("dup-1")
    })
    .await;
    let offered = replica.memories.offered.lock().unwrap()["dup-1"];
    assert_eq!(
        offered, 3,
        "two failed commits then one good one, and no duplicate message"
    );
    assert_eq!(replica.bus.stats().snapshot()["sink_failures"], 2);
    let js = jetstream::new(client(&url).await);
    let info = js
        .get_stream("VOICE_MEMORY")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.messages, 1);
    replica.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_longer_than_ack_wait_are_kept_in_progress_not_redelivered() {
    let h = start_server(None);
    let url = h.server.url();
    let config = NatsConfig {
        ack_wait_ms: 1000,
        memory_batch: 2,
        ..bus_config(&url, "r1")
    };
    // Each commit takes 2.5 ack_waits: without in-progress acks, the batch in the commit and
    // the messages pulled behind it would all be redelivered.
    let (replica, _) =
        start_replica_committing_in(config, Duration::ZERO, 0, Duration::from_millis(2500)).await;
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    let ids: Vec<String> = (0..5).map(|i| format!("slow-{i}")).collect();
    for id in &ids {
        publish_memory(&js, "c1", id, "a memory on a slow disk").await;
    }
    eventually("all stored", || {
        ids.iter().all(|id| replica.memories.has(id))
    })
    .await;
    let mut consumer: jetstream::consumer::PullConsumer = js
        .get_stream("VOICE_MEMORY")
        .await
        .unwrap()
        .get_consumer("voicerag-r1")
        .await
        .unwrap();
    // Settled: nothing delivered and unacked is left to be committed again.
    let until = Instant::now() + WAIT;
    let info = loop {
        let info = consumer.info().await.unwrap().clone();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break info;
        }
        assert!(Instant::now() < until, "consumer never settled: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Five messages, five deliveries: none was redelivered, none offered twice.
    assert_eq!(info.delivered.consumer_sequence, 5, "{info:?}");
    let offered = replica.memories.offered.lock().unwrap().clone();
    for id in &ids {
        assert_eq!(offered.get(id), Some(&1), "{id} offered again: {offered:?}");
    }
    replica.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_stream_is_kept_and_consumer_resumes_after_restart() {
    let h = start_server(None);
    let url = h.server.url();
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    // Someone created the stream earlier with other limits and put memories in it.
    js.create_stream(jetstream::stream::Config {
        name: "VOICE_MEMORY".into(),
        subjects: vec!["voice.memory.*.*".into()],
        max_messages: 1000,
        ..Default::default()
    })
    .await
    .unwrap();
    publish_memory(&js, "c1", "old-1", "an old memory").await;

    let (replica, _) = start_replica(bus_config(&url, "r1"), Duration::ZERO, 0).await;
    eventually("old memory consumed", || replica.memories.has("old-1")).await;
    let info = js
        .get_stream("VOICE_MEMORY")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(
        info.config.max_messages, 1000,
        "the existing stream was reconfigured"
    );
    assert_eq!(info.state.messages, 1);
    replica.bus.stop().await.unwrap();

    // Same replica id again, configured with another ack_wait: its durable consumer resumes
    // (only the new memory is delivered) and takes the new ack_wait.
    publish_memory(&js, "c1", "new-1", "a new memory").await;
    let config = NatsConfig {
        ack_wait_ms: 1500,
        ..bus_config(&url, "r1")
    };
    let (replica, _) = start_replica(config, Duration::ZERO, 0).await;
    eventually("new memory consumed", || replica.memories.has("new-1")).await;
    let mut consumer: jetstream::consumer::PullConsumer = js
        .get_stream("VOICE_MEMORY")
        .await
        .unwrap()
        .get_consumer("voicerag-r1")
        .await
        .unwrap();
    let ack_wait = consumer.info().await.unwrap().config.ack_wait;
    assert_eq!(ack_wait, Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !replica.memories.has("old-1"),
        "an acked memory was delivered again"
    );
    replica.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_answers_everything_in_flight() {
    let h = start_server(None);
    let url = h.server.url();
    // Every result takes 300 ms: the stop must wait for them.
    let (replica, _) = start_replica(bus_config(&url, "r1"), Duration::from_millis(300), 0).await;
    let nc = client(&url).await;
    let mut contexts = nc.subscribe("voice.context.default.c1").await.unwrap();
    nc.flush().await.unwrap();
    for i in 0..10 {
        publish_transcript(&nc, "c1", &format!("u{i}"), "hello there", true).await;
    }
    nc.flush().await.unwrap();
    let engine = replica.engine.clone();
    eventually("all submitted", || {
        engine.submitted.load(Ordering::SeqCst) == 10
    })
    .await;
    let memories = replica.memories.clone();
    replica.bus.stop().await.unwrap();
    assert!(
        engine.shut_down.load(Ordering::SeqCst),
        "the engine was not shut down"
    );
    let mut seen = HashSet::new();
    while seen.len() < 10 {
        let v = next_json(&mut contexts).await;
        seen.insert(v["utterance"].as_str().unwrap().to_string());
    }
    // Finals republished before the stop were acked by the stream (committed or redelivered later).
    let js = jetstream::new(nc.clone());
    let info = js
        .get_stream("VOICE_MEMORY")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.messages, 10);
    assert!(memories.len() <= 10);
    // After the stop nothing answers any more.
    publish_transcript(&nc, "c1", "late", "hello", false).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), contexts.next())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_leaves_memories_unwritten_is_an_error() {
    let h = start_server(None);
    let url = h.server.url();
    let (replica, _) = start_replica(bus_config(&url, "r1"), Duration::ZERO, 0).await;
    replica.engine.unflushed.store(true, Ordering::SeqCst);
    let e = replica
        .bus
        .stop()
        .await
        .expect_err("a stop that could not write its memories must not look clean");
    assert!(e.to_string().contains("not written"), "{e}");
    assert!(replica.engine.shut_down.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_transcript_still_gets_a_shed_answer() {
    let h = start_server(None);
    let url = h.server.url();
    let (replica, _) = start_replica(bus_config(&url, "r1"), Duration::ZERO, 0).await;
    replica.engine.refuse.store(true, Ordering::SeqCst);
    let nc = client(&url).await;
    let mut contexts = nc.subscribe("voice.context.default.c1").await.unwrap();
    nc.flush().await.unwrap();
    publish_transcript(&nc, "c1", "u1", "anything", false).await;
    let v = next_json(&mut contexts).await;
    assert_eq!(v["utterance"], "u1");
    assert_eq!(v["hits"].as_array().unwrap().len(), 0);
    assert!(v["degraded"].as_str().unwrap().starts_with("shed"), "{v}");
    assert_eq!(v["rerank"], "skipped");
    replica.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_partitioned_no_duplicate_no_loss() {
    let mapping = r#"mappings = { "voice.transcript.*.*": "voice.transcript.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(2,1,2)}}" }"#;
    let h = start_server(Some(mapping));
    let url = h.server.url();
    let mut a_config = bus_config(&url, "a");
    a_config.partitions = vec![0];
    let mut b_config = bus_config(&url, "b");
    b_config.partitions = vec![1];
    let (a, _) = start_replica(a_config, Duration::ZERO, 0).await;
    let (b, _) = start_replica(b_config, Duration::ZERO, 0).await;
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    let mut contexts = nc.subscribe("voice.context.default.*").await.unwrap();
    nc.flush().await.unwrap();

    // Each replica keeps a full memory copy.
    publish_memory(&js, "c0", "shared", "the wifi password is banana").await;
    eventually("both replicas have the memory", || {
        a.memories.has("shared") && b.memories.has("shared")
    })
    .await;

    let conversations = 20;
    for c in 0..conversations {
        for u in 0..3 {
            publish_transcript(
                &nc,
                &format!("conv{c}"),
                &format!("u{u}"),
                "wifi password",
                u == 2,
            )
            .await;
        }
    }
    let mut got: HashMap<(String, String), usize> = HashMap::new();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    while got.len() < conversations * 3 {
        let v = next_json(&mut contexts).await;
        let key = (
            v["conversation"].as_str().unwrap().to_string(),
            v["utterance"].as_str().unwrap().to_string(),
        );
        order.entry(key.0.clone()).or_default().push(key.1.clone());
        *got.entry(key).or_default() += 1;
        let hits = v["hits"].as_array().unwrap();
        assert!(hits.iter().any(|h| h["id"] == "shared"), "{v}");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), contexts.next())
            .await
            .is_err(),
        "duplicate context"
    );
    assert!(got.values().all(|n| *n == 1));
    for (conv, utterances) in &order {
        assert_eq!(utterances, &["u0", "u1", "u2"], "{conv} out of order");
    }
    let served_a = a.bus.stats().snapshot()["contexts_published"]
        .as_u64()
        .unwrap();
    let served_b = b.bus.stats().snapshot()["contexts_published"]
        .as_u64()
        .unwrap();
    assert_eq!(served_a + served_b, 60);
    assert!(
        served_a > 0 && served_b > 0,
        "partitioning sent everything to one replica"
    );

    // Queries spread over the queue group, each answered exactly once.
    for i in 0..20 {
        let reply = nc
            .request(
                "voice.query.default",
                serde_json::to_vec(&json!({"id": format!("q{i}"), "text": "wifi"}))
                    .unwrap()
                    .into(),
            )
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(v["id"], format!("q{i}"));
    }
    let qa = a.bus.stats().snapshot()["queries_answered"]
        .as_u64()
        .unwrap();
    let qb = b.bus.stats().snapshot()["queries_answered"]
        .as_u64()
        .unwrap();
    assert_eq!(qa + qb, 20);
    // Finals reach both replicas' stores through the stream.
    eventually("finals replicated", || {
        a.memories.len() == 21 && b.memories.len() == 21
    })
    .await;
    a.bus.stop().await.unwrap();
    b.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_load_generator_accounts_for_every_answer() {
    let h = start_server(None);
    let url = h.server.url();
    let (replica, _) = start_replica(bus_config(&url, "r1"), Duration::from_millis(5), 0).await;
    let nc = client(&url).await;
    let spec = LoadSpec {
        conversations: 4,
        interval: Duration::from_millis(50),
        duration: Duration::from_secs(1),
        grace: Duration::from_millis(500),
        namespaces: vec!["default".into()],
    };
    let subjects = Subjects::new("voice");
    let report = run_load(&nc, &subjects, &spec).await.unwrap();
    assert!(report.sent > 0);
    assert_eq!(
        report.sent as usize,
        replica.engine.submitted.load(Ordering::SeqCst)
    );
    assert_eq!(report.answered, report.sent, "{report}");
    assert_eq!(
        (report.lost, report.duplicates, report.shed, report.foreign),
        (0, 0, 0, 0),
        "{report}"
    );
    // Every answer waited for the engine's 5 ms at least.
    assert!(report.latency_p50_ms >= 5.0, "{report}");
    assert!(report.latency_p99_ms >= report.latency_p50_ms);

    // Refused transcripts come back shed; swallowed ones are counted lost.
    replica.engine.refuse.store(true, Ordering::SeqCst);
    let report = run_load(&nc, &subjects, &spec).await.unwrap();
    assert_eq!(report.shed, report.sent, "{report}");
    assert_eq!(report.degraded, report.sent);
    assert_eq!(report.lost, 0);
    replica.engine.refuse.store(false, Ordering::SeqCst);
    replica.engine.swallow.store(true, Ordering::SeqCst);
    let report = run_load(&nc, &subjects, &spec).await.unwrap();
    assert_eq!(report.answered, 0, "{report}");
    assert_eq!(report.lost, report.sent);
    replica.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_v1_stream_is_a_clear_error_and_left_alone() {
    let h = start_server(None);
    let url = h.server.url();
    let js = jetstream::new(client(&url).await);
    js.create_stream(jetstream::stream::Config {
        name: "VOICE_MEMORY".into(),
        // A wire v1 deployment's stream.
        subjects: vec!["voice.memory.*".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let e = BusConnection::connect(bus_config(&url, "r1"), WAIT)
        .await
        .err()
        .expect("must not serve on a stream that does not capture voice.memory.*.*")
        .to_string();
    assert!(
        e.contains("VOICE_MEMORY") && e.contains("voice.memory.*.*") && e.contains("v2"),
        "{e}"
    );
    assert!(
        started.elapsed() < WAIT / 2,
        "a permanent error must not be retried"
    );
    let info = js
        .get_stream("VOICE_MEMORY")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(
        info.config.subjects,
        vec!["voice.memory.*".to_string()],
        "the stream was changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_authentication_and_no_secret_in_errors() {
    let h = start_server(Some(r#"authorization { token: "s3cret-tok" }"#));
    let url = h.server.url();
    let config = NatsConfig {
        token: Some("s3cret-tok".into()),
        ..bus_config(&url, "r1")
    };
    let (replica, _) = start_replica(config, Duration::ZERO, 0).await;
    let nc = async_nats::ConnectOptions::with_token("s3cret-tok".into())
        .connect(&url)
        .await
        .unwrap();
    let reply = nc.request("voice.health", "".into()).await.unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["replica"], "r1");
    assert!(!String::from_utf8_lossy(&reply.payload).contains("s3cret"));
    replica.bus.stop().await.unwrap();

    let wrong = NatsConfig {
        token: Some("wrong-tok".into()),
        ..bus_config(&url, "r2")
    };
    let e = BusConnection::connect(wrong, Duration::from_secs(2))
        .await
        .err()
        .expect("wrong token refused");
    assert!(!e.to_string().contains("wrong-tok"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_with_the_same_ids_both_keep_their_memories() {
    let h = start_server(None);
    let url = h.server.url();
    let (replica, _) = start_replica(bus_config(&url, "r1"), Duration::ZERO, 0).await;
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    let mut alice_ctx = nc.subscribe("voice.context.alice.c1").await.unwrap();
    let mut bob_ctx = nc.subscribe("voice.context.bob.c1").await.unwrap();
    nc.flush().await.unwrap();

    // Same conversation and utterance ids, inside the duplicate window: finals republished by
    // the bus, and memories an agent publishes itself.
    publish_transcript_in(&nc, "alice", "c1", "u1", "my sister lives in Lyon", true).await;
    publish_transcript_in(&nc, "bob", "c1", "u1", "my brother lives in Oslo", true).await;
    publish_memory_in(&js, "alice", "c2", "m1", "alice likes tea").await;
    publish_memory_in(&js, "bob", "c2", "m1", "bob likes coffee").await;
    let stored = |ns: &str, id: &str| {
        replica
            .memories
            .stored
            .lock()
            .unwrap()
            .contains(&(ns.to_string(), id.to_string()))
    };
    eventually("all four memories stored", || {
        stored("alice", "c1/u1")
            && stored("bob", "c1/u1")
            && stored("alice", "m1")
            && stored("bob", "m1")
    })
    .await;
    // Each user's context arrives on their own subject only.
    let a = next_json(&mut alice_ctx).await;
    assert_eq!(a["namespace"], "alice");
    let b = next_json(&mut bob_ctx).await;
    assert_eq!(b["namespace"], "bob");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), alice_ctx.next())
            .await
            .is_err(),
        "alice received a second context"
    );

    // A real duplicate (alice's final again) is dropped by the stream, and counted.
    publish_transcript_in(&nc, "alice", "c1", "u1", "my sister lives in Lyon", true).await;
    eventually("duplicate counted", || {
        replica.bus.stats().snapshot()["memories_duplicate"] == 1
    })
    .await;
    let reply = nc.request("voice.health", "".into()).await.unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["bus"]["memories_duplicate"], 1);
    assert_eq!(v["v"], 2);
    replica.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memories_that_cannot_be_stored_are_reported_and_terminated_never_acked() {
    let h = start_server(None);
    let url = h.server.url();
    let (replica, _) = start_replica(bus_config(&url, "r1"), Duration::ZERO, 0).await;
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    let mut errors = nc.subscribe("voice.errors.alice").await.unwrap();
    nc.flush().await.unwrap();

    let long_id = "i".repeat(121);
    let cases: Vec<(String, String, &str)> = vec![
        // Over the name limit: refused by the decoder, with the store's limit.
        (long_id.clone(), "a fine text".into(), "longer than 120"),
        // Empty text.
        ("m-empty".into(), "   ".into(), "empty"),
        // Refused by the store (text over its limit): reported with the store's reason.
        ("m-long".into(), "x".repeat(300), "over the limit"),
    ];
    for (id, text, _) in &cases {
        publish_memory_in(&js, "alice", "c1", id, text).await;
    }
    publish_memory_in(&js, "alice", "c1", "m-ok", "a memory that fits").await;
    for (id, _, reason) in &cases {
        let e = next_json(&mut errors).await;
        assert_eq!(e["namespace"], "alice");
        assert_eq!(e["subject"], "voice.memory.alice.c1");
        let why = e["reason"].as_str().unwrap();
        assert!(why.contains(reason), "{id}: {e}");
    }
    eventually("the good memory stored", || replica.memories.has("m-ok")).await;
    // Terminated, not acked and not left pending: past ack_wait (2 s) nothing is redelivered.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        replica.memories.offered.lock().unwrap().get("m-long"),
        Some(&1)
    );
    assert!(!replica.memories.has("m-long"));
    let reply = nc.request("voice.health", "".into()).await.unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["bus"]["memories_rejected"], 2, "{v}");
    assert_eq!(v["bus"]["memories_refused"], 1, "{v}");
    assert_eq!(v["bus"]["memories_committed"], 1, "{v}");
    assert_eq!(v["stream"]["ack_pending"], 0, "{v}");
    assert_eq!(v["stream"]["lag"], 0, "{v}");
    replica.bus.stop().await.unwrap();
}

async fn request_json(nc: &async_nats::Client, subject: &str, payload: Value) -> Value {
    let reply = tokio::time::timeout(
        WAIT,
        nc.request(
            subject.to_string(),
            serde_json::to_vec(&payload).unwrap().into(),
        ),
    )
    .await
    .expect("timed out")
    .expect("request failed");
    serde_json::from_slice(&reply.payload).unwrap()
}

/// Messages the memory stream holds under `filter`.
async fn stream_count(js: &jetstream::Context, filter: &str) -> u64 {
    let stream = js.get_stream("VOICE_MEMORY").await.unwrap();
    let mut subjects = stream.info_with_subjects(filter).await.unwrap();
    let mut total = 0;
    while let Some(entry) = subjects.next().await {
        total += entry.unwrap().1 as u64;
    }
    total
}

/// Alice's and bob's memories, with the same conversation and memory ids; one of each is named
/// by its `Nats-Msg-Id` header only.
async fn seed_two_users(js: &jetstream::Context) -> Vec<(&'static str, &'static str)> {
    let ids = [
        ("c1", "c1/u1"),
        ("c1", "c1/u2"),
        ("c2", "c2/u1"),
        ("c2", "c2/u2"),
    ];
    for ns in ["alice", "bob"] {
        for (conversation, id) in ids {
            publish_memory_in(js, ns, conversation, id, &format!("{ns} said {id}")).await;
        }
        let payload = serde_json::to_vec(&json!({"v": 2, "text": format!("{ns} header")})).unwrap();
        js.send_publish(
            format!("voice.memory.{ns}.c3"),
            PublishMessage::build()
                .payload(payload.into())
                .message_id(format!("{ns}.hdr-1")),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut all = ids.to_vec();
    all.push(("c3", "hdr-1"));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_by_id_and_conversation_reaches_every_replica_and_the_stream() {
    let h = start_server(None);
    let url = h.server.url();
    let (r1, _) = start_replica(bus_config(&url, "r1"), Duration::ZERO, 0).await;
    let (r2, _) = start_replica(bus_config(&url, "r2"), Duration::ZERO, 0).await;
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    let all = seed_two_users(&js).await;
    for r in [&r1, &r2] {
        eventually("both users' memories stored", || r.memories.len() == 10).await;
    }

    let by_id = request_json(&nc, "voice.forget.alice", json!({"v": 2, "id": "c1/u1"})).await;
    assert_eq!(by_id["scope"], "id", "{by_id}");
    assert_eq!(by_id["id"], "c1/u1");
    assert_eq!(by_id["stream_purged"], 1, "{by_id}");
    assert_eq!(by_id["applied_locally"], true, "{by_id}");
    assert_eq!(by_id["forgotten"], 1, "{by_id}");
    // An id known only from its Nats-Msg-Id header is found in the stream too.
    let by_header = request_json(&nc, "voice.forget.alice", json!({"v": 2, "id": "hdr-1"})).await;
    assert_eq!(by_header["stream_purged"], 1, "{by_header}");
    let by_conversation = request_json(
        &nc,
        "voice.forget.alice",
        json!({"v": 2, "conversation": "c2", "namespace": "alice"}),
    )
    .await;
    assert_eq!(by_conversation["scope"], "conversation");
    assert_eq!(by_conversation["stream_purged"], 2, "{by_conversation}");
    assert_eq!(by_conversation["forgotten"], 2, "{by_conversation}");
    // Forgetting what is gone already is no error: it forgets nothing.
    let again = request_json(&nc, "voice.forget.alice", json!({"v": 2, "id": "c1/u1"})).await;
    assert_eq!(
        (again["stream_purged"].as_u64(), again["forgotten"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );

    let gone = [
        ("c1", "c1/u1"),
        ("c3", "hdr-1"),
        ("c2", "c2/u1"),
        ("c2", "c2/u2"),
    ];
    // Both running replicas applied every marker, whichever took the request.
    for r in [&r1, &r2] {
        eventually("markers applied", || {
            r.bus.stats().forget_markers_applied.load(Ordering::SeqCst) == 4
        })
        .await;
        for (_, id) in gone {
            assert!(!r.memories.has_in("alice", id), "alice {id} still held");
        }
        assert!(r.memories.has_in("alice", "c1/u2"));
        for (_, id) in &all {
            assert!(r.memories.has_in("bob", id), "bob {id} lost");
        }
    }
    assert_eq!(stream_count(&js, "voice.memory.alice.c2").await, 0);
    assert_eq!(stream_count(&js, "voice.memory.bob.>").await, 5);

    // A replica built later from the stream never sees the forgotten memories.
    let (fresh, _) = start_replica(bus_config(&url, "fresh"), Duration::ZERO, 0).await;
    eventually("fresh replica caught up", || {
        fresh
            .bus
            .stats()
            .forget_markers_applied
            .load(Ordering::SeqCst)
            == 4
    })
    .await;
    let stored = fresh.memories.stored.lock().unwrap().clone();
    for (_, id) in gone {
        assert!(
            !stored.contains(&("alice".to_string(), id.to_string())),
            "the fresh replica saw alice's forgotten {id}"
        );
    }
    assert!(fresh.memories.has_in("alice", "c1/u2"));
    for (_, id) in &all {
        assert!(fresh.memories.has_in("bob", id), "bob {id} lost");
    }
    for r in [r1, r2, fresh] {
        r.bus.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_a_namespace_leaves_other_users_alone() {
    let h = start_server(None);
    let url = h.server.url();
    let (r1, _) = start_replica(bus_config(&url, "r1"), Duration::ZERO, 0).await;
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    let all = seed_two_users(&js).await;
    eventually("both users' memories stored", || r1.memories.len() == 10).await;

    let reply = request_json(&nc, "voice.forget.alice", json!({"v": 2})).await;
    assert_eq!(reply["scope"], "namespace", "{reply}");
    assert_eq!(reply["stream_purged"], 5, "{reply}");
    assert_eq!(reply["forgotten"], 5, "{reply}");
    for (_, id) in &all {
        assert!(!r1.memories.has_in("alice", id));
        assert!(r1.memories.has_in("bob", id));
    }
    // Only the marker is left of alice in the stream.
    assert_eq!(stream_count(&js, "voice.memory.alice.*").await, 1);
    // Alice's later memories are kept: the forget was in stream order.
    publish_memory_in(&js, "alice", "c9", "after", "alice again").await;
    eventually("later memory stored", || {
        r1.memories.has_in("alice", "after")
    })
    .await;

    let (fresh, _) = start_replica(bus_config(&url, "fresh"), Duration::ZERO, 0).await;
    eventually("fresh replica caught up", || {
        fresh.memories.has_in("alice", "after")
    })
    .await;
    let stored = fresh.memories.stored.lock().unwrap().clone();
    assert_eq!(
        stored.iter().filter(|(ns, _)| ns == "alice").count(),
        1,
        "{stored:?}"
    );
    for (_, id) in &all {
        assert!(fresh.memories.has_in("bob", id), "bob {id} lost");
    }
    r1.bus.stop().await.unwrap();
    fresh.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_forgets_are_clear_errors_and_change_nothing() {
    let h = start_server(None);
    let url = h.server.url();
    let (r1, _) = start_replica(bus_config(&url, "r1"), Duration::ZERO, 0).await;
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    seed_two_users(&js).await;
    eventually("both users' memories stored", || r1.memories.len() == 10).await;
    let mut errors = nc.subscribe("voice.errors.alice").await.unwrap();
    let mut unknown_errors = nc.subscribe("voice.errors").await.unwrap();
    nc.flush().await.unwrap();

    let bad = [
        (
            json!({"v": 2, "id": "c1/u1", "conversation": "c1"}),
            "not both",
        ),
        (json!({"v": 2, "namespace": "bob"}), "does not match"),
        (json!({"v": 2, "conversaton": "c1"}), "conversaton"),
        (json!({"v": 2, "conversation": "c.*"}), "subject token"),
        (json!({"v": 3}), "version"),
    ];
    for (payload, why) in bad {
        let reply = request_json(&nc, "voice.forget.alice", payload.clone()).await;
        let error = reply["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(why), "{payload}: {reply}");
        let e = next_json(&mut errors).await;
        assert_eq!(e["namespace"], "alice");
        assert!(e["reason"].as_str().unwrap().contains(why), "{e}");
    }
    // A wildcard where the namespace goes names no namespace of anyone.
    let reply = request_json(&nc, "voice.forget.*", json!({"v": 2})).await;
    assert!(
        reply["error"].as_str().unwrap().contains("namespace"),
        "{reply}"
    );
    let e = next_json(&mut unknown_errors).await;
    assert_eq!(e["subject"], "voice.forget.*");
    let reply = request_json(&nc, "voice.forget", json!({"v": 2})).await;
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("voice.forget.<namespace>"),
        "{reply}"
    );
    let e = next_json(&mut unknown_errors).await;
    assert_eq!(e["subject"], "voice.forget");

    // Nothing changed: no marker, nothing purged, nothing forgotten; the service still answers.
    assert_eq!(stream_count(&js, "voice.memory.*.*").await, 10);
    assert_eq!(r1.memories.len(), 10);
    assert_eq!(r1.bus.stats().forgets_rejected.load(Ordering::SeqCst), 7);
    let ok = request_json(&nc, "voice.forget.alice", json!({"v": 2, "id": "c1/u1"})).await;
    assert_eq!(ok["forgotten"], 1, "{ok}");
    r1.bus.stop().await.unwrap();
}

/// The server configuration the README shows for tenant isolation.
const TENANTS_CONF: &str = include_str!("../examples/nats/tenants.conf");

/// An agent connected with its `tenants.conf` credentials and inbox prefix; every error the server
/// sends it (permission violations) arrives on the returned channel.
async fn tenant_agent(
    url: &str,
    user: &str,
    password: &str,
    inbox_prefix: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let nc = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(inbox_prefix)
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap();
    (nc, rx)
}

/// The next server error must be the permission violation for `what` (`Publish to "subject"` or
/// `Subscription to "subject"`): checked one operation at a time, so no violation is mistaken
/// for another and none goes unexplained.
async fn expect_violation(errors: &mut mpsc::UnboundedReceiver<String>, what: &str) {
    let wanted = format!("Permissions Violation for {what}");
    let e = tokio::time::timeout(WAIT, errors.recv())
        .await
        .unwrap_or_else(|_| panic!("no server error, waiting for: {wanted}"))
        .expect("event channel closed");
    assert!(
        e.contains(&wanted),
        "server said {e:?}, expected {wanted:?}"
    );
}

/// No server error is pending.
fn no_violation(errors: &mut mpsc::UnboundedReceiver<String>) {
    if let Ok(e) = errors.try_recv() {
        panic!("unexpected server error: {e}");
    }
}

/// A request the server refuses gets no answer (its publish was dropped): the request fails.
async fn request_refused(nc: &async_nats::Client, subject: &str, payload: Value) {
    let request = nc.request(
        subject.to_string(),
        serde_json::to_vec(&payload).unwrap().into(),
    );
    if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(3), request).await {
        panic!(
            "{subject} was answered: {}",
            String::from_utf8_lossy(&reply.payload)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_credentials_are_confined_to_their_namespaces() {
    let h = start_server(Some(TENANTS_CONF));
    let url = h.server.url();
    let config = NatsConfig {
        user: Some("voicerag".into()),
        password: Some("voicerag-secret".into()),
        ..bus_config(&url, "r1")
    };
    let (replica, _) = start_replica(config, Duration::ZERO, 0).await;
    let admin = async_nats::ConnectOptions::with_user_and_password(
        "voicerag".into(),
        "voicerag-secret".into(),
    )
    .connect(&url)
    .await
    .unwrap();
    let admin_js = jetstream::new(admin.clone());
    let (alice, mut alice_errors) =
        tenant_agent(&url, "alice-agent", "alice-secret", "_INBOX_alice").await;
    let (bob, mut bob_errors) = tenant_agent(&url, "bob-agent", "bob-secret", "_INBOX_bob").await;
    // Both agents publish memories with a plain JetStream publish: no JetStream API rights.
    let alice_js = jetstream::new(alice.clone());
    let bob_js = jetstream::new(bob.clone());

    // Bob's data: a memory he publishes himself and a final transcript republished by voicerag.
    let mut bob_ctx = bob.subscribe("voice.context.bob.c1").await.unwrap();
    bob.flush().await.unwrap();
    publish_memory_in(
        &bob_js,
        "bob",
        "c2",
        "m-bob",
        "bob keeps his bank pin in the drawer",
    )
    .await;
    let mut alice_ctx = alice.subscribe("voice.context.alice.c1").await.unwrap();
    alice.flush().await.unwrap();
    publish_memory_in(
        &alice_js,
        "alice",
        "c2",
        "m-alice",
        "alice keeps her tea in the drawer",
    )
    .await;
    eventually("both memories stored", || {
        replica.memories.has_in("bob", "m-bob") && replica.memories.has_in("alice", "m-alice")
    })
    .await;

    // Reading bob's context: refused, however alice spells the subscription.
    let mut spies = Vec::new();
    for subject in [
        "voice.context.bob.c1",
        "voice.context.*.c1",
        "voice.context.>",
        "voice.memory.bob.>",
        "voice.errors.bob",
        "_INBOX_bob.>",
    ] {
        spies.push(alice.subscribe(subject).await.unwrap());
        expect_violation(&mut alice_errors, &format!("Subscription to \"{subject}\"")).await;
    }
    publish_transcript_in(&bob, "bob", "c1", "u1", "where is my bank pin", true).await;
    let b = next_json(&mut bob_ctx).await;
    assert_eq!(b["namespace"], "bob");
    assert_eq!(b["hits"][0]["id"], "m-bob", "{b}");
    // Alice's own context, in the same way, arrives.
    publish_transcript_in(&alice, "alice", "c1", "u1", "where is my tea", true).await;
    let a = next_json(&mut alice_ctx).await;
    assert_eq!(a["namespace"], "alice");
    assert_eq!(a["hits"][0]["id"], "m-alice", "{a}");
    for spy in &mut spies {
        assert!(
            tokio::time::timeout(Duration::from_millis(200), spy.next())
                .await
                .is_err(),
            "alice read something of bob's"
        );
    }

    // Querying bob's memories: refused; her own: answered.
    let own = request_json(
        &alice,
        "voice.query.alice",
        json!({"v": 2, "text": "drawer"}),
    )
    .await;
    let ids: Vec<&str> = own["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["id"].as_str())
        .collect();
    assert_eq!(ids, ["m-alice"], "{own}");
    request_refused(&alice, "voice.query.bob", json!({"v": 2, "text": "drawer"})).await;
    expect_violation(&mut alice_errors, "Publish to \"voice.query.bob\"").await;

    // Writing in bob's namespace: a memory, a forget marker, a transcript; all refused.
    for subject in ["voice.memory.bob.c2", "voice.memory.bob._forget"] {
        let payload = serde_json::to_vec(&json!({"v": 2, "id": "m-evil", "text": "evil"})).unwrap();
        let ack = alice_js
            .send_publish(
                subject,
                PublishMessage::build()
                    .payload(payload.into())
                    .message_id("bob.m-evil"),
            )
            .await;
        expect_violation(&mut alice_errors, &format!("Publish to \"{subject}\"")).await;
        let acked = match ack {
            Ok(ack) => tokio::time::timeout(Duration::from_secs(3), ack)
                .await
                .is_ok_and(|a| a.is_ok()),
            Err(_) => false,
        };
        assert!(!acked, "the stream acked alice's {subject}");
    }
    publish_transcript_in(
        &alice,
        "bob",
        "c1",
        "u2",
        "bob wants to forget his pin",
        true,
    )
    .await;
    expect_violation(&mut alice_errors, "Publish to \"voice.transcript.bob.c1\"").await;

    // Forgetting in bob's namespace: refused; in her own: done.
    request_refused(&alice, "voice.forget.bob", json!({"v": 2})).await;
    expect_violation(&mut alice_errors, "Publish to \"voice.forget.bob\"").await;
    let forgot = request_json(
        &alice,
        "voice.forget.alice",
        json!({"v": 2, "id": "m-alice"}),
    )
    .await;
    assert_eq!(forgot["forgotten"], 1, "{forgot}");
    assert!(!replica.memories.has_in("alice", "m-alice"));

    // Bob's data is untouched: in the replica, in the stream, and as bob queries it.
    eventually("bob's final stored", || {
        replica.memories.has_in("bob", "c1/u1")
    })
    .await;
    let bobs: HashSet<String> = replica
        .memories
        .by_id
        .lock()
        .unwrap()
        .keys()
        .filter(|(ns, _)| ns == "bob")
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(
        bobs,
        HashSet::from(["m-bob".to_string(), "c1/u1".to_string()])
    );
    assert_eq!(stream_count(&admin_js, "voice.memory.bob.>").await, 2);
    let mine = request_json(&bob, "voice.query.bob", json!({"v": 2, "text": "drawer"})).await;
    assert_eq!(mine["hits"][0]["id"], "m-bob", "{mine}");
    assert_eq!(
        replica.bus.stats().forgets_applied.load(Ordering::SeqCst),
        1
    );
    no_violation(&mut alice_errors);
    no_violation(&mut bob_errors);
    replica.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_credentials_work_with_partitioned_transcripts() {
    // The server maps a subject before it checks publish permissions: with the README's partition
    // mapping, alice's transcript is checked as voice.transcript.alice.<c>.<p>, so her allow entry
    // must cover that (voice.transcript.alice.>), and bob's stays out of reach.
    let mapping = r#"mappings = { "voice.transcript.*.*": "voice.transcript.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(2,1,2)}}" }"#;
    let h = start_server(Some(&format!("{TENANTS_CONF}\n{mapping}\n")));
    let url = h.server.url();
    let config = NatsConfig {
        user: Some("voicerag".into()),
        password: Some("voicerag-secret".into()),
        partitions: vec![0, 1],
        ..bus_config(&url, "r1")
    };
    let (replica, _) = start_replica(config, Duration::ZERO, 0).await;
    let (alice, mut alice_errors) =
        tenant_agent(&url, "alice-agent", "alice-secret", "_INBOX_alice").await;
    let mut ctx = alice.subscribe("voice.context.alice.c1").await.unwrap();
    alice.flush().await.unwrap();
    publish_transcript_in(&alice, "alice", "c1", "u1", "hello there", true).await;
    let v = next_json(&mut ctx).await;
    assert_eq!(
        (v["namespace"].as_str(), v["final"].as_bool()),
        (Some("alice"), Some(true))
    );
    publish_transcript_in(&alice, "bob", "c1", "u1", "hello there", true).await;
    let e = tokio::time::timeout(WAIT, alice_errors.recv())
        .await
        .expect("a permission error")
        .unwrap();
    assert!(
        e.contains("Permissions Violation for Publish to \"voice.transcript.bob.c1."),
        "{e}"
    );
    eventually("alice's final stored", || {
        replica.memories.has_in("alice", "c1/u1")
    })
    .await;
    assert!(!replica.memories.has_in("bob", "c1/u1"));
    replica.bus.stop().await.unwrap();
}

const PARTITIONS_CONF: &str = include_str!("../examples/nats/partitions.conf");

/// A replica of the 3-partition deployment of `examples/nats/partitions.conf` owning `owned`.
fn sharded_config(url: &str, replica: &str, owned: &[u32]) -> NatsConfig {
    NatsConfig {
        partition_count: 3,
        partitions: owned.to_vec(),
        ..bus_config(url, replica)
    }
}

/// The (namespace, id) pairs expected in the `owned` partitions.
fn owned_by(
    expected: &HashMap<u32, HashSet<(String, String)>>,
    owned: &[u32],
) -> HashSet<(String, String)> {
    owned
        .iter()
        .flat_map(|p| expected.get(p).cloned().unwrap_or_default())
        .collect()
}

/// Publishes a memory and returns the partition the stream stored it under, read back from the
/// stream (the server's hash, not a copy of it).
async fn publish_memory_partition(
    js: &jetstream::Context,
    namespace: &str,
    conversation: &str,
    id: &str,
    text: &str,
) -> u32 {
    let payload =
        serde_json::to_vec(&json!({"v": 2, "id": id, "text": text, "speaker": "agent"})).unwrap();
    let ack = js
        .send_publish(
            format!("voice.memory.{namespace}.{conversation}"),
            PublishMessage::build()
                .payload(payload.into())
                .message_id(format!("{namespace}.{id}")),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let stream = js.get_stream("VOICE_MEMORY").await.unwrap();
    let stored = stream.get_raw_message(ack.sequence).await.unwrap();
    let tokens: Vec<&str> = stored.subject.as_str().split('.').collect();
    assert_eq!(
        tokens[2..],
        [tokens[2], namespace, conversation],
        "stored as {}",
        stored.subject
    );
    tokens[2].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_replicas_serve_their_partitions_and_a_new_one_catches_up() {
    let h = start_server(Some(PARTITIONS_CONF));
    let url = h.server.url();
    let a = start_replica(sharded_config(&url, "a", &[0, 1]), Duration::ZERO, 0)
        .await
        .0;
    let b = start_replica(sharded_config(&url, "b", &[1, 2]), Duration::ZERO, 0)
        .await
        .0;
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    // Namespaces until every partition has at least two; two memories each. Conversation names
    // carry the namespace, so a hit from a foreign namespace shows.
    let mut partition_of: HashMap<String, u32> = HashMap::new();
    let mut expected: HashMap<u32, HashSet<(String, String)>> = HashMap::new();
    let mut n = 0;
    while (0..3).any(|p| partition_of.values().filter(|q| **q == p).count() < 2) {
        assert!(
            n < 200,
            "namespaces never filled every partition: {partition_of:?}"
        );
        let ns = format!("user{n}");
        for j in 0..2 {
            let id = format!("m{j}");
            let text = format!("{ns} keeps the blue umbrella note {j}");
            let p = publish_memory_partition(&js, &ns, &format!("c-{ns}"), &id, &text).await;
            // Every memory of a namespace in the same partition.
            assert_eq!(*partition_of.entry(ns.clone()).or_insert(p), p, "{ns}");
            expected.entry(p).or_default().insert((ns.clone(), id));
        }
        n += 1;
    }
    let holds_exactly = |replica: &Replica, want: &HashSet<(String, String)>| {
        replica.memories.len() == want.len()
            && want.iter().all(|(ns, id)| replica.memories.has_in(ns, id))
    };
    eventually(
        "a holds partitions 0 and 1, b 1 and 2, nothing else",
        || {
            holds_exactly(&a, &owned_by(&expected, &[0, 1]))
                && holds_exactly(&b, &owned_by(&expected, &[1, 2]))
        },
    )
    .await;

    // Every namespace's query is served by an owner of its partition, once, with its own hits.
    for ns in partition_of.keys() {
        let v = request_json(
            &nc,
            &format!("voice.query.{ns}"),
            json!({"v": 2, "text": "blue umbrella", "top_k": 10}),
        )
        .await;
        let hits = v["hits"].as_array().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(hits.len(), 2, "{ns}: {v}");
        for hit in hits {
            assert_eq!(
                hit["conversation"],
                format!("c-{ns}"),
                "{ns}: foreign hit {v}"
            );
        }
    }
    let answered = |r: &Replica| r.bus.stats().queries_answered.load(Ordering::SeqCst);
    assert_eq!(answered(&a) + answered(&b), partition_of.len() as u64);

    // A final of every namespace: answered once, by an owner, on the namespace's context subject.
    let mut contexts = nc.subscribe("voice.context.*.*").await.unwrap();
    nc.flush().await.unwrap();
    for ns in partition_of.keys() {
        publish_transcript_in(
            &nc,
            ns,
            &format!("c-{ns}"),
            "u1",
            "hello there friend",
            true,
        )
        .await;
    }
    let mut answered_ns = HashSet::new();
    for _ in 0..partition_of.len() {
        let v = next_json(&mut contexts).await;
        let ns = v["namespace"].as_str().unwrap().to_string();
        assert_eq!(v["conversation"], format!("c-{ns}"));
        for hit in v["hits"].as_array().unwrap() {
            assert_eq!(hit["conversation"], format!("c-{ns}"), "foreign hit {v}");
        }
        assert!(answered_ns.insert(ns.clone()), "{ns} answered twice");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), contexts.next())
            .await
            .is_err(),
        "a final answered twice"
    );
    // Their finals became memories (republished), in their partitions.
    for (ns, p) in &partition_of {
        expected
            .get_mut(p)
            .unwrap()
            .insert((ns.clone(), format!("c-{ns}/u1")));
    }

    // Forget one conversation of a partition-2 namespace: the stream (transformed subjects) and
    // its owner forget it.
    let forgotten = partition_of
        .iter()
        .find(|(_, p)| **p == 2)
        .map(|(ns, _)| ns.clone())
        .unwrap();
    eventually("b holds the finals of its partitions", || {
        holds_exactly(&b, &owned_by(&expected, &[1, 2]))
    })
    .await;
    let reply = request_json(
        &nc,
        &format!("voice.forget.{forgotten}"),
        json!({"v": 2, "conversation": format!("c-{forgotten}")}),
    )
    .await;
    assert_eq!(reply["replica"], "b", "{reply}");
    assert_eq!(reply["forgotten"], 3, "{reply}");
    assert_eq!(reply["stream_purged"], 3, "{reply}");
    expected
        .get_mut(&2)
        .unwrap()
        .retain(|(ns, _)| *ns != forgotten);
    eventually("a and b converge", || {
        holds_exactly(&a, &owned_by(&expected, &[0, 1]))
            && holds_exactly(&b, &owned_by(&expected, &[1, 2]))
    })
    .await;

    // A third replica, added later, catches up partitions 2 and 0 from the stream's beginning:
    // all of their memories (the forgotten conversation not), none of partition 1's.
    let c = start_replica(sharded_config(&url, "c", &[2, 0]), Duration::ZERO, 0)
        .await
        .0;
    eventually("c caught up partitions 2 and 0", || {
        holds_exactly(&c, &owned_by(&expected, &[2, 0]))
    })
    .await;
    let health = request_json(&nc, "voice.health", json!({})).await;
    assert_eq!(health["partition_count"], 3, "{health}");
    assert_eq!(
        health["stream"]["consumers"].as_array().map(Vec::len),
        Some(2),
        "one consumer per owned partition: {health}"
    );
    a.bus.stop().await.unwrap();
    b.bus.stop().await.unwrap();
    // Alone, c serves its partitions from what it caught up; partition 1 has no owner left.
    for (ns, p) in &partition_of {
        let subject = format!("voice.query.{ns}");
        let payload = serde_json::to_vec(&json!({"v": 2, "text": "blue umbrella"})).unwrap();
        let reply = tokio::time::timeout(WAIT, nc.request(subject, payload.into()))
            .await
            .expect("timed out");
        if *p == 1 {
            assert!(reply.is_err(), "{ns}: answered without an owner");
            continue;
        }
        let v: Value = serde_json::from_slice(&reply.unwrap().payload).unwrap();
        let want = if *ns == forgotten { 0 } else { 2 };
        assert_eq!(v["hits"].as_array().map(Vec::len), Some(want), "{ns}: {v}");
    }
    c.bus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_sharded_otherwise_is_refused() {
    let h = start_server(Some(PARTITIONS_CONF));
    let url = h.server.url();
    let full = bus_config(&url, "full");
    let connection = BusConnection::connect(full.clone(), WAIT).await.unwrap();
    drop(connection);
    // The stream exists unsharded: a sharded replica refuses it, naming the difference.
    let Err(e) = BusConnection::connect(sharded_config(&url, "s", &[0]), WAIT).await else {
        panic!("a sharded replica accepted an unsharded stream");
    };
    let e = e.to_string();
    assert!(
        e.contains("partition_count = 3") && e.contains("none"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_credentials_work_with_sharded_partitions() {
    // The server maps transcripts, queries and forgets to partitions before it checks publish
    // permissions: tenants.conf allows the mapped forms of alice's own subjects only.
    let h = start_server(Some(&format!("{TENANTS_CONF}\n{PARTITIONS_CONF}\n")));
    let url = h.server.url();
    let config = NatsConfig {
        user: Some("voicerag".into()),
        password: Some("voicerag-secret".into()),
        ..sharded_config(&url, "r1", &[0, 1, 2])
    };
    let (replica, _) = start_replica(config, Duration::ZERO, 0).await;
    let (alice, mut alice_errors) =
        tenant_agent(&url, "alice-agent", "alice-secret", "_INBOX_alice").await;
    let mut ctx = alice.subscribe("voice.context.alice.c1").await.unwrap();
    alice.flush().await.unwrap();
    publish_transcript_in(&alice, "alice", "c1", "u1", "hello there", true).await;
    let v = next_json(&mut ctx).await;
    assert_eq!(
        (v["namespace"].as_str(), v["final"].as_bool()),
        (Some("alice"), Some(true))
    );
    eventually("alice's final stored", || {
        replica.memories.has_in("alice", "c1/u1")
    })
    .await;
    let mine = request_json(
        &alice,
        "voice.query.alice",
        json!({"v": 2, "text": "hello"}),
    )
    .await;
    assert_eq!(mine["hits"][0]["id"], "c1/u1", "{mine}");
    let forgot = request_json(&alice, "voice.forget.alice", json!({"v": 2, "id": "c1/u1"})).await;
    assert_eq!(forgot["forgotten"], 1, "{forgot}");
    no_violation(&mut alice_errors);
    for subject in ["voice.query.bob", "voice.forget.bob"] {
        request_refused(&alice, subject, json!({"v": 2, "text": "hello", "id": "x"})).await;
        let e = tokio::time::timeout(WAIT, alice_errors.recv())
            .await
            .expect("a permission error")
            .unwrap();
        assert!(
            e.contains(&format!("Permissions Violation for Publish to \"{subject}")),
            "{e}"
        );
    }
    publish_transcript_in(&alice, "bob", "c1", "u1", "hello there", true).await;
    let e = tokio::time::timeout(WAIT, alice_errors.recv())
        .await
        .expect("a permission error")
        .unwrap();
    assert!(
        e.contains("Permissions Violation for Publish to \"voice.transcript.bob.c1."),
        "{e}"
    );
    assert!(!replica.memories.has_in("bob", "c1/u1"));
    replica.bus.stop().await.unwrap();
}
