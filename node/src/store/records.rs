//! The records the store keeps, CBOR-encoded (serde), and their encoding helpers.
//!
//! Fields added after the first release carry `#[serde(default)]`, so records written by
//! earlier code still decode (the schema version stays 1 while every change is additive).

use std::sync::Arc;

use liaison_protocol::{NodeId, Priority};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Which way a message went through this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Signed and sent by this node.
    Outgoing,
    /// Addressed to this node.
    Incoming,
    /// Held by this node as a relay.
    Relay,
}

/// Where a message stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum MsgState {
    /// Waiting in the outbox for its next hop.
    Queued,
    /// A relay holds it; the end-to-end receipt is awaited.
    InCustody { relay: String },
    /// Delivered; the receipt is in `proof`.
    Delivered,
    /// Refused by the recipient (or a relay); the reason.
    Rejected { reason: String },
    /// Dropped at expiry; the non-delivery record is in `proof`.
    Expired,
}

/// What the store keeps about one message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The signed envelope.
    #[serde(with = "serde_bytes_vec")]
    pub envelope: Vec<u8>,
    /// Sent, received or relayed.
    pub direction: Direction,
    /// Current state.
    pub state: MsgState,
    /// Next hop, for outgoing and relayed messages.
    pub hop: Option<String>,
    /// When it entered this node, ms.
    pub stored_at: u64,
    /// Last state change, ms.
    pub updated_at: u64,
    /// The signed receipt (delivered/rejected) or non-delivery record.
    #[serde(with = "serde_opt_bytes")]
    pub proof: Option<Vec<u8>>,
    /// Inbox sequence, for incoming messages.
    pub inbox_seq: Option<u64>,
    /// Whether the application has taken it.
    pub handed_over: bool,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Key of its outbox entry while queued here.
    #[serde(with = "serde_opt_bytes")]
    pub out_key: Option<Vec<u8>>,
    /// How long the body may be kept, ms, when the message says (an officer action's
    /// retention); the node's own `body_retention_ms` applies when it is shorter.
    #[serde(default)]
    pub retain_ms: Option<u64>,
    /// Index of the audit entry that recorded the message here (sent, received or relayed),
    /// so an evidence bundle for it is found without reading the log. That entry holds the
    /// envelope, so the stored record leaves `envelope` empty and the store fills it in.
    #[serde(default)]
    pub log_index: Option<u64>,
    /// The body, until its retention ends (records written before bodies were kept here
    /// have theirs under `b/`).
    #[serde(default, with = "serde_opt_bytes")]
    pub body: Option<Vec<u8>>,
}

/// A [`MessageRecord`] as written, borrowed (its envelope left out when the log holds it):
/// the same fields, names and encoding, without copying the body to leave the envelope out.
#[derive(Serialize)]
pub(crate) struct MessageRecordRef<'a> {
    #[serde(serialize_with = "ser_bytes")]
    envelope: &'a [u8],
    direction: Direction,
    state: &'a MsgState,
    hop: &'a Option<String>,
    stored_at: u64,
    updated_at: u64,
    #[serde(serialize_with = "ser_opt_bytes")]
    proof: &'a Option<Vec<u8>>,
    inbox_seq: Option<u64>,
    handed_over: bool,
    attempts: u32,
    #[serde(serialize_with = "ser_opt_bytes")]
    out_key: &'a Option<Vec<u8>>,
    retain_ms: Option<u64>,
    log_index: Option<u64>,
    #[serde(serialize_with = "ser_opt_bytes")]
    body: &'a Option<Vec<u8>>,
}

impl<'a> MessageRecordRef<'a> {
    pub(crate) fn new(r: &'a MessageRecord, with_envelope: bool) -> Self {
        Self {
            envelope: if with_envelope { &r.envelope } else { &[] },
            direction: r.direction,
            state: &r.state,
            hop: &r.hop,
            stored_at: r.stored_at,
            updated_at: r.updated_at,
            proof: &r.proof,
            inbox_seq: r.inbox_seq,
            handed_over: r.handed_over,
            attempts: r.attempts,
            out_key: &r.out_key,
            retain_ms: r.retain_ms,
            log_index: r.log_index,
            body: &r.body,
        }
    }
}

