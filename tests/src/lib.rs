//! Test harness for federation tests: generate a federation on free loopback ports, start
//! and stop real nodes (in-process or as child processes), and speak raw frames to a node
//! with a member's credentials.

#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations
)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use liaison_certs_dev::{FederationSpec, Generated, MemberSpec};
use liaison_node::roster::RosterCell;
use liaison_node::transport::TlsMaterial;
use liaison_node::{Clock, Config, Node, SendRequest, StartOptions};
use liaison_protocol::action::{Action, Handling};
use liaison_protocol::document::{Document, Field};
use liaison_protocol::{Frame, NodeId, Priority, SignedRoster};

/// A generated federation in a temporary directory, with its nodes.
pub struct Federation {
    pub generated: Generated,
    _dir: tempfile::TempDir,
    addrs: HashMap<String, SocketAddr>,
    sockets: HashMap<String, UdpSocket>,
    nodes: HashMap<String, Node>,
    children: HashMap<String, std::process::Child>,
    /// The clock of the nodes started in this process (child processes run on real time).
    pub clock: Clock,
}

/// A member spec with defaults.
pub fn member(id: &str, agency: &str, country: &str, via: Option<&str>) -> MemberSpec {
    MemberSpec {
        id: id.into(),
        agency: agency.into(),
        name: format!("{id} (test)"),
        country: country.into(),
        division: None,
        location: Some((30_000_000, 110_000_000)),
        via: via.map(Into::into),
    }
}

/// Three public-security bureaus, A and B direct, C behind relay R... small federations for
/// tests: `ids` are all `public_security` in one country unless given otherwise.
pub fn spec(members: Vec<MemberSpec>) -> FederationSpec {
    FederationSpec {
        federation: "test-fed".into(),
        members,
        rules: liaison_certs_dev::demo_rules(),
        max_body_len: 256 * 1024,
    }
}

