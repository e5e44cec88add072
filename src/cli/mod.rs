//! The `voicerag` command line: the edge where `anyhow` errors live.
//!
//! stdout carries only results (JSON lines with `--json`); progress, logs and summaries go to
//! stderr. Exit code 0 on success, 1 on a runtime failure, 2 on a usage or config error.

pub mod args;
mod blocking_pool;
mod cmd;
pub mod demo;
mod logging;
mod malloc;
mod output;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use voicerag::bench;
use voicerag::config::{Config, ConfigError};

/// A usage or configuration error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs the command line and maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some()
                || err.downcast_ref::<ConfigError>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The effective configuration: file, then environment, then flags on top.
pub fn effective_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load_from_process_env(cli.config.as_deref())?;
    if let Some(dir) = &cli.data_dir {
        config.store.data_dir = dir.display().to_string();
    }
    if let Some(lib) = &cli.ort_lib {
        config.runtime.library = lib.display().to_string();
    }
    if let Some(threads) = cli.threads {
        config.runtime.threads = threads;
    }
    if let Some(format) = cli.log_format {
        config.logging.format = match format {
            args::LogFormat::Pretty => "pretty".into(),
            args::LogFormat::Json => "json".into(),
        };
    }
    Ok(config)
}

/// Whether `command` serves traffic for long (its blocking pool is started whole, up front).
fn serves(command: &Command) -> bool {
    matches!(
        command,
        Command::Serve(_)
            | Command::Bench(
                args::BenchCommand::Soak(_)
                    | args::BenchCommand::Nats(_)
                    | args::BenchCommand::Pipeline(_)
            )
    )
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = effective_config(&cli)?;
    // Before any thread of the runtime or the engines allocates: arenas are made on first use.
    let arenas = malloc::limit_arenas(config.runtime.malloc_arenas);
    logging::init(&config.logging)?;
    tracing::debug!(?arenas, "malloc arenas");
    let runtime = blocking_pool::runtime(config.runtime.blocking_threads)?;
    if serves(&cli.command) {
        // Before any engine starts: the thread count stays what it is now.
        let started = blocking_pool::prespawn(&runtime, config.runtime.blocking_threads);
        tracing::debug!(threads = started.len(), "blocking pool started");
    }
    runtime.block_on(async move {
        match cli.command {
            Command::Ingest(a) => cmd::ingest(&config, &a).await,
            Command::Query(a) => {
                apply_rerank_flags(&mut config, &a.rerank)?;
                cmd::query(&config, &a).await
            }
            Command::Forget(a) => cmd::forget(&config, &a).await,
            Command::Reindex => cmd::reindex(&config).await,
            Command::Serve(a) => {
                if let Some(url) = &a.nats_url {
                    config.nats.urls = url.split(',').map(|s| s.trim().to_string()).collect();
                }
                config.validate()?;
                cmd::serve(config).await
            }
            Command::Demo(a) => {
                apply_rerank_flags(&mut config, &a.rerank)?;
                demo::run(&config, &a).await
            }
            Command::Eval(a) => {
                apply_rerank_flags(&mut config, &a.rerank)?;
                cmd::eval(&config, &a).await
            }
            Command::Config(args::ConfigCommand::Check) => cmd::config_check(&config),
            Command::Bench(b) => match b {
                args::BenchCommand::Models { iterations } => {
                    bench::models::run(&config, iterations).map(|_| ExitCode::SUCCESS)
                }
                args::BenchCommand::Store { sizes } => {
                    bench::store::run(&config, &sizes).map(|_| ExitCode::SUCCESS)
                }
                args::BenchCommand::Pipeline(a) => bench::pipeline::run(&config, &a).await,
                args::BenchCommand::Nats(a) => bench::nats::run(&config, &a).await,
                args::BenchCommand::Soak(a) => bench::soak::run(&config, &a).await,
            },
        }
    })
}

/// `--budget-ms` and `--reranker` override the config, then the result is validated again.
fn apply_rerank_flags(config: &mut Config, flags: &args::RerankFlags) -> anyhow::Result<()> {
    if let Some(ms) = flags.budget_ms {
        config.pipeline.budget_ms = ms;
    }
    if let Some(dir) = &flags.reranker {
        config.reranker.model_dir = dir.display().to_string();
    }
    config.validate()?;
    Ok(())
}
