//! The actor that runs one stage's blocking calls (embedder, retriever or reranker).
//!
//! The coordinator sends it [`Job`]s: closures that call the stage and send the answer on their own
//! reply channel. The actor runs them on tokio's blocking pool, `parallel` at a time (one for a model
//! session, which is one core's worth of work; more for the store, whose searches are concurrent
//! readers), and fails, so that supervision restarts it, when a call panics or runs past the
//! unresponsive limit. Dying drops the mailbox, so the coordinator sees every queued reply
//! channel close at once and degrades those requests instead of waiting for their deadlines.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

use crate::abandoned::AbandonedCalls;
use crate::cancel::CancelToken;
use crate::health::record_stage_time;

/// One blocking call to run; `work` sends its own reply.
pub(crate) struct Job {
    /// Cancelled by the coordinator when it stopped waiting: the job is skipped if not yet started,
    /// and a reranker run in progress is told to stop.
    pub cancel: CancelToken,
    pub work: Box<dyn FnOnce() + Send + 'static>,
    /// Dropped when the actor is done with the job (run, skipped, failed, or the actor died with
    /// it): how the embed batcher knows a run is over, even one whose thread was abandoned.
    pub finished: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Why a stage actor failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StageFault {
    #[error("{stage} panicked: {message}")]
    Panicked {
        stage: &'static str,
        message: String,
    },
    #[error("{stage} unresponsive: a call ran past {limit:?}")]
    Unresponsive {
        stage: &'static str,
        limit: Duration,
    },
    #[error("{stage} call was aborted")]
    Aborted { stage: &'static str },
}

pub(crate) struct StageArgs {
    pub name: &'static str,
    pub unresponsive: Duration,
    /// Where a call given up on is counted until its thread returns.
    pub abandoned: Arc<AbandonedCalls>,
    /// Calls run at the same time (at least one); queued jobs wait in the mailbox, in order.
    pub parallel: usize,
}

/// The actor's state: its arguments and the permits for calls running at once.
pub(crate) struct StageRunState {
    args: StageArgs,
    running: Arc<Semaphore>,
}

pub(crate) struct StageActor;

impl Actor for StageActor {
    type Msg = Job;
    type State = StageRunState;
    type Arguments = StageArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Job>,
        args: StageArgs,
    ) -> Result<StageRunState, ActorProcessingErr> {
        let running = Arc::new(Semaphore::new(args.parallel.max(1)));
        Ok(StageRunState { args, running })
    }

    async fn handle(
        &self,
        myself: ActorRef<Job>,
        job: Job,
        state: &mut StageRunState,
    ) -> Result<(), ActorProcessingErr> {
        let Job {
            cancel,
            work,
            finished,
        } = job;
        if cancel.is_cancelled() {
            return Ok(()); // its requester gave up: never spend a core on stale work
        }
        let args = &state.args;
        if args.parallel <= 1 {
            let outcome =
                run_blocking(args.name, args.unresponsive, &args.abandoned, &cancel, work).await;
            drop(finished);
            outcome?;
            return Ok(());
        }
        // A free permit first: the mailbox stays the queue, and at most `parallel` calls run.
        let Ok(permit) = Arc::clone(&state.running).acquire_owned().await else {
            return Ok(());
        };
        if cancel.is_cancelled() {
            return Ok(()); // it gave up while waiting for a permit
        }
        let (name, limit, abandoned) = (args.name, args.unresponsive, Arc::clone(&args.abandoned));
        tokio::spawn(async move {
            let outcome = run_blocking(name, limit, &abandoned, &cancel, work).await;
            drop(finished);
            drop(permit);
            // A fault stops the actor with its reason, which supervision treats as a failure
            // (queued jobs' reply channels close with the mailbox, as in the one-at-a-time case).
            if let Err(fault) = outcome {
                myself.stop(Some(fault.to_string()));
            }
        });
        Ok(())
    }
}

/// Runs `work` on the blocking pool; a panic or an overrun becomes a [`StageFault`]. An overrun
/// call is counted in `abandoned` until its thread returns.
pub(crate) async fn run_blocking(
    stage: &'static str,
    limit: Duration,
    abandoned: &Arc<AbandonedCalls>,
    cancel: &CancelToken,
    work: Box<dyn FnOnce() + Send + 'static>,
) -> Result<(), StageFault> {
    let started = std::time::Instant::now();
    let (done, watch) = abandoned.track();
    let handle = tokio::task::spawn_blocking(move || {
        let _done = done;
        work()
    });
    match tokio::time::timeout(limit, handle).await {
        Ok(Ok(())) => {
            record_stage_time(stage, started.elapsed());
            Ok(())
        }
        Ok(Err(e)) if e.is_panic() => {
            let message = panic_message(e.into_panic());
            Err(StageFault::Panicked { stage, message })
        }
        Ok(Err(_)) => Err(StageFault::Aborted { stage }),
        Err(_) => {
            // The thread cannot be killed; a reranker stops on cancel, others return eventually.
            // Until then it is counted, and the supervisor renews the engine it may hold.
            cancel.cancel();
            watch.abandon();
            Err(StageFault::Unresponsive { stage, limit })
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    }
}
