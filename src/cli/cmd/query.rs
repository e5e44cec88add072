//! `voicerag query`: recall memories for a text, or a batch of queries, through the pipeline.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use futures::StreamExt;
use serde::Deserialize;
use voicerag::config::Config;
use voicerag::engines::{Engines, ReadOnlyWriter, StoreAccess};
use voicerag_actors::{QueryRequest, SearchFilter, SearchMode};

use crate::cli::UsageError;
use crate::cli::args::QueryArgs;
use crate::cli::output::print_human;

/// One line of `voicerag query --batch`.
#[derive(Debug, Deserialize)]
struct BatchQuery {
    id: Option<String>,
    text: String,
    namespace: Option<String>,
    conversation: Option<String>,
    top_k: Option<usize>,
    mode: Option<String>,
    #[serde(default)]
    include_superseded: bool,
    time_zone: Option<String>,
}

pub async fn query(config: &Config, args: &QueryArgs) -> anyhow::Result<ExitCode> {
    let mut queries = Vec::new();
    if let Some(path) = &args.batch {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<BatchQuery>(line) {
                Ok(q) => queries.push(q),
                Err(e) => eprintln!("line {}: {e}", index + 1),
            }
        }
    } else if let Some(text) = &args.text {
        queries.push(BatchQuery {
            id: None,
            text: text.clone(),
            namespace: None,
            conversation: None,
            top_k: None,
            mode: None,
            include_superseded: false,
            time_zone: None,
        });
    }
    let engines = Engines::load_off_runtime(config, StoreAccess::ReadOnly, true).await?;
    let handle = engines.start(config, Arc::new(ReadOnlyWriter)).await?;
    let mut failures = 0usize;
    let default_mode: SearchMode = match &args.mode {
        Some(m) => m.parse().map_err(UsageError)?,
        None => config.pipeline.mode,
    };
    let mut base_filter = SearchFilter::default();
    args.time.apply(&mut base_filter).map_err(UsageError)?;
    let requests: Vec<(String, QueryRequest)> = queries
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            let mut filter = base_filter.clone();
            filter.include_superseded |= q.include_superseded;
            if q.time_zone.is_some() {
                filter.time.time_zone = q.time_zone;
            }
            let mode = q
                .mode
                .as_deref()
                .and_then(|m| m.parse().ok())
                .unwrap_or(default_mode);
            let id = q.id.unwrap_or_else(|| format!("q{}", i + 1));
            let request = QueryRequest {
                namespace: q
                    .namespace
                    .or_else(|| args.namespace.clone())
                    .unwrap_or_else(|| "default".into()),
                conversation: q.conversation,
                text: q.text,
                top_k: q.top_k.or(args.top_k),
                mode: Some(mode),
                budget: None,
                filter,
            };
            (id, request)
        })
        .collect();
    let mut answers = futures::stream::iter(requests)
        .map(|(id, request)| {
            let handle = handle.clone();
            async move { (id, handle.query(request).await) }
        })
        .buffered(args.concurrency.max(1));
    let stdout = std::io::stdout();
    while let Some((id, answer)) = answers.next().await {
        match answer {
            Ok(result) => {
                let mut out = stdout.lock();
                if args.json {
                    writeln!(out, "{}", voicerag::bus::wire::context_json(&result, &id))?;
                } else {
                    print_human(&mut out, &id, &result)?;
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("query {id}: {e}");
            }
        }
    }
    drop(answers);
    handle.shutdown().await.ok();
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
