//! Evidence bundles (docs/formats.md §4): one audit entry with its index, a signed (and possibly
//! cosigned) checkpoint of the log that holds it, and the inclusion path, checkable offline
//! against the roster alone.
//!
//! `Evidence = [1, entry: bstr, index: uint, checkpoint: bstr, path: [bstr(32) …]]`

use ciborium::Value;

use crate::audit::{Entry, MAX_ENTRY_LEN};
use crate::cbor;
use crate::error::DecodeError;
use crate::ids::NodeId;
use crate::merkle::{self, Hash};
use crate::note::{Checkpoint, MAX_NOTE_LEN, NoteError, SignedNote};
use crate::roster::Roster;

mod case;
pub use case::{CaseChecked, CaseEvidence, MAX_CASE_EVIDENCE_LEN, RecordChecked, Withheld};

/// Largest encoded bundle.
pub const MAX_EVIDENCE_LEN: usize = MAX_ENTRY_LEN + MAX_NOTE_LEN + 64 * 34 + 64;

/// An evidence bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The encoded audit entry.
    pub entry: Vec<u8>,
    /// Its index in the log.
    pub index: u64,
    /// The signed note of the checkpoint (UTF-8 text).
    pub checkpoint: Vec<u8>,
    /// Inclusion path, leaf to root.
    pub path: Vec<Hash>,
}

/// What a verified bundle proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The entry.
    pub entry: Entry,
    /// Its index.
    pub index: u64,
    /// The node whose log holds it (and signed the checkpoint).
    pub node: NodeId,
    /// The checkpoint's tree size.
    pub size: u64,
    /// The checkpoint's root.
    pub root: Hash,
    /// Witnesses whose cosignatures verified, with their times (Unix seconds).
    pub cosigned_by: Vec<(NodeId, u64)>,
}

/// Why a bundle does not prove what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// Not a well-formed bundle.
    #[error("bundle: {0}")]
    Decode(#[from] DecodeError),
    /// The checkpoint is not a well-formed signed note.
    #[error("checkpoint: {0}")]
    Note(#[from] NoteError),
    /// The checkpoint's origin is not `<node id>/log` of a roster member.
    #[error("checkpoint origin {0:?} is not the log of a member of this federation")]
    UnknownLog(String),
    /// The checkpoint is not signed by that member's log key.
    #[error("checkpoint is not signed by the log key of {node}: {problem}")]
    Signature { node: NodeId, problem: String },
    /// The entry is not in the tree the checkpoint commits to.
    #[error("inclusion proof fails: {0}")]
    Inclusion(#[from] merkle::MerkleError),
    /// The entry was logged by another node than the log's owner.
    #[error("entry was logged by {entry_node}, but the log is {log_node}'s")]
    WrongNode {
        entry_node: NodeId,
        log_node: NodeId,
    },
    /// The signed object in the entry does not open, or is not what its kind says.
    #[error("entry {index}: {problem}")]
    Object { index: u64, problem: String },
    /// Two checkpoints of one log with the same size and different roots: the log forked (its
    /// owner showed two histories).
    #[error(
        "the log of {node} forked: two checkpoints of size {size} with roots {first} and {second}"
    )]
    Fork {
        node: NodeId,
        size: u64,
        first: String,
        second: String,
    },
    /// The roster a file carries does not open against the federation authority's key.
    #[error("the roster in the file is not the federation's: {0}")]
    Roster(String),
    /// Two checkpoints that should be an older and a newer tree of one log are not.
    #[error(
        "checkpoints of {old_node} at {old_size} and {new_node} at {new_size}: not an older and a newer tree of one log"
    )]
    NotOneLog {
        old_node: NodeId,
        old_size: u64,
        new_node: NodeId,
        new_size: u64,
    },
    /// An entry of a case file is not about its case.
    #[error("entry {index} is not about case {case_ref}")]
    NotAboutCase { index: u64, case_ref: String },
    /// A handover record of a case file does not hold.
    #[error("handover record {index}: {problem}")]
    Record { index: usize, problem: String },
    /// A court file carries an H1 record of another provider without its permission.
    #[error(
        "handover record {record} is H1 (not for judicial proceedings without the provider's \
         permission) from {provider}, and the file is for a court: it carries no permission of \
         {provider} for the judicial use of message {message}"
    )]
    NoPermission {
        record: usize,
        provider: NodeId,
        message: String,
    },
    /// A permission a case file carries does not open, or is not a permission.
    #[error("permission {index}: {problem}")]
    Permission { index: usize, problem: String },
    /// A record a case file says it withheld is not one of the case.
    #[error("withheld message {message}: {problem}")]
    Withheld { message: String, problem: String },
    /// A case file holds entries of more than one log (it covers one node's log).
    #[error(
        "the file holds entries of two logs, {first}'s and {second}'s: a case file covers one \
         node's log (each agency gives its own)"
    )]
    SeveralLogs { first: NodeId, second: NodeId },
    /// The bundles of a case file are not all under one checkpoint.
    #[error(
        "entries {first_index} and {second_index} are proven under two checkpoints (sizes \
         {first_size} and {second_size}): every bundle of a case file is under one checkpoint"
    )]
    SeveralCheckpoints {
        first_index: u64,
        first_size: u64,
        second_index: u64,
        second_size: u64,
    },
    /// A cosignature line by a member's witness key does not verify: the note is invalid
    /// (C2SP signed-note: a signature by a known key that fails to verify is an error, not a
    /// line to skip).
    #[error("the cosignature of {witness} does not verify: {problem}")]
    Cosignature { witness: NodeId, problem: String },
}

