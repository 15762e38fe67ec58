//! The case ticker: deadlines and overdue marks, supervisor notices, alert widening, and the
//! end of a local step's retention, for the cases whose wake time has come.

use std::sync::Arc;

use liaison_protocol::NodeId;
use liaison_protocol::action::{Action, Handling, SignedAction};
use liaison_protocol::audit::{EntryKind, event_record, state_change_record};
use liaison_protocol::document::Document;
use liaison_protocol::workflow::{self, State, Workflow};
use tracing::warn;

use super::{ActRequest, Cases, TICK_BATCH, case_index, reachable};
use crate::error::NodeError;
use crate::store::{CaseRecord, Checks, LocalAction, StepDirection, TimelineEntry, Verified};

impl Cases {
    /// Deadlines (overdue, supervisor told), alert radii and the retention of steps
    /// recorded here: the cases whose time has come (the `t/` index), or every case with
    /// `all` (an operator's request, or every active alert after a roster change).
    pub(crate) async fn case_tick(self: &Arc<Self>, now: u64, all: bool) -> Result<(), NodeError> {
        // One tick at a time (the ticker and an operator's `CaseTick` could overlap).
        let _tick = self.tick_lock.lock().await;
        let due: Vec<String> = if all {
            self.bus
                .store
                .peek(|r| r.cases())
                .await?
                .into_iter()
                .map(|(c, _)| c)
                .collect()
        } else {
            self.bus
                .store
                .peek(move |r| r.cases_due(now, TICK_BATCH))
                .await?
                .into_iter()
                .map(|(_, c)| c)
                .collect()
        };
        for case_ref in due {
            // One bad case does not stop the others from being checked.
            if let Err(e) = self.tick_case(&case_ref, now).await {
                warn!(node = %self.bus.id, %case_ref, error = %e, "cannot check the case");
            }
            // Whatever happened, the case is scheduled for its next time.
            if let Err(e) = self.reschedule(&case_ref, now).await {
                warn!(node = %self.bus.id, %case_ref, error = %e, "cannot schedule the case");
            }
        }
        Ok(())
    }

    /// Puts every case in the ticker's and the permissions' indexes (once, for a store
    /// written before they existed), and marks the store indexed.
    pub(crate) async fn index_cases(&self) -> Result<(), NodeError> {
        let me = self.bus.id.clone();
        let retention = self.bus.body_retention_ms;
        let now = self.now();
        let refs: Vec<String> = self
            .bus
            .store
            .peek(|r| r.cases())
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let n = refs.len();
        self.bus
            .store
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
        tracing::info!(node = %self.bus.id, cases = n, "cases indexed for the ticker");
        Ok(())
    }

    pub(crate) async fn read_case(&self, case_ref: &str) -> Result<Option<CaseRecord>, NodeError> {
        let cr = case_ref.to_owned();
        Ok(self.bus.store.peek(move |r| r.case(&cr)).await?)
    }

    pub(crate) async fn tick_case(
        self: &Arc<Self>,
        case_ref: &str,
        now: u64,
    ) -> Result<(), NodeError> {
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
            .is_some_and(|s| s.node != self.bus.id);
        if rec.case.overdue && !rec.overdue_notified && supervised_elsewhere {
            self.notify_supervisor(case_ref, &rec).await?;
        } else if !rec.case.overdue && rec.overdue_notified {
            // Back on time (an extension): a later missed deadline is reported again.
            self.set_notified(case_ref, false, now).await?;
        }
        if rec.case.workflow == Workflow::Alert
            && rec.case.state == State::Active
            && rec.case.opened_by == self.bus.id
        {
            self.widen_alert(case_ref, &rec, now).await?;
        }
        if rec
            .local_actions
            .iter()
            .any(|l| local_due(l, self.bus.body_retention_ms) <= now)
        {
            self.purge_local_actions(case_ref, now).await?;
        }
        Ok(())
    }

