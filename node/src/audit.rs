//! The node's audit log as evidence: signed checkpoints, inclusion proofs (evidence
//! bundles) and a full re-verification of the stored log.

use liaison_protocol::action::{MAX_CREDENTIAL_LEN, Officer, TYP_OFFICER};
use liaison_protocol::audit::{Entry, EntryKind};
use liaison_protocol::evidence::Evidence;
use liaison_protocol::merkle::{self, Frontier, Hash, MerkleError, SubtreeFn};
use liaison_protocol::note::{Checkpoint, MAX_NOTE_LEN, SignedNote};
use liaison_protocol::{Envelope, MessageId, SignedNonDelivery, SignedObject, SignedReceipt};
use serde::Serialize;

use crate::error::NodeError;
use crate::node::{Node, now_ms};

/// Entries read per batch while verifying.
const CHUNK: u64 = 4096;

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

impl Node {
    fn log_origin(&self) -> String {
        format!("{}/log", self.id())
    }

    /// Signs a checkpoint of the log as it is now (unless the newest one already covers it)
    /// and returns it as a signed note.
    pub async fn checkpoint(&self) -> Result<String, NodeError> {
        let store = &self.inner.store;
        let (size, root) = store.log_root();
        if let Some((s, note)) = store.latest_checkpoint()? {
            if s == size {
                return Ok(note);
            }
        }
        let origin = self.log_origin();
        let cp = Checkpoint::new(origin.clone(), size, root)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let note = SignedNote::sign_checkpoint(&cp, &origin, &self.inner.log_key)
            .map_err(|e| NodeError::Invalid(e.to_string()))?
            .to_text();
        let text = note.clone();
        store
            .write(now_ms(), |t| {
                t.put_checkpoint(size, &text);
                Ok(())
            })
            .await?;
        Ok(note)
    }

    /// Every entry of this node's log about case `case_ref` (its messages, and the receipts
    /// and non-delivery records for them), each with an inclusion proof, and the roster.
    pub async fn case_evidence(
        &self,
        case_ref: &str,
    ) -> Result<liaison_protocol::evidence::CaseEvidence, NodeError> {
        let n = self.log_len();
        let entries = self.log_entries(0, n)?;
        let mut digests = Vec::new();
        let mut indices = Vec::new();
        let roster = self.roster();
        let r = roster.roster();
        for (i, e) in &entries {
            if liaison_protocol::audit::case_of(e).as_deref() == Some(case_ref) {
                indices.push(*i);
                if let Some((d, _)) = Envelope::peek_unverified(&e.object) {
                    digests.push(d);
                }
            }
        }
        if indices.is_empty() {
            return Err(NodeError::Invalid(format!(
                "no message of case {case_ref} on this node"
            )));
        }
        for (i, e) in &entries {
            let named = SignedReceipt::open(&e.object, |k| r.signer(k))
                .map(|rc| rc.receipt().message_digest)
                .or_else(|_| {
                    SignedNonDelivery::open(&e.object, |k| r.signer(k))
                        .map(|nd| nd.record().message_digest)
                });
            if named.is_ok_and(|d| digests.contains(&d)) {
                indices.push(*i);
            }
        }
        indices.sort_unstable();
        indices.dedup();
        let mut bundles = Vec::with_capacity(indices.len());
        for i in indices {
            bundles.push(self.prove(i).await?);
        }
        // The signed handover records (message bodies, while still held).
        let mut records = Vec::new();
        for (_, e) in &entries {
            if !matches!(e.kind, EntryKind::MessageSent | EntryKind::MessageReceived) {
                continue;
            }
            let Some((d, h)) = Envelope::peek_unverified(&e.object) else {
                continue;
            };
            if h.case_ref.as_deref() == Some(case_ref) && h.kind == "repatriation.handover_record" {
                if let Some(body) = self.inner.store.body(&d)? {
                    records.push(body);
                }
            }
        }
        Ok(liaison_protocol::evidence::CaseEvidence {
            case_ref: case_ref.to_owned(),
            roster: roster.bytes().to_vec(),
            bundles,
            records,
        })
    }

