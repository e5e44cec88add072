//! The configuration: one file, one precedence rule for every setting.
//!
//! Command-line flag, then environment variable, then config file, then the documented default.
//! Environment variables are `VOICERAG_<SECTION>__<KEY>` (e.g. `VOICERAG_PIPELINE__BUDGET_MS=80`);
//! the value is read as a TOML value when it parses as one (numbers, booleans, arrays), else as a
//! string. `ORT_DYLIB_PATH` also sets `runtime.library`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use voicerag_actors::PipelineConfig;

use crate::bus::NatsConfig;
use crate::models::{EmbedderConfig, RerankerConfig, RuntimeConfig};
use crate::store::{RetrievalConfig, StoreConfig};

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "VOICERAG_";

/// A configuration error: always names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration. Every section has documented defaults (see `config.toml`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub embedder: EmbedderConfig,
    pub reranker: RerankerConfig,
    pub store: StoreConfig,
    pub retrieval: RetrievalConfig,
    pub pipeline: PipelineConfig,
    pub nats: NatsConfig,
    pub logging: LoggingConfig,
    pub metrics: MetricsConfig,
}

/// `[logging]`: tracing output on stderr.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// "auto" (pretty), "pretty" or "json".
    pub format: String,
    /// tracing filter, e.g. "info" or "voicerag=debug" (env `VOICERAG_LOG` wins).
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: "auto".into(),
            level: "info,ort=warn".into(),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address of the Prometheus exporter, e.g. "127.0.0.1:9464"; empty means off.
    pub listen: String,
}

