//! What answers do to messages this node sent or holds: receipts and non-delivery
//! records taken (and forwarded by a relay), custody, refusals for good, expiry.

use std::sync::Arc;

use liaison_protocol::audit::{EntryKind, event_record};
use liaison_protocol::delivery::Refusal;
use liaison_protocol::{
    Digest, Envelope, Frame, Header, NodeId, NonDelivery, PolicyError, Priority, ReceiptStatus,
    SignedNonDelivery, SignedReceipt,
};
use tracing::{info, warn};

use super::{EXPIRED, Failure, ND, Taken, truncate};
use crate::bus::Bus;
use crate::bus::Settled;
use crate::error::StoreError;
use crate::store::{Direction, MessageRecord, MsgState, OutItem, Queued, Txn};

impl Bus {
    /// A RECEIPT for a message this node sent or relayed, arriving as the answer to a
    /// delivery or forwarded by a relay. The message's new state, the receipt's audit entry,
    /// its forwarding (at a relay) and the case change it causes (at the sender: a case step
    /// receipted or refused) are one change.
    /// `expected`: the receipt answers this node's own DELIVER of that digest, with the
    /// envelope's header when the caller has it (then the change need not read the envelope).
    pub(crate) async fn take_receipt(
        self: &Arc<Self>,
        bytes: &[u8],
        expected: Option<(&Digest, Option<Header>)>,
    ) -> Result<Frame, Failure> {
        let (expected, known) = match expected {
            Some((d, h)) => (Some(d), h),
            None => (None, None),
        };
        let receipt =
            SignedReceipt::open_cached(bytes, self.signer_lookup(), Some(&self.receipt_batches))
                .map_err(|error| Refusal::Proof {
                    what: "receipt",
                    error,
                })?;
        let r = receipt.receipt().clone();
        if r.federation != self.federation {
            return Err(Refusal::ProofMismatch { what: "receipt" }.into());
        }
        if expected.is_some_and(|d| *d != r.message_digest) {
            return Err(Refusal::ProofMismatch { what: "receipt" }.into());
        }
        let digest = r.message_digest;
        let message_id = r.message_id;
        let now = self.now();
        let rbytes = receipt.bytes().to_vec();
        let rdigest = receipt.digest();
        let roster = self.roster.get();
        let me = self.id.clone();
        let cases = self.cases.get().and_then(std::sync::Weak::upgrade);
        let change = move |t: &mut Txn<'_>| {
            let (mut rec, h) = match &known {
                // The header of the envelope just sent (its digest is `digest`).
                Some(h) => match t.message_record(&digest)? {
                    Some(rec) => (rec, h.clone()),
                    None => return Ok(Taken::Unknown),
                },
                None => {
                    let Some(rec) = t.message(&digest)? else {
                        return Ok(Taken::Unknown);
                    };
                    let Some((_, h)) = Envelope::peek_unverified(&rec.envelope) else {
                        return Err(StoreError::Corrupt {
                            key: digest.to_hex(),
                            problem: "stored envelope does not parse".into(),
                        });
                    };
                    (rec, h)
                }
            };
            if h.to != r.recipient || h.from != r.sender || h.id != r.message_id {
                return Ok(Taken::Mismatch);
            }
            if matches!(rec.state, MsgState::Delivered | MsgState::Rejected { .. })
                && rec.proof.is_some()
            {
                return Ok(Taken::Already);
            }
            let forward_to = match rec.direction {
                Direction::Relay => match roster.roster().next_hop(&me, &h.from) {
                    Ok(hop) => Some(hop),
                    Err(e) => return Ok(Taken::NoRoute(e)),
                },
                _ => None,
            };
            let state = match &r.status {
                ReceiptStatus::Delivered => MsgState::Delivered,
                ReceiptStatus::Rejected(reason) => MsgState::Rejected {
                    reason: reason.clone(),
                },
            };
            if let Some(k) = rec.out_key.take() {
                t.remove_out(&k);
            }
            rec.state = state.clone();
            rec.proof = Some(rbytes.clone());
            rec.updated_at = now;
            let outgoing = rec.direction == Direction::Outgoing;
            t.put_message(&digest, &rec);
            let forward = match forward_to {
                Some(hop) => {
                    t.log(EntryKind::Forwarded, rbytes.clone());
                    let q = t.push_out(
                        &hop,
                        h.priority,
                        OutItem::Receipt {
                            bytes: rbytes,
                            digest: rdigest.0,
                        },
                        None,
                    );
                    Some((hop, q))
                }
                None => {
                    t.log(EntryKind::ReceiptReceived, rbytes);
                    None
                }
            };
            if outgoing && liaison_protocol::workflow::reserved(&h.kind) {
                // The receipt and the case change it causes are one change, or neither.
                let Some(cases) = &cases else {
                    return Err(StoreError::Conflict(
                        "the case workflows are not running".into(),
                    ));
                };
                cases.on_receipt(t, &h, &r.status, now)?;
            }
            Ok(Taken::Recorded {
                forward,
                settled: outgoing.then(|| Settled {
                    message_id: h.id.to_hex(),
                    state,
                }),
            })
        };
        // A receipt that answers our own delivery needs no flush before we go on: after a
        // crash the message is sent again and the recipient answers with the same receipt.
        // A forwarded receipt is acknowledged, so it must be durable first.
        let taken = if expected.is_some() {
            self.store.apply(now, change).await?
        } else {
            self.store.write(now, change).await?
        };
        match taken {
            Taken::Unknown => Err(Refusal::ProofUnknown {
                what: "receipt",
                id: message_id,
            }
            .into()),
            Taken::Mismatch => Err(Refusal::ProofMismatch { what: "receipt" }.into()),
            Taken::NoRoute(e) => Err(Refusal::NoRoute(e).into()),
            Taken::Already => Ok(Frame::Ack(rdigest)),
            Taken::Recorded { forward, settled } => {
                if let Some((hop, q)) = forward {
                    self.enqueue(&hop, q);
                }
                if let Some(s) = settled {
                    let _ = self.settled.send(s);
                }
                Ok(Frame::Ack(rdigest))
            }
        }
    }

    /// A NONDELIVERY record forwarded by a relay for a message this node sent (or relays).
    pub(crate) async fn take_nondelivery(self: &Arc<Self>, bytes: &[u8]) -> Result<Frame, Failure> {
        let nd = SignedNonDelivery::open(bytes, self.signer_lookup())
            .map_err(|error| Refusal::Proof { what: ND, error })?;
        let r = nd.record().clone();
        let digest = r.message_digest;
        let Some(rec) = self.store.peek(move |s| s.message(&digest)).await? else {
            return Err(Refusal::ProofUnknown {
                what: ND,
                id: r.message_id,
            }
            .into());
        };
        let (_, h) =
            Envelope::peek_unverified(&rec.envelope).ok_or_else(|| StoreError::Corrupt {
                key: digest.to_hex(),
                problem: "stored envelope does not parse".into(),
            })?;
        let roster = self.roster.get();
        let on_route = roster
            .roster()
            .path(&h.from, &h.to)
            .is_ok_and(|p| p.iter().skip(1).any(|n| *n == r.dropped_by));
        if r.federation != self.federation
            || h.id != r.message_id
            || h.from != r.sender
            || h.to != r.recipient
            || !on_route
        {
            return Err(Refusal::ProofMismatch { what: ND }.into());
        }
        // Settled already (a resent record): the change below finds the proof and writes
        // nothing, and the ACK still waits for the flush that made the proof durable.
        let state = if r.reason.starts_with(EXPIRED) {
            MsgState::Expired
        } else {
            MsgState::Rejected {
                reason: r.reason.clone(),
            }
        };
        let hop = self.forward_hop(&rec, &h.from).map_err(Refusal::NoRoute)?;
        self.close_with_record(&digest, &nd, state, hop, None)
            .await?;
        Ok(Frame::Ack(nd.digest()))
    }

    /// Where a receipt or record for a relayed message goes: back towards its sender.
    pub(crate) fn forward_hop(
        &self,
        rec: &MessageRecord,
        sender: &NodeId,
    ) -> Result<Option<NodeId>, PolicyError> {
        match rec.direction {
            Direction::Relay => self
                .roster
                .get()
                .roster()
                .next_hop(&self.id, sender)
                .map(Some),
            _ => Ok(None),
        }
    }

    /// Closes a message with a signed non-delivery record: stores it as the message's proof,
    /// logs it, and when this node relays the message queues the record back to the sender.
    /// Nothing changes when the message was settled meanwhile (a receipt came first).
    pub(crate) async fn close_with_record(
        self: &Arc<Self>,
        digest: &Digest,
        nd: &SignedNonDelivery,
        state: MsgState,
        back: Option<NodeId>,
        queue_key: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let nbytes = nd.bytes().to_vec();
        let nd_digest = nd.digest();
        let own = nd.record().dropped_by == self.id;
        let refused_here = own && matches!(state, MsgState::Rejected { .. });
        let digest = *digest;
        let queued = self
            .store
            .write(now, move |t| {
                if let Some(k) = queue_key.as_deref() {
                    t.remove_out(k);
                }
                let Some(mut rec) = t.message(&digest)? else {
                    return Ok(None);
                };
                if rec.proof.is_some() {
                    return Ok(None);
                }
                if let Some(k) = rec.out_key.take() {
                    t.remove_out(&k);
                }
                rec.state = state;
                rec.proof = Some(nbytes.clone());
                rec.updated_at = now;
                t.put_message(&digest, &rec);
                t.log(
                    if refused_here {
                        EntryKind::Rejected
                    } else if own {
                        EntryKind::Expired
                    } else if back.is_some() {
                        EntryKind::Forwarded
                    } else {
                        EntryKind::NonDeliveryReceived
                    },
                    nbytes.clone(),
                );
                Ok(back.map(|hop| {
                    let q = t.push_out(
                        &hop,
                        Priority::Routine,
                        OutItem::NonDelivery {
                            bytes: nbytes,
                            digest: nd_digest.0,
                        },
                        None,
                    );
                    (hop, q)
                }))
            })
            .await?;
        if let Some((hop, q)) = queued {
            self.enqueue(&hop, q);
        }
        Ok(())
    }

    /// Signs a non-delivery record for a message this node holds.
    pub(crate) fn sign_nondelivery(
        &self,
        digest: &Digest,
        h: &Header,
        reason: String,
    ) -> SignedNonDelivery {
        SignedNonDelivery::sign(
            NonDelivery {
                federation: self.federation.clone(),
                message_digest: *digest,
                message_id: h.id,
                sender: h.from.clone(),
                recipient: h.to.clone(),
                at: self.now(),
                dropped_by: self.id.clone(),
                reason,
            },
            &self.keys.signing.get(),
        )
    }

    /// Drops a message whose expiry passed while this node held it: a signed non-delivery
    /// record goes back to its sender (or stays here, when this node is the sender).
    pub(crate) async fn expire(self: &Arc<Self>, q: &Queued) -> Result<(), StoreError> {
        let OutItem::Message { digest } = &q.item else {
            // Forwarded receipts do not expire.
            return Ok(());
        };
        let digest = Digest(*digest);
        let Some(rec) = self.store.peek(move |r| r.message(&digest)).await? else {
            return Ok(());
        };
        let Some((_, h)) = Envelope::peek_unverified(&rec.envelope) else {
            return Ok(());
        };
        let nd = self.sign_nondelivery(&digest, &h, EXPIRED.to_owned());
        let back = self.forward_hop(&rec, &h.from).ok().flatten();
        info!(node = %self.id, message = %h.id, "message expired undelivered");
        self.close_with_record(&digest, &nd, MsgState::Expired, back, Some(q.key.clone()))
            .await
    }

    /// Records that the message of `q` may have reached its next hop before the connection
    /// failed: from then on it is not dropped at expiry without asking the peer.
    pub(crate) fn mark_attempted(&self, q: &Queued) {
        if let OutItem::Message { digest } = &q.item {
            let digest = Digest(*digest);
            self.store.write_later(self.now(), move |t| {
                if let Some(mut rec) = t.message(&digest)? {
                    rec.attempts = rec.attempts.saturating_add(1);
                    t.put_message(&digest, &rec);
                }
                Ok(())
            });
        }
    }

    /// Records that a relay took custody of a message this node sent.
    pub(crate) async fn custody(&self, digest: &Digest, relay: &NodeId) -> Result<(), StoreError> {
        let now = self.now();
        let digest = *digest;
        let relay = relay.to_string();
        self.store
            .write(now, move |t| {
                let Some(mut rec) = t.message(&digest)? else {
                    return Ok(());
                };
                if let Some(k) = rec.out_key.take() {
                    t.remove_out(&k);
                }
                if rec.state == MsgState::Queued {
                    rec.state = MsgState::InCustody { relay };
                }
                rec.updated_at = now;
                t.put_message(&digest, &rec);
                Ok(())
            })
            .await
    }

    /// Closes the queue entry of an item the next hop refused for good. A relay tells the
    /// sender with a signed non-delivery record.
    pub(crate) async fn refused(
        self: &Arc<Self>,
        q: &Queued,
        hop: &NodeId,
        reason: String,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let reason = format!("refused by {hop}: {reason}");
        warn!(node = %self.id, %reason, "delivery refused");
        if let OutItem::Message { digest } = &q.item {
            let digest = Digest(*digest);
            if let Some(rec) = self.store.peek(move |r| r.message(&digest)).await? {
                if let (Direction::Relay, Some((_, h))) =
                    (rec.direction, Envelope::peek_unverified(&rec.envelope))
                {
                    let nd = self.sign_nondelivery(&digest, &h, truncate(&reason, 512));
                    let back = self.forward_hop(&rec, &h.from).ok().flatten();
                    let state = MsgState::Rejected { reason };
                    return self
                        .close_with_record(&digest, &nd, state, back, Some(q.key.clone()))
                        .await;
                }
            }
        }
        let digest = match &q.item {
            OutItem::Message { digest } => Some(Digest(*digest)),
            _ => None,
        };
        let key = q.key.clone();
        let hop = hop.to_string();
        self.store
            .write(now, move |t| {
                t.remove_out(&key);
                if let Some(d) = &digest {
                    if let Some(mut rec) = t.message(d)? {
                        rec.out_key = None;
                        rec.state = MsgState::Rejected {
                            reason: reason.clone(),
                        };
                        rec.updated_at = now;
                        t.put_message(d, &rec);
                    }
                }
                t.log(
                    EntryKind::Rejected,
                    event_record(&reason, Some(&hop), digest.as_ref().map(|d| &d.0), None),
                );
                Ok(())
            })
            .await
    }

    /// Removes a forwarded receipt or record the next hop has acknowledged.
    pub(crate) async fn forwarded(&self, q: &Queued) -> Result<(), StoreError> {
        let key = q.key.clone();
        self.store
            .write(self.now(), move |t| {
                t.remove_out(&key);
                Ok(())
            })
            .await
    }
}
