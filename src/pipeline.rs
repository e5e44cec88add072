//! The real stages (ONNX engines, memory store) behind the `voicerag-actors` traits.
