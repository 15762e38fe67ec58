//! The store: the only module that touches sled.
//!
//! One sled tree, keys by prefix (the layout is documented in docs/architecture.md):
//!
//! ```text
//! meta/schema            u32 BE            schema version
//! meta/counters          [log, inbox, out] next sequence numbers
//! meta/roster            signed roster     the roster in force
//! meta/retention         u64 BE            the retention rb/ was built with
//! m/<digest>             MessageRecord     every message sent, received or relayed
//! b/<digest>             body bytes        deleted at retention end
//! rb/<due><digest>       (empty)           bodies by the end of their retention
//! o/<hop>\0<p̄><seq>      OutItem           per-hop outbox, highest priority first
//! s/<from>\0<id>         digest            dedupe index on (sender, message id)
//! i/<seq>                digest            inbox: not yet taken by the application
//! l/<index>              audit entry       append-only audit log
//! h/<index>              leaf hash         RFC 6962 leaf hash of l/<index>
//! n/<height><index>      node hash         interior nodes of the log's tree
//! c/<size>               signed note       checkpoints of the audit log
//! w/<origin>             Witnessed         as witness: the last checkpoint cosigned per log
//! ws/<witness>           u64 BE            as log: the last size each witness cosigned
//! x/<id><digest>         (empty)           message id → digest index
//! r/<digest>             signed roster     every roster applied (for verifying old entries)
//! u/<officer id>         OfficerRecord     officers enrolled at this node
//! k/<case ref>           CaseRecord        case state, timeline and deadlines
//! t/<wake><case ref>     (empty)           cases the ticker must look at, by time
//! pg/<msg>\0<from>\0<to> case ref          granted onward-passing permissions
//! ```
//!
//! Writes: one writer thread (`writer`) owns every sled write. A change is a closure over a
//! [`Txn`]; the writer merges every change waiting at the same time into one sled batch,
//! applies it, flushes once and then answers all of them (group commit). Changes of one
//! group see each other's writes in order; a change that fails leaves nothing of itself; the
//! audit log's size and root ([`Store::log_root`]) move only when the group is durable.
//!
//! Reads run on a blocking thread ([`Store::read`], [`Store::peek`]), never on a tokio
//! worker. `read` answers only once everything it could have seen is durable, so nothing
//! that might still be lost is ever answered from; `peek` sees the applied state, for
//! decisions whose own change is answered only after its flush anyway. After a failed apply
//! or flush the store refuses every change and every read until it is opened again.
//!
//! Going back in time is refused at open: the log head (`head`), a file beside the sled
//! directory, holds the size and root the log last committed; a store whose log is shorter
//! or whose first entries hash to another root was replaced by an older copy or cut short by
//! recovery from damage. A damaged sled file gives a clear error (sled panics on some
//! damage; the panic is caught and reported without a backtrace).

mod backup;
mod head;
#[cfg(any(test, feature = "test-hooks"))]
mod hooks;
mod keys;
mod reader;
mod records;
mod txn;
mod writer;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use liaison_protocol::merkle::{self, Frontier, Hash};
use liaison_protocol::{Digest, NodeId};
use tokio::sync::{mpsc, oneshot, watch};

pub use backup::{Backup, BackupHeader, BackupSummary};
pub use reader::{Reader, Tree};
pub use records::{
    CaseIndex, CaseRecord, Checks, Direction, LocalAction, MessageRecord, MsgState, OfficerRecord,
    OutItem, Payload, Queued, StepDirection, TimelineEntry, Verified, Witnessed,
};
pub use txn::{ProofSlot, ReceiptSealer, SealedBatch, Txn};

use crate::error::StoreError;
use keys::{K_COUNTERS, K_RETENTION, K_SCHEMA, K_TREE, key_u64, node_key, retention_key};
use records::{Counters, decode_record, encode_record};
use writer::{Done, Msg};

/// The schema this code reads and writes. Stores of an older schema are migrated at open,
/// one step at a time ([`migrate`]); a newer one is refused.
///
/// - 1: the first schema; interior tree nodes (`n/`) kept once `meta/tree` is set (stores
///   written before they existed have none).
/// - 2: interior tree nodes are always there; `meta/tree` is gone.
pub const SCHEMA_VERSION: u32 = 2;

