//! The decisions of delivery, without I/O.
//!
//! ```text
//!  DELIVER in ─► Inbound::check_hand_over ─► Inbound::check ─► Route::{Deliver, Relay}
//!                        └──────────── Refusal (typed; wire code; signed or not) ◄┘
//!
//!  Outbox::push ─► Outbox::pop (a Flight) ─► exchange (node) ─► Answer
//!                                                  decide(item, answer) ─► Decision
//!  Outbox::settle(flight, Outcome, now) ◄── the node's store step for the decision
//!  Outbox::take_expired(now), Outbox::next_due() ── what the node's timers wait for
//! ```
//!
//! The node drives these with its store, its sockets and its one clock: every function takes
//! `now` (ms since the Unix epoch) as an argument and randomness (retry jitter) as a number,
//! so every transition can be tested without QUIC, sled or a wall clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::envelope::{BodyError, Envelope, Header, Priority};
use crate::error::VerifyError;
use crate::frame::{ErrorCode, FrameError};
use crate::ids::{Digest, MessageId, NodeId};
use crate::roster::{PolicyError, Roster};

/// Why inbound input is refused. Its [`Refusal::code`] is the wire error code, its
/// [`Refusal::name`] a stable name for counters and summaries, its `Display` the reason text
/// of the rejection receipt and of the audit entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The envelope does not verify (malformed, unknown signer, bad signature).
    #[error("envelope refused: {0}")]
    Envelope(VerifyError),
    /// The envelope names another federation.
    #[error("message for federation {got}, this is {ours}")]
    Federation {
        /// The envelope's federation.
        got: String,
        /// This node's.
        ours: String,
    },
    /// The roster has no route between sender and recipient.
    #[error("{0}")]
    NoRoute(PolicyError),
    /// This node is not on the message's route (or is its sender).
    #[error("{me} is not on the route from {from} to {to}")]
    NotOnRoute {
        /// This node.
        me: NodeId,
        /// The sender.
        from: NodeId,
        /// The recipient.
        to: NodeId,
    },
    /// The peer that handed the message over is not the node before this one on its route.
    #[error("{peer} may not hand over a message from {from} to {to}")]
    WrongHop {
        /// Who handed it over.
        peer: NodeId,
        /// The sender.
        from: NodeId,
        /// The recipient.
        to: NodeId,
    },
    /// The body is larger than the roster allows.
    #[error("body of {len} bytes is over the roster's limit of {max}")]
    BodyTooLarge {
        /// The body's length.
        len: u64,
        /// The roster's `max_body_len`.
        max: u64,
    },
    /// The body is not the one the envelope names.
    #[error("{0}")]
    Body(BodyError),
    /// The roster's policy forbids the message (kind, agencies, inactive member).
    #[error("{0}")]
    Policy(PolicyError),
    /// Signed later than this node's clock allows.
    #[error("sent-at is in the future (clock skew?)")]
    SentInFuture,
    /// Signed before the replay window.
    #[error("sent-at is older than the replay window (replay of an old message?)")]
    SentTooLongAgo,
    /// Its expiry passed before it arrived.
    #[error("message expired in transit")]
    Expired,
    /// The sender's message id is already another message's.
    #[error("message id reused with different content (replay?)")]
    IdReused,
    /// A case step the recipient's copy of the case refuses for good.
    #[error("case step refused: {0}")]
    CaseStep(String),
    /// A receipt or non-delivery record that does not verify.
    #[error("{what} refused: {error}")]
    Proof {
        /// "receipt" or "non-delivery record".
        what: &'static str,
        /// Why.
        error: VerifyError,
    },
    /// A receipt or non-delivery record for another federation, another message than the one
    /// delivered, or one whose parties or route do not match the message it names.
    #[error("{what} does not match the message it names")]
    ProofMismatch {
        /// "receipt" or "non-delivery record".
        what: &'static str,
    },
    /// A receipt or non-delivery record for a message this node does not hold.
    #[error("{what} for unknown message {id}")]
    ProofUnknown {
        /// "receipt" or "non-delivery record".
        what: &'static str,
        /// The message id it names.
        id: MessageId,
    },
    /// A frame that does not decode.
    #[error("malformed frame: {0}")]
    MalformedFrame(FrameError),
    /// An answer frame (custody, ack, cosignature, error) opening an exchange.
    #[error("an answer frame cannot open an exchange")]
    AnswerFrame,
    /// The stream went on past the largest frame this node takes (it stopped reading).
    #[error("stream over the {cap}-byte limit")]
    StreamTooLong {
        /// The limit, bytes.
        cap: usize,
    },
    /// A roster offered by a peer that cannot be applied.
    #[error("{0}")]
    Roster(String),
    /// The roster in force here is past its validity and its grace: this node takes no new
    /// message until a newer roster is applied (a temporary refusal: the sender retries).
    #[error(
        "the roster in force here expired at {expired_at} (Unix ms) and its grace ended: no new \
         message is taken until a newer roster is applied; try later"
    )]
    RosterExpired {
        /// When its validity ended, Unix ms.
        expired_at: u64,
    },
}

