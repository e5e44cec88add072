//! Benchmarks of the library, one file per benchmark; `voicerag bench ...` runs them.
//!
//! - [`models`]: embedder and cross-encoder latency on the real int8 models.
//! - [`store`]: the memory store at scale (ingest, search, recall, reopen), embedding excluded.
//! - [`pipeline`]: end-to-end latency per final transcript, reranker off and on at several budgets.
//! - [`nats`]: load over NATS on loopback; also the load generator the NATS tests use.
//! - [`soak`]: conversations with partials, finals and agent replies for minutes, in process or
//!   over NATS: latency against the budget, degradation, RSS and threads at start and end.
//! - [`answer_log`]: what the soak keeps of its answers, in memory that does not grow with them.
//! - [`usage`]: RSS split (anonymous, files, malloc in use and free) and threads by name.
//! - [`stats`]: percentiles, shared by the benchmarks and the demo.
//!
//! The actor pipeline's own overhead is measured by the actors crate:
//! `cargo run --release -p voicerag-actors --example overhead`.

use rand::Rng;
use rand::rngs::StdRng;

pub mod answer_log;
pub mod models;
pub mod nats;
pub mod pipeline;
pub mod soak;
pub mod stats;
pub mod store;
pub mod usage;

const SUBJECTS: &[&str] = &[
    "my sister",
    "the dog",
    "my boss",
    "our neighbour",
    "the kids",
    "my doctor",
    "the landlord",
    "my friend Sam",
    "the plumber",
    "grandma",
];
const VERBS: &[&str] = &[
    "wants to visit",
    "complained about",
    "is allergic to",
    "loves",
    "forgot about",
    "booked",
    "recommended",
    "cancelled",
    "asked me about",
    "is worried about",
];
const OBJECTS: &[&str] = &[
    "the train to Lisbon",
    "peanut butter",
    "the dentist appointment",
    "a birthday cake",
    "the electricity bill",
    "jazz concerts",
    "the new school",
    "the car repair",
    "a trip to the mountains",
    "the wedding gift",
    "cello lessons",
    "the flu vaccine",
    "a vegetarian dinner",
    "the football match",
    "the garden fence",
];
const WHENS: &[&str] = &[
    "next Tuesday",
    "last weekend",
    "in June",
    "every morning",
    "tomorrow at noon",
    "after work",
    "before Christmas",
    "on Sunday",
];

/// The `i`th of a run's seeded memories: a synthetic utterance, user and agent turns alternating,
/// a second apart from 2023-11-14.
pub fn synthetic_memory(
    rng: &mut StdRng,
    i: usize,
    id: String,
    namespace: String,
    conversation: String,
) -> voicerag_actors::Memory {
    voicerag_actors::Memory {
        id,
        namespace,
        conversation,
        speaker: if i.is_multiple_of(2) { "user" } else { "agent" }.into(),
        text: synthetic_utterance(rng),
        ts_ms: 1_700_000_000_000 + i as i64 * 1000,
        supersedes: Vec::new(),
        expires_at_ms: None,
    }
}

/// A random utterance-length sentence.
pub fn synthetic_utterance(rng: &mut StdRng) -> String {
    let pick = |rng: &mut StdRng, xs: &[&str]| xs[rng.random_range(0..xs.len())].to_string();
    format!(
        "{} {} {} {}.",
        pick(rng, SUBJECTS),
        pick(rng, VERBS),
        pick(rng, OBJECTS),
        pick(rng, WHENS)
    )
}
