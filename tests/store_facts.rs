//! Facts that change and time in the question, at the store (synthetic embeddings, no model):
//! superseded and expired memories leave default results but stay stored, `include_superseded`
//! brings them back, forget deletes, supersedes never reach another namespace; a time expression
//! in the query filters or boosts, and says so; a schema-1 store opens and upgrades.

mod store_support;

use std::io::{BufRead, Write};
use std::ops::ControlFlow;

use store_support::*;
use voicerag::actors::messages::{SearchMode, SearchRequest, TimeWindowUse};
use voicerag::store::{MemoryStore, NewMemory, RetrievalConfig, StoreConfig};

const MODES: [SearchMode; 3] = [SearchMode::Hybrid, SearchMode::Vector, SearchMode::Bm25];
const DAY: i64 = 86_400_000;
/// Wednesday 2026-03-18 12:00 UTC.
const NOW: i64 = 1_773_835_200_000;

fn replacing(mut m: NewMemory, old: &[&str]) -> NewMemory {
    m.memory.supersedes = old.iter().map(|s| s.to_string()).collect();
    m
}

fn at_now(mut req: SearchRequest) -> SearchRequest {
    req.filter.time.now_ms = Some(NOW);
    req
}

fn search_all(store: &MemoryStore, ns: &str, text: &str, include: bool) -> Vec<Vec<String>> {
    MODES
        .iter()
        .map(|m| {
            let mut req = at_now(request(ns, text, *m, 10));
            req.filter.include_superseded = include;
            ids(&store.search(&req).unwrap())
        })
        .collect()
}

fn stored_ids(store: &MemoryStore, ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    store
        .for_each_memory(Some(ns), |m| {
            out.push(m.id.clone());
            ControlFlow::Continue(())
        })
        .unwrap();
    out
}

#[test]
fn a_superseded_memory_leaves_default_results_but_stays_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .add(vec![
            mem(
                "u",
                "c1",
                "old",
                "user",
                NOW - 5 * DAY,
                "Rex's vet appointment is on Tuesday",
            ),
            mem(
                "u",
                "c1",
                "other",
                "user",
                NOW - 5 * DAY,
                "Rex likes the park",
            ),
        ])
        .unwrap();
    store
        .add(vec![replacing(
            mem(
                "u",
                "c2",
                "new",
                "user",
                NOW - DAY,
                "the vet moved Rex's appointment to Friday",
            ),
            &["old"],
        )])
        .unwrap();
    for flushed in [false, true] {
        if flushed {
            store.flush().unwrap();
        }
        // BM25 finds fresh memories only after its next commit: checked once flushed.
        let found = |mode: &SearchMode| flushed || *mode != SearchMode::Bm25;
        for (mode, hits) in MODES
            .iter()
            .zip(search_all(&store, "u", "Rex vet appointment", false))
        {
            assert!(!hits.contains(&"old".to_string()), "{mode:?}: {hits:?}");
            assert_eq!(
                hits.contains(&"new".to_string()),
                found(mode),
                "{mode:?}: {hits:?}"
            );
        }
        for (mode, hits) in MODES
            .iter()
            .zip(search_all(&store, "u", "Rex vet appointment", true))
        {
            assert_eq!(
                hits.contains(&"old".to_string()),
                found(mode),
                "{mode:?}: {hits:?}"
            );
        }
    }
    // Nothing was destroyed: the record is there, and says what replaced what.
    let mut records = Vec::new();
    store
        .for_each_memory(Some("u"), |m| {
            records.push(m.clone());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(records.len(), 3);
    let new = records.iter().find(|m| m.id == "new").unwrap();
    assert_eq!(new.supersedes, vec!["old"]);
    // Forget still deletes, superseded or not.
    assert_eq!(store.delete_ids("u", &["old".into()]).unwrap(), 1);
    for hits in search_all(&store, "u", "Rex vet appointment", true) {
        assert!(!hits.contains(&"old".to_string()), "{hits:?}");
    }
    assert_eq!(stored_ids(&store, "u"), vec!["new", "other"]);
}

#[test]
fn supersedes_never_reach_another_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .add(vec![
            mem(
                "alice",
                "c1",
                "m1",
                "user",
                NOW - DAY,
                "my sister Marta lives in Porto",
            ),
            mem(
                "bob",
                "c1",
                "m0",
                "user",
                NOW - DAY,
                "my sister lives in Lyon",
            ),
        ])
        .unwrap();
    // Bob's memory names Alice's id (and one that exists nowhere): nothing of Alice's changes.
    store
        .add(vec![replacing(
            mem("bob", "c2", "m2", "user", NOW, "my sister moved to Lisbon"),
            &["m1", "nowhere"],
        )])
        .unwrap();
    store.flush().unwrap();
    for hits in search_all(&store, "alice", "sister lives", false) {
        assert_eq!(hits, vec!["m1"]);
    }
    // Bob's own untouched memory stays too: only ids of his namespace could be superseded.
    for hits in search_all(&store, "bob", "sister lives", false) {
        assert!(hits.contains(&"m0".to_string()), "{hits:?}");
    }
}