fn ser_bytes<S: serde::Serializer>(v: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

fn ser_opt_bytes<S: serde::Serializer>(v: &&Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_bytes(b),
        None => s.serialize_none(),
    }
}

/// An item waiting in a per-hop outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "item")]
pub enum OutItem {
    /// A message (envelope in `m/`, body in `b/`).
    Message { digest: [u8; 32] },
    /// A receipt to forward towards the original sender.
    Receipt {
        #[serde(with = "serde_bytes_vec")]
        bytes: Vec<u8>,
        digest: [u8; 32],
    },
    /// A non-delivery record to forward towards the original sender.
    NonDelivery {
        #[serde(with = "serde_bytes_vec")]
        bytes: Vec<u8>,
        digest: [u8; 32],
    },
}

/// The envelope and body of a queued message, held in memory while its queue is short so
/// that sending it needs no store read (a restored or long queue reads them from the store).
#[derive(Debug, PartialEq, Eq)]
pub struct Payload {
    /// The signed envelope.
    pub envelope: Vec<u8>,
    /// The body.
    pub body: Vec<u8>,
}

/// An outbox entry as loaded into a peer's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Store key of the outbox entry.
    pub key: Vec<u8>,
    /// Priority lane.
    pub priority: Priority,
    /// Sequence (FIFO within a lane).
    pub seq: u64,
    /// The item.
    pub item: OutItem,
    /// Expiry of the message, ms.
    pub expires_at: Option<u64>,
    /// Envelope and body in memory (not stored), when the sender had them at hand.
    pub payload: Option<Arc<Payload>>,
}

impl Queued {
    /// Its place in a peer's outbox schedule. `restored`: loaded from the store at start,
    /// when nobody knows whether a message reached its peer just before the restart (the
    /// crash can come between the peer's receipt and our record of it), so it is not dropped
    /// at expiry without asking the peer.
    pub fn meta(&self, restored: bool) -> liaison_protocol::delivery::Meta {
        liaison_protocol::delivery::Meta::new(
            self.priority,
            self.seq,
            self.expires_at,
            restored && matches!(self.item, OutItem::Message { .. }),
        )
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub(crate) next_log: u64,
    pub(crate) next_inbox: u64,
    pub(crate) next_out: u64,
}

/// An officer enrolled at this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfficerRecord {
    /// The node-signed credential.
    #[serde(with = "serde_bytes_vec")]
    pub credential: Vec<u8>,
    /// When the officer was revoked, if so.
    pub revoked_at: Option<u64>,
}

/// A case as this node sees it: the state machine's state, every step, and fan-out state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseRecord {
    /// The state machine's state.
    pub case: liaison_protocol::workflow::Case,
    /// Every step, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Alerts issued here: the signed issue action, to widen the radius with.
    #[serde(default, with = "serde_opt_bytes")]
    pub alert_action: Option<Vec<u8>>,
    /// Alerts issued here: the units already alerted.
    #[serde(default)]
    pub alerted: Vec<NodeId>,
    /// Whether the supervisor was already told the case is overdue.
    #[serde(default)]
    pub overdue_notified: bool,
    /// Steps recorded here only (a repatriation case opened with the victim's consent):
    /// the signed actions, kept until their retention ends like message bodies.
    #[serde(default)]
    pub local_actions: Vec<LocalAction>,
    /// Revision: how many times the record was written. A change decided on one revision
    /// is refused if the record moved on meanwhile.
    #[serde(default)]
    pub rev: u64,
    /// When the case ticker must look at the case next (a deadline, a supervision due date,
    /// a wider alert radius, a local action's retention), kept in the `t/` index.
    #[serde(default)]
    pub wake: Option<u64>,
    /// For a granted onward-passing permission: its key in the `pg/` index.
    #[serde(default)]
    pub grant: Option<String>,
}

impl CaseRecord {
    /// A new record for `case`.
    pub fn new(case: liaison_protocol::workflow::Case) -> Self {
        Self {
            case,
            timeline: Vec::new(),
            alert_action: None,
            alerted: Vec::new(),
            overdue_notified: false,
            local_actions: Vec::new(),
            rev: 0,
            wake: None,
            grant: None,
        }
    }
}

