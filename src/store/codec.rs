//! Byte layouts of LMDB keys and values.
//!
//! Strings in keys are length-prefixed, so a namespace, conversation or id may hold any byte
//! (even `\0`) and a key prefix never matches a longer name by accident. Integers are big-endian
//! (timestamps with the sign bit flipped) so LMDB's byte order is numeric order.

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Longest namespace, id, conversation or speaker, in bytes: keeps every LMDB key under its
/// 511-byte limit. The bus validates names with the same constant.
pub use voicerag_actors::messages::MAX_NAME_BYTES;

/// Appends a length-prefixed string.
pub fn push_str(buf: &mut Vec<u8>, s: &str) {
    // MAX_NAME_BYTES is enforced before anything is encoded, so the length fits a u8.
    buf.push(s.len() as u8);
    buf.extend_from_slice(s.as_bytes());
}

/// Reads a length-prefixed string at `pos`, advancing it.
pub fn read_str<'a>(bytes: &'a [u8], pos: &mut usize) -> Result<&'a str, StoreError> {
    let len = *bytes.get(*pos).ok_or_else(|| corrupt("key truncated"))? as usize;
    let start = *pos + 1;
    let slice = bytes
        .get(start..start + len)
        .ok_or_else(|| corrupt("key truncated"))?;
    *pos = start + len;
    std::str::from_utf8(slice).map_err(|_| corrupt("key is not UTF-8"))
}

/// Timestamp bytes that sort numerically.
pub fn ts_bytes(ts_ms: i64) -> [u8; 8] {
    ((ts_ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// `(namespace)`: prefix of everything a namespace owns.
pub fn ns_key(ns: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + 1);
    push_str(&mut k, ns);
    k
}

/// `(namespace, name)`: memory keys (name = id) and bitmap keys (name = conversation or speaker).
pub fn ns_name_key(ns: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + name.len() + 2);
    push_str(&mut k, ns);
    push_str(&mut k, name);
    k
}

/// Splits a memory key into (namespace, id).
pub fn split_memory_key(key: &[u8]) -> Result<(&str, &str), StoreError> {
    let mut pos = 0;
    let ns = read_str(key, &mut pos)?;
    let id = read_str(key, &mut pos)?;
    Ok((ns, id))
}

/// `(namespace, ts, chunk)`: the time index used by time-window filters.
pub fn time_key(ns: &str, ts_ms: i64, chunk: u32) -> Vec<u8> {
    let mut k = ns_key(ns);
    k.extend_from_slice(&ts_bytes(ts_ms));
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

/// `(namespace, expires_at, chunk)`: when a chunk's memory leaves default results.
pub fn expiry_key(ns: &str, expires_at_ms: i64, chunk: u32) -> Vec<u8> {
    time_key(ns, expires_at_ms, chunk)
}

/// `(namespace, conversation, ts, id)`: a conversation's turns in time order.
pub fn turn_key(ns: &str, conversation: &str, ts_ms: i64, id: &str) -> Vec<u8> {
    let mut k = ns_name_key(ns, conversation);
    k.extend_from_slice(&ts_bytes(ts_ms));
    push_str(&mut k, id);
    k
}

/// The id at the end of a turn key.
pub fn turn_key_id(key: &[u8]) -> Result<&str, StoreError> {
    let mut pos = 0;
    read_str(key, &mut pos)?;
    read_str(key, &mut pos)?;
    pos += 8;
    read_str(key, &mut pos)
}

/// `(arroy index, chunk)`: pending vectors and pending vector deletions.
pub fn index_chunk_key(index: u16, chunk: u32) -> [u8; 6] {
    let mut k = [0u8; 6];
    k[..2].copy_from_slice(&index.to_be_bytes());
    k[2..].copy_from_slice(&chunk.to_be_bytes());
    k
}

pub fn split_index_chunk_key(key: &[u8]) -> Result<(u16, u32), StoreError> {
    if key.len() != 6 {
        return Err(corrupt("bad (index, chunk) key"));
    }
    Ok((
        u16::from_be_bytes([key[0], key[1]]),
        u32::from_be_bytes([key[2], key[3], key[4], key[5]]),
    ))
}

pub fn u32_from(bytes: &[u8]) -> Result<u32, StoreError> {
    let arr: [u8; 4] = bytes.try_into().map_err(|_| corrupt("bad u32"))?;
    Ok(u32::from_be_bytes(arr))
}

pub fn u64_from(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| corrupt("bad u64"))?;
    Ok(u64::from_be_bytes(arr))
}

pub fn vector_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub fn vector_from(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn bitmap_from(bytes: &[u8]) -> Result<RoaringBitmap, StoreError> {
    RoaringBitmap::deserialize_unchecked_from(bytes).map_err(|e| corrupt(&format!("bitmap: {e}")))
}

pub fn bitmap_bytes(b: &RoaringBitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.serialized_size());
    // Writing into a Vec cannot fail.
    let _ = b.serialize_into(&mut out);
    out
}

/// A stored memory (the key holds namespace and id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRecord {
    pub conversation: String,
    pub speaker: String,
    pub text: String,
    pub ts_ms: i64,
    /// Chunk ids, in text order.
    pub chunks: Vec<u32>,
    /// Ids (same namespace) this memory replaced. Absent in schema-1 records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<String>,
    /// Unix ms after which it leaves default results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    /// The memory that replaced this one, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

/// A stored chunk: which memory it belongs to and, for long memories, its own text.
/// Binary (read for every search candidate): `[key len u16][memory key][text]`, no text
/// meaning the chunk is the whole memory text (not stored twice).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord<'a> {
    /// The memory key `(namespace, id)`.
    pub memory: &'a [u8],
    pub text: Option<&'a str>,
}