#[test]
fn an_expired_memory_leaves_default_results_at_its_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut m = mem(
        "u",
        "c1",
        "gate",
        "user",
        NOW - 2 * DAY,
        "the gate code is 4711 this week",
    );
    m.memory.expires_at_ms = Some(NOW);
    store.add(vec![m]).unwrap();
    store.flush().unwrap();
    let found = |now: i64, include: bool| -> Vec<Vec<String>> {
        MODES
            .iter()
            .map(|mode| {
                let mut req = request("u", "gate code", *mode, 10);
                req.filter.time.now_ms = Some(now);
                req.filter.include_superseded = include;
                ids(&store.search(&req).unwrap())
            })
            .collect()
    };
    for hits in found(NOW - 1, false) {
        assert_eq!(hits, vec!["gate"], "before its expiry");
    }
    for hits in found(NOW, false) {
        assert!(hits.is_empty(), "at its expiry: {hits:?}");
    }
    for hits in found(NOW + DAY, true) {
        assert_eq!(hits, vec!["gate"], "asked for");
    }
    // Forgetting an expiring memory removes its expiry entry with it.
    assert_eq!(store.delete_ids("u", &["gate".into()]).unwrap(), 1);
    for hits in found(NOW + DAY, true) {
        assert!(hits.is_empty(), "{hits:?}");
    }
}

/// Five memories yesterday, five a week earlier, all about the same thing.
fn diary(store: &MemoryStore) {
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.push(mem(
            "u",
            "c1",
            &format!("y{i}"),
            "user",
            NOW - DAY + i * 60_000,
            &format!("note {i} about the garden"),
        ));
        batch.push(mem(
            "u",
            "c0",
            &format!("w{i}"),
            "user",
            NOW - 8 * DAY + i * 60_000,
            &format!("note {i} about the garden"),
        ));
    }
    store.add(batch).unwrap();
    store.flush().unwrap();
}

#[test]
fn a_time_expression_filters_when_the_window_holds_enough() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    diary(&store);
    for mode in MODES {
        let r = store
            .retrieve(&at_now(request(
                "u",
                "what did I say about the garden yesterday",
                mode,
                10,
            )))
            .unwrap();
        let w = r.time_window.expect("a window");
        assert_eq!(w.phrase, "yesterday");
        assert_eq!(w.applied_as, TimeWindowUse::Filter);
        assert_eq!(
            (w.start_ms, w.end_ms),
            (NOW - DAY - 12 * 3_600_000, NOW - 12 * 3_600_000)
        );
        assert_eq!(w.time_zone, "UTC");
        let mut got = ids(&r.hits);
        got.sort();
        assert_eq!(got, vec!["y0", "y1", "y2", "y3", "y4"], "{mode:?}");
    }
    // Turned off per request: no window, both days come back.
    let mut req = at_now(request("u", "the garden yesterday", SearchMode::Hybrid, 10));
    req.filter.time.enabled = Some(false);
    let r = store.retrieve(&req).unwrap();
    assert!(r.time_window.is_none());
    assert_eq!(r.hits.len(), 10);
}

