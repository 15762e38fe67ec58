//! One change, and the group of changes the writer commits together.
//!
//! A [`Txn`] reads through its own writes, then the writes of the changes before it in the
//! same group, then sled (which holds every group applied before, durable or still being
//! flushed; the changes of this group are answered only after a flush that covers them all,
//! so what they read from an earlier group is durable by then). Its writes stay
//! its own until it returns `Ok`; a change that fails leaves nothing of itself behind. Audit
//! entries get their indices from the group's counters, and their leaves (with the interior
//! nodes they complete) join the group's frontier only when the change is kept.

use std::collections::HashMap;

use liaison_protocol::audit::{Entry, EntryKind};
use liaison_protocol::merkle::{self, Frontier, Hash};
use liaison_protocol::{Digest, MessageId, NodeId, Priority, Receipt};

use super::keys::{
    K_AUTHORITY, K_COUNTERS, K_ROSTER, grant_key, key_digest, key_u64, node_key, out_key, prefixed,
    retention_key, seen_key, wake_key,
};
use super::records::{
    CaseIndex, CaseRecord, Counters, MessageRecord, OfficerRecord, OutItem, Queued, StoredOut,
    Witnessed, decode_record, encode_record,
};
use crate::error::StoreError;

type Ops = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// The changes of one group commit, merged.
pub(super) struct Group<'a> {
    db: &'a sled::Db,
    node: &'a NodeId,
    retention_ms: u64,
    overlay: Ops,
    pub(super) counters: Counters,
    pub(super) frontier: Frontier,
    /// A checkpoint was stored: the log head is synced with the flush.
    pub(super) checkpoint: bool,
    /// Changes kept.
    pub(super) kept: usize,
    /// Receipts the kept changes gave, signed together when the group is sealed.
    receipts: Vec<PendingReceipt>,
}

/// A receipt a change gave, waiting for its group's batch signature (docs/protocol.md §4.3a).
struct PendingReceipt {
    receipt: Receipt,
    digest: Digest,
    slot: ProofSlot,
}

/// Where a batched receipt's proof appears once its group is sealed; read it only after the
/// change is durable.
#[derive(Debug, Clone, Default)]
pub struct ProofSlot(std::sync::Arc<std::sync::OnceLock<Vec<u8>>>);

impl ProofSlot {
    /// The proof (the bytes of the receipt, §4.3a), once the group was sealed.
    pub fn get(&self) -> Option<Vec<u8>> {
        self.0.get().cloned()
    }
}

/// Signs the receipts of one group as one batch: given the receipts in order, the signed
/// batch and each receipt's proof, in the same order.
pub struct ReceiptSealer(pub Box<dyn Fn(Vec<Receipt>) -> SealedBatch + Send + Sync>);

/// A signed receipt batch, and the proof of each of its receipts in order.
pub type SealedBatch = (Vec<u8>, Vec<Vec<u8>>);

impl std::fmt::Debug for ReceiptSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptSealer")
    }
}

