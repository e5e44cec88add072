//! The durable hybrid memory: LMDB (heed) is the source of truth, arroy holds vectors in the same
//! environment, tantivy holds BM25; both indexes may lag LMDB and are caught up on open.
//!
//! Layout of a data directory: `lmdb/` (records, vectors, metadata), `bm25/` (tantivy) and
//! `voicerag.lock` (the writer lock). See [`MemoryStore`] for the API.

mod analysis;
mod background;
mod bm25;
mod closed;
mod codec;
mod delete;
mod error;
mod exact;
mod hidden;
mod lmdb;
mod memory_store;
mod open;
mod phonetic;
mod recency;
mod reindex;
mod search;
mod state;
mod superseded;
mod time_window;
mod vector;

pub use closed::StoreClosed;
pub use error::StoreError;
pub use memory_store::{MemoryStore, StoreStats};
pub use reindex::ReindexReport;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::fusion::Normalization;
use voicerag_actors::messages::Memory;

/// `[store]`: where and how memories are kept.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Data directory (flag `--data-dir` overrides).
    pub data_dir: String,
    /// LMDB map size in MiB.
    pub map_size_mib: usize,
    /// Longest accepted memory text, in bytes.
    pub max_text_bytes: usize,
    /// How often new memories are committed to the BM25 index, in ms (they are found by BM25
    /// at most about this long after `add` returns; by vector search at once).
    pub bm25_commit_ms: u64,
    /// Most vectors moved into arroy's trees per build transaction: bounds how long a build
    /// holds LMDB's write lock (ingest waits for it).
    pub vector_build_batch: usize,
    /// Fewest pending vectors worth a tree build (each build walks the whole index); fewer
    /// wait, found by exact scan, up to `vector_build_max_delay_ms`.
    pub vector_build_min: usize,
    /// Longest wait before pending vectors are built anyway, in ms.
    pub vector_build_max_delay_ms: u64,
    /// Namespaces of up to this many vectors are searched exactly (every vector scored, kept in
    /// RAM: 1.5 KiB a vector at 384 dimensions); larger ones through arroy's trees, which are
    /// built only once a namespace holds half this many (0: always built).
    pub exact_scan_max: usize,
    /// Most vectors kept in RAM for exact search over all namespaces (1.5 KiB each at 384
    /// dimensions); the least recently searched namespaces are dropped to stay under it.
    pub exact_cache_vectors: usize,
    /// Neighbours asked of arroy's trees per search, at least (more: better recall, slower).
    pub vector_search_count: usize,
    /// Trees per vector index: more trees, better recall, slower builds and searches.
    pub vector_trees: usize,
    /// Most vectors in one leaf of a tree.
    pub vector_leaf_size: usize,
    /// Pause between vector build steps while a backlog remains, in ms (lets ingest in).
    pub vector_build_pause_ms: u64,
    /// Forget memories older than this many seconds, checked in the background (0: keep all).
    pub retention_max_age_s: u64,
    /// How often retention looks for expired memories, in ms.
    pub retention_check_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: "data".into(),
            map_size_mib: 16 * 1024,
            max_text_bytes: 32 * 1024,
            bm25_commit_ms: 200,
            vector_build_batch: 2000,
            vector_build_min: 256,
            vector_build_max_delay_ms: 2000,
            exact_scan_max: 30_000,
            exact_cache_vectors: 1_000_000,
            vector_search_count: 130,
            vector_trees: 16,
            vector_leaf_size: 128,
            vector_build_pause_ms: 20,
            retention_max_age_s: 0,
            retention_check_ms: 60_000,
        }
    }
}

/// How hybrid search fuses its two lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Reciprocal rank (`rrf_k`, `vector_weight`, `bm25_weight`).
    Rrf,
    /// Convex combination of normalised scores (`convex_vector_weight`, `normalization`).
    Convex,
}