#[test]
fn a_time_expression_boosts_when_the_window_holds_too_few() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    diary(&store);
    // Two days ago: one note like the others, and one memory unrelated to the question.
    store
        .add(vec![
            mem(
                "u",
                "c2",
                "d2",
                "user",
                NOW - 2 * DAY,
                "note 7 about the garden",
            ),
            mem(
                "u",
                "c2",
                "cold",
                "user",
                NOW - 2 * DAY,
                "the weather was cold",
            ),
        ])
        .unwrap();
    store.flush().unwrap();
    let query = "note about the garden two days ago";
    let r = store
        .retrieve(&at_now(request("u", query, SearchMode::Hybrid, 3)))
        .unwrap();
    let w = r.time_window.expect("a window");
    assert_eq!(
        w.applied_as,
        TimeWindowUse::Boost,
        "2 memories < time_filter_min"
    );
    // The note of that day comes first; the unrelated memory of that day is not lifted
    // above relevant ones (a boost ranks, it does not select); nothing is emptied.
    let got = ids(&r.hits);
    assert_eq!(got[0], "d2", "{got:?}");
    assert!(!got.contains(&"cold".to_string()), "{got:?}");
    assert_eq!(got.len(), 3);
    // With the boost at 0 the window still applies (a boost) but lifts nothing: the note of that
    // day is one of eleven alike, and nothing puts it first (ties break by chunk id).
    let dir0 = tempfile::tempdir().unwrap();
    let no_boost = RetrievalConfig {
        time_boost: 0.0,
        ..RetrievalConfig::default()
    };
    let store0 = MemoryStore::open(dir0.path(), &fast_config(), &no_boost, &model()).unwrap();
    diary(&store0);
    store0
        .add(vec![
            mem(
                "u",
                "c2",
                "d2",
                "user",
                NOW - 2 * DAY,
                "note 7 about the garden",
            ),
            mem(
                "u",
                "c2",
                "cold",
                "user",
                NOW - 2 * DAY,
                "the weather was cold",
            ),
        ])
        .unwrap();
    store0.flush().unwrap();
    let plain = store0
        .search(&at_now(request("u", query, SearchMode::Hybrid, 3)))
        .unwrap();
    assert_ne!(ids(&plain)[0], "d2", "{:?}", ids(&plain));
}

#[test]
fn a_question_only_about_time_gets_the_window_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    diary(&store);
    store
        .add(vec![
            mem(
                "u",
                "c2",
                "d2a",
                "user",
                NOW - 2 * DAY,
                "the weather was cold",
            ),
            mem(
                "u",
                "c2",
                "d2b",
                "user",
                NOW - 2 * DAY + 60_000,
                "buy more oat milk",
            ),
        ])
        .unwrap();
    store.flush().unwrap();
    for mode in MODES {
        let r = store
            .retrieve(&at_now(request(
                "u",
                "What did I tell you two days ago?",
                mode,
                10,
            )))
            .unwrap();
        let w = r.time_window.expect("a window");
        assert_eq!(w.applied_as, TimeWindowUse::Only, "{mode:?}");
        let got = ids(&r.hits);
        // BM25 has no words to match ("what did I tell you" is all stop words).
        if mode != SearchMode::Bm25 {
            assert_eq!(got, vec!["d2b", "d2a"], "{mode:?}");
        }
    }
    // Naming something keeps it a boost: "the garden" is not what was said two days ago.
    let r = store
        .retrieve(&at_now(request(
            "u",
            "what did I say about the garden two days ago",
            SearchMode::Hybrid,
            10,
        )))
        .unwrap();
    assert_eq!(
        r.time_window.expect("a window").applied_as,
        TimeWindowUse::Boost
    );
}

