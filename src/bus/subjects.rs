//! Subject names under the configurable prefix (default `voice`), wire v2: every subject of a
//! user's data names its namespace (`voice.transcript.<namespace>.<conversation>`, ...).

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

    /// `voice.transcript.<namespace>.<conversation>`: where agents publish.
    pub fn transcript(&self, namespace: &str, conversation: &str) -> String {
        format!("{}.transcript.{namespace}.{conversation}", self.prefix)
    }

    /// What a replica subscribes to for transcripts: every namespace and conversation, or, with
    /// server-side subject mapping, only those of one partition (`voice.transcript.*.*.<p>`).
    pub fn transcript_subscription(&self, partition: Option<u32>) -> String {
        match partition {
            None => format!("{}.transcript.*.*", self.prefix),
            Some(p) => format!("{}.transcript.*.*.{p}", self.prefix),
        }
    }

    /// The wire v1 transcript subjects (`voice.transcript.<conversation>`): refused with an
    /// error that names the v2 subject.
    pub fn transcript_v1_subscription(&self) -> String {
        format!("{}.transcript.*", self.prefix)
    }

    /// The namespace and conversation tokens of a v2 transcript subject (partitioned or not),
    /// unvalidated; `None` when the subject has fewer tokens.
    pub fn names_of_transcript<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        self.two_tokens_after(subject, "transcript")
    }

    /// `voice.context.<namespace>.<conversation>`.
    pub fn context(&self, namespace: &str, conversation: &str) -> String {
        format!("{}.context.{namespace}.{conversation}", self.prefix)
    }

    /// `voice.query.<namespace>`: request/reply.
    pub fn query(&self, namespace: &str) -> String {
        format!("{}.query.{namespace}", self.prefix)
    }

    /// What replicas subscribe to for queries (in a queue group).
    pub fn query_subscription(&self) -> String {
        format!("{}.query.*", self.prefix)
    }

    /// The wire v1 query subject (`voice.query`): answered with an error naming the v2 subject.
    pub fn query_v1(&self) -> String {
        format!("{}.query", self.prefix)
    }

    /// The namespace token of a query subject, unvalidated.
    pub fn namespace_of_query<'a>(&self, subject: &'a str) -> Option<&'a str> {
        self.token_after(subject, "query")
    }

    /// `voice.memory.<namespace>.<conversation>`.
    pub fn memory(&self, namespace: &str, conversation: &str) -> String {
        format!("{}.memory.{namespace}.{conversation}", self.prefix)
    }

    /// The subjects the memory stream captures.
    pub fn memory_wildcard(&self) -> String {
        format!("{}.memory.*.*", self.prefix)
    }

    /// The namespace and conversation tokens of a memory subject, unvalidated.
    pub fn names_of_memory<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        self.two_tokens_after(subject, "memory")
    }

    /// `voice.memory.<namespace>.*`: every memory (and forget marker) of one namespace.
    pub fn memory_namespace(&self, namespace: &str) -> String {
        format!("{}.memory.{namespace}.*", self.prefix)
    }

    /// `voice.forget.<namespace>`: request/reply.
    pub fn forget(&self, namespace: &str) -> String {
        format!("{}.forget.{namespace}", self.prefix)
    }

    /// `voice.forget` without a namespace: answered with an error naming `voice.forget.<namespace>`.
    pub fn forget_without_namespace(&self) -> String {
        format!("{}.forget", self.prefix)
    }

    /// What replicas subscribe to for forget requests (in a queue group).
    pub fn forget_subscription(&self) -> String {
        format!("{}.forget.*", self.prefix)
    }

    /// The namespace token of a forget subject, unvalidated.
    pub fn namespace_of_forget<'a>(&self, subject: &'a str) -> Option<&'a str> {
        self.token_after(subject, "forget")
    }

    /// `voice.health`: request/reply.
    pub fn health(&self) -> String {
        format!("{}.health", self.prefix)
    }

    /// `voice.health.<replica>`: periodic heartbeat.
    pub fn heartbeat(&self, replica: &str) -> String {
        format!("{}.health.{replica}", self.prefix)
    }

    /// `voice.errors.<namespace>` when the namespace is known (a valid token), else `voice.errors`.
    pub fn errors(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) => format!("{}.errors.{ns}", self.prefix),
            None => format!("{}.errors", self.prefix),
        }
    }

    /// The token after `<prefix>.<kind>.`, possibly empty.
    fn token_after<'a>(&self, subject: &'a str, kind: &str) -> Option<&'a str> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let rest = rest.strip_prefix(kind)?.strip_prefix('.')?;
        rest.split('.').next()
    }

    /// The two tokens after `<prefix>.<kind>.`, possibly empty.
    fn two_tokens_after<'a>(&self, subject: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let rest = rest.strip_prefix(kind)?.strip_prefix('.')?;
        let mut tokens = rest.split('.');
        Some((tokens.next()?, tokens.next()?))
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
        assert_eq!(
            s.transcript("alice", "c1"),
            "acme.voice.transcript.alice.c1"
        );
        assert_eq!(
            s.names_of_transcript("acme.voice.transcript.alice.c1"),
            Some(("alice", "c1"))
        );
        assert_eq!(
            s.names_of_transcript("acme.voice.transcript.alice.c1.2"),
            Some(("alice", "c1"))
        );
        assert_eq!(s.names_of_transcript("acme.voice.transcript.c1"), None);
        assert_eq!(
            s.names_of_transcript("acme.voice.transcript..c1"),
            Some(("", "c1"))
        );
        assert_eq!(s.names_of_transcript("acme.voice.memory.a.c1"), None);
        assert_eq!(s.names_of_transcript("voice.transcript.a.c1"), None);
        assert_eq!(
            s.names_of_memory("acme.voice.memory.bob.c9"),
            Some(("bob", "c9"))
        );
        assert_eq!(s.context("bob", "c9"), "acme.voice.context.bob.c9");
        assert_eq!(s.namespace_of_query("acme.voice.query.bob"), Some("bob"));
        assert_eq!(s.namespace_of_query("acme.voice.query"), None);
        assert_eq!(s.errors(Some("bob")), "acme.voice.errors.bob");
        assert_eq!(s.errors(None), "acme.voice.errors");
        assert_eq!(
            s.transcript_subscription(Some(2)),
            "acme.voice.transcript.*.*.2"
        );
        assert_eq!(s.heartbeat("r1"), "acme.voice.health.r1");
        assert_eq!(s.forget("bob"), "acme.voice.forget.bob");
        assert_eq!(s.namespace_of_forget("acme.voice.forget.bob"), Some("bob"));
        assert_eq!(s.namespace_of_forget("acme.voice.forget"), None);
        assert_eq!(s.memory_namespace("bob"), "acme.voice.memory.bob.*");
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
