//! Errors of the model engines. Each names the file or setting at fault and, where one exists, the fix.

use std::path::PathBuf;

/// A model engine failure.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "ONNX Runtime library not found at {path}{also}: run `make setup` to install it, \
         or point ORT_DYLIB_PATH / [runtime] library at a libonnxruntime.so (onnxruntime 1.31.1)",
        path = path.display(),
        also = also_tried.as_ref().map(|p| format!(" (also tried {})", p.display())).unwrap_or_default()
    )]
    RuntimeMissing {
        path: PathBuf,
        also_tried: Option<PathBuf>,
    },

    #[error(
        "cannot load ONNX Runtime from {path}: {message}; run `make setup` to install onnxruntime 1.31.1",
        path = path.display()
    )]
    RuntimeLoad { path: PathBuf, message: String },

    #[error(
        "ONNX Runtime is already loaded from {loaded} in this process and cannot also be loaded from {requested}: \
         use one [runtime] library per process",
        loaded = loaded.display(),
        requested = requested.display()
    )]
    RuntimeConflict { loaded: PathBuf, requested: PathBuf },

    #[error(
        "execution provider `{name}` is not in the loaded ONNX Runtime (it has: {available}): \
         load a runtime built with it, or set [runtime] allow_cpu_fallback = true to run on CPU"
    )]
    ProviderUnavailable { name: String, available: String },

    #[error(
        "execution provider `{name}` failed to register: {message}; \
         set [runtime] allow_cpu_fallback = true to run on CPU"
    )]
    ProviderFailed { name: String, message: String },

    #[error(
        "model file {path} not found ({what}): run `make setup` to build the bundled models, \
         or point {setting} at an HF-layout directory with model.onnx, tokenizer.json and config.json",
        path = path.display()
    )]
    ModelFileMissing {
        path: PathBuf,
        what: &'static str,
        setting: &'static str,
    },

    #[error(
        "tokenizer file {path} does not parse: {message}; replace it with the model's own tokenizer.json \
         (`make setup` rebuilds the bundled models)",
        path = path.display()
    )]
    TokenizerInvalid { path: PathBuf, message: String },

    #[error(
        "model config {path} is not valid: {message}; replace it with the model's own config.json \
         (`make setup` rebuilds the bundled models)",
        path = path.display()
    )]
    ConfigInvalid { path: PathBuf, message: String },

    #[error("cannot load ONNX model {path}: {message}", path = path.display())]
    Session { path: PathBuf, message: String },

    #[error("ONNX model {path} is not usable here: {message}", path = path.display())]
    UnsupportedModel { path: PathBuf, message: String },

    #[error("tokenization failed: {0}")]
    Tokenize(String),

    #[error(
        "query has {tokens} tokens, which leaves no room for a passage within max_length {max_length} \
         (the query is never truncated): shorten the query or raise [reranker] max_length"
    )]
    QueryTooLong { tokens: usize, max_length: usize },

    #[error("inference failed on {path}: {message}", path = path.display())]
    Inference { path: PathBuf, message: String },

    #[error("cancelled")]
    Cancelled,

    #[error("query embedder session thread {0} could not start or has ended")]
    SessionThread(String),
}

impl From<ModelError> for voicerag_actors::StageError {
    fn from(e: ModelError) -> Self {
        voicerag_actors::StageError::new(e.to_string())
    }
}
