//! Retrieval behaviour added for quality: exact vector search (and its agreement with arroy's
//! trees), determinism across ingests, BM25 analysis, fusion choices, similarity on every hybrid
//! hit, and an empty store. Synthetic embeddings, no model.

mod store_support;

use store_support::*;
use voicerag::actors::messages::{SearchFilter, SearchMode};
use voicerag::store::{Fusion, MemoryStore, RetrievalConfig, StoreConfig};

fn corpus() -> Vec<voicerag::store::NewMemory> {
    let topics = [
        "trip to Lisbon in May with my sister",
        "the vet appointment for Rex on Friday",
        "dinner recipe with rice and beans",
        "the car needs new tyres before winter",
        "Marta's birthday party next Saturday",
        "how do I reset the router password",
        "a book about the history of Porto",
        "running a marathon in October",
    ];
    (0..200)
        .map(|i| {
            let t = topics[i % topics.len()];
            mem(
                "u",
                &format!("c{}", i % 5),
                &format!("m{i}"),
                if i % 2 == 0 { "user" } else { "agent" },
                1_700_000_000_000 + i as i64 * 1000,
                &format!("{t} note {i} {}", i * 7 % 13),
            )
        })
        .collect()
}

fn open_with(dir: &std::path::Path, store: StoreConfig, retrieval: RetrievalConfig) -> MemoryStore {
    MemoryStore::open(dir, &store, &retrieval, &model()).unwrap()
}

fn ranked(store: &MemoryStore, text: &str, mode: SearchMode, n: usize) -> Vec<(String, f32)> {
    store
        .search(&request("u", text, mode, n))
        .unwrap()
        .into_iter()
        .map(|h| (h.id, h.score))
        .collect()
}

#[test]
fn exact_scan_and_trees_agree_on_a_small_store() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let exact = open_with(a.path(), fast_config(), RetrievalConfig::default());
    let trees = open_with(
        b.path(),
        StoreConfig {
            exact_scan_max: 0,
            ..fast_config()
        },
        RetrievalConfig::default(),
    );
    for s in [&exact, &trees] {
        s.add(corpus()).unwrap();
        s.flush().unwrap();
    }
    for q in ["vet appointment Rex", "rice recipe", "router password"] {
        let (e, t) = (
            ranked(&exact, q, SearchMode::Vector, 5),
            ranked(&trees, q, SearchMode::Vector, 5),
        );
        // Cosines agree; ids may differ only among equal scores.
        for (x, y) in e.iter().zip(&t) {
            assert!((x.1 - y.1).abs() < 1e-5, "{q}: {e:?} vs {t:?}");
        }
    }
}

#[test]
fn two_ingests_of_the_same_data_rank_identically() {
    let runs: Vec<Vec<Vec<(String, f32)>>> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path());
            // Ingest in uneven batches, as a file is read, with builds running in between.
            let all = corpus();
            for chunk in all.chunks(37) {
                store.add(chunk.to_vec()).unwrap();
            }
            store.flush().unwrap();
            [
                "trip Lisbon sister",
                "Marta birthday",
                "tyres winter car",
                "how do I",
            ]
            .iter()
            .flat_map(|q| {
                [SearchMode::Hybrid, SearchMode::Vector, SearchMode::Bm25]
                    .map(|m| ranked(&store, q, m, 10))
            })
            .collect()
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn exact_search_follows_adds_deletes_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.add(corpus()).unwrap();
    // Loaded into RAM by this search, then kept current by the writer.
    assert!(!ranked(&store, "Rex vet", SearchMode::Vector, 3).is_empty());
    store
        .add(vec![simple("u", "new", "zebra zeppelin xylophone")])
        .unwrap();
    assert_eq!(
        ranked(&store, "zebra zeppelin xylophone", SearchMode::Vector, 1)[0].0,
        "new"
    );
    store.delete_ids("u", &["new".into()]).unwrap();
    assert!(
        ranked(&store, "zebra zeppelin xylophone", SearchMode::Vector, 200)
            .iter()
            .all(|(id, _)| id != "new")
    );
    // A filter applies inside the scan: only conversation c3's memories, still best first.
    let mut req = request("u", "trip to Lisbon", SearchMode::Vector, 5);
    req.filter = SearchFilter {
        conversation: Some("c3".into()),
        ..SearchFilter::default()
    };
    let hits = store.search(&req).unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h.conversation == "c3"));
    // Another namespace sees none of it.
    assert!(
        ranked(&store, "trip to Lisbon", SearchMode::Vector, 5)
            .iter()
            .all(|(id, _)| id.starts_with('m'))
    );
    assert!(
        store
            .search(&request("other", "trip to Lisbon", SearchMode::Vector, 5))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_read_only_handle_searches_exactly_too() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let writer = open(dir.path());
        writer.add(corpus()).unwrap();
        writer.flush().unwrap();
        ranked(&writer, "Rex vet", SearchMode::Hybrid, 5)
    };
    // (LMDB allows one handle per process: the writer is closed first.)
    let reader = MemoryStore::open_read_only(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .unwrap();
    assert_eq!(ranked(&reader, "Rex vet", SearchMode::Hybrid, 5), expected);
}