    /// Writes the case's next wake time when it moved (nothing changed it in this tick, or
    /// time alone moved it on).
    pub(crate) async fn reschedule(&self, case_ref: &str, now: u64) -> Result<(), NodeError> {
        let guard = self.locks.lock(case_ref).await;
        let cr = case_ref.to_owned();
        let me = self.bus.id.clone();
        let retention = self.bus.body_retention_ms;
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

    pub(crate) async fn set_notified(
        &self,
        case_ref: &str,
        told: bool,
        now: u64,
    ) -> Result<(), NodeError> {
        let guard = self.locks.lock(case_ref).await;
        let cr = case_ref.to_owned();
        let me = self.bus.id.clone();
        let retention = self.bus.body_retention_ms;
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
    pub(crate) async fn mark_overdue(&self, case_ref: &str, now: u64) -> Result<(), NodeError> {
        let guard = self.locks.lock(case_ref).await;
        let cr = case_ref.to_owned();
        let me = self.bus.id.clone();
        let retention = self.bus.body_retention_ms;
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
                    direction: StepDirection::Overdue,
                    from: me.clone(),
                    to: Vec::new(),
                    actor: me.to_string(),
                    officer: None,
                    message_ids: Vec::new(),
                    action: String::new(),
                    verified: Verified::Checked(Checks::Nothing),
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
            warn!(node = %self.bus.id, %case_ref, "case {label}");
        }
        Ok(())
    }

    /// Sends the node-signed `supervision.overdue` notice to the case's supervisor.
    pub(crate) async fn notify_supervisor(
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
            federation: self.bus.federation.clone(),
            node: self.bus.id.clone(),
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
        let signed = action.sign(&self.bus.keys.signing.get());
        let req = ActRequest {
            action: String::new(),
            to: vec![sup.node.clone()],
            priority: None,
            in_reply_to: None,
        };
        // Told: not again while the case stays overdue. A refusal (policy, workflow) is
        // logged once and not repeated every tick; anything else is tried again.
        match self
            .submit(signed, spec, req, None, StepDirection::Automatic)
            .await
        {
            Ok(_) | Err(NodeError::Refused(_) | NodeError::Policy(_)) => {}
            Err(e) => return Err(e),
        }
        self.set_notified(case_ref, true, now).await
    }

    /// Sends an active alert to the units its radius has reached since the last tick.
    pub(crate) async fn widen_alert(
        self: &Arc<Self>,
        case_ref: &str,
        rec: &CaseRecord,
        now: u64,
    ) -> Result<(), NodeError> {
        let Some(bytes) = &rec.alert_action else {
            return Ok(());
        };
        let roster = self.bus.roster.get();
        let r = roster.roster();
        let signed = SignedAction::open(bytes, r)?;
        // From where the child was last seen (an update may have moved it).
        let candidates = match rec.case.alert_origin() {
            Some((origin, since)) => {
                reachable(signed.action(), r, &self.bus.id, &origin, since, now)
            }
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
        if let Err(e) = self
            .submit(signed, spec, req, None, StepDirection::Widened)
            .await
        {
            warn!(node = %self.bus.id, %case_ref, error = %e, "cannot widen the alert");
        }
        Ok(())
    }

    /// Signed actions recorded only here (no message body holds them) whose retention ended
    /// are deleted, each with a `body_purged` entry in the same change.
    pub(crate) async fn purge_local_actions(
        &self,
        case_ref: &str,
        now: u64,
    ) -> Result<(), NodeError> {
        let guard = self.locks.lock(case_ref).await;
        let cr = case_ref.to_owned();
        let me = self.bus.id.clone();
        let retention = self.bus.body_retention_ms;
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
pub(crate) fn local_due(l: &LocalAction, node_retention_ms: u64) -> u64 {
    l.at.saturating_add(l.retain_ms.min(node_retention_ms))
}
