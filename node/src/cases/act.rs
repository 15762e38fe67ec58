//! The `act` path: an officer-signed action checked, decided under its case lock (recipients,
//! abroad flag, onward passing, the state machine) and written as one change.

use std::sync::Arc;

use base64::Engine as _;
use liaison_protocol::action::{Action, Handling, SignedAction};
use liaison_protocol::audit::{EntryKind, action_record, event_record};
use liaison_protocol::workflow::{self, KindSpec, NeedsCase, Recipients, State, Step};
use liaison_protocol::{Envelope, MessageId, NodeId};
use tracing::warn;

use super::{
    ActRefusal, ActRequest, ActResult, CONFLICT_RETRIES, Cases, Decision, Grant, Refuse, b64,
    case_index, officer_label, state_change, stored_action, verified_checks,
};
use crate::bus::SendResult;
use crate::bus::stage_outgoing;
use crate::error::{NodeError, StoreError};
use crate::store::{
    CaseRecord, Checks, Direction, LocalAction, OfficerRecord, Queued, Reader, StepDirection,
    TimelineEntry, Txn, Verified,
};

impl Cases {
    /// Logs a refused action and returns the error for the caller.
    pub(crate) async fn refuse(
        &self,
        now: u64,
        refusal: ActRefusal,
        action: Option<&SignedAction>,
    ) -> NodeError {
        let kind = refusal.audit_kind();
        let reason = crate::net::guard::truncate(&refusal.to_string(), 1000);
        warn!(node = %self.bus.id, %reason, "action refused");
        let digest = action.map(SignedAction::digest);
        let rec = event_record(&reason, None, digest.as_ref().map(|d| &d.0), None);
        if let Err(e) = self
            .bus
            .store
            .write(now, move |t| {
                t.log(kind, rec);
                Ok(())
            })
            .await
        {
            return e.into();
        }
        NodeError::Refused(Box::new(refusal))
    }

    pub(crate) async fn act(self: &Arc<Self>, req: ActRequest) -> Result<ActResult, NodeError> {
        if self.bus.cancel.is_cancelled() {
            return Err(NodeError::ShuttingDown);
        }
        self.bus.check_roster_in_force()?;
        let now = self.now();
        let bytes = b64()
            .decode(req.action.as_bytes())
            .map_err(|_| NodeError::Invalid("action is not base64".into()))?;
        let roster = self.bus.roster.get();
        let signed = match SignedAction::open(&bytes, roster.roster()) {
            Ok(s) => s,
            Err(e) => {
                let refusal = ActRefusal::DoesNotVerify(e.to_string());
                return Err(self.refuse(now, refusal, None).await);
            }
        };
        let refused = |refusal: ActRefusal| self.refuse(now, refusal, Some(&signed));
        let a = signed.action();
        if a.node != self.bus.id {
            return Err(refused(ActRefusal::OtherNode {
                action_node: a.node.clone(),
                here: self.bus.id.clone(),
            })
            .await);
        }
        let Some(officer) = signed.officer() else {
            return Err(refused(ActRefusal::NoOfficer).await);
        };
        let oid = officer.id.clone();
        match self.bus.store.peek(move |r| r.officer(&oid)).await? {
            None => {
                return Err(refused(ActRefusal::NotEnrolled {
                    officer: officer.id.clone(),
                    node: self.bus.id.clone(),
                })
                .await);
            }
            Some(rec) if Some(&rec.credential) != a.credential.as_ref() => {
                return Err(refused(ActRefusal::StaleCredential(officer.id.clone())).await);
            }
            Some(OfficerRecord {
                revoked_at: Some(at),
                ..
            }) => {
                return Err(refused(ActRefusal::OfficerRevoked {
                    officer: officer.id.clone(),
                    at,
                })
                .await);
            }
            Some(_) => {}
        }
        let spec = match workflow::check_role(&a.kind, officer.role) {
            Ok(s) => s,
            Err(e) => return Err(refused(ActRefusal::Role(e)).await),
        };
        let skew = self.bus.cfg.max_skew_ms;
        if a.at > now.saturating_add(skew) || now.saturating_sub(a.at) > self.wf.max_action_age_ms {
            return Err(refused(ActRefusal::SigningTime {
                signed_at: a.at,
                now,
            })
            .await);
        }
        if a.purpose != spec.purpose {
            return Err(refused(ActRefusal::Purpose {
                kind: a.kind.clone(),
                expected: spec.purpose.to_owned(),
                got: a.purpose.clone(),
            })
            .await);
        }
        let label = officer_label(officer);
        self.submit(signed.clone(), spec, req, Some(label), StepDirection::Sent)
            .await
    }