#[test]
fn bm25_ignores_function_words_and_folds_accents() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .add(vec![
            simple("u", "fn", "how do I do it, and what is it that I can do"),
            simple("u", "rice", "cook the rice for twenty minutes"),
            simple("u", "cafe", "we met at the Café Nicola"),
        ])
        .unwrap();
    store.flush().unwrap();
    let hits = ranked(&store, "how do I cook rice?", SearchMode::Bm25, 10);
    assert_eq!(
        hits.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
        ["rice"]
    );
    assert!(ranked(&store, "what is it that I can do", SearchMode::Bm25, 10).is_empty());
    assert_eq!(
        ranked(&store, "cafe nicola", SearchMode::Bm25, 10)[0].0,
        "cafe"
    );
}

#[test]
fn every_hybrid_hit_has_a_similarity_and_rrf_is_still_available() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(
        dir.path(),
        fast_config(),
        RetrievalConfig {
            fusion: Fusion::Rrf,
            ..RetrievalConfig::default()
        },
    );
    store
        .add(vec![
            simple("u", "m1", "we talked about the trip to Lisbon in May"),
            simple("u", "m2", "my sister lives in Porto"),
        ])
        .unwrap();
    store.flush().unwrap();
    let hits = store
        .search(&request("u", "trip to Lisbon", SearchMode::Hybrid, 2))
        .unwrap();
    assert_eq!(hits[0].id, "m1");
    assert!((hits[0].score - 2.0 / 61.0).abs() < 1e-6);
    let cosine = store
        .search(&request("u", "trip to Lisbon", SearchMode::Vector, 2))
        .unwrap();
    for h in &hits {
        let v = cosine.iter().find(|c| c.id == h.id).unwrap();
        assert_eq!(h.similarity, Some(v.score));
    }
}

#[test]
fn a_store_with_no_memories_yet_answers_with_no_hits() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-created-yet");
    let store = MemoryStore::open_read_only(
        &missing,
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .unwrap();
    for mode in [SearchMode::Hybrid, SearchMode::Vector, SearchMode::Bm25] {
        assert!(
            store
                .search(&request("u", "anything", mode, 5))
                .unwrap()
                .is_empty()
        );
    }
}

