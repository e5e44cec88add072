//! A voicerag process killed with SIGKILL mid-ingest and restarted: every memory JetStream
//! acknowledged ends up in the store exactly once, and within 5 s of the restart (issue 10 item 7:
//! what the dead process held unacked comes back after the default ack_wait, not 30 s later).
//! The child is this test binary re-invoked; its store is an append-only file, idempotent by id
//! like the real store.

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use voicerag::actors::{ContextResult, Memory, Transcript};
use voicerag::bus::server::LocalNatsServer;
use voicerag::bus::{
    BusConnection, ContextQuery, ContextService, EngineError, Forget, MemorySink, NatsConfig,
    Refused, SinkError,
};

const CHILD_ENV: &str = "VOICERAG_NATS_CRASH_CHILD";
const TEST_NAME: &str = "sigkill_mid_ingest_keeps_every_acknowledged_memory_once";
const MEMORIES: usize = 400;

/// No transcripts in this test: only memories.
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

/// One line per memory id, fsynced before `store` returns; ids already present are skipped.
struct FileSink {
    path: PathBuf,
    seen: Mutex<HashSet<String>>,
}

fn read_ids(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A line cut by the kill has no newline yet: it was never committed.
    let complete = text.rfind('\n').map(|i| &text[..=i]).unwrap_or("");
    complete.lines().map(str::to_string).collect()
}

impl MemorySink for FileSink {
    fn store(&self, batch: &[Memory]) -> Result<Vec<Refused>, SinkError> {
        // Slow commits keep the kill landing mid-ingest, between delivery and commit.
        std::thread::sleep(Duration::from_millis(15));
        let mut seen = self.seen.lock().unwrap();
        let mut out = String::new();
        for m in batch {
            if seen.insert(m.id.clone()) {
                out.push_str(&m.id);
                out.push('\n');
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| SinkError(e.to_string()))?;
        file.write_all(out.as_bytes())
            .map_err(|e| SinkError(e.to_string()))?;
        file.sync_data().map_err(|e| SinkError(e.to_string()))?;
        Ok(Vec::new())
    }

    fn forget(&self, _: &Forget) -> Result<u64, SinkError> {
        Err(SinkError("this test forgets nothing".into()))
    }
}

fn run_child(spec: &str) -> ! {
    let (url, file) = spec.split_once('|').unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = NatsConfig {
            urls: vec![url.to_string()],
            replica_id: "crash".into(),
            memory_batch: 8,
            // ack_wait is the default: the recovery bound below is the default's.
            reconnect_max_delay_ms: 200,
            ..Default::default()
        };
        let path = PathBuf::from(file);
        let seen = read_ids(&path).into_iter().collect();
        let sink = std::sync::Arc::new(FileSink {
            path,
            seen: Mutex::new(seen),
        });
        let connection = BusConnection::connect(config, Duration::from_secs(20))
            .await
            .unwrap();
        let _bus = connection
            .start(std::sync::Arc::new(NoEngine), sink)
            .await
            .unwrap();
        println!("READY");
        std::future::pending::<()>().await;
    });
    unreachable!()
}

/// Kills the child even when an assertion fails, so no orphan keeps the test's pipes open.
struct ChildGuard(Child);

impl ChildGuard {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the child; the receiver gets the instant it printed READY (its bus is serving).
fn spawn_child(url: &str, file: &Path) -> (ChildGuard, std::sync::mpsc::Receiver<Instant>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{url}|{}", file.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                // libtest may print "test NAME ... " on the same line first.
                Ok(line) if line.trim_end().ends_with("READY") => {
                    let _ = tx.send(Instant::now());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (ChildGuard(child), rx)
}

/// Waits (blocking, generously) for the child's READY.
fn ready_at(ready: &std::sync::mpsc::Receiver<Instant>) -> Instant {
    ready
        .recv_timeout(Duration::from_secs(60))
        .expect("the child never became ready")
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < until, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn sigkill_mid_ingest_keeps_every_acknowledged_memory_once() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(dir.path()).unwrap();
    let file = dir.path().join("store.lines");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (mut child, _) = spawn_child(&server.url(), &file);
        let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
        // The child creates the stream; publish once it exists.
        let until = Instant::now() + Duration::from_secs(20);
        while js.get_stream("VOICE_MEMORY").await.is_err() {
            assert!(Instant::now() < until, "the child never created the stream");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let publish = |i: usize| {
            let js = js.clone();
            async move {
                let id = format!("m{i:04}");
                let payload = serde_json::json!({"v": 2, "id": id, "text": format!("fact {i}")});
                js.send_publish(
                    format!("voice.memory.default.c{}", i % 7),
                    PublishMessage::build()
                        .payload(serde_json::to_vec(&payload).unwrap().into())
                        .message_id(format!("default.{id}")),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            }
        };
        for i in 0..MEMORIES / 2 {
            publish(i).await;
        }
        // Kill once some, but not all, are committed.
        wait_for("partial ingest", Duration::from_secs(20), || {
            read_ids(&file).len() >= 40
        })
        .await;
        child.kill();
        let committed_at_kill = read_ids(&file).len();
        assert!(
            committed_at_kill < MEMORIES / 2,
            "the kill came too late to test anything"
        );
        // The dead process held memories delivered and unacked: they come back only after
        // ack_wait, which is what the recovery bound below measures.
        let mut consumer: jetstream::consumer::PullConsumer = js
            .get_stream("VOICE_MEMORY")
            .await
            .unwrap()
            .get_consumer("voicerag-crash")
            .await
            .unwrap();
        let held = consumer.info().await.unwrap().num_ack_pending;
        assert!(
            held > 0,
            "the kill left nothing unacked: nothing to recover"
        );
        // Acknowledged while no voicerag runs: JetStream holds them.
        for i in MEMORIES / 2..MEMORIES {
            publish(i).await;
        }
        let (mut child, ready) = spawn_child(&server.url(), &file);
        let restarted = tokio::task::block_in_place(|| ready_at(&ready));
        wait_for("all memories", Duration::from_secs(60), || {
            read_ids(&file).len() >= MEMORIES
        })
        .await;
        // Every acked memory is back within 5 s of the restart (issue 10 item 7).
        let recovered = restarted.elapsed();
        assert!(
            recovered <= Duration::from_secs(5),
            "{held} memories held by the killed process: all memories findable {recovered:?} \
             after the restart, over 5 s"
        );
        // Let any redelivery land before judging duplicates.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        child.kill();
        let ids = read_ids(&file);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &ids {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        let expected: HashSet<String> = (0..MEMORIES).map(|i| format!("m{i:04}")).collect();
        let got: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(got, expected, "lost or unexpected memories");
        let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            duplicated.is_empty(),
            "stored more than once: {duplicated:?}"
        );
    });
}