impl Evidence {
    /// Encodes the bundle.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&Value::Array(vec![
            Value::from(1u64),
            Value::Bytes(self.entry.clone()),
            Value::from(self.index),
            Value::Bytes(self.checkpoint.clone()),
            Value::Array(self.path.iter().map(|h| Value::Bytes(h.to_vec())).collect()),
        ]))
    }

    /// Decodes a bundle strictly.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let shape = DecodeError::Shape {
            object: "evidence bundle",
            expected: "[1, entry, index, checkpoint, path]",
        };
        let Value::Array(items) = cbor::decode_strict(bytes, MAX_EVIDENCE_LEN, None)? else {
            return Err(shape);
        };
        let [v, entry, index, checkpoint, path]: [Value; 5] =
            items.try_into().map_err(|_| shape.clone())?;
        if cbor::as_uint(&v) != Some(1) {
            return Err(shape);
        }
        let (Value::Bytes(entry), Some(index), Value::Bytes(checkpoint), Value::Array(path)) =
            (entry, cbor::as_uint(&index), checkpoint, path)
        else {
            return Err(shape);
        };
        let path = hashes(path, 64).ok_or(shape)?;
        Ok(Self {
            entry,
            index,
            checkpoint,
            path,
        })
    }

    /// Verifies the bundle against `roster`: the checkpoint is signed by the log key of the
    /// member named in its origin, the entry is included at `index` in that tree, and the
    /// entry was logged by that member. Cosignatures by other members' witness keys are
    /// reported, and one that does not verify makes the bundle invalid; lines by keys the
    /// roster does not hold are ignored.
    pub fn verify(&self, roster: &Roster) -> Result<Proven, EvidenceError> {
        self.verify_in(roster, roster)
    }

    /// [`Evidence::verify`] with the checkpoint and its cosignatures opened against `roster`
    /// and the signed object in the entry against `at_the_time`, the roster in force when the
    /// entry was logged.
    pub fn verify_in(
        &self,
        roster: &Roster,
        at_the_time: &Roster,
    ) -> Result<Proven, EvidenceError> {
        // In the order of protocol.md §13.3: the log's signature, inclusion, the entry and
        // what it holds, then the cosignatures.
        let (node, cp, note) = open_log_signature(&self.checkpoint, roster)?;
        merkle::verify_inclusion(
            &merkle::leaf_hash(&self.entry),
            self.index,
            cp.size(),
            &self.path,
            cp.root(),
        )?;
        let entry = Entry::decode(&self.entry)?;
        if entry.node != node {
            return Err(EvidenceError::WrongNode {
                entry_node: entry.node,
                log_node: node,
            });
        }
        open_entry_object(&entry, &node, at_the_time).map_err(|problem| EvidenceError::Object {
            index: self.index,
            problem,
        })?;
        let cosigned_by = cosigners(&note, &node, roster)?;
        Ok(Proven {
            entry,
            index: self.index,
            node,
            size: cp.size(),
            root: *cp.root(),
            cosigned_by,
        })
    }
}

