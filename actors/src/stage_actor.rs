//! The actor that runs one stage's blocking calls (embedder, retriever or reranker).
//!
//! The coordinator sends it [`Job`]s: closures that call the stage and send the answer on their own
//! reply channel. The actor runs them on tokio's blocking pool, `parallel` at a time (one for a model
//! session, which is one core's worth of work; more for the store, whose searches are concurrent
//! readers), or one at a time on a thread of its own at a lower priority (the reranker: optional
//! work must not take the cores embedding and search need), and fails, so that supervision
//! restarts it, when a call panics or runs past the unresponsive limit. Dying drops the mailbox, so
//! the coordinator sees every queued reply channel close at once and degrades those requests
//! instead of waiting for their deadlines.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::sync::oneshot;

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
    /// Some(n): calls run one at a time on a thread of this actor's own, n nice steps below the
    /// process, not on the blocking pool.
    pub nice: Option<i32>,
}

/// The actor's state: its arguments, the permits for calls running at once, and its own thread.
pub(crate) struct StageRunState {
    args: StageArgs,
    running: Arc<Semaphore>,
    own_thread: Option<NicedThread>,
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
        // A restarted actor gets a new thread; the old one ends when its hung call returns.
        let own_thread = match args.nice {
            Some(nice) => Some(NicedThread::start(args.name, nice)?),
            None => None,
        };
        Ok(StageRunState {
            args,
            running,
            own_thread,
        })
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
        if args.parallel <= 1 || state.own_thread.is_some() {
            let outcome = run_on(
                state.own_thread.as_ref(),
                args.name,
                args.unresponsive,
                &args.abandoned,
                &cancel,
                work,
            )
            .await;
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
    run_on(None, stage, limit, abandoned, cancel, work).await
}

/// Runs `work` on `thread`, or on the blocking pool if none; a panic or an overrun becomes a
/// [`StageFault`]. An overrun call is counted in `abandoned` until its thread returns.
async fn run_on(
    thread: Option<&NicedThread>,
    stage: &'static str,
    limit: Duration,
    abandoned: &Arc<AbandonedCalls>,
    cancel: &CancelToken,
    work: Box<dyn FnOnce() + Send + 'static>,
) -> Result<(), StageFault> {
    let started = std::time::Instant::now();
    let (done, watch) = abandoned.track();
    let (tx, rx) = oneshot::channel();
    let task: Task = Box::new(move || {
        let _done = done;
        let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
    });
    let task = match thread {
        Some(t) => t.relay(task),
        None => task,
    };
    // Even a call for a thread of its own goes through the blocking pool, which waits for it: tokio
    // then knows a call is running (a paused test clock does not jump past it).
    drop(tokio::task::spawn_blocking(task));
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(Ok(()))) => {
            record_stage_time(stage, started.elapsed());
            Ok(())
        }
        Ok(Ok(Err(payload))) => {
            let message = panic_message(payload);
            Err(StageFault::Panicked { stage, message })
        }
        // The task was dropped unrun: the runtime or the thread is going away.
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

type Task = Box<dyn FnOnce() + Send + 'static>;

/// A thread of one stage actor's own, at a lower priority than the rest of the process: it runs
/// the tasks sent to it in order, and ends when the actor (the sender) is gone and the task in
/// hand has returned.
pub(crate) struct NicedThread {
    tasks: mpsc::Sender<Task>,
}

impl NicedThread {
    fn start(stage: &'static str, nice: i32) -> std::io::Result<Self> {
        let (tasks, inbox) = mpsc::channel::<Task>();
        // Tasks read the runtime's clock (`tokio::time::Instant`), as on the blocking pool.
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name(format!("voicerag-{stage}"))
            .spawn(move || {
                let _context = runtime.enter();
                lower_priority(stage, nice);
                while let Ok(task) = inbox.recv() {
                    task();
                }
            })?;
        Ok(Self { tasks })
    }

    /// A task for the blocking pool that runs `task` on this thread and waits until it returned
    /// (or was dropped unrun, the thread being gone).
    fn relay(&self, task: Task) -> Task {
        let tasks = self.tasks.clone();
        Box::new(move || {
            let (returned, wait) = mpsc::sync_channel::<()>(1);
            let relayed: Task = Box::new(move || {
                task();
                let _ = returned.send(());
            });
            if tasks.send(relayed).is_ok() {
                let _ = wait.recv();
            }
        })
    }
}

/// Lowers the calling thread's priority by `nice` steps below the process's (Linux: nice is per
/// thread; 19 at most). Lowering needs no privilege; failing leaves the thread at the process's
/// priority, which is logged.
#[cfg(target_os = "linux")]
fn lower_priority(stage: &'static str, nice: i32) {
    // SAFETY: getpriority and setpriority have no memory effects; who = 0 is the calling thread.
    let r = unsafe {
        let base = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, base.saturating_add(nice).min(19))
    };
    if r != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(stage, nice, %error, "could not lower the stage thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(stage: &'static str, nice: i32) {
    tracing::debug!(
        stage,
        nice,
        "thread priority is only lowered on Linux; running at the process's"
    );
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
