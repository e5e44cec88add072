//! The memory writer's batches follow its backlog: what queued while a write ran is taken in the
//! next write as a whole (up to `writer_batch_max` memories and `writer_batch_max_bytes` of text),
//! in queue order, and nothing is dropped or written twice on the way.

mod common;

use common::*;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use voicerag_actors::*;

/// A writer that records every batch it made durable; its first write blocks on a gate (as a
/// commit waiting on a slow disk holds the writer), so the test can build up a backlog behind it.
#[derive(Default)]
struct RecordingWriter {
    first: Gate,
    batches: Mutex<Vec<Vec<String>>>,
}

impl MemoryWriter for RecordingWriter {
    fn write(&self, batch: &[Memory]) -> Result<(), StageError> {
        if self.batches.lock().unwrap().is_empty() {
            self.first.wait();
        }
        self.batches
            .lock()
            .unwrap()
            .push(batch.iter().map(|m| m.id.clone()).collect());
        Ok(())
    }
}

impl RecordingWriter {
    fn sizes(&self) -> Vec<usize> {
        self.batches.lock().unwrap().iter().map(Vec::len).collect()
    }
    fn written(&self) -> Vec<String> {
        self.batches.lock().unwrap().concat()
    }
}

fn reply(p: &PipelineHandle, i: usize, text: &str) {
    p.reply(AgentReply {
        namespace: "ns".into(),
        conversation: "c".into(),
        utterance: format!("r{i:04}"),
        text: text.into(),
    })
    .unwrap();
}

/// Waits (real time, generous for a loaded machine) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(tokio::time::Instant::now() < give_up, "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn start(writer: Arc<RecordingWriter>, config: PipelineConfig) -> PipelineHandle {
    let f = Fakes::new(no_faults());
    let stages = Stages {
        writer,
        ..f.stages(false)
    };
    Pipeline::start(stages, config).await.unwrap()
}

/// Runs one write that blocks, queues `n` more memories behind it, releases it, and waits until
/// everything is written; returns the batch sizes.
async fn backlog_of(
    n: usize,
    text: &str,
    config: PipelineConfig,
) -> (Arc<RecordingWriter>, Vec<usize>) {
    let writer = Arc::new(RecordingWriter::default());
    let p = start(writer.clone(), config).await;
    reply(&p, 0, text);
    eventually("the first write started", || {
        writer.first.entered.load(SeqCst) == 1
    })
    .await;
    for i in 1..=n {
        reply(&p, i, text);
    }
    assert_eq!(p.health().memories_pending, n + 1);
    writer.first.open();
    eventually("every memory written", || writer.written().len() == n + 1).await;
    p.shutdown().await.unwrap();
    let expected: Vec<String> = (0..=n).map(|i| format!("c/r{i:04}")).collect();
    assert_eq!(writer.written(), expected, "each once, in queue order");
    let sizes = writer.sizes();
    let counters = p.health().counters;
    assert_eq!(counters.memories_written, n as u64 + 1);
    assert_eq!(counters.memory_batches, sizes.len() as u64);
    (writer, sizes)
}

#[tokio::test]
async fn a_backlog_is_written_in_batches_as_large_as_it_is_up_to_the_max() {
    let config = PipelineConfig {
        writer_batch_size: 2,
        writer_batch_max: 100,
        writer_flush_ms: 1,
        ..Default::default()
    };
    let (_, sizes) = backlog_of(250, "noted", config).await;
    // The first write took what was there (one); the 250 queued behind it went in writes of the
    // max, not of `writer_batch_size`.
    assert_eq!(sizes, [1, 100, 100, 50]);
}

#[tokio::test]
async fn a_backlog_of_long_texts_is_cut_by_bytes() {
    let text = "x".repeat(40);
    let config = PipelineConfig {
        writer_batch_size: 2,
        writer_batch_max: 100,
        writer_batch_max_bytes: 100,
        writer_flush_ms: 1,
        ..Default::default()
    };
    let (_, sizes) = backlog_of(7, &text, config).await;
    // 40-byte texts, at most 100 bytes a write: two at a time.
    assert_eq!(sizes, [1, 2, 2, 2, 1]);
}

#[tokio::test]
async fn a_short_queue_is_written_without_waiting_for_company() {
    let writer = Arc::new(RecordingWriter::default());
    writer.first.open();
    let config = PipelineConfig {
        writer_batch_size: 32,
        writer_flush_ms: 1,
        ..Default::default()
    };
    let p = start(writer.clone(), config).await;
    reply(&p, 0, "noted");
    eventually("the lone memory written", || writer.written().len() == 1).await;
    reply(&p, 1, "noted");
    eventually("the next lone memory written", || {
        writer.written().len() == 2
    })
    .await;
    assert_eq!(writer.sizes(), [1, 1], "nothing held back to grow a batch");
    p.shutdown().await.unwrap();
}

#[test]
fn writer_batch_max_below_writer_batch_size_is_refused() {
    let c = PipelineConfig {
        writer_batch_size: 64,
        writer_batch_max: 32,
        ..Default::default()
    };
    assert_eq!(
        c.validate(),
        Err("pipeline.writer_batch_max: must be >= pipeline.writer_batch_size (64)".to_string())
    );
}