#[test]
fn an_index_built_by_the_old_analysis_is_rebuilt_on_open() {
    use tantivy::schema::{
        FAST, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .add(vec![
                simple("u", "fn", "how do I do it, and what is it that I can do"),
                simple("u", "rice", "cook the rice for twenty minutes"),
            ])
            .unwrap();
        store.flush().unwrap();
    }
    // Put back an (empty) index of the first analysis, as an older voicerag left it.
    let bm25 = dir.path().join("bm25");
    std::fs::remove_dir_all(&bm25).unwrap();
    std::fs::create_dir(&bm25).unwrap();
    let mut b = Schema::builder();
    b.add_u64_field("chunk", INDEXED | FAST);
    for name in ["ns", "id", "conversation", "speaker"] {
        b.add_text_field(name, STRING);
    }
    b.add_i64_field("ts", INDEXED | FAST);
    b.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("voicerag_en")
                .set_index_option(IndexRecordOption::WithFreqs),
        ),
    );
    tantivy::Index::create_in_dir(&bm25, b.build()).unwrap();

    let store = open(dir.path());
    store.flush().unwrap();
    // Rebuilt with the current analysis: function words match nothing, content words still do.
    assert!(ranked(&store, "what is it that I can do", SearchMode::Bm25, 10).is_empty());
    assert_eq!(
        ranked(&store, "how do I cook rice", SearchMode::Bm25, 10)[0].0,
        "rice"
    );
}

#[test]
fn recent_turns_are_the_conversations_last_ones_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let turn = |ns: &str, conv: &str, id: &str, ts: i64| mem(ns, conv, id, "user", ts, id);
    store
        .add(vec![
            turn("u", "c1", "t3", 3_000),
            turn("u", "c1", "t1", 1_000),
            turn("u", "c1", "t2", 2_000),
            turn("u", "c2", "other-conversation", 9_000),
            turn("v", "c1", "other-user", 9_000),
        ])
        .unwrap();
    let ids = |n| -> Vec<String> {
        store
            .recent_turns("u", "c1", n)
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(ids(2), ["t2", "t3"]);
    assert_eq!(ids(10), ["t1", "t2", "t3"]);
    assert!(ids(0).is_empty());
    assert!(store.recent_turns("u", "nope", 3).unwrap().is_empty());
}

#[test]
fn the_recency_prior_puts_the_newer_of_two_equal_memories_first_and_is_off_by_default() {
    let now = chrono::Utc::now().timestamp_millis();
    let text = "the gift for Marta is an espresso machine";
    let memories = vec![
        mem("u", "c1", "old", "user", now - 30 * 24 * 3600 * 1000, text),
        mem("u", "c1", "new", "agent", now - 60 * 1000, text),
    ];
    let first = |retrieval: RetrievalConfig| {
        let dir = tempfile::tempdir().unwrap();
        let store = open_with(dir.path(), fast_config(), retrieval);
        store.add(memories.clone()).unwrap();
        store.flush().unwrap();
        ranked(&store, "what is the gift for Marta", SearchMode::Hybrid, 2)[0]
            .0
            .clone()
    };
    assert_eq!(
        first(RetrievalConfig::default()),
        "old",
        "off: equal scores, chunk order"
    );
    let recent = RetrievalConfig {
        recency_half_life_s: 3600,
        ..RetrievalConfig::default()
    };
    assert_eq!(first(recent), "new");
}

#[test]
fn the_recency_prior_ages_memories_from_the_requests_now() {
    // A replay (`--now`, an eval) a year back: by the wall clock both memories are a year old
    // and the prior could not tell them apart.
    let now = chrono::Utc::now().timestamp_millis() - 365 * 24 * 3600 * 1000;
    let text = "the gift for Marta is an espresso machine";
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(
        dir.path(),
        fast_config(),
        RetrievalConfig {
            recency_half_life_s: 3600,
            ..RetrievalConfig::default()
        },
    );
    store
        .add(vec![
            mem("u", "c1", "old", "user", now - 30 * 24 * 3600 * 1000, text),
            mem("u", "c1", "new", "agent", now - 60 * 1000, text),
        ])
        .unwrap();
    store.flush().unwrap();
    let mut req = request("u", "what is the gift for Marta", SearchMode::Hybrid, 2);
    req.filter.time.now_ms = Some(now);
    let hits = store.search(&req).unwrap();
    assert_eq!(hits[0].id, "new");
    assert!(hits[0].score > hits[1].score);
}
