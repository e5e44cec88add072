//! What default results leave out, as stored: memories another memory superseded, and memories
//! with an `expires_at`. Both stay stored (and `include_superseded` brings them back); forget
//! deletes. [`super::hidden`] keeps what this reads in RAM.

use heed::RoTxn;
use roaring::RoaringBitmap;

use super::StoreError;
use super::codec;
use super::lmdb::Dbs;

/// Namespace `ns`'s superseded chunks, and its chunks that expire as `(expires_at_ms, chunk)`
/// sorted by expiry (then chunk).
pub(crate) fn load(
    dbs: &Dbs,
    rtxn: &RoTxn,
    ns: &str,
) -> Result<(RoaringBitmap, Vec<(i64, u32)>), StoreError> {
    let prefix = codec::ns_key(ns);
    let superseded = match dbs.superseded.get(rtxn, &prefix)? {
        Some(b) => codec::bitmap_from(b)?,
        None => RoaringBitmap::new(),
    };
    let mut expiries = Vec::new();
    // Keys are `(ns, expires_at, chunk)` with big-endian, sign-flipped times: LMDB's order is
    // expiry order.
    for entry in dbs.expiries.prefix_iter(rtxn, &prefix)? {
        let (key, _) = entry?;
        if key.len() != prefix.len() + 12 {
            return Err(codec::corrupt("expiry key"));
        }
        let ts = codec::u64_from(&key[prefix.len()..prefix.len() + 8])? ^ (1 << 63);
        expiries.push((ts as i64, codec::u32_from(&key[key.len() - 4..])?));
    }
    Ok((superseded, expiries))
}
