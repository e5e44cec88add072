//! Subject names under the configurable prefix (default `voice`).

/// Every subject the bus uses, derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// `prefix` must be validated (see [`validate_prefix`]).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `voice.transcript.<conversation>`: where agents publish.
    pub fn transcript(&self, conversation: &str) -> String {
        format!("{}.transcript.{conversation}", self.prefix)
    }

    /// What a replica subscribes to for transcripts: every conversation, or, with server-side
    /// subject mapping, only the conversations of one partition (`voice.transcript.*.<p>`).
    pub fn transcript_subscription(&self, partition: Option<u32>) -> String {
        match partition {
            None => format!("{}.transcript.*", self.prefix),
            Some(p) => format!("{}.transcript.*.{p}", self.prefix),
        }
    }

    /// The conversation token of a transcript subject (partitioned or not).
    pub fn conversation_of_transcript<'a>(&self, subject: &'a str) -> Option<&'a str> {
        self.token_after(subject, "transcript")
    }

    /// `voice.context.<conversation>`.
    pub fn context(&self, conversation: &str) -> String {
        format!("{}.context.{conversation}", self.prefix)
    }

    /// `voice.query`.
    pub fn query(&self) -> String {
        format!("{}.query", self.prefix)
    }

    /// `voice.memory.<conversation>`.
    pub fn memory(&self, conversation: &str) -> String {
        format!("{}.memory.{conversation}", self.prefix)
    }

    /// The subjects the memory stream captures.
    pub fn memory_wildcard(&self) -> String {
        format!("{}.memory.*", self.prefix)
    }

    pub fn conversation_of_memory<'a>(&self, subject: &'a str) -> Option<&'a str> {
        self.token_after(subject, "memory")
    }

    /// `voice.health`: request/reply.
    pub fn health(&self) -> String {
        format!("{}.health", self.prefix)
    }

    /// `voice.health.<replica>`: periodic heartbeat.
    pub fn heartbeat(&self, replica: &str) -> String {
        format!("{}.health.{replica}", self.prefix)
    }

    /// `voice.errors`.
    pub fn errors(&self) -> String {
        format!("{}.errors", self.prefix)
    }

    fn token_after<'a>(&self, subject: &'a str, kind: &str) -> Option<&'a str> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let rest = rest.strip_prefix(kind)?.strip_prefix('.')?;
        rest.split('.').next().filter(|t| !t.is_empty())
    }
}

/// A prefix is one or more subject tokens without wildcards or white space.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("is empty".into());
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return Err(format!("{prefix:?} has an empty token"));
        }
        if token
            .chars()
            .any(|c| matches!(c, '*' | '>') || c.is_whitespace() || c.is_control())
        {
            return Err(format!("{prefix:?} contains a wildcard or white space"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_parsing_with_dotted_prefix() {
        let s = Subjects::new("acme.voice");
        assert_eq!(s.transcript("c1"), "acme.voice.transcript.c1");
        assert_eq!(
            s.conversation_of_transcript("acme.voice.transcript.c1"),
            Some("c1")
        );
        assert_eq!(
            s.conversation_of_transcript("acme.voice.transcript.c1.2"),
            Some("c1")
        );
        assert_eq!(s.conversation_of_transcript("acme.voice.memory.c1"), None);
        assert_eq!(s.conversation_of_transcript("voice.transcript.c1"), None);
        assert_eq!(s.conversation_of_memory("acme.voice.memory.c9"), Some("c9"));
        assert_eq!(
            s.transcript_subscription(Some(2)),
            "acme.voice.transcript.*.2"
        );
        assert_eq!(s.heartbeat("r1"), "acme.voice.health.r1");
    }

    #[test]
    fn prefix_validation() {
        assert!(validate_prefix("voice").is_ok());
        assert!(validate_prefix("a.b").is_ok());
        for bad in ["", "a..b", "a.*", ">", "a b", ".a"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
