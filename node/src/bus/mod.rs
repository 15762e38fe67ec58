//! The bus: every state change a message goes through, each one a `protocol` check
//! followed by one atomic store change. `send` here (sending, acknowledging, routing and
//! sealing); `receive` (inbound checks, dedupe, storage, rejections); `settle` (receipts,
//! non-delivery records, custody, expiry, relay forwarding); `membership` (applying a
//! roster).

pub(crate) mod hook;
pub(crate) mod inbound;
mod membership;
pub(crate) mod peer;
mod receive;
mod settle;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use liaison_protocol::audit::{EntryKind, event_record};
use liaison_protocol::delivery::Refusal;
use liaison_protocol::{
    Digest, Envelope, ErrorCode, Frame, Header, MessageId, NodeId, PolicyError, Priority,
    PublicKey, SignedRoster,
};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::bus::peer::PeerHandle;
use crate::clock::Clock;
use crate::config::DeliveryConfig;
use crate::error::{NodeError, StoreError};
use crate::net::guard::Guard;
pub(crate) use crate::net::guard::truncate;
use crate::roster::RosterCell;
use crate::store::{Direction, MessageRecord, MsgState, OutItem, Payload, Queued, Store, Txn};

/// The TLS material a node serves and dials with (switched when a roster rotates its TLS
/// key), with its certificate's expiry.
#[derive(Debug, Default)]
pub(crate) struct TlsInUse {
    /// What the endpoint serves now (None: a bus without network).
    pub(crate) material: Option<crate::net::transport::TlsMaterial>,
    /// The configured TLS key file (its `.next` file holds a successor).
    pub(crate) key_path: std::path::PathBuf,
    /// The certificate's notAfter, Unix ms.
    pub(crate) not_after: Option<u64>,
    /// The client config since a switch (before: the endpoint's default).
    pub(crate) client: Option<quinn::ClientConfig>,
}

/// The bus: the node's identity and signing key, the roster, the store, the endpoint and the
/// peers; shared by the node's tasks. The case workflows and the audit side (checkpoints,
/// witnessing) are reached only through [`hook::CaseHook`] and [`hook::AuditHook`].
pub(crate) struct Bus {
    pub(crate) id: NodeId,
    pub(crate) federation: String,
    pub(crate) keys: crate::identity::NodeKeys,
    /// The authority key in force, and the ones trusted before it, oldest first (a roster
    /// naming `next_authority` moves the one in force to the former, protocol.md §4.5).
    pub(crate) authorities: std::sync::RwLock<(PublicKey, Vec<PublicKey>)>,
    pub(crate) roster: RosterCell,
    pub(crate) store: Store,
    /// The QUIC endpoint; None for a bus without network, which unit tests drive frame by
    /// frame (nothing dials out or accepts).
    pub(crate) endpoint: Option<quinn::Endpoint>,
    pub(crate) peers: Mutex<HashMap<NodeId, PeerHandle>>,
    pub(crate) inbound: Mutex<Vec<(NodeId, quinn::Connection)>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) cfg: DeliveryConfig,
    pub(crate) dev_mode: bool,
    pub(crate) inbox_notify: Notify,
    /// A new roster was applied (the case ticker looks at every active alert again).
    pub(crate) roster_changed: Notify,
    pub(crate) settled: tokio::sync::broadcast::Sender<Settled>,
    /// The case workflows, installed at start: the bus reaches them only through this hook
    /// (weak: the cases hold the bus).
    pub(crate) cases: std::sync::OnceLock<std::sync::Weak<dyn hook::CaseHook>>,
    /// The audit side, installed at start likewise.
    pub(crate) audit: std::sync::OnceLock<std::sync::Weak<dyn hook::AuditHook>>,
    /// How long bodies (and steps recorded here only) are kept at most, ms.
    pub(crate) body_retention_ms: u64,
    /// Bounds on what peers and strangers can make this node do.
    pub(crate) guard: Arc<Guard>,
    /// The one clock (crate::clock).
    pub(crate) clock: Clock,
    /// When this node's TLS certificate expires, Unix ms (None: not known).
    pub(crate) tls: Mutex<TlsInUse>,
    /// Receipt batches verified lately (a batch's receipts cost one verification).
    pub(crate) receipt_batches: liaison_protocol::BatchCache,
}