impl Federation {
    /// Generates the federation; every member gets a loopback UDP port reserved now.
    pub fn new(spec: &FederationSpec) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut sockets = HashMap::new();
        let mut addrs = HashMap::new();
        for m in &spec.members {
            let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            addrs.insert(m.id.clone(), s.local_addr()?);
            sockets.insert(m.id.clone(), s);
        }
        let generated = liaison_certs_dev::generate(spec, dir.path(), &|id| addrs[id])?;
        Ok(Self {
            generated,
            _dir: dir,
            addrs,
            sockets,
            nodes: HashMap::new(),
            children: HashMap::new(),
            clock: Clock::system(),
        })
    }

    /// The same federation on a manual clock that starts now: its in-process nodes read and
    /// wait on it, and time moves only by [`Federation::advance`].
    pub fn in_virtual_time(mut self) -> Self {
        self.clock = Clock::manual(liaison_node::now_ms());
        self
    }

    /// Moves the federation's manual clock forward; every node's waits that are due wake.
    pub fn advance(&self, by: Duration) -> u64 {
        self.clock
            .advance(by)
            .expect("advance needs a federation in virtual time")
    }

    /// The config of `id`, with fast retries for tests.
    pub fn config(&self, id: &str) -> Result<Config> {
        let path = self.generated.config(id).context("no such member")?;
        let mut cfg = Config::load(path)?;
        cfg.delivery.backoff_initial_ms = 20;
        cfg.delivery.backoff_max_ms = 300;
        cfg.delivery.shutdown_grace_ms = 2_000;
        cfg.delivery.idle_timeout_ms = 3_000;
        // Summaries of refusals not logged one by one come soon enough to wait for.
        cfg.limits.summary_interval_ms = 200;
        Ok(cfg)
    }

    /// Writes the test config back to the node's config file (for child processes).
    pub fn write_config(&self, id: &str) -> Result<PathBuf> {
        let cfg = self.config(id)?;
        let path = self
            .generated
            .config(id)
            .context("no such member")?
            .to_owned();
        std::fs::write(&path, cfg.to_toml())?;
        Ok(path)
    }

    /// Starts `id` in this process.
    pub async fn start(&mut self, id: &str) -> Result<Node> {
        self.start_with(id, |_| {}).await
    }

    /// Starts `id` in this process after `change` edits its config.
    pub async fn start_with(&mut self, id: &str, change: impl FnOnce(&mut Config)) -> Result<Node> {
        let mut cfg = self.config(id)?;
        change(&mut cfg);
        let socket = match self.sockets.remove(id) {
            Some(s) => s,
            None => rebind(self.addrs[id]).await?,
        };
        let keep = socket.try_clone()?;
        let node = match Node::start(
            cfg,
            StartOptions {
                socket: Some(socket),
                clock: Some(self.clock.clone()),
            },
        )
        .await
        {
            Ok(n) => n,
            Err(e) => {
                // Keep the port reserved for the next attempt.
                self.sockets.insert(id.to_owned(), keep);
                return Err(e.into());
            }
        };
        self.nodes.insert(id.to_owned(), node.clone());
        Ok(node)
    }

    /// Stops the in-process node `id` gracefully.
    pub async fn stop(&mut self, id: &str) {
        if let Some(n) = self.nodes.remove(id) {
            n.shutdown().await;
        }
    }

    /// The running in-process node `id`.
    pub fn node(&self, id: &str) -> &Node {
        &self.nodes[id]
    }

    /// Starts `id` as a child process of `bin` (pass `env!("CARGO_BIN_EXE_liaison-test-node")`);
    /// returns its API socket path.
    pub async fn spawn_process(&mut self, id: &str, bin: &str) -> Result<PathBuf> {
        self.spawn_process_with_env(id, bin, &[]).await
    }

    /// Starts `id` as a child process like [`Self::spawn_process`], with `env` added to its
    /// environment.
    pub async fn spawn_process_with_env(
        &mut self,
        id: &str,
        bin: &str,
        env: &[(&str, &str)],
    ) -> Result<PathBuf> {
        // The reserved socket is released so the child can bind the port.
        drop(self.sockets.remove(id));
        let path = self.write_config(id)?;
        let child = std::process::Command::new(bin)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "error")
            .envs(env.iter().copied())
            .spawn()?;
        self.children.insert(id.to_owned(), child);
        let api = self.config(id)?.data_dir.join("api.sock");
        wait_for(Duration::from_secs(20), async || api.exists()).await?;
        Ok(api)
    }

    /// Starts `id` as a child process like [`Self::spawn_process`], with every file it writes
    /// limited to `max_file_bytes` (RLIMIT_FSIZE, SIGXFSZ ignored): a write beyond fails
    /// with EFBIG as a full disk fails with ENOSPC, from the kernel, at whatever point sled
    /// is at.
    pub async fn spawn_process_limited(
        &mut self,
        id: &str,
        bin: &str,
        max_file_bytes: u64,
    ) -> Result<PathBuf> {
        drop(self.sockets.remove(id));
        let path = self.write_config(id)?;
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; exec prlimit --fsize=\"$1\" -- \"$2\" --config \"$3\"")
            .arg("sh")
            .arg(max_file_bytes.to_string())
            .arg(bin)
            .arg(&path)
            .env("RUST_LOG", "error")
            .spawn()?;
        self.children.insert(id.to_owned(), child);
        let api = self.config(id)?.data_dir.join("api.sock");
        wait_for(Duration::from_secs(20), async || api.exists()).await?;
        Ok(api)
    }

    /// Bytes in the files of `id`'s sled store.
    pub fn store_bytes(&self, id: &str) -> Result<u64> {
        let dir = self.config(id)?.data_dir.join("store");
        let mut total = 0;
        for e in std::fs::read_dir(dir)? {
            let m = e?.metadata()?;
            if m.is_file() {
                total += m.len();
            }
        }
        Ok(total)
    }

    /// Kills the child process `id` with SIGKILL.
    pub fn kill_process(&mut self, id: &str) -> Result<()> {
        if let Some(mut c) = self.children.remove(id) {
            c.kill()?;
            c.wait()?;
            let api = self.config(id)?.data_dir.join("api.sock");
            let _ = std::fs::remove_file(api);
        }
        Ok(())
    }

    /// Sends SIGTERM to the child process `id` (as systemd stops a unit).
    pub fn terminate_process(&self, id: &str) -> Result<()> {
        let c = self.children.get(id).context("no such child")?;
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        Ok(())
    }

    /// Waits for the child process `id` to exit (after an API shutdown).
    pub fn wait_process(&mut self, id: &str) -> Result<std::process::ExitStatus> {
        let mut c = self.children.remove(id).context("no such child")?;
        Ok(c.wait()?)
    }

    /// Signs a changed roster (next serial) and returns its bytes.
    pub fn reissue_roster(
        &mut self,
        change: impl FnOnce(&mut liaison_protocol::Roster),
    ) -> Result<Vec<u8>> {
        liaison_certs_dev::reissue_roster(&mut self.generated, change)
    }

    /// A new TLS key for `id` at `key_out` and its certificate from the development CA:
    /// (certificate DER, SPKI SHA-256).
    pub fn issue_tls(&self, id: &str, key_out: &Path) -> Result<(Vec<u8>, [u8; 32])> {
        liaison_certs_dev::issue_tls(&self.generated, id, key_out)
    }

    /// Directory of a member's files.
    pub fn member_dir(&self, id: &str) -> PathBuf {
        self.generated.dir.join("nodes").join(id)
    }

    /// Raw peer speaking frames to `target` with `as_member`'s credentials.
    pub async fn raw(&self, as_member: &str, target: &str) -> Result<RawPeer> {
        let dir = self.member_dir(as_member);
        RawPeer::connect(
            &self.generated.dir.join("ca.pem"),
            &dir.join("tls.cert.pem"),
            &dir.join("tls.key.pem"),
            &self.generated.dir.join("roster.cbor"),
            &self.generated.authority_key_hex,
            self.addrs[target],
            target,
        )
        .await
    }

    /// Binds `id`'s address (the node not running) with an endpoint that refuses every
    /// connection at once, so a dial to it fails without waiting for a timeout.
    pub async fn closed_door(&mut self, id: &str) -> Result<ClosedDoor> {
        let socket = match self.sockets.remove(id) {
            Some(s) => s,
            None => rebind(self.addrs[id]).await?,
        };
        let dir = self.member_dir(id);
        let tls = TlsMaterial::load(
            &self.generated.dir.join("ca.pem"),
            &dir.join("tls.cert.pem"),
            &dir.join("tls.key.pem"),
        )?;
        let auth: [u8; 32] = hex::decode(&self.generated.authority_key_hex)?
            .try_into()
            .unwrap();
        let auth = liaison_protocol::PublicKey::from_bytes(&auth)?;
        let roster = SignedRoster::open(
            &std::fs::read(self.generated.dir.join("roster.cbor"))?,
            &auth,
        )?;
        let endpoint = liaison_node::transport::endpoint(
            socket,
            &tls,
            RosterCell::new(roster),
            &liaison_node::config::DeliveryConfig::default(),
        )?;
        let ep = endpoint.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                incoming.refuse();
            }
        });
        Ok(ClosedDoor { endpoint, task })
    }

    /// The loopback address of a member.
    pub fn addr(&self, id: &str) -> SocketAddr {
        self.addrs[id]
    }

    /// A member's own private keys, read from its key files: what a node that forges evidence
    /// holds.
    pub fn keys(&self, id: &str) -> Result<NodeKeys> {
        let cfg = self.config(id)?;
        let load = |p: &Path| liaison_node::identity::load_signing_key(p);
        Ok(NodeKeys {
            signing: load(&cfg.signing_key)?,
            log: load(&cfg.log_key)?,
            witness: load(&cfg.witness_key)?,
        })
    }

    /// The federation authority's public key.
    pub fn authority(&self) -> liaison_protocol::PublicKey {
        let bytes: [u8; 32] = hex::decode(&self.generated.authority_key_hex)
            .expect("authority key hex")
            .try_into()
            .expect("32 bytes");
        liaison_protocol::PublicKey::from_bytes(&bytes).expect("authority key")
    }
}