/// Bodies up to this size are kept in their message record, larger ones beside it.
pub(crate) const INLINE_BODY_MAX: usize = 4096;

/// Changes queued for the writer at most; a caller beyond waits (back-pressure).
const QUEUE: usize = 16 * 1024;

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self::Db(e.to_string())
    }
}

impl From<merkle::MerkleError> for StoreError {
    fn from(e: merkle::MerkleError) -> Self {
        Self::Db(e.to_string())
    }
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled page cache, bytes.
    pub cache_bytes: u64,
    /// How long bodies are kept when the message sets nothing shorter, ms (for the `rb/`
    /// index; another value than last time rebuilds the index at open).
    pub body_retention_ms: u64,
    /// The log head file; by default `log-head` beside the sled directory.
    pub head: Option<PathBuf>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: crate::config::DEFAULT_CACHE_BYTES,
            body_retention_ms: crate::config::DEFAULT_BODY_RETENTION_MS,
            head: None,
        }
    }
}

/// A fault to inject, as a full or failing disk would cause (fault tests; only with the
/// `test-hooks` feature).
#[cfg(any(test, feature = "test-hooks"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// None.
    #[default]
    None,
    /// The next applies fail (nothing reaches sled).
    Apply,
    /// The next flushes fail after the batch was applied (it is readable in memory but
    /// never acknowledged).
    Flush,
}

#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub(crate) counters: Counters,
    pub(crate) frontier: Frontier,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Durable {
    pub(crate) generation: u64,
    pub(crate) failed: bool,
}

/// What the writer, the readers and the handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) db: sled::Db,
    pub(crate) node: NodeId,
    pub(crate) retention_ms: u64,
    committed: Mutex<Committed>,
    /// The generation of the group applied last (it may not be durable yet).
    pub(crate) applying: AtomicU64,
    pub(crate) durable: watch::Sender<Durable>,
    failure: Mutex<Option<String>>,
    #[cfg(any(test, feature = "test-hooks"))]
    fault: Mutex<Fault>,
    head: Mutex<head::HeadFile>,
    /// The store was written before cases were indexed (`t/`, `pg/`): the node indexes them.
    cases_unindexed: std::sync::atomic::AtomicBool,
    /// Group commits that wrote something, and the changes they carried.
    pub(crate) groups: AtomicU64,
    pub(crate) changes: AtomicU64,
    /// Signs the receipts of a group as one batch (set by the bus).
    pub(crate) sealer: Mutex<Option<ReceiptSealer>>,
}

/// How the writer has grouped changes since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreStats {
    /// Group commits that wrote something (one sled batch and one flush each).
    pub groups: u64,
    /// Changes committed in them.
    pub changes: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn lock_committed(&self) -> MutexGuard<'_, Committed> {
        lock(&self.committed)
    }

    pub(crate) fn lock_head(&self) -> MutexGuard<'_, head::HeadFile> {
        lock(&self.head)
    }

    /// Err once the store has failed.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        match &*lock(&self.failure) {
            None => Ok(()),
            Some(reason) => Err(StoreError::Failed(reason.clone())),
        }
    }

    /// Marks the store failed: every later change and read is refused.
    pub(crate) fn fail(&self, reason: String) {
        tracing::error!(%reason, "STORE FAILED: every change and read is refused until the node is restarted");
        lock(&self.failure).get_or_insert(reason);
        self.durable.send_modify(|d| d.failed = true);
    }

    #[allow(clippy::unnecessary_wraps, clippy::unused_self)]
    fn fault_before_apply(&self) -> Result<(), StoreError> {
        #[cfg(any(test, feature = "test-hooks"))]
        if *lock(&self.fault) == Fault::Apply {
            return Err(StoreError::Db(
                "injected fault: no space left on device (apply)".into(),
            ));
        }
        Ok(())
    }

    #[allow(clippy::unnecessary_wraps, clippy::unused_self)]
    fn fault_before_flush(&self) -> Result<(), StoreError> {
        #[cfg(any(test, feature = "test-hooks"))]
        if *lock(&self.fault) == Fault::Flush {
            return Err(StoreError::Db(
                "injected fault: no space left on device (flush)".into(),
            ));
        }
        Ok(())
    }

    fn reader(&self) -> Reader<'_> {
        Reader {
            db: &self.db,
            shared: self,
        }
    }
}

