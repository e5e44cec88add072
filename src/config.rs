//! The configuration: one file, one precedence rule for every setting.
//!
//! Command-line flag, then environment variable, then config file, then the documented default.
//! Environment variables are `VOICERAG_<SECTION>__<KEY>` (e.g. `VOICERAG_PIPELINE__BUDGET_MS=80`);
//! the value is read as a TOML value when it parses as one (numbers, booleans, arrays), else as a
//! string. `ORT_DYLIB_PATH` also sets `runtime.library`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::models::{EmbedderConfig, RerankerConfig, RuntimeConfig};
use crate::store::{RetrievalConfig, StoreConfig};

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "VOICERAG_";

/// A configuration error: always names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration. Every section has documented defaults (see `config.toml`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub embedder: EmbedderConfig,
    pub reranker: RerankerConfig,
    pub store: StoreConfig,
    pub retrieval: RetrievalConfig,
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
            None if Path::new("config.toml").exists() => {
                (read_toml(Path::new("config.toml"))?, "config.toml".to_string())
            }
            None => (toml::Value::Table(Default::default()), "defaults".to_string()),
        };
        apply_env(&mut value, env)?;
        let config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(format!("{source}: {}", e.message())))?;
        config.validate()?;
        Ok(config)
    }

    /// Loads from the process environment.
    pub fn load_from_process_env(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load(path, std::env::vars())
    }

    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.runtime.threads == 0 {
            return bad("runtime.threads", "must be at least 1");
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
        if self.retrieval.candidates == 0 {
            return bad("retrieval.candidates", "must be at least 1");
        }
        Ok(())
    }
}

fn read_toml(path: &Path) -> Result<toml::Value, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    text.parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.message().to_string() })
}

/// Applies `VOICERAG_SECTION__KEY=value` (and `ORT_DYLIB_PATH`) to the parsed file.
fn apply_env(
    value: &mut toml::Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (var, raw) in env {
        let path: Vec<String> = if var == "ORT_DYLIB_PATH" {
            vec!["runtime".into(), "library".into()]
        } else if let Some(rest) = var.strip_prefix(ENV_PREFIX) {
            rest.split("__").map(|s| s.to_ascii_lowercase()).collect()
        } else {
            continue;
        };
        if path.len() != 2 || path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::Env {
                var,
                message: "expected VOICERAG_<SECTION>__<KEY>".into(),
            });
        }
        let parsed = parse_env_value(&raw);
        let table = value
            .as_table_mut()
            .ok_or_else(|| ConfigError::Invalid("config root is not a table".into()))?;
        let section = table
            .entry(path[0].clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        let section = section.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: var.clone(),
            message: format!("[{}] is not a table in the config file", path[0]),
        })?;
        section.insert(path[1].clone(), parsed);
    }
    Ok(())
}

/// Reads an environment value as a TOML value if it is one (42, true, ["cpu"]), else a string.
fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn env_overrides_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[runtime]\nthreads = 2\n[store]\ndata_dir = \"from-file\"\n").unwrap();
        let c = Config::load(
            Some(&file),
            env(&[("VOICERAG_RUNTIME__THREADS", "3"), ("ORT_DYLIB_PATH", "/x/libort.so")]),
        )
        .unwrap();
        assert_eq!(c.runtime.threads, 3);
        assert_eq!(c.runtime.library, "/x/libort.so");
        assert_eq!(c.store.data_dir, "from-file");
        assert_eq!(c.embedder, EmbedderConfig::default());
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
    fn impossible_value_names_the_key() {
        let err = Config::load(None, env(&[("VOICERAG_RUNTIME__THREADS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.threads"), "{err}");
    }
}
