//! The store: the only module that touches sled.
//!
//! One sled tree, keys by prefix (the layout is documented in docs/architecture.md):
//!
//! ```text
//! meta/schema            u32 BE            schema version
//! meta/counters          [log, inbox, out] next sequence numbers
//! meta/roster            signed roster     the roster in force
//! m/<digest>             MessageRecord     every message sent, received or relayed
//! b/<digest>             body bytes        deleted at retention end
//! o/<hop>\0<p̄><seq>      OutItem           per-hop outbox, highest priority first
//! s/<from>\0<id>         digest            dedupe index on (sender, message id)
//! i/<seq>                digest            inbox: not yet taken by the application
//! l/<index>              audit entry       append-only audit log
//! h/<index>              leaf hash         RFC 6962 leaf hash of l/<index>
//! c/<size>               signed note       checkpoints of the audit log
//! w/<origin>             Witnessed         as witness: the last checkpoint cosigned per log
//! ws/<witness>           u64 BE            as log: the last size each witness cosigned
//! x/<id><digest>         (empty)           message id → digest index
//! r/<digest>             signed roster     every roster applied (for verifying old entries)
//! u/<officer id>         OfficerRecord     officers enrolled at this node
//! k/<case ref>           CaseRecord        case state, timeline and deadlines
//! ```
//!
//! Every change is one atomic batch that carries its audit entries with it, so an event can
//! never exist without its entry or the reverse. [`Store::write`] applies the batch and then
//! waits for a flush; flushes are shared by all writers waiting at the same time (group
//! commit), so throughput does not pay one fsync per message. Nothing is acknowledged to a
//! peer before `write` returned.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use liaison_protocol::audit::{Entry, EntryKind};
use liaison_protocol::merkle::{self, Frontier, Hash};
use liaison_protocol::{Digest, MessageId, NodeId, Priority};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;

/// The schema this code reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

const K_SCHEMA: &[u8] = b"meta/schema";
const K_COUNTERS: &[u8] = b"meta/counters";
const K_ROSTER: &[u8] = b"meta/roster";

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self::Db(e.to_string())
    }
}

/// Which way a message went through this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Signed and sent by this node.
    Outgoing,
    /// Addressed to this node.
    Incoming,
    /// Held by this node as a relay.
    Relay,
}

/// Where a message stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum MsgState {
    /// Waiting in the outbox for its next hop.
    Queued,
    /// A relay holds it; the end-to-end receipt is awaited.
    InCustody { relay: String },
    /// Delivered; the receipt is in `proof`.
    Delivered,
    /// Refused by the recipient (or a relay); the reason.
    Rejected { reason: String },
    /// Dropped at expiry; the non-delivery record is in `proof`.
    Expired,
}

/// What the store keeps about one message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The signed envelope.
    #[serde(with = "serde_bytes_vec")]
    pub envelope: Vec<u8>,
    /// Sent, received or relayed.
    pub direction: Direction,
    /// Current state.
    pub state: MsgState,
    /// Next hop, for outgoing and relayed messages.
    pub hop: Option<String>,
    /// When it entered this node, ms.
    pub stored_at: u64,
    /// Last state change, ms.
    pub updated_at: u64,
    /// The signed receipt (delivered/rejected) or non-delivery record.
    #[serde(with = "serde_opt_bytes")]
    pub proof: Option<Vec<u8>>,
    /// Inbox sequence, for incoming messages.
    pub inbox_seq: Option<u64>,
    /// Whether the application has taken it.
    pub handed_over: bool,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Key of its outbox entry while queued here.
    #[serde(with = "serde_opt_bytes")]
    pub out_key: Option<Vec<u8>>,
    /// How long the body may be kept, ms, when the message says (an officer action's
    /// retention); the node's own `body_retention_ms` applies when it is shorter.
    #[serde(default)]
    pub retain_ms: Option<u64>,
}

/// An item waiting in a per-hop outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "item")]
pub enum OutItem {
    /// A message (envelope in `m/`, body in `b/`).
    Message { digest: [u8; 32] },
    /// A receipt to forward towards the original sender.
    Receipt {
        #[serde(with = "serde_bytes_vec")]
        bytes: Vec<u8>,
        digest: [u8; 32],
    },
    /// A non-delivery record to forward towards the original sender.
    NonDelivery {
        #[serde(with = "serde_bytes_vec")]
        bytes: Vec<u8>,
        digest: [u8; 32],
    },
}

