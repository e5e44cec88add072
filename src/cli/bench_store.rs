//! `voicerag bench store` (in progress).
