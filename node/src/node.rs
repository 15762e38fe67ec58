//! The node: start-up checks, and every state change a message goes through, each one a
//! `protocol` check followed by one atomic store write.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use liaison_protocol::audit::{EntryKind, event_record};
use liaison_protocol::delivery::{Inbound, Refusal, Route};
use liaison_protocol::{
    Digest, Envelope, ErrorCode, Frame, Header, MessageId, NodeId, NonDelivery, PolicyError,
    Priority, PublicKey, Receipt, ReceiptStatus, SignedNonDelivery, SignedReceipt, SignedRoster,
};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::{Config, DeliveryConfig};
use crate::error::{NodeError, StoreError};
use crate::guard::Guard;
use crate::identity::load_signing_key;
use crate::locks::KeyedLocks;
use crate::peer::{PeerHandle, PeerStatus};
use crate::roster::RosterCell;
use crate::store::{
    Direction, MessageRecord, MsgState, OutItem, Payload, Queued, Store, StoreOptions, StoreStats,
    Txn,
};
use crate::transport::{self, TlsMaterial};

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

/// The node's state, shared by its tasks.
pub(crate) struct Inner {
    pub(crate) id: NodeId,
    pub(crate) federation: String,
    pub(crate) signing: SigningKey,
    pub(crate) log_key: SigningKey,
    pub(crate) witness_key: SigningKey,
    pub(crate) authority: PublicKey,
    pub(crate) roster: RosterCell,
    pub(crate) store: Store,
    pub(crate) endpoint: quinn::Endpoint,
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
    /// Witness conflicts seen since start (also in the audit log).
    pub(crate) conflicts: Mutex<u64>,
    /// One witness round at a time.
    pub(crate) witness_round: tokio::sync::Mutex<()>,
    /// Case updates are read-decide-stage: one at a time per case.
    pub(crate) case_locks: KeyedLocks,
    /// One deadline / alert tick at a time.
    pub(crate) case_tick_lock: tokio::sync::Mutex<()>,
    /// Workflow settings.
    pub(crate) wf: crate::config::WorkflowConfig,
    /// How long bodies (and steps recorded here only) are kept at most, ms.
    pub(crate) body_retention_ms: u64,
    /// Witnesses not yet asked since start how much of the log they cosigned, with the log's
    /// size at start (asked once a connection shows them up).
    pub(crate) size_checks: Mutex<HashMap<NodeId, u64>>,
    /// Set by a tamper test that rolls the log back on purpose: the node does not check
    /// itself against its witnesses (so the witnesses' own checks are what is tested).
    pub(crate) no_self_check: std::sync::atomic::AtomicBool,
    /// Bounds on what peers and strangers can make this node do.
    pub(crate) guard: Arc<Guard>,
    /// The one clock (crate::clock).
    pub(crate) clock: Clock,
}

/// A message this node sent reached a final state (receipt, rejection or non-delivery).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Settled {
    /// Message id (hex).
    pub message_id: String,
    /// Final state.
    pub state: MsgState,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish()
    }
}

/// A running node. Cloning gives another handle to the same node.
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

/// Start-up options beyond the config file.
#[derive(Debug, Default)]
pub struct StartOptions {
    /// An already-bound UDP socket to use instead of binding `listen`.
    pub socket: Option<UdpSocket>,
    /// Serve the local API on `<data_dir>/api.sock`.
    pub api_socket: bool,
    /// The clock the node reads and waits on (the system clock when absent; tests pass a
    /// manual one, shared by the nodes of a federation).
    pub clock: Option<Clock>,
}

