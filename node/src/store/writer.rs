//! The writer: one thread that owns every sled write. It takes every change waiting at the
//! same time, runs them one after the other against one [`Group`] (each sees the writes of
//! those before it) and applies the group as one sled batch; a second thread, the flusher,
//! flushes and only then answers the group's changes. While one group is flushed the next
//! is built and applied (it sees the writes of the one before, which sled holds), and while
//! a group waits its turn the next changes queue up: the number of flushes falls as load
//! rises without any timer. Groups are answered in the order they were applied; a flush
//! covers every group applied before it.
//!
//! Failure rules: a change that returns an error (or panics) leaves nothing of itself in
//! the group and gets its error. A failed apply or flush fails every change of the group,
//! and the store refuses every change and read from then on until it is opened again: sled
//! keeps a failed batch readable in memory, so answering from it would vouch for data that
//! may never reach the disk.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as sync_mpsc;

use tokio::sync::{mpsc, oneshot};
use tracing::error;

use super::Shared;
use super::backup::{self, Job};
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
    #[cfg_attr(not(any(test, feature = "test-hooks")), allow(dead_code))]
    Exclusive(Box<dyn FnOnce(&Shared) + Send>),
    /// Starts a backup of the store as it is once everything applied is durable; it is
    /// copied between groups (`backup`).
    Backup(backup::Request),
    /// Flush, sync the log head, answer and stop.
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// A group applied and waiting for its flush.
struct Applied {
    generation: u64,
    kept: Vec<Done>,
    /// The group wrote something (else it needs no flush of its own).
    wrote: bool,
    counters: super::records::Counters,
    frontier: liaison_protocol::merkle::Frontier,
    checkpoint: bool,
}

