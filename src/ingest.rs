//! Turning input records into storable memories: validation, timestamps, chunking, embedding.

use serde::Deserialize;
use voicerag_actors::Memory;

use crate::models::{ModelError, SentenceEmbedder};
use crate::store::{ChunkInput, NewMemory};

/// Tokens shared by neighbouring chunks of a long memory, so a fact cut at a border is still whole.
pub const CHUNK_OVERLAP_TOKENS: usize = 32;

/// One line of `voicerag ingest FILE.jsonl`.
/// Unknown fields are ignored, so callers can carry their own metadata.
#[derive(Debug, Clone, Deserialize)]
pub struct IngestLine {
    pub id: Option<String>,
    pub text: Option<String>,
    pub namespace: Option<String>,
    pub conversation: Option<String>,
    pub speaker: Option<String>,
    pub ts: Option<Timestamp>,
    /// Ids of earlier memories (same namespace) this one replaces.
    #[serde(default)]
    pub supersedes: Vec<String>,
    /// When it leaves default results: RFC 3339 string or unix seconds, as `ts`.
    pub expires_at: Option<Timestamp>,
}

/// A timestamp on input: RFC 3339 string or unix seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Timestamp {
    Seconds(f64),
    Text(String),
}

/// Why an input record was not used.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("missing \"id\"")]
    MissingId,
    #[error("empty \"id\"")]
    EmptyId,
    #[error("missing \"text\"")]
    MissingText,
    #[error("\"text\" is empty or only white space")]
    EmptyText,
    #[error("\"text\" is {0} bytes, over the limit of {1} (store.max_text_bytes)")]
    TooLong(usize, usize),
    #[error("bad \"ts\": {0}")]
    BadTimestamp(String),
    #[error("bad \"expires_at\": {0}")]
    BadExpiry(String),
    #[error("bad \"supersedes\": {0}")]
    BadSupersedes(String),
}

impl Timestamp {
    /// Unix milliseconds, UTC.
    pub fn to_ms(&self) -> Result<i64, RecordError> {
        match self {
            Timestamp::Seconds(s) if s.is_finite() && s.abs() < 1e12 => {
                Ok((s * 1000.0).round() as i64)
            }
            Timestamp::Seconds(s) => {
                Err(RecordError::BadTimestamp(format!("{s} is not a unix time")))
            }
            Timestamp::Text(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis())
                .map_err(|e| RecordError::BadTimestamp(format!("{t:?} is not RFC 3339: {e}"))),
        }
    }
}

/// Current time as unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Parses and validates one JSONL line into a memory (not yet embedded).
pub fn parse_line(line: &str, max_text_bytes: usize) -> Result<Memory, RecordError> {
    let raw: IngestLine =
        serde_json::from_str(line).map_err(|e| RecordError::Json(e.to_string()))?;
    let id = raw.id.ok_or(RecordError::MissingId)?;
    if id.trim().is_empty() {
        return Err(RecordError::EmptyId);
    }
    let text = raw.text.ok_or(RecordError::MissingText)?;
    validate_text(&text, max_text_bytes)?;
    let ts_ms = match &raw.ts {
        Some(ts) => ts.to_ms()?,
        None => now_ms(),
    };
    let expires_at_ms = match &raw.expires_at {
        Some(t) => Some(t.to_ms().map_err(|e| match e {
            RecordError::BadTimestamp(why) => RecordError::BadExpiry(why),
            other => other,
        })?),
        None => None,
    };
    for old in &raw.supersedes {
        if old.trim().is_empty() {
            return Err(RecordError::BadSupersedes("an empty id".into()));
        }
        if old.len() > voicerag_actors::MAX_NAME_BYTES {
            return Err(RecordError::BadSupersedes(format!(
                "an id of {} bytes, longer than {}",
                old.len(),
                voicerag_actors::MAX_NAME_BYTES
            )));
        }
    }
    Ok(Memory {
        id,
        namespace: raw
            .namespace
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        conversation: raw.conversation.unwrap_or_default(),
        speaker: raw.speaker.unwrap_or_default(),
        text,
        ts_ms,
        supersedes: raw.supersedes,
        expires_at_ms,
    })
}

