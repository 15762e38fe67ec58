//! One actor per next hop: it owns the outbound connection, takes queued items highest
//! priority first, keeps up to `window` exchanges in flight, retries with exponential backoff
//! and jitter while the peer is unreachable, and drops expired messages with a non-delivery
//! record. The queue in memory mirrors the durable outbox; the store stays the truth.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liaison_protocol::delivery::{
    Answer, Backoff, Carried, Decision, Flight, Outbox, Outcome, Settle, decide,
};
use liaison_protocol::{Digest, Envelope, Frame, NodeId};
use rand::Rng as _;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::bus::Bus;
use crate::net::transport::{ExchangeError, exchange};
use crate::net::transport::{handshake_refusal_name, recheck, tls_refusal_name};
use crate::store::{MsgState, OutItem, Payload, Queued};

/// How often an idle actor with queued items wakes to drop expired messages.
const SWEEP: Duration = Duration::from_secs(1);

fn sweep_ms() -> u64 {
    u64::try_from(SWEEP.as_millis()).unwrap_or(u64::MAX)
}
/// Queued messages beyond this many are held without their envelope and body in memory
/// (read from the store when sent), so a long backlog costs little memory.
const PAYLOAD_LIMIT: usize = 4096;
/// A message to read ahead: its outbox seq, digest and outbox key.
type Wanted = (u64, Digest, Vec<u8>);

