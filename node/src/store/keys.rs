//! The key layout (docs/architecture.md, "Store layout"). Integers in keys are 8 bytes
//! big-endian so keys sort numerically.

use liaison_protocol::{Digest, MessageId, NodeId, Priority};

pub(super) const K_SCHEMA: &[u8] = b"meta/schema";
pub(super) const K_COUNTERS: &[u8] = b"meta/counters";
pub(super) const K_ROSTER: &[u8] = b"meta/roster";
/// The authority keys this node has trusted, oldest first, 32 bytes each; the last is the one
/// in force (absent: only the configured one).
pub(super) const K_AUTHORITY: &[u8] = b"meta/authority";
/// Schema 1 only: set once every interior node of the log's tree is stored under `n/` (the
/// migration to schema 2 builds them where it is missing, and removes it).
pub(super) const K_TREE: &[u8] = b"meta/tree";
/// Set once every case is in the `t/` and `pg/` indexes.
pub(super) const K_CASES: &[u8] = b"meta/cases";
/// The index of the next audit entry the walk for bodies whose retention ended looks at.
pub(super) const K_PURGE: &[u8] = b"meta/purge";
/// The body retention (ms) the `rb/` index was built with; another value rebuilds it.
pub(super) const K_RETENTION: &[u8] = b"meta/retention";

pub(super) fn key_u64(prefix: &[u8], n: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

pub(super) fn key_digest(prefix: &[u8], d: &Digest) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&d.0);
    k
}

pub(super) fn prefixed(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(name);
    k
}

/// `s/<sender>\0<message id>`: the dedupe index.
pub(super) fn seen_key(from: &NodeId, id: &MessageId) -> Vec<u8> {
    let mut k = b"s/".to_vec();
    k.extend_from_slice(from.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&id.0);
    k
}

/// `o/<hop>\0<3 - priority><seq>`: the outbox, highest priority first, then FIFO.
pub(super) fn out_key(hop: &NodeId, priority: Priority, seq: u64) -> Vec<u8> {
    let mut k = b"o/".to_vec();
    k.extend_from_slice(hop.as_str().as_bytes());
    k.push(0);
    k.push(3 - priority as u8);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn parse_out_key(k: &[u8]) -> Option<(NodeId, Priority, u64)> {
    let rest = k.strip_prefix(b"o/")?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let hop = NodeId::new(std::str::from_utf8(&rest[..nul]).ok()?).ok()?;
    let p = *rest.get(nul + 1)?;
    let priority = Priority::from_u64(3u64.checked_sub(u64::from(p))?)?;
    let seq = u64::from_be_bytes(rest.get(nul + 2..nul + 10)?.try_into().ok()?);
    Some((hop, priority, seq))
}

/// `n/<height u8><index>`: the interior node of the log's tree at `height` (≥ 1) over
/// leaves `index·2^height .. (index+1)·2^height`. Height 0 is the leaf hash under `h/`.
pub(super) fn node_key(height: u32, index: u64) -> Vec<u8> {
    let mut k = b"n/".to_vec();
    k.push(u8::try_from(height).unwrap_or(u8::MAX));
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// `t/<wake><case ref>`: cases the ticker must look at, by time.
pub(super) fn wake_key(at: u64, case_ref: &str) -> Vec<u8> {
    let mut k = key_u64(b"t/", at);
    k.extend_from_slice(case_ref.as_bytes());
    k
}

pub(super) fn parse_wake_key(k: &[u8]) -> Option<(u64, String)> {
    let rest = k.strip_prefix(b"t/")?;
    let at = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let case_ref = std::str::from_utf8(rest.get(8..)?).ok()?.to_owned();
    Some((at, case_ref))
}

/// `pg/<message id hex>\0<provider>\0<recipient>`: granted onward-passing permissions.
pub(super) fn grant_key(message: &str, provider: &NodeId, recipient: &NodeId) -> Vec<u8> {
    let mut k = b"pg/".to_vec();
    k.extend_from_slice(message.as_bytes());
    k.push(0);
    k.extend_from_slice(provider.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(recipient.as_str().as_bytes());
    k
}

/// `rb/<due><digest>`: bodies by the time their retention ends.
pub(super) fn retention_key(due: u64, digest: &Digest) -> Vec<u8> {
    let mut k = key_u64(b"rb/", due);
    k.extend_from_slice(&digest.0);
    k
}

pub(super) fn parse_retention_key(k: &[u8]) -> Option<(u64, Digest)> {
    let rest = k.strip_prefix(b"rb/")?;
    let due = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let d = <[u8; 32]>::try_from(rest.get(8..40)?).ok()?;
    Some((due, Digest(d)))
}

pub(super) fn parse_u64_suffix(k: &[u8], prefix_len: usize) -> Option<u64> {
    k.get(prefix_len..prefix_len + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}
