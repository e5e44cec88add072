//! The durable hybrid memory: LMDB (heed) is the source of truth, arroy holds vectors in the same
//! environment, tantivy holds BM25; both indexes may lag LMDB and are caught up on open.

use serde::Deserialize;

/// `[store]`: where and how memories are kept.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Data directory (flag `--data-dir` overrides).
    pub data_dir: String,
    /// LMDB map size in MiB.
    pub map_size_mib: usize,
    /// Longest accepted memory text, in bytes.
    pub max_text_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { data_dir: "data".into(), map_size_mib: 16 * 1024, max_text_bytes: 32 * 1024 }
    }
}

/// `[retrieval]`: how hybrid search fuses its lists.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalConfig {
    /// Reciprocal-rank constant k.
    pub rrf_k: f32,
    /// Weight of the vector list in fusion.
    pub vector_weight: f32,
    /// Weight of the BM25 list in fusion.
    pub bm25_weight: f32,
    /// Candidates taken from each list before fusion.
    pub candidates: usize,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self { rrf_k: 60.0, vector_weight: 1.0, bm25_weight: 1.0, candidates: 50 }
    }
}