/// A CBOR list of at most `max` 32-byte hashes (a proof path), or None.
fn hashes(items: Vec<Value>, max: usize) -> Option<Vec<Hash>> {
    if items.len() > max {
        return None;
    }
    items
        .into_iter()
        .map(|h| match h {
            Value::Bytes(b) => <[u8; 32]>::try_from(b).ok(),
            _ => None,
        })
        .collect()
}

/// A checkpoint opened against a roster: the log's member, the checkpoint, and the witnesses
/// whose cosignatures verified, with their times (Unix seconds).
pub type OpenedCheckpoint = (NodeId, Checkpoint, Vec<(NodeId, u64)>);

/// Opens a signed checkpoint note against `roster`: its origin is `<id>/log` of a member, the
/// note is signed by that member's log key, and every cosignature line by another member's
/// witness key verifies (one that does not makes the note invalid; lines by keys the roster
/// does not hold are ignored). Returns the member, the checkpoint and the cosigning witnesses
/// with their times.
pub fn open_checkpoint(note: &[u8], roster: &Roster) -> Result<OpenedCheckpoint, EvidenceError> {
    let (node, cp, note) = open_log_signature(note, roster)?;
    let cosigned_by = cosigners(&note, &node, roster)?;
    Ok((node, cp, cosigned_by))
}

/// A checkpoint note whose origin is `<id>/log` of a member and which that member's log key
/// signed (§13.3 steps 2–4); its cosignatures not yet looked at.
fn open_log_signature(
    note: &[u8],
    roster: &Roster,
) -> Result<(NodeId, Checkpoint, SignedNote), EvidenceError> {
    let note = SignedNote::parse(note, MAX_NOTE_LEN)?;
    let cp = note.checkpoint()?;
    let node = cp
        .origin()
        .strip_suffix("/log")
        .and_then(|n| NodeId::new(n).ok())
        .filter(|n| roster.member(n).is_some())
        .ok_or_else(|| EvidenceError::UnknownLog(cp.origin().to_owned()))?;
    let member = roster
        .member(&node)
        .ok_or_else(|| EvidenceError::UnknownLog(cp.origin().to_owned()))?;
    note.verify_signature_by_any(cp.origin(), member.log_keys())
        .map_err(|e| EvidenceError::Signature {
            node: node.clone(),
            problem: e.to_string(),
        })?;
    Ok((node, cp, note))
}

/// The witnesses whose cosignatures of `note` (the log of `node`) verify, with their times;
/// a line by another member's witness key that does not verify makes the note invalid
/// (§13.3 step 7), lines by keys the roster does not hold are ignored.
fn cosigners(
    note: &SignedNote,
    node: &NodeId,
    roster: &Roster,
) -> Result<Vec<(NodeId, u64)>, EvidenceError> {
    let mut cosigned_by = Vec::new();
    for m in roster.members.iter().filter(|m| m.id != *node) {
        let name = format!("{}/witness", m.id);
        match note.verify_cosignature_by_any(&name, m.witness_keys()) {
            Ok(t) => cosigned_by.push((m.id.clone(), t)),
            // No line by this key: nothing to check.
            Err(NoteError::MissingSignature { .. } | NoteError::WrongKey { .. }) => {}
            Err(e) => {
                return Err(EvidenceError::Cosignature {
                    witness: m.id.clone(),
                    problem: e.to_string(),
                });
            }
        }
    }
    Ok(cosigned_by)
}

