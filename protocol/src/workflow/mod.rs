//! The officers' workflows as pure state machines (docs/domain.md §3): assistance checks and
//! bulletins, foreign-marriage identity checks, repatriation cases, missing-child alerts,
//! supervision, annual reports and onward-passing permissions.
//!
//! Both nodes of a case run the same machine over the same signed steps: the sender applies
//! a step before it sends it (an illegal step is refused and nothing is sent), the receiver
//! applies it when it arrives. [`apply`] never mutates its input: it returns the next state
//! or an error, so a refused step changes nothing.
//!
//! CONTRACT (used by node/): the items below are the interface; the per-workflow modules
//! implement it.
//!
//! Fan-out: one-to-many kinds (`bulletin.issue`, `bulletin.close`, `alert.issue`,
//! `alert.update`, `alert.cancel`, `marriage_check.close`) are sent as one message per
//! recipient with the same case reference; the issuer's node applies each of them, so a
//! repeated issue / close by the same issuer is accepted without changing the state (the
//! recipient is remembered).

pub mod catalog;
#[doc(hidden)]
pub mod testing;

mod alert;
mod assist;
mod bulletin;
mod case;
mod error;
mod marriage;
mod permission;
mod repatriation;
mod report;
mod supervision;

pub use alert::{alert_next_widening, alert_origin_of, alert_radius_m, alert_recipients};
pub use case::{
    AlertDetail, AssistDetail, BulletinDetail, Case, Detail, HandoverProposal, HandoverSignature,
    MarriageDetail, PermissionDetail, PermissionUse, RepatriationDetail, ReportDetail, State,
    Supervision, SupervisionDetail,
};
pub use catalog::{
    FieldSpec, FieldType, KindSpec, NeedsCase, Recipients, Role, Workflow, catalog, example,
    reserved, spec, validate,
};
pub use error::WorkflowError;
pub use permission::{permission_subject, permission_use};
pub use report::{annual_figures, year_of};

use crate::document::Document;
use crate::ids::{Digest, NodeId};
use crate::roster::{Member, Roster};

/// One signed step of a case, as the state machine sees it.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// Case reference (the envelope's case reference).
    pub case_ref: &'a str,
    /// Message kind, e.g. `assist.request`.
    pub kind: &'a str,
    /// Node that sends the step.
    pub from: &'a NodeId,
    /// Node the step is addressed to (equal to `from` for local steps such as
    /// `repatriation.open`).
    pub to: &'a NodeId,
    /// When the officer signed it, Unix ms.
    pub at: u64,
    /// The business document (already checked against the kind's schema by [`validate`]).
    pub doc: &'a Document,
    /// Digest of the officer-signed action carrying the step.
    pub action: Digest,
    /// Who signed: officer id, or the node id for automatic steps.
    pub officer: &'a str,
}

/// One day in ms.
pub const DAY_MS: u64 = 24 * 3600 * 1000;
/// One hour in ms.
pub const HOUR_MS: u64 = 3600 * 1000;

/// The whole state machine: the next state of `case` (None when the case does not exist
/// yet) after `step`, or why the step is illegal. Pure and deterministic: both nodes compute
/// the same result from the same step. Checks the kind's schema ([`validate`]), whether the
/// kind opens a case or needs an existing one, that `from` / `to` are the case's parties in
/// the right direction, the transition table and the workflow rules. Never returns a case
/// in a state its workflow does not have.
pub fn apply(case: Option<&Case>, step: &Step<'_>, roster: &Roster) -> Result<Case, WorkflowError> {
    let spec = validate(step.kind, step.doc)?;
    if let Some(c) = case {
        if c.case_ref != step.case_ref {
            return Err(WorkflowError::CaseMismatch {
                step: step.case_ref.to_owned(),
                case: c.case_ref.clone(),
            });
        }
        // Supervision steps also apply to the supervised business case.
        if spec.workflow != Workflow::Supervision && c.workflow != spec.workflow {
            return Err(WorkflowError::WrongWorkflow {
                case_ref: c.case_ref.clone(),
                kind: step.kind.to_owned(),
                workflow: c.workflow.name(),
            });
        }
    }
    if spec.local && step.from != step.to {
        return Err(rule(
            step,
            format!(
                "a local step (from must equal to), but it goes from {} to {}",
                step.from, step.to
            ),
        ));
    }
    let mut next = match spec.workflow {
        Workflow::Assist => assist::apply(case, step)?,
        Workflow::Bulletin => bulletin::apply(case, step)?,
        Workflow::Marriage => marriage::apply(case, step, roster)?,
        Workflow::Repatriation => repatriation::apply(case, step, roster)?,
        Workflow::Alert => alert::apply(case, step, roster)?,
        Workflow::Supervision => supervision::apply(case, step, roster)?,
        Workflow::Report => report::apply(case, step, roster)?,
        Workflow::Permission => permission::apply(case, step)?,
    };
    if !next.workflow.states().contains(&next.state) {
        return Err(rule(
            step,
            format!(
                "would leave a {} case in state {}",
                next.workflow, next.state
            ),
        ));
    }
    // Never backwards (a widened alert re-applies its original issue).
    next.updated_at = case.map_or(step.at, |c| c.updated_at.max(step.at));
    next.steps = case.map_or(0, |c| c.steps).saturating_add(1);
    Ok(next)
}

