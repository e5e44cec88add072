//! The tokio runtime of the `voicerag` process, with a blocking pool of fixed size.
//!
//! Stage calls, store writes and stats run on tokio's blocking pool. Left to itself the pool starts
//! a thread whenever a task finds none idle and ends one idle for 10 s; under steady load it ratchets
//! up to the busiest moment's count (a soak went from 4 to 14 threads in its first 15 s) and, with a
//! hung call holding each thread it was given, could grow to 512. A long-running command instead
//! starts all `runtime.blocking_threads` at once and keeps them: the thread count is flat from the
//! start, and a task finding every thread busy waits for one. The pool must exceed what hung calls
//! can hold (`Config::validate` checks it against `pipeline.restart.max_abandoned_calls`).

use std::collections::HashSet;
use std::sync::{Arc, Barrier, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

/// An idle blocking thread is kept this long: in effect for the process's life.
const KEEP_ALIVE: Duration = Duration::from_secs(365 * 24 * 3600);

/// A multi-threaded runtime whose blocking pool has at most `blocking_threads` threads, never
/// ended for idleness.
pub fn runtime(blocking_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads.max(1))
        .thread_keep_alive(KEEP_ALIVE)
        .build()
}

/// Starts `threads` blocking-pool threads now (each task waits until all have started, so they are
/// distinct threads), so the pool does not grow later. Returns their ids.
pub fn prespawn(runtime: &tokio::runtime::Runtime, threads: usize) -> HashSet<ThreadId> {
    let threads = threads.max(1);
    let started = Arc::new(Barrier::new(threads + 1));
    let ids = Arc::new(Mutex::new(HashSet::new()));
    for _ in 0..threads {
        let (started, ids) = (Arc::clone(&started), Arc::clone(&ids));
        drop(runtime.spawn_blocking(move || {
            ids.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(std::thread::current().id());
            started.wait();
        }));
    }
    started.wait();
    ids.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prespawned_pool_runs_every_later_task_on_its_own_threads() {
        let threads = 4;
        let runtime = runtime(threads).expect("runtime");
        let pool = prespawn(&runtime, threads);
        assert_eq!(pool.len(), threads);
        // Bursts of three times the pool, each task holding its thread a while: an uncapped pool
        // would start new threads for them.
        let used = Arc::new(Mutex::new(HashSet::new()));
        runtime.block_on(async {
            for _ in 0..3 {
                let tasks: Vec<_> = (0..threads * 3)
                    .map(|_| {
                        let used = Arc::clone(&used);
                        tokio::task::spawn_blocking(move || {
                            used.lock().unwrap().insert(std::thread::current().id());
                            std::thread::sleep(Duration::from_millis(5));
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            }
        });
        let used = used.lock().unwrap().clone();
        assert!(
            used.is_subset(&pool),
            "{} threads used, {} not prespawned",
            used.len(),
            used.difference(&pool).count()
        );
    }
}
