//! The node's audit log as evidence: signed checkpoints, inclusion proofs (evidence
//! bundles) and a full re-verification of the stored log.
//!
//! Proofs come from the interior nodes the store keeps (`n/`), so they cost O(log n) reads
//! whatever the log's size. Whole-log work (`audit verify`, case evidence) runs on a
//! blocking thread, never on the async workers; `audit verify` checks the signatures of a
//! chunk of entries on every core, each with `verify_strict`.

mod case;
#[cfg(test)]
mod tests;
pub(crate) mod witness;

use std::sync::Arc;

use liaison_protocol::audit::{Entry, EntryKind};
use liaison_protocol::evidence::Evidence;
use liaison_protocol::merkle::{self, Frontier, Hash, MerkleError};
use liaison_protocol::note::{Checkpoint, MAX_NOTE_LEN, SignedNote};
use liaison_protocol::{Envelope, MessageId, NodeId, PublicKey, SignedRoster};
use serde::Serialize;

use crate::bus::Bus;
use crate::error::{NodeError, StoreError};
use crate::store::Reader;

/// The audit side of the node: the log as evidence (checkpoints signed with the log key,
/// inclusion proofs, case evidence, re-verification, retention purge) and witnessing (rounds
/// as a log, cosigning peers' checkpoints with the witness key). Holds the bus; the bus
/// reaches it only through [`crate::bus::hook::AuditHook`], installed at start.
pub(crate) struct Audit {
    /// The bus: roster, store, endpoint.
    pub(crate) bus: Arc<Bus>,
    /// Witness conflicts seen since start (also in the audit log).
    pub(crate) conflicts: std::sync::Mutex<u64>,
    /// One witness round at a time.
    pub(crate) witness_round: tokio::sync::Mutex<()>,
    /// Witnesses not yet asked since start how much of the log they cosigned, with the log's
    /// size at start (asked once a connection shows them up).
    pub(crate) size_checks: std::sync::Mutex<std::collections::HashMap<NodeId, u64>>,
    /// Set by a tamper test that rolls the log back on purpose: the node does not check
    /// itself against its witnesses (so the witnesses' own checks are what is tested).
    pub(crate) no_self_check: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("node", &self.bus.id).finish()
    }
}

