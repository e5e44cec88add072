//! The JSON wire format of the bus: decoders that return an error value (never panic) and the one
//! encoder of context results, shared with `voicerag query --json`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use voicerag_actors::{ContextResult, Memory, SearchMode, Transcript, memory_id};

/// The only wire version this build speaks.
pub const WIRE_VERSION: u64 = 1;

/// Longest id, namespace, speaker or conversation accepted, in bytes: these end up in LMDB keys
/// and subjects, where unbounded values only cause trouble.
pub const MAX_ID_BYTES: usize = 256;

/// Largest `top_k` a query may ask for.
pub const MAX_TOP_K: usize = 100;

/// Why a payload could not be used. The `Display` text is what goes to `voice.errors`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not valid JSON for this message: {0}")]
    Json(String),
    #[error("unsupported wire version {0}: this voicerag speaks v1")]
    Version(u64),
    #[error("field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl WireError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

fn v1() -> u64 {
    WIRE_VERSION
}

/// `voice.transcript.<conversation>` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptMsg {
    #[serde(default = "v1")]
    pub v: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Optional: the subject names the conversation; when both are given they must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    pub utterance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    pub text: String,
    #[serde(rename = "final", default)]
    pub is_final: bool,
    /// Informational only: deadlines count from receipt, never from a sender's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Value>,
}

/// `voice.query` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryMsg {
    #[serde(default = "v1")]
    pub v: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// `voice.memory.<conversation>` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryMsg {
    #[serde(default = "v1")]
    pub v: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// With the subject's conversation, forms the id `<conversation>/<utterance>` when `id` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utterance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    pub text: String,
    /// Unix seconds (number) or RFC 3339 (string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Value>,
}

impl MemoryMsg {
    /// The payload voicerag publishes for a memory it holds (republished transcripts, agent replies).
    pub fn from_memory(memory: &Memory) -> Self {
        Self {
            v: WIRE_VERSION,
            id: Some(memory.id.clone()),
            utterance: None,
            namespace: Some(memory.namespace.clone()),
            speaker: Some(memory.speaker.clone()),
            text: memory.text.clone(),
            // Unix seconds, as every input takes them; millisecond precision survives in an f64.
            ts: Some(json!(memory.ts_ms as f64 / 1000.0)),
        }
    }
}

/// `voice.errors` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub v: u64,
    pub subject: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utterance: Option<String>,
}

impl ErrorMsg {
    pub fn new(subject: &str, reason: impl Into<String>, utterance: Option<String>) -> Self {
        Self {
            v: WIRE_VERSION,
            subject: subject.to_string(),
            reason: reason.into(),
            utterance,
        }
    }
}

/// A decoded explicit query.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextQuery {
    /// Echoed in the reply.
    pub id: String,
    pub namespace: String,
    pub text: String,
    pub top_k: Option<usize>,
    pub conversation: Option<String>,
    pub mode: SearchMode,
}

/// What decoders fill in when a payload leaves a field out.
#[derive(Debug, Clone, PartialEq)]
pub struct WireDefaults {
    pub namespace: String,
    pub max_payload_bytes: usize,
}