#[test]
fn the_window_is_read_in_the_namespace_zone_or_the_request_zone() {
    let dir = tempfile::tempdir().unwrap();
    let mut retrieval = RetrievalConfig::default();
    retrieval
        .time_zones
        .insert("kiri".into(), "Pacific/Kiritimati".into());
    let store = MemoryStore::open(dir.path(), &fast_config(), &retrieval, &model()).unwrap();
    store
        .add(vec![
            simple("kiri", "a", "hello"),
            simple("utc", "a", "hello"),
        ])
        .unwrap();
    let window = |ns: &str, zone: Option<&str>| {
        let mut req = at_now(request(ns, "hello today", SearchMode::Bm25, 3));
        req.filter.time.time_zone = zone.map(str::to_string);
        store.retrieve(&req).unwrap().time_window.expect("a window")
    };
    let utc = window("utc", None);
    assert_eq!(
        (utc.start_ms, utc.time_zone.as_str()),
        (NOW - 12 * 3_600_000, "UTC")
    );
    // Kiritimati is UTC+14: at 12:00 UTC it is already 02:00 the next day there.
    let kiri = window("kiri", None);
    assert_eq!(kiri.start_ms, NOW + 12 * 3_600_000 - 14 * 3_600_000);
    assert_eq!(kiri.time_zone, "Pacific/Kiritimati");
    assert_eq!(
        window("kiri", Some("UTC")).start_ms,
        utc.start_ms,
        "the request's zone wins"
    );
    let mut req = at_now(request("utc", "hello today", SearchMode::Bm25, 3));
    req.filter.time.time_zone = Some("Mars/Olympus".into());
    let err = store.retrieve(&req).unwrap_err().to_string();
    assert!(err.contains("Mars/Olympus"), "{err}");
}

/// Turns a store written by this version back into schema 1: no `superseded` or `expiries`
/// databases, schema version 1 (its records already have the schema-1 shape: no new fields).
fn downgrade_to_schema_1(dir: &std::path::Path) {
    use heed::types::Bytes;
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .map_size(256 * 1024 * 1024)
            .max_dbs(32)
            .open(dir.join("lmdb"))
    }
    .unwrap();
    let wtxn = env.write_txn().unwrap();
    env.create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_, heed::Error> {
        for name in ["superseded", "expiries"] {
            let db = dbo
                .open_database::<Bytes, Bytes>(wtxn, Some(name))?
                .expect("a schema-2 database");
            // SAFETY: no other handle on this database is open.
            unsafe { db.remove(wtxn) }?;
        }
        let meta = dbo
            .open_database::<Bytes, Bytes>(wtxn, Some("meta"))?
            .expect("meta");
        meta.put(wtxn, b"schema_version", &1u64.to_be_bytes())?;
        Ok(heed::CommitOrAbort::<(), ()>::Commit(()))
    })
    .unwrap();
    env.prepare_for_closing().wait();
}

#[test]
fn a_schema_1_store_opens_and_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .add(vec![mem(
                "u",
                "c1",
                "old",
                "user",
                NOW - DAY,
                "the boat leaves at nine",
            )])
            .unwrap();
        store.flush().unwrap();
    }
    downgrade_to_schema_1(dir.path());
    // A read-only open cannot create the new databases: a clear error, nothing changed.
    let err = MemoryStore::open_read_only(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("schema 1"), "{err}");
    // A writer upgrades it: old records are found, and new ones may supersede them.
    let store = open(dir.path());
    for hits in search_all(&store, "u", "boat", false) {
        assert_eq!(hits, vec!["old"]);
    }
    store
        .add(vec![replacing(
            mem("u", "c2", "new", "user", NOW, "the boat now leaves at ten"),
            &["old"],
        )])
        .unwrap();
    store.flush().unwrap();
    for hits in search_all(&store, "u", "boat", false) {
        assert_eq!(hits, vec!["new"]);
    }
    drop(store);
    // Upgraded for good: read-only opens work now.
    let ro = MemoryStore::open_read_only(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .unwrap();
    assert_eq!(
        ids(&ro
            .search(&at_now(request("u", "boat", SearchMode::Vector, 10)))
            .unwrap()),
        vec!["new"]
    );
}

