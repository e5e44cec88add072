//! Crash consistency: a real writer process is killed with SIGKILL mid-ingest; every memory it
//! acknowledged is then found by BM25 and by vector search after reopening.
//!
//! The test binary re-invokes itself (the calling test, by exact name) as the writer child:
//! with `VOICERAG_CRASH_CHILD_DIR` set, the test body ingests forever and prints `ACK <id>`
//! after each `add` returns.

mod store_support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use store_support::*;
use voicerag::actors::messages::SearchMode;
use voicerag::store::{MemoryStore, RetrievalConfig, StoreConfig};

const CHILD_ENV: &str = "VOICERAG_CRASH_CHILD_DIR";
const COMMIT_ENV: &str = "VOICERAG_CRASH_CHILD_COMMIT_MS";

fn text_of(id: &str) -> String {
    let tag = id.replace('/', "x");
    format!("crash memory {id} with its own marker mark{tag} and some filler words")
}

fn marker_of(id: &str) -> String {
    format!("mark{}", id.replace('/', "x"))
}

/// The child: ingests batches forever, printing each acknowledged id.
fn child_if_asked() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let commit_ms = std::env::var(COMMIT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let cfg = StoreConfig {
        map_size_mib: 512,
        vector_build_batch: 200,
        bm25_commit_ms: commit_ms,
        ..StoreConfig::default()
    };
    let store = MemoryStore::open(Path::new(&dir), &cfg, &RetrievalConfig::default(), &model())
        .expect("child opens the store");
    let stdout = std::io::stdout();
    for batch in 0.. {
        let memories: Vec<_> = (0..10)
            .map(|i| format!("b{batch}/{i}"))
            .map(|id| simple("crash", &id, &text_of(&id)))
            .collect();
        let report = store.add(memories).expect("child add");
        let mut out = stdout.lock();
        for id in report.stored {
            writeln!(out, "ACK {id}").expect("child stdout");
        }
        out.flush().expect("child stdout");
    }
}

/// Runs the writer child for test `test_name` until it acknowledged `at_least` records,
/// optionally probes the live store, kills it with SIGKILL, and returns every acknowledged id.
fn ingest_then_kill(
    dir: &Path,
    test_name: &str,
    commit_ms: u64,
    at_least: usize,
    probe: impl FnOnce(&[String]),
) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(COMMIT_ENV, commit_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("ACK ") {
                let _ = tx.send(id.to_string());
            }
        }
    });
    let mut acked: Vec<String> = Vec::new();
    let start = Instant::now();
    while acked.len() < at_least {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("child acknowledged only {} records", acked.len());
        }
        if let Ok(id) = rx.recv_timeout(Duration::from_millis(100)) {
            acked.push(id);
        }
    }
    probe(&acked);
    // Mid-ingest: the child is inside its add loop. SIGKILL, no chance to clean up.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    reader.join().unwrap();
    acked.extend(rx.try_iter());
    eprintln!("child killed after {} acknowledged records", acked.len());
    acked
}

#[test]
fn acknowledged_memories_survive_sigkill() {
    child_if_asked();
    let dir = tempfile::tempdir().unwrap();
    let acked = ingest_then_kill(
        dir.path(),
        "acknowledged_memories_survive_sigkill",
        200,
        2000,
        |acked| {
            // While the child writes, a read-only handle searches the store it serves.
            let ro = MemoryStore::open_read_only(
                dir.path(),
                &StoreConfig::default(),
                &RetrievalConfig::default(),
                &model(),
            )
            .expect("read-only open beside a live writer");
            let probe = &acked[acked.len() / 2];
            let hits = ro
                .search(&request("crash", &text_of(probe), SearchMode::Vector, 1))
                .unwrap();
            assert_eq!(
                ids(&hits),
                vec![probe.clone()],
                "read-only vector search sees the writer's data"
            );
        },
    );

    let store = open(dir.path());
    let mut stored = HashSet::new();
    store
        .for_each_memory(Some("crash"), |m| {
            stored.insert(m.id.clone());
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    for id in &acked {
        assert!(stored.contains(id), "acknowledged {id} lost");
        let v = store
            .search(&request("crash", &text_of(id), SearchMode::Vector, 1))
            .unwrap();
        assert_eq!(
            ids(&v),
            vec![id.clone()],
            "vector search for acknowledged {id}"
        );
        let b = store
            .search(&request("crash", &marker_of(id), SearchMode::Bm25, 1))
            .unwrap();
        assert_eq!(
            ids(&b),
            vec![id.clone()],
            "BM25 search for acknowledged {id}"
        );
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.bm25_lag, 0, "BM25 was brought up to LMDB on open");
    assert_eq!(stats.memories as usize, stored.len());
}

#[test]
fn a_read_only_query_after_a_crash_sees_every_acknowledged_memory() {
    child_if_asked();
    let dir = tempfile::tempdir().unwrap();
    // The child never commits BM25 (1 h cadence): at the kill, BM25 holds nothing it wrote.
    let acked = ingest_then_kill(
        dir.path(),
        "a_read_only_query_after_a_crash_sees_every_acknowledged_memory",
        3_600_000,
        300,
        |_| {},
    );
    let ro = MemoryStore::open_read_only(
        dir.path(),
        &StoreConfig::default(),
        &RetrievalConfig::default(),
        &model(),
    )
    .expect("read-only open after the crash");
    for id in &acked {
        let b = ro
            .search(&request("crash", &marker_of(id), SearchMode::Bm25, 1))
            .unwrap();
        assert_eq!(
            ids(&b),
            vec![id.clone()],
            "read-only BM25 search for acknowledged {id}"
        );
        let v = ro
            .search(&request("crash", &text_of(id), SearchMode::Vector, 1))
            .unwrap();
        assert_eq!(
            ids(&v),
            vec![id.clone()],
            "read-only vector search for acknowledged {id}"
        );
    }
    let stats = ro.stats().unwrap();
    assert_eq!(stats.bm25_lag, 0);
    assert!(matches!(
        ro.add(vec![simple("crash", "x", "y")]),
        Err(voicerag::store::StoreError::ReadOnly)
    ));
}
