//! Fan-out of results to [`ResultStream`]s.
//!
//! Semantics: every result goes to every stream open when it is sent; while no stream is open,
//! results are kept and handed to the next stream opened. Queues are unbounded, so a slow consumer
//! costs memory, never a result. Streams end once the pipeline has shut down and they are drained.

use futures::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::messages::ContextResult;

#[derive(Default)]
pub(crate) struct ResultHub {
    inner: Mutex<HubInner>,
}

#[derive(Default)]
struct HubInner {
    subscribers: Vec<mpsc::UnboundedSender<ContextResult>>,
    backlog: VecDeque<ContextResult>,
    closed: bool,
}

impl ResultHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn send(&self, r: ContextResult) {
        let mut inner = self.lock();
        inner.subscribers.retain(|s| !s.is_closed());
        match inner.subscribers.split_last() {
            None => inner.backlog.push_back(r),
            Some((last, rest)) => {
                for s in rest {
                    let _ = s.send(r.clone());
                }
                let _ = last.send(r);
            }
        }
    }

    pub(crate) fn subscribe(&self) -> ResultStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        for r in inner.backlog.drain(..) {
            let _ = tx.send(r);
        }
        if !inner.closed {
            inner.subscribers.push(tx);
        }
        ResultStream {
            inner: UnboundedReceiverStream::new(rx),
        }
    }

    /// Ends every stream once drained (shutdown).
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.subscribers.clear();
    }
}

/// A stream of [`ContextResult`]s; see the module docs for what it receives.
pub struct ResultStream {
    inner: UnboundedReceiverStream<ContextResult>,
}

impl Stream for ResultStream {
    type Item = ContextResult;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ContextResult>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}