impl Node {
    /// Checks the configuration, keys, roster and store, binds the endpoint and starts every
    /// task. Refuses development material outside dev mode.
    pub async fn start(cfg: Config, opts: StartOptions) -> Result<Self, NodeError> {
        let signing = load_signing_key(&cfg.signing_key)?;
        let log_key = load_signing_key(&cfg.log_key)?;
        let witness_key = load_signing_key(&cfg.witness_key)?;
        let tls = TlsMaterial::load(&cfg.ca_cert, &cfg.tls_cert, &cfg.tls_key)?;
        let authority = parse_key_hex(&cfg.authority_key)?;
        let clock = opts.clock.unwrap_or_default();

        std::fs::create_dir_all(&cfg.data_dir)?;
        let store = Store::open(
            &cfg.data_dir.join("store"),
            StoreOptions {
                cache_bytes: cfg.store.cache_bytes,
                body_retention_ms: cfg.audit.body_retention_ms,
                head: None,
            },
            cfg.node_id.clone(),
        )
        .await?;

        let file_roster = std::fs::read(&cfg.roster)
            .map_err(|e| NodeError::Roster(format!("cannot read {}: {e}", cfg.roster.display())))?;
        let file_roster = SignedRoster::open(&file_roster, &authority).map_err(|e| {
            NodeError::Roster(format!(
                "{} does not verify against the configured authority key: {e}",
                cfg.roster.display()
            ))
        })?;
        let stored =
            match store.read(|r| r.roster()).await? {
                Some(b) => Some(SignedRoster::open(&b, &authority).map_err(|e| {
                    NodeError::Roster(format!("stored roster does not verify: {e}"))
                })?),
                None => None,
            };
        let roster = match stored {
            Some(s) if s.roster().serial >= file_roster.roster().serial => s,
            _ => {
                let r = file_roster;
                let rec = roster_record(&r);
                let bytes = r.bytes().to_vec();
                store
                    .write(clock.now_ms(), move |t| {
                        t.put_roster(&bytes);
                        t.log(EntryKind::RosterApplied, rec);
                        Ok(())
                    })
                    .await?;
                r
            }
        };
        check_dev(&cfg, &roster, &tls)?;
        check_self(&cfg, &roster, &signing, &tls)?;

        let roster = RosterCell::new(roster);
        let socket = match opts.socket {
            Some(s) => s,
            None => transport::bind(cfg.listen)?,
        };
        let endpoint = transport::endpoint(socket, &tls, roster.clone(), &cfg.delivery)?;

        let inner = Arc::new(Inner {
            id: cfg.node_id.clone(),
            federation: cfg.federation.clone(),
            signing,
            log_key,
            witness_key,
            authority,
            roster,
            store,
            endpoint,
            peers: Mutex::new(HashMap::new()),
            inbound: Mutex::new(Vec::new()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            cfg: cfg.delivery.clone(),
            dev_mode: cfg.dev_mode,
            inbox_notify: Notify::new(),
            roster_changed: Notify::new(),
            settled: tokio::sync::broadcast::channel(4096).0,
            conflicts: Mutex::new(0),
            witness_round: tokio::sync::Mutex::new(()),
            case_locks: KeyedLocks::default(),
            case_tick_lock: tokio::sync::Mutex::new(()),
            wf: cfg.workflow.clone(),
            body_retention_ms: cfg.audit.body_retention_ms,
            guard: Guard::new(cfg.limits.clone()),
            size_checks: Mutex::new(HashMap::new()),
            no_self_check: std::sync::atomic::AtomicBool::new(false),
            clock,
        });
        let node = Self { inner };
        // Nothing is served from a store that its witnesses know to be behind.
        let wait = Duration::from_millis(cfg.audit.start_check_ms);
        if let Err(e) = node.check_witnesses(wait).await {
            node.inner.cancel.cancel();
            node.inner.endpoint.close(0u32.into(), b"refused to start");
            let _ = node.inner.store.close().await;
            return Err(e);
        }
        node.spawn_summaries();
        crate::inbound::spawn_accept_loop(node.inner.clone());
        // Everything still queued from before a restart goes back to its peer's queue.
        // A message among them is not dropped at expiry without asking the peer: the peer
        // answers with its stored receipt or refuses it as expired.
        for (hop, q) in node.inner.store.read(|r| r.outbox()).await? {
            node.inner.enqueue_as(&hop, q, true);
        }
        node.spawn_checkpointer(cfg.audit.checkpoint_interval_ms);
        if node.inner.store.cases_unindexed() {
            // A store written before cases were indexed: index them once, before the ticker.
            node.inner.index_cases().await?;
        }
        node.spawn_case_ticker(cfg.workflow.tick_ms);
        if opts.api_socket {
            crate::api::spawn_server(node.clone(), cfg.data_dir.join("api.sock"))?;
        }
        info!(node = %node.inner.id, addr = ?node.local_addr(), "node started");
        Ok(node)
    }

    fn spawn_checkpointer(&self, interval_ms: u64) {
        let node = self.clone();
        let mut ticker = node
            .inner
            .clock
            .ticker(Duration::from_millis(interval_ms.max(100)));
        self.inner.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = node.inner.cancel.cancelled() => break,
                }
                if let Err(e) = node.purge_bodies(node.now()).await {
                    warn!(node = %node.inner.id, error = %e, "cannot purge bodies");
                }
                // Witnessing writes entries itself: a log that grew only by those is not
                // submitted again, or the nodes would keep each other busy forever.
                match node.grew_since_checkpoint().await {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(e) => warn!(node = %node.inner.id, error = %e, "cannot read the log"),
                }
                // A round waits on witnesses (a dial, an answer): shutdown does not.
                let round = tokio::select! {
                    r = node.witness_round() => r,
                    () = node.inner.cancel.cancelled() => break,
                };
                if let Err(e) = round {
                    warn!(node = %node.inner.id, error = %e, "cannot sign or witness a checkpoint");
                }
            }
        });
    }

    /// Logs what was counted instead of logged one by one (failed handshakes, members' input
    /// beyond their rate) as at most one summary entry of each kind per interval.
    fn spawn_summaries(&self) {
        let inner = self.inner.clone();
        let period = Duration::from_millis(inner.guard.limits().summary_interval_ms.max(100));
        let mut ticker = inner.clock.ticker(period);
        self.inner.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = inner.cancel.cancelled() => break,
                }
                inner.log_summaries().await;
            }
        });
    }

    /// The node's clock: what it reads and waits on.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Now, by the node's clock (Unix ms).
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    pub(crate) fn now(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// The UDP address the endpoint is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, NodeError> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    /// Signs a message and queues it durably for its first hop.
    pub async fn send(&self, req: SendRequest) -> Result<SendResult, NodeError> {
        self.inner.send(req).await
    }

    /// Messages in the inbox, not yet taken by the application, oldest first.
    pub async fn inbox(
        &self,
        limit: usize,
        with_body: bool,
    ) -> Result<Vec<MessageView>, NodeError> {
        let rows = self
            .inner
            .store
            .read(move |r| {
                let mut out = Vec::new();
                for (_, digest) in r.inbox(limit)? {
                    if let Some(rec) = r.message(&digest)? {
                        let body = if with_body { r.body(&digest)? } else { None };
                        out.push((digest, rec, body));
                    }
                }
                Ok(out)
            })
            .await?;
        rows.iter()
            .map(|(d, rec, body)| view(d, rec, body.as_deref()))
            .collect()
    }

    /// Marks inbox entry `seq` as taken by the application: it is never shown again.
    pub async fn ack(&self, seq: u64) -> Result<MessageView, NodeError> {
        self.inner.ack(seq).await
    }

    /// Final states of messages this node sends, as they happen (a lagging receiver misses
    /// events; the store has them all). A state is announced once recorded, which may be just
    /// before its group reaches the disk: after a crash the message is sent again and the
    /// recipient answers with the same receipt.
    pub fn settled(&self) -> tokio::sync::broadcast::Receiver<Settled> {
        self.inner.settled.subscribe()
    }

    /// Waits until the inbox may have changed (or `timeout` passes).
    pub async fn inbox_changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.inbox_notify.notified()).await;
    }

    /// Every message this node sent, received or relayed.
    pub async fn messages(&self) -> Result<Vec<MessageView>, NodeError> {
        self.inner
            .store
            .read(|r| r.messages())
            .await?
            .iter()
            .map(|(d, r)| view(d, r, None))
            .collect()
    }

    /// One message by id (hex) or digest (hex).
    pub async fn message(&self, id_or_digest: &str) -> Result<Option<MessageView>, NodeError> {
        enum Key {
            Digest(Digest),
            Id(MessageId),
        }
        let key = if let Ok(d) = Digest::from_hex(id_or_digest) {
            Key::Digest(d)
        } else if let Ok(id) = MessageId::from_hex(id_or_digest) {
            Key::Id(id)
        } else {
            return Err(NodeError::Invalid(format!(
                "{id_or_digest:?} is neither a message id (32 hex) nor a digest (64 hex)"
            )));
        };
        let found = self
            .inner
            .store
            .read(move |r| {
                let digests = match key {
                    Key::Digest(d) => vec![d],
                    Key::Id(id) => r.digests_for_id(&id)?,
                };
                for d in digests {
                    if let Some(rec) = r.message(&d)? {
                        let body = r.body(&d)?;
                        return Ok(Some((d, rec, body)));
                    }
                }
                Ok(None)
            })
            .await?;
        found
            .map(|(d, rec, body)| view(&d, &rec, body.as_deref()))
            .transpose()
    }

    /// Per-peer queue state.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let peers = match self.inner.peers.lock() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut out: Vec<PeerStatus> = peers.iter().map(|(id, h)| h.status(id)).collect();
        out.sort_by(|a, b| a.peer.cmp(&b.peer));
        out
    }

    /// Live inbound connections per member.
    pub fn inbound_connections(&self) -> std::collections::BTreeMap<String, usize> {
        let list = match self.inner.inbound.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let mut out = std::collections::BTreeMap::new();
        for (id, c) in list.iter() {
            if c.close_reason().is_none() {
                *out.entry(id.to_string()).or_insert(0) += 1;
            }
        }
        out
    }

    /// Inbound handshakes in progress.
    pub fn handshakes_in_progress(&self) -> usize {
        self.inner.guard.handshakes()
    }

    /// The roster in force.
    pub fn roster(&self) -> Arc<SignedRoster> {
        self.inner.roster.get()
    }

    /// Applies a newer roster signed by the authority and spreads it to peers.
    pub async fn apply_roster(&self, bytes: &[u8]) -> Result<u64, NodeError> {
        self.inner.apply_roster(bytes).await
    }

    /// Number of audit log entries.
    pub fn log_len(&self) -> u64 {
        self.inner.store.log_len()
    }

    /// Decoded audit entries in `[from, to)`.
    pub async fn log_entries(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, liaison_protocol::audit::Entry)>, NodeError> {
        self.inner
            .store
            .read(move |r| r.log_entries(from, to))
            .await?
            .into_iter()
            .map(|(i, b)| {
                liaison_protocol::audit::Entry::decode(&b)
                    .map(|e| (i, e))
                    .map_err(NodeError::from)
            })
            .collect()
    }

    /// Overwrites an audit entry in the store behind the node's back (tamper tests; only
    /// with the `test-hooks` feature, as every `dangerous_*` hook).
    #[cfg(feature = "test-hooks")]
    pub async fn dangerous_overwrite_log_entry(
        &self,
        index: u64,
        bytes: &[u8],
        with_leaf_hash: bool,
    ) -> Result<(), NodeError> {
        Ok(self
            .inner
            .store
            .dangerous_overwrite_entry(index, bytes.to_vec(), with_leaf_hash)
            .await?)
    }

    /// Deletes the audit log from `from` on behind the node's back, as a node that rolls its
    /// own log back would (it does not ask its witnesses about itself either). Tamper tests.
    #[cfg(feature = "test-hooks")]
    pub async fn dangerous_truncate_log(&self, from: u64) -> Result<(), NodeError> {
        self.inner
            .no_self_check
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(self.inner.store.dangerous_truncate_log(from).await?)
    }

    /// Makes the store's applies or flushes fail as a full disk would (fault tests); the
    /// first failure fails the store until the node is restarted.
    #[cfg(feature = "test-hooks")]
    pub fn dangerous_inject_store_fault(&self, fault: crate::store::Fault) {
        self.inner.store.dangerous_inject_fault(fault);
    }

    /// How the store grouped changes into commits since start.
    pub fn store_stats(&self) -> StoreStats {
        self.inner.store.stats()
    }

    /// Why the store failed, if it did (the node then refuses all work until restarted).
    pub fn store_failure(&self) -> Option<String> {
        self.inner.store.failure()
    }

    /// Stops accepting work, lets in-flight exchanges finish within the grace period, closes
    /// connections and flushes the store.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.cancel.cancel();
        inner.tasks.close();
        let grace = Duration::from_millis(inner.cfg.shutdown_grace_ms);
        if tokio::time::timeout(grace, inner.tasks.wait())
            .await
            .is_err()
        {
            warn!(node = %inner.id, "shutdown grace period passed with tasks still running");
        }
        inner.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(2), inner.endpoint.wait_idle()).await;
        inner.log_summaries().await;
        if let Err(e) = inner.store.close().await {
            warn!(error = %e, "final flush failed");
        }
        info!(node = %inner.id, "node stopped");
    }

    /// Resolves when shutdown has begun.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await;
    }
}

