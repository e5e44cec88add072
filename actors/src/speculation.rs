//! What a partial transcript's early retrieval leaves for its final: the retrieval's outcome and
//! the shared future the coordinator and the request tasks await.

use futures::future::{BoxFuture, Shared};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::messages::{Hit, TimeWindow};

/// The outcome of embedding and searching, shareable between a partial and its final.
#[derive(Debug, Clone, Default)]
pub(crate) struct Retrieval {
    pub hits: Vec<Hit>,
    /// Hits the relevance floor removed.
    pub floored: usize,
    pub degraded: Vec<&'static str>,
    pub embed: Duration,
    pub search: Duration,
    /// The time window the search read from the query, if any.
    pub time_window: Option<TimeWindow>,
    /// The query's embedding, when it was embedded: a final's is offered to the memory writer.
    pub embedding: Option<Vec<f32>>,
}

impl Retrieval {
    pub(crate) fn failed(reason: &'static str) -> Self {
        Self {
            degraded: vec![reason],
            ..Default::default()
        }
    }
}

/// A speculative retrieval, awaitable by any number of requests.
#[derive(Clone)]
pub(crate) struct SharedRetrieval {
    /// `None` if it was aborted.
    pub result: Shared<BoxFuture<'static, Option<Retrieval>>>,
    /// Set once embedding is over and the search has started.
    pub searching: Arc<AtomicBool>,
}
