//! The local API: JSON lines over a Unix socket in the data directory (mode 0600, so only the
//! node's operator account can use it). One request per line, one response per line:
//! `{"ok": true, "result": …}` or `{"ok": false, "error": "…"}`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

use crate::bus::SendRequest;
use crate::cases::{ActRequest, EnrollRequest};
use crate::error::NodeError;
use crate::node::Node;

/// Longest request line.
const MAX_REQUEST: usize = 64 * 1024 * 1024;

/// A request to the local API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Node id, roster serial, log size, peers.
    Status,
    /// The roster in force: its members with status, keys and endpoints, and the signed
    /// roster bytes (base64) for an auditor.
    Roster,
    /// Sign and queue a message.
    Send(SendRequest),
    /// Messages not yet taken by the application.
    Inbox {
        /// At most this many.
        #[serde(default = "default_limit")]
        limit: usize,
        /// Include bodies (base64).
        #[serde(default)]
        body: bool,
    },
    /// Mark an inbox entry as taken.
    Ack {
        /// Inbox sequence.
        seq: u64,
    },
    /// Every message sent, received or relayed.
    Messages,
    /// One message by id or digest.
    Message {
        /// Message id or digest (hex).
        id: String,
    },
    /// Per-peer queue state.
    Peers,
    /// Apply a newer signed roster (base64).
    ApplyRoster {
        /// The signed roster, base64.
        roster: String,
    },
    /// Recompute and check the whole audit log.
    AuditVerify,
    /// Sign (if the log grew) and return the newest checkpoint.
    AuditCheckpoint,
    /// Two stored checkpoints and the consistency proof between them.
    AuditConsistency {
        /// The older tree size.
        old: u64,
        /// The newer tree size.
        new: u64,
    },
    /// An evidence bundle (base64) for an entry index or a message id.
    AuditProve {
        /// Entry index (decimal) or message id (hex).
        target: String,
    },
    /// One bundle (base64) with every entry about a case, with proofs and the roster.
    CaseEvidence {
        /// Case reference.
        case_ref: String,
        /// For a court: H1 records of other providers only with their permission.
        #[serde(default)]
        for_court: bool,
    },
    /// Submit the newest checkpoint to the peers for cosigning now.
    AuditWitness,
    /// Enroll an officer (the node signs a credential for the officer's key).
    EnrollOfficer(EnrollRequest),
    /// Revoke an officer.
    RevokeOfficer {
        /// Officer id.
        id: String,
    },
    /// Officers enrolled here.
    Officers,
    /// Check and carry out an officer-signed action.
    Act(ActRequest),
    /// Every case this node holds (state only).
    Cases,
    /// One case with its timeline.
    Case {
        /// Case reference.
        case_ref: String,
    },
    /// This node's figures for an annual report.
    AnnualFigures {
        /// Calendar year.
        year: i32,
    },
    /// Check deadlines and alert radii now.
    CaseTick,
    /// Write a backup of the running node (store, keys, certificates, config) to a new file.
    Backup {
        /// Where: a path the node may write (absolute, or relative to its data directory).
        out: PathBuf,
    },
    /// Stop the node gracefully.
    Shutdown,
}

fn default_limit() -> usize {
    100
}

/// Starts serving the API on `path`.
pub fn spawn_server(node: Node, path: PathBuf) -> Result<(), NodeError> {
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let tasks = node.inner.tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = node.cancelled() => break,
            };
            match accepted {
                Ok((stream, _)) => {
                    let node = node.clone();
                    node.inner.tasks.clone().spawn(serve(node, stream));
                }
                Err(e) => warn!(error = %e, "API accept failed"),
            }
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

