//! Case workflows at the node: officers enrolled here, officer-signed actions, case state,
//! handling rules, deadlines and alert fan-out.
//!
//! An officer's tool signs an action (protocol `action`) and submits it over the local API.
//! The node checks, in order: the signatures (officer key against the credential, credential
//! against this node's key), that the officer is enrolled here and not revoked, the role, the
//! signing time, the purpose, the recipients (roster policy, the abroad flag, onward passing
//! of H2 material) and the case's state machine. Only then does it seal one envelope per
//! recipient, and it writes the envelopes, the officer-action entry, the state-change entry
//! and the new case state in one store batch. Every refusal is an audit entry with its reason
//! and changes nothing else.
//!
//! The receiving node runs the same checks on the body before it issues a receipt: a step
//! that does not verify or that its copy of the case refuses gets a signed rejection.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use liaison_protocol::action::{Action, Handling, Officer, SignedAction};
use liaison_protocol::audit::{EntryKind, action_record, event_record, state_change_record};
use liaison_protocol::document::Document;
use liaison_protocol::workflow::{
    self, Case, KindSpec, Role, State, Step, Workflow, WorkflowError,
};
use liaison_protocol::{Envelope, MessageId, NodeId, Priority, PublicKey};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{NodeError, StoreError};
use crate::node::{Inner, Node, SendResult, stage_outgoing};
use crate::store::{
    CaseIndex, CaseRecord, Direction, LocalAction, OfficerRecord, Queued, Reader, TimelineEntry,
    Txn,
};

/// Enroll an officer (operator request).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// Officer id, e.g. `cn-35-psb/wang.li`.
    pub id: String,
    /// Full name.
    pub name: String,
    /// Police or staff number.
    pub number: String,
    /// Unit.
    pub unit: String,
    /// Role: investigator, registrar, border_officer, foreign_liaison, supervisor.
    pub role: String,
    /// The officer's Ed25519 public key, hex.
    pub public_key: String,
}

/// An officer as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfficerView {
    /// Officer id.
    pub id: String,
    /// Full name.
    pub name: String,
    /// Police or staff number.
    pub number: String,
    /// Unit.
    pub unit: String,
    /// Role.
    pub role: String,
    /// Public key, hex.
    pub public_key: String,
    /// Enrolled at, Unix ms.
    pub enrolled_at: u64,
    /// Revoked at, Unix ms.
    pub revoked_at: Option<u64>,
    /// The node-signed credential (base64) the officer's tool embeds in actions.
    pub credential: String,
}

/// Submit an officer-signed action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActRequest {
    /// The signed action (base64).
    pub action: String,
    /// Recipients; empty for local steps, and for alerts (the node picks the units within
    /// the radius) and alert updates (every unit alerted so far).
    #[serde(default)]
    pub to: Vec<NodeId>,
    /// Priority lane; the kind's default when absent.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// The message this step answers (hex id).
    #[serde(default)]
    pub in_reply_to: Option<String>,
}

/// What an accepted action did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActResult {
    /// Case reference.
    pub case_ref: String,
    /// Kind.
    pub kind: String,
    /// State after the step.
    pub state: State,
    /// Deadline after the step.
    pub deadline: Option<u64>,
    /// Digest of the signed action (hex).
    pub action: String,
    /// One message per recipient (none for local steps).
    pub messages: Vec<SendResult>,
}

/// A case with its timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseView {
    /// The state machine's state.
    pub case: Case,
    /// Every step.
    pub timeline: Vec<TimelineEntry>,
    /// Alerts: the units reached so far.
    pub alerted: Vec<NodeId>,
}

/// Why a receiving node does not take a case step now.
#[derive(Debug)]
pub(crate) enum StepRefusal {
    /// For good: a signed rejection receipt goes back.
    Final(String),
    /// The step it follows has not arrived yet: the sender retries.
    NotYet(String),
}

/// A case step that passed the receiving node's checks, to be stored with the message.
#[derive(Debug)]
pub(crate) struct CaseUpdate {
    pub(crate) case_ref: String,
    pub(crate) record: CaseRecord,
    pub(crate) state_change: Option<Vec<u8>>,
    /// The revision of the record the step was checked against (None: no case yet).
    pub(crate) base_rev: Option<u64>,
}

/// An active alert is looked at again this often even when its radius does not grow: a
/// widening that failed, a unit reachable again.
const ALERT_RECHECK_MS: u64 = 60_000;

/// Most due cases one tick looks at (the rest wait for the next tick).
const TICK_BATCH: usize = 1024;

/// How often a decision on a case that moved meanwhile is taken again.
const CONFLICT_RETRIES: usize = 4;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn officer_label(o: &Officer) -> String {
    format!(
        "{} ({}, no. {}, {})",
        o.name,
        o.role.name(),
        o.number,
        o.unit
    )
}

impl OfficerView {
    fn of(rec: &OfficerRecord, roster: &liaison_protocol::Roster) -> Result<Self, NodeError> {
        let (o, _) = Officer::open(&rec.credential, roster)
            .map_err(|e| NodeError::Invalid(format!("stored credential does not verify: {e}")))?;
        Ok(Self {
            id: o.id,
            name: o.name,
            number: o.number,
            unit: o.unit,
            role: o.role.name().to_owned(),
            public_key: hex::encode(o.key.to_bytes()),
            enrolled_at: o.enrolled_at,
            revoked_at: rec.revoked_at,
            credential: b64().encode(&rec.credential),
        })
    }
}

impl Node {
    /// Enrolls an officer: the node signs a credential for the officer's key.
    pub async fn enroll_officer(&self, req: EnrollRequest) -> Result<OfficerView, NodeError> {
        self.inner.enroll_officer(req).await
    }

    /// Revokes an officer: their actions are refused from now on.
    pub async fn revoke_officer(&self, id: &str) -> Result<OfficerView, NodeError> {
        self.inner.revoke_officer(id).await
    }

    /// Every officer enrolled here.
    pub async fn officers(&self) -> Result<Vec<OfficerView>, NodeError> {
        let roster = self.inner.roster.get();
        self.inner
            .store
            .read(|r| r.officers())
            .await?
            .iter()
            .map(|(_, r)| OfficerView::of(r, roster.roster()))
            .collect()
    }

    /// Checks and carries out an officer-signed action.
    pub async fn act(&self, req: ActRequest) -> Result<ActResult, NodeError> {
        self.inner.act(req).await
    }

    /// Every case this node holds.
    pub async fn cases(&self) -> Result<Vec<Case>, NodeError> {
        Ok(self
            .inner
            .store
            .read(|r| r.cases())
            .await?
            .into_iter()
            .map(|(_, r)| r.case)
            .collect())
    }

    /// One case with its timeline.
    pub async fn case(&self, case_ref: &str) -> Result<Option<CaseView>, NodeError> {
        let cr = case_ref.to_owned();
        Ok(self
            .inner
            .store
            .read(move |r| r.case(&cr))
            .await?
            .map(|r| CaseView {
                case: r.case,
                timeline: r.timeline,
                alerted: r.alerted,
            }))
    }

    /// This node's figures for an annual report.
    pub async fn annual_figures(&self, year: i32) -> Result<Document, NodeError> {
        let cases = self.cases().await?;
        workflow::annual_figures(&cases, &self.inner.id, year, self.now())
            .map_err(|e| NodeError::Invalid(e.to_string()))
    }