/// Two signed checkpoints of one log and the RFC 6962 consistency proof between them: the
/// newer tree extends the older one (nothing in it was changed or dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consistency {
    /// The older checkpoint's signed note.
    pub old: Vec<u8>,
    /// The newer checkpoint's signed note.
    pub new: Vec<u8>,
    /// The consistency proof from the older tree to the newer.
    pub proof: Vec<Hash>,
}

/// What a verified consistency proof shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProven {
    /// Whose log.
    pub node: NodeId,
    /// The older tree's size and root.
    pub old: (u64, Hash),
    /// The newer tree's size and root.
    pub new: (u64, Hash),
}

impl Consistency {
    /// Encodes `[1, old note, new note, proof]`.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&Value::Array(vec![
            Value::from(1u64),
            Value::Bytes(self.old.clone()),
            Value::Bytes(self.new.clone()),
            Value::Array(
                self.proof
                    .iter()
                    .map(|h| Value::Bytes(h.to_vec()))
                    .collect(),
            ),
        ]))
    }

    /// Decodes strictly.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let shape = DecodeError::Shape {
            object: "consistency proof",
            expected: "[1, old checkpoint, new checkpoint, proof]",
        };
        let Value::Array(items) = cbor::decode_strict(bytes, MAX_EVIDENCE_LEN, None)? else {
            return Err(shape);
        };
        let [v, old, new, proof]: [Value; 4] = items.try_into().map_err(|_| shape.clone())?;
        if cbor::as_uint(&v) != Some(1) {
            return Err(shape);
        }
        let (Value::Bytes(old), Value::Bytes(new), Value::Array(proof)) = (old, new, proof) else {
            return Err(shape);
        };
        let proof = hashes(proof, 128).ok_or(shape)?;
        Ok(Self { old, new, proof })
    }

    /// Verifies against `roster`: both checkpoints open (as for a bundle) and are of one log,
    /// the older is not larger, and the proof shows the newer tree extends the older.
    pub fn verify(&self, roster: &Roster) -> Result<ConsistencyProven, EvidenceError> {
        let (node, old, _) = open_checkpoint(&self.old, roster)?;
        let (node_new, new, _) = open_checkpoint(&self.new, roster)?;
        if node != node_new || old.size() > new.size() {
            return Err(EvidenceError::NotOneLog {
                old_node: node,
                old_size: old.size(),
                new_node: node_new,
                new_size: new.size(),
            });
        }
        merkle::verify_consistency(old.size(), new.size(), old.root(), new.root(), &self.proof)?;
        Ok(ConsistencyProven {
            node,
            old: (old.size(), *old.root()),
            new: (new.size(), *new.root()),
        })
    }
}

