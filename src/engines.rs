//! The real stages (ONNX engines, memory store) behind the `voicerag-actors` traits, and the
//! in-process entry point [`Engines::start_pipeline`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use voicerag_actors::{AfterHang, Memory, MemoryWriter, PipelineHandle, StageError, Stages};

use crate::bus::{Forget, ForgetScope, MemorySink, Refused, SinkError};
use crate::config::Config;
use crate::final_embeddings::{DEFAULT_CAPACITY, FinalEmbeddings, OfferingWriter};
use crate::ingest;
use crate::models::{CrossEncoder, ModelError, QueryEmbedder, SentenceEmbedder};
use crate::store::{MemoryStore, ModelInfo, StoreError};

/// Loading or starting the engines failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineStartError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pipeline: {0}")]
    Pipeline(String),
}

/// How the memory store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreAccess {
    /// Takes the single-writer lock.
    ReadWrite,
    /// Works on a store another process serves.
    ReadOnly,
}

/// The loaded engines: embedder, optional cross-encoder, memory store.
pub struct Engines {
    /// Embeds transcripts and queries (and opens the store, seeds benchmarks, ...).
    pub embedder: Arc<SentenceEmbedder>,
    /// The pipeline's embedder stage: `embedder` and `runtime.query_sessions - 1` more sessions,
    /// over which queued queries are split (one session for a read-only process).
    pub query_embedder: Arc<QueryEmbedder>,
    /// Embeds memories for the writer, in a session of its own: a session runs one batch at a
    /// time, so a final never waits behind a batch of memories (read-only engines share one).
    pub memory_embedder: Arc<SentenceEmbedder>,
    pub reranker: Option<Arc<CrossEncoder>>,
    pub store: Arc<MemoryStore>,
    /// `store.max_text_bytes`: longer memories are refused before embedding.
    pub max_text_bytes: usize,
    /// Finals' query embeddings, offered by the pipeline, taken by the store writer: a final's
    /// memory is not embedded a second time.
    pub final_embeddings: Arc<FinalEmbeddings>,
}

impl Engines {
    /// Loads the models named by the config and opens the store. The reranker is loaded only when
    /// `with_reranker` and `reranker.model_dir` is set.
    pub fn load(
        config: &Config,
        access: StoreAccess,
        with_reranker: bool,
    ) -> Result<Self, EngineStartError> {
        let embedder = Arc::new(SentenceEmbedder::load(&config.runtime, &config.embedder)?);
        let reranker = if with_reranker && !config.reranker.model_dir.is_empty() {
            Some(Arc::new(CrossEncoder::load(
                &config.runtime,
                &config.reranker,
            )?))
        } else {
            None
        };
        let store = open_store(config, &embedder, access)?;
        let memory_embedder = match access {
            StoreAccess::ReadWrite => {
                Arc::new(SentenceEmbedder::load(&config.runtime, &config.embedder)?)
            }
            StoreAccess::ReadOnly => embedder.clone(),
        };
        // A read-only process serves the odd query: one session is enough.
        let query_runtime = crate::models::RuntimeConfig {
            query_sessions: match access {
                StoreAccess::ReadWrite => config.runtime.query_sessions,
                StoreAccess::ReadOnly => 1,
            },
            ..config.runtime.clone()
        };
        let query_embedder = Arc::new(QueryEmbedder::load(
            embedder.clone(),
            &query_runtime,
            &config.embedder,
        )?);
        let final_embeddings =
            Arc::new(FinalEmbeddings::new(embedder.identity(), DEFAULT_CAPACITY));
        Ok(Self {
            final_embeddings,
            query_embedder,
            embedder,
            memory_embedder,
            reranker,
            store: Arc::new(store),
            max_text_bytes: config.store.max_text_bytes,
        })
    }

