//! Case evidence files (protocol.md §13.3a): every entry of this node's log about one case, each
//! with its proof under one checkpoint, the roster, the case's signed handover records and, in a
//! file made for a court, the providers' permissions of judicial use of H1 records, or what was
//! withheld for want of one.

use liaison_protocol::action::{Handling, SignedAction};
use liaison_protocol::audit::{Entry, EntryKind};
use liaison_protocol::evidence::{CaseEvidence, Withheld};
use liaison_protocol::workflow;
use liaison_protocol::{Envelope, MessageId, NodeId, SignedNonDelivery, SignedReceipt};

use super::Audit;
use crate::error::{NodeError, StoreError};

/// A body of the case this node sent or received, with the envelope that carried it.
struct Carried {
    /// The carrier's message id.
    id: MessageId,
    /// Who sent it.
    from: NodeId,
    /// The body.
    body: Vec<u8>,
}

impl Audit {
    /// Every entry of this node's log about case `case_ref` (its messages, and the receipts
    /// and non-delivery records for them), each with an inclusion proof under one checkpoint,
    /// the roster and the case's signed handover records. For a court (`for_court`), an H1
    /// record another node provided goes in only with that provider's permission of judicial
    /// use (the request this node sent and the provider's grant, both carried in the file);
    /// otherwise it is withheld and the file says so.
    pub(crate) async fn case_evidence(
        &self,
        case_ref: &str,
        for_court: bool,
    ) -> Result<CaseEvidence, NodeError> {
        let roster = self.bus.roster();
        let r2 = roster.clone();
        let cr = case_ref.to_owned();
        let (indices, records, permissions, rosters) = self
            .bus
            .store
            .read(move |rd| {
                let r = r2.roster();
                let n = rd.log_len();
                let mut entries = Vec::new();
                for (i, b) in rd.log_entries(0, n)? {
                    let e = Entry::decode(&b).map_err(|e| StoreError::Corrupt {
                        key: format!("l/{i}"),
                        problem: e.to_string(),
                    })?;
                    entries.push((i, e));
                }
                let mut digests = Vec::new();
                let mut indices = Vec::new();
                for (i, e) in &entries {
                    if liaison_protocol::audit::case_of(e).as_deref() == Some(cr.as_str()) {
                        indices.push(*i);
                        if let Some((d, _)) = Envelope::peek_unverified(&e.object) {
                            digests.push(d);
                        }
                    }
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
                // The roster records (kind 11) that say which roster was in force for each of
                // those entries: the last one before the first, and every one up to the last;
                // with the rosters they name (kept by digest), when the store has them.
                let mut rosters: Vec<Vec<u8>> = Vec::new();
                if let (Some(&first), Some(&last)) = (indices.first(), indices.last()) {
                    let mut named = Vec::new();
                    for (i, e) in &entries {
                        if e.kind != EntryKind::RosterApplied || *i > last {
                            continue;
                        }
                        let Some((_, _, Some(d), _)) =
                            liaison_protocol::audit::decode_event_record(&e.object)
                        else {
                            continue;
                        };
                        let Some(bytes) = rd.roster_by_digest(&liaison_protocol::Digest(d))? else {
                            continue;
                        };
                        if *i < first {
                            named.clear();
                        }
                        named.push((*i, bytes));
                    }
                    for (i, bytes) in named {
                        indices.push(i);
                        if !rosters.contains(&bytes) {
                            rosters.push(bytes);
                        }
                    }
                    indices.sort_unstable();
                    indices.dedup();
                }
                // The signed handover records of the case and, for a court, the permission
                // requests sent and grants received (message bodies, while still held).
                let mut records = Vec::new();
                let mut permissions = Vec::new();
                for (_, e) in &entries {
                    let sent = match e.kind {
                        EntryKind::MessageSent => true,
                        EntryKind::MessageReceived => false,
                        _ => continue,
                    };
                    let Some((d, h)) = Envelope::peek_unverified(&e.object) else {
                        continue;
                    };
                    let evidence = h.case_ref.as_deref() == Some(cr.as_str())
                        && workflow::spec(&h.kind).is_some_and(|s| s.in_evidence);
                    let permission = for_court
                        && matches!(
                            (h.kind.as_str(), sent),
                            ("permission.request", true) | ("permission.grant", false)
                        );
                    if !evidence && !permission {
                        continue;
                    }
                    if let Some(body) = rd.body(&d)? {
                        let c = Carried {
                            id: h.id,
                            from: h.from.clone(),
                            body,
                        };
                        if evidence {
                            records.push(c);
                        } else {
                            permissions.push(c);
                        }
                    }
                }
                Ok((indices, records, permissions, rosters))
            })
            .await?;
        if indices.is_empty() {
            return Err(NodeError::Invalid(format!(
                "no message of case {case_ref} on this node"
            )));
        }
        // Every bundle under one checkpoint (protocol.md §13.3a): the newest, if it covers the
        // last entry of the case, else one signed now.
        let last = indices.last().copied().unwrap_or_default();
        let note = self.checkpoint_covering(last).await?;
        let mut bundles = Vec::with_capacity(indices.len());
        for i in indices {
            bundles.push(self.prove_under(i, note.clone()).await?);
        }
        let me = self.bus.id().clone();
        let r = roster.roster();
        let opened: Vec<SignedAction> = permissions
            .iter()
            .filter_map(|p| SignedAction::open(&p.body, r).ok())
            .collect();
        let mut file = CaseEvidence {
            case_ref: case_ref.to_owned(),
            roster: roster.bytes().to_vec(),
            bundles,
            records: Vec::new(),
            for_court,
            permissions: Vec::new(),
            withheld: Vec::new(),
            rosters,
        };
        for rec in records {
            let provider = match SignedAction::open(&rec.body, r) {
                Ok(a) if a.action().handling == Handling::H1 && a.action().node != me => {
                    a.action().node.clone()
                }
                // Not H1, or this node's own: no one else's permission is needed.
                Ok(_) => {
                    file.records.push(rec.body);
                    continue;
                }
                // It would make the whole file fail its check: left out, and said why.
                Err(e) => {
                    file.withheld.push(Withheld {
                        message: rec.id,
                        handling: stored_handling(&rec.body),
                        reason: format!(
                            "the signed record does not verify against the roster in force \
                             (a key rotated since it was signed?): {e}"
                        ),
                        provider: rec.from,
                    });
                    continue;
                }
            };
            if !for_court {
                file.records.push(rec.body);
                continue;
            }
            match judicial_grant(&opened, &me, &provider, &rec.id) {
                Some((request, grant)) => {
                    for a in [request, grant] {
                        let b = a.bytes().to_vec();
                        if !file.permissions.contains(&b) {
                            file.permissions.push(b);
                        }
                    }
                    file.records.push(rec.body);
                }
                None => file.withheld.push(Withheld {
                    message: rec.id,
                    handling: 1,
                    reason: format!(
                        "H1: not for judicial proceedings without the permission of {provider}, \
                         and this node holds none for message {id} (ask it: liaison permission \
                         request --use judicial --message {id} --to {provider} --reason …)",
                        id = rec.id.to_hex()
                    ),
                    provider,
                }),
            }
        }
        Ok(file)
    }
}

/// The handling code (0–3) of a stored action that no longer verifies (0 if it cannot be read).
fn stored_handling(body: &[u8]) -> u8 {
    use liaison_protocol::action::{Action, MAX_ACTION_LEN};
    liaison_protocol::SignedObject::parse(body, MAX_ACTION_LEN)
        .ok()
        .and_then(|o| Action::decode(o.payload()).ok())
        .map_or(0, |a| match a.handling {
            Handling::H0 => 0,
            Handling::H1 => 1,
            Handling::H2 => 2,
            Handling::H3(_) => 3,
        })
}

/// The permission request this node (`me`) sent for the judicial use of message `message` and
/// the grant `provider` answered it with, among the opened permission actions.
fn judicial_grant<'a>(
    opened: &'a [SignedAction],
    me: &NodeId,
    provider: &NodeId,
    message: &MessageId,
) -> Option<(&'a SignedAction, &'a SignedAction)> {
    let id = message.to_hex();
    opened.iter().find_map(|req| {
        let a = req.action();
        let asks = a.kind == "permission.request"
            && a.node == *me
            && a.document.text("use") == Some("judicial")
            && a.document.text("message_id") == Some(id.as_str());
        if !asks {
            return None;
        }
        let digest = req.digest().to_hex();
        let grant = opened.iter().find(|g| {
            let g = g.action();
            g.kind == "permission.grant"
                && g.case_ref == a.case_ref
                && g.node == *provider
                && g.document.text("request") == Some(digest.as_str())
        })?;
        Some((req, grant))
    })
}
