//! Inbound connections: admitted by the TLS verifiers, then one task per stream. Each stream
//! carries one frame in and one frame out.

use std::sync::Arc;

use liaison_protocol::delivery::Refusal;
use liaison_protocol::envelope::MAX_ENVELOPE_LEN;
use liaison_protocol::frame::HEAD_LEN;
use liaison_protocol::{ErrorCode, Frame, NodeId};
use tracing::{debug, warn};

use crate::bus::Bus;
use crate::bus::Failure;
use crate::net::guard::{Admission, source_prefix};
use crate::net::transport::{handshake_refusal_name, recheck};

/// Largest roster frame accepted.
const MAX_ROSTER_FRAME: usize = liaison_protocol::roster::MAX_ROSTER_LEN;

/// Largest frame a peer may send: a DELIVER with the roster's largest body, or a roster.
fn frame_cap(inner: &Bus) -> usize {
    let body = usize::try_from(inner.roster.get().roster().max_body_len).unwrap_or(usize::MAX);
    (2 + MAX_ENVELOPE_LEN)
        .saturating_add(body)
        .max(MAX_ROSTER_FRAME)
}

/// Application close code: the member sent too much malformed input and is refused a while.
const CLOSE_BANNED: u32 = 3;
/// Application close code: the member holds too many connections; this, its oldest, goes.
const CLOSE_TOO_MANY: u32 = 4;

pub(crate) fn spawn_accept_loop(inner: Arc<Bus>) {
    let Some(endpoint) = inner.endpoint.clone() else {
        return;
    };
    let tasks = inner.tasks.clone();
    tasks.spawn(async move {
        loop {
            let incoming = tokio::select! {
                i = endpoint.accept() => i,
                () = inner.cancel.cancelled() => break,
            };
            let Some(incoming) = incoming else { break };
            let addr = incoming.remote_address().ip();
            let permit = match inner.guard.admit(addr, incoming.remote_address_validated()) {
                Admission::Accept(p) => p,
                Admission::Retry => {
                    // Proving the address costs the client one round trip and us nothing.
                    if incoming.retry().is_err() {
                        debug!(node = %inner.id, %addr, "retry not possible");
                    }
                    continue;
                }
                Admission::Refuse => {
                    incoming.refuse();
                    inner.guard.handshake_refused(
                        "handshake-limit",
                        source_prefix(addr),
                        "too many handshakes in progress",
                        inner.now(),
                    );
                    continue;
                }
            };
            let inner2 = inner.clone();
            inner.tasks.spawn(async move {
                let connected = incoming.await;
                drop(permit);
                match connected {
                    Ok(conn) => serve_connection(inner2, conn).await,
                    Err(e) => {
                        debug!(node = %inner2.id, error = %e, "inbound handshake failed");
                        inner2.guard.handshake_refused(
                            handshake_refusal_name(&e),
                            source_prefix(addr),
                            &e.to_string(),
                            inner2.now(),
                        );
                    }
                }
            });
        }
    });
}

async fn serve_connection(inner: Arc<Bus>, conn: quinn::Connection) {
    // The roster in force now, whatever the handshake saw.
    let peer = match recheck(&conn, &inner.roster, None) {
        Ok(p) => p,
        Err(e) => {
            conn.close(2u32.into(), b"not an active member");
            let addr = conn.remote_address().ip();
            inner.guard.handshake_refused(
                e.name(),
                source_prefix(addr),
                &e.to_string(),
                inner.now(),
            );
            return;
        }
    };
    if inner.guard.banned(&peer, inner.now()) {
        conn.close(CLOSE_BANNED.into(), b"too much malformed input; try later");
        return;
    }
    debug!(node = %inner.id, %peer, "peer connected");
    // A witness that is up is asked what it cosigned of this log (once since start).
    if let Some(audit) = inner.audit() {
        audit.on_connected(&peer, None);
    }
    {
        let mut list = match inner.inbound.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        list.retain(|(_, c)| c.close_reason().is_none());
        // A member's oldest connections go when it holds too many (a restarted peer's stale
        // ones, or a flood).
        let cap = inner.guard.limits().connections_per_member.max(1);
        let mut held = list.iter().filter(|(id, _)| *id == peer).count();
        list.retain(|(id, c)| {
            if held >= cap && *id == peer {
                held -= 1;
                c.close(CLOSE_TOO_MANY.into(), b"too many connections");
                return false;
            }
            true
        });
        list.push((peer.clone(), conn.clone()));
    }
    // A peer that speaks liaison/2 takes batched receipts (protocol.md §4.3a, §6).
    let batched = crate::net::transport::speaks_v2(&conn);
    loop {
        let stream = tokio::select! {
            s = conn.accept_bi() => s,
            () = inner.cancel.cancelled() => break,
        };
        let Ok((send, recv)) = stream else { break };
        let inner2 = inner.clone();
        let peer2 = peer.clone();
        inner.tasks.spawn(async move {
            serve_stream(inner2, peer2, batched, send, recv).await;
        });
    }
}