    /// [`Engines::load`] on tokio's blocking pool: loading and warming the models takes hundreds
    /// of milliseconds of CPU, which must not stall the caller's runtime thread (and every task
    /// on it). Must be called inside a tokio runtime.
    pub async fn load_off_runtime(
        config: &Config,
        access: StoreAccess,
        with_reranker: bool,
    ) -> Result<Self, EngineStartError> {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Engines::load(&config, access, with_reranker))
            .await
            .map_err(|e| EngineStartError::Pipeline(format!("loading the engines: {e}")))?
    }

    /// A writer that chunks, embeds and commits memories to this store.
    pub fn store_writer(&self) -> Arc<StoreWriter> {
        Arc::new(StoreWriter {
            embedder: self.memory_embedder.clone(),
            store: self.store.clone(),
            max_text_bytes: self.max_text_bytes,
            final_embeddings: Some(self.final_embeddings.clone()),
            texts_embedded: AtomicU64::new(0),
        })
    }

    /// Starts the actor pipeline over these engines, writing memories through `writer`. Finals'
    /// query embeddings are offered to [`Engines::final_embeddings`], for this process's store
    /// writer (in process, or the bus's memory consumer).
    pub async fn start(
        &self,
        config: &Config,
        writer: Arc<dyn MemoryWriter>,
    ) -> Result<PipelineHandle, EngineStartError> {
        let writer = Arc::new(OfferingWriter::new(writer, self.final_embeddings.clone()));
        let stages = Stages {
            embedder: self.query_embedder.clone(),
            retriever: self.store.clone(),
            reranker: self
                .reranker
                .clone()
                .map(|r| r as Arc<dyn voicerag_actors::Reranker>),
            writer,
        };
        voicerag_actors::Pipeline::start(stages, config.pipeline.clone())
            .await
            .map_err(|e| EngineStartError::Pipeline(e.to_string()))
    }
}

/// Opens the store for the embedder's model (name and dimension are checked against the store).
pub fn open_store(
    config: &Config,
    embedder: &SentenceEmbedder,
    access: StoreAccess,
) -> Result<MemoryStore, StoreError> {
    let model = ModelInfo {
        name: embedder.model_name().to_string(),
        dimension: embedder.dimension(),
    };
    let dir = Path::new(&config.store.data_dir);
    match access {
        StoreAccess::ReadWrite => MemoryStore::open(dir, &config.store, &config.retrieval, &model),
        StoreAccess::ReadOnly => {
            MemoryStore::open_read_only(dir, &config.store, &config.retrieval, &model)
        }
    }
}

/// The in-process entry point for a voice agent that embeds voicerag.
impl Engines {
    /// Loads the models, opens the store for writing and starts the supervised pipeline; memories
    /// are committed to the store directly.
    pub async fn start_pipeline(config: &Config) -> Result<PipelineHandle, EngineStartError> {
        let engines = Engines::load_off_runtime(config, StoreAccess::ReadWrite, true).await?;
        let writer = engines.store_writer();
        engines.start(config, writer).await
    }
}

/// Commits memories to the store: chunk, embed, one LMDB transaction.
pub struct StoreWriter {
    embedder: Arc<SentenceEmbedder>,
    store: Arc<MemoryStore>,
    max_text_bytes: usize,
    /// Where a final's query embedding waits for its memory; `None`: every memory is embedded.
    final_embeddings: Option<Arc<FinalEmbeddings>>,
    /// Texts (chunks) this writer embedded, and memories that took a final's vector instead.
    texts_embedded: AtomicU64,
}

impl MemoryWriter for StoreWriter {
    fn write(&self, batch: &[Memory]) -> Result<(), StageError> {
        // In process nobody else can be told: refused memories are logged by `commit`.
        self.commit(batch).map(drop).map_err(StageError::new)
    }

    /// A hung commit may hold LMDB's single write lock (or the embedder's session): another
    /// writer instance would wait on it, so the writer waits down until the hung write returns.
    fn after_hang(&self) -> Result<AfterHang<dyn MemoryWriter>, StageError> {
        Ok(AfterHang::Wait)
    }
}

