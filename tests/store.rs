//! Behaviour of the durable hybrid memory store (synthetic embeddings, no model).

mod store_support;

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use store_support::*;
use voicerag::actors::messages::SearchMode;
use voicerag::store::{
    ChunkInput, MemoryStore, ModelInfo, NewMemory, RetrievalConfig, StoreConfig, StoreError,
};

const MODES: [SearchMode; 3] = [SearchMode::Hybrid, SearchMode::Vector, SearchMode::Bm25];

#[test]
fn re_adding_an_id_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = store
        .add(vec![
            simple("u1", "a", "I like green tea"),
            simple("u1", "a", "something else"),
        ])
        .unwrap();
    assert_eq!(r.stored, vec!["a"]);
    assert_eq!(r.duplicates, vec!["a"]);
    let r = store
        .add(vec![simple("u1", "a", "I like green tea")])
        .unwrap();
    assert!(r.stored.is_empty());
    assert_eq!(r.duplicates, vec!["a"]);
    // The same id in another namespace is another memory.
    let r = store
        .add(vec![simple("u2", "a", "I like green tea")])
        .unwrap();
    assert_eq!(r.stored, vec!["a"]);
    assert_eq!(store.len().unwrap(), 2);
    store.flush().unwrap();
    let hits = store
        .search(&request("u1", "green tea", SearchMode::Hybrid, 10))
        .unwrap();
    assert_eq!(ids(&hits), vec!["a"]);
    assert_eq!(hits[0].text, "I like green tea", "the first write wins");
}

#[test]
fn namespaces_never_mix_in_any_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .add(vec![simple("alice", "a1", "my dog is called Rex")])
        .unwrap();
    store
        .add(vec![
            simple("bob", "b1", "my dog is called Rex"),
            simple("bob", "b2", "the dog barks"),
        ])
        .unwrap();
    // Before and after BM25 commit / tree build.
    for flushed in [false, true] {
        if flushed {
            store.flush().unwrap();
        }
        for mode in MODES {
            let hits = store
                .search(&request("alice", "dog called Rex", mode, 10))
                .unwrap();
            if mode == SearchMode::Bm25 && !flushed {
                assert!(ids(&hits).iter().all(|i| i == "a1"));
                continue;
            }
            assert_eq!(ids(&hits), vec!["a1"], "mode {mode:?} flushed {flushed}");
        }
        assert!(
            store
                .search(&request("carol", "dog", SearchMode::Hybrid, 10))
                .unwrap()
                .is_empty()
        );
    }
}

#[test]
fn hybrid_hits_carry_ranks_and_fused_scores() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .add(vec![
            simple("u", "m1", "we talked about the trip to Lisbon in May"),
            simple("u", "m2", "my sister lives in Porto"),
            simple("u", "m3", "the weather is nice today"),
        ])
        .unwrap();
    store.flush().unwrap();
    let hits = store
        .search(&request("u", "trip to Lisbon", SearchMode::Hybrid, 3))
        .unwrap();
    assert_eq!(hits[0].id, "m1");
    assert_eq!(hits[0].vector_rank, Some(1));
    assert_eq!(hits[0].bm25_rank, Some(1));
    // Convex fusion (the default): first on both sides, so 1.0 after min-max normalisation.
    assert!((hits[0].score - 1.0).abs() < 1e-6, "{}", hits[0].score);
    assert!(hits.iter().all(|h| h.similarity.is_some()));
    for w in hits.windows(2) {
        assert!(w[0].score >= w[1].score);
    }
    let v = store
        .search(&request("u", "trip to Lisbon", SearchMode::Vector, 3))
        .unwrap();
    assert!(
        v[0].score > 0.5 && v[0].score <= 1.0001,
        "vector mode scores are cosine: {}",
        v[0].score
    );
    assert!(v.iter().all(|h| h.bm25_rank.is_none()));
}

