//! `voicerag reindex`: re-embed every stored memory with the configured embedding model.

use std::path::Path;
use std::process::ExitCode;

use voicerag::config::Config;
use voicerag::ingest;
use voicerag::store::{MemoryStore, ModelInfo};

use super::INGEST_BATCH;

pub async fn reindex(config: &Config) -> anyhow::Result<ExitCode> {
    // Every core embeds (one session each).
    let embedder = ingest::BulkEmbedder::load(&config.runtime, &config.embedder)?;
    let model = ModelInfo {
        name: embedder.first().model_name().to_string(),
        dimension: embedder.first().dimension(),
    };
    let report = MemoryStore::reindex(
        Path::new(&config.store.data_dir),
        &config.store,
        &config.retrieval,
        &model,
        INGEST_BATCH,
        |memories| {
            let prepared = embedder
                .embed_memories(memories.to_vec())
                .map_err(|e| e.to_string())?;
            Ok(prepared.into_iter().map(|p| p.chunks).collect())
        },
    )?;
    eprintln!(
        "reindex: {} memories ({} chunks) re-embedded, {} -> {}",
        report.memories,
        report.chunks,
        report.from_model.as_deref().unwrap_or("(none)"),
        report.to_model
    );
    Ok(ExitCode::SUCCESS)
}
