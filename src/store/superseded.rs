//! What default results leave out: memories another memory superseded, and memories past their
//! `expires_at`. Both stay stored (and `include_superseded` brings them back); forget deletes.

use heed::RoTxn;
use roaring::RoaringBitmap;

use super::StoreError;
use super::codec;
use super::lmdb::Dbs;

/// Chunks of namespace `ns` left out of default results at `now_ms`.
pub(crate) fn hidden_chunks(
    dbs: &Dbs,
    rtxn: &RoTxn,
    ns: &str,
    now_ms: i64,
) -> Result<RoaringBitmap, StoreError> {
    let mut hidden = match dbs.superseded.get(rtxn, &codec::ns_key(ns))? {
        Some(b) => codec::bitmap_from(b)?,
        None => RoaringBitmap::new(),
    };
    let prefix = codec::ns_key(ns);
    let lo = [prefix.as_slice(), &codec::ts_bytes(i64::MIN)].concat();
    // Expired at `now_ms` itself: an expiry is the first instant it no longer holds.
    let hi = [
        prefix.as_slice(),
        &codec::ts_bytes(now_ms.saturating_add(1)),
    ]
    .concat();
    let range = (
        std::ops::Bound::Included(lo.as_slice()),
        std::ops::Bound::Excluded(hi.as_slice()),
    );
    for entry in dbs.expiries.range(rtxn, &range)? {
        let (key, _) = entry?;
        hidden.insert(codec::u32_from(&key[key.len() - 4..])?);
    }
    Ok(hidden)
}
