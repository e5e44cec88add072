//! Applying a time expression of the query ("yesterday", "last week") to one search: read it in
//! the user's zone, then filter on the window when it holds enough memories
//! (`retrieval.time_filter_min` chunks), else rank the few inside it up (`retrieval.time_boost`).
//! A question that names nothing but the time ("what did I say this morning?") is answered by the
//! window alone: filtered whenever it holds anything, newest first.

use heed::RoTxn;
use roaring::RoaringBitmap;
use voicerag_actors::messages::{SearchRequest, TimeWindow, TimeWindowUse};

use super::hidden::Hidden;
use super::lmdb::Dbs;
use super::{RetrievalConfig, StoreError, codec};
use crate::time_expr;

/// The window a search applies.
pub(crate) struct Applied {
    pub window: TimeWindow,
    /// The query without the time phrase: what BM25 matches (the phrase's words name no fact).
    pub words: String,
    /// `Boost`: the chunks inside the window (fewer than `time_filter_min`).
    pub boosted: RoaringBitmap,
}

/// Reads the query's time expression, if reading is on and it has one, and decides its use.
/// `hidden` chunks (superseded, expired) do not count toward "enough".
pub(crate) fn apply(
    cfg: &RetrievalConfig,
    dbs: &Dbs,
    rtxn: &RoTxn,
    req: &SearchRequest,
    now_ms: i64,
    hidden: &Hidden,
) -> Result<Option<Applied>, StoreError> {
    let reading = &req.filter.time;
    if !reading.enabled.unwrap_or(cfg.time_windows) {
        return Ok(None);
    }
    let zone_name = reading
        .time_zone
        .as_deref()
        .or_else(|| cfg.time_zones.get(&req.namespace).map(String::as_str))
        .unwrap_or(&cfg.time_zone);
    let zone = time_expr::zone(zone_name)
        .ok_or_else(|| StoreError::InvalidRequest(format!("unknown time zone {zone_name:?}")))?;
    let Some(expr) = time_expr::find(&req.text, now_ms, zone) else {
        return Ok(None);
    };
    // How many live chunks the window holds, counted up to the threshold only.
    let prefix = codec::ns_key(&req.namespace);
    let lo = [prefix.as_slice(), &codec::ts_bytes(expr.start_ms)].concat();
    let hi = [prefix.as_slice(), &codec::ts_bytes(expr.end_ms)].concat();
    let range = (
        std::ops::Bound::Included(lo.as_slice()),
        std::ops::Bound::Excluded(hi.as_slice()),
    );
    let mut inside = RoaringBitmap::new();
    for entry in dbs.times.range(rtxn, &range)? {
        let (key, _) = entry?;
        let chunk = codec::u32_from(&key[key.len() - 4..])?;
        if !hidden.contains(chunk) {
            inside.insert(chunk);
            if inside.len() >= cfg.time_filter_min as u64 {
                break;
            }
        }
    }
    let words = expr.strip_from(&req.text);
    let only = !inside.is_empty() && time_expr::asks_only_time(&words);
    let filter = only || inside.len() >= cfg.time_filter_min as u64;
    Ok(Some(Applied {
        words,
        window: TimeWindow {
            phrase: expr.phrase,
            start_ms: expr.start_ms,
            end_ms: expr.end_ms,
            time_zone: zone_name.to_string(),
            applied_as: if only {
                TimeWindowUse::Only
            } else if filter {
                TimeWindowUse::Filter
            } else {
                TimeWindowUse::Boost
            },
        },
        boosted: if filter { RoaringBitmap::new() } else { inside },
    }))
}
