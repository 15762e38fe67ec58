//! Case evidence files (docs/protocol.md §13.3a): every entry one node's log holds about a case,
//! each with its proof under one checkpoint, the roster in force, the case's signed handover
//! records and, in a file made for a court, the providers' permissions of judicial use of H1
//! records and what was withheld for want of one.
//!
//! ```text
//! CaseEvidence = [1, case_ref: tstr, roster: bstr, [evidence: bstr …], [record: bstr …],
//!                 for: "general" / "court", [permission: bstr …],
//!                 [[message_id: bstr(16), handling: uint, provider: tstr, reason: tstr] …]]
//! ```

use ciborium::Value;

use super::{Evidence, EvidenceError, Proven, one_checkpoint, one_history};
use crate::action::{Handling, SignedAction};
use crate::cbor;
use crate::envelope::{Envelope, Header};
use crate::error::DecodeError;
use crate::ids::{Digest, MessageId, NodeId};
use crate::receipt::{SignedNonDelivery, SignedReceipt};
use crate::roster::Roster;

/// Largest case evidence file.
pub const MAX_CASE_EVIDENCE_LEN: usize = 64 * 1024 * 1024;

/// Longest reason given for a withheld record.
const MAX_REASON_LEN: usize = 1024;

/// Every audit entry one node holds about a case, with proofs, roster, handover records and,
/// for a court, permissions and what was withheld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseEvidence {
    /// The case reference.
    pub case_ref: String,
    /// The signed roster in force when the file was made.
    pub roster: Vec<u8>,
    /// One evidence bundle per entry, all under one checkpoint of one log.
    pub bundles: Vec<Evidence>,
    /// The officer-signed `repatriation.handover_record` actions of the case (message bodies
    /// still held), each bound to its logged envelope by the envelope's body hash.
    pub records: Vec<Vec<u8>>,
    /// Made for a court: an H1 record of another provider is in it only with that provider's
    /// signed permission of judicial use (carried in `permissions`), else withheld.
    pub for_court: bool,
    /// The signed `permission.request` (use judicial) and `permission.grant` actions that allow
    /// the H1 records of other providers in a court file.
    pub permissions: Vec<Vec<u8>>,
    /// Records left out, and why.
    pub withheld: Vec<Withheld>,
    /// The rosters the file's roster records (kind 11 entries) name: each entry is opened
    /// against the roster in force when it was logged.
    pub rosters: Vec<Vec<u8>>,
}

/// A record a file leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    /// The message that carried it (its envelope is proven in the file).
    pub message: MessageId,
    /// Its handling code (0–3).
    pub handling: u8,
    /// The node that provided it.
    pub provider: NodeId,
    /// Why it was left out.
    pub reason: String,
}

/// What a verified case file shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseChecked {
    /// The proven entries.
    pub proven: Vec<Proven>,
    /// Each handover record, as opened.
    pub records: Vec<RecordChecked>,
    /// Made for a court.
    pub for_court: bool,
    /// What the file leaves out, and why.
    pub withheld: Vec<Withheld>,
}

/// A handover record of a verified case file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordChecked {
    /// The officer who signed it.
    pub officer: String,
    /// The node it was signed for (the provider).
    pub node: NodeId,
    /// The message that carried it.
    pub message: MessageId,
    /// Its handling (the H3 text included).
    pub handling: Handling,
    /// The permission case allowing its judicial use, when the file is for a court and the
    /// record is an H1 record of another provider.
    pub permission: Option<String>,
    /// The conditions the provider attached to that permission.
    pub conditions: Option<String>,
}

fn shape() -> DecodeError {
    DecodeError::Shape {
        object: "case evidence",
        expected: "[1, case_ref, roster, [evidence …], [record …], \"general\" or \"court\", \
                   [permission …], [[message_id, handling, provider, reason] …], [roster …]]",
    }
}

fn bytes_list(v: Value) -> Result<Vec<Vec<u8>>, DecodeError> {
    let Value::Array(items) = v else {
        return Err(shape());
    };
    items
        .into_iter()
        .map(|r| match r {
            Value::Bytes(b) => Ok(b),
            _ => Err(shape()),
        })
        .collect()
}

fn withheld_item(v: Value) -> Result<Withheld, DecodeError> {
    let Value::Array(items) = v else {
        return Err(shape());
    };
    let [id, handling, provider, reason]: [Value; 4] = items.try_into().map_err(|_| shape())?;
    let (Value::Bytes(id), Some(handling), Value::Text(provider), Value::Text(reason)) =
        (id, cbor::as_uint(&handling), provider, reason)
    else {
        return Err(shape());
    };
    let message = MessageId(id.try_into().map_err(|_| shape())?);
    if handling > 3
        || reason.is_empty()
        || reason.len() > MAX_REASON_LEN
        || reason.chars().any(char::is_control)
    {
        return Err(shape());
    }
    Ok(Withheld {
        message,
        handling: handling as u8,
        provider: NodeId::new(provider)?,
        reason,
    })
}