impl Refusal {
    /// The wire error code of the refusal when it is answered with an ERROR frame.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotOnRoute { .. } | Self::WrongHop { .. } => ErrorCode::Unauthorized,
            Self::MalformedFrame(FrameError::TooLarge { .. }) | Self::StreamTooLong { .. } => {
                ErrorCode::TooLarge
            }
            Self::MalformedFrame(_) | Self::AnswerFrame => ErrorCode::MalformedFrame,
            // A key this node does not know may be one its sender rotated to in a roster not
            // here yet (protocol.md §5.1): the sender keeps the message and offers its roster.
            Self::RosterExpired { .. }
            | Self::Envelope(VerifyError::UnknownKey(_) | VerifyError::UnknownSigner(_)) => {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Refused,
        }
    }

    /// The reason as it goes on the wire (an `ERROR` frame, a rejection receipt) and into the
    /// audit record: `<name>: <text>` (protocol.md §6.3), so a peer, an operator or a test
    /// reads which refusal it was without parsing prose.
    pub fn reason(&self) -> String {
        format!("{}: {self}", self.name())
    }

    /// A stable name, for counters, summaries and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Envelope(VerifyError::BadSignature) => "bad-signature",
            Self::Envelope(VerifyError::UnknownKey(_) | VerifyError::UnknownSigner(_)) => {
                "unknown-signer"
            }
            Self::Envelope(_) => "bad-envelope",
            Self::Federation { .. } => "other-federation",
            Self::NoRoute(_) => "no-route",
            Self::NotOnRoute { .. } => "not-on-route",
            Self::WrongHop { .. } => "wrong-hop",
            Self::BodyTooLarge { .. } => "body-too-large",
            Self::Body(BodyError::Hash) => "body-hash",
            Self::Body(BodyError::Length { .. }) => "body-length",
            Self::Policy(PolicyError::NotActive(..)) => "member-not-active",
            Self::Policy(PolicyError::UnknownMember(_)) => "unknown-member",
            Self::Policy(_) => "policy",
            Self::SentInFuture => "sent-in-future",
            Self::SentTooLongAgo => "replay-window",
            Self::Expired => "expired",
            Self::IdReused => "id-reused",
            Self::CaseStep(_) => "case-step",
            Self::Proof { .. } => "bad-proof",
            Self::ProofMismatch { .. } => "proof-mismatch",
            Self::ProofUnknown { .. } => "proof-unknown",
            Self::MalformedFrame(_) => "malformed-frame",
            Self::AnswerFrame => "answer-frame",
            Self::StreamTooLong { .. } => "stream-too-long",
            Self::Roster(_) => "roster",
            Self::RosterExpired { .. } => "roster-expired",
        }
    }

    /// Whether the refusal of a verified message addressed to this node is answered with a
    /// signed rejection receipt (`direct`: the sender itself handed it over). A refusal that
    /// may be the fault of whoever handed the message over (a body that does not match, a
    /// peer off the route) or that concerns an envelope that does not verify is answered with
    /// an ERROR frame: a receipt would let a relay or a forger make the recipient sign a
    /// rejection of a message it never saw intact.
    pub fn deserves_receipt(&self, direct: bool) -> bool {
        match self {
            Self::Envelope(_)
            | Self::NotOnRoute { .. }
            | Self::WrongHop { .. }
            | Self::MalformedFrame(_)
            | Self::AnswerFrame
            | Self::StreamTooLong { .. }
            | Self::Roster(_)
            | Self::RosterExpired { .. }
            | Self::Proof { .. }
            | Self::ProofMismatch { .. }
            | Self::ProofUnknown { .. } => false,
            Self::BodyTooLarge { .. } | Self::Body(_) => direct,
            Self::Federation { .. }
            | Self::NoRoute(_)
            | Self::Policy(_)
            | Self::SentInFuture
            | Self::SentTooLongAgo
            | Self::Expired
            | Self::IdReused
            | Self::CaseStep(_) => true,
        }
    }
}

