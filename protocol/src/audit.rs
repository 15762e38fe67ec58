//! Audit log entries (docs/formats.md §4): `[1, kind, at, node, object]`, and the registry of
//! entry kinds. The Merkle math is in [`crate::merkle`], checkpoints in [`crate::note`].

use ciborium::Value;

use crate::cbor::{self, MapBuilder};
use crate::error::DecodeError;
use crate::ids::NodeId;

/// Largest encoded entry.
pub const MAX_ENTRY_LEN: usize = 65_535;

/// What an audit entry records. The numbers are part of the format (docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A message this node signed and queued; object: the envelope.
    MessageSent = 1,
    /// A message delivered to this node; object: the envelope.
    MessageReceived = 2,
    /// A receipt this node signed; object: the receipt.
    ReceiptSent = 3,
    /// A receipt this node received for a message it sent; object: the receipt.
    ReceiptReceived = 4,
    /// Input refused; object: a rejection record.
    Rejected = 5,
    /// A message dropped at expiry; object: the non-delivery record.
    Expired = 6,
    /// A message taken in custody for relaying; object: the envelope.
    Relayed = 7,
    /// A case changed state; object: a state-change record.
    CaseStateChanged = 8,
    /// An officer action; object: the signed action.
    OfficerAction = 9,
    /// A body deleted at the end of its retention; object: a purge record.
    BodyPurged = 10,
    /// A roster was applied; object: a roster record (serial and digest).
    RosterApplied = 11,
    /// A key was added or revoked; object: a key record.
    KeyChanged = 12,
    /// A send refused by policy; object: a rejection record.
    RefusedByPolicy = 13,
    /// A peer's TLS handshake was refused; object: a rejection record.
    HandshakeRefused = 14,
    /// The application took a message from the inbox; object: an inbox record.
    HandedToApplication = 15,
    /// A non-delivery record received for a message this node sent; object: the record.
    NonDeliveryReceived = 16,
    /// A relay forwarded a receipt or non-delivery record; object: that object.
    Forwarded = 17,
    /// This node, as witness, cosigned a peer's checkpoint; object: the peer's signed note.
    WitnessCosigned = 18,
    /// A peer's checkpoint was inconsistent with one this node cosigned (fork or rollback);
    /// object: a conflict record `[reason, earlier note, new note]`.
    WitnessConflict = 19,
    /// A peer cosigned this node's checkpoint; object: the checkpoint note with the
    /// cosignature.
    CheckpointCosigned = 20,
}

impl EntryKind {
    /// From the wire number.
    pub fn from_u64(v: u64) -> Option<Self> {
        use EntryKind::*;
        Some(match v {
            1 => MessageSent,
            2 => MessageReceived,
            3 => ReceiptSent,
            4 => ReceiptReceived,
            5 => Rejected,
            6 => Expired,
            7 => Relayed,
            8 => CaseStateChanged,
            9 => OfficerAction,
            10 => BodyPurged,
            11 => RosterApplied,
            12 => KeyChanged,
            13 => RefusedByPolicy,
            14 => HandshakeRefused,
            15 => HandedToApplication,
            16 => NonDeliveryReceived,
            17 => Forwarded,
            18 => WitnessCosigned,
            19 => WitnessConflict,
            20 => CheckpointCosigned,
            _ => return None,
        })
    }
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What happened.
    pub kind: EntryKind,
    /// When, Unix ms.
    pub at: u64,
    /// The node that logged it.
    pub node: NodeId,
    /// The signed object concerned, or a small CBOR record.
    pub object: Vec<u8>,
}

impl Entry {
    /// Encodes `[1, kind, at, node, object]`.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&Value::Array(vec![
            Value::from(1u64),
            Value::from(self.kind as u64),
            Value::from(self.at),
            Value::Text(self.node.as_str().to_owned()),
            Value::Bytes(self.object.clone()),
        ]))
    }

    /// Decodes an entry strictly.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let shape = DecodeError::Shape {
            object: "audit entry",
            expected: "[1, kind, at, node, object]",
        };
        let Value::Array(items) = cbor::decode_strict(bytes, MAX_ENTRY_LEN, None)? else {
            return Err(shape);
        };
        let [v, kind, at, node, object]: [Value; 5] =
            items.try_into().map_err(|_| shape.clone())?;
        if cbor::as_uint(&v) != Some(1) {
            return Err(shape);
        }
        let kind =
            cbor::as_uint(&kind)
                .and_then(EntryKind::from_u64)
                .ok_or(DecodeError::Invalid {
                    what: "audit entry",
                    problem: "unknown entry kind".to_owned(),
                })?;
        let at = cbor::as_uint(&at).ok_or(shape.clone())?;
        let node = NodeId::new(cbor::as_text(node).ok_or(shape.clone())?)?;
        let Value::Bytes(object) = object else {
            return Err(shape);
        };
        Ok(Self {
            kind,
            at,
            node,
            object,
        })
    }
}