    /// Checks every case's deadlines and alert radii now (the ticker looks only at the
    /// cases whose time has come, every `tick_ms`).
    pub async fn case_tick(&self) -> Result<(), NodeError> {
        self.inner.case_tick(self.now(), true).await
    }

    pub(crate) fn spawn_case_ticker(&self, tick_ms: u64) {
        let node = self.clone();
        let mut ticker = node
            .inner
            .clock
            .ticker(Duration::from_millis(tick_ms.max(50)));
        self.inner.tasks.spawn(async move {
            loop {
                let all = tokio::select! {
                    _ = ticker.tick() => false,
                    // New members may be within an active alert's radius.
                    () = node.inner.roster_changed.notified() => true,
                    () = node.inner.cancel.cancelled() => break,
                };
                if let Err(e) = node.inner.case_tick(node.now(), all).await {
                    warn!(node = %node.inner.id, error = %e, "cannot check case deadlines");
                }
            }
        });
    }
}

/// Why an action is refused, decided under the case lock and logged after it is released.
enum Refuse {
    /// An audit entry of this kind with the reason (and the action's digest).
    Audit(EntryKind, String),
    /// The roster's policy refuses sending to this recipient (logged as `refused_by_policy`).
    Policy(liaison_protocol::PolicyError, NodeId),
    /// Not audited.
    Fail(NodeError),
}

impl From<StoreError> for Refuse {
    fn from(e: StoreError) -> Self {
        Self::Fail(e.into())
    }
}

impl From<NodeError> for Refuse {
    fn from(e: NodeError) -> Self {
        Self::Fail(e)
    }
}

/// What an accepted action writes, decided under the case lock.
struct Decision {
    /// Permissions the step relies on, checked again in its change.
    grants: Vec<Grant>,
    hops: Vec<NodeId>,
    envelopes: Vec<Envelope>,
    record: CaseRecord,
    case: Case,
    base_rev: Option<u64>,
    state_change: Option<Vec<u8>>,
    logged: Vec<u8>,
}

impl Inner {
    async fn enroll_officer(&self, req: EnrollRequest) -> Result<OfficerView, NodeError> {
        let id = liaison_protocol::action::officer_id(&req.id)?;
        let role = Role::parse(&req.role).ok_or_else(|| {
            NodeError::Invalid(format!(
                "unknown role {:?}: use one of {}",
                req.role,
                Role::ALL.map(Role::name).join(", ")
            ))
        })?;
        for (what, v) in [
            ("name", &req.name),
            ("number", &req.number),
            ("unit", &req.unit),
        ] {
            if v.trim().is_empty() || v.len() > 200 {
                return Err(NodeError::Invalid(format!(
                    "officer {what} must be 1-200 bytes"
                )));
            }
        }
        let key = <[u8; 32]>::try_from(hex::decode(req.public_key.trim()).unwrap_or_default())
            .map_err(|_| NodeError::Invalid("public key must be 64 hex digits".into()))?;
        let key = PublicKey::from_bytes(&key)?;
        let now = self.now();
        let officer = Officer {
            federation: self.federation.clone(),
            node: self.id.clone(),
            id: id.clone(),
            name: req.name,
            number: req.number,
            unit: req.unit,
            role,
            key,
            enrolled_at: now,
        };
        let rec = OfficerRecord {
            credential: officer.certify(&self.signing).bytes().to_vec(),
            revoked_at: None,
        };
        let stored = rec.clone();
        let enrolled = self
            .store
            .write(now, move |t| {
                // Checked in the change that writes: two enrollments cannot both pass.
                if t.officer(&id)?.is_some_and(|old| old.revoked_at.is_none()) {
                    return Ok(Err(id));
                }
                t.put_officer(&id, &stored);
                t.log(EntryKind::KeyChanged, stored.credential.clone());
                Ok(Ok(()))
            })
            .await?;
        if let Err(id) = enrolled {
            return Err(NodeError::Invalid(format!(
                "officer {id} is already enrolled; revoke first to change the key or role"
            )));
        }
        OfficerView::of(&rec, self.roster.get().roster())
    }

    async fn revoke_officer(&self, id: &str) -> Result<OfficerView, NodeError> {
        let now = self.now();
        let oid = id.to_owned();
        let entry = event_record(&format!("officer {id} revoked"), None, None, None);
        let revoked = self
            .store
            .write(now, move |t| {
                let Some(mut rec) = t.officer(&oid)? else {
                    return Ok(Err(format!("no officer {oid} is enrolled here")));
                };
                if rec.revoked_at.is_some() {
                    return Ok(Err(format!("officer {oid} is already revoked")));
                }
                rec.revoked_at = Some(now);
                t.put_officer(&oid, &rec);
                t.log(EntryKind::KeyChanged, entry);
                Ok(Ok(rec))
            })
            .await?;
        let rec = revoked.map_err(NodeError::Invalid)?;
        OfficerView::of(&rec, self.roster.get().roster())
    }

    /// Logs a refused action and returns the error for the caller.
    async fn refuse(
        &self,
        now: u64,
        kind: EntryKind,
        reason: String,
        action: Option<&SignedAction>,
    ) -> NodeError {
        let reason = crate::node::truncate(&reason, 1000);
        warn!(node = %self.id, %reason, "action refused");
        let digest = action.map(SignedAction::digest);
        let rec = event_record(&reason, None, digest.as_ref().map(|d| &d.0), None);
        if let Err(e) = self
            .store
            .write(now, move |t| {
                t.log(kind, rec);
                Ok(())
            })
            .await
        {
            return e.into();
        }
        NodeError::Refused(reason)
    }

    pub(crate) async fn act(self: &Arc<Self>, req: ActRequest) -> Result<ActResult, NodeError> {
        if self.cancel.is_cancelled() {
            return Err(NodeError::ShuttingDown);
        }
        let now = self.now();
        let bytes = b64()
            .decode(req.action.as_bytes())
            .map_err(|_| NodeError::Invalid("action is not base64".into()))?;
        let roster = self.roster.get();
        let signed = match SignedAction::open(&bytes, roster.roster()) {
            Ok(s) => s,
            Err(e) => {
                let reason = format!("action does not verify: {e}");
                return Err(self.refuse(now, EntryKind::Rejected, reason, None).await);
            }
        };
        let refused = |reason: String| self.refuse(now, EntryKind::Rejected, reason, Some(&signed));
        let a = signed.action();
        if a.node != self.id {
            return Err(refused(format!(
                "the action is for node {}, this is {}",
                a.node, self.id
            ))
            .await);
        }
        let Some(officer) = signed.officer() else {
            return Err(refused(
                "actions submitted here must be signed by an officer enrolled at this node".into(),
            )
            .await);
        };
        let oid = officer.id.clone();
        match self.store.peek(move |r| r.officer(&oid)).await? {
            None => {
                return Err(refused(format!(
                    "officer {} is not enrolled at {} (an operator enrolls officers with \
                     `liaison officer enroll`)",
                    officer.id, self.id
                ))
                .await);
            }
            Some(rec) if Some(&rec.credential) != a.credential.as_ref() => {
                return Err(refused(format!(
                    "the credential in the action is not officer {}'s current enrollment here",
                    officer.id
                ))
                .await);
            }
            Some(OfficerRecord {
                revoked_at: Some(at),
                ..
            }) => {
                return Err(refused(format!("officer {} was revoked at {at}", officer.id)).await);
            }
            Some(_) => {}
        }
        let spec = match workflow::check_role(&a.kind, officer.role) {
            Ok(s) => s,
            Err(e) => return Err(refused(e.to_string()).await),
        };
        let skew = self.cfg.max_skew_ms;
        if a.at > now.saturating_add(skew) || now.saturating_sub(a.at) > self.wf.max_action_age_ms {
            return Err(refused(format!(
                "the action was signed at {} but the node's clock says {now}: sign it again",
                a.at
            ))
            .await);
        }
        if a.purpose != spec.purpose {
            return Err(refused(format!(
                "{} serves the purpose {}, not {}",
                a.kind, spec.purpose, a.purpose
            ))
            .await);
        }
        let label = officer_label(officer);
        self.submit(signed.clone(), spec, req, Some(label), "sent")
            .await
    }

