//! One actor per next hop: it owns the outbound connection, takes queued items highest
//! priority first, keeps up to `window` exchanges in flight, retries with exponential backoff
//! and jitter while the peer is unreachable, and drops expired messages with a non-delivery
//! record. The queue in memory mirrors the durable outbox; the store stays the truth.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use liaison_protocol::frame::HEAD_LEN;
use liaison_protocol::{Digest, Envelope, Frame, NodeId};
use rand::Rng as _;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::node::{Inner, now_ms};
use crate::store::{MsgState, OutItem, Payload, Queued};

/// Largest answer frame accepted from a peer (receipts, acks, errors).
const MAX_ANSWER: usize = 64 * 1024;
/// How often an idle actor with queued items wakes to drop expired messages.
const SWEEP: Duration = Duration::from_secs(1);
/// Queued messages beyond this many are held without their envelope and body in memory
/// (read from the store when sent), so a long backlog costs little memory.
const PAYLOAD_LIMIT: usize = 4096;
/// A message to read ahead: its place in the batch being launched (None: still in the
/// queue, under its key), its queue key, digest and outbox key.
type Wanted = (Option<usize>, (u8, u64), Digest, Vec<u8>);

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
}

/// The in-memory queue of one peer. Every operation is O(log n): items by (lane, seq),
/// those that may expire by (expiry, lane, seq), and retry delays by due time.
#[derive(Debug, Default)]
struct Queue {
    pending: BTreeMap<(u8, u64), Queued>,
    /// Pending items that may be dropped at expiry: (expires at, lane, seq).
    expiring: BTreeSet<(u64, u8, u64)>,
    /// Items waiting out a retry delay, by the time they are due again.
    delayed: BTreeMap<(Instant, u64), Queued>,
    in_flight: usize,
}

impl Queue {
    fn insert(&mut self, mut q: Queued) {
        if self.pending.len() >= PAYLOAD_LIMIT {
            q.payload = None;
        }
        let key = (3 - q.priority as u8, q.seq);
        if let (Some(e), false) = (q.expires_at, q.uncertain) {
            self.expiring.insert((e, key.0, key.1));
        }
        self.pending.insert(key, q);
    }

    /// The next item to send, highest lane first, then FIFO.
    fn pop(&mut self) -> Option<Queued> {
        let (key, q) = self.pending.pop_first()?;
        if let Some(e) = q.expires_at {
            self.expiring.remove(&(e, key.0, key.1));
        }
        Some(q)
    }

    /// Takes every pending item whose expiry passed and that is safe to drop.
    fn take_expired(&mut self, now_ms: u64) -> Vec<Queued> {
        let mut out = Vec::new();
        while let Some(&(e, lane, seq)) = self.expiring.first() {
            if e > now_ms {
                break;
            }
            self.expiring.pop_first();
            if let Some(q) = self.pending.remove(&(lane, seq)) {
                out.push(q);
            }
        }
        out
    }

    fn delay(&mut self, until: Instant, q: Queued) {
        self.delayed.insert((until, q.seq), q);
    }

    /// Moves due items back to `pending`; returns how long until the next one is due.
    fn release_due(&mut self, now: Instant) -> Option<Duration> {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let q = entry.remove();
            self.insert(q);
        }
        self.delayed
            .first_key_value()
            .map(|((t, _), _)| t.saturating_duration_since(now))
    }
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    notify: Notify,
    connected: AtomicBool,
    roster_changed: AtomicBool,
    delivered: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
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
    /// Adds an item to the queue and wakes the actor.
    pub(crate) fn push(&self, q: Queued) {
        lock(&self.shared.queue).insert(q);
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
        for item in q.pending.values().chain(q.delayed.values()) {
            queued[item.priority as usize] += 1;
        }
        PeerStatus {
            peer: id.to_string(),
            connected: self.shared.connected.load(Ordering::SeqCst),
            queued,
            in_flight: q.in_flight,
            delivered: self.shared.delivered.load(Ordering::SeqCst),
            failures: self.shared.failures.load(Ordering::SeqCst),
            last_error: lock(&self.shared.last_error).clone(),
        }
    }
}