impl CaseEvidence {
    /// Encodes the file.
    pub fn encode(&self) -> Vec<u8> {
        let bytes = |l: &[Vec<u8>]| Value::Array(l.iter().cloned().map(Value::Bytes).collect());
        cbor::encode(&Value::Array(vec![
            Value::from(1u64),
            Value::Text(self.case_ref.clone()),
            Value::Bytes(self.roster.clone()),
            Value::Array(
                self.bundles
                    .iter()
                    .map(|b| Value::Bytes(b.encode()))
                    .collect(),
            ),
            bytes(&self.records),
            Value::Text(if self.for_court { "court" } else { "general" }.into()),
            bytes(&self.permissions),
            Value::Array(
                self.withheld
                    .iter()
                    .map(|w| {
                        Value::Array(vec![
                            Value::Bytes(w.message.0.to_vec()),
                            Value::from(u64::from(w.handling)),
                            Value::Text(w.provider.to_string()),
                            Value::Text(w.reason.clone()),
                        ])
                    })
                    .collect(),
            ),
            bytes(&self.rosters),
        ]))
    }

    /// Decodes a file strictly.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let Value::Array(items) = cbor::decode_strict(bytes, MAX_CASE_EVIDENCE_LEN, None)? else {
            return Err(shape());
        };
        let [
            v,
            case_ref,
            roster,
            bundles,
            records,
            purpose,
            permissions,
            withheld,
            rosters,
        ]: [Value; 9] = items.try_into().map_err(|_| shape())?;
        let (Some(1), Value::Text(case_ref), Value::Bytes(roster), Value::Text(purpose)) =
            (cbor::as_uint(&v), case_ref, roster, purpose)
        else {
            return Err(shape());
        };
        let for_court = match purpose.as_str() {
            "court" => true,
            "general" => false,
            _ => return Err(shape()),
        };
        let bundles = bytes_list(bundles)?
            .iter()
            .map(|b| Evidence::decode(b))
            .collect::<Result<Vec<_>, _>>()?;
        let Value::Array(withheld) = withheld else {
            return Err(shape());
        };
        Ok(Self {
            case_ref,
            roster,
            bundles,
            records: bytes_list(records)?,
            for_court,
            permissions: bytes_list(permissions)?,
            withheld: withheld
                .into_iter()
                .map(withheld_item)
                .collect::<Result<_, _>>()?,
            rosters: bytes_list(rosters)?,
        })
    }

    /// Verifies the file against the federation's `authority` key (protocol.md §13.3a): the
    /// roster is signed by it; every bundle verifies against that roster, all of one log and
    /// under one checkpoint (no fork); every entry is about this case (an envelope with this
    /// case reference, an action or state-change record of the case, or a receipt or
    /// non-delivery record naming one of those envelopes); every handover record is an
    /// officer-signed `repatriation.handover_record` action of this case whose bytes hash to
    /// the body hash of a proven envelope of the case, signed for the node that sent that
    /// envelope, a party of the case; in a court file, every H1 record of another provider
    /// comes with that provider's permission of judicial use; every withheld record names a
    /// proven envelope of the case.
    pub fn verify(&self, authority: &crate::keys::PublicKey) -> Result<CaseChecked, EvidenceError> {
        self.verify_any(std::slice::from_ref(authority))
    }

    /// [`Self::verify`] with every key the federation's authority held over time (a roster
    /// signed before a handover, protocol.md §4.5 key 10, verifies with the key of then).
    pub fn verify_any(
        &self,
        authorities: &[crate::keys::PublicKey],
    ) -> Result<CaseChecked, EvidenceError> {
        let roster = crate::roster::SignedRoster::open_any(&self.roster, authorities)
            .map_err(|e| EvidenceError::Roster(e.to_string()))?;
        let r = roster.roster();
        let earlier = self
            .rosters
            .iter()
            .map(|b| {
                crate::roster::SignedRoster::open_any(b, authorities)
                    .map(|s| (Digest::of(b), s))
                    .map_err(|e| EvidenceError::Roster(format!("an earlier roster: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Each entry against the roster in force when it was logged: the one the latest roster
        // record before it names (the file's own roster before the first).
        let mut in_force: &Roster = r;
        let mut proven = Vec::with_capacity(self.bundles.len());
        let mut rosters: Vec<&Roster> = Vec::with_capacity(self.bundles.len());
        for b in &self.bundles {
            if let Some(last) = proven.last().map(|p: &Proven| p.index) {
                if b.index <= last {
                    return Err(EvidenceError::Object {
                        index: b.index,
                        problem: format!("after entry {last}: entries go in the log's order, once"),
                    });
                }
            }
            let p = b.verify_in(r, in_force)?;
            if p.entry.kind == crate::audit::EntryKind::RosterApplied {
                let named = crate::audit::decode_event_record(&p.entry.object)
                    .and_then(|(_, _, d, _)| d)
                    .and_then(|d| earlier.iter().find(|(e, _)| e.0 == d));
                let Some((_, named)) = named else {
                    return Err(EvidenceError::Object {
                        index: p.index,
                        problem: "a roster record naming a roster the file does not carry".into(),
                    });
                };
                in_force = named.roster();
            }
            rosters.push(in_force);
            proven.push(p);
        }
        one_history(&proven)?;
        one_checkpoint(&proven)?;
        // The envelopes of the case (each opened in its entry by the bundle's check), with the
        // roster in force when each was logged.
        let envelopes: Vec<(Digest, Header, &Roster)> = proven
            .iter()
            .zip(&rosters)
            .filter_map(|(p, r)| {
                Envelope::peek_unverified(&p.entry.object).map(|(d, h)| (d, h, *r))
            })
            .filter(|(_, h, _)| h.case_ref.as_deref() == Some(self.case_ref.as_str()))
            .collect();
        if proven.is_empty() {
            return Err(EvidenceError::NotAboutCase {
                index: 0,
                case_ref: self.case_ref.clone(),
            });
        }
        for (p, r) in proven.iter().zip(&rosters) {
            // A receipt or non-delivery record is about the case when it answers one of its
            // envelopes: the digest names it, and id, sender and recipient are that envelope's.
            let answers = |d: &Digest, id: &MessageId, from: &NodeId, to: &NodeId| {
                envelopes.iter().find(|(e, _, _)| e == d).map(|(_, h, _)| {
                    if h.id == *id && h.from == *from && h.to == *to {
                        Ok(())
                    } else {
                        Err(EvidenceError::Object {
                            index: p.index,
                            problem: format!(
                                "answers envelope {} (message {} from {} to {}) but names message \
                                 {} from {from} to {to}",
                                d.to_hex(),
                                h.id.to_hex(),
                                h.from,
                                h.to,
                                id.to_hex()
                            ),
                        })
                    }
                })
            };
            let answer = SignedReceipt::open(&p.entry.object, |k| r.signer(k))
                .ok()
                .and_then(|rc| {
                    let rc = rc.receipt();
                    answers(
                        &rc.message_digest,
                        &rc.message_id,
                        &rc.sender,
                        &rc.recipient,
                    )
                })
                .or_else(|| {
                    SignedNonDelivery::open(&p.entry.object, |k| r.signer(k))
                        .ok()
                        .and_then(|nd| {
                            let nd = nd.record();
                            answers(
                                &nd.message_digest,
                                &nd.message_id,
                                &nd.sender,
                                &nd.recipient,
                            )
                        })
                });
            match answer {
                Some(checked) => checked?,
                None if crate::audit::case_of(&p.entry).as_deref()
                    == Some(self.case_ref.as_str()) => {}
                // A roster record (checked above to name a roster the file carries).
                None if p.entry.kind == crate::audit::EntryKind::RosterApplied => {}
                None => {
                    return Err(EvidenceError::NotAboutCase {
                        index: p.index,
                        case_ref: self.case_ref.clone(),
                    });
                }
            }
        }
        if !self.for_court && !self.permissions.is_empty() {
            return Err(EvidenceError::Permission {
                index: 0,
                problem: "a general file carries no permission (only a file for a court does)"
                    .into(),
            });
        }
        let log = proven.first().map(|p| p.node.clone());
        let permissions = self.open_permissions(r)?;
        let mut records = Vec::with_capacity(self.records.len());
        for (i, rec) in self.records.iter().enumerate() {
            records.push(self.check_record(i, rec, r, &envelopes, log.as_ref(), &permissions)?);
        }
        for w in &self.withheld {
            let carried = envelopes.iter().find(|(_, h, _)| h.id == w.message);
            let Some((_, h, _)) = carried else {
                return Err(EvidenceError::Withheld {
                    message: w.message.to_hex(),
                    problem: "no envelope of the case in the file carried it".into(),
                });
            };
            if h.from != w.provider {
                return Err(EvidenceError::Withheld {
                    message: w.message.to_hex(),
                    problem: format!(
                        "named as provided by {}, but sent by {}",
                        w.provider, h.from
                    ),
                });
            }
        }
        Ok(CaseChecked {
            proven,
            records,
            for_court: self.for_court,
            withheld: self.withheld.clone(),
        })
    }

    /// Opens the permissions the file carries: each a signed `permission.request` or
    /// `permission.grant` action.
    fn open_permissions(&self, r: &Roster) -> Result<Vec<SignedAction>, EvidenceError> {
        self.permissions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let a = SignedAction::open(p, r).map_err(|e| EvidenceError::Permission {
                    index: i,
                    problem: e.to_string(),
                })?;
                if !matches!(
                    a.action().kind.as_str(),
                    "permission.request" | "permission.grant"
                ) {
                    return Err(EvidenceError::Permission {
                        index: i,
                        problem: format!(
                            "a {}, not a permission request or grant",
                            a.action().kind
                        ),
                    });
                }
                Ok(a)
            })
            .collect()
    }

    fn check_record(
        &self,
        i: usize,
        rec: &[u8],
        r: &Roster,
        envelopes: &[(Digest, Header, &Roster)],
        log: Option<&NodeId>,
        permissions: &[SignedAction],
    ) -> Result<RecordChecked, EvidenceError> {
        let bad = |problem: String| EvidenceError::Record { index: i, problem };
        let hash = Digest::of(rec).0;
        let carriers: Vec<(&Header, &Roster)> = envelopes
            .iter()
            .filter(|(_, h, _)| h.body_hash == hash)
            .map(|(_, h, r)| (h, *r))
            .collect();
        let Some((_, at_the_time)) = carriers.first() else {
            return Err(bad("no envelope of the case carries it".into()));
        };
        // Against the roster in force when its envelope was logged (else the file's).
        let a = SignedAction::open(rec, at_the_time)
            .or_else(|_| SignedAction::open(rec, r))
            .map_err(|e| bad(e.to_string()))?;
        let action = a.action();
        if action.kind != "repatriation.handover_record" || action.case_ref != self.case_ref {
            return Err(bad("not a handover record of this case".into()));
        }
        if a.officer().is_none() {
            return Err(bad(format!(
                "signed by the node {}, not by one of its officers",
                action.node
            )));
        }
        // Carried by an envelope the node it is signed for sent (a party of the case).
        let Some((carrier, _)) = carriers.iter().find(|(h, _)| h.from == action.node) else {
            return Err(bad(format!(
                "signed for {}, but sent by {}",
                action.node,
                carriers
                    .iter()
                    .map(|(h, _)| h.from.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let (mut permission, mut conditions) = (None, None);
        if self.for_court && action.handling == Handling::H1 && Some(&action.node) != log {
            let granted = judicial_permission(permissions, log, &action.node, &carrier.id);
            let Some((case, when)) = granted else {
                return Err(EvidenceError::NoPermission {
                    record: i,
                    provider: action.node.clone(),
                    message: carrier.id.to_hex(),
                });
            };
            permission = Some(case);
            conditions = when;
        }
        Ok(RecordChecked {
            officer: a.actor().to_owned(),
            node: action.node.clone(),
            message: carrier.id,
            handling: action.handling.clone(),
            permission,
            conditions,
        })
    }
}

/// The permission case (its reference) in which `provider` granted the file's log node the
/// judicial use of message `message`: a `permission.request` signed for the log node with
/// `use` = `judicial` and that `message_id`, and a `permission.grant` of the same case signed
/// for the provider whose `request` is that request's action digest (so a grant answers one
/// request only, and cannot be reused for another).
fn judicial_permission(
    permissions: &[SignedAction],
    log: Option<&NodeId>,
    provider: &NodeId,
    message: &MessageId,
) -> Option<(String, Option<String>)> {
    let id = message.to_hex();
    permissions
        .iter()
        .filter(|req| {
            let req = req.action();
            req.kind == "permission.request"
                && Some(&req.node) == log
                && req.document.text("use") == Some("judicial")
                && req.document.text("message_id") == Some(id.as_str())
        })
        .find_map(|req| {
            let digest = req.digest().to_hex();
            let r = req.action();
            permissions
                .iter()
                .map(SignedAction::action)
                .find(|g| {
                    g.kind == "permission.grant"
                        && g.case_ref == r.case_ref
                        && g.node == *provider
                        && g.document.text("request") == Some(digest.as_str())
                })
                .map(|g| {
                    (
                        r.case_ref.clone(),
                        g.document.text("conditions").map(str::to_owned),
                    )
                })
        })
}