fn parse_key_hex(s: &str) -> Result<PublicKey, NodeError> {
    let bytes: [u8; 32] = hex::decode(s.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            NodeError::Roster("authority_key must be 64 hex characters (an Ed25519 key)".into())
        })?;
    PublicKey::from_bytes(&bytes).map_err(|e| NodeError::Roster(format!("authority_key: {e}")))
}

fn check_dev(cfg: &Config, roster: &SignedRoster, tls: &TlsMaterial) -> Result<(), NodeError> {
    if cfg.dev_mode {
        warn!("dev mode: development certificates and rosters are accepted");
        return Ok(());
    }
    if roster.roster().dev {
        return Err(NodeError::DevMaterial(
            "the roster is a development roster (certs-dev); start with dev_mode = true \
             (or --dev) only on a test machine, or use the federation's real roster"
                .into(),
        ));
    }
    if tls.ca_is_dev() {
        return Err(NodeError::DevMaterial(
            "the CA certificate is the development CA (certs-dev); refused outside dev mode".into(),
        ));
    }
    Ok(())
}

fn check_self(
    cfg: &Config,
    roster: &SignedRoster,
    signing: &SigningKey,
    tls: &TlsMaterial,
) -> Result<(), NodeError> {
    let r = roster.roster();
    if r.federation != cfg.federation {
        return Err(NodeError::Roster(format!(
            "roster is for federation {}, config says {}",
            r.federation, cfg.federation
        )));
    }
    let me = r.member(&cfg.node_id).ok_or_else(|| {
        NodeError::Roster(format!("{} is not a member of the roster", cfg.node_id))
    })?;
    if me.signing_key != PublicKey::from(signing) {
        return Err(NodeError::Roster(format!(
            "the signing key in {} is not the one the roster lists for {}",
            cfg.signing_key.display(),
            cfg.node_id
        )));
    }
    let spki = transport::spki_sha256(&tls.cert).map_err(|e| NodeError::Tls(e.to_string()))?;
    if spki != me.tls_spki_sha256 {
        return Err(NodeError::Roster(format!(
            "the TLS certificate in {} is not the one the roster pins for {}",
            cfg.tls_cert.display(),
            cfg.node_id
        )));
    }
    if !me.is_active() {
        return Err(NodeError::Roster(format!(
            "{} is {:?} in the roster",
            cfg.node_id, me.status
        )));
    }
    Ok(())
}

