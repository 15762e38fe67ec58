//! E. Listed supervision. On the supervisor's node the supervision is its own case
//! (`opened_by` = supervisor, `counterpart` = supervised node, state `supervising`); on the
//! supervised node it is the `supervisor` field of the business case with the same case
//! reference, whose state supervision steps never change.

use super::{
    Case, DAY_MS, Detail, State, Step, Supervision, SupervisionDetail, Workflow, WorkflowError,
    bad, existing, expect_state, member, not_local, open, rule, wrong_party,
};
use crate::roster::Roster;

pub(super) fn apply(
    case: Option<&Case>,
    step: &Step<'_>,
    roster: &Roster,
) -> Result<Case, WorkflowError> {
    let doc = step.doc;
    if step.kind == "supervision.overdue" && step.officer != step.from.as_str() {
        return Err(rule(
            step,
            format!(
                "signed by the node itself ({}), not by officer {}",
                step.from, step.officer
            ),
        ));
    }
    if step.kind == "supervision.attach" {
        not_local(step)?;
        member(roster, step, step.from, "the sender", Some("joint_meeting"))?;
        let days = doc.uint("interval_days").unwrap_or_default();
        if !(1..=366).contains(&days) {
            return Err(bad(
                "interval_days",
                format!("{days} is not a reporting interval (1 to 366 days)"),
            ));
        }
        let due = doc.uint("due");
        if let Some(d) = due {
            if d <= step.at {
                return Err(WorkflowError::Deadline(format!(
                    "due {d} is not after the attach time {}",
                    step.at
                )));
            }
        }
        let sup = Supervision {
            node: step.from.clone(),
            interval_ms: days.saturating_mul(DAY_MS),
            due,
            last_report: None,
        };
        let Some(c) = case else {
            let mut c = open(
                step,
                Workflow::Supervision,
                State::Supervising,
                Some(step.to.clone()),
                Detail::Supervision(SupervisionDetail::default()),
            );
            c.deadline = Some(step.at.saturating_add(sup.interval_ms));
            c.supervisor = Some(sup);
            return Ok(c);
        };
        let mut next = c.clone();
        if c.workflow == Workflow::Supervision {
            // Re-attach by the same supervisor: new interval / due date.
            if &c.opened_by != step.from || c.counterpart.as_ref() != Some(step.to) {
                return Err(wrong_party(
                    c,
                    step,
                    "only the supervisor changes its supervision",
                ));
            }
            expect_state(c, step, &[State::Supervising])?;
            next.deadline = Some(step.at.saturating_add(sup.interval_ms));
            next.supervisor = Some(Supervision {
                last_report: c.supervisor.as_ref().and_then(|s| s.last_report),
                ..sup
            });
            return Ok(next);
        }
        if !c.is_party(step.to) {
            return Err(wrong_party(
                c,
                step,
                "the supervisor attaches to a party of the case",
            ));
        }
        if c.state.is_terminal() {
            return Err(WorkflowError::IllegalTransition {
                kind: step.kind.to_owned(),
                state: c.state.name(),
                expected: "any open state".into(),
            });
        }
        if let Some(s) = c.supervisor.as_ref().filter(|s| &s.node != step.from) {
            return Err(rule(
                step,
                format!("the case is already supervised by {}", s.node),
            ));
        }
        next.supervisor = Some(Supervision {
            last_report: c.supervisor.as_ref().and_then(|s| s.last_report),
            ..sup
        });
        return Ok(next);
    }

    let c = existing(case, step, "refers to a case this node does not hold")?;
    let mut next = c.clone();
    if c.workflow == Workflow::Supervision {
        let Detail::Supervision(d) = &c.detail else {
            return Err(rule(step, "the case has no supervision data"));
        };
        let supervisor = &c.opened_by;
        let owner = c.counterpart.as_ref().unwrap_or(supervisor);
        let (from, to, why) = if step.kind == "supervision.close" {
            (
                supervisor,
                owner,
                "only the supervisor closes, to the supervised node",
            )
        } else {
            (
                owner,
                supervisor,
                "only the supervised node sends it, to the supervisor",
            )
        };
        if step.from != from || step.to != to {
            return Err(wrong_party(c, step, why));
        }
        expect_state(c, step, &[State::Supervising])?;
        let mut det = d.clone();
        match step.kind {
            "supervision.report" => {
                det.reports = det.reports.saturating_add(1);
                if let Some(s) = &mut next.supervisor {
                    s.last_report = Some(step.at);
                    next.deadline = Some(step.at.saturating_add(s.interval_ms));
                }
                next.overdue = false;
            }
            "supervision.overdue" => det.overdue_notices = det.overdue_notices.saturating_add(1),
            "supervision.close" => {
                next.state = State::Closed;
                next.overdue = false;
            }
            _ => return Err(WorkflowError::UnknownKind(step.kind.to_owned())),
        }
        next.detail = Detail::Supervision(det);
        return Ok(next);
    }

    // The supervised business case: only the supervision fields change.
    let Some(sup) = &c.supervisor else {
        return Err(rule(
            step,
            format!("case {} is not under supervision", c.case_ref),
        ));
    };
    let ok = if step.kind == "supervision.close" {
        step.from == &sup.node && c.is_party(step.to)
    } else {
        c.is_party(step.from) && step.to == &sup.node
    };
    if !ok {
        return Err(wrong_party(
            c,
            step,
            format!(
                "supervision steps go between {} and the supervised party",
                sup.node
            ),
        ));
    }
    match step.kind {
        "supervision.report" => {
            if let Some(s) = &mut next.supervisor {
                s.last_report = Some(step.at);
            }
        }
        "supervision.overdue" => {}
        "supervision.close" => next.supervisor = None,
        _ => return Err(WorkflowError::UnknownKind(step.kind.to_owned())),
    }
    Ok(next)
}