async fn serve_stream(
    inner: Arc<Bus>,
    peer: NodeId,
    batched: bool,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let cap = frame_cap(&inner);
    // A stream that goes on past the cap, or that is not exactly one frame (truncated, a
    // declared length over the cap, trailing bytes), is malformed input: counted, logged at
    // the member's rate, answered ERROR 2 or 1.
    let read = recv.read_to_end(cap + HEAD_LEN).await;
    let frame = match read {
        Err(quinn::ReadToEndError::TooLong) => Err(Refusal::StreamTooLong {
            cap: cap + HEAD_LEN,
        }),
        Err(e) => {
            debug!(node = %inner.id, %peer, error = %e, "stream failed");
            return;
        }
        Ok(buf) => Frame::decode_exact(&buf, cap).map_err(Refusal::MalformedFrame),
    };
    let answer = match frame {
        Ok(frame) => handle_on(&inner, &peer, batched, frame).await,
        Err(refusal) => {
            note_junk(&inner, &peer);
            inner.log_rejection(&peer, &refusal).await;
            Frame::Error {
                code: refusal.code(),
                reason: refusal.reason(),
            }
        }
    };
    if inner.cancel.is_cancelled() && matches!(answer, Frame::Error { .. }) {
        let _ = send.reset(0u32.into());
        return;
    }
    let _ = send.write_all(&answer.to_bytes()).await;
    let _ = send.finish();
    // Wait until the peer has the answer (or is gone) before the stream is dropped.
    let _ = send.stopped().await;
}

/// Answers one frame of `peer`'s as a connection that speaks liaison/1 would (unit tests).
#[cfg(test)]
pub(super) async fn handle(inner: &Arc<Bus>, peer: &NodeId, frame: Frame) -> Frame {
    handle_on(inner, peer, false, frame).await
}

/// Answers one frame of `peer`'s; with `batched` (the connection speaks liaison/2), a
/// message taken from its sender gets a batched receipt.
pub(super) async fn handle_on(
    inner: &Arc<Bus>,
    peer: &NodeId,
    batched: bool,
    frame: Frame,
) -> Frame {
    match frame {
        Frame::Deliver { envelope, body } => {
            inner.receive_message(peer, envelope, body, batched).await
        }
        Frame::Receipt(bytes) => answer(inner, peer, inner.take_receipt(&bytes, None).await).await,
        Frame::NonDelivery(bytes) => {
            answer(inner, peer, inner.take_nondelivery(&bytes).await).await
        }
        // An offer signed by an authority key this node no longer takes rosters from: the
        // peer missed a handover; it gets the roster that hands over from its key, and then
        // (it offers again) the newer ones (protocol.md §7.4).
        Frame::Roster(bytes) if older_authority(inner, &bytes) => {
            match handover_from(inner, &bytes).await {
                Some(handover) => Frame::Roster(handover),
                None => Frame::Roster(inner.roster().bytes().to_vec()),
            }
        }
        Frame::Roster(bytes) => match inner.apply_roster(&bytes).await {
            // An offer older than the roster in force here is answered with ours: the peer
            // catches up on connect (protocol.md §7.4).
            Ok(in_force) if offered_serial(inner, &bytes).is_some_and(|s| s < in_force) => {
                Frame::Roster(inner.roster().bytes().to_vec())
            }
            Ok(_) => Frame::Ack(liaison_protocol::Digest::of(&bytes)),
            Err(e) => {
                let refusal = Refusal::Roster(e.to_string());
                inner.log_rejection(peer, &refusal).await;
                refusal_frame(&refusal)
            }
        },
        Frame::Witness {
            old_size,
            proof,
            checkpoint,
        } => match inner.audit() {
            Some(a) => a.witness(peer, old_size, &proof, &checkpoint).await,
            None => Frame::Error {
                code: ErrorCode::Unavailable,
                reason: "shutting down".into(),
            },
        },
        // A log asking, at its start, how much of it this node has cosigned.
        Frame::WitnessSize(_) => match inner.audit() {
            Some(a) => a.witness_size_query(peer).await,
            None => Frame::Error {
                code: ErrorCode::Unavailable,
                reason: "shutting down".into(),
            },
        },
        Frame::Custody(_) | Frame::Ack(_) | Frame::Cosignature(_) | Frame::Error { .. } => {
            note_junk(inner, peer);
            inner.log_rejection(peer, &Refusal::AnswerFrame).await;
            refusal_frame(&Refusal::AnswerFrame)
        }
    }
}