#[test]
fn a_reindex_keeps_what_was_superseded_and_what_expires() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        // Key order puts "a-new" before "b-old" and "c-old" before "d-new": both orders of
        // re-insertion are exercised.
        store
            .add(vec![
                mem(
                    "u",
                    "c1",
                    "b-old",
                    "user",
                    NOW - 3 * DAY,
                    "the boat leaves at nine",
                ),
                mem(
                    "u",
                    "c1",
                    "c-old",
                    "user",
                    NOW - 3 * DAY,
                    "the bus leaves at eight",
                ),
            ])
            .unwrap();
        let mut code = mem(
            "u",
            "c1",
            "e-code",
            "user",
            NOW - DAY,
            "the boat gate code is 4711",
        );
        code.memory.expires_at_ms = Some(NOW);
        store
            .add(vec![
                replacing(
                    mem(
                        "u",
                        "c2",
                        "a-new",
                        "user",
                        NOW - DAY,
                        "the boat now leaves at ten",
                    ),
                    &["b-old"],
                ),
                replacing(
                    mem(
                        "u",
                        "c2",
                        "d-new",
                        "user",
                        NOW - DAY,
                        "the bus now leaves at seven",
                    ),
                    &["c-old"],
                ),
                code,
            ])
            .unwrap();
    }
    let new_model = voicerag::store::ModelInfo {
        name: "hashed-bow-32".into(),
        dimension: 32,
    };
    MemoryStore::reindex(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &new_model,
        2,
        |batch| {
            Ok(batch
                .iter()
                .map(|m| {
                    vec![voicerag::store::ChunkInput {
                        text: m.text.clone(),
                        embedding: embed_dim(&m.text, 32),
                    }]
                })
                .collect())
        },
    )
    .unwrap();
    let store = MemoryStore::open(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &new_model,
    )
    .unwrap();
    store.flush().unwrap();
    for mode in MODES {
        for (text, want) in [("boat leaves", "a-new"), ("bus leaves", "d-new")] {
            let mut req = at_now(request("u", text, mode, 10));
            req.embedding = Some(embed_dim(text, 32));
            let got = ids(&store.search(&req).unwrap());
            assert!(got.contains(&want.to_string()), "{mode:?} {text}: {got:?}");
            assert!(
                !got.iter().any(|id| id.ends_with("-old") || id == "e-code"),
                "{mode:?} {text}: {got:?}"
            );
            req.filter.include_superseded = true;
            let all = ids(&store.search(&req).unwrap());
            assert!(
                all.iter().any(|id| id.ends_with("-old")),
                "{mode:?} {text}: {all:?}"
            );
        }
    }
}

#[test]
fn superseded_memories_take_no_place_in_a_bm25_page() {
    // BM25's best matches are both replaced: the page of one must still hold the visible one.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let text = "Rex vet appointment: the vet said Rex's vet appointment is Tuesday";
    store
        .add(vec![
            mem("u", "c1", "old1", "user", NOW - 5 * DAY, text),
            mem("u", "c1", "old2", "user", NOW - 4 * DAY, text),
        ])
        .unwrap();
    store
        .add(vec![replacing(
            mem(
                "u",
                "c2",
                "new",
                "user",
                NOW - DAY,
                "Rex's appointment moved to Friday",
            ),
            &["old1", "old2"],
        )])
        .unwrap();
    store.flush().unwrap();
    let req = at_now(request("u", "Rex vet appointment", SearchMode::Bm25, 1));
    assert_eq!(ids(&store.search(&req).unwrap()), vec!["new"]);
    let mut all = req.clone();
    all.filter.include_superseded = true;
    assert_ne!(
        ids(&store.search(&all).unwrap()),
        vec!["new"],
        "the replaced ones rank first"
    );
}