    /// Whether the log has entries other than witnessing records since its newest checkpoint.
    pub fn grew_since_checkpoint(&self) -> Result<bool, NodeError> {
        let from = self
            .inner
            .store
            .latest_checkpoint()?
            .map_or(0, |(size, _)| size);
        let n = self.log_len();
        if from == 0 {
            return Ok(n > 0);
        }
        Ok(self.log_entries(from, n)?.iter().any(|(_, e)| {
            !matches!(
                e.kind,
                EntryKind::WitnessCosigned
                    | EntryKind::WitnessConflict
                    | EntryKind::CheckpointCosigned
            )
        }))
    }

    /// Deletes the bodies of messages stored longer ago than the retention period before
    /// `now`, each with a `body_purged` audit entry in the same batch. Envelopes, receipts,
    /// entries and proofs stay: the evidence outlives the data. Returns how many were purged.
    pub async fn purge_bodies(&self, now: u64, retention_ms: u64) -> Result<u64, NodeError> {
        let store = &self.inner.store;
        let mut purged = 0;
        for digest in store.body_digests()? {
            let Some(rec) = store.message(&digest)? else {
                continue;
            };
            let keep = rec.retain_ms.map_or(retention_ms, |r| r.min(retention_ms));
            if rec.stored_at.saturating_add(keep) > now {
                continue;
            }
            // A body still waiting in an outbox or an inbox is not purged under it.
            if rec.out_key.is_some() || (rec.inbox_seq.is_some() && !rec.handed_over) {
                continue;
            }
            let id = Envelope::peek_unverified(&rec.envelope).map(|(_, h)| h.id.0);
            let record = liaison_protocol::audit::event_record(
                "retention ended",
                None,
                Some(&digest.0),
                id.as_ref(),
            );
            store
                .write(now, |t| {
                    t.remove_body(&digest);
                    t.log(EntryKind::BodyPurged, record);
                    Ok(())
                })
                .await?;
            purged += 1;
        }
        purged += self.purge_local_actions(now, retention_ms).await?;
        Ok(purged)
    }

    /// Signed actions recorded only here (no message body holds them) go the same way.
    async fn purge_local_actions(&self, now: u64, retention_ms: u64) -> Result<u64, NodeError> {
        let store = &self.inner.store;
        let due = |l: &crate::store::LocalAction| {
            l.at.saturating_add(l.retain_ms.min(retention_ms)) <= now
        };
        let mut purged = 0;
        for (case_ref, rec) in store.cases()? {
            if !rec.local_actions.iter().any(due) {
                continue;
            }
            let _guard = self.inner.case_lock.lock().await;
            let Some(mut rec) = store.case(&case_ref)? else {
                continue;
            };
            let (gone, kept): (Vec<_>, Vec<_>) = rec.local_actions.into_iter().partition(due);
            rec.local_actions = kept;
            let records: Vec<Vec<u8>> = gone
                .iter()
                .map(|l| {
                    let digest = SignedObject::parse(&l.action, usize::MAX)
                        .map(|o| o.digest().0)
                        .unwrap_or_else(|_| liaison_protocol::Digest::of(&l.action).0);
                    liaison_protocol::audit::event_record(
                        &format!("retention ended (step recorded on case {case_ref})"),
                        None,
                        Some(&digest),
                        None,
                    )
                })
                .collect();
            purged += records.len() as u64;
            store
                .write(now, |t| {
                    for r in records {
                        t.log(EntryKind::BodyPurged, r);
                    }
                    t.put_case(&case_ref, &rec);
                    Ok(())
                })
                .await?;
        }
        Ok(purged)
    }

    /// The audit index of the entry that recorded message `id` (sent, received or relayed).
    pub fn entry_of_message(&self, id: &MessageId) -> Result<Option<u64>, NodeError> {
        let n = self.log_len();
        let mut from = 0;
        while from < n {
            let to = (from + CHUNK).min(n);
            for (i, e) in self.log_entries(from, to)? {
                if matches!(
                    e.kind,
                    EntryKind::MessageSent | EntryKind::MessageReceived | EntryKind::Relayed
                ) && Envelope::peek_unverified(&e.object).is_some_and(|(_, h)| h.id == *id)
                {
                    return Ok(Some(i));
                }
            }
            from = to;
        }
        Ok(None)
    }

