//! The real engine behind the bus: [`ContextService`] for the pipeline's [`PipelineHandle`].

use futures::StreamExt;
use futures::stream::BoxStream;
use voicerag_actors::{
    ContextResult, PipelineHandle, QueryRequest, SearchFilter, TimeReading, Transcript,
};

use super::{ContextQuery, ContextService, EngineError};

fn engine_error(e: voicerag_actors::PipelineError) -> EngineError {
    EngineError(e.to_string())
}

impl ContextService for PipelineHandle {
    async fn submit(&self, transcript: Transcript) -> Result<(), EngineError> {
        PipelineHandle::submit(self, transcript).map_err(engine_error)
    }

    fn results(&self) -> BoxStream<'static, ContextResult> {
        PipelineHandle::results(self).boxed()
    }

    async fn query(&self, query: ContextQuery) -> Result<ContextResult, EngineError> {
        // A query naming a conversation is confined to it; without one it searches the namespace.
        let request = QueryRequest {
            namespace: query.namespace,
            conversation: query.conversation.clone(),
            text: query.text,
            top_k: query.top_k,
            mode: Some(query.mode),
            budget: None,
            filter: SearchFilter {
                conversation: query.conversation,
                include_superseded: query.include_superseded,
                time: TimeReading {
                    enabled: query.time_windows,
                    time_zone: query.time_zone,
                    now_ms: None,
                },
                ..Default::default()
            },
        };
        PipelineHandle::query(self, request)
            .await
            .map_err(engine_error)
    }

    fn health(&self) -> serde_json::Value {
        serde_json::to_value(PipelineHandle::health(self))
            .unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}))
    }

    async fn shutdown(&self) -> Result<(), EngineError> {
        PipelineHandle::shutdown(self).await.map_err(engine_error)
    }
}