/// Empty, white-space-only and over-long texts are refused.
pub fn validate_text(text: &str, max_text_bytes: usize) -> Result<(), RecordError> {
    if text.trim().is_empty() {
        return Err(RecordError::EmptyText);
    }
    if text.len() > max_text_bytes {
        return Err(RecordError::TooLong(text.len(), max_text_bytes));
    }
    Ok(())
}

/// Chunks and embeds memories in as few ONNX runs as the batch size allows.
pub fn embed_memories(
    embedder: &SentenceEmbedder,
    memories: Vec<Memory>,
) -> Result<Vec<NewMemory>, ModelError> {
    embed_memories_reusing(embedder, memories, |_| None).map(|(prepared, _)| prepared)
}

/// [`embed_memories`], except that a memory stored as one chunk of exactly its text takes the
/// vector `known` has for it (a final's query embedding, same model), instead of being embedded
/// again. Returns the memories and how many texts were embedded.
pub fn embed_memories_reusing(
    embedder: &SentenceEmbedder,
    memories: Vec<Memory>,
    mut known: impl FnMut(&Memory) -> Option<Vec<f32>>,
) -> Result<(Vec<NewMemory>, usize), ModelError> {
    let chunked: Vec<Vec<String>> = memories
        .iter()
        .map(|m| embedder.chunk(&m.text, CHUNK_OVERLAP_TOKENS))
        .collect();
    // Only a whole-text chunk was embedded as the query was (the query is truncated, chunks are not).
    let reused: Vec<Option<Vec<f32>>> = memories
        .iter()
        .zip(&chunked)
        .map(|(m, chunks)| match chunks.as_slice() {
            [only] if *only == m.text => known(m),
            _ => None,
        })
        .collect();
    let flat: Vec<&str> = chunked
        .iter()
        .zip(&reused)
        .filter(|(_, r)| r.is_none())
        .flat_map(|(chunks, _)| chunks.iter().map(String::as_str))
        .collect();
    let embedded = flat.len();
    let mut vectors = if flat.is_empty() {
        Vec::new().into_iter()
    } else {
        embedder.embed(&flat)?.into_iter()
    };
    let mut out = Vec::with_capacity(memories.len());
    for ((memory, chunks), reused) in memories.into_iter().zip(chunked).zip(reused) {
        let chunks = match reused {
            Some(embedding) => chunks
                .into_iter()
                .zip(std::iter::once(embedding))
                .map(|(text, embedding)| ChunkInput { text, embedding })
                .collect(),
            None => chunks
                .into_iter()
                .filter_map(|text| {
                    vectors
                        .next()
                        .map(|embedding| ChunkInput { text, embedding })
                })
                .collect(),
        };
        out.push(NewMemory { memory, chunks });
    }
    Ok((out, embedded))
}

/// Memories per unit of bulk work. Fixed, so how many sessions share the work never changes a
/// vector (a batch's composition does, slightly, under int8 dynamic quantisation).
pub const BULK_PART: usize = 64;

/// Embedding sessions for bulk work: a batch is cut into parts of [`BULK_PART`] memories, which
/// the sessions take in turn, one thread each; results keep the input order.
pub struct BulkEmbedder {
    sessions: Vec<SentenceEmbedder>,
}

impl BulkEmbedder {
    /// `runtime.bulk_sessions` sessions (0: one per core), loaded one after another.
    pub fn load(
        runtime: &crate::models::RuntimeConfig,
        config: &crate::models::EmbedderConfig,
    ) -> Result<Self, ModelError> {
        let n = match runtime.bulk_sessions {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let sessions = (0..n)
            .map(|_| SentenceEmbedder::load(runtime, config))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { sessions })
    }