/// Rejects ids that cannot be a single NATS subject token: empty, too long, or containing `.`,
/// `*`, `>`, white space or control characters.
pub fn validate_token(field: &'static str, value: &str) -> Result<(), WireError> {
    if value.is_empty() {
        return Err(WireError::invalid(field, "is empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(WireError::invalid(
            field,
            format!("is longer than {MAX_ID_BYTES} bytes"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
    {
        return Err(WireError::invalid(
            field,
            format!("{value:?} cannot be a subject token (contains {c:?})"),
        ));
    }
    Ok(())
}

/// Rejects empty, overlong or control-character values for free-text ids (utterance, memory id,
/// namespace, speaker).
fn validate_id(field: &'static str, value: &str) -> Result<(), WireError> {
    if value.trim().is_empty() {
        return Err(WireError::invalid(field, "is empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(WireError::invalid(
            field,
            format!("is longer than {MAX_ID_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(WireError::invalid(field, "contains control characters"));
    }
    Ok(())
}

fn validate_text(text: &str) -> Result<(), WireError> {
    if text.trim().is_empty() {
        return Err(WireError::invalid("text", "is empty"));
    }
    Ok(())
}

fn check_size(payload: &[u8], limit: usize) -> Result<(), WireError> {
    if payload.len() > limit {
        return Err(WireError::TooLarge {
            size: payload.len(),
            limit,
        });
    }
    Ok(())
}

fn check_version(v: u64) -> Result<(), WireError> {
    if v != WIRE_VERSION {
        return Err(WireError::Version(v));
    }
    Ok(())
}

fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, WireError> {
    // Read the version first so a v2 message is rejected as such, not as a shape mismatch.
    #[derive(Deserialize)]
    struct Versioned {
        #[serde(default = "v1")]
        v: u64,
    }
    if let Ok(Versioned { v }) = serde_json::from_slice::<Versioned>(payload) {
        check_version(v)?;
    }
    serde_json::from_slice(payload).map_err(|e| WireError::Json(e.to_string()))
}

fn namespace_or(given: Option<String>, defaults: &WireDefaults) -> Result<String, WireError> {
    let namespace = given.unwrap_or_else(|| defaults.namespace.clone());
    validate_id("namespace", &namespace)?;
    Ok(namespace)
}

/// Decodes a transcript that arrived on the subject of `subject_conversation`.
pub fn decode_transcript(
    subject_conversation: &str,
    payload: &[u8],
    defaults: &WireDefaults,
    received_at: Instant,
) -> Result<Transcript, WireError> {
    check_size(payload, defaults.max_payload_bytes)?;
    let msg: TranscriptMsg = parse(payload)?;
    validate_token("conversation", subject_conversation)?;
    if let Some(c) = &msg.conversation
        && c != subject_conversation
    {
        return Err(WireError::invalid(
            "conversation",
            format!("{c:?} does not match the subject's conversation {subject_conversation:?}"),
        ));
    }
    validate_id("utterance", &msg.utterance)?;
    let speaker = msg.speaker.unwrap_or_else(|| "user".to_string());
    validate_id("speaker", &speaker)?;
    validate_text(&msg.text)?;
    Ok(Transcript {
        namespace: namespace_or(msg.namespace, defaults)?,
        conversation: subject_conversation.to_string(),
        utterance: msg.utterance,
        speaker,
        text: msg.text,
        is_final: msg.is_final,
        received_at,
    })
}

/// Decodes a `voice.query` request; `fallback_id` is used when the request carries none.
pub fn decode_query(
    payload: &[u8],
    defaults: &WireDefaults,
    fallback_id: impl FnOnce() -> String,
) -> Result<ContextQuery, WireError> {
    check_size(payload, defaults.max_payload_bytes)?;
    let msg: QueryMsg = parse(payload)?;
    validate_text(&msg.text)?;
    let id = match msg.id {
        Some(id) => {
            validate_id("id", &id)?;
            id
        }
        None => fallback_id(),
    };
    if let Some(k) = msg.top_k
        && !(1..=MAX_TOP_K).contains(&k)
    {
        return Err(WireError::invalid(
            "top_k",
            format!("must be between 1 and {MAX_TOP_K}"),
        ));
    }
    if let Some(c) = &msg.conversation {
        validate_token("conversation", c)?;
    }
    let mode = match msg.mode.as_deref() {
        None => SearchMode::default(),
        Some(m) => m
            .parse()
            .map_err(|e: String| WireError::invalid("mode", e))?,
    };
    Ok(ContextQuery {
        id,
        namespace: namespace_or(msg.namespace, defaults)?,
        text: msg.text,
        top_k: msg.top_k,
        conversation: msg.conversation,
        mode,
    })
}

/// Where a memory's id comes from when its payload has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryOrigin {
    /// The publisher's `Nats-Msg-Id` header.
    pub msg_id: Option<String>,
    /// The JetStream stream sequence: the same on every replica, so still a stable id.
    pub stream_sequence: Option<u64>,
}

/// Decodes a memory that arrived on the subject of `subject_conversation`. `now_ms` is its time
/// when the payload has no `ts`.
pub fn decode_memory(
    subject_conversation: &str,
    payload: &[u8],
    origin: &MemoryOrigin,
    defaults: &WireDefaults,
    now_ms: i64,
) -> Result<Memory, WireError> {
    check_size(payload, defaults.max_payload_bytes)?;
    let msg: MemoryMsg = parse(payload)?;
    validate_token("conversation", subject_conversation)?;
    validate_text(&msg.text)?;
    let id = match (
        msg.id,
        msg.utterance,
        &origin.msg_id,
        origin.stream_sequence,
    ) {
        (Some(id), _, _, _) => id,
        (None, Some(utterance), _, _) => {
            validate_id("utterance", &utterance)?;
            format!("{subject_conversation}/{utterance}")
        }
        (None, None, Some(msg_id), _) => msg_id.clone(),
        (None, None, None, Some(seq)) => format!("{subject_conversation}/stream-{seq}"),
        (None, None, None, None) => {
            return Err(WireError::invalid(
                "id",
                "absent, and no utterance or Nats-Msg-Id",
            ));
        }
    };
    validate_id("id", &id)?;
    let speaker = msg.speaker.unwrap_or_else(|| "agent".to_string());
    validate_id("speaker", &speaker)?;
    let ts_ms = match msg.ts {
        None | Some(Value::Null) => now_ms,
        Some(ts) => parse_ts(&ts)?,
    };
    Ok(Memory {
        id,
        namespace: namespace_or(msg.namespace, defaults)?,
        conversation: subject_conversation.to_string(),
        speaker,
        text: msg.text,
        ts_ms,
    })
}

/// Unix milliseconds from unix seconds (a JSON number, fractions allowed) or an RFC 3339 string:
/// the same rule as `voicerag ingest`.
fn parse_ts(ts: &Value) -> Result<i64, WireError> {
    let parsed = match ts {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| "must be unix seconds or an RFC 3339 string".to_string())
            .map(crate::ingest::Timestamp::Seconds),
        Value::String(s) => Ok(crate::ingest::Timestamp::Text(s.clone())),
        _ => Err("must be unix seconds or an RFC 3339 string".to_string()),
    };
    parsed
        .and_then(|t| t.to_ms().map_err(|e| e.to_string()))
        .map_err(|why| WireError::invalid("ts", why))
}

fn ms(d: Duration) -> f64 {
    // Microsecond resolution is plenty and keeps the JSON short.
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// One result as JSON: the shape of one line of `voicerag query --json`, and of every reply and
/// context message on the bus.
pub fn context_json(result: &ContextResult, id: &str) -> Value {
    let hits: Vec<Value> = result
        .hits
        .iter()
        .map(|h| serde_json::to_value(h).unwrap_or_else(|_| json!({"id": h.id})))
        .collect();
    json!({
        "v": WIRE_VERSION,
        "id": id,
        "namespace": result.namespace,
        "hits": hits,
        "capped": result.capped,
        "floored": result.floored,
        "timings_ms": {
            "embed": ms(result.timings.embed),
            "search": ms(result.timings.search),
            "rerank": ms(result.timings.rerank),
            "total": ms(result.timings.total),
        },
        "rerank": result.rerank.kind(),
        "rerank_detail": result.rerank.detail(),
        "deadline_met": result.deadline_met(),
        "degraded": result.degraded,
    })
}

/// The context published on `voice.context.<conversation>` for a transcript: [`context_json`]
/// plus `conversation`, `utterance` and `final`. Its id is `<conversation>/<utterance>`.
pub fn transcript_context_json(result: &ContextResult) -> Value {
    let id = memory_id(&result.conversation, &result.utterance);
    let mut value = context_json(result, &id);
    if let Value::Object(map) = &mut value {
        map.insert("conversation".into(), json!(result.conversation));
        map.insert("utterance".into(), json!(result.utterance));
        map.insert("final".into(), json!(result.is_final));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use voicerag_actors::{Hit, RerankOutcome, StageTimings};

    fn defaults() -> WireDefaults {
        WireDefaults {
            namespace: "default".into(),
            max_payload_bytes: 1024,
        }
    }

    #[test]
    fn transcript_defaults_and_subject_conversation() {
        let t = decode_transcript(
            "c1",
            br#"{"utterance":"u1","text":"hello there","final":true}"#,
            &defaults(),
            Instant::now(),
        )
        .unwrap();
        assert_eq!(t.conversation, "c1");
        assert_eq!(t.namespace, "default");
        assert_eq!(t.speaker, "user");
        assert!(t.is_final);
    }

    #[test]
    fn transcript_conversation_mismatch_and_bad_tokens_are_rejected() {
        let d = defaults();
        let now = Instant::now();
        let e = decode_transcript(
            "c1",
            br#"{"conversation":"c2","utterance":"u","text":"x"}"#,
            &d,
            now,
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        for bad in ["a.b", "a*", ">", "a b", ""] {
            let e =
                decode_transcript(bad, br#"{"utterance":"u","text":"x"}"#, &d, now).unwrap_err();
            assert!(
                matches!(
                    e,
                    WireError::Invalid {
                        field: "conversation",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn unknown_version_is_rejected_with_reason() {
        let e = decode_transcript(
            "c",
            br#"{"v":2,"utterance":"u","text":"x"}"#,
            &defaults(),
            Instant::now(),
        )
        .unwrap_err();
        assert_eq!(e, WireError::Version(2));
        assert!(e.to_string().contains("version 2"));
    }

    #[test]
    fn oversized_payload_is_rejected_before_parsing() {
        let big = vec![b' '; 2000];
        let e = decode_query(&big, &defaults(), || "x".into()).unwrap_err();
        assert_eq!(
            e,
            WireError::TooLarge {
                size: 2000,
                limit: 1024
            }
        );
    }

    #[test]
    fn query_fields_and_generated_id() {
        let q = decode_query(
            br#"{"text":"cats","top_k":3,"mode":"bm25"}"#,
            &defaults(),
            || "gen-1".into(),
        )
        .unwrap();
        assert_eq!(q.id, "gen-1");
        assert_eq!(q.top_k, Some(3));
        assert_eq!(q.mode, SearchMode::Bm25);
        let e = decode_query(br#"{"text":"cats","mode":"fuzzy"}"#, &defaults(), || {
            "g".into()
        })
        .unwrap_err();
        assert!(e.to_string().contains("mode"), "{e}");
        let e =
            decode_query(br#"{"text":"cats","top_k":0}"#, &defaults(), || "g".into()).unwrap_err();
        assert!(e.to_string().contains("top_k"), "{e}");
    }

    #[test]
    fn memory_id_precedence() {
        let d = defaults();
        let origin = MemoryOrigin {
            msg_id: Some("hdr-1".into()),
            stream_sequence: Some(7),
        };
        let m = |p: &[u8], o: &MemoryOrigin| decode_memory("c", p, o, &d, 5);
        assert_eq!(
            m(br#"{"id":"given","utterance":"u","text":"t"}"#, &origin)
                .unwrap()
                .id,
            "given"
        );
        assert_eq!(
            m(br#"{"utterance":"u","text":"t"}"#, &origin).unwrap().id,
            "c/u"
        );
        assert_eq!(m(br#"{"text":"t"}"#, &origin).unwrap().id, "hdr-1");
        let seq_only = MemoryOrigin {
            msg_id: None,
            stream_sequence: Some(7),
        };
        assert_eq!(m(br#"{"text":"t"}"#, &seq_only).unwrap().id, "c/stream-7");
        assert!(m(br#"{"text":"t"}"#, &MemoryOrigin::default()).is_err());
    }

    #[test]
    fn memory_ts_forms() {
        let d = defaults();
        let o = MemoryOrigin::default();
        let m = decode_memory("c", br#"{"id":"a","text":"t","ts":1700000000}"#, &o, &d, 5).unwrap();
        assert_eq!(m.ts_ms, 1_700_000_000_000);
        let m = decode_memory(
            "c",
            br#"{"id":"a","text":"t","ts":"2023-11-14T22:13:20Z"}"#,
            &o,
            &d,
            5,
        )
        .unwrap();
        assert_eq!(m.ts_ms, 1_700_000_000_000);
        let m = decode_memory("c", br#"{"id":"a","text":"t"}"#, &o, &d, 5).unwrap();
        assert_eq!(m.ts_ms, 5);
        assert!(
            decode_memory("c", br#"{"id":"a","text":"t","ts":"yesterday"}"#, &o, &d, 5).is_err()
        );
    }

    #[test]
    fn memory_round_trips_through_its_wire_form() {
        let memory = Memory {
            id: "c/u1".into(),
            namespace: "ns".into(),
            conversation: "c".into(),
            speaker: "user".into(),
            text: "I like tea".into(),
            ts_ms: 42,
        };
        let payload = serde_json::to_vec(&MemoryMsg::from_memory(&memory)).unwrap();
        let back = decode_memory("c", &payload, &MemoryOrigin::default(), &defaults(), 0).unwrap();
        assert_eq!(back, memory);
    }

    #[test]
    fn context_json_shape() {
        let now = Instant::now();
        let result = ContextResult {
            namespace: "ns".into(),
            conversation: "c".into(),
            utterance: "u".into(),
            is_final: false,
            text: "q".into(),
            hits: vec![Hit {
                id: "m1".into(),
                text: "t".into(),
                score: 0.5,
                rerank_score: None,
                vector_rank: Some(1),
                bm25_rank: None,
                similarity: None,
                conversation: "c".into(),
                speaker: "user".into(),
                ts_ms: 1,
            }],
            capped: 2,
            floored: 1,
            rerank: RerankOutcome::Partial(3),
            degraded: Some("shed".into()),
            timings: StageTimings {
                total: Duration::from_micros(1500),
                ..Default::default()
            },
            deadline: now + Duration::from_secs(1),
            finished_at: now,
        };
        let v = transcript_context_json(&result);
        assert_eq!(v["id"], "c/u");
        assert_eq!(v["hits"][0]["id"], "m1");
        assert_eq!(
            (v["capped"].as_u64(), v["floored"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(v["hits"][0]["vector_rank"], 1);
        assert!(v["hits"][0].get("bm25_rank").is_none());
        assert_eq!(v["timings_ms"]["total"], 1.5);
        assert_eq!(v["rerank"], "partial");
        assert_eq!(v["rerank_detail"], 3);
        assert_eq!(v["deadline_met"], true);
        assert_eq!(v["degraded"], "shed");
        assert_eq!(v["final"], false);
        assert_eq!(v["utterance"], "u");
        let plain = context_json(&result, "q-1");
        assert_eq!(plain["id"], "q-1");
        assert!(plain.get("final").is_none());
    }
}
