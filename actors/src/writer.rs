//! Memory writing: a queue of memories owned by the pipeline, and the actor that writes it in
//! batches through the [`MemoryWriter`].
//!
//! The queue lives outside the actor and a batch leaves it only once the writer has returned Ok, so
//! a writer that fails, panics or is restarted loses nothing: the next instance writes the same
//! memories again (writes are idempotent by id).
//!
//! Batches follow the backlog: a short queue is written as it is (at once from
//! `writer_batch_size` memories, else after `writer_flush_ms`), and a queue that grew while a
//! write ran is taken whole in the next write, up to `writer_batch_max` memories and
//! `writer_batch_max_bytes` of text. One write has fixed costs (a commit, its fsync, index
//! bookkeeping) that a larger batch shares, so a writer that falls behind catches up instead of
//! staying behind.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::health::Stats;
use crate::messages::Memory;
use crate::stage_actor::run_blocking;
use crate::stages::{MemoryWriter, StageError};

/// Memories accepted but not yet durable: they exist only in RAM until the writer returns Ok.
pub(crate) struct MemoryQueue {
    pending: Mutex<VecDeque<Memory>>,
    /// Beyond this many, new memories are refused (finals already accepted are still queued).
    max: usize,
}

impl MemoryQueue {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            pending: Mutex::default(),
            max,
        }
    }
    /// Whether a new memory may be accepted.
    pub(crate) fn has_room(&self) -> bool {
        self.lock().len() < self.max
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Memory>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub(crate) fn push(&self, m: Memory) -> usize {
        let mut q = self.lock();
        q.push_back(m);
        q.len()
    }
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
    /// Copies of the oldest memories, as many as `limit` lets into one batch.
    fn peek(&self, limit: BatchLimit) -> Vec<Memory> {
        let q = self.lock();
        let n = limit.take(q.iter().map(|m| m.text.len()));
        q.iter().take(n).cloned().collect()
    }
    /// Drops the oldest `n`, once written. Only the writer removes, so these are the peeked ones.
    fn pop(&self, n: usize) {
        let mut q = self.lock();
        let n = n.min(q.len());
        q.drain(..n);
    }
}

/// How large one write may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimit {
    /// Most memories.
    pub memories: usize,
    /// Most text bytes; a single longer memory still makes a batch of its own.
    pub bytes: usize,
}

impl BatchLimit {
    /// How many of the oldest memories (their text lengths, oldest first) make the next batch:
    /// as many as are queued within both limits, and at least one if any is queued.
    fn take(self, text_lens: impl Iterator<Item = usize>) -> usize {
        let mut n = 0;
        let mut bytes = 0usize;
        for len in text_lens.take(self.memories.max(1)) {
            bytes = bytes.saturating_add(len);
            if n > 0 && bytes > self.bytes {
                break;
            }
            n += 1;
        }
        n
    }
}

#[derive(Clone)]
pub(crate) struct WriterArgs {
    /// Read when a write starts: after a hang it may have been renewed.
    pub writer: Arc<crate::engines::EngineCell<dyn MemoryWriter>>,
    pub queue: Arc<MemoryQueue>,
    pub stats: Arc<Stats>,
    /// Queued memories that start a write at once (fewer wait `flush_after`).
    pub batch_size: usize,
    /// How large one write may grow when a backlog is queued.
    pub batch_limit: BatchLimit,
    pub flush_after: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub unresponsive: Duration,
    /// Where a hung write is counted until its thread returns (shown in health).
    pub abandoned: Arc<crate::abandoned::AbandonedCalls>,
}

pub(crate) enum WriterMsg {
    /// A memory was queued.
    Wake,
    /// Write whatever is queued (flush timer or retry timer).
    Flush,
}

pub(crate) struct WriterState {
    args: WriterArgs,
    timer_armed: bool,
    /// A write failed and a retry is scheduled: new memories wait for it.
    backing_off: bool,
    retry_delay: Duration,
}

pub(crate) struct WriterActor;

impl Actor for WriterActor {
    type Msg = WriterMsg;
    type State = WriterState;
    type Arguments = WriterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WriterMsg>,
        args: WriterArgs,
    ) -> Result<WriterState, ActorProcessingErr> {
        if args.queue.len() > 0 {
            // A previous instance died with memories queued: write them now.
            let _ = myself.send_message(WriterMsg::Flush);
        }
        let retry_delay = args.retry_initial;
        Ok(WriterState {
            args,
            timer_armed: false,
            backing_off: false,
            retry_delay,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WriterMsg>,
        msg: WriterMsg,
        state: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WriterMsg::Wake => {
                if state.backing_off {
                    return Ok(()); // the retry timer will write everything queued
                }
                if state.args.queue.len() >= state.args.batch_size {
                    flush(&myself, state).await?;
                } else if !state.timer_armed {
                    state.timer_armed = true;
                    myself.send_after(state.args.flush_after, || WriterMsg::Flush);
                }
            }
            WriterMsg::Flush => {
                state.timer_armed = false;
                state.backing_off = false;
                flush(&myself, state).await?;
            }
        }
        Ok(())
    }
}