/// An outbox entry as loaded into a peer's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Store key of the outbox entry.
    pub key: Vec<u8>,
    /// Priority lane.
    pub priority: Priority,
    /// Sequence (FIFO within a lane).
    pub seq: u64,
    /// The item.
    pub item: OutItem,
    /// Expiry of the message, ms.
    pub expires_at: Option<u64>,
    /// Failed attempts since this node started (not stored).
    pub retries: u32,
    /// The message may have reached the peer (a connection failed mid-exchange): it is not
    /// dropped at expiry without asking the peer. Not stored: every message restored from the
    /// outbox after a restart is uncertain.
    pub uncertain: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Counters {
    next_log: u64,
    next_inbox: u64,
    next_out: u64,
}

/// A writer waiting for a flush, with a handle to flush through (the flusher keeps none, so
/// the database closes as soon as the store is dropped).
/// How long a flush under load waits for more writers to join it.
const GROUP_WAIT: std::time::Duration = std::time::Duration::from_micros(500);

type FlushWaiter = (sled::Db, oneshot::Sender<Result<(), StoreError>>);

/// The node's durable state.
#[derive(Debug)]
pub struct Store {
    db: sled::Db,
    node: NodeId,
    counters: Mutex<Counters>,
    /// The audit log's Merkle frontier; changes only under the `counters` lock.
    frontier: Mutex<Frontier>,
    flush_tx: mpsc::UnboundedSender<FlushWaiter>,
    poisoned: AtomicBool,
    fault: AtomicBool,
}

/// One atomic change being assembled.
#[derive(Debug)]
pub struct Txn<'a> {
    store: &'a Store,
    batch: sled::Batch,
    counters: Counters,
    now: u64,
    entries: Vec<(u64, EntryKind)>,
    leaves: Vec<Hash>,
}

impl Txn<'_> {
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
            node: self.store.node.clone(),
            object,
        };
        let bytes = entry.encode();
        let leaf = merkle::leaf_hash(&bytes);
        self.batch.insert(&key_u64(b"l/", index)[..], bytes);
        self.batch.insert(&key_u64(b"h/", index)[..], &leaf[..]);
        self.leaves.push(leaf);
        self.entries.push((index, kind));
        index
    }

    /// The index the next audit entry will get.
    pub fn next_log_index(&self) -> u64 {
        self.counters.next_log
    }

    /// Writes a message record.
    pub fn put_message(&mut self, digest: &Digest, rec: &MessageRecord) {
        self.batch
            .insert(&key_digest(b"m/", digest)[..], encode_record(rec));
    }

    /// Indexes a message record under its message id.
    pub fn index_id(&mut self, id: &MessageId, digest: &Digest) {
        let mut k = b"x/".to_vec();
        k.extend_from_slice(&id.0);
        k.extend_from_slice(&digest.0);
        self.batch.insert(k, &[][..]);
    }

    /// Reads a message record as of the start of this change.
    pub fn message(&self, digest: &Digest) -> Result<Option<MessageRecord>, StoreError> {
        self.store.message(digest)
    }

    /// Writes a body.
    pub fn put_body(&mut self, digest: &Digest, body: &[u8]) {
        self.batch.insert(&key_digest(b"b/", digest)[..], body);
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
        self.batch.insert(&key[..], encode_record(&stored));
        Queued {
            key,
            priority,
            seq,
            item,
            expires_at,
            retries: 0,
            uncertain: false,
        }
    }

    /// Removes an outbox entry.
    pub fn remove_out(&mut self, key: &[u8]) {
        self.batch.remove(key);
    }

    /// Records (sender, id) → digest in the dedupe index.
    pub fn put_seen(&mut self, from: &NodeId, id: &MessageId, digest: &Digest) {
        self.batch.insert(&seen_key(from, id)[..], &digest.0[..]);
    }

    /// Looks up the dedupe index.
    pub fn seen(&self, from: &NodeId, id: &MessageId) -> Result<Option<Digest>, StoreError> {
        self.store.seen(from, id)
    }

    /// Deletes a body (retention ended).
    pub fn remove_body(&mut self, digest: &Digest) {
        self.batch.remove(&key_digest(b"b/", digest)[..]);
    }

    /// Puts a message in the application's inbox; returns its sequence.
    pub fn push_inbox(&mut self, digest: &Digest) -> u64 {
        let seq = self.counters.next_inbox;
        self.counters.next_inbox += 1;
        self.batch.insert(&key_u64(b"i/", seq)[..], &digest.0[..]);
        seq
    }

    /// Removes a message from the inbox.
    pub fn remove_inbox(&mut self, seq: u64) {
        self.batch.remove(&key_u64(b"i/", seq)[..]);
    }

    /// Stores a signed checkpoint of the first `size` entries.
    pub fn put_checkpoint(&mut self, size: u64, note: &str) {
        self.batch
            .insert(&key_u64(b"c/", size)[..], note.as_bytes());
    }

    /// As witness: records the checkpoint of `origin` just cosigned.
    pub fn put_witnessed(&mut self, origin: &str, w: &Witnessed) {
        let mut k = b"w/".to_vec();
        k.extend_from_slice(origin.as_bytes());
        self.batch.insert(k, encode_record(w));
    }

    /// As witness: the last checkpoint of `origin` this node cosigned.
    pub fn witnessed(&self, origin: &str) -> Result<Option<Witnessed>, StoreError> {
        self.store.witnessed(origin)
    }

    /// As log: records that `witness` cosigned the tree of `size`.
    pub fn put_cosigned(&mut self, witness: &NodeId, size: u64) {
        let mut k = b"ws/".to_vec();
        k.extend_from_slice(witness.as_str().as_bytes());
        self.batch.insert(k, &size.to_be_bytes()[..]);
    }

    /// Stores the roster in force, and keeps it by digest for verifying old entries.
    pub fn put_roster(&mut self, bytes: &[u8]) {
        self.batch.insert(K_ROSTER, bytes);
        self.batch
            .insert(prefixed(b"r/", &Digest::of(bytes).0), bytes);
    }

    /// Writes an officer record.
    pub fn put_officer(&mut self, id: &str, rec: &OfficerRecord) {
        self.batch
            .insert(prefixed(b"u/", id.as_bytes()), encode_record(rec));
    }

    /// Writes a case record.
    pub fn put_case(&mut self, case_ref: &str, rec: &CaseRecord) {
        self.batch
            .insert(prefixed(b"k/", case_ref.as_bytes()), encode_record(rec));
    }
}