/// Builds a namespace where the filtered-for memory is NOT in the unfiltered top-N: a filter
/// applied after top-N would lose it.
fn crowded_store(dir: &std::path::Path) -> MemoryStore {
    let retrieval = RetrievalConfig {
        candidates: 5,
        ..RetrievalConfig::default()
    };
    let store = MemoryStore::open(dir, &fast_config(), &retrieval, &model()).unwrap();
    let mut batch = Vec::new();
    for i in 0..60 {
        batch.push(mem(
            "u",
            "busy",
            &format!("busy/{i}"),
            "user",
            1_000 + i,
            "coffee coffee espresso coffee beans",
        ));
    }
    batch.push(mem(
        "u",
        "quiet",
        "quiet/1",
        "agent",
        500,
        "I once mentioned coffee and a long walk by the river",
    ));
    store.add(batch).unwrap();
    store
}

#[test]
fn filters_apply_before_top_n() {
    let dir = tempfile::tempdir().unwrap();
    let store = crowded_store(dir.path());
    for flushed in [false, true] {
        if flushed {
            store.flush().unwrap();
        }
        for mode in MODES {
            if mode == SearchMode::Bm25 && !flushed {
                continue;
            }
            let mut req = request("u", "coffee", mode, 1);
            req.filter.conversation = Some("quiet".into());
            assert_eq!(
                ids(&store.search(&req).unwrap()),
                vec!["quiet/1"],
                "conversation {mode:?}"
            );

            let mut req = request("u", "coffee", mode, 1);
            req.filter.speaker = Some("agent".into());
            assert_eq!(
                ids(&store.search(&req).unwrap()),
                vec!["quiet/1"],
                "speaker {mode:?}"
            );

            let mut req = request("u", "coffee", mode, 1);
            req.filter.until_ms = Some(1_000);
            assert_eq!(
                ids(&store.search(&req).unwrap()),
                vec!["quiet/1"],
                "until {mode:?}"
            );

            let mut req = request("u", "coffee", mode, 100);
            req.filter.since_ms = Some(1_050);
            req.filter.until_ms = Some(1_055);
            let mut got = ids(&store.search(&req).unwrap());
            got.sort();
            assert_eq!(
                got,
                vec!["busy/50", "busy/51", "busy/52", "busy/53", "busy/54"],
                "window {mode:?}"
            );

            // Excluding the 60 most recent turns of "busy" leaves only "quiet".
            let mut req = request("u", "coffee", mode, 1);
            req.filter.exclude_recent = Some(("busy".into(), 60));
            assert_eq!(
                ids(&store.search(&req).unwrap()),
                vec!["quiet/1"],
                "exclude_recent {mode:?}"
            );

            let mut req = request("u", "coffee", mode, 100);
            req.filter.exclude_recent = Some(("busy".into(), 3));
            let got = ids(&store.search(&req).unwrap());
            assert_eq!(got.len(), 58, "{mode:?}");
            for recent in ["busy/57", "busy/58", "busy/59"] {
                assert!(
                    !got.contains(&recent.to_string()),
                    "{recent} must be excluded ({mode:?})"
                );
            }
        }
    }
}

#[test]
fn a_long_memory_is_one_hit_with_its_best_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let parts = [
        "my grandmother grew tomatoes in her garden",
        "she also kept bees behind the garden shed",
        "and every summer we made tomato sauce together",
    ];
    let text = parts.join(" ");
    let chunks = parts
        .iter()
        .map(|p| ChunkInput {
            text: p.to_string(),
            embedding: embed(p),
        })
        .collect();
    let mut long = simple("u", "long", &text);
    long.chunks = chunks;
    store
        .add(vec![long, simple("u", "short", "bees make honey")])
        .unwrap();
    for flushed in [false, true] {
        if flushed {
            store.flush().unwrap();
        }
        for mode in [SearchMode::Hybrid, SearchMode::Vector] {
            let hits = store
                .search(&request("u", "bees behind the garden shed", mode, 10))
                .unwrap();
            let longs: Vec<_> = hits.iter().filter(|h| h.id == "long").collect();
            assert_eq!(longs.len(), 1, "{mode:?}: {hits:?}");
            assert_eq!(longs[0].text, parts[1], "the best chunk names the memory");
        }
    }
    let hits = store
        .search(&request("u", "garden", SearchMode::Bm25, 10))
        .unwrap();
    assert_eq!(hits.iter().filter(|h| h.id == "long").count(), 1);
}