/// Where a message that passed the inbound checks goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node is its recipient.
    Deliver,
    /// This node relays it to the next hop.
    Relay(NodeId),
}

/// The refusal name a reason from [`Refusal::reason`] begins with (None for a reason that does
/// not begin with a name: another implementation's, or a store error's).
pub fn refusal_name(reason: &str) -> Option<&str> {
    let (name, _) = reason.split_once(": ")?;
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')).then_some(name)
}

/// What the dedupe index says about a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never seen: store it.
    New,
    /// This very message was taken or refused before: answer as then.
    Same,
    /// The id is another message's.
    Reused,
}

/// Looks a message up in what the dedupe index holds for its sender and id.
pub fn seen(prior: Option<&Digest>, digest: &Digest) -> Seen {
    match prior {
        None => Seen::New,
        Some(d) if d == digest => Seen::Same,
        Some(_) => Seen::Reused,
    }
}

/// The inbound checks of one node, in order (docs/protocol.md §7.1).
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// This node.
    pub me: &'a NodeId,
    /// Its federation.
    pub federation: &'a str,
    /// The roster it holds.
    pub roster: &'a Roster,
    /// How far in the future `sent_at` may be.
    pub max_skew_ms: u64,
    /// How far in the past `sent_at` may be.
    pub replay_window_ms: u64,
}

impl Inbound<'_> {
    /// Step 2, before anything stored is answered: only the node before this one on the
    /// message's route may hand it over, so no other member can fish for receipts. A message
    /// without a route passes here and is refused by [`Inbound::check`].
    pub fn check_hand_over(&self, peer: &NodeId, h: &Header) -> Result<(), Refusal> {
        let Ok(path) = self.roster.path(&h.from, &h.to) else {
            return Ok(());
        };
        let before_me = path
            .iter()
            .position(|n| n == self.me)
            .and_then(|p| p.checked_sub(1))
            .and_then(|p| path.get(p));
        if before_me == Some(peer) {
            Ok(())
        } else {
            Err(Refusal::WrongHop {
                peer: peer.clone(),
                from: h.from.clone(),
                to: h.to.clone(),
            })
        }
    }

    /// Steps 3 to 8 on a verified envelope and its body, at `now`: federation, route and
    /// hand-over, body, policy, signing time, expiry. The dedupe lookup (step 9) is the
    /// store's, inside the change that stores the message.
    pub fn check(
        &self,
        peer: &NodeId,
        env: &Envelope,
        body: &[u8],
        now: u64,
    ) -> Result<Route, Refusal> {
        let h = env.header();
        if h.federation != self.federation {
            return Err(Refusal::Federation {
                got: h.federation.clone(),
                ours: self.federation.to_owned(),
            });
        }
        let path = self.roster.path(&h.from, &h.to).map_err(Refusal::NoRoute)?;
        let Some(pos) = path.iter().position(|n| n == self.me).filter(|p| *p > 0) else {
            return Err(Refusal::NotOnRoute {
                me: self.me.clone(),
                from: h.from.clone(),
                to: h.to.clone(),
            });
        };
        if path[pos - 1] != *peer {
            return Err(Refusal::WrongHop {
                peer: peer.clone(),
                from: h.from.clone(),
                to: h.to.clone(),
            });
        }
        if body.len() as u64 > self.roster.max_body_len {
            return Err(Refusal::BodyTooLarge {
                len: body.len() as u64,
                max: self.roster.max_body_len,
            });
        }
        env.check_body(body).map_err(Refusal::Body)?;
        self.roster
            .check_send(&h.from, &h.to, &h.kind)
            .map_err(Refusal::Policy)?;
        if h.sent_at > now.saturating_add(self.max_skew_ms) {
            return Err(Refusal::SentInFuture);
        }
        if h.sent_at.saturating_add(self.replay_window_ms) < now {
            return Err(Refusal::SentTooLongAgo);
        }
        if h.expires_at.is_some_and(|e| e <= now) {
            return Err(Refusal::Expired);
        }
        Ok(match path.get(pos + 1) {
            Some(next) => Route::Relay(next.clone()),
            None => Route::Deliver,
        })
    }
}

