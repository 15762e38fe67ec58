//! Witnessing over the bus (C2SP tlog-witness in spirit): a node submits its newest signed
//! checkpoint with a consistency proof to its peers; each peer checks it against the last
//! tree it cosigned for that log, updates that state atomically with the check, and answers
//! with a cosignature. An inconsistent checkpoint (a fork or a rollback) is refused and kept
//! as evidence: both signed notes, in the witness's own audit log.

use std::sync::Arc;
use std::time::Duration;

use liaison_protocol::audit::{EntryKind, conflict_record};
use liaison_protocol::merkle::{self, Hash};
use liaison_protocol::note::{MAX_NOTE_LEN, NoteSignature, SignedNote, cosign};
use liaison_protocol::{ErrorCode, Frame, NodeId};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::audit::Audit;
use crate::bus::hook::{AuditHook, HookFuture};
use crate::error::{NodeError, StoreError};
use crate::store::Witnessed;

/// Longest a witness exchange may take.
const WITNESS_TIMEOUT: Duration = Duration::from_secs(10);

/// What one witness said about our checkpoint.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WitnessOutcome {
    /// The witness.
    pub witness: String,
    /// Tree size submitted.
    pub size: u64,
    /// Cosigned, or why not.
    pub result: Result<u64, String>,
}

fn refused(reason: String) -> Frame {
    Frame::Error {
        code: ErrorCode::Refused,
        reason,
    }
}

impl Audit {
    /// As witness: a peer's WITNESS frame.
    pub(crate) async fn witness(
        &self,
        peer: &NodeId,
        old_size: u64,
        proof: &[Hash],
        checkpoint: &[u8],
    ) -> Frame {
        let note = match SignedNote::parse(checkpoint, MAX_NOTE_LEN) {
            Ok(n) => n,
            Err(e) => return refused(format!("checkpoint: {e}")),
        };
        let cp = match note.checkpoint() {
            Ok(c) => c,
            Err(e) => return refused(format!("checkpoint: {e}")),
        };
        let origin = format!("{peer}/log");
        if cp.origin() != origin {
            return refused(format!(
                "{peer} may only submit its own log ({origin}), not {}",
                cp.origin()
            ));
        }
        let roster = self.bus.roster.get();
        let member = match roster.roster().active_member(peer) {
            Ok(m) => m.clone(),
            Err(e) => return refused(e.to_string()),
        };
        if let Err(e) = note.verify_signature_by_any(&origin, member.log_keys()) {
            return refused(format!("checkpoint signed by the wrong key: {e}"));
        }
        let text = note.to_text();
        let now = self.now();
        enum Verdict {
            Cosign,
            Size(u64),
            Conflict(String),
        }
        let proof = proof.to_vec();
        let check_cp = cp.clone();
        // Checked and updated in one change, so two submissions cannot both pass.
        let verdict = self
            .bus.store
            .write(now, move |t| {
                let cp = check_cp;
                let proof = &proof;
                let known = t.witnessed(&origin)?;
                let known_size = known.as_ref().map_or(0, |w| w.size);
                // A signed checkpoint that contradicts what was cosigned is evidence whatever
                // size the log claims to start from.
                let contradiction = known.as_ref().and_then(|w| {
                    if cp.size() < w.size {
                        Some(format!(
                            "rollback: {origin} presents {} entries after {} were cosigned",
                            cp.size(),
                            w.size
                        ))
                    } else if cp.size() == w.size && cp.root() != &w.root {
                        Some(format!("fork: {origin} presents another tree of the cosigned size {}", w.size))
                    } else {
                        None
                    }
                });
                let problem = match (&known, contradiction) {
                    (_, Some(c)) => Some(c),
                    _ if old_size != known_size => return Ok(Verdict::Size(known_size)),
                    (Some(w), None) => merkle::verify_consistency(w.size, cp.size(), &w.root, cp.root(), proof)
                        .err()
                        .map(|e| {
                            format!(
                                "fork: {origin} at size {} is not consistent with size {} cosigned earlier ({e})",
                                cp.size(),
                                w.size
                            )
                        }),
                    (None, None) => None,
                };
                if let (Some(reason), Some(w)) = (problem, &known) {
                    t.log(
                        EntryKind::WitnessConflict,
                        conflict_record(&reason, w.note.as_bytes(), text.as_bytes()),
                    );
                    return Ok(Verdict::Conflict(reason));
                }
                t.put_witnessed(
                    &origin,
                    &Witnessed {
                        size: cp.size(),
                        root: *cp.root(),
                        note: text.clone(),
                    },
                );
                t.log(EntryKind::WitnessCosigned, text.clone().into_bytes());
                Ok(Verdict::Cosign)
            })
            .await;
        match verdict {
            Err(e) => Frame::Error {
                code: ErrorCode::Unavailable,
                reason: e.to_string(),
            },
            Ok(Verdict::Size(n)) => Frame::WitnessSize(n),
            Ok(Verdict::Conflict(reason)) => {
                error!(node = %self.bus.id, peer = %peer, %reason, "WITNESS CONFLICT: a peer's log is inconsistent with what this node cosigned; both signed checkpoints are kept in the audit log");
                *self
                    .conflicts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
                refused(reason)
            }
            Ok(Verdict::Cosign) => {
                let name = format!("{}/witness", self.bus.id);
                match cosign(&cp, &name, &self.bus.keys.witness.get(), now / 1000) {
                    Ok(sig) => Frame::Cosignature(sig.to_line().into_bytes()),
                    Err(e) => refused(format!("cannot cosign: {e}")),
                }
            }
        }
    }
}

