//! tracing to stderr: pretty on a terminal, JSON when configured.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use voicerag::config::LoggingConfig;

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
pub fn init_metrics(
    config: &voicerag::config::MetricsConfig,
) -> anyhow::Result<Option<MetricsGuard>> {
    if config.listen.is_empty() {
        return Ok(None);
    }
    let addr: std::net::SocketAddr = config
        .listen
        .parse()
        .map_err(|e| crate::cli::UsageError(format!("metrics.listen: {e}")))?;
    // Real histograms (not summaries) for every *_seconds metric, so dashboards can aggregate.
    const BUCKETS: &[f64] = &[
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
    ];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("seconds".into()),
            BUCKETS,
        )
        .map_err(|e| anyhow::anyhow!("metrics buckets: {e}"))?
        .install()
        .map_err(|e| anyhow::anyhow!("metrics.listen {addr}: {e}"))?;
    tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    Ok(Some(MetricsGuard))
}

/// Publishes the store's size as gauges every few seconds (`voicerag_store_memories`,
/// `voicerag_store_chunks`, `voicerag_store_disk_bytes`, `voicerag_store_bm25_lag`).
pub fn spawn_store_gauges(store: std::sync::Arc<voicerag::store::MemoryStore>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            let store = store.clone();
            let Ok(Ok(stats)) = tokio::task::spawn_blocking(move || store.stats()).await else {
                continue;
            };
            metrics::gauge!("voicerag_store_memories").set(stats.memories as f64);
            metrics::gauge!("voicerag_store_chunks").set(stats.chunks as f64);
            metrics::gauge!("voicerag_store_disk_bytes").set(stats.disk_bytes as f64);
            metrics::gauge!("voicerag_store_bm25_lag").set(stats.bm25_lag as f64);
        }
    });
}
