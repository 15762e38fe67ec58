//! Receiving: the inbound checks in order, dedupe, a case step through the cases,
//! storage with its receipt, and signed or unsigned rejections.

use std::sync::Arc;

use liaison_protocol::audit::{EntryKind, event_record};
use liaison_protocol::delivery::{Inbound, Refusal, Route};
use liaison_protocol::{
    Envelope, ErrorCode, Frame, NodeId, Receipt, ReceiptStatus, SignedReceipt, SignedRoster,
};
use tracing::warn;

use super::hook::{StagedStep, StepRefusal};
use super::{Dedupe, Reply, duplicate_answer, error_frame, retention_of, truncate};
use crate::bus::Bus;
use crate::error::StoreError;
use crate::store::{Direction, MessageRecord, MsgState, OutItem, Queued, Txn};

impl Bus {
    /// Logs a refused inbound message and builds the reply. With `verified` (the envelope
    /// verified), the dedupe index is looked up in the same change: a copy of a message taken
    /// or refused before gets the answer it got then, never a contradicting one. When the
    /// refusal deserves a receipt and the message is addressed to this node, the refusal is a
    /// signed rejection receipt, kept as the message's record and dedupe entry so every later
    /// copy gets the same receipt; otherwise an error frame, and only the audit entry is
    /// stored.
    pub(crate) async fn reject_inbound(
        &self,
        peer: &NodeId,
        envelope: &[u8],
        verified: Option<&Envelope>,
        refusal: Refusal,
    ) -> Reply {
        let reason = refusal.reason();
        let code = refusal.code();
        let sign = verified.is_some_and(|env| {
            refusal.deserves_receipt(env.header().from == *peer) && env.header().to == self.id
        });
        // A refusal that signs nothing is logged one by one only at the member's rate; beyond
        // it, counted for the summary, and a copy of a known message still gets the answer it
        // got the first time.
        if !sign
            && !self
                .guard
                .log_one(peer, refusal.name(), &reason, self.now())
        {
            if let Some(env) = verified {
                match self.dedupe(env).await {
                    Ok(Dedupe::Same(answer)) => {
                        return match self.store.flushed().await {
                            Ok(()) => answer,
                            Err(e) => error_frame(ErrorCode::Unavailable, e.to_string()),
                        };
                    }
                    Ok(Dedupe::Reused) => {
                        return error_frame(ErrorCode::Refused, Refusal::IdReused.reason());
                    }
                    Ok(Dedupe::New) => {}
                    Err(e) => return error_frame(ErrorCode::Unavailable, e.to_string()),
                }
            }
            return error_frame(code, reason);
        }
        warn!(node = %self.id, %peer, refusal = refusal.name(), %reason, "message rejected");
        let now = self.now();
        let peeked = Envelope::peek_unverified(envelope);
        let rec = event_record(
            &truncate(&reason, 1000),
            Some(peer.as_str()),
            peeked.as_ref().map(|(d, _)| &d.0),
            peeked.as_ref().map(|(_, h)| &h.id.0),
        );
        let receipt = verified
            .filter(|env| sign && env.header().to == self.id)
            .map(|env| {
                let h = env.header();
                SignedReceipt::sign(
                    Receipt {
                        federation: self.federation.clone(),
                        message_digest: env.digest(),
                        message_id: h.id,
                        sender: h.from.clone(),
                        recipient: self.id.clone(),
                        at: now,
                        status: ReceiptStatus::Rejected(truncate(&reason, 1000)),
                        log_ref: None,
                    },
                    &self.keys.signing.get(),
                )
            });
        let logged_receipt = receipt.as_ref().map(|r| r.bytes().to_vec());
        let known = verified.map(|env| (env.header().clone(), env.digest(), env.bytes().to_vec()));
        let recorded_reason = truncate(&reason, 1000);
        enum Refused {
            /// A copy of a message taken or refused before: the answer it got then.
            Stored(Reply),
            /// The id belongs to another message.
            Reused,
            /// Logged (and, signed, recorded).
            Logged,
        }
        let reused = Refusal::IdReused.reason();
        let peer_s = peer.to_string();
        let outcome = self
            .store
            .write(now, move |t| {
                if let Some((h, digest, _)) = &known {
                    match t.seen(&h.from, &h.id)? {
                        Some(d) if d == *digest => {
                            if let Some(stored) = t.message(&d)? {
                                return Ok(Refused::Stored(duplicate_answer(&d, stored)));
                            }
                        }
                        // The id is another message's: refused, nothing recorded for it.
                        Some(_) => {
                            t.log(
                                EntryKind::Rejected,
                                event_record(
                                    &reused,
                                    Some(&peer_s),
                                    Some(&digest.0),
                                    Some(&h.id.0),
                                ),
                            );
                            return Ok(Refused::Reused);
                        }
                        None => {}
                    }
                }
                t.log(EntryKind::Rejected, rec);
                if let (Some(r), Some((h, digest, env))) = (logged_receipt, known) {
                    t.log(EntryKind::ReceiptSent, r.clone());
                    // Kept, so every later copy gets this same receipt.
                    t.put_seen(&h.from, &h.id, &digest);
                    t.index_id(&h.id, &digest);
                    t.put_message(
                        &digest,
                        &MessageRecord {
                            envelope: env,
                            direction: Direction::Incoming,
                            state: MsgState::Rejected {
                                reason: recorded_reason,
                            },
                            hop: None,
                            stored_at: now,
                            updated_at: now,
                            proof: Some(r),
                            inbox_seq: None,
                            handed_over: false,
                            attempts: 0,
                            out_key: None,
                            retain_ms: None,
                            // No entry holds the envelope (kind 5 and 3 do not): the record does.
                            log_index: None,
                            body: None,
                        },
                    );
                }
                Ok(Refused::Logged)
            })
            .await;
        match outcome {
            Err(e) => error_frame(ErrorCode::Unavailable, format!("cannot log rejection: {e}")),
            Ok(Refused::Stored(stored)) => stored,
            Ok(Refused::Reused) => error_frame(ErrorCode::Refused, Refusal::IdReused.reason()),
            Ok(Refused::Logged) => match receipt {
                Some(r) => Frame::Receipt(r.bytes().to_vec()),
                None => error_frame(code, reason),
            },
        }
    }

