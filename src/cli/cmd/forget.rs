//! `voicerag forget`: delete memories by id, conversation or namespace.

use std::process::ExitCode;

use voicerag::config::Config;
use voicerag::engines::{self, StoreAccess};
use voicerag::models::SentenceEmbedder;

use crate::cli::UsageError;
use crate::cli::args::ForgetArgs;

pub async fn forget(config: &Config, args: &ForgetArgs) -> anyhow::Result<ExitCode> {
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