#[test]
fn forgotten_memories_are_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .add(vec![
            mem(
                "u",
                "c1",
                "c1/1",
                "user",
                10,
                "the parcel arrives on Monday",
            ),
            mem(
                "u",
                "c1",
                "c1/2",
                "agent",
                20,
                "I will remind you about the parcel",
            ),
            mem(
                "u",
                "c2",
                "c2/1",
                "user",
                30,
                "parcel tracking number is 42",
            ),
            mem("u", "c3", "c3/1", "user", 5_000, "parcel for the neighbour"),
            mem("v", "c1", "c1/1", "user", 10, "a parcel for v"),
        ])
        .unwrap();
    // Build everything, so deletions must reach built trees and committed BM25 documents.
    store.flush().unwrap();
    let all = |store: &MemoryStore, ns: &str| -> Vec<Vec<String>> {
        MODES
            .iter()
            .map(|m| ids(&store.search(&request(ns, "parcel", *m, 10)).unwrap()))
            .collect()
    };
    assert_eq!(all(&store, "u")[0].len(), 4);

    assert_eq!(
        store
            .delete_ids("u", &["c1/2".into(), "missing".into()])
            .unwrap(),
        1
    );
    for list in all(&store, "u") {
        assert!(
            !list.contains(&"c1/2".into()),
            "deleted id returned: {list:?}"
        );
    }
    assert_eq!(store.delete_conversation("u", "c1").unwrap(), 1);
    assert_eq!(
        store.delete_older_than(1_000).unwrap(),
        2,
        "c2/1 in u and c1/1 in v"
    );
    for list in all(&store, "u") {
        assert_eq!(list, vec!["c3/1"]);
    }
    assert!(all(&store, "v").iter().all(|l| l.is_empty()));
    // After BM25 commit and tree build too.
    store.flush().unwrap();
    for list in all(&store, "u") {
        assert_eq!(list, vec!["c3/1"]);
    }
    assert_eq!(store.delete_namespace("u").unwrap(), 1);
    assert!(all(&store, "u").iter().all(|l| l.is_empty()));
    store.flush().unwrap();
    assert!(all(&store, "u").iter().all(|l| l.is_empty()));
    let stats = store.stats().unwrap();
    assert_eq!(
        (
            stats.memories,
            stats.chunks,
            stats.pending_vectors,
            stats.pending_vector_deletes
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(stats.bm25_docs, 0);
    // A forgotten id may be stored again.
    assert_eq!(
        store
            .add(vec![simple("u", "c1/1", "new parcel")])
            .unwrap()
            .stored,
        vec!["c1/1"]
    );
}

#[test]
fn fresh_memories_are_found_by_vector_at_once_and_bm25_within_500ms() {
    let dir = tempfile::tempdir().unwrap();
    // The default commit cadence (200 ms), not the tests' fast one.
    let store = MemoryStore::open(
        dir.path(),
        &StoreConfig::default(),
        &RetrievalConfig::default(),
        &model(),
    )
    .unwrap();
    // A built index first, so the fresh one is pending next to built trees.
    let old: Vec<_> = (0..300)
        .map(|i| simple("u", &format!("old/{i}"), &format!("old note number {i}")))
        .collect();
    store.add(old).unwrap();
    store.flush().unwrap();
    for round in 0..3 {
        let text = format!("the locker code is zebra{round} {round}");
        store
            .add(vec![simple("u", &format!("fresh/{round}"), &text)])
            .unwrap();
        let acked = Instant::now();
        let hits = store
            .search(&request("u", &text, SearchMode::Vector, 1))
            .unwrap();
        assert_eq!(
            ids(&hits),
            vec![format!("fresh/{round}")],
            "vector search right after add"
        );
        let found_by_bm25 = loop {
            let hits = store
                .search(&request("u", &format!("zebra{round}"), SearchMode::Bm25, 1))
                .unwrap();
            if ids(&hits) == vec![format!("fresh/{round}")] {
                break acked.elapsed();
            }
            assert!(
                acked.elapsed() < Duration::from_millis(500),
                "BM25 did not find it within 500 ms"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(found_by_bm25 < Duration::from_millis(500));
    }
}

#[test]
fn bad_records_are_rejected_and_the_rest_stored() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_text_bytes: 100,
        ..fast_config()
    };
    let store = MemoryStore::open(dir.path(), &cfg, &RetrievalConfig::default(), &model()).unwrap();
    let mut wrong_dim = simple("u", "dim", "wrong dimension");
    wrong_dim.chunks[0].embedding = vec![1.0; DIM + 1];
    let mut zero = simple("u", "zero", "zero vector");
    zero.chunks[0].embedding = vec![0.0; DIM];
    let mut nan = simple("u", "nan", "nan vector");
    nan.chunks[0].embedding[3] = f32::NAN;
    let mut no_chunks = simple("u", "nochunks", "no chunks");
    no_chunks.chunks.clear();
    let batch = vec![
        simple("u", "ok1", "fine"),
        simple("u", "", "no id"),
        simple("u", "ws", "   \n\t "),
        simple("u", "long", &"x".repeat(101)),
        wrong_dim,
        zero,
        nan,
        no_chunks,
        simple("", "nons", "no namespace"),
        simple("u", &"i".repeat(200), "id too long"),
        simple("u", "ok2", "also fine"),
    ];
    let r = store.add(batch).unwrap();
    assert_eq!(r.stored, vec!["ok1", "ok2"]);
    let reasons: Vec<(usize, &str)> = r.rejected.iter().map(|(i, s)| (*i, s.as_str())).collect();
    assert_eq!(
        reasons.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    assert!(reasons[0].1.contains("missing id"));
    assert!(reasons[1].1.contains("empty text"));
    assert!(reasons[2].1.contains("101 bytes") && reasons[2].1.contains("max_text_bytes"));
    assert!(reasons[3].1.contains("65 dimensions") && reasons[3].1.contains("64"));
    assert!(reasons[4].1.contains("zero"));
    assert!(reasons[5].1.contains("not finite"));
    assert!(reasons[6].1.contains("no chunks"));
    assert!(reasons[7].1.contains("namespace"));
    assert!(reasons[8].1.contains("id is 200 bytes"));
    assert_eq!(store.len().unwrap(), 2);
}

#[test]
fn asr_text_with_query_syntax_is_just_words() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .add(vec![simple(
            "u",
            "m",
            "remind me: call mum at 5 - \"urgent\"",
        )])
        .unwrap();
    store.flush().unwrap();
    for q in [
        "call: mum",
        "\"urgent",
        "- mum -",
        "AND OR NOT ( ) [ ] ^ ~ * ? : \\",
        "",
        "the a of",
    ] {
        for mode in MODES {
            let hits = store.search(&request("u", q, mode, 5));
            assert!(hits.is_ok(), "{q:?} {mode:?}: {hits:?}");
        }
    }
    let hits = store
        .search(&request("u", "call: \"mum\" -urgent", SearchMode::Bm25, 5))
        .unwrap();
    assert_eq!(ids(&hits), vec!["m"]);
    // Stemming: "calling" finds "call".
    let hits = store
        .search(&request("u", "calling", SearchMode::Bm25, 5))
        .unwrap();
    assert_eq!(ids(&hits), vec!["m"]);
}

#[test]
fn opening_with_another_model_names_reindex() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.add(vec![simple("u", "a", "hello there")]).unwrap();
    }
    for other in [
        ModelInfo {
            name: "other".into(),
            dimension: DIM,
        },
        ModelInfo {
            name: model().name,
            dimension: 32,
        },
    ] {
        let err = MemoryStore::open(
            dir.path(),
            &fast_config(),
            &RetrievalConfig::default(),
            &other,
        )
        .err()
        .unwrap();
        assert!(matches!(err, StoreError::ModelMismatch { .. }), "{err}");
        assert!(err.to_string().contains("voicerag reindex"), "{err}");
        let err = MemoryStore::open_read_only(
            dir.path(),
            &fast_config(),
            &RetrievalConfig::default(),
            &other,
        )
        .err()
        .unwrap();
        assert!(matches!(err, StoreError::ModelMismatch { .. }), "{err}");
    }
    // The store is untouched: the right model still opens it with its memory.
    let store = open(dir.path());
    assert_eq!(store.len().unwrap(), 1);
}