/// Work for the flusher, in the order the writer applied it.
enum Flush {
    Group(Applied),
    /// Answered once every group before it is durable.
    Barrier(oneshot::Sender<Result<(), StoreError>>),
    /// Flush, sync the log head, answer and stop.
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// Groups applied ahead of the one being flushed, at most (a bound on memory and latency).
const PIPELINE: usize = 2;

pub(super) fn run(shared: Arc<Shared>, rx: mpsc::Receiver<Msg>) {
    let s2 = shared.clone();
    if catch_unwind(AssertUnwindSafe(move || run_inner(s2, rx))).is_err() {
        shared.fail("the store's writer thread panicked".into());
    }
}

fn run_inner(shared: Arc<Shared>, mut rx: mpsc::Receiver<Msg>) {
    let (ftx, frx) = sync_mpsc::sync_channel::<Flush>(PIPELINE);
    let flusher = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("flush-{}", shared.node))
            .spawn(move || {
                // A panic outside the guarded calls fails the store rather than leaving its
                // callers waiting.
                if catch_unwind(AssertUnwindSafe(|| flush_loop(&shared, &frx))).is_err() {
                    shared.fail("the store's flusher thread panicked".into());
                }
            })
    };
    let Ok(flusher) = flusher else {
        shared.fail("cannot start the store's flusher thread".into());
        return;
    };
    // The state the next group builds on: applied, possibly not yet durable.
    let (mut counters, mut frontier) = {
        let c = shared.lock_committed();
        (c.counters, c.frontier.clone())
    };
    let mut generation = shared.applying.load(Ordering::SeqCst);
    // Everything applied so far is durable (before an exclusive task, at close).
    let quiesce = |ftx: &sync_mpsc::SyncSender<Flush>| {
        let (tx, rx) = oneshot::channel();
        if ftx.send(Flush::Barrier(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    };
    // A backup under way: a chunk is copied whenever the queue is empty, and after each group.
    let mut job: Option<Box<Job>> = None;
    loop {
        let first = if job.is_some() {
            match rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Empty) => {
                    job = job.take().and_then(|j| j.step(&shared.db));
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        } else {
            rx.blocking_recv()
        };
        let Some(first) = first else { break };
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
        let mut backups = Vec::new();
        for m in msgs {
            match m {
                Msg::Change { now, run } => changes.push((now, run)),
                Msg::Barrier(tx) => barriers.push(tx),
                Msg::Exclusive(f) => exclusive.push(f),
                Msg::Backup(req) => backups.push(req),
                Msg::Close(tx) => close = Some(tx),
            }
        }
        if !changes.is_empty() {
            generation += 1;
            if let Some(a) = build_and_apply(
                &shared,
                generation,
                changes,
                &mut counters,
                &mut frontier,
                &mut job,
            ) {
                if ftx.send(Flush::Group(a)).is_err() {
                    shared.fail("the store's flusher stopped".into());
                }
            }
        }
        for b in barriers {
            let _ = ftx.send(Flush::Barrier(b));
        }
        for req in backups {
            if job.is_some() {
                let _ = req.done.send(Err(StoreError::Db(
                    "a backup is already under way: wait for it to finish".into(),
                )));
                continue;
            }
            // The backup is of the state once everything applied so far is durable.
            quiesce(&ftx);
            if let Err(e) = shared.check() {
                let _ = req.done.send(Err(e));
                continue;
            }
            let log = {
                let c = shared.lock_committed();
                (c.frontier.size(), c.frontier.root())
            };
            job = Job::start(req, shared.node.as_str(), super::SCHEMA_VERSION, log);
        }
        if let Some(j) = job.take() {
            job = j.step(&shared.db);
        }
        if !exclusive.is_empty() {
            if let Some(j) = job.take() {
                j.abort(StoreError::Db(
                    "the store was rewritten by a maintenance task during the backup".into(),
                ));
            }
            quiesce(&ftx);
            for f in exclusive {
                if catch_unwind(AssertUnwindSafe(|| f(&shared))).is_err() {
                    shared.fail("a maintenance task on the store panicked".into());
                }
            }
            // A maintenance task may rewrite what the log derives from: start from it.
            let c = shared.lock_committed();
            counters = c.counters;
            frontier = c.frontier.clone();
        }
        if let Some(tx) = close {
            if let Some(j) = job.take() {
                j.abort(StoreError::Closed);
            }
            let _ = ftx.send(Flush::Close(tx));
            break;
        }
    }
    if let Some(j) = job.take() {
        j.abort(StoreError::Closed);
    }
    drop(ftx);
    let _ = flusher.join();
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
        Msg::Backup(req) => {
            let _ = req.done.send(Err(e.clone()));
        }
        Msg::Change { .. } | Msg::Exclusive(_) => {}
    }
}

fn fail_all(kept: Vec<Done>, e: &StoreError) {
    for d in kept {
        if let Some(s) = d.staged {
            s(Err(e.clone()));
        }
        (d.finish)(Err(e.clone()));
    }
}

