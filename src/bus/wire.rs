//! The JSON wire format of the bus, v2: decoders that return an error value (never panic) and the
//! one encoder of context results, shared with `voicerag query --json`.
//!
//! In v2 the subject names the namespace (and the conversation); a payload may repeat them, and a
//! payload that disagrees with its subject is rejected. Payloads say `"v": 2`; a v1 payload (`"v":
//! 1` or no `v`) on a v2 subject is read the same way, since the subject carries what v1 lacked.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use voicerag_actors::{ContextResult, MAX_NAME_BYTES, Memory, SearchMode, Transcript, memory_id};

/// The wire version this build speaks (and writes). v1 payloads are read on v2 subjects.
pub const WIRE_VERSION: u64 = 2;

/// Largest `top_k` a query may ask for.
pub const MAX_TOP_K: usize = 100;

/// Why a payload could not be used. The `Display` text is what goes to `voice.errors`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not valid JSON for this message: {0}")]
    Json(String),
    #[error("unsupported wire version {0}: this voicerag speaks v2")]
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

/// A payload without `v` is a v1 payload.
fn v1() -> u64 {
    1
}

/// `voice.transcript.<namespace>.<conversation>` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptMsg {
    #[serde(default = "v1")]
    pub v: u64,
    /// Optional: the subject names the namespace; when both are given they must agree.
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

/// `voice.query.<namespace>` payload.
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
    /// Also return superseded and expired memories (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_superseded: Option<bool>,
    /// IANA time zone for reading time expressions ("yesterday") in `text`; default: the
    /// namespace's configured zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Read time expressions at all (default: `retrieval.time_windows`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_windows: Option<bool>,
}

/// `voice.memory.<namespace>.<conversation>` payload.
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
    /// Ids of earlier memories of the same namespace this one replaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<String>,
    /// When it leaves default results: unix seconds (number) or RFC 3339 (string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Value>,
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
            supersedes: memory.supersedes.clone(),
            expires_at: memory.expires_at_ms.map(|t| json!(t as f64 / 1000.0)),
        }
    }
}

/// `voice.errors.<namespace>` (or `voice.errors` when the namespace is unknown) payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub v: u64,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utterance: Option<String>,
}