    /// One of the sessions (model name, dimension, opening the store).
    pub fn first(&self) -> &SentenceEmbedder {
        &self.sessions[0]
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// [`embed_memories`] over the sessions in parallel; the same output whatever their number.
    pub fn embed_memories(&self, memories: Vec<Memory>) -> Result<Vec<NewMemory>, ModelError> {
        type Done = (usize, Result<Vec<NewMemory>, ModelError>);
        let parts: Vec<&[Memory]> = memories.chunks(BULK_PART).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut done: Vec<Done> = std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .sessions
                .iter()
                .map(|session| {
                    scope.spawn(|| {
                        let mut mine: Vec<Done> = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(part) = parts.get(i) else { break };
                            mine.push((i, embed_memories(session, part.to_vec())));
                        }
                        mine
                    })
                })
                .collect();
            // A worker that panicked loses its parts: caught by the count below.
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        });
        if done.len() != parts.len() {
            return Err(ModelError::Inference {
                path: self.sessions[0].model_name().into(),
                message: "a bulk embedding worker died".into(),
            });
        }
        done.sort_by_key(|(i, _)| *i);
        let mut out = Vec::with_capacity(memories.len());
        for (_, part) in done {
            out.extend(part?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supersedes_and_expires_at_are_read_and_checked() {
        let m = parse_line(
            r#"{"id":"c2/u1","text":"the vet moved it to Friday","supersedes":["c1/u4"],"expires_at":"2026-03-08T00:00:00+01:00"}"#,
            100,
        )
        .unwrap();
        assert_eq!(m.supersedes, vec!["c1/u4"]);
        assert_eq!(m.expires_at_ms, Some(1_772_924_400_000));
        let m = parse_line(r#"{"id":"a","text":"t","expires_at":1700000000}"#, 100).unwrap();
        assert_eq!(m.expires_at_ms, Some(1_700_000_000_000));
        assert!(m.supersedes.is_empty());
        assert!(matches!(
            parse_line(r#"{"id":"a","text":"t","expires_at":"soon"}"#, 100),
            Err(RecordError::BadExpiry(_))
        ));
        assert!(matches!(
            parse_line(r#"{"id":"a","text":"t","supersedes":[" "]}"#, 100),
            Err(RecordError::BadSupersedes(_))
        ));
        let long = format!(
            r#"{{"id":"a","text":"t","supersedes":["{}"]}}"#,
            "x".repeat(200)
        );
        assert!(matches!(
            parse_line(&long, 100),
            Err(RecordError::BadSupersedes(_))
        ));
    }

    #[test]
    fn parses_a_full_line() {
        let m = parse_line(
            r#"{"id":"c1/u1","text":"my dog is Rex","namespace":"alice","conversation":"c1","speaker":"user","ts":"2026-01-02T03:04:05Z"}"#,
            100,
        )
        .unwrap();
        assert_eq!(m.namespace, "alice");
        assert_eq!(m.ts_ms, 1_767_323_045_000);
    }

    #[test]
    fn defaults_namespace_and_accepts_unix_seconds() {
        let m = parse_line(r#"{"id":"a","text":"hi","ts":1700000000}"#, 100).unwrap();
        assert_eq!(m.namespace, "default");
        assert_eq!(m.ts_ms, 1_700_000_000_000);
    }

    #[test]
    fn rejects_bad_records_with_reasons() {
        assert_eq!(
            parse_line(r#"{"text":"x"}"#, 100),
            Err(RecordError::MissingId)
        );
        assert_eq!(
            parse_line(r#"{"id":"a","text":"  \n"}"#, 100),
            Err(RecordError::EmptyText)
        );
        assert_eq!(
            parse_line(r#"{"id":"a","text":"abcdef"}"#, 3),
            Err(RecordError::TooLong(6, 3))
        );
        assert!(matches!(
            parse_line("{not json", 100),
            Err(RecordError::Json(_))
        ));
        assert!(matches!(
            parse_line(r#"{"id":"a","text":"x","ts":"yesterday"}"#, 100),
            Err(RecordError::BadTimestamp(_))
        ));
    }
}