impl Bus {
    /// Lets the store sign the receipts of each group commit as one batch with this node's
    /// signing key (protocol.md §4.3a).
    pub(crate) fn install_receipt_sealer(self: &Arc<Self>) {
        let bus = Arc::downgrade(self);
        self.store
            .set_receipt_sealer(crate::store::ReceiptSealer(Box::new(move |receipts| {
                let Some(bus) = bus.upgrade() else {
                    return (Vec::new(), Vec::new());
                };
                let (batch, proofs) = liaison_protocol::SignedReceipt::sign_batch(
                    &bus.federation,
                    &bus.id,
                    receipts,
                    &bus.keys.signing.get(),
                );
                (
                    batch.bytes().to_vec(),
                    proofs.into_iter().map(|p| p.bytes().to_vec()).collect(),
                )
            })));
    }

    /// Opens a QUIC connection to `name` at `addr` with the TLS material in use.
    pub(crate) fn dial(
        &self,
        addr: std::net::SocketAddr,
        name: &str,
    ) -> Result<quinn::Connecting, String> {
        let ep = self.endpoint.as_ref().ok_or("this node has no network")?;
        let client = self
            .tls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .client
            .clone();
        match client {
            Some(c) => ep.connect_with(c, addr, name),
            None => ep.connect(addr, name),
        }
        .map_err(|e| format!("connect to {addr}: {e}"))
    }

    /// The authority key in force: a newer roster must be signed by it.
    pub(crate) fn authority(&self) -> PublicKey {
        self.authorities
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    /// Every authority key this node has trusted (to open rosters applied under older ones).
    pub(crate) fn authorities(&self) -> Vec<PublicKey> {
        let a = self
            .authorities
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        a.1.iter().copied().chain(std::iter::once(a.0)).collect()
    }

    /// Hands over to the authority key `next` (a roster naming it was applied).
    pub(crate) fn hand_over_authority(&self, next: PublicKey) {
        let mut a = self
            .authorities
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = a.0;
        a.1.push(old);
        a.0 = next;
    }

    /// When the TLS certificate in use expires (Unix ms).
    pub(crate) fn tls_not_after(&self) -> Option<u64> {
        self.tls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .not_after
    }

    /// The audit side, if it is installed (it is, from start to shutdown).
    pub(crate) fn audit(&self) -> Option<Arc<dyn hook::AuditHook>> {
        self.audit.get().and_then(std::sync::Weak::upgrade)
    }

    /// This node's id.
    pub(crate) fn id(&self) -> &NodeId {
        &self.id
    }

    /// The roster in force.
    pub(crate) fn roster(&self) -> Arc<SignedRoster> {
        self.roster.get()
    }

    /// Entries in the audit log.
    pub(crate) fn log_len(&self) -> u64 {
        self.store.log_len()
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish()
    }
}

/// What an inbound exchange answers.
pub(crate) type Reply = Frame;

/// Stages a signed outgoing message in `t`: body, outbox entry, record, id index and the
/// "sent" audit entry. Returns the queue entry to hand to the peer actor after the write.
pub(crate) fn stage_outgoing(
    t: &mut Txn<'_>,
    env: &Envelope,
    hop: &NodeId,
    body: &[u8],
    now: u64,
) -> Queued {
    let digest = env.digest();
    let h = env.header();
    let retain_ms = retention_of(body);
    t.index_retention(&digest, now, retain_ms);
    let q = t.push_out(
        hop,
        h.priority,
        OutItem::Message { digest: digest.0 },
        h.expires_at,
    );
    let mut rec = MessageRecord {
        envelope: env.bytes().to_vec(),
        direction: Direction::Outgoing,
        state: MsgState::Queued,
        hop: Some(hop.to_string()),
        stored_at: now,
        updated_at: now,
        proof: None,
        inbox_seq: None,
        handed_over: false,
        attempts: 0,
        out_key: Some(q.key.clone()),
        retain_ms,
        log_index: Some(t.next_log_index()),
        body: None,
    };
    t.keep_body(&digest, body, &mut rec);
    t.put_message(&digest, &rec);
    t.index_id(&h.id, &digest);
    t.log(EntryKind::MessageSent, env.bytes().to_vec());
    q
}

/// The retention an officer action in `body` sets for itself, in ms (None for other bodies).
pub(crate) fn retention_of(body: &[u8]) -> Option<u64> {
    let obj = liaison_protocol::SignedObject::parse(body, liaison_protocol::action::MAX_ACTION_LEN)
        .ok()?;
    if obj.typ() != liaison_protocol::cose::TYP_ACTION {
        return None;
    }
    let a = liaison_protocol::action::Action::decode(obj.payload()).ok()?;
    Some(a.retention_days.saturating_mul(24 * 3600 * 1000))
}

pub(crate) fn error_frame(code: ErrorCode, reason: impl Into<String>) -> Frame {
    Frame::Error {
        code,
        reason: reason.into(),
    }
}

/// A message record as operators and the application see it (`body` when asked for and
/// still held).
pub(crate) fn view(
    digest: &Digest,
    rec: &MessageRecord,
    body: Option<&[u8]>,
) -> Result<MessageView, NodeError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (_, h) = Envelope::peek_unverified(&rec.envelope).ok_or_else(|| {
        NodeError::Store(StoreError::Corrupt {
            key: digest.to_hex(),
            problem: "stored envelope does not parse".into(),
        })
    })?;
    Ok(MessageView {
        message_id: h.id.to_hex(),
        digest: digest.to_hex(),
        from: h.from.to_string(),
        to: h.to.to_string(),
        kind: h.kind,
        priority: h.priority.name().to_owned(),
        sent_at: h.sent_at,
        case_ref: h.case_ref,
        direction: rec.direction,
        state: rec.state.clone(),
        hop: rec.hop.clone(),
        inbox_seq: rec.inbox_seq,
        handed_over: rec.handed_over,
        body: body.map(|b| b64.encode(b)),
        proof: rec.proof.as_ref().map(|p| b64.encode(p)),
    })
}

