//! The node: start-up checks, and every state change a message goes through, each one a
//! `protocol` check followed by one atomic store write.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liaison_protocol::audit::EntryKind;
use liaison_protocol::{Digest, MessageId, NodeId, PublicKey, SignedRoster};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::audit::Audit;
use crate::bus::hook::{AuditHook, CaseHook};
use crate::bus::peer::PeerStatus;
use crate::bus::view;
use crate::bus::{Bus, MessageView, SendRequest, SendResult, Settled, roster_record};
use crate::cases::{ActRequest, ActResult, CaseView, Cases, EnrollRequest, OfficerView};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::NodeError;
use crate::identity::{KeyCell, NodeKeys, load_signing_key};
use crate::net::guard::Guard;
use crate::net::transport::{self, TlsMaterial};
use crate::roster::RosterCell;
use crate::store::{Store, StoreOptions, StoreStats};

/// A node warns this long before its TLS certificate expires.
const TLS_RENEW_BEFORE_MS: u64 = 30 * 24 * 3600 * 1000;

/// A running node. Cloning gives another handle to the same node.
#[derive(Debug, Clone)]
pub struct Node {
    /// The bus: signing, roster, store, peers, endpoint, audit.
    pub(crate) inner: Arc<Bus>,
    /// The case workflows.
    pub(crate) cases: Arc<Cases>,
    /// The log as evidence, and witnessing.
    pub(crate) audit: Arc<Audit>,
    /// The config it was started with (for backups: which files are the node's).
    pub(crate) config: Arc<Config>,
    /// Set once shutdown has run: a second call (the API's and the runner's) waits for it.
    pub(crate) stopped: Arc<tokio::sync::OnceCell<()>>,
}

/// Start-up options beyond the config file.
#[derive(Debug, Default)]
pub struct StartOptions {
    /// An already-bound UDP socket to use instead of binding `listen`.
    pub socket: Option<UdpSocket>,
    /// The clock the node reads and waits on (the system clock when absent; tests pass a
    /// manual one, shared by the nodes of a federation).
    pub clock: Option<Clock>,
}

