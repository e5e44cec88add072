//! tracing to stderr: pretty on a terminal, JSON when configured.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LoggingConfig;

pub fn init(config: &LoggingConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("VOICERAG_LOG")
        .or_else(|_| EnvFilter::try_new(&config.level))
        .map_err(|e| crate::cli::UsageError(format!("logging.level: {e}")))?;
    let json = match config.format.as_str() {
        "json" => true,
        "pretty" => false,
        _ => false,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().with_current_span(true).try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    // A second init (tests calling the CLI in-process) keeps the first subscriber.
    let _ = result;
    Ok(())
}

/// Marks that the Prometheus exporter runs (it lives as long as the process).
pub struct MetricsGuard;

/// Starts the Prometheus endpoint when `metrics.listen` is set.
pub fn init_metrics(config: &crate::config::MetricsConfig) -> anyhow::Result<Option<MetricsGuard>> {
    if config.listen.is_empty() {
        return Ok(None);
    }
    let addr: std::net::SocketAddr = config
        .listen
        .parse()
        .map_err(|e| crate::cli::UsageError(format!("metrics.listen: {e}")))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| anyhow::anyhow!("metrics.listen {addr}: {e}"))?;
    tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    Ok(Some(MetricsGuard))
}