/// What the dedupe index says about an inbound envelope.
pub(crate) enum Dedupe {
    /// Not seen before.
    New,
    /// Seen with this very content: the answer it got then.
    Same(Reply),
    /// The id was used before with other content.
    Reused,
}

/// What taking a receipt did.
pub(crate) enum Taken {
    /// The message is not held here.
    Unknown,
    /// The receipt does not match the message it names.
    Mismatch,
    /// The message is already settled (a resent receipt).
    Already,
    /// Cannot route the receipt back.
    NoRoute(PolicyError),
    /// Recorded; forward it on `hop` (relay), or settled here (sender).
    Recorded {
        forward: Option<(NodeId, Queued)>,
        settled: Option<Settled>,
    },
}

impl Bus {
    /// Now, by the node's clock (Unix ms).
    pub(crate) fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) fn signer_lookup(&self) -> impl Fn(&[u8; 8]) -> Option<(NodeId, PublicKey)> + '_ {
        let r = self.roster.get();
        move |kid| r.roster().signer(kid)
    }

    pub(crate) fn enqueue(self: &Arc<Self>, hop: &NodeId, q: Queued) {
        self.enqueue_as(hop, q, false);
    }

    /// Queues `q` for `hop`; `restored`: loaded from the store at start.
    pub(crate) fn enqueue_as(self: &Arc<Self>, hop: &NodeId, q: Queued, restored: bool) {
        let handle = {
            let mut peers = match self.peers.lock() {
                Ok(p) => p,
                Err(p) => p.into_inner(),
            };
            peers
                .entry(hop.clone())
                .or_insert_with(|| peer::spawn(self.clone(), hop.clone()))
                .clone()
        };
        handle.push(q, restored);
    }

    /// Where the roster in force stands against its validity now.
    pub(crate) fn roster_standing(&self) -> liaison_protocol::Standing {
        self.roster
            .get()
            .roster()
            .standing(self.now(), self.cfg.roster_grace_ms)
    }

    /// Refuses new traffic once the roster in force is past its validity and grace.
    pub(crate) fn check_roster_in_force(&self) -> Result<(), NodeError> {
        match self.roster_standing() {
            liaison_protocol::Standing::Expired {
                expired_at,
                stopped_at,
            } => Err(NodeError::Roster(format!(
                "the roster in force (serial {}) expired at {expired_at} and its grace ended at \
                 {stopped_at} (Unix ms): nothing new is sent or taken until a newer roster is \
                 applied (liaison roster apply <roster.cbor> from the federation authority)",
                self.roster.get().roster().serial
            ))),
            _ => Ok(()),
        }
    }

    pub(crate) async fn send(self: &Arc<Self>, req: SendRequest) -> Result<SendResult, NodeError> {
        if self.cancel.is_cancelled() {
            return Err(NodeError::ShuttingDown);
        }
        self.check_roster_in_force()?;
        liaison_protocol::envelope::check_kind(&req.kind)?;
        let now = self.now();
        let hop = self.route(&req.to, &req.kind, req.body.len(), now).await?;
        if liaison_protocol::workflow::reserved(&req.kind) {
            return Err(NodeError::Invalid(format!(
                "{} is in a workflow's namespace: case steps are officer-signed actions (use \
                 the workflow commands, e.g. `liaison assist …`); plain messages use other \
                 kinds (e.g. bus.note)",
                req.kind
            )));
        }
        let in_reply_to = req
            .in_reply_to
            .as_deref()
            .map(MessageId::from_hex)
            .transpose()?;
        let env = self.seal(
            &req.to,
            &req.kind,
            &req.body,
            req.priority,
            in_reply_to,
            req.expires_in_ms.map(|ms| now.saturating_add(ms)),
            req.case_ref.clone(),
            now,
        );
        let payload = Arc::new(Payload {
            envelope: env.bytes().to_vec(),
            body: req.body,
        });
        let (e, h, p) = (env.clone(), hop.clone(), payload.clone());
        let mut queued = self
            .store
            .write(now, move |t| Ok(stage_outgoing(t, &e, &h, &p.body, now)))
            .await?;
        queued.payload = Some(payload);
        self.enqueue(&hop, queued);
        Ok(SendResult {
            message_id: env.header().id.to_hex(),
            digest: env.digest().to_hex(),
            hop,
        })
    }

    /// Checks the body size and the roster's policy for a message to `to` and returns the
    /// first hop; a policy refusal is logged.
    pub(crate) async fn route(
        &self,
        to: &NodeId,
        kind: &str,
        body_len: usize,
        now: u64,
    ) -> Result<NodeId, NodeError> {
        let roster = self.roster.get();
        let r = roster.roster();
        if body_len as u64 > r.max_body_len {
            return Err(NodeError::Invalid(format!(
                "body is {body_len} bytes; the roster allows at most {}",
                r.max_body_len
            )));
        }
        let checked = r
            .check_send(&self.id, to, kind)
            .and_then(|()| r.next_hop(&self.id, to));
        match checked {
            Ok(hop) => Ok(hop),
            Err(e) => {
                let rec = event_record(&e.to_string(), Some(to.as_str()), None, None);
                self.store
                    .write(now, move |t| {
                        t.log(EntryKind::RefusedByPolicy, rec);
                        Ok(())
                    })
                    .await?;
                Err(NodeError::Policy(e))
            }
        }
    }

    /// Signs an envelope for `body`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn seal(
        &self,
        to: &NodeId,
        kind: &str,
        body: &[u8],
        priority: Priority,
        in_reply_to: Option<MessageId>,
        expires_at: Option<u64>,
        case_ref: Option<String>,
        now: u64,
    ) -> Envelope {
        let header = Header {
            federation: self.federation.clone(),
            id: MessageId(*uuid::Uuid::now_v7().as_bytes()),
            from: self.id.clone(),
            to: to.clone(),
            sent_at: now,
            kind: kind.to_owned(),
            body_len: body.len() as u64,
            body_hash: Digest::of(body).0,
            priority,
            in_reply_to,
            expires_at,
            case_ref,
        };
        Envelope::seal(header, &self.keys.signing.get())
    }

    /// Hands inbox entry `seq` to the application, once: the entry is looked up and removed
    /// in the same change, so of two concurrent takes exactly one succeeds.
    pub(crate) async fn ack(&self, seq: u64) -> Result<MessageView, NodeError> {
        let now = self.now();
        let taken = self
            .store
            .write(now, move |t| {
                let Some(digest) = t.inbox_entry(seq)? else {
                    return Ok(None);
                };
                let Some(mut rec) = t.message(&digest)? else {
                    return Err(StoreError::Corrupt {
                        key: digest.to_hex(),
                        problem: "inbox entry without message".into(),
                    });
                };
                rec.handed_over = true;
                rec.updated_at = now;
                t.put_message(&digest, &rec);
                t.remove_inbox(seq);
                let id = Envelope::peek_unverified(&rec.envelope).map(|(_, h)| h.id.0);
                t.log(
                    EntryKind::HandedToApplication,
                    event_record(
                        "taken by the application",
                        None,
                        Some(&digest.0),
                        id.as_ref(),
                    ),
                );
                Ok(Some((digest, rec)))
            })
            .await?;
        let (digest, rec) = taken
            .ok_or_else(|| NodeError::Invalid(format!("no inbox entry {seq} (already taken?)")))?;
        view(&digest, &rec, None)
    }

    /// Logs the summaries of refusals not logged one by one, if any were counted.
    pub(crate) async fn log_summaries(&self) {
        let (handshakes, members) = self.guard.take_summaries(self.now());
        if handshakes.is_none() && members.is_none() {
            return;
        }
        if let Some(text) = &handshakes {
            warn!(node = %self.id, summary = %text, "handshakes refused");
        }
        let hs = handshakes.map(|t| event_record(&t, Some("summary"), None, None));
        let ms = members.map(|t| event_record(&t, Some("summary"), None, None));
        let _ = self
            .store
            .write(self.now(), move |t| {
                if let Some(r) = hs {
                    t.log(EntryKind::HandshakeRefused, r);
                }
                if let Some(r) = ms {
                    t.log(EntryKind::Rejected, r);
                }
                Ok(())
            })
            .await;
    }

    /// Logs refused input that names no message of ours (one by one at the member's rate,
    /// counted for the summary beyond it).
    pub(crate) async fn log_rejection(&self, peer: &NodeId, refusal: &Refusal) {
        let text = refusal.reason();
        if !self.guard.log_one(peer, refusal.name(), &text, self.now()) {
            return;
        }
        warn!(node = %self.id, %peer, refusal = refusal.name(), %refusal, "input refused");
        let rec = event_record(&text, Some(peer.as_str()), None, None);
        let _ = self
            .store
            .write(self.now(), move |t| {
                t.log(EntryKind::Rejected, rec);
                Ok(())
            })
            .await;
    }
}