/// Starts the actor for `hop`.
pub(crate) fn spawn(inner: Arc<Inner>, hop: NodeId) -> PeerHandle {
    let handle = PeerHandle {
        shared: Arc::new(Shared::default()),
    };
    let actor = Actor {
        inner: inner.clone(),
        hop,
        shared: handle.shared.clone(),
        conn: None,
        backoff: inner.cfg.backoff_initial(),
    };
    inner.tasks.spawn(actor.run());
    handle
}

struct Actor {
    inner: Arc<Inner>,
    hop: NodeId,
    shared: Arc<Shared>,
    conn: Option<quinn::Connection>,
    backoff: Duration,
}

/// What became of one exchange.
enum Outcome {
    /// Finished (delivered, refused for good, or stale).
    Done,
    /// Keep the item and try again; `broken` names the connection that failed.
    Retry {
        broken: Option<usize>,
        reason: String,
    },
}

impl Actor {
    async fn run(mut self) {
        let mut flights: JoinSet<(Queued, Outcome)> = JoinSet::new();
        loop {
            if self.inner.cancel.is_cancelled() {
                break;
            }
            self.sweep_expired().await;
            let has_work = !lock(&self.shared.queue).pending.is_empty();
            if has_work && self.conn_broken() {
                if let Err(reason) = self.connect().await {
                    self.fail(&reason);
                    let wait = self.jittered_backoff();
                    debug!(node = %self.inner.id, peer = %self.hop, ?wait, %reason, "peer unreachable");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.inner.cancel.cancelled() => break,
                    }
                    self.backoff = (self.backoff * 2).min(self.inner.cfg.backoff_max());
                    continue;
                }
            }
            if let Some(conn) = self.conn.clone() {
                self.launch(&conn, &mut flights).await;
            }
            let next_due = lock(&self.shared.queue).release_due(Instant::now());
            let nap = next_due.map_or(SWEEP, |d| d.min(SWEEP));
            tokio::select! {
                Some(done) = flights.join_next() => {
                    match done {
                        Ok((q, outcome)) => self.settle(q, outcome),
                        Err(e) => {
                            // A panicked exchange: its item stays in the durable outbox and is
                            // sent again after restart.
                            warn!(node = %self.inner.id, peer = %self.hop, error = %e, "exchange task failed");
                            lock(&self.shared.queue).in_flight -= 1;
                        }
                    }
                }
                () = self.shared.notify.notified() => {}
                () = tokio::time::sleep(nap) => {}
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
            let roster = self.inner.roster.get();
            if roster.roster().active_member(&self.hop).is_err() {
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

    fn jittered_backoff(&self) -> Duration {
        let f: f64 = rand::thread_rng().gen_range(0.5..1.0);
        self.backoff.mul_f64(f)
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
                let connecting = match self.inner.endpoint.connect(addr, self.hop.as_str()) {
                    Ok(c) => c,
                    Err(e) => {
                        last = format!("connect to {addr}: {e}");
                        continue;
                    }
                };
                match tokio::time::timeout(Duration::from_secs(10), connecting).await {
                    Ok(Ok(conn)) => {
                        info!(node = %self.inner.id, peer = %self.hop, %addr, "connected");
                        // Offer our roster before any message, so a peer with an older one
                        // judges our messages by the newer policy.
                        let roster = Frame::Roster(self.inner.roster.get().bytes().to_vec());
                        let _ =
                            tokio::time::timeout(ROSTER_TIMEOUT, exchange(&conn, &roster, 0)).await;
                        crate::node::Node {
                            inner: self.inner.clone(),
                        }
                        .on_connected(&self.hop, Some(conn.clone()));
                        self.conn = Some(conn);
                        self.shared.connected.store(true, Ordering::SeqCst);
                        self.backoff = self.inner.cfg.backoff_initial();
                        return Ok(());
                    }
                    Ok(Err(e)) => last = format!("handshake with {addr}: {e}"),
                    Err(_) => last = format!("handshake with {addr} timed out"),
                }
            }
        }
        Err(last)
    }

    async fn launch(&self, conn: &quinn::Connection, flights: &mut JoinSet<(Queued, Outcome)>) {
        let window = self.inner.cfg.window.max(1);
        let mut batch = Vec::new();
        {
            let mut q = lock(&self.shared.queue);
            while q.in_flight < window {
                let Some(item) = q.pop() else { break };
                q.in_flight += 1;
                batch.push(item);
            }
        }
        if batch.is_empty() {
            return;
        }
        // Messages without their envelope and body at hand (restored after a restart, or
        // queued behind a long queue) are read in one go with those queued right behind
        // them, not one read each.
        let needs = |q: &Queued| matches!(q.item, OutItem::Message { .. }) && q.payload.is_none();
        if batch.iter().any(needs) {
            let mut wanted: Vec<Wanted> = batch
                .iter()
                .enumerate()
                .filter(|(_, q)| needs(q))
                .filter_map(|(i, q)| match &q.item {
                    OutItem::Message { digest } => Some((
                        Some(i),
                        (3 - q.priority as u8, q.seq),
                        Digest(*digest),
                        q.key.clone(),
                    )),
                    _ => None,
                })
                .collect();
            {
                let q = lock(&self.shared.queue);
                for (k, item) in q.pending.iter().take(PREFETCH) {
                    if let (true, OutItem::Message { digest }) = (needs(item), &item.item) {
                        wanted.push((None, *k, Digest(*digest), item.key.clone()));
                    }
                }
            }
            let ask: Vec<(Digest, Vec<u8>)> =
                wanted.iter().map(|(_, _, d, k)| (*d, k.clone())).collect();
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
                let mut q = lock(&self.shared.queue);
                for ((slot, key, _, _), p) in wanted.into_iter().zip(found) {
                    let Some(p) = p else { continue };
                    match slot {
                        Some(i) => {
                            if let Some(item) = batch.get_mut(i) {
                                item.payload = Some(p);
                            }
                        }
                        None => {
                            if let Some(item) = q.pending.get_mut(&key) {
                                item.payload = Some(p);
                            }
                        }
                    }
                }
            }
        }
        for item in batch {
            let inner = self.inner.clone();
            let conn = conn.clone();
            let hop = self.hop.clone();
            flights.spawn(async move {
                let outcome = deliver(&inner, &conn, &hop, &item).await;
                (item, outcome)
            });
        }
    }