    /// Looks `env` up in the dedupe index, in the applied state: the caller waits for the
    /// flush before it answers from it.
    pub(crate) async fn dedupe(&self, env: &Envelope) -> Result<Dedupe, StoreError> {
        let h = env.header();
        let (from, id, digest) = (h.from.clone(), h.id, env.digest());
        self.store
            .peek(move |r| match r.seen(&from, &id)? {
                None => Ok(Dedupe::New),
                Some(d) if d != digest => Ok(Dedupe::Reused),
                Some(d) => match r.message(&d)? {
                    Some(rec) => Ok(Dedupe::Same(duplicate_answer(&d, rec))),
                    None => Err(StoreError::Corrupt {
                        key: d.to_hex(),
                        problem: "dedupe entry without message".into(),
                    }),
                },
            })
            .await
    }

    /// A DELIVER frame from an admitted peer.
    pub(crate) async fn receive_message(
        self: &Arc<Self>,
        peer: &NodeId,
        envelope: Vec<u8>,
        body: Vec<u8>,
        batched: bool,
    ) -> Reply {
        // 0. Past the roster's validity and grace this node takes no new message (a
        // temporary refusal: the sender keeps it and retries, by when a newer roster may be
        // here, or come with the sender's next connection).
        if let liaison_protocol::Standing::Expired { expired_at, .. } = self.roster_standing() {
            let refusal = Refusal::RosterExpired { expired_at };
            return error_frame(refusal.code(), refusal.reason());
        }
        // 1. The envelope must verify before anything in it is believed.
        let roster = self.roster.get();
        let env = match Envelope::open(&envelope, |kid| roster.roster().signer(kid)) {
            Ok(env) => env,
            Err(e) => {
                // A key not in the roster here may be one its sender rotated to: not junk.
                if !matches!(
                    e,
                    liaison_protocol::VerifyError::UnknownKey(_)
                        | liaison_protocol::VerifyError::UnknownSigner(_)
                ) {
                    crate::bus::inbound::note_junk(self, peer);
                }
                return self
                    .reject_inbound(peer, &envelope, None, Refusal::Envelope(e))
                    .await;
            }
        };
        // 2. Only the node before this one on the message's route may hand it over: checked
        //    before anything stored is answered, so no other member can fish for receipts.
        let h = env.header();
        let checks = self.inbound_checks(&roster);
        if let Err(refusal) = checks.check_hand_over(peer, h) {
            return self.reject_inbound(peer, &envelope, None, refusal).await;
        }
        // 3. Everything else. A message that fails these checks may still be a resend (lost
        //    receipt, restart) of one taken or refused earlier: it gets the answer it got the
        //    first time, whatever the time or the roster says now (looked up in the change
        //    that logs the refusal). A new message that passes them is looked up in the dedupe
        //    index inside the change that stores it.
        let relay_hop = match checks.check(peer, &env, &body, self.now()) {
            Ok(Route::Deliver) => None,
            Ok(Route::Relay(hop)) => Some(hop),
            Err(refusal) => {
                return self
                    .reject_inbound(peer, &envelope, Some(&env), refusal)
                    .await;
            }
        };
        if relay_hop.is_none() && liaison_protocol::workflow::reserved(&h.kind) {
            return self.receive_case_step(peer, env, body).await;
        }
        // Batched receipts (protocol.md §4.3a) only for a message handed over by its sender
        // (a relay may forward to a sender that speaks only liaison/1) and of no case (a
        // case's evidence holds each of its receipts in an entry of its own, §13).
        let batched = batched && h.from == *peer && h.case_ref.is_none();
        match self
            .store_inbound(peer, env, body, relay_hop, None, None, batched)
            .await
        {
            Ok(reply) => reply,
            Err(e) => {
                warn!(node = %self.id, error = %e, "cannot store inbound message");
                error_frame(ErrorCode::Unavailable, e.to_string())
            }
        }
    }

