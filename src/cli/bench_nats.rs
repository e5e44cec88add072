//! `voicerag bench nats` (in progress).
