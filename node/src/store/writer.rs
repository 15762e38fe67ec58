//! The writer: one thread that owns every sled write. It takes every change waiting at the
//! same time, runs them one after the other against one [`Group`] (each sees the writes of
//! those before it), applies the group as one sled batch, flushes once, and only then
//! answers them all. While it flushes, the next changes queue up: that queue is the next
//! group, so the number of flushes falls as load rises without any timer.
//!
//! Failure rules: a change that returns an error (or panics) leaves nothing of itself in
//! the group and gets its error. A failed apply or flush fails every change of the group,
//! and the store refuses every change and read from then on until it is opened again: sled
//! keeps a failed batch readable in memory, so answering from it would vouch for data that
//! may never reach the disk.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};
use tracing::error;

use super::Shared;
use super::txn::{Group, Txn};
use crate::error::StoreError;

/// Most changes in one group (a bound on memory and on the latency of the first).
const MAX_GROUP: usize = 4096;

/// Told whether a group was applied or flushed.
pub(super) type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// What a kept change does once its group is staged and once it is durable (or failed).
pub(super) struct Done {
    pub(super) staged: Option<Answer>,
    pub(super) finish: Answer,
}

/// A change: runs on the writer thread; returns how to answer it if it was kept, or None
/// if it failed (it has answered its error itself).
pub(super) type Change = Box<dyn FnOnce(&mut Txn<'_>) -> Option<Done> + Send>;

/// Work for the writer.
pub(super) enum Msg {
    /// A change made at `now` (Unix ms, for its audit entries).
    Change { now: u64, run: Change },
    /// Answered once everything applied before it is durable.
    Barrier(oneshot::Sender<Result<(), StoreError>>),
    /// Runs alone between groups, with the database (tamper tests, maintenance).
    Exclusive(Box<dyn FnOnce(&Shared) + Send>),
    /// Flush, sync the log head, answer and stop.
    Close(oneshot::Sender<Result<(), StoreError>>),
}

pub(super) fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Msg>) {
    let mut generation = shared.applying.load(Ordering::SeqCst);
    while let Some(first) = rx.blocking_recv() {
        let mut msgs = vec![first];
        while msgs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        let mut changes = Vec::with_capacity(msgs.len());
        let mut barriers = Vec::new();
        let mut close = None;
        let mut exclusive = Vec::new();
        for m in msgs {
            match m {
                Msg::Change { now, run } => changes.push((now, run)),
                Msg::Barrier(tx) => barriers.push(tx),
                Msg::Exclusive(f) => exclusive.push(f),
                Msg::Close(tx) => close = Some(tx),
            }
        }
        if !changes.is_empty() {
            generation += 1;
            commit(&shared, generation, changes);
        }
        for b in barriers {
            let _ = b.send(shared.check());
        }
        for f in exclusive {
            if catch_unwind(AssertUnwindSafe(|| f(&shared))).is_err() {
                shared.fail("a maintenance task on the store panicked".into());
            }
        }
        if let Some(tx) = close {
            let res = shared.check().and_then(|()| {
                shared.db.flush()?;
                shared.lock_head().sync()
            });
            let _ = tx.send(res);
            break;
        }
    }
    // Changes still queued after a close (or when every handle is gone) are refused.
    rx.close();
    while let Ok(m) = rx.try_recv() {
        refuse(m, &StoreError::Closed);
    }
}

/// Answers a message that will not run. A change's answer channels are dropped with it,
/// which its caller reads as the store closed or failed.
fn refuse(m: Msg, e: &StoreError) {
    match m {
        Msg::Barrier(tx) | Msg::Close(tx) => {
            let _ = tx.send(Err(e.clone()));
        }
        Msg::Change { .. } | Msg::Exclusive(_) => {}
    }
}

/// Builds, applies and flushes one group, then answers its changes.
fn commit(shared: &Shared, generation: u64, changes: Vec<(u64, Change)>) {
    if shared.check().is_err() {
        // Dropping a change drops its answer channels: its caller sees the store failed.
        return;
    }
    let (counters, frontier) = {
        let c = shared.lock_committed();
        (c.counters, c.frontier.clone())
    };
    let mut group = Group::new(
        &shared.db,
        &shared.node,
        shared.retention_ms,
        counters,
        frontier,
    );
    let mut kept: Vec<Done> = Vec::with_capacity(changes.len());
    for (now, run) in changes {
        let outcome = {
            let mut txn = group.txn(now);
            let done = catch_unwind(AssertUnwindSafe(|| run(&mut txn)));
            (done, txn.into_parts())
        };
        match outcome {
            (Ok(Some(done)), parts) => match group.merge(parts) {
                Ok(()) => kept.push(done),
                Err(e) => {
                    if let Some(s) = done.staged {
                        s(Err(e.clone()));
                    }
                    (done.finish)(Err(e));
                }
            },
            // The change failed and answered itself; nothing of it stays.
            (Ok(None), _) => {}
            (Err(_), _) => {
                error!("a store change panicked; it was dropped and its caller told");
            }
        }
    }
    let fail_all = |kept: Vec<Done>, e: StoreError| {
        for d in kept {
            if let Some(s) = d.staged {
                s(Err(e.clone()));
            }
            (d.finish)(Err(e.clone()));
        }
    };
    if group.is_empty() {
        // Nothing to write: everything the changes read was durable already.
        for d in kept {
            if let Some(s) = d.staged {
                s(Ok(()));
            }
            (d.finish)(Ok(()));
        }
        return;
    }
    let next_counters = group.counters;
    let next_frontier = group.frontier.clone();
    let checkpoint = group.checkpoint;
    let batch = group.into_batch();

    // Apply: the group becomes visible to readers (not yet durable).
    shared.applying.store(generation, Ordering::SeqCst);
    let applied = shared.fault_before_apply().and_then(|()| {
        catch_unwind(AssertUnwindSafe(|| shared.db.apply_batch(batch)))
            .map_err(|_| StoreError::Db("sled panicked applying a batch".into()))?
            .map_err(StoreError::from)
    });
    if let Err(e) = applied {
        shared.fail(e.to_string());
        fail_all(kept, e);
        return;
    }
    for d in &mut kept {
        if let Some(s) = d.staged.take() {
            s(Ok(()));
        }
    }

    // Flush: one fsync for the whole group.
    let flushed = shared.fault_before_flush().and_then(|()| {
        catch_unwind(AssertUnwindSafe(|| shared.db.flush()))
            .map_err(|_| StoreError::Db("sled panicked flushing".into()))?
            .map(|_| ())
            .map_err(StoreError::from)
    });
    if let Err(e) = flushed {
        shared.fail(e.to_string());
        fail_all(kept, e);
        return;
    }
    // Durable: publish the new log, then the head (after the data, so it never claims more
    // than the disk holds), then answer.
    let root = next_frontier.root();
    let size = next_frontier.size();
    {
        let mut c = shared.lock_committed();
        c.counters = next_counters;
        c.frontier = next_frontier;
    }
    let head = {
        let mut h = shared.lock_head();
        h.write(size, root)
            .and_then(|()| if checkpoint { h.sync() } else { Ok(()) })
    };
    if let Err(e) = head {
        // The data is durable; only the rollback check is weaker until the next write.
        error!(error = %e, "cannot write the log head");
    }
    shared.groups.fetch_add(1, Ordering::Relaxed);
    shared
        .changes
        .fetch_add(kept.len() as u64, Ordering::Relaxed);
    shared.durable.send_replace(super::Durable {
        generation,
        failed: false,
    });
    for d in kept {
        (d.finish)(Ok(()));
    }
}
