//! `voicerag eval SET_DIR`: retrieval quality of a memory set, as a table or one JSON line.

use std::process::ExitCode;

use voicerag::config::Config;
use voicerag::eval::{self, EvalOptions, EvalSet};

use crate::cli::UsageError;
use crate::cli::args::EvalArgs;

pub async fn eval(config: &Config, args: &EvalArgs) -> anyhow::Result<ExitCode> {
    if args.top_k == 0 {
        return Err(UsageError("--top-k must be > 0".into()).into());
    }
    let mode = match &args.mode {
        Some(m) => Some(m.parse().map_err(UsageError)?),
        None => None,
    };
    let set = EvalSet::load(&args.set_dir, config.store.max_text_bytes)
        .map_err(|e| UsageError(e.to_string()))?;
    let opts = EvalOptions {
        mode,
        top_k: args.top_k,
        budget: None,
        dump_lists: args.dump_lists.clone(),
        time_windows: args.no_time_windows.then_some(false),
        include_superseded: args.include_superseded,
    };
    let (m, _) = eval::run(config, &set, &opts).await?;
    if args.json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        println!(
            "{} ({} memories; {} queries: {} answerable, {} no-answer), mode {}",
            args.set_dir.display(),
            set.corpus.len(),
            m.queries,
            m.answerable,
            m.noanswer,
            mode.unwrap_or(config.pipeline.mode).as_str()
        );
        print_rows(&m, "  ");
        if m.stale_outranks > 0 {
            println!("  {:<26} {:>8}", "stale outranks", m.stale_outranks);
        }
        for (group, g) in &m.groups {
            println!(
                "  group {group} ({} queries; stale outranks {})",
                g.queries, g.stale_outranks
            );
            print_rows(g, "    ");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_rows(m: &eval::Metrics, indent: &str) {
    let rows = [
        ("MRR@10", m.mrr10),
        ("recall@1", m.recall1),
        ("recall@3", m.recall3),
        ("recall@5", m.recall5),
        ("recall@10", m.recall10),
        ("nDCG@10", m.ndcg10),
        ("hits per no-answer query", m.noanswer_hits_mean),
        ("total ms p50", m.total_ms_p50),
        ("total ms p99", m.total_ms_p99),
    ];
    for (name, value) in rows {
        println!("{indent}{name:<26} {value:>8.4}");
    }
}