/// An officer enrolled at this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfficerRecord {
    /// The node-signed credential.
    #[serde(with = "serde_bytes_vec")]
    pub credential: Vec<u8>,
    /// When the officer was revoked, if so.
    pub revoked_at: Option<u64>,
}

/// A case as this node sees it: the state machine's state, every step, and fan-out state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseRecord {
    /// The state machine's state.
    pub case: liaison_protocol::workflow::Case,
    /// Every step, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Alerts issued here: the signed issue action, to widen the radius with.
    #[serde(default, with = "serde_opt_bytes")]
    pub alert_action: Option<Vec<u8>>,
    /// Alerts issued here: the units already alerted.
    #[serde(default)]
    pub alerted: Vec<NodeId>,
    /// Whether the supervisor was already told the case is overdue.
    #[serde(default)]
    pub overdue_notified: bool,
    /// Steps recorded here only (a repatriation case opened with the victim's consent):
    /// the signed actions, kept until their retention ends like message bodies.
    #[serde(default)]
    pub local_actions: Vec<LocalAction>,
}

impl CaseRecord {
    /// A new record for `case`.
    pub fn new(case: liaison_protocol::workflow::Case) -> Self {
        Self {
            case,
            timeline: Vec::new(),
            alert_action: None,
            alerted: Vec::new(),
            overdue_notified: false,
            local_actions: Vec::new(),
        }
    }
}

/// A signed action recorded on this node only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalAction {
    /// Recorded at, Unix ms.
    pub at: u64,
    /// How long it may be kept, ms.
    pub retain_ms: u64,
    /// The signed action.
    #[serde(with = "serde_bytes_vec")]
    pub action: Vec<u8>,
}