impl Node {
    /// Checks the configuration, keys, roster and store, binds the endpoint and starts every
    /// task. Refuses development material outside dev mode.
    pub async fn start(cfg: Config, opts: StartOptions) -> Result<Self, NodeError> {
        let keys = load_keys(&cfg)?;
        let tls = TlsMaterial::load(&cfg.ca_cert, &cfg.tls_cert, &cfg.tls_key)?;
        let authority = parse_key_hex(&cfg.authority_key)?;
        let clock = opts.clock.unwrap_or_default();

        // The data directory holds case data and the API socket: the node's user only.
        {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&cfg.data_dir)?;
        }
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
        // The authority keys trusted: those a handover recorded, then the configured one
        // (an operator who configured the newer key after a handover this node missed).
        let mut authorities: Vec<PublicKey> = store
            .read(|r| r.authorities())
            .await?
            .iter()
            .map(PublicKey::from_bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| NodeError::Roster(format!("stored authority keys: {e}")))?;
        if !authorities.contains(&authority) {
            authorities.push(authority);
        }
        let file_roster = SignedRoster::open_any(&file_roster, &authorities).map_err(|e| {
            NodeError::Roster(format!(
                "{} does not verify against the configured authority key: {e}",
                cfg.roster.display()
            ))
        })?;
        let stored =
            match store.read(|r| r.roster()).await? {
                Some(b) => Some(SignedRoster::open_any(&b, &authorities).map_err(|e| {
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
        let tls_not_after = tls.not_after_ms().ok();
        if let Some(end) = tls_not_after {
            let now = clock.now_ms();
            if end <= now {
                warn!(node = %cfg.node_id, "this node's TLS certificate has expired: peers refuse it; renew it (liaison node renew-tls)");
            } else if end - now < TLS_RENEW_BEFORE_MS {
                warn!(node = %cfg.node_id, days_left = (end - now) / 86_400_000, "this node's TLS certificate expires soon: renew it (liaison node renew-tls)");
            }
        }
        match roster
            .roster()
            .standing(clock.now_ms(), cfg.delivery.roster_grace_ms)
        {
            liaison_protocol::Standing::Valid => {}
            liaison_protocol::Standing::InGrace { stops_at, .. } => warn!(
                node = %cfg.node_id, stops_at,
                "the roster in force is past its validity: traffic stops at the end of the grace \
                 unless a newer roster is applied"
            ),
            liaison_protocol::Standing::Expired { .. } => warn!(
                node = %cfg.node_id,
                "the roster in force is past its validity and grace: nothing new is sent or \
                 taken until a newer roster is applied"
            ),
        }
        check_self(&cfg, &roster)?;
        for note in keys.follow_roster(&cfg.node_id, roster.roster())? {
            warn!(node = %cfg.node_id, "{note}");
        }
        let (next, tls_note) =
            transport::follow_tls(&cfg.node_id, &cfg.tls_key, roster.roster(), &tls)?;
        if let Some(note) = tls_note {
            warn!(node = %cfg.node_id, "{note}");
        }
        let tls = next.unwrap_or(tls);

        let roster = RosterCell::new(roster);
        let socket = match opts.socket {
            Some(s) => s,
            None => transport::bind(cfg.listen)?,
        };
        let endpoint = transport::endpoint(socket, &tls, roster.clone(), &cfg.delivery)?;

        let inner = Arc::new(Bus {
            id: cfg.node_id.clone(),
            federation: cfg.federation.clone(),
            keys,
            authorities: std::sync::RwLock::new({
                let current = authorities.pop().unwrap_or(authority);
                (current, authorities)
            }),
            roster,
            store,
            endpoint: Some(endpoint),
            peers: Mutex::new(HashMap::new()),
            inbound: Mutex::new(Vec::new()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            cfg: cfg.delivery.clone(),
            dev_mode: cfg.dev_mode,
            inbox_notify: Notify::new(),
            roster_changed: Notify::new(),
            settled: tokio::sync::broadcast::channel(4096).0,
            cases: std::sync::OnceLock::new(),
            audit: std::sync::OnceLock::new(),
            body_retention_ms: cfg.audit.body_retention_ms,
            guard: Guard::new(cfg.limits.clone()),
            clock,
            tls: Mutex::new(crate::bus::TlsInUse {
                material: Some(tls),
                key_path: cfg.tls_key.clone(),
                not_after: tls_not_after,
                client: None,
            }),
            receipt_batches: liaison_protocol::BatchCache::default(),
        });
        inner.install_receipt_sealer();
        let cases = Arc::new(Cases::new(inner.clone(), cfg.workflow.clone()));
        let hook: Arc<dyn CaseHook> = cases.clone();
        let _ = inner.cases.set(Arc::downgrade(&hook));
        let audit = Arc::new(Audit::new(inner.clone()));
        let hook: Arc<dyn AuditHook> = audit.clone();
        let _ = inner.audit.set(Arc::downgrade(&hook));
        let node = Self {
            inner,
            cases,
            audit,
            config: Arc::new(cfg.clone()),
            stopped: Arc::new(tokio::sync::OnceCell::new()),
        };
        // Nothing is served from a store that its witnesses know to be behind.
        let wait = Duration::from_millis(cfg.audit.start_check_ms);
        if let Err(e) = node.audit.check_witnesses(wait).await {
            node.inner.cancel.cancel();
            if let Some(ep) = &node.inner.endpoint {
                ep.close(0u32.into(), b"refused to start");
            }
            let _ = node.inner.store.close().await;
            return Err(e);
        }
        node.spawn_summaries();
        crate::bus::inbound::spawn_accept_loop(node.inner.clone());
        // Everything still queued from before a restart goes back to its peer's queue.
        // A message among them is not dropped at expiry without asking the peer: the peer
        // answers with its stored receipt or refuses it as expired.
        for (hop, q) in node.inner.store.read(|r| r.outbox()).await? {
            node.inner.enqueue_as(&hop, q, true);
        }
        node.spawn_checkpointer(cfg.audit.checkpoint_interval_ms);
        if node.inner.store.cases_unindexed() {
            // A store written before cases were indexed: index them once, before the ticker.
            node.cases.index_cases().await?;
        }
        node.cases.spawn_case_ticker(cfg.workflow.tick_ms);
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
        let ep = self
            .inner
            .endpoint
            .as_ref()
            .ok_or_else(|| NodeError::Invalid("this node has no network endpoint".into()))?;
        Ok(ep.local_addr()?)
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

    /// When this node's TLS certificate expires (Unix ms), and whether that is within the
    /// renewal warning (30 days) or past.
    pub fn tls_expiry(&self) -> Option<(u64, bool)> {
        let end = self.inner.tls_not_after()?;
        Some((end, end.saturating_sub(self.now_ms()) < TLS_RENEW_BEFORE_MS))
    }

    /// The SHA-256 of the SubjectPublicKeyInfo of the TLS key this node serves and dials with
    /// now (the roster's pin for it, after a rotation the new one).
    pub fn tls_spki(&self) -> Option<[u8; 32]> {
        let tls = self
            .inner
            .tls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tls.material
            .as_ref()
            .and_then(|m| transport::spki_sha256(&m.cert).ok())
    }

    /// The public keys this node signs with now: signing, log, witness.
    pub fn signing_keys(&self) -> [PublicKey; 3] {
        let k = &self.inner.keys;
        [k.signing.public(), k.log.public(), k.witness.public()]
    }

    /// Where the roster in force stands against its validity now (in its grace, traffic goes
    /// on with a warning; past it, nothing new is sent or taken).
    pub fn roster_standing(&self) -> liaison_protocol::Standing {
        self.inner.roster_standing()
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
        self.audit
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

    /// Writes a backup of this node to the new file `out` (relative: to the data directory)
    /// while it runs: the store as it is now (`store::backup`), and the node's files (its
    /// config with paths made relative, keys, certificates, the initial roster), to be put
    /// back by `liaison node restore`.
    pub async fn backup(&self, out: PathBuf) -> Result<crate::store::BackupSummary, NodeError> {
        let cfg = &*self.config;
        let out = if out.is_relative() {
            cfg.data_dir.join(out)
        } else {
            out
        };
        if out.starts_with(cfg.data_dir.join("store")) {
            return Err(NodeError::Invalid(
                "a backup cannot be written inside the store directory".into(),
            ));
        }
        let mut files = Vec::new();
        let mut named = cfg.clone();
        for (name, path) in crate::backup::files_of(&mut named) {
            let bytes = std::fs::read(&*path)?;
            files.push((name.to_owned(), bytes));
            *path = PathBuf::from(name);
        }
        named.data_dir = PathBuf::from("data");
        files.insert(0, ("node.toml".to_owned(), named.to_toml().into_bytes()));
        let now = self.inner.clock.now_ms();
        Ok(self.inner.store.backup(out, files, now).await?)
    }

    /// Answers once the store's writer has committed everything applied so far: a node whose
    /// writer is wedged never answers, one whose store failed answers with the failure.
    pub async fn alive(&self) -> Result<(), NodeError> {
        Ok(self.inner.store.flushed().await?)
    }

    /// Why the store failed, if it did (the node then refuses all work until restarted).
    pub fn store_failure(&self) -> Option<String> {
        self.inner.store.failure()
    }

    /// Stops accepting work, lets in-flight exchanges finish within the grace period, closes
    /// connections and flushes the store.
    pub async fn shutdown(&self) {
        self.stopped.get_or_init(|| self.stop()).await;
    }

    async fn stop(&self) {
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
        if let Some(ep) = &inner.endpoint {
            ep.close(0u32.into(), b"shutdown");
            let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
        }
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

    /// Signs a checkpoint of the log as committed now (unless the newest one already covers
    /// it) and returns it as a signed note.
    pub async fn checkpoint(&self) -> Result<String, NodeError> {
        self.audit.checkpoint().await
    }

    /// Every entry of this node's log about case `case_ref` (its messages, and the receipts
    /// and non-delivery records for them), each with an inclusion proof under one checkpoint,
    /// the roster and the case's signed handover records; for a court (`for_court`) an H1
    /// record of another provider only with its permission of judicial use, else withheld
    /// (protocol.md §13.3a).
    pub async fn case_evidence(
        &self,
        case_ref: &str,
        for_court: bool,
    ) -> Result<liaison_protocol::evidence::CaseEvidence, NodeError> {
        self.audit.case_evidence(case_ref, for_court).await
    }

    /// Whether the log has entries other than witnessing records since its newest checkpoint.
    pub async fn grew_since_checkpoint(&self) -> Result<bool, NodeError> {
        self.audit.grew_since_checkpoint().await
    }

    /// Deletes the bodies whose retention ended before `now` (protocol.md §13.1); returns how
    /// many were purged.
    pub async fn purge_bodies(&self, now: u64) -> Result<u64, NodeError> {
        self.audit.purge_bodies(now).await
    }

    /// The audit index of the entry that recorded message `id` (sent, received or relayed).
    pub async fn entry_of_message(&self, id: &MessageId) -> Result<Option<u64>, NodeError> {
        self.audit.entry_of_message(id).await
    }

    /// An evidence bundle for entry `index`, against the newest checkpoint (made now if none
    /// covers the entry yet).
    pub async fn prove(
        &self,
        index: u64,
    ) -> Result<liaison_protocol::evidence::Evidence, NodeError> {
        self.audit.prove(index).await
    }

    /// The stored checkpoints of sizes `old` and `new` and the consistency proof between them.
    pub async fn consistency(
        &self,
        old: u64,
        new: u64,
    ) -> Result<liaison_protocol::evidence::Consistency, NodeError> {
        self.audit.consistency(old, new).await
    }

    /// Recomputes and re-verifies the whole log (protocol.md §13.4); stops at the first
    /// problem.
    pub async fn audit_verify(&self) -> Result<crate::AuditReport, NodeError> {
        self.audit.audit_verify().await
    }

    /// Submits the newest checkpoint to the witnesses this node talks to directly.
    pub async fn witness_round(&self) -> Result<Vec<crate::WitnessOutcome>, NodeError> {
        self.audit.witness_round().await
    }

    /// Witness conflicts seen since start (also in the audit log).
    pub fn witness_conflicts(&self) -> u64 {
        self.audit.witness_conflicts()
    }

    /// Enrolls an officer: the node signs a credential for the officer's key.
    pub async fn enroll_officer(&self, req: EnrollRequest) -> Result<OfficerView, NodeError> {
        self.cases.enroll_officer(req).await
    }

    /// Revokes an officer: their actions are refused from now on.
    pub async fn revoke_officer(&self, id: &str) -> Result<OfficerView, NodeError> {
        self.cases.revoke_officer(id).await
    }

    /// Every officer enrolled here.
    pub async fn officers(&self) -> Result<Vec<OfficerView>, NodeError> {
        self.cases.officers().await
    }

    /// Checks and carries out an officer-signed action.
    pub async fn act(&self, req: ActRequest) -> Result<ActResult, NodeError> {
        self.cases.act(req).await
    }

    /// Every case this node holds.
    pub async fn cases(&self) -> Result<Vec<liaison_protocol::workflow::Case>, NodeError> {
        self.cases.cases().await
    }

    /// One case with its timeline.
    pub async fn case(&self, case_ref: &str) -> Result<Option<CaseView>, NodeError> {
        self.cases.case(case_ref).await
    }

    /// This node's figures for an annual report.
    pub async fn annual_figures(
        &self,
        year: i32,
    ) -> Result<liaison_protocol::document::Document, NodeError> {
        self.cases.annual_figures(year).await
    }

    /// Checks every case's deadlines and alert radii now (the ticker looks only at the
    /// cases whose time has come, every `tick_ms`).
    pub async fn case_tick(&self) -> Result<(), NodeError> {
        self.cases.case_tick(self.now(), true).await
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

/// The checks the node makes at start that need neither its store nor the network, each
/// failure with the reason: the config (unknown keys were refused when it was read), every key
/// file (Ed25519 PKCS#8, not readable by group or others), the TLS material, the authority
/// key, the roster file against it, development material outside dev mode, this node's place
/// and keys in the roster. Returns what was checked and any warning (a roster past its
/// validity, a TLS certificate that expires within 30 days). The API is a Unix socket in the
/// data directory (`api.sock`): nothing listens for it on the network.
pub fn check_config(cfg: &Config) -> Result<Vec<String>, NodeError> {
    let mut notes = Vec::new();
    let keys = load_keys(cfg)?;
    for (what, path) in [
        ("signing", &cfg.signing_key),
        ("log", &cfg.log_key),
        ("witness", &cfg.witness_key),
    ] {
        notes.push(format!(
            "{what} key {}: Ed25519, PKCS#8, mode 0600",
            path.display()
        ));
    }
    let tls = TlsMaterial::load(&cfg.ca_cert, &cfg.tls_cert, &cfg.tls_key)?;
    notes.push(format!(
        "TLS: CA {}, certificate {}, key {} (mode 0600)",
        cfg.ca_cert.display(),
        cfg.tls_cert.display(),
        cfg.tls_key.display()
    ));
    let authority = parse_key_hex(&cfg.authority_key)?;
    let bytes = std::fs::read(&cfg.roster)
        .map_err(|e| NodeError::Roster(format!("cannot read {}: {e}", cfg.roster.display())))?;
    let roster = SignedRoster::open(&bytes, &authority).map_err(|e| {
        NodeError::Roster(format!(
            "{} does not verify against the configured authority key: {e}",
            cfg.roster.display()
        ))
    })?;
    check_dev(cfg, &roster, &tls)?;
    check_self(cfg, &roster)?;
    notes.extend(keys.follow_roster(&cfg.node_id, roster.roster())?);
    let (next, tls_note) =
        transport::follow_tls(&cfg.node_id, &cfg.tls_key, roster.roster(), &tls)?;
    notes.extend(tls_note);
    let tls = next.unwrap_or(tls);
    notes.push(format!(
        "roster {} (serial {}) signed by the authority key; {} is in it with these keys",
        cfg.roster.display(),
        roster.roster().serial,
        cfg.node_id
    ));
    let now = crate::clock::now_ms();
    match roster.roster().standing(now, cfg.delivery.roster_grace_ms) {
        liaison_protocol::Standing::Valid => {}
        s => notes.push(format!(
            "WARNING: the roster file is past its validity ({s:?}); a newer one in the store or \
             from a peer may replace it"
        )),
    }
    if let Ok(end) = tls.not_after_ms() {
        if end.saturating_sub(now) < TLS_RENEW_BEFORE_MS {
            notes.push(format!(
                "WARNING: the TLS certificate expires within 30 days (at {end} Unix ms): renew it \
                 (liaison node renew-tls)"
            ));
        }
    }
    notes.push(format!(
        "the API is the Unix socket {} (not on the network)",
        cfg.data_dir.join("api.sock").display()
    ));
    if let Ok(meta) = std::fs::metadata(&cfg.data_dir) {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            notes.push(format!(
                "WARNING: the data directory {} has mode {mode:o}: group or others can reach the \
                 store (case data) and the API socket; run `chmod 700 {}`",
                cfg.data_dir.display(),
                cfg.data_dir.display()
            ));
        }
    }
    Ok(notes)
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

fn check_self(cfg: &Config, roster: &SignedRoster) -> Result<(), NodeError> {
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
    if !me.is_active() {
        return Err(NodeError::Roster(format!(
            "{} is {:?} in the roster",
            cfg.node_id, me.status
        )));
    }
    Ok(())
}

fn load_keys(cfg: &Config) -> Result<NodeKeys, NodeError> {
    Ok(NodeKeys {
        signing: KeyCell::new(
            "signing",
            cfg.signing_key.clone(),
            load_signing_key(&cfg.signing_key)?,
        ),
        log: KeyCell::new("log", cfg.log_key.clone(), load_signing_key(&cfg.log_key)?),
        witness: KeyCell::new(
            "witness",
            cfg.witness_key.clone(),
            load_signing_key(&cfg.witness_key)?,
        ),
    })
}