/// Opens the signed object an audit entry of `log`'s holds, against `roster` (the one in
/// force when it was logged): the right type for the entry's kind, signed by the member the
/// object names, and that member in the place the kind says (a sent envelope is from `log`,
/// a received one to it, a receipt `log` signs is its own, one it takes answers a message it
/// sent …). Returns how many signatures were checked (0 for the kinds that hold a plain
/// record); the error says what is wrong.
pub fn open_entry_object(entry: &Entry, log: &NodeId, roster: &Roster) -> Result<u64, String> {
    use crate::action::{MAX_CREDENTIAL_LEN, Officer, TYP_OFFICER};
    use crate::audit::EntryKind as K;
    use crate::cose::{SignedObject, TYP_NONDELIVERY};
    use crate::envelope::{Envelope, MAX_ENVELOPE_LEN};
    use crate::receipt::{SignedNonDelivery, SignedReceipt};

    let signer = |kid: &[u8; 8]| roster.signer(kid);
    let obj = &entry.object;
    let place = |ok: bool, what: String| if ok { Ok(1) } else { Err(what) };
    match entry.kind {
        K::MessageSent | K::MessageReceived | K::Relayed => {
            let env = Envelope::open(obj, signer)
                .map_err(|e| format!("the envelope in the entry does not verify: {e}"))?;
            let h = env.header();
            match entry.kind {
                K::MessageSent => place(
                    h.from == *log,
                    format!("a sent envelope from {}, not from {log}", h.from),
                ),
                K::MessageReceived => place(
                    h.to == *log,
                    format!("a received envelope addressed to {}, not to {log}", h.to),
                ),
                _ => place(
                    h.from != *log && h.to != *log,
                    format!("a relayed envelope from {} to {}", h.from, h.to),
                ),
            }
        }
        // One signature over the receipts of a group commit (§4.3a): the log's own.
        K::ReceiptSent
            if SignedObject::parse(obj, MAX_ENVELOPE_LEN)
                .is_ok_and(|o| o.typ() == crate::cose::TYP_RECEIPT_BATCH) =>
        {
            let (_, batch) = crate::receipt::open_batch(obj, signer)
                .map_err(|e| format!("the receipt batch in the entry does not verify: {e}"))?;
            place(
                batch.recipient == *log,
                format!(
                    "a receipt batch signed by {}, not by {log}",
                    batch.recipient
                ),
            )
        }
        K::ReceiptSent | K::ReceiptReceived => {
            let r = SignedReceipt::open(obj, signer)
                .map_err(|e| format!("the receipt in the entry does not verify: {e}"))?;
            let r = r.receipt();
            if entry.kind == K::ReceiptSent {
                place(
                    r.recipient == *log,
                    format!("a receipt signed by {}, not by {log}", r.recipient),
                )
            } else {
                place(
                    r.sender == *log,
                    format!("a receipt for a message of {}, not of {log}", r.sender),
                )
            }
        }
        K::Expired | K::NonDeliveryReceived => {
            let nd = SignedNonDelivery::open(obj, signer).map_err(|e| {
                format!("the non-delivery record in the entry does not verify: {e}")
            })?;
            let nd = nd.record();
            if entry.kind == K::Expired {
                place(
                    nd.dropped_by == *log,
                    format!("a non-delivery record by {}, not by {log}", nd.dropped_by),
                )
            } else {
                place(
                    nd.sender == *log,
                    format!(
                        "a non-delivery record for a message of {}, not of {log}",
                        nd.sender
                    ),
                )
            }
        }
        K::Forwarded => SignedReceipt::open(obj, signer)
            .map(|_| 1)
            .or_else(|_| SignedNonDelivery::open(obj, signer).map(|_| 1))
            .map_err(|e| format!("the forwarded object in the entry does not verify: {e}")),
        // A relay's refusal for good holds the non-delivery record it signed.
        K::Rejected
            if SignedObject::parse(obj, MAX_ENVELOPE_LEN)
                .is_ok_and(|o| o.typ() == TYP_NONDELIVERY) =>
        {
            SignedNonDelivery::open(obj, signer)
                .map(|_| 1)
                .map_err(|e| format!("the non-delivery record in the entry does not verify: {e}"))
        }
        // An enrollment holds the node-signed credential; a revocation a plain record.
        K::KeyChanged
            if SignedObject::parse(obj, MAX_CREDENTIAL_LEN)
                .is_ok_and(|o| o.typ() == TYP_OFFICER) =>
        {
            let (officer, _) = Officer::open(obj, roster)
                .map_err(|e| format!("the officer credential in the entry does not verify: {e}"))?;
            place(
                officer.node == *log,
                format!("an officer credential of {}, not of {log}", officer.node),
            )
        }
        _ => Ok(0),
    }
}

