//! Why a store operation failed: every message names what to do about it.

use std::path::PathBuf;

/// A memory-store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{path} is not a voicerag store (it is not empty and holds no voicerag data); pick an empty or new directory"
    )]
    NotAStore { path: PathBuf },
    #[error(
        "{path} was written by a newer voicerag (schema version {found}, this build reads up to {supported}); upgrade voicerag"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{path} is locked by another voicerag process (only one process may write a store; read-only commands such as `query` still work)"
    )]
    Locked { path: PathBuf },
    #[error(
        "store {path} holds vectors of model {stored_model:?} ({stored_dim} dimensions) but model {requested_model:?} ({requested_dim} dimensions) is configured; run `voicerag reindex` to re-embed every memory with the new model, or configure the old model"
    )]
    ModelMismatch {
        path: PathBuf,
        stored_model: String,
        stored_dim: usize,
        requested_model: String,
        requested_dim: usize,
    },
    #[error(
        "the LMDB map is full ({map_size_mib} MiB); nothing of this write was stored: raise store.map_size_mib"
    )]
    MapFull { map_size_mib: usize },
    #[error("this store was opened read-only; writes need the writer process")]
    ReadOnly,
    #[error("query embedding has {got} dimensions, the store's model has {expected}")]
    QueryDimension { expected: usize, got: usize },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("reindex: {0}")]
    Reindex(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("LMDB: {0}")]
    Lmdb(heed::Error),
    #[error("vector index (arroy): {0}")]
    Vector(#[from] arroy::Error),
    #[error("BM25 index (tantivy): {0}")]
    Bm25(#[from] tantivy::TantivyError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<heed::Error> for StoreError {
    fn from(e: heed::Error) -> Self {
        StoreError::Lmdb(e)
    }
}

/// Turns LMDB's "map full" into the store's clear error; everything else stays an LMDB error.
pub(crate) fn map_full(map_size_mib: usize) -> impl Fn(StoreError) -> StoreError {
    move |e| match e {
        StoreError::Lmdb(heed::Error::Mdb(heed::MdbError::MapFull))
        | StoreError::Vector(arroy::Error::Heed(heed::Error::Mdb(heed::MdbError::MapFull))) => {
            StoreError::MapFull { map_size_mib }
        }
        other => other,
    }
}