async fn serve(node: Node, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // The cap applies while reading: a request line longer than it is never held whole.
        let mut limited = (&mut reader).take(MAX_REQUEST as u64 + 1);
        let read = tokio::select! {
            n = limited.read_until(b'\n', &mut buf) => n,
            () = node.cancelled() => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if buf.len() > MAX_REQUEST {
            let out = json!({"ok": false, "error": format!("request over {MAX_REQUEST} bytes")});
            let _ = w.write_all(format!("{out}\n").as_bytes()).await;
            break;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let response = {
            match serde_json::from_slice::<Request>(line) {
                Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
                Ok(req) => match handle(&node, req).await {
                    Ok(v) => json!({"ok": true, "result": v}),
                    Err(e) => json!({"ok": false, "error": e.to_string()}),
                },
            }
        };
        let mut out = response.to_string();
        out.push('\n');
        if w.write_all(out.as_bytes()).await.is_err() {
            break;
        }
    }
}

/// Runs one request against a node (also used in-process by the CLI's demo and tests).
pub async fn handle(node: &Node, req: Request) -> Result<Value, NodeError> {
    let to_json =
        |v: Result<Value, serde_json::Error>| v.map_err(|e| NodeError::Invalid(e.to_string()));
    match req {
        Request::Status => {
            // A failed store still lets the node say so (and what else it knows).
            let cases = node.cases().await.ok();
            let overdue = cases
                .as_ref()
                .map(|c| c.iter().filter(|c| c.overdue).count());
            let [sk, lk, wk] = node.signing_keys();
            let keys_in_use = json!({"signing": hex::encode(sk.to_bytes()),
                "log": hex::encode(lk.to_bytes()), "witness": hex::encode(wk.to_bytes())});
            Ok(json!({
                "node": node.id(),
                "cases": cases.as_ref().map(Vec::len),
                "overdue_cases": overdue,
                "federation": node.roster().roster().federation,
                "roster_serial": node.roster().roster().serial,
                "roster_valid_until": node.roster().roster().valid_until,
                "roster_standing": node.roster_standing(),
                "tls_not_after": node.tls_expiry().map(|(end, _)| end),
                "tls_renew_now": node.tls_expiry().map(|(_, soon)| soon),
                "tls_spki_sha256": node.tls_spki().map(hex::encode),
                "keys_in_use": keys_in_use,
                "log_entries": node.log_len(),
                "store_failure": node.store_failure(),
                "store": node.store_stats(),
                "witness_conflicts": node.witness_conflicts(),
                "listen": node.local_addr()?.to_string(),
                "peers": node.peers(),
                "inbound_connections": node.inbound_connections(),
                "handshakes_in_progress": node.handshakes_in_progress(),
            }))
        }
        Request::Roster => {
            let signed = node.roster();
            let r = signed.roster();
            let members: Vec<Value> = r
                .members
                .iter()
                .map(|m| {
                    json!({
                        "id": m.id,
                        "agency": m.agency,
                        "name": m.name,
                        "country": m.country,
                        "division": m.division,
                        "status": match m.status {
                            liaison_protocol::MemberStatus::Active => "active",
                            liaison_protocol::MemberStatus::Suspended => "suspended",
                            liaison_protocol::MemberStatus::Revoked => "revoked",
                        },
                        "endpoints": m.endpoints,
                        "via": m.via,
                        "location": m.location,
                        "signing_key": hex::encode(m.signing_key.to_bytes()),
                        "log_key": hex::encode(m.log_key.to_bytes()),
                        "witness_key": hex::encode(m.witness_key.to_bytes()),
                        "tls_spki_sha256": hex::encode(m.tls_spki_sha256),
                        "tls_cert_pem": m.tls_cert.as_ref().map(|der| {
                            let b64 = base64::Engine::encode(
                                &base64::engine::general_purpose::STANDARD,
                                der,
                            );
                            let lines: Vec<&str> = b64
                                .as_bytes()
                                .chunks(64)
                                .filter_map(|c| std::str::from_utf8(c).ok())
                                .collect();
                            format!(
                                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                                lines.join("\n")
                            )
                        }),
                        "previous": m.previous.as_ref().map(|p| json!({
                            "signing_key": p.signing_key.map(|k| hex::encode(k.to_bytes())),
                            "log_key": p.log_key.map(|k| hex::encode(k.to_bytes())),
                            "witness_key": p.witness_key.map(|k| hex::encode(k.to_bytes())),
                            "tls_spki_sha256": p.tls_spki_sha256.map(hex::encode),
                            "until_ms": p.until_ms,
                        })),
                    })
                })
                .collect();
            Ok(json!({
                "federation": r.federation,
                "serial": r.serial,
                "issued_at": r.issued_at,
                "dev": r.dev,
                "max_body_len": r.max_body_len,
                "policy_rules": r.rules.len(),
                "members": members,
                "signed_roster": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, signed.bytes()),
            }))
        }
        Request::Send(s) => to_json(serde_json::to_value(node.send(s).await?)),
        Request::Inbox { limit, body } => {
            to_json(serde_json::to_value(node.inbox(limit, body).await?))
        }
        Request::Ack { seq } => to_json(serde_json::to_value(node.ack(seq).await?)),
        Request::Messages => to_json(serde_json::to_value(node.messages().await?)),
        Request::Message { id } => match node.message(&id).await? {
            Some(m) => to_json(serde_json::to_value(m)),
            None => Err(NodeError::Invalid(format!("no message {id} on this node"))),
        },
        Request::Peers => to_json(serde_json::to_value(node.peers())),
        Request::ApplyRoster { roster } => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(roster.trim())
                .map_err(|e| NodeError::Invalid(format!("roster is not base64: {e}")))?;
            Ok(json!({"serial": node.apply_roster(&bytes).await?}))
        }
        Request::AuditVerify => to_json(serde_json::to_value(node.audit_verify().await?)),
        Request::AuditCheckpoint => Ok(json!({"checkpoint": node.checkpoint().await?})),
        Request::AuditProve { target } => {
            use base64::Engine as _;
            let index = match target.parse::<u64>() {
                Ok(i) => i,
                Err(_) => {
                    let id = liaison_protocol::MessageId::from_hex(&target)?;
                    node.entry_of_message(&id).await?.ok_or_else(|| {
                        NodeError::Invalid(format!("no audit entry records message {target}"))
                    })?
                }
            };
            let bundle = node.prove(index).await?;
            Ok(json!({
                "index": index,
                "bundle": base64::engine::general_purpose::STANDARD.encode(bundle.encode()),
            }))
        }
        Request::AuditConsistency { old, new } => {
            use base64::Engine as _;
            let c = node.consistency(old, new).await?;
            Ok(json!({
                "old": old,
                "new": new,
                "proof_hashes": c.proof.len(),
                "bundle": base64::engine::general_purpose::STANDARD.encode(c.encode()),
            }))
        }
        Request::CaseEvidence {
            case_ref,
            for_court,
        } => {
            use base64::Engine as _;
            let bundle = node.case_evidence(&case_ref, for_court).await?;
            let withheld: Vec<_> = bundle
                .withheld
                .iter()
                .map(|w| json!({"message_id": w.message.to_hex(), "provider": w.provider, "reason": w.reason}))
                .collect();
            Ok(json!({
                "case_ref": case_ref,
                "for_court": for_court,
                "entries": bundle.bundles.len(),
                "records": bundle.records.len(),
                "permissions": bundle.permissions.len(),
                "withheld": withheld,
                "bundle": base64::engine::general_purpose::STANDARD.encode(bundle.encode()),
            }))
        }
        Request::AuditWitness => to_json(serde_json::to_value(node.witness_round().await?)),
        Request::EnrollOfficer(r) => to_json(serde_json::to_value(node.enroll_officer(r).await?)),
        Request::RevokeOfficer { id } => {
            to_json(serde_json::to_value(node.revoke_officer(&id).await?))
        }
        Request::Officers => to_json(serde_json::to_value(node.officers().await?)),
        Request::Act(r) => to_json(serde_json::to_value(node.act(r).await?)),
        Request::Cases => to_json(serde_json::to_value(node.cases().await?)),
        Request::Case { case_ref } => match node.case(&case_ref).await? {
            Some(c) => to_json(serde_json::to_value(c)),
            None => Err(NodeError::Invalid(format!(
                "no case {case_ref} on this node (see `liaison case list`)"
            ))),
        },
        Request::AnnualFigures { year } => {
            to_json(serde_json::to_value(node.annual_figures(year).await?))
        }
        Request::CaseTick => {
            node.case_tick().await?;
            Ok(json!("checked"))
        }
        Request::Backup { out } => to_json(serde_json::to_value(node.backup(out).await?)),
        Request::Shutdown => {
            let n = node.clone();
            tokio::spawn(async move { n.shutdown().await });
            Ok(json!("shutting down"))
        }
    }
}

