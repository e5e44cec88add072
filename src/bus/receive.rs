//! Receiving on a subscription until the graceful stop, without dropping what was delivered.

use async_nats::Subscriber;
use futures::StreamExt;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// Ends when `stop` says so or its sender is gone.
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Receives until stopped; then unsubscribes and handles what was already delivered, so nothing
/// accepted by this replica is dropped.
pub(super) async fn receive_until_stopped<F, Fut>(
    mut sub: Subscriber,
    mut stop: watch::Receiver<bool>,
    drain_timeout: Duration,
    mut handle: F,
) where
    F: FnMut(async_nats::Message) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let message = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            m = sub.next() => m,
        };
        match message {
            Some(m) => handle(m).await,
            None => return,
        }
    }
    if let Err(e) = sub.drain().await {
        tracing::warn!(error = %e, "unsubscribe failed");
    }
    let _ = tokio::time::timeout(drain_timeout, async {
        while let Some(m) = sub.next().await {
            handle(m).await;
        }
    })
    .await;
}