impl Audit {
    /// The audit owner of `bus`: it signs checkpoints with the bus's log key and cosigns with
    /// its witness key (`bus.keys`, switched when a roster rotates them).
    pub(crate) fn new(bus: Arc<Bus>) -> Self {
        Self {
            bus,
            conflicts: std::sync::Mutex::new(0),
            witness_round: tokio::sync::Mutex::new(()),
            size_checks: std::sync::Mutex::new(std::collections::HashMap::new()),
            no_self_check: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Now, by the node's clock.
    pub(crate) fn now(&self) -> u64 {
        self.bus.now()
    }
}

/// Purges one body whose retention ended, in the change `t`: returns whether it did. A body
/// still waiting in an outbox or an inbox is put in the retention index for later.
fn purge_one(
    t: &mut crate::store::Txn<'_>,
    digest: &liaison_protocol::Digest,
    now: u64,
) -> Result<bool, StoreError> {
    let Some(rec) = t.message(digest)? else {
        return Ok(false);
    };
    if !t.has_body(digest)? {
        return Ok(false);
    }
    if rec.out_key.is_some() || (rec.inbox_seq.is_some() && !rec.handed_over) {
        t.postpone_body(digest, None, now.saturating_add(PURGE_RETRY_MS));
        return Ok(false);
    }
    let id = Envelope::peek_unverified(&rec.envelope).map(|(_, h)| h.id.0);
    t.purge_body(digest)?;
    t.log(
        EntryKind::BodyPurged,
        liaison_protocol::audit::event_record(
            "retention ended",
            None,
            Some(&digest.0),
            id.as_ref(),
        ),
    );
    Ok(true)
}

/// Entries read per batch while verifying.
const CHUNK: u64 = 16_384;
/// Bodies purged per change.
const PURGE_BATCH: usize = 512;
/// A body still waiting in an outbox or an inbox when its retention ends is looked at again
/// this much later.
const PURGE_RETRY_MS: u64 = 3600 * 1000;

/// The result of `audit verify`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AuditReport {
    /// Entries checked.
    pub entries: u64,
    /// Recomputed root of the whole log (hex).
    pub root: String,
    /// Size of the latest checkpoint, if any.
    pub checkpoint_size: Option<u64>,
    /// Signed objects whose signatures were checked.
    pub signatures_checked: u64,
    /// The first problem found: (entry index, what is wrong). None when all is well.
    pub first_problem: Option<(u64, String)>,
}

impl From<MerkleError> for NodeError {
    fn from(e: MerkleError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl Audit {
    fn log_origin(&self) -> String {
        format!("{}/log", self.bus.id())
    }

    /// Signs a checkpoint of the log as committed now (unless the newest one already covers
    /// it) and returns it as a signed note.
    pub(crate) async fn checkpoint(&self) -> Result<String, NodeError> {
        let store = &self.bus.store;
        let (size, root) = store.log_root();
        if let Some((s, note)) = store.read(|r| r.latest_checkpoint()).await? {
            if s == size {
                return Ok(note);
            }
        }
        let origin = self.log_origin();
        let cp = Checkpoint::new(origin.clone(), size, root)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let note = SignedNote::sign_checkpoint(&cp, &origin, &self.bus.keys.log.get())
            .map_err(|e| NodeError::Invalid(e.to_string()))?
            .to_text();
        let text = note.clone();
        store
            .write(self.now(), move |t| {
                // A note of this size already stored may carry cosignatures: keep it.
                if t.checkpoint_at(size)?.is_none() {
                    t.put_checkpoint(size, &text);
                }
                Ok(())
            })
            .await?;
        Ok(store
            .read(move |r| r.checkpoint_at(size))
            .await?
            .unwrap_or(note))
    }

    /// Whether the log has entries other than witnessing records since its newest checkpoint.
    pub(crate) async fn grew_since_checkpoint(&self) -> Result<bool, NodeError> {
        let n = self.bus.log_len();
        Ok(self
            .bus
            .store
            .read(move |r| {
                let from = r.latest_checkpoint()?.map_or(0, |(size, _)| size);
                if from == 0 {
                    return Ok(n > 0);
                }
                for (i, b) in r.log_entries(from, n)? {
                    let e = Entry::decode(&b).map_err(|e| StoreError::Corrupt {
                        key: format!("l/{i}"),
                        problem: e.to_string(),
                    })?;
                    if !matches!(
                        e.kind,
                        EntryKind::WitnessCosigned
                            | EntryKind::WitnessConflict
                            | EntryKind::CheckpointCosigned
                    ) {
                        return Ok(true);
                    }
                }
                Ok(false)
            })
            .await?)
    }

    /// Deletes the bodies whose retention ended before `now`, each with a `body_purged`
    /// audit entry in the same change: those with their own retention (an officer action's)
    /// from the retention index, the others by walking the log from where the last purge
    /// stopped, as far as the node's `body_retention_ms` reaches. A body still waiting in an
    /// outbox or an inbox is looked at again an hour later. Envelopes, receipts, entries and
    /// proofs stay: the evidence outlives the data. Returns how many were purged.
    pub(crate) async fn purge_bodies(&self, now: u64) -> Result<u64, NodeError> {
        let store = &self.bus.store;
        let retention = self.bus.body_retention_ms;
        let mut purged = 0;
        // Bodies with a retention of their own, and those postponed earlier.
        loop {
            let due = store.peek(move |r| r.bodies_due(now, PURGE_BATCH)).await?;
            if due.is_empty() {
                break;
            }
            let last = due.len() < PURGE_BATCH;
            purged += store
                .write(now, move |t| {
                    let mut n = 0u64;
                    for (at, digest) in due {
                        t.retention_done(&digest, at);
                        n += u64::from(purge_one(t, &digest, now)?);
                    }
                    Ok(n)
                })
                .await?;
            if last {
                break;
            }
        }
        // The others, in the order they were logged.
        let n = self.bus.log_len();
        loop {
            let batch = store
                .peek(move |r| {
                    let from = r.purge_cursor()?;
                    let to = (from + PURGE_BATCH as u64).min(n);
                    let mut out = Vec::new();
                    for (i, b) in r.log_entries(from, to)? {
                        let Ok(e) = Entry::decode(&b) else {
                            out.push((i, None));
                            continue;
                        };
                        if e.at.saturating_add(retention) > now {
                            break;
                        }
                        let message = matches!(
                            e.kind,
                            EntryKind::MessageSent
                                | EntryKind::MessageReceived
                                | EntryKind::Relayed
                        );
                        let digest = message
                            .then(|| Envelope::peek_unverified(&e.object).map(|(d, _)| d))
                            .flatten();
                        out.push((i, digest));
                    }
                    Ok((from, out))
                })
                .await?;
            let (from, entries) = batch;
            if entries.is_empty() {
                break;
            }
            let next = entries.last().map_or(from, |(i, _)| i + 1);
            let full = entries.len() == PURGE_BATCH;
            purged += store
                .write(now, move |t| {
                    // Another purge moved the walk on meanwhile: nothing to do.
                    if t.purge_cursor()? != from {
                        return Ok(0);
                    }
                    let mut n = 0u64;
                    for (_, digest) in entries {
                        if let Some(d) = digest {
                            n += u64::from(purge_one(t, &d, now)?);
                        }
                    }
                    t.set_purge_cursor(next);
                    Ok(n)
                })
                .await?;
            if !full {
                break;
            }
        }
        Ok(purged)
    }

    /// The audit index of the entry that recorded message `id` (sent, received or relayed):
    /// kept in the message record (records written before it was kept are looked up in the
    /// log).
    pub(crate) async fn entry_of_message(&self, id: &MessageId) -> Result<Option<u64>, NodeError> {
        let id = *id;
        let n = self.bus.log_len();
        Ok(self
            .bus
            .store
            .read(move |r| {
                let mut unindexed = false;
                for d in r.digests_for_id(&id)? {
                    match r.message(&d)?.map(|rec| rec.log_index) {
                        Some(Some(i)) if i < n => return Ok(Some(i)),
                        Some(_) => unindexed = true,
                        None => {}
                    }
                }
                if !unindexed {
                    return Ok(None);
                }
                let mut from = 0;
                while from < n {
                    let to = (from + CHUNK).min(n);
                    for (i, b) in r.log_entries(from, to)? {
                        let Ok(e) = Entry::decode(&b) else { continue };
                        if matches!(
                            e.kind,
                            EntryKind::MessageSent
                                | EntryKind::MessageReceived
                                | EntryKind::Relayed
                        ) && Envelope::peek_unverified(&e.object)
                            .is_some_and(|(_, h)| h.id == id)
                        {
                            return Ok(Some(i));
                        }
                    }
                    from = to;
                }
                Ok(None)
            })
            .await?)
    }

    /// The stored checkpoints of sizes `old` and `new` and the consistency proof between them
    /// (protocol.md §13.3b).
    pub(crate) async fn consistency(
        &self,
        old: u64,
        new: u64,
    ) -> Result<liaison_protocol::evidence::Consistency, NodeError> {
        if old == 0 || old > new {
            return Err(NodeError::Invalid(format!(
                "sizes {old} and {new}: the older must be at least 1 and not larger than the newer"
            )));
        }
        let (old_note, new_note, proof) = self
            .bus
            .store
            .read(move |r| {
                let old_note = r.checkpoint_at(old)?;
                let new_note = r.checkpoint_at(new)?;
                let proof = match (&old_note, &new_note) {
                    (Some(_), Some(_)) => merkle::consistency_proof_with(&r.tree(), old, new)?,
                    _ => Vec::new(),
                };
                Ok((old_note, new_note, proof))
            })
            .await?;
        let missing = |size: u64| {
            NodeError::Invalid(format!(
                "this node holds no checkpoint of size {size} (a checkpoint is signed every \
                 checkpoint interval; `liaison audit checkpoint` signs one now)"
            ))
        };
        Ok(liaison_protocol::evidence::Consistency {
            old: old_note.ok_or_else(|| missing(old))?.into_bytes(),
            new: new_note.ok_or_else(|| missing(new))?.into_bytes(),
            proof,
        })
    }

    /// An evidence bundle for entry `index`, against the newest checkpoint (made now if none
    /// covers the entry yet).
    pub(crate) async fn prove(&self, index: u64) -> Result<Evidence, NodeError> {
        let store = &self.bus.store;
        let n = store.log_len();
        if index >= n {
            return Err(NodeError::Invalid(format!(
                "no audit entry {index}: the log has {n} entries"
            )));
        }
        let note = self.checkpoint_covering(index).await?;
        self.prove_under(index, note).await
    }

    /// The newest stored checkpoint if it covers entry `index`, else a new one.
    async fn checkpoint_covering(&self, index: u64) -> Result<String, NodeError> {
        match self.bus.store.read(|r| r.latest_checkpoint()).await? {
            Some((size, note)) if size > index => Ok(note),
            _ => self.checkpoint().await,
        }
    }

    /// The evidence bundle of entry `index` under the checkpoint `note` (which covers it).
    async fn prove_under(&self, index: u64, note: String) -> Result<Evidence, NodeError> {
        let store = &self.bus.store;
        let size = SignedNote::parse(&note, MAX_NOTE_LEN)
            .and_then(|n| n.checkpoint())
            .map_err(|e| NodeError::Invalid(format!("stored checkpoint: {e}")))?
            .size();
        let (path, entry) = store
            .read(move |r| {
                let path = merkle::inclusion_proof_with(&r.tree(), size, index)?;
                let entry = r.log_entries(index, index + 1)?.pop().map(|(_, b)| b);
                Ok((path, entry))
            })
            .await?;
        let entry =
            entry.ok_or_else(|| NodeError::Invalid(format!("audit entry {index} is missing")))?;
        Ok(Evidence {
            entry,
            index,
            checkpoint: note.into_bytes(),
            path,
        })
    }

    /// Recomputes the whole log from the stored entries: every entry decodes, belongs to this
    /// node and matches its stored leaf hash; every signed object in it verifies against the
    /// roster in force when it was logged; the newest checkpoint is signed by this node's log
    /// key and its root is the root of the first `size` entries. Stops at the first problem.
    /// Runs on a blocking thread, the signature checks on every core.
    pub(crate) async fn audit_verify(&self) -> Result<AuditReport, NodeError> {
        let ctx = VerifyCtx {
            me: self.bus.id().clone(),
            origin: self.log_origin(),
            roster: self.bus.roster(),
            authorities: self.bus.authorities(),
        };
        self.bus
            .store
            .read(move |r| Ok(verify_log(r, &ctx)))
            .await?
    }
}

/// What `audit verify` checks the log against.
struct VerifyCtx {
    me: NodeId,
    origin: String,
    roster: Arc<SignedRoster>,
    authorities: Vec<PublicKey>,
}

/// An entry whose signed object is checked against the roster of its time.
struct Job {
    index: u64,
    leaf: Hash,
    entry: Entry,
    roster: Arc<SignedRoster>,
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// A chunk of the log as read: entries (index, bytes) and their stored leaf hashes.
type Chunk = (Vec<(u64, Vec<u8>)>, Vec<Hash>);

/// `f` over `items`, split over every core, in order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let per = items.len().div_ceil(threads()).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| {
                let f = &f;
                s.spawn(move || part.iter().map(f).collect::<Vec<R>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Per entry (index, signatures verified), and the first problem (index, what).
type Checked = (Vec<(u64, u64)>, Option<(u64, String)>);

/// Checks the signatures of a chunk's entries, split over every core. Returns for each
/// entry how many signatures verified (until its part of the chunk met a problem), and the
/// first problem by index.
fn check_jobs(jobs: &[Job]) -> Checked {
    let per = jobs.len().div_ceil(threads()).max(1);
    let results: Vec<Checked> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    let mut counts = Vec::with_capacity(part.len());
                    for j in part {
                        match liaison_protocol::evidence::open_entry_object(
                            &j.entry,
                            &j.entry.node,
                            j.roster.roster(),
                        ) {
                            Ok(c) => counts.push((j.index, c)),
                            Err(e) => return (counts, Some((j.index, e))),
                        }
                    }
                    (counts, None)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    (Vec::new(), Some((0, "verification thread panicked".into())))
                })
            })
            .collect()
    });
    let mut counts = Vec::with_capacity(jobs.len());
    let mut problem: Option<(u64, String)> = None;
    for (c, p) in results {
        counts.extend(c);
        if let Some(p) = p
            && problem.as_ref().is_none_or(|(i, _)| p.0 < *i)
        {
            problem = Some(p);
        }
    }
    (counts, problem)
}

