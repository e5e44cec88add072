//! Errors of the pipeline's API.

/// What can go wrong calling the pipeline (stage failures never surface here: they degrade results).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    #[error("invalid pipeline configuration: {0}")]
    Config(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("the pipeline is shutting down")]
    ShuttingDown,
    #[error("the pipeline has stopped")]
    Stopped,
    #[error("cannot start the {stage} stage: {message}")]
    Spawn {
        stage: &'static str,
        message: String,
    },
    #[error(
        "{pending} memories are waiting to be written (pipeline.memory_queue_max): not accepting \
         new ones until the writer catches up"
    )]
    MemoryBacklog { pending: usize },
    #[error("{pending} memories were not written before shutdown gave up: {last_error}")]
    Flush { pending: usize, last_error: String },
}
