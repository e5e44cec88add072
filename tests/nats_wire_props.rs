//! Property tests: every payload decoder turns arbitrary bytes, arbitrary JSON and arbitrary
//! subject names into a value or an error, never a panic, and what it accepts is usable: names are
//! valid subject tokens within the store's limit, the namespace is the subject's; a forget names
//! at most one scope.

use proptest::prelude::*;
use serde_json::{Map, Value};
use std::time::Instant;
use voicerag::actors::MAX_NAME_BYTES;
use voicerag::bus::wire::{
    ForgetScope, MemoryOrigin, WireDefaults, decode_forget, decode_memory, decode_query,
    decode_transcript, validate_token,
};

fn defaults() -> WireDefaults {
    WireDefaults {
        max_payload_bytes: 4096,
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::hash_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects that use the real field names with arbitrary values: reaches the validation paths.
fn arb_message() -> impl Strategy<Value = Value> {
    let fields = prop::sample::subsequence(
        vec![
            "v",
            "id",
            "namespace",
            "conversation",
            "utterance",
            "speaker",
            "text",
            "final",
            "ts",
            "top_k",
            "mode",
        ],
        0..11,
    );
    (fields, prop::collection::vec(arb_json(), 11)).prop_map(|(names, values)| {
        let mut map = Map::new();
        for (name, value) in names.into_iter().zip(values) {
            map.insert(name.to_string(), value);
        }
        Value::Object(map)
    })
}

fn check_all(namespace: &str, conversation: &str, payload: &[u8]) {
    let d = defaults();
    if let Ok(t) = decode_transcript(namespace, conversation, payload, &d, Instant::now()) {
        assert!(validate_token("conversation", &t.conversation).is_ok());
        assert!(validate_token("namespace", &t.namespace).is_ok());
        assert_eq!(t.namespace, namespace);
        assert!(!t.text.trim().is_empty());
        assert!(!t.utterance.trim().is_empty());
        assert!(t.conversation.len() + 1 + t.utterance.len() <= MAX_NAME_BYTES);
    }
    if let Ok(q) = decode_query(namespace, payload, &d, || "generated".into()) {
        assert!(!q.id.is_empty());
        assert!(!q.text.trim().is_empty());
        assert_eq!(q.namespace, namespace);
    }
    let origin = MemoryOrigin {
        msg_id: None,
        stream_sequence: Some(1),
    };
    if let Ok(m) = decode_memory(namespace, conversation, payload, &origin, &d, 0) {
        assert!(!m.id.trim().is_empty());
        assert!(m.id.len() <= MAX_NAME_BYTES && m.speaker.len() <= MAX_NAME_BYTES);
        assert!(!m.text.trim().is_empty());
        assert_eq!(m.conversation, conversation);
        assert_eq!(m.namespace, namespace);
        assert!(validate_token("namespace", &m.namespace).is_ok());
    }
    if let Ok(f) = decode_forget(namespace, payload, &d) {
        // A forget names one valid namespace, the subject's, and at most one scope in it.
        assert_eq!(f.namespace, namespace);
        assert!(validate_token("namespace", &f.namespace).is_ok());
        match f.scope {
            ForgetScope::Id(id) => assert!(!id.trim().is_empty() && id.len() <= MAX_NAME_BYTES),
            ForgetScope::Conversation(c) => {
                assert!(validate_token("conversation", &c).is_ok());
            }
            ForgetScope::Namespace => {
                let v: Value = serde_json::from_slice(payload).unwrap();
                assert!(v.get("id").is_none() && v.get("conversation").is_none());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..5000), ns in ".{0,10}", conv in ".{0,10}") {
        check_all(&ns, &conv, &bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(value in arb_json(), conv in "[a-z0-9]{1,8}") {
        check_all("alice", &conv, &serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn arbitrary_messages_never_panic(value in arb_message(), ns in "[a-z.* >]{0,6}", conv in "[a-z.* >]{1,6}") {
        check_all(&ns, &conv, &serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn well_formed_transcripts_are_accepted(
        conv in "[A-Za-z0-9_-]{1,20}",
        utterance in "[a-z0-9]{1,10}",
        text in "[a-z]{1,10}( [a-z]{1,10}){0,5}",
        fin in any::<bool>(),
    ) {
        let payload = serde_json::json!({"v": 2, "utterance": utterance, "text": text, "final": fin});
        let t = decode_transcript("alice", &conv, &serde_json::to_vec(&payload).unwrap(), &defaults(), Instant::now()).unwrap();
        prop_assert_eq!(t.namespace, "alice");
        prop_assert_eq!(t.conversation, conv);
        prop_assert_eq!(t.text, text);
        prop_assert_eq!(t.is_final, fin);
    }
}
