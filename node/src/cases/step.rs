//! The receiving side of a case step (checked before its receipt) and what a receipt does to
//! the sender's copy; the case record and its index as staged in a store change.

use liaison_protocol::action::SignedAction;
use liaison_protocol::audit::EntryKind;
use liaison_protocol::workflow::{self, NeedsCase, State, Step, Workflow, WorkflowError};
use liaison_protocol::{Envelope, NodeId};
use tracing::warn;

use super::{
    ALERT_RECHECK_MS, CaseUpdate, Cases, StepRefusal, local_due, officer_label, state_change,
    verified_checks,
};
use crate::error::{NodeError, StoreError};
use crate::store::{CaseIndex, CaseRecord, Checks, StepDirection, TimelineEntry, Txn, Verified};

impl Cases {
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
        let roster = self.bus.roster.get();
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
            .saturating_add(self.bus.cfg.max_skew_ms);
        if !spec.reissued && h.sent_at.abs_diff(a.at) > window {
            return Err(Final(format!(
                "the action was signed at {} but sent at {}: too far apart",
                a.at, h.sent_at
            )));
        }
        let theirs = r.member(&h.from).map(|m| &m.country);
        let mine = r.member(&self.bus.id).map(|m| &m.country);
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
        if existing.is_none() && spec.needs_case == NeedsCase::AtReceiver {
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
            to: &self.bus.id,
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
        if spec.attaches_supervisor {
            // A (new) supervisor is told of an overdue case even if an earlier one was.
            record.overdue_notified = false;
        }
        record.timeline.push(TimelineEntry {
            at: a.at,
            kind: a.kind.clone(),
            direction: if signed.officer().is_some() {
                StepDirection::Received
            } else {
                StepDirection::Automatic
            },
            from: h.from.clone(),
            to: vec![self.bus.id.clone()],
            actor: signed.actor().to_owned(),
            officer: signed.officer().map(officer_label),
            message_ids: vec![h.id.to_hex()],
            action: signed.digest().to_hex(),
            verified: Verified::Checked(verified_checks(&signed, true)),
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
    pub(crate) async fn write_case<T, F>(
        &self,
        guard: crate::locks::KeyedGuard,
        now: u64,
        f: F,
    ) -> Result<T, NodeError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let staged = self.bus.store.stage(now, f).await;
        drop(guard);
        Ok(staged?.durable().await?)
    }
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

/// Receiver side of [`Bus::check_case_step`], inside the change that stores the message
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
    if !workflow::reserved(&h.kind) {
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
                direction: StepDirection::Refused,
                from: h.to.clone(),
                to: vec![t.node().clone()],
                actor: h.to.to_string(),
                officer: None,
                message_ids: vec![h.id.to_hex()],
                action: String::new(),
                verified: Verified::Checked(Checks::RejectionReceipt {
                    from: h.to.clone(),
                    reason: reason.clone(),
                }),
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
