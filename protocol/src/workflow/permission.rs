//! H2 onward passing: the holder (`opened_by`) asks the provider (`counterpart`).

use super::{
    Case, Detail, PermissionDetail, State, Step, Workflow, WorkflowError, bad, counterpart,
    direction, existing, expect_state, fresh, not_local, open, opt_text, text,
};
use crate::ids::NodeId;

/// The message (32 hex id) and the recipient a permission case is about.
pub fn permission_subject(case: &Case) -> Option<(&str, &str)> {
    match &case.detail {
        Detail::Permission(p) => Some((&p.message_id, &p.recipient)),
        _ => None,
    }
}

pub(super) fn apply(case: Option<&Case>, step: &Step<'_>) -> Result<Case, WorkflowError> {
    let doc = step.doc;
    if step.kind == "permission.request" {
        fresh(case, step)?;
        not_local(step)?;
        let id = doc.text("message_id").unwrap_or_default();
        if id.len() != 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad(
                "message_id",
                format!(
                    "{} is not a message id (32 lowercase hex characters)",
                    super::catalog::quoted(id)
                ),
            ));
        }
        let recipient = doc.text("recipient").unwrap_or_default();
        let rid = NodeId::new(recipient).map_err(|e| bad("recipient", e.to_string()))?;
        if &rid == step.from || &rid == step.to {
            return Err(bad(
                "recipient",
                format!("{rid} already holds the message: ask only for a third node"),
            ));
        }
        return Ok(open(
            step,
            Workflow::Permission,
            State::Requested,
            Some(step.to.clone()),
            Detail::Permission(PermissionDetail {
                message_id: id.to_owned(),
                recipient: rid.to_string(),
                purpose: text(doc, "purpose"),
                conditions: None,
            }),
        ));
    }
    let c = existing(
        case,
        step,
        "answers a permission request that was never sent",
    )?;
    let Detail::Permission(p) = &c.detail else {
        return Err(super::rule(step, "the case has no permission data"));
    };
    let provider = counterpart(c, step)?;
    direction(
        c,
        step,
        provider,
        &c.opened_by,
        "only the provider decides, to the holder",
    )?;
    expect_state(c, step, &[State::Requested])?;
    let mut next = c.clone();
    let mut det = p.clone();
    match step.kind {
        "permission.grant" => {
            next.state = State::Granted;
            det.conditions = opt_text(doc, "conditions");
        }
        "permission.deny" => next.state = State::Denied,
        _ => return Err(WorkflowError::UnknownKind(step.kind.to_owned())),
    }
    next.detail = Detail::Permission(det);
    Ok(next)
}