/// A member's private keys.
pub struct NodeKeys {
    /// Node signing key (envelopes, receipts, credentials).
    pub signing: ed25519_dalek::SigningKey,
    /// Log key (checkpoints).
    pub log: ed25519_dalek::SigningKey,
    /// Witness key (cosignatures).
    pub witness: ed25519_dalek::SigningKey,
}

/// A log made up by `node` (origin `<node>/log`) of `entries` at indices 0..n, with a
/// checkpoint signed by `log_key`, and one evidence bundle per entry: every proof holds, so
/// only what the entries hold can give a forgery away.
pub fn forge_log(
    log_key: &ed25519_dalek::SigningKey,
    node: &str,
    entries: &[liaison_protocol::audit::Entry],
) -> Vec<liaison_protocol::evidence::Evidence> {
    use liaison_protocol::merkle;
    let origin = format!("{node}/log");
    let encoded: Vec<Vec<u8>> = entries.iter().map(|e| e.encode()).collect();
    let leaves: Vec<merkle::Hash> = encoded.iter().map(|e| merkle::leaf_hash(e)).collect();
    let cp = liaison_protocol::note::Checkpoint::new(
        origin.clone(),
        leaves.len() as u64,
        merkle::root_from_leaves(&leaves),
    )
    .expect("checkpoint");
    let note = liaison_protocol::note::SignedNote::sign_checkpoint(&cp, &origin, log_key)
        .expect("note")
        .to_text();
    encoded
        .into_iter()
        .enumerate()
        .map(|(i, entry)| liaison_protocol::evidence::Evidence {
            entry,
            index: i as u64,
            checkpoint: note.clone().into_bytes(),
            path: merkle::inclusion_proof(&leaves, i as u64).expect("proof"),
        })
        .collect()
}

