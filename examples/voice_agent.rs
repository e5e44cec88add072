//! A voice agent embedding voicerag in-process: it streams ASR transcripts in, consumes context
//! results as they leave, and tells voicerag what it replied so the next turn can recall it.
//!
//! Run after `make setup`: `cargo run --release --example voice_agent`

use std::time::{Duration, Instant};

use futures::StreamExt;
use voicerag::actors::{AgentReply, Transcript};
use voicerag::config::Config;
use voicerag::engines::Engines;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // ./config.toml if present, VOICERAG_* environment overrides; a throwaway store for the example.
    let mut config = Config::load_from_process_env(None)?;
    let data = tempfile::tempdir()?;
    config.store.data_dir = data.path().display().to_string();

    let pipeline = Engines::start_pipeline(&config).await?;
    let mut results = pipeline.results();

    let turns = [
        (
            "u1",
            "My sister Marta is getting married in Lisbon in June.",
        ),
        ("u2", "I'm allergic to peanuts, please remember that."),
        ("u3", "Where is my sister's wedding again?"),
    ];
    for (utterance, text) in turns {
        // An ASR streams partials, then one final; voicerag starts retrieving on the partials.
        let words: Vec<&str> = text.split(' ').collect();
        for n in [words.len() / 2, words.len()] {
            pipeline.submit(Transcript {
                namespace: "alice".into(),
                conversation: "example".into(),
                utterance: utterance.into(),
                speaker: "user".into(),
                text: words[..n].join(" "),
                is_final: n == words.len(),
                received_at: Instant::now(),
            })?;
        }
        // Exactly one result per final transcript, by its deadline.
        let Some(context) = results.next().await else {
            break;
        };
        println!("user: {text}");
        for hit in &context.hits {
            println!("   recalled [{:.3}] {}", hit.score, hit.text);
        }
        println!(
            "   rerank {}, total {:.1} ms, deadline met: {}",
            context.rerank.kind(),
            context.timings.total.as_secs_f64() * 1000.0,
            context.deadline_met()
        );
        pipeline.reply(AgentReply {
            namespace: "alice".into(),
            conversation: "example".into(),
            utterance: format!("{utterance}-reply"),
            text: "Got it.".into(),
        })?;
        // Memories are written after results leave; give the writer a moment between turns.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pipeline.shutdown().await?;
    Ok(())
}
