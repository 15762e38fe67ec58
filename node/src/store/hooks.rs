//! Hooks that break the store's guarantees on purpose, for fault and tamper tests only
//! (`test-hooks` feature): injected disk faults, raw edits of the log as an attacker with
//! the files could make them.

use tokio::sync::oneshot;

use super::keys::{K_COUNTERS, key_u64};
use super::records::encode_record;
use super::writer::Msg;
use super::{Committed, Fault, Shared, Store, build_nodes, counters_of, gone, lock};
use crate::error::StoreError;
use liaison_protocol::merkle;

impl Store {
    /// Makes later applies or flushes fail as a full disk would, until turned off. A failure
    /// marks the store failed, as a real one does. For fault tests.
    pub fn dangerous_inject_fault(&self, fault: Fault) {
        *lock(&self.shared.fault) = fault;
    }

    /// Runs `f` alone on the writer thread with the raw database, then rebuilds what the
    /// store derives from the log (interior nodes, counters, frontier, head): what an
    /// attacker with the raw files could do. For tamper tests only.
    async fn dangerous_edit(
        &self,
        f: impl FnOnce(&sled::Db) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Exclusive(Box::new(move |shared: &Shared| {
            let res = f(&shared.db).and_then(|()| rederive(shared));
            let _ = tx.send(res);
        })))
        .await?;
        rx.await.map_err(|_| gone(&self.shared))?
    }

    /// Overwrites a stored audit entry (and, with `leaf`, its leaf hash and the interior
    /// nodes above it too), bypassing every check. For tamper tests only.
    pub async fn dangerous_overwrite_entry(
        &self,
        index: u64,
        bytes: Vec<u8>,
        leaf: bool,
    ) -> Result<(), StoreError> {
        self.dangerous_edit(move |db| {
            db.insert(key_u64(b"l/", index), bytes.as_slice())?;
            if leaf {
                db.insert(key_u64(b"h/", index), &merkle::leaf_hash(&bytes)[..])?;
            }
            Ok(())
        })
        .await
    }

    /// Deletes audit entries from `from` on, as a node rolling its log back would (its
    /// signed checkpoints stay). For tamper tests only.
    pub async fn dangerous_truncate_log(&self, from: u64) -> Result<(), StoreError> {
        self.dangerous_edit(move |db| {
            let n = counters_of(db)?.next_log;
            for i in from..n {
                db.remove(key_u64(b"l/", i))?;
                db.remove(key_u64(b"h/", i))?;
            }
            let mut c = counters_of(db)?;
            c.next_log = from.min(c.next_log);
            db.insert(K_COUNTERS, encode_record(&c))?;
            Ok(())
        })
        .await
    }
}

/// After a raw edit: interior nodes from the leaves, counters and frontier, and a head that
/// matches (an attacker rewrites it too).
fn rederive(shared: &Shared) -> Result<(), StoreError> {
    let db = &shared.db;
    let counters = counters_of(db)?;
    for k in db.scan_prefix(b"n/").keys() {
        db.remove(k?)?;
    }
    let frontier = build_nodes(db, counters.next_log)?;
    db.flush()?;
    let mut head = shared.lock_head();
    head.write(frontier.size(), frontier.root())?;
    head.sync()?;
    drop(head);
    *shared.lock_committed() = Committed { counters, frontier };
    Ok(())
}
