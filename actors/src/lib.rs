//! The supervised pipeline of voicerag.
//!
//! ASR transcripts stream in; for each one a [`ContextResult`] leaves by its deadline, whatever the
//! stages do. This crate defines the stage traits ([`Embedder`], [`Retriever`], [`Reranker`],
//! [`MemoryWriter`]) and knows nothing of ONNX or LMDB: the `voicerag` crate implements the traits
//! with the real engines, and tests put fakes in their place.

pub mod cancel;
pub mod messages;
pub mod stages;

pub use cancel::CancelToken;
pub use messages::*;
pub use stages::*;