/// A change waiting for its group: resolves when it is applied (visible, not yet durable),
/// then [`Staged::durable`] when it is on disk.
#[derive(Debug)]
pub struct Staged<T> {
    done: oneshot::Receiver<Result<T, StoreError>>,
    shared: Arc<Shared>,
}

impl<T> Staged<T> {
    /// Waits until the change is on disk; returns what it returned.
    pub async fn durable(self) -> Result<T, StoreError> {
        match self.done.await {
            Ok(r) => r,
            Err(_) => Err(gone(&self.shared)),
        }
    }
}

/// The error for an answer channel the writer dropped: the store failed or closed.
fn gone(shared: &Shared) -> StoreError {
    shared.check().err().unwrap_or(StoreError::Closed)
}

/// The node's durable state.
#[derive(Debug)]
pub struct Store {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store at `path` on a new writer thread: checks the schema, the
    /// log's leaves against its counters, the log head (refusing a store that went back in
    /// time), builds missing indexes, and keeps the thread as the store's writer.
    pub async fn open(path: &Path, opts: StoreOptions, node: NodeId) -> Result<Self, StoreError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (tx, rx) = mpsc::channel(QUEUE);
        let p = path.to_owned();
        std::thread::Builder::new()
            .name(format!("store-{node}"))
            .spawn(move || match open_db(&p, &opts, node) {
                Ok(shared) => {
                    let shared = Arc::new(shared);
                    if ready_tx.send(Ok(shared.clone())).is_ok() {
                        writer::run(shared, rx);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Db(format!("cannot start the store thread: {e}")))?;
        let shared = ready_rx
            .await
            .map_err(|_| StoreError::Db("the store thread died while opening".into()))??;
        Ok(Self {
            shared,
            tx,
            path: path.to_owned(),
        })
    }

    /// Where the sled files are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn send(&self, msg: Msg) -> Result<(), StoreError> {
        self.shared.check()?;
        self.tx.send(msg).await.map_err(|_| gone(&self.shared))
    }

    /// Queues a change; resolves once it is applied with its group (visible, not yet
    /// durable). The caller may release what it holds (a case lock) and then wait for
    /// [`Staged::durable`].
    pub async fn stage<T, F>(&self, now: u64, f: F) -> Result<Staged<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (staged_tx, staged_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let run: writer::Change = Box::new(move |txn| match f(txn) {
            Ok(v) => Some(Done {
                staged: Some(Box::new(move |res: Result<(), StoreError>| {
                    let _ = staged_tx.send(res);
                })),
                finish: Box::new(move |res: Result<(), StoreError>| {
                    let _ = done_tx.send(res.map(|()| v));
                }),
            }),
            Err(e) => {
                let _ = staged_tx.send(Err(e.clone()));
                let _ = done_tx.send(Err(e));
                None
            }
        });
        self.send(Msg::Change { now, run }).await?;
        match staged_rx.await {
            Ok(Ok(())) => Ok(Staged {
                done: done_rx,
                shared: self.shared.clone(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(gone(&self.shared)),
        }
    }

    /// Builds a change with `f` and commits it with its group; returns once it is durable.
    pub async fn write<T, F>(&self, now: u64, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let run: writer::Change = Box::new(move |txn| match f(txn) {
            Ok(v) => Some(Done {
                staged: None,
                finish: Box::new(move |res: Result<(), StoreError>| {
                    let _ = done_tx.send(res.map(|()| v));
                }),
            }),
            Err(e) => {
                let _ = done_tx.send(Err(e));
                None
            }
        });
        self.send(Msg::Change { now, run }).await?;
        match done_rx.await {
            Ok(r) => r,
            Err(_) => Err(gone(&self.shared)),
        }
    }

    /// Builds a change with `f` and returns what it returned once it is applied with its
    /// group, without waiting for the flush (for work that is redone after a crash anyway:
    /// should the flush fail, the store fails and nothing more is answered).
    pub async fn apply<T, F>(&self, now: u64, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let run: writer::Change = Box::new(move |txn| match f(txn) {
            // Answered when its group is applied, not after the flush.
            Ok(v) => Some(Done {
                staged: Some(Box::new(move |res: Result<(), StoreError>| {
                    let _ = tx.send(res.map(|()| v));
                })),
                finish: Box::new(|_| {}),
            }),
            Err(e) => {
                let _ = tx.send(Err(e));
                None
            }
        });
        self.send(Msg::Change { now, run }).await?;
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(gone(&self.shared)),
        }
    }

    /// Queues a change and does not wait for it (bookkeeping that is redone or harmless if
    /// lost). Dropped when the writer's queue is full.
    pub fn write_later<F>(&self, now: u64, f: F)
    where
        F: FnOnce(&mut Txn<'_>) -> Result<(), StoreError> + Send + 'static,
    {
        let run: writer::Change = Box::new(move |txn| match f(txn) {
            Ok(()) => Some(Done {
                staged: None,
                finish: Box::new(|_| {}),
            }),
            Err(_) => None,
        });
        let _ = self.tx.try_send(Msg::Change { now, run });
    }

    /// Reads on a blocking thread; answers once everything the read could have seen is
    /// durable (or fails if the store failed meanwhile).
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (v, seen) = self.read_applied(f).await?;
        self.durable_through(seen).await?;
        Ok(v)
    }

    /// Reads the applied state on a blocking thread, without waiting for it to be durable:
    /// for decisions whose own change is answered only after its flush.
    pub async fn peek<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        Ok(self.read_applied(f).await?.0)
    }

    async fn read_applied<T, F>(&self, f: F) -> Result<(T, u64), StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            shared.check()?;
            let v = f(&shared.reader())?;
            // Everything the read saw was applied at or before this generation.
            Ok((v, shared.applying.load(Ordering::SeqCst)))
        })
        .await
        .map_err(|e| StoreError::Db(format!("store read task failed: {e}")))?
    }

    async fn durable_through(&self, generation: u64) -> Result<(), StoreError> {
        let mut rx = self.shared.durable.subscribe();
        let d = rx
            .wait_for(|d| d.failed || d.generation >= generation)
            .await
            .map_err(|_| gone(&self.shared))?;
        if d.failed {
            drop(d);
            return Err(gone(&self.shared));
        }
        Ok(())
    }

    /// Waits until everything applied so far is on disk.
    pub async fn flushed(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Barrier(tx)).await?;
        rx.await.map_err(|_| gone(&self.shared))?
    }

    /// Number of committed (durable) audit entries.
    pub fn log_len(&self) -> u64 {
        self.shared.lock_committed().counters.next_log
    }

    /// The audit log's size and root as committed (durable).
    pub fn log_root(&self) -> (u64, Hash) {
        let c = self.shared.lock_committed();
        (c.frontier.size(), c.frontier.root())
    }

    /// Whether the cases of this store still need indexing (a store written before the
    /// `t/` and `pg/` indexes existed). [`Txn::cases_indexed`] marks them done.
    pub fn cases_unindexed(&self) -> bool {
        self.shared.cases_unindexed.load(Ordering::SeqCst)
    }

    /// Sets what signs the receipts changes batch (`Txn::put_message_batching_receipt`):
    /// once per group commit, on the writer thread.
    pub fn set_receipt_sealer(&self, sealer: ReceiptSealer) {
        *lock(&self.shared.sealer) = Some(sealer);
    }

    /// How changes were grouped since open.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            groups: self.shared.groups.load(Ordering::Relaxed),
            changes: self.shared.changes.load(Ordering::Relaxed),
        }
    }

    /// Fails the store from outside (a rollback found after start): every later change and
    /// read is refused.
    pub(crate) fn fail(&self, reason: String) {
        self.shared.fail(reason);
    }

    /// Why the store failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.check().err().map(|e| e.to_string())
    }

    /// Writes a backup of the store as it is now (everything applied so far made durable
    /// first) to a new file `path` (mode 0600), with the node's `files` beside it, while
    /// changes go on (`backup`).
    pub async fn backup(
        &self,
        path: PathBuf,
        files: Vec<(String, Vec<u8>)>,
        now: u64,
    ) -> Result<BackupSummary, StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Msg::Backup(backup::Request {
            path,
            files,
            created_ms: now,
            done,
        }))
        .await?;
        rx.await.map_err(|_| gone(&self.shared))?
    }

    /// Restores the backup at `from` into a new store at `path` (nothing may be there), then
    /// opens it as a node would (schema, log, head) and checks its log has the size and root
    /// the backup names. Returns the backup's header and files (the caller writes those).
    pub async fn restore(
        from: &Path,
        path: &Path,
        opts: StoreOptions,
    ) -> Result<Backup, StoreError> {
        let b = {
            let (from, path) = (from.to_owned(), path.to_owned());
            tokio::task::spawn_blocking(move || {
                let b = Backup::read(&from)?;
                b.write_store(&path)?;
                Ok::<_, StoreError>(b)
            })
            .await
            .map_err(|e| StoreError::Db(format!("restore task failed: {e}")))??
        };
        let node = NodeId::new(&b.header.node).map_err(|_| {
            StoreError::Damaged(format!("the backup names node {:?}", b.header.node))
        })?;
        let store = Self::open(path, opts, node).await?;
        let (size, root) = store.log_root();
        store.close().await?;
        if size != b.header.log_size || hex::encode(root) != b.header.log_root {
            return Err(StoreError::Damaged(format!(
                "the restored log has {size} entries with root {}, the backup names {} with \
                 root {}",
                hex::encode(root),
                b.header.log_size,
                b.header.log_root
            )));
        }
        Ok(b)
    }

    /// Flushes, syncs the log head and stops the writer; later changes are refused.
    pub async fn close(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }
}

