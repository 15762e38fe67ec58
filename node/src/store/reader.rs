//! Reads of the store, on a blocking thread (never a tokio worker): what
//! [`Store::read`](super::Store::read) and [`Store::peek`](super::Store::peek) hand their
//! closures.

use liaison_protocol::merkle::{Hash, MerkleError, SubtreeHashes};
use liaison_protocol::{Digest, MessageId, NodeId};

use super::keys::{
    K_ROSTER, grant_key, key_digest, key_u64, node_key, parse_out_key, parse_retention_key,
    parse_u64_suffix, parse_wake_key, prefixed, seen_key,
};
use super::records::{
    CaseRecord, MessageRecord, OfficerRecord, Queued, StoredOut, Witnessed, decode_record,
};
use crate::error::StoreError;

/// A view of the store's applied state.
#[derive(Debug)]
pub struct Reader<'a> {
    pub(super) db: &'a sled::Db,
    pub(super) shared: &'a super::Shared,
}

impl Reader<'_> {
    fn record<T: for<'de> serde::Deserialize<'de>>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.db.get(key)? {
            None => Ok(None),
            Some(v) => decode_record(key, &v).map(Some),
        }
    }

    /// A message record, with its envelope.
    pub fn message(&self, digest: &Digest) -> Result<Option<MessageRecord>, StoreError> {
        match self.record::<MessageRecord>(&key_digest(b"m/", digest))? {
            None => Ok(None),
            Some(rec) => self.resolve(rec).map(Some),
        }
    }

    /// Fills in the envelope of a record that keeps it in its log entry.
    fn resolve(&self, mut rec: MessageRecord) -> Result<MessageRecord, StoreError> {
        if rec.envelope.is_empty() {
            if let Some(i) = rec.log_index {
                let entry = self.db.get(key_u64(b"l/", i))?.map(|v| v.to_vec());
                rec.envelope = super::envelope_of_entry(i, entry)?;
            }
        }
        Ok(rec)
    }

    /// The digests of the messages with this id (normally one).
    pub fn digests_for_id(&self, id: &MessageId) -> Result<Vec<Digest>, StoreError> {
        let mut prefix = b"x/".to_vec();
        prefix.extend_from_slice(&id.0);
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, _) = kv?;
            if let Some(d) = k.get(18..50).and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                out.push(Digest(d));
            }
        }
        Ok(out)
    }

    /// A body, unless purged.
    pub fn body(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(rec) = self.record::<MessageRecord>(&key_digest(b"m/", digest))? {
            if rec.body.is_some() {
                return Ok(rec.body);
            }
        }
        Ok(self.db.get(key_digest(b"b/", digest))?.map(|v| v.to_vec()))
    }

    /// Bodies whose retention ends before `now`, oldest due first, at most `limit`:
    /// (due, digest).
    pub fn bodies_due(&self, now: u64, limit: usize) -> Result<Vec<(u64, Digest)>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .db
            .range(b"rb/".to_vec()..key_u64(b"rb/", now.saturating_add(1)))
            .take(limit)
        {
            let (k, _) = kv?;
            if let Some(e) = parse_retention_key(&k) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Where the walk of the log for bodies whose retention ended has got to.
    pub fn purge_cursor(&self) -> Result<u64, StoreError> {
        Ok(self
            .db
            .get(super::keys::K_PURGE)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// The dedupe index.
    pub fn seen(&self, from: &NodeId, id: &MessageId) -> Result<Option<Digest>, StoreError> {
        Ok(self
            .db
            .get(seen_key(from, id))?
            .and_then(|v| <[u8; 32]>::try_from(&v[..]).ok())
            .map(Digest))
    }

    /// Every outbox entry, per hop, in key order (priority, then FIFO).
    pub fn outbox(&self) -> Result<Vec<(NodeId, Queued)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(b"o/") {
            let (k, v) = kv?;
            let (hop, priority, seq) = parse_out_key(&k).ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                problem: "bad outbox key".to_owned(),
            })?;
            let stored: StoredOut = decode_record(&k, &v)?;
            out.push((
                hop,
                Queued {
                    key: k.to_vec(),
                    priority,
                    seq,
                    item: stored.item,
                    expires_at: stored.expires_at,
                    payload: None,
                },
            ));
        }
        Ok(out)
    }

    /// Inbox entries not yet taken by the application: (seq, digest), oldest first.
    pub fn inbox(&self, limit: usize) -> Result<Vec<(u64, Digest)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(b"i/").take(limit) {
            let (k, v) = kv?;
            let seq = parse_u64_suffix(&k, 2);
            let d = <[u8; 32]>::try_from(&v[..]).ok();
            if let (Some(seq), Some(d)) = (seq, d) {
                out.push((seq, Digest(d)));
            }
        }
        Ok(out)
    }

    /// Every message record, oldest first.
    pub fn messages(&self) -> Result<Vec<(Digest, MessageRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(b"m/") {
            let (k, v) = kv?;
            let d = <[u8; 32]>::try_from(&k[2..]).map_err(|_| StoreError::Corrupt {
                key: hex::encode(&k),
                problem: "bad message key".to_owned(),
            })?;
            let rec: MessageRecord = decode_record(&k, &v)?;
            out.push((Digest(d), self.resolve(rec)?));
        }
        out.sort_by_key(|(_, r)| r.stored_at);
        Ok(out)
    }

    /// An officer record.
    pub fn officer(&self, id: &str) -> Result<Option<OfficerRecord>, StoreError> {
        self.record(&prefixed(b"u/", id.as_bytes()))
    }

    /// Every officer record, by id.
    pub fn officers(&self) -> Result<Vec<(String, OfficerRecord)>, StoreError> {
        self.scan_records(b"u/")
    }

    /// A case record.
    pub fn case(&self, case_ref: &str) -> Result<Option<CaseRecord>, StoreError> {
        self.record(&prefixed(b"k/", case_ref.as_bytes()))
    }

    /// Every case record, by reference.
    pub fn cases(&self) -> Result<Vec<(String, CaseRecord)>, StoreError> {
        self.scan_records(b"k/")
    }

    /// Cases the ticker must look at by `now`, at most `limit`: (wake time, case ref).
    pub fn cases_due(&self, now: u64, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .db
            .range(b"t/".to_vec()..key_u64(b"t/", now.saturating_add(1)))
            .take(limit)
        {
            let (k, _) = kv?;
            if let Some(e) = parse_wake_key(&k) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Whether `provider` granted passing message `message` (hex id) on to `recipient`.
    pub fn granted(
        &self,
        message: &str,
        provider: &NodeId,
        recipient: &NodeId,
    ) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get(grant_key(message, provider, recipient))?
            .is_some())
    }

    fn scan_records<T: for<'de> serde::Deserialize<'de>>(
        &self,
        prefix: &[u8],
    ) -> Result<Vec<(String, T)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(prefix) {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((name, decode_record(&k, &v)?));
        }
        Ok(out)
    }

    /// A roster this node applied, by the SHA-256 of its bytes.
    pub fn roster_by_digest(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(prefixed(b"r/", &digest.0))?.map(|v| v.to_vec()))
    }

    /// The authority keys this node has trusted, oldest first (empty: only the configured
    /// one).
    pub fn authorities(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let Some(v) = self.db.get(super::keys::K_AUTHORITY)? else {
            return Ok(Vec::new());
        };
        if v.len() % 32 != 0 {
            return Err(StoreError::Corrupt {
                key: "meta/authority".into(),
                problem: format!("{} bytes, not a list of 32-byte keys", v.len()),
            });
        }
        Ok(v.chunks(32)
            .filter_map(|c| <[u8; 32]>::try_from(c).ok())
            .collect())
    }

    /// Every roster this node applied, as stored (`r/`).
    pub fn rosters(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.db
            .scan_prefix(b"r/")
            .values()
            .map(|v| Ok(v?.to_vec()))
            .collect()
    }

    /// The roster in force, if one was stored.
    pub fn roster(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(K_ROSTER)?.map(|v| v.to_vec()))
    }

    /// Number of committed (durable) audit entries, now.
    pub fn log_len(&self) -> u64 {
        self.shared.lock_committed().counters.next_log
    }

    /// Audit entries in `[from, to)` (only committed ones: `to` is cut at the log's length).
    pub fn log_entries(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let to = to.min(self.log_len());
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        for kv in self.db.range(key_u64(b"l/", from)..key_u64(b"l/", to)) {
            let (k, v) = kv?;
            let idx = parse_u64_suffix(&k, 2).unwrap_or(u64::MAX);
            out.push((idx, v.to_vec()));
        }
        Ok(out)
    }

    /// Stored leaf hashes in `[from, to)`.
    pub fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.range(key_u64(b"h/", from)..key_u64(b"h/", to)) {
            let (k, v) = kv?;
            out.push(
                <[u8; 32]>::try_from(&v[..]).map_err(|_| StoreError::Corrupt {
                    key: hex::encode(&k),
                    problem: "leaf hash is not 32 bytes".into(),
                })?,
            );
        }
        Ok(out)
    }

    /// As witness: the last checkpoint of `origin` this node cosigned.
    pub fn witnessed(&self, origin: &str) -> Result<Option<Witnessed>, StoreError> {
        self.record(&prefixed(b"w/", origin.as_bytes()))
    }

    /// As log: the last size `witness` cosigned (0 if never).
    pub fn cosigned_size(&self, witness: &NodeId) -> Result<u64, StoreError> {
        Ok(self
            .db
            .get(prefixed(b"ws/", witness.as_str().as_bytes()))?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// The stored checkpoint of exactly `size`, if any.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .get(key_u64(b"c/", size))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The newest checkpoint (size, signed note), if any.
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        match self.db.scan_prefix(b"c/").next_back() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv?;
                let size = parse_u64_suffix(&k, 2).unwrap_or(0);
                Ok(Some((size, String::from_utf8_lossy(&v).into_owned())))
            }
        }
    }

    /// The log's tree as stored: leaf hashes and interior nodes, for proofs in O(log n).
    pub fn tree(&self) -> Tree<'_> {
        Tree { db: self.db }
    }
}