/// One step of a case, for timelines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When the step was signed, Unix ms.
    pub at: u64,
    /// Message kind.
    pub kind: String,
    /// `sent`, `received`, `local`, `automatic`, `widened`, `refused` or `overdue`.
    pub direction: String,
    /// Sending node.
    pub from: NodeId,
    /// Receiving nodes.
    pub to: Vec<NodeId>,
    /// Officer id (or node id for automatic steps).
    pub actor: String,
    /// Officer name and role, when an officer signed.
    pub officer: Option<String>,
    /// Message ids (hex), one per recipient.
    pub message_ids: Vec<String>,
    /// Digest of the signed action (hex).
    pub action: String,
    /// Signatures checked: the officer's against the credential, the credential against the
    /// node key, the envelope against the node key.
    pub verified: String,
    /// State after the step.
    pub state: String,
    /// Deadline after the step.
    pub deadline: Option<u64>,
}

/// What a witness keeps per log: the last checkpoint it cosigned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Witnessed {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: [u8; 32],
    /// The signed note as received.
    pub note: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredOut {
    item: OutItem,
    expires_at: Option<u64>,
}

impl Store {
    /// Opens (or creates) the store at `path`, checks the schema, and starts the group-commit
    /// flusher (must be called inside a tokio runtime).
    pub fn open(path: &Path, cache_bytes: u64, node: NodeId) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput);
        // A store closed a moment ago (a restart in the same process, or a previous process
        // still exiting) releases its file lock shortly: wait a little for it.
        let mut tries = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if e.to_string().contains("acquire lock") && tries < 100 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        };
        match db.get(K_SCHEMA)? {
            None => {
                db.insert(K_SCHEMA, &SCHEMA_VERSION.to_be_bytes()[..])?;
                db.flush()?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(&v[..])
                    .map(u32::from_be_bytes)
                    .unwrap_or(0);
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema {
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
        }
        let counters = match db.get(K_COUNTERS)? {
            None => Counters::default(),
            Some(v) => decode_record(K_COUNTERS, &v)?,
        };
        // The frontier of the audit log, from its stored leaf hashes.
        let mut frontier = Frontier::new();
        for kv in db.scan_prefix(b"h/") {
            let (k, v) = kv?;
            let leaf = <[u8; 32]>::try_from(&v[..]).map_err(|_| StoreError::Corrupt {
                key: hex::encode(&k),
                problem: "leaf hash is not 32 bytes".into(),
            })?;
            frontier.push(leaf).map_err(|e| StoreError::Corrupt {
                key: hex::encode(&k),
                problem: e.to_string(),
            })?;
        }
        if frontier.size() != counters.next_log {
            return Err(StoreError::Corrupt {
                key: "h/".into(),
                problem: format!(
                    "{} leaf hashes for {} audit entries (log truncated or edited?)",
                    frontier.size(),
                    counters.next_log
                ),
            });
        }
        let (flush_tx, flush_rx) = mpsc::unbounded_channel();
        tokio::spawn(group_commit(flush_rx));
        Ok(Self {
            db,
            node,
            counters: Mutex::new(counters),
            frontier: Mutex::new(frontier),
            flush_tx,
            poisoned: AtomicBool::new(false),
            fault: AtomicBool::new(false),
        })
    }

    /// Makes every later write fail as a full disk would, until turned off. For fault tests.
    pub fn dangerous_inject_fault(&self, on: bool) {
        self.fault.store(on, Ordering::SeqCst);
    }

    /// Builds a change with `f` and commits it atomically, then waits until it is durable.
    /// `f` runs under the store's write lock, so what it reads cannot change under it.
    pub async fn write<T>(
        &self,
        now: u64,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let out = self.apply(now, f)?;
        self.flushed().await?;
        Ok(out)
    }

    /// Applies a change without waiting for durability (for work that is redone after a
    /// crash anyway). Returns what `f` returned.
    pub fn apply<T>(
        &self,
        now: u64,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        if self.fault.load(Ordering::SeqCst) {
            return Err(StoreError::Db(
                "injected fault: no space left on device".to_owned(),
            ));
        }
        let mut guard = self.counters.lock().map_err(|_| StoreError::Poisoned)?;
        let mut txn = Txn {
            store: self,
            batch: sled::Batch::default(),
            counters: *guard,
            now,
            entries: Vec::new(),
            leaves: Vec::new(),
        };
        let out = f(&mut txn)?;
        let Txn {
            mut batch,
            counters,
            leaves,
            ..
        } = txn;
        batch.insert(K_COUNTERS, encode_record(&counters));
        self.db.apply_batch(batch)?;
        *guard = counters;
        if !leaves.is_empty() {
            let mut f = self.frontier.lock().map_err(|_| StoreError::Poisoned)?;
            for leaf in leaves {
                f.push(leaf).map_err(|e| StoreError::Db(e.to_string()))?;
            }
        }
        Ok(out)
    }

    /// Waits until everything applied so far is on disk.
    pub async fn flushed(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.flush_tx
            .send((self.db.clone(), tx))
            .map_err(|_| StoreError::Poisoned)?;
        let res = rx.await.map_err(|_| StoreError::Poisoned)?;
        if res.is_err() {
            self.poisoned.store(true, Ordering::SeqCst);
        }
        res
    }

    /// A message record.
    pub fn message(&self, digest: &Digest) -> Result<Option<MessageRecord>, StoreError> {
        let key = key_digest(b"m/", digest);
        match self.db.get(&key)? {
            None => Ok(None),
            Some(v) => decode_record(&key, &v).map(Some),
        }
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
        Ok(self.db.get(key_digest(b"b/", digest))?.map(|v| v.to_vec()))
    }

    /// Digests of stored bodies.
    pub fn body_digests(&self) -> Result<Vec<Digest>, StoreError> {
        let mut out = Vec::new();
        for k in self.db.scan_prefix(b"b/").keys() {
            let k = k?;
            if let Some(d) = k.get(2..34).and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                out.push(Digest(d));
            }
        }
        Ok(out)
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
                    retries: 0,
                    uncertain: false,
                },
            ));
        }
        Ok(out)
    }

    /// Inbox entries not yet taken by the application: (seq, digest).
    pub fn inbox(&self, limit: usize) -> Result<Vec<(u64, Digest)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(b"i/").take(limit) {
            let (k, v) = kv?;
            let seq = k
                .get(2..10)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            let d = <[u8; 32]>::try_from(&v[..]).ok();
            if let (Some(seq), Some(d)) = (seq, d) {
                out.push((seq, Digest(d)));
            }
        }
        Ok(out)
    }

    /// The inbox entry with this sequence.
    pub fn inbox_entry(&self, seq: u64) -> Result<Option<Digest>, StoreError> {
        Ok(self
            .db
            .get(key_u64(b"i/", seq))?
            .and_then(|v| <[u8; 32]>::try_from(&v[..]).ok())
            .map(Digest))
    }

    /// Every message record, newest last.
    pub fn messages(&self) -> Result<Vec<(Digest, MessageRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(b"m/") {
            let (k, v) = kv?;
            let d = <[u8; 32]>::try_from(&k[2..]).map_err(|_| StoreError::Corrupt {
                key: hex::encode(&k),
                problem: "bad message key".to_owned(),
            })?;
            let rec: MessageRecord = decode_record(&k, &v)?;
            out.push((Digest(d), rec));
        }
        out.sort_by_key(|(_, r)| r.stored_at);
        Ok(out)
    }

    /// An officer record.
    pub fn officer(&self, id: &str) -> Result<Option<OfficerRecord>, StoreError> {
        let key = prefixed(b"u/", id.as_bytes());
        match self.db.get(&key)? {
            None => Ok(None),
            Some(v) => decode_record(&key, &v).map(Some),
        }
    }

    /// Every officer record, by id.
    pub fn officers(&self) -> Result<Vec<(String, OfficerRecord)>, StoreError> {
        self.scan_records(b"u/")
    }

    /// A case record.
    pub fn case(&self, case_ref: &str) -> Result<Option<CaseRecord>, StoreError> {
        let key = prefixed(b"k/", case_ref.as_bytes());
        match self.db.get(&key)? {
            None => Ok(None),
            Some(v) => decode_record(&key, &v).map(Some),
        }
    }

    /// Every case record, by reference.
    pub fn cases(&self) -> Result<Vec<(String, CaseRecord)>, StoreError> {
        self.scan_records(b"k/")
    }

    fn scan_records<T: for<'de> Deserialize<'de>>(
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

    /// The roster in force, if one was stored.
    pub fn roster(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(K_ROSTER)?.map(|v| v.to_vec()))
    }

    /// Number of audit entries.
    pub fn log_len(&self) -> u64 {
        self.counters.lock().map(|c| c.next_log).unwrap_or(0)
    }

    /// Audit entries in `[from, to)`.
    pub fn log_entries(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.range(key_u64(b"l/", from)..key_u64(b"l/", to)) {
            let (k, v) = kv?;
            let idx = k
                .get(2..10)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            out.push((idx, v.to_vec()));
        }
        Ok(out)
    }

    /// The audit log's size and root now.
    pub fn log_root(&self) -> (u64, Hash) {
        let _g = self.counters.lock();
        match self.frontier.lock() {
            Ok(f) => (f.size(), f.root()),
            Err(p) => (p.get_ref().size(), p.get_ref().root()),
        }
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
        let mut k = b"w/".to_vec();
        k.extend_from_slice(origin.as_bytes());
        match self.db.get(&k)? {
            None => Ok(None),
            Some(v) => decode_record(&k, &v).map(Some),
        }
    }

    /// As log: the last size `witness` cosigned (0 if never).
    pub fn cosigned_size(&self, witness: &NodeId) -> Result<u64, StoreError> {
        let mut k = b"ws/".to_vec();
        k.extend_from_slice(witness.as_str().as_bytes());
        Ok(self
            .db
            .get(&k)?
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
                let size = k
                    .get(2..10)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                Ok(Some((size, String::from_utf8_lossy(&v).into_owned())))
            }
        }
    }

    /// Overwrites a stored audit entry (and, with `leaf`, its leaf hash too), bypassing
    /// every check: what an attacker with the raw database could do. For tamper tests only.
    pub fn dangerous_overwrite_entry(
        &self,
        index: u64,
        bytes: &[u8],
        leaf: bool,
    ) -> Result<(), StoreError> {
        self.db.insert(key_u64(b"l/", index), bytes)?;
        if leaf {
            self.db
                .insert(key_u64(b"h/", index), &merkle::leaf_hash(bytes)[..])?;
        }
        self.db.flush()?;
        self.rebuild_frontier()
    }

    fn rebuild_frontier(&self) -> Result<(), StoreError> {
        let mut f = Frontier::new();
        for kv in self.db.scan_prefix(b"h/") {
            let (_, v) = kv?;
            let leaf = <[u8; 32]>::try_from(&v[..]).map_err(|_| StoreError::Poisoned)?;
            f.push(leaf).map_err(|e| StoreError::Db(e.to_string()))?;
        }
        *self.frontier.lock().map_err(|_| StoreError::Poisoned)? = f;
        Ok(())
    }

    /// Deletes audit entries from `from` on, as a node rolling its log back would (its
    /// signed checkpoints stay). For tamper tests only.
    pub fn dangerous_truncate_log(&self, from: u64) -> Result<(), StoreError> {
        let mut guard = self.counters.lock().map_err(|_| StoreError::Poisoned)?;
        for i in from..guard.next_log {
            self.db.remove(key_u64(b"l/", i))?;
            self.db.remove(key_u64(b"h/", i))?;
        }
        guard.next_log = from.min(guard.next_log);
        self.db.insert(K_COUNTERS, encode_record(&*guard))?;
        self.db.flush()?;
        drop(guard);
        self.rebuild_frontier()
    }

    /// Flushes and closes (the last handle flushes on drop too).
    pub async fn close(&self) -> Result<(), StoreError> {
        self.flushed().await
    }
}