impl Config {
    /// Loads `path` (or `./config.toml` if present when `path` is `None`), applies environment
    /// overrides from `env`, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (mut value, source) = match path {
            Some(p) => (read_toml(p)?, p.display().to_string()),
            None if Path::new("config.toml").exists() => (
                read_toml(Path::new("config.toml"))?,
                "config.toml".to_string(),
            ),
            None => (
                toml::Value::Table(Default::default()),
                "defaults".to_string(),
            ),
        };
        apply_env(&mut value, env)?;
        let config: Config = value.try_into().map_err(|e: toml::de::Error| {
            ConfigError::Invalid(format!("{source}: {}", e.message()))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads from the process environment.
    pub fn load_from_process_env(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load(path, std::env::vars())
    }

    /// Checks that the files the configuration names exist and parse: the ONNX Runtime library,
    /// the embedder and (when set) the cross-encoder. Errors name the key.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        crate::models::runtime::resolve_library(&self.runtime)
            .map_err(|e| ConfigError::Invalid(format!("runtime.library: {e}")))?;
        crate::models::check_model_dir(&self.embedder.model_dir, "[embedder] model_dir")
            .map_err(|e| ConfigError::Invalid(format!("embedder.model_dir: {e}")))?;
        if !self.reranker.model_dir.is_empty() {
            crate::models::check_model_dir(&self.reranker.model_dir, "[reranker] model_dir")
                .map_err(|e| ConfigError::Invalid(format!("reranker.model_dir: {e}")))?;
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets replaced by `<redacted>`.
    pub fn to_toml_redacted(&self) -> Result<String, ConfigError> {
        let mut value = toml::Value::try_from(self)
            .map_err(|e| ConfigError::Invalid(format!("cannot print the configuration: {e}")))?;
        if let Some(nats) = value.get_mut("nats").and_then(toml::Value::as_table_mut) {
            for key in ["token", "password", "nkey_seed"] {
                if let Some(v) = nats.get_mut(key) {
                    *v = toml::Value::String("<redacted>".into());
                }
            }
        }
        toml::to_string_pretty(&value)
            .map_err(|e| ConfigError::Invalid(format!("cannot print the configuration: {e}")))
    }

    /// Rejects impossible values, naming the key.
    /// The fewest blocking-pool threads that leave the stages room to run when every stage holds
    /// as many hung calls as it may: the four stages (embedder, retriever, reranker, writer) each
    /// up to `max_abandoned_calls`, the retriever's parallel searches, the embedder's parallel
    /// runs, one call each for the other two stages and one for the rest (stats, store writes off
    /// the bus).
    pub fn blocking_threads_needed(&self) -> usize {
        4 * self.pipeline.restart.max_abandoned_calls
            + self.pipeline.search_parallel
            + self.pipeline.embed_parallel
            + 3
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.runtime.threads == 0 {
            return bad("runtime.threads", "must be at least 1");
        }
        let blocking_needed = self.blocking_threads_needed();
        if self.runtime.blocking_threads < blocking_needed {
            return bad(
                "runtime.blocking_threads",
                &format!(
                    "must be at least {blocking_needed}: 4 x pipeline.restart.max_abandoned_calls \
                     (threads hung calls may hold) + pipeline.search_parallel + \
                     pipeline.embed_parallel + 3"
                ),
            );
        }
        if self.embedder.max_length < 8 {
            return bad("embedder.max_length", "must be at least 8");
        }
        if self.embedder.batch_size == 0 {
            return bad("embedder.batch_size", "must be at least 1");
        }
        if self.reranker.batch_size == 0 {
            return bad("reranker.batch_size", "must be at least 1");
        }
        if self.store.map_size_mib == 0 {
            return bad("store.map_size_mib", "must be at least 1");
        }
        if self.retrieval.rrf_k <= 0.0 {
            return bad("retrieval.rrf_k", "must be positive");
        }
        if !(0.0..=1.0).contains(&self.retrieval.convex_vector_weight) {
            return bad("retrieval.convex_vector_weight", "must be between 0 and 1");
        }
        if !(self.retrieval.recency_weight >= 0.0 && self.retrieval.recency_weight.is_finite()) {
            return bad("retrieval.recency_weight", "must be a number >= 0");
        }
        if !(self.retrieval.phonetic_weight >= 0.0 && self.retrieval.phonetic_weight.is_finite()) {
            return bad("retrieval.phonetic_weight", "must be a number >= 0");
        }
        if !(self.retrieval.time_boost >= 0.0 && self.retrieval.time_boost.is_finite()) {
            return bad("retrieval.time_boost", "must be a number >= 0");
        }
        if crate::time_expr::zone(&self.retrieval.time_zone).is_none() {
            return bad(
                "retrieval.time_zone",
                "must be an IANA time zone name such as \"UTC\" or \"Europe/Berlin\"",
            );
        }
        if let Some((ns, _)) = self
            .retrieval
            .time_zones
            .iter()
            .find(|(_, z)| crate::time_expr::zone(z).is_none())
        {
            return bad(
                "retrieval.time_zones",
                &format!("the zone of namespace {ns:?} is not an IANA time zone name"),
            );
        }
        if self.retrieval.candidates == 0 {
            return bad("retrieval.candidates", "must be at least 1");
        }
        self.pipeline.validate().map_err(ConfigError::Invalid)?;
        self.nats.validate().map_err(|e| {
            ConfigError::Invalid(e.to_string().replace("invalid configuration: ", ""))
        })?;
        if !["auto", "pretty", "json"].contains(&self.logging.format.as_str()) {
            return bad("logging.format", "must be \"auto\", \"pretty\" or \"json\"");
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(
                "metrics.listen",
                "must be an address like 127.0.0.1:9464, or empty for off",
            );
        }
        Ok(())
    }
}

fn read_toml(path: &Path) -> Result<toml::Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
}

/// Applies `VOICERAG_SECTION__KEY=value` (and `ORT_DYLIB_PATH`) to the parsed file.
fn apply_env(
    value: &mut toml::Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (var, raw) in env {
        let path: Vec<String> = if var == "ORT_DYLIB_PATH" {
            vec!["runtime".into(), "library".into()]
        } else if let Some(rest) = var.strip_prefix(ENV_PREFIX)
            && rest.contains("__")
        {
            // Only SECTION__KEY names are settings: VOICERAG_LOG and the like are not.
            rest.split("__").map(|s| s.to_ascii_lowercase()).collect()
        } else {
            continue;
        };
        if path.len() < 2 || path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::Env {
                var,
                message: "expected VOICERAG_<SECTION>__<KEY> (or <SECTION>__<TABLE>__<KEY>)".into(),
            });
        }
        let parsed = parse_env_value(&raw);
        let (key, tables) = path.split_last().expect("at least two parts");
        let mut table = value
            .as_table_mut()
            .ok_or_else(|| ConfigError::Invalid("config root is not a table".into()))?;
        for name in tables {
            let next = table
                .entry(name.clone())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            table = next.as_table_mut().ok_or_else(|| ConfigError::Env {
                var: var.clone(),
                message: format!("{name} is not a table in the config file"),
            })?;
        }
        table.insert(key.clone(), parsed);
    }
    Ok(())
}