/// Writes queued memories batch by batch; on a write error, schedules a retry with backoff.
async fn flush(
    myself: &ActorRef<WriterMsg>,
    state: &mut WriterState,
) -> Result<(), ActorProcessingErr> {
    loop {
        let batch = state.args.queue.peek(state.args.batch_limit);
        if batch.is_empty() {
            return Ok(());
        }
        match write_batch(&state.args, batch).await? {
            Ok(n) => {
                state.args.queue.pop(n);
                state.args.stats.memory_batch_written(n);
                state.retry_delay = state.args.retry_initial;
            }
            Err(e) => {
                state.args.stats.memory_write_failed();
                tracing::warn!(error = %e, pending = state.args.queue.len(), retry_in = ?state.retry_delay, "memory write failed; will retry");
                state.backing_off = true;
                state.timer_armed = true;
                myself.send_after(state.retry_delay, || WriterMsg::Flush);
                state.retry_delay = (state.retry_delay * 2).min(state.args.retry_max);
                return Ok(());
            }
        }
    }
}

/// One batch on the blocking pool. Outer error: the writer panicked or hung (the actor must fail);
/// inner error: the writer reported a failure (retry later).
async fn write_batch(
    args: &WriterArgs,
    batch: Vec<Memory>,
) -> Result<Result<usize, StageError>, crate::stage_actor::StageFault> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let writer = args.writer.current();
    let n = batch.len();
    let work = Box::new(move || {
        let _ = tx.send(writer.write(&batch));
    });
    run_blocking(
        "writer",
        args.unresponsive,
        &args.abandoned,
        &CancelToken::new(),
        work,
    )
    .await?;
    match rx.try_recv() {
        Ok(Ok(())) => Ok(Ok(n)),
        Ok(Err(e)) => Ok(Err(e)),
        Err(_) => Ok(Err(StageError::new("writer returned no answer"))),
    }
}

/// Writes everything queued, directly (no actor), retrying until `deadline`: the shutdown path.
pub(crate) async fn flush_all(
    args: &WriterArgs,
    deadline: tokio::time::Instant,
) -> Result<(), (usize, String)> {
    let mut delay = args.retry_initial;
    loop {
        let batch = args.queue.peek(args.batch_limit);
        if batch.is_empty() {
            return Ok(());
        }
        let last_error = match write_batch(args, batch).await {
            Ok(Ok(n)) => {
                args.queue.pop(n);
                args.stats.memory_batch_written(n);
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        args.stats.memory_write_failed();
        if tokio::time::Instant::now() + delay > deadline {
            return Err((args.queue.len(), last_error));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(args.retry_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: BatchLimit = BatchLimit {
        memories: 4,
        bytes: 100,
    };

    #[test]
    fn a_batch_takes_what_is_queued_up_to_the_count_limit() {
        assert_eq!(LIMIT.take([10; 0].into_iter()), 0);
        assert_eq!(LIMIT.take([10; 3].into_iter()), 3);
        assert_eq!(LIMIT.take([10; 9].into_iter()), 4);
    }

    #[test]
    fn a_batch_stops_before_the_byte_limit_but_never_stays_empty() {
        // 40 + 40 fits, the third would make 120 > 100.
        assert_eq!(LIMIT.take([40, 40, 40, 1].into_iter()), 2);
        // Exactly at the limit still fits.
        assert_eq!(LIMIT.take([50, 50, 1].into_iter()), 2);
        // One memory over the byte limit is written alone, not held back forever.
        assert_eq!(LIMIT.take([500, 1, 1].into_iter()), 1);
        assert_eq!(LIMIT.take([1, 500].into_iter()), 1);
    }

    #[test]
    fn the_queue_hands_out_the_oldest_memories_within_the_limit() {
        let q = MemoryQueue::new(100);
        for (i, len) in [30, 30, 30, 30, 30].into_iter().enumerate() {
            q.push(Memory {
                id: format!("m{i}"),
                namespace: "ns".into(),
                conversation: "c".into(),
                speaker: "user".into(),
                text: "x".repeat(len),
                ts_ms: 0,
                supersedes: Vec::new(),
                expires_at_ms: None,
            });
        }
        let ids = |v: Vec<Memory>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(q.peek(LIMIT)), ["m0", "m1", "m2"]);
        q.pop(3);
        assert_eq!(ids(q.peek(LIMIT)), ["m3", "m4"]);
    }
}