async fn group_commit(mut rx: mpsc::UnboundedReceiver<FlushWaiter>) {
    let mut last_batch = 0usize;
    while let Some((db, first)) = rx.recv().await {
        if last_batch > 1 {
            // Under load, let more writers join this flush: one flush per millisecond costs
            // far less than one per writer.
            tokio::time::sleep(GROUP_WAIT).await;
        }
        let mut waiters = vec![first];
        while let Ok((_, w)) = rx.try_recv() {
            waiters.push(w);
        }
        // One flush covers every batch applied before it started.
        last_batch = waiters.len();
        let res = match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::from(e)),
            Err(e) => Err(StoreError::Db(format!("flush task failed: {e}"))),
        };
        for w in waiters {
            let _ = w.send(res.clone());
        }
    }
}

fn key_u64(prefix: &[u8], n: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn key_digest(prefix: &[u8], d: &Digest) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&d.0);
    k
}

fn seen_key(from: &NodeId, id: &MessageId) -> Vec<u8> {
    let mut k = b"s/".to_vec();
    k.extend_from_slice(from.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&id.0);
    k
}

fn out_key(hop: &NodeId, priority: Priority, seq: u64) -> Vec<u8> {
    let mut k = b"o/".to_vec();
    k.extend_from_slice(hop.as_str().as_bytes());
    k.push(0);
    k.push(3 - priority as u8);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn parse_out_key(k: &[u8]) -> Option<(NodeId, Priority, u64)> {
    let rest = k.strip_prefix(b"o/")?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let hop = NodeId::new(std::str::from_utf8(&rest[..nul]).ok()?).ok()?;
    let p = *rest.get(nul + 1)?;
    let priority = Priority::from_u64(3u64.checked_sub(u64::from(p))?)?;
    let seq = u64::from_be_bytes(rest.get(nul + 2..nul + 10)?.try_into().ok()?);
    Some((hop, priority, seq))
}

fn prefixed(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(name);
    k
}

fn encode_record<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Serializing our own record types into a Vec cannot fail.
    let _ = ciborium::into_writer(v, &mut out);
    out
}