    /// Everything after the officer checks: recipients, handling, state machine, sealing,
    /// one store change, queueing. Also used for the node's automatic steps. Decided under
    /// the case's lock; decided again when the case moved meanwhile (a receipt for one of
    /// its steps was recorded between the read and the write).
    pub(crate) async fn submit(
        self: &Arc<Self>,
        signed: SignedAction,
        spec: &'static KindSpec,
        req: ActRequest,
        officer: Option<String>,
        direction: StepDirection,
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

    pub(crate) async fn submit_once(
        self: &Arc<Self>,
        signed: &SignedAction,
        spec: &'static KindSpec,
        req: &ActRequest,
        officer: Option<String>,
        direction: StepDirection,
    ) -> Result<ActResult, NodeError> {
        let now = self.now();
        let a = signed.action().clone();
        let guard = self.locks.lock(&a.case_ref).await;
        let d = match self
            .decide(signed, spec, req, officer, direction, now)
            .await
        {
            Ok(d) => d,
            Err(refusal) => {
                // Refusals are logged after the lock is released: never a flush under it.
                drop(guard);
                return Err(match refusal {
                    Refuse::Audit(refusal) => self.refuse(now, refusal, Some(signed)).await,
                    Refuse::Policy(e, to) => {
                        let rec = event_record(&e.to_string(), Some(to.as_str()), None, None);
                        if let Err(se) = self
                            .bus
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
        let widening = direction == StepDirection::Widened;
        let case_ref = a.case_ref.clone();
        let me = self.bus.id.clone();
        let retention = self.bus.body_retention_ms;
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
                    return Ok(Err(ActRefusal::EnrollmentChanged(id.clone())));
                }
            }
            for (m, provider, to) in &grants {
                if !t.granted(m, provider, to)? {
                    return Ok(Err(ActRefusal::PermissionWithdrawn {
                        message: m.clone(),
                        provider: provider.clone(),
                        to: to.clone(),
                    }));
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
        let staged = self.bus.store.stage(now, change).await;
        drop(guard);
        let queued = match staged?.durable().await? {
            Ok(q) => q,
            Err(refusal) => return Err(self.refuse(now, refusal, Some(signed)).await),
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
            self.bus.enqueue(&hop, q);
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
    pub(crate) async fn decide(
        &self,
        signed: &SignedAction,
        spec: &'static KindSpec,
        req: &ActRequest,
        officer: Option<String>,
        direction: StepDirection,
        now: u64,
    ) -> Result<Decision, Refuse> {
        let a = signed.action().clone();
        let roster = self.bus.roster.get();
        let r = roster.roster();
        let cr = a.case_ref.clone();
        let existing = self.bus.store.peek(move |rd| rd.case(&cr)).await?;
        let base_rev = existing.as_ref().map(|e| e.rev);
        let digest = signed.digest();
        let widening = direction == StepDirection::Widened;
        if !widening
            && existing
                .as_ref()
                .is_some_and(|e| e.timeline.iter().any(|t| t.action == digest.to_hex()))
        {
            return Err(Refuse::Audit(ActRefusal::AlreadySubmitted {
                kind: a.kind.clone(),
                case: a.case_ref.clone(),
            }));
        }
        // The consent record lives in the case the owner opened here: a nationality request
        // cannot open a case of its own on the sending side.
        if spec.needs_case == NeedsCase::AtSender && existing.is_none() {
            return Err(Refuse::Audit(ActRefusal::CaseNotOpenHere(
                a.case_ref.clone(),
            )));
        }
        // An alert is issued once; later news goes out as alert.update.
        if spec.reissued && existing.is_some() && !widening {
            return Err(Refuse::Audit(ActRefusal::AlertIssued(a.case_ref.clone())));
        }
        // What the step is derived from must be held and readable, whoever receives it.
        if let Some(Err(reason)) = self.onward(&a, vec![None]).await?.pop() {
            return Err(Refuse::Audit(ActRefusal::Onward(reason)));
        }
        let alerted: Vec<NodeId> = existing
            .as_ref()
            .map(|e| e.alerted.clone())
            .unwrap_or_default();
        let mut skipped: Vec<NodeId> = Vec::new();

        // Who receives it.
        let recipients: Vec<NodeId> = if spec.local {
            if !req.to.is_empty() {
                return Err(Refuse::Audit(ActRefusal::LocalOnly(a.kind.clone())));
            }
            Vec::new()
        } else if !req.to.is_empty() {
            let mut to = req.to.clone();
            to.sort();
            to.dedup();
            // Widening sends only to units not reached yet.
            to.retain(|t| !widening || !alerted.contains(t));
            to
        } else if spec.recipients == Recipients::AlertRadius {
            let candidates = alert_targets(&a, r, &self.bus.id, now)
                .map_err(|reason| Refuse::Audit(ActRefusal::AlertTargets(reason)))?;
            self.onward_filter(&a, candidates).await?
        } else if spec.recipients == Recipients::Alerted {
            // Updates and cancellations go to every unit alerted so far (that is still a
            // member reachable now); when none was reached they are recorded here (and stop
            // the widening).
            let (reach, gone): (Vec<NodeId>, Vec<NodeId>) =
                alerted.iter().cloned().partition(|t| {
                    r.check_send(&self.bus.id, t, &a.kind).is_ok()
                        && r.next_hop(&self.bus.id, t).is_ok()
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
        if recipients.contains(&self.bus.id) {
            return Err(Refuse::Audit(ActRefusal::ToSelf));
        }

        // Handling: abroad flag and onward passing, per recipient.
        let my_country = r.member(&self.bus.id).map(|m| m.country.clone());
        for to in &recipients {
            let their = r.member(to).map(|m| m.country.clone());
            if !a.abroad && their.is_some() && their != my_country {
                return Err(Refuse::Audit(ActRefusal::NotForAbroad {
                    to: to.clone(),
                    kind: a.kind.clone(),
                }));
            }
        }
        let mut grants = Vec::new();
        for check in self
            .onward(&a, recipients.iter().cloned().map(Some).collect())
            .await?
        {
            match check {
                Ok(g) => grants.extend(g),
                Err(reason) => return Err(Refuse::Audit(ActRefusal::Onward(reason))),
            }
        }

        // The state machine, once per recipient (fan-out steps are no-ops after the first).
        let before = existing.as_ref().map(|e| e.case.clone());
        let mut case = before.clone();
        let targets: Vec<NodeId> = if recipients.is_empty() {
            vec![self.bus.id.clone()]
        } else {
            recipients.clone()
        };
        for to in &targets {
            let step = Step {
                case_ref: &a.case_ref,
                kind: &a.kind,
                from: &self.bus.id,
                to,
                at: a.at,
                doc: &a.document,
                action: digest,
                officer: signed.actor(),
            };
            match workflow::apply(case.as_ref(), &step, r) {
                Ok(next) => case = Some(next),
                Err(e) => return Err(Refuse::Audit(ActRefusal::Workflow(e))),
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
                .check_send(&self.bus.id, to, &a.kind)
                .and_then(|()| r.next_hop(&self.bus.id, to))
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
                self.bus.seal(
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
        if spec.reissued && record.alert_action.is_none() {
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
        if (spec.local || recipients.is_empty()) && !spec.reissued {
            // Not sent, so no message body holds it: kept with the case until its
            // retention ends (a repatriation case's consent record).
            record.local_actions.push(LocalAction {
                at: now,
                retain_ms: a.retention_days.saturating_mul(24 * 3600 * 1000),
                action: signed.bytes().to_vec(),
            });
        }
        for to in &recipients {
            if spec.recipients != Recipients::Named && !record.alerted.contains(to) {
                record.alerted.push(to.clone());
            }
        }
        record.timeline.push(TimelineEntry {
            at: a.at,
            kind: a.kind.clone(),
            direction: if recipients.is_empty() {
                StepDirection::Local
            } else {
                direction
            },
            from: self.bus.id.clone(),
            to: recipients.clone(),
            actor: signed.actor().to_owned(),
            officer,
            message_ids: envelopes.iter().map(|e| e.header().id.to_hex()).collect(),
            action: digest.to_hex(),
            verified: Verified::Checked(match verified_checks(signed, false) {
                // Alerted units the roster no longer lets this node reach: the officers must
                // tell them another way.
                Checks::Officer {
                    officer,
                    node,
                    envelope,
                    ..
                } => Checks::Officer {
                    officer,
                    node,
                    envelope,
                    not_sent_to: skipped.clone(),
                },
                other => other,
            }),
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
    pub(crate) async fn onward(
        &self,
        a: &Action,
        targets: Vec<Option<NodeId>>,
    ) -> Result<Vec<Result<Vec<Grant>, String>>, StoreError> {
        let a = a.clone();
        let me = self.bus.id.clone();
        let roster = self.bus.roster.get();
        self.bus
            .store
            .peek(move |rd| {
                Ok(targets
                    .iter()
                    .map(|to| check_onward(rd, &me, &a, to.as_ref(), roster.roster()))
                    .collect())
            })
            .await
    }

    /// The targets `a` may go to under the onward-passing rules.
    pub(crate) async fn onward_filter(
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
}

/// H2 material passes on only to its provider or with the provider's signed grant. The
/// check follows `derived_from` through this node's own messages (material derived from
/// H2 material is still that material) up to a depth of 8; a message this node only
/// relayed is not its to pass on.
pub(crate) fn check_onward(
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
            if rec.direction == Direction::Outgoing && !workflow::reserved(&h.kind) {
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
pub(crate) fn alert_targets(
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
pub(crate) fn reachable(
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