impl ErrorMsg {
    pub fn new(
        subject: &str,
        namespace: Option<&str>,
        reason: impl Into<String>,
        utterance: Option<String>,
    ) -> Self {
        Self {
            v: WIRE_VERSION,
            subject: subject.to_string(),
            namespace: namespace.map(str::to_string),
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
    pub include_superseded: bool,
    pub time_zone: Option<String>,
    pub time_windows: Option<bool>,
}

/// Limits of the decoders.
#[derive(Debug, Clone, PartialEq)]
pub struct WireDefaults {
    pub max_payload_bytes: usize,
}

/// The JetStream dedupe id (`Nats-Msg-Id`) of a memory: `<namespace>.<id>`. A namespace is a
/// subject token (no `.`), so two tenants' ids never collide.
pub fn dedupe_id(namespace: &str, id: &str) -> String {
    format!("{namespace}.{id}")
}

/// Rejects ids that cannot be a single NATS subject token: empty, too long, or containing `.`,
/// `*`, `>`, white space or control characters.
pub fn validate_token(field: &'static str, value: &str) -> Result<(), WireError> {
    if value.is_empty() {
        return Err(WireError::invalid(field, "is empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(WireError::invalid(
            field,
            format!("is longer than {MAX_NAME_BYTES} bytes"),
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
    if value.len() > MAX_NAME_BYTES {
        return Err(WireError::invalid(
            field,
            format!("is longer than {MAX_NAME_BYTES} bytes"),
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
    if v != WIRE_VERSION && v != 1 {
        return Err(WireError::Version(v));
    }
    Ok(())
}

fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, WireError> {
    // Read the version first so a v3 message is rejected as such, not as a shape mismatch.
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

/// A payload's `field` (namespace, conversation) must agree with its subject's.
fn agrees(field: &'static str, given: Option<&str>, subject: &str) -> Result<(), WireError> {
    match given {
        Some(g) if g != subject => Err(WireError::invalid(
            field,
            format!("{g:?} does not match the subject's {field} {subject:?}"),
        )),
        _ => Ok(()),
    }
}

/// Decodes a transcript that arrived on `voice.transcript.<subject_namespace>.<subject_conversation>`.
pub fn decode_transcript(
    subject_namespace: &str,
    subject_conversation: &str,
    payload: &[u8],
    defaults: &WireDefaults,
    received_at: Instant,
) -> Result<Transcript, WireError> {
    check_size(payload, defaults.max_payload_bytes)?;
    validate_token("namespace", subject_namespace)?;
    validate_token("conversation", subject_conversation)?;
    let msg: TranscriptMsg = parse(payload)?;
    agrees("namespace", msg.namespace.as_deref(), subject_namespace)?;
    agrees(
        "conversation",
        msg.conversation.as_deref(),
        subject_conversation,
    )?;
    validate_id("utterance", &msg.utterance)?;
    // A final becomes the memory `<conversation>/<utterance>`: it must fit the same limit.
    let id = memory_id(subject_conversation, &msg.utterance);
    if id.len() > MAX_NAME_BYTES {
        return Err(WireError::invalid(
            "utterance",
            format!(
                "with the conversation, forms the memory id {} bytes long, longer than \
                 {MAX_NAME_BYTES}",
                id.len()
            ),
        ));
    }
    let speaker = msg.speaker.unwrap_or_else(|| "user".to_string());
    validate_id("speaker", &speaker)?;
    validate_text(&msg.text)?;
    Ok(Transcript {
        namespace: subject_namespace.to_string(),
        conversation: subject_conversation.to_string(),
        utterance: msg.utterance,
        speaker,
        text: msg.text,
        is_final: msg.is_final,
        received_at,
    })
}

/// Decodes a `voice.query.<subject_namespace>` request; `fallback_id` is used when the request
/// carries none.
pub fn decode_query(
    subject_namespace: &str,
    payload: &[u8],
    defaults: &WireDefaults,
    fallback_id: impl FnOnce() -> String,
) -> Result<ContextQuery, WireError> {
    check_size(payload, defaults.max_payload_bytes)?;
    validate_token("namespace", subject_namespace)?;
    let msg: QueryMsg = parse(payload)?;
    agrees("namespace", msg.namespace.as_deref(), subject_namespace)?;
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
    if let Some(z) = &msg.time_zone
        && crate::time_expr::zone(z).is_none()
    {
        return Err(WireError::invalid(
            "time_zone",
            "must be an IANA time zone name such as \"Europe/Berlin\"",
        ));
    }
    Ok(ContextQuery {
        id,
        namespace: subject_namespace.to_string(),
        text: msg.text,
        top_k: msg.top_k,
        conversation: msg.conversation,
        mode,
        include_superseded: msg.include_superseded.unwrap_or(false),
        time_zone: msg.time_zone,
        time_windows: msg.time_windows,
    })
}

/// The conversation token of forget markers in the memory stream:
/// `voice.memory.<namespace>._forget`. Reserved: a forget by this conversation is refused.
pub const FORGET_CONVERSATION: &str = "_forget";

/// The header that makes a memory-stream message a forget marker (its payload a [`ForgetMsg`]).
pub const FORGET_HEADER: &str = "Voicerag-Forget";

/// `voice.forget.<namespace>` payload, and the payload of a forget marker in the memory stream.
/// Unknown fields are refused: a misspelt `conversation` must not forget the whole namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetMsg {
    #[serde(default = "v1")]
    pub v: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
}

/// What one forget removes, within its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgetScope {
    /// One memory id.
    Id(String),
    /// Every memory of one conversation.
    Conversation(String),
    /// The whole namespace.
    Namespace,
}

/// A decoded forget: a namespace and a scope in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forget {
    pub namespace: String,
    pub scope: ForgetScope,
}

impl Forget {
    /// Its wire form (request payload and marker payload).
    pub fn to_msg(&self) -> ForgetMsg {
        let (id, conversation) = match &self.scope {
            ForgetScope::Id(id) => (Some(id.clone()), None),
            ForgetScope::Conversation(c) => (None, Some(c.clone())),
            ForgetScope::Namespace => (None, None),
        };
        ForgetMsg {
            v: WIRE_VERSION,
            namespace: Some(self.namespace.clone()),
            id,
            conversation,
        }
    }

    /// `id`, `conversation` or `namespace`.
    pub fn scope_name(&self) -> &'static str {
        match self.scope {
            ForgetScope::Id(_) => "id",
            ForgetScope::Conversation(_) => "conversation",
            ForgetScope::Namespace => "namespace",
        }
    }
}

/// Decodes a forget that arrived on `voice.forget.<subject_namespace>` (or a marker on
/// `voice.memory.<subject_namespace>._forget`): at most one of `id` and `conversation`; neither
/// forgets the whole namespace.
pub fn decode_forget(
    subject_namespace: &str,
    payload: &[u8],
    defaults: &WireDefaults,
) -> Result<Forget, WireError> {
    check_size(payload, defaults.max_payload_bytes)?;
    validate_token("namespace", subject_namespace)?;
    let msg: ForgetMsg = parse(payload)?;
    // `"id": null` reads as no id, which would forget the whole namespace: refuse it.
    if let Ok(Value::Object(raw)) = serde_json::from_slice::<Value>(payload) {
        for field in ["id", "conversation"] {
            if raw.get(field).is_some_and(Value::is_null) {
                return Err(WireError::invalid(
                    field,
                    "is null: leave it out to forget the whole namespace",
                ));
            }
        }
    }
    agrees("namespace", msg.namespace.as_deref(), subject_namespace)?;
    let scope = match (msg.id, msg.conversation) {
        (Some(_), Some(_)) => {
            return Err(WireError::invalid(
                "id",
                "give id or conversation, not both (neither forgets the whole namespace)",
            ));
        }
        (Some(id), None) => {
            validate_id("id", &id)?;
            ForgetScope::Id(id)
        }
        (None, Some(c)) => {
            validate_token("conversation", &c)?;
            if c == FORGET_CONVERSATION {
                return Err(WireError::invalid(
                    "conversation",
                    format!("{c:?} is reserved for forget markers"),
                ));
            }
            ForgetScope::Conversation(c)
        }
        (None, None) => ForgetScope::Namespace,
    };
    Ok(Forget {
        namespace: subject_namespace.to_string(),
        scope,
    })
}

/// Where a memory's id comes from when its payload has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryOrigin {
    /// The publisher's `Nats-Msg-Id` header (without a leading `<namespace>.`, see [`dedupe_id`]).
    pub msg_id: Option<String>,
    /// The JetStream stream sequence: the same on every replica, so still a stable id.
    pub stream_sequence: Option<u64>,
}

impl MemoryOrigin {
    /// The origin of a stream message: its `Nats-Msg-Id` header and stream sequence.
    pub fn of(headers: Option<&async_nats::HeaderMap>, stream_sequence: Option<u64>) -> Self {
        Self {
            msg_id: headers
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_string()),
            stream_sequence,
        }
    }
}

/// Decodes a memory that arrived on `voice.memory.<subject_namespace>.<subject_conversation>`.
/// `now_ms` is its time when the payload has no `ts`. What it accepts the store can hold: names
/// within [`MAX_NAME_BYTES`], text not empty.
pub fn decode_memory(
    subject_namespace: &str,
    subject_conversation: &str,
    payload: &[u8],
    origin: &MemoryOrigin,
    defaults: &WireDefaults,
    now_ms: i64,
) -> Result<Memory, WireError> {
    check_size(payload, defaults.max_payload_bytes)?;
    validate_token("namespace", subject_namespace)?;
    validate_token("conversation", subject_conversation)?;
    let msg: MemoryMsg = parse(payload)?;
    agrees("namespace", msg.namespace.as_deref(), subject_namespace)?;
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
            memory_id(subject_conversation, &utterance)
        }
        (None, None, Some(msg_id), _) => msg_id
            .strip_prefix(subject_namespace)
            .and_then(|id| id.strip_prefix('.'))
            .unwrap_or(msg_id)
            .to_string(),
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
        Some(ts) => parse_ts("ts", &ts)?,
    };
    for old in &msg.supersedes {
        validate_id("supersedes", old)?;
    }
    let expires_at_ms = match msg.expires_at {
        None | Some(Value::Null) => None,
        Some(t) => Some(parse_ts("expires_at", &t)?),
    };
    Ok(Memory {
        id,
        namespace: subject_namespace.to_string(),
        conversation: subject_conversation.to_string(),
        speaker,
        text: msg.text,
        ts_ms,
        supersedes: msg.supersedes,
        expires_at_ms,
    })
}

/// Unix milliseconds from unix seconds (a JSON number, fractions allowed) or an RFC 3339 string:
/// the same rule as `voicerag ingest`.
fn parse_ts(field: &'static str, ts: &Value) -> Result<i64, WireError> {
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
        .map_err(|why| WireError::invalid(field, why))
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
    let mut value = json!({
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
    });
    // Additive: present only when the query's time expression was applied.
    if let (Some(w), Value::Object(map)) = (&result.time_window, &mut value) {
        map.insert(
            "time_window".into(),
            serde_json::to_value(w).unwrap_or(Value::Null),
        );
    }
    value
}

/// The context published on `voice.context.<namespace>.<conversation>` for a transcript: [`context_json`]
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
            max_payload_bytes: 1024,
        }
    }

    #[test]
    fn transcript_defaults_and_subject_conversation() {
        let t = decode_transcript(
            "ns",
            "c1",
            br#"{"utterance":"u1","text":"hello there","final":true}"#,
            &defaults(),
            Instant::now(),
        )
        .unwrap();
        assert_eq!(t.conversation, "c1");
        assert_eq!(t.namespace, "ns");
        assert_eq!(t.speaker, "user");
        assert!(t.is_final);
    }

    #[test]
    fn transcript_conversation_mismatch_and_bad_tokens_are_rejected() {
        let d = defaults();
        let now = Instant::now();
        let e = decode_transcript(
            "ns",
            "c1",
            br#"{"conversation":"c2","utterance":"u","text":"x"}"#,
            &d,
            now,
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        for bad in ["a.b", "a*", ">", "a b", ""] {
            let e = decode_transcript("ns", bad, br#"{"utterance":"u","text":"x"}"#, &d, now)
                .unwrap_err();
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
        // v1 payloads are read on v2 subjects.
        for v1 in [
            &br#"{"v":1,"utterance":"u","text":"x"}"#[..],
            br#"{"utterance":"u","text":"x"}"#,
        ] {
            assert!(decode_transcript("ns", "c", v1, &defaults(), Instant::now()).is_ok());
        }
        let e = decode_transcript(
            "ns",
            "c",
            br#"{"v":3,"utterance":"u","text":"x"}"#,
            &defaults(),
            Instant::now(),
        )
        .unwrap_err();
        assert_eq!(e, WireError::Version(3));
        assert!(e.to_string().contains("version 3"), "{e}");
        assert!(e.to_string().contains("v2"), "{e}");
    }

    #[test]
    fn payload_namespace_must_agree_with_the_subject() {
        let d = defaults();
        let now = Instant::now();
        let e = decode_transcript(
            "alice",
            "c1",
            br#"{"namespace":"bob","utterance":"u","text":"x"}"#,
            &d,
            now,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("namespace") && e.to_string().contains("bob"),
            "{e}"
        );
        let t = decode_transcript(
            "alice",
            "c1",
            br#"{"v":2,"namespace":"alice","utterance":"u","text":"x"}"#,
            &d,
            now,
        )
        .unwrap();
        assert_eq!(t.namespace, "alice");
        let e = decode_query("alice", br#"{"namespace":"bob","text":"x"}"#, &d, || {
            "g".into()
        })
        .unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let o = MemoryOrigin::default();
        let e = decode_memory(
            "alice",
            "c",
            br#"{"namespace":"bob","id":"a","text":"t"}"#,
            &o,
            &d,
            5,
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        for bad in ["", "*", ">", "a.b", "a b"] {
            let e = decode_transcript(bad, "c1", br#"{"utterance":"u","text":"x"}"#, &d, now)
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    WireError::Invalid {
                        field: "namespace",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
            assert!(decode_query(bad, br#"{"text":"x"}"#, &d, || "g".into()).is_err());
            assert!(decode_memory(bad, "c", br#"{"id":"a","text":"t"}"#, &o, &d, 5).is_err());
        }
    }

    #[test]
    fn names_have_the_store_limit() {
        let d = WireDefaults {
            max_payload_bytes: 4096,
        };
        let o = MemoryOrigin::default();
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let fits = "x".repeat(MAX_NAME_BYTES);
        let memory = |ns: &str, id: &str| {
            let payload = serde_json::to_vec(&json!({"id": id, "text": "t"})).unwrap();
            decode_memory(ns, "c", &payload, &o, &d, 5)
        };
        assert!(memory("ns", &fits).is_ok());
        assert!(
            memory("ns", &long)
                .unwrap_err()
                .to_string()
                .contains("longer than 120")
        );
        assert!(memory(&long, "a").is_err());
        assert!(memory(&fits, "a").is_ok());
        // A transcript whose memory id would not fit is refused at the edge.
        let payload = serde_json::to_vec(&json!({"utterance": fits, "text": "t"})).unwrap();
        let e = decode_transcript("ns", "c", &payload, &d, Instant::now()).unwrap_err();
        assert!(e.to_string().contains("memory id"), "{e}");
        assert!(memory("ns", "a").is_ok());
        let empty = decode_memory("ns", "c", br#"{"id":"a","text":"  "}"#, &o, &d, 5);
        assert!(empty.unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn dedupe_ids_differ_per_namespace_and_strip_back() {
        assert_ne!(dedupe_id("alice", "c1/u1"), dedupe_id("bob", "c1/u1"));
        let origin = MemoryOrigin {
            msg_id: Some(dedupe_id("alice", "c1/u1")),
            stream_sequence: None,
        };
        let m = decode_memory("alice", "c1", br#"{"text":"t"}"#, &origin, &defaults(), 5).unwrap();
        assert_eq!(m.id, "c1/u1");
    }

    #[test]
    fn forget_scopes_and_bad_forgets() {
        let d = defaults();
        let f = |ns: &str, p: &[u8]| decode_forget(ns, p, &d);
        assert_eq!(
            f("alice", br#"{"v":2,"id":"c1/u1"}"#).unwrap().scope,
            ForgetScope::Id("c1/u1".into())
        );
        assert_eq!(
            f(
                "alice",
                br#"{"v":2,"conversation":"c1","namespace":"alice"}"#
            )
            .unwrap()
            .scope,
            ForgetScope::Conversation("c1".into())
        );
        assert_eq!(
            f("alice", br#"{"v":2}"#).unwrap().scope,
            ForgetScope::Namespace
        );
        let both = f("alice", br#"{"v":2,"id":"a","conversation":"c"}"#).unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let other = f("alice", br#"{"v":2,"namespace":"bob"}"#).unwrap_err();
        assert!(other.to_string().contains("does not match"), "{other}");
        let typo = f("alice", br#"{"v":2,"conversaton":"c1"}"#).unwrap_err();
        assert!(typo.to_string().contains("conversaton"), "{typo}");
        for bad in ["", "*", ">", "a.b"] {
            assert!(f(bad, br#"{"v":2}"#).is_err(), "{bad}");
            let p = serde_json::to_vec(&json!({"v": 2, "conversation": bad})).unwrap();
            assert!(f("alice", &p).is_err(), "{bad}");
        }
        assert!(f("alice", br#"{"v":2,"conversation":"_forget"}"#).is_err());
        let null = f("alice", br#"{"v":2,"id":null}"#).unwrap_err();
        assert!(null.to_string().contains("null"), "{null}");
        assert!(f("alice", br#"{"v":2,"conversation":null}"#).is_err());
        assert!(f("alice", br#"{"v":3}"#).is_err());
        let forget = f("alice", br#"{"v":2,"id":"x"}"#).unwrap();
        let back = serde_json::to_vec(&forget.to_msg()).unwrap();
        assert_eq!(f("alice", &back).unwrap(), forget);
    }

    #[test]
    fn oversized_payload_is_rejected_before_parsing() {
        let big = vec![b' '; 2000];
        let e = decode_query("ns", &big, &defaults(), || "x".into()).unwrap_err();
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
            "ns",
            br#"{"text":"cats","top_k":3,"mode":"bm25"}"#,
            &defaults(),
            || "gen-1".into(),
        )
        .unwrap();
        assert_eq!(q.id, "gen-1");
        assert_eq!(q.top_k, Some(3));
        assert_eq!(q.mode, SearchMode::Bm25);
        let e = decode_query(
            "ns",
            br#"{"text":"cats","mode":"fuzzy"}"#,
            &defaults(),
            || "g".into(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("mode"), "{e}");
        let e = decode_query("ns", br#"{"text":"cats","top_k":0}"#, &defaults(), || {
            "g".into()
        })
        .unwrap_err();
        assert!(e.to_string().contains("top_k"), "{e}");
    }

    #[test]
    fn memory_id_precedence() {
        let d = defaults();
        let origin = MemoryOrigin {
            msg_id: Some("hdr-1".into()),
            stream_sequence: Some(7),
        };
        let m = |p: &[u8], o: &MemoryOrigin| decode_memory("ns", "c", p, o, &d, 5);
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
        let m = decode_memory(
            "ns",
            "c",
            br#"{"id":"a","text":"t","ts":1700000000}"#,
            &o,
            &d,
            5,
        )
        .unwrap();
        assert_eq!(m.ts_ms, 1_700_000_000_000);
        let m = decode_memory(
            "ns",
            "c",
            br#"{"id":"a","text":"t","ts":"2023-11-14T22:13:20Z"}"#,
            &o,
            &d,
            5,
        )
        .unwrap();
        assert_eq!(m.ts_ms, 1_700_000_000_000);
        let m = decode_memory("ns", "c", br#"{"id":"a","text":"t"}"#, &o, &d, 5).unwrap();
        assert_eq!(m.ts_ms, 5);
        assert!(
            decode_memory(
                "ns",
                "c",
                br#"{"id":"a","text":"t","ts":"yesterday"}"#,
                &o,
                &d,
                5
            )
            .is_err()
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
            supersedes: Vec::new(),
            expires_at_ms: None,
        };
        let payload = serde_json::to_vec(&MemoryMsg::from_memory(&memory)).unwrap();
        let back = decode_memory(
            "ns",
            "c",
            &payload,
            &MemoryOrigin::default(),
            &defaults(),
            0,
        )
        .unwrap();
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
            time_window: None,
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
        assert!(
            plain.get("time_window").is_none(),
            "absent when none applied"
        );
        let mut timed = result.clone();
        timed.time_window = Some(voicerag_actors::TimeWindow {
            phrase: "last week".into(),
            start_ms: 10,
            end_ms: 20,
            time_zone: "Europe/Berlin".into(),
            applied_as: voicerag_actors::TimeWindowUse::Boost,
        });
        let v = context_json(&timed, "q-2");
        assert_eq!(
            v["time_window"],
            json!({"phrase": "last week", "start_ms": 10, "end_ms": 20,
                   "time_zone": "Europe/Berlin", "use": "boost"})
        );
    }

    #[test]
    fn memory_supersedes_and_expiry_travel_and_are_checked() {
        let (d, o) = (defaults(), MemoryOrigin::default());
        let memory = Memory {
            id: "c/u2".into(),
            namespace: "ns".into(),
            conversation: "c".into(),
            speaker: "user".into(),
            text: "the vet moved it to Friday".into(),
            ts_ms: 42_000,
            supersedes: vec!["c/u1".into()],
            expires_at_ms: Some(1_700_000_000_000),
        };
        let payload = serde_json::to_vec(&MemoryMsg::from_memory(&memory)).unwrap();
        assert_eq!(
            decode_memory("ns", "c", &payload, &o, &d, 0).unwrap(),
            memory
        );
        let m = decode_memory(
            "ns",
            "c",
            br#"{"id":"a","text":"t","expires_at":"2023-11-14T22:13:20Z"}"#,
            &o,
            &d,
            5,
        )
        .unwrap();
        assert_eq!(m.expires_at_ms, Some(1_700_000_000_000));
        assert!(m.supersedes.is_empty());
        for bad in [
            r#"{"id":"a","text":"t","expires_at":"next week"}"#,
            r#"{"id":"a","text":"t","supersedes":[""]}"#,
        ] {
            let e = decode_memory("ns", "c", bad.as_bytes(), &o, &d, 5).unwrap_err();
            assert!(
                e.to_string().contains("expires_at") || e.to_string().contains("supersedes"),
                "{bad}: {e}"
            );
        }
        // A single id instead of a list is not valid JSON for the message.
        let bad = br#"{"id":"a","text":"t","supersedes":"c/u1"}"#;
        assert!(decode_memory("ns", "c", bad, &o, &d, 5).is_err());
    }

    #[test]
    fn query_time_and_superseded_fields() {
        let d = defaults();
        let q = decode_query(
            "ns",
            br#"{"v":2,"text":"what did I say yesterday","include_superseded":true,"time_zone":"Europe/Lisbon","time_windows":false}"#,
            &d,
            || "gen".into(),
        )
        .unwrap();
        assert!(q.include_superseded);
        assert_eq!(q.time_zone.as_deref(), Some("Europe/Lisbon"));
        assert_eq!(q.time_windows, Some(false));
        let q = decode_query("ns", br#"{"v":2,"text":"hi"}"#, &d, || "gen".into()).unwrap();
        assert!(!q.include_superseded && q.time_zone.is_none() && q.time_windows.is_none());
        let e = decode_query(
            "ns",
            br#"{"v":2,"text":"hi","time_zone":"Mars/Olympus"}"#,
            &d,
            || "gen".into(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("time_zone"), "{e}");
    }
}