/// What an outbox item carries to the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// A message; `to_recipient` when the next hop is its recipient (a receipt is the
    /// answer), otherwise a relay (custody is).
    Message {
        /// The next hop is the recipient.
        to_recipient: bool,
    },
    /// A receipt forwarded back towards the sender (an ack is the answer).
    Receipt,
    /// A non-delivery record forwarded back towards the sender (an ack is the answer).
    NonDelivery,
}

/// What came back from one exchange with the next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A RECEIPT frame.
    Receipt(Vec<u8>),
    /// A CUSTODY frame for a digest.
    Custody(Digest),
    /// An ACK frame for a digest.
    Ack(Digest),
    /// An ERROR frame.
    Error {
        /// Its code.
        code: ErrorCode,
        /// Its reason.
        reason: String,
    },
    /// Any other frame, named.
    Unexpected(&'static str),
    /// Bytes that are not a frame.
    Malformed(String),
    /// No answer: the connection failed or the exchange timed out. The item may or may not
    /// have reached the peer.
    Lost(String),
}

/// What the node does with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Verify the receipt and settle the message with it (the case change in the same store
    /// change); then [`Outcome::Settled`], or [`Outcome::Unknown`] if it cannot be taken.
    TakeReceipt(Vec<u8>),
    /// Record that the relay holds the message; then [`Outcome::Settled`].
    TakeCustody,
    /// Remove the forwarded receipt or record from the outbox; then [`Outcome::Settled`].
    Forwarded,
    /// Close the item for good (the peer refused it): a relay tells the sender with a
    /// signed non-delivery record; then [`Outcome::Settled`].
    Refused(String),
    /// Keep the item: the outcome to settle it with.
    Retry(Outcome),
}

/// What became of one exchange, after the node's store step for its decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The item leaves the queue: taken by the peer, refused for good, or settled by another
    /// path.
    Settled,
    /// The peer answered that it cannot take the item now (busy, shutting down, its store
    /// failed): it did not keep it. The item waits out a backoff.
    Busy(String),
    /// It is unknown whether the item reached the peer: from now on it is never dropped at
    /// expiry without asking the peer. `broken`: the connection is taken for dead and the
    /// item goes back to the queue at once (the connection has its own backoff); otherwise
    /// it waits out a backoff.
    Unknown {
        /// Why.
        reason: String,
        /// The connection failed.
        broken: bool,
    },
}

/// What an answer from the next hop does to an item that carried `carried` with digest
/// `expected` (the message's, or the forwarded receipt's or record's).
pub fn decide(carried: Carried, expected: &Digest, answer: Answer) -> Decision {
    let unknown = |reason: String| {
        Decision::Retry(Outcome::Unknown {
            reason,
            broken: false,
        })
    };
    match (carried, answer) {
        (_, Answer::Lost(reason)) => Decision::Retry(Outcome::Unknown {
            reason,
            broken: true,
        }),
        (Carried::Message { to_recipient: true }, Answer::Receipt(bytes)) => {
            Decision::TakeReceipt(bytes)
        }
        (
            Carried::Message {
                to_recipient: false,
            },
            Answer::Custody(d),
        ) if d == *expected => Decision::TakeCustody,
        (Carried::Receipt | Carried::NonDelivery, Answer::Ack(d)) if d == *expected => {
            Decision::Forwarded
        }
        (_, Answer::Error { code, reason }) if code.is_temporary() => {
            Decision::Retry(Outcome::Busy(format!("busy: {reason}")))
        }
        (_, Answer::Error { code, reason }) => Decision::Refused(format!("{reason} ({code:?})")),
        // The peer answered, so the item reached it; an answer that does not fit it says
        // nothing about whether the peer kept it.
        (_, Answer::Custody(_)) => unknown("custody for another item".into()),
        (_, Answer::Ack(_)) => unknown("ack for another item".into()),
        (_, Answer::Receipt(_)) => unknown("a receipt where none was due".into()),
        (_, Answer::Unexpected(name)) => unknown(format!("unexpected answer {name:?}")),
        (_, Answer::Malformed(reason)) => unknown(format!("bad answer: {reason}")),
    }
}