/// A small CBOR record for an event that has no signed object of its own:
/// `{1: reason, ?2: peer, ?3: digest, ?4: message id}`.
pub fn event_record(
    reason: &str,
    peer: Option<&str>,
    digest: Option<&[u8; 32]>,
    message_id: Option<&[u8; 16]>,
) -> Vec<u8> {
    cbor::encode(
        &MapBuilder::new()
            .put(1, reason)
            .put_opt(2, peer)
            .put_opt(3, digest.map(|d| Value::Bytes(d.to_vec())))
            .put_opt(4, message_id.map(|d| Value::Bytes(d.to_vec())))
            .build(),
    )
}

/// The record of a case state change: `{1: case ref, ?2: state before, 3: state after,
/// 4: digest of the action that caused it}` (no previous state when the step opened the case).
pub fn state_change_record(
    case_ref: &str,
    from: Option<&str>,
    to: &str,
    action: &[u8; 32],
) -> Vec<u8> {
    cbor::encode(
        &MapBuilder::new()
            .put(1, case_ref)
            .put_opt(2, from)
            .put(3, to)
            .put(4, Value::Bytes(action.to_vec()))
            .build(),
    )
}

/// The case an entry is about, from its object: an envelope's case reference (sent,
/// received, relayed), or a state-change
/// record's or an action record's. Receipts and non-delivery records name an envelope instead
/// (see [`crate::evidence::CaseEvidence`]).
pub fn case_of(entry: &Entry) -> Option<String> {
    match entry.kind {
        EntryKind::MessageSent | EntryKind::MessageReceived | EntryKind::Relayed => {
            crate::envelope::Envelope::peek_unverified(&entry.object).and_then(|(_, h)| h.case_ref)
        }
        EntryKind::OfficerAction | EntryKind::CaseStateChanged => {
            let v = cbor::decode_strict(&entry.object, MAX_ENTRY_LEN, None).ok()?;
            let Value::Map(m) = v else { return None };
            m.into_iter()
                .find_map(|(k, v)| match (cbor::as_uint(&k), v) {
                    (Some(1), Value::Text(t)) => Some(t),
                    _ => None,
                })
        }
        _ => None,
    }
}

/// The record of an officer's (or the node's automatic) action: `{1: case ref, 2: kind,
/// 3: actor (officer id or node id), 4: digest of the signed action}`. The signed action
/// itself travels as the message body (whose hash the logged envelope commits to) and is
/// deleted with it when its retention ends: the permanent log never holds the document.
pub fn action_record(case_ref: &str, kind: &str, actor: &str, action: &[u8; 32]) -> Vec<u8> {
    cbor::encode(
        &MapBuilder::new()
            .put(1, case_ref)
            .put(2, kind)
            .put(3, actor)
            .put(4, Value::Bytes(action.to_vec()))
            .build(),
    )
}

/// The parts of an [`event_record`]: reason, peer, digest, message id.
pub type EventRecord = (String, Option<String>, Option<[u8; 32]>, Option<[u8; 16]>);

/// Decodes an [`event_record`] (None when `bytes` is not one).
pub fn decode_event_record(bytes: &[u8]) -> Option<EventRecord> {
    let v = cbor::decode_strict(bytes, MAX_ENTRY_LEN, None).ok()?;
    let mut m = cbor::MapReader::new("event record", v).ok()?;
    let reason = m.text(1).ok()?;
    let peer = m.opt_text(2).ok()?;
    let digest = m.opt_fixed(3).ok()?;
    let id = m.opt_fixed(4).ok()?;
    m.finish().ok()?;
    Some((reason, peer, digest, id))
}

/// The record of a witness conflict: `[reason, earlier note, new note]`.
pub fn conflict_record(reason: &str, earlier: &[u8], new: &[u8]) -> Vec<u8> {
    cbor::encode(&Value::Array(vec![
        Value::Text(reason.to_owned()),
        Value::Bytes(earlier.to_vec()),
        Value::Bytes(new.to_vec()),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip_and_golden() {
        let e = Entry {
            kind: EntryKind::Rejected,
            at: 1000,
            node: NodeId::new("n1").unwrap(),
            object: vec![0xa0],
        };
        let b = e.encode();
        // [1, 5, 1000, "n1", h'a0']
        assert_eq!(hex::encode(&b), "8501051903e8626e3141a0");
        assert_eq!(Entry::decode(&b).unwrap(), e);
        for k in 1..=20 {
            assert!(EntryKind::from_u64(k).is_some());
        }
        assert!(EntryKind::from_u64(0).is_none());
        assert!(EntryKind::from_u64(21).is_none());
    }
}