#[test]
fn reindex_switches_the_model_and_keeps_every_memory() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let batch: Vec<_> = (0..120)
            .map(|i| {
                simple(
                    "u",
                    &format!("m{i}"),
                    &format!("memory number {i} about topic{i}"),
                )
            })
            .collect();
        store.add(batch).unwrap();
        store
            .add(vec![simple("w", "x", "the other namespace")])
            .unwrap();
        store.delete_ids("u", &["m7".into()]).unwrap();
    }
    let new_model = ModelInfo {
        name: "hashed-bow-32".into(),
        dimension: 32,
    };
    let mut calls = 0;
    let report = MemoryStore::reindex(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &new_model,
        50,
        |batch| {
            calls += 1;
            Ok(batch
                .iter()
                .map(|m| {
                    vec![ChunkInput {
                        text: m.text.clone(),
                        embedding: embed_dim(&m.text, 32),
                    }]
                })
                .collect())
        },
    )
    .unwrap();
    assert_eq!(report.memories, 120);
    assert_eq!(report.from_model.as_deref(), Some("hashed-bow-64"));
    assert_eq!(calls, 3);
    let err = MemoryStore::open(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::ModelMismatch { .. }));
    let store = MemoryStore::open(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &new_model,
    )
    .unwrap();
    let mut req = request("u", "memory number 42 about topic42", SearchMode::Vector, 1);
    req.embedding = Some(embed_dim(&req.text, 32));
    assert_eq!(ids(&store.search(&req).unwrap()), vec!["m42"]);
    req.mode = SearchMode::Bm25;
    assert_eq!(ids(&store.search(&req).unwrap()), vec!["m42"]);
    req.text = "topic7".into();
    req.embedding = Some(embed_dim("memory number 7 about topic7", 32));
    for mode in MODES {
        req.mode = mode;
        assert!(!ids(&store.search(&req).unwrap()).contains(&"m7".into()));
    }
    let stats = store.stats().unwrap();
    assert_eq!(
        (
            stats.memories,
            stats.chunks,
            stats.bm25_docs,
            stats.dimension
        ),
        (120, 120, 120, 32)
    );
}