/// Ids per mode for `text` in `ns` at `now`.
fn search_at(
    store: &MemoryStore,
    ns: &str,
    text: &str,
    now: i64,
    include: bool,
) -> Vec<Vec<String>> {
    MODES
        .iter()
        .map(|m| {
            let mut req = request(ns, text, *m, 10);
            req.filter.time.now_ms = Some(now);
            req.filter.include_superseded = include;
            ids(&store.search(&req).unwrap())
        })
        .collect()
}

const READER_DIR_ENV: &str = "VOICERAG_HIDDEN_READER_DIR";
const READER_EXACT_ENV: &str = "VOICERAG_HIDDEN_READER_EXACT_MAX";

/// With `READER_DIR_ENV` set, this test binary is a read-only process beside the test's writer
/// (LMDB allows one handle per process): it opens the store once, then answers each stdin line
/// `ns|text|now|include` with `HITS <json ids per mode>`.
fn reader_if_asked() {
    let Ok(dir) = std::env::var(READER_DIR_ENV) else {
        return;
    };
    let exact_scan_max = std::env::var(READER_EXACT_ENV).unwrap().parse().unwrap();
    let cfg = StoreConfig {
        exact_scan_max,
        ..fast_config()
    };
    let ro = MemoryStore::open_read_only(
        std::path::Path::new(&dir),
        &cfg,
        &RetrievalConfig::default(),
        &model(),
    )
    .unwrap();
    let mut out = std::io::stdout();
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        let f: Vec<&str> = line.split('|').collect();
        let hits = search_at(&ro, f[0], f[1], f[2].parse().unwrap(), f[3] == "1");
        writeln!(out, "HITS {}", serde_json::to_string(&hits).unwrap()).unwrap();
        out.flush().unwrap();
    }
    std::process::exit(0);
}

