//! The cross-encoder: scores (query, passage) pairs in length-grouped batches, cancellable mid-run.

use std::sync::Arc;

use ort::session::RunOptions;
use tokenizers::{Encoding, Tokenizer, TruncationStrategy};
use voicerag_actors::{AfterHang, CancelToken, Reranker, StageError};

use super::error::ModelError;
use super::model_dir::ModelDir;
use super::runtime::runtime;
use super::session::{ModelSession, TokenBatch, length_groups};
use super::{RerankerConfig, RuntimeConfig};

/// Cross-encoder (sequence classification with one relevance logit, or two classes) on ONNX Runtime.
pub struct CrossEncoder {
    session: ModelSession,
    /// Truncates only the passage ("only_second") at `max_length`.
    tokenizer: Tokenizer,
    /// Without truncation, to tell how long a query that does not fit is.
    counter: Tokenizer,
    pad_id: u32,
    name: String,
    max_length: usize,
    batch_size: usize,
    /// What it was loaded from: a fresh session after a hang loads the same.
    loaded_from: (RuntimeConfig, RerankerConfig),
}

impl CrossEncoder {
    /// Loads the model directory named by `config.model_dir` and warms it up with one run.
    pub fn load(
        runtime_config: &RuntimeConfig,
        config: &RerankerConfig,
    ) -> Result<Self, ModelError> {
        let dir = ModelDir::open(&config.model_dir, "[reranker] model_dir")?;
        let rt = runtime(runtime_config)?;
        let max_length = dir.effective_max_length(config.max_length);
        let tokenizer = dir.tokenizer_with(Some(max_length), TruncationStrategy::OnlySecond)?;
        let counter = dir.tokenizer_with(None, TruncationStrategy::OnlySecond)?;
        let session = ModelSession::load(rt, &dir.model, runtime_config, &["logits"])?;
        let encoder = Self {
            session,
            tokenizer,
            counter,
            pad_id: dir.pad_id,
            name: dir.name(),
            max_length,
            batch_size: config.batch_size.max(1),
            loaded_from: (runtime_config.clone(), config.clone()),
        };
        encoder.score("warm up", &["the session"], None)?;
        Ok(encoder)
    }

    /// The model directory's name.
    pub fn model_name(&self) -> &str {
        &self.name
    }

    /// Max tokens per pair; the passage is truncated to fit, never the query.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn encode(&self, query: &str, passage: &str) -> Result<Encoding, ModelError> {
        self.tokenizer.encode((query, passage), true).map_err(|e| {
            // "only_second" fails when the query alone leaves no room: report that, not a tokenizer riddle.
            let query_tokens = self
                .counter
                .encode(query, true)
                .map(|q| q.len())
                .unwrap_or(0);
            if query_tokens >= self.max_length {
                ModelError::QueryTooLong {
                    tokens: query_tokens,
                    max_length: self.max_length,
                }
            } else {
                ModelError::Tokenize(e.to_string())
            }
        })
    }

    /// Token count of each (query, passage) pair as it would be run (after truncation): what a
    /// caller needs to predict the cost. A pair that cannot run counts as `max_length`.
    pub fn pair_tokens(&self, query: &str, passages: &[&str]) -> Vec<usize> {
        passages
            .iter()
            .map(|p| {
                self.encode(query, p)
                    .map(|e| e.len())
                    .unwrap_or(self.max_length)
            })
            .collect()
    }

    /// One relevance score per passage, in input order. Pairs run in groups of similar length, at
    /// most `batch_size` at a time, so a batch pads little. When `cancel` fires, the running batch is
    /// terminated and the result is [`ModelError::Cancelled`].
    pub fn score(
        &self,
        query: &str,
        passages: &[&str],
        cancel: Option<&CancelToken>,
    ) -> Result<Vec<f32>, ModelError> {
        let cancelled = || cancel.is_some_and(CancelToken::is_cancelled);
        if cancelled() {
            return Err(ModelError::Cancelled);
        }
        if passages.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = passages
            .iter()
            .map(|p| self.encode(query, p))
            .collect::<Result<Vec<_>, _>>()?;
        let lengths: Vec<usize> = encodings.iter().map(Encoding::len).collect();

        let options =
            cancellable_options(cancel).map_err(|e| self.inference_error(e.to_string()))?;

        let mut scores = vec![0f32; encodings.len()];
        for group in length_groups(&lengths, self.batch_size) {
            if cancelled() {
                return Err(ModelError::Cancelled);
            }
            let refs: Vec<&Encoding> = group.iter().map(|&i| &encodings[i]).collect();
            let batch = TokenBatch::new(&refs, self.pad_id);
            let run = self.session.run(&batch, &options, |shape, values| {
                relevance_logits(shape, values, group.len())
                    .map_err(|message| self.inference_error(message))
            });
            let logits = match run {
                Ok(logits) => logits,
                Err(_) if cancelled() => return Err(ModelError::Cancelled),
                Err(e) => return Err(e),
            };
            for (&i, s) in group.iter().zip(logits) {
                scores[i] = s;
            }
        }
        if cancelled() {
            return Err(ModelError::Cancelled);
        }
        Ok(scores)
    }

    fn inference_error(&self, message: String) -> ModelError {
        ModelError::Inference {
            path: self.session.path().to_path_buf(),
            message,
        }
    }
}