/// What a non-delivery record is called in refusals.
pub(crate) const ND: &str = "non-delivery record";

/// The reason text of a non-delivery record for an expired message.
pub(crate) const EXPIRED: &str = "expired before delivery";

/// Why a receipt or record from a peer could not be taken.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The object is refused for good.
    Refused(Refusal),
    /// The store failed: the peer should try again.
    Store(StoreError),
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(r) => write!(f, "{r}"),
            Self::Store(e) => write!(f, "{e}"),
        }
    }
}

/// What a resend of an already stored message gets: the same receipt, or custody again.
pub(crate) fn duplicate_answer(digest: &Digest, rec: MessageRecord) -> Reply {
    match (rec.direction, rec.proof) {
        (Direction::Incoming, Some(p)) => Frame::Receipt(p),
        // Taken in the group being committed: its batched receipt is not signed yet.
        (Direction::Incoming, None) => error_frame(
            ErrorCode::Unavailable,
            "the receipt for this message is being signed; try later",
        ),
        _ => Frame::Custody(*digest),
    }
}

/// What the application asks the node to send.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct SendRequest {
    /// Final recipient.
    pub to: NodeId,
    /// Message kind.
    pub kind: String,
    /// Body bytes.
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    /// Priority lane.
    pub priority: Priority,
    /// Expiry, ms from now.
    #[serde(default)]
    pub expires_in_ms: Option<u64>,
    /// Case reference.
    #[serde(default)]
    pub case_ref: Option<String>,
    /// The message this one answers.
    #[serde(default)]
    pub in_reply_to: Option<String>,
}