/// What the store indexes a case by, as the cases module computes it from the record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseIndex {
    /// When the ticker must look at it next.
    pub wake: Option<u64>,
    /// A granted onward-passing permission: (message id hex, provider, recipient).
    pub grant: Option<(String, NodeId, NodeId)>,
}

/// A signed action recorded on this node only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalAction {
    /// Recorded at, Unix ms.
    pub at: u64,
    /// How long it may be kept, ms.
    pub retain_ms: u64,
    /// The signed action.
    #[serde(with = "serde_bytes_vec")]
    pub action: Vec<u8>,
}

/// One step of a case, for timelines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When the step was signed, Unix ms.
    pub at: u64,
    /// Message kind.
    pub kind: String,
    /// How the step came to this copy of the case.
    pub direction: StepDirection,
    /// Sending node.
    pub from: NodeId,
    /// Receiving nodes.
    pub to: Vec<NodeId>,
    /// Officer id (or node id for automatic steps).
    pub actor: String,
    /// Officer name and role, when an officer signed.
    pub officer: Option<String>,
    /// Message ids (hex), one per recipient.
    pub message_ids: Vec<String>,
    /// Digest of the signed action (hex).
    pub action: String,
    /// What was verified of the step.
    pub verified: Verified,
    /// State after the step.
    pub state: String,
    /// Deadline after the step.
    pub deadline: Option<u64>,
}

/// How a step came to a node's copy of a case (stored as its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepDirection {
    /// An officer here signed it and it was sent.
    Sent,
    /// It arrived from another node.
    Received,
    /// Recorded here only (no recipient).
    Local,
    /// Signed by a node itself (an overdue notice), sent or received.
    Automatic,
    /// An alert sent again to the units its widening radius reached.
    Widened,
    /// The recipient refused it for good (its signed rejection receipt).
    Refused,
    /// The ticker marked the case overdue.
    Overdue,
}

impl StepDirection {
    /// The stored and displayed name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
            Self::Local => "local",
            Self::Automatic => "automatic",
            Self::Widened => "widened",
            Self::Refused => "refused",
            Self::Overdue => "overdue",
        }
    }
}

/// What a node verified of a step in a case's timeline. Records written before it was typed
/// hold the line they displayed (`Legacy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Verified {
    /// The display line of a record from an older version.
    Legacy(String),
    /// The checks, as this version records them.
    Checked(Checks),
}

/// The checks behind a timeline entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Checks {
    /// An officer's step: the officer's signature against the credential, the credential
    /// against the key of the node that issued it, and (as received) the envelope against the
    /// sending node's key.
    Officer {
        /// The officer.
        officer: String,
        /// The node that issued the credential.
        node: NodeId,
        /// The envelope was verified too (the step was received).
        envelope: bool,
        /// Alerted units the roster no longer let this node reach: not sent to them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        not_sent_to: Vec<NodeId>,
    },
    /// A node's own step (automatic): its signature against the node's key.
    Node {
        /// The node.
        node: NodeId,
        /// The envelope was verified too (the step was received).
        envelope: bool,
    },
    /// The recipient's signed rejection receipt.
    RejectionReceipt {
        /// Who refused.
        from: NodeId,
        /// Its reason.
        reason: String,
    },
    /// Nothing signed: a mark of this node (overdue).
    Nothing,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Legacy(s) => f.write_str(s),
            Self::Checked(Checks::Officer {
                officer,
                node,
                envelope,
                not_sent_to,
            }) => {
                write!(
                    f,
                    "officer {officer} signature ✓, credential by {node} node key ✓"
                )?;
                if *envelope {
                    f.write_str(", envelope by node key ✓")?;
                }
                if !not_sent_to.is_empty() {
                    let names: Vec<&str> = not_sent_to.iter().map(NodeId::as_str).collect();
                    write!(
                        f,
                        "; NOT SENT to {} (no longer reachable under the roster)",
                        names.join(", ")
                    )?;
                }
                Ok(())
            }
            Self::Checked(Checks::Node { node, envelope }) => {
                write!(f, "{node} node key signature ✓ (automatic)")?;
                if *envelope {
                    f.write_str(", envelope by node key ✓")?;
                }
                Ok(())
            }
            Self::Checked(Checks::RejectionReceipt { from, reason }) => {
                write!(f, "signed rejection receipt from {from} ✓: {reason}")
            }
            Self::Checked(Checks::Nothing) => Ok(()),
        }
    }
}