    /// A case step addressed to this node: the officer's action must verify and this node's
    /// copy of the case must allow it before anything is stored or receipted. Decided under
    /// the case's lock, which is released once the change is staged.
    pub(crate) async fn receive_case_step(
        self: &Arc<Self>,
        peer: &NodeId,
        env: Envelope,
        body: Vec<u8>,
    ) -> Reply {
        let h = env.header().clone();
        let case_ref = h.case_ref.clone().unwrap_or_default();
        let Some(cases) = self.cases.get().and_then(std::sync::Weak::upgrade) else {
            return error_frame(ErrorCode::Unavailable, "cases not running; try later");
        };
        let guard = cases.lock(&case_ref).await;
        // A copy that arrived while we waited for the lock was answered already (read from
        // the applied state: the lock is not held across a flush; the answer waits for it).
        match self.dedupe(&env).await {
            Err(e) => return error_frame(ErrorCode::Unavailable, e.to_string()),
            Ok(Dedupe::Same(answer)) => {
                drop(guard);
                return match self.store.flushed().await {
                    Ok(()) => answer,
                    Err(e) => error_frame(ErrorCode::Unavailable, e.to_string()),
                };
            }
            Ok(Dedupe::Reused) => {
                drop(guard);
                return self
                    .reject_inbound(peer, env.bytes(), Some(&env), Refusal::IdReused)
                    .await;
            }
            Ok(Dedupe::New) => {}
        }
        match cases.check_step(&env, &body).await {
            Ok(update) => {
                match self
                    .store_inbound(peer, env, body, None, Some(update), Some(guard), false)
                    .await
                {
                    Ok(reply) => reply,
                    Err(StoreError::Conflict(reason)) => {
                        // The case moved while this step was checked (a receipt for a step
                        // of ours): the sender tries again.
                        error_frame(
                            ErrorCode::Unavailable,
                            format!("case {case_ref} changed meanwhile ({reason}); try later"),
                        )
                    }
                    Err(e) => {
                        warn!(node = %self.id, error = %e, "cannot store inbound case step");
                        error_frame(ErrorCode::Unavailable, e.to_string())
                    }
                }
            }
            Err(StepRefusal::Unavailable(e)) => error_frame(ErrorCode::Unavailable, e.to_string()),
            Err(StepRefusal::NotYet(reason)) => {
                tracing::debug!(node = %self.id, %reason, "case step not applicable yet");
                // Steps of one case can arrive out of order (priority lanes, retries): the
                // sender tries again later. The answer does not say what this node's copy
                // of the case holds.
                error_frame(
                    ErrorCode::Unavailable,
                    format!(
                        "{} does not fit case {case_ref} here yet; try later",
                        h.kind
                    ),
                )
            }
            Err(StepRefusal::Final(reason)) => {
                drop(guard);
                self.reject_inbound(peer, env.bytes(), Some(&env), Refusal::CaseStep(reason))
                    .await
            }
        }
    }

    /// The inbound checks of this node, with the roster it holds now.
    pub(crate) fn inbound_checks<'a>(&'a self, roster: &'a SignedRoster) -> Inbound<'a> {
        Inbound {
            me: &self.id,
            federation: &self.federation,
            roster: roster.roster(),
            max_skew_ms: self.cfg.max_skew_ms,
            replay_window_ms: self.cfg.replay_window_ms,
        }
    }