impl<'a> Group<'a> {
    pub(super) fn new(
        db: &'a sled::Db,
        node: &'a NodeId,
        retention_ms: u64,
        counters: Counters,
        frontier: Frontier,
    ) -> Self {
        Self {
            db,
            node,
            retention_ms,
            overlay: HashMap::new(),
            counters,
            frontier,
            checkpoint: false,
            kept: 0,
            receipts: Vec::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.db.get(key)?.map(|v| v.to_vec())),
        }
    }

    /// A change on top of what the group holds so far.
    pub(super) fn txn(&self, now: u64) -> Txn<'_> {
        Txn {
            group: self,
            ops: HashMap::new(),
            counters: self.counters,
            now,
            leaves: Vec::new(),
            checkpoint: false,
            receipts: Vec::new(),
        }
    }

    /// Keeps a change that returned `Ok`.
    pub(super) fn merge(&mut self, parts: TxnParts) -> Result<(), StoreError> {
        self.receipts.extend(parts.receipts);
        self.overlay.extend(parts.ops);
        self.counters = parts.counters;
        self.checkpoint |= parts.checkpoint;
        let overlay = &mut self.overlay;
        for leaf in parts.leaves {
            self.frontier
                .push_with_nodes(leaf, |height, index, hash| {
                    if super::reader::stored_height(height) {
                        overlay.insert(node_key(height, index), Some(hash.to_vec()));
                    }
                })
                .map_err(|e| StoreError::Db(e.to_string()))?;
        }
        self.kept += 1;
        Ok(())
    }

    /// Every key the group's batch writes or removes.
    pub(super) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.overlay
            .keys()
            .map(Vec::as_slice)
            .chain(std::iter::once(K_COUNTERS))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.overlay.is_empty()
    }

    /// Signs the receipts the group's changes gave as one batch (`sealer`), at `now`: each
    /// message record gets its receipt's proof, each change's [`ProofSlot`] its bytes, and
    /// the batch is logged once (kind 3). Nothing to sign: nothing done.
    pub(super) fn seal(
        &mut self,
        sealer: Option<&ReceiptSealer>,
        now: u64,
    ) -> Result<(), StoreError> {
        if self.receipts.is_empty() {
            return Ok(());
        }
        let Some(sealer) = sealer else {
            return Err(StoreError::Db(
                "a receipt was batched but no receipt signer is set".into(),
            ));
        };
        let pending = std::mem::take(&mut self.receipts);
        let (batch, proofs) = (sealer.0)(pending.iter().map(|p| p.receipt.clone()).collect());
        if proofs.len() != pending.len() {
            return Err(StoreError::Db(
                "the receipt signer returned too few proofs".into(),
            ));
        }
        let mut t = self.txn(now);
        for (p, proof) in pending.into_iter().zip(proofs) {
            // The record as the group left it (a later change may have touched it); its
            // envelope stays in the log entry that holds it.
            if let Some(mut rec) = t.message_record(&p.digest)? {
                rec.proof = Some(proof.clone());
                t.put_message(&p.digest, &rec);
            }
            let _ = p.slot.0.set(proof);
        }
        t.log(EntryKind::ReceiptSent, batch);
        let parts = t.into_parts();
        self.merge(parts)?;
        // The seal is not a change of its own.
        self.kept -= 1;
        Ok(())
    }

    /// The group as one sled batch (with the counters).
    pub(super) fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.overlay {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(K_COUNTERS, encode_record(&self.counters));
        batch
    }
}

/// What a finished change leaves for its group.
pub(super) struct TxnParts {
    ops: Ops,
    counters: Counters,
    leaves: Vec<Hash>,
    checkpoint: bool,
    receipts: Vec<PendingReceipt>,
}

/// One atomic change being assembled.
pub struct Txn<'g> {
    group: &'g Group<'g>,
    ops: Ops,
    counters: Counters,
    now: u64,
    leaves: Vec<Hash>,
    checkpoint: bool,
    receipts: Vec<PendingReceipt>,
}

impl std::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn")
            .field("writes", &self.ops.len())
            .field("entries", &self.leaves.len())
            .finish()
    }
}