/// In bus mode the JetStream consumer commits through the same path.
impl MemorySink for StoreWriter {
    fn store(&self, batch: &[Memory]) -> Result<Vec<Refused>, SinkError> {
        self.commit(batch).map_err(SinkError)
    }

    fn forget(&self, forget: &Forget) -> Result<u64, SinkError> {
        let ns = &forget.namespace;
        let removed = match &forget.scope {
            ForgetScope::Id(id) => self.store.delete_ids(ns, std::slice::from_ref(id)),
            ForgetScope::Conversation(c) => self.store.delete_conversation(ns, c),
            ForgetScope::Namespace => self.store.delete_namespace(ns),
        };
        removed
            .map(|n| n as u64)
            .map_err(|e| SinkError(e.to_string()))
    }

    fn stats(&self) -> serde_json::Value {
        match self.store.stats() {
            Ok(s) => serde_json::json!({
                "memories": s.memories, "chunks": s.chunks, "disk_bytes": s.disk_bytes,
                "bm25_lag": s.bm25_lag, "model": s.model, "dimension": s.dimension,
            }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        }
    }
}

impl StoreWriter {
    /// Validates, chunks, embeds and commits; returns once LMDB has committed, with the memories
    /// that can never be stored (empty or oversized text, names over the limit): retrying them
    /// would fail forever, so they are refused, logged and returned, the rest committed.
    pub fn commit(&self, batch: &[Memory]) -> Result<Vec<Refused>, String> {
        let mut refused = Vec::new();
        let mut valid = Vec::with_capacity(batch.len());
        // Index in `batch` of each memory in `valid`.
        let mut origin = Vec::with_capacity(batch.len());
        for (index, memory) in batch.iter().enumerate() {
            match ingest::validate_text(&memory.text, self.max_text_bytes) {
                Ok(()) => {
                    valid.push(memory.clone());
                    origin.push(index);
                }
                Err(e) => refused.push(Refused {
                    index,
                    reason: e.to_string(),
                }),
            }
        }
        if !valid.is_empty() {
            let prepared = self.embed(valid).map_err(|e| e.to_string())?;
            let report = self.store.add(prepared).map_err(|e| e.to_string())?;
            for (i, reason) in report.rejected {
                if let Some(&index) = origin.get(i) {
                    refused.push(Refused { index, reason });
                }
            }
        }
        for r in &refused {
            let id = batch.get(r.index).map(|m| m.id.as_str()).unwrap_or("?");
            tracing::warn!(id, reason = %r.reason, "memory not stored");
        }
        refused.sort_by_key(|r| r.index);
        Ok(refused)
    }

    /// Chunks and embeds, taking a final's query embedding for a memory where one waits.
    fn embed(&self, memories: Vec<Memory>) -> Result<Vec<crate::store::NewMemory>, ModelError> {
        let (model, dimension) = (self.embedder.identity(), self.embedder.dimension());
        let (prepared, embedded) = ingest::embed_memories_reusing(&self.embedder, memories, |m| {
            self.final_embeddings
                .as_ref()?
                .take(&model, dimension, &m.namespace, &m.id, &m.text)
        })?;
        self.texts_embedded
            .fetch_add(embedded as u64, Ordering::Relaxed);
        Ok(prepared)
    }

    /// Texts (chunks) this writer has embedded.
    pub fn texts_embedded(&self) -> u64 {
        self.texts_embedded.load(Ordering::Relaxed)
    }
}

/// For read-only processes (`voicerag query`): remembering is refused, loudly.
pub struct ReadOnlyWriter;

impl MemoryWriter for ReadOnlyWriter {
    fn write(&self, _batch: &[Memory]) -> Result<(), StageError> {
        Err(StageError::new(
            "the store is open read-only in this process",
        ))
    }
}