/// Exponential backoff with jitter: `initial · 2^n`, at most `max`, scaled by a jitter
/// factor in [0.5, 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay, ms.
    pub initial_ms: u64,
    /// Largest delay, ms.
    pub max_ms: u64,
}

impl Backoff {
    /// The delay after `failures` failures in a row (1 is the first), before jitter.
    pub fn base(&self, failures: u32) -> u64 {
        let n = failures.saturating_sub(1).min(32);
        self.initial_ms
            .max(1)
            .saturating_mul(1u64 << n)
            .min(self.max_ms.max(1))
    }

    /// The delay after `failures` failures with `jitter` (clamped to [0.5, 1)).
    pub fn delay(&self, failures: u32, jitter: f64) -> u64 {
        let j = if jitter.is_finite() {
            jitter.clamp(0.5, 1.0)
        } else {
            0.75
        };
        // The product is at most `max_ms`, which fits.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let d = (self.base(failures) as f64 * j) as u64;
        d.max(1)
    }
}

/// Where an item is in the outbox, besides its own payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Its priority lane.
    pub priority: Priority,
    /// FIFO within a lane (the durable outbox's sequence number).
    pub seq: u64,
    /// Expiry of the message, ms; forwarded receipts and records have none.
    pub expires_at: Option<u64>,
    /// It may have reached the peer: never dropped at expiry unasked.
    pub uncertain: bool,
    /// Answers of "not now" and failed exchanges in a row.
    pub retries: u32,
}

impl Meta {
    /// Meta of a freshly queued item (`uncertain`: restored after a restart, when nobody
    /// knows what reached the peer).
    pub fn new(priority: Priority, seq: u64, expires_at: Option<u64>, uncertain: bool) -> Self {
        Self {
            priority,
            seq,
            expires_at,
            uncertain,
            retries: 0,
        }
    }

    fn key(&self) -> (u8, u64) {
        (3 - self.priority as u8, self.seq)
    }
}

/// One item out on an exchange. Every flight taken with [`Outbox::pop`] goes back through
/// [`Outbox::settle`] (or [`Outbox::abandon`], when its task died).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flight<T> {
    /// Where it stood.
    pub meta: Meta,
    /// The node's item.
    pub item: T,
}

/// What [`Outbox::settle`] did with a flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle<T> {
    /// The item left the queue.
    Done,
    /// The item is queued again at once.
    Requeued {
        /// It just became uncertain: the node records that it was attempted.
        newly_uncertain: bool,
    },
    /// The item waits until `until` (ms).
    Delayed {
        /// When it is due again.
        until: u64,
        /// It just became uncertain.
        newly_uncertain: bool,
    },
    /// Nothing: the flight belongs to no outbox (a programming error upstream).
    Stray(T),
}

/// The in-memory queue of one next hop: items by lane (flash first) then FIFO, those that may
/// expire by expiry, those waiting out a retry delay by due time. Every operation is
/// O(log n). The durable outbox in the store is the truth; this is its schedule.
#[derive(Debug)]
pub struct Outbox<T> {
    pending: BTreeMap<(u8, u64), Flight<T>>,
    /// Pending items that may be dropped at expiry: (expires at, lane, seq).
    expiring: BTreeSet<(u64, u8, u64)>,
    /// Items waiting out a retry delay: (due at, seq).
    delayed: BTreeMap<(u64, u64), Flight<T>>,
    in_flight: BTreeSet<u64>,
    backoff: Backoff,
}