/// A message record as stored: the envelope is left out when the log entry the record
/// names holds it (every entry small enough to hold it does).
pub(crate) fn encode_message(rec: &MessageRecord) -> Vec<u8> {
    let in_log = rec.log_index.is_some()
        && rec.envelope.len() + 128 <= liaison_protocol::audit::MAX_ENTRY_LEN;
    encode_record(&records::MessageRecordRef::new(rec, !in_log))
}

/// The envelope held by audit entry `index` (a message's sent, received or relayed entry).
pub(crate) fn envelope_of_entry(index: u64, entry: Option<Vec<u8>>) -> Result<Vec<u8>, StoreError> {
    let corrupt = |problem: String| StoreError::Corrupt {
        key: format!("l/{index}"),
        problem,
    };
    let bytes =
        entry.ok_or_else(|| corrupt("the entry holding a message's envelope is missing".into()))?;
    let e = liaison_protocol::audit::Entry::decode(&bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(e.object)
}

/// Brings a store of schema `found` to [`SCHEMA_VERSION`], one step at a time; each step ends
/// with the new version written and flushed, so a crash in the middle redoes only that step
/// (every step can be run again on its own output).
fn migrate(db: &sled::Db, found: u32) -> Result<(), StoreError> {
    for from in found..SCHEMA_VERSION {
        tracing::info!(from, to = from + 1, "migrating the store schema");
        match from {
            1 => migrate_1_to_2(db)?,
            _ => {
                return Err(StoreError::Schema {
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
        }
        db.insert(K_SCHEMA, &(from + 1).to_be_bytes()[..])?;
        db.flush()?;
    }
    Ok(())
}

/// 1 → 2: a store written before interior tree nodes were kept (no `meta/tree`) gets them
/// built from its leaves; the marker goes.
fn migrate_1_to_2(db: &sled::Db) -> Result<(), StoreError> {
    if db.get(K_TREE)?.is_none() {
        let n = counters_of(db)?.next_log;
        build_nodes(db, n)?;
    }
    db.remove(K_TREE)?;
    Ok(())
}

fn counters_of(db: &sled::Db) -> Result<Counters, StoreError> {
    match db.get(K_COUNTERS)? {
        None => Ok(Counters::default()),
        Some(v) => decode_record(K_COUNTERS, &v),
    }
}

/// Writes every interior node of the first `n` leaves (from `h/`) and returns the frontier.
fn build_nodes(db: &sled::Db, n: u64) -> Result<Frontier, StoreError> {
    let mut frontier = Frontier::new();
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    for kv in db.range(key_u64(b"h/", 0)..key_u64(b"h/", n)) {
        let (k, v) = kv?;
        let leaf = <[u8; 32]>::try_from(&v[..]).map_err(|_| StoreError::Corrupt {
            key: hex::encode(&k),
            problem: "leaf hash is not 32 bytes".into(),
        })?;
        frontier.push_with_nodes(leaf, |h, i, hash| {
            if reader::stored_height(h) {
                batch.insert(node_key(h, i), &hash[..]);
                pending += 1;
            }
        })?;
        if pending >= 10_000 {
            db.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    db.apply_batch(batch)?;
    if frontier.size() != n {
        return Err(StoreError::Corrupt {
            key: "h/".into(),
            problem: format!(
                "{} leaf hashes for {n} audit entries (log truncated or edited?)",
                frontier.size()
            ),
        });
    }
    Ok(frontier)
}

thread_local! {
    /// Set while this thread opens sled, so the panic hook stays quiet about sled's panics
    /// on damaged files (they become a `Damaged` error).
    static OPENING: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once) a panic hook that silences panics on a thread opening the store and
/// passes every other panic to the hook that was there before.
fn quiet_open_panics() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !OPENING.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into())
}

fn damaged(path: &Path, what: &str) -> StoreError {
    StoreError::Damaged(format!(
        "the store at {} is damaged ({what}); do not start from it: restore the data \
         directory from its newest backup",
        path.display()
    ))
}

fn open_db(path: &Path, opts: &StoreOptions, node: NodeId) -> Result<Shared, StoreError> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(opts.cache_bytes)
        .mode(sled::Mode::HighThroughput);
    // A store closed a moment ago (a restart in the same process, or a previous process
    // still exiting) releases its file lock shortly: wait a little for it.
    let mut tries = 0;
    quiet_open_panics();
    let db = loop {
        OPENING.with(|o| o.set(true));
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        OPENING.with(|o| o.set(false));
        match opened {
            Ok(Ok(db)) => break db,
            Ok(Err(sled::Error::Io(e)))
                if e.to_string().contains("acquire lock") && tries < 100 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Ok(Err(sled::Error::Corruption { .. })) => {
                return Err(damaged(path, "sled reports corruption"));
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(p) => return Err(damaged(path, &format!("sled: {}", panic_text(&*p)))),
        }
    };
    let fresh = db.get(K_SCHEMA)?.is_none();
    if fresh {
        db.insert(K_SCHEMA, &SCHEMA_VERSION.to_be_bytes()[..])?;
        db.insert(K_RETENTION, &opts.body_retention_ms.to_be_bytes()[..])?;
        db.insert(keys::K_CASES, &[1u8][..])?;
        db.flush()?;
    } else {
        let found = db
            .get(K_SCHEMA)?
            .and_then(|v| <[u8; 4]>::try_from(&v[..]).ok())
            .map_or(0, u32::from_be_bytes);
        if found == 0 || found > SCHEMA_VERSION {
            return Err(StoreError::Schema {
                found,
                expected: SCHEMA_VERSION,
            });
        }
        migrate(&db, found)?;
    }
    let counters = counters_of(&db)?;
    // The last leaf is the last entry: nothing missing at the end, nothing beyond it.
    let last_leaf = match db.scan_prefix(b"h/").next_back() {
        None => None,
        Some(kv) => Some(keys::parse_u64_suffix(&kv?.0, 2).unwrap_or(u64::MAX)),
    };
    let expected_last = counters.next_log.checked_sub(1);
    if last_leaf != expected_last {
        return Err(StoreError::Corrupt {
            key: "h/".into(),
            problem: format!(
                "the last leaf hash is {} but the log counter says {} entries (log truncated \
                 or edited?)",
                last_leaf.map_or("none".into(), |i| format!("entry {i}'s")),
                counters.next_log
            ),
        });
    }
    let frontier = Frontier::from_source(&Tree { db: &db }, counters.next_log)?;
    // The log head: never less than what this node committed before.
    let head_path = opts
        .head
        .clone()
        .unwrap_or_else(|| path.with_file_name("log-head"));
    let (mut head, last) = head::HeadFile::open(&head_path)?;
    match last {
        Some(h) => check_head(&db, path, &head_path, counters.next_log, h)?,
        None if !fresh => tracing::warn!(
            head = %head_path.display(),
            "the log head is missing: this store cannot be checked for going back in time \
             (a new one is written now); if it was deleted, restore it with the data directory"
        ),
        None => {}
    }
    head.write(frontier.size(), frontier.root())?;
    head.sync()?;
    // The retention index, built with this node's retention (again if it changed).
    let retention = db
        .get(K_RETENTION)?
        .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
        .map(u64::from_be_bytes);
    if retention != Some(opts.body_retention_ms) {
        build_retention_index(&db, opts.body_retention_ms)?;
    }
    let cases_unindexed = db.get(keys::K_CASES)?.is_none();
    let (durable, _) = watch::channel(Durable::default());
    Ok(Shared {
        cases_unindexed: std::sync::atomic::AtomicBool::new(cases_unindexed),
        db,
        node,
        retention_ms: opts.body_retention_ms,
        committed: Mutex::new(Committed { counters, frontier }),
        applying: AtomicU64::new(0),
        durable,
        failure: Mutex::new(None),
        #[cfg(any(test, feature = "test-hooks"))]
        fault: Mutex::new(Fault::None),
        head: Mutex::new(head),
        groups: AtomicU64::new(0),
        changes: AtomicU64::new(0),
        sealer: Mutex::new(None),
    })
}

/// Refuses a store whose log is behind, or beside, the head this node last committed.
fn check_head(
    db: &sled::Db,
    path: &Path,
    head_path: &Path,
    entries: u64,
    h: head::Head,
) -> Result<(), StoreError> {
    let behind = |problem: String| StoreError::RolledBack {
        problem,
        store: path.display().to_string(),
        head: head_path.display().to_string(),
    };
    if h.size > entries {
        return Err(behind(format!(
            "its audit log holds {entries} entries but this node had committed {} (entries \
             {entries}..{} are missing, and with them whatever they recorded: messages \
             received and receipted, acknowledgements, checkpoints)",
            h.size,
            h.size - 1
        )));
    }
    let root = merkle::root_with(&Tree { db }, h.size)?;
    if root != h.root {
        return Err(behind(format!(
            "its first {} audit entries hash to {} but this node had committed {} for them \
             (the log was rewritten)",
            h.size,
            hex::encode(root),
            hex::encode(h.root)
        )));
    }
    Ok(())
}

fn build_retention_index(db: &sled::Db, retention_ms: u64) -> Result<(), StoreError> {
    for k in db.scan_prefix(b"rb/").keys() {
        db.remove(k?)?;
    }
    // Bodies with their own retention are indexed; the others are found by the log walk.
    let mut batch = sled::Batch::default();
    for kv in db.scan_prefix(b"m/") {
        let (k, v) = kv?;
        let Some(d) = k.get(2..34).and_then(|b| <[u8; 32]>::try_from(b).ok()) else {
            continue;
        };
        let digest = Digest(d);
        let rec: MessageRecord = decode_record(&k, &v)?;
        let Some(own) = rec.retain_ms else { continue };
        let held = rec.body.is_some() || db.get(keys::key_digest(b"b/", &digest))?.is_some();
        if held {
            batch.insert(
                retention_key(rec.stored_at.saturating_add(own.min(retention_ms)), &digest),
                &[][..],
            );
        }
    }
    batch.insert(K_RETENTION, &retention_ms.to_be_bytes()[..]);
    // Bodies postponed earlier lost their index entry above: the log walk starts over and
    // finds them (and passes quickly over what is purged already).
    batch.remove(keys::K_PURGE);
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests;
