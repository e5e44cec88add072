//! `[nats]`: how the bus connects, names things and scales out. Secrets never reach a log: the
//! `Debug` and `Serialize` forms (logs, `voicerag config check`) redact them.

use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::BusError;
use super::subjects::validate_prefix;
use super::wire::validate_token;

/// `[nats]` section of the configuration.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs, tried in order and on reconnect (`nats://host:4222`, `tls://...`).
    #[serde(serialize_with = "serialize_urls")]
    pub urls: Vec<String>,
    /// Token authentication.
    #[serde(serialize_with = "serialize_secret")]
    pub token: Option<String>,
    /// User/password authentication (both or neither).
    pub user: Option<String>,
    #[serde(serialize_with = "serialize_secret")]
    pub password: Option<String>,
    /// NKey seed (`SU...`) authentication.
    #[serde(serialize_with = "serialize_secret")]
    pub nkey_seed: Option<String>,
    /// `.creds` file (JWT + NKey) authentication.
    pub credentials_file: Option<PathBuf>,
    /// PEM file of a CA to trust for TLS (implies TLS).
    pub tls_ca: Option<PathBuf>,
    /// Refuse plain-text connections.
    pub tls_required: bool,
    /// First subject token(s): `voice` gives `voice.transcript.<namespace>.<conversation>` etc.
    pub subject_prefix: String,
    /// Stable id of this replica: names its durable consumer and heartbeat subject.
    pub replica_id: String,
    /// The JetStream stream that holds memories (limits retention; created if missing).
    pub stream: String,
    /// Oldest memory the stream keeps, in seconds (0 = forever). A replica that starts later than
    /// this after a memory was published never sees it. `voicerag serve` creates a missing stream
    /// with `store.retention_max_age_s` when this is 0 and retention is on.
    pub stream_max_age_s: u64,
    /// Largest the stream may grow, in bytes (0 = unlimited); the oldest memories go first.
    pub stream_max_bytes: i64,
    /// Copies of the stream a clustered nats-server keeps (1, 3 or 5; 3 survives one server
    /// down). Used when voicerag creates the stream; an existing one keeps its own.
    pub stream_replicas: usize,
    /// Window in which a repeated `Nats-Msg-Id` is dropped by the server.
    pub duplicate_window_s: u64,
    /// Largest payload accepted on any subject; larger ones are rejected on `voice.errors`.
    pub max_payload_bytes: usize,
    /// Period of the `voice.health.<replica>` heartbeat.
    pub heartbeat_ms: u64,
    /// Partitions this replica owns. With `partition_count` set: namespace partitions (sharding,
    /// see README "Scale-out"); each must be below `partition_count`. Without it: transcript
    /// partitions only (the server maps `voice.transcript.*.*` to a partition token; every
    /// replica still keeps every memory). Empty: no partitions (a full replica).
    pub partitions: Vec<u32>,
    /// Namespace partitions of the deployment (0: no sharding, every replica is a full replica).
    /// Must equal the N of the server's `partition(N,1)` mappings and of the memory stream's
    /// subject transform (voicerag creates a missing stream with it, and refuses a stream whose
    /// transform differs).
    pub partition_count: u32,
    /// Queue group that spreads `voice.query.<namespace>` over full replicas (and answers wire v1
    /// subjects with an error once). Sharded replicas use one group per partition, `voicerag-p<k>`.
    pub query_group: String,
    /// Queries answered at once by this replica; more wait in the subscription.
    pub max_concurrent_queries: usize,
    /// Republish final user transcripts to the memory stream from the bus itself, at receipt.
    /// Off by default: the pipeline remembers finals through the `JetStreamWriter` already
    /// (both paths use the id `<conversation>/<utterance>`, so turning it on only costs a
    /// duplicate publish that the stream drops).
    pub republish_finals: bool,
    /// Most memories committed to the store in one batch.
    pub memory_batch: usize,
    /// How long JetStream waits for an ack before redelivering a memory. A replica marks what it
    /// holds in progress three times per ack_wait, so this only bounds how long a crashed
    /// replica's unacked memories wait before they come back (fast recovery, issue 10 item 7).
    pub ack_wait_ms: u64,
    /// How long a graceful stop waits for in-flight work.
    pub drain_timeout_ms: u64,
    /// Ceiling of the reconnect backoff.
    pub reconnect_max_delay_ms: u64,
    /// Timeout of one connection attempt and of JetStream requests.
    pub request_timeout_ms: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".into()],
            token: None,
            user: None,
            password: None,
            nkey_seed: None,
            credentials_file: None,
            tls_ca: None,
            tls_required: false,
            subject_prefix: "voice".into(),
            replica_id: "replica-0".into(),
            stream: "VOICE_MEMORY".into(),
            stream_max_age_s: 0,
            stream_max_bytes: 0,
            stream_replicas: 1,
            duplicate_window_s: 120,
            max_payload_bytes: 64 * 1024,
            heartbeat_ms: 5000,
            partitions: Vec::new(),
            partition_count: 0,
            query_group: "voicerag-query".into(),
            max_concurrent_queries: 16,
            republish_finals: false,
            memory_batch: 64,
            ack_wait_ms: 3_000,
            drain_timeout_ms: 5000,
            reconnect_max_delay_ms: 5000,
            request_timeout_ms: 5000,
        }
    }
}

