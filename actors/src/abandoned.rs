//! Abandoned calls: stage calls the pipeline stopped waiting for (they ran past the unresponsive
//! limit) whose threads still run, since a thread cannot be killed. Counted per stage, so the
//! supervisor can bound them (at `restart.max_abandoned_calls` the stage stays down instead of
//! starting more) and health can show them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// One stage's abandoned calls.
#[derive(Debug)]
pub(crate) struct AbandonedCalls {
    /// The stage, for the `voicerag_abandoned_calls{stage}` gauge.
    stage: &'static str,
    /// Abandoned calls whose threads have not returned yet.
    running: AtomicUsize,
    /// Calls abandoned since the pipeline started.
    total: AtomicU64,
    /// A call hung since the stage last started: its engine instance may be held (a session
    /// lock), so the next actor must not call it before the engine is renewed.
    hung: AtomicBool,
}

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

impl AbandonedCalls {
    pub(crate) fn new(stage: &'static str) -> Self {
        Self {
            stage,
            running: AtomicUsize::new(0),
            total: AtomicU64::new(0),
            hung: AtomicBool::new(false),
        }
    }

    fn publish(&self) {
        metrics::gauge!("voicerag_abandoned_calls", "stage" => self.stage)
            .set(self.running() as f64);
    }

    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// Whether a call hung since the last `take_hung`, clearing the mark.
    pub(crate) fn take_hung(&self) -> bool {
        self.hung.swap(false, Ordering::SeqCst)
    }

    /// Marks the engine as still to be renewed (renewal had to wait).
    pub(crate) fn mark_hung(&self) {
        self.hung.store(true, Ordering::SeqCst);
    }

    /// Starts tracking one call: the thread keeps the [`CallDone`] (dropped when the call returns
    /// or panics), the waiter the [`CallWatch`].
    pub(crate) fn track(self: &Arc<Self>) -> (CallDone, CallWatch) {
        let state = Arc::new(AtomicU8::new(RUNNING));
        (
            CallDone {
                state: Arc::clone(&state),
                calls: Arc::clone(self),
            },
            CallWatch {
                state,
                calls: Arc::clone(self),
            },
        )
    }
}

/// Held by the thread running a call; dropping it says the call returned.
pub(crate) struct CallDone {
    state: Arc<AtomicU8>,
    calls: Arc<AbandonedCalls>,
}

impl Drop for CallDone {
    fn drop(&mut self) {
        if self.state.swap(DONE, Ordering::SeqCst) == ABANDONED {
            self.calls.running.fetch_sub(1, Ordering::SeqCst);
            self.calls.publish();
        }
    }
}

/// Held by whoever waits for a call.
pub(crate) struct CallWatch {
    state: Arc<AtomicU8>,
    calls: Arc<AbandonedCalls>,
}

impl CallWatch {
    /// Stops waiting for the call: counted until its thread returns. Returns false if it had
    /// returned already.
    pub(crate) fn abandon(&self) -> bool {
        let abandoned = self
            .state
            .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if abandoned {
            self.calls.running.fetch_add(1, Ordering::SeqCst);
            self.calls.total.fetch_add(1, Ordering::SeqCst);
            self.calls.publish();
        }
        self.calls.hung.store(true, Ordering::SeqCst);
        abandoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_call_counts_until_its_thread_returns() {
        let calls = Arc::new(AbandonedCalls::new("test"));
        let (done, watch) = calls.track();
        assert!(watch.abandon());
        assert_eq!((calls.running(), calls.total()), (1, 1));
        assert!(calls.take_hung());
        assert!(!calls.take_hung());
        drop(done);
        assert_eq!((calls.running(), calls.total()), (0, 1));
    }

    #[test]
    fn a_call_that_returned_first_is_not_counted() {
        let calls = Arc::new(AbandonedCalls::new("test"));
        let (done, watch) = calls.track();
        drop(done);
        assert!(!watch.abandon());
        assert_eq!((calls.running(), calls.total()), (0, 0));
    }
}