/// `[retrieval]`: how hybrid search fuses its lists.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalConfig {
    /// `"convex"` or `"rrf"`.
    pub fusion: Fusion,
    /// Convex fusion: weight of the vector side (the BM25 side gets the rest).
    pub convex_vector_weight: f32,
    /// Convex fusion: `"minmax"` or `"zscore"`, per query and side.
    pub normalization: Normalization,
    /// Reciprocal-rank constant k.
    pub rrf_k: f32,
    /// Weight of the vector list in reciprocal-rank fusion.
    pub vector_weight: f32,
    /// Weight of the BM25 list in reciprocal-rank fusion.
    pub bm25_weight: f32,
    /// Candidates taken from each list before fusion.
    pub candidates: usize,
    /// Recency prior for "what did I just say" questions: a memory's fused score gains
    /// `recency_weight * 0.5^(age / half-life)`. 0 turns it off.
    pub recency_half_life_s: u64,
    /// Recency prior: the most a brand-new memory gains, in units of the fused score (convex
    /// scores run 0 to 1; reciprocal-rank ones about 0.03).
    pub recency_weight: f32,
    /// Phonetic ranking (names the recogniser misheard: "Martha" finds "Marta"): hybrid search
    /// also ranks memories by how their words sound (Double Metaphone) and adds up to this
    /// much to a memory's fused score (convex), or weighs that list so in reciprocal-rank
    /// fusion. 0 turns it off (and skips its search).
    pub phonetic_weight: f32,
    /// Misheard names corrected from the user's own memories: a query word no memory of the
    /// namespace has, written like a name (capitalised, unless the query is all one case), is
    /// also searched (BM25) as the word of those memories that sounds the same (Double
    /// Metaphone), is spelt with fewer edits than half its letters, and is used by most of
    /// them, so "Diego" also searches "Tiago" when the user's memories say Tiago. Queries whose
    /// words all occur in the memories are untouched. Off by default: with the phonetic
    /// ranking it gains misheard recall@1 (conversational set 0.591 to 0.864) but drops one
    /// debfaq-misheard query out of the top 10 (tests/quality.rs holds that recall).
    pub sound_alike_words: bool,
    /// Read time expressions in queries ("yesterday", "last week", "in March") as a window on
    /// the memories' timestamps (a request may turn it off or on).
    pub time_windows: bool,
    /// The users' time zone (IANA name) for reading them, unless `time_zones` names one for
    /// the namespace or the request gives one.
    pub time_zone: String,
    /// Time zone per namespace (`{ alice = "Europe/Berlin" }`).
    pub time_zones: BTreeMap<String, String>,
    /// Fewest memory chunks inside a window for it to filter the search; with fewer, memories
    /// inside it are ranked up by `time_boost` instead (a misread window never empties a
    /// result). 0: always filter.
    pub time_filter_min: usize,
    /// What a memory inside a boosting window gains, in units of the fused score (hybrid mode).
    pub time_boost: f32,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            fusion: Fusion::Convex,
            convex_vector_weight: 0.8,
            normalization: Normalization::MinMax,
            rrf_k: 60.0,
            vector_weight: 1.0,
            bm25_weight: 1.0,
            candidates: 50,
            recency_half_life_s: 0,
            recency_weight: 0.2,
            phonetic_weight: 0.1,
            sound_alike_words: false,
            time_windows: true,
            time_zone: "UTC".into(),
            time_zones: BTreeMap::new(),
            time_filter_min: 3,
            time_boost: 0.3,
        }
    }
}

/// The embedding model a store's vectors come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub name: String,
    pub dimension: usize,
}

/// One chunk of a memory, embedded by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkInput {
    pub text: String,
    pub embedding: Vec<f32>,
}

/// A memory to add: the record and at least one chunk (the caller chunks and embeds; a short
/// memory is one chunk holding its whole text).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMemory {
    pub memory: Memory,
    pub chunks: Vec<ChunkInput>,
}

/// What `add` did with each record of a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddReport {
    /// Ids stored by this call.
    pub stored: Vec<String>,
    /// Ids already present in their namespace (left unchanged: re-adding is idempotent).
    pub duplicates: Vec<String>,
    /// `(index in the batch, reason)` of records refused; nothing of them was written.
    pub rejected: Vec<(usize, String)>,
}