    /// An evidence bundle for entry `index`, against the newest checkpoint (made now if none
    /// covers the entry yet).
    pub async fn prove(&self, index: u64) -> Result<Evidence, NodeError> {
        let store = &self.inner.store;
        if index >= store.log_len() {
            return Err(NodeError::Invalid(format!(
                "no audit entry {index}: the log has {} entries",
                store.log_len()
            )));
        }
        let note = match store.latest_checkpoint()? {
            Some((size, note)) if size > index => note,
            _ => self.checkpoint().await?,
        };
        let size = SignedNote::parse(&note, MAX_NOTE_LEN)
            .and_then(|n| n.checkpoint())
            .map_err(|e| NodeError::Invalid(format!("stored checkpoint: {e}")))?
            .size();
        let source = SubtreeFn(|start: u64, end: u64| -> Result<Hash, NodeError> {
            Ok(merkle::root_from_leaves(&store.leaf_hashes(start, end)?))
        });
        let path = merkle::inclusion_proof_with(&source, size, index)?;
        let entry = store
            .log_entries(index, index + 1)?
            .pop()
            .map(|(_, b)| b)
            .ok_or_else(|| NodeError::Invalid(format!("audit entry {index} is missing")))?;
        Ok(Evidence {
            entry,
            index,
            checkpoint: note.into_bytes(),
            path,
        })
    }

    /// Recomputes the whole log from the stored entries: every entry decodes, belongs to this
    /// node and matches its stored leaf hash; every signed object in it verifies against the
    /// roster; the newest checkpoint is signed by this node's log key and its root is the
    /// root of the first `size` entries. Stops at the first problem.
    pub fn audit_verify(&self) -> Result<AuditReport, NodeError> {
        let store = &self.inner.store;
        let roster = self.roster();
        let r = roster.roster();
        let n = store.log_len();
        let checkpoint = store.latest_checkpoint()?;
        let mut report = AuditReport {
            entries: 0,
            root: String::new(),
            checkpoint_size: checkpoint.as_ref().map(|(s, _)| *s),
            signatures_checked: 0,
            first_problem: None,
        };
        // Each entry is checked against the roster in force when it was logged: the one
        // named by the latest roster_applied entry before it (the roster in force now for
        // stores that did not keep old rosters).
        let mut at_the_time: Option<liaison_protocol::SignedRoster> = None;
        let mut frontier = Frontier::new();
        let mut root_at_checkpoint: Option<Hash> = None;
        if checkpoint.as_ref().is_some_and(|(s, _)| *s == 0) {
            root_at_checkpoint = Some(merkle::EMPTY_ROOT);
        }
        let mut from = 0;
        'scan: while from < n {
            let to = (from + CHUNK).min(n);
            let entries = store.log_entries(from, to)?;
            let leaves = store.leaf_hashes(from, to)?;
            for (k, expected_index) in (from..to).enumerate() {
                let problem = |what: String| Some((expected_index, what));
                let Some((index, bytes)) = entries.get(k) else {
                    report.first_problem = problem("entry is missing (deleted?)".into());
                    break 'scan;
                };
                if *index != expected_index {
                    report.first_problem =
                        problem(format!("entry is missing; next stored is {index}"));
                    break 'scan;
                }
                let leaf = merkle::leaf_hash(bytes);
                if leaves.get(k) != Some(&leaf) {
                    report.first_problem =
                        problem("entry does not match its leaf hash (altered?)".into());
                    break 'scan;
                }
                let entry = match Entry::decode(bytes) {
                    Ok(e) => e,
                    Err(e) => {
                        report.first_problem = problem(format!("entry does not decode: {e}"));
                        break 'scan;
                    }
                };
                if entry.node != *self.id() {
                    report.first_problem = problem(format!("entry was logged by {}", entry.node));
                    break 'scan;
                }
                if entry.kind == EntryKind::RosterApplied {
                    match self.roster_of_record(&entry.object) {
                        Ok(Some(applied)) => at_the_time = Some(applied),
                        Ok(None) => {}
                        Err(e) => {
                            report.first_problem = problem(e);
                            break 'scan;
                        }
                    }
                }
                let r = at_the_time.as_ref().map_or(r, |a| a.roster());
                match check_signed(&entry, r) {
                    Ok(checked) => report.signatures_checked += checked,
                    Err(e) => {
                        report.first_problem = problem(e);
                        break 'scan;
                    }
                }
                frontier.push(leaf)?;
                if checkpoint
                    .as_ref()
                    .is_some_and(|(s, _)| *s == frontier.size())
                {
                    root_at_checkpoint = Some(frontier.root());
                }
                report.entries += 1;
            }
            from = to;
        }
        report.root = hex::encode(frontier.root());
        if report.first_problem.is_none() {
            if let Some((size, note)) = &checkpoint {
                report.first_problem = self
                    .check_checkpoint(note, *size, n, root_at_checkpoint)
                    .err()
                    .map(|e| (*size, e));
            }
        }
        Ok(report)
    }

    /// The roster a `roster_applied` entry names, from the store (None when this store did
    /// not keep it).
    fn roster_of_record(
        &self,
        record: &[u8],
    ) -> Result<Option<liaison_protocol::SignedRoster>, String> {
        let Some((_, _, Some(digest), _)) = liaison_protocol::audit::decode_event_record(record)
        else {
            return Err("roster_applied entry without the roster's digest".into());
        };
        let digest = liaison_protocol::Digest(digest);
        let Some(bytes) = self
            .inner
            .store
            .roster_by_digest(&digest)
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        if liaison_protocol::Digest::of(&bytes) != digest {
            return Err(format!(
                "stored roster {} does not match its digest",
                digest.to_hex()
            ));
        }
        liaison_protocol::SignedRoster::open(&bytes, &self.inner.authority)
            .map(Some)
            .map_err(|e| format!("roster {} does not verify: {e}", digest.to_hex()))
    }

    fn check_checkpoint(
        &self,
        note: &str,
        size: u64,
        n: u64,
        root: Option<Hash>,
    ) -> Result<(), String> {
        let origin = self.log_origin();
        let roster = self.roster();
        let me = roster
            .roster()
            .member(self.id())
            .ok_or("this node is not in the roster")?;
        let parsed =
            SignedNote::parse(note, MAX_NOTE_LEN).map_err(|e| format!("checkpoint: {e}"))?;
        parsed
            .verify_signature(&origin, &me.log_key)
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
}

