//! A'. Assistance bulletin: one issuer (`opened_by`), many addressees, one message each.

use super::{
    BulletinDetail, Case, Detail, State, Step, Workflow, WorkflowError, existing, exists,
    expect_state, not_local, open, text, wrong_party,
};

pub(super) fn apply(case: Option<&Case>, step: &Step<'_>) -> Result<Case, WorkflowError> {
    if step.kind == "bulletin.issue" {
        not_local(step)?;
        return match case {
            None => Ok(open(
                step,
                Workflow::Bulletin,
                State::Published,
                None,
                Detail::Bulletin(BulletinDetail {
                    serial_no: text(step.doc, "serial_no"),
                    recipients: vec![step.to.clone()],
                    replies: 0,
                }),
            )),
            // Fan-out: the issuer's node applies the issue once per addressee.
            Some(c) if &c.opened_by == step.from => {
                expect_state(c, step, &[State::Published])?;
                let mut next = c.clone();
                if let Detail::Bulletin(d) = &mut next.detail {
                    if !d.recipients.contains(step.to) {
                        d.recipients.push(step.to.clone());
                    }
                }
                Ok(next)
            }
            Some(c) => Err(exists(c, step)),
        };
    }
    let c = existing(case, step, "follows a bulletin that was never published")?;
    let Detail::Bulletin(d) = &c.detail else {
        return Err(super::rule(step, "the case has no bulletin data"));
    };
    let mut next = c.clone();
    let mut det = d.clone();
    match step.kind {
        "bulletin.reply" => {
            if step.to != &c.opened_by
                || step.from == &c.opened_by
                || !d.recipients.contains(step.from)
            {
                return Err(wrong_party(
                    c,
                    step,
                    "only an addressee replies, to the issuer",
                ));
            }
            expect_state(c, step, &[State::Published])?;
            det.replies = det.replies.saturating_add(1);
        }
        "bulletin.close" => {
            if step.from != &c.opened_by || !d.recipients.contains(step.to) {
                return Err(wrong_party(
                    c,
                    step,
                    "only the issuer closes it, towards its addressees",
                ));
            }
            // A repeated close is the fan-out of the same withdrawal.
            expect_state(c, step, &[State::Published, State::Closed])?;
            next.state = State::Closed;
        }
        _ => return Err(WorkflowError::UnknownKind(step.kind.to_owned())),
    }
    next.detail = Detail::Bulletin(det);
    Ok(next)
}