impl Drop for Federation {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn rebind(addr: SocketAddr) -> Result<UdpSocket> {
    let mut last = None;
    for _ in 0..100 {
        match UdpSocket::bind(addr) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("cannot rebind {addr}: {last:?}")
}

/// Polls `f` until it is true or `limit` passes.
pub async fn wait_for(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> Result<()> {
    let start = std::time::Instant::now();
    while !f().await {
        if start.elapsed() > limit {
            bail!("condition not met within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Two provincial public security bureaus, `fj` and `sx`.
pub fn two_bureaus() -> Federation {
    Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap()
}

/// The header of a `bus.test` message of the test federation, sent now.
pub fn header(from: &str, to: &str, body: &[u8]) -> liaison_protocol::Header {
    liaison_protocol::Header {
        federation: "test-fed".into(),
        id: liaison_protocol::MessageId(*uuid::Uuid::now_v7().as_bytes()),
        from: NodeId::new(from).unwrap(),
        to: NodeId::new(to).unwrap(),
        sent_at: liaison_node::now_ms(),
        kind: "bus.test".into(),
        body_len: body.len() as u64,
        body_hash: liaison_protocol::Digest::of(body).0,
        priority: Priority::Routine,
        in_reply_to: None,
        expires_at: None,
        case_ref: None,
    }
}

/// A send request with defaults.
pub fn msg(to: &str, kind: &str, body: &[u8]) -> SendRequest {
    SendRequest {
        to: NodeId::new(to).unwrap(),
        kind: kind.into(),
        body: body.to_vec(),
        priority: Priority::Routine,
        expires_in_ms: None,
        case_ref: None,
        in_reply_to: None,
    }
}

/// Counts a node's messages in a state, by direction.
pub async fn count_state(node: &Node, direction: &str, state: &str) -> usize {
    node.messages()
        .await
        .unwrap()
        .iter()
        .filter(|m| {
            serde_json::to_value(m.direction).unwrap() == direction
                && serde_json::to_value(&m.state).unwrap()["state"] == state
        })
        .count()
}

/// An address where every connection is refused (see [`Federation::closed_door`]).
pub struct ClosedDoor {
    endpoint: quinn::Endpoint,
    task: tokio::task::JoinHandle<()>,
}

impl ClosedDoor {
    /// Frees the address (the member can then be started there).
    pub async fn remove(self) {
        self.task.abort();
        let _ = self.task.await;
        self.endpoint.close(0u32.into(), b"");
        self.endpoint.wait_idle().await;
    }
}

/// A QUIC client with a member's credentials that sends raw frames.
pub struct RawPeer {
    pub conn: quinn::Connection,
    /// The client endpoint, for further connections with the same credentials and TLS
    /// configuration (and so the same session cache, were resumption on).
    pub endpoint: quinn::Endpoint,
}

impl RawPeer {
    /// Connects with explicit credentials (e.g. from another federation).
    pub async fn connect_with(
        ca: &Path,
        cert: &Path,
        key: &Path,
        roster: &Path,
        authority_hex: &str,
        addr: SocketAddr,
        name: &str,
    ) -> Result<Self> {
        Self::connect(ca, cert, key, roster, authority_hex, addr, name).await
    }

    async fn connect(
        ca: &Path,
        cert: &Path,
        key: &Path,
        roster: &Path,
        authority_hex: &str,
        addr: SocketAddr,
        name: &str,
    ) -> Result<Self> {
        let endpoint = Self::client(ca, cert, key, roster, authority_hex)?;
        let conn = endpoint.connect(addr, name)?.await?;
        Ok(Self { conn, endpoint })
    }

    /// A client endpoint with these credentials, the node's own TLS configuration, bound to
    /// loopback; it may open any number of connections.
    pub fn client(
        ca: &Path,
        cert: &Path,
        key: &Path,
        roster: &Path,
        authority_hex: &str,
    ) -> Result<quinn::Endpoint> {
        let tls = TlsMaterial::load(ca, cert, key)?;
        let auth: [u8; 32] = hex::decode(authority_hex)?.try_into().unwrap();
        let auth = liaison_protocol::PublicKey::from_bytes(&auth)?;
        let roster = SignedRoster::open(&std::fs::read(roster)?, &auth)?;
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        Ok(liaison_node::transport::endpoint(
            socket,
            &tls,
            RosterCell::new(roster),
            &liaison_node::config::DeliveryConfig::default(),
        )?)
    }

    /// Sends raw bytes on a new stream and returns the answer frame. A receiver that stops
    /// reading (an oversized frame) still answers: the answer is read even when writing
    /// was cut short.
    pub async fn exchange_bytes(&self, bytes: &[u8]) -> Result<Frame> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        match send.write_all(bytes).await {
            Ok(()) => send.finish()?,
            Err(quinn::WriteError::Stopped(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let answer = recv.read_to_end(1 << 20).await?;
        Ok(Frame::decode_exact(&answer, 1 << 20)?)
    }

    /// Sends a frame and returns the answer.
    pub async fn exchange(&self, frame: &Frame) -> Result<Frame> {
        self.exchange_bytes(&frame.to_bytes()).await
    }
}

/// An officer enrolled at a node, with a personal key, acting through the node's API.
pub struct Officer {
    pub node: Node,
    pub id: String,
    pub key: ed25519_dalek::SigningKey,
    pub credential: Vec<u8>,
}

impl Officer {
    /// Creates a key for `id` (derived from the id: tests are deterministic) and enrolls it.
    pub async fn enroll(node: &Node, id: &str, role: &str) -> Result<Self> {
        let key =
            ed25519_dalek::SigningKey::from_bytes(&liaison_protocol::Digest::of(id.as_bytes()).0);
        let view = node
            .enroll_officer(liaison_node::EnrollRequest {
                id: id.into(),
                name: format!("Officer {id}"),
                number: "000001".into(),
                unit: "test unit".into(),
                role: role.into(),
                public_key: hex::encode(key.verifying_key().to_bytes()),
            })
            .await?;
        use base64::Engine as _;
        let credential = base64::engine::general_purpose::STANDARD.decode(view.credential)?;
        Ok(Self {
            node: node.clone(),
            id: id.into(),
            key,
            credential,
        })
    }

    /// The action this officer would sign, with defaults (H0, purpose of the kind).
    pub fn action(&self, kind: &str, case_ref: &str, doc: Document) -> Action {
        let purpose =
            liaison_protocol::workflow::spec(kind).map_or("criminal_investigation", |s| s.purpose);
        let node = self.node.id().clone();
        let federation = self.node.roster().roster().federation.clone();
        Action {
            federation,
            node,
            kind: kind.into(),
            case_ref: case_ref.into(),
            at: self.node.now_ms(),
            purpose: purpose.into(),
            handling: Handling::H0,
            sensitivity: Vec::new(),
            retention_days: 365,
            abroad: false,
            document: doc,
            derived_from: Vec::new(),
            credential: Some(self.credential.clone()),
        }
    }

    /// Signs and submits an action.
    pub async fn submit(
        &self,
        action: &Action,
        to: &[&str],
    ) -> std::result::Result<liaison_node::ActResult, liaison_node::NodeError> {
        use base64::Engine as _;
        let signed = action.sign(&self.key);
        self.node
            .act(liaison_node::ActRequest {
                action: base64::engine::general_purpose::STANDARD.encode(signed.bytes()),
                to: to.iter().map(|t| NodeId::new(*t).unwrap()).collect(),
                priority: None,
                in_reply_to: None,
            })
            .await
    }

    /// Signs and submits a step with default handling.
    pub async fn act(
        &self,
        kind: &str,
        case_ref: &str,
        doc: Document,
        to: &[&str],
    ) -> std::result::Result<liaison_node::ActResult, liaison_node::NodeError> {
        self.submit(&self.action(kind, case_ref, doc), to).await
    }
}

/// The state of a case on a node (`"missing"` when the node does not hold it).
pub async fn case_state(node: &Node, case_ref: &str) -> String {
    node.case(case_ref)
        .await
        .unwrap()
        .map_or("missing".into(), |c| c.case.state.name().to_owned())
}

/// Audit entries of one kind on a node.
pub async fn entries_of(node: &Node, kind: liaison_protocol::audit::EntryKind) -> Vec<Vec<u8>> {
    node.log_entries(0, node.log_len())
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == kind)
        .map(|(_, e)| e.object)
        .collect()
}

/// A valid assistance request document.
pub fn assist_request_doc(action: &str, deadline: Option<u64>) -> Document {
    let mut d = Document::new()
        .with("request_no", "FJ-XC-2026-042")
        .with("case_no", "FJ-2026-0042")
        .with("action", action)
        .with(
            "subject",
            Document::new()
                .with("name", "ZHANG San")
                .with("sex", "male"),
        )
        .with(
            "legal_instruments",
            Field::List(vec![Field::Map(
                Document::new()
                    .with("type", "case_filing_decision")
                    .with("number", "FJ-LA-2026-117")
                    .with("sha256", "ab".repeat(32)),
            )]),
        )
        .with("case_summary", "identity of a suspect")
        .with("contact", "desk 3");
    if let Some(t) = deadline {
        d.set("deadline", t);
    }
    d
}