/// Messages read ahead, with their envelope and body, when the next ones to send have none.
const PREFETCH: usize = 256;
/// Longest one exchange may take before its connection is taken for dead.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the roster offer on a new connection may take.
const ROSTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Queue state of one peer, for operators.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PeerStatus {
    /// The next hop.
    pub peer: String,
    /// Whether a connection is up.
    pub connected: bool,
    /// Items waiting, per priority: [routine, priority, urgent, flash].
    pub queued: [usize; 4],
    /// Exchanges in flight.
    pub in_flight: usize,
    /// Items the peer has taken (receipt, custody or ack) since start.
    pub delivered: u64,
    /// Failed attempts since start.
    pub failures: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When the link is dialled again (Unix ms, by the node's clock), while it waits out its
    /// backoff after failed connection attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<u64>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Outbox<Queued>>,
    notify: Notify,
    connected: AtomicBool,
    roster_changed: AtomicBool,
    delivered: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// 0, or when the link is dialled again.
    retry_at: AtomicU64,
}

/// A handle to a peer actor.
#[derive(Debug, Clone)]
pub(crate) struct PeerHandle {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl PeerHandle {
    /// Adds an item to the queue and wakes the actor; `restored`: loaded from the store at
    /// start.
    pub(crate) fn push(&self, mut q: Queued, restored: bool) {
        let mut queue = lock(&self.shared.queue);
        if queue.pending_len() >= PAYLOAD_LIMIT {
            q.payload = None;
        }
        queue.push(q.meta(restored), q);
        drop(queue);
        self.shared.notify.notify_one();
    }

    /// Tells the actor the roster changed (it re-checks its peer).
    pub(crate) fn roster_changed(&self) {
        self.shared.roster_changed.store(true, Ordering::SeqCst);
        self.shared.notify.notify_one();
    }

    pub(crate) fn status(&self, id: &NodeId) -> PeerStatus {
        let q = lock(&self.shared.queue);
        let mut queued = [0usize; 4];
        for f in q.waiting() {
            queued[f.meta.priority as usize] += 1;
        }
        PeerStatus {
            peer: id.to_string(),
            connected: self.shared.connected.load(Ordering::SeqCst),
            queued,
            in_flight: q.in_flight(),
            delivered: self.shared.delivered.load(Ordering::SeqCst),
            failures: self.shared.failures.load(Ordering::SeqCst),
            last_error: lock(&self.shared.last_error).clone(),
            retry_at: Some(self.shared.retry_at.load(Ordering::SeqCst)).filter(|t| *t > 0),
        }
    }
}

/// Starts the actor for `hop`.
pub(crate) fn spawn(inner: Arc<Bus>, hop: NodeId) -> PeerHandle {
    let backoff = inner.cfg.backoff();
    let handle = PeerHandle {
        shared: Arc::new(Shared {
            queue: Mutex::new(Outbox::new(backoff)),
            notify: Notify::new(),
            connected: AtomicBool::new(false),
            roster_changed: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            retry_at: AtomicU64::new(0),
        }),
    };
    let actor = Actor {
        inner: inner.clone(),
        hop,
        shared: handle.shared.clone(),
        conn: None,
        backoff,
        conn_failures: 0,
        offer_roster: false,
        flying: HashMap::new(),
        sweep_after: 0,
    };
    inner.tasks.spawn(actor.run());
    handle
}

struct Actor {
    inner: Arc<Bus>,
    hop: NodeId,
    shared: Arc<Shared>,
    conn: Option<quinn::Connection>,
    backoff: Backoff,
    /// Failed connection attempts in a row.
    conn_failures: u32,
    /// The roster changed, or the peer did not know a key: offer ours on the connection
    /// before anything more goes out (a peer holding a newer one answers with it).
    offer_roster: bool,
    /// The outbox seq of each exchange task, to forget the flight of a task that died.
    flying: HashMap<tokio::task::Id, u64>,
    /// After an expiry could not be recorded (a failed store), no sweep before then: the
    /// actor waits instead of retrying in a loop.
    sweep_after: u64,
}

/// One finished exchange: the flight, what became of it, and the connection it ran on.
type Landed = (Flight<Queued>, Outcome, usize);

impl Actor {
    async fn run(mut self) {
        let mut flights: JoinSet<Landed> = JoinSet::new();
        loop {
            if self.inner.cancel.is_cancelled() {
                break;
            }
            self.sweep_expired().await;
            let has_work = lock(&self.shared.queue).pending_len() > 0;
            if has_work && self.conn_broken() {
                if let Err(reason) = self.connect().await {
                    self.fail(&reason);
                    self.conn_failures = self.conn_failures.saturating_add(1);
                    let wait = self.backoff.delay(self.conn_failures, jitter());
                    let at = self.inner.now().saturating_add(wait);
                    self.shared.retry_at.store(at, Ordering::SeqCst);
                    debug!(node = %self.inner.id, peer = %self.hop, wait_ms = wait, %reason, "peer unreachable");
                    // Items still expire on time while the link waits.
                    while self.inner.now() < at {
                        let due = self.next_wake(at);
                        tokio::select! {
                            () = self.inner.clock.sleep_until(due) => {}
                            () = self.inner.cancel.cancelled() => break,
                        }
                        self.sweep_expired().await;
                    }
                    self.shared.retry_at.store(0, Ordering::SeqCst);
                    continue;
                }
            }
            if let Some(conn) = self.conn.clone() {
                if std::mem::take(&mut self.offer_roster) {
                    self.offer_roster(&conn).await;
                }
                self.launch(&conn, &mut flights).await;
            }
            let wake = self.next_wake(self.inner.now().saturating_add(sweep_ms()));
            tokio::select! {
                Some(done) = flights.join_next_with_id() => {
                    match done {
                        Ok((id, (f, outcome, conn))) => {
                            self.flying.remove(&id);
                            self.settle(f, outcome, conn);
                        }
                        Err(e) => {
                            // A panicked exchange: its item stays in the durable outbox and is
                            // sent again after restart.
                            warn!(node = %self.inner.id, peer = %self.hop, error = %e, "exchange task failed");
                            if let Some(seq) = self.flying.remove(&e.id()) {
                                lock(&self.shared.queue).abandon(seq);
                            }
                        }
                    }
                }
                () = self.shared.notify.notified() => {}
                () = self.inner.clock.sleep_until(wake) => {}
                () = self.inner.cancel.cancelled() => break,
            }
        }
        // Let in-flight exchanges finish within the grace period; anything unfinished stays
        // in the durable outbox and is sent again after restart.
        let grace = Duration::from_millis(self.inner.cfg.shutdown_grace_ms);
        let _ = tokio::time::timeout(grace, async {
            while flights.join_next().await.is_some() {}
        })
        .await;
        flights.abort_all();
        if let Some(c) = &self.conn {
            c.close(0u32.into(), b"shutdown");
        }
    }

    fn conn_broken(&mut self) -> bool {
        if self.shared.roster_changed.swap(false, Ordering::SeqCst) {
            self.offer_roster = true;
            // The connection's peer is judged by the new roster: still an active member, and
            // still holding the key pinned for it (a rotated TLS key ends the connection).
            let admitted = self
                .conn
                .as_ref()
                .is_none_or(|c| recheck(c, &self.inner.roster, Some(self.hop.as_str())).is_ok());
            if !admitted {
                if let Some(c) = self.conn.take() {
                    c.close(1u32.into(), b"no longer an active member");
                }
            }
        }
        match &self.conn {
            Some(c) if c.close_reason().is_none() => false,
            _ => {
                self.conn = None;
                self.shared.connected.store(false, Ordering::SeqCst);
                true
            }
        }
    }

    fn fail(&self, reason: &str) {
        self.shared.failures.fetch_add(1, Ordering::SeqCst);
        *lock(&self.shared.last_error) = Some(reason.to_owned());
    }

    async fn connect(&mut self) -> Result<(), String> {
        let roster = self.inner.roster.get();
        let member = roster
            .roster()
            .active_member(&self.hop)
            .map_err(|e| e.to_string())?
            .clone();
        let mut last = format!("{} has no endpoints in the roster", self.hop);
        for ep in &member.endpoints {
            let addrs = match tokio::net::lookup_host(ep.as_str()).await {
                Ok(a) => a.collect::<Vec<_>>(),
                Err(e) => {
                    last = format!("cannot resolve {ep}: {e}");
                    continue;
                }
            };
            for addr in addrs {
                let connecting = match self.inner.dial(addr, self.hop.as_str()) {
                    Ok(c) => c,
                    Err(e) => {
                        last = e;
                        continue;
                    }
                };
                match tokio::time::timeout(Duration::from_secs(10), connecting).await {
                    Ok(Ok(conn)) => {
                        // The roster in force now, whatever the handshake saw.
                        if let Err(e) = recheck(&conn, &self.inner.roster, Some(self.hop.as_str()))
                        {
                            conn.close(2u32.into(), b"not the member dialled");
                            self.inner.guard.handshake_refused(
                                e.name(),
                                self.hop.to_string(),
                                &e.to_string(),
                                self.inner.now(),
                            );
                            last = format!("{addr}: {e}");
                            continue;
                        }
                        // Offer our roster before any message, so a peer with an older one
                        // judges our messages by the newer policy.
                        self.offer_roster = false;
                        self.offer_roster(&conn).await;
                        // In TLS 1.3 the peer judges this node's certificate after this side
                        // saw the handshake finish: a refusal closes the connection now, and
                        // counts as a failed dial (with its backoff), not as a connection.
                        if let Some(reason) = conn.close_reason() {
                            last = format!(
                                "{addr}: {}{reason}",
                                refusal_hint(tls_refusal_name(&reason.to_string()))
                            );
                            continue;
                        }
                        info!(node = %self.inner.id, peer = %self.hop, %addr, "connected");
                        if let Some(audit) = self.inner.audit() {
                            audit.on_connected(&self.hop, Some(conn.clone()));
                        }
                        self.conn = Some(conn);
                        self.shared.connected.store(true, Ordering::SeqCst);
                        self.conn_failures = 0;
                        return Ok(());
                    }
                    Ok(Err(e)) => {
                        let name = handshake_refusal_name(&e);
                        if !matches!(name, "timeout" | "tls" | "handshake") {
                            // This node refused the certificate the peer showed.
                            self.inner.guard.handshake_refused(
                                name,
                                self.hop.to_string(),
                                &e.to_string(),
                                self.inner.now(),
                            );
                        }
                        last = format!("handshake with {addr}: {}{e}", refusal_hint(name));
                    }
                    Err(_) => last = format!("handshake with {addr} timed out"),
                }
            }
        }
        Err(last)
    }

    async fn launch(&mut self, conn: &quinn::Connection, flights: &mut JoinSet<Landed>) {
        let window = self.inner.cfg.window.max(1);
        let now = self.inner.now();
        let mut batch = Vec::new();
        {
            let mut q = lock(&self.shared.queue);
            while let Some(f) = q.pop(window, now) {
                batch.push(f);
            }
        }
        if batch.is_empty() {
            return;
        }
        // Messages without their envelope and body at hand (restored after a restart, or
        // queued behind a long queue) are read in one go with those queued right behind
        // them, not one read each.
        let needs = |q: &Queued| matches!(q.item, OutItem::Message { .. }) && q.payload.is_none();
        if batch.iter().any(|f| needs(&f.item)) {
            let mut wanted: Vec<Wanted> = batch
                .iter()
                .filter(|f| needs(&f.item))
                .filter_map(|f| read_ahead(&f.item))
                .collect();
            {
                let mut q = lock(&self.shared.queue);
                wanted.extend(
                    q.next_pending_mut(PREFETCH)
                        .filter(|f| needs(&f.item))
                        .filter_map(|f| read_ahead(&f.item)),
                );
            }
            let ask: Vec<(Digest, Vec<u8>)> =
                wanted.iter().map(|(_, d, k)| (*d, k.clone())).collect();
            let read = self
                .inner
                .store
                .peek(move |r| {
                    let mut out = Vec::with_capacity(ask.len());
                    for (digest, key) in ask {
                        let rec = r.message(&digest)?;
                        // Only what is still queued under this entry; the rest is settled by
                        // the exchange itself (stale, purged).
                        let found = match rec {
                            Some(rec)
                                if rec.state == MsgState::Queued
                                    && rec.out_key.as_deref() == Some(&key[..]) =>
                            {
                                r.body(&digest)?.map(|body| {
                                    Arc::new(Payload {
                                        envelope: rec.envelope,
                                        body,
                                    })
                                })
                            }
                            _ => None,
                        };
                        out.push(found);
                    }
                    Ok(out)
                })
                .await;
            // A failed read leaves the items to read themselves (and report the failure).
            if let Ok(found) = read {
                let mut got: HashMap<u64, Arc<Payload>> = wanted
                    .into_iter()
                    .zip(found)
                    .filter_map(|((seq, _, _), p)| Some((seq, p?)))
                    .collect();
                for f in &mut batch {
                    if let Some(p) = got.remove(&f.meta.seq) {
                        f.item.payload = Some(p);
                    }
                }
                let mut q = lock(&self.shared.queue);
                for f in q.next_pending_mut(PREFETCH) {
                    if let Some(p) = got.remove(&f.meta.seq) {
                        f.item.payload = Some(p);
                    }
                }
            }
        }
        for f in batch {
            let inner = self.inner.clone();
            let conn = conn.clone();
            let hop = self.hop.clone();
            let seq = f.meta.seq;
            let task = flights.spawn(async move {
                let outcome = deliver(&inner, &conn, &hop, &f.item).await;
                (f, outcome, conn.stable_id())
            });
            self.flying.insert(task.id(), seq);
        }
    }

    /// Offers this node's roster on `conn` and takes a newer one the peer answers with.
    /// A peer that refuses it may have missed a handover of the authority key: it is offered
    /// each roster that handed over, oldest first, then ours again.
    async fn offer_roster(&self, conn: &quinn::Connection) {
        let roster = Frame::Roster(self.inner.roster.get().bytes().to_vec());
        let refused = self.offer(conn, &roster).await;
        if refused && self.inner.authorities().len() > 1 {
            for h in self.inner.handovers().await {
                self.offer(conn, &Frame::Roster(h)).await;
            }
            self.offer(conn, &roster).await;
        }
    }

    /// One ROSTER exchange: takes a newer roster the peer answers with; true if the peer
    /// refused ours.
    async fn offer(&self, conn: &quinn::Connection, roster: &Frame) -> bool {
        match tokio::time::timeout(ROSTER_TIMEOUT, exchange(conn, roster, 0)).await {
            Ok(Ok(Frame::Roster(newer))) => {
                if let Err(e) = self.inner.apply_roster(&newer).await {
                    warn!(node = %self.inner.id, peer = %self.hop, error = %e, "the newer roster the peer answered with is refused");
                }
                false
            }
            Ok(Ok(Frame::Error { .. })) => true,
            _ => false,
        }
    }

    fn settle(&mut self, f: Flight<Queued>, outcome: Outcome, conn_id: usize) {
        let item = f.item.clone();
        // A key one side does not know: one of the two holds an older roster (a rotation).
        if let Outcome::Busy(reason) | Outcome::Unknown { reason, .. } = &outcome {
            if reason.contains("unknown-signer") || reason.contains("unknown key") {
                self.offer_roster = true;
            }
        }
        match &outcome {
            Outcome::Settled => {
                self.shared.delivered.fetch_add(1, Ordering::SeqCst);
            }
            Outcome::Busy(reason) => self.fail(&format!("{}: {reason}", self.hop)),
            Outcome::Unknown { reason, broken } => {
                self.fail(reason);
                // Only the connection the exchange ran on is dropped, not a newer one.
                if *broken && self.conn.as_ref().map(quinn::Connection::stable_id) == Some(conn_id)
                {
                    if let Some(c) = self.conn.take() {
                        c.close(0u32.into(), b"exchange failed");
                    }
                    self.shared.connected.store(false, Ordering::SeqCst);
                }
            }
        }
        let settled = lock(&self.shared.queue).settle(f, outcome, self.inner.now(), jitter());
        match settled {
            Settle::Done => {}
            Settle::Requeued { newly_uncertain }
            | Settle::Delayed {
                newly_uncertain, ..
            } => {
                // The frame may have arrived: never drop this one at expiry unasked, not
                // even after a restart.
                if newly_uncertain {
                    self.inner.mark_attempted(&item);
                }
            }
            Settle::Stray(q) => {
                warn!(node = %self.inner.id, peer = %self.hop, seq = q.seq, "exchange for an item not in flight");
            }
        }
    }

    async fn sweep_expired(&mut self) {
        let now = self.inner.now();
        if now < self.sweep_after {
            return;
        }
        let expired = lock(&self.shared.queue).take_expired(now);
        for f in expired {
            if let Err(e) = self.inner.expire(&f.item).await {
                warn!(node = %self.inner.id, error = %e, "cannot record expiry; will retry");
                lock(&self.shared.queue).push(f.meta, f.item);
                self.sweep_after = now.saturating_add(sweep_ms());
            }
        }
    }

    /// When to look at the queue again, at the latest `limit`: its next due time, but not
    /// before a paused sweep may run again.
    fn next_wake(&self, limit: u64) -> u64 {
        lock(&self.shared.queue)
            .next_due()
            .map_or(limit, |t| t.max(self.sweep_after).min(limit))
    }
}

/// What to read ahead for an item: (outbox seq, digest, outbox key).
fn read_ahead(q: &Queued) -> Option<Wanted> {
    match &q.item {
        OutItem::Message { digest } => Some((q.seq, Digest(*digest), q.key.clone())),
        _ => None,
    }
}

/// A jitter factor in [0.5, 1) for a retry delay.
fn jitter() -> f64 {
    rand::thread_rng().gen_range(0.5..1.0)
}

/// Sends one queued item to `hop`, decides on the answer and takes the store step the
/// decision asks for.
async fn deliver(inner: &Arc<Bus>, conn: &quinn::Connection, hop: &NodeId, q: &Queued) -> Outcome {
    let (frame, expected, carried, header) = match &q.item {
        OutItem::Message { digest } => {
            let digest = Digest(*digest);
            let (envelope, body) = match &q.payload {
                // Queued just now by this node, with its envelope and body at hand.
                Some(p) => (p.envelope.clone(), p.body.clone()),
                None => {
                    let key = q.key.clone();
                    let read = inner
                        .store
                        .peek(move |r| {
                            let Some(rec) = r.message(&digest)? else {
                                return Ok(None);
                            };
                            if rec.state != MsgState::Queued
                                || rec.out_key.as_deref() != Some(&key[..])
                            {
                                return Ok(None);
                            }
                            Ok(Some((rec.envelope, r.body(&digest)?)))
                        })
                        .await;
                    match read {
                        Ok(Some((env, Some(body)))) => (env, body),
                        // Settled by another path meanwhile (a receipt through a relay).
                        Ok(None) => return store_step(inner.forwarded(q).await, false),
                        Ok(Some((_, None))) => {
                            let reason = "body is gone (purged)".to_owned();
                            return store_step(inner.refused(q, hop, reason).await, false);
                        }
                        Err(e) => return Outcome::Busy(e.to_string()),
                    }
                }
            };
            // Read once: the receipt's change needs the header too.
            let header = Envelope::peek_unverified(&envelope).map(|(_, h)| h);
            let carried = Carried::Message {
                to_recipient: header.as_ref().map(|h| &h.to) == Some(hop),
            };
            (Frame::Deliver { envelope, body }, digest, carried, header)
        }
        OutItem::Receipt { bytes, digest } => (
            Frame::Receipt(bytes.clone()),
            Digest(*digest),
            Carried::Receipt,
            None,
        ),
        OutItem::NonDelivery { bytes, digest } => (
            Frame::NonDelivery(bytes.clone()),
            Digest(*digest),
            Carried::NonDelivery,
            None,
        ),
    };
    let priority = q.priority as i32;
    let answer =
        match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(conn, &frame, priority)).await {
            Err(_) => Answer::Lost(format!("no answer from {hop} within {EXCHANGE_TIMEOUT:?}")),
            Ok(Err(ExchangeError::Connection(reason))) => Answer::Lost(reason),
            Ok(Err(ExchangeError::Answer(reason))) => Answer::Malformed(reason),
            Ok(Ok(Frame::Receipt(bytes))) => Answer::Receipt(bytes),
            Ok(Ok(Frame::Custody(d))) => Answer::Custody(d),
            Ok(Ok(Frame::Ack(d))) => Answer::Ack(d),
            Ok(Ok(Frame::Error { code, reason })) => Answer::Error { code, reason },
            Ok(Ok(other)) => Answer::Unexpected(frame_name(&other)),
        };
    // Once the item reached the peer, a store step that fails leaves it uncertain.
    match decide(carried, &expected, answer) {
        Decision::TakeReceipt(bytes) => {
            match inner.take_receipt(&bytes, Some((&expected, header))).await {
                Ok(_) => Outcome::Settled,
                Err(reason) => Outcome::Unknown {
                    reason: reason.to_string(),
                    broken: false,
                },
            }
        }
        Decision::TakeCustody => store_step(inner.custody(&expected, hop).await, true),
        Decision::Forwarded => store_step(inner.forwarded(q).await, true),
        Decision::Refused(reason) => store_step(inner.refused(q, hop, reason).await, false),
        Decision::Retry(outcome) => outcome,
    }
}

/// The outcome of the store step a decision asked for; `reached`: the peer holds the item.
fn store_step(r: Result<(), crate::error::StoreError>, reached: bool) -> Outcome {
    match r {
        Ok(()) => Outcome::Settled,
        Err(e) if reached => Outcome::Unknown {
            reason: e.to_string(),
            broken: false,
        },
        Err(e) => Outcome::Busy(e.to_string()),
    }
}

fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Deliver { .. } => "deliver",
        Frame::Receipt(_) => "receipt",
        Frame::NonDelivery(_) => "non-delivery",
        Frame::Custody(_) => "custody",
        Frame::Ack(_) => "ack",
        Frame::Roster(_) => "roster",
        Frame::Witness { .. } => "witness",
        Frame::Cosignature(_) => "cosignature",
        Frame::WitnessSize(_) => "witness size",
        Frame::Error { .. } => "error",
    }
}

/// What an operator should read first when a handshake was refused, by the refusal's name.
fn refusal_hint(name: &str) -> &'static str {
    match name {
        "member-not-active" => {
            "the peer refuses this node or itself is not active in the roster (suspended or \
             revoked: ask the federation authority); "
        }
        "not-pinned" => {
            "a TLS key is not the one the roster pins (a rotation one side has not applied yet: \
             apply the newer roster); "
        }
        "other-member" | "wrong-name" => "the peer at this address is another member; ",
        "unknown-ca" => "the certificate is not from this federation's CA; ",
        _ => "",
    }
}
