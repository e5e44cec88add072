//! `voicerag ingest`: store memories from a JSONL file or standard input, in batches.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use voicerag::config::Config;
use voicerag::engines::{self, StoreAccess};
use voicerag::ingest;

use super::INGEST_BATCH;
use crate::cli::UsageError;
use crate::cli::args::IngestArgs;

pub async fn ingest(config: &Config, args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn BufRead> = if args.file == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(&args.file)
            .map_err(|e| UsageError(format!("cannot open {}: {e}", args.file.display())))?;
        Box::new(std::io::BufReader::new(file))
    };
    // Every core embeds: parts of a batch go to one session per core.
    let embedder = ingest::BulkEmbedder::load(&config.runtime, &config.embedder)?;
    let store = engines::open_store(config, embedder.first(), StoreAccess::ReadWrite)?;
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut counts = Counts::default();
    let mut batch: Vec<(usize, voicerag_actors::Memory)> = Vec::new();
    let started = Instant::now();
    let flush = |batch: &mut Vec<(usize, voicerag_actors::Memory)>,
                 counts: &mut Counts|
     -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let lines: Vec<usize> = batch.iter().map(|(n, _)| *n).collect();
        let memories = batch.drain(..).map(|(_, m)| m).collect();
        let prepared = embedder
            .embed_memories(memories)
            .context("embedding failed")?;
        let report = store.add(prepared).context("store failed")?;
        for (index, reason) in &report.rejected {
            let line = lines.get(*index).copied().unwrap_or(0);
            eprintln!("line {line}: {reason}");
        }
        counts.stored += report.stored.len();
        counts.duplicate += report.duplicates.len();
        counts.rejected += report.rejected.len();
        progress.set_message(counts.to_string());
        Ok(())
    };
    for (index, line) in reader.split(b'\n').enumerate() {
        let number = index + 1;
        let bytes = line.context("reading input")?;
        let Ok(text) = std::str::from_utf8(&bytes) else {
            eprintln!("line {number}: not valid UTF-8");
            counts.rejected += 1;
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        match ingest::parse_line(text, config.store.max_text_bytes) {
            Ok(memory) => batch.push((number, memory)),
            Err(e) => {
                eprintln!("line {number}: {e}");
                counts.rejected += 1;
            }
        }
        if batch.len() >= INGEST_BATCH {
            flush(&mut batch, &mut counts)?;
        }
    }
    flush(&mut batch, &mut counts)?;
    store.flush()?;
    progress.finish_and_clear();
    eprintln!(
        "ingest: {counts} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Re-ingesting a file is idempotent: duplicates count as present, not as failures.
    Ok(if counts.stored + counts.duplicate == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Default)]
struct Counts {
    stored: usize,
    duplicate: usize,
    rejected: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} stored, {} duplicate, {} rejected",
            self.stored, self.duplicate, self.rejected
        )
    }
}
