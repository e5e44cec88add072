//! Command-line arguments. Flags override environment variables, which override the config file.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use voicerag::bench::nats::BenchNatsArgs;
use voicerag::bench::pipeline::BenchPipelineArgs;
use voicerag::bench::soak::BenchSoakArgs;

#[derive(Debug, Parser)]
#[command(
    name = "voicerag",
    version,
    about = "Memory and context for voice agents, on time"
)]
pub struct Cli {
    /// Config file (default: ./config.toml if present, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory of the memory store (overrides store.data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// ONNX Runtime library (overrides ORT_DYLIB_PATH and runtime.library).
    #[arg(long, global = true, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Intra-op threads per ONNX session (overrides runtime.threads).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Log format on stderr (overrides logging.format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store memories from a JSONL file ({"id","text","namespace"?,"conversation"?,"speaker"?,"ts"?}).
    Ingest(IngestArgs),
    /// Recall memories for a text (or a batch of queries) through the pipeline.
    Query(QueryArgs),
    /// Delete memories by id, conversation or namespace.
    Forget(ForgetArgs),
    /// Re-embed every stored memory with the configured embedding model.
    Reindex,
    /// Serve voice agents over NATS.
    Serve(ServeArgs),
    /// Replay a scripted voice session through the in-process pipeline.
    Demo(DemoArgs),
    /// Measure retrieval quality on a memory set (SET_DIR/corpus.jsonl, SET_DIR/queries.jsonl).
    Eval(EvalArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Benchmarks (run in release mode).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// JSONL file, or - for standard input.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct RerankFlags {
    /// Deadline budget per query in ms (overrides pipeline.budget_ms).
    #[arg(long)]
    pub budget_ms: Option<u64>,
    /// Cross-encoder model directory (overrides reranker.model_dir).
    #[arg(long, value_name = "MODEL_DIR")]
    pub reranker: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The query text (or use --batch).
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    pub text: Option<String>,
    /// JSONL file of queries ({"id","text","namespace"?,"top_k"?,"mode"?,"conversation"?,
    /// "include_superseded"?,"time_zone"?}).
    #[arg(long, value_name = "QUERIES.jsonl")]
    pub batch: Option<PathBuf>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, value_parser = ["hybrid", "vector", "bm25"])]
    pub mode: Option<String>,
    #[arg(long)]
    pub namespace: Option<String>,
    /// One JSON line per query on stdout.
    #[arg(long)]
    pub json: bool,
    /// Queries in flight at once with --batch (answers still print in input order).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    #[command(flatten)]
    pub time: TimeFlags,
    #[command(flatten)]
    pub rerank: RerankFlags,
}

/// How queries read time and which memories they may return.
#[derive(Debug, Args)]
pub struct TimeFlags {
    /// Also return memories that were superseded or have expired.
    #[arg(long)]
    pub include_superseded: bool,
    /// IANA time zone for time expressions in the query ("yesterday"); default: the
    /// namespace's `retrieval.time_zones` entry, else `retrieval.time_zone`.
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
    /// Do not read time expressions in queries (overrides `retrieval.time_windows`).
    #[arg(long)]
    pub no_time_windows: bool,
    /// "Now" for relative time expressions and expiry (RFC 3339); default: the clock.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
}

impl TimeFlags {
    /// The filter fields these flags set, or why a value is wrong.
    pub fn apply(&self, filter: &mut voicerag_actors::SearchFilter) -> Result<(), String> {
        if let Some(z) = &self.time_zone
            && voicerag::time_expr::zone(z).is_none()
        {
            return Err(format!("--time-zone {z:?} is not an IANA time zone name"));
        }
        filter.include_superseded |= self.include_superseded;
        if self.time_zone.is_some() {
            filter.time.time_zone = self.time_zone.clone();
        }
        if self.no_time_windows {
            filter.time.enabled = Some(false);
        }
        if let Some(now) = &self.now {
            let t = chrono::DateTime::parse_from_rfc3339(now)
                .map_err(|e| format!("--now {now:?} is not RFC 3339: {e}"))?;
            filter.time.now_ms = Some(t.timestamp_millis());
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Directory holding corpus.jsonl and queries.jsonl (queries: {"id","text","relevant":[ids]};
    /// "relevant": [] for a question nothing answers).
    pub set_dir: PathBuf,
    #[arg(long, value_parser = ["hybrid", "vector", "bm25"])]
    pub mode: Option<String>,
    /// Hits asked per query.
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// One JSON line of metrics on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write each query's vector and BM25 candidate lists with their scores (JSONL).
    #[arg(long, value_name = "FILE")]
    pub dump_lists: Option<PathBuf>,
    /// Do not read time expressions in queries (for comparison with them on).
    #[arg(long)]
    pub no_time_windows: bool,
    /// Return superseded and expired memories too (for comparison: facts that change without
    /// `supersedes` and `expires_at`).
    #[arg(long)]
    pub include_superseded: bool,
    #[command(flatten)]
    pub rerank: RerankFlags,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("scope")
        .required(true)
        .multiple(true)
        .args(["id", "conversation", "namespace"])
))]
pub struct ForgetArgs {
    /// One memory id.
    #[arg(long, conflicts_with = "conversation")]
    pub id: Option<String>,
    /// Every memory of one conversation.
    #[arg(long)]
    pub conversation: Option<String>,
    /// With --id or --conversation: the namespace they belong to (default "default", required
    /// with --nats-url); alone (no --id / --conversation): forget the whole namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Forget in a running deployment over NATS, on every replica and in the memory stream
    /// (`voice.forget.<namespace>`), instead of in a stopped replica's data directory. NATS
    /// server URL(s), comma-separated; connection settings come from [nats].
    #[arg(long, value_name = "URL", requires = "namespace")]
    pub nats_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// NATS server URL(s), comma-separated (overrides nats.urls).
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// No real-time sleeps (same code path).
    #[arg(long)]
    pub fast: bool,
    /// One JSON line per result, then one summary line.
    #[arg(long)]
    pub json: bool,
    /// Scripted session to replay.
    #[arg(long, default_value = "fixtures/conversations/session.jsonl")]
    pub session: PathBuf,
    /// Earlier conversations to seed memory with.
    #[arg(long, default_value = "fixtures/conversations/earlier.jsonl")]
    pub seed: PathBuf,
    #[command(flatten)]
    pub rerank: RerankFlags,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective one (TOML).
    Check,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Embedder and cross-encoder latency.
    Models {
        #[arg(long, default_value_t = 200)]
        iterations: usize,
    },
    /// Store ingest, search and reopen at scale.
    Store {
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        sizes: Vec<usize>,
    },
    /// End-to-end latency per final transcript through the pipeline with the real models.
    Pipeline(BenchPipelineArgs),
    /// Load over NATS on loopback.
    Nats(BenchNatsArgs),
    /// Conversations (partials, finals, agent replies) for minutes, in process or over NATS.
    Soak(BenchSoakArgs),
}