/// The relevance logit of each row: the single output, or the positive class of two.
fn relevance_logits(shape: &[usize], values: &[f32], rows: usize) -> Result<Vec<f32>, String> {
    match shape {
        [b] | [b, 1] if *b == rows => Ok(values.to_vec()),
        [b, 2] if *b == rows => Ok(values.chunks(2).map(|pair| pair[1]).collect()),
        other => Err(format!(
            "unexpected logits shape {other:?} for {rows} pairs (expected [{rows}, 1] or [{rows}, 2])"
        )),
    }
}

/// Run options whose terminate flag is set when `cancel` fires (at once if it already has): a
/// running batch stops at ONNX Runtime's next check, and any later run under them fails at once.
fn cancellable_options(cancel: Option<&CancelToken>) -> ort::Result<Arc<RunOptions>> {
    let options = Arc::new(RunOptions::new()?);
    if let Some(token) = cancel {
        let hooked = Arc::clone(&options);
        token.on_cancel(move || {
            let _ = hooked.terminate();
        });
    }
    Ok(options)
}

impl Reranker for CrossEncoder {
    fn pair_tokens(&self, query: &str, passages: &[&str]) -> Vec<usize> {
        CrossEncoder::pair_tokens(self, query, passages)
    }

    fn score(
        &self,
        query: &str,
        passages: &[&str],
        cancel: &CancelToken,
    ) -> Result<Vec<f32>, StageError> {
        CrossEncoder::score(self, query, passages, Some(cancel)).map_err(StageError::from)
    }

    /// A hung run holds this session's lock: a fresh session (same model, loaded and warmed).
    fn after_hang(&self) -> Result<AfterHang<dyn Reranker>, StageError> {
        let (runtime, config) = &self.loaded_from;
        let fresh = CrossEncoder::load(runtime, config).map_err(StageError::from)?;
        Ok(AfterHang::Fresh(Arc::new(fresh)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_logit_or_the_positive_of_two() {
        assert_eq!(
            relevance_logits(&[3, 1], &[0.5, -1.0, 2.0], 3),
            Ok(vec![0.5, -1.0, 2.0])
        );
        assert_eq!(relevance_logits(&[2], &[0.5, -1.0], 2), Ok(vec![0.5, -1.0]));
        assert_eq!(
            relevance_logits(&[2, 2], &[0.1, 0.9, 0.7, 0.3], 2),
            Ok(vec![0.9, 0.3])
        );
        assert!(relevance_logits(&[2, 3], &[0.0; 6], 2).is_err());
        assert!(relevance_logits(&[3, 1], &[0.0; 3], 2).is_err());
    }

    #[test]
    fn cancelling_the_token_terminates_runs_under_its_options() {
        let config = RerankerConfig {
            model_dir: "fixtures/models/tiny-cross-encoder".into(),
            ..Default::default()
        };
        let ce = CrossEncoder::load(&RuntimeConfig::default(), &config).unwrap();
        let encoding = ce.encode("query", "passage").unwrap();
        let batch = TokenBatch::new(&[&encoding], ce.pad_id);
        let token = CancelToken::new();
        let options = cancellable_options(Some(&token)).unwrap();
        assert!(ce.session.run(&batch, &options, |_, _| Ok(())).is_ok());
        token.cancel();
        let err = ce.session.run(&batch, &options, |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("terminate"), "{err}");
        // A token cancelled before the options exist terminates them at once too.
        let options = cancellable_options(Some(&token)).unwrap();
        assert!(ce.session.run(&batch, &options, |_, _| Ok(())).is_err());
    }
}