#[test]
fn a_failed_reindex_leaves_the_old_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .add(
                (0..10)
                    .map(|i| simple("u", &format!("m{i}"), "some text"))
                    .collect(),
            )
            .unwrap();
    }
    let new_model = ModelInfo {
        name: "new".into(),
        dimension: 16,
    };
    let err = MemoryStore::reindex(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &new_model,
        4,
        |batch| {
            // Wrong dimension: the reindex must refuse before switching anything.
            Ok(batch
                .iter()
                .map(|m| {
                    vec![ChunkInput {
                        text: m.text.clone(),
                        embedding: embed_dim(&m.text, 8),
                    }]
                })
                .collect())
        },
    )
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::Reindex(_)), "{err}");
    let store = open(dir.path());
    assert_eq!(store.len().unwrap(), 10);
    assert_eq!(
        store
            .search(&request("u", "some text", SearchMode::Vector, 20))
            .unwrap()
            .len(),
        10
    );
}

#[test]
fn a_second_writer_is_refused_and_read_only_is_refused_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = MemoryStore::open(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked"));
    store.add(vec![simple("u", "a", "kept")]).unwrap();
    drop(store);
    let ro = MemoryStore::open_read_only(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .unwrap();
    assert!(matches!(
        ro.add(vec![simple("u", "b", "x")]),
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(
        ro.delete_namespace("u"),
        Err(StoreError::ReadOnly)
    ));
    for mode in MODES {
        assert_eq!(
            ids(&ro.search(&request("u", "kept", mode, 5)).unwrap()),
            vec!["a"],
            "{mode:?}"
        );
    }
}

#[test]
fn a_directory_that_is_not_a_store_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = MemoryStore::open(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
    let err = MemoryStore::open_read_only(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");

    // A garbage "LMDB" file is not a store either.
    let fake = tempfile::tempdir().unwrap();
    std::fs::create_dir(fake.path().join("lmdb")).unwrap();
    std::fs::write(fake.path().join("lmdb").join("data.mdb"), vec![7u8; 8192]).unwrap();
    let err = MemoryStore::open(
        fake.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert_eq!(
        std::fs::read(fake.path().join("lmdb").join("data.mdb")).unwrap(),
        vec![7u8; 8192]
    );
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.add(vec![simple("u", "a", "x")]).unwrap();
    }
    // Pretend a future voicerag wrote this store.
    {
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .max_dbs(20)
                .map_size(256 << 20)
                .open(dir.path().join("lmdb"))
        }
        .unwrap();
        let meta = env
            .create_databases_and_commit(env.write_txn().unwrap(), |dbo, wtxn| {
                dbo.create_database::<heed::types::Bytes, heed::types::Bytes>(wtxn, Some("meta"))
                    .map(heed::CommitOrAbort::<_, ()>::Commit)
            })
            .unwrap()
            .unwrap_commit();
        let mut wtxn = env.write_txn().unwrap();
        meta.put(&mut wtxn, b"schema_version", &99u64.to_be_bytes())
            .unwrap();
        wtxn.commit().unwrap();
    }
    let before = std::fs::read(dir.path().join("lmdb").join("data.mdb")).unwrap();
    let err = MemoryStore::open(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer"));
    assert_eq!(
        std::fs::read(dir.path().join("lmdb").join("data.mdb")).unwrap(),
        before
    );
}

#[test]
fn a_full_map_is_a_clear_error_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        map_size_mib: 2,
        ..fast_config()
    };
    let store = MemoryStore::open(dir.path(), &cfg, &RetrievalConfig::default(), &model()).unwrap();
    let mut stored = 0;
    let mut full = None;
    for b in 0..200 {
        let batch: Vec<_> = (0..50)
            .map(|i| {
                simple(
                    "u",
                    &format!("{b}/{i}"),
                    &format!("text {b} {i} {}", "pad ".repeat(50)),
                )
            })
            .collect();
        match store.add(batch) {
            Ok(r) => stored += r.stored.len(),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let err = full.expect("a 2 MiB map must fill up");
    assert!(
        matches!(err, StoreError::MapFull { map_size_mib: 2 }),
        "{err}"
    );
    assert!(err.to_string().contains("map_size_mib"));
    assert_eq!(
        store.len().unwrap() as usize,
        stored,
        "the failed batch wrote nothing, the acknowledged ones stay"
    );
}

#[test]
fn vector_search_spans_built_and_pending_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        vector_build_batch: 100,
        ..fast_config()
    };
    let store = MemoryStore::open(dir.path(), &cfg, &RetrievalConfig::default(), &model()).unwrap();
    let texts: Vec<String> = (0..500)
        .map(|i| format!("unique{i} word{} thing{}", i % 7, i % 13))
        .collect();
    store
        .add(
            texts
                .iter()
                .enumerate()
                .map(|(i, t)| simple("u", &format!("m{i}"), t))
                .collect(),
        )
        .unwrap();
    store.flush().unwrap();
    assert_eq!(store.stats().unwrap().pending_vectors, 0);
    store
        .add(
            (500..520)
                .map(|i| simple("u", &format!("m{i}"), &format!("unique{i} fresh")))
                .collect(),
        )
        .unwrap();
    // Exact-text queries must come back first, built or pending.
    for i in [0usize, 17, 250, 499] {
        let hits = store
            .search(&request("u", &texts[i], SearchMode::Vector, 1))
            .unwrap();
        assert_eq!(ids(&hits), vec![format!("m{i}")]);
    }
    let hits = store
        .search(&request("u", "unique510 fresh", SearchMode::Vector, 1))
        .unwrap();
    assert_eq!(ids(&hits), vec!["m510"]);
    let mut seen = 0;
    store
        .for_each_memory(Some("u"), |_| {
            seen += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen, 520);
}

#[test]
fn only_namespaces_the_exact_scan_may_outgrow_get_trees_and_the_others_stay_found() {
    let dir = tempfile::tempdir().unwrap();
    let texts = |ns: &str, range: std::ops::Range<usize>| -> Vec<_> {
        range
            .map(|i| {
                simple(
                    ns,
                    &format!("m{i}"),
                    &format!("unique{i} word{} thing", i % 7),
                )
            })
            .collect()
    };
    let find = |store: &MemoryStore, ns: &str, i: usize| {
        let text = format!("unique{i} word{} thing", i % 7);
        ids(&store
            .search(&request(ns, &text, SearchMode::Vector, 1))
            .unwrap())
    };
    // Trees from 50 chunks: "small" (30) never needs them, "big" (80) does.
    let cfg = StoreConfig {
        exact_scan_max: 100,
        ..fast_config()
    };
    {
        let store =
            MemoryStore::open(dir.path(), &cfg, &RetrievalConfig::default(), &model()).unwrap();
        store.add(texts("small", 0..30)).unwrap();
        store.flush().unwrap();
        let stats = store.stats().unwrap();
        assert_eq!(
            stats.pending_vectors, 0,
            "vectors leave pending all the same"
        );
        assert_eq!(
            stats.vector_tree_builds, 0,
            "30 chunks are searched exactly"
        );
        store.add(texts("big", 0..80)).unwrap();
        store.flush().unwrap();
        assert!(store.stats().unwrap().vector_tree_builds >= 1);
        assert_eq!(find(&store, "small", 17), vec!["m17"]);
        assert_eq!(find(&store, "big", 63), vec!["m63"]);
    }
    // A smaller exact_scan_max later: "small" is past it without trees, and its vectors are
    // still found (scanned from the stored items) until a write builds them.
    let cfg = StoreConfig {
        exact_scan_max: 10,
        ..fast_config()
    };
    let store = MemoryStore::open(dir.path(), &cfg, &RetrievalConfig::default(), &model()).unwrap();
    for i in [0, 17, 29] {
        assert_eq!(find(&store, "small", i), vec![format!("m{i}")]);
    }
    store.add(texts("small", 30..31)).unwrap();
    store.flush().unwrap();
    assert_eq!(store.stats().unwrap().vector_tree_builds, 1);
    assert_eq!(find(&store, "small", 29), vec!["m29"]);
}

#[test]
fn bm25_is_caught_up_on_open_after_it_lost_its_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .add(
                (0..30)
                    .map(|i| simple("u", &format!("m{i}"), &format!("word{i} common")))
                    .collect(),
            )
            .unwrap();
        store.delete_ids("u", &["m3".into()]).unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("bm25")).unwrap();
    let store = open(dir.path());
    let hits = store
        .search(&request("u", "word5", SearchMode::Bm25, 3))
        .unwrap();
    assert_eq!(ids(&hits), vec!["m5"]);
    assert!(
        store
            .search(&request("u", "word3", SearchMode::Bm25, 3))
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.stats().unwrap().bm25_docs, 29);
    assert_eq!(store.stats().unwrap().bm25_lag, 0);
}