impl Txn<'_> {
    pub(super) fn into_parts(self) -> TxnParts {
        TxnParts {
            ops: self.ops,
            counters: self.counters,
            leaves: self.leaves,
            checkpoint: self.checkpoint,
            receipts: self.receipts,
        }
    }

    /// Reads a key as this change sees it.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.ops.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.group.get(key),
        }
    }

    fn get_record<T: for<'de> serde::Deserialize<'de>>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => decode_record(key, &v).map(Some),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.insert(key, Some(value));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.ops.insert(key, None);
    }

    /// The time this change was made at.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// This node.
    pub fn node(&self) -> &NodeId {
        self.group.node
    }

    /// How long bodies are kept when nothing shorter applies, ms.
    pub fn retention_ms(&self) -> u64 {
        self.group.retention_ms
    }

    /// Appends an audit entry; returns its index.
    pub fn log(&mut self, kind: EntryKind, object: Vec<u8>) -> u64 {
        // Every object logged is a small signed object or record; should one ever be larger
        // than an entry may be, its digest goes in instead, so the log stays readable.
        let object = if object.len() + 128 > liaison_protocol::audit::MAX_ENTRY_LEN {
            liaison_protocol::audit::event_record(
                &format!("object of {} bytes too large to log", object.len()),
                None,
                Some(&Digest::of(&object).0),
                None,
            )
        } else {
            object
        };
        let index = self.counters.next_log;
        self.counters.next_log += 1;
        let entry = Entry {
            kind,
            at: self.now,
            node: self.group.node.clone(),
            object,
        };
        let bytes = entry.encode();
        let leaf = merkle::leaf_hash(&bytes);
        self.put(key_u64(b"l/", index), bytes);
        self.put(key_u64(b"h/", index), leaf.to_vec());
        self.leaves.push(leaf);
        index
    }

    /// The index the next audit entry will get.
    pub fn next_log_index(&self) -> u64 {
        self.counters.next_log
    }

    /// Writes a message record (its envelope is kept once, in the log entry it names).
    pub fn put_message(&mut self, digest: &Digest, rec: &MessageRecord) {
        self.put(key_digest(b"m/", digest), super::encode_message(rec));
    }

    /// Writes the record of a message this node takes and gives `receipt` for it, signed
    /// with the other receipts of the group as one batch when the group is sealed (docs/
    /// protocol.md §4.3a): the record is written now (later changes of the group see it,
    /// without its proof yet) and again with the proof at the seal. The slot holds the
    /// proof once the change is durable.
    pub fn put_message_batching_receipt(
        &mut self,
        digest: &Digest,
        rec: &MessageRecord,
        receipt: Receipt,
    ) -> ProofSlot {
        self.put_message(digest, rec);
        let slot = ProofSlot::default();
        self.receipts.push(PendingReceipt {
            receipt,
            digest: *digest,
            slot: slot.clone(),
        });
        slot
    }

    /// A message record as this change sees it, its envelope left empty when an audit entry
    /// holds it (for a change that knows the envelope already; writing the record back keeps
    /// the envelope where it is).
    pub fn message_record(&self, digest: &Digest) -> Result<Option<MessageRecord>, StoreError> {
        self.get_record::<MessageRecord>(&key_digest(b"m/", digest))
    }

    /// A message record as this change sees it, with its envelope.
    pub fn message(&self, digest: &Digest) -> Result<Option<MessageRecord>, StoreError> {
        let Some(mut rec) = self.get_record::<MessageRecord>(&key_digest(b"m/", digest))? else {
            return Ok(None);
        };
        if rec.envelope.is_empty() {
            if let Some(i) = rec.log_index {
                let entry = self.get(&key_u64(b"l/", i))?;
                rec.envelope = super::envelope_of_entry(i, entry)?;
            }
        }
        Ok(Some(rec))
    }

    /// Indexes a message record under its message id.
    pub fn index_id(&mut self, id: &MessageId, digest: &Digest) {
        let mut k = b"x/".to_vec();
        k.extend_from_slice(&id.0);
        k.extend_from_slice(&digest.0);
        self.put(k, Vec::new());
    }

    /// Indexes a body by the end of its own retention, when the message sets one (an
    /// officer action's): `stored_at` plus the shorter of it and the node's. Bodies without
    /// their own retention are found by walking the log (`purge_cursor`).
    pub fn index_retention(&mut self, digest: &Digest, stored_at: u64, retain_ms: Option<u64>) {
        if let Some(r) = retain_ms {
            let keep = r.min(self.group.retention_ms);
            self.put(
                retention_key(stored_at.saturating_add(keep), digest),
                Vec::new(),
            );
        }
    }

    /// Where a message's body goes: into its record when small (one write fewer), under
    /// `b/` when larger, so that rewriting the record (a receipt, an ack) does not rewrite it.
    pub fn keep_body(&mut self, digest: &Digest, body: &[u8], rec: &mut MessageRecord) {
        if body.len() <= super::INLINE_BODY_MAX {
            rec.body = Some(body.to_vec());
        } else {
            rec.body = None;
            self.put(key_digest(b"b/", digest), body.to_vec());
        }
    }

    /// Deletes a message's body (retention ended); returns whether there was one.
    pub fn purge_body(&mut self, digest: &Digest) -> Result<bool, StoreError> {
        let old = self.get(&key_digest(b"b/", digest))?.is_some();
        if old {
            self.remove(key_digest(b"b/", digest));
        }
        let mut had = old;
        if let Some(mut rec) = self.message(digest)? {
            if rec.body.take().is_some() {
                had = true;
                self.put_message(digest, &rec);
            }
        }
        Ok(had)
    }

    /// Drops a retention index entry.
    pub fn retention_done(&mut self, digest: &Digest, due: u64) {
        self.remove(retention_key(due, digest));
    }

    /// Moves (or puts) a body's retention index entry to `later` (it cannot go yet).
    pub fn postpone_body(&mut self, digest: &Digest, due: Option<u64>, later: u64) {
        if let Some(due) = due {
            self.remove(retention_key(due, digest));
        }
        self.put(retention_key(later, digest), Vec::new());
    }

    /// Whether a body is still held.
    pub fn has_body(&self, digest: &Digest) -> Result<bool, StoreError> {
        if self.get(&key_digest(b"b/", digest))?.is_some() {
            return Ok(true);
        }
        Ok(self.message(digest)?.is_some_and(|r| r.body.is_some()))
    }

    /// Where the walk of the log for bodies whose retention ended has got to.
    pub fn purge_cursor(&self) -> Result<u64, StoreError> {
        Ok(self
            .get(super::keys::K_PURGE)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Moves the walk on to entry `index`.
    pub fn set_purge_cursor(&mut self, index: u64) {
        self.put(super::keys::K_PURGE.to_vec(), index.to_be_bytes().to_vec());
    }

    /// Adds an item to the outbox of `hop`; returns the queue entry.
    pub fn push_out(
        &mut self,
        hop: &NodeId,
        priority: Priority,
        item: OutItem,
        expires_at: Option<u64>,
    ) -> Queued {
        let seq = self.counters.next_out;
        self.counters.next_out += 1;
        let key = out_key(hop, priority, seq);
        let stored = StoredOut {
            item: item.clone(),
            expires_at,
        };
        self.put(key.clone(), encode_record(&stored));
        Queued {
            key,
            priority,
            seq,
            item,
            expires_at,
            payload: None,
        }
    }

    /// Removes an outbox entry.
    pub fn remove_out(&mut self, key: &[u8]) {
        self.remove(key.to_vec());
    }

    /// Whether an outbox entry is still there.
    pub fn has_out(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.get(key)?.is_some())
    }

    /// Records (sender, id) → digest in the dedupe index.
    pub fn put_seen(&mut self, from: &NodeId, id: &MessageId, digest: &Digest) {
        self.put(seen_key(from, id), digest.0.to_vec());
    }

    /// Looks up the dedupe index.
    pub fn seen(&self, from: &NodeId, id: &MessageId) -> Result<Option<Digest>, StoreError> {
        Ok(self
            .get(&seen_key(from, id))?
            .and_then(|v| <[u8; 32]>::try_from(&v[..]).ok())
            .map(Digest))
    }

    /// Puts a message in the application's inbox; returns its sequence.
    pub fn push_inbox(&mut self, digest: &Digest) -> u64 {
        let seq = self.counters.next_inbox;
        self.counters.next_inbox += 1;
        self.put(key_u64(b"i/", seq), digest.0.to_vec());
        seq
    }

    /// The inbox entry `seq`, if the application has not taken it yet.
    pub fn inbox_entry(&self, seq: u64) -> Result<Option<Digest>, StoreError> {
        Ok(self
            .get(&key_u64(b"i/", seq))?
            .and_then(|v| <[u8; 32]>::try_from(&v[..]).ok())
            .map(Digest))
    }

    /// Removes a message from the inbox.
    pub fn remove_inbox(&mut self, seq: u64) {
        self.remove(key_u64(b"i/", seq));
    }

    /// Stores a signed checkpoint of the first `size` entries.
    pub fn put_checkpoint(&mut self, size: u64, note: &str) {
        self.put(key_u64(b"c/", size), note.as_bytes().to_vec());
        self.checkpoint = true;
    }

    /// The stored checkpoint of exactly `size`, as this change sees it.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(&key_u64(b"c/", size))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// As witness: records the checkpoint of `origin` just cosigned.
    pub fn put_witnessed(&mut self, origin: &str, w: &Witnessed) {
        self.put(prefixed(b"w/", origin.as_bytes()), encode_record(w));
    }

    /// As witness: the last checkpoint of `origin` this node cosigned.
    pub fn witnessed(&self, origin: &str) -> Result<Option<Witnessed>, StoreError> {
        self.get_record(&prefixed(b"w/", origin.as_bytes()))
    }

    /// As log: records that `witness` cosigned the tree of `size`.
    pub fn put_cosigned(&mut self, witness: &NodeId, size: u64) {
        self.put(
            prefixed(b"ws/", witness.as_str().as_bytes()),
            size.to_be_bytes().to_vec(),
        );
    }

    /// Stores the roster in force, and keeps it by digest for verifying old entries.
    /// Records the authority keys trusted so far, the one in force last.
    pub fn put_authorities(&mut self, keys: &[[u8; 32]]) {
        self.put(K_AUTHORITY.to_vec(), keys.concat());
    }

    pub fn put_roster(&mut self, bytes: &[u8]) {
        self.put(K_ROSTER.to_vec(), bytes.to_vec());
        self.put(prefixed(b"r/", &Digest::of(bytes).0), bytes.to_vec());
    }

    /// The roster in force, as this change sees it.
    pub fn roster(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(K_ROSTER)
    }

    /// Writes an officer record.
    pub fn put_officer(&mut self, id: &str, rec: &OfficerRecord) {
        self.put(prefixed(b"u/", id.as_bytes()), encode_record(rec));
    }

    /// An officer record as this change sees it.
    pub fn officer(&self, id: &str) -> Result<Option<OfficerRecord>, StoreError> {
        self.get_record(&prefixed(b"u/", id.as_bytes()))
    }

    /// Whether `provider` granted passing message `message` on to `recipient`, as this
    /// change sees it.
    pub fn granted(
        &self,
        message: &str,
        provider: &NodeId,
        recipient: &NodeId,
    ) -> Result<bool, StoreError> {
        Ok(self
            .get(&grant_key(message, provider, recipient))?
            .is_some())
    }

    /// Marks every case indexed (after the node indexed a store written before the indexes).
    pub fn cases_indexed(&mut self) {
        self.put(super::keys::K_CASES.to_vec(), vec![1]);
    }

    /// A case record as this change sees it.
    pub fn case(&self, case_ref: &str) -> Result<Option<CaseRecord>, StoreError> {
        self.get_record(&prefixed(b"k/", case_ref.as_bytes()))
    }

    /// Writes a case record with its indexes (the ticker's wake time, a granted
    /// permission), replacing the old record's entries; the revision goes up by one.
    /// Returns the revision written.
    pub fn put_case(
        &mut self,
        case_ref: &str,
        mut rec: CaseRecord,
        index: CaseIndex,
    ) -> Result<u64, StoreError> {
        let old = self.case(case_ref)?;
        if let Some(old) = &old {
            if let Some(w) = old.wake {
                self.remove(wake_key(w, case_ref));
            }
            if let Some(g) = &old.grant {
                self.remove(prefixed(b"pg/", g.as_bytes()));
            }
        }
        rec.rev = old.as_ref().map_or(0, |o| o.rev) + 1;
        rec.wake = index.wake;
        if let Some(w) = index.wake {
            self.put(wake_key(w, case_ref), Vec::new());
        }
        rec.grant = index.grant.map(|(m, provider, to)| {
            let key = grant_key(&m, &provider, &to);
            self.put(key.clone(), case_ref.as_bytes().to_vec());
            String::from_utf8_lossy(&key[3..]).into_owned()
        });
        let rev = rec.rev;
        self.put(prefixed(b"k/", case_ref.as_bytes()), encode_record(&rec));
        Ok(rev)
    }
}