/// A client of the local API.
#[derive(Debug)]
pub struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    w: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    /// Connects to a node's API socket.
    pub async fn connect(path: &Path) -> Result<Self, NodeError> {
        let stream = UnixStream::connect(path).await.map_err(|e| {
            NodeError::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "cannot reach the node's API at {} ({e}); is the node running? \
                     start it with `liaison node start --config <node.toml>`",
                    path.display()
                ),
            ))
        })?;
        let (r, w) = stream.into_split();
        Ok(Self {
            lines: BufReader::new(r).lines(),
            w,
        })
    }

    /// Sends a request and returns the result or the node's error.
    pub async fn call(&mut self, req: &Request) -> Result<Value, NodeError> {
        let mut line = serde_json::to_string(req).map_err(|e| NodeError::Invalid(e.to_string()))?;
        line.push('\n');
        self.w.write_all(line.as_bytes()).await?;
        let resp = self
            .lines
            .next_line()
            .await?
            .ok_or_else(|| NodeError::Invalid("the node closed the API connection".into()))?;
        let v: Value =
            serde_json::from_str(&resp).map_err(|e| NodeError::Invalid(e.to_string()))?;
        if v["ok"] == Value::Bool(true) {
            Ok(v["result"].clone())
        } else {
            Err(NodeError::Invalid(
                v["error"].as_str().unwrap_or("unknown error").to_owned(),
            ))
        }
    }
}