#[test]
fn retention_forgets_old_memories_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        retention_max_age_s: 3600,
        retention_check_ms: 50,
        ..fast_config()
    };
    let store = MemoryStore::open(dir.path(), &cfg, &RetrievalConfig::default(), &model()).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    store
        .add(vec![
            mem("u", "c", "old", "user", now - 7_200_000, "an old memory"),
            mem("u", "c", "new", "user", now - 60_000, "a new memory"),
        ])
        .unwrap();
    let start = Instant::now();
    while store.len().unwrap() != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "retention did not run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        ids(&store
            .search(&request("u", "memory", SearchMode::Vector, 5))
            .unwrap()),
        vec!["new"]
    );
}

#[test]
fn stats_report_counts_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .add(vec![simple("a", "1", "one"), simple("b", "1", "two")])
        .unwrap();
    store.flush().unwrap();
    let s = store.stats().unwrap();
    assert_eq!(
        (
            s.memories,
            s.chunks,
            s.namespaces,
            s.bm25_docs,
            s.bm25_lag,
            s.pending_vectors
        ),
        (2, 2, 2, 2, 0, 0)
    );
    assert!(s.disk_bytes > 0);
    assert_eq!(s.model, "hashed-bow-64");
    let _ = NewMemory {
        memory: simple("a", "x", "y").memory,
        chunks: vec![],
    };
}