    /// Everything after the officer checks: recipients, handling, state machine, sealing,
    /// one store change, queueing. Also used for the node's automatic steps. Decided under
    /// the case's lock; decided again when the case moved meanwhile (a receipt for one of
    /// its steps was recorded between the read and the write).
    async fn submit(
        self: &Arc<Self>,
        signed: SignedAction,
        spec: &'static KindSpec,
        req: ActRequest,
        officer: Option<String>,
        direction: &str,
    ) -> Result<ActResult, NodeError> {
        let mut tries = 0;
        loop {
            match self
                .submit_once(&signed, spec, &req, officer.clone(), direction)
                .await
            {
                Err(NodeError::Store(StoreError::Conflict(_))) if tries < CONFLICT_RETRIES => {
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    async fn submit_once(
        self: &Arc<Self>,
        signed: &SignedAction,
        spec: &'static KindSpec,
        req: &ActRequest,
        officer: Option<String>,
        direction: &str,
    ) -> Result<ActResult, NodeError> {
        let now = self.now();
        let a = signed.action().clone();
        let guard = self.case_locks.lock(&a.case_ref).await;
        let d = match self
            .decide(signed, spec, req, officer, direction, now)
            .await
        {
            Ok(d) => d,
            Err(refusal) => {
                // Refusals are logged after the lock is released: never a flush under it.
                drop(guard);
                return Err(match refusal {
                    Refuse::Audit(kind, reason) => {
                        self.refuse(now, kind, reason, Some(signed)).await
                    }
                    Refuse::Policy(e, to) => {
                        let rec = event_record(&e.to_string(), Some(to.as_str()), None, None);
                        if let Err(se) = self
                            .store
                            .write(now, move |t| {
                                t.log(EntryKind::RefusedByPolicy, rec);
                                Ok(())
                            })
                            .await
                        {
                            return Err(se.into());
                        }
                        NodeError::Policy(e)
                    }
                    Refuse::Fail(e) => e,
                });
            }
        };
        let Decision {
            grants,
            hops,
            envelopes,
            record,
            case,
            base_rev,
            state_change,
            logged,
        } = d;
        let body = signed.bytes().to_vec();
        let digest_hex = signed.digest().to_hex();
        let widening = direction == "widened";
        let case_ref = a.case_ref.clone();
        let me = self.id.clone();
        let retention = self.body_retention_ms;
        let to_stage: Vec<(Envelope, NodeId)> = envelopes
            .iter()
            .cloned()
            .zip(hops.iter().cloned())
            .collect();
        let officer = signed
            .officer()
            .map(|o| (o.id.clone(), signed.action().credential.clone()));
        let change = move |t: &mut Txn<'_>| {
            // The record this was decided on is still the one stored, so the checks made
            // on it (the signed action not taken yet among them) still hold.
            let current = t.case(&case_ref)?;
            if current.as_ref().map(|c| c.rev) != base_rev {
                return Err(StoreError::Conflict(format!("case {case_ref}")));
            }
            // So is the officer's enrollment, and every permission the step relies on.
            if let Some((id, credential)) = &officer {
                let rec = t.officer(id)?;
                if rec.as_ref().is_none_or(|r| {
                    r.revoked_at.is_some() || Some(&r.credential) != credential.as_ref()
                }) {
                    return Ok(Err(format!(
                        "officer {id} was revoked or enrolled again while this step was checked"
                    )));
                }
            }
            for (m, provider, to) in &grants {
                if !t.granted(m, provider, to)? {
                    return Ok(Err(format!(
                        "the permission to pass message {m} from {provider} on to {to} was \
                         withdrawn while this step was checked"
                    )));
                }
            }
            if !widening
                && current
                    .as_ref()
                    .is_some_and(|c| c.timeline.iter().any(|e| e.action == digest_hex))
            {
                return Err(StoreError::Conflict(format!(
                    "the signed action was taken for case {case_ref} meanwhile"
                )));
            }
            t.log(EntryKind::OfficerAction, logged);
            if let Some(c) = state_change {
                t.log(EntryKind::CaseStateChanged, c);
            }
            let queued: Vec<(NodeId, Queued)> = to_stage
                .iter()
                .map(|(env, hop)| (hop.clone(), stage_outgoing(t, env, hop, &body, now)))
                .collect();
            let index = case_index(&record, &me, now, retention);
            t.put_case(&case_ref, record, index)?;
            Ok(Ok(queued))
        };
        let staged = self.store.stage(now, change).await;
        drop(guard);
        let queued = match staged?.durable().await? {
            Ok(q) => q,
            Err(reason) => {
                return Err(self
                    .refuse(now, EntryKind::Rejected, reason, Some(signed))
                    .await);
            }
        };
        let messages = envelopes
            .iter()
            .zip(&hops)
            .map(|(e, hop)| SendResult {
                message_id: e.header().id.to_hex(),
                digest: e.digest().to_hex(),
                hop: hop.clone(),
            })
            .collect();
        for (hop, q) in queued {
            self.enqueue(&hop, q);
        }
        Ok(ActResult {
            case_ref: a.case_ref.clone(),
            kind: a.kind.clone(),
            state: case.state,
            deadline: case.deadline,
            action: signed.digest().to_hex(),
            messages,
        })
    }

    /// The checks of a step against this node's copy of its case, its recipients and their
    /// handling, the state machine, and what the step writes.
    async fn decide(
        &self,
        signed: &SignedAction,
        spec: &'static KindSpec,
        req: &ActRequest,
        officer: Option<String>,
        direction: &str,
        now: u64,
    ) -> Result<Decision, Refuse> {
        use EntryKind::{RefusedByPolicy, Rejected};
        let a = signed.action().clone();
        let roster = self.roster.get();
        let r = roster.roster();
        let cr = a.case_ref.clone();
        let existing = self.store.peek(move |rd| rd.case(&cr)).await?;
        let base_rev = existing.as_ref().map(|e| e.rev);
        let digest = signed.digest();
        let widening = direction == "widened";
        if !widening
            && existing
                .as_ref()
                .is_some_and(|e| e.timeline.iter().any(|t| t.action == digest.to_hex()))
        {
            return Err(Refuse::Audit(
                Rejected,
                format!(
                    "this signed {} was already submitted for case {} (sign a new one)",
                    a.kind, a.case_ref
                ),
            ));
        }
        // The consent record lives in the case the owner opened here: a nationality request
        // cannot open a case of its own on the sending side.
        if a.kind == "repatriation.nationality_request" && existing.is_none() {
            return Err(Refuse::Audit(
                Rejected,
                format!(
                    "case {} is not open here: open it first with the victim's consent \
                     (`liaison repatriation open`)",
                    a.case_ref
                ),
            ));
        }
        // An alert is issued once; later news goes out as alert.update.
        if a.kind == "alert.issue" && existing.is_some() && !widening {
            return Err(Refuse::Audit(
                Rejected,
                format!(
                    "alert {} is already issued: send news with `liaison alert update`",
                    a.case_ref
                ),
            ));
        }
        // What the step is derived from must be held and readable, whoever receives it.
        if let Some(Err(reason)) = self.onward(&a, vec![None]).await?.pop() {
            return Err(Refuse::Audit(RefusedByPolicy, reason));
        }
        let alerted: Vec<NodeId> = existing
            .as_ref()
            .map(|e| e.alerted.clone())
            .unwrap_or_default();
        let mut skipped: Vec<NodeId> = Vec::new();

        // Who receives it.
        let recipients: Vec<NodeId> = if spec.local {
            if !req.to.is_empty() {
                return Err(Refuse::Audit(
                    Rejected,
                    format!("{} is recorded here only; it has no recipients", a.kind),
                ));
            }
            Vec::new()
        } else if !req.to.is_empty() {
            let mut to = req.to.clone();
            to.sort();
            to.dedup();
            // Widening sends only to units not reached yet.
            to.retain(|t| !widening || !alerted.contains(t));
            to
        } else if a.kind == "alert.issue" {
            let candidates = alert_targets(&a, r, &self.id, now)
                .map_err(|reason| Refuse::Audit(Rejected, reason))?;
            self.onward_filter(&a, candidates).await?
        } else if a.kind.starts_with("alert.") {
            // Updates and cancellations go to every unit alerted so far (that is still a
            // member reachable now); when none was reached they are recorded here (and stop
            // the widening).
            let (reach, gone): (Vec<NodeId>, Vec<NodeId>) =
                alerted.iter().cloned().partition(|t| {
                    r.check_send(&self.id, t, &a.kind).is_ok() && r.next_hop(&self.id, t).is_ok()
                });
            skipped = gone;
            reach
        } else {
            // No recipient: recorded here only, where the workflow allows it (the owner's
            // in-transit or suspension notes, a referred copy closed by the police …); the
            // state machine refuses the rest.
            Vec::new()
        };
        if widening
            && (recipients.is_empty()
                || existing.as_ref().is_none_or(|e| {
                    e.case.state != State::Active
                        || e.alert_action.as_deref() != Some(signed.bytes())
                }))
        {
            // Reached already, or cancelled since the tick read the case.
            return Err(Refuse::Fail(NodeError::Invalid("nothing to widen".into())));
        }
        if recipients.contains(&self.id) {
            return Err(Refuse::Audit(
                Rejected,
                "a node does not send case steps to itself".to_owned(),
            ));
        }

        // Handling: abroad flag and onward passing, per recipient.
        let my_country = r.member(&self.id).map(|m| m.country.clone());
        for to in &recipients {
            let their = r.member(to).map(|m| m.country.clone());
            if !a.abroad && their.is_some() && their != my_country {
                return Err(Refuse::Audit(
                    RefusedByPolicy,
                    format!(
                        "{} is a foreign counterpart and this {} is not marked as releasable \
                         abroad (--abroad)",
                        to, a.kind
                    ),
                ));
            }
        }
        let mut grants = Vec::new();
        for check in self
            .onward(&a, recipients.iter().cloned().map(Some).collect())
            .await?
        {
            match check {
                Ok(g) => grants.extend(g),
                Err(reason) => return Err(Refuse::Audit(RefusedByPolicy, reason)),
            }
        }

        // The state machine, once per recipient (fan-out steps are no-ops after the first).
        let before = existing.as_ref().map(|e| e.case.clone());
        let mut case = before.clone();
        let targets: Vec<NodeId> = if recipients.is_empty() {
            vec![self.id.clone()]
        } else {
            recipients.clone()
        };
        for to in &targets {
            let step = Step {
                case_ref: &a.case_ref,
                kind: &a.kind,
                from: &self.id,
                to,
                at: a.at,
                doc: &a.document,
                action: digest,
                officer: signed.actor(),
            };
            match workflow::apply(case.as_ref(), &step, r) {
                Ok(next) => case = Some(next),
                Err(e) => return Err(Refuse::Audit(Rejected, e.to_string())),
            }
        }
        let Some(case) = case else {
            return Err(Refuse::Fail(NodeError::Invalid(
                "no case after the step".into(),
            )));
        };

        // Policy and routes.
        let mut hops = Vec::new();
        for to in &recipients {
            if signed.bytes().len() as u64 > r.max_body_len {
                return Err(Refuse::Fail(NodeError::Invalid(format!(
                    "body is {} bytes; the roster allows at most {}",
                    signed.bytes().len(),
                    r.max_body_len
                ))));
            }
            match r
                .check_send(&self.id, to, &a.kind)
                .and_then(|()| r.next_hop(&self.id, to))
            {
                Ok(hop) => hops.push(hop),
                Err(e) => return Err(Refuse::Policy(e, to.clone())),
            }
        }
        let priority = req.priority.unwrap_or(spec.priority);
        let in_reply_to = req
            .in_reply_to
            .as_deref()
            .map(MessageId::from_hex)
            .transpose()
            .map_err(NodeError::from)?;
        let envelopes: Vec<Envelope> = recipients
            .iter()
            .map(|to| {
                self.seal(
                    to,
                    &a.kind,
                    signed.bytes(),
                    priority,
                    in_reply_to,
                    None,
                    Some(a.case_ref.clone()),
                    now,
                )
            })
            .collect();

        let mut record = existing.unwrap_or_else(|| CaseRecord::new(case.clone()));
        record.case = case.clone();
        if a.kind == "alert.issue" && record.alert_action.is_none() {
            record.alert_action = Some(signed.bytes().to_vec());
        }
        if case.state.is_terminal() {
            // Nothing widens a closed alert: its description is not kept beyond need. An
            // alert that reached no unit keeps its signed issue as a step recorded here.
            if let Some(issue) = record.alert_action.take()
                && record.alerted.is_empty()
            {
                record.local_actions.push(LocalAction {
                    at: now,
                    retain_ms: a.retention_days.saturating_mul(24 * 3600 * 1000),
                    action: issue,
                });
            }
        }
        if (spec.local || recipients.is_empty()) && a.kind != "alert.issue" {
            // Not sent, so no message body holds it: kept with the case until its
            // retention ends (a repatriation case's consent record).
            record.local_actions.push(LocalAction {
                at: now,
                retain_ms: a.retention_days.saturating_mul(24 * 3600 * 1000),
                action: signed.bytes().to_vec(),
            });
        }
        for to in &recipients {
            if a.kind.starts_with("alert.") && !record.alerted.contains(to) {
                record.alerted.push(to.clone());
            }
        }
        record.timeline.push(TimelineEntry {
            at: a.at,
            kind: a.kind.clone(),
            direction: if recipients.is_empty() {
                "local"
            } else {
                direction
            }
            .to_owned(),
            from: self.id.clone(),
            to: recipients.clone(),
            actor: signed.actor().to_owned(),
            officer,
            message_ids: envelopes.iter().map(|e| e.header().id.to_hex()).collect(),
            action: digest.to_hex(),
            verified: if skipped.is_empty() {
                verified_label(signed)
            } else {
                // Alerted units the roster no longer lets this node reach: the officers
                // must tell them another way.
                format!(
                    "{}; NOT SENT to {} (no longer reachable under the roster)",
                    verified_label(signed),
                    skipped
                        .iter()
                        .map(NodeId::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            state: case.state.name().to_owned(),
            deadline: case.deadline,
        });
        let state_change = state_change(&a.case_ref, before.as_ref(), &case, &digest);
        let logged = action_record(&a.case_ref, &a.kind, signed.actor(), &digest.0);
        Ok(Decision {
            grants,
            hops,
            envelopes,
            record,
            case,
            base_rev,
            state_change,
            logged,
        })
    }

    /// The onward-passing check of `a` for each target (None: whoever receives it), in one
    /// read of the store.
    async fn onward(
        &self,
        a: &Action,
        targets: Vec<Option<NodeId>>,
    ) -> Result<Vec<Result<Vec<Grant>, String>>, StoreError> {
        let a = a.clone();
        let me = self.id.clone();
        let roster = self.roster.get();
        self.store
            .peek(move |rd| {
                Ok(targets
                    .iter()
                    .map(|to| check_onward(rd, &me, &a, to.as_ref(), roster.roster()))
                    .collect())
            })
            .await
    }

    /// The targets `a` may go to under the onward-passing rules.
    async fn onward_filter(
        &self,
        a: &Action,
        targets: Vec<NodeId>,
    ) -> Result<Vec<NodeId>, StoreError> {
        let checks = self
            .onward(a, targets.iter().cloned().map(Some).collect())
            .await?;
        Ok(targets
            .into_iter()
            .zip(checks)
            .filter_map(|(t, ok)| ok.is_ok().then_some(t))
            .collect())
    }

    /// The receiving node's checks of a case step, before any receipt, against its copy of
    /// the case (`existing`, read under the case lock). Returns the case update to store
    /// with the message, or the reason for a signed rejection.
    pub(crate) fn check_case_step(
        &self,
        env: &Envelope,
        body: &[u8],
        existing: Option<CaseRecord>,
    ) -> Result<CaseUpdate, StepRefusal> {
        use StepRefusal::Final;
        let h = env.header();
        let roster = self.roster.get();
        let r = roster.roster();
        let signed = SignedAction::open(body, r)
            .map_err(|e| Final(format!("the action in the body does not verify: {e}")))?;
        let a = signed.action();
        if a.node != h.from {
            return Err(Final(format!(
                "the action was signed for {}, the envelope is from {}",
                a.node, h.from
            )));
        }
        if a.kind != h.kind || Some(&a.case_ref) != h.case_ref.as_ref() {
            return Err(Final(
                "the action's kind or case reference differs from the envelope's".into(),
            ));
        }
        let spec = match signed.officer() {
            Some(o) => workflow::check_role(&a.kind, o.role).map_err(|e| Final(e.to_string()))?,
            None => workflow::spec(&a.kind)
                .filter(|s| s.automatic)
                .ok_or_else(|| Final(format!("{} must be signed by an officer", a.kind)))?,
        };
        if spec.local {
            return Err(Final(format!(
                "{} is a local step and is never sent",
                a.kind
            )));
        }
        if a.purpose != spec.purpose {
            return Err(Final(format!(
                "{} serves {}, not {}",
                a.kind, spec.purpose, a.purpose
            )));
        }
        // The officer signed just before the node sealed the envelope. An alert is the one
        // step sent again later, to units its widening radius reaches.
        let window = self
            .wf
            .max_action_age_ms
            .saturating_add(self.cfg.max_skew_ms);
        if a.kind != "alert.issue" && h.sent_at.abs_diff(a.at) > window {
            return Err(Final(format!(
                "the action was signed at {} but sent at {}: too far apart",
                a.at, h.sent_at
            )));
        }
        let theirs = r.member(&h.from).map(|m| &m.country);
        let mine = r.member(&self.id).map(|m| &m.country);
        if !a.abroad && theirs != mine {
            return Err(Final(format!(
                "{} is not marked as releasable abroad",
                a.kind
            )));
        }
        if existing.as_ref().is_some_and(|e| {
            e.timeline
                .iter()
                .any(|t| t.action == signed.digest().to_hex())
        }) {
            return Err(Final(format!(
                "this signed {} was already received for case {}",
                a.kind, a.case_ref
            )));
        }
        if existing.is_none() && a.kind == "supervision.attach" {
            return Err(Final(format!(
                "there is no case {} here to supervise",
                a.case_ref
            )));
        }
        let base_rev = existing.as_ref().map(|e| e.rev);
        let before = existing.as_ref().map(|e| e.case.clone());
        let step = Step {
            case_ref: &a.case_ref,
            kind: &a.kind,
            from: &h.from,
            to: &self.id,
            at: a.at,
            doc: &a.document,
            action: signed.digest(),
            officer: signed.actor(),
        };
        let mut case = match workflow::apply(before.as_ref(), &step, r) {
            Ok(c) => c,
            // The step this one follows may still be on its way (another lane, a retry):
            // for a while the sender is asked to try again, then the refusal is final.
            Err(
                e @ (WorkflowError::IllegalTransition { .. } | WorkflowError::UnknownCase { .. }),
            ) if self.now().saturating_sub(h.sent_at) < self.wf.reorder_window_ms => {
                return Err(StepRefusal::NotYet(e.to_string()));
            }
            Err(e) => return Err(Final(e.to_string())),
        };
        if before.is_none()
            && let Some(c) = workflow::delivered(&case)
        {
            case = c;
        }
        let mut record = existing.unwrap_or_else(|| CaseRecord::new(case.clone()));
        record.case = case.clone();
        if a.kind == "supervision.attach" {
            // A (new) supervisor is told of an overdue case even if an earlier one was.
            record.overdue_notified = false;
        }
        record.timeline.push(TimelineEntry {
            at: a.at,
            kind: a.kind.clone(),
            direction: if signed.officer().is_some() {
                "received"
            } else {
                "automatic"
            }
            .to_owned(),
            from: h.from.clone(),
            to: vec![self.id.clone()],
            actor: signed.actor().to_owned(),
            officer: signed.officer().map(officer_label),
            message_ids: vec![h.id.to_hex()],
            action: signed.digest().to_hex(),
            verified: verified_label(&signed) + ", envelope by node key ✓",
            state: case.state.name().to_owned(),
            deadline: case.deadline,
        });
        Ok(CaseUpdate {
            case_ref: a.case_ref.clone(),
            state_change: state_change(&a.case_ref, before.as_ref(), &case, &signed.digest()),
            record,
            base_rev,
        })
    }

    /// Stages a case change decided under the case's lock, releases the lock, and waits
    /// until the change is durable.
    async fn write_case<T, F>(
        &self,
        guard: crate::locks::KeyedGuard,
        now: u64,
        f: F,
    ) -> Result<T, NodeError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let staged = self.store.stage(now, f).await;
        drop(guard);
        Ok(staged?.durable().await?)
    }

    /// Deadlines (overdue, supervisor told), alert radii and the retention of steps
    /// recorded here: the cases whose time has come (the `t/` index), or every case with
    /// `all` (an operator's request, or every active alert after a roster change).
    async fn case_tick(self: &Arc<Self>, now: u64, all: bool) -> Result<(), NodeError> {
        // One tick at a time (the ticker and an operator's `CaseTick` could overlap).
        let _tick = self.case_tick_lock.lock().await;
        let due: Vec<String> = if all {
            self.store
                .peek(|r| r.cases())
                .await?
                .into_iter()
                .map(|(c, _)| c)
                .collect()
        } else {
            self.store
                .peek(move |r| r.cases_due(now, TICK_BATCH))
                .await?
                .into_iter()
                .map(|(_, c)| c)
                .collect()
        };
        for case_ref in due {
            // One bad case does not stop the others from being checked.
            if let Err(e) = self.tick_case(&case_ref, now).await {
                warn!(node = %self.id, %case_ref, error = %e, "cannot check the case");
            }
            // Whatever happened, the case is scheduled for its next time.
            if let Err(e) = self.reschedule(&case_ref, now).await {
                warn!(node = %self.id, %case_ref, error = %e, "cannot schedule the case");
            }
        }
        Ok(())
    }

    /// Puts every case in the ticker's and the permissions' indexes (once, for a store
    /// written before they existed), and marks the store indexed.
    pub(crate) async fn index_cases(&self) -> Result<(), NodeError> {
        let me = self.id.clone();
        let retention = self.body_retention_ms;
        let now = self.now();
        let refs: Vec<String> = self
            .store
            .peek(|r| r.cases())
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let n = refs.len();
        self.store
            .write(now, move |t| {
                for case_ref in refs {
                    if let Some(rec) = t.case(&case_ref)? {
                        let index = case_index(&rec, &me, now, retention);
                        t.put_case(&case_ref, rec, index)?;
                    }
                }
                t.cases_indexed();
                Ok(())
            })
            .await?;
        tracing::info!(node = %self.id, cases = n, "cases indexed for the ticker");
        Ok(())
    }

    async fn read_case(&self, case_ref: &str) -> Result<Option<CaseRecord>, NodeError> {
        let cr = case_ref.to_owned();
        Ok(self.store.peek(move |r| r.case(&cr)).await?)
    }

    async fn tick_case(self: &Arc<Self>, case_ref: &str, now: u64) -> Result<(), NodeError> {
        let Some(rec) = self.read_case(case_ref).await? else {
            return Ok(());
        };
        if workflow::mark_overdue(&rec.case, now).is_some()
            || workflow::clear_overdue(&rec.case, now).is_some()
        {
            self.mark_overdue(case_ref, now).await?;
        }
        let Some(rec) = self.read_case(case_ref).await? else {
            return Ok(());
        };
        let supervised_elsewhere = rec
            .case
            .supervisor
            .as_ref()
            .is_some_and(|s| s.node != self.id);
        if rec.case.overdue && !rec.overdue_notified && supervised_elsewhere {
            self.notify_supervisor(case_ref, &rec).await?;
        } else if !rec.case.overdue && rec.overdue_notified {
            // Back on time (an extension): a later missed deadline is reported again.
            self.set_notified(case_ref, false, now).await?;
        }
        if rec.case.workflow == Workflow::Alert
            && rec.case.state == State::Active
            && rec.case.opened_by == self.id
        {
            self.widen_alert(case_ref, &rec, now).await?;
        }
        if rec
            .local_actions
            .iter()
            .any(|l| local_due(l, self.body_retention_ms) <= now)
        {
            self.purge_local_actions(case_ref, now).await?;
        }
        Ok(())
    }

    /// Writes the case's next wake time when it moved (nothing changed it in this tick, or
    /// time alone moved it on).
    async fn reschedule(&self, case_ref: &str, now: u64) -> Result<(), NodeError> {
        let guard = self.case_locks.lock(case_ref).await;
        let cr = case_ref.to_owned();
        let me = self.id.clone();
        let retention = self.body_retention_ms;
        self.write_case(guard, now, move |t| {
            let Some(rec) = t.case(&cr)? else {
                return Ok(());
            };
            let index = case_index(&rec, &me, now, retention);
            if index.wake != rec.wake {
                t.put_case(&cr, rec, index)?;
            }
            Ok(())
        })
        .await
    }

    async fn set_notified(&self, case_ref: &str, told: bool, now: u64) -> Result<(), NodeError> {
        let guard = self.case_locks.lock(case_ref).await;
        let cr = case_ref.to_owned();
        let me = self.id.clone();
        let retention = self.body_retention_ms;
        self.write_case(guard, now, move |t| {
            if let Some(mut latest) = t.case(&cr)? {
                latest.overdue_notified = told;
                let index = case_index(&latest, &me, now, retention);
                t.put_case(&cr, latest, index)?;
            }
            Ok(())
        })
        .await
    }

    /// Sets the overdue flag when a deadline passed, or clears it when it no longer holds
    /// (a supervision's new due date, or its end).
    async fn mark_overdue(&self, case_ref: &str, now: u64) -> Result<(), NodeError> {
        let guard = self.case_locks.lock(case_ref).await;
        let cr = case_ref.to_owned();
        let me = self.id.clone();
        let retention = self.body_retention_ms;
        let label = self
            .write_case(guard, now, move |t| {
                let Some(mut rec) = t.case(&cr)? else {
                    return Ok(None);
                };
                let (next, kind, label) = match (
                    workflow::mark_overdue(&rec.case, now),
                    workflow::clear_overdue(&rec.case, now),
                ) {
                    (Some(n), _) => (n, "deadline.overdue", "(overdue)"),
                    (None, Some(n)) => (n, "deadline.no_longer_overdue", "(no longer overdue)"),
                    (None, None) => return Ok(None),
                };
                rec.timeline.push(TimelineEntry {
                    at: now,
                    kind: kind.into(),
                    direction: "overdue".into(),
                    from: me.clone(),
                    to: Vec::new(),
                    actor: me.to_string(),
                    officer: None,
                    message_ids: Vec::new(),
                    action: String::new(),
                    verified: String::new(),
                    state: next.state.name().to_owned(),
                    deadline: next.deadline,
                });
                rec.case = next;
                let state = format!("{} {label}", rec.case.state.name());
                let entry = state_change_record(&cr, Some(rec.case.state.name()), &state, &[0; 32]);
                t.log(EntryKind::CaseStateChanged, entry);
                let index = case_index(&rec, &me, now, retention);
                t.put_case(&cr, rec, index)?;
                Ok(Some(label))
            })
            .await?;
        if let Some(label) = label {
            warn!(node = %self.id, %case_ref, "case {label}");
        }
        Ok(())
    }

    /// Sends the node-signed `supervision.overdue` notice to the case's supervisor.
    async fn notify_supervisor(
        self: &Arc<Self>,
        case_ref: &str,
        rec: &CaseRecord,
    ) -> Result<(), NodeError> {
        let Some(sup) = &rec.case.supervisor else {
            return Ok(());
        };
        let Some(spec) = workflow::spec("supervision.overdue") else {
            return Err(NodeError::Invalid(
                "catalog has no supervision.overdue".into(),
            ));
        };
        let now = self.now();
        // The deadline that passed: the awaited answer's, or the supervision's due date.
        let waiting = rec.case.workflow.awaiting().contains(&rec.case.state);
        let missed = match (rec.case.deadline, sup.due) {
            (Some(d), _) if d < now && waiting => d,
            (_, Some(due)) => due,
            (d, None) => d.unwrap_or(0),
        };
        let doc = Document::new()
            .with("overdue_case", case_ref)
            .with("deadline", missed)
            .with("state", rec.case.state.name());
        let action = Action {
            federation: self.federation.clone(),
            node: self.id.clone(),
            kind: spec.kind.to_owned(),
            case_ref: case_ref.to_owned(),
            at: now,
            purpose: spec.purpose.to_owned(),
            handling: Handling::H0,
            sensitivity: Vec::new(),
            retention_days: 3650,
            abroad: false,
            document: doc,
            derived_from: Vec::new(),
            credential: None,
        };
        let signed = action.sign(&self.signing);
        let req = ActRequest {
            action: String::new(),
            to: vec![sup.node.clone()],
            priority: None,
            in_reply_to: None,
        };
        // Told: not again while the case stays overdue. A refusal (policy, workflow) is
        // logged once and not repeated every tick; anything else is tried again.
        match self.submit(signed, spec, req, None, "automatic").await {
            Ok(_) | Err(NodeError::Refused(_) | NodeError::Policy(_)) => {}
            Err(e) => return Err(e),
        }
        self.set_notified(case_ref, true, now).await
    }

    /// Sends an active alert to the units its radius has reached since the last tick.
    async fn widen_alert(
        self: &Arc<Self>,
        case_ref: &str,
        rec: &CaseRecord,
        now: u64,
    ) -> Result<(), NodeError> {
        let Some(bytes) = &rec.alert_action else {
            return Ok(());
        };
        let roster = self.roster.get();
        let r = roster.roster();
        let signed = SignedAction::open(bytes, r)?;
        // From where the child was last seen (an update may have moved it).
        let candidates = match rec.case.alert_origin() {
            Some((origin, since)) => reachable(signed.action(), r, &self.id, &origin, since, now),
            None => Vec::new(),
        };
        let candidates: Vec<NodeId> = candidates
            .into_iter()
            .filter(|t| !rec.alerted.contains(t))
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let new = self.onward_filter(signed.action(), candidates).await?;
        if new.is_empty() {
            return Ok(());
        }
        let Some(spec) = workflow::spec("alert.issue") else {
            return Ok(());
        };
        let req = ActRequest {
            action: String::new(),
            to: new,
            priority: None,
            in_reply_to: None,
        };
        if let Err(e) = self.submit(signed, spec, req, None, "widened").await {
            warn!(node = %self.id, %case_ref, error = %e, "cannot widen the alert");
        }
        Ok(())
    }

    /// Signed actions recorded only here (no message body holds them) whose retention ended
    /// are deleted, each with a `body_purged` entry in the same change.
    async fn purge_local_actions(&self, case_ref: &str, now: u64) -> Result<(), NodeError> {
        let guard = self.case_locks.lock(case_ref).await;
        let cr = case_ref.to_owned();
        let me = self.id.clone();
        let retention = self.body_retention_ms;
        self.write_case(guard, now, move |t| {
            let Some(mut rec) = t.case(&cr)? else {
                return Ok(());
            };
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut rec.local_actions)
                .into_iter()
                .partition(|l| local_due(l, retention) <= now);
            rec.local_actions = kept;
            for l in &gone {
                let digest = liaison_protocol::SignedObject::parse(&l.action, usize::MAX)
                    .map(|o| o.digest().0)
                    .unwrap_or_else(|_| liaison_protocol::Digest::of(&l.action).0);
                t.log(
                    EntryKind::BodyPurged,
                    event_record(
                        &format!("retention ended (step recorded on case {cr})"),
                        None,
                        Some(&digest),
                        None,
                    ),
                );
            }
            let index = case_index(&rec, &me, now, retention);
            t.put_case(&cr, rec, index)?;
            Ok(())
        })
        .await
    }
}

/// When a step recorded here only must go: its own retention, or the node's if shorter.
fn local_due(l: &LocalAction, node_retention_ms: u64) -> u64 {
    l.at.saturating_add(l.retain_ms.min(node_retention_ms))
}

/// What the store indexes a case by: when the ticker must look at it next, and a granted
/// onward-passing permission. The wake time is the earliest of: the deadline or due date
/// that will make it overdue, now when an overdue flag must be cleared or the supervisor
/// told (again at the next tick until that succeeds), the next widening of an active alert
/// issued here (and a re-check every minute), and the end of a local action's retention.
pub(crate) fn case_index(
    rec: &CaseRecord,
    me: &NodeId,
    now: u64,
    node_retention_ms: u64,
) -> CaseIndex {
    let c = &rec.case;
    let mut wake: Option<u64> = None;
    let mut at = |t: u64| wake = Some(wake.map_or(t, |w| w.min(t)));
    if c.overdue {
        let supervised_elsewhere = c.supervisor.as_ref().is_some_and(|s| &s.node != me);
        if !c.is_overdue_at(now) || (!rec.overdue_notified && supervised_elsewhere) {
            at(now);
        }
    } else {
        if let Some(t) = c.overdue_from() {
            at(t);
        }
        if rec.overdue_notified {
            at(now);
        }
    }
    if c.workflow == Workflow::Alert
        && c.state == State::Active
        && &c.opened_by == me
        && rec.alert_action.is_some()
    {
        if let Some(t) = c
            .alert_origin()
            .and_then(|(_, since)| workflow::alert_next_widening(since, now))
        {
            at(t);
        }
        at(now.saturating_add(ALERT_RECHECK_MS));
    }
    for l in &rec.local_actions {
        at(local_due(l, node_retention_ms));
    }
    let grant = (c.workflow == Workflow::Permission && c.state == State::Granted)
        .then(|| {
            let (m, rcpt) = workflow::permission_subject(c)?;
            let provider = c.counterpart.clone()?;
            let rcpt = NodeId::new(rcpt).ok()?;
            Some((m.to_owned(), provider, rcpt))
        })
        .flatten();
    CaseIndex { wake, grant }
}

/// Inside the change that stores an inbound case step: the case is still the revision the
/// step was checked against.
pub(crate) fn check_rev(t: &Txn<'_>, u: &CaseUpdate) -> Result<(), StoreError> {
    let rev = t.case(&u.case_ref)?.map(|c| c.rev);
    if rev != u.base_rev {
        return Err(StoreError::Conflict(format!("case {}", u.case_ref)));
    }
    Ok(())
}

/// Receiver side of [`Inner::check_case_step`], inside the change that stores the message
/// and its receipt: the case record and its state-change entry.
pub(crate) fn stage_case(t: &mut Txn<'_>, u: CaseUpdate) -> Result<(), StoreError> {
    if let Some(c) = &u.state_change {
        t.log(EntryKind::CaseStateChanged, c.clone());
    }
    let index = case_index(&u.record, t.node(), t.now(), t.retention_ms());
    t.put_case(&u.case_ref, u.record, index)?;
    Ok(())
}

/// Sender side, inside the change that records a receipt for a case step this node sent:
/// the receipt of a case-opening step moves `sent` to `received`; a rejection goes into the
/// case's timeline with its signed reason (the case already moved here, so the refusal is
/// for the officers to resolve).
pub(crate) fn on_receipt(
    t: &mut Txn<'_>,
    h: &liaison_protocol::Header,
    status: &liaison_protocol::ReceiptStatus,
    now: u64,
) -> Result<(), StoreError> {
    let Some(case_ref) = &h.case_ref else {
        return Ok(());
    };
    if !is_case_kind(&h.kind) {
        return Ok(());
    }
    let Some(mut rec) = t.case(case_ref)? else {
        return Ok(());
    };
    match status {
        liaison_protocol::ReceiptStatus::Delivered => {
            if workflow::spec(&h.kind).is_none_or(|s| !s.opens_case) {
                return Ok(());
            }
            let Some(next) = workflow::delivered(&rec.case) else {
                return Ok(());
            };
            let change = state_change(
                case_ref,
                Some(&rec.case),
                &next,
                &liaison_protocol::Digest([0; 32]),
            );
            rec.case = next;
            if let Some(c) = change {
                t.log(EntryKind::CaseStateChanged, c);
            }
        }
        liaison_protocol::ReceiptStatus::Rejected(reason) => {
            rec.timeline.push(TimelineEntry {
                at: now,
                kind: format!("{} refused by {}", h.kind, h.to),
                direction: "refused".into(),
                from: h.to.clone(),
                to: vec![t.node().clone()],
                actor: h.to.to_string(),
                officer: None,
                message_ids: vec![h.id.to_hex()],
                action: String::new(),
                verified: format!("signed rejection receipt from {} ✓: {reason}", h.to),
                state: rec.case.state.name().to_owned(),
                deadline: rec.case.deadline,
            });
            warn!(node = %t.node(), %case_ref, %reason, "case step refused by the recipient");
        }
    }
    let index = case_index(&rec, t.node(), now, t.retention_ms());
    t.put_case(case_ref, rec, index)?;
    Ok(())
}

/// A granted onward-passing permission a step relied on: (message id hex, provider,
/// recipient).
type Grant = (String, NodeId, NodeId);

/// H2 material passes on only to its provider or with the provider's signed grant. The
/// check follows `derived_from` through this node's own messages (material derived from
/// H2 material is still that material) up to a depth of 8; a message this node only
/// relayed is not its to pass on.
fn check_onward(
    rd: &Reader<'_>,
    me: &NodeId,
    a: &Action,
    to: Option<&NodeId>,
    r: &liaison_protocol::Roster,
) -> Result<Vec<Grant>, String> {
    let mut grants = Vec::new();
    let mut todo: Vec<(MessageId, usize)> = a.derived_from.iter().map(|m| (*m, 0)).collect();
    let mut seen = Vec::new();
    while let Some((mid, depth)) = todo.pop() {
        if seen.contains(&mid) {
            continue;
        }
        seen.push(mid);
        if depth > 8 {
            return Err(format!(
                "derived-from chain through {mid} is too deep to check"
            ));
        }
        let digests = rd.digests_for_id(&mid).map_err(|e| e.to_string())?;
        let mut held = false;
        for d in digests {
            let Some(rec) = rd.message(&d).map_err(|e| e.to_string())? else {
                continue;
            };
            if rec.direction == Direction::Relay {
                continue;
            }
            held = true;
            let Some((_, h)) = Envelope::peek_unverified(&rec.envelope) else {
                return Err(format!("stored message {mid} does not parse"));
            };
            if rec.direction == Direction::Outgoing && !is_case_kind(&h.kind) {
                continue; // our own plain message derives from nothing
            }
            let body = rd.body(&d).map_err(|e| e.to_string())?.ok_or_else(|| {
                format!("the body of message {mid} was purged; its handling cannot be checked")
            })?;
            // Verified when it was sent or received; read as stored (a key rotation since
            // must not hide what it was derived from).
            let src = stored_action(&body)
                .ok_or_else(|| format!("message {mid} carries no readable action"))?;
            if rec.direction == Direction::Outgoing {
                // Our own step: what it was derived from counts.
                todo.extend(src.derived_from.iter().map(|m| (*m, depth + 1)));
                continue;
            }
            let Some(to) = to else { continue };
            let granted = || {
                rd.granted(&mid.to_hex(), &h.from, to)
                    .map_err(|e| e.to_string())
            };
            if src.handling == Handling::H2 && h.from != *to {
                if !granted()? {
                    return Err(format!(
                        "message {mid} from {} is H2 (not to be passed on without the provider's \
                         permission); ask first: `liaison permission request --message {mid} \
                         --recipient {to} --to {} --reason …`",
                        h.from, h.from
                    ));
                }
                // Relied on: checked again in the change that sends.
                grants.push((mid.to_hex(), h.from.clone(), to.clone()));
            }
            let foreign = r.member(to).map(|m| &m.country) != r.member(me).map(|m| &m.country);
            if !src.abroad && foreign {
                return Err(format!(
                    "message {mid} from {} was not released for abroad; {to} is foreign",
                    h.from
                ));
            }
        }
        if !held {
            return Err(format!(
                "derived-from message {mid} is not held by this node"
            ));
        }
    }
    Ok(grants)
}

/// The units an alert reaches at `now` before the onward-passing check: every active
/// member within the radius for the time the child has been missing, measured from where
/// the child was last seen.
fn alert_targets(
    a: &Action,
    r: &liaison_protocol::Roster,
    me: &NodeId,
    now: u64,
) -> Result<Vec<NodeId>, String> {
    let (origin, since) = workflow::alert_origin_of(&a.document).map_err(|e| e.to_string())?;
    Ok(reachable(a, r, me, &origin, since, now))
}

/// The units within the alert's radius that the policy lets it reach: a unit the roster
/// forbids, or a foreign one when the alert is not released abroad, is left out rather than
/// blocking the rest.
fn reachable(
    a: &Action,
    r: &liaison_protocol::Roster,
    me: &NodeId,
    origin: &liaison_protocol::Location,
    since: u64,
    now: u64,
) -> Vec<NodeId> {
    let mine = r.member(me).map(|m| &m.country);
    let radius = workflow::alert_radius_m(since, now);
    workflow::alert_recipients(r, me, origin, radius)
        .into_iter()
        .filter(|t| {
            r.check_send(me, t, &a.kind).is_ok()
                && r.next_hop(me, t).is_ok()
                && (a.abroad || r.member(t).map(|m| &m.country) == mine)
        })
        .collect()
}

fn verified_label(s: &SignedAction) -> String {
    match s.officer() {
        Some(o) => format!(
            "officer {} signature ✓, credential by {} node key ✓",
            o.id, o.node
        ),
        None => format!("{} node key signature ✓ (automatic)", s.action().node),
    }
}

fn state_change(
    case_ref: &str,
    before: Option<&Case>,
    after: &Case,
    action: &liaison_protocol::Digest,
) -> Option<Vec<u8>> {
    let from = before.map(|c| c.state.name());
    let changed = before.is_none_or(|b| b.state != after.state || b.overdue != after.overdue);
    changed.then(|| state_change_record(case_ref, from, after.state.name(), &action.0))
}

/// A stored body's action, read without checking signatures (they were checked when the
/// message was sent or received).
fn stored_action(body: &[u8]) -> Option<Action> {
    let obj = liaison_protocol::SignedObject::parse(body, liaison_protocol::action::MAX_ACTION_LEN)
        .ok()?;
    (obj.typ() == liaison_protocol::cose::TYP_ACTION)
        .then(|| Action::decode(obj.payload()).ok())
        .flatten()
}

/// Whether a kind is a case step (carried as an officer-signed action): every kind in a
/// workflow's namespace, listed in the catalog or not (unlisted ones are refused).
pub(crate) fn is_case_kind(kind: &str) -> bool {
    workflow::reserved(kind)
}