fn verify_log(rd: &Reader<'_>, ctx: &VerifyCtx) -> Result<AuditReport, NodeError> {
    // The checkpoint first, then the log's length: a checkpoint is stored only once its
    // entries are on disk, so the length read after it covers it.
    let checkpoint = rd.latest_checkpoint()?;
    let n = rd.log_len();
    let mut report = AuditReport {
        entries: 0,
        root: String::new(),
        checkpoint_size: checkpoint.as_ref().map(|(s, _)| *s),
        signatures_checked: 0,
        first_problem: None,
    };
    // Each entry is checked against the roster in force when it was logged: the one named by
    // the latest roster_applied entry before it (the roster in force now for stores that did
    // not keep old rosters).
    let mut at_the_time: Arc<SignedRoster> = ctx.roster.clone();
    let mut frontier = Frontier::new();
    let mut root_at_checkpoint: Option<Hash> = None;
    if checkpoint.as_ref().is_some_and(|(s, _)| *s == 0) {
        root_at_checkpoint = Some(merkle::EMPTY_ROOT);
    }
    let mut from = 0;
    let read = |from: u64| -> Result<Chunk, StoreError> {
        let to = (from + CHUNK).min(n);
        Ok((rd.log_entries(from, to)?, rd.leaf_hashes(from, to)?))
    };
    let mut next = if n > 0 { Some(read(0)?) } else { None };
    'scan: while from < n {
        let to = (from + CHUNK).min(n);
        let Some((entries, leaves)) = next.take() else {
            break;
        };
        // Hashing and decoding are independent per entry: on every core.
        let decoded = par_map(&entries, |(_, bytes)| {
            (
                merkle::leaf_hash(bytes),
                Entry::decode(bytes).map_err(|e| e.to_string()),
            )
        });
        let mut jobs = Vec::with_capacity(entries.len());
        let mut structural: Option<(u64, String)> = None;
        for (k, expected_index) in (from..to).enumerate() {
            let problem = |what: String| Some((expected_index, what));
            let Some((index, bytes)) = entries.get(k) else {
                structural = problem("entry is missing (deleted?)".into());
                break;
            };
            if *index != expected_index {
                structural = problem(format!("entry is missing; next stored is {index}"));
                break;
            }
            let _ = bytes;
            let Some((leaf, entry)) = decoded.get(k) else {
                structural = problem("entry is missing (deleted?)".into());
                break;
            };
            let leaf = *leaf;
            if leaves.get(k) != Some(&leaf) {
                structural = problem("entry does not match its leaf hash (altered?)".into());
                break;
            }
            let entry = match entry {
                Ok(e) => e.clone(),
                Err(e) => {
                    structural = problem(format!("entry does not decode: {e}"));
                    break;
                }
            };
            if entry.node != ctx.me {
                structural = problem(format!("entry was logged by {}", entry.node));
                break;
            }
            if entry.kind == EntryKind::RosterApplied {
                match roster_of_record(rd, &ctx.authorities, &entry.object) {
                    Ok(Some(applied)) => at_the_time = Arc::new(applied),
                    Ok(None) => {}
                    Err(e) => {
                        structural = problem(e);
                        break;
                    }
                }
            }
            jobs.push(Job {
                index: expected_index,
                leaf,
                entry,
                roster: at_the_time.clone(),
            });
        }
        // The next chunk is read while this one's signatures are checked.
        let (checked, read_next) = std::thread::scope(|s| {
            let prefetch = (to < n).then(|| s.spawn(|| read(to)));
            let checked = check_jobs(&jobs);
            (checked, prefetch.map(|h| h.join()))
        });
        next = match read_next {
            Some(Ok(r)) => Some(r?),
            Some(Err(_)) => return Err(StoreError::Db("log read thread panicked".into()).into()),
            None => None,
        };
        let (counts, bad_signature) = checked;
        // The first problem by index, whether a signature or the structure.
        let first = match (structural, bad_signature) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        for j in &jobs {
            if first.as_ref().is_some_and(|(i, _)| j.index >= *i) {
                break;
            }
            frontier.push(j.leaf)?;
            if checkpoint
                .as_ref()
                .is_some_and(|(s, _)| *s == frontier.size())
            {
                root_at_checkpoint = Some(frontier.root());
            }
            report.entries += 1;
        }
        // Signatures count up to the first problem, as a check one entry after the other would.
        let limit = first.as_ref().map_or(u64::MAX, |(i, _)| *i);
        report.signatures_checked += counts
            .iter()
            .filter(|(i, _)| *i < limit)
            .map(|(_, c)| c)
            .sum::<u64>();
        if let Some(p) = first {
            report.first_problem = Some(p);
            break 'scan;
        }
        from = to;
    }
    report.root = hex::encode(frontier.root());
    if report.first_problem.is_none() {
        if let Some((size, note)) = &checkpoint {
            report.first_problem = check_checkpoint(ctx, note, *size, n, root_at_checkpoint)
                .err()
                .map(|e| (*size, e));
        }
    }
    Ok(report)
}