#[test]
fn concurrent_writers_and_readers_share_one_store() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<MemoryStore>();
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        vector_build_batch: 50,
        ..fast_config()
    };
    let store = std::sync::Arc::new(
        MemoryStore::open(dir.path(), &cfg, &RetrievalConfig::default(), &model()).unwrap(),
    );
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    let id = format!("w{w}/{i}");
                    let text = format!("writer{w} item{i} uniq{w}x{i}");
                    assert_eq!(
                        store.add(vec![simple("u", &id, &text)]).unwrap().stored,
                        vec![id.clone()]
                    );
                    // Acknowledged means findable by vector search, whatever the builder is doing.
                    let hits = store
                        .search(&request("u", &text, SearchMode::Vector, 1))
                        .unwrap();
                    assert_eq!(ids(&hits), vec![id]);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    for mode in MODES {
                        let hits = store
                            .search(&request(
                                "u",
                                &format!("writer{} item{}", r, i % 100),
                                mode,
                                5,
                            ))
                            .unwrap();
                        assert!(hits.len() <= 5);
                    }
                }
            })
        })
        .collect();
    for t in writers.into_iter().chain(readers) {
        t.join().unwrap();
    }
    store.flush().unwrap();
    assert_eq!(store.len().unwrap(), 200);
    assert_eq!(store.stats().unwrap().bm25_docs, 200);
}

/// A restart in the same process waits for the store's closed signal, not for its last `Arc`:
/// the strong count reaches 0 as the drop starts, before the background threads are joined
/// (the BM25 committer's last commit among them) and the writer lock is released.
#[test]
fn once_the_closed_signal_is_set_the_data_directory_opens_again() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let store = Arc::new(open(dir.path()));
        // Uncommitted BM25 work: the committer's final commit happens inside the drop.
        store
            .add(vec![simple(
                "u",
                &format!("m{round}"),
                "a memory for the last commit",
            )])
            .unwrap();
        let closed = store.closed_signal();
        assert!(!closed.is_closed());
        let weak = Arc::downgrade(&store);
        let dropper = std::thread::spawn(move || drop(store));
        let until = Instant::now() + Duration::from_secs(30);
        while !closed.is_closed() {
            assert!(Instant::now() < until, "round {round}: never closed");
            std::thread::yield_now();
        }
        assert_eq!(weak.strong_count(), 0);
        // Opens at once: a signal set before the lock is released would make this `Locked`.
        let again = open(dir.path());
        assert_eq!(again.stats().unwrap().memories, round as u64 + 1);
        drop(again);
        dropper.join().unwrap();
    }
}