/// Checks the signatures of the signed object an entry carries; returns how many verified.
fn check_signed(entry: &Entry, r: &liaison_protocol::Roster) -> Result<u64, String> {
    let signer = |kid: &[u8; 8]| r.signer(kid);
    match entry.kind {
        EntryKind::MessageSent | EntryKind::MessageReceived | EntryKind::Relayed => {
            Envelope::open(&entry.object, signer)
                .map(|_| 1)
                .map_err(|e| format!("envelope in the entry does not verify: {e}"))
        }
        EntryKind::ReceiptSent | EntryKind::ReceiptReceived => {
            SignedReceipt::open(&entry.object, signer)
                .map(|_| 1)
                .map_err(|e| format!("receipt in the entry does not verify: {e}"))
        }
        EntryKind::Expired | EntryKind::NonDeliveryReceived => {
            SignedNonDelivery::open(&entry.object, signer)
                .map(|_| 1)
                .map_err(|e| format!("non-delivery record in the entry does not verify: {e}"))
        }
        EntryKind::Forwarded => SignedReceipt::open(&entry.object, signer)
            .map(|_| ())
            .or_else(|_| SignedNonDelivery::open(&entry.object, signer).map(|_| ()))
            .map(|()| 1)
            .map_err(|e| format!("forwarded object in the entry does not verify: {e}")),
        // An enrollment carries the node-signed credential; a revocation a plain record.
        EntryKind::KeyChanged
            if SignedObject::parse(&entry.object, MAX_CREDENTIAL_LEN)
                .is_ok_and(|o| o.typ() == TYP_OFFICER) =>
        {
            Officer::open(&entry.object, r)
                .map(|_| 1)
                .map_err(|e| format!("officer credential in the entry does not verify: {e}"))
        }
        _ => Ok(0),
    }
}
