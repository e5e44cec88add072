//! Awaiting the result of one final: a single subscription to the results stream hands each final's
//! result to the caller waiting for it, matched by namespace, conversation and utterance.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use tokio::sync::oneshot;

use voicerag::actors::{ContextResult, PipelineHandle};

type Key = (String, String, String);

/// Callers waiting for a final's result. Started on first use, so a pipeline that never waits
/// this way keeps the plain `results()` semantics (results wait for the first stream).
#[derive(Default)]
pub struct FinalWaiters {
    waiting: Mutex<HashMap<Key, VecDeque<oneshot::Sender<ContextResult>>>>,
    started: std::sync::OnceLock<()>,
}

impl FinalWaiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, VecDeque<oneshot::Sender<ContextResult>>>> {
        // A poisoned map is still a valid map: a panic elsewhere must not stop every final.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers interest in the result of `(namespace, conversation, utterance)`; call before
    /// submitting the final so the result cannot be missed. Must run inside the tokio runtime.
    pub fn wait_for(
        self: &Arc<Self>,
        handle: &PipelineHandle,
        namespace: &str,
        conversation: &str,
        utterance: &str,
    ) -> oneshot::Receiver<ContextResult> {
        self.started.get_or_init(|| {
            let mut results = handle.results();
            let me = Arc::clone(self);
            tokio::spawn(async move {
                while let Some(r) = results.next().await {
                    if r.is_final {
                        me.deliver(r);
                    }
                }
                // Shutdown ended the stream: dropping the senders tells every waiter.
                me.lock().clear();
            });
        });
        let (tx, rx) = oneshot::channel();
        self.lock()
            .entry((namespace.into(), conversation.into(), utterance.into()))
            .or_default()
            .push_back(tx);
        rx
    }

    /// Forgets a registration whose final was refused before it was queued.
    pub fn cancel(&self, namespace: &str, conversation: &str, utterance: &str) {
        let key = (namespace.into(), conversation.into(), utterance.into());
        let mut map = self.lock();
        if let Some(q) = map.get_mut(&key) {
            q.pop_back();
            if q.is_empty() {
                map.remove(&key);
            }
        }
    }

    fn deliver(&self, r: ContextResult) {
        let key = (
            r.namespace.clone(),
            r.conversation.clone(),
            r.utterance.clone(),
        );
        let mut map = self.lock();
        let Some(queue) = map.get_mut(&key) else {
            return;
        };
        let sender = queue.pop_front();
        if queue.is_empty() {
            map.remove(&key);
        }
        drop(map);
        if let Some(tx) = sender {
            // The caller may have stopped waiting (cancelled): the result is still on every stream.
            let _ = tx.send(r);
        }
    }
}