impl<'a> ChunkRecord<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let text = self.text.unwrap_or("");
        let mut out = Vec::with_capacity(2 + self.memory.len() + text.len());
        out.extend_from_slice(&(self.memory.len() as u16).to_be_bytes());
        out.extend_from_slice(self.memory);
        out.extend_from_slice(text.as_bytes());
        out
    }

    pub fn decode(bytes: &'a [u8]) -> Result<Self, StoreError> {
        let len = bytes
            .get(..2)
            .ok_or_else(|| corrupt("chunk record truncated"))?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        let memory = bytes
            .get(2..2 + len)
            .ok_or_else(|| corrupt("chunk record truncated"))?;
        let rest = &bytes[2 + len..];
        let text = if rest.is_empty() {
            None
        } else {
            Some(std::str::from_utf8(rest).map_err(|_| corrupt("chunk text is not UTF-8"))?)
        };
        Ok(Self { memory, text })
    }
}

/// One entry of the operation log that BM25 replays (the LMDB sequence is its key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    /// These chunks were stored: index them if they still exist.
    Add(Vec<u32>),
    /// These chunks were deleted.
    Delete(Vec<u32>),
    /// Every chunk changed (reindex): rebuild BM25 from LMDB.
    Rebuild,
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Records hold only strings, integers and vectors: serialisation cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(&format!("{what}: {e}")))
}

pub fn corrupt(msg: &str) -> StoreError {
    StoreError::Corrupt(msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_numerically_as_bytes() {
        let ts = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for w in ts.windows(2) {
            assert!(ts_bytes(w[0]) < ts_bytes(w[1]), "{} vs {}", w[0], w[1]);
        }
    }

    #[test]
    fn schema_1_memory_records_still_decode() {
        // A record as schema 1 wrote it: no supersedes, expiry or superseded_by.
        let old = br#"{"conversation":"c","speaker":"user","text":"hi","ts_ms":5,"chunks":[7]}"#;
        let rec: MemoryRecord = decode(old, "memory record").unwrap();
        assert_eq!(rec.chunks, vec![7]);
        assert!(rec.supersedes.is_empty() && rec.expires_at_ms.is_none());
        assert!(rec.superseded_by.is_none());
        // And a record without the new fields is written as schema 1 wrote it.
        assert_eq!(encode(&rec), old.to_vec());
    }

    #[test]
    fn chunk_records_round_trip() {
        let key = ns_name_key("ns", "id/1");
        for text in [None, Some("a chunk")] {
            let rec = ChunkRecord { memory: &key, text };
            let bytes = rec.encode();
            assert_eq!(ChunkRecord::decode(&bytes).unwrap(), rec);
        }
        assert!(ChunkRecord::decode(&[0, 9, 1]).is_err());
    }

    #[test]
    fn length_prefix_keeps_names_apart() {
        // "ab" + "c" and "a" + "bc" must not share a key.
        assert_ne!(ns_name_key("ab", "c"), ns_name_key("a", "bc"));
        // A namespace key is not a prefix of a longer namespace's key.
        assert!(!ns_name_key("alice2", "x").starts_with(&ns_key("alice")));
        let k = ns_name_key("ns\0x", "id/1");
        assert_eq!(split_memory_key(&k).unwrap(), ("ns\0x", "id/1"));
        let t = turn_key("n", "c", -3, "c/7");
        assert_eq!(turn_key_id(&t).unwrap(), "c/7");
    }
}
