//! The sentence embedder: BERT-family encoder, attention-masked mean pooling, L2 normalisation.

use ort::session::RunOptions;
use std::sync::Arc;
use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationStrategy};
use voicerag_actors::{AfterHang, Embedder, StageError};

use super::error::ModelError;
use super::model_dir::ModelDir;
use super::runtime::runtime;
use super::session::{ModelSession, TokenBatch, length_groups};
use super::{EmbedderConfig, RuntimeConfig};

/// Sentence embedding model on ONNX Runtime.
pub struct SentenceEmbedder {
    session: ModelSession,
    /// Truncates at `max_length`; padding is ours, per batch.
    tokenizer: Tokenizer,
    /// Same tokenizer without truncation: counting and chunking need every token.
    counter: Tokenizer,
    /// Special tokens the post-processor adds to one text ([CLS] and [SEP] for BERT).
    specials: usize,
    pad_id: u32,
    name: String,
    max_length: usize,
    batch_size: usize,
    dimension: usize,
    /// What it was loaded from: a fresh session after a hang loads the same.
    loaded_from: (RuntimeConfig, EmbedderConfig),
}

impl SentenceEmbedder {
    /// Loads the model directory named by `config.model_dir` and warms it up with one run.
    pub fn load(
        runtime_config: &RuntimeConfig,
        config: &EmbedderConfig,
    ) -> Result<Self, ModelError> {
        let dir = ModelDir::open(&config.model_dir, "[embedder] model_dir")?;
        let rt = runtime(runtime_config)?;
        let max_length = dir.effective_max_length(config.max_length);
        let tokenizer = dir.tokenizer_with(Some(max_length), TruncationStrategy::LongestFirst)?;
        let counter = dir.tokenizer_with(None, TruncationStrategy::LongestFirst)?;
        let specials = counter
            .get_post_processor()
            .map(|p| p.added_tokens(false))
            .unwrap_or(0);
        let session = ModelSession::load(
            rt,
            &dir.model,
            runtime_config,
            &[
                "last_hidden_state",
                "token_embeddings",
                "sentence_embedding",
            ],
        )?;
        let mut embedder = Self {
            session,
            tokenizer,
            counter,
            specials,
            pad_id: dir.pad_id,
            name: dir.name(),
            max_length,
            batch_size: config.batch_size.max(1),
            dimension: 0,
            loaded_from: (runtime_config.clone(), config.clone()),
        };
        // The warm-up run also reads the dimension from the model's real output.
        let warm = embedder.embed(&["warm up the session"])?;
        embedder.dimension = warm.first().map(Vec::len).unwrap_or(0);
        if embedder.dimension == 0 {
            return Err(ModelError::UnsupportedModel {
                path: dir.model,
                message: "the model's output has no embedding dimension".into(),
            });
        }
        Ok(embedder)
    }