    fn settle(&mut self, mut q: Queued, outcome: Outcome) {
        lock(&self.shared.queue).in_flight -= 1;
        match outcome {
            Outcome::Done => {
                self.shared.delivered.fetch_add(1, Ordering::SeqCst);
            }
            Outcome::Retry { broken, reason } => {
                self.fail(&reason);
                // Only the connection the exchange ran on is dropped, not a newer one.
                let on_current = broken.is_some()
                    && broken == self.conn.as_ref().map(quinn::Connection::stable_id);
                if on_current {
                    if let Some(c) = self.conn.take() {
                        c.close(0u32.into(), b"exchange failed");
                    }
                    self.shared.connected.store(false, Ordering::SeqCst);
                }
                if broken.is_some() && !q.uncertain {
                    // The frame may have arrived: never drop this one at expiry unasked.
                    q.uncertain = true;
                    self.inner.mark_attempted(&q);
                }
                let mut queue = lock(&self.shared.queue);
                if broken.is_some() {
                    // The connection is retried with its own backoff.
                    queue.insert(q);
                } else {
                    // The peer answered but could not take it (busy, store error): wait.
                    q.retries = q.retries.saturating_add(1);
                    let delay = self
                        .inner
                        .cfg
                        .backoff_initial()
                        .saturating_mul(1u32 << q.retries.min(16))
                        .min(self.inner.cfg.backoff_max());
                    let f: f64 = rand::thread_rng().gen_range(0.5..1.0);
                    queue.delay(Instant::now() + delay.mul_f64(f), q);
                }
            }
        }
    }

    async fn sweep_expired(&self) {
        let expired = lock(&self.shared.queue).take_expired(now_ms());
        for item in expired {
            if let Err(e) = self.inner.expire(&item).await {
                warn!(node = %self.inner.id, error = %e, "cannot record expiry; will retry");
                lock(&self.shared.queue).insert(item);
            }
        }
    }
}

/// Failure of one stream exchange.
enum ExchangeError {
    /// The connection is gone or the stream failed.
    Connection(String),
    /// The answer is not a frame.
    Answer(String),
}