/// Interior nodes are stored at every `TILE`-th height only (as tiles do): a subtree of
/// another height is folded from at most `2^(TILE-1)` stored nodes below it.
pub(crate) const TILE: u32 = 4;

/// Whether interior nodes of `height` are stored.
pub(crate) fn stored_height(height: u32) -> bool {
    height > 0 && height % TILE == 0
}

/// The hash of a perfect tree over `parts` (a power of two of them).
fn fold_perfect(mut parts: Vec<Hash>) -> Hash {
    while parts.len() > 1 {
        parts = parts
            .chunks(2)
            .map(|p| liaison_protocol::merkle::node_hash(&p[0], &p[p.len() - 1]))
            .collect();
    }
    parts
        .first()
        .copied()
        .unwrap_or(liaison_protocol::merkle::EMPTY_ROOT)
}

/// The stored nodes of the log's Merkle tree, as a [`SubtreeHashes`] source: leaves under
/// `h/`, every fourth level of interior nodes under `n/`; any perfect subtree costs one range
/// read of at most eight hashes.
#[derive(Debug, Clone, Copy)]
pub struct Tree<'a> {
    pub(super) db: &'a sled::Db,
}

impl SubtreeHashes for Tree<'_> {
    type Error = StoreError;

    fn subtree(&self, start: u64, end: u64) -> Result<Hash, StoreError> {
        let width = end
            .checked_sub(start)
            .filter(|w| w.is_power_of_two())
            .ok_or_else(|| {
                StoreError::from(MerkleError::RangeOutOfBounds {
                    start,
                    end,
                    size: end,
                })
            })?;
        let height = width.trailing_zeros();
        // The stored level at or below `height`, and how many of its nodes make the subtree.
        let base = height - height % TILE;
        let count = 1u64 << (height - base);
        let first = start >> base;
        let (from, to) = if base == 0 {
            (key_u64(b"h/", first), key_u64(b"h/", first + count))
        } else {
            (node_key(base, first), node_key(base, first + count))
        };
        let mut parts = Vec::with_capacity(count as usize);
        for kv in self.db.range(from.clone()..to) {
            let (k, v) = kv?;
            parts.push(
                <[u8; 32]>::try_from(&v[..]).map_err(|_| StoreError::Corrupt {
                    key: hex::encode(&k),
                    problem: "tree node is not 32 bytes".into(),
                })?,
            );
        }
        if parts.len() as u64 != count {
            return Err(StoreError::Corrupt {
                key: hex::encode(&from),
                problem: format!("tree nodes for entries {start}..{end} are missing"),
            });
        }
        Ok(fold_perfect(parts))
    }
}