impl Audit {
    /// As witness: a log asks (`WITNESS_SIZE` opening an exchange) how much of its log this
    /// node has cosigned. Answered from what is on disk.
    pub(crate) async fn witness_size_query(&self, peer: &NodeId) -> Frame {
        let origin = format!("{peer}/log");
        match self.bus.store.read(move |r| r.witnessed(&origin)).await {
            Ok(w) => Frame::WitnessSize(w.map_or(0, |w| w.size)),
            Err(e) => Frame::Error {
                code: ErrorCode::Unavailable,
                reason: e.to_string(),
            },
        }
    }
}

/// The refusal for a store that a witness knows to be behind.
fn behind(w: &NodeId, cosigned: u64, held: u64) -> NodeError {
    NodeError::Store(StoreError::BehindWitness {
        witness: w.to_string(),
        cosigned,
        held,
        last: cosigned.saturating_sub(1),
    })
}

/// The members that witness this node's log: its relay if it has one; otherwise every
/// active member not behind a relay, and those it relays for.
fn witnesses(r: &liaison_protocol::Roster, me: &NodeId) -> Vec<NodeId> {
    let my_relay = r.member(me).and_then(|m| m.via.clone());
    r.members
        .iter()
        .filter(|m| {
            let direct = match &my_relay {
                Some(relay) => m.id == *relay,
                None => m.via.is_none() || m.via.as_ref() == Some(me),
            };
            m.id != *me && m.is_active() && direct
        })
        .map(|m| m.id.clone())
        .collect()
}

