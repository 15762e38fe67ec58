//! A. Cross-province case assistance check: requester (`opened_by`) and assisting bureau
//! (`counterpart`).

use super::catalog::SEVEN_DAY_CHECKS;
use super::{
    AssistDetail, Case, DAY_MS, Detail, State, Step, Workflow, WorkflowError, counterpart,
    direction, existing, expect_state, fresh, not_local, open, opt_text, texts,
};
use State::{
    Accepted, Answered, Clarification, Closed, Received, Referred, RefusedIncomplete, Sent,
};

/// Time allowed for identity, age and criminal-record checks.
pub(super) const CHECK_DEADLINE_MS: u64 = 7 * DAY_MS;

const WAITING: &[State] = &[Sent, Received, Accepted, Clarification];

pub(super) fn apply(case: Option<&Case>, step: &Step<'_>) -> Result<Case, WorkflowError> {
    let doc = step.doc;
    if step.kind == "assist.request" {
        fresh(case, step)?;
        not_local(step)?;
        let action = doc.text("action").unwrap_or_default();
        let deadline = if SEVEN_DAY_CHECKS.contains(&action) {
            if doc.has("deadline") {
                return Err(WorkflowError::Deadline(format!(
                    "an {action} is answered within 7 days by rule: leave the deadline out"
                )));
            }
            step.at.saturating_add(CHECK_DEADLINE_MS)
        } else {
            let d = doc
                .uint("deadline")
                .ok_or_else(|| WorkflowError::MissingField {
                    field: "deadline".into(),
                    help: format!("a {action} request needs a deadline (answer due, Unix ms)"),
                })?;
            if d <= step.at {
                return Err(WorkflowError::Deadline(format!(
                    "deadline {d} is not after the request time {}",
                    step.at
                )));
            }
            d
        };
        let mut c = open(
            step,
            Workflow::Assist,
            Sent,
            Some(step.to.clone()),
            Detail::Assist(AssistDetail {
                request_no: doc.text("request_no").unwrap_or_default().to_owned(),
                case_no: doc.text("case_no").unwrap_or_default().to_owned(),
                action: action.to_owned(),
                ..AssistDetail::default()
            }),
        );
        c.deadline = Some(deadline);
        return Ok(c);
    }

    let assistant_kind = matches!(
        step.kind,
        "assist.accept"
            | "assist.clarify"
            | "assist.answer"
            | "assist.refuse"
            | "assist.custody_notice"
            | "assist.refer"
    );
    let c = existing(
        case,
        step,
        if assistant_kind {
            "answers a request that was never sent"
        } else {
            "follows a request that was never sent"
        },
    )?;
    let Detail::Assist(d) = &c.detail else {
        return Err(super::rule(step, "the case has no assistance data"));
    };
    let requester = &c.opened_by;
    let assistant = counterpart(c, step)?;
    if assistant_kind {
        direction(
            c,
            step,
            assistant,
            requester,
            "only the assisting bureau sends it, to the requester",
        )?;
    } else {
        direction(
            c,
            step,
            requester,
            assistant,
            "only the requesting bureau sends it, to the assisting bureau",
        )?;
    }
    let mut next = c.clone();
    let mut det = d.clone();
    match step.kind {
        "assist.accept" => {
            // From `sent` too: the accept may overtake the delivery receipt.
            expect_state(c, step, &[Sent, Received])?;
            next.state = Accepted;
            det.accepted_at = Some(step.at);
            det.assigned_department = opt_text(doc, "assigned_department");
            det.assigned_officer = opt_text(doc, "assigned_officer");
        }
        "assist.clarify" => {
            expect_state(c, step, &[Accepted])?;
            next.state = Clarification;
            det.clarifications = det.clarifications.saturating_add(1);
        }
        "assist.clarification" => {
            expect_state(c, step, &[Clarification])?;
            next.state = Accepted;
        }
        "assist.answer" => {
            expect_state(c, step, &[Accepted, Clarification])?;
            next.state = Answered;
            next.overdue = false;
            det.answered_at = Some(step.at);
            det.answered_late = c.deadline.is_some_and(|dl| step.at > dl);
        }
        "assist.refuse" => {
            expect_state(c, step, WAITING)?;
            let reason = doc.text("reason_code").unwrap_or_default();
            if reason != "incomplete_papers" {
                return Err(WorkflowError::RefusalReason(super::catalog::quoted_raw(
                    reason,
                )));
            }
            next.state = RefusedIncomplete;
            next.overdue = false;
            det.missing = texts(doc, "missing");
        }
        "assist.refer" => {
            expect_state(c, step, WAITING)?;
            next.state = Referred;
            next.overdue = false;
            det.referred_to = opt_text(doc, "referred_to");
        }
        "assist.custody_notice" => {
            expect_state(c, step, &[Accepted])?;
            det.custody_notified_at = Some(step.at);
        }
        "assist.extend" => {
            expect_state(c, step, WAITING)?;
            let new = doc.uint("new_deadline").unwrap_or_default();
            let current = c.deadline.unwrap_or_default();
            if new <= current {
                return Err(WorkflowError::Deadline(format!(
                    "an extension must move the deadline forward: new_deadline {new} is not after the current deadline {current}"
                )));
            }
            if new <= step.at {
                return Err(WorkflowError::Deadline(format!(
                    "new_deadline {new} is already past (extension signed at {})",
                    step.at
                )));
            }
            next.deadline = Some(new);
            next.overdue = false;
            det.extensions = det.extensions.saturating_add(1);
        }
        "assist.close" => {
            expect_state(c, step, &[Answered, RefusedIncomplete, Referred])?;
            next.state = Closed;
        }
        _ => return Err(WorkflowError::UnknownKind(step.kind.to_owned())),
    }
    next.detail = Detail::Assist(det);
    Ok(next)
}
