//! `voicerag bench models` (in progress).
