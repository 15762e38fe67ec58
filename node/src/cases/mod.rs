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

mod act;
mod officers;
mod step;
#[cfg(test)]
mod tests;
mod tick;

pub(crate) use crate::error::ActRefusal;
use act::reachable;
pub(crate) use step::{case_index, check_rev, on_receipt, stage_case};
use tick::local_due;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use liaison_protocol::action::{Action, Officer, SignedAction};
use liaison_protocol::audit::state_change_record;
use liaison_protocol::document::Document;
use liaison_protocol::workflow::{self, Case, State};
use liaison_protocol::{Envelope, Header, NodeId, Priority, ReceiptStatus};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::bus::Bus;
use crate::bus::SendResult;
pub(crate) use crate::bus::hook::StepRefusal;
use crate::bus::hook::{CaseHook, HookFuture, StagedStep};
use crate::config::WorkflowConfig;
use crate::error::{NodeError, StoreError};
use crate::locks::{KeyedGuard, KeyedLocks};
use crate::store::{CaseRecord, Checks, OfficerRecord, TimelineEntry, Txn};

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
pub(crate) const ALERT_RECHECK_MS: u64 = 60_000;

/// Most due cases one tick looks at (the rest wait for the next tick).
pub(crate) const TICK_BATCH: usize = 1024;

/// How often a decision on a case that moved meanwhile is taken again.
pub(crate) const CONFLICT_RETRIES: usize = 4;

pub(crate) fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

pub(crate) fn officer_label(o: &Officer) -> String {
    format!(
        "{} ({}, no. {}, {})",
        o.name,
        o.role.name(),
        o.number,
        o.unit
    )
}

impl OfficerView {
    pub(crate) fn of(
        rec: &OfficerRecord,
        roster: &liaison_protocol::Roster,
    ) -> Result<Self, NodeError> {
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

/// The case workflows at this node: officers, the case locks, the ticker. They reach the bus
/// through its handle; the bus reaches them only through [`CaseHook`], installed at start.
#[derive(Debug)]
pub(crate) struct Cases {
    /// The bus: signing, roster, store, peers.
    pub(crate) bus: Arc<Bus>,
    /// Case updates are read-decide-stage: one at a time per case.
    pub(crate) locks: KeyedLocks,
    /// One deadline / alert tick at a time.
    pub(crate) tick_lock: tokio::sync::Mutex<()>,
    /// Workflow settings.
    pub(crate) wf: WorkflowConfig,
}

impl Cases {
    pub(crate) fn new(bus: Arc<Bus>, wf: WorkflowConfig) -> Self {
        Self {
            bus,
            locks: KeyedLocks::default(),
            tick_lock: tokio::sync::Mutex::new(()),
            wf,
        }
    }

    /// Now, by the node's clock.
    pub(crate) fn now(&self) -> u64 {
        self.bus.now()
    }
}

impl CaseHook for Cases {
    fn lock<'a>(&'a self, case_ref: &'a str) -> HookFuture<'a, KeyedGuard> {
        Box::pin(self.locks.lock(case_ref))
    }

    fn check_step<'a>(
        &'a self,
        env: &'a Envelope,
        body: &'a [u8],
    ) -> HookFuture<'a, Result<Box<dyn StagedStep>, StepRefusal>> {
        Box::pin(async move {
            let cr = env.header().case_ref.clone().unwrap_or_default();
            // Read from the applied state: the case lock is not held across a flush, and the
            // change that stores the step checks the revision again.
            let existing = self
                .bus
                .store
                .peek(move |r| r.case(&cr))
                .await
                .map_err(StepRefusal::Unavailable)?;
            let update = self.check_case_step(env, body, existing)?;
            Ok(Box::new(update) as Box<dyn StagedStep>)
        })
    }

    fn on_receipt(
        &self,
        t: &mut Txn<'_>,
        h: &Header,
        status: &ReceiptStatus,
        now: u64,
    ) -> Result<(), StoreError> {
        on_receipt(t, h, status, now)
    }
}

impl StagedStep for CaseUpdate {
    fn check(&self, t: &Txn<'_>) -> Result<(), StoreError> {
        check_rev(t, self)
    }

    fn stage(self: Box<Self>, t: &mut Txn<'_>) -> Result<(), StoreError> {
        stage_case(t, *self)
    }
}

impl Cases {
    /// Every officer enrolled here.
    pub(crate) async fn officers(&self) -> Result<Vec<OfficerView>, NodeError> {
        let roster = self.bus.roster.get();
        self.bus
            .store
            .read(|r| r.officers())
            .await?
            .iter()
            .map(|(_, r)| OfficerView::of(r, roster.roster()))
            .collect()
    }

    /// Every case this node holds.
    pub(crate) async fn cases(&self) -> Result<Vec<Case>, NodeError> {
        Ok(self
            .bus
            .store
            .read(|r| r.cases())
            .await?
            .into_iter()
            .map(|(_, r)| r.case)
            .collect())
    }

    /// One case with its timeline.
    pub(crate) async fn case(&self, case_ref: &str) -> Result<Option<CaseView>, NodeError> {
        let cr = case_ref.to_owned();
        Ok(self
            .bus
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
    pub(crate) async fn annual_figures(&self, year: i32) -> Result<Document, NodeError> {
        let cases = self.cases().await?;
        workflow::annual_figures(&cases, &self.bus.id, year, self.now())
            .map_err(|e| NodeError::Invalid(e.to_string()))
    }

    pub(crate) fn spawn_case_ticker(self: &Arc<Self>, tick_ms: u64) {
        let node = self.clone();
        let mut ticker = node
            .bus
            .clock
            .ticker(Duration::from_millis(tick_ms.max(50)));
        self.bus.tasks.spawn(async move {
            loop {
                let all = tokio::select! {
                    _ = ticker.tick() => false,
                    // New members may be within an active alert's radius.
                    () = node.bus.roster_changed.notified() => true,
                    () = node.bus.cancel.cancelled() => break,
                };
                if let Err(e) = node.case_tick(node.now(), all).await {
                    warn!(node = %node.bus.id, error = %e, "cannot check case deadlines");
                }
            }
        });
    }
}

/// Why an action is refused, decided under the case lock and logged after it is released.
pub(crate) enum Refuse {
    /// An audit entry of the refusal's kind with its reason (and the action's digest).
    Audit(ActRefusal),
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
pub(crate) struct Decision {
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

/// What verifying `s` checked; `envelope` when its envelope was verified too (received).
pub(crate) fn verified_checks(s: &SignedAction, envelope: bool) -> Checks {
    match s.officer() {
        Some(o) => Checks::Officer {
            officer: o.id.clone(),
            node: o.node.clone(),
            envelope,
            not_sent_to: Vec::new(),
        },
        None => Checks::Node {
            node: s.action().node.clone(),
            envelope,
        },
    }
}

pub(crate) fn state_change(
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
pub(crate) fn stored_action(body: &[u8]) -> Option<Action> {
    let obj = liaison_protocol::SignedObject::parse(body, liaison_protocol::action::MAX_ACTION_LEN)
        .ok()?;
    (obj.typ() == liaison_protocol::cose::TYP_ACTION)
        .then(|| Action::decode(obj.payload()).ok())
        .flatten()
}

/// A granted onward-passing permission a step relied on: (message id hex, provider,
/// recipient).
pub(crate) type Grant = (String, NodeId, NodeId);