const REDACTED: &str = "<redacted>";

/// `nats://user:pass@host` -> `nats://<redacted>@host`.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{REDACTED}@{host}"),
            None => url.to_string(),
        },
        None => match url.rsplit_once('@') {
            Some((_, host)) => format!("{REDACTED}@{host}"),
            None => url.to_string(),
        },
    }
}

fn serialize_secret<S: Serializer>(secret: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}

fn serialize_urls<S: Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| redact_url(u)))
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| REDACTED);
        f.debug_struct("NatsConfig")
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("token", &secret(&self.token))
            .field("user", &self.user)
            .field("password", &secret(&self.password))
            .field("nkey_seed", &secret(&self.nkey_seed))
            .field("credentials_file", &self.credentials_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_required", &self.tls_required)
            .field("subject_prefix", &self.subject_prefix)
            .field("replica_id", &self.replica_id)
            .field("stream", &self.stream)
            .field("stream_max_age_s", &self.stream_max_age_s)
            .field("stream_max_bytes", &self.stream_max_bytes)
            .field("stream_replicas", &self.stream_replicas)
            .field("duplicate_window_s", &self.duplicate_window_s)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("partitions", &self.partitions)
            .field("partition_count", &self.partition_count)
            .field("query_group", &self.query_group)
            .field("max_concurrent_queries", &self.max_concurrent_queries)
            .field("republish_finals", &self.republish_finals)
            .field("memory_batch", &self.memory_batch)
            .field("ack_wait_ms", &self.ack_wait_ms)
            .field("drain_timeout_ms", &self.drain_timeout_ms)
            .field("reconnect_max_delay_ms", &self.reconnect_max_delay_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

impl NatsConfig {
    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), BusError> {
        let bad = |key: &str, why: String| Err(BusError::Config(format!("nats.{key}: {why}")));
        if self.urls.is_empty() {
            return bad("urls", "needs at least one server URL".into());
        }
        if let Err(why) = validate_prefix(&self.subject_prefix) {
            return bad("subject_prefix", why);
        }
        if let Err(e) = validate_token("replica_id", &self.replica_id) {
            return bad("replica_id", e.to_string());
        }
        let stream_ok = !self.stream.is_empty()
            && self
                .stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !stream_ok {
            return bad(
                "stream",
                format!("{:?} must be letters, digits, '_' or '-'", self.stream),
            );
        }
        if self.query_group.is_empty() || self.query_group.chars().any(char::is_whitespace) {
            return bad(
                "query_group",
                "must be non-empty without white space".into(),
            );
        }
        if self.user.is_some() != self.password.is_some() {
            return bad("user", "user and password go together".into());
        }
        let methods = [
            self.token.is_some(),
            self.user.is_some(),
            self.nkey_seed.is_some(),
            self.credentials_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return bad(
                "token",
                "choose one of token, user/password, nkey_seed, credentials_file".into(),
            );
        }
        if self.max_payload_bytes < 256 {
            return bad("max_payload_bytes", "must be at least 256".into());
        }
        for (key, value) in [
            ("heartbeat_ms", self.heartbeat_ms),
            ("ack_wait_ms", self.ack_wait_ms),
            ("reconnect_max_delay_ms", self.reconnect_max_delay_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("memory_batch", self.memory_batch as u64),
            ("max_concurrent_queries", self.max_concurrent_queries as u64),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        if !(1..=5).contains(&self.stream_replicas) {
            return bad(
                "stream_replicas",
                "must be 1 to 5 (JetStream's limit)".into(),
            );
        }
        if self.partition_count > 0 {
            if self.partitions.is_empty() {
                return bad(
                    "partitions",
                    format!(
                        "is empty but nats.partition_count is {}: list the partitions this \
                         replica owns (0 to {})",
                        self.partition_count,
                        self.partition_count - 1
                    ),
                );
            }
            if let Some(p) = self.partitions.iter().find(|p| **p >= self.partition_count) {
                return bad(
                    "partitions",
                    format!(
                        "partition {p} is not below nats.partition_count {}",
                        self.partition_count
                    ),
                );
            }
        }
        let mut owned = self.partitions.clone();
        owned.sort_unstable();
        if let Some(twice) = owned.windows(2).find(|w| w[0] == w[1]) {
            return bad(
                "partitions",
                format!("partition {} is listed twice", twice[0]),
            );
        }
        if self.stream_max_bytes < 0 {
            return bad(
                "stream_max_bytes",
                "must be 0 (unlimited) or positive".into(),
            );
        }
        Ok(())
    }

    /// Connection options: authentication, TLS, reconnect backoff, logged connection events.
    pub async fn connect_options(&self) -> Result<async_nats::ConnectOptions, BusError> {
        let mut options = match &self.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| {
                    BusError::Config(format!("nats.credentials_file {}: {e}", path.display()))
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.clone());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if self.tls_required {
            options = options.require_tls(true);
        }
        let ceiling = Duration::from_millis(self.reconnect_max_delay_ms);
        let replica = self.replica_id.clone();
        Ok(options
            .name(format!("voicerag-{}", self.replica_id))
            .connection_timeout(Duration::from_millis(self.request_timeout_ms))
            .request_timeout(Some(Duration::from_millis(self.request_timeout_ms)))
            // A server restart must not end the service: keep trying, and also at start-up.
            .max_reconnects(None)
            .retry_on_initial_connect()
            .reconnect_delay_callback(move |attempts| reconnect_delay(attempts, ceiling))
            .event_callback(move |event| {
                let replica = replica.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(replica = %replica, "connected to NATS")
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(replica = %replica, "disconnected from NATS: reconnecting")
                        }
                        other => tracing::info!(replica = %replica, event = %other, "NATS event"),
                    }
                }
            }))
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// The namespace partition count when this deployment is sharded.
    pub fn sharding(&self) -> Option<u32> {
        (self.partition_count > 0).then_some(self.partition_count)
    }

    /// What this replica consumes from the memory stream: everything (`None`, a full replica),
    /// or each owned partition on its own (sharded).
    pub fn memory_partitions(&self) -> Vec<Option<u32>> {
        match self.sharding() {
            None => vec![None],
            Some(_) => self.partitions.iter().copied().map(Some).collect(),
        }
    }

    /// The durable consumer of this replica for `partition` (`None`: the whole stream). Named from
    /// the replica id, so a restart resumes where it stopped and a new replica starts from the
    /// stream's beginning.
    pub fn durable_name(&self, partition: Option<u32>) -> String {
        match partition {
            None => format!("voicerag-{}", self.replica_id),
            Some(p) => format!("voicerag-{}-p{p}", self.replica_id),
        }
    }

    /// The queue group of partition `p`'s transcripts, queries and forgets: the replicas owning
    /// `p` share it, so each message is served once, by any live owner.
    pub fn partition_group(&self, p: u32) -> String {
        format!("voicerag-p{p}")
    }
}

/// Exponential backoff from 50 ms up to `ceiling`, with up to 25% jitter so that many replicas
/// do not reconnect in lockstep.
pub fn reconnect_delay(attempts: usize, ceiling: Duration) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = (attempts - 1).min(16) as u32;
    let base = Duration::from_millis(50)
        .saturating_mul(1 << exp)
        .min(ceiling);
    let jitter = base.mul_f64(rand::random::<f64>() * 0.25);
    (base + jitter).min(ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let config = NatsConfig {
            urls: vec![
                "nats://alice:hunter2@host:4222".into(),
                "tls://host2".into(),
            ],
            token: Some("tok-secret".into()),
            password: Some("pw-secret".into()),
            user: Some("alice".into()),
            nkey_seed: Some("SUAseed".into()),
            ..Default::default()
        };
        let shown = format!("{config:?}");
        for secret in ["hunter2", "tok-secret", "pw-secret", "SUAseed"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("tls://host2"));
        assert!(shown.contains("host:4222"));
        let serialized = toml::to_string(&config).unwrap();
        for secret in ["hunter2", "tok-secret", "pw-secret", "SUAseed"] {
            assert!(
                !serialized.contains(secret),
                "{secret} leaked: {serialized}"
            );
        }
        assert!(
            serialized.contains("token = \"<redacted>\""),
            "{serialized}"
        );
        let back: NatsConfig =
            toml::from_str(&toml::to_string(&NatsConfig::default()).unwrap()).unwrap();
        assert_eq!(back, NatsConfig::default());
    }

    #[test]
    fn toml_section_with_defaults_and_unknown_keys() {
        let c: NatsConfig = toml::from_str("replica_id = \"r2\"\npartitions = [0, 2]\n").unwrap();
        assert_eq!(c.replica_id, "r2");
        assert_eq!(c.partitions, vec![0, 2]);
        assert_eq!(c.subject_prefix, "voice");
        c.validate().unwrap();
        let e = toml::from_str::<NatsConfig>("no_such = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no_such"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let cases: Vec<(NatsConfig, &str)> = vec![
            (
                NatsConfig {
                    replica_id: "a.b".into(),
                    ..Default::default()
                },
                "nats.replica_id",
            ),
            (
                NatsConfig {
                    subject_prefix: "v.*".into(),
                    ..Default::default()
                },
                "nats.subject_prefix",
            ),
            (
                NatsConfig {
                    user: Some("u".into()),
                    ..Default::default()
                },
                "nats.user",
            ),
            (
                NatsConfig {
                    token: Some("t".into()),
                    nkey_seed: Some("s".into()),
                    ..Default::default()
                },
                "nats.token",
            ),
            (
                NatsConfig {
                    urls: vec![],
                    ..Default::default()
                },
                "nats.urls",
            ),
            (
                NatsConfig {
                    stream: "a.b".into(),
                    ..Default::default()
                },
                "nats.stream",
            ),
            (
                NatsConfig {
                    partition_count: 3,
                    ..Default::default()
                },
                "nats.partitions",
            ),
            (
                NatsConfig {
                    partition_count: 3,
                    partitions: vec![0, 3],
                    ..Default::default()
                },
                "nats.partitions",
            ),
            (
                NatsConfig {
                    partitions: vec![1, 1],
                    ..Default::default()
                },
                "nats.partitions",
            ),
        ];
        for (config, key) in cases {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn sharding_names_consumers_and_groups_per_partition() {
        let full = NatsConfig {
            replica_id: "r1".into(),
            partitions: vec![0],
            ..Default::default()
        };
        full.validate().unwrap();
        assert_eq!(full.sharding(), None);
        assert_eq!(full.memory_partitions(), vec![None]);
        assert_eq!(full.durable_name(None), "voicerag-r1");
        let sharded = NatsConfig {
            partition_count: 3,
            partitions: vec![2, 0],
            ..full
        };
        sharded.validate().unwrap();
        assert_eq!(sharded.sharding(), Some(3));
        assert_eq!(sharded.memory_partitions(), vec![Some(2), Some(0)]);
        assert_eq!(sharded.durable_name(Some(2)), "voicerag-r1-p2");
        assert_eq!(sharded.partition_group(2), "voicerag-p2");
    }

    #[test]
    fn backoff_grows_to_the_ceiling() {
        let ceiling = Duration::from_secs(2);
        assert_eq!(reconnect_delay(1, ceiling), Duration::ZERO);
        let d2 = reconnect_delay(2, ceiling);
        assert!(
            d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(125),
            "{d2:?}"
        );
        assert_eq!(reconnect_delay(40, ceiling), ceiling);
    }
}