    /// L2-normalised embeddings, one per text, in input order. Texts run in groups of similar token
    /// length, at most `batch_size` at a time, so little is padded. Texts longer than `max_length` tokens
    /// are truncated (see [`Self::chunk`]).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        // One by one on the calling thread: `encode_batch` hands the texts to rayon's global pool,
        // which arroy's tree builds also use, so a final's tokenizing could wait behind a build
        // (and for a few short texts the hand-off costs more than the work).
        let encodings = texts
            .iter()
            .map(|text| self.tokenizer.encode(*text, true))
            .collect::<Result<Vec<Encoding>, _>>()
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        let lengths: Vec<usize> = encodings.iter().map(Encoding::len).collect();
        let options = RunOptions::new().map_err(|e| self.inference_error(e.to_string()))?;
        let mut out = vec![Vec::new(); texts.len()];
        for group in length_groups(&lengths, self.batch_size) {
            let refs: Vec<&Encoding> = group.iter().map(|&i| &encodings[i]).collect();
            let batch = TokenBatch::new(&refs, self.pad_id);
            let pooled = self.session.run(&batch, &options, |shape, values| {
                self.pool(&batch, shape, values)
            })?;
            for (&i, vector) in group.iter().zip(pooled) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    fn inference_error(&self, message: String) -> ModelError {
        ModelError::Inference {
            path: self.session.path().to_path_buf(),
            message,
        }
    }

    /// Mean of the token vectors under the attention mask (or the model's own pooled output), L2-normalised.
    fn pool(
        &self,
        batch: &TokenBatch,
        shape: &[usize],
        values: &[f32],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let rows = batch.rows();
        match shape {
            &[b, s, h] if b == rows && s == batch.cols() => Ok((0..rows)
                .map(|r| {
                    let mut sum = vec![0f32; h];
                    let mut count = 0f32;
                    for t in 0..s {
                        if batch.mask()[r * s + t] == 0 {
                            continue;
                        }
                        count += 1.0;
                        let token = &values[(r * s + t) * h..(r * s + t + 1) * h];
                        sum.iter_mut().zip(token).for_each(|(acc, v)| *acc += v);
                    }
                    sum.iter_mut().for_each(|v| *v /= count.max(1.0));
                    normalised(sum)
                })
                .collect()),
            &[b, h] if b == rows => Ok(values
                .chunks(h.max(1))
                .map(|v| normalised(v.to_vec()))
                .collect()),
            other => Err(self.inference_error(format!(
                "unexpected output shape {other:?} for a batch of {rows} x {} tokens",
                batch.cols()
            ))),
        }
    }

    /// Dimension of the embeddings, as the model produces them.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// What makes two sessions' vectors interchangeable: the model file, the token limit and the
    /// dimension.
    pub fn identity(&self) -> String {
        format!(
            "{}|{}|{}",
            self.session.path().display(),
            self.max_length,
            self.dimension
        )
    }

    /// The model directory's name, e.g. "all-MiniLM-L6-v2".
    pub fn model_name(&self) -> &str {
        &self.name
    }

    /// Max tokens per text (after capping at the model's positions).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Whether the model reads `token_type_ids` (read from the session).
    pub fn takes_token_type_ids(&self) -> bool {
        self.session.takes_token_type_ids()
    }

    /// Tokens of `text` including special tokens, before truncation: more than
    /// [`Self::max_length`] means embedding would truncate it.
    pub fn token_count(&self, text: &str) -> usize {
        self.counter
            .encode(text, true)
            .map(|e| e.len())
            .unwrap_or(0)
    }

    /// Splits `text` into substrings that each fit `max_length` tokens, consecutive pieces sharing
    /// about `overlap_tokens` tokens; cuts fall between words. A text that fits is returned whole.
    pub fn chunk(&self, text: &str, overlap_tokens: usize) -> Vec<String> {
        let window = self.max_length.saturating_sub(self.specials).max(1);
        let Ok(enc) = self.counter.encode(text, false) else {
            return vec![text.to_string()];
        };
        let spans = word_aligned_windows(enc.get_word_ids(), window, overlap_tokens);
        if spans.len() <= 1 {
            return vec![text.to_string()];
        }
        let offsets = enc.get_offsets();
        spans
            .into_iter()
            .filter_map(|(start, end)| text.get(offsets[start].0..offsets[end - 1].1))
            .map(str::to_string)
            .collect()
    }
}

/// Token windows `[start, end)` of at most `window` tokens over `n = word_ids.len()` tokens, each
/// starting and ending on a word boundary where possible, consecutive ones overlapping by about
/// `overlap` tokens (at most half a window, so every step makes progress).
fn word_aligned_windows(
    word_ids: &[Option<u32>],
    window: usize,
    overlap: usize,
) -> Vec<(usize, usize)> {
    let n = word_ids.len();
    let overlap = overlap.min(window / 2);
    // A token continues a word when it shares the previous token's word id (e.g. "##ing").
    let continues =
        |i: usize| i > 0 && i < n && word_ids[i].is_some() && word_ids[i] == word_ids[i - 1];
    let mut spans = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = (start + window).min(n);
        let mut cut = end;
        while cut > start && continues(cut) {
            cut -= 1;
        }
        if cut > start {
            end = cut; // else one word longer than the window: cut inside it
        }
        spans.push((start, end));
        if end == n {
            break;
        }
        let mut next = end.saturating_sub(overlap).max(start + 1);
        while next > start + 1 && continues(next) {
            next -= 1;
        }
        while next < end && continues(next) {
            next += 1;
        }
        start = next;
    }
    spans
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

impl Embedder for SentenceEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StageError> {
        SentenceEmbedder::embed(self, texts).map_err(StageError::from)
    }

    /// A hung run holds this session's lock: a fresh session (same model, loaded and warmed).
    fn after_hang(&self) -> Result<AfterHang<dyn Embedder>, StageError> {
        let (runtime, config) = &self.loaded_from;
        let fresh = SentenceEmbedder::load(runtime, config).map_err(StageError::from)?;
        Ok(AfterHang::Fresh(Arc::new(fresh)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ids: &[u32]) -> Vec<Option<u32>> {
        ids.iter().map(|&i| Some(i)).collect()
    }

    #[test]
    fn windows_cover_everything_within_the_limit() {
        let ids = words(&(0..100).collect::<Vec<_>>());
        let spans = word_aligned_windows(&ids, 30, 5);
        assert_eq!(spans.first().map(|s| s.0), Some(0));
        assert_eq!(spans.last().map(|s| s.1), Some(100));
        for pair in spans.windows(2) {
            assert!(
                pair[1].0 < pair[0].1,
                "consecutive windows overlap: {pair:?}"
            );
            assert!(pair[1].0 > pair[0].0, "progress: {pair:?}");
            assert_eq!(pair[0].1 - pair[1].0, 5, "overlap as asked: {pair:?}");
        }
        assert!(spans.iter().all(|(s, e)| e - s <= 30));
    }

    #[test]
    fn windows_do_not_cut_words() {
        // Word w spans tokens [2w, 2w+1]: every cut must fall on an even index.
        let ids: Vec<Option<u32>> = (0..60u32).map(|t| Some(t / 2)).collect();
        let spans = word_aligned_windows(&ids, 7, 2);
        for (s, e) in &spans {
            assert_eq!(s % 2, 0, "{spans:?}");
            assert!(*e == 60 || e % 2 == 0, "{spans:?}");
            assert!(e - s <= 7);
        }
        assert_eq!(spans.last().map(|s| s.1), Some(60));
    }

    #[test]
    fn a_word_longer_than_the_window_is_still_split() {
        let ids: Vec<Option<u32>> = vec![Some(0); 25];
        let spans = word_aligned_windows(&ids, 10, 3);
        assert_eq!(spans.last().map(|s| s.1), Some(25));
        assert!(spans.iter().all(|(s, e)| e - s <= 10 && e > s));
    }

    #[test]
    fn normalised_has_unit_length() {
        let v = normalised(vec![3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(normalised(vec![0.0, 0.0]), vec![0.0, 0.0]);
    }
}