/// Builds one group on the applied state and applies it; hands it to the flusher.
fn build_and_apply(
    shared: &Shared,
    generation: u64,
    changes: Vec<(u64, Change)>,
    counters: &mut super::records::Counters,
    frontier: &mut liaison_protocol::merkle::Frontier,
    job: &mut Option<Box<Job>>,
) -> Option<Applied> {
    if shared.check().is_err() {
        // Dropping a change drops its answer channels: its caller sees the store failed.
        return None;
    }
    let mut group = Group::new(
        &shared.db,
        &shared.node,
        shared.retention_ms,
        *counters,
        frontier.clone(),
    );
    let mut kept: Vec<Done> = Vec::with_capacity(changes.len());
    let last_now = changes
        .iter()
        .map(|(now, _)| *now)
        .max()
        .unwrap_or_default();
    for (now, run) in changes {
        let outcome = {
            let mut txn = group.txn(now);
            let done = catch_unwind(AssertUnwindSafe(|| run(&mut txn)));
            (done, txn.into_parts())
        };
        match outcome {
            (Ok(Some(done)), parts) => match group.merge(parts) {
                Ok(()) => kept.push(done),
                Err(e) => fail_all(vec![done], &e),
            },
            // The change failed and answered itself; nothing of it stays.
            (Ok(None), _) => {}
            (Err(_), _) => {
                error!("a store change panicked; it was dropped and its caller told");
            }
        }
    }
    // One signature for every receipt the group gives (protocol.md §4.3a).
    let sealed = {
        let sealer = super::lock(&shared.sealer);
        catch_unwind(AssertUnwindSafe(|| group.seal(sealer.as_ref(), last_now)))
            .unwrap_or_else(|_| Err(StoreError::Db("signing the receipt batch panicked".into())))
    };
    if let Err(e) = sealed {
        // Nothing of the group is applied; its changes get the error, the store goes on.
        error!(error = %e, "cannot sign the group's receipts");
        fail_all(kept, &e);
        return None;
    }
    let wrote = !group.is_empty();
    let next_counters = group.counters;
    let next_frontier = group.frontier.clone();
    let checkpoint = group.checkpoint;
    if wrote {
        // A backup keeps what this group overwrites before the copy reaches it.
        if let Some(j) = job.as_mut() {
            if let Err(e) = j.before_apply(&shared.db, group.keys()) {
                if let Some(j) = job.take() {
                    j.abort(e);
                }
            }
        }
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
            fail_all(kept, &e);
            return None;
        }
        *counters = next_counters;
        *frontier = next_frontier.clone();
    }
    for d in &mut kept {
        if let Some(s) = d.staged.take() {
            s(Ok(()));
        }
    }
    // Even a group that wrote nothing is answered by the flusher: what it read may be a
    // group applied just before, not yet durable.
    Some(Applied {
        generation,
        kept,
        wrote,
        counters: next_counters,
        frontier: next_frontier,
        checkpoint,
    })
}

/// The flusher: one flush for every group waiting, then the answers, in order.
fn flush_loop(shared: &Shared, rx: &sync_mpsc::Receiver<Flush>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        let needs_flush = batch
            .iter()
            .any(|m| matches!(m, Flush::Group(a) if a.wrote) || matches!(m, Flush::Close(_)));
        let flushed = if shared.check().is_err() || !needs_flush {
            shared.check()
        } else {
            shared.fault_before_flush().and_then(|()| {
                catch_unwind(AssertUnwindSafe(|| shared.db.flush()))
                    .map_err(|_| StoreError::Db("sled panicked flushing".into()))?
                    .map(|_| ())
                    .map_err(StoreError::from)
            })
        };
        if let Err(e) = &flushed {
            if shared.check().is_ok() {
                shared.fail(e.to_string());
            }
        }
        let mut stop = false;
        for m in batch {
            match m {
                Flush::Group(a) => match &flushed {
                    Ok(()) => publish(shared, a),
                    Err(e) => fail_all(a.kept, e),
                },
                Flush::Barrier(tx) => {
                    let _ = tx.send(shared.check());
                }
                Flush::Close(tx) => {
                    let res = flushed.clone().and_then(|()| shared.lock_head().sync());
                    let _ = tx.send(res);
                    stop = true;
                }
            }
        }
        if stop {
            break;
        }
    }
}

/// A group is durable: publish the new log, then the head (after the data, so it never
/// claims more than the disk holds), then answer.
fn publish(shared: &Shared, a: Applied) {
    if a.wrote {
        let root = a.frontier.root();
        let size = a.frontier.size();
        {
            let mut c = shared.lock_committed();
            c.counters = a.counters;
            c.frontier = a.frontier;
        }
        let head = {
            let mut h = shared.lock_head();
            h.write(size, root)
                .and_then(|()| if a.checkpoint { h.sync() } else { Ok(()) })
        };
        if let Err(e) = head {
            // The data is durable; only the rollback check is weaker until the next write.
            error!(error = %e, "cannot write the log head");
        }
        shared.groups.fetch_add(1, Ordering::Relaxed);
        shared
            .changes
            .fetch_add(a.kept.len() as u64, Ordering::Relaxed);
        // Only the generation moves: a failure marked meanwhile must stay marked.
        shared
            .durable
            .send_modify(|d| d.generation = d.generation.max(a.generation));
    }
    for d in a.kept {
        (d.finish)(Ok(()));
    }
}
