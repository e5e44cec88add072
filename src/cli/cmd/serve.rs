//! `voicerag serve`: serve voice agents over NATS until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use voicerag::bus::BusConnection;
use voicerag::bus::memory_consumer::retention_mismatch;
use voicerag::config::Config;
use voicerag::engines::{Engines, StoreAccess};

/// `voicerag serve`: the pipeline behind the NATS bus; memories go through JetStream only.
pub async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let _metrics = crate::cli::logging::init_metrics(&config.metrics)?;
    let engines = Engines::load_off_runtime(&config, StoreAccess::ReadWrite, true).await?;
    if _metrics.is_some() {
        crate::cli::logging::spawn_store_gauges(engines.store.clone());
    }
    let mut nats = config.nats.clone();
    let retention = config.store.retention_max_age_s;
    // Retention forgets in the stream too: a stream created here keeps memories no longer.
    if retention > 0 && nats.stream_max_age_s == 0 {
        nats.stream_max_age_s = retention;
    }
    let connection = BusConnection::connect(nats, Duration::from_secs(30)).await?;
    match connection.stream_max_age().await {
        Ok(age) => {
            if let Some(problem) = retention_mismatch(age, retention, &config.nats.stream) {
                tracing::warn!("{problem}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot check the memory stream's max age"),
    }
    let handle = engines
        .start(&config, Arc::new(connection.writer()))
        .await?;
    tracing::info!(
        replica = %config.nats.replica_id,
        embedder = engines.embedder.model_name(),
        reranker = engines.reranker.as_ref().map(|r| r.model_name().to_string()).unwrap_or_else(|| "off".into()),
        "voicerag serving"
    );
    voicerag::bus::service::serve_connected(
        connection,
        Arc::new(handle),
        engines.store_writer(),
        shutdown_signal(),
    )
    .await?;
    engines.store.flush()?;
    tracing::info!("voicerag stopped");
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