fn roster_record(r: &SignedRoster) -> Vec<u8> {
    let reason = format!("roster serial {}", r.roster().serial);
    event_record(&reason, None, Some(&Digest::of(r.bytes()).0), None)
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

fn error_frame(code: ErrorCode, reason: impl Into<String>) -> Frame {
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
enum Dedupe {
    /// Not seen before.
    New,
    /// Seen with this very content: the answer it got then.
    Same(Reply),
    /// The id was used before with other content.
    Reused,
}

/// What taking a receipt did.
enum Taken {
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

impl Inner {
    /// Now, by the node's clock (Unix ms).
    pub(crate) fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn signer_lookup(&self) -> impl Fn(&[u8; 8]) -> Option<(NodeId, PublicKey)> + '_ {
        let r = self.roster.get();
        move |kid| r.roster().signer(kid)
    }

    pub(crate) fn enqueue(self: &Arc<Self>, hop: &NodeId, q: Queued) {
        self.enqueue_as(hop, q, false);
    }

    /// Queues `q` for `hop`; `restored`: loaded from the store at start.
    fn enqueue_as(self: &Arc<Self>, hop: &NodeId, q: Queued, restored: bool) {
        let handle = {
            let mut peers = match self.peers.lock() {
                Ok(p) => p,
                Err(p) => p.into_inner(),
            };
            peers
                .entry(hop.clone())
                .or_insert_with(|| crate::peer::spawn(self.clone(), hop.clone()))
                .clone()
        };
        handle.push(q, restored);
    }

    async fn send(self: &Arc<Self>, req: SendRequest) -> Result<SendResult, NodeError> {
        if self.cancel.is_cancelled() {
            return Err(NodeError::ShuttingDown);
        }
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
        Envelope::seal(header, &self.signing)
    }

    /// Hands inbox entry `seq` to the application, once: the entry is looked up and removed
    /// in the same change, so of two concurrent takes exactly one succeeds.
    async fn ack(&self, seq: u64) -> Result<MessageView, NodeError> {
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

    /// Logs a refused inbound message and builds the reply. With `verified` (the envelope
    /// verified), the dedupe index is looked up in the same change: a copy of a message taken
    /// or refused before gets the answer it got then, never a contradicting one. When the
    /// refusal deserves a receipt and the message is addressed to this node, the refusal is a
    /// signed rejection receipt, kept as the message's record and dedupe entry so every later
    /// copy gets the same receipt; otherwise an error frame, and only the audit entry is
    /// stored.
    async fn reject_inbound(
        &self,
        peer: &NodeId,
        envelope: &[u8],
        verified: Option<&Envelope>,
        refusal: Refusal,
    ) -> Reply {
        let reason = refusal.to_string();
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
                        return error_frame(ErrorCode::Refused, Refusal::IdReused.to_string());
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
                    &self.signing,
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
        let reused = Refusal::IdReused.to_string();
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
            Ok(Refused::Reused) => error_frame(ErrorCode::Refused, Refusal::IdReused.to_string()),
            Ok(Refused::Logged) => match receipt {
                Some(r) => Frame::Receipt(r.bytes().to_vec()),
                None => error_frame(code, reason),
            },
        }
    }

    /// Looks `env` up in the dedupe index, in the applied state: the caller waits for the
    /// flush before it answers from it.
    async fn dedupe(&self, env: &Envelope) -> Result<Dedupe, StoreError> {
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
    ) -> Reply {
        // 1. The envelope must verify before anything in it is believed.
        let roster = self.roster.get();
        let env = match Envelope::open(&envelope, |kid| roster.roster().signer(kid)) {
            Ok(env) => env,
            Err(e) => {
                crate::inbound::note_junk(self, peer);
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
        if relay_hop.is_none() && crate::cases::is_case_kind(&h.kind) {
            return self.receive_case_step(peer, env, body).await;
        }
        match self
            .store_inbound(peer, env, body, relay_hop, None, None)
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
    async fn receive_case_step(
        self: &Arc<Self>,
        peer: &NodeId,
        env: Envelope,
        body: Vec<u8>,
    ) -> Reply {
        let h = env.header().clone();
        let case_ref = h.case_ref.clone().unwrap_or_default();
        let guard = self.case_locks.lock(&case_ref).await;
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
        let cr = case_ref.clone();
        let existing = match self.store.peek(move |r| r.case(&cr)).await {
            Ok(c) => c,
            Err(e) => return error_frame(ErrorCode::Unavailable, e.to_string()),
        };
        match self.check_case_step(&env, &body, existing) {
            Ok(update) => {
                match self
                    .store_inbound(peer, env, body, None, Some(update), Some(guard))
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
            Err(crate::cases::StepRefusal::NotYet(reason)) => {
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
            Err(crate::cases::StepRefusal::Final(reason)) => {
                drop(guard);
                self.reject_inbound(peer, env.bytes(), Some(&env), Refusal::CaseStep(reason))
                    .await
            }
        }
    }

    /// The inbound checks of this node, with the roster it holds now.
    fn inbound_checks<'a>(&'a self, roster: &'a SignedRoster) -> Inbound<'a> {
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
    async fn store_inbound(
        self: &Arc<Self>,
        peer: &NodeId,
        env: Envelope,
        body: Vec<u8>,
        relay_hop: Option<NodeId>,
        case: Option<crate::cases::CaseUpdate>,
        guard: Option<crate::locks::KeyedGuard>,
    ) -> Result<Reply, StoreError> {
        enum Outcome {
            Receipted(Vec<u8>),
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
                            "message id reused with different content",
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
                crate::cases::check_rev(t, u)?;
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
                    let receipt = SignedReceipt::sign(
                        Receipt {
                            federation: inner.federation.clone(),
                            message_digest: digest,
                            message_id: h.id,
                            sender: h.from.clone(),
                            recipient: inner.id.clone(),
                            at: now,
                            status: ReceiptStatus::Delivered,
                            log_ref: Some((format!("{}/log", inner.id), index)),
                        },
                        &inner.signing,
                    );
                    t.log(EntryKind::ReceiptSent, receipt.bytes().to_vec());
                    if let Some(u) = case {
                        crate::cases::stage_case(t, u)?;
                    }
                    rec.proof = Some(receipt.bytes().to_vec());
                    rec.inbox_seq = Some(t.push_inbox(&digest));
                    rec.log_index = Some(index);
                    Outcome::Receipted(receipt.bytes().to_vec())
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
            Outcome::IdReused => error_frame(
                ErrorCode::Refused,
                "message id reused with different content (replay?)",
            ),
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
        })
    }

    /// A RECEIPT for a message this node sent or relayed, arriving as the answer to a
    /// delivery or forwarded by a relay. The message's new state, the receipt's audit entry,
    /// its forwarding (at a relay) and the case change it causes (at the sender: a case step
    /// receipted or refused) are one change.
    pub(crate) async fn take_receipt(
        self: &Arc<Self>,
        bytes: &[u8],
        expected: Option<&Digest>,
    ) -> Result<Frame, Failure> {
        let receipt =
            SignedReceipt::open(bytes, self.signer_lookup()).map_err(|error| Refusal::Proof {
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
        let change = move |t: &mut Txn<'_>| {
            let Some(mut rec) = t.message(&digest)? else {
                return Ok(Taken::Unknown);
            };
            let Some((_, h)) = Envelope::peek_unverified(&rec.envelope) else {
                return Err(StoreError::Corrupt {
                    key: digest.to_hex(),
                    problem: "stored envelope does not parse".into(),
                });
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
            if outgoing {
                crate::cases::on_receipt(t, &h, &r.status, now)?;
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
    fn forward_hop(
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
    async fn close_with_record(
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
    fn sign_nondelivery(&self, digest: &Digest, h: &Header, reason: String) -> SignedNonDelivery {
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
            &self.signing,
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

    /// A ROSTER frame from a peer, or a roster applied by the operator.
    pub(crate) async fn apply_roster(self: &Arc<Self>, bytes: &[u8]) -> Result<u64, NodeError> {
        let new = SignedRoster::open(bytes, &self.authority)
            .map_err(|e| NodeError::Roster(format!("refused: {e}")))?;
        let cur = self.roster.get();
        let (n, c) = (new.roster(), cur.roster());
        if n.federation != self.federation {
            return Err(NodeError::Roster(format!(
                "roster for federation {}",
                n.federation
            )));
        }
        if n.serial <= c.serial {
            return Ok(c.serial);
        }
        if n.dev && !self.dev_mode {
            return Err(NodeError::DevMaterial(
                "a development roster is refused outside dev mode".into(),
            ));
        }
        let rec = roster_record(&new);
        let raw = new.bytes().to_vec();
        self.store
            .write(self.now(), move |t| {
                t.put_roster(&raw);
                t.log(EntryKind::RosterApplied, rec);
                Ok(())
            })
            .await?;
        let serial = n.serial;
        info!(node = %self.id, serial, "roster applied");
        self.roster.set(new);
        // Units that joined may now be within an alert's radius: the ticker looks again.
        self.roster_changed.notify_one();
        self.drop_inactive_peers();
        let peers: Vec<PeerHandle> = match self.peers.lock() {
            Ok(p) => p.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        };
        for p in peers {
            p.roster_changed();
        }
        Ok(serial)
    }

    /// Closes inbound connections whose peer the roster in force no longer admits: a member
    /// suspended, revoked or gone, or a TLS key no longer pinned (rotated).
    fn drop_inactive_peers(&self) {
        let mut inbound = match self.inbound.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        inbound.retain(|(id, conn)| {
            let ok = transport::recheck(conn, &self.roster, Some(id.as_str())).is_ok();
            if !ok {
                conn.close(1u32.into(), b"no longer an active member");
            }
            ok && conn.close_reason().is_none()
        });
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
        let text = refusal.to_string();
        if !self.guard.log_one(peer, refusal.name(), &text, self.now()) {
            return;
        }
        warn!(node = %self.id, %peer, refusal = refusal.name(), %refusal, "input refused");
        let rec = event_record(&refusal.to_string(), Some(peer.as_str()), None, None);
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
const ND: &str = "non-delivery record";

/// The reason text of a non-delivery record for an expired message.
const EXPIRED: &str = "expired before delivery";

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
fn duplicate_answer(digest: &Digest, rec: MessageRecord) -> Reply {
    match (rec.direction, rec.proof) {
        (Direction::Incoming, Some(p)) => Frame::Receipt(p),
        _ => Frame::Custody(*digest),
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
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