/// Reads an environment value as a TOML value if it is one (42, true, ["cpu"]), else a string.
fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[runtime]\nthreads = 2\n[store]\ndata_dir = \"from-file\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("VOICERAG_RUNTIME__THREADS", "3"),
                ("ORT_DYLIB_PATH", "/x/libort.so"),
            ]),
        )
        .unwrap();
        assert_eq!(c.runtime.threads, 3);
        assert_eq!(c.runtime.library, "/x/libort.so");
        assert_eq!(c.store.data_dir, "from-file");
        assert_eq!(c.embedder, EmbedderConfig::default());
    }

    #[test]
    fn other_voicerag_variables_are_not_settings() {
        let c = Config::load(
            None,
            env(&[("VOICERAG_LOG", "debug"), ("VOICERAG_REQUIRE_MODELS", "1")]),
        )
        .unwrap();
        assert_eq!(c, Config::default());
        assert!(Config::load(None, env(&[("VOICERAG_PIPELINE__", "1")])).is_err());
    }

    #[test]
    fn nested_env_keys_reach_sub_tables() {
        let c = Config::load(
            None,
            env(&[("VOICERAG_PIPELINE__RESTART__MAX_RESTARTS", "9")]),
        )
        .unwrap();
        assert_eq!(c.pipeline.restart.max_restarts, 9);
    }

    #[test]
    fn shipped_config_toml_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let shipped = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(
            shipped,
            Config::default(),
            "config.toml drifted from the built-in defaults"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.windows(2) {
            if pair[1].contains(" = ") && !pair[1].starts_with('#') {
                assert!(
                    pair[0].starts_with("# ") && pair[0].len() > 3,
                    "no comment above {:?}",
                    pair[1]
                );
            }
        }
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let c = Config::load(None, env(&[("VOICERAG_NATS__TOKEN", "s3cret")])).unwrap();
        let printed = c.to_toml_redacted().unwrap();
        assert!(
            !printed.contains("s3cret") && printed.contains("<redacted>"),
            "{printed}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[store]\nno_such_key = 1\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(err.contains("no_such_key"), "{err}");
    }

    #[test]
    fn time_zones_must_exist() {
        let err = Config::load(
            None,
            env(&[("VOICERAG_RETRIEVAL__TIME_ZONE", "Mars/Olympus")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("retrieval.time_zone"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[retrieval.time_zones]\nana = \"Europe/Lisbon\"\nben = \"EST5EDTX\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("retrieval.time_zones") && err.contains("ben"),
            "{err}"
        );
        std::fs::write(&file, "[retrieval.time_zones]\nana = \"Europe/Lisbon\"\n").unwrap();
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert_eq!(c.retrieval.time_zones["ana"], "Europe/Lisbon");
    }

    #[test]
    fn impossible_value_names_the_key() {
        let err = Config::load(None, env(&[("VOICERAG_RUNTIME__THREADS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.threads"), "{err}");
    }

    #[test]
    fn a_blocking_pool_hung_calls_could_fill_is_refused() {
        // Defaults: 4 stages x 4 abandoned calls + 2 searches + 1 embedder run + 3 = 22 threads.
        assert_eq!(Config::default().blocking_threads_needed(), 22);
        let ok = Config::load(None, env(&[("VOICERAG_RUNTIME__BLOCKING_THREADS", "22")]));
        assert_eq!(ok.unwrap().runtime.blocking_threads, 22);
        let err = Config::load(None, env(&[("VOICERAG_RUNTIME__BLOCKING_THREADS", "21")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("runtime.blocking_threads") && err.contains("22"),
            "{err}"
        );
        // More abandoned calls allowed: more threads needed.
        let err = Config::load(
            None,
            env(&[("VOICERAG_PIPELINE__RESTART__MAX_ABANDONED_CALLS", "8")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("runtime.blocking_threads"), "{err}");
    }
}
