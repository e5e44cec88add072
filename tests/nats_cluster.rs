//! The memory stream on a 3-node `nats-server` cluster on loopback, at R3 (issue 10 item 8):
//! one server killed with SIGKILL mid-ingest (the stream's leader, the hardest case) and every
//! acknowledged memory is in the stream exactly once and reaches the replica's store.

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use voicerag::actors::{ContextResult, Memory, Transcript};
use voicerag::bus::server::LocalNatsServer;
use voicerag::bus::{
    BusConnection, ContextQuery, ContextService, EngineError, Forget, MemorySink, NatsConfig,
    Refused, SinkError,
};

const MEMORIES: usize = 240;
const WAIT: Duration = Duration::from_secs(90);

/// Memories only: this replica serves no transcripts.
struct NoEngine;

impl ContextService for NoEngine {
    async fn submit(&self, _: Transcript) -> Result<(), EngineError> {
        Err(EngineError("memory-only replica".into()))
    }
    fn results(&self) -> BoxStream<'static, ContextResult> {
        futures::stream::pending().boxed()
    }
    async fn query(&self, _: ContextQuery) -> Result<ContextResult, EngineError> {
        Err(EngineError("memory-only replica".into()))
    }
    fn health(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    async fn shutdown(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

/// Keeps every (namespace, id) it is given; commits take a little while (holding the writer's
/// lock, as LMDB's writer does), so the kill lands mid-ingest.
#[derive(Default)]
struct SlowSink {
    writer: Mutex<()>,
    stored: Mutex<HashSet<(String, String)>>,
}

impl MemorySink for SlowSink {
    fn store(&self, batch: &[Memory]) -> Result<Vec<Refused>, SinkError> {
        let _writer = self.writer.lock().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut stored = self.stored.lock().unwrap();
        for m in batch {
            stored.insert((m.namespace.clone(), m.id.clone()));
        }
        Ok(Vec::new())
    }

    fn forget(&self, _: &Forget) -> Result<u64, SinkError> {
        Err(SinkError("this test forgets nothing".into()))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Three JetStream servers routed to each other, named n0..n2.
struct Cluster {
    nodes: Vec<LocalNatsServer>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    fn start() -> Self {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let list = routes
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for (i, port) in routes.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let config = format!(
                "server_name: n{i}\ncluster {{\n  name: voicerag-test\n  listen: \"127.0.0.1:{port}\"\n  routes: [{list}]\n}}\n"
            );
            nodes.push(LocalNatsServer::start_with_config(dir.path(), Some(&config)).unwrap());
            dirs.push(dir);
        }
        Self { nodes, _dirs: dirs }
    }

    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }
}

/// Publishes memory `i` until the stream acks it, as an agent retrying with the same
/// `Nats-Msg-Id` would: a publish lost in the leader change is sent again, and deduplicated.
async fn publish_acked(js: &jetstream::Context, i: usize) {
    let id = format!("m{i:04}");
    let payload =
        serde_json::to_vec(&serde_json::json!({"v": 2, "id": id, "text": format!("fact {i}")}))
            .unwrap();
    let until = Instant::now() + WAIT;
    loop {
        let message = PublishMessage::build()
            .payload(payload.clone().into())
            .message_id(format!("alice.{id}"));
        let acked = match js
            .send_publish(format!("voice.memory.alice.c{}", i % 5), message)
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match acked {
            Ok(()) => return,
            Err(e) => {
                assert!(Instant::now() < until, "memory {id} never acked: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_ingest_every_acked_memory_once() {
    let mut cluster = Cluster::start();
    let urls = cluster.urls();
    let config = NatsConfig {
        urls: urls.clone(),
        replica_id: "r1".into(),
        stream_replicas: 3,
        memory_batch: 8,
        ack_wait_ms: 2000,
        reconnect_max_delay_ms: 200,
        request_timeout_ms: 2000,
        ..Default::default()
    };
    let sink = Arc::new(SlowSink::default());
    // Retries until the cluster has elected its JetStream leader and the R3 stream exists.
    let connection = BusConnection::connect(config, WAIT).await.unwrap();
    let bus = connection
        .start(Arc::new(NoEngine), sink.clone())
        .await
        .unwrap();

    let addrs: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
    let nc = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(addrs)
        .await
        .unwrap();
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(nc.clone());
    let info = js
        .get_stream("VOICE_MEMORY")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3, "the stream is not R3");

    // The first half at once, so the replica is still committing them at the kill.
    futures::future::join_all((0..MEMORIES / 2).map(|i| publish_acked(&js, i))).await;
    // Kill the stream's leader while the replica is still committing.
    let mut stream = js.get_stream("VOICE_MEMORY").await.unwrap();
    let leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the R3 stream has a leader");
    let victim: usize = leader.trim_start_matches('n').parse().unwrap();
    let stored_at_kill = sink.stored.lock().unwrap().len();
    cluster.nodes[victim].kill();
    assert!(
        stored_at_kill < MEMORIES / 2,
        "the replica had caught up before the kill: nothing was mid-ingest"
    );

    for i in MEMORIES / 2..MEMORIES {
        publish_acked(&js, i).await;
    }
    let expected: HashSet<(String, String)> = (0..MEMORIES)
        .map(|i| ("alice".to_string(), format!("m{i:04}")))
        .collect();
    eventually("every acked memory stored", || {
        *sink.stored.lock().unwrap() == expected
    })
    .await;
    // Exactly once in the stream: retries across the leader change were deduplicated.
    let mut stream = js.get_stream("VOICE_MEMORY").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(state.messages, MEMORIES as u64, "{state:?}");
    let new_leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone());
    assert_ne!(new_leader.as_deref(), Some(leader.as_str()));
    bus.stop().await.unwrap();
}
