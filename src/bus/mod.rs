//! The NATS edge: transcripts in, context out, memories through JetStream.
