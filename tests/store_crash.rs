//! Crash consistency: a real writer process is killed with SIGKILL mid-ingest; every memory it
//! acknowledged is then found by BM25 and by vector search after reopening.
//!
//! The test binary re-invokes itself (this exact test) as the writer child: with
//! `VOICERAG_CRASH_CHILD_DIR` set, the test body ingests forever and prints `ACK <id>` after each
//! `add` returns.

mod store_support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use store_support::*;
use voicerag::actors::messages::SearchMode;
use voicerag::store::{MemoryStore, RetrievalConfig, StoreConfig};

const CHILD_ENV: &str = "VOICERAG_CRASH_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_memories_survive_sigkill";

fn text_of(id: &str) -> String {
    let tag = id.replace('/', "x");
    format!("crash memory {id} with its own marker mark{tag} and some filler words")
}

fn run_child(dir: &str) -> ! {
    // Default cadences: the kill lands while BM25 and the trees lag LMDB.
    let cfg = StoreConfig {
        map_size_mib: 512,
        vector_build_batch: 200,
        ..StoreConfig::default()
    };
    let store = MemoryStore::open(
        std::path::Path::new(dir),
        &cfg,
        &RetrievalConfig::default(),
        &model(),
    )
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
    unreachable!()
}

#[test]
fn acknowledged_memories_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        run_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
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
    while acked.len() < 2000 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child acknowledged only {} records",
            acked.len()
        );
        if let Ok(id) = rx.recv_timeout(Duration::from_millis(100)) {
            acked.push(id);
        }
    }
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
    drop(ro);

    // Mid-ingest: the child is inside its add loop. SIGKILL, no chance to clean up.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    reader.join().unwrap();
    acked.extend(rx.try_iter());
    eprintln!("child killed after {} acknowledged records", acked.len());

    let store = open(dir.path());
    let stored: HashSet<String> = {
        let mut s = HashSet::new();
        store
            .for_each_memory(Some("crash"), |m| {
                s.insert(m.id.clone());
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        s
    };
    for id in &acked {
        assert!(stored.contains(id), "acknowledged {id} lost");
        let text = text_of(id);
        let v = store
            .search(&request("crash", &text, SearchMode::Vector, 1))
            .unwrap();
        assert_eq!(
            ids(&v),
            vec![id.clone()],
            "vector search for acknowledged {id}"
        );
        let marker = format!("mark{}", id.replace('/', "x"));
        let b = store
            .search(&request("crash", &marker, SearchMode::Bm25, 1))
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
