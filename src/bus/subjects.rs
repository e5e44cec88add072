//! Subject names under the configurable prefix (default `voice`), wire v2: every subject of a
//! user's data names its namespace (`voice.transcript.<namespace>.<conversation>`, ...).

/// Every subject the bus uses, derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
    /// Namespace partitions of a sharded deployment: the memory stream stores
    /// `voice.memory.<partition>.<namespace>.<conversation>` (its subject transform).
    partition_count: Option<u32>,
}

impl Subjects {
    /// `prefix` must be validated (see [`validate_prefix`]). Not sharded.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            partition_count: None,
        }
    }

    /// The subjects of a deployment sharded into `partition_count` namespace partitions (`None`:
    /// not sharded). Only what the memory stream stores changes; publishers' subjects do not.
    pub fn with_partition_count(mut self, partition_count: Option<u32>) -> Self {
        self.partition_count = partition_count;
        self
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

    /// What replicas subscribe to for queries (in a queue group): every namespace, or, with the
    /// server's partition mapping, those of partition `p` (`voice.query.*.<p>`).
    pub fn query_subscription(&self, partition: Option<u32>) -> String {
        match partition {
            None => format!("{}.query.*", self.prefix),
            Some(p) => format!("{}.query.*.{p}", self.prefix),
        }
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

    /// The memory stream's subject transform when sharded (source, destination): the partition
    /// of the namespace token goes first, `voice.memory.<p>.<namespace>.<conversation>`, with the
    /// same `partition(N,1)` function as the server's mappings of transcripts and queries.
    pub fn memory_transform(&self) -> Option<(String, String)> {
        self.partition_count.map(|n| {
            (
                self.memory_wildcard(),
                format!(
                    "{}.memory.{{{{partition({n},1)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}",
                    self.prefix
                ),
            )
        })
    }

    /// The nats-server `mappings` block of a deployment sharded into `count` namespace
    /// partitions: transcripts, queries and forgets get the partition of their namespace token
    /// (`examples/nats/partitions.conf` is this for 3).
    pub fn server_mappings(&self, count: u32) -> String {
        let p = &self.prefix;
        let part = format!("{{{{partition({count},1)}}}}");
        format!(
            "mappings = {{\n  \"{p}.transcript.*.*\": \"{p}.transcript.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{part}\"\n  \
             \"{p}.query.*\": \"{p}.query.{{{{wildcard(1)}}}}.{part}\"\n  \
             \"{p}.forget.*\": \"{p}.forget.{{{{wildcard(1)}}}}.{part}\"\n}}\n"
        )
    }

    /// The stream subjects of partition `p` (`voice.memory.<p>.*.*`): one sharded consumer's filter.
    pub fn stored_memory_partition(&self, p: u32) -> String {
        format!("{}.memory.{p}.*.*", self.prefix)
    }

    /// The namespace and conversation tokens of a subject as the memory stream stores it
    /// (after the partition token when sharded), unvalidated.
    pub fn names_of_memory<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let (first, second) = self.two_tokens_after(subject, "memory")?;
        if self.partition_count.is_none() {
            return Some((first, second));
        }
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".memory.")?;
        let mut tokens = rest.split('.').skip(1);
        Some((tokens.next()?, tokens.next()?))
    }

    /// How the stream stores one conversation's memories, as a filter (the partition token a
    /// wildcard when sharded: the server computes it).
    pub fn stored_memory(&self, namespace: &str, conversation: &str) -> String {
        match self.partition_count {
            None => self.memory(namespace, conversation),
            Some(_) => format!("{}.memory.*.{namespace}.{conversation}", self.prefix),
        }
    }

    /// Every memory (and forget marker) of one namespace as the stream stores them.
    pub fn stored_memory_namespace(&self, namespace: &str) -> String {
        self.stored_memory(namespace, "*")
    }

    /// `voice.forget.<namespace>`: request/reply.
    pub fn forget(&self, namespace: &str) -> String {
        format!("{}.forget.{namespace}", self.prefix)
    }

    /// `voice.forget` without a namespace: answered with an error naming `voice.forget.<namespace>`.
    pub fn forget_without_namespace(&self) -> String {
        format!("{}.forget", self.prefix)
    }

    /// What replicas subscribe to for forget requests (in a queue group): every namespace, or
    /// those of partition `p` (`voice.forget.*.<p>`).
    pub fn forget_subscription(&self, partition: Option<u32>) -> String {
        match partition {
            None => format!("{}.forget.*", self.prefix),
            Some(p) => format!("{}.forget.*.{p}", self.prefix),
        }
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
        assert_eq!(s.stored_memory_namespace("bob"), "acme.voice.memory.bob.*");
        assert_eq!(s.memory_transform(), None);
        assert_eq!(s.query_subscription(Some(1)), "acme.voice.query.*.1");
        assert_eq!(s.forget_subscription(None), "acme.voice.forget.*");
    }

    #[test]
    fn sharded_memory_subjects_carry_the_partition_first() {
        let s = Subjects::new("voice").with_partition_count(Some(3));
        assert_eq!(
            s.memory_transform(),
            Some((
                "voice.memory.*.*".to_string(),
                "voice.memory.{{partition(3,1)}}.{{wildcard(1)}}.{{wildcard(2)}}".to_string()
            ))
        );
        // Publishers keep the unsharded subject; the stream stores it with the partition.
        assert_eq!(s.memory("alice", "c1"), "voice.memory.alice.c1");
        assert_eq!(
            s.names_of_memory("voice.memory.2.alice.c1"),
            Some(("alice", "c1"))
        );
        // A namespace that looks like a partition number is still the namespace.
        assert_eq!(s.names_of_memory("voice.memory.0.7.c1"), Some(("7", "c1")));
        assert_eq!(s.names_of_memory("voice.memory.alice.c1"), None);
        assert_eq!(s.stored_memory("alice", "c1"), "voice.memory.*.alice.c1");
        assert_eq!(s.stored_memory_namespace("alice"), "voice.memory.*.alice.*");
        assert_eq!(s.stored_memory_partition(2), "voice.memory.2.*.*");
        assert_eq!(s.forget_subscription(Some(0)), "voice.forget.*.0");
    }

    #[test]
    fn server_mappings_are_the_shipped_example() {
        let example = include_str!("../../examples/nats/partitions.conf");
        let block = &example[example.find("mappings = {").unwrap()..];
        assert_eq!(Subjects::new("voice").server_mappings(3), block);
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
