//! The engines' side of starting and of hangs, on the tiny fixture models: loading runs off the
//! caller's runtime thread, and after a hang each model stage hands out a fresh session.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use voicerag::config::Config;
use voicerag::engines::{Engines, StoreAccess};
use voicerag::models::{CrossEncoder, SentenceEmbedder};
use voicerag_actors::{AfterHang, CancelToken, Embedder, Reranker, Retriever};

fn root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn config(data: &Path) -> Config {
    let mut config = Config::default();
    config.embedder.model_dir = root("fixtures/models/tiny-embedder").display().to_string();
    config.reranker.model_dir = root("fixtures/models/tiny-cross-encoder")
        .display()
        .to_string();
    config.store.data_dir = data.display().to_string();
    config
}

/// On a single-threaded runtime, another task runs while the engines load: the load is on the
/// blocking pool. Loading on the runtime thread would finish within the first poll, before the
/// other branch could run even once.
#[tokio::test(flavor = "current_thread")]
async fn loading_the_engines_leaves_the_runtime_thread_free() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let load = Engines::load_off_runtime(&config, StoreAccess::ReadWrite, true);
    tokio::pin!(load);
    let mut other_task_ran = 0u64;
    let engines = loop {
        tokio::select! {
            biased;
            r = &mut load => break r.expect("engines load"),
            _ = tokio::task::yield_now() => other_task_ran += 1,
        }
    };
    assert!(
        other_task_ran > 0,
        "the runtime thread was blocked by the load"
    );
    assert!(engines.reranker.is_some());
}

#[test]
fn after_a_hang_each_model_stage_hands_out_a_fresh_session() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let embedder = SentenceEmbedder::load(&config.runtime, &config.embedder).unwrap();
    let Ok(AfterHang::Fresh(fresh)) = Embedder::after_hang(&embedder) else {
        panic!("the embedder gives a fresh session");
    };
    let texts = ["the dog loves the beach", "train to Lisbon"];
    assert_eq!(
        fresh.embed(&texts).unwrap(),
        Embedder::embed(&embedder, &texts).unwrap(),
        "same model, same vectors"
    );

    let encoder = CrossEncoder::load(&config.runtime, &config.reranker).unwrap();
    let Ok(AfterHang::Fresh(fresh)) = Reranker::after_hang(&encoder) else {
        panic!("the cross-encoder gives a fresh session");
    };
    let passages = ["a dog on a beach", "a train timetable"];
    let cancel = CancelToken::new();
    assert_eq!(
        fresh.score("dog", &passages, &cancel).unwrap(),
        Reranker::score(&encoder, "dog", &passages, &cancel).unwrap()
    );

    // The store takes no lock a hung search could hold: the same instance serves on.
    let engines = Engines::load(&config, StoreAccess::ReadWrite, false).unwrap();
    let store: Arc<dyn Retriever> = engines.store.clone();
    assert!(matches!(store.after_hang(), Ok(AfterHang::Reuse)));
}