impl Audit {
    /// At start, before serving: asks this node's witnesses how much of its log they have
    /// cosigned. A witness that holds more than the store does means the store went back in
    /// time (a restore of an older copy, a lost data directory): refused, naming the
    /// witness and the sizes. The witnesses this store knows to have cosigned are waited for
    /// up to `wait`; the others are asked in the background, and one that answers with more
    /// fails the store then. A witness that cannot be reached is logged and skipped.
    pub(crate) async fn check_witnesses(self: &Arc<Self>, wait: Duration) -> Result<(), NodeError> {
        let n = self.bus.log_len();
        let roster = self.bus.roster();
        let all = witnesses(roster.roster(), self.bus.id());
        let known: Vec<NodeId> = {
            let ids = all.clone();
            self.bus
                .store
                .read(move |r| {
                    let mut out = Vec::new();
                    for w in ids {
                        if r.cosigned_size(&w)? > 0 {
                            out.push(w);
                        }
                    }
                    Ok(out)
                })
                .await?
        };
        if !known.is_empty() && !wait.is_zero() {
            let mut asks = tokio::task::JoinSet::new();
            for w in known.clone() {
                let node = self.clone();
                asks.spawn(async move {
                    let r = tokio::time::timeout(wait, node.ask_size(&w, n)).await;
                    (w, r)
                });
            }
            while let Some(done) = asks.join_next().await {
                let Ok((w, r)) = done else { continue };
                match r {
                    Ok(Ok(s)) if s > n => return Err(behind(&w, s, n)),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        warn!(node = %self.bus.id(), witness = %w, error = %e, "cannot ask the witness what it cosigned")
                    }
                    Err(_) => {
                        warn!(node = %self.bus.id(), witness = %w, "witness did not answer within the start check")
                    }
                }
            }
        }
        // The others (all of them, for a new store) are asked without holding up the start,
        // once a connection shows they are up; one that holds more fails the store.
        let mut pending = self.size_checks.lock().unwrap_or_else(|p| p.into_inner());
        for w in all.into_iter().filter(|w| !known.contains(w)) {
            pending.insert(w, n);
        }
        Ok(())
    }

    /// Submits the newest checkpoint to every active, directly reachable member and stores
    /// the cosignatures that come back.
    pub(crate) async fn witness_round(&self) -> Result<Vec<WitnessOutcome>, NodeError> {
        // Rounds update the stored checkpoint note one cosignature at a time: one at a time.
        let _round = self.witness_round.lock().await;
        let note = self.checkpoint().await?;
        let roster = self.bus.roster();
        let me = self.bus.id().clone();
        let mut out = Vec::new();
        for w in witnesses(roster.roster(), &me) {
            let result = self.submit(&w, &note).await;
            if let Err(e) = &result {
                warn!(node = %me, witness = %w, error = %e, "checkpoint not cosigned");
            }
            out.push(WitnessOutcome {
                witness: w.to_string(),
                size: checkpoint_size(&note)?,
                result,
            });
        }
        Ok(out)
    }

    async fn submit(&self, witness: &NodeId, note_text: &str) -> Result<u64, String> {
        let inner = self;
        let size = checkpoint_size(note_text).map_err(|e| e.to_string())?;
        let conn = self.connect_to(witness).await?;
        let w = witness.clone();
        let mut known = inner
            .bus
            .store
            .read(move |r| r.cosigned_size(&w))
            .await
            .map_err(|e| e.to_string())?;
        let result = async {
            for _ in 0..2 {
                // When the witness cosigned more than this log now holds, there is no proof to
                // give: the witness will refuse, and keep both checkpoints as evidence.
                let proof = if known == 0 || known >= size {
                    Vec::new()
                } else {
                    let old = known;
                    inner
                        .bus
                        .store
                        .read(move |r| merkle::consistency_proof_with(&r.tree(), old, size))
                        .await
                        .map_err(|e| e.to_string())?
                };
                let frame = Frame::Witness {
                    old_size: known,
                    proof,
                    checkpoint: note_text.as_bytes().to_vec(),
                };
                let answer = tokio::time::timeout(
                    WITNESS_TIMEOUT,
                    crate::net::transport::exchange_once(&conn, &frame),
                )
                .await
                .map_err(|_| "no answer".to_owned())??;
                match answer {
                    Frame::WitnessSize(n) => known = n,
                    Frame::Cosignature(line) => {
                        return self.keep_cosignature(witness, size, &line).await;
                    }
                    Frame::Error { reason, .. } => return Err(reason),
                    other => return Err(format!("unexpected answer {other:?}")),
                }
            }
            Err("witness and log disagree on the last cosigned size".to_owned())
        }
        .await;
        conn.close(0u32.into(), b"done");
        result
    }

    async fn keep_cosignature(
        &self,
        witness: &NodeId,
        size: u64,
        line: &[u8],
    ) -> Result<u64, String> {
        let inner = self;
        let line = std::str::from_utf8(line).map_err(|e| e.to_string())?;
        let sig =
            NoteSignature::parse_line(line.trim_end_matches('\n')).map_err(|e| e.to_string())?;
        let key = inner
            .bus
            .roster
            .get()
            .roster()
            .member(witness)
            .map(|m| m.witness_keys().copied().collect::<Vec<_>>())
            .ok_or("witness left the roster")?;
        let name = format!("{witness}/witness");
        let w = witness.clone();
        // The stored note is read, cosigned and written back in one change, so cosignatures
        // that arrive together all stay.
        let time = inner
            .bus
            .store
            .write(self.now(), move |t| {
                let refused = |e: String| Ok(Err(e));
                let Some(stored) = t.checkpoint_at(size)? else {
                    return refused("checkpoint vanished".into());
                };
                let mut note = match SignedNote::parse(&stored, MAX_NOTE_LEN) {
                    Ok(n) => n,
                    Err(e) => return refused(e.to_string()),
                };
                if let Err(e) = note.add_signature(sig) {
                    return refused(e.to_string());
                }
                let time = match note.verify_cosignature_by_any(&name, &key) {
                    Ok(t) => t,
                    Err(e) => return refused(format!("cosignature refused: {e}")),
                };
                let text = note.to_text();
                t.put_checkpoint(size, &text);
                t.put_cosigned(&w, size);
                t.log(EntryKind::CheckpointCosigned, text.into_bytes());
                Ok::<_, StoreError>(Ok(time))
            })
            .await
            .map_err(|e| e.to_string())??;
        info!(node = %self.bus.id(), %witness, size, "checkpoint cosigned");
        Ok(time)
    }

    /// How many witness conflicts (forks, rollbacks) this node has seen since start.
    pub(crate) fn witness_conflicts(&self) -> u64 {
        *self
            .conflicts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn checkpoint_size(note: &str) -> Result<u64, NodeError> {
    SignedNote::parse(note, MAX_NOTE_LEN)
        .and_then(|n| n.checkpoint())
        .map(|c| c.size())
        .map_err(|e| NodeError::Invalid(e.to_string()))
}

impl Audit {
    /// A connection with `peer` is up: if it is a witness not yet asked since start, ask it
    /// now, over `conn` when this node dialled it (a witness answers streams only on the
    /// connections it accepted), or over a fresh connection.
    pub(crate) fn on_connected(self: &Arc<Self>, peer: &NodeId, conn: Option<quinn::Connection>) {
        let due = self
            .size_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
        let Some(n) = due else { return };
        let node = self.clone();
        let w = peer.clone();
        self.bus.tasks.spawn(async move {
            let ask = async {
                match conn {
                    Some(c) => match crate::net::transport::exchange_once(&c, &Frame::WitnessSize(n)).await?
                    {
                        Frame::WitnessSize(s) => Ok(s),
                        Frame::Error { reason, .. } => Err(reason),
                        other => Err(format!("unexpected answer {other:?}")),
                    },
                    None => node.ask_size(&w, n).await,
                }
            };
            let asked = tokio::select! {
                r = tokio::time::timeout(WITNESS_TIMEOUT, ask) => r,
                () = node.bus.cancel.cancelled() => return,
            };
            // Compared with the log as it is now: a witness never holds more of it than this
            // node committed, unless the store lost what it had.
            let held = node.bus.store.log_len().max(n);
            if node
                .no_self_check
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return;
            }
            match asked {
                Ok(Ok(s)) if s > held => {
                    let e = behind(&w, s, held).to_string();
                    error!(node = %node.bus.id, %e, "STORE WENT BACK IN TIME");
                    node.bus.store.fail(e);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    warn!(node = %node.bus.id, witness = %w, error = %e, "cannot ask the witness what it cosigned");
                }
                Err(_) => warn!(node = %node.bus.id, witness = %w, "witness did not answer what it cosigned"),
            }
        });
    }

    /// Asks one witness (`WITNESS_SIZE` query) how much of this node's log it cosigned.
    async fn ask_size(&self, witness: &NodeId, ours: u64) -> Result<u64, String> {
        let conn = self.connect_to(witness).await?;
        let answer = crate::net::transport::exchange_once(&conn, &Frame::WitnessSize(ours)).await;
        conn.close(0u32.into(), b"done");
        match answer? {
            Frame::WitnessSize(s) => Ok(s),
            Frame::Error { reason, .. } => Err(reason),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// A fresh connection to a member (its first endpoint).
    async fn connect_to(&self, member: &NodeId) -> Result<quinn::Connection, String> {
        let inner = self;
        let m = inner
            .bus
            .roster
            .get()
            .roster()
            .active_member(member)
            .map_err(|e| e.to_string())?
            .clone();
        let addr = m
            .endpoints
            .first()
            .ok_or("no endpoint")?
            .parse::<std::net::SocketAddr>()
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(WITNESS_TIMEOUT, inner.bus.dial(addr, member.as_str())?)
            .await
            .map_err(|_| "handshake timed out".to_owned())?
            .map_err(|e| e.to_string())
    }
}

impl AuditHook for Audit {
    fn witness<'a>(
        &'a self,
        peer: &'a NodeId,
        old_size: u64,
        proof: &'a [Hash],
        checkpoint: &'a [u8],
    ) -> HookFuture<'a, Frame> {
        Box::pin(Self::witness(self, peer, old_size, proof, checkpoint))
    }

    fn witness_size_query<'a>(&'a self, peer: &'a NodeId) -> HookFuture<'a, Frame> {
        Box::pin(Self::witness_size_query(self, peer))
    }

    fn on_connected(self: Arc<Self>, peer: &NodeId, conn: Option<quinn::Connection>) {
        Self::on_connected(&self, peer, conn);
    }
}