/// Role check: whether an officer with `role` may sign `kind`.
pub fn check_role(kind: &str, role: Role) -> Result<&'static KindSpec, WorkflowError> {
    let spec = spec(kind).ok_or_else(|| WorkflowError::UnknownKind(kind.to_owned()))?;
    if spec.automatic {
        return Err(WorkflowError::Rule {
            kind: kind.to_owned(),
            problem: "signed by the node itself, never by an officer".into(),
        });
    }
    if !spec.roles.contains(&role) {
        return Err(WorkflowError::RoleNotAllowed {
            role: role.name(),
            kind: kind.to_owned(),
            allowed: spec
                .roles
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(spec)
}

/// Marks the case overdue at `now` if its deadline passed while still waiting; returns the
/// new case only when it changed.
pub fn mark_overdue(case: &Case, now: u64) -> Option<Case> {
    (!case.overdue && case.is_overdue_at(now)).then(|| Case {
        overdue: true,
        ..case.clone()
    })
}

/// The overdue flag recomputed at `now` when it no longer holds (a supervision's new due date,
/// or its end): the case with the flag cleared, or None when nothing changes. Steps that end
/// the wait clear it themselves.
pub fn clear_overdue(case: &Case, now: u64) -> Option<Case> {
    (case.overdue && !case.is_overdue_at(now)).then(|| Case {
        overdue: false,
        ..case.clone()
    })
}

/// The sender has its delivery receipt for the step that opened the case (or the receiver
/// has just applied it): assist `sent` → `received`, nothing else changes. None when
/// nothing changes.
pub fn delivered(case: &Case) -> Option<Case> {
    (case.workflow == Workflow::Assist && case.state == State::Sent).then(|| Case {
        state: State::Received,
        ..case.clone()
    })
}

// ---- helpers shared by the workflow modules ------------------------------------------------

/// A new case opened by `step` (steps and updated_at are set by [`apply`]).
fn open(
    step: &Step<'_>,
    workflow: Workflow,
    state: State,
    counterpart: Option<NodeId>,
    detail: Detail,
) -> Case {
    Case {
        case_ref: step.case_ref.to_owned(),
        workflow,
        state,
        opened_by: step.from.clone(),
        counterpart,
        opened_at: step.at,
        updated_at: step.at,
        deadline: None,
        overdue: false,
        supervisor: None,
        steps: 0,
        detail,
    }
}

/// The existing case, or the unknown-case error.
fn existing<'c>(
    case: Option<&'c Case>,
    step: &Step<'_>,
    why: &str,
) -> Result<&'c Case, WorkflowError> {
    case.ok_or_else(|| WorkflowError::UnknownCase {
        case_ref: step.case_ref.to_owned(),
        kind: step.kind.to_owned(),
        why: why.to_owned(),
    })
}

/// Refuses to open a case that exists.
fn fresh(case: Option<&Case>, step: &Step<'_>) -> Result<(), WorkflowError> {
    match case {
        None => Ok(()),
        Some(c) => Err(exists(c, step)),
    }
}

fn exists(c: &Case, step: &Step<'_>) -> WorkflowError {
    WorkflowError::CaseExists {
        case_ref: c.case_ref.clone(),
        kind: step.kind.to_owned(),
        workflow: c.workflow.name(),
        state: c.state.name(),
    }
}