fn decode_record<T: for<'de> Deserialize<'de>>(key: &[u8], v: &[u8]) -> Result<T, StoreError> {
    ciborium::from_reader(v).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        problem: e.to_string(),
    })
}

mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let v = ciborium::Value::deserialize(d)?;
        v.into_bytes()
            .map_err(|_| serde::de::Error::custom("expected bytes"))
    }
}

mod serde_opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        match ciborium::Value::deserialize(d)? {
            ciborium::Value::Null => Ok(None),
            v => v
                .into_bytes()
                .map(Some)
                .map_err(|_| serde::de::Error::custom("expected bytes")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        NodeId::new("cn-35-psb").unwrap()
    }

    #[tokio::test]
    async fn batch_with_log_entry_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest([1; 32]);
        {
            let s = Store::open(dir.path(), 1 << 20, node()).unwrap();
            s.write(5, |t| {
                t.put_body(&d, b"body");
                let q = t.push_out(
                    &node(),
                    Priority::Flash,
                    OutItem::Message { digest: d.0 },
                    None,
                );
                assert_eq!(q.seq, 0);
                t.log(EntryKind::MessageSent, vec![1]);
                Ok(())
            })
            .await
            .unwrap();
        }
        let s = Store::open(dir.path(), 1 << 20, node()).unwrap();
        assert_eq!(s.body(&d).unwrap().unwrap(), b"body");
        assert_eq!(s.log_len(), 1);
        let out = s.outbox().unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.priority, Priority::Flash);
        let e = Entry::decode(&s.log_entries(0, 1).unwrap()[0].1).unwrap();
        assert_eq!(e.kind, EntryKind::MessageSent);
    }

    #[tokio::test]
    async fn outbox_orders_by_priority_then_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 1 << 20, node()).unwrap();
        let hop = NodeId::new("cn-61-psb").unwrap();
        s.write(1, |t| {
            for (i, p) in [
                Priority::Routine,
                Priority::Flash,
                Priority::Routine,
                Priority::Urgent,
            ]
            .into_iter()
            .enumerate()
            {
                t.push_out(
                    &hop,
                    p,
                    OutItem::Message {
                        digest: [i as u8; 32],
                    },
                    None,
                );
            }
            Ok(())
        })
        .await
        .unwrap();
        let order: Vec<u8> = s
            .outbox()
            .unwrap()
            .into_iter()
            .map(|(_, q)| match q.item {
                OutItem::Message { digest } => digest[0],
                _ => 99,
            })
            .collect();
        assert_eq!(order, vec![1, 3, 0, 2]);
    }

    #[tokio::test]
    async fn injected_fault_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 1 << 20, node()).unwrap();
        s.dangerous_inject_fault(true);
        let r = s.write(1, |t| {
            t.log(EntryKind::Rejected, vec![]);
            Ok(())
        });
        assert!(r.await.is_err());
        assert_eq!(s.log_len(), 0);
    }

    #[test]
    fn schema_mismatch_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(K_SCHEMA, &99u32.to_be_bytes()[..]).unwrap();
            db.flush().unwrap();
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let r = rt.block_on(async { Store::open(dir.path(), 1 << 20, node()).map(|_| ()) });
        assert!(matches!(r, Err(StoreError::Schema { found: 99, .. })));
    }
}