/// The roster a `roster_applied` entry names, from the store (None when this store did not
/// keep it).
fn roster_of_record(
    rd: &Reader<'_>,
    authorities: &[PublicKey],
    record: &[u8],
) -> Result<Option<SignedRoster>, String> {
    let Some((_, _, Some(digest), _)) = liaison_protocol::audit::decode_event_record(record) else {
        return Err("roster_applied entry without the roster's digest".into());
    };
    let digest = liaison_protocol::Digest(digest);
    let Some(bytes) = rd.roster_by_digest(&digest).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    if liaison_protocol::Digest::of(&bytes) != digest {
        return Err(format!(
            "stored roster {} does not match its digest",
            digest.to_hex()
        ));
    }
    SignedRoster::open_any(&bytes, authorities)
        .map(Some)
        .map_err(|e| format!("roster {} does not verify: {e}", digest.to_hex()))
}

fn check_checkpoint(
    ctx: &VerifyCtx,
    note: &str,
    size: u64,
    n: u64,
    root: Option<Hash>,
) -> Result<(), String> {
    let origin = &ctx.origin;
    let me = ctx
        .roster
        .roster()
        .member(&ctx.me)
        .ok_or("this node is not in the roster")?;
    let parsed = SignedNote::parse(note, MAX_NOTE_LEN).map_err(|e| format!("checkpoint: {e}"))?;
    parsed
        .verify_signature_by_any(origin, me.log_keys())
        .map_err(|e| format!("checkpoint: {e}"))?;
    let cp = parsed
        .checkpoint()
        .map_err(|e| format!("checkpoint: {e}"))?;
    if cp.size() != size || cp.origin() != origin {
        return Err("checkpoint is stored under another size or origin".into());
    }
    if size > n {
        return Err(format!(
            "log truncated: the signed checkpoint covers {size} entries, the store holds {n}"
        ));
    }
    if root.as_ref() != Some(cp.root()) {
        return Err(format!(
            "history rewritten: the first {size} entries do not hash to the signed checkpoint's root"
        ));
    }
    Ok(())
}