/// The serial of an offered roster (already opened by `apply_roster`).
fn offered_serial(inner: &Bus, bytes: &[u8]) -> Option<u64> {
    liaison_protocol::SignedRoster::open(bytes, &inner.authority())
        .ok()
        .map(|r| r.roster().serial)
}

/// Whether `bytes` is a roster signed by an authority key this node trusted before the one
/// in force.
fn older_authority(inner: &Bus, bytes: &[u8]) -> bool {
    let current = inner.authority();
    liaison_protocol::SignedRoster::open_any(bytes, &inner.authorities())
        .is_ok_and(|r| r.signer_kid() != current.kid())
}

/// The stored roster that handed the federation over from the key that signed `offered`.
async fn handover_from(inner: &Arc<Bus>, offered: &[u8]) -> Option<Vec<u8>> {
    let authorities = inner.authorities();
    let offered = liaison_protocol::SignedRoster::open_any(offered, &authorities).ok()?;
    let kid = offered.signer_kid();
    let serial = offered.roster().serial;
    let stored = inner.store.read(|r| r.rosters()).await.ok()?;
    stored
        .iter()
        .filter_map(|b| liaison_protocol::SignedRoster::open_any(b, &authorities).ok())
        .filter(|r| {
            r.signer_kid() == kid
                && r.roster().next_authority.is_some()
                && r.roster().serial > serial
        })
        .min_by_key(|r| r.roster().serial)
        .map(|r| r.bytes().to_vec())
}

async fn answer(inner: &Arc<Bus>, peer: &NodeId, r: Result<Frame, Failure>) -> Frame {
    match r {
        Ok(f) => f,
        Err(Failure::Store(e)) => Frame::Error {
            code: ErrorCode::Unavailable,
            reason: e.to_string(),
        },
        Err(Failure::Refused(refusal)) => {
            inner.log_rejection(peer, &refusal).await;
            refusal_frame(&refusal)
        }
    }
}

/// Counts malformed input from a member; past its limit, closes all its connections (and the
/// member is refused until the ban ends).
pub(crate) fn note_junk(inner: &Bus, peer: &NodeId) {
    if inner.guard.junk(peer, inner.now()) {
        ban(inner, peer);
    }
}

/// Closes every connection of a member that sent too much malformed input.
fn ban(inner: &Bus, peer: &NodeId) {
    warn!(node = %inner.id, %peer, "too much malformed input: connections closed for a while");
    let list = match inner.inbound.lock() {
        Ok(l) => l,
        Err(p) => p.into_inner(),
    };
    for (id, c) in list.iter() {
        if id == peer {
            c.close(CLOSE_BANNED.into(), b"too much malformed input; try later");
        }
    }
}

fn refusal_frame(r: &Refusal) -> Frame {
    Frame::Error {
        code: r.code(),
        reason: r.reason(),
    }
}