/// The result of a send: the message is durably queued.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SendResult {
    /// Message id (hex).
    pub message_id: String,
    /// Envelope digest (hex).
    pub digest: String,
    /// First hop.
    pub hop: NodeId,
}

/// A message as shown to operators and the application.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MessageView {
    /// Message id (hex).
    pub message_id: String,
    /// Envelope digest (hex).
    pub digest: String,
    /// Sender.
    pub from: String,
    /// Final recipient.
    pub to: String,
    /// Kind.
    pub kind: String,
    /// Priority name.
    pub priority: String,
    /// Sent at, ms.
    pub sent_at: u64,
    /// Case reference.
    pub case_ref: Option<String>,
    /// Sent, received or relayed.
    pub direction: Direction,
    /// Where it stands.
    pub state: MsgState,
    /// Next hop.
    pub hop: Option<String>,
    /// Inbox sequence.
    pub inbox_seq: Option<u64>,
    /// Taken by the application.
    pub handed_over: bool,
    /// Body (base64), when asked for and not purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The signed receipt or non-delivery record (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// A message this node sent reached a final state (receipt, rejection or non-delivery).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Settled {
    /// Message id (hex).
    pub message_id: String,
    /// Final state.
    pub state: MsgState,
}

pub(crate) fn roster_record(r: &SignedRoster) -> Vec<u8> {
    let reason = format!("roster serial {}", r.roster().serial);
    event_record(&reason, None, Some(&Digest::of(r.bytes()).0), None)
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}
