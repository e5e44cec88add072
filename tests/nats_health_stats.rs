//! Health reports read the store's figures (a walk of the data directory) off the runtime's
//! threads. On a single-threaded runtime, a sink whose `stats` blocks until another task on that
//! runtime releases it shows it: read on the runtime thread, nothing else could run to release it.

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use voicerag::actors::{ContextResult, Memory, Transcript};
use voicerag::bus::server::LocalNatsServer;
use voicerag::bus::{
    BusConnection, ContextQuery, ContextService, EngineError, Forget, MemorySink, NatsConfig,
    Refused, SinkError,
};

struct IdleEngine;

impl ContextService for IdleEngine {
    async fn submit(&self, _: Transcript) -> Result<(), EngineError> {
        Ok(())
    }
    fn results(&self) -> BoxStream<'static, ContextResult> {
        futures::stream::pending().boxed()
    }
    async fn query(&self, _: ContextQuery) -> Result<ContextResult, EngineError> {
        Err(EngineError("no queries here".into()))
    }
    fn health(&self) -> Value {
        json!({})
    }
    async fn shutdown(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

/// `stats` blocks (like a slow directory walk) until the gate opens.
#[derive(Default)]
struct GatedSink {
    open: Mutex<bool>,
    cv: Condvar,
    entered: AtomicBool,
}

impl GatedSink {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

impl MemorySink for GatedSink {
    fn store(&self, _: &[Memory]) -> Result<Vec<Refused>, SinkError> {
        Ok(Vec::new())
    }
    fn forget(&self, _: &Forget) -> Result<u64, SinkError> {
        Ok(0)
    }
    fn stats(&self) -> Value {
        self.entered.store(true, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
        json!({"memories": 7})
    }
}

#[tokio::test(flavor = "current_thread")]
async fn store_stats_are_read_off_the_runtime_thread() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start(dir.path()).unwrap();
    let config = NatsConfig {
        urls: vec![server.url()],
        replica_id: "r1".into(),
        heartbeat_ms: 200,
        ..Default::default()
    };
    let sink = Arc::new(GatedSink::default());
    // If the runtime thread is the one blocked, nothing on it can open the gate: a watchdog
    // thread does, later, so the test fails instead of hanging.
    let by_watchdog = Arc::new(AtomicBool::new(false));
    {
        let (sink, by_watchdog) = (sink.clone(), by_watchdog.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(30));
            by_watchdog.store(true, Ordering::SeqCst);
            sink.open();
        });
    }
    let connection = BusConnection::connect(config, Duration::from_secs(20))
        .await
        .unwrap();
    let subjects = connection.subjects().clone();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut beats = client.subscribe(subjects.heartbeat("r1")).await.unwrap();
    client.flush().await.unwrap();
    let bus = connection
        .start(Arc::new(IdleEngine), sink.clone())
        .await
        .unwrap();
    // The first heartbeat reads the stats and blocks in them; this task, on the same runtime
    // thread, releases it.
    while !sink.entered.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sink.open();
    assert!(
        !by_watchdog.load(Ordering::SeqCst),
        "the stats blocked the runtime thread"
    );
    let beat = tokio::time::timeout(Duration::from_secs(20), beats.next())
        .await
        .expect("a heartbeat")
        .expect("subscription open");
    let v: Value = serde_json::from_slice(&beat.payload).unwrap();
    assert_eq!(v["store"]["memories"], 7, "{v}");
    bus.stop().await.unwrap();
}
