//! Two voicerag bus processes sharing the conversations through partitioned subjects: no answer
//! lost, none duplicated, each conversation in order; then SIGTERM stops each one gracefully
//! (exit 0) through `serve`. The children are this test binary re-invoked.

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use voicerag::actors::{ContextResult, Memory, RerankOutcome, StageTimings, Transcript};
use voicerag::bus::server::LocalNatsServer;
use voicerag::bus::{
    ContextQuery, ContextService, EngineError, Forget, MemorySink, NatsConfig, Refused, SinkError,
    serve,
};

const CHILD_ENV: &str = "VOICERAG_NATS_PROCESS_CHILD";
const TEST_NAME: &str = "two_processes_no_duplicate_no_lost_answer_and_sigterm_exits_0";
const MAPPING: &str = r#"mappings = { "voice.transcript.*.*": "voice.transcript.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(2,1,2)}}" }"#;

/// Answers every transcript at once with no hits, after a short think.
struct EchoEngine {
    tx: mpsc::UnboundedSender<ContextResult>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<ContextResult>>>,
}

impl ContextService for EchoEngine {
    async fn submit(&self, t: Transcript) -> Result<(), EngineError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let now = Instant::now();
        let _ = self.tx.send(ContextResult {
            namespace: t.namespace,
            conversation: t.conversation,
            utterance: t.utterance,
            is_final: t.is_final,
            text: t.text,
            hits: Vec::new(),
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
        });
        Ok(())
    }
    fn results(&self) -> BoxStream<'static, ContextResult> {
        let mut rx = self.rx.lock().unwrap().take().expect("results taken once");
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }
    async fn query(&self, _: ContextQuery) -> Result<ContextResult, EngineError> {
        Err(EngineError("no queries here".into()))
    }
    fn health(&self) -> Value {
        Value::Null
    }
    async fn shutdown(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

struct NullSink;

impl MemorySink for NullSink {
    fn store(&self, _: &[Memory]) -> Result<Vec<Refused>, SinkError> {
        Ok(Vec::new())
    }
    fn forget(&self, _: &Forget) -> Result<u64, SinkError> {
        Ok(0)
    }
}

fn run_child(spec: &str) -> ! {
    let (url, rest) = spec.split_once('|').unwrap();
    let (replica, partition) = rest.split_once('|').unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        let config = NatsConfig {
            urls: vec![url.to_string()],
            replica_id: replica.to_string(),
            partitions: vec![partition.parse().unwrap()],
            ..Default::default()
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let engine = Arc::new(EchoEngine {
            tx,
            rx: Mutex::new(Some(rx)),
        });
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        let shutdown = async move {
            term.recv().await;
        };
        // The first heartbeat, sent after the subscriptions, tells the parent it is serving.
        serve(config, engine, Arc::new(NullSink), shutdown).await
    });
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(url: &str, replica: &str, partition: u32) -> ChildGuard {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{url}|{replica}|{partition}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    ChildGuard(child)
}

fn sigterm(child: &ChildGuard) {
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn two_processes_no_duplicate_no_lost_answer_and_sigterm_exits_0() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start_with_config(dir.path(), Some(MAPPING)).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let nc = async_nats::connect(server.url()).await.unwrap();
        let mut beats = nc.subscribe("voice.health.*").await.unwrap();
        let mut contexts = nc.subscribe("voice.context.default.*").await.unwrap();
        nc.flush().await.unwrap();
        let mut children = vec![spawn_child(&server.url(), "p0", 0), spawn_child(&server.url(), "p1", 1)];
        // Both serving: a heartbeat from each (sent once its subscriptions are in place).
        let mut up = std::collections::HashSet::new();
        while up.len() < 2 {
            let m = tokio::time::timeout(Duration::from_secs(30), beats.next())
                .await
                .expect("no heartbeat")
                .unwrap();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            up.insert(v["replica"].as_str().unwrap().to_string());
        }

        let conversations = 40;
        for u in 0..5 {
            for c in 0..conversations {
                let payload = serde_json::json!({"v": 2, "utterance": format!("u{u}"), "text": "hello", "final": u == 4});
                nc.publish(format!("voice.transcript.default.conv{c}"), serde_json::to_vec(&payload).unwrap().into())
                    .await
                    .unwrap();
            }
        }
        nc.flush().await.unwrap();
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        let mut total = 0;
        while total < conversations * 5 {
            let m = tokio::time::timeout(Duration::from_secs(20), contexts.next())
                .await
                .unwrap_or_else(|_| panic!("answers lost: got {total} of {}", conversations * 5))
                .unwrap();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            let conv = v["conversation"].as_str().unwrap().to_string();
            seen.entry(conv).or_default().push(v["utterance"].as_str().unwrap().to_string());
            total += 1;
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(500), contexts.next()).await.is_err(),
            "a duplicate answer"
        );
        let expected: Vec<String> = (0..5).map(|u| format!("u{u}")).collect();
        for (conv, utterances) in &seen {
            assert_eq!(utterances, &expected, "{conv}: duplicated, lost or out of order");
        }

        // SIGTERM: each process drains and exits 0, saying "stopping" on its heartbeat subject.
        for child in &children {
            sigterm(child);
        }
        for child in children.iter_mut() {
            let until = Instant::now() + Duration::from_secs(20);
            let status = loop {
                if let Some(status) = child.0.try_wait().unwrap() {
                    break status;
                }
                assert!(Instant::now() < until, "did not exit after SIGTERM");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert!(status.success(), "exit status {status}");
        }
        let mut stopping = std::collections::HashSet::new();
        while stopping.len() < 2 {
            let m = tokio::time::timeout(Duration::from_secs(5), beats.next()).await.unwrap().unwrap();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            if v["status"] == "stopping" {
                stopping.insert(v["replica"].as_str().unwrap().to_string());
            }
        }
    });
}