/// The read-only process of `reader_if_asked`.
struct Reader {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Reader {
    fn spawn(test_name: &str, dir: &std::path::Path, exact_scan_max: usize) -> Self {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
            .env(READER_DIR_ENV, dir)
            .env(READER_EXACT_ENV, exact_scan_max.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn search(&mut self, ns: &str, text: &str, now: i64, include: bool) -> Vec<Vec<String>> {
        writeln!(self.stdin, "{ns}|{text}|{now}|{}", u8::from(include)).unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the reader process ended"
            );
            // The harness's "test NAME ... " may precede it on the same line.
            if let Some((_, json)) = line.trim().split_once("HITS ") {
                return serde_json::from_str(json).unwrap();
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Searches in the writer or in the reader process.
enum Who<'a> {
    Writer(&'a MemoryStore),
    Reader(&'a std::cell::RefCell<Reader>),
}

impl Who<'_> {
    fn search(&self, ns: &str, text: &str, now: i64, include: bool) -> Vec<Vec<String>> {
        match self {
            Who::Writer(s) => search_at(s, ns, text, now, include),
            Who::Reader(r) => r.borrow_mut().search(ns, text, now, include),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Who::Writer(_) => "writer",
            Who::Reader(_) => "reader",
        }
    }
}

#[test]
fn hidden_memories_stay_out_as_the_writer_changes_them_for_every_process() {
    reader_if_asked();
    // The hidden set is kept in RAM per namespace: every search below runs after the writer
    // and a read-only process have loaded it, so a stale copy would show the replaced memory.
    // Exact scan (small namespace) and arroy's trees (exact scan off) both.
    for exact_scan_max in [StoreConfig::default().exact_scan_max, 0] {
        let cfg = StoreConfig {
            exact_scan_max,
            ..fast_config()
        };
        let retrieval = RetrievalConfig::default();
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::open(dir.path(), &cfg, &retrieval, &model()).unwrap();
        store
            .add(vec![
                mem(
                    "u",
                    "c1",
                    "old",
                    "user",
                    NOW - 3 * DAY,
                    "the gate code is 4711",
                ),
                mem(
                    "u",
                    "c1",
                    "park",
                    "user",
                    NOW - 3 * DAY,
                    "Rex likes the park",
                ),
                mem(
                    "v",
                    "c1",
                    "old",
                    "user",
                    NOW - 3 * DAY,
                    "the gate code is 1234",
                ),
            ])
            .unwrap();
        store.flush().unwrap();
        let reader = std::cell::RefCell::new(Reader::spawn(
            "hidden_memories_stay_out_as_the_writer_changes_them_for_every_process",
            dir.path(),
            exact_scan_max,
        ));
        let both = [Who::Writer(&store), Who::Reader(&reader)];
        let has = |hits: &[String], id: &str| hits.iter().any(|h| h == id);
        for who in &both {
            for hits in who.search("u", "gate code", NOW, false) {
                assert!(has(&hits, "old"), "loaded with nothing hidden: {hits:?}");
            }
        }
        // Superseded after both processes loaded the namespace's hidden set.
        store
            .add(vec![replacing(
                mem(
                    "u",
                    "c2",
                    "new",
                    "user",
                    NOW - DAY,
                    "the new gate code is 9035",
                ),
                &["old"],
            )])
            .unwrap();
        for who in &both {
            let name = who.name();
            for hits in who.search("u", "gate code", NOW, false) {
                assert!(!has(&hits, "old"), "{name}, {exact_scan_max}: {hits:?}");
            }
            for hits in who.search("u", "gate code", NOW, true) {
                assert!(has(&hits, "old"), "{name}, asked for: {hits:?}");
            }
            // Another user's memory of the same id is not touched.
            for hits in who.search("v", "gate code", NOW, false) {
                assert_eq!(hits, vec!["old"], "{name}");
            }
        }
        // An expiry added after the sets were loaded, then passing.
        let mut temp = mem(
            "u",
            "c3",
            "temp",
            "user",
            NOW - DAY,
            "the gate is open today",
        );
        temp.memory.expires_at_ms = Some(NOW + DAY);
        store.add(vec![temp]).unwrap();
        store.flush().unwrap();
        for who in &both {
            let name = who.name();
            let before = who.search("u", "gate", NOW, false);
            assert!(
                has(&before[1], "temp"),
                "{name}, before its expiry: {before:?}"
            );
            for hits in who.search("u", "gate", NOW + DAY, false) {
                assert!(!has(&hits, "temp"), "{name}, expired: {hits:?}");
                assert!(!has(&hits, "old"), "{name}, expired: {hits:?}");
            }
            let asked = who.search("u", "gate", NOW + DAY, true);
            for (mode, hits) in MODES.iter().zip(asked) {
                // A reader's BM25 follows the writer's commits with a delay.
                if name == "reader" && *mode == SearchMode::Bm25 {
                    continue;
                }
                assert!(has(&hits, "temp") && has(&hits, "old"), "{name}: {hits:?}");
            }
        }
        // Forgetting the replacement leaves the replaced memory replaced (it stays stored).
        assert_eq!(store.delete_ids("u", &["new".into()]).unwrap(), 1);
        for who in &both {
            for hits in who.search("u", "gate code", NOW + DAY, false) {
                assert!(!has(&hits, "old") && !has(&hits, "new"), "{hits:?}");
            }
        }
        // After a restart, the hidden sets are loaded from LMDB again.
        drop(reader);
        drop(store);
        let store = MemoryStore::open(dir.path(), &cfg, &retrieval, &model()).unwrap();
        for hits in search_at(&store, "u", "gate", NOW + DAY, false) {
            assert!(
                !has(&hits, "old") && !has(&hits, "temp"),
                "reopened: {hits:?}"
            );
        }
        for hits in search_at(&store, "u", "gate", NOW + DAY, true) {
            assert!(
                has(&hits, "old") && has(&hits, "temp"),
                "reopened: {hits:?}"
            );
        }
    }
}
