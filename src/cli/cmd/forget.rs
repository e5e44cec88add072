//! `voicerag forget`: delete memories by id, conversation or namespace, in a stopped replica's data
//! directory, or with `--nats-url` in a running deployment (every replica and the memory stream).

use std::process::ExitCode;

use voicerag::bus::{Forget, ForgetScope, request_forget};
use voicerag::config::Config;
use voicerag::engines::{self, StoreAccess};
use voicerag::models::SentenceEmbedder;

use crate::cli::UsageError;
use crate::cli::args::ForgetArgs;

pub async fn forget(config: &Config, args: &ForgetArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.nats_url {
        return forget_over_nats(config, args, url).await;
    }
    let embedder = SentenceEmbedder::load(&config.runtime, &config.embedder)?;
    let store = engines::open_store(config, &embedder, StoreAccess::ReadWrite)?;
    let ns = args.namespace.clone().unwrap_or_else(|| "default".into());
    let removed = if let Some(id) = &args.id {
        store.delete_ids(&ns, std::slice::from_ref(id))?
    } else if let Some(conversation) = &args.conversation {
        store.delete_conversation(&ns, conversation)?
    } else if let Some(ns) = &args.namespace {
        store.delete_namespace(ns)?
    } else {
        return Err(UsageError("forget needs --id, --conversation or --namespace".into()).into());
    };
    store.flush()?;
    eprintln!("forget: {removed} memories removed");
    Ok(ExitCode::SUCCESS)
}

/// Sends `voice.forget.<namespace>` and prints the reply (one JSON line on stdout).
async fn forget_over_nats(
    config: &Config,
    args: &ForgetArgs,
    url: &str,
) -> anyhow::Result<ExitCode> {
    let Some(namespace) = args.namespace.clone() else {
        return Err(UsageError("forget --nats-url needs --namespace".into()).into());
    };
    let scope = match (&args.id, &args.conversation) {
        (Some(id), _) => ForgetScope::Id(id.clone()),
        (None, Some(c)) => ForgetScope::Conversation(c.clone()),
        (None, None) => ForgetScope::Namespace,
    };
    let mut nats = config.nats.clone();
    nats.urls = url.split(',').map(|s| s.trim().to_string()).collect();
    let reply = request_forget(&nats, &Forget { namespace, scope }).await?;
    println!("{reply}");
    if let Some(error) = reply.get("error").and_then(|e| e.as_str()) {
        eprintln!("forget: {error}");
        return Ok(ExitCode::FAILURE);
    }
    eprintln!(
        "forget: {} memories forgotten by replica {}, {} stream messages purged; every replica \
         applies the forget in stream order",
        reply["forgotten"], reply["replica"], reply["stream_purged"]
    );
    Ok(ExitCode::SUCCESS)
}