/// What a witness keeps per log: the last checkpoint it cosigned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Witnessed {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: [u8; 32],
    /// The signed note as received.
    pub note: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredOut {
    pub(crate) item: OutItem,
    pub(crate) expires_at: Option<u64>,
}

pub(crate) fn encode_record<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Serializing our own record types into a Vec cannot fail.
    let _ = ciborium::into_writer(v, &mut out);
    out
}

pub(crate) fn decode_record<T: for<'de> Deserialize<'de>>(
    key: &[u8],
    v: &[u8],
) -> Result<T, StoreError> {
    ciborium::from_reader(v).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        problem: e.to_string(),
    })
}

mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let v = ciborium::Value::deserialize(d)?;
        v.into_bytes()
            .map_err(|_| serde::de::Error::custom("expected bytes"))
    }
}

mod serde_opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        match ciborium::Value::deserialize(d)? {
            ciborium::Value::Null => Ok(None),
            v => v
                .into_bytes()
                .map(Some)
                .map_err(|_| serde::de::Error::custom("expected bytes")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeline entry as this version writes it.
    fn entry(direction: StepDirection, verified: Verified) -> TimelineEntry {
        TimelineEntry {
            at: 1,
            kind: "assist.answer".into(),
            direction,
            from: NodeId::new("sx").unwrap_or_else(|_| unreachable!()),
            to: vec![],
            actor: "sx/zhao.lei".into(),
            officer: None,
            message_ids: vec![],
            action: String::new(),
            verified,
            state: "answered".into(),
            deadline: None,
        }
    }

    #[test]
    fn timeline_records_round_trip_and_older_ones_still_read() {
        let sx = NodeId::new("sx").unwrap_or_else(|_| unreachable!());
        for (d, v) in [
            (
                StepDirection::Received,
                Verified::Checked(Checks::Officer {
                    officer: "sx/zhao.lei".into(),
                    node: sx.clone(),
                    envelope: true,
                    not_sent_to: vec![sx.clone()],
                }),
            ),
            (
                StepDirection::Automatic,
                Verified::Checked(Checks::Node {
                    node: sx.clone(),
                    envelope: false,
                }),
            ),
            (
                StepDirection::Refused,
                Verified::Checked(Checks::RejectionReceipt {
                    from: sx.clone(),
                    reason: "no".into(),
                }),
            ),
            (StepDirection::Overdue, Verified::Checked(Checks::Nothing)),
        ] {
            let bytes = encode_record(&entry(d, v.clone()));
            let back: TimelineEntry =
                decode_record(b"k/test", &bytes).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((back.direction, back.verified), (d, v));
        }
        // A record written before the fields were typed: the direction's name and the
        // display line.
        #[derive(Serialize)]
        struct Old<'a> {
            at: u64,
            kind: &'a str,
            direction: &'a str,
            from: &'a str,
            to: Vec<String>,
            actor: &'a str,
            officer: Option<String>,
            message_ids: Vec<String>,
            action: &'a str,
            verified: &'a str,
            state: &'a str,
            deadline: Option<u64>,
        }
        let old = encode_record(&Old {
            at: 1,
            kind: "alert.issue",
            direction: "widened",
            from: "sx",
            to: vec![],
            actor: "sx/zhao.lei",
            officer: None,
            message_ids: vec![],
            action: "",
            verified: "officer sx/zhao.lei signature ✓, credential by sx node key ✓",
            state: "active",
            deadline: None,
        });
        let back: TimelineEntry = decode_record(b"k/old", &old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.direction, StepDirection::Widened);
        assert_eq!(
            back.verified.to_string(),
            "officer sx/zhao.lei signature ✓, credential by sx node key ✓"
        );
        assert!(matches!(back.verified, Verified::Legacy(_)));
    }
}
