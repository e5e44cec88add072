//! A final's query embedding becomes its memory's vector (the memory is not embedded again), only
//! for the same namespace, id and text stored as one chunk; on the tiny fixture models.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use voicerag::config::Config;
use voicerag::engines::{Engines, StoreAccess};
use voicerag::ingest;
use voicerag_actors::{Embedder, Memory, SearchMode, SearchRequest, Transcript};

fn root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn config(data: &Path) -> Config {
    let mut config = Config::default();
    config.embedder.model_dir = root("fixtures/models/tiny-embedder").display().to_string();
    config.store.data_dir = data.display().to_string();
    // A loaded test machine: a final shed for its budget would not be embedded at all, and the
    // budget is not what these tests are about.
    config.pipeline.budget_ms = 10_000;
    config
}

fn memory(namespace: &str, id: &str, text: &str) -> Memory {
    Memory {
        id: id.into(),
        namespace: namespace.into(),
        conversation: "c1".into(),
        speaker: "user".into(),
        text: text.into(),
        ts_ms: 1_700_000_000_000,
        supersedes: Vec::new(),
        expires_at_ms: None,
    }
}

/// The similarity of memory `id` to `vector` in a vector-only search of `namespace`.
fn similarity(engines: &Engines, namespace: &str, id: &str, vector: &[f32]) -> Option<f32> {
    let hits = engines
        .store
        .search(&SearchRequest {
            namespace: namespace.into(),
            text: String::new(),
            embedding: Some(vector.to_vec()),
            mode: SearchMode::Vector,
            top_n: 10,
            filter: Default::default(),
        })
        .unwrap();
    hits.iter().find(|h| h.id == id).and_then(|h| h.similarity)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_final_is_stored_with_its_query_vector_and_not_embedded_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let engines = Engines::load(&config, StoreAccess::ReadWrite, false).unwrap();
    let writer = engines.store_writer();
    let handle = engines.start(&config, writer.clone()).await.unwrap();
    let mut results = handle.results();
    let text = "my dog Rex loves the beach";
    handle
        .submit(Transcript {
            namespace: "alice".into(),
            conversation: "c1".into(),
            utterance: "u1".into(),
            speaker: "user".into(),
            text: text.into(),
            is_final: true,
            received_at: std::time::Instant::now(),
        })
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), results.next())
        .await
        .expect("a result")
        .expect("stream open");
    assert_eq!(r.degraded, None, "the query was embedded");
    handle.shutdown().await.unwrap(); // writes every pending memory
    assert_eq!(engines.final_embeddings.counts().1, 1);
    assert_eq!(writer.texts_embedded(), 0, "the memory embedder ran for it");
    assert!(engines.final_embeddings.is_empty(), "removed when used");
    let query = Embedder::embed(engines.embedder.as_ref(), &[text]).unwrap();
    let s = similarity(&engines, "alice", "c1/u1", &query[0]).expect("stored");
    assert!(s > 0.999, "stored vector is the query's: similarity {s}");
}

#[test]
fn only_the_same_namespace_id_and_whole_text_take_an_offered_vector() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let engines = Engines::load(&config, StoreAccess::ReadWrite, false).unwrap();
    let writer = engines.store_writer();
    let text = "the vet moved the appointment to Friday";
    // A vector unlike the text's own, so the stored one shows which path it came from.
    let marker = engines
        .embedder
        .embed(&["a train timetable to Lisbon"])
        .unwrap()
        .remove(0);
    let own = engines.embedder.embed(&[text]).unwrap().remove(0);
    assert!(cosine(&marker, &own) < 0.99, "the marker must differ");
    let offer = |ns: &str, id: &str, text: &str| {
        engines.final_embeddings.offer(ns, id, text, &marker);
    };

    offer("alice", "c1/u1", text);
    offer("alice", "c1/u2", text); // another id
    offer("bob", "c1/u3", text); // another namespace
    offer("alice", "c1/u4", "the vet moved the appointment to Monday"); // another text
    let refused = writer
        .commit(&[
            memory("alice", "c1/u1", text),
            memory("alice", "c1/u9", text),
            memory("alice", "c1/u3", text),
            memory("alice", "c1/u4", text),
        ])
        .unwrap();
    assert!(refused.is_empty());
    assert_eq!(engines.final_embeddings.counts().1, 1);
    assert_eq!(writer.texts_embedded(), 3);
    let s = |id: &str, v: &[f32]| similarity(&engines, "alice", id, v).unwrap();
    assert!(s("c1/u1", &marker) > 0.999, "u1 took the offered vector");
    for id in ["c1/u9", "c1/u3", "c1/u4"] {
        assert!(s(id, &own) > 0.999, "{id} was embedded from its text");
    }

    // A memory stored as several chunks is embedded chunk by chunk, offer or not.
    let long: String = (0..400).map(|i| format!("word{i} ")).collect();
    assert!(engines.memory_embedder.chunk(&long, 32).len() > 1);
    offer("alice", "c1/long", &long);
    writer.commit(&[memory("alice", "c1/long", &long)]).unwrap();
    assert_eq!(
        engines.final_embeddings.counts().1,
        1,
        "a chunked memory never reuses"
    );
}

/// The query path (the pipeline's session, micro-batched with other texts) and the memory path
/// (the writer's session, chunked) give the same vector for a text stored as one chunk.
#[test]
fn the_query_vector_matches_what_embedding_the_memory_gives() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let engines = Engines::load(&config, StoreAccess::ReadWrite, false).unwrap();
    let texts = [
        "my dog Rex loves the beach",
        "remind me to call the vet about the appointment next Friday afternoon",
        "hi",
    ];
    let as_queries = Embedder::embed(engines.embedder.as_ref(), &texts).unwrap();
    let memories: Vec<Memory> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| memory("alice", &format!("c1/u{i}"), t))
        .collect();
    let as_memories = ingest::embed_memories(&engines.memory_embedder, memories).unwrap();
    for ((q, m), text) in as_queries.iter().zip(&as_memories).zip(texts) {
        assert_eq!(m.chunks.len(), 1, "{text}: one chunk");
        assert_eq!(m.chunks[0].text, text);
        let v = &m.chunks[0].embedding;
        assert_eq!(q.len(), v.len());
        let max_diff = q
            .iter()
            .zip(v)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            cosine(q, v) > 0.999 && max_diff < 0.02,
            "{text}: cosine {}, max difference {max_diff}",
            cosine(q, v)
        );
    }
}