    /// Stores a checked inbound message in one change, the dedupe lookup first: as the
    /// final recipient with its inbox entry and the signed receipt (and the case step's
    /// change), as a relay in the outbox towards the next hop. Answers after the flush.
    /// With `guard` (a case lock), the lock is released as soon as the change is staged.
    /// With `batched`, the receipt is signed with the others of its group commit
    /// (protocol.md §4.3a); else on its own.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store_inbound(
        self: &Arc<Self>,
        peer: &NodeId,
        env: Envelope,
        body: Vec<u8>,
        relay_hop: Option<NodeId>,
        case: Option<Box<dyn StagedStep>>,
        guard: Option<crate::locks::KeyedGuard>,
        batched: bool,
    ) -> Result<Reply, StoreError> {
        enum Outcome {
            Receipted(Vec<u8>),
            Batched(crate::store::ProofSlot),
            Relayed(Queued),
            Duplicate(MessageRecord),
            IdReused,
        }
        let now = self.now();
        let digest = env.digest();
        let inner = self.clone();
        let peer_s = peer.to_string();
        let hop = relay_hop.clone();
        let change = move |t: &mut Txn<'_>| {
            let h = env.header();
            if let Some(seen) = t.seen(&h.from, &h.id)? {
                if seen != digest {
                    t.log(
                        EntryKind::Rejected,
                        event_record(
                            &Refusal::IdReused.reason(),
                            Some(&peer_s),
                            Some(&digest.0),
                            Some(&h.id.0),
                        ),
                    );
                    return Ok(Outcome::IdReused);
                }
                return match t.message(&digest)? {
                    Some(rec) => Ok(Outcome::Duplicate(rec)),
                    None => Err(StoreError::Corrupt {
                        key: digest.to_hex(),
                        problem: "dedupe entry without message".into(),
                    }),
                };
            }
            if let Some(u) = &case {
                u.check(t)?;
            }
            let retain_ms = case.as_ref().and(retention_of(&body));
            t.put_seen(&h.from, &h.id, &digest);
            t.index_id(&h.id, &digest);
            t.index_retention(&digest, now, retain_ms);
            let mut rec = MessageRecord {
                envelope: env.bytes().to_vec(),
                direction: Direction::Incoming,
                state: MsgState::Delivered,
                hop: None,
                stored_at: now,
                updated_at: now,
                proof: None,
                inbox_seq: None,
                handed_over: false,
                attempts: 0,
                out_key: None,
                retain_ms,
                log_index: None,
                body: None,
            };
            t.keep_body(&digest, &body, &mut rec);
            let outcome = match &hop {
                None => {
                    let index = t.log(EntryKind::MessageReceived, env.bytes().to_vec());
                    let receipt = Receipt {
                        federation: inner.federation.clone(),
                        message_digest: digest,
                        message_id: h.id,
                        sender: h.from.clone(),
                        recipient: inner.id.clone(),
                        at: now,
                        status: ReceiptStatus::Delivered,
                        log_ref: Some((format!("{}/log", inner.id), index)),
                    };
                    let signed = (!batched)
                        .then(|| SignedReceipt::sign(receipt.clone(), &inner.keys.signing.get()));
                    if let Some(r) = &signed {
                        t.log(EntryKind::ReceiptSent, r.bytes().to_vec());
                    }
                    if let Some(u) = case {
                        u.stage(t)?;
                    }
                    rec.inbox_seq = Some(t.push_inbox(&digest));
                    rec.log_index = Some(index);
                    match signed {
                        Some(r) => {
                            rec.proof = Some(r.bytes().to_vec());
                            Outcome::Receipted(r.bytes().to_vec())
                        }
                        // Signed with the group's other receipts; the record gets its proof
                        // then (and is written here, so later changes of the group see it).
                        None => {
                            return Ok(Outcome::Batched(
                                t.put_message_batching_receipt(&digest, &rec, receipt),
                            ));
                        }
                    }
                }
                Some(hop) => {
                    rec.log_index = Some(t.log(EntryKind::Relayed, env.bytes().to_vec()));
                    let q = t.push_out(
                        hop,
                        h.priority,
                        OutItem::Message { digest: digest.0 },
                        h.expires_at,
                    );
                    rec.direction = Direction::Relay;
                    rec.state = MsgState::Queued;
                    rec.hop = Some(hop.to_string());
                    rec.out_key = Some(q.key.clone());
                    Outcome::Relayed(q)
                }
            };
            t.put_message(&digest, &rec);
            Ok(outcome)
        };
        let staged = self.store.stage(now, change).await;
        drop(guard);
        let outcome = staged?.durable().await?;
        Ok(match outcome {
            Outcome::IdReused => error_frame(ErrorCode::Refused, Refusal::IdReused.reason()),
            Outcome::Duplicate(rec) => duplicate_answer(&digest, rec),
            Outcome::Relayed(q) => {
                if let Some(hop) = relay_hop {
                    self.enqueue(&hop, q);
                }
                Frame::Custody(digest)
            }
            Outcome::Receipted(receipt) => {
                self.inbox_notify.notify_waiters();
                Frame::Receipt(receipt)
            }
            Outcome::Batched(slot) => {
                self.inbox_notify.notify_waiters();
                match slot.get() {
                    Some(proof) => Frame::Receipt(proof),
                    None => error_frame(
                        ErrorCode::Unavailable,
                        "the receipt was not signed; try later",
                    ),
                }
            }
        })
    }
}
