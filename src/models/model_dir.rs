//! An HF-layout model directory (model.onnx, tokenizer.json, config.json): finding and checking its
//! files, and loading its tokenizer with our padding and truncation instead of the shipped ones.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::error::ModelError;
use super::runtime::resolve_path;

/// The checked files of a model directory.
pub(crate) struct ModelDir {
    pub dir: PathBuf,
    pub model: PathBuf,
    pub tokenizer: Tokenizer,
    /// Id of the padding token (the shipped padding's, else `[PAD]`, else 0).
    pub pad_id: u32,
    /// `max_position_embeddings` from config.json, if present: the model cannot take more tokens.
    pub max_positions: Option<usize>,
}

impl ModelDir {
    /// Opens `dir`; `setting` (e.g. "[embedder] model_dir") is named in errors as what to fix.
    pub fn open(dir: &str, setting: &'static str) -> Result<Self, ModelError> {
        let dir = resolve_path(dir).map_err(|(path, _)| ModelError::ModelFileMissing {
            path,
            what: "model directory",
            setting,
        })?;
        let file = |name: &str, what: &'static str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ModelError::ModelFileMissing {
                    path,
                    what,
                    setting,
                })
            }
        };
        let model = file("model.onnx", "ONNX model")?;
        let tokenizer_path = file("tokenizer.json", "tokenizer")?;
        let config_path = file("config.json", "model config")?;

        let tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| ModelError::TokenizerInvalid {
                path: tokenizer_path.clone(),
                message: e.to_string(),
            })?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .unwrap_or(0);
        let max_positions = read_max_positions(&config_path)?;
        Ok(Self {
            dir,
            model,
            tokenizer,
            pad_id,
            max_positions,
        })
    }

    /// The directory's name, used as the model's name.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }

    /// Caps `max_length` at what the model's position embeddings allow.
    pub fn effective_max_length(&self, max_length: usize) -> usize {
        match self.max_positions {
            Some(p) if p < max_length => {
                tracing::warn!(max_length, max_positions = p, model = %self.dir.display(),
                    "max_length exceeds the model's positions; capping");
                p
            }
            _ => max_length,
        }
    }

    /// The tokenizer with the shipped padding off (we pad per batch) and truncation at `max_length`.
    pub fn tokenizer_with(
        &self,
        max_length: Option<usize>,
        strategy: TruncationStrategy,
    ) -> Result<Tokenizer, ModelError> {
        let mut tokenizer = self.tokenizer.clone();
        tokenizer.with_padding(None);
        let truncation = max_length.map(|max_length| TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy,
            stride: 0,
        });
        tokenizer
            .with_truncation(truncation)
            .map_err(|e| ModelError::TokenizerInvalid {
                path: self.dir.join("tokenizer.json"),
                message: format!("cannot set truncation: {e}"),
            })?;
        Ok(tokenizer)
    }
}

fn read_max_positions(path: &Path) -> Result<Option<usize>, ModelError> {
    let invalid = |message: String| ModelError::ConfigInvalid {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if !value.is_object() {
        return Err(invalid("expected a JSON object".into()));
    }
    Ok(value
        .get("max_position_embeddings")
        .and_then(|v| v.as_u64())
        .map(|v| v as usize))
}
