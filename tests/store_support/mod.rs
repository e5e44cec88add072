//! Shared helpers of the store tests: a deterministic hashed bag-of-words embedding (no model
//! needed: texts sharing words get close vectors) and builders for memories and requests.
#![allow(dead_code)]

use std::path::Path;

use voicerag::actors::messages::{Memory, SearchFilter, SearchMode, SearchRequest};
use voicerag::store::{
    ChunkInput, MemoryStore, ModelInfo, NewMemory, RetrievalConfig, StoreConfig,
};

pub const DIM: usize = 64;

pub fn model() -> ModelInfo {
    ModelInfo {
        name: "hashed-bow-64".into(),
        dimension: DIM,
    }
}

fn word_hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: deterministic, and well mixed (unlike FNV's low bits).
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Hashed bag of words (lower-cased alphanumeric words), L2-normalised.
pub fn embed_dim(text: &str, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        // Two buckets per word: two words rarely share both.
        let h = word_hash(&w.to_lowercase());
        v[(h % dim as u64) as usize] += 1.0;
        v[((h >> 32) % dim as u64) as usize] += 0.5;
    }
    if v.iter().all(|x| *x == 0.0) {
        v[0] = 1.0;
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

pub fn embed(text: &str) -> Vec<f32> {
    embed_dim(text, DIM)
}

pub fn mem(ns: &str, conv: &str, id: &str, speaker: &str, ts_ms: i64, text: &str) -> NewMemory {
    NewMemory {
        memory: Memory {
            id: id.into(),
            namespace: ns.into(),
            conversation: conv.into(),
            speaker: speaker.into(),
            text: text.into(),
            ts_ms,
            supersedes: Vec::new(),
            expires_at_ms: None,
        },
        chunks: vec![ChunkInput {
            text: text.into(),
            embedding: embed(text),
        }],
    }
}

pub fn simple(ns: &str, id: &str, text: &str) -> NewMemory {
    mem(ns, "c1", id, "user", 1_700_000_000_000, text)
}

pub fn request(ns: &str, text: &str, mode: SearchMode, top_n: usize) -> SearchRequest {
    SearchRequest {
        namespace: ns.into(),
        text: text.into(),
        embedding: Some(embed(text)),
        mode,
        top_n,
        filter: SearchFilter::default(),
    }
}

pub fn fast_config() -> StoreConfig {
    StoreConfig {
        map_size_mib: 256,
        bm25_commit_ms: 50,
        ..StoreConfig::default()
    }
}

pub fn open(dir: &Path) -> MemoryStore {
    MemoryStore::open(dir, &fast_config(), &RetrievalConfig::default(), &model()).unwrap()
}

pub fn ids(hits: &[voicerag::actors::messages::Hit]) -> Vec<String> {
    hits.iter().map(|h| h.id.clone()).collect()
}
