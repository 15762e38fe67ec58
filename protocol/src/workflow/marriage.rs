//! B. Foreign-marriage identity check: marriage registry (`opened_by`) and exit-entry /
//! border station (`counterpart`); the referral goes to a third node, the local police.

use super::{
    Case, Detail, HOUR_MS, MarriageDetail, State, Step, Workflow, WorkflowError, counterpart,
    direction, existing, expect_state, fresh, member, not_local, open, opt_text, texts,
    wrong_party,
};
use crate::roster::Roster;
use State::{AnsweredDiscrepancy, AnsweredMatch, Closed, Referred, Submitted};

/// Default time for a marriage check answer (registration is same-day).
pub(super) const MARRIAGE_DEADLINE_MS: u64 = 2 * HOUR_MS;

pub(super) fn apply(
    case: Option<&Case>,
    step: &Step<'_>,
    roster: &Roster,
) -> Result<Case, WorkflowError> {
    let doc = step.doc;
    match step.kind {
        "marriage_check.request" => {
            fresh(case, step)?;
            not_local(step)?;
            let deadline = match doc.uint("deadline") {
                Some(d) if d <= step.at => {
                    return Err(WorkflowError::Deadline(format!(
                        "deadline {d} is not after the request time {}",
                        step.at
                    )));
                }
                Some(d) => d,
                None => step.at.saturating_add(MARRIAGE_DEADLINE_MS),
            };
            let mut c = open(
                step,
                Workflow::Marriage,
                Submitted,
                Some(step.to.clone()),
                Detail::Marriage(MarriageDetail {
                    request_no: opt_text(doc, "request_no"),
                    ..MarriageDetail::default()
                }),
            );
            c.deadline = Some(deadline);
            return Ok(c);
        }
        "marriage_check.referral" => {
            not_local(step)?;
            member(
                roster,
                step,
                step.to,
                "the recipient",
                Some("public_security"),
            )?;
            let Some(c) = case else {
                // The police node (or a registry referring without a check) opens its case.
                return Ok(open(
                    step,
                    Workflow::Marriage,
                    Referred,
                    Some(step.to.clone()),
                    Detail::Marriage(MarriageDetail {
                        request_no: opt_text(doc, "request_no"),
                        referred_to: Some(step.to.clone()),
                        reason_codes: texts(doc, "reason_codes"),
                        ..MarriageDetail::default()
                    }),
                ));
            };
            if step.from != &c.opened_by || c.is_party(step.to) {
                return Err(wrong_party(
                    c,
                    step,
                    "only the registry refers, to a police node that is not already a party",
                ));
            }
            expect_state(c, step, &[AnsweredMatch, AnsweredDiscrepancy])?;
            let mut next = c.clone();
            next.state = Referred;
            if let Detail::Marriage(d) = &mut next.detail {
                d.referred_to = Some(step.to.clone());
                d.reason_codes = texts(doc, "reason_codes");
            }
            return Ok(next);
        }
        _ => {}
    }
    let c = existing(
        case,
        step,
        "follows a marriage check that was never submitted",
    )?;
    let Detail::Marriage(d) = &c.detail else {
        return Err(super::rule(step, "the case has no marriage-check data"));
    };
    let registry = &c.opened_by;
    let other = counterpart(c, step)?;
    let mut next = c.clone();
    let mut det = d.clone();
    match step.kind {
        "marriage_check.answer" => {
            direction(
                c,
                step,
                other,
                registry,
                "only the exit-entry office answers, to the registry",
            )?;
            expect_state(c, step, &[Submitted])?;
            let found = doc.bool("record_found").unwrap_or(false);
            let lawful = doc.bool("lawful_entry").unwrap_or(false);
            let flags = texts(doc, "flags");
            next.state = if found && lawful && flags.is_empty() {
                AnsweredMatch
            } else {
                AnsweredDiscrepancy
            };
            next.overdue = false;
            det.record_found = Some(found);
            det.lawful_entry = Some(lawful);
            det.flags = flags;
            det.answered_at = Some(step.at);
        }
        "marriage_check.close" => {
            let by_registry = step.from == registry
                && (step.to == step.from
                    || step.to == other
                    || d.referred_to.as_ref() == Some(step.to));
            // The police node closes its referral locally.
            let by_police = c.state == Referred
                && step.from == other
                && step.to == other
                && d.referred_to.as_ref() == Some(other);
            if !by_registry && !by_police {
                return Err(wrong_party(
                    c,
                    step,
                    "the registry closes it (locally or towards the other parties)",
                ));
            }
            // A repeated close is the fan-out of the same closure.
            expect_state(
                c,
                step,
                &[
                    Submitted,
                    AnsweredMatch,
                    AnsweredDiscrepancy,
                    Referred,
                    Closed,
                ],
            )?;
            next.state = Closed;
            next.overdue = false;
        }
        _ => return Err(WorkflowError::UnknownKind(step.kind.to_owned())),
    }
    next.detail = Detail::Marriage(det);
    Ok(next)
}