/// Writes one frame on a new bidirectional stream and reads the one-frame answer.
async fn exchange(
    conn: &quinn::Connection,
    frame: &Frame,
    priority: i32,
) -> Result<Frame, ExchangeError> {
    let conn_err = |e: &dyn std::fmt::Display| ExchangeError::Connection(e.to_string());
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| conn_err(&e))?;
    let _ = send.set_priority(priority);
    send.write_all(&frame.to_bytes())
        .await
        .map_err(|e| conn_err(&e))?;
    send.finish().map_err(|e| conn_err(&e))?;
    let answer = recv
        .read_to_end(MAX_ANSWER + HEAD_LEN)
        .await
        .map_err(|e| conn_err(&e))?;
    Frame::decode_exact(&answer, MAX_ANSWER).map_err(|e| ExchangeError::Answer(e.to_string()))
}

/// One exchange on `conn`, for callers outside the actor (witnessing).
pub(crate) async fn exchange_once(
    conn: &quinn::Connection,
    frame: &Frame,
) -> Result<Frame, String> {
    exchange(conn, frame, 0).await.map_err(|e| match e {
        ExchangeError::Connection(r) | ExchangeError::Answer(r) => r,
    })
}

/// Sends one queued item to `hop` and records what came back.
async fn deliver(
    inner: &Arc<Inner>,
    conn: &quinn::Connection,
    hop: &NodeId,
    q: &Queued,
) -> Outcome {
    let retry = |reason: String| Outcome::Retry {
        broken: None,
        reason,
    };
    let (frame, expect_digest, final_hop) = match &q.item {
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
                        Ok(None) => return stale(inner, q).await,
                        Ok(Some((_, None))) => {
                            return settle_refusal(inner, q, hop, "body is gone (purged)".into())
                                .await;
                        }
                        Err(e) => return retry(e.to_string()),
                    }
                }
            };
            let to = Envelope::peek_unverified(&envelope).map(|(_, h)| h.to);
            (
                Frame::Deliver { envelope, body },
                digest,
                to.as_ref() == Some(hop),
            )
        }
        OutItem::Receipt { bytes, digest } => {
            (Frame::Receipt(bytes.clone()), Digest(*digest), false)
        }
        OutItem::NonDelivery { bytes, digest } => {
            (Frame::NonDelivery(bytes.clone()), Digest(*digest), false)
        }
    };
    let priority = q.priority as i32;
    let answer = match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(conn, &frame, priority))
        .await
    {
        Err(_) => {
            return Outcome::Retry {
                broken: Some(conn.stable_id()),
                reason: format!("no answer from {hop} within {EXCHANGE_TIMEOUT:?}"),
            };
        }
        Ok(Ok(a)) => a,
        Ok(Err(ExchangeError::Connection(reason))) => {
            return Outcome::Retry {
                broken: Some(conn.stable_id()),
                reason,
            };
        }
        Ok(Err(ExchangeError::Answer(reason))) => return retry(format!("bad answer: {reason}")),
    };
    match (&q.item, answer) {
        (OutItem::Message { .. }, Frame::Receipt(bytes)) if final_hop => {
            match inner.take_receipt(&bytes, Some(&expect_digest)).await {
                Ok(_) => Outcome::Done,
                Err(reason) => retry(reason.to_string()),
            }
        }
        (OutItem::Message { .. }, Frame::Custody(d)) if !final_hop && d == expect_digest => {
            match inner.custody(&expect_digest, hop).await {
                Ok(()) => Outcome::Done,
                Err(e) => retry(e.to_string()),
            }
        }
        (OutItem::Receipt { .. } | OutItem::NonDelivery { .. }, Frame::Ack(d))
            if d == expect_digest =>
        {
            match inner.forwarded(q).await {
                Ok(()) => Outcome::Done,
                Err(e) => retry(e.to_string()),
            }
        }
        (_, Frame::Error { code, reason }) if code.is_temporary() => {
            retry(format!("{hop} busy: {reason}"))
        }
        (_, Frame::Error { code, reason }) => {
            let reason = format!("{reason} ({code:?})");
            settle_refusal(inner, q, hop, reason).await
        }
        (_, other) => retry(format!("unexpected answer {:?}", frame_name(&other))),
    }
}

async fn settle_refusal(inner: &Arc<Inner>, q: &Queued, hop: &NodeId, reason: String) -> Outcome {
    match inner.refused(q, hop, reason).await {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Retry {
            broken: None,
            reason: e.to_string(),
        },
    }
}

/// The item was settled by another path (say, a receipt that came through a relay).
async fn stale(inner: &Arc<Inner>, q: &Queued) -> Outcome {
    match inner.forwarded(q).await {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Retry {
            broken: None,
            reason: e.to_string(),
        },
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