/// One log, one history: every checkpoint of one log and size in `proven` has one root; two
/// roots for one size are a fork, refused with both shown.
pub fn one_history(proven: &[Proven]) -> Result<(), EvidenceError> {
    let mut roots: std::collections::BTreeMap<(&NodeId, u64), &Hash> =
        std::collections::BTreeMap::new();
    for p in proven {
        let root = roots.entry((&p.node, p.size)).or_insert(&p.root);
        if *root != &p.root {
            return Err(EvidenceError::Fork {
                node: p.node.clone(),
                size: p.size,
                first: hex::encode(root),
                second: hex::encode(p.root),
            });
        }
    }
    Ok(())
}

/// A case file's bundles are of one log and under one checkpoint (protocol.md §13.3a): the same
/// log, size and root (and so, by [`one_history`], the same tree).
pub fn one_checkpoint(proven: &[Proven]) -> Result<(), EvidenceError> {
    let Some(first) = proven.first() else {
        return Ok(());
    };
    for p in &proven[1..] {
        if p.node != first.node {
            return Err(EvidenceError::SeveralLogs {
                first: first.node.clone(),
                second: p.node.clone(),
            });
        }
        if (p.size, p.root) != (first.size, first.root) {
            return Err(EvidenceError::SeveralCheckpoints {
                first_index: first.index,
                first_size: first.size,
                second_index: p.index,
                second_size: p.size,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::audit::EntryKind;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use crate::note::{Checkpoint, NoteSignature, SignedNote, cosign};
    use crate::workflow::testing::demo_roster;

    /// A one-entry log of `cn-35-psb` (seed 1) cosigned by `cn-61-psb` (seed 2), as a bundle.
    fn bundle(corrupt: impl FnOnce(&mut Vec<u8>)) -> Evidence {
        let log = NodeId::new("cn-35-psb").unwrap_or_else(|e| panic!("{e}"));
        let entry = Entry {
            kind: EntryKind::RosterApplied,
            at: 1,
            node: log,
            object: vec![0xa0],
        }
        .encode();
        let cp = Checkpoint::new("cn-35-psb/log", 1, merkle::leaf_hash(&entry))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut note =
            SignedNote::sign_checkpoint(&cp, "cn-35-psb/log", &SigningKey::from_bytes(&[1; 32]))
                .unwrap_or_else(|e| panic!("{e}"));
        let sig = cosign(
            &cp,
            "cn-61-psb/witness",
            &SigningKey::from_bytes(&[2; 32]),
            1_700_000_000,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // The line's bytes: key id (4), time (8), Ed25519 signature (64).
        let line = sig.to_line();
        let (head, b64) = line
            .trim_end()
            .rsplit_once(' ')
            .unwrap_or_else(|| unreachable!());
        let mut raw = BASE64.decode(b64).unwrap_or_else(|e| panic!("{e}"));
        corrupt(&mut raw);
        let line = format!("{head} {}\n", BASE64.encode(raw));
        let sig = NoteSignature::parse_line(&line).unwrap_or_else(|e| panic!("{e}"));
        note.add_signature(sig).unwrap_or_else(|e| panic!("{e}"));
        Evidence {
            entry,
            index: 0,
            checkpoint: note.to_text().into_bytes(),
            path: vec![],
        }
    }

    #[test]
    fn a_corrupted_cosignature_by_a_known_witness_makes_the_bundle_invalid() {
        let roster = demo_roster().unwrap_or_else(|e| panic!("{e}"));
        let good = bundle(|_| {})
            .verify(&roster)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(good.cosigned_by.len(), 1);
        assert_eq!(good.cosigned_by[0].0.as_str(), "cn-61-psb");
        let bad = bundle(|s| s[40] ^= 1).verify(&roster);
        assert!(
            matches!(&bad, Err(EvidenceError::Cosignature { witness, .. }) if witness.as_str() == "cn-61-psb"),
            "{bad:?}"
        );
        // Its time field changed: the signature no longer covers it either.
        let bad = bundle(|s| s[11] ^= 1).verify(&roster);
        assert!(
            matches!(bad, Err(EvidenceError::Cosignature { .. })),
            "{bad:?}"
        );
    }

    #[test]
    fn two_roots_for_one_size_of_one_log_are_a_fork() {
        let roster = demo_roster().unwrap_or_else(|e| panic!("{e}"));
        let a = bundle(|_| {})
            .verify(&roster)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut b = a.clone();
        assert_eq!(one_history(&[a.clone(), b.clone()]), Ok(()));
        b.root[0] ^= 1;
        let fork = one_history(&[a.clone(), b.clone()]);
        assert!(
            matches!(&fork, Err(EvidenceError::Fork { size: 1, first, second, .. })
                if *first == hex::encode(a.root) && *second == hex::encode(b.root)),
            "{fork:?}"
        );
        // Other sizes, or other logs, are other checkpoints.
        b.size = 2;
        assert_eq!(one_history(&[a.clone(), b.clone()]), Ok(()));
        b.size = 1;
        b.node = NodeId::new("cn-61-psb").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one_history(&[a, b]), Ok(()));
    }

    #[test]
    fn a_case_file_is_one_log_under_one_checkpoint() {
        let roster = demo_roster().unwrap_or_else(|e| panic!("{e}"));
        let a = bundle(|_| {})
            .verify(&roster)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one_checkpoint(&[]), Ok(()));
        assert_eq!(one_checkpoint(&[a.clone(), a.clone()]), Ok(()));
        let mut later = a.clone();
        later.index = 7;
        later.size = 9;
        assert!(matches!(
            one_checkpoint(&[a.clone(), later]),
            Err(EvidenceError::SeveralCheckpoints {
                first_index: 0,
                first_size: 1,
                second_index: 7,
                second_size: 9
            })
        ));
        let mut other = a.clone();
        other.node = id("cn-61-psb");
        assert!(matches!(
            one_checkpoint(&[a, other]),
            Err(EvidenceError::SeveralLogs { second, .. }) if second.as_str() == "cn-61-psb"
        ));
    }

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An envelope `from` → `to`, signed with `key_seed`'s key.
    fn envelope(from: &str, to: &str, key_seed: u8) -> Vec<u8> {
        crate::envelope::Envelope::seal(
            crate::envelope::Header {
                federation: "cn-atip-demo".into(),
                id: crate::ids::MessageId([3; 16]),
                from: id(from),
                to: id(to),
                sent_at: 1,
                kind: "bus.test".into(),
                body_len: 0,
                body_hash: crate::ids::Digest::of(b"").0,
                priority: crate::Priority::Routine,
                in_reply_to: None,
                expires_at: None,
                case_ref: None,
            },
            &SigningKey::from_bytes(&[key_seed; 32]),
        )
        .bytes()
        .to_vec()
    }

    fn entry(kind: EntryKind, log: &str, object: Vec<u8>) -> Entry {
        Entry {
            kind,
            at: 1,
            node: id(log),
            object,
        }
    }

    #[test]
    fn every_signed_object_in_an_entry_is_opened_and_put_in_its_place() {
        let roster = demo_roster().unwrap_or_else(|e| panic!("{e}"));
        let (fj, sx) = ("cn-35-psb", "cn-61-psb");
        let check = |e: &Entry| open_entry_object(e, &e.node, &roster);
        // Genuine: sent by fj (seed 1), received by sx.
        let genuine = envelope(fj, sx, 1);
        assert_eq!(
            check(&entry(EntryKind::MessageSent, fj, genuine.clone())),
            Ok(1)
        );
        assert_eq!(
            check(&entry(EntryKind::MessageReceived, sx, genuine.clone())),
            Ok(1)
        );
        // A "received" envelope claiming fj as sender but signed by sx itself.
        let forged = envelope(fj, sx, 2);
        let e = check(&entry(EntryKind::MessageReceived, sx, forged));
        assert!(
            e.as_ref().is_err_and(|e| e.contains("does not verify")),
            "{e:?}"
        );
        // A broken signature.
        let mut broken = genuine.clone();
        let last = broken.len() - 1;
        broken[last] ^= 1;
        assert!(check(&entry(EntryKind::MessageReceived, sx, broken)).is_err());
        // In the wrong log, or the wrong place.
        assert!(check(&entry(EntryKind::MessageSent, sx, genuine.clone())).is_err());
        assert!(check(&entry(EntryKind::MessageReceived, fj, genuine.clone())).is_err());
        // A receipt where an envelope belongs, and the reverse.
        let receipt = crate::receipt::SignedReceipt::sign(
            crate::receipt::Receipt {
                federation: "cn-atip-demo".into(),
                message_digest: crate::ids::Digest::of(&genuine),
                message_id: crate::ids::MessageId([3; 16]),
                sender: id(fj),
                recipient: id(sx),
                at: 1,
                status: crate::receipt::ReceiptStatus::Delivered,
                log_ref: None,
            },
            &SigningKey::from_bytes(&[2; 32]),
        )
        .bytes()
        .to_vec();
        assert!(check(&entry(EntryKind::MessageReceived, sx, receipt.clone())).is_err());
        assert!(check(&entry(EntryKind::ReceiptSent, sx, genuine)).is_err());
        assert_eq!(
            check(&entry(EntryKind::ReceiptSent, sx, receipt.clone())),
            Ok(1)
        );
        assert_eq!(
            check(&entry(EntryKind::ReceiptReceived, fj, receipt.clone())),
            Ok(1)
        );
        // A receipt sx signed, taken by a node that did not send the message.
        assert!(check(&entry(EntryKind::ReceiptReceived, sx, receipt)).is_err());
        // Plain records are not signed objects.
        assert_eq!(
            check(&entry(EntryKind::RosterApplied, fj, vec![0xa0])),
            Ok(0)
        );
    }

    /// A note of `cn-35-psb`'s log over the first `size` of `leaves`.
    fn note_of(leaves: &[Hash], size: usize) -> Vec<u8> {
        let cp = Checkpoint::new(
            "cn-35-psb/log",
            size as u64,
            merkle::root_from_leaves(&leaves[..size]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        SignedNote::sign_checkpoint(&cp, "cn-35-psb/log", &SigningKey::from_bytes(&[1; 32]))
            .unwrap_or_else(|e| panic!("{e}"))
            .to_text()
            .into_bytes()
    }

    #[test]
    fn a_consistency_proof_shows_the_newer_tree_extends_the_older() {
        let roster = demo_roster().unwrap_or_else(|e| panic!("{e}"));
        let leaves: Vec<Hash> = (0u8..5).map(|i| merkle::leaf_hash(&[i])).collect();
        let proof = merkle::consistency_proof(&leaves, 2).unwrap_or_else(|e| panic!("{e}"));
        let c = Consistency {
            old: note_of(&leaves, 2),
            new: note_of(&leaves, 5),
            proof,
        };
        let back = Consistency::decode(&c.encode()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, c);
        let proven = c.verify(&roster).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(proven.node.as_str(), "cn-35-psb");
        assert_eq!((proven.old.0, proven.new.0), (2, 5));
        // A rewritten history: the old tree with another second entry.
        let mut forked = leaves.clone();
        forked[1] = merkle::leaf_hash(b"rewritten");
        let lie = Consistency {
            old: note_of(&forked, 2),
            ..c.clone()
        };
        assert!(matches!(
            lie.verify(&roster),
            Err(EvidenceError::Inclusion(_))
        ));
        // Newer first is refused.
        let reversed = Consistency {
            old: c.new.clone(),
            new: c.old.clone(),
            proof: vec![],
        };
        assert!(reversed.verify(&roster).is_err());
    }
}