impl<T> Outbox<T> {
    /// An empty outbox whose retries wait `backoff`.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            pending: BTreeMap::new(),
            expiring: BTreeSet::new(),
            delayed: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            backoff,
        }
    }

    /// Queues an item.
    pub fn push(&mut self, meta: Meta, item: T) {
        self.insert(Flight { meta, item });
    }

    fn insert(&mut self, f: Flight<T>) {
        let key = f.meta.key();
        if let (Some(e), false) = (f.meta.expires_at, f.meta.uncertain) {
            self.expiring.insert((e, key.0, key.1));
        }
        self.pending.insert(key, f);
    }

    /// Items waiting to be sent (not delayed, not in flight).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Items in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Every item held (pending, delayed or in flight).
    pub fn len(&self) -> usize {
        self.pending.len() + self.delayed.len() + self.in_flight.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pending and delayed items, for status views.
    pub fn waiting(&self) -> impl Iterator<Item = &Flight<T>> {
        self.pending.values().chain(self.delayed.values())
    }

    /// The next pending items in send order, up to `n`, with mutable access (to attach a
    /// payload read ahead).
    pub fn next_pending_mut(&mut self, n: usize) -> impl Iterator<Item = &mut Flight<T>> {
        self.pending.values_mut().take(n)
    }

    /// Takes the next item to send (highest lane, then FIFO) when fewer than `window` are in
    /// flight. Items whose delay is over are released first.
    pub fn pop(&mut self, window: usize, now: u64) -> Option<Flight<T>> {
        self.release_due(now);
        if self.in_flight.len() >= window.max(1) {
            return None;
        }
        let (key, f) = self.pending.pop_first()?;
        if let Some(e) = f.meta.expires_at {
            self.expiring.remove(&(e, key.0, key.1));
        }
        self.in_flight.insert(f.meta.seq);
        Some(f)
    }

    /// Takes every pending item whose expiry passed at `now` and that is safe to drop (not
    /// uncertain). The node closes each with a non-delivery record, or pushes it back when
    /// that fails.
    pub fn take_expired(&mut self, now: u64) -> Vec<Flight<T>> {
        self.release_due(now);
        let mut out = Vec::new();
        while let Some(&(e, lane, seq)) = self.expiring.first() {
            if e > now {
                break;
            }
            self.expiring.pop_first();
            if let Some(f) = self.pending.remove(&(lane, seq)) {
                out.push(f);
            }
        }
        out
    }

    /// When the node must look again at the latest: the next delay that ends or the next
    /// expiry of a pending item (ms).
    pub fn next_due(&self) -> Option<u64> {
        let delay = self.delayed.keys().next().map(|(t, _)| *t);
        let expiry = self.expiring.first().map(|(e, _, _)| *e);
        match (delay, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn release_due(&mut self, now: u64) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let f = entry.remove();
            self.insert(f);
        }
    }

    /// Settles a flight with what became of its exchange, at `now`, with `jitter` in
    /// [0.5, 1) for its retry delay.
    pub fn settle(
        &mut self,
        mut f: Flight<T>,
        outcome: Outcome,
        now: u64,
        jitter: f64,
    ) -> Settle<T> {
        if !self.in_flight.remove(&f.meta.seq) {
            return Settle::Stray(f.item);
        }
        match outcome {
            Outcome::Settled => Settle::Done,
            Outcome::Busy(_) => {
                f.meta.retries = f.meta.retries.saturating_add(1);
                let until = now.saturating_add(self.backoff.delay(f.meta.retries, jitter));
                self.delayed.insert((until, f.meta.seq), f);
                Settle::Delayed {
                    until,
                    newly_uncertain: false,
                }
            }
            Outcome::Unknown { broken, .. } => {
                let newly_uncertain = !f.meta.uncertain;
                f.meta.uncertain = true;
                if broken {
                    self.insert(f);
                    Settle::Requeued { newly_uncertain }
                } else {
                    f.meta.retries = f.meta.retries.saturating_add(1);
                    let until = now.saturating_add(self.backoff.delay(f.meta.retries, jitter));
                    self.delayed.insert((until, f.meta.seq), f);
                    Settle::Delayed {
                        until,
                        newly_uncertain,
                    }
                }
            }
        }
    }

    /// Forgets a flight whose exchange task died: the item stays in the durable outbox and is
    /// sent again after a restart.
    pub fn abandon(&mut self, seq: u64) {
        self.in_flight.remove(&seq);
    }
}