/// Refuses the step unless the case is in one of `allowed`.
fn expect_state(c: &Case, step: &Step<'_>, allowed: &[State]) -> Result<(), WorkflowError> {
    if allowed.contains(&c.state) {
        Ok(())
    } else {
        Err(WorkflowError::IllegalTransition {
            kind: step.kind.to_owned(),
            state: c.state.name(),
            expected: allowed
                .iter()
                .map(State::name)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

fn wrong_party(c: &Case, step: &Step<'_>, rule: impl Into<String>) -> WorkflowError {
    WorkflowError::WrongParty {
        kind: step.kind.to_owned(),
        from: step.from.to_string(),
        to: step.to.to_string(),
        parties: c.parties(),
        rule: rule.into(),
    }
}

/// Refuses the step unless it goes from `from` to `to`.
fn direction(
    c: &Case,
    step: &Step<'_>,
    from: &NodeId,
    to: &NodeId,
    rule: &str,
) -> Result<(), WorkflowError> {
    if step.from == from && step.to == to {
        Ok(())
    } else {
        Err(wrong_party(c, step, rule))
    }
}

/// The case's counterpart, or a wrong-party error when it has none yet.
fn counterpart<'c>(c: &'c Case, step: &Step<'_>) -> Result<&'c NodeId, WorkflowError> {
    c.counterpart
        .as_ref()
        .ok_or_else(|| wrong_party(c, step, "the case has no counterpart yet"))
}

fn rule(step: &Step<'_>, problem: impl Into<String>) -> WorkflowError {
    WorkflowError::Rule {
        kind: step.kind.to_owned(),
        problem: problem.into(),
    }
}

fn bad(field: &str, problem: impl Into<String>) -> WorkflowError {
    WorkflowError::BadValue {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// Refuses a step addressed to its own sender (for kinds that go to another node).
fn not_local(step: &Step<'_>) -> Result<(), WorkflowError> {
    if step.from == step.to {
        Err(rule(
            step,
            format!("goes to another node, not back to its sender {}", step.from),
        ))
    } else {
        Ok(())
    }
}

/// The roster member `node`, which must be of `agency` (when given).
fn member<'r>(
    roster: &'r Roster,
    step: &Step<'_>,
    node: &NodeId,
    side: &'static str,
    agency: Option<&'static str>,
) -> Result<&'r Member, WorkflowError> {
    let m = roster.member(node);
    match (m, agency) {
        (Some(m), Some(a)) if m.agency != a => Err(WorkflowError::WrongAgency {
            kind: step.kind.to_owned(),
            side,
            expected: a,
            node: node.to_string(),
            agency: m.agency.clone(),
        }),
        (Some(m), _) => Ok(m),
        (None, a) => Err(WorkflowError::WrongAgency {
            kind: step.kind.to_owned(),
            side,
            expected: a.unwrap_or("member"),
            node: node.to_string(),
            agency: "not in the roster".into(),
        }),
    }
}

/// A text field (validated present by the schema), owned.
fn text(doc: &Document, key: &str) -> String {
    doc.text(key).unwrap_or_default().to_owned()
}

/// An optional text field, owned.
fn opt_text(doc: &Document, key: &str) -> Option<String> {
    doc.text(key).map(str::to_owned)
}

/// The text items of a list field.
fn texts(doc: &Document, key: &str) -> Vec<String> {
    doc.list(key)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f.as_text().map(str::to_owned))
        .collect()
}

/// Minutes since midnight of an `HH:MM` text.
fn hhmm(field: &str, s: &str) -> Result<u32, WorkflowError> {
    let b = s.as_bytes();
    let ok = b.len() == 5 && b[2] == b':' && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit());
    let parse = |r: std::ops::Range<usize>| s.get(r).and_then(|p| p.parse::<u32>().ok());
    match (ok, parse(0..2), parse(3..5)) {
        (true, Some(h), Some(m)) if h < 24 && m < 60 => Ok(h * 60 + m),
        _ => Err(bad(
            field,
            format!("{} is not a time HH:MM", catalog::quoted(s)),
        )),
    }
}

#[cfg(test)]
mod tests;
